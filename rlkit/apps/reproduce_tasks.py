"""Single-task baselines of a multi-task suite as one reproduction (preset key ``split_tasks: true``).

Each seed ``S`` trains one run per task ``k`` of the suite into ``DIR/seed_S/task_k``, on the suite with
``env_kwargs: {task: k}`` and ``budget / n_tasks`` env steps (the multi-task learners' total, split evenly), and the
same number of evaluations as the others. Once a seed's tasks have all finished, :func:`combine_seed` writes what the
rest of ``rlkit reproduce`` reads of a seed, so reports, plots and ``rlkit plot`` treat the split seed as one run:

* ``DIR/seed_S/final.json``: the tasks' summed env steps, their wall time (summed, or the longest of them where one
  process trained them side by side: then every run's wall time is that process's), and ``eval`` with ``per_task``
  (each task's own final evaluation) and ``mean``, the mean over tasks (the multi-task runs' mean over their round-robin
  episodes, which play each task equally often);
* ``DIR/seed_S/metrics.csv``: the evaluation curve against the tasks' summed env steps: at each evaluation point the
  mean over tasks of each one's latest evaluation (a task that stopped early keeps its last), so after ``x`` summed
  steps every task has had ``x / n_tasks``, as a multi-task run's tasks have.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rlkit.apps import reports
from rlkit.apps.backends import Job
from rlkit.config import BaseConfig, apply_overrides
from rlkit.errors import RLKitError


def suite_tasks(env_id: str, preset_name: str) -> int:
    """The suite's task count; a one-line refusal for an env that is no suite."""
    from rlkit.envs.multitask import task_count

    n = task_count(env_id)
    if not n:
        raise RLKitError(f"reproduce preset {preset_name!r} splits its budget over tasks (split_tasks), but {env_id} "
                         "is no multi-task suite; train on one (rlkit/CartPole-MT-v0) or drop split_tasks")
    return n


def task_config(base: BaseConfig, seed: int, task: int, n_tasks: int, run_dir: Path) -> BaseConfig:
    """Seed ``seed``'s run on task ``task`` alone: a budget share and evaluations as often, relative to it."""
    steps = max(base.total_steps // n_tasks, 1)
    changes: dict[str, Any] = {"seed": seed, "run_dir": str(run_dir.resolve()), "total_steps": steps,
                               "env_kwargs": {**base.env_kwargs, "task": task}}
    if base.eval_every:
        every = max(base.eval_every // n_tasks, 1)
        changes.update(eval_every=every, log_every=min(base.log_every, every))
    return apply_overrides(base, changes, source="reproduce split_tasks")


def task_runs(preset_name: str, base: BaseConfig, out: Path, n_seeds: int, agent: str,
              pending_or_done: Callable[[Path], tuple[dict[str, Any] | None, bool]],
              side_by_side: Mapping[int, bool] | None = None) -> tuple[dict[int, dict[str, Any]], list[Job]]:
    """(the combined final.json of each seed whose tasks all finished, a job for each task run still to run);
    ``pending_or_done(run_dir)`` is reproduce's (final.json or None, resume?) of one run directory;
    ``side_by_side[seed]``: whether one process trained that seed's task runs together (vectorised)."""
    n_tasks = suite_tasks(base.env_id, preset_name)
    finals: dict[int, dict[str, Any]] = {}
    pending: list[Job] = []
    for seed in range(n_seeds):
        seed_dir = out / f"seed_{seed}"
        todo = []
        for task in range(n_tasks):
            final, resume = pending_or_done(seed_dir / f"task_{task}")
            if final is None:
                cfg = task_config(base, seed, task, n_tasks, seed_dir / f"task_{task}")
                todo.append(Job(f"seed {seed} task {task}", agent, cfg.to_dict(), resume))
        if todo:
            pending += todo
        else:
            finals[seed] = combine_seed(seed_dir, n_tasks, bool((side_by_side or {}).get(seed)))
    return finals, pending


def combine_seed(seed_dir: Path, n_tasks: int, side_by_side: bool = False) -> dict[str, Any]:
    """Write (and return) ``seed_dir/final.json`` and ``seed_dir/metrics.csv`` from its finished task runs
    (``side_by_side``: one process trained them together, so their wall times overlap)."""
    from rlkit.checkpoint import atomic_write_text

    tasks = [json.loads((seed_dir / f"task_{k}" / "final.json").read_text()) for k in range(n_tasks)]
    per_task = {str(k): float(t["eval"]["mean"]) for k, t in enumerate(tasks)}
    returns = [r for t in tasks for r in t["eval"].get("returns", [])]
    final = {"agent": tasks[0]["agent"], "env_id": tasks[0]["env_id"], "seed": tasks[0]["seed"],
             "env_steps": sum(int(t["env_steps"]) for t in tasks),
             "wall_s": round((max if side_by_side else sum)(t["wall_s"] for t in tasks), 3),
             "eval": {"mean": float(np.mean(list(per_task.values()))),
                      "std": float(np.std(returns)) if returns else 0.0,
                      "episodes": sum(int(t["eval"]["episodes"]) for t in tasks), "per_task": per_task},
             "split_tasks": {str(k): {"run_dir": f"task_{k}", "env_steps": t["env_steps"],
                                      "stopped": t.get("stopped")} for k, t in enumerate(tasks)},
             "versions": tasks[0].get("versions", {})}
    atomic_write_text(seed_dir / "final.json", json.dumps(final, indent=2))
    atomic_write_text(seed_dir / "metrics.csv", combined_curve_csv([seed_dir / f"task_{k}" for k in range(n_tasks)]))
    return final


def combined_curve_csv(task_dirs: list[Path]) -> str:
    """metrics.csv text of the tasks' mean evaluation curve against their summed env steps (module docstring)."""
    curves = [reports.load_curve(d, "eval") for d in task_dirs]
    grid = np.unique(np.concatenate([c.steps for c in curves]))
    buffer = io.StringIO()
    columns = ["global_step", reports.EVAL_KEY] + [f"eval/task_{k}/mean_return" for k in range(len(curves))]
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for step in grid:
        values = [c.values[np.searchsorted(c.steps, step, side="right") - 1] if c.steps[0] <= step else np.nan
                  for c in curves]
        if np.isnan(values).any():  # a task not yet evaluated at this step: no mean to show
            continue
        total = sum(min(step, c.steps[-1]) for c in curves)
        writer.writerow([int(total), float(np.mean(values)), *map(float, values)])
    return buffer.getvalue()
