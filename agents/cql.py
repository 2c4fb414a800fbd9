"""CQL: conservative Q-learning, offline SAC whose critics are pushed down on actions outside the dataset.

Paper:
    Kumar, Zhou, Tucker & Levine 2020, "Conservative Q-Learning for Offline Reinforcement Learning",
    https://arxiv.org/abs/2006.04779 (the authors' code: github.com/aviralkumar2907/CQL, d4rl/examples/
    cql_mujoco_new.py and d4rl/rlkit/torch/sac/cql.py)
Cross-check:
    CORL (Tarasov et al. 2022, https://arxiv.org/abs/2210.07105), algorithms/offline/cql.py and
    configs/offline/cql/*: 10 sampled actions, importance-sampled logsumexp, temperature 1, Q lr 3e-4, tau 0.005,
    three hidden layers of 256, no entropy in the backup, automatic entropy tuning; CORL's locomotion configs use
    cql_alpha 10.0 and policy lr 3e-5 where the authors' script uses min_q_weight 5.0 and policy lr 1e-4.

CQL(H) on SAC (the paper's eq. 4 with the entropy regulariser), per gradient step on a minibatch (s, a, r, s', d):

    temperature: J(log alpha) = -mean(log alpha (log pi(a~|s) + H_target)),  H_target = -|A|
    critics:     y = r + gamma (1 - d) min_i Q'_i(s', a'),  a' ~ pi(.|s')       (no entropy term: the authors'
                 deterministic backup; ``backup_action: mean`` takes a' = pi's deterministic action, as d3rlpy)
                 J(Q_i) = mean((Q_i(s, a) - y)^2) + cql_alpha * mean(LSE_i(s) - Q_i(s, a))
                 LSE_i(s) = T log sum_j exp((Q_i(s, a_j) - log mu(a_j)) / T) over 3N actions: N uniform
                 (mu = 2^-|A| on [-1, 1]^|A|), N from pi(.|s) and N from pi(.|s') (mu = their pi density),
                 the importance-sampled estimate of log integral exp(Q) of the paper's Appendix F
    actor:       J(pi) = mean(alpha log pi(a~|s) - min_i Q_i(s, a~)),  a~ ~ pi(.|s) reparameterised
    then the Polyak update of the critic targets (tau)

Densities are of the action in [-1, 1] (before the affine map to the Box bounds), as rlkit's SAC.

Deviations from the paper, and why:
    * The updates run temperature, critics, actor (rlkit's SAC order, as SB3); the authors and CORL compute
      the actor's loss with the critics before their step.
    * No Lagrange variant (``with_lagrange``) and no BC warm start by default (``bc_steps``: the authors'
      policy_eval_start is 40k of 1M steps; CORL's configs use 0).
    * The logsumexp omits the constant -log(3N) of the importance-sampled mean, as the authors' code and CORL
      do: it moves the penalty's value, not its gradient.
    * Observations are normalised by the dataset's mean and std (``normalize_obs``), as CORL does.
    * torch's default initialisation (CORL: orthogonal hidden layers, a 1e-2-scaled output layer; log-std
      offset -1); the twin critics are one stacked :class:`rlkit.nets.QCriticEnsemble`.

``backup_action`` (not a deviation by default): ``sample`` draws the backup's a' from pi(.|s'), as the authors'
code and CORL do; ``mean`` takes pi's deterministic action, as d3rlpy's CQL does (hard-coded there). The evaluated
policy is the deterministic one, and the mean's target has no sampling noise. Measured on the Pendulum sets (5
seeds, 3000 gradient steps, 64-64; benchmarks/bench_d3rlpy.py): medium 35.4 with ``mean`` against 33.5 with
``sample``, medium-replay 27.6 against 23.9 (normalised). The default stays the papers'.

Run it: ``rlkit train cql --demos DATASET`` (the env comes from the dataset).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch

from rlkit.callbacks import Callback
from rlkit.config import MAX_WIDTH, BaseConfig, config_from_dict, opt
from rlkit.distributions import squashed_log_prob
from rlkit.engine.offline import OfflineLearner, OfflineOptions, actor_policy, train_offline
from rlkit.fast.fused_cql import fused_cql_critic
from rlkit.losses import temperature_loss
from rlkit.nets import QCriticEnsemble, SquashedGaussianActor, polyak_update
from rlkit.normalizers import ObsNormalizer
from rlkit.optim import make_optimizer
from rlkit.policy import Batch, TorchPolicy
from rlkit.registry import AgentSpec, train_from_command_line


@dataclass
class CQLConfig(OfflineOptions, BaseConfig):
    """CQL hyper-parameters (defaults: the paper's and its authors' script for the Gym locomotion tasks)."""

    env_id: str | None = opt(None, "env to evaluate in; default: the env the dataset was recorded on")
    cql_alpha: float = opt(5.0, "weight of the conservative penalty (authors: 5.0; CORL's configs: 10.0)", low=0)
    num_actions: int = opt(10, "actions sampled per state, from each of uniform, pi(.|s) and pi(.|s') (paper: 10)",
                           low=1)
    temperature: float = opt(1.0, "temperature T of the logsumexp (paper: 1.0)", low=0, low_open=True)
    actor_lr: float = opt(1e-4, "actor and entropy-temperature learning rate (authors: 1e-4; CORL: 3e-5)", low=0,
                          low_open=True)
    critic_lr: float = opt(3e-4, "critic learning rate (paper and CORL: 3e-4)", low=0, low_open=True)
    hidden: list[int] = opt([256, 256, 256], "hidden layer sizes of the actor and critic MLPs (paper: 3 x 256)",
                            low=1, high=MAX_WIDTH)
    tau: float = opt(0.005, "Polyak factor of the critic targets (paper: 0.005)", low=0, low_open=True, high=1)
    backup_action: str = opt("sample", "the action a' at s' of the critics' backup: 'sample', a' ~ pi(.|s') (the "
                             "authors, CORL), or 'mean', tanh of pi's mean (d3rlpy)", choices=("sample", "mean"))
    target_entropy: float | None = opt(None, "entropy target of the temperature (None: -|A|, SAC's)")
    bc_steps: int = opt(0, "first gradient steps whose actor loss is BC, alpha log pi - log pi(a|s) (authors: 40k "
                           "of 1M; CORL: 0)", low=0)
    fused_update: bool = opt(True, "the critic step by hand (rlkit.fast.fused_cql; the same numbers as autograd's "
                             "up to float rounding, about twice as fast) where it applies: CPU, flat observations")

    def validate(self) -> None:
        self.validate_offline()


# ALGO LOGIC: the math, as pure functions (unit-tested against hand values).
def td_target(rewards: torch.Tensor, terminated: torch.Tensor, discounts: torch.Tensor,
              next_q: torch.Tensor) -> torch.Tensor:
    """y = r + gamma (1 - d) min_i Q'_i(s', a'), with no entropy term; ``next_q`` is (n_critics, batch)."""
    return rewards + discounts * (1.0 - terminated) * next_q.min(dim=0).values


