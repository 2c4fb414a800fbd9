"""One optimizer builder and one learning-rate schedule, shared by every agent.

Agents name their optimizer in the config (``optimizer: adam|rmsprop``, ``optimizer_eps``,
``rmsprop_alpha``: :class:`OptimizerOptions`, mixed into the config) and anneal with one option,
``lr_schedule: constant|linear``. Nothing here is algorithm-specific, so a reader of an agent file
sees only the hyper-parameters that differ. The fast path :class:`rlkit.fast.flat_adam.FlatAdam`
(Adam over one flat parameter buffer) takes :func:`set_lr` too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from rlkit.config import opt
from rlkit.errors import RLKitError

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


def set_lr(optimizer: Any, lr: float) -> None:
    """Set the learning rate of every parameter group of a torch optimizer (of a ``FlatAdam``: its one rate)."""
    if not hasattr(optimizer, "param_groups"):  # rlkit.fast.flat_adam.FlatAdam
        optimizer.lr = lr
        return
    for group in optimizer.param_groups:
        group["lr"] = lr


@dataclass
class OptimizerChoice:
    """Which optimizer and schedule, for agents whose networks take learning rates of their own (DDPG/TD3's
    ``actor_lr`` and ``critic_lr``); mixed into their configs. :class:`OptimizerOptions` adds the one ``lr``."""

    lr_schedule: Schedule = opt("constant", "constant, or linear: anneal the learning rate to 0 at total_steps")
    optimizer: OptimizerName = opt("adam", "adam or rmsprop")
    optimizer_eps: float = opt(1e-8, "epsilon of the optimizer (Nature DQN's RMSProp: 0.01)", low=0, low_open=True)
    rmsprop_alpha: float = opt(0.99, "RMSProp decay of the squared-gradient average (Nature DQN: 0.95)", low=0,
                               low_open=True, high=1)
    rmsprop_centered: bool = opt(False, "centered RMSProp (the Nature DQN's variant)")

    def optimizer_for(self, params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float = 0.0
                      ) -> torch.optim.Optimizer:
        """:func:`make_optimizer` with these options and the learning rate ``lr``."""
        return make_optimizer(params, self.optimizer, lr, self.optimizer_eps, self.rmsprop_alpha,
                              self.rmsprop_centered, weight_decay=weight_decay)

    def validate_optimizer(self) -> None:
        """What the fields' ranges cannot say: RMSProp's decay is below 1 (at 1 its average never moves)."""
        if self.rmsprop_alpha >= 1:
            raise RLKitError(f"rmsprop_alpha must be below 1; got {self.rmsprop_alpha}")


@dataclass
class OptimizerOptions(OptimizerChoice):
    """The optimizer and learning-rate options of an agent with one optimizer (mixed into its config).

    Defaults are Adam's; an agent re-declares a default with :func:`rlkit.config.default` (A2C/A3C:
    RMSProp), and presets set per-task values (the Nature DQN's centered RMSProp, alpha 0.95).
    """

    lr: float = opt(1e-3, "learning rate", low=0, low_open=True)

    def build_optimizer(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """:func:`make_optimizer` with these options."""
        return self.optimizer_for(params, self.lr)

    def lr_at(self, progress: float) -> float:
        """The learning rate at ``progress`` (env steps done / total_steps) under ``lr_schedule``."""
        return scheduled(self.lr, self.lr_schedule, progress)
