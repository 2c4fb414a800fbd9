"""Gymnasium spaces <-> JSON, an exact round trip (infinite bounds included).

Checkpoints, datasets and run files store spaces as JSON, never as pickles, so loading one of them
runs no code.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np

from rlkit.errors import RLKitError


def _encode_bound(arr: np.ndarray) -> Any:
    """A Box bound as a scalar when uniform (image spaces) or a nested list; non-finite as strings."""
    def enc(x: Any) -> Any:
        return x if not isinstance(x, float) or math.isfinite(x) else str(x)  # strict JSON has no infinities

    flat = arr.reshape(-1)
    if flat.size and np.all(flat == flat[0]):
        return enc(flat[0].item())
    return np.vectorize(lambda x: enc(x.item() if hasattr(x, "item") else x), otypes=[object])(arr).tolist()


def _decode_bound(value: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    if isinstance(value, list):
        values = np.vectorize(float, otypes=[np.float64])(np.array(value, dtype=object))  # float("inf") works
        return values.astype(dtype).reshape(shape)
    return np.full(shape, float(value), dtype=dtype)


def space_to_json(space: gym.Space) -> dict[str, Any]:
    """A JSON-able description of ``space`` from which :func:`space_from_json` rebuilds it exactly."""
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.Box):
        return {"type": "Box", "shape": list(space.shape), "dtype": str(space.dtype),
                "low": _encode_bound(space.low), "high": _encode_bound(space.high)}
    if isinstance(space, gym.spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist(), "dtype": str(space.dtype)}
    if isinstance(space, gym.spaces.MultiBinary):
        return {"type": "MultiBinary", "n": np.asarray(space.n).tolist()}
    raise RLKitError(f"rlkit stores Box, Discrete, MultiDiscrete and MultiBinary spaces, not "
                     f"{type(space).__name__}; flatten the env's space with a wrapper first")


def space_brief(space: gym.Space) -> str:
    """A one-line description of a space (numpy's repr of long bounds spans lines)."""
    if isinstance(space, gym.spaces.Box):
        return f"Box{tuple(space.shape)} {space.dtype}"
    return repr(space).replace("\n", " ")


def space_from_json(data: dict[str, Any]) -> gym.Space:
    kind = data.get("type")
    if kind == "Discrete":
        return gym.spaces.Discrete(int(data["n"]), start=int(data.get("start", 0)))
    if kind == "Box":
        shape, dtype = tuple(data["shape"]), np.dtype(data["dtype"])
        return gym.spaces.Box(_decode_bound(data["low"], shape, dtype), _decode_bound(data["high"], shape, dtype),
                              shape=shape, dtype=dtype)
    if kind == "MultiDiscrete":
        return gym.spaces.MultiDiscrete(np.array(data["nvec"]), dtype=np.dtype(data.get("dtype", "int64")))
    if kind == "MultiBinary":
        return gym.spaces.MultiBinary(data["n"])
    raise RLKitError(f"unknown space type {kind!r} ; was the file written by a newer rlkit?")
