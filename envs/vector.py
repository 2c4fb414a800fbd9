"""A synchronous vector env whose autoreset is explicit and version-neutral.

Gymnasium 1.x vector envs autoreset on the *next* step by default (the step after an episode ends
returns the reset observation, with reward 0 and no action taken); 0.29 reset in the same step and
hid the last observation in ``infos["final_observation"]``. Agents should depend on neither, so this
class steps plain envs and does the reset itself, in the same step: :meth:`step` returns the
observation to act on next *and* the true final observation of every env whose episode ended, with
that step's reward and flags. This is gymnasium 1.x's ``AutoresetMode.SAME_STEP`` (``metadata``
says so, as gymnasium's vector envs do), which ``tests/test_envs.py`` checks step for step against
``gym.vector.SyncVectorEnv(..., autoreset_mode=SAME_STEP)``.
"""

from __future__ import annotations

from typing import NamedTuple

import gymnasium as gym
import numpy as np


class VecStep(NamedTuple):
    """One vector step.

    Attributes:
        obs: observations to act on next (a fresh reset observation where an episode ended).
        rewards: float32 rewards, shape (num_envs,).
        terminated: episode ended in a terminal state (do not bootstrap).
        truncated: episode was cut by a time limit (bootstrap from ``final_obs``).
        final_obs: the observation the step actually produced (equals ``obs`` where not done).
        episode_returns: undiscounted return of each finished episode (NaN elsewhere).
        episode_lengths: length of each finished episode (0 elsewhere).
    """

    obs: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    final_obs: np.ndarray
    episode_returns: np.ndarray
    episode_lengths: np.ndarray


class VecEnv:
    """Steps ``envs`` in lockstep; env ``i`` is reset with ``seed + i`` the first time only."""

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}

    def __init__(self, envs: list[gym.Env], seed: int | None = 0) -> None:
        self.envs = envs
        self.num_envs = len(envs)
        self.seed = seed
        self.single_observation_space = envs[0].observation_space
        self.single_action_space = envs[0].action_space
        self._returns = np.zeros(self.num_envs, dtype=np.float64)
        self._lengths = np.zeros(self.num_envs, dtype=np.int64)
        self._obs: np.ndarray | None = None

    def reset(self, seed: int | None = None) -> np.ndarray:
        base = self.seed if seed is None else seed
        obs = [env.reset(seed=None if base is None else base + i)[0] for i, env in enumerate(self.envs)]
        self._returns[:] = 0
        self._lengths[:] = 0
        self._obs = np.stack([np.asarray(o) for o in obs])
        return self._obs

    def step(self, actions: np.ndarray) -> VecStep:
        n = self.num_envs
        rewards = np.zeros(n, dtype=np.float32)
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        ep_returns = np.full(n, np.nan)
        ep_lengths = np.zeros(n, dtype=np.int64)
        final_obs = []
        next_obs = []
        for i, env in enumerate(self.envs):
            obs, reward, term, trunc, _ = env.step(actions[i])
            obs = np.asarray(obs)  # LazyFrames -> array
            rewards[i], terminated[i], truncated[i] = reward, term, trunc
            self._returns[i] += reward
            self._lengths[i] += 1
            final_obs.append(obs)
            if term or trunc:
                ep_returns[i], ep_lengths[i] = self._returns[i], self._lengths[i]
                self._returns[i], self._lengths[i] = 0.0, 0
                obs = np.asarray(env.reset()[0])  # later resets continue the env's own seeded RNG
            next_obs.append(obs)
        self._obs = np.stack(next_obs)
        return VecStep(self._obs, rewards, terminated, truncated, np.stack(final_obs), ep_returns, ep_lengths)

    def render(self) -> np.ndarray | None:
        return self.envs[0].render()

    def close(self) -> None:
        for env in self.envs:
            env.close()
