"""rlkit export --to sb3: each mappable agent, trained a few hundred steps, exported, loaded with
stable_baselines3.<ALGO>.load, gives the rlkit policy's greedy actions on 1,000 random observations;
what cannot map is refused in one line; rlkit eval takes the exported model as sb3:ALGO:PATH."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import stable_baselines3
import torch

from rlkit.apps.export import export_sb3, to_sb3
from rlkit.checkpoint import load_checkpoint
from rlkit.config import apply_overrides
from rlkit.errors import RLKitError
from rlkit.registry import get_agent
from tests.conftest import run_cli

QUIET = {"progress": False, "tensorboard": False, "eval_episodes": 1, "checkpoint_every": 0}
CASES = {
    "dqn-mlp": ("dqn", "CartPole-v1", {"total_steps": 300, "learning_starts": 100, "hidden": [32, 16]}, "DQN"),
    "ddpg": ("ddpg", "Pendulum-v1", {"total_steps": 300, "learning_starts": 100, "hidden": [32, 16]}, "DDPG"),
    "td3": ("td3", "Pendulum-v1", {"total_steps": 300, "learning_starts": 100, "hidden": [32, 16]}, "TD3"),
    "a2c-discrete-shared": ("a2c", "CartPole-v1", {"total_steps": 400, "hidden": [32, 16]}, "A2C"),
    "a2c-gaussian-separate": ("a2c", "Pendulum-v1", {"total_steps": 400, "hidden": [32], "shared_trunk": False,
                                                     "activation": "relu"}, "A2C"),
    "ppo-discrete": ("ppo", "CartPole-v1", {"total_steps": 256, "n_steps": 64, "batch_size": 32, "hidden": [32, 16]},
                     "PPO"),
    "ppo-gaussian-shared": ("ppo", "Pendulum-v1", {"total_steps": 256, "n_steps": 64, "batch_size": 32,
                                                   "hidden": [32], "shared_trunk": True}, "PPO"),
    "sac": ("sac", "Pendulum-v1", {"total_steps": 300, "learning_starts": 100, "hidden": [32, 16]}, "SAC"),
}


def train_run(agent: str, env_id: str, overrides: dict, run_dir) -> None:
    spec = get_agent(agent)
    cfg = apply_overrides(spec.config_cls(), spec.defaults, source="agent defaults")
    cfg = apply_overrides(cfg, {**QUIET, **overrides, "env_id": env_id, "seed": 0, "run_dir": str(run_dir)})
    spec.train(cfg)


def random_obs(space: gym.Space, n: int = 1000) -> np.ndarray:
    rng = np.random.default_rng(0)
    if isinstance(space, gym.spaces.Box) and space.dtype == np.uint8:
        return rng.integers(0, 256, size=(n, *space.shape), dtype=np.uint8)
    # CartPole's bounds are huge or infinite: draw around the states the env visits, and at the box's scale.
    low = np.maximum(space.low, -10.0)
    high = np.minimum(space.high, 10.0)
    return rng.uniform(low, high, size=(n, *space.shape)).astype(space.dtype)


def same_greedy_actions(state: dict, path) -> None:
    policy = get_agent(state["agent"]).load_policy(state)
    algo = path.name.split("-")[0]
    model = getattr(stable_baselines3, algo).load(path, device="cpu")
    obs = random_obs(state["observation_space"])
    ours = np.asarray(policy.act(obs, deterministic=True))
    theirs, _ = model.predict(obs, deterministic=True)
    if isinstance(state["action_space"], gym.spaces.Discrete):
        np.testing.assert_array_equal(ours.reshape(-1), theirs.reshape(-1))
    else:
        np.testing.assert_allclose(ours.reshape(theirs.shape), theirs, atol=1e-5)
        assert np.ptp(theirs) > 0.01  # the actions vary: a constant policy would make the test vacuous


@pytest.mark.parametrize("case", sorted(CASES))
def test_export_round_trip(tmp_path, case):
    agent, env_id, overrides, algo = CASES[case]
    train_run(agent, env_id, overrides, tmp_path / "run")
    result = export_sb3(tmp_path / "run", tmp_path / f"{algo}-model.zip")
    assert result["sb3_algo"] == algo and result["source"] == f"sb3:{algo}:{tmp_path / f'{algo}-model.zip'}"
    same_greedy_actions(load_checkpoint(tmp_path / "run"), tmp_path / f"{algo}-model.zip")


@pytest.mark.parametrize("agent", ["td3", "sac"])
def test_critic_values_survive_the_action_rescaling(tmp_path, agent):
    """SB3's critics see actions scaled to [-1, 1]; the exported first layer absorbs rlkit's scale and offset."""
    from rlkit.nets import QCriticEnsemble

    train_run(agent, "Pendulum-v1", CASES[agent][2], tmp_path / "run")
    state = load_checkpoint(tmp_path / "run")
    model = to_sb3(state)
    critic = QCriticEnsemble(state["observation_space"], state["action_space"], CASES[agent][2]["hidden"],
                             n_critics=2)
    critic.load_state_dict(state["critic"])
    obs = torch.as_tensor(random_obs(state["observation_space"], 64))
    raw = torch.as_tensor(np.random.default_rng(1).uniform(-2, 2, size=(64, 1)), dtype=torch.float32)
    with torch.no_grad():
        ours = critic(obs, raw)  # (2, 64)
        theirs = torch.stack(model.policy.critic(obs, raw / 2.0)).squeeze(-1)  # Pendulum: a in [-2, 2]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_dqn_nature_cnn_round_trip(tmp_path):
    """Atari-shaped frames (4x84x84 uint8, channels first): rlkit's Nature-CNN onto SB3's CnnPolicy."""
    from rlkit.agents.dqn import DQNConfig, build_q_net

    obs_space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    act_space = gym.spaces.Discrete(6)
    cfg = DQNConfig(env_id="PongNoFrameskip-v4", hidden=[], buffer_size=1000)
    torch.manual_seed(0)
    q_net = build_q_net(cfg, obs_space, act_space)
    state = {"agent": "dqn", "config": cfg.to_dict(), "global_step": 0, "q_net": q_net.state_dict(),
             "q_target": q_net.state_dict(), "observation_space": obs_space, "action_space": act_space}
    model = to_sb3(state)
    model.save(tmp_path / "DQN-cnn.zip")
    same_greedy_actions(state, tmp_path / "DQN-cnn.zip")


def test_refusals_are_one_line(tmp_path):
    train_run("dqn", "CartPole-v1", {**CASES["dqn-mlp"][2], "dueling": True}, tmp_path / "dueling")
    proc = run_cli("export", str(tmp_path / "dueling"), "--to", "sb3", "--out", str(tmp_path / "m.zip"))
    assert proc.returncode == 2 and "dueling" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.zip").exists()
    train_run("ddpg", "Pendulum-v1", {**CASES["ddpg"][2], "normalize_obs": True}, tmp_path / "norm")
    with pytest.raises(RLKitError, match="normalize_obs"):
        to_sb3(load_checkpoint(tmp_path / "norm"))
    with pytest.raises(RLKitError, match="cannot export 'bc' to SB3"):
        to_sb3({"agent": "bc"})


def test_eval_takes_the_exported_model(tmp_path):
    train_run("dqn", "CartPole-v1", CASES["dqn-mlp"][2], tmp_path / "run")
    assert run_cli("export", str(tmp_path / "run"), "--out", str(tmp_path / "model.zip")).returncode == 0
    proc = run_cli("eval", f"sb3:DQN:{tmp_path / 'model.zip'}", "--env", "CartPole-v1", "--episodes", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    theirs = json.loads(proc.stdout)
    ours = json.loads(run_cli("eval", str(tmp_path / "run"), "--episodes", "2", "--json").stdout)
    assert theirs["returns"] == ours["returns"]  # same greedy policy, same episode seeds
    proc = run_cli("eval", f"sb3:DQN:{tmp_path / 'model.zip'}", "--episodes", "2")
    assert proc.returncode == 2 and "needs --env" in proc.stderr
