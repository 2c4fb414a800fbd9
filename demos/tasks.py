"""One dataset per task of a multi-task suite, trained on as one (multi-task BC and DAgger, issue 24).

Each task's expert is recorded on the suite with its task fixed (``rlkit demos record --env rlkit/CartPole-MT-v0
--env-kwargs '{"task": K}' ...``), so its observations end in task K's one-hot. A learner's ``--demos`` then takes
several datasets, as a comma-separated list or as a directory whose subdirectories are datasets, and
:func:`merge_task_datasets` joins their episodes into one :class:`Dataset` on the suite itself (``env_kwargs``
without ``task``: the round-robin schedule), so the final evaluation plays every task and reports each one's return.

Refused in one line: datasets whose observation (or action) spaces differ, datasets of different envs or env
settings, and a dataset whose tasks the suite does not know (a held-out context, a task id out of range, or
observations whose task one-hot is missing or malformed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rlkit.demos.dataset import MANIFEST, Dataset, bare_id
from rlkit.envs.multitask import task_count

from rlkit.errors import RLKitError
from rlkit.spaces import space_brief, space_to_json


def dataset_paths(spec: str) -> list[Path]:
    """``--demos``: one dataset, ``A,B,...``, or a directory whose subdirectories holding a manifest are datasets
    (sorted by name)."""
    # an existing path is one, even with a comma in its name
    paths = [Path(spec)] if Path(spec).exists() else [Path(p.strip()) for p in spec.split(",") if p.strip()]
    if len(paths) == 1 and paths[0].is_dir() and not (paths[0] / MANIFEST).exists():
        inner = sorted(p for p in paths[0].iterdir() if (p / MANIFEST).is_file())
        if inner:
            return inner
    return paths


def merge_task_datasets(datasets: list[Dataset]) -> Dataset:
    """One dataset of all the tasks' episodes, on the suite in its round-robin schedule (module docstring)."""
    first = datasets[0]
    for other in datasets[1:]:
        _check_same_spaces(first, other)
    suite = bare_id(first.meta["env_id"])
    n_tasks = task_count(suite)
    settings = {k: v for k, v in (first.meta.get("env_kwargs") or {}).items() if k != "task"}
    tasks = []
    for dataset in datasets:
        tasks.append(_check_task(dataset, suite, n_tasks, settings))
    meta = {**first.meta, "env_kwargs": settings,
            "merged_from": [{"path": str(d.path), "task": k, "episodes": len(d)} for d, k in zip(datasets, tasks)]}
    episodes = [ep for d in datasets for ep in d.episodes]
    return Dataset(meta, episodes, Path(str(first.path)).parent if first.path else None,
                   [s for d in datasets for s in d.skipped], trusted_env_id=first.trusted_env_id)


def _check_same_spaces(first: Dataset, other: Dataset) -> None:
    for name in ("observation", "action"):
        ours, theirs = first.meta[f"{name}_space"], other.meta[f"{name}_space"]
        if space_to_json(ours) != space_to_json(theirs):
            raise RLKitError(f"cannot train one policy on {first.path} and {other.path}: their {name} spaces differ "
                             f"({space_brief(ours)} vs {space_brief(theirs)}); record every task on the same suite, "
                             "e.g. --env rlkit/CartPole-MT-v0 --env-kwargs '{\"task\": K}'")


def _check_task(dataset: Dataset, suite: str, n_tasks: int, settings: dict[str, Any]) -> int | None:
    """The task a dataset's expert played (None: the suite's own schedule), refusing what the suite does not know."""
    env_id, kwargs = bare_id(dataset.meta["env_id"]), dict(dataset.meta.get("env_kwargs") or {})
    task = kwargs.pop("task", None)
    if not n_tasks:
        raise RLKitError(f"{dataset.path} was recorded on {env_id}, which is no multi-task suite; several datasets "
                         "train one policy on a suite's tasks (rlkit/CartPole-MT-v0 with --env-kwargs "
                         "'{\"task\": K}'): pass one dataset")
    if env_id != suite:
        raise RLKitError(f"{dataset.path} was recorded on {env_id}, whose tasks {suite} does not know (the first "
                         f"dataset's suite); record it on {suite} with --env-kwargs '{{\"task\": K}}', K in "
                         f"0..{n_tasks - 1}")
    if kwargs != settings:
        raise RLKitError(f"{dataset.path} was recorded with env_kwargs {kwargs}, the first dataset with {settings}; "
                         "record every task with the same env settings")
    if task is not None and not (isinstance(task, int) and 0 <= task < n_tasks):
        raise RLKitError(f"{dataset.path} was recorded on task {task!r}, which {suite} does not know (tasks "
                         f"0..{n_tasks - 1})")
    for ep in dataset.episodes:
        ids = np.asarray(ep.obs, dtype=np.float64).reshape(len(ep.obs), -1)[:, -n_tasks:]
        if not (np.isin(ids, (0.0, 1.0)).all() and (ids.sum(axis=1) == 1).all()):
            raise RLKitError(f"{dataset.path} episode {ep.index}: its observations do not end in a {n_tasks}-task "
                             f"one-hot, so its tasks are none {suite} knows; record it again on {suite}")
        shown = set(ids.argmax(axis=1).tolist())
        if task is not None and shown != {task}:
            raise RLKitError(f"{dataset.path} episode {ep.index} shows task ids {sorted(shown)}, but the dataset "
                             f"was recorded on task {task}: damaged or edited; record it again")
    return task
