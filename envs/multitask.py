"""Multi-task suites: one gymnasium env family, several physical contexts, the task id in the observation.

A context is a set of the base env's own physics attributes, set on ``env.unwrapped`` before each episode
(CartPole: the half pole length ``length`` and the cart mass ``masscart``, with the derived ``total_mass`` and
``polemass_length`` recomputed as CartPoleEnv's constructor computes them; Pendulum: gravity ``g`` and the
rod's mass ``m``). :class:`MultiTaskEnv` picks each episode's task, applies its context, and shows the task
id with the observation:

* ``obs_mode="onehot"`` (the default): a ``float32`` one-hot of the suite's task count appended to the base
  observation, so every learner that takes a flat Box takes a suite unchanged;
* ``obs_mode="dict"``: ``{"obs": base observation, "task": Discrete(n_tasks)}`` for networks that embed the id
  themselves.

Which task an episode gets (``schedule``):

* ``"round_robin"`` (the default): a seeded reset ``reset(seed=s)`` starts at task ``s % n_tasks`` and every
  later (unseeded) reset moves on to the next task. rlkit's evaluation resets episode ``i`` with ``seed + i``
  and its vector env seeds env ``i`` with ``seed + i``, so every ``n_tasks`` consecutive evaluation episodes
  score each task once and parallel envs start on different tasks; a replay buffer gets the tasks' episodes
  in equal numbers. A uniform draw leaves a 5-episode evaluation of 4 tasks without some task one time in
  three or more.
* ``"uniform"``: each episode's task is drawn uniformly from a task stream that ``reset(seed=s)`` reseeds
  (apart from the base env's own ``np_random``), as a task distribution is sampled in meta-RL.
* ``task=k`` fixes the task (single-task baselines on one context, per-task evaluation); the one-hot stays
  the suite's width.

Held-out contexts (``rlkit/<Suite>-MT-heldout-v0``) are physics that no training task has, for transfer. Their
one-hot keeps the suite's width, so a network trained on the suite takes them, and shows the id of the nearest
training context (distance: the Euclidean norm of the log ratios of the context's parameters, so that twice the
mass is as far as half of it). A network then starts from the head of the task most like the new one, and a
task-conditioned network sees an input it was trained on, which an all-zero id would not be.

``info["task"]`` holds the id shown in the observation; ``get_wrapper_attr("context")`` the physics in effect.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control import CartPoleEnv, PendulumEnv

from rlkit.errors import RLKitError

OBS_MODES = ("onehot", "dict")
SCHEDULES = ("round_robin", "uniform")
TASK_STREAM = 0x7A5C  # mixed into the reset seed for the uniform task stream, so it is not the base env's stream


def set_cartpole(env: CartPoleEnv, length: float, masscart: float) -> None:
    """CartPole's half pole length and cart mass, and the two quantities its constructor derives from them."""
    env.length, env.masscart = float(length), float(masscart)
    env.total_mass = env.masspole + env.masscart
    env.polemass_length = env.masspole * env.length


def set_pendulum(env: PendulumEnv, g: float, m: float) -> None:
    """Pendulum's gravity and mass (its ``step`` reads both on every call; nothing is derived from them)."""
    env.g, env.m = float(g), float(m)


@dataclass(frozen=True)
class Suite:
    """A family's training contexts, its held-out context and how to make and configure its base env."""

    name: str
    make_base: Callable[..., gym.Env]
    apply: Callable[..., None]
    contexts: tuple[Mapping[str, float], ...]
    heldout: Mapping[str, float]
    max_episode_steps: int

    @property
    def n_tasks(self) -> int:
        return len(self.contexts)

    def nearest(self, context: Mapping[str, float]) -> int:
        """The training task closest to ``context`` (Euclidean norm of the parameters' log ratios)."""
        distances = [math.dist([math.log(context[k]) for k in c], [math.log(c[k]) for k in c]) for c in self.contexts]
        return int(np.argmin(distances))


