"""Multi-task suites (issue 24, item 1): registration, check_env, the seeded task sequence, contexts applied to the
physics (hand-computed first steps), the one-hot and Dict modes, held-out contexts, one-line refusals."""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from rlkit.envs import make_env, make_vec_env
from rlkit.envs.multitask import SUITES, MultiTaskEnv, set_cartpole, suite_id, task_count

from rlkit.errors import RLKitError

SUITE_IDS = [suite_id(family, heldout) for family in SUITES for heldout in (False, True)]
WRAPPED = "is different from the unwrapped version"  # check_env's note that it was handed a wrapped env


def checker_warnings(env: gym.Env) -> set[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env)
    env.close()
    return {str(w.message) for w in caught if WRAPPED not in str(w.message)}


@pytest.mark.parametrize("env_id", SUITE_IDS)
@pytest.mark.parametrize("kwargs", [{}, {"obs_mode": "dict"}, {"schedule": "uniform"}, {"task": 0}])
def test_check_env_passes_and_warns_only_what_the_base_env_warns(env_id, kwargs):
    base = "CartPole-v1" if "CartPole" in env_id else "Pendulum-v1"  # (infinite bounds; Pendulum's torque range)
    assert checker_warnings(make_env(env_id, seed=0, env_kwargs=kwargs)) <= checker_warnings(make_env(base, seed=0))


def test_suites_are_registered_with_their_families_time_limits_and_task_counts():
    for env_id in SUITE_IDS:
        assert gym.spec(env_id).max_episode_steps == (500 if "CartPole" in env_id else 200)
        assert task_count(env_id) == 4
    assert task_count("CartPole-v1") == 0 and task_count("rlkit/NoSuchSuite-v0") == 0
    assert make_env("rlkit/CartPole-MT-v0").observation_space.shape == (4 + 4,)
    assert make_env("rlkit/Pendulum-MT-v0").observation_space.shape == (3 + 4,)


def test_round_robin_starts_at_the_seed_modulo_the_tasks_and_cycles():
    env = make_env("rlkit/CartPole-MT-v0")
    tasks = [env.reset(seed=6)[1]["task"]] + [env.reset()[1]["task"] for _ in range(5)]
    assert tasks == [2, 3, 0, 1, 2, 3]
    # rlkit's evaluation seeds episode i with eval_seed + i: every 4 consecutive episodes play each task once
    assert [env.reset(seed=10_000 + i)[1]["task"] for i in range(8)] == [0, 1, 2, 3, 0, 1, 2, 3]
    # the vector env seeds env i with seed + i: parallel envs start on different tasks
    venv = make_vec_env("rlkit/CartPole-MT-v0", num_envs=4, seed=9)
    assert venv.reset()[:, 4:].argmax(axis=1).tolist() == [1, 2, 3, 0]


def test_uniform_schedule_is_seeded_and_uniform():
    def tasks(seed: int, episodes: int = 400) -> list[int]:
        env = make_env("rlkit/CartPole-MT-v0", env_kwargs={"schedule": "uniform"})
        return [env.reset(seed=seed)[1]["task"]] + [env.reset()[1]["task"] for _ in range(episodes - 1)]

    first = tasks(3)
    assert first == tasks(3) and first != tasks(4)
    counts = np.bincount(first, minlength=4)
    assert counts.sum() == 400 and counts.min() > 70 and counts.max() < 130  # 100 expected per task, sd 8.7
    # a seeded reset draws the task from its own stream: the base env's initial states are CartPole-v1's
    plain = gym.make("CartPole-v1")
    env = make_env("rlkit/CartPole-MT-v0", env_kwargs={"schedule": "uniform"})
    np.testing.assert_array_equal(env.reset(seed=5)[0][:4], plain.reset(seed=5)[0])


def test_task_zero_is_cartpole_v1_step_for_step_and_the_one_hot_follows_the_task():
    plain = gym.make("CartPole-v1")
    env = make_env("rlkit/CartPole-MT-v0", env_kwargs={"task": 0})
    obs, info = env.reset(seed=11)
    plain_obs, _ = plain.reset(seed=11)
    actions = np.random.default_rng(0).integers(2, size=300)
    for action in actions:
        assert obs.dtype == np.float32 and obs in env.observation_space
        np.testing.assert_array_equal(obs[:4], plain_obs)
        np.testing.assert_array_equal(obs[4:], [1, 0, 0, 0])
        assert info["task"] == 0
        obs, reward, terminated, truncated, info = env.step(action)
        plain_obs, plain_reward, plain_terminated, plain_truncated, _ = plain.step(action)
        assert (reward, terminated, truncated) == (plain_reward, plain_terminated, plain_truncated)
        if terminated or truncated:
            obs, info = env.reset()
            plain_obs, _ = plain.reset()
    for task in range(4):
        obs, info = make_env("rlkit/CartPole-MT-v0", env_kwargs={"task": task}).reset(seed=1)
        assert info["task"] == task and obs[4:].tolist() == [float(task == k) for k in range(4)]


def first_step(env_id: str, task: int, state: list[float], action) -> np.ndarray:
    env = make_env(env_id, env_kwargs={"task": task})
    env.reset(seed=0)
    env.unwrapped.state = np.array(state, dtype=np.float64)
    return env.step(action)[0]


