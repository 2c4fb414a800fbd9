"""Gymnasium spaces <-> JSON, an exact round trip (infinite bounds included).

Checkpoints, datasets and run files store spaces as JSON, never as pickles, so loading one of them
runs no code.
"""

from __future__ import annotations

import math
from pathlib import Path
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


#: The most values a space read from a file may declare (a Box's elements, a Discrete's n, a MultiDiscrete's
#: categories): 2**25, e.g. a 3x2048x2048 frame stack of 4 would not fit, Atari's 4x84x84 uses 0.08%. A file
#: that declares more is damaged or hostile: building its networks would ask the allocator for terabytes.
MAX_SPACE_VALUES = 1 << 25


def _count(value: Any, what: str, where: str) -> int:
    """A non-negative JSON integer (not a bool or float) of a space description, or a one-line error."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise RLKitError(f"{where}a space declares {what}={value!r:.40}; it must be a non-negative integer")
    return value


def _bounded(total: int, description: str, where: str) -> None:
    if total > MAX_SPACE_VALUES:
        raise RLKitError(f"{where}a space declares {description} ({total:.3g} values), more than rlkit accepts "
                         f"({MAX_SPACE_VALUES}); the file is damaged or was not written for a real env")


def _numeric_dtype(name: Any, where: str) -> np.dtype:
    dtype = np.dtype(name)
    if dtype.kind not in "biuf":
        raise RLKitError(f"{where}a space declares dtype {name!r:.40}; spaces hold booleans, integers or floats")
    return dtype


def space_from_json(data: dict[str, Any], where: str | Path | None = None) -> gym.Space:
    """The space :func:`space_to_json` described; sizes above :data:`MAX_SPACE_VALUES`, negative or
    non-integer sizes and non-numeric dtypes are refused in one line naming ``where`` (the file)."""
    at = f"{where}: " if where else ""
    kind = data.get("type")
    if kind == "Discrete":
        n = _count(data["n"], "n", at)
        _bounded(n, f"Discrete(n={n})", at)
        return gym.spaces.Discrete(n, start=int(data.get("start", 0)))
    if kind == "Box":
        if not isinstance(data["shape"], list):
            raise RLKitError(f"{at}a Box space's shape must be a list of integers; got {data['shape']!r:.40}")
        shape = tuple(_count(d, "a Box dimension", at) for d in data["shape"])
        _bounded(math.prod(shape), f"a Box of shape {list(shape)}", at)
        dtype = _numeric_dtype(data["dtype"], at)
        return gym.spaces.Box(_decode_bound(data["low"], shape, dtype), _decode_bound(data["high"], shape, dtype),
                              shape=shape, dtype=dtype)
    if kind == "MultiDiscrete":
        nvec = data["nvec"] if isinstance(data["nvec"], list) else [data["nvec"]]
        flat = [_count(v, "a MultiDiscrete size", at) for v in np.array(nvec, dtype=object).reshape(-1)]
        _bounded(sum(flat) + len(flat), f"MultiDiscrete with {len(flat)} sizes summing to {sum(flat)}", at)
        return gym.spaces.MultiDiscrete(np.array(nvec), dtype=_numeric_dtype(data.get("dtype", "int64"), at))
    if kind == "MultiBinary":
        n = data["n"] if isinstance(data["n"], list) else [data["n"]]
        _bounded(math.prod(_count(d, "a MultiBinary size", at) for d in n), f"MultiBinary({data['n']!r:.40})", at)
        return gym.spaces.MultiBinary(data["n"])
    raise RLKitError(f"{at}unknown space type {kind!r} ; was the file written by a newer rlkit?")


def spaces_agree(ours: gym.Space, theirs: gym.Space) -> bool:
    """The same kind of space of the same size (Box bounds may differ: seals' CartPole and gymnasium's)."""
    if type(ours) is not type(theirs) or ours.shape != theirs.shape:
        return False
    if isinstance(ours, gym.spaces.Discrete):
        return int(ours.n) == int(theirs.n) and int(ours.start) == int(theirs.start)
    if isinstance(ours, gym.spaces.MultiDiscrete):
        return bool(np.array_equal(ours.nvec, theirs.nvec))
    return True
