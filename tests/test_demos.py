"""Demonstrations: format, recorder, sources, replay-verify, corruption, crash safety, conversion."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.envs.classic_control.cartpole import CartPoleEnv
from rlkit.demos.dataset import INDEX, space_from_json, space_to_json
from rlkit.demos.writer import DatasetWriter

from rlkit import demos
from rlkit.errors import RLKitError

REPO = Path(__file__).resolve().parents[1]
SCRIPTED_CARTPOLE = "python:rlkit.demos.scripted:cartpole"


def record_source(spec: str, env_id: str, episodes: int, out, seed: int = 0, **kwargs) -> dict:
    """What `rlkit demos record --policy SOURCE` does: resolve the source, then record the Policy."""
    policy = demos.resolve_policy(spec, env_id, seed=seed, env_kwargs=kwargs.get("env_kwargs"))
    kwargs.setdefault("source", spec)
    return demos.record(policy, env_id, episodes, out, seed=seed, **kwargs)


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text, text
    return text


@pytest.fixture(scope="module")
def cartpole_ds(tmp_path_factory):
    """5 random CartPole episodes (short, terminated), rewards not kept."""
    out = tmp_path_factory.mktemp("ds") / "cartpole"
    record_source("random", "CartPole-v1", 5, out, seed=3)
    return out


# ---------------------------------------------------------------------------------------------
# Layer 1-2: spaces, hand-built datasets, views
# ---------------------------------------------------------------------------------------------

def test_space_json_round_trip_is_exact():
    spaces = [gym.make("CartPole-v1").observation_space, gym.spaces.Box(0, 255, (4, 84, 84), np.uint8),
              gym.spaces.Box(np.array([-1.0, 0.5]), np.array([3.0, np.inf]), dtype=np.float64),
              gym.spaces.Discrete(5, start=-2), gym.spaces.MultiDiscrete([3, 4]), gym.spaces.MultiBinary(6)]
    for space in spaces:
        data = json.loads(json.dumps(space_to_json(space), allow_nan=False))  # strict JSON on disk
        back = space_from_json(data)
        assert back == space and back.dtype == space.dtype and space_to_json(back) == space_to_json(space)
    with pytest.raises(RLKitError, match="Dict"):
        space_to_json(gym.spaces.Dict({"a": gym.spaces.Discrete(2)}))


def write_hand_dataset(path: Path) -> None:
    obs_space = gym.spaces.Box(-10, 10, (2,), np.float32)
    with DatasetWriter(path, "rlkit/Chain-v0", obs_space, gym.spaces.Discrete(2), "hand") as w:
        w.add_episode([[0, 0], [1, 1], [2, 2]], [1, 0], terminated=True, truncated=False, seed=7)
        w.add_episode([[5, 5], [6, 6]], [1], terminated=False, truncated=True, seed=8, options={"x": 1},
                      rewards=[0.5], episode_return=0.5)


def test_transitions_view_matches_hand_computed(tmp_path):
    write_hand_dataset(tmp_path / "d")
    ds = demos.load(tmp_path / "d")
    assert len(ds) == 2 and ds.num_steps == 3 and [ep.seed for ep in ds] == [7, 8]
    assert ds[1].options == {"x": 1} and ds[1].rewards.tolist() == [0.5] and ds[0].rewards is None
    t = ds.transitions()
    assert t.obs.tolist() == [[0, 0], [1, 1], [5, 5]]
    assert t.next_obs.tolist() == [[1, 1], [2, 2], [6, 6]]
    assert t.acts.tolist() == [1, 0, 1] and t.acts.dtype == np.int64
    # done only where the episode terminated; the truncated one must bootstrap
    assert t.dones.tolist() == [False, True, False]
    tt = ds.transitions(torch=True)
    assert tt.obs.dtype.is_floating_point and tt.dones.tolist() == [False, True, False]
    obs, acts, next_obs, dones = tt  # the NamedTuple unpacks as learners use it
    assert acts.tolist() == [1, 0, 1]


def test_split_and_subset_by_episode(cartpole_ds):
    ds = demos.load(cartpole_ds)
    train, val = ds.split(val_fraction=0.4, seed=1)
    assert len(train) == 3 and len(val) == 2
    ids = sorted([ep.index for ep in train] + [ep.index for ep in val])
    assert ids == [0, 1, 2, 3, 4] and not {ep.index for ep in train} & {ep.index for ep in val}
    again = ds.split(val_fraction=0.4, seed=1)
    assert [ep.index for ep in again[1]] == [ep.index for ep in val]
    assert train.num_steps + val.num_steps == ds.num_steps and train.meta is ds.meta
    assert [ep.index for ep in ds.subset([4, 0])] == [4, 0]
    with pytest.raises(RLKitError):
        ds.subset([0]).split()
    with pytest.raises(RLKitError):
        ds.split(val_fraction=1.0)


def test_writer_validates_input_and_refuses_overwrite(tmp_path):
    write_hand_dataset(tmp_path / "d")
    with pytest.raises(RLKitError, match="already exists"):
        DatasetWriter(tmp_path / "d", "rlkit/Chain-v0", gym.spaces.Box(-10, 10, (2,), np.float32),
                      gym.spaces.Discrete(2), "hand")
    with DatasetWriter(tmp_path / "e", "CartPole-v1", gym.spaces.Box(-1, 1, (2,)), gym.spaces.Discrete(2), "x") as w:
        with pytest.raises(RLKitError, match="T\\+1"):
            w.add_episode(np.zeros((2, 2)), [0, 1], True, False, 0)
        with pytest.raises(RLKitError, match="discrete actions"):
            w.add_episode(np.zeros((3, 2)), [0, 2], True, False, 0)
        with pytest.raises(RLKitError, match="another process"):
            DatasetWriter(tmp_path / "e", "CartPole-v1", gym.spaces.Box(-1, 1, (2,)), gym.spaces.Discrete(2), "x",
                          append=True)


# ---------------------------------------------------------------------------------------------
# Record, load, replay-verify: discrete, continuous, images
# ---------------------------------------------------------------------------------------------

def test_cartpole_record_load_replay(cartpole_ds):
    ds = demos.load(cartpole_ds)
    assert len(ds) == 5 and [ep.seed for ep in ds] == [3, 4, 5, 6, 7]
    assert all(ep.terminated and not ep.truncated and ep.rewards is None for ep in ds)
    assert all(ep.obs.shape == (ep.length + 1, 4) and ep.episode_return == ep.length for ep in ds)
    meta = ds.meta
    assert meta["env_id"] == "CartPole-v1" and meta["source"] == "random"
    assert meta["action_space"] == gym.spaces.Discrete(2) and set(meta["versions"]) >= {"rlkit", "gymnasium", "numpy"}
    report = demos.replay(ds, verify=True)
    assert report["all_reproduced"] and report["reproduced"] == 5
    assert [r["replay_return"] for r in report["episodes"]] == [float(ep.length) for ep in ds]


def test_replay_reports_the_step_where_a_tampered_episode_diverges(cartpole_ds):
    ds = demos.load(cartpole_ds)
    ep = ds[0]
    ep.actions[4] = 1 - ep.actions[4]  # a different push at step 4 changes the observation after it
    report = demos.replay(ds, episodes=[0, 1])
    first, second = report["episodes"]
    assert first["status"] == "diverged" and first["diverged_at"] == 5 and second["status"] == "reproduced"
    assert not report["all_reproduced"]


def test_pendulum_continuous_scripted_source_reproduces(tmp_path):
    stats = record_source("python:rlkit.demos.scripted:pendulum", "Pendulum-v1", 2, tmp_path / "p", seed=10,
                         keep_rewards=True, env_kwargs={"max_episode_steps": 60})
    ds = demos.load(tmp_path / "p")
    assert stats["steps"] == 120 and ds.meta["env_kwargs"] == {"max_episode_steps": 60}
    assert all(ep.truncated and not ep.terminated and ep.actions.dtype == np.float32 for ep in ds)
    assert np.isclose(ds[0].rewards.sum(), ds[0].episode_return, atol=1e-3)
    assert not ds.transitions().dones.any()
    assert demos.replay(ds)["all_reproduced"]


def test_atari_images_stored_once_per_frame_and_reproduce(tmp_path):
    pytest.importorskip("ale_py")
    record_source("random", "PongNoFrameskip-v4", 2, tmp_path / "pong", seed=0,
                 env_kwargs={"max_episode_steps": 160})  # 160 raw frames ~ 35 agent steps after no-ops
    ds = demos.load(tmp_path / "pong")
    ep = ds[0]
    assert ep.obs.dtype == np.uint8 and ep.obs.shape[1:] == (4, 84, 84) and ep.truncated
    assert np.array_equal(ep.obs[1:, :3], ep.obs[:-1, 1:])  # the frame stack, rebuilt exactly
    names = zipfile.ZipFile(io.BytesIO(episode_archive(tmp_path / "pong", 0))).namelist()
    assert "obs_frames.npy" in names and "obs.npy" not in names
    assert demos.replay(ds)["all_reproduced"]


# ---------------------------------------------------------------------------------------------
# Corruption, wrong env, crash safety
# ---------------------------------------------------------------------------------------------

def index_records(ds_path: Path) -> list[dict]:
    return [json.loads(line) for line in (ds_path / INDEX).read_text().splitlines()]


def episode_archive(ds_path: Path, index: int) -> bytes:
    """Episode ``index``'s .npz archive, cut from its pack by the index's offset and size."""
    rec = index_records(ds_path)[index]
    return (ds_path / rec["file"]).read_bytes()[rec["offset"]:rec["offset"] + rec["bytes"]]


def flip_byte_of_episode(ds_path: Path, index: int) -> None:
    rec = index_records(ds_path)[index]
    pack = ds_path / rec["file"]
    data = bytearray(pack.read_bytes())
    data[rec["offset"] + rec["bytes"] // 2] ^= 0xFF
    pack.write_bytes(bytes(data))


def copy_dataset(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_damage_gives_one_line_errors_naming_the_episode(cartpole_ds, tmp_path):
    flipped = copy_dataset(cartpole_ds, tmp_path / "flipped")
    flip_byte_of_episode(flipped, 1)
    with pytest.raises(RLKitError) as err:
        demos.load(flipped)
    assert "episode 1" in one_line(err) and "checksum" in str(err.value) and "skip_corrupt" in str(err.value)

    truncated = copy_dataset(cartpole_ds, tmp_path / "truncated")
    rec = index_records(truncated)[2]
    pack = truncated / rec["file"]
    pack.write_bytes(pack.read_bytes()[:rec["offset"] + 100])  # cut inside episode 2: 2, 3 and 4 are lost
    with pytest.raises(RLKitError) as err:
        demos.load(truncated)
    assert "episode 2" in one_line(err) and "truncated" in str(err.value)
    with pytest.warns(UserWarning, match="skipped 3"):
        assert [ep.index for ep in demos.load(truncated, skip_corrupt=True)] == [0, 1]

    # a deleted pack: a second session's episodes 5-6, appended to the first session's 0-4
    missing = copy_dataset(cartpole_ds, tmp_path / "missing")
    record_source("random", "CartPole-v1", 2, missing, seed=50, append=True)
    (missing / "episodes" / "000005.pack").unlink()
    with pytest.raises(RLKitError) as err:
        demos.load(missing)
    assert "episode 5" in one_line(err) and "missing" in str(err.value)
    with pytest.warns(UserWarning, match="skipped 2"):
        rest = demos.load(missing, skip_corrupt=True)
    assert [ep.index for ep in rest] == [0, 1, 2, 3, 4] and [i for i, _ in rest.skipped] == [5, 6]
    assert demos.inspect_dataset(missing)["problems"] == [
        f"episode {i} ({missing}/episodes/000005.pack) is missing" for i in (5, 6)]
    flip_byte_of_episode(missing, 4)  # found by inspect --check only: without it, sizes are checked
    assert demos.inspect_dataset(missing)["problems"][0] == f"episode 5 ({missing}/episodes/000005.pack) is missing"
    assert demos.inspect_dataset(missing, check=True)["problems"][0].startswith("episode 4 (")

    with pytest.raises(RLKitError) as err:
        demos.load(cartpole_ds, env_id="Pendulum-v1")
    assert "recorded on CartPole-v1, not Pendulum-v1" in one_line(err)
    with pytest.raises(RLKitError) as err:
        record_source("random", "Acrobot-v1", 1, copy_dataset(cartpole_ds, tmp_path / "wrong"), append=True)
    assert "cannot append" in one_line(err) and "env CartPole-v1 (not Acrobot-v1)" in str(err.value)
    with pytest.raises(RLKitError) as err:
        demos.load(tmp_path / "nowhere")
    one_line(err)


def test_append_adds_episodes_and_survives_a_torn_index_line(cartpole_ds, tmp_path):
    ds_path = copy_dataset(cartpole_ds, tmp_path / "grow")
    pack = ds_path / index_records(ds_path)[-1]["file"]
    with open(ds_path / INDEX, "ab") as f:  # what a crash in the middle of the commit write leaves
        f.write(b'{"index":5,"file":"episodes/000005.npz","sha2')
    committed_bytes = pack.stat().st_size
    with open(pack, "ab") as f:
        f.write(b"PK\x03\x04 half an episode")  # the archive of the uncommitted episode, cut short
    (ds_path / "episodes" / "000005.pack").write_bytes(b"PK")  # a session killed before its first commit
    assert len(demos.load(ds_path)) == 5
    env = gym.make("CartPole-v1")
    with DatasetWriter(ds_path, "CartPole-v1", env.observation_space, env.action_space, source="x", append=True):
        pass  # opening for append cuts what was never committed
    assert pack.stat().st_size == committed_bytes and not (ds_path / "episodes" / "000005.pack").exists()
    stats = record_source("random", "CartPole-v1", 2, ds_path, seed=100, append=True, source="second")
    ds = demos.load(ds_path)
    assert stats["total_episodes"] == 7 and [ep.index for ep in ds] == list(range(7))
    assert [ep.seed for ep in ds][5:] == [100, 101] and ds[6].source == "second" and ds.meta["source"] == "random"
    assert demos.inspect_dataset(ds_path)["sources"] == ["random", "second"]


def test_format_1_datasets_with_a_file_per_episode_still_load(cartpole_ds, tmp_path):
    old = copy_dataset(cartpole_ds, tmp_path / "v1")
    records = index_records(old)
    lines = []
    for rec in records:
        rec["file"] = f"episodes/{rec['index']:06d}.npz"
        (old / rec["file"]).write_bytes(episode_archive(cartpole_ds, rec["index"]))
        del rec["offset"]
        lines.append(json.dumps(rec) + "\n")
    (old / INDEX).write_text("".join(lines))
    (old / "episodes" / "000000.pack").unlink()
    manifest = json.loads((old / "manifest.json").read_text())
    (old / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
    assert_same_episodes(demos.load(cartpole_ds), demos.load(old))
    assert demos.inspect_dataset(old, check=True)["problems"] == []


class DriftingCartPole(CartPoleEnv):
    """CartPole whose observations turn float64 mid-episode once reset with a seed >= 1 (a broken env)."""

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.drift, self.steps = seed >= 1, 0
        return super().reset(seed=seed, options=options)

    def step(self, action):
        self.steps += 1
        obs, *rest = super().step(action)
        return (obs.astype(np.float64) if self.drift and self.steps > 3 else obs), *rest


DRIFT_ID = "rlkit_test/DriftingCartPole-v0"
if DRIFT_ID not in gym.envs.registry:
    gym.register(DRIFT_ID, entry_point=f"{__name__}:DriftingCartPole", max_episode_steps=500)


def test_an_env_changing_its_obs_dtype_mid_episode_is_a_one_line_error_and_keeps_what_was_committed(tmp_path):
    out = tmp_path / "drift"
    with pytest.raises(RLKitError) as err:
        record_source("random", f"tests.test_demos:{DRIFT_ID}", 2, out, seed=0)
    assert "changed dtype or shape within an episode" in one_line(err)
    assert [ep.index for ep in demos.load(out)] == [0]  # episode 0 (seed 0) was committed before


def test_sigkilled_recorder_leaves_every_committed_episode(tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "rlkit.apps.cli", "demos", "record", "--env", "CartPole-v1", "--policy", "random",
           "--episodes", "1000000", "--out", str(out)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=REPO)
    reported = 0
    try:
        deadline = time.monotonic() + 120
        while reported < 30 and time.monotonic() < deadline:
            line = proc.stderr.readline()
            reported += line.startswith("episode ")
            assert line or proc.poll() is None, "recorder exited early"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert reported >= 30
    ds = demos.load(out)  # every committed episode loads, checksums verified; no half-written one
    assert len(ds) >= reported
    assert [ep.index for ep in ds] == list(range(len(ds)))
    assert demos.replay(ds, episodes=[0, len(ds) - 1])["all_reproduced"]
    record_source("random", "CartPole-v1", 1, out, seed=10**6, append=True)  # the dataset stays appendable
    # the pack holds the committed episodes and the appended one, and no bytes besides
    ds = demos.load(out)
    assert sum(p.stat().st_size for p in (out / "episodes").iterdir()) == sum(r["bytes"] for r in index_records(out))


# ---------------------------------------------------------------------------------------------
# Policy sources
# ---------------------------------------------------------------------------------------------

class ConstantFactory:
    """A Policy class: the python: source calls it with the spaces."""

    def __init__(self, observation_space, action_space):
        self.action = action_space.n - 1

    def act(self, obs, deterministic=True):
        return np.full(len(obs), self.action)


def test_python_sources_function_class_and_errors(tmp_path):
    obs = np.zeros((3, 4), np.float32)
    fn = demos.resolve_policy(SCRIPTED_CARTPOLE, "CartPole-v1")
    assert fn.act(np.array([[0, 0, 0.1, 0]], np.float32)).tolist() == [1]
    cls = demos.resolve_policy(f"python:{__name__}:ConstantFactory", "CartPole-v1")
    assert cls.act(obs).tolist() == [1, 1, 1]
    for bad, text in [("python:nope_module:f", "cannot import"), ("python:rlkit.demos.scripted:nope", "no attribute"),
                      ("sb3:PPO:/no/such.zip", "does not exist"), ("sb3:XYZ:m.zip", "unknown SB3"),
                      ("nonsense", "unknown policy source")]:
        with pytest.raises(RLKitError, match=text) as err:
            demos.resolve_policy(bad, "CartPole-v1")
        one_line(err)
    stats = record_source(SCRIPTED_CARTPOLE, "CartPole-v1", 1, tmp_path / "s")
    assert stats["steps"] == 500 and demos.load(tmp_path / "s").meta["source"] == SCRIPTED_CARTPOLE


@pytest.fixture(scope="module")
def ppo_zip(tmp_path_factory):
    """A tiny PPO trained for a few hundred steps (enough for a real, non-trivial policy)."""
    import torch
    from stable_baselines3 import PPO

    torch.set_num_threads(1)
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=128, batch_size=64, n_epochs=2, seed=0, device="cpu",
                policy_kwargs={"net_arch": [16]})
    model.learn(256)
    path = tmp_path_factory.mktemp("sb3") / "ppo_cartpole.zip"
    model.save(path)
    return path


def test_sb3_source_records_model_predict_actions(ppo_zip, tmp_path):
    from stable_baselines3 import PPO

    source = f"sb3:PPO:{ppo_zip}"
    record_source(source, "CartPole-v1", 2, tmp_path / "sb3", seed=5)
    ds = demos.load(tmp_path / "sb3")
    model = PPO.load(ppo_zip, device="cpu")
    for ep in ds:
        predicted, _ = model.predict(ep.obs[:-1], deterministic=True)
        assert np.array_equal(predicted, ep.actions)
    assert ds.meta["source"] == source
    with pytest.raises(RLKitError, match="cannot load") as err:
        demos.resolve_policy(f"sb3:DQN:{ppo_zip}", "CartPole-v1")
    one_line(err)
    with pytest.raises(RLKitError, match="expects observations of shape"):
        demos.resolve_policy(source, "Pendulum-v1")


def test_rlkit_run_dir_source(tmp_path):
    from rlkit.agents.dqn import DQNConfig, train

    from rlkit.policy import load_policy

    run_dir = tmp_path / "run"
    train(DQNConfig(env_id="CartPole-v1", total_steps=300, learning_starts=100, eval_episodes=1, progress=False,
                    tensorboard=False, run_dir=str(run_dir), hidden=[16]))
    record_source(str(run_dir), "CartPole-v1", 1, tmp_path / "dqn", seed=2)
    ep = demos.load(tmp_path / "dqn")[0]
    policy = load_policy(run_dir)
    assert np.array_equal(policy.act(ep.obs[:-1], deterministic=True), ep.actions)


# ---------------------------------------------------------------------------------------------
# The human source, driven by injected pygame key events
# ---------------------------------------------------------------------------------------------

def scripted_keyboard(*args, **kwargs):
    """A HumanPolicy on pygame's dummy driver, its keys posted by the test: the source itself refuses a
    machine without a real display, so only a test can drive it headless."""
    from rlkit.demos.human import HumanPolicy

    class ScriptedKeyboard(HumanPolicy):
        def require_display(self) -> None:
            pass

    return ScriptedKeyboard(*args, **kwargs)


def test_human_session_records_the_keys_pressed(tmp_path):
    pygame = pytest.importorskip("pygame")

    K = pygame
    script = {  # (episode attempt, step) -> events to inject before that step's action is read
        (0, 0): [(K.KEYDOWN, K.K_RIGHT)],
        (0, 2): [(K.KEYDOWN, K.K_p)],  # pause...
        (0, 4): [(K.KEYUP, K.K_RIGHT)],  # nothing held: CartPole repeats the last action
        (0, 6): [(K.KEYDOWN, K.K_LEFT)],
        (1, 3): [(K.KEYDOWN, K.K_BACKSPACE)],  # discard: the episode is played again, same seed
        (2, 0): [(K.KEYDOWN, K.K_RIGHT)],
        (3, 2): [(K.KEYDOWN, K.K_ESCAPE)],  # quit: the two finished episodes are kept
    }
    attempts = {"n": -1, "paused_frames": 0}

    def on_frame(policy):
        key = (attempts["n"], policy.step)
        if policy.paused:
            attempts["paused_frames"] += 1
            if attempts["paused_frames"] == 3:  # ...and resume a few frames later
                pygame.event.post(pygame.event.Event(K.KEYDOWN, key=K.K_p))
            return
        for kind, code in script.pop(key, []):
            pygame.event.post(pygame.event.Event(kind, key=code))

    policy = scripted_keyboard("CartPole-v1", fps=0, on_frame=on_frame)
    original_begin = policy.begin_episode

    def begin(env, index, total):
        attempts["n"] += 1
        original_begin(env, index, total)

    policy.begin_episode = begin
    stats = demos.record(policy, "CartPole-v1", 5, tmp_path / "human", seed=20, source="human")
    ds = demos.load(tmp_path / "human")
    assert stats["discarded"] == 1 and stats["stopped_early"] and len(ds) == 2
    assert attempts["paused_frames"] >= 3
    first, second = ds
    assert first.seed == 20 and second.seed == 21
    assert first.actions[:6].tolist() == [1] * 6 and set(first.actions[6:].tolist()) == {0}
    assert set(second.actions.tolist()) == {1}
    assert demos.replay(ds)["all_reproduced"]


def test_human_key_maps_classic_atari_and_user(tmp_path):
    pygame = pytest.importorskip("pygame")
    from rlkit.demos.human import default_key_map, parse_key_map

    keys, noop = default_key_map(pygame, "Pendulum-v1", None)
    assert keys[frozenset([pygame.K_RIGHT])] == [-2.0] and noop == [0.0]
    keys, noop = parse_key_map(pygame, {"a": 0, "d+space": 1, "noop": 2})
    assert keys == {frozenset([ord("a")]): 0, frozenset([ord("d"), pygame.K_SPACE]): 1} and noop == 2
    with pytest.raises(RLKitError, match="unknown key"):
        parse_key_map(pygame, {"nokey": 0})
    pytest.importorskip("ale_py")
    env = gym.make("PongNoFrameskip-v4")
    keys, noop = default_key_map(pygame, "PongNoFrameskip-v4", env)
    env.close()
    meanings = env.unwrapped.get_action_meanings()
    assert meanings[keys[frozenset([ord(" ")])]] == "FIRE" and noop == 0
    with pytest.raises(RLKitError, match="no key map"):
        default_key_map(pygame, "rlkit/Chain-v0", gym.make("rlkit/Chain-v0"))


# ---------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------

def assert_same_episodes(a, b, seeds=True):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert np.array_equal(x.obs, y.obs) and np.array_equal(x.actions, y.actions)
        assert (x.terminated, x.truncated) == (y.terminated, y.truncated)
        assert (x.rewards is None) == (y.rewards is None)
        if x.rewards is not None:
            assert np.allclose(x.rewards, y.rewards)
        if seeds:
            assert x.seed == y.seed


def test_imitation_round_trips_both_ways(ppo_zip, tmp_path):
    from imitation.data import rollout
    from imitation.data.types import Trajectory, TrajectoryWithRew
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    record_source("random", "CartPole-v1", 3, tmp_path / "r", seed=1, keep_rewards=True,
                 env_kwargs={"max_episode_steps": 15})
    ds = demos.load(tmp_path / "r")
    trajs = demos.to_trajectories(ds)
    assert all(type(t) is TrajectoryWithRew for t in trajs)
    assert [t.terminal for t in trajs] == [ep.terminated for ep in ds]
    assert_same_episodes(ds, demos.from_trajectories(trajs, "CartPole-v1"), seeds=False)
    demos.save_imitation(ds, tmp_path / "imi")
    back = demos.from_trajectories(demos.load_imitation(tmp_path / "imi"), "CartPole-v1", tmp_path / "back")
    assert_same_episodes(ds, back, seeds=False)
    assert all(ep.seed is None for ep in back)
    assert demos.replay(back)["unreplayable"] == 3
    no_rew = demos.load(record_source("random", "CartPole-v1", 1, tmp_path / "nr")["out"])
    assert type(demos.to_trajectories(no_rew)[0]) is Trajectory

    # the other direction: trajectories made by imitation's own rollout of a real SB3 expert
    from imitation.data.wrappers import RolloutInfoWrapper

    venv = make_vec_env("CartPole-v1", n_envs=1, seed=0, wrapper_class=RolloutInfoWrapper)
    expert_trajs = rollout.rollout(PPO.load(ppo_zip, device="cpu"), venv,
                                   rollout.make_sample_until(min_episodes=2), rng=np.random.default_rng(0))
    from_imitation = demos.from_trajectories(expert_trajs, "CartPole-v1", tmp_path / "expert")
    again = demos.to_trajectories(from_imitation)
    for t, u in zip(expert_trajs, again):
        assert np.array_equal(t.obs, u.obs) and np.array_equal(t.acts, u.acts) and t.terminal == u.terminal
        assert np.allclose(t.rews, u.rews)


# ---------------------------------------------------------------------------------------------
# The CLI, as a user drives it
# ---------------------------------------------------------------------------------------------

def run_in_process(capsys, *args: str) -> tuple[int, str]:
    """``rlkit ARGS`` in this process (cheaper than a subprocess for the commands' plumbing)."""
    from rlkit.apps.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return exit_info.value.code, capsys.readouterr().out


def test_cli_record_inspect_replay_convert(cli, capsys, tmp_path):
    out = tmp_path / "cli"
    r = cli("demos", "record", "--env", "CartPole-v1", "--policy", SCRIPTED_CARTPOLE, "--episodes", "2",
            "--out", str(out), "--seed", "4", "--keep-rewards", "--env-kwargs", '{"max_episode_steps": 50}', "--json")
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)
    assert stats["episodes"] == 2 and stats["steps"] == 100 and stats["mean_return"] == 50.0
    r = cli("demos", "replay", str(out), "--verify", "--episodes", "1", "--video", str(tmp_path / "v.gif"), "--json")
    report = json.loads(r.stdout)
    assert r.returncode == 0 and report["all_reproduced"] and [e["index"] for e in report["episodes"]] == [1]
    assert (tmp_path / "v.gif").stat().st_size > 1000

    code, text = run_in_process(capsys, "demos", "inspect", str(out), "--check", "--json")
    info = json.loads(text)
    assert info["episodes"] == 2 and info["steps"] == 100 and info["truncated"] == 2 and info["rewards_kept"] == "all"
    assert info["length"]["mean"] == 50 and info["returns"]["mean"] == 50 and info["problems"] == []
    assert info["env_kwargs"] == {"max_episode_steps": 50} and info["versions"]["gymnasium"] == gym.__version__
    code, text = run_in_process(capsys, "demos", "convert", str(out), "--to", "imitation", "--out",
                                str(tmp_path / "imi"), "--json")
    assert code == 0 and json.loads(text)["episodes"] == 2
    code, text = run_in_process(capsys, "demos", "convert", str(tmp_path / "imi"), "--from", "imitation", "--env",
                                "CartPole-v1", "--out", str(tmp_path / "back"), "--json")
    assert code == 0 and json.loads(text)["rewards"] is True
    assert_same_episodes(demos.load(out), demos.load(tmp_path / "back"), seeds=False)

    # damage: one line, exit 2, then --skip-corrupt reads the rest
    flip_byte_of_episode(out, 0)
    r = cli("demos", "replay", str(out), "--verify", "--json")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("rlkit: error: episode 0 (") and r.stderr.count("\n") == 1
    with pytest.warns(UserWarning, match="skipped 1"):
        code, text = run_in_process(capsys, "demos", "replay", str(out), "--verify", "--skip-corrupt", "--json")
    assert code == 0 and [e["index"] for e in json.loads(text)["episodes"]] == [1]
    r = cli("demos", "record", "--env", "Pendulum-v1", "--policy", "random", "--episodes", "1", "--out", str(out),
            "--append")
    assert r.returncode == 2 and "cannot append" in r.stderr and r.stderr.count("\n") == 1


