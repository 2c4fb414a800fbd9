"""envs on gymnasium 1.x: same-step autoreset pinned against gymnasium's own, Atari ids (v4 and v5), preset ids."""

from __future__ import annotations

import re
import warnings
from importlib import resources

import gymnasium as gym
import numpy as np
import pytest
import yaml

from rlkit import envs
from rlkit.errors import RLKitError

# ---------------------------------------------------------------------------------------------
# VecEnv: same-step autoreset, explicit
# ---------------------------------------------------------------------------------------------


def test_vec_env_first_reset_is_seeded_seed_plus_i():
    vec = envs.make_vec_env("CartPole-v1", num_envs=3, seed=7)
    obs = vec.reset()
    for i in range(3):  # the independent reference: a plain env reset with seed 7 + i
        assert np.array_equal(obs[i], gym.make("CartPole-v1").reset(seed=7 + i)[0])
    assert not np.array_equal(obs[0], obs[1])
    assert vec.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP


def test_vec_env_matches_gymnasium_same_step_autoreset():
    """Step for step against SyncVectorEnv(autoreset_mode=SAME_STEP): obs, final_obs, rewards, flags."""
    n, seed, limit = 3, 11, 15  # a 15-step cap so that episodes both terminate and get truncated
    ours = envs.make_vec_env("CartPole-v1", num_envs=n, seed=seed, env_kwargs={"max_episode_steps": limit})
    ref = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1", max_episode_steps=limit)] * n,
                                   autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    obs = ours.reset()
    ref_obs, _ = ref.reset(seed=seed)  # gymnasium seeds sub-env i with seed + i too
    assert np.array_equal(obs, ref_obs)
    rng = np.random.default_rng(0)
    returns, lengths = np.zeros(n), np.zeros(n, dtype=int)
    ended = {"terminated": 0, "truncated": 0}
    for _ in range(120):
        actions = rng.integers(0, 2, n)
        step = ours.step(actions)
        ref_obs, ref_rew, ref_term, ref_trunc, info = ref.step(actions)
        assert np.array_equal(step.rewards, ref_rew) and step.rewards.dtype == np.float32
        assert np.array_equal(step.terminated, ref_term) and np.array_equal(step.truncated, ref_trunc)
        assert np.array_equal(step.obs, ref_obs)  # where an episode ended: the reset observation
        returns += step.rewards
        lengths += 1
        for i in range(n):
            if ref_term[i] or ref_trunc[i]:
                # the terminal observation, not the reset one; the step's reward and flags kept
                assert np.array_equal(step.final_obs[i], info["final_obs"][i])
                assert not np.array_equal(step.final_obs[i], step.obs[i])
                assert step.episode_returns[i] == returns[i] and step.episode_lengths[i] == lengths[i]
                assert step.rewards[i] == 1.0
                ended["terminated" if ref_term[i] else "truncated"] += 1
                returns[i], lengths[i] = 0, 0
            else:
                assert np.array_equal(step.final_obs[i], step.obs[i])
                assert np.isnan(step.episode_returns[i]) and step.episode_lengths[i] == 0
    assert ended["terminated"] >= 3 and ended["truncated"] >= 3, ended


# ---------------------------------------------------------------------------------------------
# Atari: NoFrameskip-v4 (Nature/A3C protocol) and ALE/*-v5
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("env_id, sticky", [("PongNoFrameskip-v4", 0.0), ("ALE/Pong-v5", 0.25)])
def test_atari_ids_give_stacked_84x84_uint8_with_one_frame_skip(env_id, sticky):
    env = envs.make_env(env_id, seed=0)
    assert envs.is_atari(env_id)
    obs, _ = env.reset(seed=0)
    assert env.observation_space == gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    assert np.asarray(obs).shape == (4, 84, 84) and np.asarray(obs).dtype == np.uint8
    ale = env.unwrapped
    # ALE steps one frame per call; AtariPreprocessing repeats each action 4 times (skipping twice would be 16)
    assert ale._frameskip == 1 and env.get_wrapper_attr("frame_skip") == 4
    assert ale.spec.kwargs["repeat_action_probability"] == sticky  # v5 keeps its sticky actions
    frames = ale.ale.getEpisodeFrameNumber()
    obs, *_ = env.step(0)
    assert ale.ale.getEpisodeFrameNumber() - frames == 4
    assert np.asarray(obs).shape == (4, 84, 84)
    env.close()


