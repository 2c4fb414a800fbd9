"""The SB3-style object API (rlkit.model) for every agent: learn, save, load, predict, learn again after load."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import rlkit
from rlkit import demos
from rlkit.checkpoint import list_checkpoints, read_checksums
from rlkit.errors import RLKitError
from rlkit.model import Model
from rlkit.policy import load_policy
from rlkit.registry import agent_names
from tests.test_training_hooks import CartPoleRule, PendulumRule

QUIET = dict(eval_episodes=1, eval_every=0, checkpoint_every=0, progress=False, tensorboard=False)
OFF_POLICY = dict(learning_starts=100, batch_size=16, buffer_size=1000, hidden=[16])
IMITATION = dict(num_envs=2, ppo_n_steps=64, demo_batch_size=64, n_disc_updates_per_round=1)


def tiny(agent: str, demos_path: Path, rewards_path: Path) -> tuple[str, dict, int, int]:
    """(env, options, first learn budget, second learn budget) of a run of a few hundred steps."""
    offline = dict(demos=str(rewards_path), batch_size=32, hidden=[16])
    return {
        "td3_bc": ("Pendulum-v1", offline, 40, 20),
        "iql": ("Pendulum-v1", offline, 40, 20),
        "cql": ("Pendulum-v1", offline, 40, 20),
        "dqn": ("CartPole-v1", OFF_POLICY, 200, 100),
        "ddpg": ("Pendulum-v1", OFF_POLICY, 200, 100),
        "td3": ("Pendulum-v1", OFF_POLICY, 200, 100),
        "sac": ("Pendulum-v1", OFF_POLICY, 200, 100),
        "a2c": ("CartPole-v1", dict(num_envs=2, n_steps=5, hidden=[16]), 100, 50),
        "ppo": ("CartPole-v1", dict(num_envs=2, n_steps=32, batch_size=32, n_epochs=1, hidden=[16]), 128, 64),
        "a3c": ("CartPole-v1", dict(num_workers=1, hidden=[16]), 200, 100),
        "bc": ("CartPole-v1", dict(demos=str(demos_path), batch_size=32), 40, 20),
        "dagger": ("rlkit/CurvyRoad-v0", dict(expert="python:rlkit.envs.test_envs:CurvyRoadExpert", rounds=6,
                                              episodes_per_round=1), 20, 20),
        "gail": ("seals:seals/CartPole-v0", dict(demos=str(demos_path), **IMITATION), 128, 128),
        "airl": ("seals:seals/CartPole-v0", dict(demos=str(demos_path), **IMITATION), 128, 128),
        "preference": ("Pendulum-v1", dict(total_comparisons=10, num_iterations=2, num_envs=2, ppo_n_steps=64,
                                           fragment_length=10, correlation_steps=100), 256, 256),
    }[agent]


@pytest.fixture(scope="module")
def cartpole_demos(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model_api") / "cartpole"
    demos.record(CartPoleRule(), "CartPole-v1", episodes=2, out=out, seed=0)
    return out


@pytest.fixture(scope="module")
def pendulum_rewards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model_api") / "pendulum"
    demos.record(PendulumRule(), "Pendulum-v1", episodes=2, out=out, seed=0, keep_rewards=True)
    return out


def step_of(run_dir: Path) -> int:
    return int(read_checksums(list_checkpoints(run_dir)[-1])["step"])


@pytest.mark.filterwarnings("ignore:.*Box (low|high)'s precision lowered:UserWarning")
@pytest.mark.parametrize("agent", agent_names())  # all fifteen take about 15 s together
def test_learn_save_load_predict_and_learn_again(agent, tmp_path, cartpole_demos, pendulum_rewards):
    env_id, options, first, more = tiny(agent, cartpole_demos, pendulum_rewards)
    cls = getattr(rlkit, {"dagger": "DAgger", "preference": "Preference", "td3_bc": "TD3BC"}.get(agent,
                                                                                               agent.upper()))
    assert cls.agent == agent and issubclass(cls, Model)
    model = cls(env_id, preset="none", seed=0, run_dir=tmp_path / "run", **options, **QUIET)
    assert model.learn(first) is model
    done = model.num_timesteps
    assert done >= 1 and step_of(tmp_path / "run") == done

    saved = model.save(tmp_path / "saved")
    assert (saved / "config.json").is_file() and list_checkpoints(saved)
    assert load_policy(saved) is not None  # what `rlkit eval PATH` reads

    # a module:Env id or python: expert from the saved files is imported only when named again, as for --resume
    trusted = {k: v for k, v in {"env_id": env_id, "expert": options.get("expert")}.items() if v and ":" in v}
    loaded = cls.load(saved, **trusted)
    assert loaded.env_id == model.env_id and loaded.run_dir == saved and loaded.num_timesteps == done
    space = gym.make(env_id).observation_space if ":" not in env_id else loaded.policy.observation_space
    obs = np.stack([space.sample() for _ in range(5)])
    actions, state = loaded.predict(obs, deterministic=True)
    assert state is None and len(actions) == 5
    np.testing.assert_array_equal(actions, model.predict(obs, deterministic=True)[0])
    one, _ = loaded.predict(obs[0], deterministic=True)  # SB3 shapes: one observation -> one action
    assert np.shape(one) == np.shape(actions[0])
    np.testing.assert_allclose(one, actions[0], rtol=1e-5, atol=1e-6)  # a batch of one may round differently

    loaded.learn(more)  # continues the saved run: its step counter kept, more steps on top
    assert loaded.num_timesteps > done and step_of(saved) == loaded.num_timesteps
    assert loaded.predict(obs[0], deterministic=True)[0].shape == np.shape(one)


def test_loading_another_agents_model_is_refused_in_one_line(tmp_path):
    ppo = rlkit.PPO("CartPole-v1", preset="none", run_dir=tmp_path / "run", num_envs=2, n_steps=16, batch_size=16,
                    n_epochs=1, hidden=[8], **QUIET)
    ppo.learn(32).save(tmp_path / "ppo")
    with pytest.raises(RLKitError) as e:
        rlkit.DQN.load(tmp_path / "ppo")
    assert "\n" not in str(e.value) and "ppo model, not dqn" in str(e.value) and "PPO.load(" in str(e.value)
    assert type(Model.load(tmp_path / "ppo")) is rlkit.PPO  # Model.load takes any agent's


def test_callbacks_reach_the_run_and_an_interrupted_learn_is_continued(tmp_path):
    events = []

    def stop_at_first_checkpoint(event):
        events.append(event.kind)
        if event.kind == "checkpoint":
            raise KeyboardInterrupt  # as a Ctrl-C mid-run: the checkpoint is committed, the run ends

    model = rlkit.DQN("CartPole-v1", preset="none", run_dir=tmp_path / "run",
                      **{**OFF_POLICY, **QUIET, "checkpoint_every": 100, "log_every": 50})
    with pytest.raises(KeyboardInterrupt):
        model.learn(300, callbacks=[stop_at_first_checkpoint])
    assert events[-1] == "checkpoint" and "log" in events and model.num_timesteps == 100
    model.learn(100)  # resumes the interrupted run: 100 steps more than its checkpoint
    assert model.num_timesteps == 200 and model.predict(np.zeros(4, np.float32))[0].shape == ()


def test_misuse_is_one_line(tmp_path):
    model = rlkit.DQN("CartPole-v1", preset="none", run_dir=tmp_path / "run", **QUIET)
    model_dir = rlkit.DQN("CartPole-v1", preset="none", run_dir=tmp_path / "other", **{**OFF_POLICY, **QUIET})
    model_dir.learn(150)
    (tmp_path / "file").write_text("x")
    for call in (lambda: model.predict(np.zeros(4)), lambda: model.save(tmp_path / "x"),
                 lambda: rlkit.DQN.load(tmp_path), lambda: model.learn(0),
                 lambda: Model("CartPole-v1"), lambda: rlkit.DQN("CartPole-v1", agent="ppo"),
                 lambda: rlkit.DQN("CartPole-v1", run_dir=tmp_path / "other"),  # a run already there
                 lambda: model_dir.save(tmp_path / "file")):  # not a run: never replaced
        with pytest.raises(RLKitError) as e:
            call()
        assert "\n" not in str(e.value)


def test_import_rlkit_stays_cheap():
    import subprocess
    import sys

    code = "import sys, rlkit; assert 'rlkit.model' not in sys.modules and 'torch' not in sys.modules; rlkit.DQN"
    subprocess.run([sys.executable, "-c", code], check=True)
