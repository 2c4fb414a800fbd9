"""The on-disk demonstration dataset: crash-safe writer, checksummed reader, learner views.

Layout of a dataset directory (format version 2; the README's "Demonstrations" section is the spec)::

    DATASET/
      manifest.json        header: format, env id and kwargs, spaces, versions, source (written once, atomically)
      episodes.jsonl       the index: one JSON line per committed episode (file, offset, bytes, sha256, seed, ...)
      episodes/000000.pack one pack per writer session: its episodes' .npz archives back to back, each
                           holding obs (T+1, ...), actions (T, ...), [rewards (T,)]

Why this shape:
    * An episode counts once its index line is appended, by one ``write(2)`` of a short line on an
      ``O_APPEND`` descriptor, after its archive is in the pack. Readers only read byte ranges named by
      complete index lines, so none sees half an episode. Appending is O(1) per episode (rewriting a
      JSON manifest each time is O(N^2) over a recording); a line cut by a crash has no trailing
      newline and is ignored, and the next writer trims it, and the pack's uncommitted tail with it.
      A recorder killed with SIGKILL therefore keeps every committed episode.
    * Packs, not a file per episode: creating a file cost ~0.8 ms of kernel time here, as much as
      recording 40 CartPole steps, while appending to an open file costs microseconds. Each session
      starts its own pack (named by its first episode), so appending never rewrites committed bytes.
    * ``manifest.json`` is written last when a dataset is created, so its presence marks a dataset.
    * Frame-stacked image observations (Atari's 4x84x84) are stored once per frame ("stacked"
      encoding) and rebuilt on load, so a dataset costs about what its frames cost compressed.
    * ``fsync=True`` also survives power loss at ~6 ms per episode here; a killed process does not
      need it (the page cache outlives the process), so it is off by default.
    * Format version 1 (one ``episodes/NNNNNN.npz`` per episode, no ``offset``) is still read.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import struct
import sys
import time
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np

import rlkit
from rlkit.checkpoint import atomic_write_text
from rlkit.errors import RLKitError
from rlkit.spaces import space_brief, space_from_json, space_to_json  # noqa: F401  (re-exported)

FORMAT = "rlkit-demos"
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
INDEX = "episodes.jsonl"
EPISODE_DIR = "episodes"
_SKIP_HINT = "pass skip_corrupt=True (CLI: --skip-corrupt) to read the other episodes"


# ---------------------------------------------------------------------------------------------
# Data types
# ---------------------------------------------------------------------------------------------

class Transitions(NamedTuple):
    """Flat (obs, action, next obs, done) arrays over all episodes, numpy or torch.

    ``dones[t]`` is True on the last step of an episode that *terminated* (not on truncation),
    like ``imitation.data.types.Transitions``: a learner must not bootstrap there.
    """

    obs: Any
    acts: Any
    next_obs: Any
    dones: Any


@dataclass
class Episode:
    """One demonstration. ``obs`` is T+1 long (it includes the final observation), ``actions`` T long.

    ``rewards`` is None unless the recording kept them; ``episode_return`` is metadata for reports
    (learners never read it) and may be None. ``index`` is the episode's number in its dataset on disk.
    """

    obs: np.ndarray
    actions: np.ndarray
    terminated: bool
    truncated: bool
    seed: int | None
    options: dict[str, Any] | None = None
    rewards: np.ndarray | None = None
    episode_return: float | None = None
    index: int = 0
    source: str | None = None

    @property
    def length(self) -> int:
        return len(self.actions)


class Dataset:
    """Episodes plus the dataset's metadata (``meta``; spaces as gymnasium spaces).

    ``len(dataset)`` is the number of episodes; iterating yields :class:`Episode` objects.
    """

    def __init__(self, meta: dict[str, Any], episodes: list[Episode], path: Path | None = None,
                 skipped: Sequence[tuple[int, str]] = ()) -> None:
        self.meta = meta
        self.episodes = episodes
        self.path = path
        self.skipped = list(skipped)  # (episode index, reason) left out by skip_corrupt

    def __len__(self) -> int:
        return len(self.episodes)

    def __iter__(self) -> Iterator[Episode]:
        return iter(self.episodes)

    def __getitem__(self, i: int) -> Episode:
        return self.episodes[i]

    def __repr__(self) -> str:
        return f"Dataset({self.env_id!r}, episodes={len(self)}, steps={self.num_steps}, path={str(self.path)!r})"

    @property
    def env_id(self) -> str:
        return self.meta["env_id"]

    @property
    def observation_space(self) -> gym.Space:
        return self.meta["observation_space"]

    @property
    def action_space(self) -> gym.Space:
        return self.meta["action_space"]

    @property
    def num_steps(self) -> int:
        return sum(ep.length for ep in self.episodes)

    @property
    def has_rewards(self) -> bool:
        return bool(self.episodes) and all(ep.rewards is not None for ep in self.episodes)

    def transitions(self, torch: bool = False) -> Transitions:
        """All episodes as flat transitions (episode order); ``torch=True`` returns tensors sharing memory."""
        if not self.episodes:
            raise RLKitError(f"dataset {self.path} has no episodes; record some with `rlkit demos record`")
        eps = self.episodes
        obs = np.concatenate([ep.obs[:-1] for ep in eps])
        next_obs = np.concatenate([ep.obs[1:] for ep in eps])
        acts = np.concatenate([ep.actions for ep in eps])
        dones = np.zeros(len(acts), dtype=bool)
        ends = np.cumsum([ep.length for ep in eps]) - 1
        terminal = np.array([ep.terminated and ep.length > 0 for ep in eps])
        dones[ends[terminal]] = True
        if not torch:
            return Transitions(obs, acts, next_obs, dones)
        import torch as th

        return Transitions(*(th.from_numpy(np.ascontiguousarray(a)) for a in (obs, acts, next_obs, dones)))

    def subset(self, indices: Sequence[int]) -> Dataset:
        """The episodes at these positions (0..len-1, not on-disk indices), sharing ``meta``."""
        try:
            episodes = [self.episodes[int(i)] for i in indices]
        except IndexError:
            raise RLKitError(f"subset index out of range: the dataset has {len(self)} episodes") from None
        return Dataset(self.meta, episodes, self.path)

    def split(self, val_fraction: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
        """Split by whole episodes into (train, validation); at least one episode on each side."""
        if not 0.0 < val_fraction < 1.0:
            raise RLKitError(f"val_fraction must be in (0, 1); got {val_fraction}")
        if len(self) < 2:
            raise RLKitError(f"cannot split {len(self)} episode(s) into train and validation; record at least 2")
        order = np.random.default_rng(seed).permutation(len(self))
        num_val = min(max(1, round(val_fraction * len(self))), len(self) - 1)
        return self.subset(sorted(order[num_val:])), self.subset(sorted(order[:num_val]))

    def check_env(self, env_id: str | None = None, observation_space: gym.Space | None = None,
                  action_space: gym.Space | None = None) -> None:
        """Raise a one-line RLKitError when the dataset does not match this env (learners call it)."""
        if env_id is not None and _bare_id(env_id) != _bare_id(self.env_id):
            raise RLKitError(f"dataset {self.path} was recorded on {self.env_id}, not {env_id}; "
                             f"record demonstrations for {env_id} or train on {self.env_id}")
        for name, space in (("observation", observation_space), ("action", action_space)):
            if space is not None and space_to_json(space) != space_to_json(self.meta[f"{name}_space"]):
                raise RLKitError(f"dataset {self.path} has {name} space "
                                 f"{space_brief(self.meta[f'{name}_space'])}, but the env has {space_brief(space)}")


def _bare_id(env_id: str) -> str:
    """``pkg.module:Env-v0`` and ``Env-v0`` name the same env."""
    return env_id.rpartition(":")[2]


# ---------------------------------------------------------------------------------------------
# Episode files
# ---------------------------------------------------------------------------------------------

def _is_frame_stack(obs: np.ndarray) -> bool:
    """True when obs[t+1] is obs[t] shifted by one frame along axis 1 (gymnasium's FrameStack)."""
    return (obs.ndim >= 4 and obs.shape[1] > 1 and len(obs) > 0
            and bool(np.array_equal(obs[1:, :-1], obs[:-1, 1:])))


def encode_episode(obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray | None) -> bytes:
    """The compressed .npz bytes of one episode."""
    arrays: dict[str, np.ndarray] = {"actions": actions}
    if _is_frame_stack(obs):
        # every frame once: the first stack, then the newest frame of each later observation
        arrays["obs_frames"] = np.concatenate([obs[0], obs[1:, -1]])
        arrays["obs_stack"] = np.array(obs.shape[1])
    else:
        arrays["obs"] = obs
    if rewards is not None:
        arrays["rewards"] = rewards
    return _npz_bytes(arrays)


def _npy_bytes(arr: np.ndarray) -> bytes:
    """``arr`` as a version 1.0 .npy file (what ``np.save`` writes for a C-order array)."""
    header = f"{{'descr': {np.lib.format.dtype_to_descr(arr.dtype)!r}, 'fortran_order': False, 'shape': {arr.shape}, }}"
    # numpy pads the header with spaces and a newline so that the data starts 64-byte aligned
    pad = -(len(np.lib.format.MAGIC_PREFIX) + 4 + len(header) + 1) % 64
    header_bytes = (header + " " * pad + "\n").encode("latin1")
    return b"".join((np.lib.format.MAGIC_PREFIX, b"\x01\x00", len(header_bytes).to_bytes(2, "little"),
                     header_bytes, np.ascontiguousarray(arr).tobytes()))


# zip records (PKWARE APPNOTE 4.3.7, 4.3.12, 4.3.16); times are 1980-01-01 00:00 so that the bytes, and the
# checksum, are a function of the data alone
_ZIP_LOCAL = struct.Struct("<IHHHHHIIIHH")
_ZIP_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_ZIP_END = struct.Struct("<IHHHHIIH")
_DOS_DATE_1980 = (1 << 5) | 1


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """A standard .npz (``np.load`` and ``zipfile`` read it) with a compression choice per array.

    Integer and uint8 image arrays are deflated (actions shrink 40x, Atari frames 10x); float arrays
    are stored, because physics states barely compress (CartPole obs: 8.0 kB -> 7.9 kB) while
    deflating them was half of the recorder's per-episode cost. The zip is assembled here rather than
    by ``zipfile``, whose per-member bookkeeping cost ~0.2 ms per CartPole episode, a quarter of the
    recorder's per-episode work (no zip64: an episode file stays far below 4 GiB).
    """
    parts: list[bytes] = []
    central: list[bytes] = []
    offset = 0
    for name, arr in arrays.items():
        raw = _npy_bytes(arr)
        if arr.dtype.kind == "f":
            method, data = 0, raw
        else:
            deflate = zlib.compressobj(6, zlib.DEFLATED, -15)  # raw deflate, np.savez_compressed's level
            method, data = 8, deflate.compress(raw) + deflate.flush()
        file_name = f"{name}.npy".encode()
        crc = zlib.crc32(raw)
        if offset + len(data) >= 2**32 or len(raw) >= 2**32:  # the zip fields are 32-bit
            raise RLKitError(f"episode array {name!r} is too large for one episode file ({len(raw)} bytes)")
        local = _ZIP_LOCAL.pack(0x04034B50, 20, 0, method, 0, _DOS_DATE_1980, crc, len(data), len(raw),
                                len(file_name), 0)
        central.append(_ZIP_CENTRAL.pack(0x02014B50, 20, 20, 0, method, 0, _DOS_DATE_1980, crc, len(data),
                                         len(raw), len(file_name), 0, 0, 0, 0, 0, offset) + file_name)
        parts += (local, file_name, data)
        offset += len(local) + len(file_name) + len(data)
    directory = b"".join(central)
    parts += (directory, _ZIP_END.pack(0x06054B50, 0, 0, len(central), len(central), len(directory), offset, 0))
    return b"".join(parts)


_NPY_HEADER = re.compile(r"""\{'descr': '([^']+)', 'fortran_order': False, 'shape': \(([0-9, ]*)\), \}""")


def _read_npy(raw: bytes) -> np.ndarray:
    """Parse a C-order .npy member without ``np.load``'s ast-based header parser.

    Loading 2,000 small episodes spent most of its time in that parser; numpy writes the header in
    one fixed form, which a regex reads. Any other header falls back to numpy's reader.
    """
    if raw[:6] == b"\x93NUMPY":
        size_bytes = 2 if raw[6] == 1 else 4
        start = 8 + size_bytes
        header_len = int.from_bytes(raw[8:start], "little")
        match = _NPY_HEADER.match(raw[start:start + header_len].decode("latin1"))
        if match:
            shape = tuple(int(n) for n in match.group(2).replace(" ", "").split(",") if n)
            arr = np.frombuffer(raw, dtype=np.dtype(match.group(1)), offset=start + header_len)
            return arr.reshape(shape).copy()  # a writable array that does not pin the file's bytes
    return np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)


