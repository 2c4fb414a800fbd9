"""DQN's gradient step for a plain-MLP Q-network on the CPU, written by hand: the fused update path.

One DQN gradient step at the ``cartpole`` preset (batch 64, a 4-256-256-2 ReLU Q-network, Double DQN, Huber
loss, clip 10, Adam) took about 1.4 ms eagerly, against about 0.25 ms of matrix products: the rest is
autograd's graph, module calls, ``clip_grad_norm_`` and ``torch.optim.Adam.step``'s bookkeeping
(``benchmarks/profile_dqn_update.py`` keeps the profile). :class:`FusedDQN` does the same step as a fixed
sequence of tensor ops into buffers allocated once per batch size:

* forward with ``addmm(out=...)`` and ``relu_`` (what ``nn.Linear`` and ``nn.ReLU`` run on a CPU);
* the TD target, the gradient of the (importance-weighted) Huber or squared loss with respect to the taken
  Q-values, and its scatter into the output's gradient, in closed form;
* backward as matrix products: weight gradients ``grad_out.T @ input``, bias gradients as sums, ReLU's
  ``threshold_backward``, with the products autograd's ``addmm`` backward picks;
* ``clip_grad_norm_``'s per-tensor norms, their norm and one ``_foreach_mul_``;
* the DQN's own ``torch.optim.Adam(fused=True)`` state stepped by ``torch._fused_adam_``, the kernel its
  ``step()`` calls, so checkpoints, ``set_lr`` and resuming are unchanged.

Each op is the one the plain path runs on the same operands, so the parameters it produces are the plain
path's bit for bit (``tests/test_fast_fused.py`` checks this, and the equivalence to tolerance the brief
asks). :func:`fused_dqn` returns None where it does not apply: a GPU net, image or one-hot inputs, a
dueling head, any layer other than Linear/ReLU, an optimizer other than Adam (RMSProp, amsgrad).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn

from rlkit.fast.fused_conv import ConvDQN, conv_q_layers, fused_conv_dqn, per_sample_loss
from rlkit.nets import QNetwork
from rlkit.policy import Batch

Layers = list[tuple[torch.Tensor, torch.Tensor]]  # (weight (out, in), bias (out,)) per Linear; ReLU between
PriorityUpdate = Callable[[np.ndarray, np.ndarray], None]


def linear_relu_layers(q_net: nn.Module) -> Layers | None:
    """The (weight, bias) pairs of a flat-input, CPU, non-dueling :class:`QNetwork` whose trunk alternates
    Linear and ReLU, or None for any other network."""
    if not isinstance(q_net, QNetwork) or q_net.encoder.cnn is not None or q_net.encoder.n_discrete:
        return None
    if not isinstance(q_net.head, nn.Linear):
        return None
    trunk = list(q_net.trunk)
    if len(trunk) % 2 or not all(isinstance(m, nn.Linear) for m in trunk[::2]) or \
            not all(type(m) is nn.ReLU for m in trunk[1::2]):
        return None
    layers = [(m.weight, m.bias) for m in [*trunk[::2], q_net.head]]
    if any(w.device.type != "cpu" or w.dtype != torch.float32 or b is None for w, b in layers):
        return None
    return layers


def fused_dqn(q_net: nn.Module, q_target: nn.Module, optimizer: torch.optim.Optimizer, double: bool, loss: str,
              max_grad_norm: float) -> FusedDQN | ConvDQN | None:
    """The fused DQN step for ``q_net`` (its target net ``q_target``, its optimizer), or None where it does not
    apply; then the caller takes the plain autograd path. MinAtar's conv Q-network gets
    :class:`rlkit.fast.fused_conv.ConvDQN`."""
    if conv_q_layers(q_net) is not None:
        return fused_conv_dqn(q_net, q_target, optimizer, double, loss, max_grad_norm)
    layers, target_layers = linear_relu_layers(q_net), linear_relu_layers(q_target)
    if layers is None or target_layers is None or loss not in ("huber", "mse"):
        return None
    if type(optimizer) is not torch.optim.Adam or len(optimizer.param_groups) != 1:
        return None
    group = optimizer.param_groups[0]
    if group["amsgrad"] or group["maximize"] or group["differentiable"] or group.get("decoupled_weight_decay") \
            or not group["fused"] or isinstance(group["lr"], torch.Tensor):
        return None
    if [p for w, b in layers for p in (w, b)] != list(group["params"]):
        return None
    return FusedDQN(layers, target_layers, optimizer, double, loss, max_grad_norm)


class _Buffers:
    """Everything one step writes, for one batch size (allocated once)."""

    def __init__(self, layers: Layers, batch_size: int) -> None:
        widths = [w.shape[0] for w, _ in layers]
        self.hidden = [torch.empty(batch_size, n) for n in widths]  # each layer's output (ReLU applied in place)
        self.next_hidden = [torch.empty(batch_size, n) for n in widths]  # Double DQN's online pass over next_obs
        self.target_hidden = [torch.empty(batch_size, n) for n in widths]  # the target net's, when not rated at once
        self.grad_out = [torch.empty(batch_size, n) for n in widths]  # d loss / d each layer's output
        self.actions = torch.empty(batch_size, 1, dtype=torch.long)
        self.next_actions = torch.empty(batch_size, 1, dtype=torch.long)
        self.next_value, self.target = torch.empty(batch_size, 1), torch.empty(batch_size, 1)
        self.q_taken, self.grad_taken, self.scale = torch.empty(batch_size, 1), torch.empty(batch_size, 1), \
            torch.empty(batch_size, 1)
        self.td_errors = torch.empty(batch_size, 1)
        self.norms, self.total_norm = torch.empty(len(layers) * 2), torch.empty(())


class FusedDQN:
    """DQN's TD-loss gradient steps by hand on a Linear/ReLU Q-network (see the module docstring).

    ``round(batches, next_q_targets, update_priorities)`` runs the gradient steps of one training round and
    returns the last step's (loss, mean Q of the taken actions), as the plain loop reports them.
    """

    rates_targets = False  # takes the target net's values of a round's next observations, rated at once

    def __init__(self, layers: Layers, target_layers: Layers, optimizer: torch.optim.Optimizer, double: bool,
                 loss: str, max_grad_norm: float) -> None:
        self.layers, self.target_layers, self.optimizer = layers, target_layers, optimizer
        self.double, self.huber, self.max_grad_norm = double, loss == "huber", max_grad_norm
        self.params = [p for w, b in layers for p in (w, b)]
        self.grads = [torch.zeros_like(p) for p in self.params]  # weight and bias gradients, layer by layer
        self._buffers: dict[int, _Buffers] = {}

    def buffers(self, batch_size: int) -> _Buffers:
        if batch_size not in self._buffers:
            self._buffers[batch_size] = _Buffers(self.layers, batch_size)
        return self._buffers[batch_size]

    @torch.no_grad()
    def round(self, batches: Iterable[Batch], next_q_targets: list[torch.Tensor] | None = None,
              update_priorities: PriorityUpdate | None = None) -> tuple[float, float]:
        """The gradient steps on ``batches`` (``next_q_targets[i]``: the target net's values of batch ``i``'s
        next observations, when rated at once); ``update_priorities(indices, td_errors)`` after each step
        (prioritized replay). Returns the last step's loss and mean taken Q-value."""
        adam = self._adam_state()
        last, buf = None, None
        for i, batch in enumerate(batches):
            buf = self.buffers(len(batch.obs))
            self.gradients(batch, None if next_q_targets is None else next_q_targets[i], buf)
            self.clip_and_step(adam)
            if update_priorities is not None:
                torch.sub(buf.target, buf.q_taken, out=buf.td_errors)
                update_priorities(batch.indices, buf.td_errors.view(-1).numpy().copy())
            last = batch
        if last is None:
            raise ValueError("a training round needs at least one minibatch")
        q_taken, target = buf.q_taken.view(-1), buf.target.view(-1)
        return (last.weights * per_sample_loss(q_taken, target, self.huber)).mean().item(), q_taken.mean().item()

    def forward(self, layers: Layers, x: torch.Tensor, out: list[torch.Tensor]) -> torch.Tensor:
        """``q_net(x)`` into the buffers ``out`` (each layer's output; ReLU in place)."""
        for k, (weight, bias) in enumerate(layers):
            x = torch.addmm(bias, x, weight.t(), out=out[k])
            if k < len(layers) - 1:
                x.relu_()
        return x

    def gradients(self, batch: Batch, next_q_target: torch.Tensor | None, buf: _Buffers) -> None:
        """The loss's parameter gradients on ``batch`` into ``self.grads`` (TD target, loss gradient, backward)."""
        obs = batch.obs.reshape(len(batch.obs), -1).float()
        if next_q_target is None:
            next_q_target = self.forward(self.target_layers, batch.next_obs.reshape(len(obs), -1).float(),
                                         buf.target_hidden)
        if self.double:
            next_q_online = self.forward(self.layers, batch.next_obs.reshape(len(obs), -1).float(), buf.next_hidden)
            torch.argmax(next_q_online, 1, keepdim=True, out=buf.next_actions)
            torch.gather(next_q_target, 1, buf.next_actions, out=buf.next_value)
        else:
            torch.amax(next_q_target, 1, keepdim=True, out=buf.next_value)
        # y = r + gamma^k (1 - terminated) Q'(s', a*): the plain path's products, in its order
        target = torch.sub(1.0, batch.terminated.view(-1, 1), out=buf.target)
        target.mul_(batch.discounts.view(-1, 1)).mul_(buf.next_value).add_(batch.rewards.view(-1, 1))
        q_all = self.forward(self.layers, obs, buf.hidden)
        buf.actions.copy_(batch.actions.view(-1, 1))
        torch.gather(q_all, 1, buf.actions, out=buf.q_taken)
        # d loss / d q_taken: (w / B) * clamp(q - y, -1, 1) for Huber, (w / B) * 2 (q - y) for the squared error
        torch.mul(batch.weights.view(-1, 1), 1.0 / len(obs), out=buf.scale)
        grad = torch.sub(buf.q_taken, target, out=buf.grad_taken)
        grad.clamp_(-1.0, 1.0) if self.huber else grad.mul_(2.0)
        grad.mul_(buf.scale)
        self.backward(obs, grad, buf)

    def backward(self, obs: torch.Tensor, grad_taken: torch.Tensor, buf: _Buffers) -> None:
        """Backpropagate the taken Q-values' gradient through the Linear/ReLU stack into ``self.grads``."""
        grad = buf.grad_out[-1].zero_().scatter_(1, buf.actions, grad_taken)
        for k in range(len(self.layers) - 1, -1, -1):
            layer_input = buf.hidden[k - 1] if k else obs
            torch.mm(grad.t(), layer_input, out=self.grads[2 * k])
            torch.sum(grad, 0, out=self.grads[2 * k + 1])
            if k:
                below = torch.mm(grad, self.layers[k][0], out=buf.grad_out[k - 1])
                grad = torch.ops.aten.threshold_backward.grad_input(below, buf.hidden[k - 1], 0, grad_input=below)

    def _adam_state(self) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], dict]:
        """(exp_avg, exp_avg_sq, step) lists of the optimizer's state, created as its first step creates them."""
        state, group = self.optimizer.state, self.optimizer.param_groups[0]
        for p in self.params:
            if not state[p]:
                state[p]["step"] = torch.zeros((), dtype=torch.float32)
                state[p]["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state[p]["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return ([state[p]["exp_avg"] for p in self.params], [state[p]["exp_avg_sq"] for p in self.params],
                [state[p]["step"] for p in self.params], group)

    def clip_and_step(self, adam: tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], dict]) -> None:
        """``clip_grad_norm_(max_grad_norm)`` (its per-tensor norms, their norm), then the fused Adam step."""
        grads = self.grads
        if self.max_grad_norm > 0:
            buf = next(iter(self._buffers.values()))
            norms = torch.stack(torch._foreach_norm(grads, 2.0), out=buf.norms)
            total = torch.linalg.vector_norm(norms, 2.0, out=buf.total_norm)
            total.add_(1e-6).reciprocal_().mul_(self.max_grad_norm).clamp_(max=1.0)  # max / (norm + 1e-6), at most 1
            torch._foreach_mul_(grads, total)
        exp_avgs, exp_avg_sqs, steps, group = adam
        beta1, beta2 = group["betas"]
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(self.params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=group["lr"],
                           beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
                           maximize=False, grad_scale=None, found_inf=None)
