"""DDPG, and TD3 as DDPG with three switches.

Papers:
    DDPG  Lillicrap et al. 2016, "Continuous control with deep RL", https://arxiv.org/abs/1509.02971
    TD3   Fujimoto et al. 2018, "Addressing Function Approximation Error in Actor-Critic Methods",
          https://arxiv.org/abs/1802.09477

A deterministic actor mu(s) (tanh, mapped onto the Box bounds), critics Q(s, a) and target copies of
both that follow by Polyak averaging. Exploration adds Gaussian or Ornstein-Uhlenbeck noise to mu(s);
before ``learning_starts`` actions are uniform random. TD3 = ``twin_critics`` (clipped double-Q
target: the minimum of two target critics), ``target_noise``/``target_noise_clip`` (target policy
smoothing) and ``policy_delay`` (actor and targets updated every d-th critic step);
``rlkit train td3`` turns them on with the paper's values (:data:`TD3_DEFAULTS`).

Deviations from the papers, and why:
    * The defaults are the TD3 paper's re-tuned "Our DDPG" (400-300 ReLU nets, the action enters the
      critic's first layer, Adam 1e-3, batch 100, tau 0.005, Gaussian noise 0.1), as in SB3. The
      ``halfcheetah`` DDPG preset restores Lillicrap's settings (OU noise, lr 1e-4/1e-3, critic L2
      1e-2, tau 0.001, batch 64) but keeps the action in the critic's first layer (Lillicrap: the
      second), PyTorch's default init (Lillicrap: +-3e-3 uniform output layers) and no batch
      normalization; optional running-mean/std observation normalization (``normalize_obs``) stands in.
    * Noise scales (exploration, target smoothing, its clip) are fractions of each action's
      half-range, so 0.1 means the paper's N(0, 0.1) on [-1, 1] actions, for any bounds.
    * The twin critics are one stacked network (:class:`rlkit.nets.QCriticEnsemble`): the same
      maths as two critics, computed in one batched matmul per layer.
    * Truncated episodes (time limits) bootstrap from their real last observation.
    * Updates are counted in env steps (``train_every``, ``gradient_steps``); the Zoo's "train after
      each episode" on Pendulum's fixed 200-step episodes is ``train_every=200, gradient_steps=200``.

Fine-tuning (``init_from``; offline to online, docs/offline.md): a trained DDPG, TD3 or offline TD3+BC run's
actor, critics and targets, and its observation normalizer, start the run. The normalizer keeps that run's clip in
place of ``obs_clip`` (TD3+BC's: the dataset's mean and std, unclipped) and goes on updating online from the count it
had. The run acts with the loaded policy and its noise from the first step (no uniform warm-up), with fresh
optimizers, an empty replay buffer, and TD3's loss, without the BC term.

Run it: ``rlkit train td3 --preset pendulum`` or ``python -m rlkit.agents.ddpg --help``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import gymnasium as gym
import numpy as np
import torch

from rlkit.buffers import ReplayBuffer
from rlkit.callbacks import Callback
from rlkit.config import (
    MAX_WIDTH,
    BaseConfig,
    ReplayOptions,
    apply_overrides,
    config_from_dict,
    default,
    opt,
)
from rlkit.engine.common import progress
from rlkit.engine.off_policy import OffPolicyLearner, train_off_policy, train_off_policy_seeds
from rlkit.errors import RLKitError
from rlkit.fast.numpy_forward import numpy_forward
from rlkit.multitask import load_pretrained
from rlkit.nets import DeterministicActor, QCriticEnsemble, check_continuous_spaces, polyak_update
from rlkit.normalizers import ObsNormalizer
from rlkit.optim import OptimizerChoice, scheduled, set_lr
from rlkit.policy import Batch, TorchPolicy
from rlkit.registry import AgentSpec, train_from_command_line


@dataclass
class DDPGConfig(ReplayOptions, OptimizerChoice, BaseConfig):
    """DDPG/TD3 hyper-parameters: the replay options, plus DDPG's (defaults: the TD3 paper's "Our DDPG";
    presets hold the rest)."""

    env_id: str = opt("Pendulum-v1", "Gymnasium env id with a Box action space (or pkg.module:Env-v0)")
    buffer_size: int = default(ReplayOptions, "buffer_size", 1_000_000)
    batch_size: int = default(ReplayOptions, "batch_size", 100)
    tau: float = default(ReplayOptions, "tau", 0.005)
    train_every: int = default(ReplayOptions, "train_every", 1)
    actor_lr: float = opt(1e-3, "actor learning rate", low=0, low_open=True)
    critic_lr: float = opt(1e-3, "critic learning rate", low=0, low_open=True)
    critic_weight_decay: float = opt(0.0, "L2 penalty on the critic weights (Lillicrap: 0.01)", low=0)
    hidden: list[int] = opt([400, 300], "hidden layer sizes of the actor and critic MLPs", low=1, high=MAX_WIDTH)
    noise: Literal["gaussian", "ou", "none"] = opt("gaussian", "exploration noise: gaussian, ou (Ornstein-Uhlenbeck)")
    noise_std: float = opt(0.1, "exploration noise std (OU: sigma), as a fraction of each action's half-range", low=0)
    ou_theta: float = opt(0.15, "OU mean-reversion rate theta", low=0)
    ou_dt: float = opt(1e-2, "OU time step dt (as in SB3 and OpenAI baselines)", low=0, low_open=True)
    twin_critics: bool = opt(False, "TD3: two critics, the target uses the minimum of the two")
    policy_delay: int = opt(1, "TD3: update the actor and the targets every this many critic steps", low=1)
    target_noise: float = opt(0.0, "TD3: std of the target policy smoothing noise (fraction of half-range)", low=0)
    target_noise_clip: float = opt(0.0, "TD3: clip the smoothing noise to +-this (fraction of half-range)",
                                   low=0)
    normalize_obs: bool = opt(False, "normalize observations by a running mean/std (kept in checkpoints)")
    obs_clip: float = opt(10.0, "clip normalized observations to +-this", low=0, low_open=True)
    init_from: str | None = opt(None, "fine-tuning: start actor, critics, their targets and the observation "
                                      "normalizer from this run (ddpg, td3, or offline td3_bc: offline to online)")

    def validate(self) -> None:
        self.validate_optimizer()


# The switches and values of the TD3 paper (section 6.1); `rlkit train td3` applies them first.
TD3_DEFAULTS: dict[str, Any] = {"twin_critics": True, "policy_delay": 2, "target_noise": 0.2,
                                "target_noise_clip": 0.5}


def td3_config(**overrides: Any) -> DDPGConfig:
    """A TD3 config for scripts: ``DDPGConfig`` with :data:`TD3_DEFAULTS`, then ``overrides``."""
    return apply_overrides(apply_overrides(DDPGConfig(), TD3_DEFAULTS, "td3 defaults"), overrides, "arguments")


# ALGO LOGIC: the math, as pure functions (unit-tested against hand values).
def ou_step(state: np.ndarray, normal: np.ndarray, theta: float, sigma: float, dt: float) -> np.ndarray:
    """One Ornstein-Uhlenbeck step towards 0: x + theta * (0 - x) * dt + sigma * sqrt(dt) * N(0, 1)."""
    return state - theta * state * dt + sigma * np.sqrt(dt) * normal


def explore_actions(mu: np.ndarray, noise: np.ndarray, scale: np.ndarray, low: np.ndarray, high: np.ndarray
                    ) -> np.ndarray:
    """a = clip(mu + noise * half_range, low, high): noise is in units of the half-range."""
    return np.clip(mu + noise * scale, low, high).astype(np.float32)


def smoothed_target_actions(next_actions: torch.Tensor, noise: torch.Tensor, noise_clip: float,
                            scale: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """TD3 target policy smoothing: clip(mu'(s') + clip(eps, -c, c) * half_range, low, high)."""
    return torch.clamp(next_actions + noise.clamp(-noise_clip, noise_clip) * scale, low, high)


def td_target(rewards: torch.Tensor, terminated: torch.Tensor, discounts: torch.Tensor,
              next_q: torch.Tensor) -> torch.Tensor:
    """y = r + gamma^k * (1 - terminated) * min_i Q'_i(s', a'); ``next_q`` is (n_critics, batch).

    With one critic this is DDPG's target, with two TD3's clipped double-Q target.
    """
    return rewards + discounts * (1.0 - terminated) * next_q.min(dim=0).values


class Nets(NamedTuple):
    actor: DeterministicActor
    actor_target: DeterministicActor
    critic: QCriticEnsemble
    critic_target: QCriticEnsemble
    actor_opt: torch.optim.Optimizer
    critic_opt: torch.optim.Optimizer


def build_nets(cfg: DDPGConfig, obs_space: gym.Space, act_space: gym.spaces.Box) -> Nets:
    actor = DeterministicActor(obs_space, act_space, cfg.hidden).to(cfg.device)
    critic = QCriticEnsemble(obs_space, act_space, cfg.hidden, n_critics=2 if cfg.twin_critics else 1).to(cfg.device)
    return Nets(actor, copy.deepcopy(actor).requires_grad_(False), critic, copy.deepcopy(critic).requires_grad_(False),
                cfg.optimizer_for(actor.parameters(), cfg.actor_lr),
                cfg.optimizer_for(critic.parameters(), cfg.critic_lr, weight_decay=cfg.critic_weight_decay))


def gradient_step(nets: Nets, batch: Batch, cfg: DDPGConfig, update_index: int) -> dict[str, torch.Tensor]:
    """One critic step; on every ``policy_delay``-th call (1-based ``update_index``) also an actor
    step and the Polyak update of both targets. Returns detached losses for logging."""
    actor = nets.actor
    scale, bias = actor.action_scale, actor.action_bias
    with torch.no_grad():
        next_actions = nets.actor_target(batch.next_obs)
        if cfg.target_noise > 0:
            eps = torch.randn_like(next_actions) * cfg.target_noise
            next_actions = smoothed_target_actions(next_actions, eps, cfg.target_noise_clip, scale,
                                                   bias - scale, bias + scale)
        target = td_target(batch.rewards, batch.terminated, batch.discounts,
                           nets.critic_target(batch.next_obs, next_actions))
    q = nets.critic(batch.obs, batch.actions)
    critic_loss = (q - target).pow(2).mean(dim=1).sum()  # the sum of each critic's MSE, as in TD3
    nets.critic_opt.zero_grad(set_to_none=True)
    critic_loss.backward()
    nets.critic_opt.step()
    metrics = {"losses/critic_loss": critic_loss.detach(), "losses/q_values": q[0].detach().mean()}
    if update_index % cfg.policy_delay == 0:
        # The actor needs dQ/da only: frozen critic weights spare autograd their gradient matmuls.
        nets.critic.requires_grad_(False)
        actor_loss = -nets.critic(batch.obs, actor(batch.obs), first_only=True).mean()
        nets.critic.requires_grad_(True)
        nets.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        nets.actor_opt.step()
        polyak_update(nets.critic, nets.critic_target, cfg.tau)
        polyak_update(actor, nets.actor_target, cfg.tau)
        metrics["losses/actor_loss"] = actor_loss.detach()
    return metrics


def make_policy(actor: DeterministicActor, obs_space: gym.Space, act_space: gym.spaces.Box,
                normalizer: ObsNormalizer | None = None) -> TorchPolicy:
    """mu(s) as a Policy, reshaped to the space and kept in bounds (numpy acting for small batches)."""
    low, high, shape = act_space.low.astype(np.float32), act_space.high.astype(np.float32), act_space.shape
    low_t, high_t = torch.from_numpy(low.reshape(-1)), torch.from_numpy(high.reshape(-1))
    net_np = numpy_forward(actor)

    def act_fn(module: DeterministicActor, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        obs = normalizer.torch(obs) if normalizer is not None else obs
        return torch.clamp(module(obs), low_t.to(obs.device), high_t.to(obs.device)).reshape(len(obs), *shape)

    def fast(obs: np.ndarray) -> np.ndarray:
        obs = normalizer(obs) if normalizer is not None else obs
        return np.clip(net_np(obs).reshape(len(obs), *shape), low, high)

    return TorchPolicy(actor, act_fn, act_space, obs_space, fast=fast if net_np is not None else None)


class DDPG(OffPolicyLearner):
    """What DDPG/TD3 needs from the off-policy loop (:mod:`rlkit.engine.off_policy`): mu(s) + noise to act,
    :func:`gradient_step` for each minibatch, and a fresh OU process at each new episode."""

    check_spaces = staticmethod(check_continuous_spaces)

    def __init__(self, cfg: DDPGConfig, obs_space: gym.Space, act_space: gym.spaces.Box,
                 rng: np.random.Generator) -> None:
        self.cfg, self.rng = cfg, rng
        self.nets = build_nets(cfg, obs_space, act_space)
        self.normalizer = ObsNormalizer(obs_space.shape, cfg.obs_clip) if cfg.normalize_obs else None
        if cfg.init_from:
            self.init_from(cfg.init_from, obs_space)
            self.warmup_uniform = False  # the loaded policy acts (with its noise) from the first step
        self.buffer = ReplayBuffer(cfg.buffer_size, obs_space, act_space, num_envs=cfg.num_envs, gamma=cfg.gamma,
                                   rng=rng)
        self.policy = make_policy(self.nets.actor, obs_space, act_space, self.normalizer)
        self.low, self.high = act_space.low.astype(np.float32), act_space.high.astype(np.float32)
        self.half_range = (self.high - self.low) / 2
        self.ou_state = np.zeros((cfg.num_envs, *act_space.shape))
        self.num_updates = 0

    def init_from(self, source: str, obs_space: gym.Space) -> None:
        """Fine-tuning: the networks of a trained DDPG, TD3 or TD3+BC run, and its observation statistics, which
        go on updating online from the count they had; optimizers and the replay buffer start afresh."""
        networks = {name: getattr(self.nets, name) for name in ("actor", "actor_target", "critic", "critic_target")}
        state = load_pretrained(source, ("ddpg", "td3", "td3_bc"), obs_space, 0, networks, "hidden, twin_critics")
        normalised = state.get("obs_normalizer") is not None
        if normalised != (self.normalizer is not None):
            raise RLKitError(f"init_from={source} {'normalises' if normalised else 'does not normalise'} observations;"
                             f" set normalize_obs={str(normalised).lower()} as that run did")
        if self.normalizer is not None:
            self.normalizer.load_state_dict(state["obs_normalizer"])

    def explore(self, obs: np.ndarray, global_step: int) -> np.ndarray:
        """a = clip(mu(s) + noise, low, high): Gaussian or OU noise, in units of each action's half-range."""
        cfg = self.cfg
        normal = self.rng.standard_normal(self.ou_state.shape)
        if cfg.noise == "ou":
            self.ou_state = ou_step(self.ou_state, normal, cfg.ou_theta, cfg.noise_std, cfg.ou_dt)
        noise = {"ou": self.ou_state, "gaussian": cfg.noise_std * normal, "none": 0.0}[cfg.noise]
        return explore_actions(self.policy.act(obs), noise, self.half_range, self.low, self.high)

    def update(self, batches: Iterable[Batch], global_step: int) -> dict[str, float]:
        cfg = self.cfg
        done = progress(global_step, cfg.total_steps)
        set_lr(self.nets.actor_opt, scheduled(cfg.actor_lr, cfg.lr_schedule, done))
        set_lr(self.nets.critic_opt, scheduled(cfg.critic_lr, cfg.lr_schedule, done))
        for batch in batches:
            self.num_updates += 1
            metrics = gradient_step(self.nets, batch, cfg, self.num_updates)
        return {key: value.item() for key, value in metrics.items()}

    def after_env_step(self, global_step: int, ended: np.ndarray) -> None:
        self.ou_state[ended] = 0.0  # a new episode starts the OU process afresh

    def scalars(self) -> dict[str, float]:
        return {"charts/num_updates": self.num_updates}

    def state_dict(self) -> dict[str, Any]:
        return {**{name: getattr(self.nets, name).state_dict() for name in Nets._fields},
                "obs_normalizer": self.normalizer.state_dict() if self.normalizer is not None else None,
                "ou_state": self.ou_state, "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in Nets._fields:
            getattr(self.nets, name).load_state_dict(state[name])
        if self.normalizer is not None:
            self.normalizer.load_state_dict(state["obs_normalizer"])
        self.ou_state, self.num_updates = state["ou_state"], state["num_updates"]


def train(cfg: DDPGConfig, resume: bool = False, callbacks: Sequence[Callback] | None = None, *,
          agent: str = "ddpg") -> dict[str, Any]:
    """Train DDPG (or TD3, with its switches in ``cfg``); returns the contents of ``final.json``."""
    return train_off_policy(agent, cfg, DDPG, resume, callbacks)


def train_td3(cfg: DDPGConfig, resume: bool = False, callbacks: Sequence[Callback] | None = None
              ) -> dict[str, Any]:
    """Train with the run recorded as ``td3`` (pass a :func:`td3_config`)."""
    return train(cfg, resume, callbacks, agent="td3")


def train_seeds(cfgs: Sequence[DDPGConfig], resume: bool = False, callbacks: Sequence[Callback] | None = None, *,
                agent: str = "ddpg") -> list[dict[str, Any]]:
    """Train one DDPG (or TD3) per config (seed) in this process, in lockstep; returns each final.json."""
    return train_off_policy_seeds(agent, cfgs, DDPG, resume, callbacks)


def train_td3_seeds(cfgs: Sequence[DDPGConfig], resume: bool = False, callbacks: Sequence[Callback] | None = None
                    ) -> list[dict[str, Any]]:
    return train_seeds(cfgs, resume, callbacks, agent="td3")


def load_policy(state: dict[str, Any]) -> TorchPolicy:
    """Rebuild the deterministic policy mu(s) (with its observation normalizer) from a checkpoint."""
    cfg = config_from_dict(DDPGConfig, state["config"])
    obs_space, act_space = state["observation_space"], state["action_space"]
    actor = DeterministicActor(obs_space, act_space, cfg.hidden)
    actor.load_state_dict(state["actor"])
    actor.eval()
    normalizer = ObsNormalizer.from_state(obs_space.shape, state.get("obs_normalizer"))
    return make_policy(actor, obs_space, act_space, normalizer)


AGENT = AgentSpec("ddpg", DDPGConfig, train, load_policy, train_seeds=train_seeds,
                  summary="DDPG (deterministic actor-critic, continuous actions)")
TD3_AGENT = AgentSpec("td3", DDPGConfig, train_td3, load_policy, defaults=TD3_DEFAULTS, train_seeds=train_td3_seeds,
                      summary="TD3: DDPG with twin critics, target smoothing and delayed actor updates")

if __name__ == "__main__":
    train_from_command_line("ddpg")
