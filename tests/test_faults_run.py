"""Fault suite for run directories (issue 13): malicious files, a corruption matrix, bad values, kill -9 and
SIGTERM. Each case ends in exit 2 with one line and no traceback, or in a correct result; no payload runs.

Most cases call ``rlkit.apps.cli.main`` in this process (the same code as the console script, without paying
torch's import per case); the kill -9 and SIGTERM cases run real subprocesses. Counts of what was tried
go to the ``faults`` fixture (tests/conftest.py), printed at the end of the run for the README's Reliability
section.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from rlkit import demos
from rlkit.apps.cli import main
from rlkit.checkpoint import list_checkpoints, load_buffer, load_checkpoint, save_checkpoint
from rlkit.registry import agent_names, get_agent
from tests.test_checkpoint import Payload, write_step_dir

BASE_STEPS = 600
SMALL = ["--set", "checkpoint_every=300", "--set", "log_every=100", "--set", "buffer_size=1000",
         "--set", "learning_starts=100", "--set", "eval_episodes=1", "--set", "tensorboard=false"]


def rlkit(capsys, *args: str) -> tuple[int, str, str]:
    """``rlkit ARGS`` in this process: (exit status, stdout, stderr)."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, names: str | None = None) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("rlkit: error: "), err
    assert "Traceback" not in err
    if names is not None:
        assert names in lines[0], lines[0]


