"""Rate every minibatch of a training round with a fixed network in one forward pass.

A DQN round of ``gradient_steps`` minibatches (128 in the CartPole preset) needs ``q_target(next_obs)`` of
each; the target network does not change during the round, so one forward over the round's stacked
minibatches replaces ``gradient_steps`` small ones (per-call dispatch dominates at batch 64). Each row's
result is the same matrix products, so the values equal the per-minibatch forwards (``tests/test_fast.py``).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from rlkit.buffers import Round
from rlkit.policy import Batch


def rate_once(net: nn.Module, batches: Iterable[Batch]) -> list[torch.Tensor] | None:
    """``[net(b.next_obs) for b in batches]`` from one forward, without autograd; None when ``batches`` is
    drawn lazily (prioritized replay: a later minibatch depends on this round's priority updates)."""
    if isinstance(batches, Round) and len(batches):  # the round's rows are one tensor already
        with torch.no_grad():
            return list(net(batches.whole.next_obs).split(batches.size))
    if not isinstance(batches, list) or not batches:
        return None
    with torch.no_grad():
        values = net(torch.cat([batch.next_obs for batch in batches]))
    return list(values.split([len(batch.next_obs) for batch in batches]))
