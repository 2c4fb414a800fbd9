"""The offline loop (rlkit.engine.offline): bad input in one line, the data it samples, evaluation with normalised
scores, checkpoints and resume, stops, and a smoke run of each offline learner."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from rlkit.agents import cql, iql, td3_bc
from rlkit.envs import make_env

from rlkit import demos
from rlkit.checkpoint import load_checkpoint
from rlkit.engine.offline import OfflineData, actor_policy, dataset_normalizer, normalized_score
from rlkit.errors import AlreadyFinished, RLKitError
from rlkit.evaluation import evaluate
from rlkit.policy import RandomPolicy, load_policy
from tests.conftest import run_cli

LEARNERS = {"td3_bc": (td3_bc.train, td3_bc.TD3BCConfig), "iql": (iql.train, iql.IQLConfig),
            "cql": (cql.train, cql.CQLConfig)}
QUIET = dict(progress=False, tensorboard=False, eval_episodes=1, hidden=[16], batch_size=32)
SHORT = {"max_episode_steps": 25}  # Pendulum episodes of 25 steps keep evaluations cheap


@pytest.fixture(scope="module")
def pendulum(tmp_path_factory) -> Path:
    """Six random Pendulum episodes of 25 steps (150 transitions), rewards kept."""
    out = tmp_path_factory.mktemp("offline") / "pendulum"
    space = gym.make("Pendulum-v1").action_space
    demos.record(RandomPolicy(space, seed=0), "Pendulum-v1", episodes=6, out=out, seed=0, keep_rewards=True,
                 env_kwargs=SHORT, source="random")
    return out


def config(agent: str, dataset: Path, run_dir: Path, **overrides):
    _, cls = LEARNERS[agent]
    return cls(demos=str(dataset), run_dir=str(run_dir), **{**QUIET, **overrides})


def with_reference(dataset: Path, dest: Path, low: float, high: float) -> Path:
    """A copy of ``dataset`` whose manifest holds reference scores (as `rlkit offline-data` writes them)."""
    shutil.copytree(dataset, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["reference_scores"] = {"ref_min_score": low, "ref_max_score": high}
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


# ---------------------------------------------------------------------------------------------------------- bad input
def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and len(message) < 400, message
    return message


def test_no_dataset_and_a_wrong_path_are_one_line(tmp_path):
    with pytest.raises(RLKitError) as e:
        td3_bc.train(td3_bc.TD3BCConfig(run_dir=str(tmp_path / "run"), **QUIET))
    assert "pass --demos DATASET" in one_line(e) and "rlkit offline-data" in str(e.value)
    with pytest.raises(RLKitError) as e:
        iql.train(config("iql", tmp_path / "nowhere", tmp_path / "run"))
    assert f"dataset {tmp_path / 'nowhere'} does not exist" in one_line(e)
    assert not (tmp_path / "run").exists()


def test_a_dataset_without_rewards_is_refused(tmp_path):
    data = tmp_path / "no-rewards"
    demos.record(RandomPolicy(gym.make("Pendulum-v1").action_space, seed=0), "Pendulum-v1", episodes=2, out=data,
                 env_kwargs=SHORT)
    with pytest.raises(RLKitError) as e:
        cql.train(config("cql", data, tmp_path / "run"))
    assert "stores no rewards" in one_line(e) and "--keep-rewards" in str(e.value)
    assert not (tmp_path / "run").exists()


def test_a_dataset_smaller_than_a_batch_is_refused(pendulum, tmp_path):
    with pytest.raises(RLKitError) as e:
        td3_bc.train(config("td3_bc", pendulum, tmp_path / "run", batch_size=256))
    assert "holds 150 transitions, fewer than batch_size=256" in one_line(e) and "batch_size=150" in str(e.value)
    assert not (tmp_path / "run").exists()


def test_an_action_space_that_does_not_match_the_env_is_refused(tmp_path):
    """Actions recorded in [-1, 1] (a rescaled Pendulum) cannot be replayed in Pendulum's [-2, 2]."""
    data = tmp_path / "rescaled"
    env = gym.make("Pendulum-v1")
    unit = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    with demos.DatasetWriter(data, "Pendulum-v1", env.observation_space, unit, source="test") as writer:
        writer.add_episode(np.zeros((41, 3), np.float32), np.zeros((40, 1), np.float32), False, True, 0,
                           rewards=np.zeros(40, np.float32))
    with pytest.raises(RLKitError) as e:
        iql.train(config("iql", data, tmp_path / "run"))
    message = one_line(e)
    assert "action space Box(low=[-1.0], high=[1.0])" in message and "Box(low=[-2.0], high=[2.0])" in message
    assert "record the dataset in the env as evaluated" in message
    assert not (tmp_path / "run").exists()
    # an env named with --env whose actions fit ([-1, 1]) but whose observations do not
    with pytest.raises(RLKitError) as e:
        td3_bc.train(config("td3_bc", data, tmp_path / "run", env_id="MountainCarContinuous-v0"))
    message = one_line(e)
    assert "observation space" in message and "MountainCarContinuous-v0" in message and "omit --env" in message


