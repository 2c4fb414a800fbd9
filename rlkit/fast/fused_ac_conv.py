"""A2C's gradient step and acting for MinAtar's actor-critic on the CPU, by hand.

The MinAtar paper's AC(0) (``rlkit train a2c --preset minatar-breakout``: one env, an update on every frame) spent
about 3.4 ms a frame, and py-spy over it (20 s of a 8k-frame run, startup left out) split the loop as: acting 27%
(two torch forwards a frame, the action's and the bootstrap value's, each with its ``Categorical``), RMSprop's
``step()`` 24%, autograd's backward 16%, the loss terms 10% and the module forward 7%, the MinAtar env 4%. The work
itself is tiny (one row: about 0.3 MFLOP), so nearly all of it was dispatch.

Here, as in :mod:`rlkit.fast.fused_conv` (DQN's step on the same torso), activations are feature-major (features,
rows): the observations' 3x3 patches are gathered by one ``index_select`` with indices computed once, the
convolution and every linear layer are one ``addmm`` into buffers kept between calls, the loss gradient with respect
to the logits and the value is in closed form, the backward is matrix products, and the optimizer step is
:class:`rlkit.fast.fused_conv.OptimizerStep` on the torch optimizer's own state (so checkpoints and resume see
torch's RMSprop/Adam state unchanged). For the loss ``-mean(A log pi(a|s)) + vf_coef mean((R - V)^2) - ent_coef
mean(H)`` of :func:`rlkit.actor_critic.actor_critic_loss`, with p = softmax(logits) over n rows:

    d/d logits_j = (A / n) (p_j - [j = a]) + (ent_coef / n) p_j (log p_j + H)      d/dV = 2 vf_coef (V - R) / n

Results agree with autograd to float tolerance (``tests/test_fast_ac_conv.py``). RMSProp lifts its zero square
averages to the smallest normal float before the square root (:class:`rlkit.fast.fused_conv.OptimizerStep`: torch's
CPU sqrt is several times slower on exact zeros, and most of this network's square averages are zeros early on); the
step is bit for bit torch's wherever eps >= 1e-8. Acting runs the same forward on
its own buffers and samples with ``torch.multinomial`` on the softmax, the draw ``Categorical.sample`` makes, so a
run consumes torch's RNG as the plain actor does.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rlkit.distributions import CategoricalHead
from rlkit.fast.fused_conv import (
    Layers,
    OptimizerStep,
    clip_per_seed,
    minatar_layers,
    patch_indices,
    supported_optimizer,
)
from rlkit.nets import ActorCritic, MinAtarCNN


def conv_ac_layers(model: nn.Module) -> Layers | None:
    """[(conv weight, bias), (linear weight, bias)..., (logits weight, bias), (value weight, bias)] of a CPU float32
    shared-trunk :class:`ActorCritic` on a channels-first :class:`MinAtarCNN` (stride-1 unpadded convolution), a
    Linear/ReLU trunk (or none) and a categorical head, in ``model.parameters()``'s order; else None."""
    if not isinstance(model, ActorCritic) or not isinstance(getattr(model.encoder, "cnn", None), MinAtarCNN):
        return None
    if model.value_trunk is not None or type(model.policy) is not CategoricalHead:
        return None
    layers = minatar_layers(model.encoder.cnn, list(model.trunk), [model.policy.logits, model.value])
    if layers is None:
        return None
    if [t for layer in layers for t in layer] != list(model.parameters()):
        return None  # a parameter this step would not train
    return layers


def fused_actor_critic(model: nn.Module, optimizer: torch.optim.Optimizer, vf_coef: float, ent_coef: float,
                       max_grad_norm: float) -> ConvActorCritic | None:
    """The hand-written A2C step (and actor) for a MinAtar actor-critic, or None where it does not apply (see
    :func:`conv_ac_layers` and :func:`rlkit.fast.fused_conv.supported_optimizer`: RMSprop without momentum, or
    Adam(fused=True))."""
    layers = conv_ac_layers(model)
    if layers is None:
        return None
    params = [t for layer in layers for t in layer]
    if not supported_optimizer(optimizer, params):
        return None
    return ConvActorCritic(model, params, optimizer, vf_coef, ent_coef, max_grad_norm)


class _Buffers:
    """One forward's tensors for ``rows`` observations, feature-major (features, rows)."""

    def __init__(self, rows: int, grid: tuple[int, ...], kernel: int, widths: list[int], actions: int) -> None:
        channels, height, width = grid
        cells = (height - kernel + 1) * (width - kernel + 1)
        self.obs = torch.empty(channels * height * width, rows)
        self.patches = torch.empty(channels * kernel * kernel, cells * rows)
        self.conv = torch.empty(widths[0], cells * rows)  # viewed (channels x cells, rows): nn.Flatten's order
        self.hidden = [torch.empty(n, rows) for n in widths[1:]]
        self.logits, self.value = torch.empty(actions, rows), torch.empty(1, rows)


