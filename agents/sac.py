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

Run it: ``rlkit train sac --preset pendulum`` or ``python -m rlkit.agents.sac --help``.
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
from rlkit.envs import make_vec_env

from rlkit.buffers import ReplayBuffer
from rlkit.callbacks import Callback
from rlkit.config import MAX_WIDTH, BaseConfig, ReplayOptions, config_from_dict, default, opt
from rlkit.distributions import LOG_STD_MAX, LOG_STD_MIN, SquashedGaussianActor
from rlkit.fast.numpy_forward import numpy_ops, run_numpy
from rlkit.nets import QCriticEnsemble, check_continuous_spaces, polyak_update
from rlkit.normalizers import ObsNormalizer
from rlkit.optim import make_optimizer
from rlkit.policy import Batch, TorchPolicy
from rlkit.registry import AgentSpec, eval_env_factory, train_from_command_line
from rlkit.run import Run


@dataclass
class SACConfig(ReplayOptions, BaseConfig):
    """SAC hyper-parameters: the replay options, plus SAC's (defaults: SB3's SAC, which follows the SAC v2
    paper's Table 1)."""

    env_id: str = opt("Pendulum-v1", "Gymnasium env id with a Box action space (or pkg.module:Env-v0)")
    buffer_size: int = default(ReplayOptions, "buffer_size", 1_000_000)
    learning_starts: int = default(ReplayOptions, "learning_starts", 100)
    batch_size: int = default(ReplayOptions, "batch_size", 256)
    tau: float = default(ReplayOptions, "tau", 0.005)
    train_every: int = default(ReplayOptions, "train_every", 1)
    lr: float = opt(3e-4, "learning rate of actor, critics and temperature (Adam)", low=0, low_open=True)
    hidden: list[int] = opt([256, 256], "hidden layer sizes of the actor and critic MLPs", low=1, high=MAX_WIDTH)
    n_critics: int = opt(2, "critics in the ensemble; targets take their minimum", low=1)
    alpha: float = opt(1.0, "entropy temperature (the initial value when autotune is on)", low=0, low_open=True)
    autotune: bool = opt(True, "learn alpha so that the policy's entropy tracks target_entropy")
    target_entropy: float | None = opt(None, "entropy target of autotune (None: -|A|, the paper's)")
    normalize_obs: bool = opt(False, "normalize observations by a running mean/std (kept in checkpoints)")
    obs_clip: float = opt(10.0, "clip normalized observations to +-this", low=0, low_open=True)

    def validate(self) -> None:
        self.validate_replay()


