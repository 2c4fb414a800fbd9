"""Files that rlkit writes, appends to or trims in place: regular files inside their home, never symlinks.

A run directory or dataset may come from someone else (a copy of a labelling run, a dataset from a lab).
Whatever rlkit opens there for writing must be a plain file inside that directory: a symlink planted as
``prefs/answers.jsonl`` or ``metrics.csv`` must not let a trim or an append reach a file elsewhere
(README, "Reliability"). Files replaced whole go through :func:`rlkit.checkpoint.atomic_open`, whose rename
replaces a symlink itself, never its target; everything opened in place goes through :func:`open_in_home`.

A full disk is reported in one line naming the path and the free space (:func:`disk_full_error`).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path

from rlkit.errors import RLKitError


def file_kind(mode: int) -> str:
    """What a non-regular file is, for an error line (``mode`` from ``os.lstat``)."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _parts_inside(path: Path, home: Path) -> tuple[str, ...]:
    """The names leading from ``home`` to ``path``; one-line error when ``path`` is not below ``home``."""
    try:
        rel = path.absolute().relative_to(home.absolute())
    except ValueError:
        raise RLKitError(f"{path} is outside {home}; rlkit writes only inside the run or dataset") from None
    if ".." in rel.parts:
        raise RLKitError(f"{path} leaves {home} through '..'; rlkit writes only inside the run or dataset")
    return rel.parts


def _check_folders(home: Path, parts: tuple[str, ...]) -> None:
    """Each of ``home/parts[0]``, ``home/parts[0]/parts[1]``, ... must not be a symlink (nor a file, when
    present): what lies below it would be written elsewhere."""
    current = home
    for part in parts:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            return  # the rest is created by rlkit
        if stat.S_ISLNK(mode):
            raise RLKitError(f"{current} is a symbolic link; rlkit writes only to plain files inside {home}")
        if not stat.S_ISDIR(mode):
            raise RLKitError(f"{current} is {file_kind(mode)}, not a directory; rlkit writes only into plain folders "
                             f"inside {home} (remove it, or start a new run)")


def check_inside(path: str | Path, home: str | Path) -> Path:
    """``path``, refused in one line unless it lies inside ``home`` and no folder between them is a symlink.

    The leaf itself may be missing (it is about to be created); when present it must be a regular file.
    """
    path, home = Path(path), Path(home)
    _check_folders(home, _parts_inside(path, home)[:-1])
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return path
    if not stat.S_ISREG(mode):
        raise RLKitError(f"{path} is {file_kind(mode)}, not a regular file; rlkit writes only to plain files "
                         f"inside {home} (remove it, or start a new run)")
    return path


def check_dir_inside(path: str | Path, home: str | Path) -> Path:
    """``path``, a folder rlkit creates or writes into (``checkpoints/``, ``checkpoints/best/``), refused in one
    line unless it and every folder between ``home`` and it is a real directory inside ``home`` or absent.

    A symlinked ``checkpoints/`` would send new checkpoints, the pruning of old ones and the removal of
    leftovers (``.*.tmp``) into whatever folder it points to.
    """
    path, home = Path(path), Path(home)
    _check_folders(home, _parts_inside(path, home))
    return path


def open_in_home(path: str | Path, home: str | Path, flags: int, mode: int = 0o644) -> int:
    """An fd for writing ``path`` in place (append, trim, lock), which must be a regular file inside ``home``.

    ``O_NOFOLLOW`` closes the race between the check and the open: a symlink swapped in meanwhile makes
    the open fail instead of following it. ``O_NONBLOCK`` keeps a FIFO from blocking the open.
    """
    path = check_inside(path, home)
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise RLKitError(f"{path} is a symbolic link; rlkit writes only to plain files inside {home}") from None
        if e.errno == errno.ENOSPC:
            raise disk_full_error(path) from None
        if e.errno in (errno.ENXIO, errno.EISDIR):
            raise RLKitError(f"{path} is not a regular file; rlkit writes only to plain files inside {home}") from None
        raise RLKitError(f"cannot open {path} for writing ({e.strerror})") from None
    st_mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(st_mode):
        os.close(fd)
        raise RLKitError(f"{path} is {file_kind(st_mode)}, not a regular file; rlkit writes only to plain files "
                         f"inside {home}")
    os.set_blocking(fd, True)
    return fd


def free_bytes(path: str | Path) -> int | None:
    """Free bytes on the file system holding ``path`` (its nearest existing parent), or None if unknown."""
    current = Path(path).absolute()
    while not current.exists() and current != current.parent:
        current = current.parent
    try:
        return shutil.disk_usage(current).free
    except OSError:
        return None


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def disk_full_error(path: str | Path) -> RLKitError:
    """The one-line error for ENOSPC while writing ``path``: the path, the free space, and what to do."""
    free = free_bytes(path)
    left = "unknown" if free is None else _human(free)
    return RLKitError(f"no space left on the device writing {path} ({left} free); free some space or choose "
                      "another directory: what was committed before is intact (continue a run with --resume, "
                      "a dataset with --append)")


def is_disk_full(exc: BaseException) -> bool:
    """True for ENOSPC/EDQUOT anywhere in ``exc``'s chain, or torch's writer error that wraps it.

    torch's zip writer reports a full disk as ``RuntimeError: ... inline_container.cc ... file write failed``
    (the errno is lost), so that message counts too.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(exc)
        if isinstance(exc, RuntimeError) and ("file write failed" in text or "No space left" in text):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
