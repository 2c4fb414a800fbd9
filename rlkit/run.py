"""The run directory: config, seeding, logger, checkpoints, resume and final.json in one place.

Each agent keeps its own training loop and uses a :class:`Run` for the bookkeeping around it::

    run = Run("dqn", cfg, resume=resume)          # sets thread counts, seeds the global RNGs, writes config.json
    state = run.resume_state                      # the latest checkpoint when resuming, else None
    ...
    with run.checkpoint_on_interrupt(lambda: (global_step, state_dict())):
        while global_step < cfg.total_steps:
            ...                                   # act, store, learn
            run.step_done(global_step, num_envs, policy, make_eval_env, state_dict, scalars)  # eval, log, ckpt
    return run.finish(policy, make_eval_env, global_step, {...})   # final eval + final.json

Off-policy agents pass their replay buffer explicitly (``replay_buffer=`` of :meth:`Run.checkpoint`,
``step_done`` and ``finish``; a 3-tuple from the ``checkpoint_on_interrupt`` callable): it is written into
the same checkpoint directory as the state, so the two commit together (see :mod:`rlkit.checkpoint`).

What a run directory promises after a crash (kill -9, power loss), SIGTERM or Ctrl-C:

* The latest ``checkpoints/step_*/`` is whole and verified on load; ``--resume`` continues from it.
* ``metrics.csv`` is rewritten (atomically) on resume to the rows up to the checkpoint's step: rows logged
  after it are dropped (they are logged again), a row cut mid-line is dropped, each step has one row, and
  ``wall_s`` continues from the checkpoint's.
* Temporary files of a killed writer (``.*.tmp``) are removed when the run starts or resumes.
* A run that died before its first checkpoint committed nothing: running the same command again starts it
  afresh in the same directory (its ``metrics.csv``, ``final.json`` and TensorBoard events are replaced).
* ``--resume`` of a finished run (``final.json`` written, no steps left) evaluates and writes nothing: it
  raises :class:`rlkit.errors.AlreadyFinished` and the CLI prints "already finished" and exits 0. Pass a
  larger ``--steps`` to train further.
* SIGTERM is handled like Ctrl-C inside :meth:`Run.checkpoint_on_interrupt`: a checkpoint, then the CLI
  exits with status 143 (130 for Ctrl-C).

Evaluation, the best checkpoint and early stops (the same for every agent):

* An evaluation runs at the first training iteration that reaches each multiple of ``eval_every`` (exactly
  at the multiple when an iteration is one env step) and writes its own ``metrics.csv`` row at that step,
  whatever the log cadence; a log row due at the same step is the same row.
* Each evaluation better than every earlier one (the final evaluation included) commits the agent's state
  as ``checkpoints/best/`` (SB3's ``best_model``): ``rlkit eval RUN --checkpoint best``. It is a checkpoint
  directory like the step ones (``state.pt`` + ``checksums.json``, one rename), without the replay buffer.
* ``target_return``: the run stops at the first evaluation whose mean reaches it. Callbacks
  (:mod:`rlkit.callbacks`) see each log row, evaluation and checkpoint and may stop the run too. A stopped
  run finishes as usual (final checkpoint, evaluation, ``final.json``), and ``final.json`` says why under
  ``stopped``. Agents check :attr:`Run.stopped` once per training iteration.
"""

from __future__ import annotations

import csv
import io
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import rlkit
from rlkit.callbacks import Callback, Event, dispatch
from rlkit.checkpoint import (
    atomic_write_text,
    best_return_of,
    checkpoint_agent,
    clean_leftovers,
    list_checkpoints,
    load_buffer,
    load_checkpoint,
    save_best_checkpoint,
    save_checkpoint,
)
from rlkit.config import BaseConfig, validate_config
from rlkit.errors import AlreadyFinished, RLKitError
from rlkit.evaluation import evaluate
from rlkit.logger import EVAL_KEY, Logger, read_metric_curve
from rlkit.policy import Policy
from rlkit.safe_files import check_dir_inside, check_inside
from rlkit.seeding import get_rng_state, seed_everything, set_rng_state
from rlkit.signals import signals_deferred, sigterm_as_interrupt


def default_run_dir(agent: str, env_id: str, seed: int) -> Path:
    env_name = env_id.replace("/", "_").replace(":", "_")
    return Path("runs") / f"{agent}-{env_name}-seed{seed}-{datetime.now():%Y%m%d-%H%M%S}"


