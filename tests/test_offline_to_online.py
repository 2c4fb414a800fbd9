"""Offline to online: TD3 fine-tunes an offline TD3+BC run (``init_from``): the same networks and observation
statistics at the start, the loaded policy acting from the first step (no uniform warm-up), and one-line refusals
of a run it cannot continue."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from rlkit.agents import bc, ddpg, td3_bc

from rlkit import demos
from rlkit.checkpoint import load_checkpoint
from rlkit.errors import RLKitError
from rlkit.policy import RandomPolicy, load_policy

SHORT = {"max_episode_steps": 25}
QUIET = dict(progress=False, tensorboard=False, eval_episodes=1)


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory) -> Path:
    """TD3+BC, 40 gradient steps on six random Pendulum episodes (the plumbing, not learning)."""
    root = tmp_path_factory.mktemp("o2o")
    space = gym.make("Pendulum-v1").action_space
    demos.record(RandomPolicy(space, seed=0), "Pendulum-v1", episodes=6, out=root / "data", seed=0,
                 keep_rewards=True, env_kwargs=SHORT, source="random")
    td3_bc.train(td3_bc.TD3BCConfig(demos=str(root / "data"), run_dir=str(root / "td3_bc"), total_steps=40,
                                    hidden=[16, 16], batch_size=32, **QUIET))
    return root


def fine_tune_config(offline_run: Path, **overrides) -> ddpg.DDPGConfig:
    settings = {"init_from": str(offline_run / "td3_bc"), "hidden": [16, 16], "normalize_obs": True,
                "learning_starts": 20, "batch_size": 16, "total_steps": 60, "env_kwargs": SHORT, **QUIET}
    return ddpg.td3_config(env_id="Pendulum-v1", **{**settings, **overrides})


def test_fine_tuning_starts_from_the_offline_networks_and_statistics_and_acts_with_them(offline_run):
    env = gym.make("Pendulum-v1")
    learner = ddpg.DDPG(fine_tune_config(offline_run), env.observation_space, env.action_space,
                        np.random.default_rng(0))
    offline = load_checkpoint(offline_run / "td3_bc")
    for name in ("actor", "actor_target", "critic", "critic_target"):
        loaded = getattr(learner.nets, name).state_dict()
        assert all(torch.equal(loaded[key], value) for key, value in offline[name].items()), name
    assert np.array_equal(learner.normalizer.mean, offline["obs_normalizer"]["mean"])
    assert learner.normalizer.count == offline["obs_normalizer"]["count"]  # online updates go on from the dataset's
    obs = np.stack([env.observation_space.sample() for _ in range(8)])
    assert np.allclose(learner.policy.act(obs), load_policy(offline_run / "td3_bc").act(obs, deterministic=True),
                       atol=1e-6)
    assert learner.warmup_uniform is False and ddpg.DDPG.warmup_uniform is True  # only this run skips the warm-up


def test_a_fine_tuned_run_trains_checkpoints_and_resumes(offline_run, tmp_path):
    cfg = fine_tune_config(offline_run, run_dir=str(tmp_path / "run"), total_steps=40, checkpoint_every=20)
    first = ddpg.train_td3(cfg)
    assert first["env_steps"] == 40 and np.isfinite(first["eval"]["mean"])
    again = ddpg.train_td3(fine_tune_config(offline_run, run_dir=str(tmp_path / "run"), total_steps=60,
                                            checkpoint_every=20), resume=True)
    assert again["env_steps"] == 60


@pytest.mark.parametrize("change,words", [
    ({"normalize_obs": False}, "normalises observations; set normalize_obs=true as that run did"),
    ({"hidden": [32, 32]}, "has other networks (hidden, twin_critics differ); set them as that run did: "
                           "hidden=[16, 16]"),
])
def test_a_run_it_cannot_continue_is_refused_in_one_line(offline_run, change, words):
    env = gym.make("Pendulum-v1")
    with pytest.raises(RLKitError) as e:
        ddpg.DDPG(fine_tune_config(offline_run, **change), env.observation_space, env.action_space,
                  np.random.default_rng(0))
    assert words in str(e.value) and "\n" not in str(e.value)


def test_a_behaviour_cloning_run_is_not_a_td3_start(offline_run, tmp_path):
    bc.train(bc.BCConfig(demos=str(offline_run / "data"), run_dir=str(tmp_path / "bc"), epochs=1, hidden=[16, 16],
                         **QUIET))
    env = gym.make("Pendulum-v1")
    with pytest.raises(RLKitError, match="is a bc checkpoint; fine-tuning starts from a ddpg or td3 or td3_bc run"):
        ddpg.DDPG(fine_tune_config(offline_run, init_from=str(tmp_path / "bc")), env.observation_space,
                  env.action_space, np.random.default_rng(0))