def test_atari_frameskip_in_env_kwargs_is_refused():
    with pytest.raises(RLKitError, match="skip frames twice") as err:
        envs.make_env("ALE/Pong-v5", env_kwargs={"frameskip": 4})
    assert "\n" not in str(err.value)
    raw = envs.make_env("ALE/Pong-v5", atari_wrappers=False)  # without the wrappers v5 keeps its own skip
    assert raw.unwrapped._frameskip == 4 and raw.observation_space.shape == (210, 160, 3)


def test_dqn_pong_preset_runs_on_ale_v5(tmp_path):
    from rlkit.agents.dqn import AGENT, DQNConfig, train

    from rlkit.config import apply_overrides, resolve_preset

    cfg = apply_overrides(DQNConfig(), resolve_preset(AGENT.presets(), "pong", "dqn"))
    cfg = apply_overrides(cfg, {"env_id": "ALE/Pong-v5", "total_steps": 300, "learning_starts": 200,
                                "buffer_size": 1000, "eval_episodes": 1, "progress": False,
                                "run_dir": str(tmp_path / "pong"), "env_kwargs": {"max_num_frames_per_episode": 400}})
    result = train(cfg)
    assert result["env_id"] == "ALE/Pong-v5" and result["env_steps"] == 300
    assert np.isfinite(result["eval"]["mean"])


# ---------------------------------------------------------------------------------------------
# Presets: current env versions, and the version each published number was measured on
# ---------------------------------------------------------------------------------------------

def all_presets() -> list[tuple[str, str, dict]]:
    out = []
    for path in resources.files("rlkit.agents").joinpath("presets").iterdir():
        if path.name.endswith(".yaml") and path.name != "reproduce.yaml":
            for name, preset in (yaml.safe_load(path.read_text()) or {}).items():
                out.append((path.name, name, preset))
    return out


MUJOCO = ("HalfCheetah", "InvertedPendulum", "InvertedDoublePendulum", "Hopper", "Walker2d", "Ant", "Humanoid",
          "Swimmer", "Reacher", "Pusher")


def test_mujoco_presets_use_v5_and_say_where_their_number_was_measured():
    mujoco = [(f, n, p) for f, n, p in all_presets() if p.get("env_id", "").split("-")[0] in MUJOCO]
    assert len(mujoco) >= 4  # ddpg and td3: inverted-pendulum, halfcheetah
    for file, name, preset in mujoco:
        assert preset["env_id"].endswith("-v5"), (file, name)
        # the version its published number came from (TD3 paper: v1; RL-Zoo: v3), which is not v5
        assert re.search(r"measured on \S+-v[0-4]\b", preset["_reference"]), (file, name)


def test_atari_presets_keep_the_nature_protocol_ids():
    atari = [(f, n, p) for f, n, p in all_presets() if "NoFrameskip" in p.get("env_id", "")]
    assert {(f, n) for f, n, _ in atari} >= {("dqn.yaml", "pong"), ("dqn.yaml", "breakout"), ("a2c.yaml", "pong"),
                                             ("a3c.yaml", "pong")}
    for _, _, preset in atari:
        assert preset["env_id"].endswith("NoFrameskip-v4") and "ALE/" in preset["_reference"]


@pytest.mark.parametrize("env_id", sorted({p["env_id"] for _, _, p in all_presets() if "env_id" in p}))
def test_every_preset_env_makes_without_a_warning(env_id, tmp_path, monkeypatch):
    """An out-of-date id (MuJoCo -v4 warns) or a deprecated wrapper call would fail here."""
    if env_id.startswith("seals:"):
        pytest.importorskip("seals")
    monkeypatch.chdir(tmp_path)  # MuJoCo writes MUJOCO_LOG.TXT into the working directory
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if env_id.startswith("seals:"):  # seals 0.2.1's CartPole builds its Box from float64 bounds (seals' code)
            warnings.filterwarnings("ignore", message=".*Box (low|high)'s precision lowered", category=UserWarning)
        env = envs.make_env(env_id, seed=0)
        env.reset(seed=0)
        env.step(env.action_space.sample())
        env.close()