def conservative_penalty(q_random: torch.Tensor, q_current: torch.Tensor, q_next: torch.Tensor,
                         log_pi_current: torch.Tensor, log_pi_next: torch.Tensor, q_data: torch.Tensor,
                         action_dim: int, temperature: float) -> torch.Tensor:
    """Each critic's mean(LSE(s) - Q(s, a_data)), CQL(H)'s penalty before its weight, with importance sampling.

    Args:
        q_random: Q_i(s, a_j) at N uniform actions, (n_critics, batch, N).
        q_current: Q_i(s, a_j), a_j ~ pi(.|s), (n_critics, batch, N); ``log_pi_current`` their log pi, (batch, N).
        q_next: Q_i(s, a_j), a_j ~ pi(.|s'), (n_critics, batch, N); ``log_pi_next`` their log pi(.|s'), (batch, N).
        q_data: Q_i(s, a) at the dataset's actions, (n_critics, batch).
        action_dim: |A|; the uniform density on [-1, 1]^|A| is 2^-|A|.
        temperature: T of T log sum exp(x / T).

    Returns: (n_critics,) penalties.
    """
    uniform_log_density = action_dim * math.log(0.5)
    samples = torch.cat([q_random - uniform_log_density, q_next - log_pi_next.detach(),
                         q_current - log_pi_current.detach()], dim=-1)
    lse = temperature * torch.logsumexp(samples / temperature, dim=-1)
    return (lse - q_data).mean(dim=-1)


