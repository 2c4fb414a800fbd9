"""demos.codec and demos.archive: the hand-built zip against numpy and zipfile, size checks before inflating."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zipfile

import gymnasium as gym
import numpy as np
import pytest
from rlkit.demos import archive, codec


def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"obs": rng.normal(size=(6, 4)).astype(np.float32), "actions": rng.integers(0, 2, 5),
            "frames": rng.integers(0, 255, (3, 8, 8), dtype=np.uint8), "scalar": np.array(4)}


def test_npz_bytes_is_a_standard_npz_with_a_compression_choice_per_array():
    data = codec.npz_bytes(arrays(), extra={"meta.json": b'{"a": 1}'})
    with np.load(io.BytesIO(data)) as npz:  # numpy's own reader agrees, array by array
        for name, arr in arrays().items():
            assert np.array_equal(npz[name], arr) and npz[name].dtype == arr.dtype
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        methods = {info.filename: info.compress_type for info in zf.infolist()}
        assert zf.read("meta.json") == b'{"a": 1}'
    assert methods == {"obs.npy": zipfile.ZIP_STORED, "actions.npy": zipfile.ZIP_DEFLATED,
                       "frames.npy": zipfile.ZIP_DEFLATED, "scalar.npy": zipfile.ZIP_DEFLATED,
                       "meta.json": zipfile.ZIP_STORED}
    assert codec.npz_bytes(arrays()) == codec.npz_bytes(arrays())  # no timestamps: bytes are a function of data


def test_read_npy_matches_numpy_on_the_fast_path_and_the_fallback():
    for arr in arrays().values():
        buf = io.BytesIO()
        np.save(buf, arr)
        assert codec.npy_bytes(arr) == buf.getvalue()  # the writer is byte-identical to np.save
        assert np.array_equal(codec.read_npy(buf.getvalue()), arr)
    fortran = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    buf = io.BytesIO()
    np.save(buf, fortran)  # a header the regex does not take: numpy's reader, never unpickling
    assert np.array_equal(codec.read_npy(buf.getvalue()), fortran)
    buf = io.BytesIO()
    np.save(buf, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):  # an object array is refused, never unpickled
        codec.read_npy(buf.getvalue())


def test_read_members_refuses_a_bomb_before_inflating():
    zeros = bytes(64 * 2**20)  # 64 MiB of zeros deflate to ~64 kB
    bomb = codec.zip_bytes({"actions.npy": (zeros, True)})
    assert len(bomb) < 200_000
    tracemalloc.start()
    with pytest.raises(codec.ArchiveError, match="refused before inflating"):
        codec.read_members(bomb, lambda name: (0, 1000))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 * 2**20, peak
    # a lying bomb: the directory declares 10 bytes, the stream inflates to 64 MiB
    end = bomb.rfind(struct.pack("<I", codec.CENTRAL_SIG))
    lying = bytearray(bomb)
    struct.pack_into("<I", lying, end + 24, 10)  # the central record's uncompressed size
    tracemalloc.start()
    with pytest.raises(codec.ArchiveError, match="size or CRC"):
        codec.read_members(bytes(lying), lambda name: (0, 1000))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 * 2**20, peak


def test_read_members_checks_crc_and_unexpected_members():
    data = codec.zip_bytes({"a.npy": (b"hello world" * 10, True), "b.npy": (b"stored", False)})
    assert codec.read_members(data, lambda name: (0, 200)) == {"a.npy": b"hello world" * 10, "b.npy": b"stored"}
    with pytest.raises(codec.ArchiveError, match="unexpected member 'b.npy'"):
        codec.read_members(data, lambda name: (0, 200) if name == "a.npy" else None)
    damaged = bytearray(data)
    damaged[data.index(b"stored")] ^= 0xFF
    with pytest.raises(codec.ArchiveError, match="CRC"):
        codec.read_members(bytes(damaged), lambda name: (0, 200))


def test_archive_end_finds_archives_back_to_back_and_no_torn_one():
    first, second = codec.npz_bytes(arrays()), codec.npz_bytes({"x": np.arange(3)})
    pack = first + second
    assert codec.archive_end(pack, 0) == len(first)
    assert codec.archive_end(pack, len(first)) == len(pack)
    for cut in range(1, len(second)):  # every prefix of an archive is torn, none complete
        assert codec.archive_end(first + second[:cut], len(first)) is None
    assert codec.archive_end(b"garbage" * 10, 0) is None


def test_episode_archive_round_trip_and_declared_shape_checks():
    obs_space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    act_space = gym.spaces.Discrete(3)
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, (4 + 5, 84, 84), dtype=np.uint8)
    obs = np.stack([frames[t:t + 4] for t in range(6)])  # a frame stack: stored once per frame
    actions = rng.integers(0, 3, 5)
    meta = {"index": 3, "length": 5, "terminated": True, "truncated": False, "seed": 9, "options": None,
            "rewards": False, "episode_return": 2.0, "source": "test"}
    data = archive.encode_episode(obs, actions, None, meta)
    got_obs, got_actions, rewards = archive.decode_episode(data, obs_space, act_space, 5)
    assert np.array_equal(got_obs, obs) and np.array_equal(got_actions, actions) and rewards is None
    assert archive.read_meta(data) == meta
    with pytest.raises(codec.ArchiveError, match="refused before inflating"):
        archive.decode_episode(data, obs_space, act_space, 1)  # the index says 1 step: 5 do not match
    with pytest.raises(codec.ArchiveError, match="actions is int64"):
        archive.decode_episode(data, obs_space, gym.spaces.Box(-1, 1, (), np.int32), 5)  # right shape, other dtype
    old = codec.npz_bytes({"obs": obs, "actions": actions})  # format 2: no meta.json, still read
    assert archive.read_meta(old) is None
    assert np.array_equal(archive.decode_episode(old, obs_space, act_space, 5)[0], obs)
