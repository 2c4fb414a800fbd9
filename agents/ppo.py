"""PPO: proximal policy optimization with the clipped surrogate objective, on a vector env.

Papers:
    PPO  Schulman et al. 2017, "Proximal Policy Optimization Algorithms", https://arxiv.org/abs/1707.06347
    GAE  Schulman et al. 2016, https://arxiv.org/abs/1506.02438
    Huang et al. 2022, "The 37 Implementation Details of PPO", ICLR blog track,
         https://iclr-blog-track.github.io/2022/03/25/ppo-implementation-details/

Each iteration collects ``n_steps`` x ``num_envs`` transitions (``rlkit.rollouts.collect_rollout``, numpy acting),
computes GAE(lambda) advantages (``rlkit.returns.gae_advantages``), then runs ``n_epochs`` passes of shuffled
minibatches over

    L = -mean(min(rho * A, clip(rho, 1 - eps, 1 + eps) * A)) + vf_coef * L_V - ent_coef * mean(H[pi]),
    rho = pi(a|s) / pi_old(a|s).

The 37 details (Huang et al.), the ones that matter here, and what rlkit does:
    1 vector env: yes (``num_envs``, :func:`rlkit.envs.make_vec_env`, same-step autoreset made explicit).
    2 orthogonal init, gain sqrt(2) hidden / 0.01 policy / 1 value, zero biases: yes (``ActorCritic``).
    3 Adam eps 1e-5: yes (``optimizer_eps``).        4 linear lr annealing: ``lr_schedule: linear``.
    5 GAE: yes, and truncated episodes bootstrap from V(real final obs) (Huang's list treats them as terminal).
    6 minibatch epochs over a shuffled rollout: yes.  7 advantage normalisation per minibatch: yes (option).
    8 clipped surrogate: yes.                          9 value clipping (Baselines' max form): ``clip_range_vf``.
    10 entropy bonus: ``ent_coef``.                   11 global gradient clipping: ``max_grad_norm`` (0.5).
    12 debug variables: approx-KL (k3 estimator), clip fraction, explained variance, entropy are logged.
    13 separate or shared networks: ``shared_trunk`` (SB3 default: separate 64-64 tanh MLPs).
    Continuous actions: state-independent log std (``log_std_init``), actions clipped to the Box bounds for the
    env while the log-prob uses the unclipped sample; obs and reward normalisation (VecNormalize's role:
    running mean/std of obs clipped to +-10; rewards divided by the std of a running discounted return, clipped
    to +-10) via ``normalize_obs`` / ``normalize_reward``; both are saved in checkpoints and the loaded policy
    normalises its observations, so ``rlkit eval`` and the demo recorder see what training saw.
    Atari: Nature CNN with a shared trunk, sign rewards (``clip_rewards``), RL-Zoo's wrappers; the ``pong``
    preset. Optional ``target_kl`` stops an update's epochs early (SB3/CleanRL option).
    MultiDiscrete actions: a factorised categorical over the ``sum(nvec)`` logits of one linear layer.

Deviations, and why:
    * Old log-probs are recomputed in one torch forward over the whole rollout right after collecting it
      (same weights as when acting), so acting stays on the numpy fast path, which returns no log-probs.
    * Observation statistics are frozen during a rollout and updated from it afterwards (VecNormalize updates
      every step): the training minibatches are then normalised exactly as the actor saw them.
    * The lr and clip-range schedules read progress after the rollout (as SB3) and stop at 0 (RL-Zoo's
      ``lin_`` goes slightly negative on the last, partial iteration).
    * No gSDE (RL-Zoo's Pendulum setting uses it); the ``pendulum`` preset keeps the Zoo's other numbers.
    * Adam is :class:`rlkit.fast.flat_adam.FlatAdam` (one parameter buffer), equal to torch's Adam up to float rounding.

Speed (CartPole preset against SB3, ``benchmarks/bench_ppo_sac.py``): the 7,820 minibatch steps (256 samples,
two 64-64 tanh MLPs) are most of a run's CPU, so their fast path (:mod:`rlkit.fast.ppo_update`: the categorical
MLP as functional calls, bit-identical to ``model(obs)`` + ``Categorical``; FlatAdam's five tensor ops and
one-norm clip) and normalising a whole-rollout minibatch's advantages once took a step from 2.4 to 1.7 ms CPU,
a run's training CPU from 24.7-31.4 s to 14.2-19.1 s (SB3: 32.7-47.7 s; wall 1.12x SB3's before, 0.44x after).
The floor is eager torch itself: with 8 samples a step still costs about 1.1 ms.

The loop (rollouts, logging, evaluation, checkpoints, resume) is :mod:`rlkit.engine.on_policy`'s.

Multi-task (``tasks``, ``heads``, ``pcgrad``, ``init_from``; rlkit/multitask.py, docs/multitask.md): on a suite
whose observations end in a one-hot task id, ``heads=shared`` is the task-conditioned PPO (the one-hot is input)
and ``heads=per_task`` hard sharing (trunks on the observation without its id, a policy head and a value head per
task). ``pcgrad`` projects the tasks' gradients of each minibatch's loss (each task's PPO loss on its rows, weighted
by their share, so the tasks' losses add up to the minibatch's) with torch's optimizer, not the flat Adam.
``init_from`` starts the actor-critic from a trained PPO run (fine-tuning).

Run it: ``rlkit train ppo --preset cartpole`` or ``python -m rlkit.agents.ppo --help``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from rlkit.envs.multitask import task_count
from torch import nn

from rlkit.actor_critic import check_spaces, make_actor, make_policy
from rlkit.callbacks import Callback
from rlkit.config import MAX_ENVS, MAX_WIDTH, BaseConfig, config_from_dict, default, opt
from rlkit.distributions import GaussianHead, MultiCategoricalHead
from rlkit.engine.common import progress
from rlkit.engine.on_policy import OnPolicyLearner, train_on_policy
from rlkit.errors import RLKitError
from rlkit.fast.ppo_update import clip_grad_norm, flat_adam, functional_evaluator, load_optimizer_state
from rlkit.multitask import (
    HardSharingActorCritic,
    MultiTaskOptions,
    PCGrad,
    flat_width,
    load_pretrained,
    resolve_tasks,
    task_ids,
)
from rlkit.nets import ActorCritic
from rlkit.normalizers import ObsNormalizer
from rlkit.optim import OptimizerOptions, scheduled, set_lr
from rlkit.policy import TorchPolicy
from rlkit.registry import AgentSpec, train_from_command_line
from rlkit.returns import gae_advantages
from rlkit.rollouts import Rollout


@dataclass
class PPOConfig(MultiTaskOptions, OptimizerOptions, BaseConfig):
    """PPO hyper-parameters: the optimizer options, plus PPO's (defaults: SB3's PPO; presets hold the RL-Zoo /
    paper values per task)."""

    num_envs: int = opt(1, "parallel envs stepping in lockstep", low=1, high=MAX_ENVS)
    n_steps: int = opt(2048, "steps per env per rollout (the paper's horizon T)", low=1)
    batch_size: int = opt(64, "minibatch size", low=1)
    n_epochs: int = opt(10, "passes over each rollout (the paper's K)", low=1)
    gamma: float = opt(0.99, "discount factor", low=0, high=1)
    gae_lambda: float = opt(0.95, "GAE lambda in [0, 1]", low=0, high=1)
    clip_range: float = opt(0.2, "clip the probability ratio to 1 +- this (the paper's epsilon)", low=0,
                            low_open=True)
    clip_range_schedule: Literal["constant", "linear"] = opt("constant", "linear anneals clip_range to 0")
    clip_range_vf: float | None = opt(None, "clip value updates to +- this around the old values (None: off)",
                                      low=0, low_open=True)
    normalize_advantage: bool = opt(True, "normalise advantages to zero mean, unit std per minibatch")
    ent_coef: float = opt(0.0, "weight of the entropy bonus", low=0)
    vf_coef: float = opt(0.5, "weight of the value loss", low=0)
    max_grad_norm: float = opt(0.5, "clip each update's gradients to this global norm (0 = no clipping)", low=0)
    target_kl: float | None = opt(None, "stop an update's epochs once approx-KL exceeds 1.5x this (None: off)")
    lr: float = default(OptimizerOptions, "lr", 3e-4)
    optimizer_eps: float = default(OptimizerOptions, "optimizer_eps", 1e-5)  # Baselines/SB3 PPO
    hidden: list[int] = opt([64, 64], "hidden layer sizes (after the CNN for images)", low=1, high=MAX_WIDTH)
    activation: Literal["tanh", "relu"] = opt("tanh", "activation of the hidden layers")
    shared_trunk: bool = opt(False, "policy and value share the trunk (SB3: separate for MLPs)")
    log_std_init: float = opt(0.0, "initial log std of Gaussian actions")
    normalize_obs: bool = opt(False, "normalise observations by a running mean/std (saved in checkpoints)")
    normalize_reward: bool = opt(False, "scale rewards by the std of a running discounted return")
    obs_clip: float = opt(10.0, "clip normalised observations to +- this")
    reward_clip: float = opt(10.0, "clip normalised rewards to +- this")
    clip_rewards: bool = opt(False, "train on sign(reward) (Atari); logged returns stay raw")

    def validate(self) -> None:
        self.validate_optimizer()
        resolve_tasks(self, task_count(self.env_id))
        if self.batch_size > self.num_envs * self.n_steps:
            raise RLKitError(f"batch_size {self.batch_size} exceeds a rollout of num_envs * n_steps = "
                             f"{self.num_envs * self.n_steps}; lower batch_size or raise n_steps")


# ALGO LOGIC: the math, as pure functions (unit-tested against hand values).
def ppo_loss(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, values: torch.Tensor,
             old_values: torch.Tensor, returns: torch.Tensor, entropy: torch.Tensor, clip_range: float,
             clip_range_vf: float | None, vf_coef: float, ent_coef: float, normalize_advantage: bool = True
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The PPO loss of one minibatch; returns (loss, detached terms for logging).

    Policy: ``-mean(min(rho * A, clip(rho, 1-eps, 1+eps) * A))`` with ``rho = exp(log_prob - old_log_prob)``
    and A normalised to zero mean and unit (unbiased) std when ``normalize_advantage``. Value:
    ``mean((V - R)^2)``, or with ``clip_range_vf`` = c the pessimistic ``mean(max((V - R)^2, (V_c - R)^2))``,
    ``V_c = V_old + clip(V - V_old, -c, c)``. Entropy bonus ``mean(H)`` weighted by ``ent_coef``.
    Logged: approx-KL ``mean((rho - 1) - log rho)`` (Schulman's unbiased, non-negative estimator) and the
    fraction of samples whose ratio left the clip interval.
    """
    if normalize_advantage:
        advantages = normalize_advantages(advantages)
    log_ratio = log_prob - old_log_prob
    ratio = log_ratio.exp()
    policy_loss = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip_range, 1 + clip_range)).mean()
    value_loss = (values - returns).pow(2)
    if clip_range_vf is not None:
        clipped = old_values + (values - old_values).clamp(-clip_range_vf, clip_range_vf)
        value_loss = torch.max(value_loss, (clipped - returns).pow(2))
    value_loss = value_loss.mean()
    entropy = entropy.mean()
    loss = policy_loss + vf_coef * value_loss
    if ent_coef:  # skipped at 0, so an entropy computed without gradient (for the log only) may be passed
        loss = loss - ent_coef * entropy
    with torch.no_grad():
        terms = {"losses/policy_loss": policy_loss, "losses/value_loss": value_loss, "losses/entropy": entropy,
                 "losses/approx_kl": ((ratio - 1) - log_ratio).mean(),
                 "losses/clip_fraction": ((ratio - 1).abs() > clip_range).float().mean()}
    return loss, {k: v.detach() for k, v in terms.items()}


