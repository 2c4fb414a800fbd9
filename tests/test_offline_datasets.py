"""`rlkit offline-data`: the D4RL-style Pendulum datasets (random, medium, medium-replay, expert, medium-expert), each
with rewards and reference scores, from a small build of the recipe (docs/offline.md)."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from rlkit.agents import iql

from rlkit import demos
from rlkit.apps.offline_data import KINDS, build_datasets, replay_episodes
from rlkit.buffers import ReplayBuffer
from rlkit.checkpoint import list_checkpoints, load_buffer
from rlkit.engine.offline import normalized_score
from rlkit.errors import RLKitError
from tests.conftest import run_cli

# A small TD3 that learns Pendulum's swing-up in 6000 steps (the preset's 20k steps with a 10k-step random warm-up
# take 90 s here); the build trains it twice (expert, then again to medium), about 20 s in all.
SMALL_TD3 = {"total_steps": 6000, "learning_starts": 1000, "train_every": 1, "gradient_steps": 1, "hidden": [64, 64]}
EPISODES, LENGTH = 3, 200  # Pendulum's episodes are 200 steps


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("offline_data") / "pendulum"
    summary = build_datasets("Pendulum-v1", out, seed=0, episodes=EPISODES, overrides=SMALL_TD3, eval_every=500,
                             reference_episodes=10)
    return out, summary


# ------------------------------------------------------------------------------------------------- the small build
@pytest.mark.slow
def test_every_kind_has_rewards_reference_scores_and_its_recipe(built):
    out, summary = built
    reference = summary["reference_scores"]
    assert reference["ref_min_score"] < reference["ref_max_score"] and reference["episodes"] == 10
    assert json.loads((out / "datasets.json").read_text()) == summary
    for kind in KINDS:
        dataset = demos.load(out / kind)
        assert dataset.has_rewards and dataset.env_id == "Pendulum-v1", kind
        assert dataset.meta["reference_scores"] == reference
        assert dataset.meta["offline_data"]["kind"] == kind and dataset.meta["offline_data"]["agent"] == "td3"
        info = summary["datasets"][kind]
        returns = [float(np.sum(ep.rewards, dtype=np.float64)) for ep in dataset]
        assert info["episodes"] == len(dataset) and info["transitions"] == dataset.num_steps
        assert info["mean_return"] == pytest.approx(np.mean(returns))
        assert info["normalized_return"] == pytest.approx(
            normalized_score(info["mean_return"], reference["ref_min_score"], reference["ref_max_score"]))
    for kind in ("random", "medium", "expert"):
        assert summary["datasets"][kind]["transitions"] == EPISODES * LENGTH
    # the policies rank as their names say (normalised: random about 0, the expert about 100)
    norm = {kind: info["normalized_return"] for kind, info in summary["datasets"].items()}
    assert abs(norm["random"]) < 30 and norm["random"] < norm["medium"] < norm["expert"]


@pytest.mark.slow
def test_medium_stops_at_a_third_and_medium_replay_is_that_runs_buffer(built):
    out, summary = built
    reference, medium = summary["reference_scores"], summary["medium"]
    low, high = reference["ref_min_score"], reference["ref_max_score"]
    assert medium["threshold"] == pytest.approx(low + (high - low) / 3)
    assert medium["eval_mean"] >= medium["threshold"] and medium["step"] % 500 == 0
    final = json.loads((out / "runs" / "medium" / "final.json").read_text())
    assert final["stopped"]["reason"] == "target_return" and final["env_steps"] == medium["step"]
    replay = demos.load(out / "medium-replay")
    # every complete 200-step episode of the training up to the stop, in order, from the saved replay buffer
    assert replay.num_steps == medium["step"] // LENGTH * LENGTH
    buffer = load_buffer(list_checkpoints(out / "runs" / "medium")[-1])
    rows = replay.num_steps
    np.testing.assert_array_equal(np.concatenate([ep.actions for ep in replay]), buffer["actions"][:rows, 0])
    np.testing.assert_array_equal(np.concatenate([ep.rewards for ep in replay]), buffer["rewards"][:rows, 0])
    for ep in replay:
        assert ep.seed is None and ep.truncated and not ep.terminated  # the training env reset itself
    # the episodes chain: each next observation is the following step's observation
    first = replay[0]
    np.testing.assert_array_equal(first.obs[1:LENGTH], buffer["obs"][1:LENGTH, 0])


@pytest.mark.slow
def test_medium_expert_is_the_medium_then_the_expert_episodes(built):
    out, _ = built
    medium, expert, both = (demos.load(out / kind) for kind in ("medium", "expert", "medium-expert"))
    assert len(both) == len(medium) + len(expert)
    for got, want in zip(both, [*medium, *expert]):
        np.testing.assert_array_equal(got.obs, want.obs)
        np.testing.assert_array_equal(got.rewards, want.rewards)
        assert got.seed == want.seed and got.source == want.source
    assert both[0].source != both[-1].source and "runs/medium" in both[0].source


@pytest.mark.slow
def test_recorded_kinds_replay_from_their_seeds(built):
    out, _ = built
    for kind in ("random", "expert"):
        report = demos.replay(out / kind, verify=True)
        assert report["all_reproduced"], (kind, report["episodes"])


@pytest.mark.slow
def test_a_learner_reads_the_reference_scores_of_a_built_dataset(built, tmp_path):
    out, summary = built
    reference = summary["reference_scores"]
    result = iql.train(iql.IQLConfig(demos=str(out / "medium-replay"), total_steps=5, batch_size=32, hidden=[16],
                                     eval_episodes=1, run_dir=str(tmp_path / "run"), progress=False,
                                     tensorboard=False))
    assert result["reference_scores"] == [reference["ref_min_score"], reference["ref_max_score"]]
    assert result["normalized_return"] == pytest.approx(
        normalized_score(result["eval"]["mean"], reference["ref_min_score"], reference["ref_max_score"]))


@pytest.mark.slow
def test_building_into_a_used_folder_is_refused_in_one_line(built):
    out, _ = built
    with pytest.raises(RLKitError) as e:
        build_datasets("Pendulum-v1", out, overrides=SMALL_TD3)
    assert "already exists" in str(e.value) and "\n" not in str(e.value)
    proc = run_cli("offline-data", "--env", "Pendulum-v1", "--out", str(out), "--quiet", timeout=120)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("rlkit: error")]
    assert proc.returncode == 2 and len(errors) == 1 and "already exists" in errors[0], proc.stderr


@pytest.mark.slow
def test_an_already_trained_run_is_the_expert_and_its_config_trains_medium_again(built, tmp_path):
    """``--expert RUN_DIR``: no expert training; the same expert gives the same reference scores, and the medium
    run, trained again with the expert run's config and seed, stops at the same step as the first build's."""
    out, summary = built
    again = build_datasets("Pendulum-v1", tmp_path / "again", seed=0, episodes=EPISODES, eval_every=500,
                           reference_episodes=10, kinds=["medium", "expert"], expert_run=out / "runs" / "expert")
    assert not (tmp_path / "again" / "runs" / "expert").exists()
    assert again["reference_scores"] == summary["reference_scores"]
    assert again["medium"] == summary["medium"]
    recipe = demos.load(tmp_path / "again" / "expert").meta["offline_data"]
    assert recipe["expert_run"]["path"] == str(out / "runs" / "expert") and recipe["agent"] == "td3"
    assert recipe["expert_run"]["step"] == SMALL_TD3["total_steps"]
    assert recipe["agent_config"]["hidden"] == SMALL_TD3["hidden"]


@pytest.mark.slow
def test_an_expert_of_another_env_or_with_set_is_refused_in_one_line(built, tmp_path):
    out, _ = built
    for kwargs, words in (({"overrides": {"total_steps": 10}}, "drop it"), ({}, "was trained on Pendulum-v1")):
        env_id = "Pendulum-v1" if kwargs else "MountainCarContinuous-v0"
        with pytest.raises(RLKitError) as e:
            build_datasets(env_id, tmp_path / "bad", expert_run=out / "runs" / "expert", **kwargs)
        assert words in str(e.value) and "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------ no training needed
def test_unknown_kinds_are_refused_before_anything_trains(tmp_path):
    with pytest.raises(RLKitError) as e:
        build_datasets("Pendulum-v1", tmp_path / "out", kinds=["medium", "expert-replay"])
    assert "unknown dataset kind(s) expert-replay" in str(e.value) and not (tmp_path / "out").exists()


def test_replay_episodes_splits_a_buffer_at_episode_ends():
    """Two finished episodes (one truncated, one terminated) and one still running, in a 2-env buffer."""
    obs_space = gym.spaces.Box(-10, 10, (1,), np.float32)
    act_space = gym.spaces.Box(-1, 1, (1,), np.float32)
    buffer = ReplayBuffer(10, obs_space, act_space, num_envs=1)
    steps = [(0.0, False, False), (1.0, False, True), (10.0, False, False), (11.0, True, False), (20.0, False, False)]
    for i, (obs, terminated, truncated) in enumerate(steps):
        buffer.add(np.array([[obs]]), np.array([[i / 10]]), np.array([-float(i)]), np.array([[obs + 0.5]]),
                   np.array([terminated]), np.array([truncated]))
    episodes = replay_episodes(buffer.state_dict())
    assert len(episodes) == 2  # the running one is left out
    np.testing.assert_array_equal(episodes[0]["obs"][:, 0], [0.0, 1.0, 1.5])  # the true last observation
    np.testing.assert_array_equal(episodes[1]["obs"][:, 0], [10.0, 11.0, 11.5])
    np.testing.assert_array_equal(episodes[1]["rewards"], [-2.0, -3.0])
    assert (episodes[0]["terminated"], episodes[0]["truncated"]) == (False, True)
    assert (episodes[1]["terminated"], episodes[1]["truncated"]) == (True, False)
    full = buffer.state_dict() | {"full": True}
    with pytest.raises(RLKitError, match="raise buffer_size"):
        replay_episodes(full)


def test_the_command_and_the_agents_have_help():
    proc = run_cli("offline-data", "--help", timeout=120)
    assert proc.returncode == 0, proc.stderr
    for flag in ("--env", "--out", "--episodes", "--eval-every", "--reference-episodes", "--kinds", "--noise"):
        assert flag in proc.stdout
    for agent in ("td3_bc", "iql", "cql"):
        proc = run_cli("train", agent, "--help", timeout=120)
        assert proc.returncode == 0 and "  demos" in proc.stdout and "  pendulum" in proc.stdout, proc.stderr
