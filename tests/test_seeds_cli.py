"""`rlkit train AGENT --seeds SPEC`: several seeds in one process, each a whole run in RUN_DIR/seedS."""

from __future__ import annotations

import csv
import json
import re
import shutil

import pytest

from rlkit.apps.cli import main, parse_seeds, seeds_label, seeds_run_dir
from rlkit.errors import RLKitError
from tests.conftest import run_cli

# DQN on CartPole at a few hundred steps: updates start at 100, so every run trains, in a few seconds.
TINY_DQN = ["--env", "CartPole-v1", "--set", "learning_starts=100", "--set", "hidden=[16]",
            "--set", "buffer_size=1000", "--set", "eval_episodes=3", "--set", "tensorboard=false", "--no-progress"]


def _one_line_error(capsys, *argv: str) -> str:
    """Run ``rlkit ARGV`` in this process; it must exit 2 with one ``rlkit: error:`` line. Returns that line."""
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert exit_.value.code == 2 and len(lines) == 1 and lines[0].startswith("rlkit: error: "), err
    return lines[0]


# ---------------------------------------------------------------------------------------------
# Parsing --seeds
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, seeds", [
    ("0-4", [0, 1, 2, 3, 4]), ("0,2,5", [0, 2, 5]), ("0-2,7", [0, 1, 2, 7]), ("3", [3]), (" 7 , 1-2 ", [7, 1, 2]),
    ("4-4", [4]),
])
def test_parse_seeds(spec, seeds):
    assert parse_seeds(spec) == seeds


@pytest.mark.parametrize("spec, problem", [
    ("4-1", "the range 4-1 runs backwards; write 1-4"),
    ("x", "'x' is neither a seed nor a range"),
    ("", "--seeds is empty"),
    ("  ", "--seeds is empty"),
    ("-1", "seeds cannot be negative"),
    ("0,-2-3", "seeds cannot be negative"),
    ("0,,2", "an empty item between commas"),
    ("0-2,1", "1 named twice"),
    ("1.5", "'1.5' is neither a seed nor a range"),
    ("0-4294967296", "above 4294967295"),
    ("0-5000", "more than 1000 seeds in one process"),
])
def test_bad_seeds_are_one_line_errors(spec, problem, capsys):
    with pytest.raises(RLKitError, match=re.escape(problem)):
        parse_seeds(spec)
    line = _one_line_error(capsys, "train", "dqn", f"--seeds={spec}")
    assert line.startswith("rlkit: error: --seeds") and problem in line, line


def test_seeds_conflict_with_seed_resume_and_set_seed(capsys, tmp_path):
    line = _one_line_error(capsys, "train", "dqn", "--seeds", "0-1", "--seed", "3")
    assert "--seed and --seeds both given" in line
    line = _one_line_error(capsys, "train", "dqn", "--seeds", "0-1", "--resume", str(tmp_path))
    assert "--seeds with --resume" in line and "drop --seeds" in line
    line = _one_line_error(capsys, "train", "dqn", "--seeds", "0-1", "--set", "seed=4")
    assert "drop --set seed" in line
    (tmp_path / "seeds.json").write_text(json.dumps({"agent": "dqn", "seeds": [0, 1], "config": {}}))
    line = _one_line_error(capsys, "train", "dqn", "--resume", str(tmp_path), "--seed", "1")
    assert "drop --seed" in line and str(tmp_path / "seedS") in line
    line = _one_line_error(capsys, "train", "dqn", "--resume", str(tmp_path), "--set", "run_dir=elsewhere")
    assert "each seed continues in its own directory; drop --set run_dir" in line
    line = _one_line_error(capsys, "train", "ppo", "--resume", str(tmp_path))
    assert f"holds dqn runs, not ppo; resume them with `rlkit train dqn --resume {tmp_path}`" in line
    (tmp_path / "seeds.json").write_text(json.dumps({"agent": "dqn", "seeds": [0, 0], "config": {}}))
    assert "is damaged" in _one_line_error(capsys, "train", "dqn", "--resume", str(tmp_path))


def test_default_directory_names_the_seeds():
    assert seeds_label([0, 1, 2, 3, 4]) == "0-4"
    assert seeds_label([0, 2, 5]) == "0_2_5"
    assert seeds_label([0, 1, 2, 7]) == "0-2_7"
    path = seeds_run_dir("dqn", "seals:seals/CartPole-v0", [0, 1, 2, 3, 4])
    assert path.parent.name == "runs"
    assert re.fullmatch(r"dqn-seals_seals_CartPole-v0-seeds0-4-\d{8}-\d{6}", path.name), path.name


def test_a_refused_seeds_run_leaves_nothing_behind(capsys, tmp_path):
    line = _one_line_error(capsys, "train", "dqn", "--env", "CartPol-v1", "--seeds", "0-1", "--steps", "100",
                           "--run-dir", str(tmp_path / "d"))
    assert "unknown env id 'CartPol-v1'" in line
    assert not (tmp_path / "d").exists()


