"""A2C: synchronous advantage actor-critic on a vector env (n-step returns or GAE, entropy bonus).

Papers:
    A3C/A2C  Mnih et al. 2016, "Asynchronous Methods for Deep RL", https://arxiv.org/abs/1602.01783
             (A2C is its synchronous, batched variant, as in OpenAI Baselines 2017 and SB3)
    GAE      Schulman et al. 2016, https://arxiv.org/abs/1506.02438

Each iteration, ``num_envs`` envs step in lockstep for ``n_steps`` steps; the rollout's bootstrapped
n-step returns R (or GAE(lambda) advantages) drive one gradient step on

    loss = -mean(A * log pi(a|s)) + vf_coef * mean((R - V(s))^2) - ent_coef * mean(H[pi(.|s)]),   A = R - V(s)

of a shared-trunk actor-critic (:class:`rlkit.nets.ActorCritic`, categorical or Gaussian head), with
RMSProp (the paper's) or Adam. ``agents/a3c.py`` runs the same functions in asynchronous workers.

Deviations from the paper, and why:
    * The value loss is a mean squared error weighted by ``vf_coef`` 0.5 (Baselines/SB3); the paper's
      gradient of (R - V)^2 differs by a constant factor that vf_coef absorbs.
    * Truncated episodes (time limits) bootstrap from V(the real final observation, ``VecStep.final_obs``);
      only ``terminated`` stops the bootstrap. The paper's Atari episodes had no time limits.
    * RMSProp is torch's (eps added after the square root; alpha 0.99, eps 1e-5 as in Baselines).
    * A rollout is always ``n_steps`` long and runs across episode ends (the returns are cut there);
      the paper's workers end a rollout at a terminal state.
    * Gaussian actions are clipped to the Box bounds before the env sees them; the log-probability
      uses the unclipped sample (as SB3 does).
    * Rollouts act through numpy views of the same weights (:func:`rlkit.nets.numpy_actor_critic`) when
      the network is a plain MLP on flat observations; images and Discrete observations act through torch.

Run it: ``rlkit train a2c --env CartPole-v1 --preset cartpole`` or ``python -m rlkit.agents.a2c --help``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from rlkit.envs import VecEnv, make_vec_env
from torch import nn
from torch.distributions import Distribution

from rlkit.callbacks import Callback
from rlkit.config import MAX_ENVS, MAX_WIDTH, BaseConfig, config_from_dict, default, opt, require_at_least_one
from rlkit.errors import RLKitError
from rlkit.memory import refuse_if_too_big
from rlkit.nets import ActorCritic, numpy_actor_critic
from rlkit.optim import OptimizerName, OptimizerOptions, set_lr
from rlkit.policy import TorchPolicy
from rlkit.registry import AgentSpec, eval_env_factory, train_from_command_line
from rlkit.run import Run

Actor = Callable[..., tuple[np.ndarray, np.ndarray]]  # actor(obs_batch, deterministic=False) -> (actions, values)


@dataclass
class ActorCriticOptions:
    """The loss and network options of A2C and A3C, and their optimizer defaults (both configs mix them in
    before :class:`OptimizerOptions`; defaults follow SB3/Baselines and the A3C paper, presets hold per-task
    values)."""

    gamma: float = opt(0.99, "discount factor", low=0, high=1)
    gae_lambda: float = opt(1.0, "GAE lambda in [0, 1]; 1.0 gives the paper's n-step returns")
    lr: float = default(OptimizerOptions, "lr", 7e-4)
    optimizer: OptimizerName = default(OptimizerOptions, "optimizer", "rmsprop")  # the paper's; A3C shares its state
    optimizer_eps: float = default(OptimizerOptions, "optimizer_eps", 1e-5)
    ent_coef: float = opt(0.01, "weight of the entropy bonus (paper: 0.01)")
    vf_coef: float = opt(0.5, "weight of the value loss")
    max_grad_norm: float = opt(0.5, "clip each update's gradients to this global norm (0 = no clipping)")
    hidden: list[int] = opt([64, 64], "hidden layer sizes of the trunk (after the CNN for images)", low=1,
                            high=MAX_WIDTH)
    activation: Literal["tanh", "relu"] = opt("tanh", "activation of the hidden layers")
    shared_trunk: bool = opt(True, "policy and value share the trunk (false: the value gets its own MLP)")
    clip_rewards: bool = opt(False, "train on sign(reward) (Atari); logged returns stay raw")

    def validate_actor_critic(self) -> None:
        if not 0 <= self.gamma <= 1 or not 0 <= self.gae_lambda <= 1:
            raise RLKitError(f"gamma and gae_lambda must be in [0, 1]; got {self.gamma} and {self.gae_lambda}")
        if self.ent_coef < 0 or self.vf_coef < 0 or self.max_grad_norm < 0:
            raise RLKitError("ent_coef, vf_coef and max_grad_norm must be non-negative")


@dataclass
class A2CConfig(ActorCriticOptions, OptimizerOptions, BaseConfig):
    """A2C hyper-parameters: the shared actor-critic and optimizer options plus the vector env's."""

    num_envs: int = opt(8, "parallel envs stepping in lockstep", low=1, high=MAX_ENVS)
    n_steps: int = opt(5, "steps per env between updates (t_max in the A3C paper)")

    def validate(self) -> None:
        self.validate_actor_critic()
        self.validate_optimizer()
        require_at_least_one(self, "num_envs", "n_steps")


