"""Conversion to and from ``imitation`` (trajectories and its on-disk format) and Minari.

``imitation`` trajectories carry no seeds or env metadata, so a dataset converted *from* them
cannot be replayed (its episodes have ``seed=None``); converting *to* them drops the seeds.
Rewards travel only when the dataset kept them (``TrajectoryWithRew``).

Minari: 0.5.x needs numpy 2, so the lock (gymnasium 0.29, numpy<2) takes Minari 0.4.3, installed
with ``pip install 'rlkit[minari]'``. Its datasets require rewards, so only datasets recorded with
``--keep-rewards`` export; the files are written by Minari itself, never by hand.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from rlkit.demos.dataset import Dataset, Episode, versions
from rlkit.demos.reader import load
from rlkit.demos.writer import DatasetWriter

from rlkit.errors import RLKitError


def to_trajectories(dataset: Dataset) -> list[Any]:
    """The episodes as ``imitation.data.types.Trajectory`` (``TrajectoryWithRew`` when rewards were kept).

    ``terminal`` is the episode's ``terminated`` flag: a truncated episode is not terminal.
    """
    from imitation.data.types import Trajectory, TrajectoryWithRew

    with_rew = dataset.has_rewards
    trajs = []
    for ep in dataset:
        if with_rew:
            trajs.append(TrajectoryWithRew(obs=ep.obs, acts=ep.actions, infos=None, terminal=ep.terminated,
                                           rews=np.asarray(ep.rewards, dtype=np.float32)))
        else:
            trajs.append(Trajectory(obs=ep.obs, acts=ep.actions, infos=None, terminal=ep.terminated))
    return trajs


def from_trajectories(trajs: Sequence[Any], env_id: str, out: str | Path | None = None,
                      observation_space: gym.Space | None = None, action_space: gym.Space | None = None,
                      env_kwargs: dict[str, Any] | None = None, source: str = "imitation",
                      append: bool = False, seeds: Sequence[int | None] | None = None) -> Dataset:
    """A dataset from ``imitation`` trajectories (rewards kept when they are ``TrajectoryWithRew``).

    Args:
        trajs: the trajectories (of complete episodes: ``terminal=False`` is stored as truncated).
        env_id: the env they come from; its spaces are used unless given.
        out: write the dataset here and return it loaded; ``None`` keeps it in memory.
        observation_space, action_space: the spaces, when the env cannot be made here.
        env_kwargs: keyword arguments of the env (metadata).
        source: stored as the dataset's policy source.
        append: add to an existing dataset at ``out``.
        seeds: reset seeds of the episodes when known (imitation does not store them; Minari may).
    """
    if observation_space is None or action_space is None:
        from rlkit.envs import make_env

        env = make_env(env_id, env_kwargs=env_kwargs)
        observation_space = observation_space or env.observation_space
        action_space = action_space or env.action_space
        env.close()
    episodes = []
    for i, traj in enumerate(trajs):
        rews = getattr(traj, "rews", None)
        episodes.append(Episode(obs=np.asarray(traj.obs, dtype=observation_space.dtype),
                                actions=np.asarray(traj.acts, dtype=action_space.dtype),
                                terminated=bool(traj.terminal), truncated=not bool(traj.terminal),
                                seed=None if seeds is None or seeds[i] is None else int(seeds[i]),
                                rewards=None if rews is None else np.asarray(rews, dtype=np.float32),
                                episode_return=None if rews is None else float(np.sum(rews)), index=i,
                                source=source))
    if out is None:
        meta = {"format_version": 1, "env_id": env_id, "env_kwargs": dict(env_kwargs or {}),
                "observation_space": observation_space, "action_space": action_space, "source": source,
                "versions": versions()}
        return Dataset(meta, episodes)
    with DatasetWriter(out, env_id, observation_space, action_space, source, env_kwargs, append=append) as writer:
        for ep in episodes:
            writer.add_episode(ep.obs, ep.actions, ep.terminated, ep.truncated, ep.seed, rewards=ep.rewards,
                               episode_return=ep.episode_return)
    return load(out)


def save_imitation(dataset: Dataset, path: str | Path) -> Path:
    """Write the dataset in imitation's on-disk format (``imitation.data.serialize.save``)."""
    import datasets
    from imitation.data import serialize

    datasets.disable_progress_bars()  # a bar per save is noise in the CLI's output
    path = Path(path)
    if path.exists():
        raise RLKitError(f"{path} already exists; choose another --out")
    serialize.save(path, to_trajectories(dataset))
    return path