def metric_steps(run: Path) -> list[int]:
    with open(run / "metrics.csv", newline="") as f:
        return [int(row["global_step"]) for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished dqn run with two checkpoints (each with its buffer), metrics.csv and final.json."""
    run = tmp_path_factory.mktemp("base") / "run"
    main_args = ["train", "dqn", "--env", "CartPole-v1", "--steps", str(BASE_STEPS), "--run-dir", str(run),
                 "--no-progress", *SMALL]
    with pytest.raises(SystemExit) as e:
        main(main_args)
    assert e.value.code == 0
    assert [p.name for p in list_checkpoints(run)] == ["step_0000000300", "step_0000000600"]
    return run


def copy_run(finished_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    return run


# ------------------------------------------------------------------------------------ malicious files
def malicious_checkpoint(tmp_path: Path, marker: Path, top_level: bool = False) -> Path:
    run = tmp_path / "evil_run"
    state = Payload(marker) if top_level else {"agent": "dqn", "global_step": 1, "config": {}, "x": Payload(marker)}
    write_step_dir(run / "checkpoints" / "step_0000000001", {"state.pt": state})
    return run


def test_malicious_checkpoint_is_refused_by_every_reader(tmp_path, capsys, faults):
    marker = tmp_path / "PWNED"
    run = malicious_checkpoint(tmp_path, marker)
    lone = malicious_checkpoint(tmp_path / "lone", marker, top_level=True) / "checkpoints" / "step_0000000001"
    cases = [
        ["eval", run],
        ["eval", lone / "state.pt"],  # refused before the "not an rlkit checkpoint" check could run
        ["demos", "record", "--env", "CartPole-v1", "--policy", lone / "state.pt", "--episodes", "1",
         "--out", tmp_path / "ds"],
    ]
    for args in cases:
        code, _, err = rlkit(capsys, *args)
        assert_one_line_error(code, err, "refusing to load")
        assert not marker.exists()
        faults.held("malicious files refused", 1)


def test_malicious_replay_buffer_is_refused_on_resume(finished_run, tmp_path, capsys, faults):
    marker = tmp_path / "PWNED"
    run = copy_run(finished_run, tmp_path)
    latest = list_checkpoints(run)[-1]
    state = torch.load(latest / "state.pt", weights_only=True)
    write_step_dir(latest, {"state.pt": state, "buffer.pt": {"pos": Payload(marker)}})
    code, _, err = rlkit(capsys, "train", "dqn", "--resume", run, "--steps", BASE_STEPS + 300, "--no-progress")
    assert_one_line_error(code, err, "buffer.pt")
    assert not marker.exists()
    faults.held("malicious files refused", 1)


def test_malicious_dagger_expert_is_refused_on_resume(tmp_path, capsys, faults):
    from rlkit.agents.dagger import DAggerConfig

    marker = tmp_path / "PWNED"
    expert = malicious_checkpoint(tmp_path, marker)
    run = tmp_path / "dagger_run"
    run.mkdir()
    cfg = DAggerConfig(env_id="CartPole-v1", expert=str(expert), run_dir=str(run))
    (run / "config.json").write_text(json.dumps(dataclasses.asdict(cfg)))
    code, _, err = rlkit(capsys, "train", "dagger", "--resume", run, "--no-progress")
    assert_one_line_error(code, err, "refusing to load")
    assert not marker.exists()
    faults.held("malicious files refused", 1)


def test_pickles_inside_an_sb3_zip_of_a_checkpoint_never_run(tmp_path, faults):
    """GAIL/AIRL/preference checkpoints carry PPO as SB3 zip bytes, whose classes and schedules are cloudpickles."""
    import base64
    import io
    import pickle
    import zipfile

    import numpy as np
    from rlkit.agents.adversarial import load_sb3_policy, sb3_bytes
    from stable_baselines3 import PPO

    from rlkit.errors import RLKitError

    marker = tmp_path / "PWNED"
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32)

    def tampered(keys: tuple[str, ...]) -> bytes:
        src, out = zipfile.ZipFile(io.BytesIO(sb3_bytes(model))), io.BytesIO()
        with zipfile.ZipFile(out, "w") as dst:
            for name in src.namelist():
                data = src.read(name)
                if name == "data":
                    d = json.loads(data)
                    payload = base64.b64encode(pickle.dumps(Payload(marker))).decode()
                    for key in keys:
                        d[key] = {":type:": "x", ":serialized:": payload}
                    data = json.dumps(d).encode()
                dst.writestr(name, data)
        return out.getvalue()

    state = {"observation_space": model.observation_space, "action_space": model.action_space}
    policy = load_sb3_policy({**state, "ppo_zip": tampered(("policy_class", "clip_range", "observation_space"))})
    assert policy.act(np.zeros((1, 4), np.float32)).shape == (1,)  # every pickled entry was supplied by rlkit
    with pytest.raises(RLKitError, match="refusing"):
        load_sb3_policy({**state, "ppo_zip": tampered(("something_else",))})
    assert not marker.exists()
    faults.held("malicious files refused", 2)


def test_code_named_in_a_run_file_is_not_imported(finished_run, tmp_path, capsys, monkeypatch, faults):
    """A module:Env id or python: expert read from a run's own files is imported only when the user names it."""
    marker = tmp_path / "IMPORTED"
    (tmp_path / "evil_mod.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef f(obs): return obs\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    run = copy_run(finished_run, tmp_path)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "env_id": "evil_mod:Evil-v0"}))
    code, _, err = rlkit(capsys, "train", "dqn", "--resume", run, "--no-progress")
    assert_one_line_error(code, err, "--env evil_mod:Evil-v0")
    state = load_checkpoint(run)
    state["config"]["env_id"] = "evil_mod:Evil-v0"
    del state["checkpoint_dir"]
    save_checkpoint(tmp_path / "ckpt", state, 1)
    code, _, err = rlkit(capsys, "eval", tmp_path / "ckpt")
    assert_one_line_error(code, err, "--env evil_mod:Evil-v0")
    from rlkit.agents.dagger import DAggerConfig

    dagger = tmp_path / "dagger_run"
    dagger.mkdir()
    cfg = DAggerConfig(env_id="CartPole-v1", expert="python:evil_mod:f", run_dir=str(dagger))
    (dagger / "config.json").write_text(json.dumps(dataclasses.asdict(cfg)))
    code, _, err = rlkit(capsys, "train", "dagger", "--resume", dagger, "--no-progress")
    assert_one_line_error(code, err, "--set expert=python:evil_mod:f")
    assert not marker.exists()
    faults.held("code-importing names refused", 3)


# ------------------------------------------------------------------------------------ corruption matrix
FILES = ["config.json", "metrics.csv", "final.json", "checksums.json", "state.pt", "buffer.pt"]
DAMAGE = ["flip", "truncate", "delete", "wrong_type", "directory", "fifo"]


def target(run: Path, name: str) -> Path:
    return list_checkpoints(run)[-1] / name if name.endswith((".pt", "checksums.json")) else run / name


def damage(run: Path, name: str, kind: str) -> Path:
    path = target(run, name)
    if kind == "flip":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif kind == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "delete":
        path.unlink()
    elif kind == "wrong_type":
        if name.endswith(".pt"):  # a well-formed, correctly signed file of the wrong shape
            files = {n: torch.load(path.parent / n, weights_only=True) for n in ("state.pt", "buffer.pt")}
            files[name] = [1, 2] if name == "state.pt" else {"pos": 1}
            write_step_dir(path.parent, files)
        else:
            path.write_text("[1, 2]" if name.endswith(".json") else '{"global_step": 1}\n')
    elif kind == "directory":
        path.unlink()
        path.mkdir()
    elif kind == "fifo":
        path.unlink()
        os.mkfifo(path)
    return path


def check_outcome(command: str, run: Path, name: str, code: int, out: str, err: str) -> str:
    """'error' (exit 2, one line naming the file) or 'correct' (the command's real result); else fail."""
    if code != 0:
        assert_one_line_error(code, err)
        stem = "checkpoints" if name.endswith(".pt") and "missing" in err else name
        assert stem in err or name in err, err
        return "error"
    if command == "eval":
        assert "dqn on CartPole-v1" in out
    elif command == "resume":
        final = json.loads((run / "final.json").read_text())
        assert final["env_steps"] == BASE_STEPS + 300
        steps = metric_steps(run)
        assert steps == sorted(set(steps)) and steps[-1] == BASE_STEPS + 300
    else:
        assert (run.parent / "ds" / "manifest.json").is_file()
    return "correct"


@pytest.mark.parametrize("command", ["eval", "record", pytest.param("resume", marks=pytest.mark.slow)])
def test_corruption_matrix(finished_run, tmp_path, capsys, command, faults):
    outcomes = Counter()
    for name in FILES:
        for kind in DAMAGE:
            case = tmp_path / f"{name}-{kind}"
            case.mkdir()
            run = copy_run(finished_run, case)
            damage(run, name, kind)
            args = {"eval": ["eval", run, "--episodes", "1"],
                    "record": ["demos", "record", "--env", "CartPole-v1", "--policy", run, "--episodes", "1",
                               "--out", case / "ds", "--quiet"],
                    "resume": ["train", "dqn", "--resume", run, "--steps", BASE_STEPS + 300, "--no-progress"],
                    }[command]
            code, out, err = rlkit(capsys, *args)
            try:
                outcome = check_outcome(command, run, name, code, out, err)
            except AssertionError as e:
                raise AssertionError(f"{command} with {name} {kind}: {e}") from None
            outcomes[outcome] += 1
            # the files the command must read: their damage can only be an error, never a silent success
            must_read = {"checksums.json", "state.pt", *(["buffer.pt", "config.json"] if command == "resume" else [])}
            assert outcome == "error" or name not in must_read, f"{command} accepted {name} {kind}"
            shutil.rmtree(case)
    faults.held("damaged files tried", sum(outcomes.values()))
    faults.held("damaged files: one-line error", outcomes["error"])
    faults.held("damaged files: correct result", outcomes["correct"])


# ------------------------------------------------------------------------------------ bad values
COMMON_BAD = [["--steps", "-5"], ["--seed", "-1"], ["--seed", str(2**70)], ["--set", "eval_episodes=0"],
              ["--set", "device=banana"], ["--set", "keep_checkpoints=0"], ["--set", "torch_threads=0"],
              ["--set", "env_kwargs=[1"], ["--set", "no_such_option=1"],
              ["--set", 'env_kwargs={"max_episode_steps": -1}'], ["--set", "target_return=nan"],
              ["--set", "target_return=100", "--set", "eval_every=0"]]
FIELD_BAD = {"lr": ["-1", "nan", "inf"], "actor_lr": ["-0.1"], "ppo_lr": ["-1"], "hidden": ["[-5]", "[0]", "[64,"],
             "gamma": ["1.5"], "batch_size": ["10000000", "0"], "epsilon_start": ["5"],
             "exploration_fraction": ["-1"], "num_demos": ["-3"], "buffer_size": ["0"]}


def test_demo_commands_refuse_bad_numbers(tmp_path, capsys):
    data = tmp_path / "demos"
    code, _, err = rlkit(capsys, "demos", "record", "--env", "CartPole-v1", "--policy", "random", "--episodes", "1",
                         "--out", data, "--env-kwargs", '{"max_episode_steps": -1}')
    assert_one_line_error(code, err, names="max_episode_steps")
    assert not data.exists()
    code, _, err = rlkit(capsys, "demos", "record", "--env", "CartPole-v1", "--policy", "random", "--episodes", "1",
                         "--out", data)
    assert code == 0, err
    for tolerance in (["--atol", "-1"], ["--rtol", "-1"]):
        code, _, err = rlkit(capsys, "demos", "replay", data, "--verify", *tolerance)
        assert_one_line_error(code, err, names="must be non-negative")


def bad_values(agent: str) -> list[list[str]]:
    fields = {f.name for f in dataclasses.fields(get_agent(agent).config_cls)}
    cases = list(COMMON_BAD)
    if not torch.cuda.is_available():
        cases.append(["--set", "device=cuda"])
    for field, values in FIELD_BAD.items():
        if field in fields:
            cases += [["--set", f"{field}={v}"] for v in values]
    return cases


@pytest.mark.parametrize("agent", agent_names())
def test_bad_values_are_answered_in_one_line(agent, tmp_path, capsys, faults):
    for args in bad_values(agent):
        run = tmp_path / "run"
        code, _, err = rlkit(capsys, "train", agent, "--env", "CartPole-v1", "--run-dir", run, "--no-progress", *args)
        try:
            assert_one_line_error(code, err)
        except AssertionError as e:
            raise AssertionError(f"{agent} {args}: {e}") from None
        assert not run.exists(), f"{agent} {args} wrote {run} before refusing"
        faults.held("bad values refused", 1)


def test_bad_run_inputs(finished_run, tmp_path, capsys, faults):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    code, _, err = rlkit(capsys, "train", "dqn", "--run-dir", not_a_dir, "--steps", "100", "--no-progress")
    assert_one_line_error(code, err, str(not_a_dir))
    code, _, err = rlkit(capsys, "eval", finished_run, "--env", "Pendulum-v1", "--episodes", "1")
    assert_one_line_error(code, err, "Pendulum-v1")
    code, _, err = rlkit(capsys, "eval", finished_run, "--episodes", "-3")
    assert_one_line_error(code, err, "--episodes")
    code, _, err = rlkit(capsys, "train", "a2c", "--resume", finished_run, "--no-progress")
    assert_one_line_error(code, err, "is a dqn run, not a2c")
    code, _, err = rlkit(capsys, "train", "dqn", "--run-dir", tmp_path / "mem", "--steps", "100", "--no-progress",
                         "--set", "buffer_size=1e11", "--set", "batch_size=32")
    assert_one_line_error(code, err, "GiB")
    assert not (tmp_path / "mem").exists()
    faults.held("bad values refused", 5)


def test_debug_shows_the_traceback(tmp_path, capsys):
    with pytest.raises(Exception, match="must be in"):
        main(["train", "dqn", "--run-dir", str(tmp_path / "r"), "--set", "lr=-1", "--debug"])


# ------------------------------------------------------------------------------------ leftovers
def test_resuming_a_finished_run_changes_nothing(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    code, out, err = rlkit(capsys, "train", "dqn", "--resume", run, "--no-progress", "--json")
    assert code == 0 and "already finished" in err
    assert json.loads(out)["env_steps"] == BASE_STEPS
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_final_row_once_and_wall_time_continues(finished_run, tmp_path, capsys):
    steps = metric_steps(finished_run)
    assert steps == list(range(100, BASE_STEPS + 1, 100))  # the final step's row once
    run = copy_run(finished_run, tmp_path)
    code, _, err = rlkit(capsys, "train", "dqn", "--resume", run, "--steps", BASE_STEPS + 200, "--no-progress")
    assert code == 0, err
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["global_step"]) for r in rows] == list(range(100, BASE_STEPS + 201, 100))
    walls = [float(r["wall_s"]) for r in rows]
    assert walls == sorted(walls)
    final = json.loads((run / "final.json").read_text())
    assert final["wall_s"] >= walls[-2]  # final.json: up to the final evaluation; the last row: after it


def test_rerun_after_death_before_first_checkpoint_starts_fresh(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "metrics.csv").write_text("global_step,wall_s\n100,1.0\n200,2.0\n30")  # the dead run's rows
    (run / ".metrics.csv.x.tmp").write_text("partial")
    code, _, err = rlkit(capsys, "train", "dqn", "--env", "CartPole-v1", "--steps", "300", "--run-dir", run,
                         "--no-progress", *SMALL)
    assert code == 0, err
    assert metric_steps(run) == [100, 200, 300]
    assert not list(run.glob(".*.tmp"))


# ------------------------------------------------------------------------------------ signals and kill -9
def start(args: list[str], **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rlkit.apps.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **env})


