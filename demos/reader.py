"""Reading a dataset: the manifest, the index, the episodes' bytes, and :func:`load`.

Nothing read from a dataset is trusted (README, "Reliability"):

* every file is opened without following symlinks and without blocking (a FIFO cannot hang a
  reader), and must be a regular file;
* an index line's ``file`` must be the plain name of a file in ``episodes/`` (``../x``, absolute
  paths and nested names are refused before anything is opened);
* an archive's member sizes are checked against the declared shapes before inflating
  (:mod:`demos.archive`);
* every pack byte must be covered by an index line, except the one uncommitted archive a killed
  writer may leave at the end of its pack (:func:`check_coverage`); anything else means a damaged
  index, reported in one line that points at ``rlkit demos repair``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlkit.demos.archive import decode_episode, read_meta
from rlkit.demos.codec import ArchiveError, archive_end
from rlkit.demos.dataset import (
    EPISODE_DIR,
    FORMAT,
    FORMAT_VERSION,
    IGNORED,
    INDEX,
    MANIFEST,
    Dataset,
    Episode,
    space_from_json,
)

from rlkit.errors import RLKitError
from rlkit.safe_files import file_kind

SKIP_HINT = "pass skip_corrupt=True (CLI: --skip-corrupt) to read the other episodes"
_EPISODE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


# ---------------------------------------------------------------------------------------------
# Files: regular files inside the dataset only
# ---------------------------------------------------------------------------------------------

def open_regular(path: Path, flags: int = os.O_RDONLY, mode: int = 0o644) -> int:
    """An fd of ``path``, which must be a regular file and not a symlink; one-line RLKitError otherwise.

    ``O_NONBLOCK`` makes opening a FIFO return at once (then refused by the type check) instead of
    waiting for a writer; it has no effect on regular files.
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except FileNotFoundError:
        raise RLKitError(f"{path} is missing") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise RLKitError(f"{path} is a symbolic link; a dataset holds plain files only") from None
        if e.errno == errno.EISDIR:
            raise RLKitError(f"{path} is a directory, not a regular file") from None
        if e.errno == errno.ENXIO:  # opening a FIFO for writing without a reader
            raise RLKitError(f"{path} is a FIFO, not a regular file") from None
        raise RLKitError(f"cannot open {path} ({e.strerror})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise RLKitError(f"{path} is {file_kind(mode)}, not a regular file")
    return fd


def read_regular(path: Path) -> bytes:
    fd = open_regular(path)
    try:
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


def episodes_dir(root: Path) -> Path:
    """``root/episodes``, which must be a real directory (not a symlink out of the dataset)."""
    path = root / EPISODE_DIR
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        raise RLKitError(f"{path} is missing") from None
    if not stat.S_ISDIR(mode):
        raise RLKitError(f"{path} is {file_kind(mode)}; it must be the dataset's own directory")
    return path


def episode_file(root: Path, rel: Any, where: str = "") -> Path:
    """The path of an index line's ``file``: the plain name of a file in ``episodes/``, or an error."""
    ok = isinstance(rel, str) and rel.startswith(EPISODE_DIR + "/") \
        and _EPISODE_NAME.fullmatch(rel[len(EPISODE_DIR) + 1:]) is not None and ".." not in rel
    if not ok:
        raise RLKitError(f"{where or root / INDEX} names the file {rel!r}; an index may only name plain files "
                         f"in {EPISODE_DIR}/ (the index is damaged or was made to escape the dataset)")
    return episodes_dir(root) / rel[len(EPISODE_DIR) + 1:]


# ---------------------------------------------------------------------------------------------
# Manifest and index
# ---------------------------------------------------------------------------------------------

_MANIFEST_TYPES = {"format": str, "format_version": int, "env_id": str, "env_kwargs": dict,
                   "observation_space": dict, "action_space": dict, "source": str, "versions": dict}


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The raw (JSON) manifest of a dataset directory, checked field by field, with one-line errors."""
    path = Path(path)
    manifest = path / MANIFEST
    if not path.exists():
        raise RLKitError(f"dataset {path} does not exist; record one with `rlkit demos record --out {path}`")
    if not path.is_dir():
        raise RLKitError(f"{path} is not a directory, so not an rlkit demonstration dataset")
    if not os.path.lexists(manifest):
        raise RLKitError(f"{path} is not an rlkit demonstration dataset (no {MANIFEST})")
    try:
        raw = json.loads(read_regular(manifest))
    except (ValueError, UnicodeDecodeError) as e:
        raise RLKitError(f"{manifest} is corrupt ({type(e).__name__}); the dataset header cannot be read") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise RLKitError(f"{manifest} is not an rlkit demonstration manifest")
    for key, kind in _MANIFEST_TYPES.items():
        value = raw.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise RLKitError(f"{manifest} is corrupt: {key!r} must be a {kind.__name__}, got {value!r:.60}")
    if raw["format_version"] > FORMAT_VERSION:
        raise RLKitError(f"{path} uses format version {raw['format_version']}, newer than this rlkit reads "
                         f"({FORMAT_VERSION}); upgrade rlkit")
    for key in ("observation_space", "action_space"):
        try:
            space_from_json(raw[key], where=f"{manifest} ({key})")
        except RLKitError:
            raise  # an absurd size or a foreign dtype, already named with the file
        except Exception as e:  # the space decoder raises many types for a malformed description
            raise RLKitError(f"{manifest} is corrupt: {key} cannot be read ({type(e).__name__})") from None
    return raw


def _check_record(rec: Any, n: int, root: Path) -> None:
    """Raise ValueError unless ``rec`` is a well-formed index record for line ``n`` (0-based)."""

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if not isinstance(rec, dict) or rec.get("index") != n or not is_int(rec.get("index")):
        raise ValueError("not a record of this line")
    if not (is_int(rec.get("bytes")) and rec["bytes"] > 0 and is_int(rec.get("length")) and rec["length"] >= 0):
        raise ValueError("bad bytes or length")
    if "offset" in rec and not (is_int(rec["offset"]) and rec["offset"] >= 0):
        raise ValueError("bad offset")
    if not (isinstance(rec.get("sha256"), str) and _SHA256.fullmatch(rec["sha256"])):
        raise ValueError("bad sha256")
    if not (isinstance(rec.get("terminated"), bool) and isinstance(rec.get("truncated"), bool)):
        raise ValueError("bad flags")
    if rec.get("seed") is not None and not is_int(rec["seed"]):
        raise ValueError("bad seed")
    if rec.get("options") is not None and not isinstance(rec["options"], dict):
        raise ValueError("bad options")
    if rec.get("episode_return") is not None and not isinstance(rec["episode_return"], (int, float)):
        raise ValueError("bad episode_return")
    if rec.get("source") is not None and not isinstance(rec["source"], str):
        raise ValueError("bad source")


def index_lines(root: Path) -> tuple[list[bytes], bool]:
    """(the committed lines of the index, whether the index file exists); a line without its newline
    was cut by a crash and is not committed."""
    index_file = root / INDEX
    if not os.path.lexists(index_file):
        return [], False
    return read_regular(index_file).split(b"\n")[:-1], True


def read_index(path: str | Path, skip_corrupt: bool = False) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
    """Committed index records and skipped (line, reason).

    A line that is not a well-formed record is corrupt (an error, or skipped with ``skip_corrupt``);
    a record naming a file outside ``episodes/`` is always an error: it is tampering, not damage.
    """
    root = Path(path)
    lines, _ = index_lines(root)
    records, skipped = [], []
    for n, line in enumerate(lines):
        try:
            rec = json.loads(line)
            _check_record(rec, n, root)
        except (ValueError, UnicodeDecodeError):
            reason = f"line {n + 1} of {root / INDEX} (episode {n}) is corrupt"
            if not skip_corrupt:
                raise RLKitError(f"{reason}; {SKIP_HINT}, or rebuild the index: `rlkit demos repair {root}`") from None
            skipped.append((n, reason))
            continue
        episode_file(root, rec.get("file"), f"line {n + 1} of {root / INDEX}")
        records.append(rec)
    return records, skipped


def meta_from_manifest(raw: dict[str, Any]) -> dict[str, Any]:
    """The manifest with its spaces rebuilt as gymnasium spaces."""
    meta = dict(raw)
    meta["observation_space"] = space_from_json(raw["observation_space"])
    meta["action_space"] = space_from_json(raw["action_space"])
    return meta


# ---------------------------------------------------------------------------------------------
# Coverage: every pack byte belongs to an index line or to a dead writer's one uncommitted archive
# ---------------------------------------------------------------------------------------------

@dataclass
class Coverage:
    """What :func:`check_coverage` found. ``damage``: one-line descriptions of uncovered bytes that no
    crash explains; ``tails``: the uncommitted archive a killed writer left at the end of its pack
    ({"file", "offset", "bytes", "complete", "meta"}; the pack of the last index line and the pack
    named after the next episode are the only places one can be)."""

    damage: list[str] = field(default_factory=list)
    tails: list[dict[str, Any]] = field(default_factory=list)


def read_ignored(root: Path) -> list[dict[str, Any]]:
    """The byte ranges ``rlkit demos repair`` could not index and set aside (``ignored.jsonl``)."""
    path = root / IGNORED
    if not os.path.lexists(path):
        return []
    ranges = []
    for n, line in enumerate(read_regular(path).split(b"\n")[:-1]):
        try:
            item = json.loads(line)
            ok = isinstance(item, dict) and all(isinstance(item.get(k), int) and not isinstance(item.get(k), bool)
                                                and item[k] >= 0 for k in ("offset", "bytes"))
        except (ValueError, UnicodeDecodeError):
            ok = False
        if not ok:
            raise RLKitError(f"line {n + 1} of {path} is corrupt; it lists byte ranges set aside by "
                             f"`rlkit demos repair`: run it again")
        episode_file(root, item.get("file"), f"line {n + 1} of {path}")
        ranges.append(item)
    return ranges


def pack_name(first_index: int) -> str:
    return f"{EPISODE_DIR}/{first_index:06d}.pack"


def _classify_tail(fd: int, start: int, size: int, next_index: int) -> tuple[bool, dict[str, Any] | None]:
    """(is this one uncommitted archive of episode ``next_index``?, its meta when complete)."""
    data = os.pread(fd, size - start, start)
    end = archive_end(data, 0)
    if end is None:
        return True, None  # a torn archive: not a complete episode, so never a committed one
    if end != len(data):
        return False, None  # more than one archive: a writer leaves at most one uncommitted
    try:
        meta = read_meta(data)
    except ArchiveError:
        return False, None
    return meta is not None and meta["index"] == next_index, meta


def check_coverage(root: Path, records: list[dict[str, Any]], num_lines: int, index_exists: bool = True
                   ) -> Coverage:
    """Find pack bytes no index line covers (see the module docstring); never reads covered bytes."""
    result = Coverage()
    folder = episodes_dir(root)
    by_file: dict[str, list[tuple[int, int]]] = {}
    for rec in records:
        by_file.setdefault(rec["file"], []).append((int(rec.get("offset", 0)), rec["bytes"]))
    for item in read_ignored(root):
        by_file.setdefault(item["file"], []).append((item["offset"], item["bytes"]))
    last = records[-1]["file"] if records and records[-1]["index"] == num_lines - 1 else None
    candidates = {pack_name(num_lines)} | ({last} if last and last.endswith(".pack") else set())
    for entry in sorted(os.listdir(folder)):
        rel = f"{EPISODE_DIR}/{entry}"
        st = os.lstat(folder / entry)
        if not stat.S_ISREG(st.st_mode):  # named first: it explains the bytes the index then misses
            kind = file_kind(st.st_mode)
            result.damage.insert(0, f"{folder / entry} is {kind}; {EPISODE_DIR}/ holds plain files only")
            continue
        pos = 0
        for offset, size in sorted(by_file.get(rel, ())):
            if offset > pos:
                result.damage.append(f"{offset - pos} bytes of {folder / entry} at offset {pos} are covered by no "
                                     "index line")
            elif offset < pos:
                result.damage.append(f"index lines of {folder / entry} overlap at offset {offset}")
            pos = max(pos, offset + size)
        if st.st_size <= pos:
            continue
        if not index_exists:
            result.damage.append(f"{root / INDEX} is missing, but {folder / entry} holds {st.st_size} bytes")
            continue
        if rel in candidates:
            fd = open_regular(folder / entry)
            try:
                dead, meta = _classify_tail(fd, pos, st.st_size, num_lines)
            finally:
                os.close(fd)
            if dead and not (meta is not None and any(t["complete"] for t in result.tails)):
                result.tails.append({"file": rel, "offset": pos, "bytes": st.st_size - pos,
                                     "complete": meta is not None, "meta": meta})
                continue
        result.damage.append(f"{st.st_size - pos} bytes of {folder / entry} after offset {pos} are covered by no "
                             "index line and are not one interrupted episode")
    return result


def coverage_error(root: Path, coverage: Coverage) -> RLKitError:
    more = f" (and {len(coverage.damage) - 1} more)" if len(coverage.damage) > 1 else ""
    return RLKitError(f"dataset {root} is damaged: {coverage.damage[0]}{more}; the index may have lost lines: "
                      f"rebuild it with `rlkit demos repair {root}`")


# ---------------------------------------------------------------------------------------------
# Episodes
# ---------------------------------------------------------------------------------------------

class DataFiles:
    """The data files of one dataset, each opened once (safely); reads and checks an episode's bytes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._fds: dict[str, int | RLKitError] = {}

    def _fd(self, rec: dict[str, Any]) -> int:
        rel = rec["file"]
        if rel not in self._fds:
            try:
                self._fds[rel] = open_regular(episode_file(self.root, rel))
            except RLKitError as e:
                self._fds[rel] = e
        fd = self._fds[rel]
        if isinstance(fd, RLKitError):
            text, path = str(fd), str(self.root / rel)
            name = f"episode {rec['index']} ({path})"
            raise RLKitError(name + text[len(path):] if text.startswith(path) else f"{name}: {text}")
        return fd

    def episode_bytes(self, rec: dict[str, Any], verify: bool = True) -> bytes | None:
        """The episode's archive; one-line RLKitError naming the episode when it is missing, cut short or
        (``verify``) fails its checksum. With ``verify=False`` only the sizes are checked and None returned."""
        name = f"episode {rec['index']} ({self.root / rec['file']})"
        fd = self._fd(rec)
        offset, size = int(rec.get("offset", 0)), int(rec["bytes"])  # format 1 records have no offset
        on_disk = max(0, min(size, os.fstat(fd).st_size - offset))
        if on_disk != size:
            raise RLKitError(f"{name} is truncated: {on_disk} of its {size} bytes are on disk")
        if not verify:
            return None
        data = os.pread(fd, size, offset)
        if hashlib.sha256(data).hexdigest() != rec["sha256"]:
            raise RLKitError(f"{name} is corrupt (sha256 checksum mismatch)")
        return data

    def close(self) -> None:
        for fd in self._fds.values():
            if isinstance(fd, int):
                os.close(fd)
        self._fds.clear()

    def __enter__(self) -> DataFiles:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def load_episode(files: DataFiles, rec: dict[str, Any], meta: dict[str, Any]) -> Episode:
    data = files.episode_bytes(rec)
    name = f"episode {rec['index']} ({files.root / rec['file']})"
    try:
        obs, actions, rewards = decode_episode(data, meta["observation_space"], meta["action_space"], rec["length"])
    except ArchiveError as e:
        raise RLKitError(f"{name} cannot be decoded: {e}") from None
    except Exception as e:  # numpy raises many types for a damaged .npy header
        raise RLKitError(f"{name} cannot be decoded ({type(e).__name__})") from None
    return Episode(obs=obs, actions=actions, terminated=rec["terminated"], truncated=rec["truncated"],
                   seed=rec.get("seed"), options=rec.get("options"), rewards=rewards,
                   episode_return=rec.get("episode_return"), index=rec["index"], source=rec.get("source"))


def load(path: str | Path, skip_corrupt: bool = False, env_id: str | None = None) -> Dataset:
    """Load a dataset directory, verifying every episode's checksum and that the index covers the packs.

    Args:
        path: the dataset directory.
        skip_corrupt: leave out damaged, truncated or missing episodes (listed in ``dataset.skipped``,
            with a warning) instead of raising a one-line :class:`RLKitError` naming the first one.
        env_id: when given, raise unless the dataset was recorded on this env; naming the manifest's
            own ``pkg.module:Env-v0`` id here is what allows ``dataset.env_id`` to import ``pkg.module``.
    """
    root = Path(path)
    meta = meta_from_manifest(read_manifest(root))
    records, skipped = read_index(root, skip_corrupt)
    lines, exists = index_lines(root)
    coverage = check_coverage(root, records, len(lines), exists)
    if coverage.damage:
        if not skip_corrupt:
            raise coverage_error(root, coverage)
        skipped += [(-1, reason) for reason in coverage.damage]
    episodes = []
    with DataFiles(root) as files:
        for rec in records:
            try:
                episodes.append(load_episode(files, rec, meta))
            except RLKitError as e:
                if not skip_corrupt:
                    raise RLKitError(f"{e}; {SKIP_HINT}") from None
                skipped.append((rec["index"], str(e)))
    if skipped:
        warnings.warn(f"skipped {len(skipped)} damaged part(s) of {root}: "
                      + "; ".join(reason for _, reason in skipped[:3]), stacklevel=2)
    dataset = Dataset(meta, episodes, root, sorted(skipped),
                      trusted_env_id=env_id if env_id == meta["env_id"] else None)
    if env_id is not None:
        dataset.check_env(env_id)
    return dataset