def load_imitation(path: str | Path) -> list[Any]:
    """Trajectories saved by ``imitation.data.serialize.save`` (or imitation's older .npz/.pkl files)."""
    from imitation.data import serialize

    if not Path(path).exists():
        raise RLKitError(f"{path} does not exist; pass a directory written by imitation.data.serialize.save")
    try:
        return list(serialize.load(path))
    except Exception as e:  # datasets / numpy raise many types for foreign or damaged files
        raise RLKitError(f"cannot read {path} as imitation trajectories ({type(e).__name__})") from None


# ---------------------------------------------------------------------------------------------
# Minari (optional extra)
# ---------------------------------------------------------------------------------------------

def _minari() -> Any:
    try:
        import minari
    except ImportError:
        raise RLKitError("Minari export needs the minari extra (Minari 0.4.3: the 0.5 series needs numpy 2, "
                         "which this lock's gymnasium 0.29 does not support); pip install 'rlkit[minari]'"
                         ) from None
    return minari


@contextlib.contextmanager
def _minari_root(root: Path) -> Iterator[None]:
    """Minari 0.4 finds datasets through $MINARI_DATASETS_PATH only; point it at ``root`` meanwhile."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def _split_minari_path(path: str | Path) -> tuple[Path, str]:
    path = Path(path)
    if "-v" not in path.name:
        raise RLKitError(f"a Minari dataset path must end in a dataset id such as cartpole-expert-v0; got {path}")
    return path.parent.resolve(), path.name


def _last_step_flag(length: int, flag: bool) -> np.ndarray:
    flags = np.zeros(length, dtype=bool)
    if length:
        flags[-1] = flag
    return flags


def to_minari(dataset: Dataset, path: str | Path) -> Path:
    """Write ``dataset`` as the Minari dataset ``path`` (its last component is the dataset id, e.g.
    ``out/cartpole-expert-v0``); needs rewards, so record with ``--keep-rewards``."""
    minari = _minari()
    if not dataset.has_rewards:
        raise RLKitError(f"Minari datasets require rewards and {dataset.path} has none; "
                         f"record it again with --keep-rewards")
    root, dataset_id = _split_minari_path(path)
    if (root / dataset_id).exists():
        raise RLKitError(f"{root / dataset_id} already exists; choose another --out")
    buffers = [{"observations": ep.obs, "actions": ep.actions, "rewards": ep.rewards,
                "terminations": _last_step_flag(ep.length, ep.terminated),
                "truncations": _last_step_flag(ep.length, ep.truncated),
                **({} if ep.seed is None else {"seed": ep.seed})} for ep in dataset]
    try:  # the spec names the env for Minari's users; spaces are passed as stored (Atari is preprocessed)
        spec = gym.spec(dataset.env_id.rpartition(":")[2])
    except gym.error.Error:
        spec = None
    with _minari_root(root), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Minari nags about author/permalink fields we leave empty
        minari.create_dataset_from_buffers(dataset_id, buffers, env=spec, algorithm_name=dataset.meta.get("source"),
                                           author="rlkit demos convert", minari_version=f"~={minari.__version__}",
                                           observation_space=dataset.observation_space,
                                           action_space=dataset.action_space)
    return root / dataset_id


def from_minari(path: str | Path, env_id: str | None = None, out: str | Path | None = None) -> Dataset:
    """A dataset from a local Minari dataset directory (rewards kept; reset seeds when Minari has them,
    so episodes exported by :func:`to_minari` replay again)."""
    minari = _minari()
    root, dataset_id = _split_minari_path(path)
    with _minari_root(root):
        try:
            mds = minari.load_dataset(dataset_id)
        except Exception as e:  # minari raises ValueError / FileNotFoundError / h5py errors
            raise RLKitError(f"cannot read Minari dataset {root / dataset_id} ({type(e).__name__})") from None
        env_id = env_id or (mds.spec.env_spec.id if getattr(mds.spec, "env_spec", None) else None)
        if env_id is None:
            raise RLKitError(f"Minari dataset {dataset_id} names no env; pass --env ENV_ID")
        from imitation.data.types import TrajectoryWithRew

        episodes = list(mds.iterate_episodes())
        trajs = [TrajectoryWithRew(obs=ep.observations, acts=ep.actions, infos=None,
                                   terminal=bool(ep.terminations[-1]) if ep.total_timesteps else True,
                                   rews=np.asarray(ep.rewards, dtype=np.float32)) for ep in episodes]
        return from_trajectories(trajs, env_id, out, observation_space=mds.spec.observation_space,
                                 action_space=mds.spec.action_space, source=f"minari:{dataset_id}",
                                 seeds=[ep.seed for ep in episodes])
