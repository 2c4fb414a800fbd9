"""A small .npz codec: a hand-built zip writer, a fast .npy reader, and size checks before inflating.

Writing: :func:`npz_bytes` assembles a standard zip (``np.load`` and ``zipfile`` read it) with a
compression choice per member. Integer and uint8 image arrays are deflated (actions shrink 40x, Atari
frames 10x); float arrays are stored, because physics states barely compress (CartPole obs: 8.0 kB ->
7.9 kB) while deflating them was half of the recorder's per-episode cost. The zip is assembled here
rather than by ``zipfile``, whose per-member bookkeeping cost ~0.2 ms per CartPole episode, a quarter of
the recorder's per-episode work (no zip64: an episode archive stays far below 4 GiB). Timestamps are
1980-01-01 00:00, so the bytes, and their checksum, are a function of the data alone.

Reading: :func:`read_members` lists an archive's members from its central directory and refuses any
member whose declared uncompressed size exceeds the caller's limit *before* inflating it (a 389 kB
archive once made replay allocate 1 GB); inflation is also capped at the declared size.
:func:`read_npy` parses numpy's fixed header form with a regex rather than ``np.load``'s ast-based
parser (loading 2,000 small episodes spent most of its time there).

:func:`archive_end` walks one zip's records from its first byte and returns where it ends, so that
archives written back to back in a pack can be found again without an index (``demos repair``).
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from collections.abc import Callable

import numpy as np

from rlkit.errors import RLKitError

# zip records (PKWARE APPNOTE 4.3.7, 4.3.12, 4.3.16)
ZIP_LOCAL = struct.Struct("<IHHHHHIIIHH")
ZIP_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
ZIP_END = struct.Struct("<IHHHHIIH")
LOCAL_SIG, CENTRAL_SIG, END_SIG = 0x04034B50, 0x02014B50, 0x06054B50
_DOS_DATE_1980 = (1 << 5) | 1
# the largest .npy header numpy writes for version 1.0 (2-byte length) plus the magic and length fields
NPY_HEADER_MAX = 10 + 65535


class ArchiveError(ValueError):
    """The bytes are not a well-formed archive of the expected members and sizes."""


def npy_bytes(arr: np.ndarray) -> bytes:
    """``arr`` as a version 1.0 .npy file (what ``np.save`` writes for a C-order array)."""
    header = f"{{'descr': {np.lib.format.dtype_to_descr(arr.dtype)!r}, 'fortran_order': False, 'shape': {arr.shape}, }}"
    # numpy pads the header with spaces and a newline so that the data starts 64-byte aligned
    pad = -(len(np.lib.format.MAGIC_PREFIX) + 4 + len(header) + 1) % 64
    header_bytes = (header + " " * pad + "\n").encode("latin1")
    return b"".join((np.lib.format.MAGIC_PREFIX, b"\x01\x00", len(header_bytes).to_bytes(2, "little"),
                     header_bytes, np.ascontiguousarray(arr).tobytes()))


def zip_bytes(members: dict[str, tuple[bytes, bool]]) -> bytes:
    """A zip of ``name -> (raw bytes, deflate?)`` members, in order."""
    parts: list[bytes] = []
    central: list[bytes] = []
    offset = 0
    for name, (raw, deflate) in members.items():
        if deflate:
            compressor = zlib.compressobj(6, zlib.DEFLATED, -15)  # raw deflate, np.savez_compressed's level
            method, data = 8, compressor.compress(raw) + compressor.flush()
        else:
            method, data = 0, raw
        file_name = name.encode()
        crc = zlib.crc32(raw)
        if offset + len(data) >= 2**32 or len(raw) >= 2**32:  # the zip fields are 32-bit
            raise RLKitError(f"archive member {name!r} is too large for one episode archive ({len(raw)} bytes)")
        local = ZIP_LOCAL.pack(LOCAL_SIG, 20, 0, method, 0, _DOS_DATE_1980, crc, len(data), len(raw),
                               len(file_name), 0)
        central.append(ZIP_CENTRAL.pack(CENTRAL_SIG, 20, 20, 0, method, 0, _DOS_DATE_1980, crc, len(data),
                                        len(raw), len(file_name), 0, 0, 0, 0, 0, offset) + file_name)
        parts += (local, file_name, data)
        offset += len(local) + len(file_name) + len(data)
    directory = b"".join(central)
    parts += (directory, ZIP_END.pack(END_SIG, 0, 0, len(central), len(central), len(directory), offset, 0))
    return b"".join(parts)


def npz_bytes(arrays: dict[str, np.ndarray], extra: dict[str, bytes] | None = None) -> bytes:
    """A standard .npz of ``arrays`` (floats stored, the rest deflated), plus stored ``extra`` members."""
    members = {f"{name}.npy": (npy_bytes(arr), arr.dtype.kind != "f") for name, arr in arrays.items()}
    members.update({name: (raw, False) for name, raw in (extra or {}).items()})
    return zip_bytes(members)


_NPY_HEADER = re.compile(r"""\{'descr': '([^']+)', 'fortran_order': False, 'shape': \(([0-9, ]*)\), \}""")