def decode_episode(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        arrays = {name.removesuffix(".npy"): _read_npy(zf.read(name)) for name in zf.namelist()}
    actions = arrays["actions"]
    rewards = arrays.get("rewards")
    if "obs_frames" in arrays:
        frames, k = arrays["obs_frames"], int(arrays["obs_stack"])
        windows = np.lib.stride_tricks.sliding_window_view(frames, k, axis=0)  # (T+1, ..., k)
        obs = np.ascontiguousarray(np.moveaxis(windows, -1, 1))
    else:
        obs = arrays["obs"]
    return obs, actions, rewards


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _pack_file(first_index: int) -> str:
    return f"{EPISODE_DIR}/{first_index:06d}.pack"


class DataFiles:
    """The data files of one dataset, each opened once; reads and checks an episode's bytes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._files: dict[str, Any] = {}

    def _open(self, rel: str) -> Any:
        if rel not in self._files:
            try:
                self._files[rel] = open(self.root / rel, "rb")  # noqa: SIM115  (closed by close())
            except (FileNotFoundError, IsADirectoryError):
                self._files[rel] = None
        return self._files[rel]

    def episode_bytes(self, rec: dict[str, Any], verify: bool = True) -> bytes | None:
        """The episode's archive; one-line RLKitError naming the episode when it is missing, cut short or
        (``verify``) fails its checksum. With ``verify=False`` only the sizes are checked and None returned."""
        name = f"episode {rec['index']} ({self.root / rec['file']})"
        f = self._open(rec["file"])
        if f is None:
            raise RLKitError(f"{name} is missing")
        offset, size = int(rec.get("offset", 0)), int(rec["bytes"])  # format 1 records have no offset
        on_disk = max(0, min(size, os.fstat(f.fileno()).st_size - offset))
        if on_disk != size:
            raise RLKitError(f"{name} is truncated: {on_disk} of its {size} bytes are on disk")
        if not verify:
            return None
        data = os.pread(f.fileno(), size, offset)
        if hashlib.sha256(data).hexdigest() != rec["sha256"]:
            raise RLKitError(f"{name} is corrupt (sha256 checksum mismatch)")
        return data

    def close(self) -> None:
        for f in self._files.values():
            if f is not None:
                f.close()
        self._files.clear()

    def __enter__(self) -> DataFiles:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------

def read_manifest(path: str | Path) -> dict[str, Any]:
    """The raw (JSON) manifest of a dataset directory, with one-line errors."""
    path = Path(path)
    manifest = path / MANIFEST
    if not path.exists():
        raise RLKitError(f"dataset {path} does not exist; record one with `rlkit demos record --out {path}`")
    if not manifest.is_file():
        raise RLKitError(f"{path} is not an rlkit demonstration dataset (no {MANIFEST})")
    try:
        raw = json.loads(manifest.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise RLKitError(f"{manifest} is corrupt ({type(e).__name__}); the dataset header cannot be read") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise RLKitError(f"{manifest} is not an rlkit demonstration manifest")
    if int(raw.get("format_version", 0)) > FORMAT_VERSION:
        raise RLKitError(f"{path} uses format version {raw['format_version']}, newer than this rlkit reads "
                         f"({FORMAT_VERSION}); upgrade rlkit")
    return raw


def read_index(path: str | Path, skip_corrupt: bool = False) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
    """Committed index records (a line cut short by a crash is not committed) and skipped (line, reason)."""
    index_file = Path(path) / INDEX
    data = index_file.read_bytes() if index_file.exists() else b""
    lines = data.split(b"\n")[:-1]  # the part after the last newline was never committed
    records, skipped = [], []
    for n, line in enumerate(lines):
        try:
            rec = json.loads(line)
            if rec["index"] != n:
                raise ValueError("index mismatch")
            for key in ("file", "sha256", "bytes", "length", "terminated", "truncated"):
                rec[key]  # noqa: B018  (presence check)
            records.append(rec)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            reason = f"line {n + 1} of {index_file} (episode {n}) is corrupt"
            if not skip_corrupt:
                raise RLKitError(f"{reason}; {_SKIP_HINT}") from None
            skipped.append((n, reason))
    return records, skipped


def meta_from_manifest(raw: dict[str, Any]) -> dict[str, Any]:
    """The manifest with its spaces rebuilt as gymnasium spaces."""
    meta = dict(raw)
    meta["observation_space"] = space_from_json(raw["observation_space"])
    meta["action_space"] = space_from_json(raw["action_space"])
    return meta


def _load_episode(files: DataFiles, rec: dict[str, Any], meta: dict[str, Any]) -> Episode:
    data = files.episode_bytes(rec)
    name = f"episode {rec['index']} ({files.root / rec['file']})"
    try:
        obs, actions, rewards = decode_episode(data)
    except Exception as e:  # zipfile/zlib/numpy raise many types for damaged data
        raise RLKitError(f"{name} cannot be decoded ({type(e).__name__})") from None
    T = rec["length"]
    obs_shape = meta["observation_space"].shape
    if len(actions) != T or len(obs) != T + 1 or obs.shape[1:] != obs_shape:
        raise RLKitError(f"{name} has inconsistent shapes: obs {obs.shape}, actions {actions.shape}, length {T}")
    return Episode(obs=obs, actions=actions, terminated=bool(rec["terminated"]), truncated=bool(rec["truncated"]),
                   seed=rec.get("seed"), options=rec.get("options"), rewards=rewards,
                   episode_return=rec.get("episode_return"), index=rec["index"], source=rec.get("source"))


def load(path: str | Path, skip_corrupt: bool = False, env_id: str | None = None) -> Dataset:
    """Load a dataset directory, verifying every episode's checksum.

    Args:
        path: the dataset directory.
        skip_corrupt: leave out damaged, truncated or missing episodes (listed in ``dataset.skipped``,
            with a warning) instead of raising a one-line :class:`RLKitError` naming the first one.
        env_id: when given, raise unless the dataset was recorded on this env.
    """
    root = Path(path)
    meta = meta_from_manifest(read_manifest(root))
    records, skipped = read_index(root, skip_corrupt)
    episodes = []
    with DataFiles(root) as files:
        for rec in records:
            try:
                episodes.append(_load_episode(files, rec, meta))
            except RLKitError as e:
                if not skip_corrupt:
                    raise RLKitError(f"{e}; {_SKIP_HINT}") from None
                skipped.append((rec["index"], str(e)))
    if skipped:
        warnings.warn(f"skipped {len(skipped)} damaged episode(s) of {root}: "
                      + "; ".join(reason for _, reason in skipped[:3]), stacklevel=2)
    dataset = Dataset(meta, episodes, root, sorted(skipped))
    if env_id is not None:
        dataset.check_env(env_id)
    return dataset


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

def versions() -> dict[str, str]:
    return {"rlkit": rlkit.__version__, "gymnasium": gym.__version__, "numpy": np.__version__,
            "python": sys.version.split()[0]}


def _jsonable(value: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        raise RLKitError(f"{what} must be JSON-serialisable (numbers, strings, lists, dicts); got {value!r}"
                         ) from None


class DatasetWriter:
    """Append episodes to a dataset directory, each one atomically.

    Args:
        path: the dataset directory (created if missing).
        env_id: the env the episodes come from (stored in the manifest, like the spaces).
        observation_space: the env's observation space.
        action_space: the env's action space.
        source: the policy source (``random``, ``sb3:PPO:model.zip``, a run directory, ...).
        env_kwargs: keyword arguments the env was made with (replay rebuilds the env from them).
        append: add to an existing dataset; refused when its env or spaces differ. Without it an
            existing dataset is an error (nothing is overwritten).
        fsync: also flush every episode to the disk (power-loss safety; ~6 ms per episode here).
    """

    def __init__(self, path: str | Path, env_id: str, observation_space: gym.Space, action_space: gym.Space,
                 source: str, env_kwargs: dict[str, Any] | None = None, append: bool = False,
                 fsync: bool = False) -> None:
        self.path = Path(path)
        self.source = str(source)
        self.fsync = fsync
        obs_json, act_json = space_to_json(observation_space), space_to_json(action_space)
        self.observation_space, self.action_space = observation_space, action_space
        env_kwargs = _jsonable(dict(env_kwargs or {}), "env_kwargs")
        exists = (self.path / MANIFEST).exists()
        if exists and not append:
            raise RLKitError(f"dataset {self.path} already exists; pass append=True (CLI: --append) to add "
                             f"episodes or choose another --out")
        if exists:
            raw = read_manifest(self.path)
            ours = {"env": _bare_id(env_id), "env_kwargs": env_kwargs, "observation space": obs_json,
                    "action space": act_json}
            theirs = {"env": _bare_id(raw["env_id"]), "env_kwargs": raw["env_kwargs"],
                      "observation space": raw["observation_space"], "action space": raw["action_space"]}
            shown = {"env": (raw["env_id"], env_id), "env_kwargs": (raw["env_kwargs"], env_kwargs),
                     "observation space": (space_brief(space_from_json(raw["observation_space"])),
                                           space_brief(observation_space)),
                     "action space": (space_brief(space_from_json(raw["action_space"])), space_brief(action_space))}
            diffs = [f"{key} {shown[key][0]} (not {shown[key][1]})" for key in ours if ours[key] != theirs[key]]
            if diffs:
                raise RLKitError(f"cannot append to {self.path}: it holds {'; '.join(diffs)}; "
                                 f"record into a new dataset")
        else:
            if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
                raise RLKitError(f"{self.path} exists and is not an rlkit dataset; choose another --out")
            (self.path / EPISODE_DIR).mkdir(parents=True, exist_ok=True)
        (self.path / EPISODE_DIR).mkdir(exist_ok=True)
        self._fd = os.open(self.path / INDEX, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            raise RLKitError(f"another process is writing to {self.path}; wait for it to finish") from None
        self._trim_torn_tail()
        self._pack_fd, self._pack_rel, self._pack_size = -1, "", 0  # this session's pack, opened on its first episode
        if not exists:
            manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "env_id": env_id,
                        "env_kwargs": env_kwargs, "observation_space": obs_json, "action_space": act_json,
                        "source": self.source, "versions": versions(),
                        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            atomic_write_text(self.path / MANIFEST, json.dumps(manifest, indent=1) + "\n", fsync=self.fsync)
        self.num_added = 0

    def _trim_torn_tail(self) -> None:
        """Cut what a crash left uncommitted: a last index line without its newline, the pack's tail after
        the last committed episode. Sets the next episode index."""
        data = (self.path / INDEX).read_bytes()
        keep = data.rfind(b"\n") + 1
        if keep != len(data):
            os.ftruncate(self._fd, keep)
        self._next = data.count(b"\n")
        (self.path / _pack_file(self._next)).unlink(missing_ok=True)  # a session killed before its first commit
        if self._next:
            last = data[data.rfind(b"\n", 0, keep - 1) + 1:keep]
            with contextlib.suppress(ValueError, KeyError, TypeError, OSError):
                rec = json.loads(last)
                pack = self.path / rec["file"]
                if "offset" in rec and pack.stat().st_size > rec["offset"] + rec["bytes"]:
                    os.truncate(pack, rec["offset"] + rec["bytes"])

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
        data = encode_episode(obs, actions, rewards)
        if self._pack_fd < 0:
            # O_TRUNC: a pack of this name holds nothing committed (a session killed before its first commit)
            self._pack_rel, self._pack_size = _pack_file(index), 0
            self._pack_fd = os.open(self.path / self._pack_rel, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND,
                                    0o644)
        try:
            _write_all(self._pack_fd, data)
            if self.fsync:
                os.fsync(self._pack_fd)
        except BaseException:
            os.ftruncate(self._pack_fd, self._pack_size)  # e.g. a full disk: later episodes must start here
            raise
        offset, self._pack_size = self._pack_size, self._pack_size + len(data)
        record = {"index": index, "file": self._pack_rel, "offset": offset, "bytes": len(data),
                  "sha256": hashlib.sha256(data).hexdigest(),
                  "length": T, "terminated": bool(terminated), "truncated": bool(truncated),
                  "seed": None if seed is None else int(seed), "options": _jsonable(options, "reset options"),
                  "rewards": rewards is not None,
                  "episode_return": None if episode_return is None else float(episode_return),
                  "source": self.source}
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        # the commit point: one write of one line on an O_APPEND descriptor
        if os.write(self._fd, line) != len(line):
            raise RLKitError(f"short write to {self.path / INDEX}; is the disk full?")
        if self.fsync:
            os.fsync(self._fd)
        self._next += 1
        self.num_added += 1
        return index

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

