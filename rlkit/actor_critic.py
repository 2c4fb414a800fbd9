"""The advantage actor-critic A2C and A3C share (its options, model, loss and gradients), and the rollout actor
and evaluation policy of every actor-critic (A2C, A3C, PPO)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Distribution

from rlkit.config import MAX_WIDTH, default, opt
from rlkit.distributions import CategoricalHead, GaussianHead
from rlkit.errors import RLKitError
from rlkit.fast.numpy_forward import numpy_actor_critic
from rlkit.nets import ActorCritic
from rlkit.normalizers import ObsNormalizer
from rlkit.optim import OptimizerName, OptimizerOptions
from rlkit.policy import TorchPolicy
from rlkit.returns import gae_advantages, n_step_returns
from rlkit.rollouts import Actor, Rollout


@dataclass
class ActorCriticOptions:
    """The loss and network options of A2C and A3C, and their optimizer defaults (both configs mix them in
    before :class:`OptimizerOptions`; defaults follow SB3/Baselines and the A3C paper, presets hold per-task
    values)."""

    gamma: float = opt(0.99, "discount factor", low=0, high=1)
    gae_lambda: float = opt(1.0, "GAE lambda in [0, 1]; 1.0 gives the paper's n-step returns", low=0, high=1)
    lr: float = default(OptimizerOptions, "lr", 7e-4)
    optimizer: OptimizerName = default(OptimizerOptions, "optimizer", "rmsprop")  # the paper's; A3C shares its state
    optimizer_eps: float = default(OptimizerOptions, "optimizer_eps", 1e-5)
    ent_coef: float = opt(0.01, "weight of the entropy bonus (paper: 0.01)", low=0)
    vf_coef: float = opt(0.5, "weight of the value loss", low=0)
    max_grad_norm: float = opt(0.5, "clip each update's gradients to this global norm (0 = no clipping)", low=0)
    hidden: list[int] = opt([64, 64], "hidden layer sizes of the trunk (after the CNN for images)", low=1,
                            high=MAX_WIDTH)
    activation: Literal["tanh", "relu"] = opt("tanh", "activation of the hidden layers")
    shared_trunk: bool = opt(True, "policy and value share the trunk (false: the value gets its own MLP)")
    clip_rewards: bool = opt(False, "train on sign(reward) (Atari); logged returns stay raw")


def actor_critic_loss(dist: Distribution, values: torch.Tensor, actions: torch.Tensor, advantages: torch.Tensor,
                      returns: torch.Tensor, vf_coef: float, ent_coef: float
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The A2C/A3C loss; returns (loss, detached terms for logging).

    policy term ``-mean(A * log pi(a|s))`` (A treated as a constant), value term ``mean((R - V)^2)``,
    entropy bonus ``mean(H[pi])`` subtracted with weight ``ent_coef``.
    """
    policy_loss = -(advantages.detach() * dist.log_prob(actions)).mean()
    value_loss = (returns.detach() - values).pow(2).mean()
    entropy = dist.entropy().mean()
    loss = policy_loss + vf_coef * value_loss - ent_coef * entropy
    terms = {"losses/policy_loss": policy_loss, "losses/value_loss": value_loss, "losses/entropy": entropy}
    return loss, {k: v.detach() for k, v in terms.items()}