# ALGO LOGIC: the math, as pure functions (unit-tested against a loop reference and hand values).
def n_step_returns(rewards: np.ndarray, next_values: np.ndarray, terminated: np.ndarray, truncated: np.ndarray,
                   gamma: float) -> np.ndarray:
    """Bootstrapped n-step returns of a (T, N) rollout, computed backwards.

    ``R_t = r_t + gamma * R_{t+1}`` inside an episode; the sum stops at an episode end and at the end
    of the rollout, where it bootstraps from ``next_values``.

    Args:
        rewards: (T, N) rewards.
        next_values: (T, N) V of the observation that followed step t: V(s_{t+1}) inside an episode,
            V(final_obs) where the episode was truncated; ignored where it terminated.
        terminated: (T, N) the step ended the episode in a terminal state (no bootstrap).
        truncated: (T, N) the step hit a time limit (bootstrap from ``next_values``).
        gamma: discount in [0, 1].
    """
    returns = np.zeros_like(rewards, dtype=np.float32)
    following = next_values[-1]  # what step T-1 bootstraps from
    for t in reversed(range(len(rewards))):
        following = np.where(truncated[t], next_values[t], following)
        following = rewards[t] + gamma * (1.0 - terminated[t]) * following
        returns[t] = following
    return returns


def gae_advantages(rewards: np.ndarray, values: np.ndarray, next_values: np.ndarray, terminated: np.ndarray,
                   truncated: np.ndarray, gamma: float, lam: float) -> np.ndarray:
    """GAE(lambda): A_t = delta_t + gamma * lambda * A_{t+1} within an episode and the rollout.

    ``delta_t = r_t + gamma * (1 - terminated_t) * next_values_t - values_t``; arguments as in
    :func:`n_step_returns`, plus ``values`` (T, N) = V(s_t). With ``lam = 1`` this equals
    ``n_step_returns(...) - values``.
    """
    deltas = rewards + gamma * (1.0 - terminated) * next_values - values
    continues = 1.0 - (terminated | truncated)
    advantages = np.zeros_like(rewards, dtype=np.float32)
    running = np.zeros(rewards.shape[1], dtype=np.float32)
    for t in reversed(range(len(rewards))):
        running = deltas[t] + gamma * lam * continues[t] * running
        advantages[t] = running
    return advantages


