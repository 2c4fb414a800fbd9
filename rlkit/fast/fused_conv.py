"""DQN's gradient step for MinAtar's Q-network on the CPU, by hand, for one seed or several stacked.

MinAtar's network (:class:`rlkit.nets.MinAtarCNN` under a :class:`rlkit.nets.QNetwork`: a 3x3 convolution with
16 channels, ReLU, a 128-unit linear layer, ReLU, the linear head) is small: a batch of 32 is about 40 MFLOP for a
whole DQN step, yet the plain autograd step took about 2.5 ms of the 3.3 ms a 5M-frame run spends per frame
(py-spy over ``rlkit train dqn --preset minatar-breakout``): module calls, the autograd graph, ``Conv2d``'s
dispatch and ``torch.optim.RMSprop``'s bookkeeping. Here the convolution is one matrix product over the grid's
3x3 patches (im2col: the patches are gathered by one ``index_select`` with indices computed once), the linear
layers are ``baddbmm``/``bmm``, the loss gradient is in closed form as in :mod:`rlkit.fast.fused_mlp`, and the
optimizer step runs on the optimizer's own state with the kernels its ``step()`` runs: ``torch._fused_adam_`` for
Adam, the ``_foreach`` sequence of ``torch.optim.RMSprop`` (plain or centered, no momentum) for RMSProp.

Every tensor carries a leading seeds dimension, so one seed (:class:`ConvDQN`, what :func:`rlkit.fast.fused_mlp
.fused_dqn` returns for this network) and several seeds stacked (:class:`StackedConvDQN`, built by
:func:`rlkit.fast.stacked_dqn.stack_dqn`) run the same code. Products are batched, so results agree with autograd
to float tolerance, not bit for bit (``tests/test_fast_conv.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from rlkit.nets import MinAtarCNN, QNetwork
from rlkit.policy import Batch

Layers = list[tuple[torch.Tensor, torch.Tensor]]
BATCH_FIELDS = ("obs", "actions", "rewards", "next_obs", "terminated", "discounts", "weights")  # a Batch's tensors


def conv_q_layers(q_net: nn.Module) -> Layers | None:
    """[(conv weight, bias), (linear weight, bias)...] of a CPU float32 :class:`QNetwork` on a channels-first
    :class:`MinAtarCNN` (stride-1 unpadded convolution) with a Linear/ReLU trunk and a linear head; else None."""
    if not isinstance(q_net, QNetwork) or not isinstance(q_net.encoder.cnn, MinAtarCNN):
        return None
    return minatar_layers(q_net.encoder.cnn, list(q_net.trunk), [q_net.head])


def minatar_layers(cnn: MinAtarCNN, trunk: list[nn.Module], heads: list[nn.Module]) -> Layers | None:
    """[(conv weight, bias), (linear weight, bias)...] of a channels-first :class:`MinAtarCNN` (stride-1 unpadded
    convolution with a bias, ReLU, its linear layer, ReLU), then ``trunk`` (Linear, ReLU pairs) and the linear
    ``heads``, all CPU float32 with biases; None where anything else stands in that chain."""
    conv = cnn.conv[0]
    if cnn.channels_last or conv.stride != (1, 1) or conv.padding != (0, 0) or conv.dilation != (1, 1) \
            or conv.groups != 1 or conv.bias is None:
        return None
    linears = [cnn.linear[0], *trunk[::2], *heads]
    if len(trunk) % 2 or not all(isinstance(m, nn.Linear) for m in linears) or \
            not all(type(m) is nn.ReLU for m in [cnn.conv[1], cnn.linear[1], *trunk[1::2]]):
        return None
    layers = [(conv.weight, conv.bias), *[(m.weight, m.bias) for m in linears]]
    if any(w.device.type != "cpu" or w.dtype != torch.float32 or b is None for w, b in layers):
        return None
    return layers


def patch_indices(channels: int, height: int, width: int, kernel: int) -> torch.Tensor:
    """Indices into a flattened (channels, height, width) grid that gather the convolution's patches, patch entry
    major: entry (c, i, j) (the weight's order) of output cell y * out_width + x is grid[c, y + i, x + j], at
    position ((c * kernel + i) * kernel + j) * cells + y * out_width + x."""
    out_h, out_w = height - kernel + 1, width - kernel + 1
    c, i, j = np.meshgrid(np.arange(channels), np.arange(kernel), np.arange(kernel), indexing="ij")
    y, x = np.meshgrid(np.arange(out_h), np.arange(out_w), indexing="ij")
    index = c.reshape(-1, 1) * height * width + (y.reshape(1, -1) + i.reshape(-1, 1)) * width \
        + x.reshape(1, -1) + j.reshape(-1, 1)
    return torch.as_tensor(index.reshape(-1), dtype=torch.long)


class _Pass:
    """One forward's tensors for (seeds, rows), each feature-major (features, rows): the observations, their
    patches, the convolution's output and each linear layer's."""

    def __init__(self, seeds: int, rows: int, grid: tuple[int, ...], kernel: int, widths: list[int]) -> None:
        channels, height, width = grid
        cells = (height - kernel + 1) * (width - kernel + 1)
        self.obs = torch.empty(seeds, channels * height * width, rows)
        self.patches = torch.empty(seeds, channels * kernel * kernel, cells * rows)
        self.conv = torch.empty(seeds, widths[0], cells * rows)  # viewed (channels x cells, rows): nn.Flatten's order
        self.hidden = [torch.empty(seeds, n, rows) for n in widths[1:]]


class ConvQStep:
    """Forward, TD target and loss gradients of a conv Q-network for stacked seeds (leading dimension ``seeds``).

    ``params`` / ``target_params`` are lists of (seeds, ...) tensors in layer order (conv weight, conv bias, then
    each linear's weight and bias); ``grads`` receives the gradients in the same shapes. Activations are kept
    feature-major, (seeds, features, rows): then the patches are gathered as whole rows, the convolution's output
    is already the flattened features in ``nn.Flatten``'s order, and every layer is one ``W @ x + b`` product with
    no transposed copies (three times faster than the row-major layout for a batch of 32 here).
    """

    def __init__(self, layers: Layers, scale: float, double: bool, huber: bool) -> None:
        self.kernel, self.widths = layers[0][0].shape[-1], [w.shape[0] for w, _ in layers]
        self.scale, self.double, self.huber = scale, double, huber
        self.grid: tuple[int, ...] | None = None  # (channels, height, width), from the first observations
        self._passes: dict[tuple[int, int, str], _Pass] = {}

    def buffers(self, seeds: int, rows: int, name: str) -> _Pass:
        key = (seeds, rows, name)
        if key not in self._passes:
            self._passes[key] = _Pass(seeds, rows, self.grid, self.kernel, self.widths)
        return self._passes[key]

    def forward(self, params: list[torch.Tensor], obs: torch.Tensor, name: str) -> torch.Tensor:
        """Each seed's Q-values (seeds, actions, rows) of its rows of ``obs`` (seeds, rows, C, H, W), into the
        buffers called ``name``."""
        seeds, rows = obs.shape[:2]
        if tuple(obs.shape[2:]) != self.grid:
            self.grid, self._passes = tuple(obs.shape[2:]), {}
            self.index = patch_indices(*self.grid, self.kernel)
        buf = self.buffers(seeds, rows, name)
        buf.obs.copy_(obs.reshape(seeds, rows, -1).transpose(1, 2))
        if self.scale != 1.0:
            buf.obs.mul_(self.scale)
        torch.index_select(buf.obs, 1, self.index, out=buf.patches.view(seeds, -1, rows))
        conv_w = params[0].view(seeds, self.widths[0], -1)
        torch.baddbmm(params[1].unsqueeze(2), conv_w, buf.patches, out=buf.conv).relu_()
        x = buf.conv.view(seeds, -1, rows)
        for k in range(len(buf.hidden)):
            x = torch.baddbmm(params[3 + 2 * k].unsqueeze(2), params[2 + 2 * k], x, out=buf.hidden[k])
            if k < len(buf.hidden) - 1:
                x.relu_()
        return x

    def td_target(self, params: list[torch.Tensor], target_params: list[torch.Tensor], batch: dict[str, torch.Tensor],
                  ) -> torch.Tensor:
        """y = r + gamma^k (1 - terminated) Q'(s', a*), (seeds, 1, rows); a* by the online net for Double DQN."""
        next_q = self.forward(target_params, batch["next_obs"], "target")
        if self.double:
            online = self.forward(params, batch["next_obs"], "next")
            value = torch.gather(next_q, 1, online.argmax(1, keepdim=True))
        else:
            value = next_q.amax(1, keepdim=True)
        target = (1.0 - batch["terminated"].unsqueeze(1)) * batch["discounts"].unsqueeze(1)
        return target.mul_(value).add_(batch["rewards"].unsqueeze(1))

    def gradients(self, params: list[torch.Tensor], grads: list[torch.Tensor], batch: dict[str, torch.Tensor],
                  target: torch.Tensor) -> torch.Tensor:
        """The (importance-weighted) TD loss's gradients into ``grads``; returns the taken Q-values (seeds, 1, rows)."""
        seeds, rows = batch["obs"].shape[:2]
        q_all = self.forward(params, batch["obs"], "online")
        buf = self.buffers(seeds, rows, "online")
        taken = batch["actions"].long().reshape(seeds, 1, rows)
        q_taken = torch.gather(q_all, 1, taken)
        grad = q_taken - target  # d loss / d q_taken: (w / B) clamp(q - y, -1, 1) for Huber, (w / B) 2 (q - y)
        grad.clamp_(-1.0, 1.0) if self.huber else grad.mul_(2.0)
        grad.mul_(batch["weights"].unsqueeze(1)).div_(rows)
        grad = torch.zeros_like(q_all).scatter_(1, taken, grad)
        inputs = [buf.conv.view(seeds, -1, rows), *buf.hidden[:-1]]  # each passed a ReLU
        for k in range(len(buf.hidden) - 1, -1, -1):
            torch.bmm(grad, inputs[k].transpose(1, 2), out=grads[2 + 2 * k])
            torch.sum(grad, 2, out=grads[3 + 2 * k])
            below = torch.bmm(params[2 + 2 * k].transpose(1, 2), grad)
            grad = torch.ops.aten.threshold_backward(below, inputs[k], 0)
        grad = grad.view(seeds, self.widths[0], -1)  # the features' gradient is the convolution output's
        torch.bmm(grad, buf.patches.transpose(1, 2), out=grads[0].view(seeds, self.widths[0], -1))
        torch.sum(grad, 2, out=grads[1])
        return q_taken


def per_sample_loss(q_taken: torch.Tensor, target: torch.Tensor, huber: bool) -> torch.Tensor:
    return nn.functional.smooth_l1_loss(q_taken, target, reduction="none") if huber else (target - q_taken).pow(2)


class OptimizerStep:
    """The optimizer's own step on lists of tensors (stacked or not), with the kernels its ``step()`` runs:
    ``torch._fused_adam_`` for Adam(fused=True), ``torch.optim.RMSprop``'s ``_foreach`` ops (no momentum)."""

    def __init__(self, optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> None:
        self.optimizer, self.params = optimizer, params
        # RMSProp's denominators are lifted to the smallest normal float before the square root (where eps >= 1e-8).
        # torch's CPU sqrt is about 5x slower on exact zeros, and slower still on a mix (131k floats: 52 us, 240 us
        # all zeros, 346 us with 9% zeros). Zeros are common: weights whose gradient has always been 0, as most of
        # the conv and 1024-input layer's are on one MinAtar frame, and 9% of DQN's 1024-input layer at 30k
        # frames. The step is unchanged where eps >= 1e-8: sqrt(1.2e-38) = 1.1e-19 is below half a float32 ulp of
        # eps, so sqrt(0) + eps == sqrt(floor) + eps. Centered RMSProp's denominator (square_avg - grad_avg^2) is
        # floored too; there the one other change is where rounding leaves it below zero: torch's sqrt gives NaN
        # (and the weight is lost), this gives eps.
        self.adam = type(optimizer) is torch.optim.Adam
        self.one = torch.tensor(1.0)  # a tensor increment keeps _foreach_add_ off its per-scalar slow path
        self._denominators: dict[tuple, list[torch.Tensor]] = {}

    def state_keys(self) -> tuple[str, ...]:
        if self.adam:
            return "exp_avg", "exp_avg_sq"
        return ("square_avg", "grad_avg") if self.optimizer.param_groups[0]["centered"] else ("square_avg",)

    def state(self, key: str) -> list[torch.Tensor]:
        """The optimizer's ``key`` state of each parameter, created as its first ``step()`` creates it (a
        checkpoint loaded since may have replaced it: read it again each round)."""
        state = self.optimizer.state
        for p in self.params:
            if not state[p]:
                state[p]["step"] = torch.zeros((), dtype=torch.float32)
                for name in self.state_keys():
                    state[p][name] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return [state[p][key] for p in self.params]

    def step(self, params: list[torch.Tensor], grads: list[torch.Tensor], moments: list[list[torch.Tensor]],
             steps: list[torch.Tensor]) -> None:
        group = self.optimizer.param_groups[0]
        torch._foreach_add_(steps, self.one, alpha=1.0)
        if self.adam:
            beta1, beta2 = group["betas"]
            torch._fused_adam_(params, grads, moments[0], moments[1], [], steps, amsgrad=False, lr=group["lr"],
                               beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
                               maximize=False, grad_scale=None, found_inf=None)
            return
        alpha = group["alpha"]
        torch._foreach_mul_(moments[0], alpha)
        torch._foreach_addcmul_(moments[0], grads, grads, value=1 - alpha)
        # the denominator in buffers kept between steps (the elementwise ops of torch's out-of-place ones)
        key = tuple(m.shape for m in moments[0])
        avg = self._denominators.setdefault(key, [torch.empty_like(m) for m in moments[0]])
        torch._foreach_copy_(avg, moments[0])
        if group["centered"]:
            torch._foreach_lerp_(moments[1], grads, 1 - alpha)
            torch._foreach_addcmul_(avg, moments[1], moments[1], value=-1)
        if group["eps"] >= 1e-8:
            torch._foreach_clamp_min_(avg, torch.finfo(torch.float32).tiny)
        torch._foreach_sqrt_(avg)
        torch._foreach_add_(avg, group["eps"])
        torch._foreach_addcdiv_(params, grads, avg, value=-group["lr"])


def supported_optimizer(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> bool:
    """Adam(fused=True) or RMSprop without momentum, one param group over exactly ``params``, no extras."""
    if len(optimizer.param_groups) != 1 or list(optimizer.param_groups[0]["params"]) != params:
        return False
    group = optimizer.param_groups[0]
    if group["maximize"] or group["differentiable"] or group["weight_decay"] or isinstance(group["lr"], torch.Tensor):
        return False
    if type(optimizer) is torch.optim.Adam:
        return group["fused"] and not group["amsgrad"] and not group.get("decoupled_weight_decay")
    return type(optimizer) is torch.optim.RMSprop and group["momentum"] == 0 and not group["capturable"]


def clip_per_seed(grads: list[torch.Tensor], max_norm: float) -> None:
    """``clip_grad_norm_(max_norm)`` of each seed (leading dimension) on its own gradients."""
    seeds = grads[0].shape[0]
    norms = torch.stack([torch.linalg.vector_norm(g.reshape(seeds, -1), 2.0, dim=1) for g in grads])
    factor = torch.linalg.vector_norm(norms, 2.0, dim=0).add_(1e-6).reciprocal_().mul_(max_norm).clamp_(max=1.0)
    for g in grads:
        g.mul_(factor.view(-1, *[1] * (g.dim() - 1)))


def fused_conv_dqn(q_net: nn.Module, q_target: nn.Module, optimizer: torch.optim.Optimizer, double: bool,
                   loss: str, max_grad_norm: float) -> ConvDQN | None:
    """The hand-written step for a MinAtar Q-network, or None where it does not apply (see :func:`conv_q_layers`,
    :func:`supported_optimizer`)."""
    layers, target_layers = conv_q_layers(q_net), conv_q_layers(q_target)
    if layers is None or target_layers is None or loss not in ("huber", "mse"):
        return None
    params = [t for layer in layers for t in layer]
    if not supported_optimizer(optimizer, params):
        return None
    return ConvDQN(q_net, params, [t for layer in target_layers for t in layer], optimizer, double, loss == "huber",
                   max_grad_norm)


class ConvDQN:
    """One seed's DQN rounds on a MinAtar Q-network, by hand (see the module docstring).

    ``round(batches, next_q_targets, update_priorities)`` as :class:`rlkit.fast.fused_mlp.FusedDQN`'s: returns the
    last step's (loss, mean taken Q-value). The target network's values are computed here (``next_q_targets`` is
    ignored), so the caller need not rate them first (``rates_targets``).
    """

    rates_targets = True

    def __init__(self, q_net: QNetwork, params: list[torch.Tensor], target_params: list[torch.Tensor],
                 optimizer: torch.optim.Optimizer, double: bool, huber: bool, max_grad_norm: float) -> None:
        cnn = q_net.encoder.cnn
        self.params, self.target_params, self.optimizer = params, target_params, optimizer
        self.double, self.huber, self.max_grad_norm = double, huber, max_grad_norm
        self.scale = cnn.scale
        self.math = ConvQStep(list(zip(params[::2], params[1::2])), cnn.scale, double, huber)
        self.optimizer_step = OptimizerStep(optimizer, params)
        self.grads = [torch.zeros(1, *p.shape) for p in params]

    @torch.no_grad()
    def round(self, batches: Iterable[Batch], next_q_targets: list[torch.Tensor] | None = None,
              update_priorities=None) -> tuple[float, float]:
        # this seed's tensors as a stack of one: views taken each round (stacking with other seeds moves them)
        params = [p.detach().unsqueeze(0) for p in self.params]
        target_params = [p.detach().unsqueeze(0) for p in self.target_params]
        moments = [self.optimizer_step.state(key) for key in self.optimizer_step.state_keys()]
        steps, grads = self.optimizer_step.state("step"), [g[0] for g in self.grads]
        q_taken = target = weights = None
        for batch in batches:
            data = {name: getattr(batch, name).unsqueeze(0) for name in BATCH_FIELDS}
            weights = batch.weights
            target = self.math.td_target(params, target_params, data)
            q_taken = self.math.gradients(params, self.grads, data, target)
            if self.max_grad_norm > 0:
                clip_per_seed(self.grads, self.max_grad_norm)
            self.optimizer_step.step([p.detach() for p in self.params], grads, moments, steps)
            if update_priorities is not None:
                update_priorities(batch.indices, (target - q_taken).view(-1).numpy().copy())
        if q_taken is None:
            raise ValueError("a training round needs at least one minibatch")
        loss = (weights * per_sample_loss(q_taken.view(-1), target.view(-1), self.huber)).mean()
        return loss.item(), q_taken.mean().item()

    @torch.no_grad()
    def greedy(self, obs: np.ndarray) -> np.ndarray:
        """Greedy actions for ``obs`` (envs, C, H, W) by the same forward as the step's, without the module calls;
        Q-values agree with the module's to float tolerance."""
        params = [p.detach().unsqueeze(0) for p in self.params]
        q = self.math.forward(params, torch.as_tensor(np.asarray(obs)).unsqueeze(0), "act")
        return q[0].argmax(0).numpy()


def stack_views(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Stack ``tensors`` (one per seed) and make each a view of its slice (``.data`` keeps Parameters whole)."""
    stacked = torch.stack([t.detach() for t in tensors])
    for i, t in enumerate(tensors):
        t.data = stacked[i]
    return stacked


def stack_conv_dqn(steps: Sequence[ConvDQN]) -> StackedConvDQN | None:
    """Several seeds' :class:`ConvDQN` as one stacked round, or None where they cannot share one: different
    shapes or settings, or optimizers of another kind or with other hyperparameters."""
    def settings(s: ConvDQN) -> tuple:
        group = {k: v for k, v in s.optimizer.param_groups[0].items() if k != "params"}
        return (s.double, s.huber, s.max_grad_norm, s.scale, [p.shape for p in s.params],
                type(s.optimizer), sorted(group.items(), key=lambda item: item[0]))

    if len(steps) < 2 or any(not isinstance(s, ConvDQN) for s in steps):
        return None
    if any(settings(s) != settings(steps[0]) for s in steps):
        return None
    if steps[0].optimizer_step.adam:  # one bias correction for all: the seeds' step counts must agree
        counts = {float(t) for s in steps for t in s.optimizer_step.state("step")}
        if len(counts) > 1:
            return None
    return StackedConvDQN(list(steps))


class StackedConvDQN:
    """Several seeds' :class:`ConvDQN` rounds as one: each seed's parameters, target parameters and optimizer
    moments become views of slices of stacked tensors, as :class:`rlkit.fast.stacked_dqn.StackedDQN` does."""

    def __init__(self, steps: list[ConvDQN]) -> None:
        self.steps, self.seeds, lead = steps, len(steps), steps[0]
        count = len(lead.params)
        self.params = [stack_views([s.params[j] for s in steps]) for j in range(count)]
        self.target_params = [stack_views([s.target_params[j] for s in steps]) for j in range(count)]
        self.moments = [self._stack_state(key) for key in lead.optimizer_step.state_keys()]
        self.lead_steps = lead.optimizer_step.state("step")  # Adam's bias correction: one count for all
        self.other_steps = [t for s in steps[1:] for t in s.optimizer_step.state("step")]
        self.grads = [torch.zeros_like(p) for p in self.params]
        self.math = ConvQStep(list(zip(lead.params[::2], lead.params[1::2])), lead.scale, lead.double, lead.huber)
        self.optimizer_step = lead.optimizer_step

    def _stack_state(self, key: str) -> list[torch.Tensor]:
        stacked = []
        for j in range(len(self.params)):
            values = [s.optimizer_step.state(key)[j] for s in self.steps]  # (creates a fresh optimizer's state)
            stacked.append(torch.stack(values))
            for i, s in enumerate(self.steps):
                s.optimizer.state[s.params[j]][key] = stacked[-1][i]
        return stacked

    @torch.no_grad()
    def round(self, batches_of_each: Sequence[Iterable[Batch]]) -> tuple[list[float], list[float]]:
        """One round of every seed (``batches_of_each[i]``: seed i's minibatches); each seed's last-step loss and
        mean taken Q-value."""
        rounds = [list(batches) for batches in batches_of_each]
        q_taken = target = data = None
        for k in range(len(rounds[0])):
            data = {name: torch.stack([getattr(r[k], name) for r in rounds]) for name in BATCH_FIELDS}
            target = self.math.td_target(self.params, self.target_params, data)
            q_taken = self.math.gradients(self.params, self.grads, data, target)
            if self.steps[0].max_grad_norm > 0:
                clip_per_seed(self.grads, self.steps[0].max_grad_norm)
            self.optimizer_step.step(self.params, self.grads, self.moments, self.lead_steps)
        torch._foreach_add_(self.other_steps, len(rounds[0]))
        losses = (data["weights"] * per_sample_loss(q_taken.squeeze(1), target.squeeze(1), self.steps[0].huber))
        return losses.mean(1).tolist(), q_taken.squeeze(1).mean(1).tolist()

    @torch.no_grad()
    def greedy(self, obs: np.ndarray) -> np.ndarray:
        """Each seed's greedy actions for its rows of ``obs`` (seeds, envs, C, H, W), one stacked forward."""
        x = torch.as_tensor(np.asarray(obs))
        q = self.math.forward(self.params, x, "act")
        return q.argmax(1).numpy()
