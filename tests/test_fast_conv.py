"""MinAtar's conv Q-network stepped by hand (rlkit.fast.fused_conv) against autograd and torch's own optimizers:
the same losses, parameters and optimizer state to float tolerance over a hundred updates, for RMSProp (centered
or not, as the MinAtar preset) and Adam, Double DQN or not, Huber or squared loss, with and without clipping;
several seeds stacked against each seed alone; stacked and single-seed greedy actions against each network's own;
the fast path refused where it cannot apply; and a real MinAtar DQN run taking it. (RMSProp's floored denominators
against torch's step bit for bit: tests/test_fast_ac_conv.py.)"""

import copy
import importlib.util

import gymnasium as gym
import numpy as np
import pytest
import torch
from rlkit.agents.dqn import dqn_loss
from torch import nn

from rlkit.fast.fused_conv import ConvDQN, StackedConvDQN, patch_indices
from rlkit.fast.fused_mlp import fused_dqn
from rlkit.fast.stacked_dqn import stack_dqn
from rlkit.nets import QNetwork
from rlkit.optim import make_optimizer
from rlkit.policy import Batch

GRID, ACTIONS = gym.spaces.Box(0, 1, (4, 10, 10), np.uint8), gym.spaces.Discrete(6)
RMSPROP = dict(kind="rmsprop", lr=2e-3, alpha=0.95, centered=True, eps=0.01)


def optimizer_for(q, kind="rmsprop", lr=2e-3, alpha=0.95, centered=True, eps=0.01):
    if kind == "adam":
        return make_optimizer(q.parameters(), "adam", lr)
    return torch.optim.RMSprop(q.parameters(), lr=lr, alpha=alpha, centered=centered, eps=eps)


def seed_nets(seed, optimizer=RMSPROP, double=False, loss="huber", max_grad_norm=0.0, hidden=()):
    """One seed's Q-network, its (perturbed) target, optimizer and hand-written step."""
    torch.manual_seed(seed)
    q = QNetwork(GRID, ACTIONS, list(hidden))
    q_target = copy.deepcopy(q).requires_grad_(False)
    with torch.no_grad():
        for p in q_target.parameters():
            p.add_(0.05 * torch.randn_like(p))
    opt = optimizer_for(q, **optimizer)
    return q, q_target, opt, fused_dqn(q, q_target, opt, double, loss, max_grad_norm)


def batches(seed, count, size=32):
    g = torch.Generator().manual_seed(seed)
    def grid():
        return (torch.rand(size, *GRID.shape, generator=g) < 0.15).to(torch.uint8)
    return [Batch(grid(), torch.randint(0, 6, (size,), generator=g).float(), torch.randn(size, generator=g),
                  grid(), (torch.rand(size, generator=g) < 0.2).float(), torch.full((size,), 0.99),
                  torch.rand(size, generator=g) + 0.5, np.arange(size)) for _ in range(count)]


def plain_step(q, q_target, opt, batch, double, loss, max_grad_norm):
    value, _, q_taken = dqn_loss(q, q_target, batch, double, loss)
    opt.zero_grad(set_to_none=True)
    value.backward()
    if max_grad_norm > 0:
        nn.utils.clip_grad_norm_(list(q.parameters()), max_grad_norm)
    opt.step()
    return value.item(), q_taken.mean().item()


