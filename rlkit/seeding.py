"""One seeding helper for the whole toolkit, plus RNG-state capture for checkpoints."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> np.random.Generator:
    """Seed python's, numpy's and torch's global RNGs; return a fresh numpy Generator for buffers and noise.

    Args:
        seed: the run's seed. Envs get ``seed + idx``, A3C workers ``seed + rank``.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def get_rng_state(rng: np.random.Generator | None = None) -> dict[str, Any]:
    """Everything needed to continue the random streams after a resume."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy_global": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if rng is not None:
        state["generator"] = rng.bit_generator.state
    return state


def set_rng_state(state: dict[str, Any], rng: np.random.Generator | None = None) -> None:
    """Inverse of :func:`get_rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy_global"])
    torch.set_rng_state(state["torch"])
    if rng is not None and "generator" in state:
        rng.bit_generator.state = state["generator"]
