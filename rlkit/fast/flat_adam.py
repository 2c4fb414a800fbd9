"""Adam over one flat parameter buffer: the training fast path of small MLPs (behavior cloning, DAgger, PPO).

For the small MLPs of behavior cloning and PPO the optimizer's per-parameter bookkeeping, not arithmetic,
dominates a step; ``benchmarks/bench_bc.py`` measures the effect. ``tests/test_fast.py`` checks it step for
step against ``torch.optim.Adam``.
"""

from __future__ import annotations

from typing import Any

import torch


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
