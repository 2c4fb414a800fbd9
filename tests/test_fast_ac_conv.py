"""MinAtar's actor-critic stepped by hand (rlkit.fast.fused_ac_conv) against autograd and torch's own optimizers:
the same logged loss terms, parameters and optimizer state to float tolerance over 120 updates, for RMSProp as the
MinAtar preset (one row a step, no clipping), centered RMSProp with clipping on multi-env GAE rollouts, and Adam
with a hidden trunk layer; the actor's values and actions against the model's own; the fast path refused where it
cannot apply; and real MinAtar A2C runs, fast and plain, ending with the same weights."""

import copy
import importlib.util

import gymnasium as gym
import numpy as np
import pytest
import torch
from rlkit.agents import a2c

from rlkit.actor_critic import build_model, rollout_loss, rollout_tensors
from rlkit.checkpoint import load_checkpoint
from rlkit.config import apply_overrides, resolve_preset
from rlkit.fast.fused_ac_conv import ConvActorCritic, fused_actor_critic
from rlkit.fast.fused_conv import OptimizerStep
from rlkit.optim import make_optimizer
from rlkit.rollouts import Rollout

GRID, ACTIONS = gym.spaces.Box(0, 1, (4, 10, 10), np.uint8), gym.spaces.Discrete(6)
PRESET = dict(kind="rmsprop", lr=2 ** -11, alpha=0.999, eps=0.01, centered=False)  # minatar-breakout's


def optimizer_for(model, kind="rmsprop", lr=1e-3, alpha=0.99, eps=1e-5, centered=False):
    if kind == "adam":
        return make_optimizer(model.parameters(), "adam", lr)
    return torch.optim.RMSprop(model.parameters(), lr=lr, alpha=alpha, eps=eps, centered=centered)


def rollouts(seed, count, steps, envs):
    """Random MinAtar-shaped rollouts (sparse 0/1 grids), with episode ends of both kinds."""
    g = torch.Generator().manual_seed(seed)
    def column(scale=1.0):
        return (scale * torch.randn(steps, envs, generator=g)).numpy()
    for _ in range(count):
        obs = (torch.rand(steps, envs, *GRID.shape, generator=g) < 0.15).to(torch.uint8).numpy()
        ended = torch.rand(steps, envs, generator=g).numpy()
        yield Rollout(obs, torch.randint(0, ACTIONS.n, (steps, envs), generator=g).numpy(), column(), ended < 0.1,
                      (ended > 0.1) & (ended < 0.15), column(0.5), column(0.5))


