"""Checkpoints that commit atomically, carry checksums and load without running code.

Layout of ``RUN/checkpoints/``::

    step_0000001000/          one checkpoint, committed by renaming its temporary directory into place
        state.pt              the state dict (networks, optimizers, counters, RNG states, config, versions)
        buffer.pt             the replay buffer of that same step (off-policy agents), optional
        checksums.json        {"format", "agent", "step", "files": {name: {"sha256", "bytes"}}}
    best/                     the best evaluation's state (no buffer), replaced in one rename at each new best;
                              its checksums.json also holds "best_return"

The directory is written as ``.step_0000001000.<random>.tmp`` and renamed, so a checkpoint and its buffer
are one unit: a reader sees all of it or none of it. The last ``keep`` directories are kept.

Loading never unpickles: files are read with ``torch.load(weights_only=True)`` (tensors, numbers, strings,
bytes, lists, tuples and dicts) after their sha256 matched ``checksums.json``. numpy arrays and scalars are
stored as tagged dicts of tensors, gymnasium spaces as JSON (:mod:`rlkit.spaces`). Anything else is
refused in one line naming the file. Checkpoints of the older layout (pickled ``step_*.pt`` files) are
refused too: they cannot be read without unpickling.

Leftovers of a killed writer (``.*.tmp`` files and directories) are removed by :func:`clean_leftovers`,
which :class:`rlkit.run.Run` calls when a run starts or resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import gymnasium as gym
import numpy as np

from rlkit.errors import RLKitError
from rlkit.safe_files import check_dir_inside, check_inside, disk_full_error, is_disk_full
from rlkit.spaces import space_from_json, space_to_json

CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "state.pt"
BUFFER_FILE = "buffer.pt"
SUMS_FILE = "checksums.json"
BEST_NAME = "best"
FORMAT = 1
_STEP_RE = re.compile(r"step_(\d+)$")
_OLD_STEP_RE = re.compile(r"step_(\d+)\.pt$")
_TAG = "__rlkit__"
# What `rlkit eval` and the loaders take, said when given something else (a bare .pt file, any folder).
_EXPECTED = (f"pass a run directory (holding {CHECKPOINT_DIR}/step_N/) or one checkpoint directory such as "
             f"RUN/{CHECKPOINT_DIR}/step_N holding {STATE_FILE} with its {SUMS_FILE}")
# Tests only: seconds to sleep inside a checkpoint write (between the state and the buffer), to widen the
# window in which the fault suite's kill -9 lands mid-write.
_SLOW_WRITE_ENV = "RLKIT_TEST_SLOW_CHECKPOINT"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: str | Path, fsync: bool = True, home: str | Path | None = None) -> Iterator[BinaryIO]:
    """Open a temporary file next to ``path`` for writing; on success fsync and rename it over ``path``.

    A reader sees either the old file or the whole new one, never a partial write; on an exception
    the temporary file is removed and ``path`` is untouched. ``fsync=False`` skips the flushes to the
    disk (~6 ms here): the rename is still atomic for readers and survives a killed process, only not
    a power loss. ``home``: the run or dataset ``path`` belongs to; ``path`` must then be a regular file
    (or absent) inside it, reached through no symlink (:func:`rlkit.safe_files.check_inside`). A full disk
    is the one-line error of :func:`rlkit.safe_files.disk_full_error`.
    """
    path = Path(path)
    if home is not None:
        check_inside(path, home)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        full = isinstance(e, Exception) and is_disk_full(e)
        error = disk_full_error(path) if full else None  # the free space when it failed, before the cleanup
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if error is not None:
            raise error from None
        raise
    if fsync:
        _fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes, fsync: bool = True, home: str | Path | None = None) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, fsync, home) as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str, fsync: bool = True, home: str | Path | None = None) -> None:
    atomic_write_bytes(path, text.encode(), fsync, home)


def _encode(obj: Any, where: str = "state") -> Any:
    """Turn ``obj`` into what ``torch.load(weights_only=True)`` accepts: tensors, numbers, strings, bytes,
    lists, tuples and dicts. numpy arrays and scalars and gymnasium spaces become tagged dicts."""
    import torch

    if isinstance(obj, torch.Tensor):  # a view of a larger tensor (stacked seeds) would save all of its storage
        return obj.clone() if obj.untyped_storage().nbytes() > obj.nbytes else obj
    if obj is None or type(obj) in (bool, int, float, str, bytes):
        return obj
    if isinstance(obj, np.generic) and obj.dtype.kind in "biufc":  # before float: np.float64 subclasses it
        return {_TAG: "npscalar", "dtype": obj.dtype.str, "value": obj.item()}
    for plain in (str, bool, int, float, bytes):  # subclasses (torch's version string, IntEnum) pickle by class
        if isinstance(obj, plain):
            return plain(obj)
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biufc":
            raise RLKitError(f"cannot store the {obj.dtype} array at {where} in a checkpoint (numbers only)")
        return {_TAG: "ndarray", "dtype": obj.dtype.str, "data": torch.from_numpy(np.ascontiguousarray(obj))}
    if isinstance(obj, gym.Space):
        return {_TAG: "space", "json": json.dumps(space_to_json(obj))}
    if isinstance(obj, dict):
        return {k: _encode(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [_encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    raise RLKitError(f"cannot store {type(obj).__name__} at {where} in a checkpoint: only tensors, numpy arrays, "
                     "numbers, strings, lists, dicts and gymnasium spaces")


def _decode(obj: Any, file: Path) -> Any:
    """Inverse of :func:`_encode`; a malformed tag is a one-line error naming ``file``."""
    if isinstance(obj, dict):
        tag = obj.get(_TAG)
        if tag is None:
            return {k: _decode(v, file) for k, v in obj.items()}
        try:
            if tag == "ndarray":
                arr = obj["data"].numpy()
                if arr.dtype != np.dtype(obj["dtype"]):
                    raise ValueError(f"dtype {arr.dtype} != {obj['dtype']}")
                return arr
            if tag == "npscalar":
                return np.dtype(obj["dtype"]).type(obj["value"])
            if tag == "space":
                return space_from_json(json.loads(obj["json"]))
        except RLKitError:
            raise
        except Exception as e:  # a wrong type or missing key in a damaged or hand-made file
            raise RLKitError(f"{file} holds a malformed {tag} entry ({type(e).__name__}: {e})") from None
        raise RLKitError(f"{file} holds an unknown entry type {tag!r}; was it written by a newer rlkit?")
    if isinstance(obj, list):
        return [_decode(v, file) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_decode(v, file) for v in obj)
    return obj


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_torch(obj: Any, path: Path) -> dict[str, Any]:
    """torch.save ``obj`` (encoded) to ``path`` with an fsync; returns its checksum entry."""
    import torch  # lazily: `rlkit demos ...` and the CLI start without importing torch

    with open(path, "wb") as f:
        torch.save(_encode(obj), f)
        f.flush()
        os.fsync(f.fileno())
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def _step_dir_name(step: int) -> str:
    return f"step_{step:010d}"


def save_checkpoint(run_dir: str | Path, state: dict[str, Any], step: int, keep: int = 3,
                    buffer: dict[str, Any] | None = None) -> Path:
    """Commit ``state`` (and the replay ``buffer``'s state, if given) as ``checkpoints/step_<step>/`` in one
    rename, with their sha256 in ``checksums.json``; prune all but the last ``keep``. Returns the state file."""
    path = _commit(Path(run_dir), _step_dir_name(step), state, step, buffer)
    for old in list_checkpoints(run_dir)[:-max(keep, 1)]:
        _remove_dir(old)
    return path


def save_best_checkpoint(run_dir: str | Path, state: dict[str, Any], step: int) -> Path:
    """Commit ``state`` as ``checkpoints/best/`` (replacing the previous best in one rename); its sidecar also
    records ``best_return`` (``state["best_return"]``) so that a resumed run reads it without torch."""
    return _commit(Path(run_dir), BEST_NAME, state, step, None,
                   {"best_return": float(state["best_return"])})


def _commit(run_dir: Path, name: str, state: dict[str, Any], step: int, buffer: dict[str, Any] | None,
            sidecar: dict[str, Any] | None = None) -> Path:
    """Write ``run_dir/checkpoints/name/`` (state, buffer, checksums) in a temporary directory and rename it
    into place. ``checkpoints/`` and ``name/`` must be the run's own folders, not symlinks out of it; a full
    disk is one line naming the checkpoint and the free space, and leaves no temporary directory."""
    ckpt_dir = check_dir_inside(run_dir / CHECKPOINT_DIR, run_dir)
    check_dir_inside(ckpt_dir / name, run_dir)
    tmp = None
    try:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=ckpt_dir))
        files = {STATE_FILE: _write_torch(state, tmp / STATE_FILE)}
        if os.environ.get(_SLOW_WRITE_ENV):
            time.sleep(float(os.environ[_SLOW_WRITE_ENV]))
        if buffer is not None:
            files[BUFFER_FILE] = _write_torch(buffer, tmp / BUFFER_FILE)
        sums = {"format": FORMAT, "agent": state.get("agent"), "step": step, **(sidecar or {}), "files": files}
        with open(tmp / SUMS_FILE, "w") as f:
            json.dump(sums, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        final = ckpt_dir / name
        if final.exists():
            # Same step saved again (Ctrl-C right after a checkpoint, the final save of a resumed finished
            # run, a new best): move the old one aside first; clean_leftovers puts it back if we die before
            # the rename.
            aside = ckpt_dir / f".{name}.replaced.tmp"
            if aside.exists():
                shutil.rmtree(aside)
            os.replace(final, aside)
            os.replace(tmp, final)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException as e:
        full = isinstance(e, Exception) and is_disk_full(e)
        error = disk_full_error(ckpt_dir / name) if full else None  # the free space when it failed
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if error is not None:
            raise error from None
        raise
    _fsync_dir(ckpt_dir)
    return final / STATE_FILE


def best_return_of(run_dir: str | Path) -> float | None:
    """The evaluation mean of a run's ``checkpoints/best/`` (from its sidecar), or None when it has none."""
    best = Path(run_dir) / CHECKPOINT_DIR / BEST_NAME
    if not best.is_dir():
        return None
    try:
        value = read_checksums(best).get("best_return")
    except RLKitError:
        return None
    return float(value) if isinstance(value, int | float) else None


def resolve_checkpoint(run_dir: str | Path, which: str = "latest") -> Path:
    """The checkpoint directory of a run that ``which`` names: ``latest``, ``best`` or a step number."""
    run_dir = Path(run_dir)
    if which == "latest":
        return find_checkpoint(run_dir).parent
    if not run_dir.is_dir() or (run_dir / SUMS_FILE).exists():
        raise RLKitError(f"{run_dir} is not a run directory; --checkpoint {which} picks a checkpoint of a run "
                         "(pass the run directory)")
    steps = [int(_STEP_RE.match(p.name).group(1)) for p in list_checkpoints(run_dir)]  # type: ignore[union-attr]
    if which == "best":
        best = run_dir / CHECKPOINT_DIR / BEST_NAME
        if not best.is_dir():
            raise RLKitError(f"{run_dir} has no best checkpoint (checkpoints/{BEST_NAME}/ is written at each new "
                             "best evaluation: train with eval_every > 0, or use --checkpoint latest)")
        return best
    if not which.isdigit():
        raise RLKitError(f"--checkpoint {which!r} is not latest, best or a step number")
    if int(which) not in steps:
        listed = ", ".join(str(s) for s in steps) or "none"
        raise RLKitError(f"{run_dir} has no checkpoint at step {int(which)}; its steps: {listed} "
                         f"(only the last keep_checkpoints are kept), or use --checkpoint best|latest")
    return run_dir / CHECKPOINT_DIR / _step_dir_name(int(which))


def _remove_dir(path: Path) -> None:
    """Rename out of the listing first, so a crash mid-delete never leaves a half checkpoint that looks whole."""
    doomed = path.parent / f".{path.name}.deleted.tmp"
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def clean_leftovers(run_dir: str | Path) -> list[Path]:
    """Remove what a killed writer left (``.*.tmp`` in the run directory and in ``checkpoints/``); a checkpoint
    moved aside by an interrupted same-step save is put back when no other one took its place. A symlinked
    ``checkpoints/`` is refused first: its target's files are not the run's to delete."""
    removed = []
    check_dir_inside(Path(run_dir) / CHECKPOINT_DIR, run_dir)
    for folder in (Path(run_dir), Path(run_dir) / CHECKPOINT_DIR):
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if not (path.name.startswith(".") and path.name.endswith(".tmp")):
                continue
            if path.name.endswith(".replaced.tmp"):
                original = folder / path.name[1:-len(".replaced.tmp")]
                if not original.exists():
                    os.replace(path, original)
                    continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint directories of a run, oldest first (temporary ones from a crash are ignored)."""
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _STEP_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def _old_layout(run_dir: Path) -> list[Path]:
    ckpt_dir = run_dir / CHECKPOINT_DIR
    return sorted(p for p in ckpt_dir.iterdir() if _OLD_STEP_RE.match(p.name)) if ckpt_dir.is_dir() else []


def _old_layout_error(path: Path) -> RLKitError:
    return RLKitError(f"{path} is a checkpoint of an older rlkit (a pickle), which cannot be loaded without "
                      "running code from the file; retrain, or load it with that older rlkit and re-save it")


def find_checkpoint(path: str | Path) -> Path:
    """Resolve a run directory, a checkpoint directory or its ``state.pt`` to the state file, with a clear error."""
    path = Path(path)
    if not path.exists():
        raise RLKitError(f"{path} does not exist; pass a run directory (runs/...) or a checkpoint")
    if path.is_dir() and (path / SUMS_FILE).exists():
        return path / STATE_FILE
    if path.is_dir():
        ckpts = list_checkpoints(path)
        if ckpts:
            return ckpts[-1] / STATE_FILE
        if _old_layout(path):
            raise _old_layout_error(_old_layout(path)[-1])
        if (path / CHECKPOINT_DIR).is_dir():
            raise RLKitError(f"{path / CHECKPOINT_DIR} holds no checkpoint yet (no step_N/ directory); the run "
                             "saves its first one at checkpoint_every or at its end")
        raise RLKitError(f"{path} is neither an rlkit run directory nor a checkpoint: {_EXPECTED}")
    if _OLD_STEP_RE.match(path.name) and not (path.parent / SUMS_FILE).exists():
        raise _old_layout_error(path)
    if path.name != STATE_FILE:  # a state.pt without its sidecar gets read_checksums' own message
        raise RLKitError(f"{path} is not an rlkit checkpoint: {_EXPECTED}")
    return path


def read_checksums(step_dir: Path) -> dict[str, Any]:
    """The checksums sidecar of a checkpoint directory, checked for shape; one-line errors name the file."""
    file = step_dir / SUMS_FILE
    if not file.exists():
        raise RLKitError(f"{file} is missing: a checkpoint is read only with its checksums (keep the whole "
                         f"{step_dir.name}/ directory together)")
    sums = read_json(file)  # not a regular file, not JSON, not an object: one line naming it
    entries = sums.get("files")
    if not isinstance(entries, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("sha256"), str) and isinstance(v.get("bytes"), int)
            for v in entries.values()):
        raise RLKitError(f"{file} is damaged (expected {{'files': {{name: {{'sha256', 'bytes'}}}}}})")
    return sums


def _verified_load(file: Path, sums: dict[str, Any]) -> Any:
    """Check ``file`` against its checksum, then ``torch.load(weights_only=True)`` and decode it."""
    entry = sums["files"].get(file.name)
    if entry is None:
        raise RLKitError(f"{file} is not listed in {file.parent / SUMS_FILE}; it is not part of this checkpoint")
    if not file.exists():
        raise RLKitError(f"{file} is missing from its checkpoint")
    if not stat.S_ISREG(file.stat().st_mode):  # a FIFO would block the read forever
        raise RLKitError(f"{file} is not a regular file")
    if file.stat().st_size != entry["bytes"] or sha256_file(file) != entry["sha256"]:
        raise RLKitError(f"{file} does not match its sha256 in {SUMS_FILE}: the file is damaged or was altered")
    import pickle

    import torch

    try:
        data = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f" ({found.group(1)})" if found else ""
        raise RLKitError(f"refusing to load {file}: it holds Python objects{what} besides tensors, numbers, "
                         "strings, lists and dicts, and loading them could run code") from None
    except Exception as e:  # torch raises several types for damaged files
        raise RLKitError(f"{file} is unreadable ({type(e).__name__}); it may be corrupt") from None
    return _decode(data, file)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint (a run directory's latest, a checkpoint directory, or its ``state.pt``), verified."""
    file = find_checkpoint(path)
    state = _verified_load(file, read_checksums(file.parent))
    if not isinstance(state, dict) or "agent" not in state:
        raise RLKitError(f"{file} is not an rlkit checkpoint (no 'agent' key)")
    if not isinstance(state.get("config"), dict) or not isinstance(state.get("global_step"), int):
        raise RLKitError(f"{file} is damaged: its 'config' or 'global_step' entry has the wrong type")
    state["checkpoint_dir"] = str(file.parent)
    return state


def load_buffer(step_dir: str | Path) -> dict[str, Any] | None:
    """The replay buffer state saved with a checkpoint directory, verified; None when it holds none."""
    step_dir = Path(step_dir)
    sums = read_checksums(step_dir)
    if BUFFER_FILE not in sums["files"]:
        return None
    data = _verified_load(step_dir / BUFFER_FILE, sums)
    if not isinstance(data, dict):
        raise RLKitError(f"{step_dir / BUFFER_FILE} is not a replay buffer state (a {type(data).__name__})")
    return data


def checkpoint_agent(run_dir: str | Path) -> str | None:
    """The agent that wrote a run's latest checkpoint, read from its sidecar (no unpickling, no torch)."""
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        return None
    try:
        agent = read_checksums(ckpts[-1]).get("agent")
    except RLKitError:
        return None
    return agent if isinstance(agent, str) else None


def read_json(path: str | Path, expect: type = dict) -> Any:
    """A JSON file of a run (config.json, final.json, ...): a missing, non-regular, damaged or wrongly shaped
    file is a one-line error naming it."""
    path = Path(path)
    if not path.exists():
        raise RLKitError(f"{path} not found")
    if not path.is_file():
        raise RLKitError(f"{path} is not a regular file")
    try:
        data = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as e:
        raise RLKitError(f"{path} is damaged ({type(e).__name__}: {str(e).splitlines()[0][:80]})") from None
    if not isinstance(data, expect):
        raise RLKitError(f"{path} is damaged: expected a JSON {expect.__name__}, got {type(data).__name__}")
    return data