def wait_for(condition, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.01)
    raise TimeoutError


class CartPoleRule:
    def act(self, obs, deterministic: bool = True):
        return (3.0 * obs[:, 2] + obs[:, 3] > 0).astype("int64")


@pytest.mark.slow
@pytest.mark.parametrize("agent", ["dqn", "a3c", "dagger", "gail"])
def test_sigterm_checkpoints_and_exits_143(agent, tmp_path, faults):
    run = tmp_path / "run"
    # a3c's CartPole preset stops at its first evaluation of 500, which two idle cores reach within seconds: off here
    env, extra = "CartPole-v1", {"a3c": ["--set", "num_workers=2", "--set", "target_return=null"],
                                 "dqn": ["--set", "buffer_size=5000"]}.get(agent, [])
    if agent == "dagger":
        env, extra = "rlkit/CurvyRoad-v0", ["--set", "expert=python:rlkit.envs.test_envs:CurvyRoadExpert",
                                            "--set", "rounds=1000000"]
    if agent == "gail":
        demos.record(CartPoleRule(), "CartPole-v1", episodes=2, out=tmp_path / "demos", seed=0)
        env, extra = "seals:seals/CartPole-v0", ["--set", f"demos={tmp_path / 'demos'}", "--set", "num_envs=2",
                                                 "--set", "ppo_n_steps=64", "--set", "demo_batch_size=256"]
    proc = start(["train", agent, "--env", env, "--steps", "10000000", "--run-dir", str(run),
                  "--no-progress", "--set", "checkpoint_every=1000000", "--set", "log_every=100",
                  "--set", "tensorboard=false", *extra])
    assert wait_for(lambda: (run / "metrics.csv").exists(), proc=proc), proc.communicate()[1]
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "rlkit: terminated (SIGTERM)"
    state = load_checkpoint(run)  # the checkpoint written on the way out (the periodic one is far away)
    assert 0 < state["global_step"] < 1000000
    if agent == "dqn":
        assert load_buffer(state["checkpoint_dir"])["pos"] == state["global_step"] % 5000
    if agent == "dagger":  # the learner of the last round trained (metrics.csv appears after round 0's)
        assert state["round"] >= 0
    faults.held("SIGTERM: checkpoint, exit 143", 1)


