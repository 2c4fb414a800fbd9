"""``rlkit demos repair DATASET``: rebuild a lost or damaged index from the packs.

Every archive written by format 3 carries its episode's metadata (``meta.json``: index, length,
flags, seed, options, ...), so the index can be rebuilt from the packs alone. Repair:

1. walks every file in ``episodes/`` archive by archive (the zip records say where each ends; after
   bytes that are not an archive it resumes at the next archive signature);
2. keeps every complete archive whose CRCs and declared shapes check out and whose metadata is known
   (from its meta.json, or for older archives from a surviving index line with the same location
   and checksum);
3. orders them by the episode number they claim (then by file and offset) and numbers them 0..N-1;
4. writes the new index atomically, after renaming the old one to ``episodes.jsonl.before-repair-T``;
5. lists the byte ranges it could not index (torn tails, garbage, damaged archives) in
   ``ignored.jsonl``, so that readers accept the dataset again. It never truncates or deletes
   anything: what it could not index stays in place for a human to look at.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import mmap
import os
import stat
import time
from pathlib import Path
from typing import Any

from rlkit.demos.archive import META_KEYS, decode_episode, read_meta
from rlkit.demos.codec import ArchiveError, archive_end
from rlkit.demos.dataset import EPISODE_DIR, IGNORED, INDEX
from rlkit.demos.reader import (
    episodes_dir,
    meta_from_manifest,
    open_regular,
    read_index,
    read_manifest,
)
from rlkit.demos.writer import index_line, record_for

from rlkit.checkpoint import atomic_write_text
from rlkit.errors import RLKitError
from rlkit.safe_files import check_inside

_LOCAL_SIG = b"PK\x03\x04"


def _archives(data: bytes | mmap.mmap) -> list[tuple[int, int | None]]:
    """(offset, end) of each complete archive, and (offset, None) for each stretch that is none."""
    found: list[tuple[int, int | None]] = []
    pos = 0
    while pos < len(data):
        end = archive_end(data, pos)
        if end is not None:
            found.append((pos, end))
            pos = end
            continue
        nxt = data.find(_LOCAL_SIG, pos + 1)
        while nxt >= 0 and archive_end(data, nxt) is None:
            nxt = data.find(_LOCAL_SIG, nxt + 1)
        found.append((pos, None))
        pos = len(data) if nxt < 0 else nxt
    return found


def _index_pack(data: bytes | mmap.mmap, rel: str, meta: dict[str, Any], old: dict[tuple[str, int], dict[str, Any]],
                found: list[tuple[int, str, int, dict[str, Any]]], ignored: list[dict[str, Any]]) -> None:
    """Add each complete, checked archive of one pack to ``found`` and each other byte range to ``ignored``."""
    parts = _archives(data)
    for i, (start, end) in enumerate(parts):
        if end is None:
            size = (parts[i + 1][0] if i + 1 < len(parts) else len(data)) - start
            ignored.append({"file": rel, "offset": start, "bytes": size, "reason": "not a complete archive"})
            continue
        archive = data[start:end]
        try:
            info = read_meta(archive)
            if info is None:  # formats 1 and 2: only a surviving index line describes it
                rec = old.get((rel, start))
                if rec is None or rec["sha256"] != hashlib.sha256(archive).hexdigest():
                    raise ArchiveError("an archive without meta.json that no index line describes")
                info = {k: rec.get(k) for k in META_KEYS}
            decode_episode(archive, meta["observation_space"], meta["action_space"], info["length"])
        except (ArchiveError, ValueError, KeyError, TypeError) as e:
            ignored.append({"file": rel, "offset": start, "bytes": end - start, "reason": str(e)})
            continue
        claimed = info["index"] if isinstance(info["index"], int) else 1 << 62
        found.append((claimed, rel, start, {**record_for(info, rel, start, archive)}))


def repair(path: str | Path) -> dict[str, Any]:
    """Rebuild ``path``'s index from its packs (see the module docstring); returns what was done."""
    root = Path(path)
    meta = meta_from_manifest(read_manifest(root))
    folder = episodes_dir(root)
    lock_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RLKitError(f"another repair of {root} is running") from None
        index_fd = None
        if os.path.lexists(root / INDEX):
            index_fd = open_regular(root / INDEX)
            try:
                fcntl.flock(index_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(index_fd)
                raise RLKitError(f"a writer is recording into {root}; repair it after that ends") from None
        try:
            return _repair(root, meta, folder)
        finally:
            if index_fd is not None:
                os.close(index_fd)
    finally:
        os.close(lock_fd)


def _repair(root: Path, meta: dict[str, Any], folder: Path) -> dict[str, Any]:
    old: dict[tuple[str, int], dict[str, Any]] = {}
    old_count = 0
    if os.path.lexists(root / INDEX):
        records, _ = read_index(root, skip_corrupt=True)
        old_count = len(records)
        old = {(r["file"], int(r.get("offset", 0))): r for r in records}
    found: list[tuple[int, str, int, dict[str, Any]]] = []
    ignored: list[dict[str, Any]] = []
    for entry in sorted(os.listdir(folder)):
        rel = f"{EPISODE_DIR}/{entry}"
        if not stat.S_ISREG(os.lstat(folder / entry).st_mode):
            continue  # not ours to read (a FIFO, a directory); readers keep reporting it
        fd = open_regular(folder / entry)
        try:
            size = os.fstat(fd).st_size
            # mapped, not read: a pack may be larger than memory; only one archive at a time is copied out
            data = mmap.mmap(fd, size, access=mmap.ACCESS_READ) if size else b""
        finally:
            os.close(fd)
        try:
            _index_pack(data, rel, meta, old, found, ignored)
        finally:
            if isinstance(data, mmap.mmap):
                data.close()
    found.sort(key=lambda item: item[:3])
    lines = []
    for n, (_, _, _, rec) in enumerate(found):
        rec["index"] = n
        lines.append(index_line(rec))
    for name in (INDEX, IGNORED):  # refused before the old index is moved aside, so nothing is half done
        check_inside(root / name, root)
    backup = None
    if os.path.lexists(root / INDEX):
        backup = root / f"{INDEX}.before-repair-{time.strftime('%Y%m%dT%H%M%S')}"
        os.rename(root / INDEX, backup)
    atomic_write_text(root / INDEX, b"".join(lines).decode(), home=root)
    if ignored or os.path.lexists(root / IGNORED):
        atomic_write_text(root / IGNORED, "".join(json.dumps(item) + "\n" for item in ignored), home=root)
    return {"path": str(root), "episodes": len(lines), "previously_indexed": old_count,
            "ignored": ignored, "ignored_bytes": sum(i["bytes"] for i in ignored),
            "old_index": None if backup is None else str(backup)}