def read_npy(raw: bytes) -> np.ndarray:
    """Parse a C-order .npy member; headers of another form go to numpy's reader (never unpickling)."""
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


def _central_directory(data: bytes) -> list[tuple[str, int, int, int, int, int]]:
    """(name, method, crc, compressed size, uncompressed size, local offset) of each member."""
    if len(data) < ZIP_END.size:
        raise ArchiveError("too short to be a zip")
    end = data.rfind(struct.pack("<I", END_SIG), max(0, len(data) - ZIP_END.size - 65535))
    if end < 0:
        raise ArchiveError("no end-of-central-directory record")
    _, disk, _, count, total, size, start, _ = ZIP_END.unpack_from(data, end)
    if disk or count != total or start + size > end:
        raise ArchiveError("a multi-disk or inconsistent zip")
    members, pos = [], start
    for _ in range(count):
        if pos + ZIP_CENTRAL.size > end:
            raise ArchiveError("the central directory is cut short")
        fields = ZIP_CENTRAL.unpack_from(data, pos)
        if fields[0] != CENTRAL_SIG:
            raise ArchiveError("bad central directory record")
        _, _, _, flags, method, _, _, crc, csize, usize, nlen, elen, clen, _, _, _, offset = fields
        if flags & 0x1:
            raise ArchiveError("encrypted member")
        name = data[pos + ZIP_CENTRAL.size:pos + ZIP_CENTRAL.size + nlen].decode("utf-8", "replace")
        members.append((name, method, crc, csize, usize, offset))
        pos += ZIP_CENTRAL.size + nlen + elen + clen
    return members


def read_members(data: bytes, limit: Callable[[str], tuple[int, int] | None], only: set[str] | None = None
                 ) -> dict[str, bytes]:
    """The members of the zip ``data``, each checked against ``limit(name)`` before it is inflated.

    ``limit(name)`` returns the (smallest, largest) uncompressed size that member may declare, or None
    for a member that must not be there; ``only`` reads just those members. Raises
    :class:`ArchiveError` on a bad layout, an unexpected member, a declared size outside its range, or
    a CRC mismatch.
    """
    members = _central_directory(data)
    out: dict[str, bytes] = {}
    for name, method, crc, csize, usize, offset in members:
        if only is not None and name not in only:
            continue
        allowed = limit(name)
        if allowed is None:
            raise ArchiveError(f"unexpected member {name!r}")
        if not allowed[0] <= usize <= allowed[1]:
            raise ArchiveError(f"member {name!r} declares {usize} bytes where the declared shapes give "
                               f"{allowed[0]}..{allowed[1]} (refused before inflating)")
        if name in out:
            raise ArchiveError(f"duplicate member {name!r}")
        if offset + ZIP_LOCAL.size > len(data):
            raise ArchiveError(f"member {name!r} lies outside the archive")
        local = ZIP_LOCAL.unpack_from(data, offset)
        if local[0] != LOCAL_SIG:
            raise ArchiveError(f"bad local header of {name!r}")
        start = offset + ZIP_LOCAL.size + local[9] + local[10]
        if start + csize > len(data):
            raise ArchiveError(f"member {name!r} is cut short")
        payload = data[start:start + csize]
        if method == 0:
            raw = payload
        elif method == 8:
            inflater = zlib.decompressobj(-15)
            raw = inflater.decompress(payload, usize + 1)  # never more than declared (+1 to notice a lie)
        else:
            raise ArchiveError(f"member {name!r} uses compression method {method}")
        if len(raw) != usize or zlib.crc32(raw) != crc:
            raise ArchiveError(f"member {name!r} fails its size or CRC check")
        out[name] = raw
    return out


def archive_end(data: bytes | memoryview, start: int) -> int | None:
    """The end offset of the zip that begins at ``start`` in ``data`` (archives back to back), or None
    when the bytes there are not one complete zip (a torn tail, garbage)."""
    pos = start
    n = len(data)
    while pos + 4 <= n and struct.unpack_from("<I", data, pos)[0] == LOCAL_SIG:
        if pos + ZIP_LOCAL.size > n:
            return None
        local = ZIP_LOCAL.unpack_from(data, pos)
        if local[2] & 0x8:  # a data descriptor: sizes unknown here (rlkit never writes one)
            return None
        pos += ZIP_LOCAL.size + local[9] + local[10] + local[7]
    if pos == start:
        return None
    directory_start = pos
    count = 0
    while pos + 4 <= n and struct.unpack_from("<I", data, pos)[0] == CENTRAL_SIG:
        if pos + ZIP_CENTRAL.size > n:
            return None
        fields = ZIP_CENTRAL.unpack_from(data, pos)
        pos += ZIP_CENTRAL.size + fields[10] + fields[11] + fields[12]
        count += 1
    if pos + ZIP_END.size > n or struct.unpack_from("<I", data, pos)[0] != END_SIG:
        return None
    _, _, _, entries, total, size, cd_offset, comment = ZIP_END.unpack_from(data, pos)
    if entries != count or total != count or size != pos - directory_start or cd_offset != directory_start - start:
        return None
    end = pos + ZIP_END.size + comment
    return end if end <= n else None
