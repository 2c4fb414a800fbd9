"""What every training loop shares: the learner protocol, resuming it, and recording finished episodes."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

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
