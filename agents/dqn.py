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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from rlkit.envs import is_atari
from rlkit.envs.multitask import task_count
from torch import nn

from rlkit.buffers import PrioritizedReplayBuffer, ReplayBuffer
from rlkit.callbacks import Callback
from rlkit.config import MAX_WIDTH, BaseConfig, ReplayOptions, config_from_dict, opt
from rlkit.engine.common import progress
from rlkit.engine.off_policy import OffPolicyLearner, Stacked, train_off_policy, train_off_policy_seeds
from rlkit.errors import RLKitError
from rlkit.fast.fused_mlp import fused_dqn
from rlkit.fast.numpy_forward import numpy_forward
from rlkit.fast.presample import rate_once
from rlkit.fast.stacked_dqn import StackedDQN, stack_dqn
from rlkit.multitask import (
    HardSharing,
    MultiTaskOptions,
    PCGrad,
    TaskConditioned,
    load_pretrained,
    resolve_tasks,
    task_ids,
    task_losses,
)
from rlkit.nets import QNetwork, polyak_update
from rlkit.optim import OptimizerOptions, linear, set_lr
from rlkit.policy import Batch, TorchPolicy
from rlkit.registry import AgentSpec, train_from_command_line
from rlkit.run import Run


@dataclass
class DQNConfig(MultiTaskOptions, ReplayOptions, OptimizerOptions, BaseConfig):
    """DQN hyper-parameters: the replay and optimizer options, plus DQN's (defaults suit small
    classic-control tasks; presets hold the rest)."""

    target_update_every: int = opt(1_000, "env steps between target-network updates", low=1)
    epsilon_start: float = opt(1.0, "initial exploration rate", low=0, high=1)
    epsilon_end: float = opt(0.05, "final exploration rate; also the epsilon of `rlkit eval --stochastic`",
                             low=0, high=1)
    exploration_fraction: float = opt(0.1, "fraction of total_steps over which epsilon decays linearly",
                                      low=0, high=1)
    hidden: list[int] = opt([64, 64], "hidden layer sizes of the MLP (after the CNN for images)", low=1,
                            high=MAX_WIDTH)
    double: bool = opt(False, "Double DQN: the online net picks the next action, the target net rates it")
    dueling: bool = opt(False, "dueling head: Q = V + A - mean(A)")
    n_step: int = opt(1, "n-step returns (cut at episode ends)", low=1)
    prioritized: bool = opt(False, "proportional prioritized replay")
    per_alpha: float = opt(0.6, "PER priority exponent alpha")
    per_beta_start: float = opt(0.4, "PER importance-weight exponent beta at the start (annealed to 1)")
    per_eps: float = opt(1e-6, "PER constant added to |TD error|")
    loss: Literal["huber", "mse"] = opt("huber", "TD loss")
    max_grad_norm: float = opt(10.0, "clip gradients to this global norm (0 = no clipping)")
    clip_rewards: bool = opt(False, "train on sign(reward) (Atari); logged returns stay raw")
    fused_update: bool = opt(True, "hand-written gradient steps, bit-identical to autograd's (rlkit.fast.fused_mlp), "
                             "where they apply: CPU, flat observations, MLP without dueling head, adam, one task")
    def validate(self) -> None:
        self.validate_optimizer()
        dqn_tasks(self)


def dqn_tasks(cfg: DQNConfig) -> int:
    """The number of tasks (:func:`rlkit.multitask.resolve_tasks`); hard sharing has no dueling head."""
    if cfg.heads == "per_task" and cfg.dueling:
        raise RLKitError("heads=per_task has one linear Q head per task, not a dueling head; set dueling=false, or "
                         "heads=shared for a dueling task-conditioned network")
    return resolve_tasks(cfg, task_count(cfg.env_id))


# ALGO LOGIC: the math, as pure functions (unit-tested against hand values).
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
    """Importance-weighted TD loss; returns (loss, td_errors, q_values of the taken actions)."""
    per_sample, td_errors, q_taken = td_losses(q_net, q_target, batch, double, loss, next_q_target)
    return per_sample.mean(), td_errors, q_taken


