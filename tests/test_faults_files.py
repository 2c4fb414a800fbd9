"""Issue 19, round 2 of trust: what rlkit writes, a full disk, values beyond any machine, and what `eval` takes.

* every file rlkit writes, trims or replaces in a run, a dataset or a tune study is a plain file inside it:
  a planted symlink (metrics.csv, config.json, final.json, checkpoints/, checkpoints/best/, a tune plot,
  study.db, a dataset's ignored.jsonl) is refused in one line and its target keeps every byte;
* a full disk (a real 2 MB tmpfs when root, else skipped; plus simulated ENOSPC) is one line naming the
  path and the free space, exit 2, no temporary file left, the last committed checkpoint still loads;
* sizes have upper bounds (total_steps=1e99 for every agent, num_envs, hidden widths), networks are
  measured before they are built, and a FIFO given as --space or --preset is refused without blocking;
* `rlkit eval` of something that is not a run or checkpoint says what it expects.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from rlkit import demos
from rlkit.checkpoint import atomic_open, list_checkpoints, load_checkpoint, save_best_checkpoint, save_checkpoint
from rlkit.config import apply_overrides, resolve_preset
from rlkit.errors import RLKitError
from rlkit.registry import agent_names, get_agent
from rlkit.run import clean_metrics
from tests.conftest import run_cli
from tests.test_faults_run import rlkit

TINY = ["--env", "CartPole-v1", "--preset", "none", "--no-progress", "--set", "learning_starts=100",
        "--set", "eval_episodes=1", "--set", "tensorboard=false"]


def assert_one_line_error(code: int, err: str, *names: str) -> str:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("rlkit: error: "), err
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


def outside_file(tmp_path: Path, name: str = "precious.txt") -> tuple[Path, bytes]:
    """A file outside every run, with content that must survive."""
    target = tmp_path / "elsewhere" / name
    target.parent.mkdir(exist_ok=True)
    content = b"global_step,wall_s\n1,0.5\nprecious bytes, not rlkit's\n"
    target.write_bytes(content)
    return target, content


def no_temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".") and p.name.endswith(".tmp")]


# ---------------------------------------------------------------------------------------------
# 4. Symlinks: nothing outside the run, dataset or study is written, trimmed or truncated
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["metrics.csv", "config.json", "final.json"])
def test_a_symlinked_run_file_is_refused_and_its_target_untouched(tmp_path, capsys, name, faults):
    faults.held("symlinks where rlkit writes or reads refused")  # counted only if this test passes
    target, content = outside_file(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / name).symlink_to(target)
    code, _, err = rlkit(capsys, "train", "dqn", *TINY, "--steps", "200", "--run-dir", run)
    assert_one_line_error(code, err, str(run / name), "symbolic link")
    assert target.read_bytes() == content
    assert (run / name).is_symlink()


def test_resume_trim_of_a_symlinked_metrics_csv_is_refused(tmp_path, faults):
    faults.held("symlinks where rlkit writes or reads refused")  # counted only if this test passes
    target, content = outside_file(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.csv").symlink_to(target)
    with pytest.raises(RLKitError, match="symbolic link"):
        clean_metrics(tmp_path / "run" / "metrics.csv", up_to_step=0)
    assert target.read_bytes() == content


def test_a_symlinked_checkpoints_dir_is_refused_before_anything_is_cleaned(tmp_path, capsys, faults):
    faults.held("symlinks where rlkit writes or reads refused")  # counted only if this test passes
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / ".someone-elses.tmp").write_text("not a leftover of rlkit")
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoints").symlink_to(elsewhere, target_is_directory=True)
    code, _, err = rlkit(capsys, "train", "dqn", *TINY, "--steps", "200", "--set", "checkpoint_every=100",
                         "--run-dir", run)
    assert_one_line_error(code, err, str(run / "checkpoints"), "symbolic link")
    assert sorted(p.name for p in elsewhere.iterdir()) == [".someone-elses.tmp"]


def test_a_symlinked_best_dir_is_refused(tmp_path, faults):
    faults.held("symlinks where rlkit writes or reads refused")  # counted only if this test passes
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine")
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "best").symlink_to(elsewhere, target_is_directory=True)
    state = {"agent": "x", "global_step": 1, "config": {}, "best_return": 1.0}
    with pytest.raises(RLKitError, match="best is a symbolic link"):
        save_best_checkpoint(tmp_path / "run", state, 1)
    assert (tmp_path / "run" / "checkpoints" / "best").is_symlink()
    assert sorted(p.name for p in elsewhere.iterdir()) == ["keep.txt"]


def one_trial_study():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    return study


def test_a_symlinked_tune_plot_is_not_truncated(tmp_path, faults):
    faults.held("symlinks where rlkit writes or reads refused")  # counted only if this test passes
    from rlkit.apps.tune import write_plots

    target, content = outside_file(tmp_path)
    out = tmp_path / "study"
    out.mkdir()
    (out / "optimization_history.png").symlink_to(target)
    with pytest.raises(RLKitError, match="optimization_history.png is a symbolic link"):
        write_plots(one_trial_study(), out)
    assert target.read_bytes() == content


def test_a_symlinked_study_db_is_refused(tmp_path, faults):
    faults.held("symlinks where rlkit writes or reads refused")  # counted only if this test passes
    from rlkit.apps.tune import tune

    target = tmp_path / "elsewhere.db"
    target.write_bytes(b"")  # SQLite would make an empty file its database
    out = tmp_path / "study"
    out.mkdir()
    (out / "study.db").symlink_to(target)
    with pytest.raises(RLKitError, match="study.db is a symbolic link"):
        tune("dqn", "CartPole-v1", 1, out, steps=100, evaluations=1, eval_episodes=1, log=lambda line: None)
    assert target.read_bytes() == b""


def tiny_dataset(path: Path) -> None:
    obs_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    with demos.DatasetWriter(path, "CartPole-v1", obs_space, gym.spaces.Discrete(2), source="random") as writer:
        writer.add_episode(np.zeros((3, 2), np.float32), np.array([0, 1]), True, False, seed=0)


def test_repair_refuses_a_symlinked_ignored_list_before_moving_the_index(tmp_path, faults):
    faults.held("symlinks where rlkit writes or reads refused")  # counted only if this test passes
    target, content = outside_file(tmp_path)
    ds = tmp_path / "ds"
    tiny_dataset(ds)
    index_before = (ds / "episodes.jsonl").read_bytes()
    (ds / "ignored.jsonl").symlink_to(target)
    with pytest.raises(RLKitError, match="ignored.jsonl is a symbolic link"):
        demos.repair(ds)
    assert target.read_bytes() == content
    assert (ds / "episodes.jsonl").read_bytes() == index_before
    assert not list(ds.glob("episodes.jsonl.before-repair-*"))


# ---------------------------------------------------------------------------------------------
# 7. A full disk: one line with the path and the free space, no temporary file, the last checkpoint intact
# ---------------------------------------------------------------------------------------------

def test_a_full_disk_in_atomic_open_is_one_line_and_leaves_no_temp_file(tmp_path, faults):
    faults.held("full disk: one line, nothing partial left")  # counted only if this test passes
    with pytest.raises(RLKitError, match=r"no space left .*final\.json \(.* free\)"):
        with atomic_open(tmp_path / "final.json") as f:
            f.write(b"{")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_in_a_checkpoint_is_one_line_and_leaves_no_temp_dir(tmp_path, monkeypatch, faults):
    faults.held("full disk: one line, nothing partial left")  # counted only if this test passes
    import torch

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0: file write failed")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(RLKitError, match=r"no space left .*step_0000000001 \(.* free\)"):
        save_checkpoint(tmp_path, {"agent": "x", "global_step": 1, "config": {}}, 1)
    assert no_temp_files(tmp_path) == [] and list_checkpoints(tmp_path) == []


def pack_bytes(ds: Path) -> int:
    return sum(p.stat().st_size for p in (ds / "episodes").iterdir())


def test_a_full_disk_while_recording_is_one_line(tmp_path, monkeypatch, faults):
    faults.held("full disk: one line, nothing partial left")  # counted only if this test passes
    from rlkit.demos import writer as writer_module

    ds = tmp_path / "ds"
    tiny_dataset(ds)
    index_before, packs_before = (ds / "episodes.jsonl").read_bytes(), pack_bytes(ds)

    def full(fd, data):
        os.write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    obs_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    monkeypatch.setattr(writer_module, "_write_all", full)
    with demos.DatasetWriter(ds, "CartPole-v1", obs_space, gym.spaces.Discrete(2), source="random",
                             append=True) as writer:
        with pytest.raises(RLKitError, match=r"no space left .*episodes/.* \(.* free\)"):
            writer.add_episode(np.zeros((3, 2), np.float32), np.array([0, 1]), True, False, seed=1)
    assert (ds / "episodes.jsonl").read_bytes() == index_before
    assert pack_bytes(ds) == packs_before  # the half-written archive was cut off again


@contextlib.contextmanager
def tiny_disk(tmp_path: Path, size: str = "2m"):
    """A real ``size`` tmpfs at ``tmp_path/disk`` (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> None:
    """Take every free byte of ``disk``."""
    with open(disk / "filler", "wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()


def test_training_on_a_full_disk_is_one_line_with_the_path_and_free_space(tmp_path, faults):
    faults.held("full disk: one line, nothing partial left")  # counted only if this test passes
    with tiny_disk(tmp_path) as disk:
        run = disk / "run"
        # a 100,000-transition replay buffer (~4 MB) cannot fit beside anything on 2 MB
        done = run_cli("train", "dqn", "--env", "CartPole-v1", "--preset", "none", "--no-progress", "--steps", "400",
                       "--set", "checkpoint_every=200", "--set", "learning_starts=100", "--run-dir", str(run),
                       timeout=120)
        line = assert_one_line_error(done.returncode, done.stderr, "no space left", str(run), "free")
        assert "Traceback" not in done.stderr and "inline_container" not in line
        assert no_temp_files(run) == []


def test_resume_on_a_full_disk_is_one_line_and_the_last_checkpoint_loads(tmp_path, faults):
    faults.held("full disk: one line, nothing partial left")  # counted only if this test passes
    with tiny_disk(tmp_path) as disk:
        run = disk / "run"
        first = run_cli("train", "dqn", *TINY, "--steps", "400", "--set", "checkpoint_every=200",
                        "--set", "save_buffer=false", "--run-dir", str(run), timeout=120)
        assert first.returncode == 0, first.stderr
        fill(disk)
        done = run_cli("train", "dqn", "--resume", str(run), "--steps", "800", "--no-progress", timeout=120)
        assert_one_line_error(done.returncode, done.stderr, "no space left", str(run), "free")
        assert no_temp_files(run) == []
        (disk / "filler").unlink()
        assert load_checkpoint(run)["global_step"] == 400


def test_recording_onto_a_full_disk_is_one_line_and_keeps_the_committed_episodes(tmp_path, faults):
    faults.held("full disk: one line, nothing partial left")  # counted only if this test passes
    with tiny_disk(tmp_path) as disk:
        (disk / "filler").write_bytes(b"\0" * 1_800_000)  # about 200 KB left: a few dozen episodes
        ds = disk / "ds"
        done = run_cli("demos", "record", "--env", "CartPole-v1", "--policy", "random", "--episodes", "1000",
                       "--out", str(ds), timeout=120)
        errors = [line for line in done.stderr.splitlines() if line.startswith("rlkit: error")]
        assert done.returncode == 2 and len(errors) == 1, done.stderr[-2000:]
        assert "no space left" in errors[0] and str(ds) in errors[0] and "free" in errors[0]
        assert "Traceback" not in done.stderr and no_temp_files(ds) == []
        (disk / "filler").unlink()
        inspected = run_cli("demos", "inspect", str(ds), "--json", timeout=60)
        assert inspected.returncode == 0, inspected.stderr  # every committed episode reads back whole


# ---------------------------------------------------------------------------------------------
# 9. Values no machine holds are refused in one line
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("agent", sorted(agent_names()))
def test_total_steps_1e99_is_refused_by_every_agent(agent, faults):
    faults.held("bad values refused")  # counted only if this test passes
    spec = get_agent(agent)
    cfg = apply_overrides(spec.config_cls(), spec.defaults, source="agent defaults")
    with pytest.raises(RLKitError) as caught:
        apply_overrides(cfg, {"total_steps": "1e99"})
    message = str(caught.value)
    assert "total_steps" in message and "1e+99" in message and "\n" not in message and len(message) < 200


@pytest.mark.parametrize(("agent", "field", "value"), [
    ("ppo", "num_envs", "100000"), ("a2c", "num_envs", "100000"), ("dqn", "num_envs", "100000"),
    ("ppo", "hidden", "[1000000,1000000]"), ("dqn", "hidden", "[1000000,1000000]"),
    ("sac", "hidden", "[1000000,1000000]"), ("a3c", "num_workers", "100000"),
])
def test_sizes_beyond_a_machine_are_refused(agent, field, value, faults):
    faults.held("bad values refused")  # counted only if this test passes
    spec = get_agent(agent)
    cfg = apply_overrides(spec.config_cls(), spec.defaults, source="agent defaults")
    with pytest.raises(RLKitError, match=f"option '{field}' must be in"):
        apply_overrides(cfg, {field: value})


def test_a_network_is_measured_before_it_is_built(monkeypatch, faults):
    faults.held("bad values refused")  # counted only if this test passes
    import rlkit.memory
    from rlkit.nets import QCriticEnsemble, mlp

    monkeypatch.setattr(rlkit.memory, "available_memory", lambda: 2**20)  # 1 MiB left
    with pytest.raises(RLKitError, match=r"training a network of 16,809,986 parameters .* needs 0.25 GiB, but this "
                                         r"machine has 0.00 GiB available; lower the hidden sizes"):
        mlp(4, 2, [4096, 4096])
    box = gym.spaces.Box(-1, 1, (3,), np.float32)
    with pytest.raises(RLKitError, match="lower the hidden sizes"):
        QCriticEnsemble(box, box, hidden=[1024, 1024], n_critics=2)
    assert mlp(4, 2, [64, 64]) is not None  # 4,610 parameters fit


def test_a_rollout_is_measured_before_it_is_allocated(monkeypatch, faults):
    faults.held("bad values refused")  # counted only if this test passes
    from rlkit.envs import make_vec_env

    import rlkit.memory
    from rlkit.rollouts import collect_rollout

    monkeypatch.setattr(rlkit.memory, "available_memory", lambda: 2**20)
    def actor(obs):
        raise AssertionError("the rollout's arrays were allocated before they were measured")

    envs = make_vec_env("CartPole-v1", 2, seed=0)
    try:
        with pytest.raises(RLKitError, match="a rollout of 1,000,000 steps x 2 envs needs .* lower n_steps"):
            collect_rollout(envs, envs.reset(seed=0), actor, 1_000_000)
    finally:
        envs.close()


def test_a_fifo_as_search_space_is_refused_without_blocking(tmp_path, faults):
    faults.held("bad values refused")  # counted only if this test passes
    fifo = tmp_path / "space.yaml"
    os.mkfifo(fifo)
    try:
        done = run_cli("tune", "dqn", "--env", "CartPole-v1", "--trials", "1", "--space", str(fifo),
                       "--out", str(tmp_path / "out"), timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("rlkit tune --space FIFO blocked on the FIFO")
    assert_one_line_error(done.returncode, done.stderr, str(fifo), "not a regular file")


def test_a_fifo_as_preset_says_not_a_regular_file(tmp_path, faults):
    faults.held("bad values refused")  # counted only if this test passes
    fifo = tmp_path / "mine.yaml"
    os.mkfifo(fifo)
    with pytest.raises(RLKitError, match=f"{fifo} is not a regular file"):
        resolve_preset({}, str(fifo), "dqn")


# ---------------------------------------------------------------------------------------------
# 10. `rlkit eval` of something that is not a run or a checkpoint says what it expects
# ---------------------------------------------------------------------------------------------

def test_eval_of_a_bare_pt_file_says_what_is_expected(tmp_path, capsys, faults):
    faults.held("bad values refused")  # counted only if this test passes
    import torch

    bare = tmp_path / "bare.pt"
    torch.save({"weights": torch.zeros(2)}, bare)
    code, _, err = rlkit(capsys, "eval", bare)
    line = assert_one_line_error(code, err, f"{bare} is not an rlkit checkpoint", "run directory",
                                 "checkpoints/step_N", "state.pt", "checksums.json")
    assert "no checkpoints in" not in line


def test_eval_of_a_plain_folder_says_what_is_expected(tmp_path, capsys, faults):
    faults.held("bad values refused")  # counted only if this test passes
    code, _, err = rlkit(capsys, "eval", tmp_path)
    assert_one_line_error(code, err, f"{tmp_path} is neither an rlkit run directory nor a checkpoint",
                          "state.pt", "checksums.json")
