"""One optimizer builder and one learning-rate schedule, shared by every agent.

Agents name their optimizer in the config (``optimizer: adam|rmsprop``, ``optimizer_eps``,
``rmsprop_alpha``: :class:`OptimizerOptions`, mixed into the config) and anneal with one option,
``lr_schedule: constant|linear``. Nothing here is algorithm-specific, so a reader of an agent file
sees only the hyper-parameters that differ. :class:`FlatAdam` is Adam over one flat parameter buffer,
the training fast path of the small behavior-cloning nets.
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


def set_lr(optimizer: torch.optim.Optimizer | FlatAdam, lr: float) -> None:
    """Set the learning rate of every parameter group (of a :class:`FlatAdam`: its one rate)."""
    if isinstance(optimizer, FlatAdam):
        optimizer.lr = lr
        return
    for group in optimizer.param_groups:
        group["lr"] = lr


@dataclass
class OptimizerOptions:
    """The optimizer and learning-rate options of an agent with one optimizer (mixed into its config).

    Defaults are Adam's; an agent re-declares a default with :func:`rlkit.config.default` (A2C/A3C:
    RMSProp), and presets set per-task values (the Nature DQN's centered RMSProp, alpha 0.95).
    """

    lr: float = opt(1e-3, "learning rate", low=0)
    lr_schedule: Schedule = opt("constant", "constant, or linear: anneal the learning rate to 0 at total_steps")
    optimizer: OptimizerName = opt("adam", "adam or rmsprop")
    optimizer_eps: float = opt(1e-8, "epsilon of the optimizer (Nature DQN's RMSProp: 0.01)", low=0, low_open=True)
    rmsprop_alpha: float = opt(0.99, "RMSProp decay of the squared-gradient average (Nature DQN: 0.95)", low=0,
                               high=1)
    rmsprop_centered: bool = opt(False, "centered RMSProp (the Nature DQN's variant)")

    def build_optimizer(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """:func:`make_optimizer` with these options."""
        return make_optimizer(params, self.optimizer, self.lr, self.optimizer_eps, self.rmsprop_alpha,
                              self.rmsprop_centered)

    def lr_at(self, progress: float) -> float:
        """The learning rate at ``progress`` (env steps done / total_steps) under ``lr_schedule``."""
        return scheduled(self.lr, self.lr_schedule, progress)

    def validate_optimizer(self) -> None:
        if self.lr <= 0 or self.optimizer_eps <= 0 or not 0 < self.rmsprop_alpha < 1:
            raise RLKitError(f"lr and optimizer_eps must be positive and rmsprop_alpha in (0, 1); got lr={self.lr}, "
                             f"optimizer_eps={self.optimizer_eps}, rmsprop_alpha={self.rmsprop_alpha}")


def flatten_parameters(module: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Make every parameter of ``module`` (and its ``.grad``) a view into one flat buffer; return both buffers.

    Autograd then accumulates gradients into the views in place, so an optimizer can update all
    parameters with a handful of tensor ops on the two buffers (see :class:`FlatAdam`). Call it after
    the module is on its final device; ``state_dict``/``load_state_dict`` keep working (they copy in place).
    """
    params = list(module.parameters())
    with torch.no_grad():
        flat = torch.cat([p.reshape(-1) for p in params])
    flat_grad = torch.zeros_like(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.data = flat[offset:offset + n].view_as(p)
        p.grad = flat_grad[offset:offset + n].view_as(p)
        offset += n
    return flat, flat_grad


class FlatAdam:
    """Adam (Kingma & Ba 2015, exactly as ``torch.optim.Adam``; L2 ``weight_decay`` added to the gradient)
    on a module whose parameters :func:`flatten_parameters` puts into one buffer: an update is five
    tensor ops whatever the layer count.

    Why it exists: for the small MLPs of behavior cloning the optimizer's per-parameter bookkeeping,
    not arithmetic, dominates a step; ``benchmarks/bench_bc.py`` measures the effect. It is tested step for
    step against ``torch.optim.Adam``. ``zero_grad`` zeroes the flat gradient in place (never None: the
    parameters' ``.grad`` are views of it). Flattens ``module`` when it is built.
    """

    def __init__(self, module: torch.nn.Module, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        self.param, self.grad = flatten_parameters(module)
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.exp_avg, self.exp_avg_sq = torch.zeros_like(self.param), torch.zeros_like(self.param)
        self.steps = 0

    def zero_grad(self, set_to_none: bool = False) -> None:
        self.grad.zero_()

    @torch.no_grad()
    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """``torch.nn.utils.clip_grad_norm_`` over the flat gradient: scale it by ``max_norm / (norm + 1e-6)``
        when its global L2 norm exceeds ``max_norm``; one norm instead of one per parameter plus their norm
        (so the norm can differ from torch's in the last float bits). Returns the norm before clipping."""
        norm = torch.linalg.vector_norm(self.grad)
        self.grad.mul_((max_norm / (norm + 1e-6)).clamp_(max=1.0))
        return norm

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        self.steps += 1
        grad = self.grad if not self.weight_decay else self.grad.add(self.param, alpha=self.weight_decay)
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (self.exp_avg_sq / (1 - beta2 ** self.steps)).sqrt_().add_(self.eps)
        self.param.addcdiv_(self.exp_avg, denom, value=-self.lr / (1 - beta1 ** self.steps))

    def state_dict(self) -> dict[str, Any]:
        return {"exp_avg": self.exp_avg.clone(), "exp_avg_sq": self.exp_avg_sq.clone(), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.exp_avg.copy_(state["exp_avg"])
        self.exp_avg_sq.copy_(state["exp_avg_sq"])
        self.steps = int(state["steps"])