def test_discrete_actions_are_refused(tmp_path):
    data = tmp_path / "cartpole"
    demos.record(RandomPolicy(gym.make("CartPole-v1").action_space, seed=0), "CartPole-v1", episodes=3, out=data,
                 keep_rewards=True)
    with pytest.raises(RLKitError) as e:
        cql.train(config("cql", data, tmp_path / "run", batch_size=8))
    assert "continuous (Box) actions" in one_line(e) and "Discrete(2)" in str(e.value)


def test_bad_reference_options_are_refused(pendulum, tmp_path):
    with pytest.raises(RLKitError) as e:
        td3_bc.train(config("td3_bc", pendulum, tmp_path / "run", ref_min_score=-1000.0))
    assert "set both ref_min_score and ref_max_score" in one_line(e)


def test_the_cli_answers_bad_input_in_one_line(pendulum, tmp_path):
    proc = run_cli("train", "td3_bc", "--demos", str(pendulum), "--run-dir", str(tmp_path / "run"), "--no-progress",
                   "--set", "batch_size=1000", timeout=120)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("rlkit: error")]
    assert len(errors) == 1 and "fewer than batch_size=1000" in errors[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------------------- data
def test_offline_data_samples_the_datasets_transitions(tmp_path):
    """Two hand-made episodes (one terminated): the tensors line up, the terminal flag is only on the terminated
    episode's last step, next observations cross no episode boundary, and rewards are scaled as asked."""
    data = tmp_path / "hand"
    env = gym.make("Pendulum-v1")
    with demos.DatasetWriter(data, "Pendulum-v1", env.observation_space, env.action_space, source="test") as writer:
        writer.add_episode(np.arange(9, dtype=np.float32).reshape(3, 3), [[0.5], [-0.5]], True, False, 0,
                           rewards=[-1.0, -2.0])
        writer.add_episode(np.full((2, 3), 7, np.float32), [[1.0]], False, True, 1, rewards=[-10.0])
    dataset = demos.load(data)
    cfg = td3_bc.TD3BCConfig(demos=str(data), batch_size=2, normalize_obs=False, normalize_reward=True)
    offline = OfflineData(dataset, cfg, np.random.default_rng(0))
    assert offline.size == 3 and offline.fingerprint() == {"path": str(data), "transitions": 3, "reward_sum": -13.0}
    torch.testing.assert_close(offline.obs, torch.tensor([[0.0, 1, 2], [3, 4, 5], [7, 7, 7]]))
    torch.testing.assert_close(offline.next_obs, torch.tensor([[3.0, 4, 5], [6, 7, 8], [7, 7, 7]]))
    torch.testing.assert_close(offline.terminated, torch.tensor([0.0, 1.0, 0.0]))
    # returns -3 and -10, longest episode 2 steps: rewards times 2 / 7
    torch.testing.assert_close(offline.rewards, torch.tensor([-1.0, -2.0, -10.0]) * 2 / 7)
    batch = offline.sample(2)
    np.testing.assert_array_equal(batch.indices, np.random.default_rng(0).integers(3, size=2))
    torch.testing.assert_close(batch.obs, offline.obs[torch.from_numpy(batch.indices)])
    torch.testing.assert_close(batch.discounts, torch.full((2,), 0.99))
    counts = np.bincount(np.concatenate([offline.sample(2).indices for _ in range(3000)]), minlength=3)
    assert counts.min() > 1800  # uniform: 2000 each


def test_actor_policy_normalises_raw_observations_and_its_numpy_path_agrees():
    obs_space = gym.spaces.Box(-8, 8, (3,), np.float32)
    act_space = gym.spaces.Box(-2, 2, (1,), np.float32)
    normalizer = dataset_normalizer(np.random.default_rng(0).normal(3.0, 2.0, (100, 3)).astype(np.float32))
    obs = np.random.default_rng(1).normal(3.0, 2.0, (5, 3)).astype(np.float32)
    for actor in (td3_bc.DeterministicActor(obs_space, act_space, [16]),
                  cql.SquashedGaussianActor(obs_space, act_space, [16])):
        policy = actor_policy(actor, obs_space, act_space, normalizer)
        fast = policy.act(obs)
        assert policy.fast is not None
        with torch.no_grad():
            normed = torch.from_numpy(normalizer(obs))
            expected = actor(normed) if isinstance(actor, td3_bc.DeterministicActor) else actor.act(normed)
        np.testing.assert_allclose(fast, expected.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(policy.act(np.tile(obs, (20, 1)))[:5], fast, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------ runs of every learner
def param_snapshot(run_dir: Path) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in load_checkpoint(run_dir)["actor"].items()}


@pytest.mark.parametrize("agent", sorted(LEARNERS))
def test_each_learner_trains_evaluates_with_normalised_scores_and_reloads(agent, pendulum, tmp_path):
    train, _ = LEARNERS[agent]
    data = with_reference(pendulum, tmp_path / "data", low=-1500.0, high=-100.0)
    train(config(agent, data, tmp_path / "first", total_steps=1, eval_every=0, checkpoint_every=0))
    result = train(config(agent, data, tmp_path / "run", total_steps=30, eval_every=10, log_every=10,
                          checkpoint_every=0))
    assert result["env_steps"] == 0 and result["gradient_steps"] == 30 and result["transitions"] == 150
    assert result["env_id"] == "Pendulum-v1" and result["reference_scores"] == [-1500.0, -100.0]
    assert result["normalized_return"] == pytest.approx(normalized_score(result["eval"]["mean"], -1500.0, -100.0))
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    evaluated = [row for row in rows if row["eval/mean_return"]]
    assert [int(row["global_step"]) for row in evaluated] == [10, 20, 30]
    for row in evaluated:
        assert float(row["eval/normalized_return"]) == pytest.approx(
            normalized_score(float(row["eval/mean_return"]), -1500.0, -100.0))
    losses = [float(v) for row in rows for k, v in row.items() if k.startswith("losses/") and v]
    assert losses and all(np.isfinite(losses))
    before, after = param_snapshot(tmp_path / "first"), param_snapshot(tmp_path / "run")
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the actor learned something
    # the policy rebuilt from the checkpoint scores what the run's final evaluation scored (normaliser included)
    state = load_checkpoint(tmp_path / "run")
    assert state["obs_normalizer"] is not None and state["dataset"]["transitions"] == 150
    rebuilt = evaluate(load_policy(tmp_path / "run"), lambda render_mode=None: make_env("Pendulum-v1",
                                                                                       env_kwargs=SHORT),
                       episodes=1, seed=state["config"]["eval_seed"])
    assert rebuilt["returns"] == result["eval"]["returns"]


def test_without_reference_scores_only_raw_returns_are_logged(pendulum, tmp_path):
    result = iql.train(config("iql", pendulum, tmp_path / "run", total_steps=5, checkpoint_every=0))
    assert result["normalized_return"] is None and result["reference_scores"] is None
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    assert "eval/mean_return" in header and "normalized" not in header
    # given on the command line, they count
    result = iql.train(config("iql", pendulum, tmp_path / "run2", total_steps=5, checkpoint_every=0,
                              ref_min_score=-2000.0, ref_max_score=0.0))
    assert result["normalized_return"] == pytest.approx(normalized_score(result["eval"]["mean"], -2000.0, 0.0))


@pytest.mark.parametrize("agent", ["td3_bc", "cql"])
def test_a_resumed_run_equals_the_uninterrupted_one(agent, pendulum, tmp_path):
    """TD3+BC draws smoothing noise and CQL samples actions from torch's RNG, and both sample minibatches from the
    run's numpy Generator: a run resumed at step 20 must end bit for bit where a 40-step run ends."""
    train, _ = LEARNERS[agent]
    straight = train(config(agent, pendulum, tmp_path / "straight", total_steps=40, checkpoint_every=0))
    train(config(agent, pendulum, tmp_path / "halves", total_steps=20, checkpoint_every=0))
    resumed = train(config(agent, pendulum, tmp_path / "halves", total_steps=40, checkpoint_every=0), resume=True)
    assert resumed["gradient_steps"] == 40 and resumed["eval"]["returns"] == straight["eval"]["returns"]
    a, b = load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "halves")
    for key in a["actor"]:
        torch.testing.assert_close(a["actor"][key], b["actor"][key], rtol=0, atol=0)
    for key in a["critic"]:
        torch.testing.assert_close(a["critic"][key], b["critic"][key], rtol=0, atol=0)


def test_resuming_a_finished_run_or_on_another_dataset_is_refused(pendulum, tmp_path):
    done = td3_bc.train(config("td3_bc", pendulum, tmp_path / "run", total_steps=5, checkpoint_every=0))
    with pytest.raises(AlreadyFinished) as e:
        td3_bc.train(config("td3_bc", pendulum, tmp_path / "run", total_steps=5), resume=True)
    assert e.value.result == done and "already finished" in str(e.value)
    other = tmp_path / "other"
    demos.record(RandomPolicy(gym.make("Pendulum-v1").action_space, seed=5), "Pendulum-v1", episodes=7, out=other,
                 seed=50, keep_rewards=True, env_kwargs=SHORT)
    with pytest.raises(RLKitError) as e:
        td3_bc.train(config("td3_bc", other, tmp_path / "run", total_steps=10), resume=True)
    assert "is not the one this run trained on" in one_line(e) and "150 transitions, now 175" in str(e.value)


def test_target_return_and_callbacks_stop_the_run(pendulum, tmp_path):
    result = iql.train(config("iql", pendulum, tmp_path / "target", total_steps=100, eval_every=10,
                              target_return=-1e9, checkpoint_every=0))
    assert result["stopped"]["reason"] == "target_return" and result["gradient_steps"] == 10
    assert (tmp_path / "target" / "checkpoints" / "best").is_dir()
    seen = []

    def stop_at_second_row(event):
        seen.append((event.kind, event.step))
        return event.kind == "log" and event.step >= 20

    result = td3_bc.train(config("td3_bc", pendulum, tmp_path / "callback", total_steps=100, log_every=10,
                                 checkpoint_every=0), callbacks=[stop_at_second_row])
    assert result["stopped"]["reason"].startswith("callback") and result["gradient_steps"] == 20
    assert ("log", 10) in seen and ("eval", 20) in seen  # the final evaluation


def test_same_seed_twice_gives_the_same_run(pendulum, tmp_path):
    results = [cql.train(config("cql", pendulum, tmp_path / f"run{i}", total_steps=15, checkpoint_every=0, seed=3))
               for i in range(2)]
    assert results[0]["eval"]["returns"] == results[1]["eval"]["returns"]
    a, b = (load_checkpoint(tmp_path / f"run{i}")["actor"] for i in range(2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = cql.train(config("cql", pendulum, tmp_path / "run-seed4", total_steps=15, checkpoint_every=0, seed=4))
    c = load_checkpoint(tmp_path / "run-seed4")["actor"]
    assert other["seed"] == 4 and any(not torch.equal(a[k], c[k]) for k in a)


def test_a_checkpoint_on_interrupt_resumes(pendulum, tmp_path):
    def interrupt(event):
        if event.kind == "log" and event.step == 15:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        td3_bc.train(config("td3_bc", pendulum, tmp_path / "run", total_steps=30, log_every=15, checkpoint_every=0),
                     callbacks=[interrupt])
    assert load_checkpoint(tmp_path / "run")["global_step"] == 15
    result = td3_bc.train(config("td3_bc", pendulum, tmp_path / "run", total_steps=30, checkpoint_every=0),
                          resume=True)
    assert result["gradient_steps"] == 30
