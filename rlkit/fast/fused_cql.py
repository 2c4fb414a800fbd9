"""CQL's critic step on the CPU, written by hand: the same step as ``agents/cql.py``'s ``critic_step``, faster.

A CQL gradient step rates 1 + 3N actions per state (the dataset's, N uniform, N from pi(.|s), N from pi(.|s'));
at the Pendulum benchmark's settings (64-64 networks, N = 10, batch 256) that is 7936 rows through both critics,
and the profile of one step (``benchmarks/bench_d3rlpy.py``'s CQL, 18.8 ms of CPU) put 15.8 ms in the critic
step: 10.2 ms in autograd's forward and backward over those rows (fresh 4 MB activations and gradients for
every layer, ReLU's mask kept as another tensor, the bias gradients of ``baddbmm``'s backward), 1.4 ms in the
actor's pass over the 5120 copies of the states whose actions it samples, the rest in concatenations and the
loss's small ops. :class:`FusedCQLCritic` computes the same quantities with fewer operations:

* the actor's trunk runs once per state (2B rows instead of 2BN: the N copies of a state give the same mean and
  log std), and the N draws per state use the same normal noise, drawn in the same order, as the plain path;
* the critics' forward writes into buffers allocated once per batch size (``baddbmm(out=...)``, ``relu_``);
* the loss's gradient with respect to every rated Q-value is closed-form: ``2 (Q(s,a) - y) / B - alpha / B`` at
  the dataset's actions, ``alpha / B * softmax((Q(s,a_j) - log mu(a_j)) / T)`` at the sampled ones (the
  derivative of ``T logsumexp(x / T)`` is the softmax);
* the backward is matrix products into fixed buffers (``bmm`` for the weight gradients and the gradients of
  the layers' inputs, sums for the biases, ReLU's ``threshold_backward`` in place); the first layer's input
  gradient is never formed (the inputs are data);
* the gradients are handed to the critics' own optimizer (``.grad`` set, then its ``step()``), so checkpoints,
  the optimizer's state and resuming are those of the plain path.

The TD target (the actor at s' and the target critics, 256 rows) and the metrics are the plain path's own
operations. The result equals the plain step's up to float rounding (matrix products over other row blocks, a
logsumexp summed in another order): ``tests/test_fast_cql.py`` checks one step's gradients and several hundred
steps of training against ``agents/cql.py``'s autograd step. :func:`fused_cql_critic` returns None where this
does not apply (a GPU, another dtype, image or discrete observations, a network that is not the plain
Linear/ReLU stack): the agent then keeps its autograd step.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from rlkit.distributions import squashed_log_prob
from rlkit.nets import QCriticEnsemble, SquashedGaussianActor
from rlkit.policy import Batch


def _plain_actor(actor: nn.Module) -> bool:
    """A CPU float32 :class:`SquashedGaussianActor` on flat observations with a Linear/ReLU trunk."""
    if not isinstance(actor, SquashedGaussianActor) or actor.encoder.cnn is not None or actor.encoder.n_discrete:
        return False
    trunk = list(actor.trunk)
    if len(trunk) % 2 or not all(type(m) is nn.Linear for m in trunk[::2]) or \
            not all(type(m) is nn.ReLU for m in trunk[1::2]):
        return False
    return all(p.device.type == "cpu" and p.dtype == torch.float32 for p in actor.parameters())


def fused_cql_critic(critic: nn.Module, actor: nn.Module, num_actions: int, temperature: float,
                     cql_alpha: float) -> FusedCQLCritic | None:
    """The hand-written critic step for ``critic`` (a :class:`QCriticEnsemble`) and ``actor``, or None where it
    does not apply (then the caller takes its autograd step)."""
    if not isinstance(critic, QCriticEnsemble) or critic.encoder.cnn is not None or critic.encoder.n_discrete:
        return None
    if critic.weights[-1].shape[2] != 1 or \
            any(p.device.type != "cpu" or p.dtype != torch.float32 for p in critic.parameters()):
        return None  # one Q-value per critic (not a multi-task critic's one per task), on the CPU
    if not _plain_actor(actor):
        return None
    return FusedCQLCritic(critic, num_actions, temperature, cql_alpha)


class _Buffers:
    """What one step writes, for one batch size. Each layer's input carries a last column of ones, so that one
    matrix product with the weight and the bias stacked gives the layer's output, and one gives both their
    gradients (the bias's as the ones column's): a bias add and a column sum fewer per layer."""

    def __init__(self, critic: QCriticEnsemble, rows: int) -> None:
        n, widths = critic.n_critics, [w.shape[2] for w in critic.weights]
        self.inputs = torch.ones(rows, critic.weights[0].shape[1] + 1)
        self.hidden = [torch.ones(n, rows, width + 1) for width in widths[:-1]]  # after ReLU (in place)
        self.q = torch.empty(n, rows, 1)
        self.grad_q = torch.empty(n, rows, 1)  # d loss / d Q
        self.grad_hidden = [torch.empty(n, rows, width) for width in widths[:-1]]  # d loss / d each hidden output


class FusedCQLCritic:
    """CQL(H)'s critic step (TD error plus ``cql_alpha`` times the importance-sampled conservative penalty) by
    hand; called as ``agents/cql.py``'s ``critic_step(nets, batch, cfg)`` is, with the same result."""

    def __init__(self, critic: QCriticEnsemble, num_actions: int, temperature: float, cql_alpha: float) -> None:
        self.critic, self.num_actions, self.temperature, self.cql_alpha = critic, num_actions, temperature, cql_alpha
        self.weights, self.biases = list(critic.weights), list(critic.biases)
        # each layer's weight with its bias as one more input row, and their gradients
        self.stacked = [torch.cat([w, b], dim=1).detach() for w, b in zip(self.weights, self.biases)]
        self.stacked_grads = [torch.empty_like(w) for w in self.stacked]
        self.grads = {p: torch.zeros_like(p) for p in critic.parameters()}  # what the critic's optimizer steps on
        self._buffers: dict[int, _Buffers] = {}

    def buffers(self, rows: int) -> _Buffers:
        if rows not in self._buffers:
            self._buffers[rows] = _Buffers(self.critic, rows)
        return self._buffers[rows]

    @torch.no_grad()
    def __call__(self, nets: Any, batch: Batch, cfg: Any) -> dict[str, torch.Tensor]:
        """One critic step on ``batch`` with ``nets`` (CQL's actor, critic, critic_target, critic_opt): the
        optimizer steps on the hand-computed gradients; returns the plain step's metrics."""
        actor, n, size = nets.actor, self.num_actions, len(batch.obs)
        action_dim = actor.action_scale.numel()
        # a' of the backup (agents/cql.py's backup_actions): pi's deterministic action, or a draw from pi(.|s')
        next_actions = actor.act(batch.next_obs, deterministic=cfg.backup_action == "mean")
        next_q = nets.critic_target(batch.next_obs, next_actions)
        # y = r + gamma (1 - d) min_i Q'_i(s', a'): the plain path's td_target, op for op
        target = batch.rewards + batch.discounts * (1.0 - batch.terminated) * next_q.min(dim=0).values
        policy_actions, log_pi = self._sample_actions(actor, torch.cat([batch.obs, batch.next_obs]), n)
        unit = torch.rand(size * n, action_dim) * 2 - 1
        rows = size * (1 + 3 * n)
        buf = self.buffers(rows)
        self._fill_inputs(buf.inputs, batch, unit * actor.action_scale + actor.action_bias, policy_actions, n)
        q_all = self._forward(buf).view(-1, rows)  # (n_critics, rows): data, uniform, pi(.|s), pi(.|s')
        q, q_random, q_current, q_next = q_all.split([size, size * n, size * n, size * n], dim=1)
        log_pi_current, log_pi_next = log_pi.reshape(2, size, n)
        uniform_log_density = action_dim * math.log(0.5)
        samples = torch.cat([q_random.reshape(-1, size, n) - uniform_log_density,
                             q_next.reshape(-1, size, n) - log_pi_next,
                             q_current.reshape(-1, size, n) - log_pi_current], dim=-1)
        scaled = samples / self.temperature
        lse = self.temperature * torch.logsumexp(scaled, dim=-1)
        penalty = (lse - q).mean(dim=-1)
        td = (q - target).pow(2).mean(dim=1)
        loss = (td + self.cql_alpha * penalty).sum()
        # d loss / d Q: 2 (Q - y) / B - alpha / B at the data; alpha / B * softmax at the samples
        grad_data, grad_random, grad_current, grad_next = buf.grad_q.view(-1, rows).split(
            [size, size * n, size * n, size * n], dim=1)
        torch.sub(q, target, out=grad_data).mul_(2.0 / size).sub_(self.cql_alpha / size)
        weights = torch.softmax(scaled, dim=-1).mul_(self.cql_alpha / size)
        grad_random.view(-1, size, n).copy_(weights[..., :n])
        grad_next.view(-1, size, n).copy_(weights[..., n:2 * n])
        grad_current.view(-1, size, n).copy_(weights[..., 2 * n:])
        self._backward(buf)
        for p in self.critic.parameters():
            p.grad = self.grads[p]
        nets.critic_opt.step()
        return {"losses/critic_loss": loss, "losses/td_loss": td.sum(), "losses/cql_penalty": penalty.mean(),
                "losses/q_values": q[0].mean()}

    @staticmethod
    def _sample_actions(actor: SquashedGaussianActor, states: torch.Tensor, n: int
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """``actor.sample(states.repeat_interleave(n, 0))`` with the trunk run once per state: the same noise
        (one ``randn`` of the repeated shape), actions (rows state-major) and log-probabilities."""
        mean, log_std = actor(states)
        noise = torch.randn(len(states) * n, mean.shape[1]).view(len(states), n, -1)
        mean, log_std = mean.unsqueeze(1), log_std.unsqueeze(1)
        u = mean + log_std.exp() * noise
        actions = torch.tanh(u) * actor.action_scale + actor.action_bias
        return actions.reshape(-1, mean.shape[-1]), squashed_log_prob(u, mean, log_std).reshape(-1)

    @staticmethod
    def _fill_inputs(inputs: torch.Tensor, batch: Batch, random_actions: torch.Tensor, policy_actions: torch.Tensor,
                     n: int) -> None:
        """The critics' input rows (before the ones column): (s, a_data), then (s, a_j) for the uniform and the
        two policies' actions, each state's N rows together, as the plain path orders them."""
        size = len(batch.obs)
        obs = batch.obs.reshape(size, -1)
        obs_dim = obs.shape[1]
        inputs[:size, :obs_dim] = obs
        inputs[:size, obs_dim:-1] = batch.actions.reshape(size, -1)
        inputs[size:, :obs_dim].view(3, size, n, obs_dim).copy_(obs.view(1, size, 1, obs_dim).expand(3, size, n,
                                                                                                      obs_dim))
        inputs[size:size * (1 + n), obs_dim:-1] = random_actions
        inputs[size * (1 + n):, obs_dim:-1] = policy_actions

    def _forward(self, buf: _Buffers) -> torch.Tensor:
        """Q of every input row, (n_critics, rows, 1); the hidden layers' outputs stay in ``buf.hidden``."""
        for stacked, weight, bias in zip(self.stacked, self.weights, self.biases):
            torch.cat([weight, bias], dim=1, out=stacked)
        x = buf.inputs.expand(len(buf.q), *buf.inputs.shape)
        for k, hidden in enumerate(buf.hidden):
            torch.bmm(x, self.stacked[k], out=hidden[..., :-1])
            x = hidden.relu_()  # the ones column stays 1
        for critic in range(len(x)):  # one output: a matrix-vector product per critic (bmm's N=1 path is slower)
            torch.mv(x[critic], self.stacked[-1][critic, :, 0], out=buf.q[critic, :, 0])
        return buf.q

    def _backward(self, buf: _Buffers) -> None:
        """Backpropagate ``buf.grad_q`` (d loss / d Q) into ``self.grads``."""
        grad = buf.grad_q
        for k in range(len(self.weights) - 1, -1, -1):
            layer_input = buf.hidden[k - 1] if k else buf.inputs.expand(len(grad), *buf.inputs.shape)
            if grad.shape[2] == 1:  # the output layer: (grad^T input)^T, a row per critic (the faster product)
                torch.bmm(grad.transpose(1, 2), layer_input, out=self.stacked_grads[k].transpose(1, 2))
            else:
                torch.bmm(layer_input.transpose(1, 2), grad, out=self.stacked_grads[k])
            self.grads[self.weights[k]].copy_(self.stacked_grads[k][:, :-1])
            self.grads[self.biases[k]].copy_(self.stacked_grads[k][:, -1:])
            if k:
                below, weight = buf.grad_hidden[k - 1], self.weights[k]
                if grad.shape[2] == 1:  # a one-column gradient (the output layer's): an outer product
                    torch.mul(grad, weight.transpose(1, 2), out=below)
                else:
                    torch.bmm(grad, weight.transpose(1, 2), out=below)
                grad = torch.ops.aten.threshold_backward.grad_input(below, buf.hidden[k - 1][..., :-1], 0,
                                                                    grad_input=below)
