"""Minari 0.5 conversion both ways: arrays, seeds, options, flags and rewards survive; imports replay-verify."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np
import pytest
from minari.data_collector import EpisodeBuffer
from rlkit.demos.writer import DatasetWriter

from rlkit import demos
from rlkit.errors import RLKitError


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text, text
    return text


def assert_same(a: demos.Episode, b: demos.Episode) -> None:
    assert a.obs.dtype == b.obs.dtype and np.array_equal(a.obs, b.obs)
    assert a.actions.dtype == b.actions.dtype and np.array_equal(a.actions, b.actions)
    assert (a.terminated, a.truncated, a.seed, a.options) == (b.terminated, b.truncated, b.seed, b.options)


@pytest.fixture(scope="module")
def cartpole(tmp_path_factory) -> Path:
    """4 random CartPole episodes capped at 20 steps (some terminate, some are truncated), no rewards."""
    out = tmp_path_factory.mktemp("mi") / "cp"
    policy = demos.resolve_policy("random", "CartPole-v1", seed=11, env_kwargs={"max_episode_steps": 20})
    demos.record(policy, "CartPole-v1", 4, out, seed=11, env_kwargs={"max_episode_steps": 20}, source="random")
    return out


def test_reward_free_export_recomputes_rewards_and_round_trips(cartpole, tmp_path):
    ds = demos.load(cartpole)
    assert not ds.has_rewards
    flags = {(ep.terminated, ep.truncated) for ep in ds}
    assert flags == {(True, False), (False, True)}, flags  # both kinds of ending are exercised
    path = demos.to_minari(ds, tmp_path / "m" / "cartpole-random-v0")
    assert path == (tmp_path / "m" / "cartpole-random-v0").resolve()

    # read back with Minari alone: what a Minari user gets
    mds = minari.MinariDataset(path / "data")
    assert mds.total_episodes == 4 and mds.total_steps == ds.num_steps
    assert mds.env_spec.id == "CartPole-v1" and mds.env_spec.max_episode_steps == 20
    assert mds.recover_environment().spec.max_episode_steps == 20
    assert mds.storage.metadata["rlkit"] == {"env_id": "CartPole-v1", "source": "random",
                                             "env_kwargs": {"max_episode_steps": 20}, "rewards": "recomputed",
                                             "episode_returns": [ep.episode_return for ep in ds],
                                             "episode_sources": None, "manifest": {}}
    seeds = [m.get("seed") for m in mds.storage.get_episode_metadata(range(4))]
    assert seeds == [11, 12, 13, 14] == [ep.seed for ep in ds]
    # the independent reference for the recomputed rewards: the recorder's own, same seeds, kept this time
    random_policy = demos.resolve_policy("random", "CartPole-v1", seed=11)
    kept = demos.load(demos.record(random_policy, "CartPole-v1", 4, tmp_path / "kept", seed=11, keep_rewards=True,
                                   source="random", env_kwargs={"max_episode_steps": 20})["out"])
    for ep, mep, ref in zip(ds, mds.iterate_episodes(), kept):
        assert np.array_equal(mep.observations, ep.obs) and np.array_equal(mep.actions, ep.actions)
        assert np.array_equal(mep.rewards, ref.rewards) and len(mep.rewards) == ep.length
        assert mep.terminations.tolist() == [False] * (ep.length - 1) + [ep.terminated]
        assert mep.truncations.tolist() == [False] * (ep.length - 1) + [ep.truncated]

    back = demos.from_minari(path, out=tmp_path / "back")
    assert back.env_id == "CartPole-v1" and back.meta["env_kwargs"] == {"max_episode_steps": 20}
    assert back.meta["source"] == "random" and len(back) == len(ds)
    for ep, b, ref in zip(ds, back, kept):
        assert_same(ep, b)
        assert np.array_equal(b.rewards, ref.rewards)
    report = demos.replay(back)
    assert report["all_reproduced"] and report["reproduced"] == 4
    with pytest.raises(RLKitError, match="already exists"):
        demos.to_minari(ds, path)


def test_stored_rewards_are_exported_as_recorded_not_recomputed(tmp_path):
    # rewards no env would give: proves the export writes the stored ones (and needs no env or replay)
    space = gym.spaces.Box(0, 255, (32, 32), np.uint8)  # an image space: Minari would JPEG it unless told not to
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (n + 1, 32, 32), dtype=np.uint8) for n in (3, 5)]
    with DatasetWriter(tmp_path / "img", "nosuchpkg.envs:Noise-v0", space, gym.spaces.Discrete(3), "hand") as w:
        w.add_episode(frames[0], [0, 2, 1], True, False, seed=5, rewards=[0.5, -2.0, 7.25])
        w.add_episode(frames[1], [1, 1, 0, 2, 2], False, True, seed=6, rewards=[1, 2, 3, 4, 5])
    ds = demos.load(tmp_path / "img")
    path = demos.to_minari(ds, tmp_path / "m" / "noise-hand-v1")
    mds = minari.MinariDataset(path / "data")
    assert mds.env_spec is None and mds.storage.metadata["rlkit"]["rewards"] == "recorded"
    assert [ep.rewards.tolist() for ep in mds.iterate_episodes()] == [[0.5, -2.0, 7.25], [1, 2, 3, 4, 5]]
    back = demos.from_minari(path)  # in memory
    assert back.meta["env_id"] == "nosuchpkg.envs:Noise-v0" and back.observation_space == space  # not imported
    for ep, b in zip(ds, back):
        assert_same(ep, b)  # bit-exact pixels: no lossy JPEG on the way
        assert np.array_equal(ep.rewards, b.rewards)


def test_reset_options_travel_and_replay(tmp_path):
    env = gym.make("CartPole-v1")
    options = {"low": -0.01, "high": 0.01}
    with DatasetWriter(tmp_path / "opt", "CartPole-v1", env.observation_space, env.action_space, "hand") as w:
        obs, _ = env.reset(seed=3, options=options)
        all_obs, actions, done = [obs], [], False
        while not done:
            obs, _, term, trunc, _ = env.step(len(actions) % 2)
            all_obs.append(obs)
            actions.append(len(actions) % 2)
            done = term or trunc
        w.add_episode(all_obs, actions, term, trunc, seed=3, options=options)
    path = demos.to_minari(demos.load(tmp_path / "opt"), tmp_path / "m" / "cp-opt-v0")
    assert next(iter(minari.MinariDataset(path / "data").storage.get_episode_metadata([0])))["options"] == options
    back = demos.from_minari(path, out=tmp_path / "back")
    assert back[0].options == options and demos.replay(back)["all_reproduced"]


def test_reward_free_export_refused_when_an_episode_does_not_replay(cartpole, tmp_path):
    ds = demos.load(cartpole)
    ds[2].obs[3, 0] += 1e-7  # a float32 step of a few ulps: replay --verify would pass it, the export must not
    assert demos.replay(ds)["all_reproduced"]
    with pytest.raises(RLKitError) as err:
        demos.to_minari(ds, tmp_path / "m" / "cp-bad-v0")
    msg = one_line(err)
    assert f"episode {ds[2].index} does not replay exactly at step 3" in msg and "--keep-rewards" in msg
    assert not (tmp_path / "m" / "cp-bad-v0").exists()  # nothing half-written

    imported = demos.from_trajectories(demos.to_trajectories(demos.load(cartpole)), "CartPole-v1")
    with pytest.raises(RLKitError, match="episode 0 does not replay exactly.*no reset seed.*--keep-rewards"):
        demos.to_minari(imported, tmp_path / "m" / "cp-noseed-v0")


def test_from_minari_reads_a_dataset_minari_wrote_for_someone_else(tmp_path, monkeypatch):
    """No rlkit metadata: the env comes from Minari's spec, seeds from its episode metadata."""
    env = gym.make("CartPole-v1", max_episode_steps=25)
    buffers = []
    for seed in (40, 41):
        obs, _ = env.reset(seed=seed)
        ep = {"observations": [obs], "actions": [], "rewards": [], "terminations": [], "truncations": []}
        done = False
        while not done:
            action = int(obs[2] > 0)  # lean-following controller
            obs, r, term, trunc, _ = env.step(action)
            for key, value in zip(ep, (obs, action, r, term, trunc)):
                ep[key].append(value)
            done = term or trunc
        buffers.append(EpisodeBuffer(seed=seed, **{k: np.asarray(v) for k, v in ep.items()}))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "root"))
    minari.create_dataset_from_buffers("cartpole-foreign-v0", buffers, env=env, eval_env=env, algorithm_name="lean",
                                       author="x", author_email="x", code_permalink="x", description="x",
                                       data_format="arrow")
    back = demos.from_minari(tmp_path / "root" / "cartpole-foreign-v0", out=tmp_path / "back")
    assert back.env_id == "CartPole-v1" and back.meta["env_kwargs"]["max_episode_steps"] == 25
    assert [ep.seed for ep in back] == [40, 41] and back.meta["source"] == "minari:cartpole-foreign-v0"
    for ep, buf in zip(back, buffers):
        assert np.array_equal(ep.obs, buf.observations) and np.array_equal(ep.actions, buf.actions)
        assert np.array_equal(ep.rewards, buf.rewards) and ep.terminated == bool(buf.terminations[-1])
    assert demos.replay(back)["all_reproduced"]


