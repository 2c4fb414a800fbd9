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


class CurvyRoadEnv(gym.Env):
    """A winding road built to show covariate shift (BC vs DAgger, Ross et al. 2011).

    Each step the car is on the centre lane or ``1..width`` lanes off it, and it steers
    (0 = left, 1 = straight, 2 = right). On the centre lane the road bends by a curve -1, 0 or +1
    that the observation names through one of ``contexts`` symbols (symbol ``c`` bends by
    ``c % 3 - 1``); only steering against the bend keeps the car centred. Off the centre the road is
    straight. Reward 1 for each step that ends on the centre lane; leaving the road terminates; the
    episode is cut after ``length`` steps. The observation is one-hot over ``contexts + 2 * width``
    cells (a symbol when centred, else the offset), so an MLP cannot carry what it learned in one
    cell to another.

    The expert (:class:`CurvyRoadExpert`) never leaves the centre, so its demonstrations hold no
    off-centre state. A clone that has not seen some symbol errs there, lands off-centre, and acts
    arbitrarily from then on. DAgger visits those few off-centre states and has the expert label them
    ("steer back"), so its errors cost a step or two instead of the rest of the episode.
    """

    metadata = {"render_modes": []}

    def __init__(self, length: int = 50, width: int = 2, contexts: int = 200) -> None:
        self.length, self.width, self.contexts = length, width, contexts
        self.observation_space = gym.spaces.Box(0.0, 1.0, (contexts + 2 * width,), np.float32)
        self.action_space = gym.spaces.Discrete(3)
        self._t, self._offset, self._context = 0, 0, 0

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.observation_space.shape, np.float32)
        if self._offset == 0:
            self._context = int(self.np_random.integers(self.contexts))
            obs[self._context] = 1.0
        else:  # cells contexts .. contexts+2*width-1 hold offsets -width..-1, 1..width
            obs[self.contexts + self._offset + self.width - (self._offset > 0)] = 1.0
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self._t, self._offset = 0, 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        bend = self._context % 3 - 1 if self._offset == 0 else 0
        self._offset += int(action) - 1 + bend
        self._t += 1
        off_road = abs(self._offset) > self.width
        self._offset = int(np.clip(self._offset, -self.width, self.width))
        reward = float(self._offset == 0 and not off_road)
        return self._obs(), reward, off_road, self._t >= self.length and not off_road, {}


class CurvyRoadExpert:
    """The expert of :class:`CurvyRoadEnv` (a batched rlkit Policy): steer against the bend, or back.

    The number of symbols is read off the observation's size (``contexts + 2 * width``).
    """

    def __init__(self, observation_space: gym.Space | None = None, action_space: gym.Space | None = None,
                 width: int = 2) -> None:
        self.width = width

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        obs = np.asarray(obs)
        contexts = obs.shape[1] - 2 * self.width
        cell = obs.argmax(axis=1)
        j = cell - contexts
        offset = np.where(j < self.width, j - self.width, j - self.width + 1)
        return np.where(cell < contexts, 1 - (cell % 3 - 1), 1 - np.sign(offset)).astype(np.int64)


def register_test_envs() -> None:
    """Register the test envs under the ``rlkit/`` namespace (idempotent)."""
    specs = {
        "rlkit/Identity-v0": ("rlkit.envs.test_envs:IdentityEnv", None),
        "rlkit/ContinuousTarget-v0": ("rlkit.envs.test_envs:ContinuousTargetEnv", None),
        "rlkit/ConstantReward-v0": ("rlkit.envs.test_envs:ConstantRewardEnv", 20),
        "rlkit/Chain-v0": ("rlkit.envs.test_envs:ChainEnv", 50),
        "rlkit/CurvyRoad-v0": ("rlkit.envs.test_envs:CurvyRoadEnv", None),
    }
    for env_id, (entry_point, max_steps) in specs.items():
        if env_id not in gym.envs.registry:
            gym.register(env_id, entry_point=entry_point, max_episode_steps=max_steps)
