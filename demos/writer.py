"""Writing a dataset: :class:`DatasetWriter` appends episodes, each one committed atomically.

What a writer does when it opens an existing dataset (``append=True``), under an exclusive lock:

1. An index line without its newline was cut by a crash and was never committed: it is cut off.
2. Every pack byte must be accounted for (:func:`demos.reader.check_coverage`). A damaged index
   (pack bytes no line covers, other than what rule 3 explains) refuses the append in one line
   that points at ``rlkit demos repair``: appending after a lost line would reuse its episode
   number, and cutting the "tail" would destroy committed episodes.
3. A killed writer leaves at most one uncommitted archive, at the end of its own pack (the pack of
   the last index line, or a pack named after the next episode that it never committed to). The
   rule, which needs no trust in the index beyond its committed lines:

   * a *complete* archive there whose ``meta.json`` says it is the next episode is a finished
     episode whose index line was lost to the kill: it is committed now (its line is written), so
     nothing complete is ever dropped;
   * a *torn* archive there (its zip records end before its end-of-directory record) cannot hold a
     committed episode, because an episode is committed only after its whole archive is written:
     it is cut off (the pack truncated to the end of the last committed archive, or the empty
     pack removed). Nothing else is ever truncated or deleted.
4. The new session writes its own pack, created exclusively (``O_EXCL``), so no committed byte is
   ever rewritten.

Appending to a format 1 or 2 dataset upgrades its manifest to format 3 (archives with meta.json),
atomically, since readers of those formats cannot read the new archives.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from rlkit.demos.archive import META_KEYS, decode_episode, encode_episode
from rlkit.demos.codec import ArchiveError
from rlkit.demos.dataset import (
    EPISODE_DIR,
    FORMAT,
    FORMAT_VERSION,
    INDEX,
    MANIFEST,
    bare_id,
    space_brief,
    space_from_json,
    space_to_json,
    versions,
)
from rlkit.demos.reader import (
    check_coverage,
    coverage_error,
    episode_file,
    episodes_dir,
    index_lines,
    open_regular,
    pack_name,
    read_index,
    read_manifest,
    read_regular,
)

from rlkit.checkpoint import atomic_write_text
from rlkit.errors import RLKitError
from rlkit.safe_files import disk_full_error, is_disk_full


def _jsonable(value: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        raise RLKitError(f"{what} must be JSON-serialisable (numbers, strings, lists, dicts); got {value!r}"
                         ) from None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def index_line(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, separators=(",", ":")) + "\n").encode()


def record_for(meta: dict[str, Any], file: str, offset: int, data: bytes) -> dict[str, Any]:
    """The index line of an archive of ``data`` at ``file:offset`` with this ``meta.json``."""
    return {"index": meta["index"], "file": file, "offset": offset, "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(), **{k: meta[k] for k in META_KEYS if k != "index"}}


class DatasetWriter:
    """Append episodes to a dataset directory, each one atomically (see the module docstring).

    Args:
        path: the dataset directory (created if missing).
        env_id: the env the episodes come from (stored in the manifest).
        observation_space: its observation space (stored in the manifest as JSON).
        action_space: its action space (stored in the manifest as JSON).
        source: the policy source (``random``, ``sb3:PPO:model.zip``, a run directory, ...).
        env_kwargs: keyword arguments the env was made with (replay rebuilds the env from them).
        append: add to an existing dataset; refused when its env or spaces differ, or when its index
            is damaged. Without it an existing dataset is an error (nothing is overwritten).
        fsync: also flush every episode to the disk (power-loss safety; ~6 ms per episode here).
    """

    def __init__(self, path: str | Path, env_id: str, observation_space: gym.Space, action_space: gym.Space,
                 source: str, env_kwargs: dict[str, Any] | None = None, append: bool = False,
                 fsync: bool = False) -> None:
        self.path = Path(path)
        self.source = str(source)
        self.fsync = fsync
        self._fd = self._pack_fd = -1
        obs_json, act_json = space_to_json(observation_space), space_to_json(action_space)
        self.observation_space, self.action_space = observation_space, action_space
        env_kwargs = _jsonable(dict(env_kwargs or {}), "env_kwargs")
        exists = os.path.lexists(self.path / MANIFEST)
        if exists and not append:
            raise RLKitError(f"dataset {self.path} already exists; pass append=True (CLI: --append) to add "
                             f"episodes or choose another --out")
        raw: dict[str, Any] = {}
        if exists:
            raw = read_manifest(self.path)
            ours = {"env": bare_id(env_id), "env_kwargs": env_kwargs, "observation space": obs_json,
                    "action space": act_json}
            theirs = {"env": bare_id(raw["env_id"]), "env_kwargs": raw["env_kwargs"],
                      "observation space": raw["observation_space"], "action space": raw["action_space"]}
            shown = {"env": (raw["env_id"], env_id), "env_kwargs": (raw["env_kwargs"], env_kwargs),
                     "observation space": (space_brief(space_from_json(raw["observation_space"])),
                                           space_brief(observation_space)),
                     "action space": (space_brief(space_from_json(raw["action_space"])), space_brief(action_space))}
            diffs = [f"{key} {shown[key][0]} (not {shown[key][1]})" for key in ours if ours[key] != theirs[key]]
            if diffs:
                raise RLKitError(f"cannot append to {self.path}: it holds {'; '.join(diffs)}; "
                                 f"record into a new dataset")
            episodes_dir(self.path)
        else:
            if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
                raise RLKitError(f"{self.path} exists and is not an rlkit dataset; choose another --out")
            (self.path / EPISODE_DIR).mkdir(parents=True, exist_ok=True)
        index_existed = os.path.lexists(self.path / INDEX)
        if exists and not index_existed:  # refuse before creating anything
            coverage = check_coverage(self.path, [], 0, index_exists=False)
            if coverage.damage:
                raise RLKitError(f"cannot append: {coverage_error(self.path, coverage)}")
        self._fd = open_regular(self.path / INDEX, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            self._fd = -1
            raise RLKitError(f"another process is writing to {self.path}; wait for it to finish") from None
        try:
            self._next = self._settle(index_existed) if exists else 0
        except BaseException:
            self.close()
            raise
        self._pack_rel, self._pack_size = "", 0  # this session's pack, created on its first episode
        if not exists or raw.get("format_version", FORMAT_VERSION) < FORMAT_VERSION:
            manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "env_id": env_id,
                        "env_kwargs": env_kwargs, "observation_space": obs_json, "action_space": act_json,
                        "source": self.source, "versions": versions(),
                        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            if exists:  # an upgrade keeps what the manifest said, and says from which format
                manifest = {**raw, "format_version": FORMAT_VERSION, "upgraded_from": raw["format_version"]}
            atomic_write_text(self.path / MANIFEST, json.dumps(manifest, indent=1) + "\n", fsync=self.fsync,
                              home=self.path)

    def _settle(self, index_existed: bool) -> int:
        """Apply rules 1-3 of the module docstring; returns the next episode index."""
        data = read_regular(self.path / INDEX)
        records, skipped = read_index(self.path, skip_corrupt=True)
        if skipped:
            raise RLKitError(f"cannot append: {skipped[0][1]}; rebuild the index with `rlkit demos repair {self.path}`")
        lines, _ = index_lines(self.path)
        coverage = check_coverage(self.path, records, len(lines), index_existed)
        if coverage.damage:  # refused before anything changes
            raise RLKitError(f"cannot append: {coverage_error(self.path, coverage)}")
        keep = data.rfind(b"\n") + 1
        if keep != len(data):
            os.ftruncate(self._fd, keep)  # rule 1: a line without its newline was never committed
        next_index = len(lines)
        for tail in sorted(coverage.tails, key=lambda t: not t["complete"]):
            path = episode_file(self.path, tail["file"])
            fd = open_regular(path, os.O_RDWR)
            try:
                if tail["complete"]:  # rule 3: a finished episode whose line the kill lost
                    archive = os.pread(fd, tail["bytes"], tail["offset"])
                    meta = tail["meta"]
                    try:
                        decode_episode(archive, self.observation_space, self.action_space, meta["length"])
                    except (ArchiveError, ValueError) as e:
                        raise RLKitError(f"cannot append to {self.path}: the last, uncommitted archive in {path} "
                                         f"is damaged ({e}); run `rlkit demos repair {self.path}`") from None
                    self._commit_line(index_line(record_for(meta, tail["file"], tail["offset"], archive)))
                    next_index += 1
                else:  # rule 3: a torn archive holds no committed episode
                    os.ftruncate(fd, tail["offset"])
            finally:
                os.close(fd)
            if not tail["complete"] and tail["offset"] == 0:
                os.unlink(path)
        fresh = episodes_dir(self.path) / pack_name(next_index).split("/", 1)[1]
        with contextlib.suppress(FileNotFoundError):
            if os.lstat(fresh).st_size == 0:
                os.unlink(fresh)  # a session killed between creating its pack and writing to it
        return next_index

    def add_episode(self, obs: Any, actions: Any, terminated: bool, truncated: bool, seed: int | None,
                    options: dict[str, Any] | None = None, rewards: Any = None,
                    episode_return: float | None = None) -> int:
        """Write one episode (obs T+1 long, actions T long) and commit it; returns its index."""
        if self._fd < 0:
            raise RLKitError(f"the writer of {self.path} is closed")
        obs = np.asarray(obs, dtype=self.observation_space.dtype)
        actions = np.asarray(actions, dtype=self.action_space.dtype)
        T = len(actions)
        if obs.shape != (T + 1, *self.observation_space.shape):
            raise RLKitError(f"episode obs must have shape {(T + 1, *self.observation_space.shape)} (T+1 with "
                             f"T={T} actions); got {obs.shape}")
        if actions.shape[1:] != self.action_space.shape:
            raise RLKitError(f"episode actions must have shape (T, {self.action_space.shape}); got {actions.shape}")
        if isinstance(self.action_space, gym.spaces.Discrete) and T:
            lo, hi = self.action_space.start, self.action_space.start + self.action_space.n - 1
            if actions.min() < lo or actions.max() > hi:
                raise RLKitError(f"discrete actions must lie in [{lo}, {hi}]; got {actions.min()}..{actions.max()}")
        if rewards is not None:
            rewards = np.asarray(rewards, dtype=np.float32)
            if rewards.shape != (T,):
                raise RLKitError(f"rewards must have shape ({T},); got {rewards.shape}")
        index = self._next
        meta = {"index": index, "length": T, "terminated": bool(terminated), "truncated": bool(truncated),
                "seed": None if seed is None else int(seed), "options": _jsonable(options, "reset options"),
                "rewards": rewards is not None,
                "episode_return": None if episode_return is None else float(episode_return),
                "source": self.source}
        data = encode_episode(obs, actions, rewards, meta)
        if self._pack_fd < 0:
            # O_EXCL: a session never writes into a pack that already exists (rule 4)
            self._pack_rel, self._pack_size = pack_name(index), 0
            try:
                self._pack_fd = os.open(episodes_dir(self.path) / self._pack_rel.split("/", 1)[1],
                                        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_NOFOLLOW, 0o644)
            except FileExistsError:
                raise RLKitError(f"{self.path / self._pack_rel} already exists although no index line names "
                                 f"it; run `rlkit demos repair {self.path}`") from None
        try:
            _write_all(self._pack_fd, data)
            if self.fsync:
                os.fsync(self._pack_fd)
        except BaseException as e:
            os.ftruncate(self._pack_fd, self._pack_size)  # e.g. a full disk: our own uncommitted bytes
            if isinstance(e, Exception) and is_disk_full(e):
                raise disk_full_error(self.path / self._pack_rel) from None
            raise
        record = record_for(meta, self._pack_rel, self._pack_size, data)
        self._pack_size += len(data)
        self._commit_line(index_line(record))
        if self.fsync:
            os.fsync(self._fd)
        self._next += 1
        return index

    def _commit_line(self, line: bytes) -> None:
        """The commit point: one write of one index line on the O_APPEND descriptor."""
        try:
            written = os.write(self._fd, line)
        except OSError as e:  # nothing of the line was written: the episode stays uncommitted
            if is_disk_full(e):
                raise disk_full_error(self.path / INDEX) from None
            raise
        if written != len(line):
            raise RLKitError(f"short write to {self.path / INDEX}; is the disk full?")

    @property
    def num_episodes(self) -> int:
        """Episodes in the dataset, including those there before this writer opened it."""
        return self._next

    def close(self) -> None:
        if self._pack_fd >= 0:
            os.close(self._pack_fd)
            self._pack_fd = -1
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: S110  (at interpreter exit module globals may already be gone)
            pass
