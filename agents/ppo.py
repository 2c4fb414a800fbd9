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
two 64-64 tanh MLPs) are most of a run's CPU. py-spy put 68% of a 100k-step run in them (backward 22%, forward
17%, loss 10%, gradient clipping 7.5%, Adam 6%); rollouts were 6% (numpy acting). So a step runs the model as
functional calls (:func:`action_evaluator`, bit-identical to ``model(obs)`` + ``Categorical`` without their
per-call overhead), FlatAdam's five tensor ops and one-norm clip (no ``torch.optim`` either, whose first
use imports ``torch._dynamo``: 1.4 s CPU), and normalises a whole-rollout minibatch's advantages once: a step
went from 2.4 to 1.7 ms CPU (best of 6 A/B rounds, load 12 on 2 cores), a run's training CPU from 24.7-31.4 s
to 14.2-19.1 s (SB3: 32.7-47.7 s; wall 1.12x SB3's before, 0.44x after). The floor is eager torch itself:
with 8 samples a step still costs about 1.1 ms (45 autograd nodes and about 50 ops of 5-10 us dispatch each);
the 256 x 64 kernels are the rest (torch's tanh about 45 us a call here).

Run it: ``rlkit train ppo --preset cartpole`` or ``python -m rlkit.agents.ppo --help``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from rlkit.envs import make_vec_env
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's own alias

from rlkit.actor_critic import check_spaces
from rlkit.callbacks import Callback
from rlkit.config import MAX_ENVS, MAX_WIDTH, BaseConfig, config_from_dict, default, opt
from rlkit.distributions import MultiCategoricalHead
from rlkit.errors import RLKitError
from rlkit.fast.flat_adam import FlatAdam
from rlkit.fast.numpy_forward import numpy_actor_critic
from rlkit.nets import ActorCritic, CategoricalHead, GaussianHead
from rlkit.normalizers import ObsNormalizer
from rlkit.optim import OptimizerOptions, scheduled, set_lr
from rlkit.policy import TorchPolicy
from rlkit.registry import AgentSpec, eval_env_factory, train_from_command_line
from rlkit.returns import gae_advantages
from rlkit.rollouts import Actor, collect_rollout
from rlkit.run import Run


@dataclass
class PPOConfig(OptimizerOptions, BaseConfig):
    """PPO hyper-parameters: the optimizer options, plus PPO's (defaults: SB3's PPO; presets hold the RL-Zoo /
    paper values per task)."""

    num_envs: int = opt(1, "parallel envs stepping in lockstep", low=1, high=MAX_ENVS)
    n_steps: int = opt(2048, "steps per env per rollout (the paper's horizon T)", low=1)
    batch_size: int = opt(64, "minibatch size", low=1)
    n_epochs: int = opt(10, "passes over each rollout (the paper's K)", low=1)
    gamma: float = opt(0.99, "discount factor", low=0, high=1)
    gae_lambda: float = opt(0.95, "GAE lambda in [0, 1]", low=0, high=1)
    clip_range: float = opt(0.2, "clip the probability ratio to 1 +- this (the paper's epsilon)")
    clip_range_schedule: Literal["constant", "linear"] = opt("constant", "linear anneals clip_range to 0")
    clip_range_vf: float | None = opt(None, "clip value updates to +- this around the old values (None: off)")
    normalize_advantage: bool = opt(True, "normalise advantages to zero mean, unit std per minibatch")
    ent_coef: float = opt(0.0, "weight of the entropy bonus")
    vf_coef: float = opt(0.5, "weight of the value loss")
    max_grad_norm: float = opt(0.5, "clip each update's gradients to this global norm (0 = no clipping)")
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
        if not 0 <= self.gamma <= 1 or not 0 <= self.gae_lambda <= 1:
            raise RLKitError(f"gamma and gae_lambda must be in [0, 1]; got {self.gamma} and {self.gae_lambda}")
        for name in ("num_envs", "n_steps", "batch_size", "n_epochs"):
            if getattr(self, name) < 1:
                raise RLKitError(f"{name} must be at least 1; got {getattr(self, name)}")
        if self.batch_size > self.num_envs * self.n_steps:
            raise RLKitError(f"batch_size {self.batch_size} exceeds a rollout of num_envs * n_steps = "
                             f"{self.num_envs * self.n_steps}; lower batch_size or raise n_steps")
        if self.clip_range <= 0 or (self.clip_range_vf is not None and self.clip_range_vf <= 0):
            raise RLKitError("clip_range and clip_range_vf must be positive")
        if self.lr <= 0 or self.ent_coef < 0 or self.vf_coef < 0 or self.max_grad_norm < 0:
            raise RLKitError("lr must be positive and ent_coef, vf_coef, max_grad_norm non-negative")


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


def build_model(obs_space: gym.Space, act_space: gym.Space, cfg: PPOConfig, device: str | None = None
                ) -> ActorCritic:
    """The actor-critic for these spaces on ``device`` (default ``cfg.device``)."""
    activation = nn.Tanh if cfg.activation == "tanh" else nn.ReLU
    if isinstance(act_space, gym.spaces.MultiDiscrete):
        nvec = [int(n) for n in act_space.nvec.reshape(-1)]
        # ActorCritic builds (and initialises, gain 0.01) one linear layer of sum(nvec) logits; split it.
        model = ActorCritic(obs_space, gym.spaces.Discrete(sum(nvec)), cfg.hidden, cfg.shared_trunk, activation)
        model.policy = MultiCategoricalHead(model.policy.logits, nvec)
    elif isinstance(act_space, (gym.spaces.Discrete, gym.spaces.Box)):
        model = ActorCritic(obs_space, act_space, cfg.hidden, cfg.shared_trunk, activation)
        if isinstance(model.policy, GaussianHead):
            model.policy.log_std.data.fill_(cfg.log_std_init)
    else:
        raise RLKitError(f"ppo supports Discrete, MultiDiscrete and Box action spaces; got {act_space}")
    return model.to(device or cfg.device)


def build_optimizer(model: ActorCritic, cfg: PPOConfig) -> FlatAdam | torch.optim.Optimizer:
    """Adam as :class:`rlkit.fast.flat_adam.FlatAdam` (the parameters become views of one buffer: an Adam step is five
    tensor ops and gradient clipping one norm, where torch's Adam and ``clip_grad_norm_`` loop over a dozen
    small tensors); RMSProp as torch's."""
    if cfg.optimizer == "adam":
        return FlatAdam(model, lr=cfg.lr, eps=cfg.optimizer_eps)
    return cfg.build_optimizer(model.parameters())


def load_optimizer_state(optimizer: FlatAdam | torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Restore the optimizer; a checkpoint of a run that trained with torch's Adam (rlkit before FlatAdam in
    PPO) has per-parameter moments, concatenated here in parameter order (the flat buffer's order)."""
    if isinstance(optimizer, FlatAdam) and "param_groups" in saved:
        moments = [saved["state"][i] for i in saved["param_groups"][0]["params"] if i in saved["state"]]
        if not moments:  # saved before the first step
            return
        saved = {"exp_avg": torch.cat([m["exp_avg"].reshape(-1) for m in moments]),
                 "exp_avg_sq": torch.cat([m["exp_avg_sq"].reshape(-1) for m in moments]),
                 "steps": int(moments[0]["step"])}
    optimizer.load_state_dict(saved)


Evaluator = Callable[[torch.Tensor, torch.Tensor, bool], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def action_evaluator(model: ActorCritic) -> Evaluator:
    """The update's ``(obs, actions, entropy_grad) -> (log_prob, entropy, values)``; the entropy carries a
    gradient only when ``entropy_grad``.

    For a flat-input MLP with a categorical head (CartPole and the like) it runs as plain
    ``torch.nn.functional`` calls on the model's own parameters: the same ops as ``model(obs)`` and
    :class:`Categorical`'s normalisation, log_prob and entropy (so bit-identical results) without the
    per-module calls and the distribution object's argument checks, which cost a third of a CartPole
    minibatch step. Other models go through ``model(obs)`` and its distribution.
    """
    layers = functional_layers(model)

    def through_distribution(obs: torch.Tensor, actions: torch.Tensor, entropy_grad: bool
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dist, values = model(obs)
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = dist.entropy()
        return dist.log_prob(actions), entropy, values

    if layers is None:
        return through_distribution
    trunk, value_trunk, policy, value = layers
    min_real = torch.finfo(torch.float32).min

    def categorical(obs: torch.Tensor, actions: torch.Tensor, entropy_grad: bool
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = model.encoder(obs)
        hidden = run_layers(trunk, features)
        logits = policy(hidden)
        log_probs = logits - logits.logsumexp(dim=-1, keepdim=True)  # Categorical(logits=...) normalises so
        values = value(hidden if value_trunk is None else run_layers(value_trunk, features)).squeeze(-1)
        log_prob = log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = -(log_probs.clamp(min=min_real) * log_probs.softmax(dim=-1)).sum(-1)  # Categorical.entropy
        return log_prob, entropy, values

    return categorical


Layer = Callable[[torch.Tensor], torch.Tensor]


def functional_layers(model: ActorCritic) -> tuple[list[Layer], list[Layer] | None, Layer, Layer] | None:
    """(trunk, value trunk or None, policy logits, value) of a flat-input categorical MLP actor-critic as
    ``torch.nn.functional`` calls bound to its parameters, or None for any other model."""
    def as_functions(modules: list[nn.Module]) -> list[Layer] | None:
        out: list[Layer] = []
        for m in modules:
            if isinstance(m, nn.Linear):
                out.append(lambda x, w=m.weight, b=m.bias: F.linear(x, w, b))
            elif isinstance(m, (nn.Tanh, nn.ReLU)):
                out.append(torch.tanh if isinstance(m, nn.Tanh) else torch.relu)
            else:
                return None
        return out

    if model.encoder.cnn is not None or model.encoder.n_discrete or not isinstance(model.policy, CategoricalHead):
        return None
    trunk = as_functions(list(model.trunk))
    value_trunk = None if model.value_trunk is None else as_functions(list(model.value_trunk))
    heads = as_functions([model.policy.logits, model.value])
    if trunk is None or heads is None or (model.value_trunk is not None and value_trunk is None):
        return None
    return trunk, value_trunk, heads[0], heads[1]


def run_layers(layers: list[Layer], x: torch.Tensor) -> torch.Tensor:
    for layer in layers:
        x = layer(x)
    return x


def make_actor(model: ActorCritic, rng: np.random.Generator, normalizer: ObsNormalizer | None) -> Actor:
    """The rollout actor ``(obs, deterministic) -> (actions, values)``: numpy views of the weights for MLPs on
    the CPU, else torch on the model's device; observations are normalised first when asked."""
    fast = numpy_actor_critic(model, rng) if isinstance(model.policy, (CategoricalHead, GaussianHead)) else None
    device = next(model.parameters()).device

    def torch_actor(obs: np.ndarray, deterministic: bool = False) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            dist, values = model(torch.as_tensor(obs, device=device))
            actions = model.policy.mode(dist) if deterministic else dist.sample()
        return actions.cpu().numpy(), values.cpu().numpy()

    base = fast or torch_actor
    if normalizer is None:
        return base
    return lambda obs, deterministic=False: base(normalizer(obs), deterministic)


def make_policy(model: ActorCritic, obs_space: gym.Space, act_space: gym.Space,
                normalizer: ObsNormalizer | None = None) -> TorchPolicy:
    """The evaluation policy: observations normalised as in training, mode (or sampled) actions, Box-clipped."""
    box = isinstance(act_space, gym.spaces.Box)

    def finish(actions: np.ndarray) -> np.ndarray:
        return np.clip(actions.reshape(len(actions), *act_space.shape), act_space.low, act_space.high) if box \
            else actions

    def act_fn(module: ActorCritic, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        obs = normalizer.torch(obs) if normalizer is not None else obs
        return torch.as_tensor(finish(module.act(obs, deterministic).cpu().numpy()))

    fast = numpy_actor_critic(model, rng=None) if isinstance(model.policy, (CategoricalHead, GaussianHead)) else None
    fast_act = None if fast is None else (
        lambda obs: finish(fast(normalizer(obs) if normalizer is not None else obs, deterministic=True)[0]))
    return TorchPolicy(model, act_fn, act_space, obs_space, fast=fast_act)


def train(cfg: PPOConfig, resume: bool = False, callbacks: Sequence[Callback] | None = None) -> dict[str, Any]:
    """Train PPO as configured; returns the contents of ``final.json``."""
    cfg.validate()
    envs = make_vec_env(cfg.env_id, cfg.num_envs, seed=cfg.seed, env_kwargs=cfg.env_kwargs)
    obs_space, act_space = envs.single_observation_space, envs.single_action_space
    check_spaces(obs_space, act_space, "ppo", (gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.Box))
    run = Run("ppo", cfg, resume=resume, callbacks=callbacks)
    model = build_model(obs_space, act_space, cfg)
    optimizer = build_optimizer(model, cfg)
    obs_norm = ObsNormalizer(obs_space.shape, cfg.obs_clip) if cfg.normalize_obs else None
    return_stats = ObsNormalizer((), cfg.reward_clip) if cfg.normalize_reward else None
    running_return = np.zeros(cfg.num_envs)
    global_step = 0
    if run.resume_state is not None:
        state = run.resume_state
        model.load_state_dict(state["model"])
        load_optimizer_state(optimizer, state["optimizer"])
        for normalizer, key in ((obs_norm, "obs_normalizer"), (return_stats, "return_normalizer")):
            if normalizer is not None:
                normalizer.load_state_dict(state[key])
        global_step = run.global_step
    run.restore_rng()
    actor = make_actor(model, run.rng, obs_norm)
    evaluate_actions = action_evaluator(model)
    policy = make_policy(model, obs_space, act_space, obs_norm)
    # A resumed run cannot restore the envs' internal state; it starts fresh episodes on a new seed.
    obs = envs.reset(seed=cfg.seed + global_step)

    def state_dict() -> dict[str, Any]:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "obs_normalizer": obs_norm.state_dict() if obs_norm is not None else None,
                "return_normalizer": return_stats.state_dict() if return_stats is not None else None,
                "observation_space": obs_space, "action_space": act_space}

    stride, device = cfg.num_envs * cfg.n_steps, torch.device(cfg.device)
    with run.checkpoint_on_interrupt(lambda: (global_step, state_dict())):
        while global_step < cfg.total_steps and run.stopped is None:
            rollout, obs, episodes = collect_rollout(envs, obs, actor, cfg.n_steps, cfg.clip_rewards)
            global_step += stride
            for episode_return, length in episodes:
                run.logger.record_episode(episode_return, length)
            progress = global_step / cfg.total_steps
            lr, clip = cfg.lr_at(progress), \
                scheduled(cfg.clip_range, cfg.clip_range_schedule, progress)
            set_lr(optimizer, lr)

            # ALGO LOGIC: advantages on the rollout, then minibatch epochs on the clipped surrogate.
            r, n = rollout, stride
            rewards = r.rewards
            if return_stats is not None:
                rewards = scale_rewards(rewards, r.terminated | r.truncated, running_return, return_stats,
                                        cfg.gamma, cfg.reward_clip)
            advantages = gae_advantages(rewards, r.values, r.next_values, r.terminated, r.truncated,
                                        cfg.gamma, cfg.gae_lambda)
            returns = advantages + r.values
            flat_obs = r.obs.reshape(n, *r.obs.shape[2:])
            if obs_norm is not None:  # the actor saw these statistics; update them only now
                flat_obs = obs_norm(flat_obs)
                obs_norm.update(r.obs.reshape(n, *r.obs.shape[2:]))
            b_obs = torch.as_tensor(flat_obs, device=device)
            b_actions = torch.as_tensor(r.actions.reshape(n, *r.actions.shape[2:]), device=device)
            b_adv, b_ret, b_val = (torch.as_tensor(x.reshape(n), device=device) for x in (advantages, returns,
                                                                                           r.values))
            with torch.no_grad():
                b_old_log_prob = evaluate_actions(b_obs, b_actions, False)[0]
            # One minibatch per epoch (CartPole's preset) is the whole rollout: no shuffling or gathering, and
            # its advantages are normalised once here instead of identically in every epoch.
            whole = cfg.batch_size >= n
            normalize_in_loss = cfg.normalize_advantage and not whole
            if cfg.normalize_advantage and whole:
                b_adv = normalize_advantages(b_adv)
            for _epoch in range(cfg.n_epochs):
                epoch_kl = []
                minibatches = [slice(None)] if whole else \
                    torch.as_tensor(run.rng.permutation(n), device=device).split(cfg.batch_size)
                for idx in minibatches:
                    log_prob, entropy, values = evaluate_actions(b_obs[idx], b_actions[idx], cfg.ent_coef > 0)
                    loss, terms = ppo_loss(log_prob, b_old_log_prob[idx], b_adv[idx], values, b_val[idx],
                                           b_ret[idx], entropy, clip, cfg.clip_range_vf, cfg.vf_coef, cfg.ent_coef,
                                           normalize_in_loss)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.max_grad_norm > 0:
                        if isinstance(optimizer, FlatAdam):
                            optimizer.clip_grad_norm_(cfg.max_grad_norm)
                        else:
                            nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm, foreach=True)
                    optimizer.step()
                    epoch_kl.append(terms["losses/approx_kl"])
                if cfg.target_kl is not None and torch.stack(epoch_kl).mean().item() > 1.5 * cfg.target_kl:
                    break

            explained = explained_variance(r.values.ravel(), returns.ravel())

            def scalars(terms: dict = terms, lr: float = lr, clip: float = clip, ev: float = explained
                        ) -> dict[str, float]:
                return {**{k: v.item() for k, v in terms.items()}, "charts/learning_rate": lr,
                        "charts/clip_range": clip, "losses/explained_variance": ev}

            run.step_done(global_step, stride, policy, eval_env_factory(cfg), state_dict, scalars)

    envs.close()
    return run.finish(policy, eval_env_factory(cfg), global_step, state_dict())


def load_policy(state: dict[str, Any]) -> TorchPolicy:
    """Rebuild the policy of a PPO checkpoint, with its observation normaliser."""
    cfg = config_from_dict(PPOConfig, state["config"])
    obs_space, act_space = state["observation_space"], state["action_space"]
    model = build_model(obs_space, act_space, cfg, device="cpu")
    model.load_state_dict(state["model"])
    model.eval()
    normalizer = ObsNormalizer.from_state(obs_space.shape, state.get("obs_normalizer"))
    return make_policy(model, obs_space, act_space, normalizer)


AGENT = AgentSpec("ppo", PPOConfig, train, load_policy,
                  summary="PPO (clipped surrogate, GAE, minibatch epochs; discrete, multi-discrete and Gaussian "
                          "actions)")


if __name__ == "__main__":
    train_from_command_line("ppo")
