"""The fused DQN update (rlkit.fast.fused_mlp) against the plain autograd path it replaces: the same loss,
gradients and parameters (to float tolerance, and in fact bit for bit), the same training curve, a CartPole run
with the switch on, and the plain path where the fused one does not apply."""

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from rlkit.agents.dqn import DQN, DQNConfig, dqn_loss

from rlkit.fast.fused_mlp import fused_dqn
from rlkit.fast.presample import rate_once
from rlkit.nets import QNetwork
from rlkit.optim import make_optimizer
from rlkit.policy import Batch

BOX, ACTIONS = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32), gym.spaces.Discrete(3)


def make_batches(count, size=32, per=False, seed=1):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        weights = torch.rand(size, generator=g) + 0.2 if per else torch.ones(size)
        out.append(Batch(torch.randn(size, 4, generator=g), torch.randint(0, 3, (size,), generator=g).float(),
                         torch.randn(size, generator=g), torch.randn(size, 4, generator=g),
                         (torch.rand(size, generator=g) < 0.2).float(), torch.full((size,), 0.99 ** 3), weights,
                         np.arange(size)))
    return out


def nets_and_optimizers(hidden=(64, 64), lr=3e-3):
    torch.manual_seed(0)
    q = QNetwork(BOX, ACTIONS, list(hidden))
    q_target = copy.deepcopy(q).requires_grad_(False)
    with torch.no_grad():
        for p in q_target.parameters():
            p.add_(0.1 * torch.randn_like(p))
    q_fused = copy.deepcopy(q)
    return q, q_target, make_optimizer(q.parameters(), "adam", lr), q_fused, make_optimizer(q_fused.parameters(),
                                                                                            "adam", lr)


def plain_step(q, q_target, optimizer, batch, double, loss, next_q_target=None, max_grad_norm=10.0):
    """The plain DQN.update loop body."""
    value, td_errors, q_taken = dqn_loss(q, q_target, batch, double, loss, next_q_target)
    optimizer.zero_grad(set_to_none=True)
    value.backward()
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(list(q.parameters()), max_grad_norm)
    optimizer.step()
    return value.item(), td_errors


