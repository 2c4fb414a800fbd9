"""SAC: soft actor-critic with twin critics and automatic entropy tuning.

Papers:
    SAC      Haarnoja et al. 2018, "Soft Actor-Critic: Off-Policy Maximum Entropy Deep RL with a Stochastic
             Actor", https://arxiv.org/abs/1801.01290
    SAC v2   Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications",
             https://arxiv.org/abs/1812.05905 (twin Q targets, no V network, learned temperature alpha)

A squashed Gaussian actor ``a = tanh(u) * scale + bias``, ``u ~ N(mu(s), sigma(s))``, twin critics (one
stacked :class:`rlkit.nets.QCriticEnsemble`) with Polyak-averaged targets, and per gradient step:

    alpha:  J(log alpha) = -mean(log alpha * (log pi(a|s) + H_target))        (H_target = -|A| by default)
    critic: y = r + gamma^k (1 - terminated) (min_i Q'_i(s', a') - alpha log pi(a'|s')),  a' ~ pi(.|s')
            J(Q) = sum_i 0.5 * mean((Q_i(s, a) - y)^2)
    actor:  J(pi) = mean(alpha log pi(a|s) - min_i Q_i(s, a)),  a ~ pi(.|s) reparameterised
    target: Q'_i <- tau Q_i + (1 - tau) Q'_i

Log-probabilities of squashed actions (paper appendix C): ``log pi(a|s) = log N(u; mu, sigma) -
sum_j log(1 - tanh(u_j)^2)``, computed as ``2 (log 2 - u - softplus(-2u))`` to stay finite where
tanh saturates.

Deviations from the papers, and why:
    * Densities are those of the action in [-1, 1] (before the affine map to the Box bounds), as in SB3 and
      the authors' softlearning code: the target entropy -|A| then means the same for any bounds.
    * The temperature is updated first in each gradient step, then the critics, then the actor (SB3's order;
      the paper's Algorithm 1 updates Q, pi, alpha); a for the actor loss is sampled before the critic step.
    * log sigma is clamped to [-20, 2] (softlearning and SB3).
    * Truncated episodes bootstrap from their real last observation; updates are counted in env steps
      (``train_every``, ``gradient_steps``) as in agents/ddpg.py, with the same replay handling, the
      optional observation normaliser (rlkit/normalizers.py) and the resume with the replay buffer.

Multi-task (``tasks``, ``heads``, ``pcgrad``, ``init_from``; rlkit/multitask.py, docs/multitask.md): on a suite
whose observations end in a one-hot task id, ``heads=shared`` is the task-conditioned SAC (the one-hot is input)
and ``heads=per_task`` hard sharing (trunks on the observation without its id, one linear head per task in the
actor and in each critic). With tasks, each task has its own temperature ``alpha_k`` (learned on its rows), as
Meta-World's multi-task SAC has (Yu et al. 2019, "Meta-World", https://arxiv.org/abs/1910.10897, section 5):
tasks differ in how much entropy their target leaves, and one alpha would follow the task whose entropy is lowest.
``pcgrad`` projects the tasks' critic and actor gradients (Yu et al. 2020) before each of those steps.
``init_from`` starts actor, critics, targets and the temperatures from a trained SAC run (fine-tuning).

Run it: ``rlkit train sac --preset pendulum`` or ``python -m rlkit.agents.sac --help``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from rlkit.envs.multitask import task_count

from rlkit.buffers import ReplayBuffer
from rlkit.callbacks import Callback
from rlkit.config import MAX_WIDTH, BaseConfig, ReplayOptions, config_from_dict, default, opt
from rlkit.engine.common import progress
from rlkit.engine.off_policy import OffPolicyLearner, train_off_policy, train_off_policy_seeds
from rlkit.errors import RLKitError
from rlkit.fast.numpy_forward import numpy_squashed_gaussian
from rlkit.losses import temperature_loss
from rlkit.multitask import (
    HardSharingActor,
    HardSharingCritics,
    MultiTaskOptions,
    PCGrad,
    flat_width,
    load_pretrained,
    resolve_tasks,
    task_ids,
    task_losses,
)
from rlkit.nets import QCriticEnsemble, SquashedGaussianActor, check_continuous_spaces, polyak_update
from rlkit.normalizers import ObsNormalizer
from rlkit.optim import OptimizerOptions, set_lr
from rlkit.policy import Batch, TorchPolicy
from rlkit.registry import AgentSpec, train_from_command_line


@dataclass
class SACConfig(MultiTaskOptions, ReplayOptions, OptimizerOptions, BaseConfig):
    """SAC hyper-parameters: the replay options, plus SAC's (defaults: SB3's SAC, which follows the SAC v2
    paper's Table 1)."""

    env_id: str = opt("Pendulum-v1", "Gymnasium env id with a Box action space (or pkg.module:Env-v0)")
    buffer_size: int = default(ReplayOptions, "buffer_size", 1_000_000)
    learning_starts: int = default(ReplayOptions, "learning_starts", 100)
    batch_size: int = default(ReplayOptions, "batch_size", 256)
    tau: float = default(ReplayOptions, "tau", 0.005)
    train_every: int = default(ReplayOptions, "train_every", 1)
    lr: float = opt(3e-4, "learning rate of actor, critics and temperature", low=0, low_open=True)
    hidden: list[int] = opt([256, 256], "hidden layer sizes of the actor and critic MLPs", low=1, high=MAX_WIDTH)
    n_critics: int = opt(2, "critics in the ensemble; targets take their minimum", low=1)
    alpha: float = opt(1.0, "entropy temperature (the initial value when autotune is on)", low=0, low_open=True)
    autotune: bool = opt(True, "learn alpha so that the policy's entropy tracks target_entropy")
    target_entropy: float | None = opt(None, "entropy target of autotune (None: -|A|, the paper's)")
    normalize_obs: bool = opt(False, "normalize observations by a running mean/std (kept in checkpoints)")
    obs_clip: float = opt(10.0, "clip normalized observations to +-this", low=0, low_open=True)

    def validate(self) -> None:
        self.validate_optimizer()
        resolve_tasks(self, task_count(self.env_id))


