"""Hooks into a training run for scripts: ``train(cfg, callbacks=[...])``.

A callback is any callable taking one :class:`Event`. It is called after each log row, after each
evaluation and after each checkpoint, and stops training by returning True (anything else lets it go
on). There is no class hierarchy to learn: SB3's ``EvalCallback``, ``StopTrainingOnRewardThreshold`` and
``StopTrainingOnNoModelImprovement`` are covered by ``eval_every``, the ``checkpoints/best/``
checkpoint, ``target_return`` and :class:`StopOnPlateau` (or a few lines of your own)::

    from rlkit.agents.dqn import DQNConfig, train
    from rlkit.callbacks import StopOnPlateau

    cfg = DQNConfig(env_id="CartPole-v1", eval_every=5_000)
    result = train(cfg, callbacks=[StopOnPlateau(patience=4)])
    result["stopped"]  # {"reason": "callback StopOnPlateau", "env_steps": ..., ...} when it stopped early

A stop takes effect at the end of the current training iteration: the run then writes its final
checkpoint, evaluation and ``final.json`` as at the end of its budget. An exception raised by a callback
propagates out of ``train`` (the run is checkpointed first, as on Ctrl-C, for the agents that checkpoint on
interrupt).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

EventKind = Literal["log", "eval", "checkpoint"]


@dataclass(frozen=True)
class Event:
    """What just happened in the run.

    Attributes:
        kind: ``"log"`` (a metrics row was written), ``"eval"`` (an evaluation finished) or ``"checkpoint"``
            (a periodic checkpoint committed).
        step: the run's global step (env steps; gradient steps for BC).
        metrics: ``log``: the row just written (``global_step``, ``wall_s`` and every recorded value);
            ``eval``: ``mean``, ``std``, ``returns`` and ``best`` (the best mean so far, this one included);
            ``checkpoint``: empty.
        run_dir: the run directory.
        path: the checkpoint directory, for ``checkpoint`` events.
        final: the event comes from the end of the run (its final checkpoint, row and evaluation), when
            stopping is no longer possible.
    """

    kind: EventKind
    step: int
    metrics: dict[str, float | list[float]] = field(default_factory=dict)
    run_dir: Path = Path(".")
    path: Path | None = None
    final: bool = False


Callback = Callable[[Event], bool | None]


# Names that say nothing in a stop reason ("callback callback"): the enclosing function names the callback instead.
_GENERIC_NAMES = ("callback", "<lambda>", "__call__")


def callback_name(callback: Callback) -> str:
    """The name a user knows a callback by: its function's or class's, or for a closure with a generic name
    (``def stop_on_plateau(...)`` returning its inner ``callback``), the function that made it."""
    qualname = getattr(callback, "__qualname__", None)
    if not isinstance(qualname, str):  # an instance of a callable class
        return type(callback).__name__
    parts = [part for part in qualname.split(".") if part != "<locals>"]
    named = [part for part in parts if part not in _GENERIC_NAMES]
    return named[-1] if parts[-1] in _GENERIC_NAMES and named else parts[-1]


def dispatch(callbacks: Sequence[Callback], event: Event) -> str | None:
    """Call every callback with ``event``; the name of the first one that asked to stop, else None.

    Every callback sees the event, even after one asked to stop, so that observers miss nothing."""
    stopper = None
    for callback in callbacks:
        if callback(event) is True and stopper is None:
            stopper = callback_name(callback)
    return stopper


class StopOnPlateau:
    """Stop when ``patience`` evaluations in a row did not improve the best mean return by more than
    ``min_delta`` (SB3's ``StopTrainingOnNoModelImprovement``). ``min_evals`` evaluations always run first."""

    def __init__(self, patience: int = 3, min_delta: float = 0.0, min_evals: int = 0) -> None:
        if patience < 1:
            raise ValueError(f"patience must be at least 1, got {patience}")
        self.patience, self.min_delta, self.min_evals = patience, min_delta, min_evals
        self.best = -math.inf
        self.evals = 0
        self.without_improvement = 0

    def __call__(self, event: Event) -> bool:
        if event.kind != "eval":
            return False
        self.evals += 1
        mean = float(event.metrics["mean"])  # type: ignore[arg-type]
        if mean > self.best + self.min_delta:
            self.best, self.without_improvement = mean, 0
        else:
            self.without_improvement += 1
        return self.evals > self.min_evals and self.without_improvement >= self.patience
