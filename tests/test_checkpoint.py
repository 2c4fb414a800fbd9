"""Checkpoints: exact round trip without pickles, checksums, atomic step directories, leftovers, metrics.csv."""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlkit.buffers import PrioritizedReplayBuffer, ReplayBuffer
from rlkit.checkpoint import (
    clean_leftovers,
    list_checkpoints,
    load_buffer,
    load_checkpoint,
    save_checkpoint,
)
from rlkit.errors import RLKitError
from rlkit.logger import Logger
from rlkit.run import clean_metrics
from rlkit.seeding import get_rng_state, seed_everything, set_rng_state


class Payload:
    """Unpickling this runs ``touch MARKER``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_step_dir(step_dir: Path, files: dict[str, object], agent: str = "dqn") -> None:
    """A checkpoint directory as an attacker (or a bit flip followed by a re-hash) would write it: valid sums."""
    step_dir.mkdir(parents=True, exist_ok=True)
    sums = {}
    for name, obj in files.items():
        torch.save(obj, step_dir / name)
        data = (step_dir / name).read_bytes()
        sums[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (step_dir / "checksums.json").write_text(json.dumps({"format": 1, "agent": agent, "step": 1, "files": sums}))


def test_round_trip_is_exact_and_pickle_free(tmp_path):
    rng = seed_everything(3)
    rng.random(5)
    space = gym.spaces.Box(low=np.array([-np.inf, 0.0]), high=np.array([np.inf, 1.0]), dtype=np.float64)
    state = {
        "agent": "dqn", "config": {"env_id": "CartPole-v1", "hidden": [64, 64]}, "global_step": 7,
        "net": {"w": torch.arange(6.0).reshape(2, 3)},
        "arrays": [np.arange(4, dtype=np.uint8), np.ones((2, 2), dtype=np.float32), np.array([True, False])],
        "scalar": np.float64(0.25), "count": np.int64(5), "tuple": (1, "a", None),
        "observation_space": space, "action_space": gym.spaces.Discrete(3, start=1),
        "rng": get_rng_state(rng), "blob": b"\x00zip",
    }
    path = save_checkpoint(tmp_path, state, 7)
    assert path == tmp_path / "checkpoints" / "step_0000000007" / "state.pt"
    torch.load(path, weights_only=True)  # the file itself is plain data
    loaded = load_checkpoint(tmp_path)
    assert loaded["net"]["w"].equal(state["net"]["w"])
    for got, want in zip(loaded["arrays"], state["arrays"]):
        assert got.dtype == want.dtype and np.array_equal(got, want)
    assert type(loaded["scalar"]) is np.float64 and loaded["scalar"] == 0.25
    assert type(loaded["count"]) is np.int64 and loaded["tuple"] == (1, "a", None)
    assert loaded["observation_space"] == space and loaded["action_space"] == gym.spaces.Discrete(3, start=1)
    assert loaded["blob"] == b"\x00zip"
    # the RNG streams continue exactly where they were saved
    expected = (random.random(), np.random.rand(), torch.rand(1).item(), rng.random())
    other = np.random.default_rng(0)
    set_rng_state(loaded["rng"], other)
    assert (random.random(), np.random.rand(), torch.rand(1).item(), other.random()) == expected


def test_objects_are_refused_when_saving(tmp_path):
    with pytest.raises(RLKitError, match="cannot store PosixPath at state\\['where'\\]"):
        save_checkpoint(tmp_path, {"agent": "x", "where": Path("/")}, 1)
    assert list_checkpoints(tmp_path) == []
    assert not any((tmp_path / "checkpoints").iterdir())  # the temporary directory went too


def test_pruning_and_leftovers(tmp_path):
    for step in (10, 20, 30, 40):
        save_checkpoint(tmp_path, {"agent": "x", "global_step": step, "config": {}}, step, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000000030", "step_0000000040"]
    ckpts = tmp_path / "checkpoints"
    # what a kill -9 leaves: a half-written directory and a temporary file; both are ignored, then cleaned
    (ckpts / ".step_0000000050.x1.tmp").mkdir()
    (ckpts / ".step_0000000050.x1.tmp" / "state.pt").write_bytes(b"partial")
    (tmp_path / ".metrics.csv.abc.tmp").write_text("partial")
    assert load_checkpoint(tmp_path)["global_step"] == 40
    # a same-step save killed between its two renames: the old directory was moved aside; it comes back
    os.replace(ckpts / "step_0000000040", ckpts / ".step_0000000040.replaced.tmp")
    removed = clean_leftovers(tmp_path)
    assert sorted(p.name for p in removed) == [".metrics.csv.abc.tmp", ".step_0000000050.x1.tmp"]
    assert sorted(p.name for p in ckpts.iterdir()) == ["step_0000000030", "step_0000000040"]
    assert load_checkpoint(tmp_path)["global_step"] == 40
    # saving the same step again replaces it
    save_checkpoint(tmp_path, {"agent": "x", "global_step": 40, "config": {"again": True}}, 40, keep=2)
    assert load_checkpoint(tmp_path)["config"] == {"again": True}
    assert sorted(p.name for p in ckpts.iterdir()) == ["step_0000000030", "step_0000000040"]


def test_checksums_catch_damage(tmp_path):
    state_file = save_checkpoint(tmp_path, {"agent": "x", "global_step": 1, "config": {}}, 1,
                                 buffer={"pos": 3})
    data = bytearray(state_file.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    state_file.write_bytes(bytes(data))
    with pytest.raises(RLKitError, match=f"{state_file} does not match its sha256"):
        load_checkpoint(tmp_path)
    buffer_file = state_file.parent / "buffer.pt"
    buffer_file.write_bytes(buffer_file.read_bytes()[:-10])
    with pytest.raises(RLKitError, match="buffer.pt does not match its sha256"):
        load_buffer(state_file.parent)
    (state_file.parent / "checksums.json").write_text("[1, 2]")
    with pytest.raises(RLKitError, match="checksums.json is damaged"):
        load_checkpoint(tmp_path)
    (state_file.parent / "checksums.json").unlink()
    with pytest.raises(RLKitError, match="checksums.json is missing"):
        load_checkpoint(state_file)


def test_fifo_is_refused_without_blocking(tmp_path):
    state_file = save_checkpoint(tmp_path, {"agent": "x", "global_step": 1, "config": {}}, 1)
    state_file.unlink()
    os.mkfifo(state_file)
    with pytest.raises(RLKitError, match="not a regular file"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("where", ["state", "buffer"])
def test_malicious_pickle_is_refused_without_running(tmp_path, where):
    marker = tmp_path / "PWNED"
    good = {"agent": "dqn", "global_step": 1, "config": {}}
    files = {"state.pt": {**good, "x": Payload(marker)}} if where == "state" else \
        {"state.pt": good, "buffer.pt": {"pos": Payload(marker)}}
    step_dir = tmp_path / "checkpoints" / "step_0000000001"
    write_step_dir(step_dir, files)
    with pytest.raises(RLKitError, match="refusing to load .*(posix|os).system"):
        load_checkpoint(tmp_path) if where == "state" else load_buffer(step_dir)
    assert not marker.exists()


def test_old_pickled_layout_is_refused(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    torch.save({"agent": "dqn"}, tmp_path / "checkpoints" / "step_0000000100.pt")
    with pytest.raises(RLKitError, match="older rlkit"):
        load_checkpoint(tmp_path)
    with pytest.raises(RLKitError, match="older rlkit"):
        load_checkpoint(tmp_path / "checkpoints" / "step_0000000100.pt")


@pytest.mark.parametrize("cls", [ReplayBuffer, PrioritizedReplayBuffer])
def test_buffer_state_round_trip_and_mismatch(tmp_path, cls):
    obs_space, act_space = gym.spaces.Box(-1, 1, (3,), np.float32), gym.spaces.Discrete(2)
    buffer = cls(50, obs_space, act_space, num_envs=2, rng=np.random.default_rng(0))
    for t in range(30):
        done = np.array([t % 7 == 6, False])
        buffer.add(np.full((2, 3), t, np.float32), np.array([0, 1]), np.ones(2), np.full((2, 3), t + 1, np.float32),
                   done, np.zeros(2, bool))
    save_checkpoint(tmp_path, {"agent": "x", "global_step": 30, "config": {}}, 30, buffer=buffer.state_dict())
    fresh = cls(50, obs_space, act_space, num_envs=2, rng=np.random.default_rng(0))
    fresh.load_state_dict(load_buffer(list_checkpoints(tmp_path)[-1]))
    assert len(fresh) == len(buffer) and fresh.pos == buffer.pos
    a, b = buffer.sample(8), fresh.sample(8)
    assert all(torch.equal(x, y) for x, y in zip(a[:-1], b[:-1]))
    small = cls(20, obs_space, act_space, num_envs=2)
    with pytest.raises(RLKitError, match="does not match this buffer"):
        small.load_state_dict(load_buffer(list_checkpoints(tmp_path)[-1]))


def test_buffer_memory_is_refused_with_the_number():
    with pytest.raises(RLKitError, match=r"needs [\d,.]+ GiB, but this machine has"):
        ReplayBuffer(10**11, gym.spaces.Box(-1, 1, (4,), np.float32), gym.spaces.Discrete(2))


def test_clean_metrics_keeps_committed_rows_once(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("global_step,wall_s,x\n100,1.0,a\n200,2.0,b\n200,2.5,b2\n300,3.0,c\n400,4.0,d\n50")
    assert clean_metrics(path, 300) == 3.0  # the resumed run's clock continues after the last row kept
    assert path.read_text() == "global_step,wall_s,x\n100,1.0,a\n200,2.5,b2\n300,3.0,c\n"
    path.write_bytes(b"global_step,wall_s\n1\xff,2\n")
    with pytest.raises(RLKitError, match="metrics.csv is damaged"):
        clean_metrics(path, 300)
    path.write_text("global_step,wall_s\n1,2,3\n")
    with pytest.raises(RLKitError, match="metrics.csv line 2 is damaged"):
        clean_metrics(path, 300)


def test_logger_merges_rows_of_one_step_and_continues_wall_time(tmp_path):
    start = time.perf_counter()  # the run's clock: 100 s trained before this process
    log = Logger(tmp_path, total_steps=10, progress=False, tensorboard=False,
                 clock=lambda: 100.0 + time.perf_counter() - start)
    log.record("a", 1.0)
    log.dump(5)
    log.record("eval/mean_return", 3.0)
    log.dump(5)  # the final evaluation at the step of the last row: one row
    log.close()
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert len(lines) == 2 and lines[0].split(",")[:2] == ["global_step", "wall_s"]
    row = dict(zip(lines[0].split(","), lines[1].split(",")))
    assert row["a"] == "1.0" and row["eval/mean_return"] == "3.0" and float(row["wall_s"]) >= 100.0