def normalize_advantages(advantages: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit (unbiased) std; a single sample is left as it is."""
    if len(advantages) < 2:
        return advantages
    return (advantages - advantages.mean()) / (advantages.std() + 1e-8)


def explained_variance(predicted: np.ndarray, target: np.ndarray) -> float:
    """1 - Var(target - predicted) / Var(target): 1 is a perfect value function, <= 0 no better than a constant."""
    var = np.var(target)
    return float("nan") if var == 0 else float(1 - np.var(target - predicted) / var)


def scale_rewards(rewards: np.ndarray, dones: np.ndarray, running_return: np.ndarray, stats: ObsNormalizer,
                  gamma: float, clip: float) -> np.ndarray:
    """VecNormalize's reward scaling over a (T, N) rollout, step by step: ``G <- gamma * G + r`` (reset after an
    episode end), update the running variance of G, then ``r / sqrt(var(G) + 1e-8)`` clipped to +-``clip``.
    ``running_return`` (N,) and ``stats`` are updated in place."""
    scaled = np.empty_like(rewards, dtype=np.float32)
    for t in range(len(rewards)):
        running_return[:] = running_return * gamma + rewards[t]
        stats.update(running_return)
        scaled[t] = np.clip(rewards[t] / np.sqrt(stats.var + 1e-8), -clip, clip)
        running_return[dones[t]] = 0.0
    return scaled


def build_model(cfg: PPOConfig, obs_space: gym.Space, act_space: gym.Space, device: str | None = None,
                n_tasks: int = 0) -> ActorCritic:
    """The actor-critic for these spaces on ``device`` (default ``cfg.device``); with ``n_tasks``,
    task-conditioned (``heads="shared"``) or hard sharing (``"per_task"``)."""
    activation = nn.Tanh if cfg.activation == "tanh" else nn.ReLU
    if n_tasks:
        flat_width(obs_space, n_tasks)  # a suite's flat one-hot observations, refused in one line otherwise
    if n_tasks and cfg.heads == "per_task":
        if not isinstance(act_space, (gym.spaces.Discrete, gym.spaces.Box)):
            raise RLKitError(f"heads=per_task takes Discrete or Box actions, not {act_space}; use heads=shared")
        model = HardSharingActorCritic(obs_space, act_space, cfg.hidden, cfg.shared_trunk, activation, n_tasks)
    elif isinstance(act_space, gym.spaces.MultiDiscrete):
        nvec = [int(n) for n in act_space.nvec.reshape(-1)]
        # ActorCritic builds (and initialises, gain 0.01) one linear layer of sum(nvec) logits; split it.
        model = ActorCritic(obs_space, gym.spaces.Discrete(sum(nvec)), cfg.hidden, cfg.shared_trunk, activation)
        model.policy = MultiCategoricalHead(model.policy.logits, nvec)
    elif isinstance(act_space, (gym.spaces.Discrete, gym.spaces.Box)):
        model = ActorCritic(obs_space, act_space, cfg.hidden, cfg.shared_trunk, activation)
    else:
        raise RLKitError(f"ppo supports Discrete, MultiDiscrete and Box action spaces; got {act_space}")
    for head in getattr(model.policy, "heads", [model.policy]):  # one head, or one per task
        if isinstance(head, GaussianHead):
            head.log_std.data.fill_(cfg.log_std_init)
    return model.to(device or cfg.device)


def evaluate_actions(model: ActorCritic, obs: torch.Tensor, actions: torch.Tensor, entropy_grad: bool
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log pi(a|s), H[pi(.|s)], V(s)) of a minibatch; the entropy carries a gradient only when ``entropy_grad``
    (with ``ent_coef`` 0 it is only logged)."""
    dist, values = model(obs)
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
        entropy = dist.entropy()
    return dist.log_prob(actions), entropy, values