def soft_td_target(rewards: torch.Tensor, terminated: torch.Tensor, discounts: torch.Tensor, next_q: torch.Tensor,
                   next_log_prob: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """y = r + gamma^k (1 - terminated) (min_i Q'_i(s', a') - alpha log pi(a'|s')); ``next_q`` is (n, batch)."""
    return rewards + discounts * (1.0 - terminated) * (next_q.min(dim=0).values - alpha * next_log_prob)


class Nets(NamedTuple):
    actor: SquashedGaussianActor
    critic: QCriticEnsemble
    critic_target: QCriticEnsemble
    log_alpha: torch.Tensor  # one value, or one per task
    actor_opt: torch.optim.Optimizer
    critic_opt: torch.optim.Optimizer
    alpha_opt: torch.optim.Optimizer
    n_tasks: int = 0
    actor_pcgrad: PCGrad | None = None
    critic_pcgrad: PCGrad | None = None


def build_actor(cfg: SACConfig, obs_space: gym.Space, act_space: gym.spaces.Box, n_tasks: int
                ) -> SquashedGaussianActor:
    if n_tasks and cfg.heads == "per_task":
        return HardSharingActor(obs_space, act_space, cfg.hidden, n_tasks)
    actor = SquashedGaussianActor(obs_space, act_space, cfg.hidden)
    if n_tasks:  # task-conditioned: the one-hot is input; refuse a space that cannot hold it
        flat_width(obs_space, n_tasks)
    return actor


def build_nets(cfg: SACConfig, obs_space: gym.Space, act_space: gym.spaces.Box, device: str | None = None,
               n_tasks: int = 0, rng: np.random.Generator | None = None) -> Nets:
    device = device or cfg.device
    actor = build_actor(cfg, obs_space, act_space, n_tasks).to(device)
    critic = (HardSharingCritics(obs_space, act_space, cfg.hidden, cfg.n_critics, n_tasks)
              if n_tasks and cfg.heads == "per_task" else QCriticEnsemble(obs_space, act_space, cfg.hidden,
                                                                          cfg.n_critics)).to(device)
    log_alpha = torch.full((n_tasks,) if n_tasks else (), math.log(cfg.alpha), device=device,
                           requires_grad=cfg.autotune)
    actor_opt, critic_opt = cfg.build_optimizer(actor.parameters()), cfg.build_optimizer(critic.parameters())
    pcgrad = cfg.pcgrad and n_tasks
    return Nets(actor, critic, copy.deepcopy(critic).requires_grad_(False), log_alpha, actor_opt, critic_opt,
                cfg.build_optimizer([log_alpha]), n_tasks, PCGrad(actor_opt, rng) if pcgrad else None,
                PCGrad(critic_opt, rng) if pcgrad else None)


def step(optimizer: torch.optim.Optimizer, pcgrad: PCGrad | None, per_sample: torch.Tensor,
         ids: torch.Tensor | None, n_tasks: int) -> torch.Tensor:
    """One optimizer step on the mean of ``per_sample`` losses, or PCGrad's over the tasks' shares of it."""
    loss = per_sample.mean()
    optimizer.zero_grad(set_to_none=True)
    if pcgrad is None:
        loss.backward()
    else:
        pcgrad.backward(task_losses(per_sample, ids, n_tasks))
    optimizer.step()
    return loss.detach()


def gradient_step(nets: Nets, batch: Batch, cfg: SACConfig, target_entropy: float) -> dict[str, torch.Tensor]:
    """One temperature, critic and actor step and the Polyak update; returns detached terms for logging."""
    actor, critic = nets.actor, nets.critic
    ids = task_ids(batch.obs, nets.n_tasks) if nets.n_tasks else None
    log_alpha = nets.log_alpha if ids is None else nets.log_alpha[ids]  # each sample's own task's temperature
    actions_pi, log_prob = actor.sample(batch.obs)
    if cfg.autotune:
        alpha_loss = temperature_loss(log_alpha, log_prob, target_entropy)
        nets.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        nets.alpha_opt.step()
        log_alpha = nets.log_alpha if ids is None else nets.log_alpha[ids]
    alpha = log_alpha.detach().exp()
    with torch.no_grad():  # a' from the current policy (not a target actor: SAC has none)
        next_actions, next_log_prob = actor.sample(batch.next_obs)
        target = soft_td_target(batch.rewards, batch.terminated, batch.discounts,
                                nets.critic_target(batch.next_obs, next_actions), next_log_prob, alpha)
    q = critic(batch.obs, batch.actions)
    critic_loss = step(nets.critic_opt, nets.critic_pcgrad, 0.5 * (q - target).pow(2).sum(dim=0), ids, nets.n_tasks)
    # The actor needs dQ/da only: frozen critic weights spare autograd their gradient matmuls.
    critic.requires_grad_(False)
    actor_loss = step(nets.actor_opt, nets.actor_pcgrad,
                      alpha * log_prob - critic(batch.obs, actions_pi).min(dim=0).values, ids, nets.n_tasks)
    critic.requires_grad_(True)
    polyak_update(critic, nets.critic_target, cfg.tau)
    metrics = {"losses/critic_loss": critic_loss, "losses/actor_loss": actor_loss,
               "losses/q_values": q[0].detach().mean(), "losses/alpha": alpha.mean(),
               "losses/entropy": -log_prob.detach().mean()}
    if nets.critic_pcgrad is not None and nets.actor_pcgrad is not None:
        metrics["losses/pcgrad_projections"] = torch.tensor(nets.critic_pcgrad.conflicts
                                                            + nets.actor_pcgrad.conflicts)
    return metrics


def make_policy(actor: SquashedGaussianActor, obs_space: gym.Space, act_space: gym.spaces.Box,
                normalizer: ObsNormalizer | None = None) -> TorchPolicy:
    """The actor as a Policy: ``tanh(mean)`` scaled to the bounds when deterministic, else a sample
    (numpy acting for small deterministic batches)."""
    shape = act_space.shape

    def act_fn(module: SquashedGaussianActor, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        obs = normalizer.torch(obs) if normalizer is not None else obs
        return module.act(obs, deterministic).reshape(len(obs), *shape)

    net_np = numpy_squashed_gaussian(actor, rng=None)

    def fast(obs: np.ndarray) -> np.ndarray:
        return net_np(normalizer(obs) if normalizer is not None else obs).reshape(len(obs), *shape)

    return TorchPolicy(actor, act_fn, act_space, obs_space, fast=fast if net_np is not None else None)


# The networks and optimizers a checkpoint holds by name (log_alpha, a tensor, is stored apart).
TRAINED = ("actor", "critic", "critic_target", "actor_opt", "critic_opt", "alpha_opt")


class SAC(OffPolicyLearner):
    """What SAC needs from the off-policy loop (:mod:`rlkit.engine.off_policy`): samples of the policy to act,
    and :func:`gradient_step` for each minibatch."""

    check_spaces = staticmethod(check_continuous_spaces)

    def __init__(self, cfg: SACConfig, obs_space: gym.Space, act_space: gym.spaces.Box,
                 rng: np.random.Generator) -> None:
        self.cfg = cfg
        self.target_entropy = -float(np.prod(act_space.shape)) if cfg.target_entropy is None else cfg.target_entropy
        self.n_tasks = resolve_tasks(cfg, task_count(cfg.env_id))
        self.nets = build_nets(cfg, obs_space, act_space, n_tasks=self.n_tasks, rng=rng)
        if cfg.init_from:
            self.init_from(cfg.init_from, obs_space)
        self.normalizer = ObsNormalizer(obs_space.shape, cfg.obs_clip) if cfg.normalize_obs else None
        self.buffer = ReplayBuffer(cfg.buffer_size, obs_space, act_space, num_envs=cfg.num_envs, gamma=cfg.gamma,
                                   rng=rng)
        self.policy = make_policy(self.nets.actor, obs_space, act_space, self.normalizer)
        self.sample = numpy_squashed_gaussian(self.nets.actor, rng)  # None: sample through torch
        self.shape = (cfg.num_envs, *act_space.shape)
        self.num_updates = 0

    def init_from(self, source: str, obs_space: gym.Space) -> None:
        """Fine-tuning: the networks and temperatures of a trained SAC run; optimizers start afresh."""
        networks = {name: getattr(self.nets, name) for name in ("actor", "critic", "critic_target")}
        state = load_pretrained(source, "sac", obs_space, self.n_tasks, networks, "hidden, n_critics, heads")
        with torch.no_grad():
            self.nets.log_alpha.copy_(state["log_alpha"])

    def explore(self, obs: np.ndarray, global_step: int) -> np.ndarray:
        if self.sample is None:
            return self.policy.act(obs, deterministic=False)
        return self.sample(self.normalizer(obs) if self.normalizer is not None else obs, False).reshape(self.shape)

    def update(self, batches: Iterable[Batch], global_step: int) -> dict[str, float]:
        lr = self.cfg.lr_at(progress(global_step, self.cfg.total_steps))
        for optimizer in (self.nets.actor_opt, self.nets.critic_opt, self.nets.alpha_opt):
            set_lr(optimizer, lr)
        for batch in batches:
            self.num_updates += 1
            metrics = gradient_step(self.nets, batch, self.cfg, self.target_entropy)
        return {key: value.item() for key, value in metrics.items()}

    def scalars(self) -> dict[str, float]:
        return {"charts/num_updates": self.num_updates}

    def state_dict(self) -> dict[str, Any]:
        return {**{name: getattr(self.nets, name).state_dict() for name in TRAINED},
                "log_alpha": self.nets.log_alpha.detach().cpu(), "num_updates": self.num_updates,
                "obs_normalizer": self.normalizer.state_dict() if self.normalizer is not None else None,
                "tasks": self.n_tasks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state.get("tasks", 0)) != self.n_tasks:
            raise RLKitError(f"the checkpoint's networks were trained on {state.get('tasks', 0)} tasks, but "
                             f"{self.cfg.env_id} has {self.n_tasks}; resume it on the env it was trained on")
        for name in TRAINED:
            getattr(self.nets, name).load_state_dict(state[name])
        with torch.no_grad():
            self.nets.log_alpha.copy_(state["log_alpha"])
        if self.normalizer is not None:
            self.normalizer.load_state_dict(state["obs_normalizer"])
        self.num_updates = state["num_updates"]


def train(cfg: SACConfig, resume: bool = False, callbacks: Sequence[Callback] | None = None) -> dict[str, Any]:
    """Train SAC as configured; returns the contents of ``final.json``."""
    return train_off_policy("sac", cfg, SAC, resume, callbacks)


def train_seeds(cfgs: Sequence[SACConfig], resume: bool = False, callbacks: Sequence[Callback] | None = None
                ) -> list[dict[str, Any]]:
    """Train one SAC per config (seed) in this process, in lockstep; returns each final.json."""
    return train_off_policy_seeds("sac", cfgs, SAC, resume, callbacks)


def load_policy(state: dict[str, Any]) -> TorchPolicy:
    """Rebuild the policy (deterministic: tanh of the mean) and its observation normalizer from a checkpoint."""
    cfg = config_from_dict(SACConfig, state["config"])
    obs_space, act_space = state["observation_space"], state["action_space"]
    actor = build_actor(cfg, obs_space, act_space, int(state.get("tasks", 0)))
    actor.load_state_dict(state["actor"])
    actor.eval()
    normalizer = ObsNormalizer.from_state(obs_space.shape, state.get("obs_normalizer"))
    return make_policy(actor, obs_space, act_space, normalizer)


AGENT = AgentSpec("sac", SACConfig, train, load_policy, train_seeds=train_seeds,
                  summary="SAC (squashed Gaussian actor, twin critics, automatic entropy tuning; continuous actions)")


if __name__ == "__main__":
    train_from_command_line("sac")