def rollout_tensors(rollout: Rollout, gamma: float, gae_lambda: float, device: torch.device | str = "cpu"
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The rows of ``rollout`` for the loss: (observations, actions, advantages, returns), (T * N, ...) each."""
    r = rollout
    if gae_lambda >= 1.0:
        returns = n_step_returns(r.rewards, r.next_values, r.terminated, r.truncated, gamma)
        advantages = returns - r.values
    else:
        advantages = gae_advantages(r.rewards, r.values, r.next_values, r.terminated, r.truncated, gamma, gae_lambda)
        returns = advantages + r.values
    n = r.rewards.size
    return (torch.as_tensor(r.obs.reshape(n, *r.obs.shape[2:]), device=device),
            torch.as_tensor(r.actions.reshape(n, *r.actions.shape[2:]), device=device),
            torch.as_tensor(advantages.reshape(n), device=device), torch.as_tensor(returns.reshape(n), device=device))


def rollout_loss(model: ActorCritic, rollout: Rollout, gamma: float, gae_lambda: float, vf_coef: float,
                 ent_coef: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Returns/advantages of ``rollout`` and the loss of ``model`` on it (shared by A2C and A3C)."""
    obs, actions, advantages, returns = rollout_tensors(rollout, gamma, gae_lambda, next(model.parameters()).device)
    dist, values = model(obs)
    return actor_critic_loss(dist, values, actions, advantages, returns, vf_coef, ent_coef)


def actor_critic_gradients(model: ActorCritic, parameters: list[nn.Parameter], rollout: Rollout, cfg: Any
                           ) -> dict[str, torch.Tensor]:
    """The gradients of A2C's and A3C's loss on ``rollout`` in ``parameters`` (``model``'s, fresh: earlier ones
    are dropped), clipped to ``cfg.max_grad_norm`` (0: not clipped); returns the loss terms to log."""
    loss, terms = rollout_loss(model, rollout, cfg.gamma, cfg.gae_lambda, cfg.vf_coef, cfg.ent_coef)
    for param in parameters:
        param.grad = None
    loss.backward()
    if cfg.max_grad_norm > 0:
        nn.utils.clip_grad_norm_(parameters, cfg.max_grad_norm)
    return terms


# Networks and acting (A2C's and A3C's; the actor and policy PPO's too).
def check_spaces(observation_space: gym.Space, action_space: gym.Space, env_id: str, agent: str,
                 action_types: tuple[type[gym.Space], ...] = (gym.spaces.Discrete, gym.spaces.Box)) -> None:
    """Refuse what :class:`rlkit.nets.ActorCritic` (and the agent's ``action_types``) cannot take, before a run
    directory is written (the arguments of every agent's space check: spaces, env id, agent)."""
    if not isinstance(action_space, action_types):
        names = [t.__name__ for t in action_types]
        raise RLKitError(f"{agent} supports {', '.join(names[:-1])} and {names[-1]} action spaces, but {env_id} has "
                         f"{action_space}")
    if not isinstance(observation_space, (gym.spaces.Discrete, gym.spaces.Box)):
        raise RLKitError(f"{agent} supports Box and Discrete observations, but {env_id} has {observation_space} "
                         "(flatten Dict/Tuple spaces with gymnasium.wrappers.FlattenObservation)")


def build_model(observation_space: gym.Space, action_space: gym.Space, hidden: list[int], activation: str,
                shared_trunk: bool) -> ActorCritic:
    return ActorCritic(observation_space, action_space, hidden, shared=shared_trunk,
                       activation=nn.Tanh if activation == "tanh" else nn.ReLU)


def make_actor(model: ActorCritic, rng: np.random.Generator, normalizer: ObsNormalizer | None = None) -> Actor:
    """The rollout actor ``(obs, deterministic) -> (actions, values)``: numpy views of the weights
    (:func:`rlkit.fast.numpy_forward.numpy_actor_critic`) for MLPs on the CPU, else torch on the model's device
    (torch's RNG samples); observations are normalised first when a ``normalizer`` is given."""
    fast = numpy_actor_critic(model, rng) if isinstance(model.policy, (CategoricalHead, GaussianHead)) else None
    device = next(model.parameters()).device

    def torch_actor(obs: np.ndarray, deterministic: bool = False) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            dist, values = model(torch.as_tensor(obs, device=device))
            actions = model.policy.mode(dist) if deterministic else dist.sample()
        return actions.cpu().numpy(), values.cpu().numpy()

    base = fast or torch_actor
    if normalizer is None:
        return base
    return lambda obs, deterministic=False: base(normalizer(obs), deterministic)


def make_policy(model: ActorCritic, observation_space: gym.Space, action_space: gym.Space,
                normalizer: ObsNormalizer | None = None) -> TorchPolicy:
    """The evaluation policy: observations normalised as in training, mode (or sampled) actions, clipped to
    Box bounds."""
    box = isinstance(action_space, gym.spaces.Box)

    def clip(actions: np.ndarray) -> np.ndarray:
        return np.clip(actions.reshape(len(actions), *action_space.shape), action_space.low, action_space.high) \
            if box else actions

    def act_fn(module: ActorCritic, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        obs = normalizer.torch(obs) if normalizer is not None else obs
        return torch.as_tensor(clip(module.act(obs, deterministic).cpu().numpy()))

    actor = numpy_actor_critic(model, rng=None) if isinstance(model.policy, (CategoricalHead, GaussianHead)) \
        else None
    fast = None if actor is None else (
        lambda obs: clip(actor(normalizer(obs) if normalizer is not None else obs, deterministic=True)[0]))
    return TorchPolicy(model, act_fn, action_space, observation_space, fast=fast)


def policy_from_state(state: dict[str, Any], cfg: Any) -> TorchPolicy:
    """Rebuild the greedy policy of an A2C or A3C checkpoint (both store ``model`` and the spaces)."""
    obs_space, act_space = state["observation_space"], state["action_space"]
    model = build_model(obs_space, act_space, cfg.hidden, cfg.activation, cfg.shared_trunk)
    model.load_state_dict(state["model"])
    model.eval()
    return make_policy(model, obs_space, act_space)
