"""Fault suite for demonstration datasets: nothing on disk is trusted, nothing committed is lost.

* a corruption matrix: {manifest, index, pack} x {flip a byte, truncate, delete, wrong JSON type,
  a directory, a FIFO} x {inspect, inspect --check, replay, train bc, record --append}, each
  answered by exit 2 with one line and no traceback, or by a correct result; no file outside the
  dataset changes, and a refused append changes no byte inside it;
* malicious fixtures: traversal and absolute paths in the index, a symlink out, a FIFO, a zip bomb,
  a module-prefixed env id in the manifest: no payload runs and no file outside the dataset changes;
* a damaged index is never invisible, ``demos repair`` rebuilds it without losing a complete episode;
* kill -9 at seeded random moments during recording, each followed by an append: nothing committed
  is lost or duplicated.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from rlkit.demos import codec
from rlkit.demos.dataset import INDEX, MANIFEST

from rlkit import demos
from rlkit.errors import RLKitError
from rlkit.policy import RandomPolicy

REPO = Path(__file__).resolve().parents[1]
NUM_EPISODES = 6


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """6 random CartPole episodes in two packs (a first session of 4, an append of 2)."""
    out = tmp_path_factory.mktemp("faults") / "ds"
    space = gym.make("CartPole-v1").action_space
    demos.record(RandomPolicy(space, seed=0), "CartPole-v1", 4, out, seed=0, source="random")
    demos.record(RandomPolicy(space, seed=1), "CartPole-v1", 2, out, seed=4, source="random", append=True)
    return out


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> sha256 (or the kind) of everything under ``root``, without following links."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "link:" + os.readlink(path)
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = "other"
    return out


class Hung(Exception):
    pass


def run_cli(capsys, *args: str, timeout: int = 60) -> tuple[int, str, str]:
    """``rlkit ARGS`` in this process; (exit code, stdout, stderr). A hang fails the test instead of CI."""
    from rlkit.apps.cli import main

    def alarm(signum, frame):
        raise Hung(f"rlkit {' '.join(args)} hung")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(timeout)
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, (code, err)
    assert "Traceback" not in err and err.startswith("rlkit: error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err


def commands(ds: Path, run_dir: Path) -> dict[str, list[str]]:
    return {
        "inspect": ["demos", "inspect", str(ds), "--json"],
        "inspect --check": ["demos", "inspect", str(ds), "--check", "--json"],
        "replay": ["demos", "replay", str(ds), "--verify", "--json"],
        "train bc": ["train", "bc", "--demos", str(ds), "--run-dir", str(run_dir), "--no-progress", "--set",
                     "epochs=1", "--set", "eval_episodes=1", "--set", "val_fraction=0", "--json"],
        "record --append": ["demos", "record", "--env", "CartPole-v1", "--policy", "random", "--episodes", "1",
                            "--out", str(ds), "--seed", "100", "--append", "--quiet", "--json"],
    }


def first_pack(ds: Path) -> Path:
    return ds / "episodes" / "000000.pack"


def corrupt(ds: Path, target: str, how: str) -> None:
    path = {"manifest": ds / MANIFEST, "index": ds / INDEX, "pack": first_pack(ds)}[target]
    data = path.read_bytes()
    if how == "flip":
        i = len(data) // 2
        path.write_bytes(data[:i] + bytes([data[i] ^ 0x20]) + data[i + 1:])
    elif how == "truncate":
        path.write_bytes(data[:len(data) // 2])
    elif how == "delete":
        path.unlink()
    elif how == "wrong type":
        if target == "manifest":
            raw = json.loads(data)
            path.write_text(json.dumps({**raw, "format_version": "2", "env_kwargs": [1]}))
        elif target == "index":
            lines = data.split(b"\n")
            rec = json.loads(lines[1])
            lines[1] = json.dumps({**rec, "bytes": "abc", "offset": -5, "file": None}).encode()
            path.write_bytes(b"\n".join(lines))
        else:
            path.write_text("[]")
    elif how == "directory":
        path.unlink()
        path.mkdir()
    elif how == "fifo":
        path.unlink()
        os.mkfifo(path)


def original_episodes(ds: Path) -> list[tuple[int, str]]:
    return [(ep.seed, hashlib.sha256(ep.obs.tobytes() + ep.actions.tobytes()).hexdigest()) for ep in demos.load(ds)]


# ---------------------------------------------------------------------------------------------
# The corruption matrix
# ---------------------------------------------------------------------------------------------

TARGETS = ("manifest", "index", "pack")
DAMAGE = ("flip", "truncate", "delete", "wrong type", "directory", "fifo")
COMMANDS = ("inspect", "inspect --check", "replay", "train bc", "record --append")


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("how", DAMAGE)
def test_corruption_matrix(pristine, tmp_path, capsys, target, how):
    """Each command answers every damage with exit 2 and one line, or a result that is correct."""
    expected = original_episodes(pristine)
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"x" * 1500)
    tried = 0
    for name in COMMANDS:
        ds = tmp_path / name.replace(" ", "_").replace("-", "")
        shutil.copytree(pristine, ds)
        corrupt(ds, target, how)
        before = snapshot(ds)
        lines_before = (ds / INDEX).read_bytes() if (ds / INDEX).is_file() else b""
        code, out, err = run_cli(capsys, *commands(ds, tmp_path / f"run_{tried}")[name])
        tried += 1
        assert outside.read_bytes() == b"x" * 1500
        if code == 2:
            assert_one_line_error(code, err)
            if name == "record --append":
                assert snapshot(ds) == before, "a refused append changed the dataset"
            continue
        assert "Traceback" not in err
        # not refused: the answer must be right despite the damage
        if name == "inspect":
            info = json.loads(out)
            assert info["episodes"] == NUM_EPISODES or (code == 1 and info["problems"]), (target, how, info)
        elif name == "inspect --check":
            info = json.loads(out)
            assert (code == 0 and info["episodes"] == NUM_EPISODES and not info["problems"]) \
                or (code == 1 and info["problems"]), (target, how, info)
        elif name == "replay":
            report = json.loads(out)
            assert code == 0 and report["replayed"] == NUM_EPISODES and report["all_reproduced"], (target, how)
        elif name == "train bc":
            assert code == 0 and original_episodes(ds) == expected, (target, how)
        else:  # record --append (which reads no old episode): committed lines and bytes kept, one line more
            assert code == 0
            after = (ds / INDEX).read_bytes()
            assert after.startswith(lines_before) and after.count(b"\n") == lines_before.count(b"\n") + 1
            kept = {k: v for k, v in snapshot(ds).items() if k in before and k not in (INDEX, MANIFEST)}
            assert kept == {k: v for k, v in before.items() if k in kept}, "append changed committed bytes"
    assert tried == len(COMMANDS)


def test_a_cut_index_is_noticed_and_append_keeps_every_pack_byte(pristine, tmp_path, capsys):
    ds = tmp_path / "cut"
    shutil.copytree(pristine, ds)
    lines = (ds / INDEX).read_bytes().split(b"\n")
    (ds / INDEX).write_bytes(b"\n".join(lines[:2]) + b"\n")  # 2 of 6 lines survive
    packs = snapshot(ds / "episodes")
    for name in ("inspect", "inspect --check", "replay", "train bc", "record --append"):
        code, _, err = run_cli(capsys, *commands(ds, tmp_path / "run")[name])
        assert_one_line_error(code, err, "covered by no index line", "demos repair")
    assert snapshot(ds / "episodes") == packs  # nothing truncated or deleted
    result = demos.repair(ds)
    assert result["episodes"] == NUM_EPISODES and result["previously_indexed"] == 2 and not result["ignored"]
    assert original_episodes(ds) == original_episodes(pristine)
    assert Path(result["old_index"]).read_bytes() == b"\n".join(lines[:2]) + b"\n"  # the old index is kept


def test_a_deleted_index_with_packs_is_detected_and_repaired(pristine, tmp_path, capsys):
    ds = tmp_path / "noindex"
    shutil.copytree(pristine, ds)
    (ds / INDEX).unlink()
    code, _, err = run_cli(capsys, "demos", "inspect", str(ds))
    assert_one_line_error(code, err, "episodes.jsonl is missing", "demos repair")
    code, _, err = run_cli(capsys, *commands(ds, tmp_path / "run")["record --append"])
    assert_one_line_error(code, err, "cannot append")
    assert sorted(p.name for p in (ds / "episodes").iterdir()) == ["000000.pack", "000004.pack"]
    code, out, err = run_cli(capsys, "demos", "repair", str(ds), "--json")
    assert code == 0 and json.loads(out)["episodes"] == NUM_EPISODES, err
    assert original_episodes(ds) == original_episodes(pristine)
    assert demos.inspect_dataset(ds, check=True)["problems"] == []


def test_repair_sets_aside_garbage_and_torn_tails_and_keeps_them(pristine, tmp_path):
    ds = tmp_path / "garbage"
    shutil.copytree(pristine, ds)
    pack = first_pack(ds)
    data = pack.read_bytes()
    records = [json.loads(line) for line in (ds / INDEX).read_text().splitlines()]
    second = records[1]["offset"]
    # garbage between archive 0 and 1, a torn archive at the end; the index is gone
    pack.write_bytes(data[:second] + b"\x00garbage\x00" * 5 + data[second:] + data[:100])
    (ds / INDEX).unlink()
    result = demos.repair(ds)
    assert result["episodes"] == NUM_EPISODES
    assert [(i["offset"], i["bytes"]) for i in result["ignored"]] == [(second, 45), (len(data) + 45, 100)]
    assert original_episodes(ds) == original_episodes(pristine)
    assert pack.stat().st_size == len(data) + 145  # set aside, not deleted
    demos.record(RandomPolicy(demos.load(ds).action_space, seed=2), "CartPole-v1", 1, ds, seed=50, append=True)
    assert len(demos.load(ds)) == NUM_EPISODES + 1


def test_repair_reads_format_2_archives_through_their_surviving_index_lines(pristine, tmp_path):
    ds = tmp_path / "v2"
    shutil.copytree(pristine, ds)
    # rewrite as format 2: archives without meta.json, the index pointing at them
    records = [json.loads(line) for line in (ds / INDEX).read_text().splitlines()]
    packs: dict[str, bytes] = {}
    for rec, ep in zip(records, demos.load(pristine)):
        data = codec.npz_bytes({"obs": ep.obs, "actions": ep.actions})
        rec.update(offset=len(packs.get(rec["file"], b"")), bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
        packs[rec["file"]] = packs.get(rec["file"], b"") + data
    for rel, data in packs.items():
        (ds / rel).write_bytes(data)
    (ds / INDEX).write_text("".join(json.dumps(r) + "\n" for r in records))
    (ds / INDEX).write_text("".join(json.dumps(r) + "\n" for r in records[:5]) + '{"index": 5, "broken')
    result = demos.repair(ds)  # the 6th line is lost: its archive has no meta.json, so it is set aside
    assert result["episodes"] == 5 and len(result["ignored"]) == 1
    assert original_episodes(ds) == original_episodes(pristine)[:5]


# ---------------------------------------------------------------------------------------------
# Malicious fixtures
# ---------------------------------------------------------------------------------------------

def rewrite_index(ds: Path, line: int, **changes) -> None:
    lines = (ds / INDEX).read_text().splitlines()
    lines[line] = json.dumps({**json.loads(lines[line]), **changes})
    (ds / INDEX).write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("where", ["../outside.bin", "ABSOLUTE", "episodes/../../outside.bin", "episodes/sub/x"])
def test_index_paths_cannot_leave_the_dataset(pristine, tmp_path, capsys, where):
    ds = tmp_path / "ds"
    shutil.copytree(pristine, ds)
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"o" * 1500)
    last = NUM_EPISODES - 1
    rewrite_index(ds, last, file=str(outside) if where == "ABSOLUTE" else where, offset=10, bytes=1490)
    for name in ("inspect", "inspect --check", "replay", "record --append"):
        code, _, err = run_cli(capsys, *commands(ds, tmp_path / "run")[name])
        assert_one_line_error(code, err, "may only name plain files in episodes/")
    assert outside.read_bytes() == b"o" * 1500


def test_symlinks_and_fifos_are_refused_at_once(pristine, tmp_path, capsys):
    ds = tmp_path / "ds"
    shutil.copytree(pristine, ds)
    outside = tmp_path / "outside.bin"
    outside.write_bytes(first_pack(pristine).read_bytes() + b"tail")  # a pack out there, with a tail
    first_pack(ds).unlink()
    first_pack(ds).symlink_to(outside)
    for name in ("inspect", "replay", "record --append"):
        code, _, err = run_cli(capsys, *commands(ds, tmp_path / "run")[name])
        assert_one_line_error(code, err, "symbolic link")
    assert outside.read_bytes().endswith(b"tail")  # append did not "trim" the file out there

    ds2 = tmp_path / "fifo"
    shutil.copytree(pristine, ds2)
    os.mkfifo(ds2 / "episodes" / "pipe")
    rewrite_index(ds2, 0, file="episodes/pipe")
    t0 = time.monotonic()
    for name in ("inspect", "inspect --check", "replay"):
        code, _, err = run_cli(capsys, *commands(ds2, tmp_path / "run")[name], timeout=20)
        assert_one_line_error(code, err, "FIFO")
    assert time.monotonic() - t0 < 15


def test_a_zip_bomb_is_refused_before_inflating(pristine, tmp_path, capsys):
    ds = tmp_path / "bomb"
    shutil.copytree(pristine, ds)
    # an attacker controls the index too: the bomb's checksum and size match its line
    bomb = codec.zip_bytes({"obs.npy": (bytes(256 * 2**20), True), "actions.npy": (b"", True)})
    assert len(bomb) < 400_000
    pack = first_pack(ds)
    records = [json.loads(line) for line in (ds / INDEX).read_text().splitlines()]
    delta = len(bomb) - records[0]["bytes"]
    pack.write_bytes(bomb + pack.read_bytes()[records[0]["bytes"]:])  # in place of episode 0
    records[0].update(bytes=len(bomb), sha256=hashlib.sha256(bomb).hexdigest())
    for rec in records[1:]:
        if rec["file"] == records[0]["file"]:
            rec["offset"] += delta
    (ds / INDEX).write_text("".join(json.dumps(r) + "\n" for r in records))
    tracemalloc.start()
    with pytest.raises(RLKitError, match="refused before inflating"):
        demos.load(ds, skip_corrupt=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 32 * 2**20, f"{peak / 2**20:.0f} MiB allocated"
    code, _, err = run_cli(capsys, "demos", "replay", str(ds))
    assert_one_line_error(code, err, "episode 0", "refused before inflating")


def test_a_module_prefixed_env_id_is_imported_only_when_named(pristine, tmp_path, capsys, monkeypatch):
    marker = tmp_path / "payload-ran"
    module = tmp_path / "mods" / "evil_envs_for_test.py"
    module.parent.mkdir()
    module.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n")
    monkeypatch.syspath_prepend(str(module.parent))
    ds = tmp_path / "evil"
    shutil.copytree(pristine, ds)
    manifest = json.loads((ds / MANIFEST).read_text())
    (ds / MANIFEST).write_text(json.dumps({**manifest, "env_id": "evil_envs_for_test:CartPole-v1"}))
    for name in ("replay", "train bc"):
        code, _, err = run_cli(capsys, *commands(ds, tmp_path / "run")[name])
        assert_one_line_error(code, err, "--env evil_envs_for_test:CartPole-v1")
    code, out, err = run_cli(capsys, *commands(ds, tmp_path / "run")["inspect"])
    assert code == 0 and json.loads(out)["env_id"] == "evil_envs_for_test:CartPole-v1"
    code, _, err = run_cli(capsys, *commands(ds, tmp_path / "run")["record --append"])  # --env CartPole-v1
    assert code == 0, err
    assert not marker.exists(), "a module named in a dataset was imported"
    # named by the user: now it is their decision
    code, out, err = run_cli(capsys, "demos", "replay", str(ds), "--env", "evil_envs_for_test:CartPole-v1", "--json")
    assert code == 0 and marker.exists(), err


def test_uncommitted_tail_rules(pristine, tmp_path):
    """A torn archive after the last committed one is cut by the next append; a complete one is committed."""
    ds = tmp_path / "tail"
    shutil.copytree(pristine, ds)
    pack = ds / "episodes" / "000004.pack"  # the last session's pack
    committed = pack.read_bytes()
    full = committed[json.loads((ds / INDEX).read_text().splitlines()[-1])["offset"]:]  # archive of episode 5
    # a complete archive claiming to be episode 6, its index line lost to a kill
    ep = demos.load(pristine)[5]
    from rlkit.demos.archive import encode_episode

    orphan = encode_episode(ep.obs, ep.actions, None, {"index": 6, "length": ep.length, "terminated": ep.terminated,
                                                       "truncated": ep.truncated, "seed": 77, "options": None,
                                                       "rewards": False, "episode_return": 1.0, "source": "x"})
    pack.write_bytes(committed + orphan)
    info = demos.inspect_dataset(ds)
    assert info["episodes"] == NUM_EPISODES and info["uncommitted"][0]["complete"] is True
    policy = RandomPolicy(demos.load(ds).action_space, seed=3)
    demos.record(policy, "CartPole-v1", 1, ds, seed=90, append=True)
    loaded = demos.load(ds)
    assert [e.seed for e in loaded][NUM_EPISODES:] == [77, 90]  # adopted, then the new one
    # a torn archive: cut off by the next append, and only it
    pack2 = ds / "episodes" / "000007.pack"
    kept = pack2.read_bytes()
    pack2.write_bytes(kept + full[:len(full) // 2])
    assert demos.inspect_dataset(ds)["uncommitted"][0]["complete"] is False
    demos.record(policy, "CartPole-v1", 1, ds, seed=91, append=True)
    assert pack2.read_bytes() == kept and len(demos.load(ds)) == NUM_EPISODES + 3
    # two complete archives after the last line are not a crash: refused, nothing cut
    pack3 = ds / "episodes" / "000008.pack"
    pack3.write_bytes(pack3.read_bytes() + full + full)
    before = snapshot(ds)
    with pytest.raises(RLKitError, match="demos repair"):
        demos.record(policy, "CartPole-v1", 1, ds, seed=92, append=True)
    assert snapshot(ds) == before


# ---------------------------------------------------------------------------------------------
# kill -9 during recording
# ---------------------------------------------------------------------------------------------

def kill_and_append(tmp_path: Path, rng: np.random.Generator, n: int) -> dict[str, int]:
    out = tmp_path / f"killed{n}"
    cmd = [sys.executable, "-m", "rlkit.apps.cli", "demos", "record", "--env", "CartPole-v1", "--policy", "random",
           "--episodes", "1000000", "--out", str(out), "--seed", "0"]
    if n % 2:  # every other kill lands in an appending session (its own pack after the first one's)
        demos.record(RandomPolicy(gym.spaces.Discrete(2), seed=n), "CartPole-v1", 3, out, seed=10**5,
                     source="random")
        cmd += ["--append", "--seed", "1000"]
    if n % 3 != 1:  # fsync after the archive widens the window between it and its index line
        cmd += ["--fsync"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=REPO)
    try:
        assert proc.stderr.readline().startswith("episode "), "the recorder did not start"
        time.sleep(float(rng.uniform(0.0, 0.4)))  # a seeded random moment after the first commit
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    committed = (out / INDEX).read_bytes()
    committed = committed[:committed.rfind(b"\n") + 1]
    count = committed.count(b"\n")
    tail = sum(p.stat().st_size for p in (out / "episodes").iterdir()) \
        - sum(json.loads(line)["bytes"] for line in committed.splitlines())
    stats = demos.record(RandomPolicy(gym.spaces.Discrete(2), seed=n), "CartPole-v1", 2, out, seed=10**6,
                         source="append", append=True)
    after = (out / INDEX).read_bytes()
    assert after.startswith(committed), "a committed index line changed"
    ds = demos.load(out)  # checksums and coverage verified
    adopted = len(ds) - count - 2
    assert adopted in (0, 1) and stats["total_episodes"] == len(ds)
    assert [ep.index for ep in ds] == list(range(len(ds)))
    locations = [(json.loads(line)["file"], json.loads(line)["offset"]) for line in after.splitlines()]
    assert len(set(locations)) == len(locations), "an episode is indexed twice"
    assert [ep.seed for ep in ds][-2:] == [10**6, 10**6 + 1]
    assert sum(p.stat().st_size for p in (out / "episodes").iterdir()) == sum(
        json.loads(line)["bytes"] for line in after.splitlines())  # only the dead writer's tail went
    return {"committed": count, "adopted": adopted, "tail_bytes": tail}


def test_kill_9_during_recording_then_append_fast(tmp_path):
    rng = np.random.default_rng(7)
    results = [kill_and_append(tmp_path, rng, n) for n in range(2)]
    assert all(r["committed"] >= 1 for r in results)


@pytest.mark.slow
def test_kill_9_during_recording_then_append_ten_times(tmp_path):
    rng = np.random.default_rng(2026)
    results = [kill_and_append(tmp_path, rng, n) for n in range(10)]
    assert len(results) == 10 and all(r["committed"] >= 1 for r in results)
