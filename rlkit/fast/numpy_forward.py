"""The numpy acting path: the same layers as the torch nets, run in numpy on views of the live weights.

At batch sizes 1-64 a torch forward of a CartPole-sized MLP costs 5-10x more than its matrix products
(per-call dispatch, autograd bookkeeping), so acting (DQN, DDPG, SAC, A2C/PPO rollouts, BC and DAgger
policies) runs the same layers in numpy. The arrays are views of the live torch parameters (CPU only), so
every in-place optimizer step is seen without a copy. ``tests/test_fast.py`` checks each function against
the torch forward it replaces.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import nn

from rlkit.distributions import LOG_STD_MAX, LOG_STD_MIN, CategoricalHead
from rlkit.nets import ActorCritic, DeterministicActor, ObsEncoder, QNetwork, SquashedGaussianActor

NumpyOps = list[tuple[str, Any, Any]]


def numpy_ops(layers: Sequence[nn.Module]) -> NumpyOps | None:
    """A chain of Linear/ReLU/Tanh layers as numpy ops on views of their weights, or None for anything else."""
    ops: NumpyOps = []
    for layer in layers:
        if isinstance(layer, nn.Linear):
            if layer.weight.device.type != "cpu":
                return None
            ops.append(("linear", layer.weight.detach().numpy().T, layer.bias.detach().numpy()))
        elif isinstance(layer, (nn.ReLU, nn.Tanh)):
            ops.append((type(layer).__name__.lower(), None, None))
        else:
            return None
    return ops


def run_numpy(ops: NumpyOps, x: np.ndarray) -> np.ndarray:
    """Apply :func:`numpy_ops` to a (batch, features) float32 array (activations in place on fresh arrays)."""
    for kind, weight, bias in ops:
        if kind == "linear":
            x = x @ weight + bias
        elif kind == "relu":
            np.maximum(x, 0.0, out=x)
        else:
            np.tanh(x, out=x)
    return x


def _flat_input(encoder: ObsEncoder) -> bool:
    return encoder.cnn is None and not encoder.n_discrete


def numpy_forward(module: nn.Module) -> Any:
    """Greedy actions of a plain-MLP :class:`QNetwork` (no dueling) or :class:`DeterministicActor` in numpy,
    or None (then callers use torch).

    Returns ``forward(obs) -> output``: ``argmax`` for Q-networks, scaled actions for actors.
    """
    if isinstance(module, QNetwork) and _flat_input(module.encoder) and isinstance(module.head, nn.Linear):
        ops = numpy_ops([*module.trunk, module.head])
        return None if ops is None else lambda obs: run_numpy(ops, _as_rows(obs)).argmax(axis=1)
    if isinstance(module, DeterministicActor) and _flat_input(module.encoder):
        ops = numpy_ops(list(module.net))
        if ops is None:
            return None
        scale, bias = module.action_scale.numpy(), module.action_bias.numpy()
        return lambda obs: run_numpy(ops, _as_rows(obs)) * scale + bias
    return None


def _as_rows(obs: np.ndarray) -> np.ndarray:
    return np.asarray(obs, dtype=np.float32).reshape(len(obs), -1)


def numpy_actor_critic(model: ActorCritic, rng: np.random.Generator | None) -> Any:
    """``actor(obs, deterministic=False) -> (actions, values)`` of a plain-MLP :class:`ActorCritic` in numpy,
    or None (CNN, one-hot inputs, a GPU model).

    Samples with ``rng`` (unused when deterministic): categorical actions by inverse-CDF sampling,
    Gaussian ones as mean + std * N(0, 1) (unclipped, as the torch head samples them).
    """
    if not _flat_input(model.encoder):
        return None
    categorical = isinstance(model.policy, CategoricalHead)
    trunk = numpy_ops(model.trunk)
    value_trunk = None if model.value_trunk is None else numpy_ops(model.value_trunk)
    head = numpy_ops([model.policy.logits if categorical else model.policy.mean])
    value_head = numpy_ops([model.value])
    if trunk is None or head is None or value_head is None or (model.value_trunk is not None and value_trunk is None):
        return None
    log_std = None if categorical else model.policy.log_std.detach().numpy()

    def actor(obs: np.ndarray, deterministic: bool = False) -> tuple[np.ndarray, np.ndarray]:
        x = _as_rows(obs)
        hidden = run_numpy(trunk, x)
        values = run_numpy(value_head, hidden if value_trunk is None else run_numpy(value_trunk, x))[:, 0]
        out = run_numpy(head, hidden)
        if categorical:
            if deterministic:
                return out.argmax(axis=1), values
            cdf = np.cumsum(np.exp(out - out.max(axis=1, keepdims=True)), axis=1)
            u = rng.random((len(out), 1)) * cdf[:, -1:]  # one uniform per row, scaled by the unnormalised total
            return np.minimum((cdf <= u).sum(axis=1), out.shape[1] - 1), values
        if deterministic:
            return out, values
        return (out + np.exp(log_std) * rng.standard_normal(out.shape)).astype(np.float32), values

    return actor


def numpy_squashed_gaussian(actor: SquashedGaussianActor, rng: np.random.Generator | None) -> Any:
    """``act(obs, deterministic) -> actions`` of a plain-MLP :class:`SquashedGaussianActor` (SAC) in numpy, or
    None (images, one-hot inputs, a GPU actor).

    Deterministic: ``tanh(mean) * scale + bias``; else ``tanh(mean + std * N(0, 1)) * scale + bias`` with the
    normal draws from ``rng``, log-std clamped as the torch actor clamps it.
    """
    trunk = numpy_ops(actor.trunk)
    if trunk is None or not _flat_input(actor.encoder):
        return None
    mean_layer, log_std_layer = numpy_ops([actor.mean]), numpy_ops([actor.log_std])
    if mean_layer is None or log_std_layer is None:
        return None
    scale, bias = actor.action_scale.numpy(), actor.action_bias.numpy()

    def act(obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        hidden = run_numpy(trunk, _as_rows(obs))
        u = run_numpy(mean_layer, hidden)
        if not deterministic:
            log_std = np.clip(run_numpy(log_std_layer, hidden), LOG_STD_MIN, LOG_STD_MAX)
            u = u + np.exp(log_std) * rng.standard_normal(u.shape)
        return (np.tanh(u) * scale + bias).astype(np.float32)

    return act
