"""Conversion to and from ``imitation`` (trajectories and its on-disk format) and Minari.

``imitation`` trajectories carry no seeds or env metadata, so a dataset converted *from* them
cannot be replayed (its episodes have ``seed=None``); converting *to* them drops the seeds.
Rewards travel only when the dataset kept them (``TrajectoryWithRew``).

Minari (0.5.x, in the default install; no jax needed): files are written by Minari itself,
through ``create_dataset_from_buffers`` with one ``EpisodeBuffer`` per episode, in its arrow format
with JPEG encoding off (lossless, so image observations still replay-verify). Each episode's reset
seed and options travel as Minari's per-episode ``seed``/``options``, so episodes imported with
``--from minari`` replay-verify.

Minari datasets require rewards, and rlkit records none unless asked (``--keep-rewards``). Of the
two ways out, rlkit takes the second: rather than refusing a reward-free dataset with a hint, the
export *recomputes* its rewards by replaying every episode from its seed, and writes them only when
every episode reproduces its stored observations and end flags exactly (bit for bit, stricter than
``replay --verify``'s 1e-5). Why: reward-free is the default, so the hint alone would make
``--to minari`` fail for almost every dataset, while a replay that reproduces every observation
exactly has, by construction, the rewards of those transitions; these are the rewards
``--keep-rewards`` would have stored. When any episode has no seed or diverges, the export fails
with one line naming the episode and the fix (record with ``--keep-rewards``). The Minari metadata
says which it was (``rlkit.rewards``: ``recorded`` or ``recomputed``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import warnings
from collections.abc import Iterator, Sequence
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


# ---------------------------------------------------------------------------------------------
# Minari (in the default install)
# ---------------------------------------------------------------------------------------------

# Replay must reproduce the stored observations bit for bit before its rewards are written as the
# dataset's: stricter than `rlkit demos replay --verify` (1e-5), so the rewards are those of these
# very observations, not of a neighbouring trajectory.
_EXACT = {"atol": 0.0, "rtol": 0.0}


def _minari() -> Any:
    try:
        import minari
    except ImportError:  # a default dependency: missing only in a broken install
        raise RLKitError("minari is not installed (rlkit depends on minari>=0.5.4,<0.6); "
                         "pip install 'minari>=0.5.4,<0.6'") from None
    return minari


@contextlib.contextmanager
def _minari_root(root: Path) -> Iterator[None]:
    """``create_dataset_from_buffers`` places datasets under $MINARI_DATASETS_PATH only; point it at ``root``."""
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
    if re.fullmatch(r"[A-Za-z0-9_.\-]+-v\d+", path.name) is None:
        raise RLKitError(f"a Minari dataset path must end in a dataset id such as cartpole-expert-v0; got {path}")
    return path.parent.resolve(), path.name


def _last_step_flag(length: int, flag: bool) -> np.ndarray:
    flags = np.zeros(length, dtype=bool)
    if length:
        flags[-1] = flag
    return flags


class _RewardLog(gym.Wrapper):
    """Keeps the rewards of the episode being stepped (replay reports only their sum)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.rewards: list[float] = []

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        self.rewards = []
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        out = self.env.step(action)
        self.rewards.append(float(out[1]))
        return out


def rewards_by_replay(dataset: Dataset, env: gym.Env) -> list[np.ndarray]:
    """Each episode's rewards, recomputed by replaying it from its seed; one-line error unless all
    episodes reproduce their stored observations and end flags exactly."""
    from rlkit.demos.replay import replay_episode

    log = _RewardLog(env)
    rewards = []
    for ep in dataset:
        result = replay_episode(log, ep, True, frames=None, **_EXACT)
        if result["status"] != "reproduced":
            where = "" if result["diverged_at"] is None else f" at step {result['diverged_at']}"
            raise RLKitError(f"Minari datasets require rewards and {dataset.path or 'the dataset'} stores none; they "
                             f"are recomputed by replay, but episode {ep.index} does not replay exactly{where} "
                             f"({result['reason']}); record it again with --keep-rewards")
        rewards.append(np.asarray(log.rewards, dtype=np.float32))  # float32, as --keep-rewards stores them
    return rewards


