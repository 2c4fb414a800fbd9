"""The Policy protocol every trained thing satisfies, and adapters to and from SB3."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np
import torch

from rlkit.errors import RLKitError


@runtime_checkable
class Policy(Protocol):
    """Anything that maps a batch of observations to a batch of actions.

    ``act(obs, deterministic)`` takes a batched numpy array (leading axis = batch) and returns
    a batched numpy array of actions valid for the env's action space.
    """

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray: ...


class Batch(NamedTuple):
    """A sampled replay minibatch (torch tensors). ``discounts`` is gamma**k for k-step returns."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor
    discounts: torch.Tensor
    weights: torch.Tensor
    indices: np.ndarray

    def to(self, device: torch.device | str) -> Batch:
        """The same batch with its tensors on ``device`` (a no-op on the CPU)."""
        if torch.device(device).type == "cpu":
            return self
        return Batch(*(x.to(device, non_blocking=True) if isinstance(x, torch.Tensor) else x for x in self))


# Batches up to this size act through a policy's numpy fast path (acting, one row per env; small evaluations).
# Measured on the 2-core dev machine, one thread, CartPole's [64, 64] Q-network, greedy actions: torch 38, 39
# and 45 us at batches of 1, 16 and 64, numpy 6, 9 and 21 us; at 256 numpy's matmul took another BLAS path
# (4.6 ms against torch's 69 us) and at 1024 the two were even, so larger batches take torch.
FAST_PATH_MAX_BATCH = 64


class TorchPolicy:
    """Wrap a ``torch.nn.Module`` mapping obs tensors to actions as a numpy-in/numpy-out Policy.

    ``act_fn(module, obs_tensor, deterministic) -> action tensor``. Inference runs under
    ``torch.inference_mode``. When ``fast`` is a callable ``fast(obs_numpy) -> actions`` (see
    :func:`rlkit.fast.numpy_forward.numpy_forward`), small batches take it instead: for a CartPole-sized MLP the
    numpy path costs a fifth of torch's per-call overhead, and it reads the live weights.
    """

    def __init__(self, module: torch.nn.Module, act_fn: Any, action_space: gym.Space,
                 observation_space: gym.Space, fast: Any = None) -> None:
        self.module = module
        self.act_fn = act_fn
        self.action_space = action_space
        self.observation_space = observation_space
        self.fast = fast
        self._discrete = isinstance(action_space, gym.spaces.Discrete)

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        if self.fast is not None and deterministic and len(obs) <= FAST_PATH_MAX_BATCH:
            return self.fast(obs)
        device = next(self.module.parameters()).device
        with torch.inference_mode():
            out = self.act_fn(self.module, torch.as_tensor(np.asarray(obs), device=device), deterministic)
        actions = out.cpu().numpy()
        if self._discrete:
            return actions.astype(np.int64, copy=False)
        return actions


class RandomPolicy:
    """Uniform random actions from the action space (seeded)."""

    def __init__(self, action_space: gym.Space, seed: int | None = None) -> None:
        self.action_space = action_space
        self.action_space.seed(seed)

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return np.stack([self.action_space.sample() for _ in range(len(obs))])


class SB3PredictAdapter:
    """Expose an rlkit Policy with SB3's ``predict`` signature.

    This lets ``stable_baselines3.common.evaluation.evaluate_policy`` and ``imitation``'s rollout
    helpers drive any rlkit policy: ``evaluate_policy(SB3PredictAdapter(policy), env)``.

    Args:
        policy: the rlkit Policy.
        observation_space: the observation space SB3 and imitation read from the model. By default it
            is the policy's own (every policy rlkit loads or trains carries its spaces); pass it for a
            policy without (a plain function, :class:`RandomPolicy`).
        action_space: the action space, likewise.
    """

    def __init__(self, policy: Policy, observation_space: gym.Space | None = None,
                 action_space: gym.Space | None = None) -> None:
        self.policy = policy
        # `is None`, not `or`: a composite space (Tuple, Dict) with no members is falsy
        self.observation_space = getattr(policy, "observation_space", None) if observation_space is None \
            else observation_space
        self.action_space = getattr(policy, "action_space", None) if action_space is None else action_space
        missing = [name for name in ("observation_space", "action_space") if getattr(self, name) is None]
        if missing:
            raise RLKitError(f"SB3PredictAdapter: the policy ({type(policy).__name__}) has no {' or '.join(missing)}; "
                             f"pass them: SB3PredictAdapter(policy, env.observation_space, env.action_space)")

    def predict(self, observation: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = False) -> tuple[np.ndarray, None]:
        obs = np.asarray(observation)
        single = obs.shape == self.observation_space.shape
        batch = obs[None] if single else obs
        actions = self.policy.act(batch, deterministic=deterministic)
        return (actions[0] if single else actions), None

    def __call__(self, observation: np.ndarray, state: Any = None, episode_start: Any = None
                 ) -> tuple[np.ndarray, None]:
        # imitation's PolicyCallable signature: (obs, state, episode_start) -> (actions, state)
        return self.predict(observation, state, episode_start, deterministic=True)


class SB3ModelPolicy:
    """The reverse adapter: a loaded SB3 model (``model.predict``) as an rlkit Policy."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.action_space = model.action_space
        self.observation_space = model.observation_space

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        actions, _ = self.model.predict(np.asarray(obs), deterministic=deterministic)
        return np.asarray(actions)


def load_policy(path: str | Path, checkpoint: str = "latest") -> Policy:
    """Rebuild the policy of a run directory or of a checkpoint; ``checkpoint`` picks one of a run's:
    ``latest``, ``best`` (its best evaluation) or a step number.

    ``policy.act(obs_batch, deterministic=True)`` gives actions; ``SB3PredictAdapter(policy)`` gives SB3's
    ``predict``. The checkpoint's own contents (agent, config, step counters) are
    ``rlkit.checkpoint.load_checkpoint(path)``; to have both from one read, load the state and call
    :func:`policy_from_checkpoint` on it.
    """
    from rlkit.checkpoint import load_checkpoint, resolve_checkpoint

    return policy_from_checkpoint(load_checkpoint(resolve_checkpoint(path, checkpoint)))


def policy_from_checkpoint(state: dict[str, Any]) -> Policy:
    """The policy of a loaded checkpoint state, rebuilt by the agent that wrote it (found by entry point)."""
    from rlkit.registry import get_agent

    return get_agent(state["agent"]).load_policy(state)