def _regular_or_absent(path: Path) -> bool:
    """True when ``path`` is a regular file, False when absent; a symlink (even to a regular file elsewhere),
    a directory or a FIFO is a one-line error: the run writes, trims and replaces these files in place."""
    check_inside(path, path.parent)
    return path.exists()


def clean_metrics(path: Path, up_to_step: int) -> float | None:
    """Rewrite ``metrics.csv`` atomically with its rows up to ``up_to_step``, one per step (the last one wins);
    a row cut mid-line by a crash is dropped. A file that is not such a CSV is a one-line error naming it.

    Returns the ``wall_s`` of the last row kept (None when there is none), so that a resumed run's clock
    continues after it: the final row of a finished run is written after the final evaluation, which is
    after the final checkpoint's clock reading."""
    if not _regular_or_absent(path):
        return None
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise RLKitError(f"{path} is damaged (not UTF-8 text); move it away to resume without it") from None
    lines = text.split("\n")
    lines = lines[:-1]  # after the last newline: "" for a whole file, else a row cut mid-line
    if not lines:
        path.unlink()
        return None
    rows = list(csv.reader(lines))
    header = rows[0]
    if not header or header[0] != "global_step":
        raise RLKitError(f"{path} is damaged (its header does not start with global_step); move it away "
                         "to resume without it")
    kept: dict[int, list[str]] = {}
    for number, row in enumerate(rows[1:], start=2):
        try:
            if len(row) != len(header):
                raise ValueError
            step = int(row[0])
        except ValueError:
            raise RLKitError(f"{path} line {number} is damaged; move the file away to resume without it") from None
        if step <= up_to_step:
            kept[step] = row
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(row for _, row in sorted(kept.items()))
    atomic_write_text(path, out.getvalue(), home=path.parent)
    if not kept or "wall_s" not in header:
        return None
    try:
        return float(kept[max(kept)][header.index("wall_s")])
    except ValueError:
        return None


