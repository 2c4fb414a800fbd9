"""Layer 1: DQN-family math against hand-computed values."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from rlkit.agents.dqn import dqn_loss, epsilon_greedy, make_policy, td_target

from rlkit.buffers import PrioritizedReplayBuffer, ReplayBuffer, SumTree
from rlkit.policy import Batch


def test_td_target_dqn_and_double():
    rewards = torch.tensor([1.0, 0.5])
    terminated = torch.tensor([0.0, 1.0])
    discounts = torch.tensor([0.9, 0.9])
    next_q_target = torch.tensor([[1.0, 3.0], [2.0, 0.0]])
    # DQN: max over the target net. 1 + 0.9 * 3 = 3.7; terminal: just the reward.
    assert torch.allclose(td_target(rewards, terminated, discounts, next_q_target), torch.tensor([3.7, 0.5]))
    # Double DQN: the online net picks action 0 for the first sample, the target net rates it 1.0.
    next_q_online = torch.tensor([[5.0, 1.0], [0.0, 1.0]])
    y = td_target(rewards, terminated, discounts, next_q_target, next_q_online)
    assert torch.allclose(y, torch.tensor([1.9, 0.5]))


class _FixedQ(torch.nn.Module):
    """Q(s, .) = table[s] with s an integer observation: the argmax is known."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.nn.Parameter(torch.tensor(table))

    def forward(self, obs):
        return self.table[obs.long().reshape(-1)]


def test_dqn_loss_weighted_mse_by_hand():
    q = _FixedQ([[1.0, 2.0], [0.0, 4.0]])
    batch = Batch(obs=torch.tensor([0, 1]), actions=torch.tensor([1, 0]), rewards=torch.tensor([1.0, 0.0]),
                  next_obs=torch.tensor([1, 0]), terminated=torch.tensor([0.0, 1.0]),
                  discounts=torch.tensor([0.5, 0.5]), weights=torch.tensor([1.0, 0.5]), indices=np.arange(2))
    loss, td, q_taken = dqn_loss(q, q, batch, double=False, loss="mse")
    # sample 0: y = 1 + 0.5 * max(0, 4) = 3, Q = 2 -> td 1; sample 1: y = 0, Q = 0 -> td 0.
    assert torch.allclose(td, torch.tensor([1.0, 0.0]))
    assert loss.item() == pytest.approx((1.0 * 1.0 + 0.5 * 0.0) / 2)
    assert torch.allclose(q_taken, torch.tensor([2.0, 0.0]))


def _batch(obs, actions, rewards, next_obs, terminated, discounts, weights):
    return Batch(obs=torch.tensor(obs), actions=torch.tensor(actions), rewards=torch.tensor(rewards),
                 next_obs=torch.tensor(next_obs), terminated=torch.tensor(terminated),
                 discounts=torch.tensor(discounts), weights=torch.tensor(weights), indices=np.arange(len(obs)))


def test_dqn_loss_huber_by_hand():
    q = _FixedQ([[1.0, 2.0]])
    # Both transitions terminate, so y = r: TD errors 1.5 - 1 = 0.5 (quadratic zone) and 4 - 1 = 3 (linear zone).
    batch = _batch([0, 0], [0, 0], [1.5, 4.0], [0, 0], [1.0, 1.0], [0.9, 0.9], [1.0, 0.5])
    loss, td, _ = dqn_loss(q, q, batch, double=False, loss="huber")
    assert torch.allclose(td, torch.tensor([0.5, 3.0]))
    # Huber(0.5) = 0.5 * 0.5^2 = 0.125; Huber(3) = 3 - 0.5 = 2.5; weighted mean (0.125 * 1 + 2.5 * 0.5) / 2
    assert loss.item() == pytest.approx(0.6875)
    loss.backward()
    # d loss / d Q(s, a0) = -(1 * 0.5 + 0.5 * 1) / 2: the large error's gradient is clipped to 1
    torch.testing.assert_close(q.table.grad, torch.tensor([[-0.5, 0.0]]))


