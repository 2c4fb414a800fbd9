"""DQN and its family: Double, Dueling, n-step and prioritized replay.

Papers:
    DQN         Mnih et al. 2015, "Human-level control through deep RL" (Nature 518)
    Double DQN  van Hasselt et al. 2016, https://arxiv.org/abs/1509.06461
    Dueling     Wang et al. 2016, https://arxiv.org/abs/1511.06581
    n-step      Sutton 1988; as used in Rainbow (Hessel et al. 2018)
    PER         Schaul et al. 2016, https://arxiv.org/abs/1511.05952 (proportional variant)

Deviations from the papers, and why:
    * Adam is the default optimizer (as in Rainbow and SB3); the ``nature`` Atari presets switch to
      the paper's centered RMSProp (lr 2.5e-4, alpha 0.95, eps 0.01).
    * The Huber loss is applied to the TD error (the paper clips the error to [-1, 1], which has the
      same gradient) and gradients are clipped by global norm (``max_grad_norm``).
    * Truncated episodes (time limits) bootstrap from their real last observation; only
      ``terminated`` stops the bootstrap (the paper's Atari episodes had no time limits).
    * PER's importance weights are normalised by the batch maximum (as in the paper's
      Algorithm 1 line 10 and most implementations), and beta is annealed linearly to 1.

Run it: ``rlkit train dqn --env CartPole-v1 --preset cartpole`` or ``python -m rlkit.agents.dqn --help``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from rlkit.envs import is_atari, make_env, make_vec_env
from torch import nn

from rlkit.buffers import PrioritizedReplayBuffer, ReplayBuffer
from rlkit.config import BaseConfig, config_from_dict, opt
from rlkit.errors import RLKitError
from rlkit.nets import QNetwork, numpy_forward, polyak_update
from rlkit.registry import AgentSpec
from rlkit.run import Run
from rlkit.types import Batch, TorchPolicy


@dataclass
class DQNConfig(BaseConfig):
    """DQN hyper-parameters (defaults suit small classic-control tasks; presets hold the rest)."""

    num_envs: int = opt(1, "parallel envs stepping in lockstep")
    buffer_size: int = opt(100_000, "replay capacity in transitions")
    learning_starts: int = opt(1_000, "env steps of random play before updates start")
    batch_size: int = opt(64, "minibatch size")
    lr: float = opt(1e-3, "learning rate")
    lr_decay: bool = opt(False, "anneal the learning rate linearly to 0 over total_steps")
    optimizer: Literal["adam", "rmsprop"] = opt("adam", "adam, or rmsprop (centered, as in the Nature paper)")
    optimizer_eps: float = opt(1e-8, "epsilon of the optimizer (Nature RMSProp: 0.01)")
    gamma: float = opt(0.99, "discount factor")
    train_every: int = opt(4, "env steps between gradient updates")
    gradient_steps: int = opt(1, "gradient steps per update")
    target_update_every: int = opt(1_000, "env steps between target-network updates")
    tau: float = opt(1.0, "Polyak factor of the target update in (0, 1]; 1.0 is a hard copy")
    epsilon_start: float = opt(1.0, "initial exploration rate")
    epsilon_end: float = opt(0.05, "final exploration rate")
    exploration_fraction: float = opt(0.1, "fraction of total_steps over which epsilon decays linearly")
    hidden: list[int] = opt([64, 64], "hidden layer sizes of the MLP (after the CNN for images)")
    double: bool = opt(False, "Double DQN: the online net picks the next action, the target net rates it")
    dueling: bool = opt(False, "dueling head: Q = V + A - mean(A)")
    n_step: int = opt(1, "n-step returns (cut at episode ends)")
    prioritized: bool = opt(False, "proportional prioritized replay")
    per_alpha: float = opt(0.6, "PER priority exponent alpha")
    per_beta_start: float = opt(0.4, "PER importance-weight exponent beta at the start (annealed to 1)")
    per_eps: float = opt(1e-6, "PER constant added to |TD error|")
    loss: Literal["huber", "mse"] = opt("huber", "TD loss")
    max_grad_norm: float = opt(10.0, "clip gradients to this global norm (0 = no clipping)")
    clip_rewards: bool = opt(False, "train on sign(reward) (Atari); logged returns stay raw")
    save_buffer: bool = opt(True, "save the replay buffer with each checkpoint so --resume continues exactly")

    def validate(self) -> None:
        if not 0 < self.tau <= 1:
            raise RLKitError(f"tau must be in (0, 1]; got {self.tau}")
        if not 0 <= self.gamma <= 1:
            raise RLKitError(f"gamma must be in [0, 1]; got {self.gamma}")
        for name in ("batch_size", "train_every", "gradient_steps", "target_update_every", "n_step",
                     "num_envs", "buffer_size"):
            if getattr(self, name) < 1:
                raise RLKitError(f"{name} must be at least 1; got {getattr(self, name)}")


# ALGO LOGIC: the math, as pure functions (unit-tested against hand values).
def linear_schedule(start: float, end: float, duration: float, t: float) -> float:
    """Linear interpolation from ``start`` to ``end`` over ``duration`` steps, then constant."""
    if duration <= 0:
        return end
    return start + min(t / duration, 1.0) * (end - start)


def td_target(rewards: torch.Tensor, terminated: torch.Tensor, discounts: torch.Tensor,
              next_q_target: torch.Tensor, next_q_online: torch.Tensor | None = None) -> torch.Tensor:
    """y = R + gamma^k * (1 - terminated) * Q_target(s', a*).

    ``a*`` is argmax of the target net (DQN) or of the online net when ``next_q_online`` is given
    (Double DQN). ``rewards`` is the (n-step) return and ``discounts`` is gamma^k.
    """
    if next_q_online is None:
        next_value = next_q_target.max(dim=1).values
    else:
        next_value = next_q_target.gather(1, next_q_online.argmax(dim=1, keepdim=True)).squeeze(1)
    return rewards + discounts * (1.0 - terminated) * next_value


def dqn_loss(q_net: nn.Module, q_target: nn.Module, batch: Batch, double: bool, loss: str,
             next_q_target: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Importance-weighted TD loss; returns (loss, td_errors, q_values of the taken actions).

    ``next_q_target`` is ``q_target(batch.next_obs)`` when the caller computed it already (the
    training loop does, once for all minibatches of an update, while the target net is fixed).
    """
    with torch.no_grad():
        if next_q_target is None:
            next_q_target = q_target(batch.next_obs)
        # Double DQN's online pass over next_obs runs apart, without autograd: joined to the
        # [obs] pass it would double the backward's matmuls, which dominate on 256-wide nets.
        next_q_online = q_net(batch.next_obs) if double else None
    q_all = q_net(batch.obs)
    target = td_target(batch.rewards, batch.terminated, batch.discounts, next_q_target, next_q_online)
    q_taken = q_all.gather(1, batch.actions.long().reshape(-1, 1)).squeeze(1)
    td_errors = target - q_taken
    if loss == "huber":
        per_sample = nn.functional.smooth_l1_loss(q_taken, target, reduction="none")
    else:
        per_sample = td_errors.pow(2)
    return (batch.weights * per_sample).mean(), td_errors.detach(), q_taken.detach()


def check_action_space(space: gym.Space, env_id: str) -> None:
    if not isinstance(space, gym.spaces.Discrete):
        raise RLKitError(f"dqn needs a discrete action space, but {env_id} has {space}; "
                         "use ddpg or td3 for continuous actions (or a2c, which handles both)")


def greedy(q_net: nn.Module, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
    return q_net(obs).argmax(dim=1)


def build_q_net(cfg: DQNConfig, observation_space: gym.Space, action_space: gym.Space) -> QNetwork:
    return QNetwork(observation_space, action_space, cfg.hidden, dueling=cfg.dueling)


def make_optimizer(cfg: DQNConfig, params: Any) -> torch.optim.Optimizer:
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, alpha=0.95, eps=cfg.optimizer_eps, centered=True,
                                   foreach=True)
    return torch.optim.Adam(params, lr=cfg.lr, eps=cfg.optimizer_eps, fused=True)


def train(cfg: DQNConfig, resume: bool = False) -> dict[str, Any]:
    """Train DQN as configured; returns the contents of ``final.json``."""
    cfg.validate()
    envs = make_vec_env(cfg.env_id, cfg.num_envs, seed=cfg.seed, env_kwargs=cfg.env_kwargs)
    check_action_space(envs.single_action_space, cfg.env_id)
    run = Run("dqn", cfg, resume=resume)
    obs_space, act_space = envs.single_observation_space, envs.single_action_space
    n_actions = int(act_space.n)

    q_net = build_q_net(cfg, obs_space, act_space).to(cfg.device)
    q_target = copy.deepcopy(q_net).requires_grad_(False)
    optimizer = make_optimizer(cfg, q_net.parameters())
    q_params = list(q_net.parameters())  # (listed once: .parameters() walks the modules on every call)
    buffer_cls = PrioritizedReplayBuffer if cfg.prioritized else ReplayBuffer
    buffer_kwargs = {"alpha": cfg.per_alpha, "eps": cfg.per_eps} if cfg.prioritized else {}
    # Atari observations are FrameStack'ed: store each frame once (see rlkit.buffers).
    frame_stack = obs_space.shape[0] if is_atari(cfg.env_id) else 0
    buffer = buffer_cls(cfg.buffer_size, obs_space, act_space, num_envs=cfg.num_envs, n_step=cfg.n_step,
                        gamma=cfg.gamma, rng=run.rng, frame_stack=frame_stack, **buffer_kwargs)
    policy = TorchPolicy(q_net, greedy, act_space, obs_space, fast=numpy_forward(q_net))

    global_step = 0
    if run.resume_state is not None:
        state = run.resume_state
        q_net.load_state_dict(state["q_net"])
        q_target.load_state_dict(state["q_target"])  # (map_location is cpu; the nets are on cfg.device)
        optimizer.load_state_dict(state["optimizer"])
        global_step = run.global_step
        run.restore_replay_buffer(buffer)
    run.restore_rng()
    # A resumed run cannot restore the envs' internal state; it starts fresh episodes on a new seed.
    obs = envs.reset(seed=cfg.seed + global_step)

    def state_dict() -> dict[str, Any]:
        if cfg.save_buffer:
            run.save_replay_buffer(buffer)
        return {"q_net": q_net.state_dict(), "q_target": q_target.state_dict(),
                "optimizer": optimizer.state_dict(), "observation_space": obs_space, "action_space": act_space}

    stride = cfg.num_envs
    decay_steps = cfg.exploration_fraction * cfg.total_steps
    with run.checkpoint_on_interrupt(lambda: (global_step, state_dict())):
        while global_step < cfg.total_steps:
            # ALGO LOGIC: epsilon-greedy action selection.
            epsilon = linear_schedule(cfg.epsilon_start, cfg.epsilon_end, decay_steps, global_step)
            actions = policy.act(obs)
            explore = run.rng.random(stride) < epsilon
            if explore.any():
                actions[explore] = run.rng.integers(n_actions, size=int(explore.sum()))

            step = envs.step(actions)
            rewards = np.sign(step.rewards) if cfg.clip_rewards else step.rewards
            # TRY NOT TO MODIFY: store the true final observation, and bootstrap through truncation.
            buffer.add(obs, actions, rewards, step.final_obs, step.terminated, step.truncated)
            obs = step.obs
            global_step += stride
            for i in np.flatnonzero(step.episode_lengths):
                run.logger.record_episode(step.episode_returns[i], int(step.episode_lengths[i]))

            # ALGO LOGIC: training.
            if global_step >= cfg.learning_starts and len(buffer) >= cfg.batch_size \
                    and Run.due(global_step, cfg.train_every, stride):
                if cfg.lr_decay:
                    for group in optimizer.param_groups:
                        group["lr"] = cfg.lr * max(1.0 - global_step / cfg.total_steps, 0.0)
                if cfg.prioritized:
                    buffer.beta = linear_schedule(cfg.per_beta_start, 1.0, cfg.total_steps, global_step)
                # Uniform replay: draw all minibatches of this update at once (one numpy gather
                # instead of gradient_steps); PER must re-sample after each priority update.
                presampled = None
                if not cfg.prioritized:
                    presampled = buffer.sample(cfg.batch_size * cfg.gradient_steps).to(cfg.device)
                # The target net is fixed during an update: rate every minibatch's next_obs in one pass.
                next_q_targets = None
                if presampled is not None:
                    with torch.no_grad():
                        next_q_targets = q_target(presampled.next_obs)
                for i in range(cfg.gradient_steps):
                    next_q_target = None
                    if presampled is None:
                        batch = buffer.sample(cfg.batch_size).to(cfg.device)
                    else:
                        rows = slice(i * cfg.batch_size, (i + 1) * cfg.batch_size)
                        batch, next_q_target = Batch(*(x[rows] for x in presampled)), next_q_targets[rows]
                    loss, td_errors, q_taken = dqn_loss(q_net, q_target, batch, cfg.double, cfg.loss, next_q_target)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.max_grad_norm > 0:
                        nn.utils.clip_grad_norm_(q_params, cfg.max_grad_norm)
                    optimizer.step()
                    buffer.update_priorities(batch.indices, td_errors.cpu().numpy())
                run.logger.record("losses/td_loss", loss.item())
                run.logger.record("losses/q_values", q_taken.mean().item())
            if Run.due(global_step, cfg.target_update_every, stride):
                polyak_update(q_net, q_target, cfg.tau)

            run.step_done(global_step, stride, policy, eval_env_factory(cfg), state_dict,
                          lambda epsilon=epsilon: {"charts/epsilon": epsilon})

    envs.close()
    return run.finish(policy, eval_env_factory(cfg), global_step, state_dict())


def eval_env_factory(cfg: BaseConfig) -> Any:
    return lambda render_mode=None: make_env(cfg.env_id, render_mode=render_mode, env_kwargs=cfg.env_kwargs)


def load_policy(state: dict[str, Any]) -> TorchPolicy:
    """Rebuild the greedy policy from a checkpoint."""
    cfg = config_from_dict(DQNConfig, state["config"])
    q_net = build_q_net(cfg, state["observation_space"], state["action_space"])
    q_net.load_state_dict(state["q_net"])
    q_net.eval()
    return TorchPolicy(q_net, greedy, state["action_space"], state["observation_space"], fast=numpy_forward(q_net))


AGENT = AgentSpec(
    name="dqn",
    config_cls=DQNConfig,
    train=train,
    load_policy=load_policy,
    presets_file=Path(__file__).parent / "presets" / "dqn.yaml",
    summary="DQN with Double, Dueling, n-step and prioritized replay (discrete actions)",
)


if __name__ == "__main__":
    from rlkit.cli import main

    main(["train", "dqn", *__import__("sys").argv[1:]])
