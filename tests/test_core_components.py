"""Layer 2: buffers, builders, config, checkpoints, env factory."""


import gymnasium as gym
import numpy as np
import pytest
import torch

from rlkit import envs, nets
from rlkit.buffers import ReplayBuffer
from rlkit.config import apply_overrides, parse_set_args
from rlkit.errors import RLKitError
from rlkit.policy import SB3PredictAdapter


def test_buffer_wraparound_keeps_newest_and_dtypes():
    buffer = ReplayBuffer(5, gym.spaces.Box(0, 10, (2,), np.float64), gym.spaces.Discrete(3), n_step=1)
    for t in range(7):
        buffer.add(np.full((1, 2), t), np.array([t % 3]), np.array([t]), np.full((1, 2), t + 1),
                   np.array([False]), np.array([False]))
    assert buffer.obs[:, 0, 0].tolist() == [5, 6, 2, 3, 4]
    assert buffer.obs.dtype == np.float32 and buffer.actions.dtype == np.int64
    assert buffer.rewards.dtype == np.float32 and buffer.terminated.dtype == bool
    assert len(buffer) == 4  # the newest row waits for its next observation
    batch = buffer.sample(256)
    # every sampled transition is consistent: next_obs = obs + 1, reward = obs
    assert torch.equal(batch.next_obs[:, 0], batch.obs[:, 0] + 1)
    assert torch.equal(batch.rewards, batch.obs[:, 0])
    assert set(batch.obs[:, 0].tolist()) <= {2.0, 3.0, 4.0, 5.0}


def test_image_frames_stored_once_as_uint8():
    space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    buffer = ReplayBuffer(1000, space, gym.spaces.Discrete(6), num_envs=2)
    frame_bytes = 4 * 84 * 84
    assert buffer.obs.dtype == np.uint8
    # one observation array only (no separate next_obs copy): capacity x frame bytes
    total = sum(a.nbytes for a in (buffer.obs, buffer.actions, buffer.rewards, buffer.terminated, buffer.truncated))
    assert buffer.obs.nbytes == 1000 * frame_bytes
    assert total < 1.01 * 1000 * frame_bytes
    obs = np.random.default_rng(0).integers(0, 255, (2, 4, 84, 84), dtype=np.uint8)
    buffer.add(obs, np.array([1, 2]), np.zeros(2), obs, np.array([False, True]), np.array([False, False]))
    buffer.add(obs, np.array([1, 2]), np.zeros(2), obs, np.array([False, False]), np.array([False, False]))
    batch = buffer.sample(4)
    assert batch.obs.dtype == torch.uint8 and batch.next_obs.dtype == torch.uint8


def test_builders_shapes_and_actor_bounds():
    box = gym.spaces.Box(-1, 1, (3,), np.float32)
    q = nets.QNetwork(box, gym.spaces.Discrete(4), [16])
    assert q(torch.zeros(5, 3)).shape == (5, 4)
    dueling = nets.QNetwork(box, gym.spaces.Discrete(4), [16, 16], dueling=True)
    assert dueling(torch.zeros(5, 3)).shape == (5, 4)
    image = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    frames = torch.zeros(2, 4, 84, 84, dtype=torch.uint8)
    assert nets.QNetwork(image, gym.spaces.Discrete(6), [])(frames).shape == (2, 6)
    onehot = nets.QNetwork(gym.spaces.Discrete(5), gym.spaces.Discrete(2), [8])
    assert onehot(torch.tensor([0, 4])).shape == (2, 2)
    asym = gym.spaces.Box(np.array([-1.0, 0.0], np.float32), np.array([3.0, 0.5], np.float32), dtype=np.float32)
    actor = nets.DeterministicActor(box, asym, [16])
    with torch.no_grad():
        for p in actor.parameters():
            p.uniform_(-50, 50)  # saturate tanh
        out = actor(torch.randn(256, 3) * 10)
    assert (out >= torch.tensor([-1.0, 0.0]) - 1e-6).all() and (out <= torch.tensor([3.0, 0.5]) + 1e-6).all()
    ac = nets.ActorCritic(box, gym.spaces.Discrete(3), [16])
    dist, value = ac(torch.zeros(4, 3))
    assert dist.sample().shape == (4,) and value.shape == (4,)
    dist, _ = nets.ActorCritic(box, asym, [16], shared=False)(torch.zeros(4, 3))
    assert dist.sample().shape == (4, 2) and dist.log_prob(torch.zeros(4, 2)).shape == (4,)


def test_polyak_update():
    src, tgt = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        src.weight.fill_(1.0), tgt.weight.fill_(3.0)
    nets.polyak_update(src, tgt, 0.25)
    assert torch.allclose(tgt.weight, torch.full((1, 2), 0.25 * 1 + 0.75 * 3))
    nets.polyak_update(src, tgt, 1.0)
    assert torch.equal(tgt.weight, src.weight)


def test_config_overrides_are_type_checked():
    from rlkit.agents.dqn import DQNConfig

    cfg = apply_overrides(DQNConfig(), parse_set_args(["lr=1e-4", "hidden=[32,32]", "double=true",
                                                      "buffer_size=1e5", "run_dir=none"]))
    assert cfg.lr == 1e-4 and cfg.hidden == [32, 32] and cfg.double is True and cfg.buffer_size == 100_000
    with pytest.raises(RLKitError, match="unknown option 'lrr'"):
        apply_overrides(DQNConfig(), {"lrr": "1"})
    with pytest.raises(RLKitError, match="expects an integer"):
        apply_overrides(DQNConfig(), {"batch_size": "abc"})
    with pytest.raises(RLKitError, match="true or false"):
        apply_overrides(DQNConfig(), {"double": "maybe"})
    with pytest.raises(RLKitError, match="must be one of"):
        apply_overrides(DQNConfig(), {"loss": "l1"})
    with pytest.raises(RLKitError, match="malformed --set"):
        parse_set_args(["lr"])
    with pytest.raises(RLKitError, match=r"'tau' must be in \(0, 1\]; got 2.0"):
        apply_overrides(DQNConfig(), {"tau": "2"})


