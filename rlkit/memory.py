"""Memory estimates checked before allocating: a network, replay buffer or rollout that cannot fit in the
machine's memory is refused in one line with its size, instead of a long allocator traceback (or a swap
storm) once torch or numpy tries to allocate it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from rlkit.errors import RLKitError

# Training keeps four float32 copies of every parameter: the weights, their gradients and Adam's two moments.
_BYTES_PER_TRAINED_PARAMETER = 4 * 4


def available_memory() -> int | None:
    """Bytes of memory this process can still get (MemAvailable, or physical memory), None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def gib(n: int) -> str:
    return f"{n / 2**30:,.2f} GiB"


def refuse_if_too_big(what: str, need: int, fix: str) -> None:
    """One-line RLKitError when ``need`` bytes exceed the memory available now (unknown: no check)."""
    have = available_memory()
    if have is not None and need > have:
        raise RLKitError(f"{what} needs {gib(need)}, but this machine has {gib(have)} available; {fix}")


def mlp_parameters(in_dim: int, hidden: Sequence[int], out_dim: int) -> int:
    """Weights and biases of the fully connected stack ``in_dim -> hidden... -> out_dim`` (0: no output layer)."""
    sizes = [int(in_dim), *(int(h) for h in hidden)] + ([int(out_dim)] if out_dim > 0 else [])
    return sum((fan_in + 1) * fan_out for fan_in, fan_out in zip(sizes[:-1], sizes[1:]))


def check_network_fits(in_dim: int, hidden: Sequence[int], out_dim: int, copies: int = 1) -> None:
    """Refuse, before torch allocates it, an MLP (``copies`` of it, e.g. an ensemble of critics) whose training
    state (weights, gradients, Adam's moments) would not fit in memory."""
    params = mlp_parameters(in_dim, hidden, out_dim) * copies
    refuse_if_too_big(f"training a network of {params:,} parameters ({in_dim} inputs, hidden {list(hidden)}: "
                      "weights, gradients and Adam's moments)",
                      params * _BYTES_PER_TRAINED_PARAMETER, "lower the hidden sizes")
