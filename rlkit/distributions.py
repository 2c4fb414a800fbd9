"""Action distributions and the heads that make them from features: categorical (Discrete), multi-categorical
(MultiDiscrete), diagonal Gaussian (Box), and the squashed Gaussian's log-density (tanh of a Gaussian, SAC's).
The networks that use them are in :mod:`rlkit.nets`."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal
from torch.nn import functional as F  # noqa: N812 - torch's own alias

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # the squashed-Gaussian actor's log-std clamp


class MultiCategorical(Distribution):
    """Independent categoricals over the slices of one logits vector (MultiDiscrete actions)."""

    arg_constraints: dict = {}

    def __init__(self, logits: torch.Tensor, nvec: list[int]) -> None:
        self.dists = [Categorical(logits=part) for part in torch.split(logits, nvec, dim=-1)]
        super().__init__(batch_shape=logits.shape[:-1], validate_args=False)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # noqa: B008 - torch's signature
        return torch.stack([d.sample(sample_shape) for d in self.dists], dim=-1)

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        return sum(d.log_prob(actions[..., i]) for i, d in enumerate(self.dists))

    def entropy(self) -> torch.Tensor:
        return sum(d.entropy() for d in self.dists)

    @property
    def mode(self) -> torch.Tensor:
        return torch.stack([d.probs.argmax(dim=-1) for d in self.dists], dim=-1)


class MultiCategoricalHead(nn.Module):
    """Features -> ``sum(nvec)`` logits (one linear layer) -> :class:`MultiCategorical`."""

    def __init__(self, logits: nn.Linear, nvec: list[int]) -> None:
        super().__init__()
        self.logits, self.nvec = logits, nvec

    def forward(self, features: torch.Tensor) -> Distribution:
        return MultiCategorical(self.logits(features), self.nvec)

    @staticmethod
    def mode(dist: MultiCategorical) -> torch.Tensor:
        return dist.mode


# ALGO LOGIC: the math, as pure functions (unit-tested against closed forms and hand values).
def squashed_log_prob(u: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log density of ``tanh(u)`` where ``u ~ N(mean, exp(log_std))`` (diagonal), summed over the last axis."""
    gaussian = (-0.5 * ((u - mean) / log_std.exp()).pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    # log(1 - tanh(u)^2) = 2 * (log 2 - u - softplus(-2u)), finite for any u
    return gaussian - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)


class CategoricalHead(nn.Module):
    """Features -> logits -> Categorical distribution."""

    def __init__(self, in_dim: int, n_actions: int) -> None:
        super().__init__()
        self.logits = nn.Linear(in_dim, n_actions)

    def forward(self, features: torch.Tensor) -> Distribution:
        return Categorical(logits=self.logits(features))

    @staticmethod
    def mode(dist: Distribution) -> torch.Tensor:
        return dist.probs.argmax(dim=-1)


class GaussianHead(nn.Module):
    """Features -> diagonal Gaussian with a state-independent learned log std (as in A2C/PPO)."""

    def __init__(self, in_dim: int, action_dim: int, log_std_init: float = 0.0) -> None:
        super().__init__()
        self.mean = nn.Linear(in_dim, action_dim)
        self.log_std = nn.Parameter(torch.full((action_dim,), log_std_init))

    def forward(self, features: torch.Tensor) -> Distribution:
        mean = self.mean(features)
        return Independent(Normal(mean, self.log_std.exp().expand_as(mean)), 1)

    @staticmethod
    def mode(dist: Distribution) -> torch.Tensor:
        return dist.mean