@pytest.mark.slow
def test_sigterm_during_reproduce_checkpoints_the_running_seed(tmp_path, faults):
    presets = tmp_path / "tiny.yaml"
    presets.write_text("tiny-dqn:\n  agent: dqn\n  preset: cartpole\n  seeds: 2\n  budget: 1000000\n"
                       "  eval_points: 2\n  overrides: {buffer_size: 5000, checkpoint_every: 1000000, log_every: 100,"
                       " tensorboard: false}\n  reference: {score: 500.0, source: test}\n")
    out = tmp_path / "out"
    proc = start(["reproduce", "tiny-dqn", "--presets", str(presets), "--out", str(out), "--workers", "1"])
    assert wait_for(lambda: (out / "seed_0" / "metrics.csv").exists(), proc=proc), proc.communicate()[1]
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "rlkit: terminated (SIGTERM)"
    state = load_checkpoint(out / "seed_0")  # rerunning the same command resumes seed 0 from here
    assert 0 < state["global_step"] < 1000000
    assert not (out / "results.json").exists()
    faults.held("SIGTERM: checkpoint, exit 143", 1)


@pytest.mark.slow
def test_kill9_at_random_moments_loses_and_duplicates_nothing(tmp_path, faults):
    """12 kill -9s at seeded random moments (every third while a checkpoint is being written, widened by a
    test-only sleep inside the write); after each, the run resumes. Nothing committed is lost or duplicated."""
    rng = random.Random(13)
    run, total, log_every, capacity = tmp_path / "run", 4000, 100, 1500
    fresh = ["train", "dqn", "--env", "CartPole-v1", "--steps", str(total), "--run-dir", str(run), "--no-progress",
             "--set", "checkpoint_every=400", "--set", f"log_every={log_every}", "--set", f"buffer_size={capacity}",
             "--set", "learning_starts=200", "--set", "eval_episodes=1", "--set", "tensorboard=false",
             "--set", "keep_checkpoints=2"]
    resume = ["train", "dqn", "--resume", str(run), "--no-progress"]
    kills = mid_write = 0
    ckpts = run / "checkpoints"

    def writing() -> bool:
        return ckpts.is_dir() and any(p.name.startswith(".step_") for p in ckpts.iterdir())

    for _ in range(40):
        if kills >= 12:
            break
        proc = start(resume if list_checkpoints(run) else fresh, RLKIT_TEST_SLOW_CHECKPOINT="0.3")
        size = (run / "metrics.csv").stat().st_size if (run / "metrics.csv").exists() else 0
        try:
            if kills % 3 == 0:
                landed = wait_for(writing, proc=proc)
            else:
                landed = wait_for(lambda size=size: (run / "metrics.csv").exists()
                                  and (run / "metrics.csv").stat().st_size != size, proc=proc)
                time.sleep(rng.uniform(0.0, 1.5))
        except TimeoutError:
            landed = False
        if proc.poll() is not None:  # it finished first: start the run again from scratch
            proc.communicate()
            shutil.rmtree(run)
            continue
        proc.kill()
        proc.communicate()
        kills += 1
        mid_write += landed and writing()
        # what is committed is whole: the latest checkpoint loads, and its buffer is of the same step
        if list_checkpoints(run):
            state = load_checkpoint(run)
            buffer = load_buffer(state["checkpoint_dir"])
            step = state["global_step"]
            assert buffer["pos"] == step % capacity and buffer["full"] == (step >= capacity)
        faults.held("kill -9 during training", 1)
    assert kills >= 12 and mid_write >= 3, (kills, mid_write)
    faults.held("kill -9 during a checkpoint write", mid_write)
    proc = start(resume if list_checkpoints(run) else fresh)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert json.loads((run / "final.json").read_text())["env_steps"] == total
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["global_step"]) for r in rows] == list(range(log_every, total + 1, log_every))
    walls = [float(r["wall_s"]) for r in rows]
    assert walls == sorted(walls)
    assert not [p for p in [*run.iterdir(), *ckpts.iterdir()] if p.name.endswith(".tmp")]
    assert len(list_checkpoints(run)) == 2
