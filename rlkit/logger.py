"""Metrics to CSV and TensorBoard, and a progress bar with steps/s and the latest return.

Keys follow CleanRL's layout: ``charts/`` (returns, steps/s, epsilon), ``losses/`` and ``eval/``.
"""

from __future__ import annotations

import csv
import io
import math
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from rlkit.errors import RLKitError
from rlkit.safe_files import check_inside, disk_full_error, is_disk_full, open_in_home

EVAL_KEY = "eval/mean_return"  # the evaluation's mean return: the learning curve of reports and final.json


class Logger:
    """``record(key, value)`` then ``dump(step)``; episodes go through :meth:`record_episode`.

    Args:
        run_dir: the run directory; writes ``metrics.csv`` and TensorBoard events into it.
        total_steps: the step budget, for the progress bar.
        initial_step: where a resumed run starts.
        progress: show the progress bar (stderr).
        tensorboard: write TensorBoard event files.
        clock: seconds trained so far, for ``wall_s`` (default: seconds since this logger was made);
            :class:`rlkit.run.Run` passes its own, which continues across resumes, so that metrics and
            checkpoints read one clock.
        on_row: called with ``(step, row)`` after each row is written (the run's callbacks).

    One row per step: a second :meth:`dump` at the step of the last row (the final evaluation after the
    last periodic row) merges into that row instead of adding one.
    """

    def __init__(self, run_dir: str | Path, total_steps: int, initial_step: int = 0,
                 progress: bool = True, tensorboard: bool = True,
                 clock: Callable[[], float] | None = None,
                 on_row: Callable[[int, dict[str, Any]], None] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.csv_path = self.run_dir / "metrics.csv"
        self._values: dict[str, float] = {}
        self._fieldnames: list[str] = []
        self._clock = clock
        self._on_row = on_row
        self._last_row: dict[str, Any] | None = None
        check_inside(self.csv_path, self.run_dir)  # a symlink must not point the appends at another file
        if self.csv_path.exists():  # resume: keep the old rows and their columns (Run cleaned the file)
            with open(self.csv_path, newline="") as f:
                rows = list(csv.reader(f))
            self._fieldnames = rows[0] if rows else []
            if len(rows) > 1:
                self._last_row = dict(zip(self._fieldnames, rows[-1]))
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.run_dir))
        self.recent_returns: deque[float] = deque(maxlen=20)
        self.last_return: float | None = None
        self.episodes = 0
        self._last_eval: float | None = None
        self._t0 = time.perf_counter()
        self._step0 = initial_step
        self._last_step = initial_step
        self._bar = progress_display(total_steps, initial_step, progress)

    def record(self, key: str, value: float) -> None:
        self._values[key] = float(value)

    def record_episode(self, episode_return: float, length: int) -> None:
        self.episodes += 1
        self.last_return = float(episode_return)
        self.recent_returns.append(float(episode_return))
        self._values["charts/episode_return"] = float(episode_return)
        self._values["charts/episode_length"] = float(length)

    def steps_per_second(self, step: int) -> float:
        return (step - self._step0) / max(time.perf_counter() - self._t0, 1e-9)

    def progress(self, step: int) -> None:
        """Advance the progress bar to ``step`` (cheap: call it every env step if you like)."""
        if step > self._last_step:
            self._bar.update(step - self._last_step)
            self._last_step = step

    def dump(self, step: int) -> None:
        """Write the recorded values at ``step`` to CSV and TensorBoard and refresh the bar."""
        self.progress(step)
        sps = self.steps_per_second(step)
        self._values["charts/steps_per_second"] = sps
        if self.recent_returns:
            self._values["charts/mean_return_20"] = sum(self.recent_returns) / len(self.recent_returns)
        wall_s = self._clock() if self._clock is not None else time.perf_counter() - self._t0
        row = {"global_step": step, "wall_s": round(wall_s, 3),
               **self._values}
        self._write_csv(row)
        if self._writer is not None:
            for key, value in self._values.items():
                if math.isfinite(value):
                    self._writer.add_scalar(key, value, step)
        postfix = {"sps": f"{sps:,.0f}"}
        if self.last_return is not None:
            postfix["return"] = f"{self.last_return:.1f}"
        if EVAL_KEY in self._values:
            self._last_eval = self._values[EVAL_KEY]
        if self._last_eval is not None:
            postfix["eval"] = f"{self._last_eval:.1f}"
        self._bar.set_postfix(postfix, refresh=False)
        self._values = {}
        if self._on_row is not None:
            self._on_row(step, row)

    def _write_csv(self, row: dict[str, Any]) -> None:
        from rlkit.checkpoint import atomic_write_text

        same_step = self._last_row is not None and str(self._last_row.get("global_step")) == str(row["global_step"])
        if same_step:  # merge, e.g. the final evaluation into the last periodic row of the same step
            row = {**{k: v for k, v in self._last_row.items() if v != ""}, **row}
        new_keys = [k for k in row if k not in self._fieldnames]
        if new_keys or same_step:
            # A new column appeared, or the last row is replaced: rewrite the file atomically (a crash keeps
            # the old file whole), with the wider header (as SB3's CSV writer does).
            old_rows: list[dict[str, str]] = []
            if self.csv_path.exists():
                with open(self.csv_path, newline="") as f:
                    old_rows = list(csv.DictReader(f))
            if same_step:
                old_rows = old_rows[:-1]
            self._fieldnames = self._fieldnames + new_keys
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=self._fieldnames)
            writer.writeheader()
            writer.writerows(old_rows)
            writer.writerow(row)
            atomic_write_text(self.csv_path, buffer.getvalue(), fsync=False, home=self.run_dir)
        else:
            self._append_row(row)
        self._last_row = {k: str(v) for k, v in row.items()}

    def _append_row(self, row: dict[str, Any]) -> None:
        """Append one row through an fd that refuses a symlink; a full disk is one line (a row cut mid-line by
        it is dropped when the run resumes)."""
        fd = open_in_home(self.csv_path, self.run_dir, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            with os.fdopen(fd, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self._fieldnames).writerow(row)
        except OSError as e:
            if is_disk_full(e):
                raise disk_full_error(self.csv_path) from None
            raise

    def add_text(self, tag: str, text: str) -> None:
        if self._writer is not None:
            self._writer.add_text(tag, text)

    def close(self) -> None:
        self._bar.close()
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()


def read_metric_curve(csv_path: str | Path, key: str = EVAL_KEY, *, skip_damaged: bool = True) -> list[list[float]]:
    """One column of a ``metrics.csv`` as a curve, ``[[env step, value], ...]``; [] when the file or the column
    has no value. final.json keeps the evaluation curve this way (``eval_curve``), so it outlives metrics.csv.

    Args:
        csv_path: the run's metrics.csv.
        key: the column (default ``eval/mean_return``).
        skip_damaged: skip a row whose step or value does not parse (the end of a long run must not fail on
            one); False makes it a one-line error naming the file and line (``rlkit plot`` on a stranger's file).
    """
    path = Path(csv_path)
    if not path.is_file():
        return []
    curve = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            for row in reader:
                value = row.get(key)
                if value in (None, ""):  # no evaluation in this row: not a point
                    continue
                try:
                    point = [int(float(row["global_step"])), float(value)]
                except (KeyError, TypeError, ValueError, OverflowError):  # OverflowError: a step of inf
                    if skip_damaged:
                        continue
                    raise RLKitError(f"{path} is damaged: line {reader.line_num} has no number for global_step "
                                     f"or {key}; delete that line or re-run") from None
                curve.append(point)
    except (csv.Error, UnicodeDecodeError) as e:
        if skip_damaged:
            return curve
        raise RLKitError(f"{path} is damaged ({type(e).__name__}: {str(e)[:80]}); it is not an rlkit "
                         "metrics.csv") from None
    return curve


def progress_display(total_steps: int, initial_step: int, enabled: bool) -> Any:
    """A tqdm bar on a terminal (or a notebook); elsewhere (a log file, CI) :class:`LineProgress`, because a bar
    redrawn with carriage returns fills a log with thousands of partial lines."""
    from tqdm import autonotebook, std

    in_notebook = autonotebook.tqdm is not std.tqdm  # tqdm.auto draws a widget there, not carriage returns
    if enabled and not in_notebook and not sys.stderr.isatty():
        return LineProgress(total_steps, initial_step)
    return tqdm(total=total_steps, initial=initial_step, disable=not enabled, unit="step",
                dynamic_ncols=True, mininterval=0.5, leave=False)


class LineProgress:
    """Progress as whole lines on stderr: one at each tenth of the budget, and one a minute in between.

    It takes the calls :class:`Logger` makes on a tqdm bar (``update``, ``set_postfix``, ``close``).
    """

    EVERY_S = 60.0

    def __init__(self, total_steps: int, initial_step: int = 0) -> None:
        self.total, self.n = max(int(total_steps), 1), int(initial_step)
        self.postfix: dict[str, str] = {}
        self._t0 = self._last_line_t = time.perf_counter()
        self._step0 = self.n
        self._tenth = self._tenths(self.n)

    def _tenths(self, step: int) -> int:
        return min(10, step * 10 // self.total)

    def update(self, n: int) -> None:
        self.n += n
        now = time.perf_counter()
        tenth = self._tenths(self.n)
        if tenth > self._tenth or now - self._last_line_t >= self.EVERY_S:
            self._tenth, self._last_line_t = tenth, now
            self._print(now)

    def set_postfix(self, postfix: dict[str, str], refresh: bool = False) -> None:
        self.postfix = {key: value for key, value in postfix.items() if key != "sps"}  # the line computes its own

    def _print(self, now: float) -> None:
        sps = (self.n - self._step0) / max(now - self._t0, 1e-9)
        extra = "".join(f", {key} {value}" for key, value in self.postfix.items())
        print(f"rlkit: step {self.n:,}/{self.total:,} ({100 * self.n // self.total}%), {sps:,.0f} steps/s{extra}",
              file=sys.stderr, flush=True)

    def close(self) -> None:
        pass
