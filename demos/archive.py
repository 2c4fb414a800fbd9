"""One episode as an archive: a standard .npz of its arrays plus a small ``meta.json`` member.

Members: ``obs.npy`` (T+1, *obs_shape) or, for frame-stacked image observations, ``obs_frames.npy``
(every frame once) and ``obs_stack.npy`` (the stack depth); ``actions.npy`` (T, *act_shape);
``rewards.npy`` (T,) float32 when rewards are kept; ``meta.json`` (format 3 on): the episode's index
line without its location and checksum (index, length, terminated, truncated, seed, options,
rewards, episode_return, source), so that ``rlkit demos repair`` can rebuild a lost index from the
packs alone. Archives of formats 1 and 2 have no ``meta.json`` and are still read.

Decoding never trusts the archive's own sizes: every member's declared size is checked against the
shape and dtype that the manifest's spaces and the index's length allow before it is inflated.
"""

from __future__ import annotations

import json
import math
from typing import Any

import gymnasium as gym
import numpy as np
from rlkit.demos.codec import ArchiveError, npz_bytes, read_members, read_npy

META_MEMBER = "meta.json"
META_LIMIT = 1 << 20  # a meta.json is a few hundred bytes; options could be larger, but not a megabyte
_HEADER_ROOM = 1024  # .npy headers numpy writes are 64-byte aligned, about 128 bytes for a few dimensions
_NPY_MIN_HEADER = 10 + 16  # magic, version, length, and the shortest dict numpy would write
# the keys of an episode's metadata (its index line holds these plus file, offset, bytes and sha256)
META_KEYS = ("index", "length", "terminated", "truncated", "seed", "options", "rewards", "episode_return",
             "source")


def is_frame_stack(obs: np.ndarray) -> bool:
    """True when obs[t+1] is obs[t] shifted by one frame along axis 1 (gymnasium's FrameStack)."""
    return (obs.ndim >= 4 and obs.shape[1] > 1 and len(obs) > 0
            and bool(np.array_equal(obs[1:, :-1], obs[:-1, 1:])))


def encode_episode(obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray | None,
                   meta: dict[str, Any] | None = None) -> bytes:
    """The archive bytes of one episode (``meta``: the :data:`META_KEYS` of its index line)."""
    arrays: dict[str, np.ndarray] = {"actions": actions}
    if is_frame_stack(obs):
        # every frame once: the first stack, then the newest frame of each later observation
        arrays["obs_frames"] = np.concatenate([obs[0], obs[1:, -1]])
        arrays["obs_stack"] = np.array(obs.shape[1])
    else:
        arrays["obs"] = obs
    if rewards is not None:
        arrays["rewards"] = rewards
    extra = None if meta is None else {META_MEMBER: json.dumps(meta, separators=(",", ":")).encode()}
    return npz_bytes(arrays, extra)


def _member_limits(obs_space: gym.Space, act_space: gym.Space, length: int) -> dict[str, tuple[int, int]]:
    """Member -> (min, max) uncompressed size: the declared data bytes plus room for a .npy header."""
    obs_shape, obs_item = tuple(obs_space.shape), np.dtype(obs_space.dtype).itemsize
    act_bytes = math.prod(act_space.shape) * np.dtype(act_space.dtype).itemsize
    limits = {"actions.npy": length * act_bytes, "obs.npy": (length + 1) * math.prod(obs_shape) * obs_item,
              "rewards.npy": length * 4, "obs_stack.npy": 8}
    if len(obs_shape) >= 2:
        limits["obs_frames.npy"] = (obs_shape[0] + length) * math.prod(obs_shape[1:]) * obs_item
    return {name: (size + _NPY_MIN_HEADER, size + _HEADER_ROOM) for name, size in limits.items()} \
        | {META_MEMBER: (2, META_LIMIT)}


def read_meta(data: bytes) -> dict[str, Any] | None:
    """The ``meta.json`` of an archive (None for archives of formats 1 and 2); ArchiveError when damaged."""
    raw = read_members(data, lambda name: (2, META_LIMIT) if name == META_MEMBER else None, only={META_MEMBER})
    if META_MEMBER not in raw:
        return None
    try:
        meta = json.loads(raw[META_MEMBER])
    except (ValueError, UnicodeDecodeError):
        raise ArchiveError("meta.json is not JSON") from None
    if not isinstance(meta, dict) or any(key not in meta for key in META_KEYS):
        raise ArchiveError("meta.json lacks the episode's metadata")
    length = meta["length"]
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise ArchiveError("meta.json has a bad length")
    return meta


def decode_episode(data: bytes, obs_space: gym.Space, act_space: gym.Space, length: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(obs, actions, rewards) of an archive declared to hold ``length`` steps of these spaces.

    Raises :class:`ArchiveError` when a member is unexpected, larger than those shapes allow (checked
    before inflating), of another dtype or shape, or fails its CRC.
    """
    limits = _member_limits(obs_space, act_space, length)
    raw = read_members(data, limits.get)
    raw.pop(META_MEMBER, None)
    arrays = {name.removesuffix(".npy"): read_npy(value) for name, value in raw.items()}
    if "actions" not in arrays:
        raise ArchiveError("no actions member")
    actions, rewards = arrays["actions"], arrays.get("rewards")
    if "obs_frames" in arrays:
        if "obs_stack" not in arrays or arrays["obs_stack"].shape != ():
            raise ArchiveError("obs_frames without a scalar obs_stack")
        frames, k = arrays["obs_frames"], int(arrays["obs_stack"])
        if k < 1 or len(obs_space.shape) < 2 or k != obs_space.shape[0] or frames.shape[1:] != obs_space.shape[1:] \
                or len(frames) != length + k:
            raise ArchiveError(f"obs_frames of shape {frames.shape} do not make {length + 1} stacks of "
                               f"{obs_space.shape}")
        windows = np.lib.stride_tricks.sliding_window_view(frames, k, axis=0)  # (T+1, ..., k)
        obs = np.ascontiguousarray(np.moveaxis(windows, -1, 1))
    elif "obs" in arrays:
        obs = arrays["obs"]
    else:
        raise ArchiveError("no observations member")
    expected = {"obs": ((length + 1, *obs_space.shape), obs_space.dtype, obs),
                "actions": ((length, *act_space.shape), act_space.dtype, actions)}
    if rewards is not None:
        expected["rewards"] = ((length,), np.float32, rewards)
    for name, (shape, dtype, arr) in expected.items():
        if arr.shape != shape or arr.dtype != np.dtype(dtype):
            raise ArchiveError(f"{name} is {arr.dtype} {arr.shape}, not the declared {np.dtype(dtype)} {shape}")
    return obs, actions, rewards
