"""Each fast path (rlkit/fast) against the plain PyTorch path it replaces: outputs, and gradients or optimizer
steps where it trains."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlkit import nets
from rlkit.fast import numpy_forward as fast_np
from rlkit.fast.flat_adam import FlatAdam
from rlkit.fast.presample import rate_once
from rlkit.nets import SquashedGaussianActor
from rlkit.optim import set_lr
from rlkit.policy import Batch


def test_numpy_fast_path_matches_torch():
    box = gym.spaces.Box(-1, 1, (4,), np.float32)
    q = nets.QNetwork(box, gym.spaces.Discrete(3), [32, 32])
    fast = fast_np.numpy_forward(q)
    obs = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    with torch.no_grad():
        expected = q(torch.from_numpy(obs)).argmax(1).numpy()
    np.testing.assert_array_equal(fast(obs), expected)
    actor = nets.DeterministicActor(box, gym.spaces.Box(-1, 3, (2,), np.float32), [16])
    with torch.no_grad():
        np.testing.assert_allclose(fast_np.numpy_forward(actor)(obs), actor(torch.from_numpy(obs)).numpy(), atol=1e-5)
    assert fast_np.numpy_forward(nets.QNetwork(box, gym.spaces.Discrete(3), [8], dueling=True)) is None
    assert fast_np.numpy_forward(nets.QNetwork(gym.spaces.Discrete(5), gym.spaces.Discrete(3), [8])) is None


@pytest.mark.parametrize("activation", [torch.nn.ReLU, torch.nn.Tanh])
def test_numpy_ops_equal_torch_and_see_optimizer_steps(activation):
    """The numpy layers of a Linear + ReLU/Tanh stack equal torch's forward, before and after optimizer steps
    (the arrays share the parameters' memory, and Adam updates them in place)."""
    torch.manual_seed(0)
    net = nets.mlp(5, 3, [16, 16], activation)
    ops = fast_np.numpy_ops(net)
    obs = np.random.default_rng(1).normal(size=(32, 5)).astype(np.float32)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.1)
    for _ in range(3):
        with torch.no_grad():
            expected = net(torch.from_numpy(obs)).numpy()
        np.testing.assert_allclose(fast_np.run_numpy(ops, obs.copy()), expected, rtol=1e-5, atol=1e-6)
        optimizer.zero_grad()
        net(torch.from_numpy(obs)).pow(2).sum().backward()
        optimizer.step()
    np.testing.assert_allclose(fast_np.run_numpy(ops, obs), net(torch.from_numpy(obs)).detach().numpy(), rtol=1e-5,
                               atol=1e-6)
    assert fast_np.numpy_ops([torch.nn.Linear(2, 2), torch.nn.Sigmoid()]) is None


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_flat_adam_matches_torch_adam_step_for_step(weight_decay):
    def net():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8), torch.nn.ReLU(),
                                   torch.nn.Linear(8, 2))

    ours, ref = net(), net()
    opt_ours = FlatAdam(ours, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=weight_decay)
    opt_ref = torch.optim.Adam(ref.parameters(), lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=weight_decay)
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    for _ in range(5):
        for model, opt in ((ours, opt_ours), (ref, opt_ref)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        for (name, a), b in zip(ours.named_parameters(), ref.parameters()):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)
    # every parameter (and its gradient) is a view of the one buffer the five ops update
    assert sum(p.numel() for p in ours.parameters()) == opt_ours.param.numel()
    assert all(p.untyped_storage().data_ptr() == opt_ours.param.untyped_storage().data_ptr() for p in ours.parameters())
    assert all(p.grad.untyped_storage().data_ptr() == opt_ours.grad.untyped_storage().data_ptr()
               for p in ours.parameters())
    # state round trip: a restored optimizer continues identically
    clone = FlatAdam(net(), lr=0.01)
    clone.load_state_dict(opt_ours.state_dict())
    assert clone.steps == 5 and torch.equal(clone.exp_avg_sq, opt_ours.exp_avg_sq)


@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_flat_adam_clips_like_torch_and_takes_its_learning_rate(max_norm):
    # Gradients of norm well above 0.5 are scaled to norm 0.5 as clip_grad_norm_ does; a huge max_norm
    # leaves them as they are (the scale is clamped at 1).
    def net():
        torch.manual_seed(1)
        return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))

    ours, ref = net(), net()
    opt_ours = FlatAdam(ours, lr=0.01)
    x = torch.randn(32, 4) * 10
    for model in (ours, ref):
        model(x).pow(2).sum().backward()
    norm = opt_ours.clip_grad_norm_(max_norm)
    ref_norm = torch.nn.utils.clip_grad_norm_(ref.parameters(), max_norm)
    assert norm.item() > 5 and norm.item() == pytest.approx(ref_norm.item(), rel=1e-6)
    for a, b in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(a.grad, b.grad)
    expected = min(max_norm, norm.item())
    assert torch.linalg.vector_norm(opt_ours.grad).item() == pytest.approx(expected, rel=1e-5)
    set_lr(opt_ours, 0.25)
    assert opt_ours.lr == 0.25


@pytest.mark.parametrize("normalize_scale", [1.0, 5.0])
def test_numpy_squashed_gaussian_equals_the_torch_actor(normalize_scale):
    """SAC's numpy acting: tanh(mean) deterministically, and tanh(mean + std * eps) with the same normal draws
    as the torch actor's reparameterised sample, both mapped onto the Box bounds."""
    torch.manual_seed(0)
    box = gym.spaces.Box(-1, 1, (3,), np.float32)
    bounds = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32))
    actor = SquashedGaussianActor(box, bounds, [16, 16])
    obs = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32) * normalize_scale
    act = fast_np.numpy_squashed_gaussian(actor, np.random.default_rng(7))
    with torch.no_grad():
        mean, log_std = actor(torch.from_numpy(obs))
        scale, bias = actor.action_scale, actor.action_bias
        np.testing.assert_allclose(act(obs, True), (torch.tanh(mean) * scale + bias).numpy(), rtol=1e-5, atol=1e-6)
        eps = torch.from_numpy(np.random.default_rng(7).standard_normal((8, 2))).float()
        sampled = torch.tanh(mean + log_std.exp() * eps) * scale + bias
    np.testing.assert_allclose(act(obs, False), sampled.numpy(), rtol=1e-4, atol=1e-5)
    image = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    assert fast_np.numpy_squashed_gaussian(SquashedGaussianActor(gym.spaces.Discrete(4), bounds, [8]), None) is None
    assert image.shape  # (an image encoder is refused the same way: see fast_np._flat_input)


def test_rate_once_equals_a_forward_per_minibatch():
    """DQN's one-pass target rating: the same values as rating each minibatch on its own, bit for bit; a
    lazily drawn round (prioritized replay) is left to the plain path."""
    torch.manual_seed(0)
    q = nets.QNetwork(gym.spaces.Box(-1, 1, (4,), np.float32), gym.spaces.Discrete(2), [64, 64])

    def batch(n):
        x = torch.randn(n, 4)
        return Batch(x, torch.zeros(n), torch.zeros(n), torch.randn(n, 4), torch.zeros(n), torch.ones(n),
                     torch.ones(n), np.arange(n))

    batches = [batch(32) for _ in range(5)]
    rated = rate_once(q, batches)
    with torch.no_grad():
        for values, b in zip(rated, batches):
            assert torch.equal(values, q(b.next_obs))
    assert rate_once(q, iter(batches)) is None and rate_once(q, []) is None