def test_record_takes_a_policy_and_calls_hooks_only_on_interactive_ones(tmp_path, capsys):
    with pytest.raises(RLKitError) as err:
        demos.record("random", "CartPole-v1", 1, tmp_path / "s")
    assert "demos.resolve_policy('random', 'CartPole-v1')" in one_line(err)
    calls = []

    class Interactive:
        needs_render = False

        def act(self, obs, deterministic=True):
            return np.zeros(len(obs), dtype=np.int64)

        def begin_episode(self, env, index, total):
            calls.append(("begin", index, total))

        def close(self):
            calls.append(("close",))

    class OnlyClose:  # not an InteractivePolicy: its close() is not the recorder's to call
        def act(self, obs, deterministic=True):
            return np.zeros(len(obs), dtype=np.int64)

        def close(self):
            calls.append(("wrong",))

    assert isinstance(Interactive(), demos.InteractivePolicy) and not isinstance(OnlyClose(), demos.InteractivePolicy)
    demos.record(Interactive(), "CartPole-v1", 2, tmp_path / "i")
    demos.record(OnlyClose(), "CartPole-v1", 1, tmp_path / "c")
    assert calls == [("begin", 0, 2), ("begin", 1, 2), ("close",)]
    with pytest.raises(RLKitError, match="non-negative"):
        demos.replay(tmp_path / "i", atol=-1)