def test_cli_convert_both_ways(cli, cartpole, tmp_path):
    r = cli("demos", "convert", str(cartpole), "--to", "minari", "--out", str(tmp_path / "m" / "cp-cli-v0"),
            "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["episodes"] == 4
    r = cli("demos", "convert", str(tmp_path / "m" / "cp-cli-v0"), "--from", "minari", "--out",
            str(tmp_path / "back"), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rewards"] is True
    r = cli("demos", "replay", str(tmp_path / "back"), "--verify", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["all_reproduced"]
    r = cli("demos", "convert", str(tmp_path / "nothing-v0"), "--from", "minari", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "not a Minari dataset" in r.stderr and "Traceback" not in r.stderr


def test_a_spec_minari_cannot_store_is_a_one_line_error_and_leaves_nothing(tmp_path):
    from gymnasium.envs.classic_control.cartpole import CartPoleEnv

    gym.register("rlkit_test/CallableEntry-v0", entry_point=CartPoleEnv, max_episode_steps=10)  # not JSON-able
    env_id = "rlkit_test/CallableEntry-v0"
    demos.record(demos.resolve_policy("random", env_id), env_id, 1, tmp_path / "d", seed=0, keep_rewards=True)
    with pytest.raises(RLKitError, match="Minari could not write") as err:
        demos.to_minari(demos.load(tmp_path / "d"), tmp_path / "m" / "callable-v0")
    one_line(err)
    assert not (tmp_path / "m" / "callable-v0").exists()