class ConvActorCritic:
    """A2C's step on a MinAtar actor-critic by hand (see the module docstring): ``update(obs, actions, advantages,
    returns)`` computes the loss gradients, clips them if asked and steps the optimizer, returning the loss terms
    :func:`rlkit.actor_critic.actor_critic_loss` logs; :meth:`act` is the rollout actor."""

    def __init__(self, model: ActorCritic, params: list[torch.Tensor], optimizer: torch.optim.Optimizer,
                 vf_coef: float, ent_coef: float, max_grad_norm: float) -> None:
        self.params, self.optimizer = params, optimizer
        self.vf_coef, self.ent_coef, self.max_grad_norm = vf_coef, ent_coef, max_grad_norm
        self.scale = model.encoder.cnn.scale
        self.kernel = params[0].shape[-1]
        self.widths = [p.shape[0] for p in params[:-4:2]]  # the convolution's channels, then each hidden layer's
        self.actions = params[-4].shape[0]
        self.grid: tuple[int, ...] | None = None  # (channels, height, width), from the first observations
        self.index = torch.empty(0, dtype=torch.long)
        self._buffers: dict[tuple[int, str], _Buffers] = {}
        self.optimizer_step = OptimizerStep(optimizer, params)
        self.grads = [torch.zeros(1, *p.shape) for p in params]  # a leading seeds dimension of 1: clip_per_seed's

    def forward(self, params: list[torch.Tensor], obs: torch.Tensor, name: str) -> _Buffers:
        """The logits (actions, rows) and values (1, rows) of ``obs`` (rows, C, H, W) into the buffers ``name``."""
        rows = obs.shape[0]
        if tuple(obs.shape[1:]) != self.grid:
            self.grid, self._buffers = tuple(obs.shape[1:]), {}
            self.index = patch_indices(*self.grid, self.kernel)
        key = (rows, name)
        if key not in self._buffers:
            self._buffers[key] = _Buffers(rows, self.grid, self.kernel, self.widths, self.actions)
        buf = self._buffers[key]
        buf.obs.copy_(obs.reshape(rows, -1).T)
        if self.scale != 1.0:
            buf.obs.mul_(self.scale)
        torch.index_select(buf.obs, 0, self.index, out=buf.patches.view(-1, rows))
        torch.addmm(params[1].unsqueeze(1), params[0].view(self.widths[0], -1), buf.patches, out=buf.conv).relu_()
        x = buf.conv.view(-1, rows)
        for k, out in enumerate(buf.hidden):
            x = torch.addmm(params[3 + 2 * k].unsqueeze(1), params[2 + 2 * k], x, out=out).relu_()
        torch.addmm(params[-3].unsqueeze(1), params[-4], x, out=buf.logits)
        torch.addmm(params[-1].unsqueeze(1), params[-2], x, out=buf.value)
        return buf

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The rollout actor ``(obs, deterministic) -> (actions, values)`` of :func:`rlkit.actor_critic.make_actor`:
        sampled (or most probable) actions and V(obs), on the live weights."""
        buf = self.forward([p.detach() for p in self.params], torch.as_tensor(obs), "act")
        if deterministic:
            actions = buf.logits.argmax(0)
        else:  # Categorical.sample's draw: one multinomial sample per row of the probabilities
            actions = torch.multinomial(torch.softmax(buf.logits.T, 1), 1, True).view(-1)
        return actions.numpy(), buf.value[0].numpy().copy()

    @torch.no_grad()
    def update(self, obs: torch.Tensor, actions: torch.Tensor, advantages: torch.Tensor, returns: torch.Tensor
               ) -> dict[str, torch.Tensor]:
        """One A2C step on the rollout's rows (obs (n, C, H, W), actions, advantages and returns (n,))."""
        params = [p.detach() for p in self.params]
        buf = self.forward(params, obs, "update")
        n = obs.shape[0]
        log_p = buf.logits - torch.logsumexp(buf.logits, 0, keepdim=True)
        p = log_p.exp()
        entropy = -(p * log_p).sum(0)  # each row's H, (n,)
        taken = actions.long().view(1, n)
        value_error = buf.value[0] - returns
        terms = {"losses/policy_loss": -(advantages * log_p.gather(0, taken)[0]).mean(),
                 "losses/value_loss": value_error.square().mean(), "losses/entropy": entropy.mean()}
        # the loss gradient in the logits and the value (module docstring), then back through the layers
        grad_logits = log_p.add_(entropy).mul_(p).mul_(self.ent_coef / n).add_(p * (advantages / n))
        grad_logits.scatter_add_(0, taken, (advantages / -n).view(1, n))
        grad_value = value_error.mul_(2.0 * self.vf_coef / n).view(1, n)
        grads = [g[0] for g in self.grads]
        inputs = [buf.conv.view(-1, n), *buf.hidden]  # each passed a ReLU
        h = inputs[-1]
        torch.mm(grad_logits, h.T, out=grads[-4])
        torch.sum(grad_logits, 1, out=grads[-3])
        torch.mm(grad_value, h.T, out=grads[-2])
        torch.sum(grad_value, 1, out=grads[-1])
        below = torch.addmm(params[-4].T @ grad_logits, params[-2].T, grad_value)
        grad = torch.ops.aten.threshold_backward(below, h, 0)
        for k in range(len(buf.hidden) - 1, -1, -1):
            torch.mm(grad, inputs[k].T, out=grads[2 + 2 * k])
            torch.sum(grad, 1, out=grads[3 + 2 * k])
            grad = torch.ops.aten.threshold_backward(params[2 + 2 * k].T @ grad, inputs[k], 0)
        grad = grad.view(self.widths[0], -1)  # the features' gradient is the convolution output's
        torch.mm(grad, buf.patches.T, out=grads[0].view(self.widths[0], -1))
        torch.sum(grad, 1, out=grads[1])
        if self.max_grad_norm > 0:
            clip_per_seed(self.grads, self.max_grad_norm)
        moments = [self.optimizer_step.state(key) for key in self.optimizer_step.state_keys()]
        self.optimizer_step.step(params, grads, moments, self.optimizer_step.state("step"))
        return terms