def test_dqn_loss_double_dqn_by_hand():
    online = _FixedQ([[1.0, 2.0], [0.0, 4.0], [3.0, 1.0]])
    target = _FixedQ([[10.0, 20.0], [7.0, 5.0], [6.0, 8.0]])
    batch = _batch([0, 2], [1, 0], [1.0, 0.0], [1, 2], [0.0, 0.0], [0.5, 0.5], [1.0, 1.0])
    loss, td, q_taken = dqn_loss(online, target, batch, double=True, loss="mse")
    # sample 0: the online net picks a'=1 in s'=1 (4 > 0), the target rates it 5: y = 1 + 0.5 * 5 = 3.5, Q = 2.
    # sample 1: the online net picks a'=0 in s'=2 (3 > 1), the target rates it 6: y = 0 + 0.5 * 6 = 3, Q = 3.
    assert torch.allclose(td, torch.tensor([1.5, 0.0]))
    assert torch.allclose(q_taken, torch.tensor([2.0, 3.0]))
    assert loss.item() == pytest.approx((1.5**2 + 0.0) / 2)
    # plain DQN takes the target's own max (7 and 8) instead: different targets, so the switch matters
    _, td_plain, _ = dqn_loss(online, target, batch, double=False, loss="mse")
    assert torch.allclose(td_plain, torch.tensor([2.5, 1.0]))
    loss.backward()
    assert target.table.grad is None  # the target net gets no gradient


def test_epsilon_greedy_rates():
    torch.manual_seed(0)
    q_values = torch.tensor([[0.0, 1.0, 0.0, 0.0]]).repeat(20_000, 1)
    assert (epsilon_greedy(q_values, 0.0) == 1).all()
    uniform = torch.bincount(epsilon_greedy(q_values, 1.0), minlength=4) / 20_000
    assert torch.allclose(uniform, torch.full((4,), 0.25), atol=0.02)
    half = (epsilon_greedy(q_values, 0.5) == 1).float().mean().item()
    assert half == pytest.approx(0.5 + 0.5 / 4, abs=0.02)  # greedy, or explore and happen to pick it


def test_stochastic_policy_is_epsilon_greedy_with_epsilon_end():
    """`rlkit eval --stochastic` asks act(obs, deterministic=False): epsilon-greedy, not the greedy action."""
    from rlkit.nets import QNetwork

    box = gym.spaces.Box(-1, 1, (3,), np.float32)
    q_net = QNetwork(box, gym.spaces.Discrete(3), [8])
    policy = make_policy(q_net, box, gym.spaces.Discrete(3), epsilon=0.3)
    obs = np.random.default_rng(0).normal(size=(5_000, 3)).astype(np.float32)
    with torch.no_grad():
        greedy = q_net(torch.from_numpy(obs)).argmax(1).numpy()
    np.testing.assert_array_equal(policy.act(obs), greedy)
    np.testing.assert_array_equal(policy.act(obs[:4]), greedy[:4])  # the numpy fast path agrees
    torch.manual_seed(0)
    share_greedy = (policy.act(obs, deterministic=False) == greedy).mean()
    assert share_greedy == pytest.approx(0.7 + 0.3 / 3, abs=0.03)
    small = np.stack([policy.act(obs[:2], deterministic=False) for _ in range(500)])  # not the greedy fast path
    assert (small != greedy[:2]).any()


def _fill(buffer, rewards, terminated, truncated):
    for t, (r, term, trunc) in enumerate(zip(rewards, terminated, truncated)):
        buffer.add(np.array([[t]], np.float32), np.array([0]), np.array([r], np.float32),
                   np.array([[100 + t]], np.float32), np.array([term]), np.array([trunc]))


def _box():
    return gym.spaces.Box(-1e9, 1e9, (1,), np.float32)


