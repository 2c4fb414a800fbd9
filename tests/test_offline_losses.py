"""Layer 1: the offline learners' losses (TD3+BC, IQL, CQL) and the loop's normalised score, against hand values."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from rlkit.agents import cql, iql, td3_bc

from rlkit.config import validate_config
from rlkit.engine.offline import dataset_normalizer, normalized_score, reward_scale
from rlkit.errors import RLKitError


# ------------------------------------------------------------------------------------------------------- TD3+BC
def test_td3_bc_actor_loss_scales_q_by_a_constant_lambda():
    q = torch.tensor([1.0, -3.0], requires_grad=True)
    actions_pi = torch.tensor([[0.5], [0.0]], requires_grad=True)
    actions = torch.tensor([[0.0], [1.0]])
    loss, lmbda = td3_bc.actor_loss(q, actions_pi, actions, alpha=2.5)
    # mean|Q| = (1 + 3) / 2 = 2, so lambda = 2.5 / 2 = 1.25; -lambda * mean(Q) = -1.25 * (-1) = 1.25;
    # BC: mean((0.5 - 0)^2, (0 - 1)^2) = (0.25 + 1) / 2 = 0.625; total 1.875
    assert lmbda.item() == pytest.approx(1.25)
    assert loss.item() == pytest.approx(1.875)
    loss.backward()
    # lambda is held constant (detached): dL/dQ_i = -lambda / 2 = -0.625 for both; through lambda, Q_1 = 1 and
    # Q_2 = -3 would get different gradients
    torch.testing.assert_close(q.grad, torch.tensor([-0.625, -0.625]))
    # dBC/dpi = 2 (pi - a) / 2
    torch.testing.assert_close(actions_pi.grad, torch.tensor([[0.5], [-1.0]]))


def test_td3_bc_alpha_zero_is_behaviour_cloning():
    q = torch.tensor([5.0, 7.0])
    loss, _ = td3_bc.actor_loss(q, torch.tensor([[1.0]]), torch.tensor([[0.0]]), alpha=0.0)
    assert loss.item() == pytest.approx(1.0)


def test_td3_bc_bc_term_is_on_actions_rescaled_to_unit_bounds():
    q = torch.tensor([2.0, 2.0])
    actions_pi = torch.tensor([[1.0, 0.5], [-2.0, 0.0]], requires_grad=True)
    actions = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    half_range = torch.tensor([2.0, 0.5])  # e.g. bounds [-2, 2] and [0, 1]
    loss, lmbda = td3_bc.actor_loss(q, actions_pi, actions, alpha=2.5, half_range=half_range)
    # lambda = 2.5 / 2 = 1.25, -lambda * mean(Q) = -2.5; rescaled differences (1/2, 0.5/0.5) and (-2/2, -1/0.5):
    # squares 0.25, 1, 1, 4, mean 6.25 / 4 = 1.5625; total -0.9375
    assert lmbda.item() == pytest.approx(1.25)
    assert loss.item() == pytest.approx(-0.9375)
    loss.backward()
    # dBC/dpi = 2 (pi - a) / half_range^2 / 4 elements
    torch.testing.assert_close(actions_pi.grad, torch.tensor([[0.125, 1.0], [-0.25, -2.0]]))


def test_td3_bc_target_smoothing_and_clipped_double_q_target():
    scale, low, high = torch.tensor([2.0]), torch.tensor([-2.0]), torch.tensor([2.0])
    next_actions = torch.tensor([[1.9], [0.0]])
    noise = torch.tensor([[0.8], [-0.1]])
    # 0.8 is clipped to 0.5 -> 1.9 + 0.5 * 2 = 2.9 -> clipped to the bound 2.0; -0.1 * 2 = -0.2
    smoothed = td3_bc.smoothed_target_actions(next_actions, noise, 0.5, scale, low, high)
    torch.testing.assert_close(smoothed, torch.tensor([[2.0], [-0.2]]))
    rewards, terminated, discounts = torch.tensor([1.0, 0.5]), torch.tensor([0.0, 1.0]), torch.tensor([0.9, 0.9])
    next_q = torch.tensor([[3.0, 1.0], [2.0, 5.0]])  # (critics, batch): the minima are 2 and 1
    # 1 + 0.9 * 2 = 2.8; the terminated one is its reward alone
    torch.testing.assert_close(td3_bc.td_target(rewards, terminated, discounts, next_q), torch.tensor([2.8, 0.5]))


# ---------------------------------------------------------------------------------------------------------- IQL
def test_iql_expectile_loss_by_hand():
    diff = torch.tensor([2.0, -1.0], requires_grad=True)
    loss = iql.expectile_loss(diff, 0.7)
    # positive differences weigh tau = 0.7, negative ones 1 - tau = 0.3: (0.7 * 4 + 0.3 * 1) / 2 = 1.55
    assert loss.item() == pytest.approx(1.55)
    loss.backward()
    torch.testing.assert_close(diff.grad, torch.tensor([2 * 0.7 * 2.0 / 2, 2 * 0.3 * -1.0 / 2]))


def test_iql_expectile_loss_is_minimised_at_the_expectile():
    # samples {0, 10} at tau = 0.7: the expectile v solves 0.7 (10 - v) = 0.3 (v - 0), so v = 7
    samples = torch.tensor([0.0, 10.0])
    grid = torch.linspace(0, 10, 1001)
    losses = torch.stack([iql.expectile_loss(samples - v, 0.7) for v in grid])
    assert grid[losses.argmin()].item() == pytest.approx(7.0)
    # tau = 0.5 is the mean, where the loss is half the mean squared error
    assert iql.expectile_loss(samples - 5.0, 0.5).item() == pytest.approx(0.5 * 25.0)


def test_iql_value_loss_uses_the_target_q_and_returns_the_advantages():
    q_target, v = torch.tensor([3.0, 0.0]), torch.tensor([1.0, 1.0], requires_grad=True)
    loss, advantage = iql.value_loss(q_target, v, 0.7)
    torch.testing.assert_close(advantage.detach(), torch.tensor([2.0, -1.0]))  # Q' - V
    assert loss.item() == pytest.approx(1.55)  # the expectile loss of those advantages
    loss.backward()
    torch.testing.assert_close(v.grad, torch.tensor([-1.4, 0.3]))  # d/dV = -d/d(Q' - V)


def test_iql_q_loss_bootstraps_from_v_of_the_next_state():
    q = torch.tensor([[1.0, 2.0], [3.0, 2.0]])  # (critics, batch)
    rewards, terminated, discounts = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), torch.tensor([0.5, 0.5])
    next_v = torch.tensor([4.0, 100.0])  # the second transition terminated: its V(s') must not count
    # targets: 1 + 0.5 * 4 = 3 and 0; errors: critic 0 (-2, 2), critic 1 (0, 2); mean of squares (4+4+0+4)/4 = 3
    assert iql.q_loss(q, rewards, terminated, discounts, next_v).item() == pytest.approx(3.0)


def test_iql_awr_loss_weights_by_exp_advantage_clipped_at_100():
    log_prob = torch.tensor([-1.0, -2.0], requires_grad=True)
    advantage = torch.tensor([0.0, 2.0], requires_grad=True)
    loss = iql.awr_loss(log_prob, advantage, beta=3.0)
    # weights exp(0) = 1 and exp(6) = 403.4 -> clipped to 100: -(1 * -1 + 100 * -2) / 2 = 100.5
    assert loss.item() == pytest.approx(100.5)
    loss.backward()
    torch.testing.assert_close(log_prob.grad, torch.tensor([-0.5, -50.0]))
    assert advantage.grad is None  # the advantages are weights, not trained through


def test_iql_cosine_schedule():
    assert iql.cosine_lr(3e-4, 0.0) == pytest.approx(3e-4)
    assert iql.cosine_lr(3e-4, 0.5) == pytest.approx(1.5e-4)
    assert iql.cosine_lr(3e-4, 1.0) == pytest.approx(0.0, abs=1e-12)
    # torch's CosineAnnealingLR (what CORL steps once per update) gives the same values
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=3e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=8)
    for step in range(8):
        assert opt.param_groups[0]["lr"] == pytest.approx(iql.cosine_lr(3e-4, step / 8))
        opt.step()
        sched.step()


def test_iql_gaussian_log_prob_is_of_the_action_rescaled_to_unit_bounds():
    obs_space = gym.spaces.Box(-1, 1, (3,), np.float32)
    act_space = gym.spaces.Box(-2, 2, (1,), np.float32)
    actor = iql.GaussianActor(obs_space, act_space, [8])
    last = actor.mean.net[-2]  # the output Linear before tanh: zeroed, the mean is tanh(0) * 2 + 0 = 0
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    # action 1.0 of [-2, 2] is 0.5 in [-1, 1]; std exp(0) = 1: log N(0.5; 0, 1) = -0.125 - 0.5 log(2 pi)
    log_prob = actor.log_prob(torch.zeros(1, 3), torch.tensor([[1.0]]))
    assert log_prob.item() == pytest.approx(-0.125 - 0.5 * math.log(2 * math.pi))


# ---------------------------------------------------------------------------------------------------------- CQL
def test_cql_conservative_penalty_by_hand():
    def t(value):
        return torch.tensor(value, dtype=torch.float32)

    # one critic, one state, one sample of each kind, |A| = 1 (uniform density 1/2 on [-1, 1])
    q_random, q_current, q_next = t([[[1.0]]]).requires_grad_(), t([[[2.0]]]).requires_grad_(), t([[[0.0]]])
    log_pi_current, log_pi_next, q_data = t([[0.5]]), t([[-1.0]]), t([[1.5]]).requires_grad_()
    penalty = cql.conservative_penalty(q_random, q_current, q_next, log_pi_current, log_pi_next, q_data,
                                       action_dim=1, temperature=1.0)
    # importance-weighted samples: 1 - log(1/2) = 1 + ln 2, 0 - (-1) = 1, 2 - 0.5 = 1.5
    # LSE = ln(e^(1 + ln 2) + e^1 + e^1.5) = ln(3e + e^1.5) = ln(12.636534) = 2.536592; minus Q(s, a) = 1.5
    assert penalty.shape == (1,)
    assert penalty.item() == pytest.approx(math.log(3 * math.e + math.exp(1.5)) - 1.5, rel=1e-6)
    assert penalty.item() == pytest.approx(1.036592, abs=1e-5)
    penalty.sum().backward()
    total = 3 * math.e + math.exp(1.5)
    # the logsumexp pushes each sampled Q down by its softmax share; the dataset's Q is pushed up by 1
    assert q_random.grad.item() == pytest.approx(2 * math.e / total, rel=1e-5)
    assert q_current.grad.item() == pytest.approx(math.exp(1.5) / total, rel=1e-5)
    assert q_data.grad.item() == pytest.approx(-1.0)


def test_cql_penalty_temperature_and_batch_mean():
    # two states, two critics; T = 2: T * log sum exp(x / T); the penalty is the mean over states
    q_random = torch.zeros(2, 2, 1)
    q_current = torch.zeros(2, 2, 1)
    q_next = torch.zeros(2, 2, 1)
    log_pi = torch.zeros(2, 1)
    q_data = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    penalty = cql.conservative_penalty(q_random, q_current, q_next, log_pi, log_pi, q_data, action_dim=2,
                                       temperature=2.0)
    # samples: 0 - 2 ln(1/2) = 2 ln 2 (uniform over [-1, 1]^2 has density 1/4), 0, 0
    lse = 2.0 * math.log(math.exp(math.log(2)) + 2.0)  # 2 ln(e^(2 ln 2 / 2) + e^0 + e^0) = 2 ln 4
    assert lse == pytest.approx(2 * math.log(4))
    torch.testing.assert_close(penalty, torch.tensor([lse - 0.5, lse - 2.5]))


def test_cql_target_has_no_entropy_and_temperature_loss():
    rewards, terminated, discounts = torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([0.99])
    assert cql.td_target(rewards, terminated, discounts, torch.tensor([[2.0], [4.0]])).item() == pytest.approx(2.98)
    log_alpha = torch.tensor(0.0, requires_grad=True)
    loss = cql.temperature_loss(log_alpha, torch.tensor([-0.5, -1.5]), target_entropy=-1.0)
    # -mean(log alpha (log pi + H)) with log pi + H = -1.5, -2.5: d/dlog alpha = 2 > 0, so alpha falls while the
    # entropy (1.0) exceeds the target (-1)
    loss.backward()
    assert log_alpha.grad.item() == pytest.approx(2.0)


def test_cql_backup_action_is_a_draw_or_the_policys_deterministic_action():
    obs_space = gym.spaces.Box(-1, 1, (3,), np.float32)
    act_space = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32))
    torch.manual_seed(0)
    actor = cql.SquashedGaussianActor(obs_space, act_space, [8])
    next_obs = torch.randn(4, 3)
    mean, _ = actor(next_obs)
    # 'mean': tanh(mu) mapped to the bounds, scale (2, 0.5) and offset (0, 0.5), the same on every call
    expected = torch.tanh(mean) * torch.tensor([2.0, 0.5]) + torch.tensor([0.0, 0.5])
    torch.testing.assert_close(cql.backup_actions(actor, next_obs, "mean"), expected)
    torch.testing.assert_close(cql.backup_actions(actor, next_obs, "mean"), expected)
    # 'sample': actor.sample's draw, which differs from the mean and between calls
    torch.manual_seed(1)
    drawn = cql.backup_actions(actor, next_obs, "sample")
    torch.manual_seed(1)
    torch.testing.assert_close(drawn, actor.sample(next_obs)[0])
    assert not torch.allclose(drawn, expected)
    with pytest.raises(RLKitError, match="option 'backup_action' must be one of sample, mean; got 'max'"):
        validate_config(cql.CQLConfig(demos="unused", backup_action="max"))


def test_cql_dataset_log_prob_matches_the_actors_own_density():
    obs_space = gym.spaces.Box(-1, 1, (3,), np.float32)
    act_space = gym.spaces.Box(-2, 2, (2,), np.float32)
    torch.manual_seed(0)
    actor = cql.SquashedGaussianActor(obs_space, act_space, [8])
    obs = torch.randn(5, 3)
    actions, log_prob = actor.sample(obs)
    torch.testing.assert_close(cql.dataset_log_prob(actor, obs, actions), log_prob, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------- the loop's part
def test_d4rl_normalised_score():
    assert normalized_score(-150.0, -1200.0, -150.0) == pytest.approx(100.0)
    assert normalized_score(-1200.0, -1200.0, -150.0) == pytest.approx(0.0)
    assert normalized_score(-675.0, -1200.0, -150.0) == pytest.approx(50.0)
    assert normalized_score(3000.0, 0.0, 2000.0) == pytest.approx(150.0)  # above the expert


def test_dataset_normalizer_is_td3_bc_s_mean_and_std_plus_eps():
    obs = np.array([[0.0, 5.0], [2.0, 5.0]], dtype=np.float32)  # mean (1, 5), std (1, 0)
    normalizer = dataset_normalizer(obs)
    np.testing.assert_allclose(normalizer(obs), [[-1 / 1.001, 0.0], [1 / 1.001, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(normalizer.torch(torch.from_numpy(obs)).numpy(), normalizer(obs), rtol=1e-6)
    far = np.array([[1e6, 5.0]], dtype=np.float32)  # no clipping (TD3+BC does not clip)
    assert normalizer(far)[0, 0] == pytest.approx((1e6 - 1) / 1.001, rel=1e-6)


def test_reward_scale_is_longest_episode_over_return_spread():
    class Ep:
        def __init__(self, rewards):
            self.rewards, self.length = np.asarray(rewards, dtype=np.float32), len(rewards)

    class Data(list):
        path = "data"

    # returns -3 and -13 (spread 10), longest episode 4 steps: scale 4 / 10
    assert reward_scale(Data([Ep([-1, -1, -1]), Ep([-4, -3, -3, -3])])) == pytest.approx(0.4)