# ---------------------------------------------------------------------------------------------
# Training, determinism and resume, through the command as a user runs it
# ---------------------------------------------------------------------------------------------
def _train(*args: str) -> dict:
    proc = run_cli("train", "dqn", *TINY_DQN, *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_seeds_write_whole_runs_with_a_single_runs_config(tmp_path):
    out = _train("--seeds", "0-1", "--steps", "500", "--run-dir", str(tmp_path / "a"))
    assert out["seeds"] == [0, 1] and [r["seed"] for r in out["runs"]] == [0, 1]
    assert out["aggregate"]["runs"] == 2 and len(out["aggregate"]["mean_ci"]) == 2
    configs = []
    for seed in (0, 1):
        run = tmp_path / "a" / f"seed{seed}"
        for name in ("config.json", "metrics.csv", "final.json"):
            assert (run / name).is_file(), (run, name)
        assert (run / "checkpoints" / "step_0000000500").is_dir()
        final = json.loads((run / "final.json").read_text())
        assert final["env_steps"] == 500 and final["seed"] == seed and final["run_dir"] == str(run)
        configs.append(json.loads((run / "config.json").read_text()))
    differ = {k for k in configs[0] if configs[0][k] != configs[1][k]}
    assert differ <= {"seed", "run_dir", "progress"} and {"seed", "run_dir"} <= differ, differ

    single = tmp_path / "single"
    _train("--seed", "1", "--steps", "500", "--run-dir", str(single))
    alone = json.loads((single / "config.json").read_text())
    assert {k for k in alone if alone[k] != configs[1][k]} <= {"run_dir", "progress"}

    again = _train("--seeds", "0-1", "--steps", "500", "--run-dir", str(tmp_path / "b"))
    assert [r["eval"]["returns"] for r in again["runs"]] == [r["eval"]["returns"] for r in out["runs"]]
    for seed in (0, 1):  # the whole training, not only the final evaluation: every logged value but the clocks
        rows = [_logged(tmp_path / d / f"seed{seed}") for d in ("a", "b")]
        assert rows[0] == rows[1] and any(r.get("losses/td_loss") for r in rows[0])


def _logged(run) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k not in ("wall_s", "charts/steps_per_second")}
                for row in csv.DictReader(f)]


def test_resume_continues_every_seed_and_starts_the_ones_never_started(tmp_path):
    parent = tmp_path / "many"
    _train("--seeds", "0-2", "--steps", "400", "--run-dir", str(parent))
    assert json.loads((parent / "seeds.json").read_text())["seeds"] == [0, 1, 2]
    # seed 2 as if the command had stopped before starting it (agents without lockstep train one after another)
    shutil.rmtree(parent / "seed2")
    proc = run_cli("train", "dqn", "--resume", str(parent), "--steps", "800", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert [line.split("(seed ")[1].split(")")[0] for line in lines[:3]] == ["0", "1", "2"]
    assert lines[3].startswith("mean eval over 3 seeds: ") and "95% CI [" in lines[3] and str(parent) in lines[3]
    for seed in (0, 1, 2):
        run = parent / f"seed{seed}"
        assert json.loads((run / "final.json").read_text())["env_steps"] == 800
        assert json.loads((run / "config.json").read_text())["total_steps"] == 800
    steps = [int(line.split(",")[0]) for line in (parent / "seed0" / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == sorted(steps) and 400 in steps and steps[-1] == 800   # continued, not restarted

    again = run_cli("train", "dqn", "--resume", str(parent), "--steps", "800", "--json")  # all finished: no work
    assert again.returncode == 0, again.stderr
    assert [r["env_steps"] for r in json.loads(again.stdout)["runs"]] == [800, 800, 800]
    taken = run_cli("train", "dqn", *TINY_DQN, "--seeds", "0-1", "--steps", "400", "--run-dir", str(parent))
    assert taken.returncode == 2 and f"already holds a --seeds run; pass --resume {parent}" in taken.stderr


def test_agent_without_lockstep_trains_its_seeds_one_after_another(tmp_path):
    from rlkit.registry import get_agent

    assert get_agent("ppo").train_seeds is None
    parent = tmp_path / "ppo"
    proc = run_cli("train", "ppo", "--env", "CartPole-v1", "--preset", "none", "--seeds", "0,3", "--steps", "256",
                   "--run-dir", str(parent), "--set", "n_steps=64", "--set", "batch_size=32", "--set", "n_epochs=1",
                   "--set", "eval_episodes=2", "--set", "tensorboard=false", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in parent.iterdir()) == ["seed0", "seed3", "seeds.json"]
    finals = [json.loads((parent / s / "final.json").read_text()) for s in ("seed0", "seed3")]
    assert [f["seed"] for f in finals] == [0, 3] and all(f["env_steps"] == 256 for f in finals)
    # seed 3 wrote its first file (config.json, on its first log row) after seed 0 had finished
    assert (parent / "seed3" / "config.json").stat().st_mtime_ns >= (parent / "seed0" / "final.json").stat().st_mtime_ns
    assert "mean eval over 2 seeds" in proc.stdout
