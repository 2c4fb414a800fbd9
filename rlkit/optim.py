"""One optimizer builder and one learning-rate schedule, shared by every agent.

Agents name their optimizer in the config (``optimizer: adam|rmsprop``, ``optimizer_eps``,
``rmsprop_alpha``) and anneal with one option, ``lr_schedule: constant|linear``. Nothing here is
algorithm-specific, so a reader of an agent file sees only the hyper-parameters that differ.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch

OptimizerName = Literal["adam", "rmsprop"]
Schedule = Literal["constant", "linear"]


def make_optimizer(params: Iterable[torch.nn.Parameter], name: OptimizerName = "adam", lr: float = 3e-4,
                   eps: float = 1e-8, rmsprop_alpha: float = 0.99, centered: bool = False,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Build Adam or RMSProp over ``params``.

    Args:
        params: the parameters to optimise.
        name: ``adam`` (Kingma & Ba 2015) or ``rmsprop`` (Tieleman & Hinton 2012).
        lr: learning rate (> 0).
        eps: the optimizer's epsilon (Adam 1e-8; the Nature DQN's RMSProp 0.01; A2C's 1e-5).
        rmsprop_alpha: RMSProp's smoothing constant (A3C 0.99; the Nature DQN 0.95).
        centered: centered RMSProp (the Nature DQN's variant).
        weight_decay: L2 penalty added to the gradient.

    Adam uses torch's fused kernel (one kernel for all parameters, CPU and CUDA since torch 2.4);
    RMSProp has no fused kernel and uses the ``foreach`` path.
    """
    params = list(params)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, eps=eps, weight_decay=weight_decay, fused=True)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=rmsprop_alpha, eps=eps, centered=centered,
                                   weight_decay=weight_decay, foreach=True)
    raise ValueError(f"unknown optimizer {name!r}; use adam or rmsprop")


def linear(start: float, end: float, fraction: float) -> float:
    """``start`` at ``fraction`` 0, ``end`` at 1 and after (``fraction`` is clipped to [0, 1])."""
    return start + (end - start) * min(max(fraction, 0.0), 1.0)


def scheduled(value: float, schedule: Schedule, progress: float) -> float:
    """``value`` under ``schedule`` at ``progress`` in [0, 1]: constant, or linear from ``value`` to 0."""
    return linear(value, 0.0, progress) if schedule == "linear" else value


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr
