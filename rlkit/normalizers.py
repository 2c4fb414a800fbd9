"""Running normalisers: the mean and variance of observations (or of returns), merged batch by batch,
with clipping; DDPG/TD3, SAC and PPO use them."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rlkit.policy import Batch


def merge_moments(mean: np.ndarray, var: np.ndarray, count: float, batch: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, float]:
    """Running mean/variance after adding ``batch`` (rows), by Chan et al.'s parallel update."""
    b_mean, b_var, b_count = batch.mean(axis=0), batch.var(axis=0), len(batch)
    total = count + b_count
    delta = b_mean - mean
    new_var = (var * count + b_var * b_count + delta**2 * count * b_count / total) / total
    return mean + delta * b_count / total, new_var, total


class ObsNormalizer:
    """Running mean/std of observations; ``(obs - mean) / std`` clipped to +-``clip``."""

    def __init__(self, shape: tuple[int, ...], clip: float = 10.0) -> None:
        self.mean, self.var, self.count, self.clip = np.zeros(shape), np.ones(shape), 1e-4, clip

    def update(self, obs: np.ndarray) -> None:
        self.mean, self.var, self.count = merge_moments(self.mean, self.var, self.count, np.asarray(obs))

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return np.clip((obs - self.mean) / np.sqrt(self.var + 1e-8), -self.clip, self.clip).astype(np.float32)

    @classmethod
    def from_state(cls, shape: tuple[int, ...], state: dict[str, Any] | None) -> ObsNormalizer | None:
        """The normalizer a checkpoint saved (``state``), or None when the run had none."""
        if state is None:
            return None
        normalizer = cls(shape)
        normalizer.load_state_dict(state)
        return normalizer

    def batch(self, batch: Batch) -> Batch:
        """``batch`` with its observations normalised (the running statistics as they are now)."""
        return batch._replace(obs=self.torch(batch.obs), next_obs=self.torch(batch.next_obs))

    def torch(self, obs: torch.Tensor) -> torch.Tensor:
        mean = torch.as_tensor(self.mean, dtype=torch.float32, device=obs.device)
        std = torch.as_tensor(np.sqrt(self.var + 1e-8), dtype=torch.float32, device=obs.device)
        return ((obs.float() - mean) / std).clamp(-self.clip, self.clip)

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "var": self.var, "count": self.count, "clip": self.clip}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean, self.var, self.count, self.clip = state["mean"], state["var"], state["count"], state["clip"]
