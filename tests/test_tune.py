"""rlkit tune: search spaces, a tiny study on CartPole, continuing it, pruning reports, both backends, two
processes sharing one SQLite study, the best preset round trip through `rlkit train --preset FILE.yaml`,
and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import optuna
import pytest
import yaml

from rlkit.apps.tune import load_space, suggest, tune
from rlkit.config import resolve_preset
from rlkit.errors import RLKitError
from rlkit.registry import agent_names, get_agent
from tests.conftest import REPO, run_cli

TINY = {"steps": 300, "evaluations": 2, "eval_episodes": 2}
# A small, fast space (the default one spends whole trials on 20k-step warm-ups at 300 steps).
SPACE = {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
         "learning_starts": {"type": "categorical", "choices": [50, 100]},
         "train_every": {"type": "categorical", "choices": [4, 8]},
         "subsample_steps": {"type": "categorical", "choices": [2, 4]},
         "gradient_steps": {"divide": "train_every", "by": "subsample_steps", "min": 1},
         "hidden": {"type": "categorical", "choices": {"tiny": [16], "small": [16, 16]}}}


@pytest.fixture
def space_file(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"dqn": SPACE}))
    return path


@pytest.mark.parametrize("agent", ["dqn", "a2c", "ddpg", "td3", "ppo", "sac"])
def test_default_spaces_name_real_fields(agent):
    if agent not in agent_names():
        pytest.skip(f"agent {agent} is not installed on this branch")
    space = load_space(agent, get_agent(agent))  # raises on a field the config lacks
    assert "gamma" in space


def test_suggest_resolves_derived_and_named_choices():
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    fields = set(get_agent("dqn").config_cls.__dataclass_fields__)
    for _ in range(5):
        trial = study.ask()
        values = suggest(trial, SPACE, fields)
        # subsample_steps is search-only (no DQNConfig field): it shapes gradient_steps, and is not an override.
        assert "subsample_steps" not in values
        assert values["gradient_steps"] == max(trial.params["train_every"] // trial.params["subsample_steps"], 1)
        assert values["hidden"] == {"tiny": [16], "small": [16, 16]}[trial.params["hidden"]]
        study.tell(trial, 0.0)


def test_tiny_study_local_then_continued(tmp_path, space_file):
    out = tmp_path / "study"
    result = tune("dqn", "CartPole-v1", 2, out, space_file=space_file, log=lambda line: None, **TINY)
    assert result["trials"]["total"] == 2 and result["trials"]["complete"] == 2
    best = result["best"]
    assert best["value"] == max(v["value"] for v in result["values"])
    # Each trial is a normal run directory whose final eval is the trial's value.
    for row in result["values"]:
        final = json.loads((out / f"trial-{row['number']:04d}" / "final.json").read_text())
        assert final["eval"]["mean"] == row["value"] and final["env_steps"] == 300 and final["seed"] == 0
    # The periodic evaluations (eval_every = 300 // 2) were reported to the trial, for the pruner.
    study = optuna.load_study(study_name="dqn-CartPole-v1", storage=f"sqlite:///{out / 'study.db'}")
    assert sorted(study.trials[0].intermediate_values) == [150, 300]
    assert (out / "optimization_history.png").stat().st_size > 1000
    assert json.loads((out / "tune.json").read_text()) == result
    # Rerunning continues the same study: trial numbers go on, nothing is overwritten.
    again = tune("dqn", "CartPole-v1", 1, out, space_file=space_file, log=lambda line: None, **TINY)
    assert again["trials"]["total"] == 3 and [v["number"] for v in again["values"]] == [0, 1, 2]
    assert (out / "trial-0002" / "final.json").exists()

    # The best preset round-trips through `rlkit train --preset FILE.yaml`.
    preset = yaml.safe_load((out / "best_preset.yaml").read_text())
    assert preset["lr"] == again["best"]["overrides"]["lr"]
    proc = run_cli("train", "dqn", "--preset", str(out / "best_preset.yaml"), "--steps", "200", "--run-dir",
                   str(tmp_path / "from_preset"), "--no-progress", "--set", "eval_episodes=1", "--json")
    assert proc.returncode == 0, proc.stderr
    config = json.loads((tmp_path / "from_preset" / "config.json").read_text())
    for key, value in again["best"]["overrides"].items():
        assert config[key] == value, key
    assert config["total_steps"] == 200  # flags still win over the preset


def test_preset_file_resolution(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("_note: kept out\nlr: 0.005\nhidden: [32]\n")
    assert resolve_preset({}, str(path), "dqn") == {"lr": 0.005, "hidden": [32]}
    with pytest.raises(RLKitError, match="preset file .*missing.yaml not found"):
        resolve_preset({"cartpole": {}}, str(tmp_path / "missing.yaml"), "dqn")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(RLKitError, match="must hold one mapping"):
        resolve_preset({}, str(bad), "dqn")


@pytest.mark.slow  # starting Ray takes tens of seconds on 2 cores
def test_ray_backend(tmp_path, space_file):
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'rlkit[ray]')")
    out = tmp_path / "ray"
    result = tune("dqn", "CartPole-v1", 2, out, space_file=space_file, backend="ray", workers=2,
                  log=lambda line: None, **TINY)
    assert result["backend"] == "ray" and result["trials"]["complete"] == 2
    study = optuna.load_study(study_name="dqn-CartPole-v1", storage=f"sqlite:///{out / 'study.db'}")
    for trial in study.trials:  # the tasks reported their evaluations to the shared storage
        assert sorted(trial.intermediate_values) == [150, 300]
        final = json.loads((out / f"trial-{trial.number:04d}" / "final.json").read_text())
        assert final["eval"]["mean"] == trial.value


def test_two_processes_share_one_study(tmp_path, space_file):
    out = tmp_path / "shared"
    args = [sys.executable, "-m", "rlkit.apps.cli", "tune", "dqn", "--env", "CartPole-v1", "--trials", "2", "--steps",
            "300", "--evaluations", "2", "--eval-episodes", "2", "--space", str(space_file), "--out", str(out)]
    procs = [subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    study = optuna.load_study(study_name="dqn-CartPole-v1", storage=f"sqlite:///{out / 'study.db'}")
    numbers = [t.number for t in study.trials]
    assert sorted(numbers) == [0, 1, 2, 3]
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    assert sorted(p.name for p in out.glob("trial-*")) == [f"trial-{n:04d}" for n in range(4)]


@pytest.mark.parametrize("args, message", [
    (["tune", "dqn", "--env", "CartPole-v1", "--trials", "1", "--space", "SPACE"], "unknown param 'learning_rate'"),
    (["tune", "nosuch", "--env", "CartPole-v1", "--trials", "1"], "unknown agent 'nosuch'"),
    (["tune", "dqn", "--env", "CartPole-v1", "--trials", "0"], "must be at least 1"),
])
def test_bad_input_is_one_line(tmp_path, args, message):
    space = tmp_path / "bad_space.yaml"
    space.write_text("learning_rate: {type: float, low: 0.001, high: 0.01}\n")
    args = [str(space) if a == "SPACE" else a for a in args] + ["--out", str(tmp_path / "out")]
    proc = run_cli(*args)
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