def backup_actions(actor: SquashedGaussianActor, next_obs: torch.Tensor, mode: str) -> torch.Tensor:
    """a' of the backup: drawn from pi(.|s') (``sample``), or pi's deterministic action (``mean``)."""
    return actor.act(next_obs, deterministic=mode == "mean")


class Nets(NamedTuple):
    actor: SquashedGaussianActor
    critic: QCriticEnsemble
    critic_target: QCriticEnsemble
    log_alpha: torch.Tensor
    actor_opt: torch.optim.Optimizer
    critic_opt: torch.optim.Optimizer
    alpha_opt: torch.optim.Optimizer


def build_nets(cfg: CQLConfig, obs_space: gym.Space, act_space: gym.spaces.Box) -> Nets:
    actor = SquashedGaussianActor(obs_space, act_space, cfg.hidden).to(cfg.device)
    critic = QCriticEnsemble(obs_space, act_space, cfg.hidden, n_critics=2).to(cfg.device)
    log_alpha = torch.zeros((), device=cfg.device, requires_grad=True)  # alpha starts at 1 (CORL, the authors)
    return Nets(actor, critic, copy.deepcopy(critic).requires_grad_(False), log_alpha,
                make_optimizer(actor.parameters(), lr=cfg.actor_lr),
                make_optimizer(critic.parameters(), lr=cfg.critic_lr),
                make_optimizer([log_alpha], lr=cfg.actor_lr))


def critic_step(nets: Nets, batch: Batch, cfg: CQLConfig) -> dict[str, torch.Tensor]:
    """The critics' TD error plus ``cql_alpha`` times the conservative penalty, one optimizer step."""
    actor, n, size = nets.actor, cfg.num_actions, len(batch.obs)
    with torch.no_grad():
        next_actions = backup_actions(actor, batch.next_obs, cfg.backup_action)
        target = td_target(batch.rewards, batch.terminated, batch.discounts,
                           nets.critic_target(batch.next_obs, next_actions))
        # n actions per state from pi(.|s) and from pi(.|s'), drawn in one pass; then n uniform ones
        policy_actions, log_pi = actor.sample(torch.cat([batch.obs, batch.next_obs]).repeat_interleave(n, dim=0))
        unit = torch.rand(size * n, actor.action_scale.numel(), device=batch.obs.device) * 2 - 1
    obs_n = batch.obs.repeat_interleave(n, dim=0)
    # one pass of the critics over the dataset's actions and the 3n sampled ones, all at the states s
    q_all = nets.critic(torch.cat([batch.obs, obs_n, obs_n, obs_n]),
                        torch.cat([batch.actions, unit * actor.action_scale + actor.action_bias, policy_actions]))
    q, q_random, q_current, q_next = q_all.split([size, size * n, size * n, size * n], dim=1)
    log_pi_current, log_pi_next = log_pi.reshape(2, size, n)
    penalty = conservative_penalty(*(x.reshape(-1, size, n) for x in (q_random, q_current, q_next)),
                                   log_pi_current, log_pi_next, q, actor.action_scale.numel(), cfg.temperature)
    td = (q - target).pow(2).mean(dim=1)
    loss = (td + cfg.cql_alpha * penalty).sum()
    nets.critic_opt.zero_grad(set_to_none=True)
    loss.backward()
    nets.critic_opt.step()
    return {"losses/critic_loss": loss.detach(), "losses/td_loss": td.detach().sum(),
            "losses/cql_penalty": penalty.detach().mean(), "losses/q_values": q[0].detach().mean()}


