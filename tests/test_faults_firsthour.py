"""Issue 19, the first hour of a new user: each test failed on the code the issue was filed against."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from rlkit import demos
from rlkit.errors import RLKitError
from tests.conftest import REPO


def record_random(out: Path, episodes: int = 1, **kwargs) -> Path:
    demos.record(demos.resolve_policy("random", "CartPole-v1"), "CartPole-v1", episodes, out, seed=0, **kwargs)
    return out


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    from rlkit.apps.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


# ---------------------------------------------------------------------------------------------
# 11. The keyboard recorder never fakes a person's input
# ---------------------------------------------------------------------------------------------

def test_human_recording_refuses_the_dummy_display_in_one_line(tmp_path, capsys, monkeypatch, faults):
    faults.held("faked human input refused")  # counted only if this test passes
    pytest.importorskip("pygame")
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")  # what a headless user gets, or sets
    code, out, err = run_main(capsys, "demos", "record", "--env", "CartPole-v1", "--policy", "human",
                              "--episodes", "1", "--out", str(tmp_path / "human"))
    assert code == 2 and out == "", out
    assert err.count("\n") == 1 and "SDL_VIDEODRIVER=dummy" in err and "display" in err, err
    assert not (tmp_path / "human").exists()  # nothing labelled source=human was written


def test_human_source_refuses_without_an_x11_or_wayland_session(monkeypatch, faults):
    faults.held("faked human input refused")  # counted only if this test passes
    pytest.importorskip("pygame")
    from rlkit.demos.human import HumanPolicy

    for name in ("SDL_VIDEODRIVER", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    with pytest.raises(RLKitError, match="DISPLAY and WAYLAND_DISPLAY are unset"):
        HumanPolicy("CartPole-v1")


def test_human_source_refuses_when_pygame_falls_back_to_a_fake_driver(monkeypatch, faults):
    faults.held("faked human input refused")  # counted only if this test passes
    pygame = pytest.importorskip("pygame")
    from rlkit.demos.human import HumanPolicy

    monkeypatch.delenv("SDL_VIDEODRIVER", raising=False)
    monkeypatch.setenv("DISPLAY", ":97")  # no X server there: SDL falls back to its offscreen driver
    try:
        with pytest.raises(RLKitError, match="fell back to its (offscreen|dummy) video driver|cannot open"):
            HumanPolicy("CartPole-v1")
    finally:
        pygame.display.quit()


def test_doctor_checks_for_a_display_instead_of_saying_ok(monkeypatch):
    pytest.importorskip("pygame")
    from rlkit.apps import doctor

    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    [row] = doctor.feature_rows(["keyboard"])
    assert (row.status, row.usable, row.install) == ("unavailable", False, None), row
    assert "SDL_VIDEODRIVER=dummy" in row.detail and "needs a display" not in row.detail
    # no install fixes a machine without a screen: the report stays ok, and says why in the table
    rep = doctor.report(features=["keyboard"])
    assert rep["ok"] is (all(p["status"] == "ok" for p in rep["packages"]
                             if p["group"] in ("core", "imitation", "python")))
    assert "unavailable" in doctor.format_report(rep)


# ---------------------------------------------------------------------------------------------
# 13. Box2D: the error and the doctor name the box2d extra
# ---------------------------------------------------------------------------------------------

def hide_box2d(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "Box2D", None)  # what `import Box2D` sees when box2d is not installed
    for name in [m for m in sys.modules if m.startswith("gymnasium.envs.box2d")]:
        monkeypatch.delitem(sys.modules, name)  # imported already: it would not import Box2D again


def test_missing_box2d_names_the_box2d_extra(monkeypatch):
    from rlkit.envs import make_env

    hide_box2d(monkeypatch)
    with pytest.raises(RLKitError) as error:
        make_env("LunarLander-v3")
    assert "pip install 'rlkit[box2d]'" in str(error.value) and "rlkit[dev]" not in str(error.value)
    assert "LunarLander-v3 needs Box2D" in str(error.value)


def test_box2d_envs_make_where_warnings_are_errors():
    # Box2D's SWIG bindings warn while their extension initialises; as an error, that crashed the interpreter
    code = ("from rlkit.envs import make_env\n"
            "env = make_env('LunarLander-v3', seed=0)\n"
            "env.reset(seed=0)\n"
            "print(env.step(env.action_space.sample())[0].shape)\n")
    proc = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "(8,)", (proc.returncode, proc.stderr[-2000:])


def test_doctor_has_a_box2d_row(monkeypatch):
    from rlkit.apps import doctor

    [row] = doctor.feature_rows(["box2d"])
    assert (row.status, row.core) == ("ok", False) and "LunarLander-v3 runs" in row.detail, row
    hide_box2d(monkeypatch)
    [row] = doctor.feature_rows(["box2d"])
    assert row.status == "missing" and row.install == "pip install 'rlkit[box2d]'", row


# ---------------------------------------------------------------------------------------------
# 15. GAIL without --preset
# ---------------------------------------------------------------------------------------------

def resolved(*argv: str):
    from rlkit.apps.cli import build_parser, resolve_train_config

    args = build_parser().parse_args(list(argv))
    args.help_agent = False
    return resolve_train_config(args)[1]


def test_imitation_learners_take_the_preset_of_their_demos_env(tmp_path, monkeypatch):
    from rlkit import run

    monkeypatch.setattr(run, "_START_NOTES", [])  # the notices stay in this test, not the next run's stderr
    ds = str(record_random(tmp_path / "cp"))
    gail = resolved("train", "gail", "--demos", ds)
    # the preset for CartPole-v1 demonstrations trains the generator in the fixed-horizon CartPole
    assert (gail.preset, gail.env_id) == ("cartpole", "seals:seals/CartPole-v0")
    assert run._START_NOTES == ["rlkit: using preset cartpole, tuned for CartPole-v1 demonstrations; "
                                "--preset none for the plain defaults"]
    assert resolved("train", "airl", "--demos", ds).preset == "cartpole"
    assert resolved("train", "bc", "--demos", ds).preset == "cartpole"
    plain = resolved("train", "gail", "--demos", ds, "--preset", "none")
    assert plain.preset is None and plain.env_id is None


def test_gail_says_the_generator_env_not_the_demos_varies_in_length(tmp_path):
    pytest.importorskip("imitation")
    from rlkit.agents.adversarial import AdversarialConfig, train_gail

    # expert demos all cut at 20 steps; the untrained generator drops the pole earlier in some episodes
    expert = demos.resolve_policy("python:rlkit.demos.scripted:cartpole", "CartPole-v1")
    demos.record(expert, "CartPole-v1", 2, tmp_path / "fixed", env_kwargs={"max_episode_steps": 20})
    cfg = AdversarialConfig(demos=str(tmp_path / "fixed"), run_dir=str(tmp_path / "run"), num_envs=2,
                            ppo_n_steps=64, ppo_batch_size=32, ppo_epochs=1, demo_batch_size=16,
                            total_steps=128, eval_episodes=1, progress=False, tensorboard=False)
    with pytest.raises(RLKitError) as error:
        train_gail(cfg)
    message = str(error.value)
    assert "generator's env CartPole-v1" in message and "demonstrations are fine" in message, message
    assert "record fixed-length episodes" not in message and "seals:seals/CartPole-v0" in message


# ---------------------------------------------------------------------------------------------
# 17. Smaller items
# ---------------------------------------------------------------------------------------------

def test_ci_lints_the_project_folders_not_a_users_scratch_files():
    line = next(line for line in (REPO / ".ci/test").read_text().splitlines() if "ruff check" in line)
    targets = shlex.split(line.partition("ruff check")[2], comments=True)
    assert targets and "." not in targets, line
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True).stdout.split()
    unlinted = [path for path in tracked if not any(path.startswith(f"{target}/") for target in targets)]
    assert unlinted == [], f"tracked Python files outside ruff's folders: {unlinted}"


def test_readme_demos_example_runs_twice(tmp_path, monkeypatch):
    from tests.test_readme import BLOCKS, README, substituted

    [block] = [b for b in BLOCKS if b.id == "demonstrations/from-python"]
    monkeypatch.chdir(tmp_path)
    code = compile("\n" * (block.line - 1) + substituted(block), str(README), "exec")
    for _ in range(2):  # a user runs the script again: it must not stop at "data/cp already exists"
        exec(code, {"__name__": "__main__"})


def test_stop_reason_names_the_callback_a_user_wrote(tmp_path):
    from rlkit.agents.dqn import DQNConfig, train

    def stop_on_first_eval():  # the README's pattern: a factory returning its inner `callback`
        def callback(event) -> bool:
            return event.kind == "eval"

        return callback

    result = train(DQNConfig(env_id="CartPole-v1", total_steps=400, learning_starts=100, eval_every=100,
                             eval_episodes=1, progress=False, tensorboard=False, hidden=[16],
                             run_dir=str(tmp_path / "run")), callbacks=[stop_on_first_eval()])
    assert result["stopped"]["reason"] == "callback stop_on_first_eval"


def test_bc_summary_counts_gradient_steps_not_zero_env_steps(tmp_path, capsys):
    ds = str(record_random(tmp_path / "cp", episodes=2))
    code, out, _err = run_main(capsys, "train", "bc", "--demos", ds, "--run-dir", str(tmp_path / "bc"),
                               "--no-progress", "--set", "epochs=2", "--set", "eval_episodes=1")
    assert code == 0
    assert re.search(r": \d+ gradient steps \(2 epochs\) in ", out) and " 0 steps" not in out, out


@pytest.mark.parametrize("folder", ["runs", "data", "site", "tune", "reproductions"])
def test_default_output_folders_are_gitignored(folder):
    proc = subprocess.run(["git", "check-ignore", "--no-index", "-q", f"{folder}/x"], cwd=REPO)
    assert proc.returncode == 0, f"{folder}/ is not ignored"


def test_ignored_output_folders_are_anchored_at_the_root():
    # a package folder named data/ inside rlkit/ (a layer of replay buffers, rollouts) is source: only the
    # root's data/ is output
    proc = subprocess.run(["git", "check-ignore", "--no-index", "-q", "rlkit/data/buffers.py"], cwd=REPO)
    assert proc.returncode == 1


def test_getting_started_eval_usage_lists_every_eval_option():
    from rlkit.apps.cli import build_parser

    text = (REPO / "docs/getting-started.md").read_text()
    usage = re.search(r"^rlkit eval .*\n(?:^ {20,}.*\n)*", text, re.MULTILINE).group(0)
    eval_parser = build_parser()._subparsers._group_actions[0].choices["eval"]
    options = {opt for action in eval_parser._actions for opt in action.option_strings if opt.startswith("--")}
    missing = sorted(opt for opt in options - {"--help"} if opt not in usage)
    assert missing == [], f"docs/getting-started.md's `rlkit eval` usage lacks {missing}"


def test_env_module_in_the_working_directory_hints_pythonpath(tmp_path, monkeypatch):
    from rlkit.envs import make_env

    (tmp_path / "firsthour_envmod.py").write_text("import gymnasium\n")
    monkeypatch.chdir(tmp_path)
    # the `rlkit` console script, unlike `python -m`, does not put the working directory on sys.path
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    with pytest.raises(RLKitError, match=r"firsthour_envmod is in the working directory.*PYTHONPATH=\."):
        make_env("firsthour_envmod:Env-v0")
    with pytest.raises(RLKitError, match=r"is the package installed\?.*PYTHONPATH=\."):
        make_env("firsthour_nowhere:Env-v0")


def test_progress_is_a_few_whole_lines_when_stderr_is_not_a_terminal(tmp_path, capsys):
    from rlkit.logger import Logger

    logger = Logger(tmp_path, total_steps=10_000, progress=True, tensorboard=False)
    for step in range(1, 10_001):
        if step % 500 == 0:
            logger.record_episode(float(step), 500)
            logger.dump(step)
        logger.progress(step)
    logger.close()
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err and 10 <= len(lines) <= 11, err[:2000]
    assert lines[-1].startswith("rlkit: step 10,000/10,000 (100%)") and "steps/s" in lines[-1], lines[-1]
    assert "return 9500.0" in lines[-1]