def test_n_step_returns_across_episode_ends():
    buffer = ReplayBuffer(100, _box(), gym.spaces.Discrete(2), n_step=3, gamma=0.5)
    # episode 1: steps 0,1,2 (terminated at 2); episode 2: steps 3,4 (truncated at 4); then 5..8
    _fill(buffer, rewards=[1, 2, 3, 4, 5, 6, 7, 8, 9],
          terminated=[0, 0, 1, 0, 0, 0, 0, 0, 0], truncated=[0, 0, 0, 0, 1, 0, 0, 0, 0])
    batch = buffer._gather(np.array([0, 1, 2, 3, 4, 5]), np.zeros(6, int), np.ones(6, np.float32))
    # row 0: 1 + .5*2 + .25*3 = 2.75, ends terminated at step 2 (final obs 102)
    # row 1: 2 + .5*3 = 3.5, terminated; row 2: 3, terminated
    # row 3: 4 + .5*5 = 6.5, truncated at 4 -> bootstrap from final obs 104 with .25
    # row 4: 5, truncated -> bootstrap from 104 with .5
    # row 5: 6 + .5*7 + .25*8 = 11.5, no end -> next obs is row 8's obs (8), discount .125
    assert torch.allclose(batch.rewards, torch.tensor([2.75, 3.5, 3.0, 6.5, 5.0, 11.5]))
    assert torch.equal(batch.terminated, torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0]))
    assert torch.allclose(batch.discounts, torch.tensor([0.125, 0.25, 0.5, 0.25, 0.5, 0.125]))
    assert batch.next_obs[:, 0].tolist() == [102, 102, 102, 104, 104, 8]


def test_one_step_truncation_bootstraps_from_final_obs():
    buffer = ReplayBuffer(10, _box(), gym.spaces.Discrete(2), n_step=1, gamma=0.9)
    _fill(buffer, rewards=[1, 1, 1], terminated=[0, 0, 0], truncated=[0, 1, 0])
    batch = buffer._gather(np.array([0, 1]), np.zeros(2, int), np.ones(2, np.float32))
    assert batch.next_obs[:, 0].tolist() == [1, 101]  # row 1 was truncated: its real last obs, not a reset
    assert batch.terminated.tolist() == [0.0, 0.0]
    assert torch.allclose(batch.discounts, torch.tensor([0.9, 0.9]))


def test_sumtree_prefix_search():
    tree = SumTree(5)
    tree.update(np.arange(5), np.array([1.0, 0.0, 2.0, 3.0, 4.0]))
    assert tree.total == 10.0
    # cumulative: [0,1) -> 0, [1,3) -> 2, [3,6) -> 3, [6,10) -> 4 (leaf 1 has zero mass)
    assert tree.find(np.array([0.0, 0.99, 1.0, 2.5, 3.0, 5.9, 6.0, 9.99])).tolist() == [0, 0, 2, 2, 3, 3, 4, 4]
    tree.update(np.array([0]), np.array([5.0]))
    assert tree.total == 14.0


def test_prioritized_probabilities_and_weights_by_hand():
    buffer = PrioritizedReplayBuffer(10, _box(), gym.spaces.Discrete(2), n_step=1, gamma=0.9,
                                     alpha=1.0, eps=0.0, rng=np.random.default_rng(0))
    _fill(buffer, rewards=[0, 0, 0], terminated=[0, 0, 0], truncated=[0, 0, 0])
    assert len(buffer) == 2  # the newest transition waits for its next observation
    buffer.update_priorities(np.array([0, 1]), np.array([1.0, -3.0]))
    np.testing.assert_allclose(buffer.probabilities(np.array([0, 1])), [0.25, 0.75])
    buffer.beta = 1.0
    batch = buffer.sample(2000)
    counts = np.bincount(batch.indices, minlength=2)
    assert 0.2 < counts[0] / 2000 < 0.3  # stratified sampling follows P(i)
    # w_i = (N * P(i))^-beta / max w: (2*0.25)^-1 = 2, (2*0.75)^-1 = 2/3 -> normalised [1, 1/3]
    weights = {int(i): float(w) for i, w in zip(batch.indices, batch.weights)}
    assert weights[0] == pytest.approx(1.0)
    assert weights[1] == pytest.approx(1 / 3, rel=1e-5)


def test_prioritized_alpha_exponent():
    buffer = PrioritizedReplayBuffer(10, _box(), gym.spaces.Discrete(2), alpha=0.5, eps=0.0)
    _fill(buffer, rewards=[0, 0, 0], terminated=[0, 0, 0], truncated=[0, 0, 0])
    buffer.update_priorities(np.array([0, 1]), np.array([1.0, 9.0]))
    # p^alpha = [1, 3] -> P = [0.25, 0.75]
    np.testing.assert_allclose(buffer.probabilities(np.array([0, 1])), [0.25, 0.75])
