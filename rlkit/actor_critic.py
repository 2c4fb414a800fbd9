"""The advantage actor-critic A2C and A3C share: its options, model, loss, actor and policy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Distribution

from rlkit.config import MAX_WIDTH, default, opt
from rlkit.errors import RLKitError
from rlkit.fast.numpy_forward import numpy_actor_critic
from rlkit.nets import ActorCritic
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
    gae_lambda: float = opt(1.0, "GAE lambda in [0, 1]; 1.0 gives the paper's n-step returns")
    lr: float = default(OptimizerOptions, "lr", 7e-4)
    optimizer: OptimizerName = default(OptimizerOptions, "optimizer", "rmsprop")  # the paper's; A3C shares its state
    optimizer_eps: float = default(OptimizerOptions, "optimizer_eps", 1e-5)
    ent_coef: float = opt(0.01, "weight of the entropy bonus (paper: 0.01)")
    vf_coef: float = opt(0.5, "weight of the value loss")
    max_grad_norm: float = opt(0.5, "clip each update's gradients to this global norm (0 = no clipping)")
    hidden: list[int] = opt([64, 64], "hidden layer sizes of the trunk (after the CNN for images)", low=1,
                            high=MAX_WIDTH)
    activation: Literal["tanh", "relu"] = opt("tanh", "activation of the hidden layers")
    shared_trunk: bool = opt(True, "policy and value share the trunk (false: the value gets its own MLP)")
    clip_rewards: bool = opt(False, "train on sign(reward) (Atari); logged returns stay raw")

    def validate_actor_critic(self) -> None:
        if not 0 <= self.gamma <= 1 or not 0 <= self.gae_lambda <= 1:
            raise RLKitError(f"gamma and gae_lambda must be in [0, 1]; got {self.gamma} and {self.gae_lambda}")
        if self.ent_coef < 0 or self.vf_coef < 0 or self.max_grad_norm < 0:
            raise RLKitError("ent_coef, vf_coef and max_grad_norm must be non-negative")


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


def rollout_loss(model: ActorCritic, rollout: Rollout, gamma: float, gae_lambda: float, vf_coef: float,
                 ent_coef: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Returns/advantages of ``rollout`` and the loss of ``model`` on it (shared by A2C and A3C)."""
    r = rollout
    if gae_lambda >= 1.0:
        returns = n_step_returns(r.rewards, r.next_values, r.terminated, r.truncated, gamma)
        advantages = returns - r.values
    else:
        advantages = gae_advantages(r.rewards, r.values, r.next_values, r.terminated, r.truncated, gamma, gae_lambda)
        returns = advantages + r.values
    n = r.rewards.size
    dist, values = model(torch.as_tensor(r.obs.reshape(n, *r.obs.shape[2:])))
    actions = torch.as_tensor(r.actions.reshape(n, *r.actions.shape[2:]))
    return actor_critic_loss(dist, values, actions, torch.as_tensor(advantages.reshape(n)),
                             torch.as_tensor(returns.reshape(n)), vf_coef, ent_coef)


# Networks and acting (shared with agents/a3c.py).
def check_spaces(observation_space: gym.Space, action_space: gym.Space, agent: str,
                 action_types: tuple[type[gym.Space], ...] = (gym.spaces.Discrete, gym.spaces.Box)) -> None:
    """Refuse what :class:`rlkit.nets.ActorCritic` (and the agent's ``action_types``) cannot take, before a run
    directory is written."""
    if not isinstance(action_space, action_types):
        names = [t.__name__ for t in action_types]
        raise RLKitError(f"{agent} supports {', '.join(names[:-1])} and {names[-1]} action spaces; got {action_space}")
    if not isinstance(observation_space, (gym.spaces.Discrete, gym.spaces.Box)):
        raise RLKitError(f"{agent} supports Box and Discrete observations; got {observation_space} "
                         "(flatten Dict/Tuple spaces with gymnasium.wrappers.FlattenObservation)")


def build_model(observation_space: gym.Space, action_space: gym.Space, hidden: list[int], activation: str,
                shared_trunk: bool) -> ActorCritic:
    return ActorCritic(observation_space, action_space, hidden, shared=shared_trunk,
                       activation=nn.Tanh if activation == "tanh" else nn.ReLU)


def build_learner(cfg: Any, observation_space: gym.Space, action_space: gym.Space,
                  resume_state: dict[str, Any] | None) -> tuple[ActorCritic, torch.optim.Optimizer, int]:
    """The model and its optimizer (A2C's and A3C's), restored from ``resume_state`` when resuming;
    returns them and the global step to continue from."""
    model = build_model(observation_space, action_space, cfg.hidden, cfg.activation, cfg.shared_trunk)
    optimizer = cfg.build_optimizer(model.parameters())
    if resume_state is None:
        return model, optimizer, 0
    model.load_state_dict(resume_state["model"])
    optimizer.load_state_dict(resume_state["optimizer"])
    return model, optimizer, int(resume_state["global_step"])


def make_actor(model: ActorCritic, rng: np.random.Generator) -> Actor:
    """The rollout actor: numpy (:func:`rlkit.fast.numpy_forward.numpy_actor_critic`) where it applies, else the torch
    module (torch's RNG samples)."""
    fast = numpy_actor_critic(model, rng)
    if fast is not None:
        return fast

    def torch_actor(obs: np.ndarray, deterministic: bool = False) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            dist, values = model(torch.as_tensor(obs))
            actions = model.policy.mode(dist) if deterministic else dist.sample()
        return actions.numpy(), values.numpy()

    return torch_actor


def make_policy(model: ActorCritic, observation_space: gym.Space, action_space: gym.Space) -> TorchPolicy:
    """The evaluation policy: greedy (mode) actions, clipped to Box bounds."""
    box = isinstance(action_space, gym.spaces.Box)
    shape = action_space.shape

    def clip(actions: np.ndarray) -> np.ndarray:
        return np.clip(actions.reshape(len(actions), *shape), action_space.low, action_space.high) if box else actions

    def act_fn(module: ActorCritic, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        return torch.as_tensor(clip(module.act(obs, deterministic).numpy()))

    actor = numpy_actor_critic(model, rng=None)
    fast = None if actor is None else (lambda obs: clip(actor(obs, deterministic=True)[0]))
    return TorchPolicy(model, act_fn, action_space, observation_space, fast=fast)


def policy_from_state(state: dict[str, Any], cfg: Any) -> TorchPolicy:
    """Rebuild the greedy policy of an A2C or A3C checkpoint (both store ``model`` and the spaces)."""
    obs_space, act_space = state["observation_space"], state["action_space"]
    model = build_model(obs_space, act_space, cfg.hidden, cfg.activation, cfg.shared_trunk)
    model.load_state_dict(state["model"])
    model.eval()
    return make_policy(model, obs_space, act_space)
