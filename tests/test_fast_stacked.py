"""Several seeds' DQN rounds stacked into one (rlkit.fast.stacked_dqn) against each seed's own fused round (which
tests/test_fast_fused.py checks against autograd): the same losses, parameters and Adam moments to float
tolerance over a few hundred updates; each seed's modules and optimizer see their slice; a seed can still update
alone; a checkpoint of a stacked seed holds only its own tensors; stacking is refused where it cannot be exact."""

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlkit.checkpoint import _encode
from rlkit.fast.fused_mlp import fused_dqn
from rlkit.fast.stacked_dqn import stack_dqn
from rlkit.nets import QNetwork
from rlkit.optim import make_optimizer
from rlkit.policy import Batch

BOX, ACTIONS = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32), gym.spaces.Discrete(3)


def seed_nets(seed, hidden=(32, 32), lr=3e-3, double=False, loss="huber", max_grad_norm=1.0):
    """One seed's Q-network, its (perturbed) target and its fused step."""
    torch.manual_seed(seed)
    q = QNetwork(BOX, ACTIONS, list(hidden))
    q_target = copy.deepcopy(q).requires_grad_(False)
    with torch.no_grad():
        for p in q_target.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return q, q_target, fused_dqn(q, q_target, make_optimizer(q.parameters(), "adam", lr), double, loss,
                                  max_grad_norm)


def round_batches(seed, count, size=32):
    g = torch.Generator().manual_seed(seed)
    return [Batch(torch.randn(size, 4, generator=g), torch.randint(0, 3, (size,), generator=g).float(),
                  torch.randn(size, generator=g), torch.randn(size, 4, generator=g),
                  (torch.rand(size, generator=g) < 0.2).float(), torch.full((size,), 0.99), torch.ones(size),
                  np.arange(size)) for _ in range(count)]


@pytest.mark.parametrize("double", [False, True])
@pytest.mark.parametrize("loss", ["huber", "mse"])
def test_stacked_rounds_equal_each_seeds_own(double, loss):
    """3 seeds x 25 rounds of 8 steps (200 updates): losses, parameters and Adam moments of the stacked rounds
    match three separate fused rounds on the same minibatches to float tolerance."""
    alone = [seed_nets(s, double=double, loss=loss) for s in range(3)]
    together = [seed_nets(s, double=double, loss=loss) for s in range(3)]
    stacked = stack_dqn([fused for _, _, fused in together])
    assert stacked is not None
    for r in range(25):
        batches = [round_batches(100 * r + s, 8) for s in range(3)]
        expected = [fused.round(b) for (_, _, fused), b in zip(alone, batches)]
        losses, q_means = stacked.round(batches)
        assert losses == pytest.approx([e[0] for e in expected], rel=1e-4, abs=1e-6)
        assert q_means == pytest.approx([e[1] for e in expected], rel=1e-4, abs=1e-6)
    for (q_a, _, f_a), (q_b, _, f_b) in zip(alone, together):
        for a, b in zip(q_a.parameters(), q_b.parameters()):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
        for a, b in zip(f_a.params, f_b.params):
            state_a, state_b = f_a.optimizer.state[a], f_b.optimizer.state[b]
            torch.testing.assert_close(state_b["exp_avg"], state_a["exp_avg"], rtol=1e-3, atol=1e-6)
            assert float(state_b["step"]) == float(state_a["step"]) == 200


def test_seeds_see_their_slices_and_can_update_alone():
    """After stacking, a seed's parameters, target and moments are views of its slice: its own forward gives the
    stacked values, a round of that seed alone changes only its slice, and its checkpoint stores its own data."""
    together = [seed_nets(s) for s in range(2)]
    before = [[p.detach().clone() for p in q.parameters()] for q, _, _ in together]
    stacked = stack_dqn([fused for _, _, fused in together])
    for (q, _, _), saved in zip(together, before):  # stacking moves the values, it does not change them
        for p, old in zip(q.parameters(), saved):
            assert torch.equal(p, old)
    stacked.round([round_batches(s, 4) for s in range(2)])
    obs = torch.randn(5, 4)
    for i, (q, q_target, _) in enumerate(together):
        assert q.head.weight.data_ptr() == stacked.params[-2][i].data_ptr()
        assert q_target.head.weight.data_ptr() == stacked.target_params[-2][i].data_ptr()
        expected = stacked.forward(stacked.layers([p[i:i + 1] for p in stacked.params]), obs[None])[0]
        torch.testing.assert_close(q(obs), expected)
    greedy = stacked.greedy(np.stack([obs.numpy(), obs.numpy()]))  # acting: numpy views of the stacked weights
    assert greedy.shape == (2, 5)
    for i, (q, _, _) in enumerate(together):
        assert greedy[i].tolist() == q(obs).argmax(1).tolist()
    other = [p.detach().clone() for p in together[1][0].parameters()]
    together[0][2].round(round_batches(7, 3))  # seed 0 alone (as after another seed stopped early)
    assert all(torch.equal(p, o) for p, o in zip(together[1][0].parameters(), other))
    encoded = _encode(together[0][0].state_dict())
    weight = encoded["head.weight"]
    assert weight.untyped_storage().nbytes() == weight.nbytes  # not the stacked tensor of both seeds


def test_stacking_refused_where_it_cannot_be_exact():
    """Different widths, different settings, or optimizers at different step counts: None (each seed alone)."""
    assert stack_dqn([seed_nets(0)[2], seed_nets(1, hidden=(16, 16))[2]]) is None
    assert stack_dqn([seed_nets(0)[2], seed_nets(1, double=True)[2]]) is None
    assert stack_dqn([seed_nets(0)[2], None]) is None
    ahead = seed_nets(1)[2]
    ahead.round(round_batches(0, 2))
    assert stack_dqn([seed_nets(0)[2], ahead]) is None
    assert stack_dqn([seed_nets(0)[2]]) is None  # one seed: nothing to stack
