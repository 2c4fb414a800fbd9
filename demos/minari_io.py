"""Minari 0.5 export and import, lossless both ways, and Minari datasets named by id or path.

Minari (0.5.x, in the default install; no jax needed): files are written by Minari itself,
through ``create_dataset_from_buffers`` with one ``EpisodeBuffer`` per episode, in its arrow format
with JPEG encoding off (lossless, so image observations still replay-verify). Each episode's reset
seed and options travel as Minari's per-episode ``seed``/``options``, so episodes imported with
``--from minari`` replay-verify.

What Minari has no field for travels under the dataset metadata key ``rlkit``, so that
:func:`from_minari` gives back the dataset that :func:`to_minari` was given: the env id and kwargs,
each episode's policy source (medium-expert has two) and its return as stored (the recorder sums
float64 rewards; Minari keeps the float32 rewards only), and the manifest's other fields, such as the
``reference_scores`` and ``offline_data`` recipe that ``rlkit offline-data`` writes. The reference
scores also become Minari's own ``ref_min_score``/``ref_max_score``, so ``minari.get_normalized_score``
works on the export, and an import of a dataset made elsewhere takes its reference scores from them.

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

A Minari dataset is named by its directory (``DIR/name-v0``, the one holding ``data/``) or by its id in
the local Minari root (``$MINARI_DATASETS_PATH``, else ``~/.minari/datasets``, Minari's own default), e.g.
``pendulum-medium-v0`` or ``D4RL/pen/human-v2``; :func:`resolve_minari` tells which, and the offline
learners' ``--demos`` takes either (:func:`load_minari` reads one into memory).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from rlkit.demos.dataset import FORMAT_VERSION, MANIFEST, Dataset, Episode, versions
from rlkit.demos.reader import load, read_manifest
from rlkit.demos.writer import DatasetWriter

from rlkit.checkpoint import atomic_write_text
from rlkit.errors import RLKitError

# Replay must reproduce the stored observations bit for bit before its rewards are written as the
# dataset's: stricter than `rlkit demos replay --verify` (1e-5), so the rewards are those of these
# very observations, not of a neighbouring trajectory.
_EXACT = {"atol": 0.0, "rtol": 0.0}
# Manifest fields the writer makes itself: every other field is the dataset's own and travels in the metadata.
_WRITER_FIELDS = {"format", "format_version", "env_id", "env_kwargs", "observation_space", "action_space", "source",
                  "versions", "created"}
# A Minari id: optional namespaces, then name-vN; no component may start with a dot (no `..` out of the root).
_ID = re.compile(r"(?:[A-Za-z0-9_\-][A-Za-z0-9_.\-]*/)*[A-Za-z0-9_\-][A-Za-z0-9_.\-]*-v\d+")


def _minari() -> Any:
    try:
        import minari
    except ImportError:  # a default dependency: missing only in a broken install
        raise RLKitError("minari is not installed (rlkit depends on minari>=0.5.4,<0.6); "
                         "pip install 'minari>=0.5.4,<0.6'") from None
    return minari


def minari_root() -> Path:
    """The local Minari root, as Minari computes it, without creating it (Minari's own lookup makes the folder
    in the user's home as a side effect)."""
    configured = os.environ.get("MINARI_DATASETS_PATH")
    return Path(configured) if configured else Path.home() / ".minari" / "datasets"


def is_minari_dataset(path: str | Path) -> bool:
    """Whether ``path`` is a Minari dataset directory (it holds ``data/metadata.json``)."""
    return (Path(path) / "data" / "metadata.json").is_file()


def resolve_minari(name: str | Path) -> Path | None:
    """The Minari dataset directory that ``name`` means: the directory itself, or the id in the local Minari root;
    None when ``name`` is neither (an rlkit dataset, or nothing)."""
    if is_minari_dataset(name):
        return Path(name)
    text = str(name)
    if _ID.fullmatch(text) and not Path(text).exists() and is_minari_dataset(minari_root() / text):
        return minari_root() / text
    return None


def looks_like_minari_id(name: str | Path) -> bool:
    """``name`` has the form of a Minari id (``name-vN``) and is no path that exists."""
    return _ID.fullmatch(str(name)) is not None and not Path(name).exists()


def load_minari(name: str | Path) -> Dataset:
    """The Minari dataset ``name`` (directory or local id) as an in-memory rlkit Dataset (see :func:`from_minari`)."""
    path = resolve_minari(name)
    if path is None:
        raise RLKitError(f"no Minari dataset {name} in the local Minari root {minari_root()} (MINARI_DATASETS_PATH) "
                         "and no such directory; pass DIR/name-vN or an id that `minari list local` shows")
    return from_minari(path)


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


def _reference(meta: dict[str, Any]) -> tuple[float, float] | None:
    """The dataset's (ref_min_score, ref_max_score) when its manifest holds usable ones."""
    ref = meta.get("reference_scores")
    try:
        low, high = float(ref["ref_min_score"]), float(ref["ref_max_score"])
    except (TypeError, KeyError, ValueError):
        return None
    return (low, high) if np.isfinite(low) and np.isfinite(high) and low != high else None


def _rlkit_metadata(dataset: Dataset, recomputed: bool) -> dict[str, Any]:
    """What Minari has no field for, under the metadata key ``rlkit`` (JSON)."""
    sources = [ep.source for ep in dataset]
    return {"env_id": dataset.meta["env_id"], "source": dataset.meta.get("source"),
            "env_kwargs": dataset.meta.get("env_kwargs") or {}, "rewards": "recomputed" if recomputed else "recorded",
            # JSON writes a float64 as its shortest repr, which reads back to the same bits
            "episode_returns": [ep.episode_return for ep in dataset],
            "episode_sources": sources if len(set(sources)) > 1 else None,
            "manifest": {k: v for k, v in dataset.meta.items() if k not in _WRITER_FIELDS}}


def to_minari(dataset: Dataset, path: str | Path) -> Path:
    """Write ``dataset`` as the Minari dataset ``path`` (its last component is the dataset id, e.g.
    ``out/cartpole-expert-v0``), through ``minari.create_dataset_from_buffers`` (arrow format, lossless).

    Rewards are the stored ones; a reward-free dataset gets rewards recomputed by replaying every
    episode, and is refused (one line naming the episode) unless every episode replays exactly.
    Reset seeds and options travel as Minari's per-episode ``seed``/``options``; the env is passed as
    rlkit builds it (env kwargs and Atari preprocessing are in its spec, so Minari's
    ``recover_environment`` rebuilds it); the dataset's reference scores become Minari's
    ``ref_min_score``/``ref_max_score``; the rest goes under the metadata key ``rlkit`` (module docstring).
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
        _write_minari(minari, root, dataset_id, buffers, dataset, env, recomputed)
    finally:
        if env is not None:
            env.close()
    return root / dataset_id


def _write_minari(minari: Any, root: Path, dataset_id: str, buffers: list[Any], dataset: Dataset,
                  env: gym.Env | None, recomputed: bool) -> None:
    how = "recomputed by replaying each episode from its seed (rlkit stored none)" if recomputed else "as recorded"
    reference = _reference(dataset.meta)
    # Minari stores ref scores only with an eval env (it makes one from the spec; without an env they stay in `rlkit`)
    scores = {} if reference is None or env is None else {
        "ref_min_score": reference[0], "ref_max_score": reference[1],
        "num_episodes_average_score": int(dataset.meta["reference_scores"].get("episodes") or 100)}
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
                data_format="arrow", jpeg_encoding=False, **scores)  # lossless: image observations must replay-verify
            mds.storage.update_metadata({"rlkit": _rlkit_metadata(dataset, recomputed)})
        except Exception as e:  # e.g. an env spec whose kwargs are not JSON; the folder is ours, just made
            shutil.rmtree(root / dataset_id, ignore_errors=True)
            raise RLKitError(f"Minari could not write {root / dataset_id} ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''})") from None


def _read_minari(path: Path) -> tuple[Any, dict[str, Any], list[Any], list[dict[str, Any]]]:
    """Minari's dataset, metadata, episodes and per-episode metadata, or a one-line error."""
    minari = _minari()
    try:
        mds = minari.MinariDataset(path / "data")
        metadata = mds.storage.metadata
        raw_episodes = list(mds.iterate_episodes())
        episode_meta = list(mds.storage.get_episode_metadata(mds.episode_indices))
    except ImportError as e:  # a dataset in hdf5 format needs h5py, which rlkit does not install
        raise RLKitError(f"cannot read Minari dataset {path}: {e}") from None
    except Exception as e:  # minari raises ValueError / KeyError / pyarrow errors for damaged data
        raise RLKitError(f"cannot read Minari dataset {path} ({type(e).__name__}: {str(e)[:200]})") from None
    return mds, metadata, raw_episodes, episode_meta


def _per_episode(values: Any, count: int, kind: type) -> list[Any] | None:
    """A per-episode list from the ``rlkit`` metadata, only when it is one value of ``kind`` per episode (a list
    edited by hand, or of another dataset, is ignored rather than misassigned)."""
    if isinstance(values, list) and len(values) == count and all(isinstance(v, kind) for v in values):
        return values
    return None


def from_minari(path: str | Path, env_id: str | None = None, out: str | Path | None = None,
                env_kwargs: dict[str, Any] | None = None) -> Dataset:
    """A dataset from a Minari dataset (a directory ``DIR/name-vN`` or an id in the local Minari root), rewards kept.

    Reset seeds and options come from Minari's episode metadata, so episodes that were recorded
    with seeds (by rlkit, or by Minari's ``DataCollector``) replay-verify. The env id and kwargs are
    ``env_id``/``env_kwargs`` when given, else those rlkit stored on export, else Minari's env spec.
    Episode sources and returns and the manifest's own fields come back from the ``rlkit`` metadata; a
    dataset made elsewhere gets its reference scores from Minari's ``ref_min_score``/``ref_max_score``.
    """
    found = resolve_minari(path)
    if found is None:
        raise RLKitError(f"{path} is not a Minari dataset (no data/metadata.json) nor an id in the local Minari root "
                         f"{minari_root()}; pass the DIR/name-vN directory")
    path = found
    mds, metadata, raw_episodes, episode_meta = _read_minari(path)
    ours = metadata.get("rlkit") if isinstance(metadata.get("rlkit"), dict) else {}
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
    count = len(raw_episodes)
    returns = _per_episode(ours.get("episode_returns"), count, (float, int, type(None)))
    sources = _per_episode(ours.get("episode_sources"), count, str) or [source] * count
    episodes = []
    for i, (ep, info) in enumerate(zip(raw_episodes, episode_meta)):
        rewards = np.asarray(ep.rewards, dtype=np.float32)
        ended = len(rewards) > 0
        stored = None if returns is None else returns[i]
        episodes.append(Episode(obs=np.asarray(ep.observations), actions=np.asarray(ep.actions),
                                terminated=bool(ended and ep.terminations[-1]),
                                truncated=bool(ended and ep.truncations[-1]),
                                seed=None if info.get("seed") is None else int(info["seed"]),
                                options=info.get("options"), rewards=rewards,
                                episode_return=float(rewards.sum()) if stored is None else float(stored), index=i,
                                source=sources[i]))
    extra = _manifest_fields(ours, metadata)
    return _finish(episodes, env_id, out, (mds.observation_space, mds.action_space), env_kwargs, source, extra)


def _manifest_fields(ours: dict[str, Any], metadata: dict[str, Any]) -> dict[str, Any]:
    """The manifest's own fields to restore: those rlkit exported (never the writer's, which describe the data
    and are rewritten from it), else reference scores from Minari's ``ref_min_score``/``ref_max_score``."""
    saved = ours.get("manifest")
    extra = {k: v for k, v in saved.items() if k not in _WRITER_FIELDS} if isinstance(saved, dict) else {}
    if "reference_scores" not in extra and metadata.get("ref_min_score") is not None \
            and metadata.get("ref_max_score") is not None:
        extra["reference_scores"] = {"ref_min_score": metadata["ref_min_score"],
                                     "ref_max_score": metadata["ref_max_score"],
                                     "episodes": metadata.get("num_episodes_average_score"),
                                     "from": "Minari ref_min_score / ref_max_score"}
    return extra


def _finish(episodes: list[Episode], env_id: str, out: str | Path | None, spaces: tuple[gym.Space, gym.Space],
            env_kwargs: dict[str, Any] | None, source: str, extra: dict[str, Any]) -> Dataset:
    """The imported episodes as a dataset: in memory when ``out`` is None, else written there (one writer session
    per run of episodes with one source, as they were recorded) and loaded."""
    if out is None:
        meta = {"format_version": FORMAT_VERSION, "env_id": env_id, "env_kwargs": dict(env_kwargs or {}),
                "observation_space": spaces[0], "action_space": spaces[1], "source": source,
                "versions": versions(), **extra}
        return Dataset(meta, episodes)
    out, groups = Path(out), []
    for ep in episodes:  # runs of one source, in order
        if groups and groups[-1][0] == ep.source:
            groups[-1][1].append(ep)
        else:
            groups.append((ep.source, [ep]))
    for i, (group_source, group) in enumerate(groups or [(source, [])]):
        with DatasetWriter(out, env_id, *spaces, group_source, env_kwargs, append=i > 0) as writer:
            for ep in group:
                writer.add_episode(ep.obs, ep.actions, ep.terminated, ep.truncated, ep.seed, options=ep.options,
                                   rewards=ep.rewards, episode_return=ep.episode_return)
    if extra:
        raw = read_manifest(out)
        raw.update(extra)
        atomic_write_text(out / MANIFEST, json.dumps(raw, indent=1) + "\n", home=out)
    return load(out)