def gradient_step(nets: Nets, batch: Batch, cfg: CQLConfig, target_entropy: float, bc: bool,
                  step_critic: Callable[[Nets, Batch, CQLConfig], dict[str, torch.Tensor]] = critic_step
                  ) -> dict[str, torch.Tensor]:
    """One temperature, critic and actor step and the critic targets' Polyak update (``bc``: the actor clones;
    ``step_critic``: :func:`critic_step`, or its hand-written equal)."""
    actor, critic = nets.actor, nets.critic
    actions_pi, log_pi = actor.sample(batch.obs)
    alpha_loss = temperature_loss(nets.log_alpha, log_pi, target_entropy)
    nets.alpha_opt.zero_grad(set_to_none=True)
    alpha_loss.backward()
    nets.alpha_opt.step()
    alpha = nets.log_alpha.detach().exp()
    metrics = step_critic(nets, batch, cfg)
    if bc:
        actor_loss = (alpha * log_pi - dataset_log_prob(actor, batch.obs, batch.actions)).mean()
    else:
        # The actor needs dQ/da only: frozen critic weights spare autograd their gradient matmuls.
        critic.requires_grad_(False)
        actor_loss = (alpha * log_pi - critic(batch.obs, actions_pi).min(dim=0).values).mean()
        critic.requires_grad_(True)
    nets.actor_opt.zero_grad(set_to_none=True)
    actor_loss.backward()
    nets.actor_opt.step()
    polyak_update(critic, nets.critic_target, cfg.tau)
    return {**metrics, "losses/actor_loss": actor_loss.detach(), "losses/alpha": alpha,
            "losses/entropy": -log_pi.detach().mean()}


def dataset_log_prob(actor: SquashedGaussianActor, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log pi(a|s) of the dataset's actions (for the BC warm start), the action pulled inside (-1, 1) first so
    that atanh stays finite at the bounds."""
    unit = ((actions - actor.action_bias) / actor.action_scale).clamp(-1 + 1e-6, 1 - 1e-6)
    mean, log_std = actor(obs)
    return squashed_log_prob(torch.atanh(unit), mean, log_std)


# The networks and optimizers a checkpoint holds by name (log_alpha, a tensor, is stored apart).
TRAINED = ("actor", "critic", "critic_target", "actor_opt", "critic_opt", "alpha_opt")


class CQL(OfflineLearner):
    """What CQL needs from the offline loop (:mod:`rlkit.engine.offline`): :func:`gradient_step` per minibatch."""

    def __init__(self, cfg: CQLConfig, obs_space: gym.Space, act_space: gym.spaces.Box,
                 normalizer: ObsNormalizer | None) -> None:
        self.cfg = cfg
        self.target_entropy = -float(np.prod(act_space.shape)) if cfg.target_entropy is None else cfg.target_entropy
        self.nets = build_nets(cfg, obs_space, act_space)
        self.policy = actor_policy(self.nets.actor, obs_space, act_space, normalizer)
        # critic_step by hand (rlkit.fast.fused_cql), the same numbers; None where it does not apply
        fused = fused_cql_critic(self.nets.critic, self.nets.actor, cfg.num_actions, cfg.temperature,
                                 cfg.cql_alpha) if cfg.fused_update else None
        self.critic_step = fused or critic_step

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        return gradient_step(self.nets, batch, self.cfg, self.target_entropy, bc=step < self.cfg.bc_steps,
                             step_critic=self.critic_step)

    def state_dict(self) -> dict[str, Any]:
        return {**{name: getattr(self.nets, name).state_dict() for name in TRAINED},
                "log_alpha": self.nets.log_alpha.detach().cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in TRAINED:
            getattr(self.nets, name).load_state_dict(state[name])
        with torch.no_grad():
            self.nets.log_alpha.copy_(state["log_alpha"])


def train(cfg: CQLConfig, resume: bool = False, callbacks: Sequence[Callback] | None = None) -> dict[str, Any]:
    """Train CQL on ``cfg.demos``; returns the contents of ``final.json``."""
    return train_offline("cql", cfg, CQL, resume, callbacks)


def load_policy(state: dict[str, Any]) -> TorchPolicy:
    """Rebuild the policy (tanh of the actor's mean), with the dataset's observation normaliser, from a checkpoint."""
    cfg = config_from_dict(CQLConfig, state["config"])
    obs_space, act_space = state["observation_space"], state["action_space"]
    actor = SquashedGaussianActor(obs_space, act_space, cfg.hidden)
    actor.load_state_dict(state["actor"])
    actor.eval()
    normalizer = ObsNormalizer.from_state(obs_space.shape, state["obs_normalizer"])
    return actor_policy(actor, obs_space, act_space, normalizer)


AGENT = AgentSpec("cql", CQLConfig, train, load_policy,
                  summary="CQL: conservative Q-learning (SAC-based CQL(H)), offline RL from a dataset with rewards "
                          "(--demos DATASET)")

if __name__ == "__main__":
    train_from_command_line("cql")