def test_env_factory_errors_and_seeding():
    with pytest.raises(RLKitError, match="unknown env id 'CartPol-v1'"):
        envs.make_env("CartPol-v1")
    with pytest.raises(RLKitError, match="cannot import"):
        envs.make_env("no_such_pkg.mod:Foo-v0")
    a, b = envs.make_vec_env("CartPole-v1", 2, seed=3), envs.make_vec_env("CartPole-v1", 2, seed=3)
    np.testing.assert_array_equal(a.reset(), b.reset())
    assert not np.array_equal(a.reset()[0], a.reset()[1])  # env i gets seed + i


def test_vec_env_same_step_autoreset_is_explicit():
    vec = envs.make_vec_env("rlkit/ConstantReward-v0", 1, seed=0)
    vec.reset()
    for _ in range(20):
        step = vec.step(np.array([0]))
    assert step.truncated[0] and not step.terminated[0]
    assert step.episode_returns[0] == 20 and step.episode_lengths[0] == 20
    assert step.final_obs.shape == step.obs.shape


def test_atari_env_is_preprocessed():
    env = envs.make_env("PongNoFrameskip-v4", seed=0)
    obs, _ = env.reset(seed=0)
    assert np.asarray(obs).shape == (4, 84, 84) and np.asarray(obs).dtype == np.uint8


class _Repeat:
    """Identity-v0's oracle (act = the observed symbol), or with ``shift`` a policy that is always wrong."""

    def __init__(self, shift: int = 0) -> None:
        self.shift = shift
        self.seen_deterministic: set[bool] = set()

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        self.seen_deterministic.add(deterministic)
        return (np.asarray(obs).astype(np.int64) + self.shift) % 4


def test_sb3_evaluate_policy_drives_an_rlkit_policy():
    """SB3's evaluate_policy through the adapter: the oracle earns all 20 rewards an episode, a policy that
    is always one symbol off earns none, so the adapter passes observations and actions through unchanged."""
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor

    # 4 symbols, 20 steps, reward 1 for repeating the symbol; Monitor because SB3 warns without it
    env = Monitor(gym.make("rlkit/Identity-v0"))
    oracle = _Repeat()
    adapter = SB3PredictAdapter(oracle, env.observation_space, env.action_space)
    assert evaluate_policy(adapter, env, n_eval_episodes=3) == (20.0, 0.0)
    assert oracle.seen_deterministic == {True}
    wrong = SB3PredictAdapter(_Repeat(shift=1), env.observation_space, env.action_space)
    assert evaluate_policy(wrong, env, n_eval_episodes=3) == (0.0, 0.0)
    evaluate_policy(adapter, env, n_eval_episodes=1, deterministic=False)
    assert oracle.seen_deterministic == {True, False}  # the flag reaches the rlkit policy


@pytest.mark.parametrize("prioritized", [False, True])
def test_frame_stack_storage_rebuilds_exact_stacks(prioritized):
    """Atari-style stacks stored one frame per step must sample exactly what FrameStack produced."""
    from rlkit.buffers import PrioritizedReplayBuffer

    k, capacity = 4, 23
    space = gym.spaces.Box(0, 255, (k, 2, 2), np.uint8)
    cls = PrioritizedReplayBuffer if prioritized else ReplayBuffer
    buffer = cls(capacity, space, gym.spaces.Discrete(2), num_envs=2, n_step=2, gamma=0.5,
                 rng=np.random.default_rng(0), frame_stack=k)
    assert buffer.obs.shape == (capacity // 2, 2, 2, 2)  # one frame per step, not four
    rng = np.random.default_rng(1)
    stacks = [None, None]
    frame_id = 0
    true_obs, true_next = {}, {}

    def new_frame():
        nonlocal frame_id
        frame_id += 1
        return np.full((2, 2), frame_id % 256, np.uint8)

    def reset(e):
        first = new_frame()
        stacks[e] = np.stack([first] * k)  # gymnasium's FrameStack repeats the first frame

    reset(0), reset(1)
    for _ in range(60):
        obs = np.stack(stacks)
        final, term, trunc = [], [], []
        for e in range(2):
            following = np.concatenate([stacks[e][1:], new_frame()[None]])
            done = rng.random() < 0.15
            term.append(done and rng.random() < 0.5), trunc.append(done and not term[-1])
            final.append(following)
            if done:
                reset(e)
            else:
                stacks[e] = following
        row = buffer.pos
        for e in range(2):
            true_obs[(row, e)] = obs[e].copy()
            true_next[(row, e)] = final[e].copy()
        buffer.add(obs, np.array([0, 1]), np.ones(2), np.stack(final), np.array(term), np.array(trunc))
        if len(buffer) > 0:
            batch = buffer.sample(16)
            rows, envs = np.divmod(batch.indices, 2)
            for i, (r, e) in enumerate(zip(rows, envs)):
                np.testing.assert_array_equal(batch.obs[i].numpy(), true_obs[(r, e)])
                if buffer.n_step == 1 or batch.discounts[i] == 0.5:
                    np.testing.assert_array_equal(batch.next_obs[i].numpy(), true_next[(r, e)])
