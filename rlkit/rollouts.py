"""On-policy rollouts: n steps of a vector env under an actor, with both done flags and the values to bootstrap."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import gymnasium as gym
import numpy as np

from rlkit.memory import refuse_if_too_big

if TYPE_CHECKING:  # a type only: the data layer imports no env
    from rlkit.envs import VecEnv

Actor = Callable[..., tuple[np.ndarray, np.ndarray]]  # actor(obs_batch, deterministic=False) -> (actions, values)


class Rollout(NamedTuple):
    """``n_steps`` steps of ``N`` envs; every array has leading axes (T, N)."""

    obs: np.ndarray
    actions: np.ndarray  # as sampled (unclipped)
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    values: np.ndarray  # V(s_t) when acting
    next_values: np.ndarray  # V of the true next observation (0 where terminated)


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