def to_minari(dataset: Dataset, path: str | Path) -> Path:
    """Write ``dataset`` as the Minari dataset ``path`` (its last component is the dataset id, e.g.
    ``out/cartpole-expert-v0``), through ``minari.create_dataset_from_buffers`` (arrow format, lossless).

    Rewards are the stored ones; a reward-free dataset gets rewards recomputed by replaying every
    episode, and is refused (one line naming the episode) unless every episode replays exactly.
    Reset seeds and options travel as Minari's per-episode ``seed``/``options``; the env is passed as
    rlkit builds it (env kwargs and Atari preprocessing are in its spec, so Minari's
    ``recover_environment`` rebuilds it), and the dataset's env id, env kwargs and source go under
    the metadata key ``rlkit``, so :func:`from_minari` restores them exactly.
    """
    minari = _minari()
    from minari.data_collector import EpisodeBuffer
    from rlkit.envs import make_env

    root, dataset_id = _split_minari_path(path)
    if (root / dataset_id).exists():
        raise RLKitError(f"{root / dataset_id} already exists; choose another --out")
    if not len(dataset):
        raise RLKitError(f"{dataset.path or 'the dataset'} has no episodes to export")
    env = None
    try:
        env = make_env(dataset.env_id, env_kwargs=dataset.meta.get("env_kwargs"))
    except RLKitError:
        if not dataset.has_rewards:
            raise
    try:
        recomputed = not dataset.has_rewards
        rewards = rewards_by_replay(dataset, env) if recomputed else [ep.rewards for ep in dataset]
        buffers = [EpisodeBuffer(id=i, seed=ep.seed, options=ep.options, observations=ep.obs, actions=ep.actions,
                                 rewards=rew, terminations=_last_step_flag(ep.length, ep.terminated),
                                 truncations=_last_step_flag(ep.length, ep.truncated))
                   for i, (ep, rew) in enumerate(zip(dataset, rewards))]
        how = "recomputed by replaying each episode from its seed (rlkit stored none)" if recomputed else "as recorded"
        with _minari_root(root), warnings.catch_warnings():
            # Minari asks for contact fields rlkit cannot know (and, without an env, for a spec): noise here
            warnings.filterwarnings("ignore", message=r"`(author_email|code_permalink)` is set to None",
                                    category=UserWarning)
            warnings.filterwarnings("ignore", message=r"`eval_env` is set to None|env_spec is None",
                                    category=UserWarning)
            try:
                mds = minari.create_dataset_from_buffers(
                    dataset_id, buffers, env=env, eval_env=env,
                    algorithm_name=str(dataset.meta.get("source") or "unknown"), author="rlkit demos convert",
                    description=f"rlkit dataset {dataset.path or ''} ({dataset.meta['env_id']}); rewards {how}.",
                    observation_space=dataset.observation_space, action_space=dataset.action_space,
                    data_format="arrow", jpeg_encoding=False)  # lossless: image observations must replay-verify
                mds.storage.update_metadata({"rlkit": {
                    "env_id": dataset.meta["env_id"], "source": dataset.meta.get("source"),
                    "env_kwargs": dataset.meta.get("env_kwargs") or {},
                    "rewards": "recomputed" if recomputed else "recorded"}})
            except Exception as e:  # e.g. an env spec whose kwargs are not JSON; the folder is ours, just made
                shutil.rmtree(root / dataset_id, ignore_errors=True)
                raise RLKitError(f"Minari could not write {root / dataset_id} ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0] if str(e) else ''})") from None
    finally:
        if env is not None:
            env.close()
    return root / dataset_id


def from_minari(path: str | Path, env_id: str | None = None, out: str | Path | None = None,
                env_kwargs: dict[str, Any] | None = None) -> Dataset:
    """A dataset from a local Minari dataset directory ``DIR/name-vN``, rewards kept.

    Reset seeds and options come from Minari's episode metadata, so episodes that were recorded
    with seeds (by rlkit, or by Minari's ``DataCollector``) replay-verify. The env id and kwargs are
    ``env_id``/``env_kwargs`` when given, else those rlkit stored on export, else Minari's env spec.
    """
    minari = _minari()
    path = Path(path)
    if not (path / "data" / "metadata.json").is_file():
        raise RLKitError(f"{path} is not a Minari dataset (no data/metadata.json); pass the DIR/name-vN directory")
    try:
        mds = minari.MinariDataset(path / "data")
        metadata = mds.storage.metadata
        raw_episodes = list(mds.iterate_episodes())
        episode_meta = list(mds.storage.get_episode_metadata(mds.episode_indices))
    except ImportError as e:  # a dataset in hdf5 format needs h5py, which rlkit does not install
        raise RLKitError(f"cannot read Minari dataset {path}: {e}") from None
    except Exception as e:  # minari raises ValueError / KeyError / pyarrow errors for damaged data
        raise RLKitError(f"cannot read Minari dataset {path} ({type(e).__name__}: {str(e)[:200]})") from None
    ours = metadata.get("rlkit") or {}
    spec = mds.env_spec
    env_id = env_id or ours.get("env_id") or (spec.id if spec is not None else None)
    if env_id is None:
        raise RLKitError(f"Minari dataset {path} names no env; pass --env ENV_ID")
    if env_kwargs is None:
        if "env_kwargs" in ours:
            env_kwargs = ours["env_kwargs"]
        elif spec is not None:  # kwargs given to gym.make, and its step limit
            env_kwargs = {**spec.kwargs, **({} if spec.max_episode_steps is None
                                           else {"max_episode_steps": spec.max_episode_steps})}
    source = ours.get("source") or f"minari:{metadata.get('dataset_id', path.name)}"
    episodes = []
    for i, (ep, info) in enumerate(zip(raw_episodes, episode_meta)):
        rewards = np.asarray(ep.rewards, dtype=np.float32)
        ended = len(rewards) > 0
        episodes.append(Episode(obs=np.asarray(ep.observations), actions=np.asarray(ep.actions),
                                terminated=bool(ended and ep.terminations[-1]),
                                truncated=bool(ended and ep.truncations[-1]),
                                seed=None if info.get("seed") is None else int(info["seed"]),
                                options=info.get("options"), rewards=rewards,
                                episode_return=float(rewards.sum()), index=i, source=source))
    return _finish(episodes, env_id, out, mds.observation_space, mds.action_space, env_kwargs, source)