SUITES: dict[str, Suite] = {
    # CartPole-v1 is task 0. Half pole length 0.5 m -> 0.25 m doubles the pole's angular acceleration for a given
    # push; 1.0 m halves it. A 3 kg cart takes a quarter of the acceleration a 1 kg one does, a 0.3 kg one
    # three times as much. A DQN trained on task 0 alone is measured on each context in docs/multitask.md.
    "CartPole": Suite("CartPole", CartPoleEnv, set_cartpole,
                      contexts=({"length": 0.5, "masscart": 1.0}, {"length": 0.25, "masscart": 0.3},
                                {"length": 1.0, "masscart": 3.0}, {"length": 0.25, "masscart": 3.0}),
                      heldout={"length": 0.75, "masscart": 2.0}, max_episode_steps=500),
    # Pendulum-v1 is task 0 (g 10, m 1); the torque limit stays 2, so lower gravity swings up more easily and a
    # heavier rod answers a torque more slowly (thetadot changes by 3 u / (m l^2) dt).
    "Pendulum": Suite("Pendulum", PendulumEnv, set_pendulum,
                      contexts=({"g": 10.0, "m": 1.0}, {"g": 4.0, "m": 1.0}, {"g": 14.0, "m": 1.0},
                                {"g": 10.0, "m": 1.5}),
                      heldout={"g": 6.0, "m": 1.25}, max_episode_steps=200),
}


def suite_id(family: str, heldout: bool = False) -> str:
    return f"rlkit/{family}-MT{'-heldout' if heldout else ''}-v0"


class MultiTaskEnv(gym.Wrapper):
    """One base env whose context changes per episode, the task id shown as a one-hot or a ``Dict`` key.

    Args:
        env: the base env (its ``unwrapped`` holds the physics attributes ``apply`` sets).
        contexts: the physics of each context this env plays, e.g. ``[{"length": 0.5, "masscart": 1.0}, ...]``.
        apply: ``apply(env.unwrapped, **context)`` sets a context's physics.
        ids: the task id each context shows (default ``0..len(contexts)-1``); a held-out context shows a
            training task's id.
        n_tasks: the one-hot width / the ``Discrete`` size (default ``len(contexts)``).
        task: a fixed context index, or None to follow ``schedule``.
        schedule: ``"round_robin"`` or ``"uniform"`` (module docstring).
        obs_mode: ``"onehot"`` or ``"dict"``.
    """

    def __init__(self, env: gym.Env, contexts: Sequence[Mapping[str, float]], apply: Callable[..., None],
                 ids: Sequence[int] | None = None, n_tasks: int | None = None, task: int | None = None,
                 schedule: str = "round_robin", obs_mode: str = "onehot") -> None:
        super().__init__(env)
        self.contexts = [dict(c) for c in contexts]
        self.ids = list(range(len(self.contexts))) if ids is None else [int(i) for i in ids]
        self.n_tasks = len(self.contexts) if n_tasks is None else int(n_tasks)
        _check_options(self.contexts, self.ids, self.n_tasks, task, schedule, obs_mode)
        self.apply, self.fixed, self.schedule, self.obs_mode = apply, task, schedule, obs_mode
        base = env.observation_space
        if obs_mode == "dict":
            self.observation_space = gym.spaces.Dict({"obs": base, "task": gym.spaces.Discrete(self.n_tasks)})
        else:
            if not (isinstance(base, gym.spaces.Box) and len(base.shape) == 1):
                raise RLKitError(f"obs_mode 'onehot' appends to a flat Box observation, not {base}; use obs_mode "
                                 "'dict'")
            self.observation_space = gym.spaces.Box(
                np.concatenate([base.low, np.zeros(self.n_tasks)]).astype(np.float32),
                np.concatenate([base.high, np.ones(self.n_tasks)]).astype(np.float32), dtype=np.float32)
        self.index = 0 if task is None else task  # the context index of the current episode
        self._task_rng = np.random.default_rng()

    @property
    def task(self) -> int:
        """The task id the current episode shows."""
        return self.ids[self.index]

    @property
    def context(self) -> dict[str, float]:
        """The physics of the current episode."""
        return dict(self.contexts[self.index])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        self.index = self._next_index(seed)
        self.apply(self.env.unwrapped, **self.contexts[self.index])  # before the episode's first step
        obs, info = self.env.reset(seed=seed, options=options)
        return self._observe(obs), {**info, "task": self.task}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._observe(obs), reward, terminated, truncated, {**info, "task": self.task}

    def _next_index(self, seed: int | None) -> int:
        n = len(self.contexts)
        if self.fixed is not None:
            return self.fixed
        if self.schedule == "uniform":
            if seed is not None:
                self._task_rng = np.random.default_rng([seed, TASK_STREAM])
            return int(self._task_rng.integers(n))
        return seed % n if seed is not None else (self.index + 1) % n

    def _observe(self, obs: Any) -> Any:
        if self.obs_mode == "dict":
            return {"obs": np.array(obs, copy=True), "task": np.int64(self.task)}
        onehot = np.zeros(self.n_tasks, np.float32)
        onehot[self.task] = 1.0
        return np.concatenate([np.asarray(obs, np.float32), onehot])


