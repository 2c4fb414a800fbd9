"""Conversion to and from ``imitation`` (trajectories and its on-disk format); Minari is :mod:`demos.minari_io`.

``imitation`` trajectories carry no seeds or env metadata, so a dataset converted *from* them
cannot be replayed (its episodes have ``seed=None``); converting *to* them drops the seeds.
Rewards travel only when the dataset kept them (``TrajectoryWithRew``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from rlkit.demos.dataset import FORMAT_VERSION, Dataset, Episode, versions
from rlkit.demos.reader import load
from rlkit.demos.writer import DatasetWriter

from rlkit.errors import RLKitError, require_imitation


def to_trajectories(dataset: Dataset) -> list[Any]:
    """The episodes as ``imitation.data.types.Trajectory`` (``TrajectoryWithRew`` when rewards were kept).

    ``terminal`` is the episode's ``terminated`` flag: a truncated episode is not terminal.
    """
    require_imitation("conversion to imitation Trajectory objects")
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
        observation_space: the observation space, when the env cannot be made here.
        action_space: the action space, likewise.
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
    return _finish(episodes, env_id, out, observation_space, action_space, env_kwargs, source, append)


def _finish(episodes: list[Episode], env_id: str, out: str | Path | None, observation_space: gym.Space,
            action_space: gym.Space, env_kwargs: dict[str, Any] | None, source: str, append: bool = False) -> Dataset:
    """The imported episodes as a dataset: in memory when ``out`` is None, else written there and loaded."""
    if out is None:
        meta = {"format_version": FORMAT_VERSION, "env_id": env_id, "env_kwargs": dict(env_kwargs or {}),
                "observation_space": observation_space, "action_space": action_space, "source": source,
                "versions": versions()}
        return Dataset(meta, episodes)
    with DatasetWriter(out, env_id, observation_space, action_space, source, env_kwargs, append=append) as writer:
        for ep in episodes:
            writer.add_episode(ep.obs, ep.actions, ep.terminated, ep.truncated, ep.seed, options=ep.options,
                               rewards=ep.rewards, episode_return=ep.episode_return)
    return load(out)


def save_imitation(dataset: Dataset, path: str | Path) -> Path:
    """Write the dataset in imitation's on-disk format (``imitation.data.serialize.save``)."""
    require_imitation("rlkit demos convert --to imitation")
    import datasets
    from imitation.data import serialize

    datasets.disable_progress_bars()  # a bar per save is noise in the CLI's output
    path = Path(path)
    if path.exists():
        raise RLKitError(f"{path} already exists; choose another --out")
    serialize.save(path, to_trajectories(dataset))
    return path


def load_imitation(path: str | Path) -> list[Any]:
    """Trajectories saved by ``imitation.data.serialize.save`` (or in imitation's older .npz format), read
    as data by :mod:`demos.imitation_files`: nothing is unpickled, and ``infos`` (jsonpickle) are dropped.

    imitation's oldest format, a pickled list (.pkl), is refused in one line: only unpickling can read it.
    """
    require_imitation("rlkit demos convert --from imitation")
    from imitation.data.types import Trajectory, TrajectoryWithRew
    from rlkit.demos.imitation_files import read_trajectory_columns

    path = Path(path)
    if not path.exists():
        raise RLKitError(f"{path} does not exist; pass a directory written by imitation.data.serialize.save")
    trajs = []
    for i, traj in enumerate(read_trajectory_columns(path)):
        try:
            if "rews" in traj:
                trajs.append(TrajectoryWithRew(obs=traj["obs"], acts=traj["acts"], infos=None,
                                               terminal=traj["terminal"], rews=traj["rews"].astype(np.float32)))
            else:
                trajs.append(Trajectory(obs=traj["obs"], acts=traj["acts"], infos=None, terminal=traj["terminal"]))
        except ValueError as e:  # imitation checks the lengths of obs, acts and rews
            raise RLKitError(f"trajectory {i} of {path} is damaged ({str(e).splitlines()[0]})") from None
    return trajs
