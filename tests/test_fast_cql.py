"""CQL's hand-written critic step (rlkit.fast.fused_cql) against agents/cql.py's autograd step: one step's
gradients, parameters and metrics, several hundred steps of training, and where the fast path declines."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from rlkit.agents import cql

from rlkit.fast.fused_cql import FusedCQLCritic, fused_cql_critic
from rlkit.nets import QCriticEnsemble
from rlkit.policy import Batch

PENDULUM_OBS = gym.spaces.Box(-8.0, 8.0, (3,), np.float32)
PENDULUM_ACT = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)


def learner(obs_space: gym.Space, act_space: gym.spaces.Box, fused: bool, seed: int = 0, **overrides) -> cql.CQL:
    cfg = cql.CQLConfig(demos="unused", batch_size=32, **{"hidden": [16, 16], "num_actions": 4, **overrides},
                        fused_update=fused)
    torch.manual_seed(seed)
    return cql.CQL(cfg, obs_space, act_space, normalizer=None)


def batch(obs_space: gym.Space, act_space: gym.spaces.Box, size: int, rng: np.random.Generator) -> Batch:
    obs_dim, act_dim = obs_space.shape[0], act_space.shape[0]
    low, high = act_space.low, act_space.high
    done = (rng.random(size) < 0.1).astype(np.float32)
    return Batch(obs=torch.as_tensor(rng.normal(size=(size, obs_dim)), dtype=torch.float32),
                 actions=torch.as_tensor(rng.uniform(low, high, size=(size, act_dim)), dtype=torch.float32),
                 rewards=torch.as_tensor(rng.normal(size=size), dtype=torch.float32),
                 next_obs=torch.as_tensor(rng.normal(size=(size, obs_dim)), dtype=torch.float32),
                 terminated=torch.as_tensor(done), discounts=torch.full((size,), 0.99),
                 weights=torch.ones(size), indices=np.arange(size))


SPACES = {"pendulum": (PENDULUM_OBS, PENDULUM_ACT, [16, 16]),
          # several action dims, asymmetric bounds, three hidden layers of different widths
          "wide": (gym.spaces.Box(-np.inf, np.inf, (5,), np.float32),
                   gym.spaces.Box(np.array([-1.0, 0.0, -3.0], np.float32), np.array([1.0, 2.0, 1.0], np.float32)),
                   [12, 20, 8]),
          "no-hidden": (PENDULUM_OBS, PENDULUM_ACT, [])}


@pytest.mark.parametrize("backup_action", ["sample", "mean"])
@pytest.mark.parametrize("spaces", SPACES)
def test_one_critic_step_matches_autograd(spaces, backup_action):
    obs_space, act_space, hidden = SPACES[spaces]
    options = dict(hidden=hidden, cql_alpha=3.0, temperature=0.7, backup_action=backup_action)
    plain = learner(obs_space, act_space, fused=False, **options)
    fast = learner(obs_space, act_space, fused=True, **options)
    assert isinstance(fast.critic_step, FusedCQLCritic) and plain.critic_step is cql.critic_step
    b = batch(obs_space, act_space, 32, np.random.default_rng(1))
    torch.manual_seed(5)
    plain_metrics = cql.critic_step(plain.nets, b, plain.cfg)
    torch.manual_seed(5)
    fast_metrics = fast.critic_step(fast.nets, b, fast.cfg)
    for p, f in zip(plain.nets.critic.parameters(), fast.nets.critic.parameters(), strict=True):
        # rtol 1e-4: the output biases' gradients sum about 400 rows' terms of both signs (data, policy and uniform
        # actions) in another order than autograd's, and float32 leaves up to 5e-5 of relative difference there
        # (pendulum, backup "mean": 2.0e-6 on a gradient of 0.044); every other tensor agrees to 1e-6
        torch.testing.assert_close(f.grad, p.grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(f, p, rtol=1e-5, atol=1e-6)  # the optimizer's step on those gradients
    assert plain_metrics.keys() == fast_metrics.keys()
    for key, value in plain_metrics.items():
        torch.testing.assert_close(fast_metrics[key], value, rtol=1e-5, atol=1e-5)
    # the same random draws were taken: the next draw of both streams is the same
    torch.manual_seed(5)
    cql.critic_step(plain.nets, b, plain.cfg)
    after_plain = torch.rand(3)
    torch.manual_seed(5)
    fast.critic_step(fast.nets, b, fast.cfg)
    torch.testing.assert_close(torch.rand(3), after_plain, rtol=0, atol=0)


def test_gradients_are_not_vacuous():
    """The step moved the critics, and a changed penalty weight changes the fused gradients as autograd's."""
    plain = learner(PENDULUM_OBS, PENDULUM_ACT, fused=False, cql_alpha=0.0)
    fast = learner(PENDULUM_OBS, PENDULUM_ACT, fused=True, cql_alpha=0.0)
    other = learner(PENDULUM_OBS, PENDULUM_ACT, fused=True, cql_alpha=5.0)
    before = [p.detach().clone() for p in fast.nets.critic.parameters()]
    b = batch(PENDULUM_OBS, PENDULUM_ACT, 32, np.random.default_rng(2))
    for model in (plain, fast, other):
        torch.manual_seed(3)
        model.critic_step(model.nets, b, model.cfg)
    assert all(not torch.equal(p, q) for p, q in zip(before, fast.nets.critic.parameters()))
    for p, f in zip(plain.nets.critic.parameters(), fast.nets.critic.parameters()):
        torch.testing.assert_close(f.grad, p.grad, rtol=1e-5, atol=1e-6)
    assert any((o.grad - f.grad).abs().max() > 1e-3 for f, o in
               zip(fast.nets.critic.parameters(), other.nets.critic.parameters()))


