"""Action distributions and heads beyond nets.py's categorical and Gaussian ones: the multi-categorical
head of MultiDiscrete actions and the squashed-Gaussian actor (tanh of a Gaussian, scaled to the action bounds)."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Distribution
from torch.nn import functional as F  # noqa: N812 - torch's own alias

from rlkit.nets import (
    ObsEncoder,
    check_bounded_box,
    mlp,
)

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


class SquashedGaussianActor(nn.Module):
    """s -> (mean, log std) of u; ``a = tanh(u) * scale + bias`` lies inside the Box bounds."""

    def __init__(self, observation_space: gym.Space, action_space: gym.spaces.Box, hidden: list[int]) -> None:
        super().__init__()
        check_bounded_box(action_space)
        self.encoder = ObsEncoder(observation_space)
        dim = int(np.prod(action_space.shape))
        self.trunk = mlp(self.encoder.out_dim, 0, hidden)
        width = hidden[-1] if hidden else self.encoder.out_dim
        self.mean, self.log_std = nn.Linear(width, dim), nn.Linear(width, dim)
        low = torch.as_tensor(action_space.low, dtype=torch.float32).flatten()
        high = torch.as_tensor(action_space.high, dtype=torch.float32).flatten()
        self.register_buffer("action_scale", (high - low) / 2.0)
        self.register_buffer("action_bias", (high + low) / 2.0)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(self.encoder(obs))
        return self.mean(h), self.log_std(h).clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised action (Box units) and its log-prob (of the [-1, 1] action)."""
        mean, log_std = self(obs)
        u = mean + log_std.exp() * torch.randn_like(mean)
        return torch.tanh(u) * self.action_scale + self.action_bias, squashed_log_prob(u, mean, log_std)

    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return torch.tanh(self(obs)[0]) * self.action_scale + self.action_bias if deterministic \
            else self.sample(obs)[0]