def test_patch_indices_gather_what_conv2d_multiplies():
    """conv2d(x, w) equals the gathered patches times the flattened weight, cell by cell."""
    x, w = torch.randn(2, 3, 6, 7), torch.randn(5, 3, 3, 3)
    patches = x.reshape(2, -1)[:, patch_indices(3, 6, 7, 3)].view(2, 27, 4 * 5)
    expected = nn.functional.conv2d(x, w).reshape(2, 5, -1)
    torch.testing.assert_close(w.reshape(5, -1) @ patches, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("optimizer,double,loss,max_grad_norm,hidden", [
    (RMSPROP, False, "huber", 0.0, ()),  # the MinAtar preset
    (dict(RMSPROP, centered=False), True, "huber", 0.0, ()),
    (dict(kind="adam", lr=1e-3), False, "mse", 1.0, (64,)),
])
def test_hand_written_step_equals_autograd(optimizer, double, loss, max_grad_norm, hidden):
    """100 updates: the same losses, parameters and optimizer moments as autograd + torch's optimizer. (Double DQN
    with the squared loss drifts apart after about 70 updates here: a near-tie in the online argmax of a next
    state breaks the other way on a 1e-8 difference, and then the runs differ; the parameters agree to 5e-8
    until then.)"""
    q_a, t_a, opt_a, _ = seed_nets(0, optimizer, double, loss, max_grad_norm, hidden)
    q_b, _, opt_b, fused = seed_nets(0, optimizer, double, loss, max_grad_norm, hidden)
    assert isinstance(fused, ConvDQN)
    for r in range(25):
        for batch in batches(r, 4):
            expected = plain_step(q_a, t_a, opt_a, batch, double, loss, max_grad_norm)
        got = fused.round(batches(r, 4))
        assert got == pytest.approx(expected, rel=1e-4, abs=1e-6)
    for a, b in zip(q_a.parameters(), q_b.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
        for key, value in opt_a.state[a].items():
            torch.testing.assert_close(opt_b.state[b][key], value, rtol=1e-3, atol=1e-6)


def test_single_seed_greedy_actions_are_the_modules():
    """ConvDQN.greedy (exploration's greedy actions on the MinAtar network) picks the module's argmax."""
    q, _, _, fused = seed_nets(3)
    obs = (np.random.default_rng(0).random((5, *GRID.shape)) < 0.15).astype(np.uint8)
    with torch.no_grad():
        expected = q(torch.as_tensor(obs)).argmax(1).numpy()
    np.testing.assert_array_equal(fused.greedy(obs), expected)


@pytest.mark.parametrize("optimizer", [RMSPROP, dict(kind="adam", lr=1e-3)])
def test_stacked_seeds_equal_each_seed_alone(optimizer):
    """3 seeds x 20 rounds of 2 steps: the stacked rounds match each seed's own; each seed's modules and optimizer
    state are views of its slice, and stacked greedy actions are each network's own argmax."""
    alone = [seed_nets(s, optimizer) for s in range(3)]
    together = [seed_nets(s, optimizer) for s in range(3)]
    stacked = stack_dqn([f for *_, f in together])
    assert isinstance(stacked, StackedConvDQN)
    for r in range(20):
        rounds = [batches(100 * r + s, 2) for s in range(3)]
        expected = [f.round(b) for (*_, f), b in zip(alone, rounds)]
        losses, q_means = stacked.round(rounds)
        assert losses == pytest.approx([e[0] for e in expected], rel=1e-4, abs=1e-6)
        assert q_means == pytest.approx([e[1] for e in expected], rel=1e-4, abs=1e-6)
    obs = np.stack([b[0].obs[:5].numpy() for b in [batches(7 + s, 1) for s in range(3)]])
    greedy = stacked.greedy(obs)
    for s, ((q_a, _, opt_a, _), (q_b, _, opt_b, _)) in enumerate(zip(alone, together)):
        for j, (a, b) in enumerate(zip(q_a.parameters(), q_b.parameters())):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
            assert b.untyped_storage().data_ptr() == stacked.params[j].untyped_storage().data_ptr()
            torch.testing.assert_close(opt_b.state[b]["step"], opt_a.state[a]["step"])
        with torch.no_grad():
            np.testing.assert_array_equal(greedy[s], q_b(torch.as_tensor(obs[s])).argmax(1).numpy())
    # a stacked seed still steps alone (a resumed seed catching up), on its slice
    before = [p.clone() for p in together[1][0].parameters()]
    together[1][3].round(batches(999, 1))
    assert all(not torch.equal(p, b) for p, b in zip(together[1][0].parameters(), before))
    assert torch.equal(stacked.params[2][1], together[1][0].encoder.cnn.linear[0].weight)


def test_fast_path_refused_where_it_cannot_apply():
    q = QNetwork(GRID, ACTIONS, [])
    target = copy.deepcopy(q)
    assert fused_dqn(q, target, torch.optim.RMSprop(q.parameters(), momentum=0.9), False, "huber", 0) is None
    assert fused_dqn(q, target, torch.optim.Adam(q.parameters(), fused=False), False, "huber", 0) is None
    assert fused_dqn(q, target, torch.optim.SGD(q.parameters()), False, "huber", 0) is None
    assert fused_dqn(q, target, torch.optim.RMSprop(q.parameters()), False, "huber", 0) is not None
    last = gym.spaces.Box(0, 1, (10, 10, 4), np.uint8)  # channels last: transposed in the module, not here
    q_last = QNetwork(last, ACTIONS, [])
    assert fused_dqn(q_last, copy.deepcopy(q_last), torch.optim.RMSprop(q_last.parameters()), False, "huber",
                     0) is None
    a, b = seed_nets(0)[3], seed_nets(1, dict(RMSPROP, lr=1e-3))[3]
    assert stack_dqn([a, b]) is None  # another learning rate: one round cannot serve both


@pytest.mark.skipif(importlib.util.find_spec("minatar") is None, reason="minatar is not installed")
def test_minatar_dqn_seeds_train_stacked_in_one_process(tmp_path, monkeypatch):
    """Two seeds of the MinAtar preset's DQN (shortened) through ``train_seeds``: the learners take the conv
    step, the seeds' rounds run stacked, and each seed writes its own finished run."""
    from rlkit.agents import dqn

    from rlkit.fast import fused_conv

    rounds = []
    stacked_round = fused_conv.StackedConvDQN.round
    monkeypatch.setattr(fused_conv.StackedConvDQN, "round", lambda self, b: rounds.append(1) or stacked_round(self, b))
    cfgs = [dqn.DQNConfig(env_id="MinAtar/Breakout-v0", seed=s, total_steps=400, learning_starts=200,
                          buffer_size=400, batch_size=16, train_every=4, hidden=[], optimizer="rmsprop",
                          rmsprop_centered=True, rmsprop_alpha=0.95, optimizer_eps=0.01, eval_episodes=1,
                          checkpoint_every=0,
                          tensorboard=False, progress=False, log_every=0, run_dir=str(tmp_path / f"seed{s}"))
            for s in (0, 1)]
    finals = dqn.train_seeds(cfgs)
    assert [f["env_steps"] for f in finals] == [400, 400] and len(rounds) == (400 - 200) // 4
    assert all((tmp_path / f"seed{s}" / "final.json").is_file() for s in (0, 1))