def test_cartpole_contexts_change_the_physics_as_cartpoles_equations_say():
    # From rest, pushing right (10 N): temp = F / M, theta_acc = -temp / (l (4/3 - m_p / M)), theta_dot = tau theta_acc.
    # Task 0 (l 0.5, cart 1, M 1.1): temp 9.0909, theta_acc -14.634, theta_dot -0.29268.
    # Task 2 (l 1.0, cart 3, M 3.1): temp 3.2258, theta_acc -2.4793, theta_dot -0.049587.
    assert first_step("rlkit/CartPole-MT-v0", 0, [0, 0, 0, 0], 1)[3] == pytest.approx(-0.29268, abs=1e-4)
    assert first_step("rlkit/CartPole-MT-v0", 2, [0, 0, 0, 0], 1)[3] == pytest.approx(-0.049587, abs=1e-5)
    env = make_env("rlkit/CartPole-MT-v0", env_kwargs={"task": 2})
    env.reset(seed=0)
    physics = env.unwrapped
    assert (physics.length, physics.masscart, physics.total_mass, physics.polemass_length) == \
        pytest.approx((1.0, 3.0, 3.1, 0.1))
    assert env.get_wrapper_attr("context") == {"length": 1.0, "masscart": 3.0}


def test_pendulum_contexts_change_gravity_and_mass():
    # thetadot' = thetadot + (3 g / (2 l) sin(theta) + 3 / (m l^2) u) dt with l 1, dt 0.05.
    # Horizontal, no torque: 0.075 g -> 0.75 (task 0, g 10), 0.3 (task 1, g 4), 1.05 (task 2, g 14).
    for task, expected in ((0, 0.75), (1, 0.3), (2, 1.05)):
        assert first_step("rlkit/Pendulum-MT-v0", task, [math.pi / 2, 0], [0.0])[2] == pytest.approx(expected)
    # Hanging down, torque 2: 0.15 u / m -> 0.3 (task 0, m 1), 0.2 (task 3, m 1.5).
    assert first_step("rlkit/Pendulum-MT-v0", 0, [math.pi, 0], [2.0])[2] == pytest.approx(0.3, abs=1e-6)
    assert first_step("rlkit/Pendulum-MT-v0", 3, [math.pi, 0], [2.0])[2] == pytest.approx(0.2, abs=1e-6)


def test_dict_mode_exposes_the_task_as_a_key():
    env = make_env("rlkit/CartPole-MT-v0", env_kwargs={"obs_mode": "dict"})
    assert env.observation_space == gym.spaces.Dict({"obs": gym.make("CartPole-v1").observation_space,
                                                     "task": gym.spaces.Discrete(4)})
    obs, info = env.reset(seed=7)
    plain_obs, _ = gym.make("CartPole-v1").reset(seed=7)
    assert obs in env.observation_space and obs["task"] == info["task"] == 3
    np.testing.assert_array_equal(obs["obs"], plain_obs)
    obs, *_, info = env.step(0)
    assert obs in env.observation_space and obs["task"] == info["task"] == 3


def test_heldout_contexts_keep_the_suites_width_and_show_the_nearest_training_task():
    # CartPole held out: l 0.75, cart 2. Norms of the log ratios to tasks 0-3: 0.80, 2.10, 0.50, 1.17 -> task 2.
    # Pendulum held out: g 6, m 1.25. To tasks 0-3: 0.56, 0.46, 0.89, 0.54 -> task 1.
    for family, nearest, context in (("CartPole", 2, {"length": 0.75, "masscart": 2.0}),
                                     ("Pendulum", 1, {"g": 6.0, "m": 1.25})):
        env = make_env(suite_id(family, heldout=True))
        assert env.observation_space == make_env(suite_id(family)).observation_space
        tasks = {env.reset(seed=s)[1]["task"] for s in range(6)}
        obs, _ = env.reset()
        assert tasks == {nearest} and obs[-4:].argmax() == nearest and obs[-4:].sum() == 1
        assert env.get_wrapper_attr("context") == context and context not in SUITES[family].contexts
    assert SUITES["CartPole"].nearest({"length": 0.5, "masscart": 1.0}) == 0


def test_an_own_suite_from_the_wrapper():
    env = MultiTaskEnv(gym.make("CartPole-v1"), [{"length": 0.3, "masscart": 1.0}, {"length": 2.0, "masscart": 1.0}],
                       set_cartpole)
    assert env.observation_space.shape == (6,)
    obs, info = env.reset(seed=1)
    assert info["task"] == 1 and obs[4:].tolist() == [0, 1] and env.unwrapped.length == 2.0


@pytest.mark.parametrize("kwargs, message", [
    ({"task": 4}, "task=4 is no task of this suite; pick 0 to 3"),
    ({"task": -1}, "task=-1 is no task of this suite"),
    ({"schedule": "random"}, "unknown schedule 'random'; use one of round_robin, uniform"),
    ({"obs_mode": "flat"}, "unknown obs_mode 'flat'; use one of onehot, dict"),
])
def test_bad_options_are_one_line(kwargs, message):
    with pytest.raises(RLKitError, match=message) as e:
        make_env("rlkit/CartPole-MT-v0", env_kwargs=kwargs)
    assert "\n" not in str(e.value)
    with pytest.raises(RLKitError, match="has one context; drop task=1"):
        make_env("rlkit/CartPole-MT-heldout-v0", env_kwargs={"task": 1})