def _check_options(contexts: list[dict], ids: list[int], n_tasks: int, task: int | None, schedule: str,
                   obs_mode: str) -> None:
    """One line for each option a suite cannot take."""
    if not contexts:
        raise RLKitError("a multi-task env needs at least one context")
    if len(ids) != len(contexts) or not all(0 <= i < n_tasks for i in ids):
        raise RLKitError(f"task ids {ids} must name one of {n_tasks} tasks per context ({len(contexts)} contexts)")
    if task is not None and (isinstance(task, bool) or not isinstance(task, int) or not 0 <= task < len(contexts)):
        raise RLKitError(f"task={task!r} is no task of this suite; pick 0 to {len(contexts) - 1} (or leave it out "
                         "for a new task each episode)")
    if schedule not in SCHEDULES:
        raise RLKitError(f"unknown schedule {schedule!r}; use one of {', '.join(SCHEDULES)}")
    if obs_mode not in OBS_MODES:
        raise RLKitError(f"unknown obs_mode {obs_mode!r}; use one of {', '.join(OBS_MODES)}")


def make_suite(family: str, heldout: bool = False, task: int | None = None, schedule: str = "round_robin",
               obs_mode: str = "onehot", render_mode: str | None = None) -> MultiTaskEnv:
    """The entry point of ``rlkit/<family>-MT-v0`` and ``rlkit/<family>-MT-heldout-v0`` (``gymnasium.make``
    adds the time limit of the family's ``-v1`` env)."""
    suite = SUITES[family]
    base = suite.make_base(render_mode=render_mode)
    if heldout:
        if task not in (None, 0):
            raise RLKitError(f"{suite_id(family, True)} has one context; drop task={task!r}")
        return MultiTaskEnv(base, [suite.heldout], suite.apply, ids=[suite.nearest(suite.heldout)],
                            n_tasks=suite.n_tasks, schedule=schedule, obs_mode=obs_mode)
    return MultiTaskEnv(base, suite.contexts, suite.apply, task=task, schedule=schedule, obs_mode=obs_mode)


def register_suites() -> None:
    """Register every suite and its held-out context under ``rlkit/`` (idempotent)."""
    for family, suite in SUITES.items():
        for heldout in (False, True):
            env_id = suite_id(family, heldout)
            if env_id not in gym.envs.registry:
                gym.register(env_id, entry_point="rlkit.envs.multitask:make_suite",
                             max_episode_steps=suite.max_episode_steps,
                             kwargs={"family": family, "heldout": heldout})


def task_count(env_id: str) -> int:
    """The number of tasks of a registered suite id (its one-hot width), 0 for any other env id."""
    spec = gym.envs.registry.get(env_id.split(":")[-1])  # (gym.spec would warn about old versions of other ids)
    if spec is None or spec.entry_point != "rlkit.envs.multitask:make_suite":
        return 0
    return SUITES[spec.kwargs["family"]].n_tasks
