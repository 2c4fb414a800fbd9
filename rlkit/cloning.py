"""Behaviour cloning's learner, which BC and DAgger share: the network, its losses, one epoch, the policy."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical

from rlkit.errors import RLKitError
from rlkit.fast.flat_adam import FlatAdam
from rlkit.fast.numpy_forward import numpy_forward
from rlkit.nets import DeterministicActor, QNetwork, init_orthogonal
from rlkit.policy import TorchPolicy


# ALGO LOGIC: the math, as pure functions (unit-tested against hand values).
def gaussian_nll(mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -log N(a; mean, diag(exp(log_std))^2), summed over action dimensions."""
    z = (actions - mean) * torch.exp(-log_std)
    per_dim = 0.5 * z.pow(2) + log_std + 0.5 * float(np.log(2 * np.pi))
    return per_dim.sum(dim=-1).mean()


def bc_loss(output: torch.Tensor, actions: torch.Tensor, loss: str, log_std: torch.Tensor | None = None
            ) -> torch.Tensor:
    """The BC loss of one minibatch.

    Args:
        output: logits (B, n) for ``ce``; action means (B, d) for ``mse`` / ``nll``.
        actions: expert actions, (B,) integers for ``ce``, (B, d) floats otherwise.
        loss: ``ce`` (cross-entropy), ``mse`` (mean over batch and dims) or ``nll`` (Gaussian).
        log_std: (d,) log standard deviation, needed by ``nll``.
    """
    if loss == "ce":
        return nn.functional.cross_entropy(output, actions)
    if loss == "mse":
        return nn.functional.mse_loss(output, actions)
    assert log_std is not None, "the nll loss needs log_std"
    return gaussian_nll(output, log_std, actions)


def resolve_loss(loss: str, action_space: gym.Space) -> str:
    discrete = isinstance(action_space, gym.spaces.Discrete)
    if not discrete and not isinstance(action_space, gym.spaces.Box):
        raise RLKitError(f"bc supports Discrete and Box action spaces; got {action_space}")
    if loss == "auto":
        return "ce" if discrete else "mse"
    if (loss == "ce") != discrete:
        raise RLKitError(f"loss {loss!r} does not fit action space {action_space}; use "
                         f"{'ce' if discrete else 'mse or nll'} (or loss=auto)")
    return loss


class BCNet(nn.Module):
    """obs -> logits (Discrete, a ``QNetwork`` body) or action mean in the Box (``DeterministicActor``).

    ``log_std`` exists only for the Gaussian NLL loss. Reusing the shared builders keeps the CNN for
    images and lets ``numpy_forward`` serve greedy actions fast.
    """

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, hidden: list[int], loss: str,
                 device: str = "cpu") -> None:
        super().__init__()
        if isinstance(action_space, gym.spaces.Discrete):
            self.body: nn.Module = QNetwork(observation_space, action_space, hidden)
            layers = [*self.body.trunk, self.body.head]
        else:
            self.body = DeterministicActor(observation_space, action_space, hidden)
            layers = list(self.body.net)
        # Orthogonal init, the output layer scaled down (as SB3's and CleanRL's policy nets): starting
        # near a uniform policy, BC from one CartPole demonstration scores 456 instead of 243 (4 seeds).
        init_orthogonal(self.body)
        init_orthogonal(next(m for m in reversed(layers) if isinstance(m, nn.Linear)), gain=0.01)
        dim = int(np.prod(action_space.shape or (1,)))
        self.log_std = nn.Parameter(torch.zeros(dim)) if loss == "nll" else None
        self.to(device)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.body(obs)


