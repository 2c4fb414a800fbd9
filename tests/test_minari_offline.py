"""Minari for offline RL: an rlkit dataset with rewards and reference scores survives export and import bit for bit,
a Minari dataset is named by directory or local id, and the offline learners train from one."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np
import pytest
from minari.data_collector import EpisodeBuffer
from rlkit.agents import td3_bc

from rlkit import demos
from rlkit.apps.offline_data import add_metadata
from rlkit.errors import RLKitError
from rlkit.policy import RandomPolicy

SHORT = {"max_episode_steps": 25}  # 25-step Pendulum episodes keep the recording and evaluations cheap
REFERENCE = {"ref_min_score": -1227.1327883070544, "ref_max_score": -147.53214138190012, "ref_min_std": 295.9,
             "episodes": 100, "ref_min_policy": "uniform random"}  # float64 values JSON must keep to the last bit


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and len(text) < 400, text
    return text


@pytest.fixture(scope="module")
def pendulum(tmp_path_factory) -> Path:
    """Two sessions of Pendulum episodes with rewards, from two sources (as medium-expert has), with reference
    scores and a recipe in the manifest (as `rlkit offline-data` writes them); 7 episodes, 175 transitions."""
    out = tmp_path_factory.mktemp("mo") / "pendulum"
    space = gym.make("Pendulum-v1").action_space
    demos.record(RandomPolicy(space, seed=0), "Pendulum-v1", episodes=4, out=out, seed=0, keep_rewards=True,
                 env_kwargs=SHORT, source="random")
    demos.record(RandomPolicy(space, seed=9), "Pendulum-v1", episodes=3, out=out, seed=100, keep_rewards=True,
                 env_kwargs=SHORT, source="second policy", append=True)
    add_metadata(out, REFERENCE, {"kind": "medium-expert", "seed": 0, "medium": {"step": 13200}})
    return out


def assert_lossless(a: demos.Dataset, b: demos.Dataset) -> None:
    assert len(a) == len(b) and a.num_steps == b.num_steps
    for x, y in zip(a, b):
        for field in ("obs", "actions", "rewards"):
            u, v = getattr(x, field), getattr(y, field)
            assert u.dtype == v.dtype and u.shape == v.shape and np.array_equal(u, v), field
        assert (x.terminated, x.truncated, x.seed, x.options, x.source) == \
            (y.terminated, y.truncated, y.seed, y.options, y.source)
        assert x.episode_return == y.episode_return  # float64 as recorded, not Minari's float32 rewards summed
    for key in ("env_id", "env_kwargs", "reference_scores", "offline_data"):
        assert a.meta[key] == b.meta[key], key
    assert a.observation_space == b.observation_space and a.action_space == b.action_space


def test_round_trip_is_bit_equal_with_reference_scores_sources_and_returns(pendulum, tmp_path):
    ds = demos.load(pendulum)
    assert {ep.source for ep in ds} == {"random", "second policy"}
    assert any(ep.episode_return != float(ep.rewards.sum()) for ep in ds)  # returns Minari alone would not restore
    path = demos.to_minari(ds, tmp_path / "root" / "pendulum-mixed-v0")

    # what a Minari user gets: Minari's own reference scores, so its normalised score works
    mds = minari.MinariDataset(path / "data")
    assert mds.storage.metadata["ref_min_score"] == REFERENCE["ref_min_score"]
    assert mds.storage.metadata["ref_max_score"] == REFERENCE["ref_max_score"]
    assert mds.storage.metadata["num_episodes_average_score"] == 100
    episode = mds[0]
    expected = (ds[0].rewards.sum() - REFERENCE["ref_min_score"]) / (REFERENCE["ref_max_score"] -
                                                                     REFERENCE["ref_min_score"])
    assert np.isclose(minari.get_normalized_score(mds, np.array([episode.rewards.sum()]))[0], expected)

    back = demos.from_minari(path, out=tmp_path / "back")  # on disk: the manifest and the writer sessions
    assert_lossless(ds, back)
    assert back.path == tmp_path / "back"
    assert_lossless(ds, demos.from_minari(path))  # in memory


def test_import_by_id_from_the_local_minari_root(pendulum, tmp_path, monkeypatch, cli):
    root = tmp_path / "minari-root"
    demos.to_minari(demos.load(pendulum), root / "pendulum-mixed-v0")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    monkeypatch.chdir(tmp_path)  # the id must not resolve as a relative path
    assert demos.resolve_minari("pendulum-mixed-v0") == root / "pendulum-mixed-v0"
    assert_lossless(demos.load(pendulum), demos.load_minari("pendulum-mixed-v0"))
    r = cli("demos", "convert", "pendulum-mixed-v0", "--from", "minari", "--out", str(tmp_path / "imported"),
            "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["episodes"] == 7
    assert_lossless(demos.load(pendulum), demos.load(tmp_path / "imported"))
    with pytest.raises(RLKitError) as e:
        demos.load_minari("pendulum-missing-v0")
    assert f"no Minari dataset pendulum-missing-v0 in the local Minari root {root}" in one_line(e)
    assert demos.resolve_minari("../minari-root/pendulum-mixed-v0") is None  # ids cannot climb out of the root


def test_looking_up_an_id_never_creates_a_minari_root_in_home(tmp_path, monkeypatch):
    monkeypatch.delenv("MINARI_DATASETS_PATH", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    monkeypatch.chdir(tmp_path)
    assert demos.resolve_minari("pendulum-medium-v0") is None
    assert not (tmp_path / "home" / ".minari").exists()  # minari's own lookup would have made it


def test_a_dataset_made_elsewhere_gets_its_reference_scores_from_minari(tmp_path, monkeypatch):
    env = gym.make("Pendulum-v1", max_episode_steps=5)
    buffers = []
    for i in range(2):
        obs, _ = env.reset(seed=i)
        observations, actions, rewards = [obs], [], []
        for _ in range(5):
            action = np.full(1, 0.5, dtype=np.float32)
            obs, reward, *_ = env.step(action)
            observations.append(obs)
            actions.append(action)
            rewards.append(reward)
        buffers.append(EpisodeBuffer(id=i, seed=i, observations=np.array(observations), actions=np.array(actions),
                                     rewards=np.array(rewards), terminations=np.zeros(5, bool),
                                     truncations=np.arange(5) == 4))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "root"))
    minari.create_dataset_from_buffers("pendulum-foreign-v0", buffers, env=env, eval_env=env, algorithm_name="x",
                                       author="a", author_email="a@b.c", code_permalink="c", description="d",
                                       data_format="arrow", ref_min_score=-1000.0, ref_max_score=-100.0,
                                       num_episodes_average_score=7)
    back = demos.load_minari("pendulum-foreign-v0")
    assert back.meta["reference_scores"]["ref_min_score"] == -1000.0
    assert back.meta["reference_scores"]["ref_max_score"] == -100.0
    assert back.meta["reference_scores"]["episodes"] == 7
    assert [ep.episode_return for ep in back] == [float(np.float32(b.rewards).sum()) for b in buffers]


def test_tampered_rlkit_metadata_cannot_rename_the_env_or_misassign_returns(pendulum, tmp_path):
    path = demos.to_minari(demos.load(pendulum), tmp_path / "root" / "pendulum-edit-v0")
    mds = minari.MinariDataset(path / "data")
    ours = dict(mds.storage.metadata["rlkit"])
    ours["manifest"] = {**ours["manifest"], "env_id": "evil.module:Env-v0", "format_version": 99}
    ours["episode_returns"] = ours["episode_returns"][:-1]  # one short: ignored rather than shifted
    mds.storage.update_metadata({"rlkit": ours})
    back = demos.from_minari(path)
    assert back.env_id == "Pendulum-v1" and back.meta["format_version"] != 99
    assert [ep.episode_return for ep in back] == [float(ep.rewards.sum()) for ep in back]
    assert back.meta["reference_scores"] == REFERENCE


def test_td3_bc_trains_from_a_minari_id_with_its_reference_scores(pendulum, tmp_path, monkeypatch):
    root = tmp_path / "root"
    demos.to_minari(demos.load(pendulum), root / "pendulum-mixed-v0")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    monkeypatch.chdir(tmp_path)
    cfg = td3_bc.TD3BCConfig(demos="pendulum-mixed-v0", run_dir=str(tmp_path / "run"), total_steps=300,
                             eval_every=0, eval_episodes=2, hidden=[32], batch_size=32, progress=False,
                             tensorboard=False, seed=0)
    final = td3_bc.train(cfg)
    assert final["gradient_steps"] == 300 and final["env_id"] == "Pendulum-v1"
    assert final["reference_scores"] == [REFERENCE["ref_min_score"], REFERENCE["ref_max_score"]]
    low, high = REFERENCE["ref_min_score"], REFERENCE["ref_max_score"]
    assert final["normalized_return"] == pytest.approx(100 * (final["eval"]["mean"] - low) / (high - low))
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["env_kwargs"] == SHORT  # the env comes from the Minari dataset's rlkit metadata
    # the same run from the rlkit dataset samples the same minibatches: the converted arrays are the same
    cfg_rlkit = td3_bc.TD3BCConfig(**{**cfg.to_dict(), "demos": str(pendulum), "run_dir": str(tmp_path / "run2"),
                                      "env_id": None, "env_kwargs": {}})
    assert td3_bc.train(cfg_rlkit)["eval"]["mean"] == final["eval"]["mean"]


def test_an_unknown_minari_id_is_one_line_and_writes_no_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "root"))
    monkeypatch.chdir(tmp_path)
    cfg = td3_bc.TD3BCConfig(demos="pendulum-nothing-v0", run_dir=str(tmp_path / "run"), progress=False)
    with pytest.raises(RLKitError) as e:
        td3_bc.train(cfg)
    assert f"neither a directory nor a Minari dataset in the local Minari root {tmp_path / 'root'}" in one_line(e)
    assert not (tmp_path / "run").exists()