def td_losses(q_net: nn.Module, q_target: nn.Module, batch: Batch, double: bool, loss: str,
              next_q_target: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each sample's importance-weighted TD loss (PCGrad splits them by task), the TD errors and the Q-values of
    the taken actions.

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
    return batch.weights * per_sample, td_errors.detach(), q_taken.detach()


def check_action_space(space: gym.Space, env_id: str) -> None:
    if not isinstance(space, gym.spaces.Discrete):
        raise RLKitError(f"dqn needs a discrete action space, but {env_id} has {space}; "
                         "use ddpg or td3 for continuous actions (or a2c, which handles both)")


def epsilon_greedy(q_values: torch.Tensor, epsilon: float) -> torch.Tensor:
    """argmax Q, replaced with probability ``epsilon`` per row by a uniform action (torch's RNG)."""
    greedy = q_values.argmax(dim=1)
    explore = torch.rand(len(q_values), device=q_values.device) < epsilon
    return torch.where(explore, torch.randint_like(greedy, q_values.shape[1]), greedy)


def build_q_net(cfg: DQNConfig, observation_space: gym.Space, action_space: gym.Space, n_tasks: int = 0
                ) -> nn.Module:
    """The Q-network; with ``n_tasks``, task-conditioned (``heads="shared"``) or hard sharing (``"per_task"``)."""
    if n_tasks and cfg.heads == "per_task":
        return HardSharing(observation_space, int(action_space.n), cfg.hidden, n_tasks)
    q_net = QNetwork(observation_space, action_space, cfg.hidden, dueling=cfg.dueling)
    return TaskConditioned(q_net, observation_space, n_tasks) if n_tasks else q_net


def init_q_net(q_net: nn.Module, source: str, observation_space: gym.Space, n_tasks: int) -> None:
    """Load a trained DQN's Q-network into ``q_net`` (fine-tuning), refusing in one line a checkpoint of another
    agent, observation space, task count or architecture."""
    load_pretrained(source, "dqn", observation_space, n_tasks, {"q_net": q_net}, "hidden, heads, dueling")


def make_policy(q_net: nn.Module, observation_space: gym.Space, action_space: gym.Space, epsilon: float
                ) -> TorchPolicy:
    """Greedy actions; ``act(obs, deterministic=False)`` (``rlkit eval --stochastic``) is epsilon-greedy with
    ``epsilon``, the final exploration rate ``epsilon_end`` the agent trained with at the end."""

    def act_fn(module: nn.Module, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        q_values = module(obs)
        return q_values.argmax(dim=1) if deterministic else epsilon_greedy(q_values, epsilon)

    return TorchPolicy(q_net, act_fn, action_space, observation_space, fast=numpy_forward(q_net))


class DQN(OffPolicyLearner):
    """What DQN needs from the off-policy loop (:mod:`rlkit.engine.off_policy`): epsilon-greedy actions,
    TD-loss steps on (prioritized, n-step) replay, and the target network's updates."""

    warmup_uniform = False  # epsilon starts at epsilon_start: exploration is the schedule's
    draws_torch_rng = False  # epsilon-greedy draws from the run's numpy Generator; evaluations are greedy

    def __init__(self, cfg: DQNConfig, obs_space: gym.Space, act_space: gym.spaces.Discrete,
                 rng: np.random.Generator) -> None:
        self.cfg, self.rng, self.spaces = cfg, rng, (obs_space, act_space)
        self.n_tasks = dqn_tasks(cfg)
        self.q_net = build_q_net(cfg, obs_space, act_space, self.n_tasks).to(cfg.device)
        if cfg.init_from:
            init_q_net(self.q_net, cfg.init_from, obs_space, self.n_tasks)
        self.q_target = copy.deepcopy(self.q_net).requires_grad_(False)
        self.optimizer = cfg.build_optimizer(self.q_net.parameters())
        self.q_params = list(self.q_net.parameters())  # (listed once: .parameters() walks the modules each call)
        replay = dict(num_envs=cfg.num_envs, n_step=cfg.n_step, gamma=cfg.gamma, rng=rng,
                      frame_stack=obs_space.shape[0] if is_atari(cfg.env_id) else 0)  # store each Atari frame once
        self.buffer = PrioritizedReplayBuffer(cfg.buffer_size, obs_space, act_space, alpha=cfg.per_alpha,
                                              eps=cfg.per_eps, **replay) if cfg.prioritized else \
            ReplayBuffer(cfg.buffer_size, obs_space, act_space, **replay)
        self.policy = make_policy(self.q_net, obs_space, act_space, cfg.epsilon_end)
        self.n_actions = int(act_space.n)
        self.epsilon = cfg.epsilon_start
        # the task gradients projected against each other (per-task losses: update()'s autograd path)
        self.pcgrad = PCGrad(self.optimizer, rng) if cfg.pcgrad else None
        # the same steps as update()'s loop, by hand (rlkit.fast.fused_mlp); None where it does not apply
        self.fused = fused_dqn(self.q_net, self.q_target, self.optimizer, cfg.double, cfg.loss, cfg.max_grad_norm) \
            if cfg.fused_update and not self.n_tasks else None
        # exploration's greedy actions: the fused step's own forward where it offers one (MinAtar's conv network)
        self.greedy_actions = getattr(self.fused, "greedy", None) or self.policy.act

    @staticmethod
    def check_spaces(observation_space: gym.Space, action_space: gym.Space, env_id: str, agent: str) -> None:
        check_action_space(action_space, env_id)
        if isinstance(observation_space, gym.spaces.Dict) and task_count(env_id):
            raise RLKitError(f"dqn takes {env_id}'s one-hot task ids, not its Dict observations; drop obs_mode "
                             "from env_kwargs")

    def explore(self, obs: np.ndarray, global_step: int) -> np.ndarray:
        """Epsilon-greedy, epsilon decaying linearly over ``exploration_fraction`` of the budget."""
        return self.epsilon_greedy(self.greedy_actions(obs), global_step)

    def epsilon_greedy(self, greedy: np.ndarray, global_step: int) -> np.ndarray:
        """``greedy`` actions, each replaced with probability epsilon (at ``global_step``) by a uniform one."""
        cfg = self.cfg
        decay_steps = cfg.exploration_fraction * cfg.total_steps
        self.epsilon = linear(cfg.epsilon_start, cfg.epsilon_end, global_step / decay_steps if decay_steps > 0 else 1.0)
        explore = self.rng.random(cfg.num_envs) < self.epsilon
        if explore.any():
            greedy[explore] = self.rng.integers(self.n_actions, size=int(explore.sum()))
        return greedy

    def rewards_to_store(self, rewards: np.ndarray) -> np.ndarray:
        return np.sign(rewards) if self.cfg.clip_rewards else rewards

    def start_round(self, global_step: int) -> None:
        """The round's learning rate and PER beta (before the lazily drawn minibatches are sampled)."""
        done = progress(global_step, self.cfg.total_steps)
        set_lr(self.optimizer, self.cfg.lr_at(done))
        if self.cfg.prioritized:
            self.buffer.beta = linear(self.cfg.per_beta_start, 1.0, done)

    def update(self, batches: Iterable[Batch], global_step: int) -> dict[str, float]:
        cfg = self.cfg
        self.start_round(global_step)
        fused = self.fused
        # the target net is fixed during a round: its values of the round's next observations in one forward
        next_q_targets = None if fused is not None and fused.rates_targets else rate_once(self.q_target, batches)
        if fused is not None:
            td_loss, q_mean = fused.round(batches, next_q_targets,
                                               self.buffer.update_priorities if cfg.prioritized else None)
            return {"losses/td_loss": td_loss, "losses/q_values": q_mean}
        for i, batch in enumerate(batches):
            next_q_target = next_q_targets[i] if next_q_targets is not None else None
            per_sample, td_errors, q_taken = td_losses(self.q_net, self.q_target, batch, cfg.double, cfg.loss,
                                                       next_q_target)
            self.optimizer.zero_grad(set_to_none=True)
            if self.pcgrad is None:
                loss = per_sample.mean()
                loss.backward()
            else:  # each task's share of the loss, its gradient projected off the others' where they conflict
                losses = task_losses(per_sample, task_ids(batch.obs, self.n_tasks), self.n_tasks)
                loss = torch.stack(losses).sum()
                self.pcgrad.backward(losses)
            if cfg.max_grad_norm > 0:
                nn.utils.clip_grad_norm_(self.q_params, cfg.max_grad_norm)
            self.optimizer.step()
            self.buffer.update_priorities(batch.indices, td_errors.cpu().numpy())
        scalars = {"losses/td_loss": loss.item(), "losses/q_values": q_taken.mean().item()}
        if self.pcgrad is not None:
            scalars["losses/pcgrad_projections"] = float(self.pcgrad.conflicts)
        return scalars

    @classmethod
    def stack(cls, learners: list[DQN]) -> Stacked | None:
        """Seeds' fused rounds and greedy actions as one, their Q-networks stacked (:mod:`rlkit.fast.stacked_dqn`);
        None unless the configs differ only in seed and run directory, with prioritized replay (each seed's
        minibatches depend on its own priority updates) or without the fused path."""
        def shared(cfg: DQNConfig) -> dict[str, Any]:  # what the seeds' one round assumes they share
            return {k: v for k, v in cfg.to_dict().items() if k not in ("seed", "run_dir", "progress")}

        same = all(shared(learner.cfg) == shared(learners[0].cfg) for learner in learners)
        stacked = stack_dqn([learner.fused for learner in learners]) \
            if same and not learners[0].cfg.prioritized else None
        if stacked is None:
            return None
        for learner in learners:  # the numpy acting path viewed the weights' old storage
            learner.policy = make_policy(learner.q_net, *learner.spaces, learner.cfg.epsilon_end)
        return _StackedDQN(learners, stacked)

    def after_env_step(self, global_step: int, ended: np.ndarray) -> None:
        if Run.due(global_step, self.cfg.target_update_every, self.cfg.num_envs):
            polyak_update(self.q_net, self.q_target, self.cfg.tau)

    def scalars(self) -> dict[str, float]:
        return {"charts/epsilon": self.epsilon, "charts/learning_rate": self.optimizer.param_groups[0]["lr"]}

    def state_dict(self) -> dict[str, Any]:
        return {"q_net": self.q_net.state_dict(), "q_target": self.q_target.state_dict(),
                "optimizer": self.optimizer.state_dict(), "tasks": self.n_tasks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state.get("tasks", 0)) != self.n_tasks:
            raise RLKitError(f"the checkpoint's Q-network was trained on {state.get('tasks', 0)} tasks, but "
                             f"{self.cfg.env_id} has {self.n_tasks}; resume it on the env it was trained on")
        self.q_net.load_state_dict(state["q_net"])
        self.q_target.load_state_dict(state["q_target"])  # (map_location is cpu; the nets are on cfg.device)
        self.optimizer.load_state_dict(state["optimizer"])


class _StackedDQN(Stacked):
    """DQN seeds in one process: one forward rates every seed's observations, one stacked round trains them all."""

    def __init__(self, learners: list[DQN], stacked: StackedDQN) -> None:
        self.learners, self.stacked = learners, stacked

    def explore(self, obs_of_each: list[np.ndarray], global_step: int) -> list[np.ndarray]:
        greedy = self.stacked.greedy(np.stack(obs_of_each))
        return [learner.epsilon_greedy(actions, global_step) for learner, actions in zip(self.learners, greedy)]

    def update(self, batches_of_each: list[Iterable[Batch]], global_step: int) -> list[dict[str, float]]:
        for learner in self.learners:
            learner.start_round(global_step)
        losses, q_means = self.stacked.round(batches_of_each)
        return [{"losses/td_loss": loss, "losses/q_values": q} for loss, q in zip(losses, q_means)]


def train(cfg: DQNConfig, resume: bool = False, callbacks: Sequence[Callback] | None = None) -> dict[str, Any]:
    """Train DQN as configured; returns the contents of ``final.json``."""
    return train_off_policy("dqn", cfg, DQN, resume, callbacks)


def train_seeds(cfgs: Sequence[DQNConfig], resume: bool = False, callbacks: Sequence[Callback] | None = None
                ) -> list[dict[str, Any]]:
    """Train one DQN per config (seed) in this process, their gradient steps stacked; returns each final.json."""
    return train_off_policy_seeds("dqn", cfgs, DQN, resume, callbacks)


def load_policy(state: dict[str, Any]) -> TorchPolicy:
    """Rebuild the policy (greedy; epsilon-greedy when not deterministic) from a checkpoint."""
    cfg = config_from_dict(DQNConfig, state["config"])
    q_net = build_q_net(cfg, state["observation_space"], state["action_space"], int(state.get("tasks", 0)))
    q_net.load_state_dict(state["q_net"])
    q_net.eval()
    return make_policy(q_net, state["observation_space"], state["action_space"], cfg.epsilon_end)


AGENT = AgentSpec("dqn", DQNConfig, train, load_policy, train_seeds=train_seeds,
                  summary="DQN with Double, Dueling, n-step and prioritized replay (discrete actions)")

if __name__ == "__main__":
    train_from_command_line("dqn")