def test_several_hundred_steps_train_as_autograd_does():
    """300 whole CQL gradient steps (temperature, critics, actor, targets) on a stream of minibatches: every
    network, the temperature and the last step's metrics stay within float rounding's drift of the plain path."""
    plain = learner(PENDULUM_OBS, PENDULUM_ACT, fused=False, hidden=[32, 32], num_actions=5)
    fast = learner(PENDULUM_OBS, PENDULUM_ACT, fused=True, hidden=[32, 32], num_actions=5)
    start = [p.detach().clone() for p in plain.nets.critic.parameters()]
    metrics = {}
    for name, model in (("plain", plain), ("fast", fast)):
        rng = np.random.default_rng(7)
        torch.manual_seed(11)
        for step in range(300):
            metrics[name] = model.update(batch(PENDULUM_OBS, PENDULUM_ACT, 32, rng), step)
    moved = max(float((p.detach() - s).abs().max()) for p, s in zip(plain.nets.critic.parameters(), start))
    assert moved > 0.01  # training went somewhere (Adam at 3e-4: at most 0.09 in 300 steps), so agreeing is not trivial
    for net in ("actor", "critic", "critic_target"):
        for p, f in zip(getattr(plain.nets, net).parameters(), getattr(fast.nets, net).parameters(), strict=True):
            torch.testing.assert_close(f, p, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast.nets.log_alpha, plain.nets.log_alpha, rtol=1e-5, atol=1e-5)
    for key, value in metrics["plain"].items():
        torch.testing.assert_close(torch.as_tensor(metrics["fast"][key]), torch.as_tensor(value), rtol=1e-3,
                                   atol=1e-4)
    plain_state, fast_state = plain.state_dict(), fast.state_dict()
    assert plain_state["critic_opt"]["state"].keys() == fast_state["critic_opt"]["state"].keys()
    for key, state in plain_state["critic_opt"]["state"].items():
        assert float(fast_state["critic_opt"]["state"][key]["step"]) == float(state["step"]) == 300
        torch.testing.assert_close(fast_state["critic_opt"]["state"][key]["exp_avg"], state["exp_avg"], rtol=1e-3,
                                   atol=1e-5)


def test_the_fast_path_declines_what_it_does_not_compute():
    nets = learner(PENDULUM_OBS, PENDULUM_ACT, fused=True).nets
    assert fused_cql_critic(nets.critic, nets.actor, 10, 1.0, 5.0) is not None
    discrete = QCriticEnsemble(gym.spaces.Discrete(4), PENDULUM_ACT, [8])
    assert fused_cql_critic(discrete, nets.actor, 10, 1.0, 5.0) is None
    assert fused_cql_critic(copy.deepcopy(nets.critic).double(), nets.actor, 10, 1.0, 5.0) is None
    assert fused_cql_critic(nets.critic, copy.deepcopy(nets.actor).double(), 10, 1.0, 5.0) is None
    assert fused_cql_critic(nets.critic, torch.nn.Linear(3, 2), 10, 1.0, 5.0) is None
    tanh_actor = copy.deepcopy(nets.actor)
    tanh_actor.trunk[1] = torch.nn.Tanh()
    assert fused_cql_critic(nets.critic, tanh_actor, 10, 1.0, 5.0) is None
    # the config switch: fused_update=false keeps the autograd step
    assert learner(PENDULUM_OBS, PENDULUM_ACT, fused=False).critic_step is cql.critic_step