@pytest.mark.parametrize("optimizer,steps,envs,gae_lambda,max_grad_norm,hidden", [
    (PRESET, 1, 1, 1.0, 0.0, []),  # the minatar-breakout preset: one row per update, no clipping
    (dict(PRESET, alpha=0.99, centered=True, lr=1e-3), 5, 4, 0.9, 0.5, []),
    (dict(kind="adam", lr=1e-3), 5, 2, 1.0, 0.0, [64]),
])
def test_hand_written_update_equals_autograd(optimizer, steps, envs, gae_lambda, max_grad_norm, hidden):
    """120 updates: the same logged terms, parameters and optimizer state as the loss's autograd backward and torch's
    own optimizer step."""
    vf_coef, ent_coef, gamma = 1.0, 0.02, 0.99
    torch.manual_seed(0)
    plain = build_model(GRID, ACTIONS, hidden, "relu", True)
    fast = copy.deepcopy(plain)
    opt_plain, opt_fast = optimizer_for(plain, **optimizer), optimizer_for(fast, **optimizer)
    fused = fused_actor_critic(fast, opt_fast, vf_coef, ent_coef, max_grad_norm)
    assert isinstance(fused, ConvActorCritic)
    for rollout in rollouts(0, 120, steps, envs):
        loss, expected = rollout_loss(plain, rollout, gamma, gae_lambda, vf_coef, ent_coef)
        opt_plain.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(list(plain.parameters()), max_grad_norm)
        opt_plain.step()
        got = fused.update(*rollout_tensors(rollout, gamma, gae_lambda))
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            assert got[key].item() == pytest.approx(value.item(), rel=1e-4, abs=1e-5), key
    for a, b in zip(plain.parameters(), fast.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
        assert opt_fast.state[b].keys() == opt_plain.state[a].keys()
        for key, value in opt_plain.state[a].items():
            torch.testing.assert_close(opt_fast.state[b][key], value, rtol=1e-3, atol=1e-7)
    assert max((a - p).abs().max().item() for a, p in
               zip(plain.parameters(), build_model(GRID, ACTIONS, hidden, "relu", True).parameters())) > 1e-3


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("eps", [0.01, 1e-5, 1e-8])
def test_floored_rmsprop_step_is_torchs_bit_for_bit(eps, centered):
    """RMSProp with zero denominators lifted before the square root (the speed-up for exact zeros; plain for the
    actor-critic, centered for MinAtar's DQN) steps the parameters, and keeps the moments, exactly as torch's
    RMSprop, on gradients mostly 0 with a few tiny and ordinary ones."""
    g = torch.Generator().manual_seed(0)
    plain = [torch.randn(64, 32, generator=g), torch.randn(32, generator=g)]
    fast = [p.clone() for p in plain]
    opt_plain = torch.optim.RMSprop(plain, lr=1e-3, alpha=0.999, eps=eps, centered=centered)
    step = OptimizerStep(torch.optim.RMSprop(fast, lr=1e-3, alpha=0.999, eps=eps, centered=centered), fast)
    for _ in range(50):
        grads = [torch.randn(p.shape, generator=g) * (torch.rand(p.shape, generator=g) < 0.1)
                 * 10.0 ** torch.randint(-30, 1, p.shape, generator=g) for p in plain]
        for p, grad in zip(plain, grads):
            p.grad = grad.clone()
        opt_plain.step()
        step.step(fast, grads, [step.state(key) for key in step.state_keys()], step.state("step"))
    assert any(bool((opt_plain.state[p]["square_avg"] == 0).any()) for p in plain)
    for a, b in zip(plain, fast):
        assert torch.equal(a, b)
        assert all(torch.equal(opt_plain.state[a][key], step.optimizer.state[b][key]) for key in step.state_keys())


def test_actor_values_and_actions_are_the_models():
    """The actor's values are the model's V; deterministic actions its most probable ones; sampled actions the draw
    the model's Categorical makes from the same torch RNG state."""
    torch.manual_seed(1)
    model = build_model(GRID, ACTIONS, [], "relu", True)
    with torch.no_grad():
        model.policy.logits.weight.mul_(100.0)  # spread the probabilities so the argmax is not a near-tie
    fused = fused_actor_critic(model, optimizer_for(model), 1.0, 0.02, 0.0)
    for obs in [r.obs[0] for r in rollouts(3, 5, 1, 3)] + [next(rollouts(4, 1, 1, 1)).obs[0]]:
        dist, values = model(torch.as_tensor(obs))
        actions, got_values = fused.act(obs, deterministic=True)
        np.testing.assert_allclose(got_values, values.detach().numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(actions, dist.probs.argmax(-1).numpy())
        torch.manual_seed(7)
        expected = dist.sample().numpy()
        torch.manual_seed(7)
        np.testing.assert_array_equal(fused.act(obs)[0], expected)


def test_refused_where_it_does_not_apply():
    """None (the autograd path) for another activation, a separate value trunk, continuous actions, flat
    observations, channels-last grids and optimizers OptimizerStep does not run."""
    def fused(model, optimizer=None):
        return fused_actor_critic(model, optimizer or optimizer_for(model), 1.0, 0.01, 0.5)

    assert isinstance(fused(build_model(GRID, ACTIONS, [32], "relu", True)), ConvActorCritic)
    assert fused(build_model(GRID, ACTIONS, [32], "tanh", True)) is None
    assert fused(build_model(GRID, ACTIONS, [32], "relu", False)) is None
    assert fused(build_model(GRID, gym.spaces.Box(-1, 1, (2,)), [], "relu", True)) is None
    assert fused(build_model(gym.spaces.Box(-1, 1, (8,)), ACTIONS, [32], "relu", True)) is None
    assert fused(build_model(gym.spaces.Box(0, 1, (10, 10, 4), np.uint8), ACTIONS, [], "relu", True)) is None
    model = build_model(GRID, ACTIONS, [], "relu", True)
    assert fused(model, torch.optim.RMSprop(model.parameters(), momentum=0.9)) is None
    assert fused(model, torch.optim.Adam(model.parameters(), fused=False)) is None
    assert fused(model, torch.optim.SGD(model.parameters(), lr=0.1)) is None
    assert fused(model, torch.optim.RMSprop(list(model.parameters())[:-2])) is None  # not every parameter


@pytest.mark.skipif(importlib.util.find_spec("minatar") is None, reason="minatar is not installed")
def test_minatar_preset_runs_fast_and_ends_as_the_plain_run(tmp_path, monkeypatch):
    """The minatar-breakout preset, 400 frames: the learner takes the hand-written path, and a run with it refused
    (autograd and torch acting) plays the same frames and ends with the same weights and optimizer state."""
    def run(name):
        cfg = apply_overrides(a2c.A2CConfig(), {**resolve_preset(a2c.AGENT.presets(), "minatar-breakout", "a2c"),
                                                "total_steps": 400, "checkpoint_every": 0, "eval_episodes": 1,
                                                "tensorboard": False, "progress": False,
                                                "run_dir": str(tmp_path / name)})
        return load_checkpoint(a2c.train(cfg)["run_dir"])

    built = []
    original = a2c.fused_actor_critic
    monkeypatch.setattr(a2c, "fused_actor_critic", lambda *args: built.append(original(*args)) or built[-1])
    fast = run("fast")
    assert isinstance(built[0], ConvActorCritic)
    monkeypatch.setattr(a2c, "fused_actor_critic", lambda *args: None)
    plain = run("plain")
    assert fast["global_step"] == plain["global_step"] == 400
    for key, value in plain["model"].items():
        torch.testing.assert_close(fast["model"][key], value, rtol=1e-4, atol=1e-5)
    for key, state in plain["optimizer"]["state"].items():
        for name, value in state.items():
            torch.testing.assert_close(fast["optimizer"]["state"][key][name], value, rtol=1e-3, atol=1e-7)
