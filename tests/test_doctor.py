"""`rlkit doctor`, `rlkit --version`, and the one-line install hint when `imitation` is missing."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from rlkit import __version__
from rlkit.apps import doctor
from rlkit.errors import IMITATION_INSTALL, RLKitError
from tests.conftest import REPO, run_cli

# ---------------------------------------------------------------------------------------------
# doctor: rows for missing packages and features
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("checkout, command", [
    (None, "pip install 'rlkit[atari]'"),
    (REPO, "pip install -c constraints.txt -e '.[atari]'"),
])
def test_missing_atari_names_its_install_command(monkeypatch, checkout, command):
    monkeypatch.setitem(sys.modules, "ale_py", None)  # what `import ale_py` sees when ale-py is not installed
    [row] = doctor.feature_rows(["atari"], root=checkout)
    assert (row.name, row.status, row.usable, row.core) == ("atari", "missing", False, False)
    assert row.install == command and row.detail == "ale-py is not installed"


def test_checks_leave_the_working_directory_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = doctor.feature_rows(["mujoco", "atari"])  # MuJoCo logs its compiler notes to MUJOCO_LOG.TXT in the cwd
    assert list(tmp_path.iterdir()) == [] and Path.cwd() == tmp_path
    assert all(row.status in ("ok", "missing") for row in rows), rows


def test_missing_mujoco_is_missing_not_broken(monkeypatch):
    monkeypatch.setitem(sys.modules, "mujoco", None)
    [row] = doctor.feature_rows(["mujoco"])
    assert row.status == "missing" and row.install == "pip install 'rlkit[mujoco]'"


def test_broken_feature_reports_the_error_in_one_line(monkeypatch):
    def failing() -> str:
        raise OSError("ROM file pong.bin not found\nsecond line")

    monkeypatch.setitem(doctor.FEATURES, "atari", (failing, False, "ale-py", "atari"))
    [row] = doctor.feature_rows(["atari"])
    assert row.status == "broken" and row.detail == "OSError: ROM file pong.bin not found"
    assert row.install == "pip install 'rlkit[atari]'"


def test_missing_imitation_feature_says_no_deps_and_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "imitation", None)
    [row] = doctor.feature_rows(["imitation"])
    assert row.status == "missing" and row.core and row.install == IMITATION_INSTALL
    assert "--no-deps because" in row.detail and "gymnasium~=0.29" in row.detail


def fake_versions(monkeypatch, **versions):
    """Pretend distributions are missing (None) or at another version; the rest stay real."""
    real = metadata.version

    def version(name):
        if name in versions:
            if versions[name] is None:
                raise metadata.PackageNotFoundError(name)
            return versions[name]
        return real(name)

    monkeypatch.setattr(doctor.metadata, "version", version)


def test_missing_and_out_of_range_packages(monkeypatch):
    fake_versions(monkeypatch, minari=None, gymnasium="0.29.1", ray=None)
    rows = {row.name: row for row in doctor.package_rows(root=None)}
    assert rows["minari"].status == "missing" and rows["minari"].version is None
    assert rows["minari"].install == "pip install 'minari>=0.5.4,<0.6'"
    assert rows["gymnasium"].status == "out of range" and rows["gymnasium"].version == "0.29.1"
    assert rows["gymnasium"].install == "pip install 'gymnasium>=1.2,<1.5'"
    assert rows["ray"].group == "ray" and rows["ray"].install == "pip install 'rlkit[ray]'"
    assert rows["numpy"].status == "ok" and rows["numpy"].install is None
    # the key stack leads, in the documented order
    assert [r.name for r in doctor.package_rows()][:6] == ["python", "rlkit", "torch", "gymnasium", "numpy",
                                                           "stable-baselines3"]


def test_report_not_ok_when_a_core_package_is_missing_but_ok_without_an_extra(monkeypatch):
    fake_versions(monkeypatch, ray=None)
    assert doctor.report(features=["minari"])["ok"] is True
    fake_versions(monkeypatch, minari=None)
    rep = doctor.report(features=["minari"])
    assert rep["ok"] is False
    text = doctor.format_report(rep)
    minari_row = next(line for line in text.splitlines() if line.startswith("minari "))
    assert minari_row.split()[-1] == "missing"
    assert "pip install -c constraints.txt 'minari>=0.5.4,<0.6'    # minari" in text  # the tests run in a checkout
    assert text.endswith("NOT OK: a core package or feature is missing (above).")


def test_imitation_missing_from_the_stack_row(monkeypatch):
    fake_versions(monkeypatch, imitation=None)
    row = next(r for r in doctor.package_rows() if r.name == "imitation")
    assert (row.status, row.required, row.install) == ("missing", "==1.0.1", IMITATION_INSTALL)


# ---------------------------------------------------------------------------------------------
# The commands, as a user runs them
# ---------------------------------------------------------------------------------------------


def test_version_is_one_line_with_the_stack():
    proc = run_cli("--version")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"rlkit {__version__} (python ")
    for name, version in [("gymnasium", gym.__version__), ("numpy", np.__version__),
                          ("stable-baselines3", metadata.version("stable-baselines3"))]:
        assert f"{name} {version}" in lines[0]


def test_doctor_json_schema_and_real_checks():
    proc = run_cli("doctor", "--json")
    rep = json.loads(proc.stdout)
    assert proc.returncode == (0 if rep["ok"] else 1), proc.stderr
    assert rep["schema"] == 1 and rep["rlkit"] == __version__
    assert {"python", "python_executable", "platform", "torch_cuda", "checkout", "packages", "features"} <= set(rep)
    packages = {p["name"]: p for p in rep["packages"]}
    assert packages["gymnasium"]["version"] == gym.__version__ and packages["numpy"]["version"] == np.__version__
    for row in rep["packages"]:
        assert set(row) == {"name", "version", "required", "group", "status", "install"}
        assert (row["install"] is None) == (row["status"] == "ok"), row
    features = {f["name"]: f for f in rep["features"]}
    assert set(features) == set(doctor.FEATURES)
    # a feature works exactly when its package is installed (ROMs, a MuJoCo build and the like included),
    # unless this machine lacks what no install gives (the keyboard recorder's display, absent in CI)
    for name, (_check, _core, package, _group) in doctor.FEATURES.items():
        installed = packages[package]["status"] != "missing"
        unavailable = features[name]["status"] == "unavailable"
        assert features[name]["usable"] == (installed and not unavailable), features[name]
        assert not unavailable or (features[name]["install"] is None and name == "keyboard"), features[name]
    assert "ALE/Pong-v5 runs" in features["atari"]["detail"] or not features["atari"]["usable"]


# ---------------------------------------------------------------------------------------------
# imitation missing: every feature that needs it says how to install it, in one line
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def cartpole_demos(tmp_path):
    from rlkit import demos

    demos.record(demos.resolve_policy("random", "CartPole-v1"), "CartPole-v1", episodes=2, out=tmp_path / "ds", seed=0)
    return demos.load(tmp_path / "ds")


def imitation_sites(tmp_path, dataset):
    from rlkit.agents.adversarial import AdversarialConfig, make_sb3_venv, train_airl, train_gail
    from rlkit.agents.preference import PreferenceConfig
    from rlkit.agents.preference import train as train_preference
    from rlkit.demos import load_imitation, save_imitation, to_trajectories

    adversarial = AdversarialConfig(demos=str(dataset.path), env_id="CartPole-v1", run_dir=str(tmp_path / "r"))
    return {
        "to_trajectories": lambda: to_trajectories(dataset),
        "save_imitation": lambda: save_imitation(dataset, tmp_path / "out"),
        "load_imitation": lambda: load_imitation(tmp_path),
        "make_sb3_venv": lambda: make_sb3_venv("CartPole-v1", 1, 0),
        "gail": lambda: train_gail(adversarial),
        "airl": lambda: train_airl(adversarial),
        "preference": lambda: train_preference(PreferenceConfig(env_id="Pendulum-v1", run_dir=str(tmp_path / "p"))),
    }


SITES = ["to_trajectories", "save_imitation", "load_imitation", "make_sb3_venv", "gail", "airl", "preference"]


@pytest.mark.parametrize("site", SITES)
def test_every_imitation_feature_names_the_install_command(monkeypatch, tmp_path, cartpole_demos, site):
    call = imitation_sites(tmp_path, cartpole_demos)[site]
    monkeypatch.setitem(sys.modules, "imitation", None)
    with pytest.raises(RLKitError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message and IMITATION_INSTALL in message and "--no-deps because" in message
    assert not (tmp_path / "r").exists() and not (tmp_path / "p").exists()  # refused before creating a run


def test_cli_without_imitation_prints_one_line(tmp_path, cartpole_demos):
    # a fresh interpreter in which `import imitation` fails, as it does where imitation is not installed
    code = "import sys; sys.modules['imitation'] = None; from rlkit.apps.cli import main; main()"
    proc = subprocess.run([sys.executable, "-c", code, "demos", "convert", str(cartpole_demos.path), "--to",
                           "imitation", "--out", str(tmp_path / "imit")], capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rlkit: error: rlkit demos convert --to imitation needs")
    assert IMITATION_INSTALL in lines[0]
