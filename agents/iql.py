"""IQL: implicit Q-learning, offline RL that never queries Q on actions outside the dataset.

Paper:
    Kostrikov, Nair & Levine 2021, "Offline Reinforcement Learning with Implicit Q-Learning",
    https://arxiv.org/abs/2110.06169 (the authors' code: github.com/ikostrikov/implicit_q_learning)
Cross-check:
    CORL (Tarasov et al. 2022, https://arxiv.org/abs/2210.07105), algorithms/offline/iql.py and
    configs/offline/iql/*: expectile 0.7 and beta 3.0 on locomotion, lr 3e-4 for V, Q and the actor, batch 256,
    256-256 networks, tau 0.005 (0.001 on a few hopper datasets), exp(beta A) clipped at 100, a cosine schedule
    on the actor's learning rate, a Gaussian actor with a state-independent std.

Per gradient step, on a minibatch (s, a, r, s', d) of the dataset:

    value:  L_V = mean(|tau - 1(u < 0)| u^2),  u = min_i Q'_i(s, a) - V(s)           (expectile regression)
    critic: L_Q = mean_i mean((Q_i(s, a) - (r + gamma (1 - d) V(s')))^2);  then Q' <- Polyak(Q, target_tau)
    actor:  L_pi = -mean(min(exp(beta A), 100) log pi(a|s)),  A = min_i Q'_i(s, a) - V(s)   (advantage-weighted
            regression; A is the value step's u, before V moves)
    the actor's learning rate follows lr * (1 + cos(pi * step / total_steps)) / 2

pi(a|s) is a Gaussian whose mean is tanh of an MLP mapped onto the action bounds and whose log std is one
learned vector (clamped to [-20, 2]); its density is that of the action rescaled to [-1, 1], so the std and
beta mean the same for any bounds. The policy acts with the mean.

Deviations from the paper, and why:
    * ``normalize_reward`` (on by default, the paper's locomotion recipe) scales rewards by L / (max - min
      episode return) with L the dataset's longest episode; the paper's 1000 is D4RL locomotion's L.
    * Observations are normalised by the dataset's mean and std (``normalize_obs``), as CORL does; the paper's
      code does not normalise them.
    * The twin critics are one stacked network (:class:`rlkit.nets.QCriticEnsemble`), the same maths.
    * The actor's log-probability is of the action rescaled to [-1, 1] (CORL's D4RL actions already are).

Run it: ``rlkit train iql --demos DATASET`` (the env comes from the dataset).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlkit.callbacks import Callback
from rlkit.config import MAX_WIDTH, BaseConfig, config_from_dict, default, opt
from rlkit.engine.common import progress
from rlkit.engine.offline import OfflineLearner, OfflineOptions, actor_policy, train_offline
from rlkit.nets import DeterministicActor, QCriticEnsemble, mlp, polyak_update
from rlkit.normalizers import ObsNormalizer
from rlkit.optim import make_optimizer, set_lr
from rlkit.policy import Batch, TorchPolicy
from rlkit.registry import AgentSpec, train_from_command_line

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # the authors' and CORL's clamp of the actor's log std
EXP_ADV_MAX = 100.0  # the paper's clip of the advantage weights


@dataclass
class IQLConfig(OfflineOptions, BaseConfig):
    """IQL hyper-parameters (defaults: the paper's locomotion values, which CORL keeps)."""

    env_id: str | None = opt(None, "env to evaluate in; default: the env the dataset was recorded on")
    normalize_reward: bool = default(OfflineOptions, "normalize_reward", True)
    expectile: float = opt(0.7, "expectile tau of the value regression (paper: 0.7 locomotion, 0.9 AntMaze)", low=0,
                           low_open=True, high=1)
    beta: float = opt(3.0, "inverse temperature of the advantage weights (paper: 3.0 locomotion, 10.0 AntMaze)",
                      low=0)
    actor_lr: float = opt(3e-4, "actor learning rate, cosine-annealed to 0 at total_steps (paper: 3e-4)", low=0,
                          low_open=True)
    critic_lr: float = opt(3e-4, "learning rate of the Q networks (paper: 3e-4)", low=0, low_open=True)
    value_lr: float = opt(3e-4, "learning rate of V (paper: 3e-4)", low=0, low_open=True)
    hidden: list[int] = opt([256, 256], "hidden layer sizes of the actor, Q and V MLPs (paper: 256-256)", low=1,
                            high=MAX_WIDTH)
    tau: float = opt(0.005, "Polyak factor of the Q targets (paper: 0.005)", low=0, low_open=True, high=1)

    def validate(self) -> None:
        self.validate_offline()


# ALGO LOGIC: the math, as pure functions (unit-tested against hand values).
def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """mean(|tau - 1(diff < 0)| diff^2): an asymmetric square that, minimised over V, gives the tau-expectile."""
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff.pow(2)).mean()


