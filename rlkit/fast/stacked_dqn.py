"""Several seeds' DQN gradient steps as one: their Q-networks' weights stacked, batched matrix products.

Seeds trained in one process (:func:`rlkit.engine.off_policy.train_off_policy_seeds`) share a config, so their
networks have the same shapes and their rounds come at the same steps. :class:`StackedDQN` moves each seed's
Q-network, target network and Adam moments into slices of stacked tensors (each seed's own tensors become views
of its slice: its modules, optimizer, checkpoints and acting see the same numbers) and runs a round of all seeds
as :class:`rlkit.fast.fused_mlp.FusedDQN` runs one: ``baddbmm``/``bmm`` where it uses ``addmm``/``mm``, a
gradient-norm clip per seed, and one fused Adam kernel over the stacked tensors. The per-op dispatch, which is
most of a small network's update, is paid once for all seeds instead of once per seed.

The products are batched, so a seed's numbers agree with its own fused round to float tolerance, not bit for bit
(``tests/test_fast_stacked.py``). Adam's bias correction uses one step count, so the seeds must have taken the
same number of steps (checked when stacking).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from rlkit.buffers import Round
from rlkit.fast.fused_conv import (
    BATCH_FIELDS,
    ConvDQN,
    StackedConvDQN,
    clip_per_seed,
    per_sample_loss,
    stack_conv_dqn,
    stack_views,
)
from rlkit.fast.fused_mlp import FusedDQN
from rlkit.policy import Batch


def stack_dqn(fused: Sequence[FusedDQN | ConvDQN | None]) -> StackedDQN | StackedConvDQN | None:
    """One stacked round for ``fused`` (each seed's fused DQN step), or None where they cannot share one: a seed
    without the fused path, different shapes or settings, or optimizers that have taken different step counts.
    MinAtar's conv networks stack in :mod:`rlkit.fast.fused_conv`."""
    if fused and all(isinstance(f, ConvDQN) for f in fused):
        return stack_conv_dqn(list(fused))
    if len(fused) < 2 or any(not isinstance(f, FusedDQN) for f in fused):
        return None
    settings = [(f.double, f.huber, f.max_grad_norm, [p.shape for p in f.params], _adam_settings(f)) for f in fused]
    if any(s != settings[0] for s in settings):
        return None
    steps = [[float(step) for step in f._adam_state()[2]] for f in fused]
    if any(s != steps[0] for s in steps) or len(set(steps[0])) > 1:
        return None
    return StackedDQN(list(fused))


def _stack_rounds(batches_of_each: Sequence[Iterable[Batch]]) -> tuple[dict[str, torch.Tensor], int, int]:
    """The seeds' round minibatches as tensors (steps, seeds, batch, ...), and the steps and batch size; a
    :class:`~rlkit.buffers.Round` gives its one sampled batch without slicing it into minibatches first."""
    if all(isinstance(r, Round) for r in batches_of_each):
        steps, size = len(batches_of_each[0]), batches_of_each[0].size
        return {name: torch.stack([getattr(r.whole, name).reshape(steps, size, *getattr(r.whole, name).shape[1:])
                                   for r in batches_of_each], 1) for name in BATCH_FIELDS}, steps, size
    rounds = [list(batches) for batches in batches_of_each]
    data = {name: torch.stack([torch.stack([getattr(b, name) for b in seed]) for seed in rounds], 1)
            for name in BATCH_FIELDS}
    return data, len(rounds[0]), len(rounds[0][0].obs)


def _adam_settings(fused: FusedDQN) -> tuple:
    group = fused.optimizer.param_groups[0]
    return group["betas"], group["eps"], group["weight_decay"]


class _RoundBuffers:
    """What one stacked step writes, for one (seeds, batch size) pair (allocated once)."""

    def __init__(self, widths: list[int], seeds: int, batch_size: int) -> None:
        self.hidden = [torch.empty(seeds, batch_size, n) for n in widths]
        self.next_hidden = [torch.empty(seeds, batch_size, n) for n in widths]
        self.target_hidden = [torch.empty(seeds, batch_size, n) for n in widths]
        self.grad_out = [torch.empty(seeds, batch_size, n) for n in widths]
        self.next_actions = torch.empty(seeds, batch_size, 1, dtype=torch.long)
        self.next_value = torch.empty(seeds, batch_size, 1)
        self.q_taken, self.grad_taken = torch.empty(seeds, batch_size, 1), torch.empty(seeds, batch_size, 1)


class StackedDQN:
    """The fused DQN round of several seeds at once (see the module docstring); build it with :func:`stack_dqn`."""

    def __init__(self, fused: list[FusedDQN]) -> None:
        self.fused, self.seeds = fused, len(fused)
        count = len(fused[0].params)
        self.params = [stack_views([f.params[j] for f in fused]) for j in range(count)]
        targets = [[t for w, b in f.target_layers for t in (w, b)] for f in fused]
        self.target_params = [stack_views([t[j] for t in targets]) for j in range(count)]
        self.exp_avgs, self.exp_avg_sqs = self._stack_moments("exp_avg"), self._stack_moments("exp_avg_sq")
        self.grads = [torch.zeros_like(p) for p in self.params]
        self.lead_steps = fused[0]._adam_state()[2]  # one seed's counts: the kernel's bias correction
        self.other_steps = [step for f in fused[1:] for step in f._adam_state()[2]]  # advanced once a round
        self.widths = [w.shape[0] for w, _ in fused[0].layers]
        self.numpy_layers = [(w.detach().numpy().transpose(0, 2, 1), b.detach().numpy()[:, None, :])
                             for w, b in self.layers(self.params)]  # views: Adam's in-place steps show
        self._buffers: dict[int, _RoundBuffers] = {}

    def _stack_moments(self, key: str) -> list[torch.Tensor]:
        """Adam's ``key`` moments of every parameter, stacked; each seed's optimizer state holds views."""
        stacked = []
        for j in range(len(self.params)):
            states = [f.optimizer.state[f.params[j]] for f in self.fused]
            stacked.append(torch.stack([s[key] for s in states]))
            for i, s in enumerate(states):
                s[key] = stacked[-1][i]
        return stacked

    def layers(self, params: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(zip(params[::2], params[1::2]))

    @torch.no_grad()
    def round(self, batches_of_each: Sequence[Iterable[Batch]]) -> tuple[list[float], list[float]]:
        """One round of every seed (``batches_of_each[i]``: seed i's minibatches, as many for each); returns each
        seed's last-step loss and mean taken Q-value, as its own round reports them."""
        data, steps, size = _stack_rounds(batches_of_each)
        obs = data["obs"].reshape(steps, self.seeds, size, -1).float()
        next_obs = data["next_obs"].reshape(steps, self.seeds, size, -1).float()
        buf = self._buffers.setdefault(size, _RoundBuffers(self.widths, self.seeds, size))
        group = self.fused[0].optimizer.param_groups[0]
        for k in range(steps):
            # step by step into buffers that stay in cache (one pass over the round's rows allocates and
            # page-faults tens of MB at 256 units, which costs more than the per-step calls)
            next_q_target = self.forward(self.layers(self.target_params), next_obs[k], buf.target_hidden)
            target = self.td_target(data, k, next_obs[k], next_q_target, buf)
            self.gradients(obs[k], data["actions"][k], data["weights"][k], target, buf)
            self.clip_and_step(group)
        torch._foreach_add_(self.other_steps, steps)
        q_taken, last = buf.q_taken.squeeze(2), target.squeeze(2)
        losses = (data["weights"][-1] * per_sample_loss(q_taken, last, self.fused[0].huber)).mean(1)
        return losses.tolist(), q_taken.mean(1).tolist()

    def greedy(self, obs: np.ndarray) -> np.ndarray:
        """Each seed's greedy actions for its rows of ``obs`` (seeds, envs, ...): one batched forward in numpy on
        views of the live stacked weights (a third of torch's per-call cost at acting sizes, as
        :mod:`rlkit.fast.numpy_forward` is for one seed)."""
        x = np.asarray(obs, dtype=np.float32).reshape(self.seeds, obs.shape[1], -1)
        for k, (weight, bias) in enumerate(self.numpy_layers):
            x = np.matmul(x, weight)
            x += bias
            if k < len(self.numpy_layers) - 1:
                np.maximum(x, 0.0, out=x)
        return x.argmax(2)

    def forward(self, layers: list[tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor,
                out: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Every seed's network on its rows of ``x`` (seeds, rows, features); into ``out`` when given."""
        for k, (weight, bias) in enumerate(layers):
            x = torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2), **({"out": out[k]} if out else {}))
            if k < len(layers) - 1:
                x.relu_()
        return x

    def td_target(self, data: dict[str, torch.Tensor], k: int, next_obs: torch.Tensor, next_q_target: torch.Tensor,
                  buf: _RoundBuffers) -> torch.Tensor:
        """y = r + gamma^k (1 - terminated) Q'(s', a*) of step ``k``, (seeds, batch, 1)."""
        if self.fused[0].double:
            next_q_online = self.forward(self.layers(self.params), next_obs, buf.next_hidden)
            torch.argmax(next_q_online, 2, keepdim=True, out=buf.next_actions)
            torch.gather(next_q_target, 2, buf.next_actions, out=buf.next_value)
        else:
            torch.amax(next_q_target, 2, keepdim=True, out=buf.next_value)
        target = (1.0 - data["terminated"][k].unsqueeze(2)) * data["discounts"][k].unsqueeze(2)
        return target.mul_(buf.next_value).add_(data["rewards"][k].unsqueeze(2))

    def gradients(self, obs: torch.Tensor, actions: torch.Tensor, weights: torch.Tensor, target: torch.Tensor,
                  buf: _RoundBuffers) -> None:
        """Each seed's loss gradients into ``self.grads``: forward, d loss / d q_taken in closed form, backward."""
        q_all = self.forward(self.layers(self.params), obs, buf.hidden)
        taken = actions.long().reshape(self.seeds, -1, 1)
        torch.gather(q_all, 2, taken, out=buf.q_taken)
        grad = torch.sub(buf.q_taken, target, out=buf.grad_taken)
        grad.clamp_(-1.0, 1.0) if self.fused[0].huber else grad.mul_(2.0)
        grad.mul_(weights.unsqueeze(2)).div_(obs.shape[1])
        grad = buf.grad_out[-1].zero_().scatter_(2, taken, grad)
        for k in range(len(self.widths) - 1, -1, -1):
            layer_input = buf.hidden[k - 1] if k else obs
            torch.bmm(grad.transpose(1, 2), layer_input, out=self.grads[2 * k])
            torch.sum(grad, 1, out=self.grads[2 * k + 1])
            if k:
                below = torch.bmm(grad, self.params[2 * k], out=buf.grad_out[k - 1])
                grad = torch.ops.aten.threshold_backward.grad_input(below, buf.hidden[k - 1], 0, grad_input=below)

    def clip_and_step(self, group: dict) -> None:
        """Clip each seed's gradients to its own global norm, then one fused Adam step over the stacked tensors."""
        if self.fused[0].max_grad_norm > 0:
            clip_per_seed(self.grads, self.fused[0].max_grad_norm)
        beta1, beta2 = group["betas"]
        torch._foreach_add_(self.lead_steps, 1)
        torch._fused_adam_(self.params, self.grads, self.exp_avgs, self.exp_avg_sqs, [], self.lead_steps,
                           amsgrad=False, lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"],
                           eps=group["eps"], maximize=False, grad_scale=None, found_inf=None)
