"""Small deterministic envs for fast, non-flaky tests (registered as ``rlkit/<Name>-v0``)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


class IdentityEnv(gym.Env):
    """Observe a random symbol, get reward 1 for repeating it as the action (SB3's IdentityEnv).

    A perfect policy scores ``episode_length``; a random one ``episode_length / n``.
    """

    metadata = {"render_modes": []}

    def __init__(self, n: int = 4, episode_length: int = 20) -> None:
        self.n = n
        self.episode_length = episode_length
        self.observation_space = gym.spaces.Discrete(n)
        self.action_space = gym.spaces.Discrete(n)
        self._t = 0
        self._state = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self._t = 0
        self._state = int(self.np_random.integers(self.n))
        return self._state, {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        reward = float(int(action) == self._state)
        self._t += 1
        self._state = int(self.np_random.integers(self.n))
        return self._state, reward, False, self._t >= self.episode_length, {}


class ContinuousTargetEnv(gym.Env):
    """One-step continuous control: observe a target in the action box, reward = -(a - target)^2.

    The action bounds are asymmetric ([-1, 3]) so that scaling bugs show.
    """

    metadata = {"render_modes": []}

    def __init__(self, dim: int = 1, low: float = -1.0, high: float = 3.0) -> None:
        self.action_space = gym.spaces.Box(low, high, (dim,), np.float32)
        self.observation_space = gym.spaces.Box(low, high, (dim,), np.float32)
        self._target = np.zeros(dim, np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self._target = self.np_random.uniform(self.action_space.low, self.action_space.high).astype(np.float32)
        return self._target.copy(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        reward = -float(np.sum((np.asarray(action, np.float32) - self._target) ** 2))
        return self._target.copy(), reward, True, False, {}


class ConstantRewardEnv(gym.Env):
    """Reward 1 every step, never terminates; wrapped in a TimeLimit it tests truncation bootstrapping.

    With correct bootstrapping on truncation the value of every state is 1 / (1 - gamma).
    """

    metadata = {"render_modes": []}

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        return np.ones(1, np.float32), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        return np.ones(1, np.float32), 1.0, False, False, {}


class ChainEnv(gym.Env):
    """A corridor of ``length`` cells; action 1 moves right, 0 left. Reaching the end pays 1 and ends.

    The observation is the one-hot cell. Staying near the start is cheap to learn by random
    exploration; a policy that drifts off the expert's path must recover (DAgger's setting).
    """

    metadata = {"render_modes": []}

    def __init__(self, length: int = 8, slip: float = 0.0) -> None:
        self.length = length
        self.slip = slip
        self.observation_space = gym.spaces.Box(0.0, 1.0, (length,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self._pos = 0

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.length, np.float32)
        obs[self._pos] = 1.0
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self._pos = 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        move = 1 if int(action) == 1 else -1
        if self.slip and self.np_random.random() < self.slip:
            move = -move
        self._pos = int(np.clip(self._pos + move, 0, self.length - 1))
        done = self._pos == self.length - 1
        return self._obs(), float(done), done, False, {}


class DriftEnv(gym.Env):
    """A lane with a side wind, built to show covariate shift (BC vs DAgger, Ross et al. 2011).

    The agent drives ``length`` steps down a lane of offsets ``-width..width``; each step it steers
    (0 = left, 1 = straight, 2 = right) and then the wind pushes it one lane sideways with
    probability ``wind``. Reward 1 for each step that ends on the centre lane; leaving the lane
    terminates. The observation is the one-hot (step, offset) cell, so nothing learned in one cell
    carries over to another. The expert (:class:`DriftExpert`) steers back to the centre, so it is
    never more than one lane off: its demonstrations hold no states two lanes off, and a clone that
    drifts there acts at random. DAgger visits those states and has the expert label them.
    """

    metadata = {"render_modes": []}

    def __init__(self, length: int = 20, width: int = 2, wind: float = 0.3) -> None:
        self.length, self.width, self.wind = length, width, wind
        self.observation_space = gym.spaces.Box(0.0, 1.0, (length * (2 * width + 1),), np.float32)
        self.action_space = gym.spaces.Discrete(3)
        self._t = 0
        self._offset = 0

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.observation_space.shape, np.float32)
        obs[min(self._t, self.length - 1) * (2 * self.width + 1) + self._offset + self.width] = 1.0
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self._t, self._offset = 0, 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        self._offset += int(action) - 1
        if self.np_random.random() < self.wind:
            self._offset += 1 if self.np_random.random() < 0.5 else -1
        self._t += 1
        off_road = abs(self._offset) > self.width
        self._offset = int(np.clip(self._offset, -self.width, self.width))
        return self._obs(), float(self._offset == 0 and not off_road), off_road or self._t >= self.length, False, {}


class DriftExpert:
    """The expert of :class:`DriftEnv`: steer back towards the centre lane (a batched rlkit Policy)."""

    def __init__(self, observation_space: gym.Space | None = None, action_space: gym.Space | None = None,
                 width: int = 2) -> None:
        self.width = width

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        offset = np.asarray(obs).argmax(axis=1) % (2 * self.width + 1) - self.width
        return (1 - np.sign(offset)).astype(np.int64)


def register_test_envs() -> None:
    """Register the test envs under the ``rlkit/`` namespace (idempotent)."""
    specs = {
        "rlkit/Identity-v0": ("envs.test_envs:IdentityEnv", None),
        "rlkit/ContinuousTarget-v0": ("envs.test_envs:ContinuousTargetEnv", None),
        "rlkit/ConstantReward-v0": ("envs.test_envs:ConstantRewardEnv", 20),
        "rlkit/Chain-v0": ("envs.test_envs:ChainEnv", 50),
        "rlkit/Drift-v0": ("envs.test_envs:DriftEnv", None),
    }
    for env_id, (entry_point, max_steps) in specs.items():
        if env_id not in gym.envs.registry:
            gym.register(env_id, entry_point=entry_point, max_episode_steps=max_steps)
