"""MinAtar through gymnasium 1.x: MinAtar's own ids, made ready for rlkit's networks by one small wrapper.

MinAtar (Young & Tian 2019, "MinAtar: An Atari-inspired Testbed for More Efficient Reinforcement Learning
Experiments", https://arxiv.org/abs/1903.03176; https://github.com/kenjyoung/MinAtar) has five Atari analogues
on a 10x10 grid with one binary channel per kind of object. ``minatar.gym.register_envs()`` registers
``MinAtar/<Game>-v0`` (all 6 actions: what the paper and its example code use, README "Note that the results
... use the full action set of 6 actions") and ``MinAtar/<Game>-v1`` (each game's minimal action set) for
``Asterix``, ``Breakout``, ``Freeway``, ``Seaquest`` and ``SpaceInvaders``.

What :class:`MinAtarObservation` changes, and why:
    * Observations: MinAtar 1.0.15 gives ``bool`` grids, height x width x channels. rlkit's convolutional
      encoders take channels first and pick pixels by ``uint8`` (``rlkit.nets.is_image_space``), so the grid
      becomes ``uint8`` (C, 10, 10) with values 0/1: a quarter of float32's bytes in a 100k-transition replay
      buffer, converted to float per minibatch by the encoder, which divides by the space's bound (1 here).
    * Seeding: MinAtar's ``reset(seed=...)`` seeds its game but never calls ``gymnasium.Env.reset``, so the
      env's ``np_random`` stays unseeded and ``gymnasium.utils.env_checker.check_env`` fails; a seeded reset
      here seeds both, and also clears the sticky-action memory, which MinAtar carries from one episode into
      the next, so that ``reset(seed=s)`` alone decides the episode (a used env replays a fresh one's).
    * ``render()`` (``render_mode="rgb_array"``): MinAtar's colours as uint8, each cell 16x16 pixels
      (MinAtar returns a 10x10 float image, which video writers cannot take).

Left as MinAtar has them, because the paper used them: sticky actions with probability 0.1 and difficulty
ramping (``minatar.Environment(sticky_action_prob=0.1, difficulty_ramping=True)``; change them with
``env_kwargs``), no frame skip, rewards unclipped, and no time limit (every game ends by itself; Freeway after
2500 frames).

MinAtar is GPL-3.0, so it is an optional extra (``pip install 'rlkit[minatar]'``), imported only when a
MinAtar id is made (:func:`register`, called by ``make_env``'s id resolution).
"""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import numpy as np

from rlkit.errors import missing_extra

PREFIX = "MinAtar/"
GAMES = ("Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders")
CELL_PIXELS = 16  # rendered size of one grid cell: 10x10 cells -> 160x160 frames
RENDER_FPS = 20


def is_minatar(env_id: str) -> bool:
    """True for MinAtar ids (``MinAtar/Breakout-v0``)."""
    return env_id.startswith(PREFIX)


def register() -> None:
    """Register MinAtar's ids through ``minatar.gym.register_envs()`` (gymnasium does not import MinAtar by
    itself); one-line error naming the extra when MinAtar is not installed."""
    try:
        import minatar.gym
    except ImportError:
        raise missing_extra("minatar", "minatar") from None
    if f"{PREFIX}Breakout-v0" not in gym.envs.registry:  # registering twice would warn "Overriding environment"
        minatar.gym.register_envs()


def ignore_version_notice() -> None:
    """Inside ``warnings.catch_warnings()``: drop gymnasium's "MinAtar/<Game>-v0 is out of date, consider v1",
    which takes MinAtar's two action sets for an old and a new version (v0, all 6 actions, is the paper's)."""
    warnings.filterwarnings("ignore", message=r".*The environment MinAtar/\w+-v0 is out of date",
                            category=DeprecationWarning)


class MinAtarObservation(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """MinAtar's bool (H, W, C) grid as uint8 (C, H, W) 0/1; seeded resets seed the whole env (module docstring).

    It records its (no) constructor arguments so that ``env.spec`` remakes the wrapped env (``check_env`` does).
    """

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.ObservationWrapper.__init__(self, env)
        height, width, channels = env.observation_space.shape
        self.observation_space = gym.spaces.Box(0, 1, (channels, height, width), np.uint8)
        # MinAtar shows a frame for 50 ms (minatar.gym.BaseEnv display_time=50) but declares no rate
        self.metadata = {**env.metadata, "render_fps": RENDER_FPS}

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.moveaxis(observation, -1, 0), dtype=np.uint8)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        if seed is not None:
            base = self.unwrapped
            gym.Env.reset(base, seed=seed)  # what MinAtar's reset leaves out: the env's own np_random
            base.game.last_action = 0  # minatar.Environment's sticky-action memory, as a new Environment has it
        return super().reset(seed=seed, options=options)

    def render(self) -> Any:
        # MinAtar's own frame, around gymnasium's passive checker (which would warn about the float frame and the
        # missing fps that this wrapper converts and declares)
        frame = self.unwrapped.render()
        if self.render_mode != "rgb_array" or frame is None:
            return frame
        pixels = np.round(np.asarray(frame) * 255).astype(np.uint8)
        return pixels.repeat(CELL_PIXELS, axis=0).repeat(CELL_PIXELS, axis=1)