@pytest.mark.parametrize("double", [False, True])
@pytest.mark.parametrize("loss", ["huber", "mse"])
@pytest.mark.parametrize("per", [False, True])
def test_fused_gradients_and_updates_equal_autograd(double, loss, per):
    """One step's loss and gradients, then the parameters after a few clipped Adam steps (rated at once, or one
    target forward per minibatch as with prioritized replay): to tolerance, and bit for bit."""
    q, q_target, optimizer, q_fused, fused_optimizer = nets_and_optimizers()
    fused = fused_dqn(q_fused, q_target, fused_optimizer, double, loss, max_grad_norm=1.0)
    batches = make_batches(6, per=per)
    value, _, _ = dqn_loss(q, q_target, batches[0], double, loss)
    value.backward()
    buffers = fused.buffers(32)
    with torch.no_grad():
        fused.gradients(batches[0], None, buffers)
    for grad, p in zip(fused.grads, q.parameters()):
        torch.testing.assert_close(grad, p.grad)
        assert torch.equal(grad, p.grad)
    rated = None if per else rate_once(q_target, batches)
    losses, priorities = [], []
    for i, batch in enumerate(batches):
        losses.append(plain_step(q, q_target, optimizer, batch, double, loss, None if per else rated[i], 1.0)[0])
    fused_loss, _ = fused.round(batches, rated, lambda idx, td: priorities.append(td))
    assert fused_loss == pytest.approx(losses[-1], rel=1e-6)
    for a, b in zip(q.parameters(), q_fused.parameters()):
        torch.testing.assert_close(a, b)
        assert torch.equal(a, b)
    for a, b in zip(optimizer.state.values(), fused_optimizer.state.values()):
        assert torch.equal(a["step"], b["step"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    assert len(priorities) == 6 and priorities[0].shape == (32,)


def test_fused_training_curve_equals_autograd():
    """300 updates on a fixed buffer (rounds of 10, a learning-rate change and a hard target copy in between):
    the losses of both paths agree to float tolerance."""
    q, q_target, optimizer, q_fused, fused_optimizer = nets_and_optimizers(hidden=(128, 128), lr=1e-3)
    q_target_fused = copy.deepcopy(q_target)
    fused = fused_dqn(q_fused, q_target_fused, fused_optimizer, True, "huber", 10.0)
    data = make_batches(40, size=64, seed=3)
    plain_losses, fused_losses = [], []
    for r in range(30):
        batches = [data[(r * 7 + i) % len(data)] for i in range(10)]
        for opt in (optimizer, fused_optimizer):
            opt.param_groups[0]["lr"] = 1e-3 * (1 - r / 30)
        rated, rated_fused = rate_once(q_target, batches), rate_once(q_target_fused, batches)
        plain_losses.append([plain_step(q, q_target, optimizer, b, True, "huber", rated[i])[0]
                             for i, b in enumerate(batches)][-1])
        fused_losses.append(fused.round(batches, rated_fused)[0])
        if r % 5 == 4:
            q_target.load_state_dict(q.state_dict())
            q_target_fused.load_state_dict(q_fused.state_dict())
    np.testing.assert_allclose(fused_losses, plain_losses, rtol=1e-5, atol=1e-7)
    assert plain_losses[-1] < plain_losses[0]
    for a, b in zip(q.parameters(), q_fused.parameters()):
        torch.testing.assert_close(a, b)


def small_cartpole(fused, **kw):
    options = dict(env_id="CartPole-v1", total_steps=3000, learning_starts=500, batch_size=64, hidden=[64, 64],
                   train_every=64, gradient_steps=32, target_update_every=10, double=True, lr=2.3e-3,
                   fused_update=fused, eval_every=0, progress=False)
    return DQNConfig(**{**options, **kw})


def test_dqn_with_the_switch_trains_cartpole_as_the_plain_path_does(tmp_path):
    """A short CartPole run with fused_update on learns and takes the fused path; the plain run on the same seed
    gives the same final evaluation (the paths are bit-identical)."""
    from rlkit.agents import dqn

    results = {}
    for fused in (False, True):
        cfg = small_cartpole(fused, run_dir=str(tmp_path / f"fused-{fused}"), eval_episodes=5, seed=0)
        results[fused] = dqn.train(cfg)
    assert results[True]["eval"]["mean"] == results[False]["eval"]["mean"]
    assert results[True]["eval"]["mean"] > 30  # random CartPole play scores about 20


@pytest.mark.parametrize("change", [dict(dueling=True), dict(optimizer="rmsprop"), dict(device="cpu", hidden=[])])
def test_switch_falls_back_to_the_plain_path_where_it_does_not_apply(change):
    """Dueling heads and RMSProp take the plain path (fused is None); a head-only Q-network still fuses."""
    cfg = small_cartpole(True, **change)
    agent = DQN(cfg, BOX, gym.spaces.Discrete(2), np.random.default_rng(0))
    assert (agent.fused is not None) == (change.get("hidden") == [])
    assert DQN(small_cartpole(False), BOX, gym.spaces.Discrete(2), np.random.default_rng(0)).fused is None


def test_fused_dqn_refuses_images_one_hot_and_other_optimizers():
    image = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    for space in (image, gym.spaces.Discrete(5)):
        q = QNetwork(space, ACTIONS, [16])
        assert fused_dqn(q, copy.deepcopy(q), make_optimizer(q.parameters()), False, "huber", 10.0) is None
    q = QNetwork(BOX, ACTIONS, [16])
    for optimizer in (make_optimizer(q.parameters(), "rmsprop"), torch.optim.Adam(q.parameters(), amsgrad=True),
                      torch.optim.SGD(q.parameters(), lr=0.1)):
        assert fused_dqn(q, copy.deepcopy(q), optimizer, False, "huber", 10.0) is None
    assert fused_dqn(q, copy.deepcopy(q), make_optimizer(q.parameters()), False, "huber", 10.0) is not None