def value_loss(q_target: torch.Tensor, v: torch.Tensor, expectile: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_V, the advantages Q'(s, a) - V(s)); ``q_target`` is min_i Q'_i(s, a) (no gradient)."""
    advantage = q_target - v
    return expectile_loss(advantage, expectile), advantage


def q_loss(q: torch.Tensor, rewards: torch.Tensor, terminated: torch.Tensor, discounts: torch.Tensor,
           next_v: torch.Tensor) -> torch.Tensor:
    """The mean over critics of mean((Q_i(s, a) - (r + gamma (1 - d) V(s')))^2); ``q`` is (n_critics, batch)."""
    target = rewards + discounts * (1.0 - terminated) * next_v
    return (q - target).pow(2).mean()


def awr_loss(log_prob: torch.Tensor, advantage: torch.Tensor, beta: float) -> torch.Tensor:
    """-mean(min(exp(beta A), 100) log pi(a|s)): behaviour cloning weighted towards high-advantage actions."""
    weights = torch.exp(beta * advantage.detach()).clamp(max=EXP_ADV_MAX)
    return -(weights * log_prob).mean()


def cosine_lr(lr: float, done: float) -> float:
    """lr * (1 + cos(pi * done)) / 2 at ``done`` = step / total_steps: torch's CosineAnnealingLR to 0 (CORL)."""
    return lr * 0.5 * (1.0 + math.cos(math.pi * done))


class GaussianActor(nn.Module):
    """N(mean(s), diag(exp(log_std))^2) over actions rescaled to [-1, 1]; ``forward`` gives the mean in the
    action's own units (a :class:`DeterministicActor`, so the numpy acting path serves it)."""

    def __init__(self, obs_space: gym.Space, act_space: gym.spaces.Box, hidden: list[int]) -> None:
        super().__init__()
        self.mean = DeterministicActor(obs_space, act_space, hidden)
        self.log_std = nn.Parameter(torch.zeros(int(np.prod(act_space.shape))))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.mean(obs)

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        scale, bias = self.mean.action_scale, self.mean.action_bias
        unit_mean, unit_actions = (self.mean(obs) - bias) / scale, (actions - bias) / scale
        log_std = self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        return torch.distributions.Normal(unit_mean, log_std.exp()).log_prob(unit_actions).sum(dim=-1)


class Nets(NamedTuple):
    actor: GaussianActor
    critic: QCriticEnsemble
    critic_target: QCriticEnsemble
    value: nn.Module
    actor_opt: torch.optim.Optimizer
    critic_opt: torch.optim.Optimizer
    value_opt: torch.optim.Optimizer


def build_nets(cfg: IQLConfig, obs_space: gym.Space, act_space: gym.spaces.Box) -> Nets:
    actor = GaussianActor(obs_space, act_space, cfg.hidden).to(cfg.device)
    critic = QCriticEnsemble(obs_space, act_space, cfg.hidden, n_critics=2).to(cfg.device)
    value = mlp(int(np.prod(obs_space.shape)), 1, cfg.hidden).to(cfg.device)
    return Nets(actor, critic, copy.deepcopy(critic).requires_grad_(False), value,
                make_optimizer(actor.parameters(), lr=cfg.actor_lr),
                make_optimizer(critic.parameters(), lr=cfg.critic_lr),
                make_optimizer(value.parameters(), lr=cfg.value_lr))


def gradient_step(nets: Nets, batch: Batch, cfg: IQLConfig) -> dict[str, torch.Tensor]:
    """One value, critic and actor step (in that order, as the paper's Algorithm 1) and the Q targets' update."""
    obs = batch.obs.reshape(len(batch.obs), -1)
    with torch.no_grad():
        q_target = nets.critic_target(batch.obs, batch.actions).min(dim=0).values
        next_v = nets.value(batch.next_obs.reshape(len(obs), -1)).squeeze(-1)
    v_loss, advantage = value_loss(q_target, nets.value(obs).squeeze(-1), cfg.expectile)
    nets.value_opt.zero_grad(set_to_none=True)
    v_loss.backward()
    nets.value_opt.step()

    q = nets.critic(batch.obs, batch.actions)
    critic_loss = q_loss(q, batch.rewards, batch.terminated, batch.discounts, next_v)
    nets.critic_opt.zero_grad(set_to_none=True)
    critic_loss.backward()
    nets.critic_opt.step()
    polyak_update(nets.critic, nets.critic_target, cfg.tau)

    actor_loss = awr_loss(nets.actor.log_prob(batch.obs, batch.actions), advantage, cfg.beta)
    nets.actor_opt.zero_grad(set_to_none=True)
    actor_loss.backward()
    nets.actor_opt.step()
    return {"losses/value_loss": v_loss.detach(), "losses/critic_loss": critic_loss.detach(),
            "losses/actor_loss": actor_loss.detach(), "losses/advantage": advantage.detach().mean(),
            "losses/q_values": q[0].detach().mean()}


class IQL(OfflineLearner):
    """What IQL needs from the offline loop (:mod:`rlkit.engine.offline`): :func:`gradient_step` per minibatch,
    with the actor's learning rate on its cosine schedule."""

    def __init__(self, cfg: IQLConfig, obs_space: gym.Space, act_space: gym.spaces.Box,
                 normalizer: ObsNormalizer | None) -> None:
        self.cfg = cfg
        self.nets = build_nets(cfg, obs_space, act_space)
        self.policy = actor_policy(self.nets.actor.mean, obs_space, act_space, normalizer)
        self.actor_lr = cfg.actor_lr

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        self.actor_lr = cosine_lr(self.cfg.actor_lr, progress(step, self.cfg.total_steps))
        set_lr(self.nets.actor_opt, self.actor_lr)
        return gradient_step(self.nets, batch, self.cfg)

    def scalars(self) -> dict[str, float]:
        return {"charts/actor_lr": self.actor_lr}

    def state_dict(self) -> dict[str, Any]:
        return {name: getattr(self.nets, name).state_dict() for name in Nets._fields}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in Nets._fields:
            getattr(self.nets, name).load_state_dict(state[name])


def train(cfg: IQLConfig, resume: bool = False, callbacks: Sequence[Callback] | None = None) -> dict[str, Any]:
    """Train IQL on ``cfg.demos``; returns the contents of ``final.json``."""
    return train_offline("iql", cfg, IQL, resume, callbacks)


def load_policy(state: dict[str, Any]) -> TorchPolicy:
    """Rebuild the policy (the actor's mean), with the dataset's observation normaliser, from a checkpoint."""
    cfg = config_from_dict(IQLConfig, state["config"])
    obs_space, act_space = state["observation_space"], state["action_space"]
    actor = GaussianActor(obs_space, act_space, cfg.hidden)
    actor.load_state_dict(state["actor"])
    actor.eval()
    normalizer = ObsNormalizer.from_state(obs_space.shape, state["obs_normalizer"])
    return actor_policy(actor.mean, obs_space, act_space, normalizer)


AGENT = AgentSpec("iql", IQLConfig, train, load_policy,
                  summary="IQL: implicit Q-learning, offline RL from a dataset with rewards (--demos DATASET)")

if __name__ == "__main__":
    train_from_command_line("iql")