def _limit_blas_threads(n: int) -> None:
    """numpy's BLAS threads spin on tiny matmuls (the numpy acting path): cap them like torch's."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(n, user_api="blas")


def versions() -> dict[str, str]:
    return {"rlkit": rlkit.__version__, "torch": torch.__version__, "gymnasium": gym.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


_START_NOTES: list[str] = []


def note_at_start(message: str) -> None:
    """Print ``message`` to stderr when the next :class:`Run` starts writing, after every setup check (the CLI's
    "using preset" notice), so that a bad value or run directory is still answered in one line. A notice
    left over from a command that failed before that is replaced."""
    _START_NOTES[:] = [message]


class Run:
    """Bookkeeping for one training run (see module docstring).

    Creating a Run changes process-wide state, on purpose and before anything random happens: it
    sets torch's intra-op threads and numpy's BLAS threads to ``cfg.torch_threads``, this thread's
    flush-to-zero mode to ``cfg.flush_denormal`` (:func:`torch.set_flush_denormal`) and seeds python's,
    numpy's and torch's global RNGs with ``cfg.seed`` (:func:`rlkit.seeding.seed_everything`), so a
    script that builds a Run gets those settings too. It also fills in ``cfg.run_dir`` when it was None
    and writes ``config.json``. ``self.rng`` is the run's own numpy Generator (buffers, exploration).

    Args:
        agent: registered agent name, stored in checkpoints so ``rlkit eval`` can rebuild the policy.
        cfg: the resolved config; ``cfg.run_dir`` is filled in when it was None.
        resume: continue from the latest checkpoint in ``cfg.run_dir``.
        callbacks: called after each log row, evaluation and checkpoint (:mod:`rlkit.callbacks`).
    """

    def __init__(self, agent: str, cfg: BaseConfig, resume: bool = False,
                 callbacks: Sequence[Callback] | None = None) -> None:
        validate_config(cfg)  # before anything is written
        self.agent = agent
        self.cfg = cfg
        self.dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(agent, cfg.env_id, cfg.seed)
        cfg.run_dir = str(self.dir)
        if self.dir.exists() and not self.dir.is_dir():
            raise RLKitError(f"run directory {self.dir} is a file; choose another --run-dir")
        check_dir_inside(self.dir / "checkpoints", self.dir)  # before resume reads or a checkpoint writes there
        if resume and not list_checkpoints(self.dir):
            raise RLKitError(f"cannot resume: no checkpoints in {self.dir}/checkpoints")
        if not resume and list_checkpoints(self.dir):
            raise RLKitError(f"{self.dir} already holds a run; pass --resume {self.dir} to continue it "
                             "or choose another --run-dir")
        if resume and (other := checkpoint_agent(self.dir)) not in (None, agent):
            raise RLKitError(f"{self.dir} is a {other} run, not {agent}; resume it with `rlkit train {other} "
                             f"--resume {self.dir}`")
        for name in ("config.json", "metrics.csv", "final.json"):
            _regular_or_absent(self.dir / name)
        torch.set_num_threads(max(cfg.torch_threads, 1))
        _limit_blas_threads(max(cfg.torch_threads, 1))
        torch.set_flush_denormal(cfg.flush_denormal)  # per thread: the loop's thread, where one-thread runs compute
        self.rng = seed_everything(cfg.seed)
        self.resume_state: dict[str, Any] | None = None
        self.global_step = 0
        self._wall_before = 0.0
        self.callbacks = list(callbacks or [])
        self.stopped: dict[str, Any] | None = None  # why and where the run stopped before its budget
        self.best_return = -math.inf  # the best evaluation so far (checkpoints/best/)
        self._finishing = False
        if resume:
            self.resume_state = load_checkpoint(self.dir)
            if self.resume_state["agent"] != agent:
                raise RLKitError(f"{self.dir} is a {self.resume_state['agent']} run, not {agent}")
            self.global_step = int(self.resume_state["global_step"])
            self._wall_before = float(self.resume_state.get("wall_s", 0.0))
            # the best may be newer than the checkpoint resumed (the final evaluation comes after it)
            saved_best = best_return_of(self.dir)
            self.best_return = max(float(self.resume_state.get("best_return", -math.inf)),
                                   -math.inf if saved_best is None else saved_best)
            self._check_finished()
        self._resume = resume
        self._logger: Logger | None = None
        self._t0 = time.perf_counter()

    def _check_finished(self) -> None:
        """Raise AlreadyFinished when final.json is there for this checkpoint and the config asks for nothing new
        (``--steps`` or another training field changed: the run continues)."""
        final_path = self.dir / "final.json"
        if not final_path.exists():
            return
        try:
            final = json.loads(final_path.read_bytes())
        except (ValueError, UnicodeDecodeError):
            return  # damaged: the run is finished again and final.json rewritten
        saved = self.resume_state["config"] if self.resume_state else {}
        # Fields that change how a run is shown or where, not what it trains: resuming with them is no new work.
        cosmetic = {"run_dir", "progress", "tensorboard", "torch_threads"}
        changed = [k for k, v in self.cfg.to_dict().items() if k not in cosmetic and saved.get(k, v) != v]
        if isinstance(final, dict) and final.get("env_steps") == self.global_step and not changed:
            raise AlreadyFinished(f"{self.dir} already finished ({self.global_step} steps, see final.json); "
                                  "pass a larger --steps to train further", final)

    def _open(self) -> Logger:
        """Write the run's files on first use, so a run refused during setup leaves nothing behind."""
        if self._logger is not None:
            return self._logger
        cfg = self.cfg
        while _START_NOTES:  # the caller's notices, now that setup passed and the run starts writing
            print(_START_NOTES.pop(0), file=sys.stderr, flush=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        clean_leftovers(self.dir)
        if self._resume:
            last_row_wall = clean_metrics(self.dir / "metrics.csv", self.global_step)
            if last_row_wall is not None and last_row_wall > self.wall_s:
                self._wall_before += last_row_wall - self.wall_s
        elif (self.dir / "config.json").exists():
            # A run that died before its first checkpoint committed nothing: start it afresh.
            for stale in [self.dir / "metrics.csv", self.dir / "final.json", *self.dir.glob("events.out.tfevents.*")]:
                stale.unlink(missing_ok=True)
        cfg.save(self.dir / "config.json", home=self.dir)
        self._logger = Logger(self.dir, total_steps=cfg.total_steps, initial_step=self.global_step,
                              progress=cfg.progress, tensorboard=cfg.tensorboard, clock=lambda: self.wall_s,
                              on_row=self._row_written)
        if not self._resume:
            table = "\n".join(f"|{k}|{v}|" for k, v in cfg.to_dict().items())
            self._logger.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
        return self._logger

    @property
    def logger(self) -> Logger:
        """The run's logger; the first access writes config.json and opens metrics.csv and TensorBoard."""
        return self._open()

    def restore_rng(self) -> None:
        """Put the RNG streams back where the checkpoint left them (call after building everything)."""
        if self.resume_state is not None:
            set_rng_state(self.resume_state["rng"], self.rng)

    @property
    def wall_s(self) -> float:
        return self._wall_before + time.perf_counter() - self._t0

    @staticmethod
    def due(global_step: int, every: int, stride: int = 1) -> bool:
        """True when ``global_step`` (advancing by ``stride``) just crossed a multiple of ``every``."""
        return every > 0 and global_step // every != (global_step - stride) // every

    def checkpoint(self, global_step: int, state: dict[str, Any], replay_buffer: Any = None) -> Path:
        """Atomically save ``state`` plus config, counters, RNG states and versions, and ``replay_buffer``'s
        state (if given) in the same checkpoint directory, so the two commit as one unit."""
        self._open()
        full = {
            "agent": self.agent,
            "config": self.cfg.to_dict(),
            "global_step": global_step,
            "wall_s": self.wall_s,
            "best_return": self.best_return,
            "rng": get_rng_state(self.rng),
            "versions": versions(),
            **state,
        }
        buffer_state = replay_buffer.state_dict() if replay_buffer is not None else None
        path = save_checkpoint(self.dir, full, global_step, keep=self.cfg.keep_checkpoints, buffer=buffer_state)
        self._notify(Event("checkpoint", global_step, run_dir=self.dir, path=path.parent, final=self._finishing))
        return path

    # ------------------------------------------------------------------ callbacks, early stops, best checkpoint
    def stop(self, reason: str, global_step: int, **details: Any) -> None:
        """Ask the training loop to stop after this iteration (the first reason given is kept)."""
        if self.stopped is None and not self._finishing:
            self.stopped = {"reason": reason, "global_step": global_step, "wall_s": round(self.wall_s, 3), **details}

    def _notify(self, event: Event) -> None:
        if not self.callbacks:
            return
        try:
            stopper = dispatch(self.callbacks, event)
        except BaseException:
            self.close()  # a callback's exception ends the run (e.g. tune's pruning): release the logger
            raise
        if stopper is not None:
            self.stop(f"callback {stopper}", event.step)

    def _row_written(self, step: int, row: dict[str, Any]) -> None:
        self._notify(Event("log", step, metrics=dict(row), run_dir=self.dir, final=self._finishing))

    def _after_evaluation(self, global_step: int, result: dict[str, Any],
                          state: Callable[[], dict[str, Any]] | None) -> None:
        """Best checkpoint, target return and callbacks, after an evaluation (periodic or final)."""
        mean = float(result["mean"])
        if mean > self.best_return:
            self.best_return = mean
            if state is not None:
                self._save_best(global_step, state(), result)
        if (target := getattr(self.cfg, "target_return", None)) is not None and mean >= target:
            self.stop("target_return", global_step, eval_mean=mean)
        self._notify(Event("eval", global_step, metrics={**result, "best": self.best_return}, run_dir=self.dir,
                           final=self._finishing))

    def _save_best(self, global_step: int, state: dict[str, Any], result: dict[str, Any]) -> None:
        full = {"agent": self.agent, "config": self.cfg.to_dict(), "global_step": global_step,
                "wall_s": self.wall_s, "best_return": self.best_return,
                "eval": {"mean": float(result["mean"]), "std": float(result["std"])},
                "versions": versions(), **state}
        save_best_checkpoint(self.dir, full, global_step)

    def step_done(self, global_step: int, stride: int, policy: Policy, make_eval_env: Callable[..., gym.Env],
                  state: Callable[[], dict[str, Any]], scalars: Callable[[], dict[str, float]] | None = None,
                  replay_buffer: Any = None) -> dict[str, Any] | None:
        """The bookkeeping after each training iteration, in this order: progress bar, evaluation (before
        the log row, so the row carries it), log row with ``scalars()``, periodic checkpoint of ``state()``.

        Returns the evaluation's result when one ran this iteration, else None. Check :attr:`stopped` after it.
        """
        cfg = self.cfg
        self.logger.progress(global_step)
        result = None
        log_due = Run.due(global_step, cfg.log_every, stride)
        if Run.due(global_step, cfg.eval_every, stride):
            result = self.evaluate(policy, make_eval_env, global_step, state=state, write_row=not log_due)
        if log_due:
            for key, value in (scalars() if scalars is not None else {}).items():
                self.logger.record(key, value)
            self.logger.dump(global_step)
        if Run.due(global_step, cfg.checkpoint_every, stride) and global_step < cfg.total_steps \
                and self.stopped is None:  # a stopped run's final checkpoint comes next
            self.checkpoint(global_step, state(), replay_buffer)
        return result

    @contextmanager
    def checkpoint_on_interrupt(self, current: Callable[[], tuple[Any, ...]]) -> Iterator[None]:
        """On Ctrl-C or SIGTERM inside the block, checkpoint ``current()`` (global step, state[, replay buffer])
        and close, then re-raise (SIGTERM as :class:`rlkit.errors.Terminated`): what was learned is kept, and
        ``rlkit train AGENT --resume RUN_DIR`` continues from there. A second signal during that checkpoint
        is ignored, so it is not cut short."""
        try:
            with sigterm_as_interrupt():
                yield
        except KeyboardInterrupt:
            with signals_deferred():
                self.checkpoint(*current())
                self.close()
            raise

    def restore_replay_buffer(self, buffer: Any) -> None:
        """Load the buffer saved with the checkpoint being resumed, if any; it samples from the run's RNG again."""
        if self.resume_state is None:
            return
        step_dir = Path(self.resume_state["checkpoint_dir"])
        state = load_buffer(step_dir)
        if state is None:
            return
        try:
            buffer.load_state_dict(state)
        except RLKitError as e:
            raise RLKitError(f"{step_dir / 'buffer.pt'}: {e}") from None
        buffer.rng = self.rng

    def evaluate(self, policy: Policy, make_eval_env: Callable[..., gym.Env], global_step: int,
                 state: Callable[[], dict[str, Any]] | None = None, write_row: bool = True) -> dict[str, Any]:
        """Evaluate ``cfg.eval_episodes`` episodes during training and log ``eval/mean_return`` in a row at
        ``global_step`` (``write_row=False``: the caller writes the row of this step). A new best commits
        ``state()`` as ``checkpoints/best/``; ``target_return`` and callbacks may stop the run."""
        result = self._score(policy, make_eval_env)
        if write_row:
            self.logger.dump(global_step)
        self._after_evaluation(global_step, result, state)
        return result

    def _score(self, policy: Policy, make_eval_env: Callable[..., gym.Env]) -> dict[str, Any]:
        """``cfg.eval_episodes`` evaluation episodes, recorded as ``eval/mean_return`` and ``eval/std_return``, and
        on a multi-task suite each task's as ``eval/task_K/mean_return`` (final.json's ``eval.per_task``)."""
        result = evaluate(policy, make_eval_env, self.cfg.eval_episodes, seed=self.cfg.eval_seed)
        self.logger.record(EVAL_KEY, result["mean"])
        self.logger.record("eval/std_return", result["std"])
        for task, mean in result.get("per_task", {}).items():
            self.logger.record(f"eval/task_{task}/mean_return", mean)
        return result

    def finish(self, policy: Policy, make_eval_env: Callable[..., gym.Env], global_step: int,
               state: dict[str, Any], extra: dict[str, Any] | None = None, replay_buffer: Any = None
               ) -> dict[str, Any]:
        """Save the final checkpoint, evaluate, write ``final.json`` and close the logger. Callbacks see the
        final checkpoint, row and evaluation, but can no longer stop anything."""
        self._finishing = True
        wall_s = self.wall_s
        ckpt = self.checkpoint(global_step, state, replay_buffer)
        result_eval = self._score(policy, make_eval_env)
        self.logger.dump(global_step)
        self._after_evaluation(global_step, result_eval, lambda: state)
        self.logger.close()
        result = {
            "agent": self.agent,
            "env_id": self.cfg.env_id,
            "seed": self.cfg.seed,
            "env_steps": global_step,
            "wall_s": round(wall_s, 3),
            "eval": result_eval,
            "run_dir": str(self.dir),
            "checkpoint": str(ckpt),
            "best_eval_mean": self.best_return,
            "eval_curve": read_metric_curve(self.dir / "metrics.csv"),
            "versions": versions(),
            **(extra or {}),
        }
        if self.stopped is not None:
            result["stopped"] = self.stopped
        atomic_write_text(self.dir / "final.json", json.dumps(result, indent=2), home=self.dir)
        return result

    def close(self) -> None:
        if self._logger is not None:
            self._logger.close()
