"""Demonstrations as training data: a learner's dataset, loaded with a one-line error, and its env fitted to it."""

from __future__ import annotations

from typing import Any

from rlkit.envs import make_env

from rlkit.config import BaseConfig
from rlkit.errors import RLKitError


def load_demos(path: str | None, skip_corrupt: bool = False, agent: str = "bc") -> Any:
    """``demos.load`` with a one-line error when no dataset was given; several datasets (``A,B,...`` or a directory
    of datasets), one per task of a multi-task suite, load as one (:mod:`rlkit.demos.tasks`)."""
    if not path:
        raise RLKitError(f"{agent} learns from demonstrations: pass --demos DATASET "
                         "(record one with `rlkit demos record --env ENV --policy SOURCE --out DATASET`)")
    from rlkit.demos.tasks import dataset_paths, merge_task_datasets

    from rlkit import demos

    paths = dataset_paths(path)
    if len(paths) == 1:
        return demos.load(paths[0], skip_corrupt=skip_corrupt)
    return merge_task_datasets([demos.load(p, skip_corrupt=skip_corrupt) for p in paths])


def resolve_env(cfg: BaseConfig, dataset: Any) -> None:
    """Fill ``cfg.env_id`` / ``env_kwargs`` from the dataset, or check that the given env fits it.

    Either way the env is made and its spaces checked against the dataset's manifest before anything
    trains: a manifest that does not describe its own env (damaged or edited) would otherwise train a
    network for the wrong shapes and fail only at the final evaluation.
    """
    from rlkit.spaces import space_brief, spaces_agree

    from_dataset = cfg.env_id is None
    if from_dataset:
        cfg.env_id = dataset.env_id
        cfg.env_kwargs = cfg.env_kwargs or dict(dataset.meta.get("env_kwargs") or {})
    env = make_env(cfg.env_id, env_kwargs=cfg.env_kwargs)
    try:
        # Another env id is fine (e.g. seals/CartPole-v0 for CartPole-v1 demos) when the spaces agree.
        for name, ours, theirs in (("observation", env.observation_space, dataset.observation_space),
                                   ("action", env.action_space, dataset.action_space)):
            if spaces_agree(ours, theirs):
                continue
            if from_dataset:
                raise RLKitError(f"dataset {dataset.path}'s manifest declares {name} space {space_brief(theirs)}, "
                                 f"but its env {cfg.env_id} has {space_brief(ours)}; the manifest does not describe "
                                 "its env (damaged or edited): record the demonstrations again")
            raise RLKitError(f"{cfg.env_id} has {name} space {space_brief(ours)}, but the demonstrations "
                             f"({dataset.env_id}) have {space_brief(theirs)}; omit --env to use the dataset's env")
    finally:
        env.close()
