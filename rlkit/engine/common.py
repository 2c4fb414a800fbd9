"""What every training loop shares: the learner protocol and base class, opening a run, resuming it, the state a
checkpoint holds, recording finished episodes and schedule progress."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import gymnasium as gym
import numpy as np

from rlkit.callbacks import Callback
from rlkit.config import BaseConfig, validate_config
from rlkit.envs import VecEnv, make_vec_env
from rlkit.logger import Logger
from rlkit.policy import Policy
from rlkit.run import Run


class Learner(Protocol):
    """What a loop needs of every learner: the policy it evaluates, and what it checkpoints and restores.

    ``state_dict()`` holds everything a resumed run needs (networks, optimizers, counters, spaces), under
    the keys the agent's ``load_policy`` reads back; the engine adds the run's own (step, RNG, config).
    """

    policy: Policy

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class EnvLearner:
    """Base of the learners an env-stepping loop builds, as ``Learner(cfg, observation_space, action_space, rng)``
    once the run has seeded every RNG; subclasses say what their loop calls (see the loop's module)."""

    policy: Policy

    @staticmethod
    def check_spaces(observation_space: gym.Space, action_space: gym.Space, env_id: str, agent: str) -> None:
        """Refuse spaces the agent cannot handle, in one line naming the env and what to use instead, before a
        run directory is written."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint holds (the loop adds the spaces, and the run its step, RNG and config)."""
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError


L = TypeVar("L", bound=EnvLearner)


def open_run(agent: str, cfg: BaseConfig, learner_class: type[L], resume: bool,
             callbacks: Sequence[Callback] | None) -> tuple[VecEnv, Run, L]:
    """The opening of every env-stepping loop: check the config (ranges, device, its ``validate()``), make the
    seeded vector env, refuse spaces the learner cannot handle, open the run (it seeds the global RNGs and
    sets thread counts), then build the learner."""
    validate_config(cfg)
    envs = make_vec_env(cfg.env_id, cfg.num_envs, seed=cfg.seed, env_kwargs=cfg.env_kwargs)
    obs_space, act_space = envs.single_observation_space, envs.single_action_space
    learner_class.check_spaces(obs_space, act_space, cfg.env_id, agent)
    run = Run(agent, cfg, resume=resume, callbacks=callbacks)
    return envs, run, learner_class(cfg, obs_space, act_space, run.rng)


def checkpoint_state(learner: Learner, observation_space: gym.Space, action_space: gym.Space
                     ) -> Callable[[], dict[str, Any]]:
    """``state()``: the learner's state plus the spaces, what every checkpoint of a loop holds (``rlkit eval``
    rebuilds the policy from them)."""
    return lambda: {**learner.state_dict(), "observation_space": observation_space, "action_space": action_space}


def resume(run: Run, learner: Learner) -> int:
    """Restore ``learner`` from the checkpoint being resumed (if any), then the RNG streams; returns the step
    to continue from (0 for a new run). Call it after everything random has been built."""
    if run.resume_state is not None:
        learner.load_state_dict(run.resume_state)
    run.restore_rng()
    return run.global_step if run.resume_state is not None else 0


def record_episodes(logger: Logger, episode_returns: np.ndarray, episode_lengths: np.ndarray) -> np.ndarray:
    """Log each episode that ended in this vector step; returns the indices of the envs where one ended."""
    ended = np.flatnonzero(episode_lengths)
    for i in ended:
        logger.record_episode(episode_returns[i], int(episode_lengths[i]))
    return ended


def progress(global_step: int, total_steps: int) -> float:
    """The share of the budget done, in [0, 1]: what learning-rate and clip-range schedules anneal on."""
    return min(max(global_step / total_steps, 0.0), 1.0) if total_steps > 0 else 1.0