class Batch(NamedTuple):
    """A rollout flattened to ``num_envs * n_steps`` samples, as tensors on the training device."""

    obs: torch.Tensor
    actions: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    values: torch.Tensor  # V(s) when acting
    old_log_prob: torch.Tensor  # log pi_old(a|s), before this update


class PPO(OnPolicyLearner):
    """PPO for :func:`rlkit.engine.on_policy.train_on_policy`: ``n_epochs`` of minibatch steps on each rollout."""

    @staticmethod
    def check_spaces(observation_space: gym.Space, action_space: gym.Space, env_id: str, agent: str) -> None:
        check_spaces(observation_space, action_space, env_id, agent,
                     (gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.Box))

    def __init__(self, cfg: PPOConfig, obs_space: gym.Space, act_space: gym.Space, rng: np.random.Generator) -> None:
        self.cfg, self.rng, self.device = cfg, rng, torch.device(cfg.device)
        self.n_tasks = resolve_tasks(cfg, task_count(cfg.env_id))
        self.model = build_model(cfg, obs_space, act_space, n_tasks=self.n_tasks)
        if cfg.init_from:  # fine-tuning: the trained actor-critic; optimizer and normalizers start afresh
            load_pretrained(cfg.init_from, "ppo", obs_space, self.n_tasks, {"model": self.model},
                            "hidden, shared_trunk, activation, heads")
        # Adam over one flat buffer where it applies (rlkit.fast.ppo_update); built before the actor views the weights.
        # PCGrad writes each parameter's gradient itself, so it steps torch's optimizer.
        self.optimizer = (None if cfg.pcgrad else flat_adam(self.model, cfg.optimizer, cfg.lr, cfg.optimizer_eps)) \
            or cfg.build_optimizer(self.model.parameters())
        self.pcgrad = PCGrad(self.optimizer, rng) if cfg.pcgrad else None
        self.parameters = list(self.model.parameters())
        self.obs_norm = ObsNormalizer(obs_space.shape, cfg.obs_clip) if cfg.normalize_obs else None
        self.return_stats = ObsNormalizer((), cfg.reward_clip) if cfg.normalize_reward else None
        self.running_return = np.zeros(cfg.num_envs)
        self.actor = make_actor(self.model, rng, self.obs_norm)
        self.policy = make_policy(self.model, obs_space, act_space, self.obs_norm)
        # the same numbers as evaluate_actions, as functional calls, for categorical MLPs
        self.evaluate = functional_evaluator(self.model) or partial(evaluate_actions, self.model)

    def update(self, rollout: Rollout, global_step: int) -> dict[str, Any]:
        cfg = self.cfg
        done = progress(global_step, cfg.total_steps)  # after the rollout, as SB3
        lr, clip = cfg.lr_at(done), scheduled(cfg.clip_range, cfg.clip_range_schedule, done)
        set_lr(self.optimizer, lr)
        batch, returns = self.flatten(rollout)
        terms = self.epochs(batch, clip)
        explained = explained_variance(rollout.values.ravel(), returns.ravel())
        return {**terms, "charts/learning_rate": lr, "charts/clip_range": clip, "losses/explained_variance": explained}

    def flatten(self, r: Rollout) -> tuple[Batch, np.ndarray]:
        """GAE advantages and returns of the rollout (on scaled rewards, if asked), flattened to tensors; and
        the (T, N) returns."""
        cfg, n = self.cfg, r.rewards.size
        rewards = r.rewards
        if self.return_stats is not None:
            rewards = scale_rewards(rewards, r.terminated | r.truncated, self.running_return, self.return_stats,
                                    cfg.gamma, cfg.reward_clip)
        advantages = gae_advantages(rewards, r.values, r.next_values, r.terminated, r.truncated, cfg.gamma,
                                    cfg.gae_lambda)
        returns = advantages + r.values
        flat_obs = r.obs.reshape(n, *r.obs.shape[2:])
        if self.obs_norm is not None:  # the actor saw these statistics; update them only now
            flat_obs = self.obs_norm(flat_obs)
            self.obs_norm.update(r.obs.reshape(n, *r.obs.shape[2:]))
        obs = torch.as_tensor(flat_obs, device=self.device)
        actions = torch.as_tensor(r.actions.reshape(n, *r.actions.shape[2:]), device=self.device)
        adv, ret, val = (torch.as_tensor(x.reshape(n), device=self.device) for x in (advantages, returns, r.values))
        with torch.no_grad():
            old_log_prob = self.evaluate(obs, actions, False)[0]
        return Batch(obs, actions, adv, ret, val, old_log_prob), returns

    def epochs(self, b: Batch, clip: float) -> dict[str, torch.Tensor]:
        """``n_epochs`` passes of shuffled minibatches (stopped early past ``target_kl``); the last one's terms."""
        cfg, n = self.cfg, len(b.obs)
        # One minibatch per epoch (CartPole's preset) is the whole rollout: no shuffling or gathering, and its
        # advantages are normalised once here instead of identically in every epoch.
        whole = cfg.batch_size >= n
        if cfg.normalize_advantage and whole:
            b = b._replace(advantages=normalize_advantages(b.advantages))
        for _epoch in range(cfg.n_epochs):
            epoch_kl = []
            minibatches = [slice(None)] if whole else \
                torch.as_tensor(self.rng.permutation(n), device=self.device).split(cfg.batch_size)
            for idx in minibatches:
                log_prob, entropy, values = self.evaluate(b.obs[idx], b.actions[idx], cfg.ent_coef > 0)
                inputs = (log_prob, b.old_log_prob[idx], b.advantages[idx], values, b.values[idx], b.returns[idx],
                          entropy)
                self.optimizer.zero_grad(set_to_none=True)
                if self.pcgrad is None:
                    loss, terms = ppo_loss(*inputs, clip, cfg.clip_range_vf, cfg.vf_coef, cfg.ent_coef,
                                           cfg.normalize_advantage and not whole)
                    loss.backward()
                else:
                    terms = self.pcgrad_backward(inputs, task_ids(b.obs[idx], self.n_tasks), clip,
                                                 cfg.normalize_advantage and not whole)
                if cfg.max_grad_norm > 0:
                    clip_grad_norm(self.optimizer, self.parameters, cfg.max_grad_norm)
                self.optimizer.step()
                epoch_kl.append(terms["losses/approx_kl"])
            if cfg.target_kl is not None and torch.stack(epoch_kl).mean().item() > 1.5 * cfg.target_kl:
                break
        return terms

    def pcgrad_backward(self, inputs: tuple[torch.Tensor, ...], ids: torch.Tensor, clip: float, normalize: bool
                        ) -> dict[str, torch.Tensor]:
        """PCGrad's gradient of the minibatch's PPO loss: each task's loss on its rows times their share of the
        minibatch (the advantages normalised over the whole minibatch first, as without PCGrad); the whole
        minibatch's terms for the log."""
        cfg = self.cfg
        if normalize:
            inputs = (*inputs[:2], normalize_advantages(inputs[2]), *inputs[3:])
        losses = []
        for task in range(self.n_tasks):
            rows = ids == task
            if bool(rows.any()):
                loss, _ = ppo_loss(*(t[rows] for t in inputs), clip, cfg.clip_range_vf, cfg.vf_coef, cfg.ent_coef,
                                   False)
                losses.append(loss * rows.sum() / len(ids))
        self.pcgrad.backward(losses)
        with torch.no_grad():
            terms = ppo_loss(*inputs, clip, cfg.clip_range_vf, cfg.vf_coef, cfg.ent_coef, False)[1]
        return {**terms, "losses/pcgrad_projections": torch.tensor(float(self.pcgrad.conflicts))}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "obs_normalizer": self.obs_norm.state_dict() if self.obs_norm is not None else None,
                "return_normalizer": self.return_stats.state_dict() if self.return_stats is not None else None,
                "tasks": self.n_tasks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state.get("tasks", 0)) != self.n_tasks:
            raise RLKitError(f"the checkpoint's actor-critic was trained on {state.get('tasks', 0)} tasks, but "
                             f"{self.cfg.env_id} has {self.n_tasks}; resume it on the env it was trained on")
        self.model.load_state_dict(state["model"])
        load_optimizer_state(self.optimizer, state["optimizer"])
        for normalizer, key in ((self.obs_norm, "obs_normalizer"), (self.return_stats, "return_normalizer")):
            if normalizer is not None:
                normalizer.load_state_dict(state[key])


def train(cfg: PPOConfig, resume: bool = False, callbacks: Sequence[Callback] | None = None) -> dict[str, Any]:
    """Train PPO as configured; returns the contents of ``final.json``."""
    return train_on_policy("ppo", cfg, PPO, resume, callbacks)


def load_policy(state: dict[str, Any]) -> TorchPolicy:
    """Rebuild the policy of a PPO checkpoint, with its observation normaliser."""
    cfg = config_from_dict(PPOConfig, state["config"])
    obs_space, act_space = state["observation_space"], state["action_space"]
    model = build_model(cfg, obs_space, act_space, device="cpu", n_tasks=int(state.get("tasks", 0)))
    model.load_state_dict(state["model"])
    model.eval()
    normalizer = ObsNormalizer.from_state(obs_space.shape, state.get("obs_normalizer"))
    return make_policy(model, obs_space, act_space, normalizer)


AGENT = AgentSpec("ppo", PPOConfig, train, load_policy,
                  summary="PPO (clipped surrogate, GAE, minibatch epochs; discrete, multi-discrete and Gaussian "
                          "actions)")


if __name__ == "__main__":
    train_from_command_line("ppo")
