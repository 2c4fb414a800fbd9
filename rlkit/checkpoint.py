"""Atomic checkpoints: one state dict, written to a temporary file and renamed; the last N kept."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from rlkit.errors import RLKitError

CHECKPOINT_DIR = "checkpoints"
_STEP_RE = re.compile(r"step_(\d+)\.pt$")


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
def atomic_open(path: str | Path, fsync: bool = True) -> Iterator[BinaryIO]:
    """Open a temporary file next to ``path`` for writing; on success fsync and rename it over ``path``.

    A reader sees either the old file or the whole new one, never a partial write; on an exception
    the temporary file is removed and ``path`` is untouched. ``fsync=False`` skips the flushes to the
    disk (~6 ms here): the rename is still atomic for readers and survives a killed process, only not
    a power loss.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if fsync:
        _fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, fsync) as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str, fsync: bool = True) -> None:
    atomic_write_bytes(path, text.encode(), fsync)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` through :func:`atomic_open`."""
    import torch  # lazily: `rlkit demos ...` and the CLI start without importing torch

    with atomic_open(path) as f:
        torch.save(obj, f)


def save_checkpoint(run_dir: str | Path, state: dict[str, Any], step: int, keep: int = 3) -> Path:
    """Save ``state`` as ``run_dir/checkpoints/step_<step>.pt`` and prune all but the last ``keep``."""
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    path = ckpt_dir / f"step_{step:010d}.pt"
    atomic_torch_save(state, path)
    for old in list_checkpoints(run_dir)[:-max(keep, 1)]:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoints of a run, oldest first (temporary files from a crash are ignored)."""
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _STEP_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def find_checkpoint(path: str | Path) -> Path:
    """Resolve a run directory or a checkpoint file to a checkpoint file, with a clear error."""
    path = Path(path)
    if not path.exists():
        raise RLKitError(f"{path} does not exist; pass a run directory (runs/...) or a checkpoint .pt file")
    if path.is_file():
        return path
    ckpts = list_checkpoints(path)
    if not ckpts:
        raise RLKitError(f"no checkpoints in {path}/{CHECKPOINT_DIR}; is this an rlkit run directory?")
    return ckpts[-1]


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file (or the latest one of a run directory)."""
    file = find_checkpoint(path)
    try:
        import torch

        state = torch.load(file, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises several types for damaged files
        raise RLKitError(f"checkpoint {file} is unreadable ({type(e).__name__}); it may be corrupt") from None
    if not isinstance(state, dict) or "agent" not in state:
        raise RLKitError(f"{file} is not an rlkit checkpoint (no 'agent' key)")
    return state