def bc_act(net: BCNet, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
    out = net(obs)
    if isinstance(net.body, QNetwork):
        return out.argmax(dim=1) if deterministic else Categorical(logits=out).sample()
    if deterministic or net.log_std is None:
        return out
    actor = net.body
    noisy = out + net.log_std.exp() * torch.randn_like(out)
    low, high = actor.action_bias - actor.action_scale, actor.action_bias + actor.action_scale
    return torch.maximum(torch.minimum(noisy, high), low)


def make_policy(net: BCNet, observation_space: gym.Space, action_space: gym.Space) -> TorchPolicy:
    act_shape = action_space.shape

    def act_fn(module: BCNet, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        out = bc_act(module, obs, deterministic)
        return out if isinstance(action_space, gym.spaces.Discrete) else out.reshape(len(out), *act_shape)

    fast = numpy_forward(net.body)
    if fast is not None and isinstance(action_space, gym.spaces.Box):
        base = fast
        fast = lambda obs: base(obs).astype(action_space.dtype).reshape(len(obs), *act_shape)  # noqa: E731
    return TorchPolicy(net, act_fn, action_space, observation_space, fast=fast)


def to_tensors(dataset: Any, action_space: gym.Space, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(obs, actions) of every transition as two tensors: the whole fast path's data.

    Observations keep their dtype (uint8 frames stay 1 byte each; the encoder converts per batch).
    """
    tr = dataset.transitions()
    return torch.as_tensor(np.ascontiguousarray(tr.obs), device=device), action_tensor(tr.acts, action_space, device)


def action_tensor(actions: np.ndarray, action_space: gym.Space, device: str = "cpu") -> torch.Tensor:
    """Actions as BC targets: class indices (int64) for Discrete, (N, d) float32 for Box."""
    if isinstance(action_space, gym.spaces.Discrete):
        return torch.as_tensor(np.asarray(actions).astype(np.int64) - int(action_space.start), device=device)
    return torch.as_tensor(np.asarray(actions, dtype=np.float32).reshape(len(actions), -1), device=device)


def train_epoch(net: BCNet, optimizer: FlatAdam | torch.optim.Optimizer, obs: torch.Tensor, acts: torch.Tensor,
                batch_size: int, loss: str, max_steps: int | None = None) -> tuple[float, int, int]:
    """One shuffled pass (or ``max_steps`` minibatches); returns (mean loss, gradient steps, samples)."""
    net.train()
    order = torch.randperm(len(obs), device=obs.device)
    total, steps, samples = torch.zeros(()), 0, 0
    for start in range(0, len(obs), batch_size):
        if max_steps is not None and steps >= max_steps:
            break
        idx = order[start:start + batch_size]
        batch_loss = bc_loss(net(obs[idx]), acts[idx], loss, net.log_std)
        optimizer.zero_grad()
        batch_loss.backward()
        optimizer.step()
        total += batch_loss.detach()  # no .item() per step: it would sync and cost a Python float
        steps += 1
        samples += len(idx)
    return float(total) / max(steps, 1), steps, samples


@torch.no_grad()
def evaluate_loss(net: BCNet, obs: torch.Tensor, acts: torch.Tensor, loss: str, chunk: int = 4096
                  ) -> tuple[float, float | None]:
    """(mean loss, accuracy for discrete actions or None) over a whole split, in chunks."""
    net.eval()
    total, correct = 0.0, 0
    for start in range(0, len(obs), chunk):
        out = net(obs[start:start + chunk])
        target = acts[start:start + chunk]
        total += float(bc_loss(out, target, loss, net.log_std)) * len(target)
        if loss == "ce":
            correct += int((out.argmax(dim=1) == target).sum())
    n = max(len(obs), 1)
    return total / n, (correct / n if loss == "ce" else None)


def policy_from_state(state: dict[str, Any], hidden: list[int]) -> TorchPolicy:
    """The policy of a BC or DAgger checkpoint (the final one holds the best weights)."""
    net = BCNet(state["observation_space"], state["action_space"], hidden, state["loss_kind"])
    net.load_state_dict(state["net"])
    net.eval()
    return make_policy(net, state["observation_space"], state["action_space"])