def actor_critic_loss(dist: Distribution, values: torch.Tensor, actions: torch.Tensor, advantages: torch.Tensor,
                      returns: torch.Tensor, vf_coef: float, ent_coef: float
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The A2C/A3C loss; returns (loss, detached terms for logging).

    policy term ``-mean(A * log pi(a|s))`` (A treated as a constant), value term ``mean((R - V)^2)``,
    entropy bonus ``mean(H[pi])`` subtracted with weight ``ent_coef``.
    """
    policy_loss = -(advantages.detach() * dist.log_prob(actions)).mean()
    value_loss = (returns.detach() - values).pow(2).mean()
    entropy = dist.entropy().mean()
    loss = policy_loss + vf_coef * value_loss - ent_coef * entropy
    terms = {"losses/policy_loss": policy_loss, "losses/value_loss": value_loss, "losses/entropy": entropy}
    return loss, {k: v.detach() for k, v in terms.items()}


class Rollout(NamedTuple):
    """``n_steps`` steps of ``N`` envs; every array has leading axes (T, N)."""

    obs: np.ndarray
    actions: np.ndarray  # as sampled (unclipped)
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    values: np.ndarray  # V(s_t) when acting
    next_values: np.ndarray  # V of the true next observation (0 where terminated)


def rollout_loss(model: ActorCritic, rollout: Rollout, gamma: float, gae_lambda: float, vf_coef: float,
                 ent_coef: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Returns/advantages of ``rollout`` and the loss of ``model`` on it (shared by A2C and A3C)."""
    r = rollout
    if gae_lambda >= 1.0:
        returns = n_step_returns(r.rewards, r.next_values, r.terminated, r.truncated, gamma)
        advantages = returns - r.values
    else:
        advantages = gae_advantages(r.rewards, r.values, r.next_values, r.terminated, r.truncated, gamma, gae_lambda)
        returns = advantages + r.values
    n = r.rewards.size
    dist, values = model(torch.as_tensor(r.obs.reshape(n, *r.obs.shape[2:])))
    actions = torch.as_tensor(r.actions.reshape(n, *r.actions.shape[2:]))
    return actor_critic_loss(dist, values, actions, torch.as_tensor(advantages.reshape(n)),
                             torch.as_tensor(returns.reshape(n)), vf_coef, ent_coef)


def collect_rollout(envs: VecEnv, obs: np.ndarray, actor: Actor, n_steps: int, clip_rewards: bool = False
                    ) -> tuple[Rollout, np.ndarray, list[tuple[float, int]]]:
    """Step ``envs`` ``n_steps`` times from ``obs``; returns (rollout, next obs, finished (return, length))."""
    num, space = envs.num_envs, envs.single_action_space
    box = isinstance(space, gym.spaces.Box)
    # per step: the observations, three float32 and two bool columns, and the actions (at most 8 bytes each)
    per_step = obs.nbytes + num * (3 * 4 + 2) + num * 8 * int(np.prod(space.shape or (1,)))
    refuse_if_too_big(f"a rollout of {n_steps:,} steps x {num} envs", n_steps * per_step,
                      "lower n_steps or num_envs")
    obs_buf = np.empty((n_steps, *obs.shape), dtype=obs.dtype)
    actions_buf: np.ndarray | None = None
    rewards, values, next_values = (np.zeros((n_steps, num), np.float32) for _ in range(3))
    terminated, truncated = np.zeros((n_steps, num), bool), np.zeros((n_steps, num), bool)
    episodes = []
    for t in range(n_steps):
        obs_buf[t] = obs
        actions, values[t] = actor(obs)
        if actions_buf is None:
            actions_buf = np.empty((n_steps, *actions.shape), dtype=actions.dtype)
        actions_buf[t] = actions
        step = envs.step(np.clip(actions.reshape(num, *space.shape), space.low, space.high) if box else actions)
        rewards[t] = np.sign(step.rewards) if clip_rewards else step.rewards
        terminated[t], truncated[t] = step.terminated, step.truncated
        if step.truncated.any():
            # TRY NOT TO MODIFY: a time limit is not a terminal state; bootstrap from the real last observation,
            # not from the reset observation that step.obs holds for this env now.
            cut = np.flatnonzero(step.truncated)
            next_values[t, cut] = actor(step.final_obs[cut], deterministic=True)[1]
        obs = step.obs
        episodes += [(float(step.episode_returns[i]), int(step.episode_lengths[i]))
                     for i in np.flatnonzero(step.episode_lengths)]
    last_values = actor(obs, deterministic=True)[1]
    # Inside an episode the next observation is the next step's (or, after the last step, the current) one.
    ongoing = ~(terminated | truncated)
    following = np.concatenate([values[1:], last_values[None]])
    next_values = np.where(ongoing, following, np.where(terminated, 0.0, next_values)).astype(np.float32)
    return Rollout(obs_buf, actions_buf, rewards, terminated, truncated, values, next_values), obs, episodes


# Networks and acting (shared with agents/a3c.py).
def check_spaces(observation_space: gym.Space, action_space: gym.Space, agent: str,
                 action_types: tuple[type[gym.Space], ...] = (gym.spaces.Discrete, gym.spaces.Box)) -> None:
    """Refuse what :class:`rlkit.nets.ActorCritic` (and the agent's ``action_types``) cannot take, before a run
    directory is written."""
    if not isinstance(action_space, action_types):
        names = [t.__name__ for t in action_types]
        raise RLKitError(f"{agent} supports {', '.join(names[:-1])} and {names[-1]} action spaces; got {action_space}")
    if not isinstance(observation_space, (gym.spaces.Discrete, gym.spaces.Box)):
        raise RLKitError(f"{agent} supports Box and Discrete observations; got {observation_space} "
                         "(flatten Dict/Tuple spaces with gymnasium.wrappers.FlattenObservation)")


def build_model(observation_space: gym.Space, action_space: gym.Space, hidden: list[int], activation: str,
                shared_trunk: bool) -> ActorCritic:
    return ActorCritic(observation_space, action_space, hidden, shared=shared_trunk,
                       activation=nn.Tanh if activation == "tanh" else nn.ReLU)


def build_learner(cfg: A2CConfig | Any, observation_space: gym.Space, action_space: gym.Space,
                  resume_state: dict[str, Any] | None) -> tuple[ActorCritic, torch.optim.Optimizer, int]:
    """The model and its optimizer (A2C's and A3C's), restored from ``resume_state`` when resuming;
    returns them and the global step to continue from."""
    model = build_model(observation_space, action_space, cfg.hidden, cfg.activation, cfg.shared_trunk)
    optimizer = cfg.build_optimizer(model.parameters())
    if resume_state is None:
        return model, optimizer, 0
    model.load_state_dict(resume_state["model"])
    optimizer.load_state_dict(resume_state["optimizer"])
    return model, optimizer, int(resume_state["global_step"])


def make_actor(model: ActorCritic, rng: np.random.Generator) -> Actor:
    """The rollout actor: numpy (:func:`rlkit.nets.numpy_actor_critic`) where it applies, else the torch
    module (torch's RNG samples)."""
    fast = numpy_actor_critic(model, rng)
    if fast is not None:
        return fast

    def torch_actor(obs: np.ndarray, deterministic: bool = False) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            dist, values = model(torch.as_tensor(obs))
            actions = model.policy.mode(dist) if deterministic else dist.sample()
        return actions.numpy(), values.numpy()

    return torch_actor


def make_policy(model: ActorCritic, observation_space: gym.Space, action_space: gym.Space) -> TorchPolicy:
    """The evaluation policy: greedy (mode) actions, clipped to Box bounds."""
    box = isinstance(action_space, gym.spaces.Box)
    shape = action_space.shape

    def clip(actions: np.ndarray) -> np.ndarray:
        return np.clip(actions.reshape(len(actions), *shape), action_space.low, action_space.high) if box else actions

    def act_fn(module: ActorCritic, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        return torch.as_tensor(clip(module.act(obs, deterministic).numpy()))

    actor = numpy_actor_critic(model, rng=None)
    fast = None if actor is None else (lambda obs: clip(actor(obs, deterministic=True)[0]))
    return TorchPolicy(model, act_fn, action_space, observation_space, fast=fast)


def train(cfg: A2CConfig, resume: bool = False, callbacks: Sequence[Callback] | None = None) -> dict[str, Any]:
    """Train A2C as configured; returns the contents of ``final.json``."""
    cfg.validate()
    envs = make_vec_env(cfg.env_id, cfg.num_envs, seed=cfg.seed, env_kwargs=cfg.env_kwargs)
    obs_space, act_space = envs.single_observation_space, envs.single_action_space
    check_spaces(obs_space, act_space, "a2c")
    run = Run("a2c", cfg, resume=resume, callbacks=callbacks)  # seeds the global RNGs, sets thread counts
    model, optimizer, global_step = build_learner(cfg, obs_space, act_space, run.resume_state)
    run.restore_rng()
    actor = make_actor(model, run.rng)
    policy = make_policy(model, obs_space, act_space)
    # A resumed run cannot restore the envs' internal state; it starts fresh episodes on a new seed.
    obs = envs.reset(seed=cfg.seed + global_step)

    def state_dict() -> dict[str, Any]:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "observation_space": obs_space, "action_space": act_space}

    stride = cfg.num_envs * cfg.n_steps
    with run.checkpoint_on_interrupt(lambda: (global_step, state_dict())):
        while global_step < cfg.total_steps and run.stopped is None:
            rollout, obs, episodes = collect_rollout(envs, obs, actor, cfg.n_steps, cfg.clip_rewards)
            global_step += stride
            for episode_return, length in episodes:
                run.logger.record_episode(episode_return, length)

            # ALGO LOGIC: one gradient step on the rollout.
            loss, terms = rollout_loss(model, rollout, cfg.gamma, cfg.gae_lambda, cfg.vf_coef, cfg.ent_coef)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            lr = cfg.lr_at((global_step - stride) / cfg.total_steps)
            set_lr(optimizer, lr)
            optimizer.step()

            run.step_done(global_step, stride, policy, eval_env_factory(cfg), state_dict,
                          lambda terms=terms, lr=lr: {**{k: v.item() for k, v in terms.items()},
                                                      "charts/learning_rate": lr})

    envs.close()
    return run.finish(policy, eval_env_factory(cfg), global_step, state_dict())


def policy_from_state(state: dict[str, Any], cfg: Any) -> TorchPolicy:
    """Rebuild the greedy policy of an A2C or A3C checkpoint (both store ``model`` and the spaces)."""
    obs_space, act_space = state["observation_space"], state["action_space"]
    model = build_model(obs_space, act_space, cfg.hidden, cfg.activation, cfg.shared_trunk)
    model.load_state_dict(state["model"])
    model.eval()
    return make_policy(model, obs_space, act_space)


def load_policy(state: dict[str, Any]) -> TorchPolicy:
    return policy_from_state(state, config_from_dict(A2CConfig, state["config"]))


AGENT = AgentSpec("a2c", A2CConfig, train, load_policy,
                  summary="synchronous advantage actor-critic (n-step returns or GAE; discrete and Gaussian actions)")

if __name__ == "__main__":
    train_from_command_line("a2c")