def soft_td_target(rewards: torch.Tensor, terminated: torch.Tensor, discounts: torch.Tensor, next_q: torch.Tensor,
                   next_log_prob: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """y = r + gamma^k (1 - terminated) (min_i Q'_i(s', a') - alpha log pi(a'|s')); ``next_q`` is (n, batch)."""
    return rewards + discounts * (1.0 - terminated) * (next_q.min(dim=0).values - alpha * next_log_prob)


def temperature_loss(log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """-mean(log alpha * (log pi + H_target)): alpha falls while the entropy -log pi exceeds the target."""
    return -(log_alpha * (log_prob.detach() + target_entropy)).mean()


class Nets(NamedTuple):
    actor: SquashedGaussianActor
    critic: QCriticEnsemble
    critic_target: QCriticEnsemble
    log_alpha: torch.Tensor
    actor_opt: torch.optim.Optimizer
    critic_opt: torch.optim.Optimizer
    alpha_opt: torch.optim.Optimizer


def build_nets(cfg: SACConfig, obs_space: gym.Space, act_space: gym.spaces.Box, device: str | None = None) -> Nets:
    device = device or cfg.device
    actor = SquashedGaussianActor(obs_space, act_space, cfg.hidden).to(device)
    critic = QCriticEnsemble(obs_space, act_space, cfg.hidden, cfg.n_critics).to(device)
    log_alpha = torch.tensor(math.log(cfg.alpha), device=device, requires_grad=cfg.autotune)
    return Nets(actor, critic, copy.deepcopy(critic).requires_grad_(False), log_alpha,
                make_optimizer(actor.parameters(), "adam", lr=cfg.lr),
                make_optimizer(critic.parameters(), "adam", lr=cfg.lr),
                make_optimizer([log_alpha], "adam", lr=cfg.lr))


def gradient_step(nets: Nets, batch: Batch, cfg: SACConfig, target_entropy: float) -> dict[str, torch.Tensor]:
    """One temperature, critic and actor step and the Polyak update; returns detached terms for logging."""
    actor, critic = nets.actor, nets.critic
    actions_pi, log_prob = actor.sample(batch.obs)
    if cfg.autotune:
        alpha_loss = temperature_loss(nets.log_alpha, log_prob, target_entropy)
        nets.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        nets.alpha_opt.step()
    alpha = nets.log_alpha.detach().exp()
    with torch.no_grad():  # a' from the current policy (not a target actor: SAC has none)
        next_actions, next_log_prob = actor.sample(batch.next_obs)
        target = soft_td_target(batch.rewards, batch.terminated, batch.discounts,
                                nets.critic_target(batch.next_obs, next_actions), next_log_prob, alpha)
    q = critic(batch.obs, batch.actions)
    critic_loss = 0.5 * (q - target).pow(2).mean(dim=1).sum()
    nets.critic_opt.zero_grad(set_to_none=True)
    critic_loss.backward()
    nets.critic_opt.step()
    # The actor needs dQ/da only: frozen critic weights spare autograd their gradient matmuls.
    critic.requires_grad_(False)
    actor_loss = (alpha * log_prob - critic(batch.obs, actions_pi).min(dim=0).values).mean()
    critic.requires_grad_(True)
    nets.actor_opt.zero_grad(set_to_none=True)
    actor_loss.backward()
    nets.actor_opt.step()
    polyak_update(critic, nets.critic_target, cfg.tau)
    return {"losses/critic_loss": critic_loss.detach(), "losses/actor_loss": actor_loss.detach(),
            "losses/q_values": q[0].detach().mean(), "losses/alpha": alpha, "losses/entropy": -log_prob.detach().mean()}


def make_policy(actor: SquashedGaussianActor, act_space: gym.spaces.Box, obs_space: gym.Space,
                normalizer: ObsNormalizer | None = None) -> TorchPolicy:
    """The actor as a Policy: ``tanh(mean)`` scaled to the bounds when deterministic, else a sample.

    Small deterministic batches on the CPU run on numpy views of the live weights."""
    shape = act_space.shape

    def act_fn(module: SquashedGaussianActor, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        obs = normalizer.torch(obs) if normalizer is not None else obs
        return module.act(obs, deterministic).reshape(len(obs), *shape)

    trunk = numpy_ops(actor.trunk)
    flat = actor.encoder.n_discrete == 0 and actor.encoder.cnn is None
    if trunk is None or not flat or any(p.device.type != "cpu" for p in actor.parameters()):
        return TorchPolicy(actor, act_fn, act_space, obs_space)
    mean_layer = numpy_ops([actor.mean])
    scale, bias = actor.action_scale.numpy(), actor.action_bias.numpy()

    def fast(obs: np.ndarray) -> np.ndarray:
        x = np.asarray(normalizer(obs) if normalizer is not None else obs, dtype=np.float32).reshape(len(obs), -1)
        return (np.tanh(run_numpy(mean_layer, run_numpy(trunk, x))) * scale + bias).reshape(len(obs), *shape)

    return TorchPolicy(actor, act_fn, act_space, obs_space, fast=fast)


def numpy_sampler(actor: SquashedGaussianActor, rng: np.random.Generator) -> Any:
    """``sample(obs) -> actions`` on numpy views of the live weights (CPU, flat observations), or None."""
    trunk = numpy_ops(actor.trunk)
    if trunk is None or actor.encoder.n_discrete or actor.encoder.cnn is not None \
            or any(p.device.type != "cpu" for p in actor.parameters()):
        return None
    heads = numpy_ops([actor.mean]), numpy_ops([actor.log_std])
    scale, bias = actor.action_scale.numpy(), actor.action_bias.numpy()

    def sample(obs: np.ndarray) -> np.ndarray:
        h = run_numpy(trunk, np.asarray(obs, dtype=np.float32).reshape(len(obs), -1))
        mean, log_std = (run_numpy(head, h) for head in heads)
        u = mean + np.exp(np.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)) * rng.standard_normal(mean.shape)
        return (np.tanh(u) * scale + bias).astype(np.float32)

    return sample


def train(cfg: SACConfig, resume: bool = False, callbacks: Sequence[Callback] | None = None) -> dict[str, Any]:
    """Train SAC as configured; returns the contents of ``final.json``."""
    cfg.validate()
    envs = make_vec_env(cfg.env_id, cfg.num_envs, seed=cfg.seed, env_kwargs=cfg.env_kwargs)
    obs_space, act_space = envs.single_observation_space, envs.single_action_space
    check_continuous_spaces(obs_space, act_space, cfg.env_id, "sac")
    run = Run("sac", cfg, resume=resume, callbacks=callbacks)
    stride = cfg.num_envs
    low, high = act_space.low.astype(np.float32), act_space.high.astype(np.float32)
    target_entropy = -float(np.prod(act_space.shape)) if cfg.target_entropy is None else cfg.target_entropy

    nets = build_nets(cfg, obs_space, act_space)
    normalizer = ObsNormalizer(obs_space.shape, cfg.obs_clip) if cfg.normalize_obs else None
    buffer = ReplayBuffer(cfg.buffer_size, obs_space, act_space, num_envs=stride, gamma=cfg.gamma, rng=run.rng)
    policy = make_policy(nets.actor, act_space, obs_space, normalizer)
    sampler = numpy_sampler(nets.actor, run.rng)

    global_step, num_updates = 0, 0
    if run.resume_state is not None:
        state = run.resume_state
        for name in ("actor", "critic", "critic_target", "actor_opt", "critic_opt", "alpha_opt"):
            getattr(nets, name).load_state_dict(state[name])
        with torch.no_grad():
            nets.log_alpha.copy_(state["log_alpha"])
        if normalizer is not None:
            normalizer.load_state_dict(state["obs_normalizer"])
        num_updates, global_step = state["num_updates"], run.global_step
        run.restore_replay_buffer(buffer)
    run.restore_rng()
    # A resumed run cannot restore the envs' internal state; it starts fresh episodes on a new seed.
    obs = envs.reset(seed=cfg.seed + global_step)

    saved_buffer = buffer if cfg.save_buffer else None  # checkpointed with the state, in the same directory

    def state_dict() -> dict[str, Any]:
        return {**{name: getattr(nets, name).state_dict()
                   for name in ("actor", "critic", "critic_target", "actor_opt", "critic_opt", "alpha_opt")},
                "log_alpha": nets.log_alpha.detach().cpu(), "num_updates": num_updates,
                "obs_normalizer": normalizer.state_dict() if normalizer is not None else None,
                "observation_space": obs_space, "action_space": act_space}

    with run.checkpoint_on_interrupt(lambda: (global_step, state_dict(), saved_buffer)):
        while global_step < cfg.total_steps and run.stopped is None:
            # ALGO LOGIC: uniform random actions first, then samples of the squashed Gaussian policy.
            if normalizer is not None:
                normalizer.update(obs)
            if global_step < cfg.learning_starts:
                actions = run.rng.uniform(low, high, size=(stride, *act_space.shape)).astype(np.float32)
            elif sampler is not None:
                actions = sampler(normalizer(obs) if normalizer is not None else obs).reshape(stride, *act_space.shape)
            else:
                actions = policy.act(obs, deterministic=False)

            step = envs.step(actions)
            # TRY NOT TO MODIFY: store the true final observation, and bootstrap through truncation.
            buffer.add(obs, actions, step.rewards, step.final_obs, step.terminated, step.truncated)
            obs = step.obs
            global_step += stride
            for i in np.flatnonzero(step.episode_lengths):
                run.logger.record_episode(step.episode_returns[i], int(step.episode_lengths[i]))

            # ALGO LOGIC: training (after learning_starts steps, as SB3 counts them).
            if cfg.learning(global_step, len(buffer)) and Run.due(global_step, cfg.train_every, stride):
                for batch in buffer.sample_minibatches(cfg.batch_size, cfg.gradient_steps, cfg.device):
                    num_updates += 1
                    if normalizer is not None:
                        batch = normalizer.batch(batch)
                    metrics = gradient_step(nets, batch, cfg, target_entropy)
                for key, value in metrics.items():
                    run.logger.record(key, value.item())

            run.step_done(global_step, stride, policy, eval_env_factory(cfg), state_dict,
                          lambda n=num_updates: {"charts/num_updates": n}, replay_buffer=saved_buffer)

    envs.close()
    return run.finish(policy, eval_env_factory(cfg), global_step, state_dict(), replay_buffer=saved_buffer)


def load_policy(state: dict[str, Any]) -> TorchPolicy:
    """Rebuild the policy (deterministic: tanh of the mean) and its observation normalizer from a checkpoint."""
    cfg = config_from_dict(SACConfig, state["config"])
    obs_space, act_space = state["observation_space"], state["action_space"]
    actor = SquashedGaussianActor(obs_space, act_space, cfg.hidden)
    actor.load_state_dict(state["actor"])
    actor.eval()
    normalizer = ObsNormalizer.from_state(obs_space.shape, state.get("obs_normalizer"))
    return make_policy(actor, act_space, obs_space, normalizer)


AGENT = AgentSpec("sac", SACConfig, train, load_policy,
                  summary="SAC (squashed Gaussian actor, twin critics, automatic entropy tuning; continuous actions)")


if __name__ == "__main__":
    train_from_command_line("sac")
