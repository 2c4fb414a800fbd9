"""The installed stack is the one rlkit is tested on, conflicts are only imitation's two known pins,
and rlkit claims no generic top-level import names."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from importlib.metadata import version

import pytest


def _rlkit_requirements() -> list:
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    reqs = [Requirement(r) for r in requires("rlkit") or []]
    # the base install and the extras CI installs (the marker names the extra)
    installed = {"dev", "atari", "mujoco", "ray", "box2d", "docs"}
    return [r for r in reqs if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in installed)]


@pytest.mark.parametrize("requirement", _rlkit_requirements(), ids=str)
def test_installed_versions_satisfy_rlkits_declared_ranges(requirement):
    """What pyproject.toml promises is what is installed: a correct install from those ranges passes."""
    assert requirement.specifier.contains(version(requirement.name), prereleases=True), \
        f"{requirement.name} {version(requirement.name)} is outside pyproject's {requirement}"


def test_imitation_is_the_version_rlkit_is_tested_with():
    # installed in a second step without its pins (README, "Install"), so it is not among rlkit's requirements
    assert version("imitation") == "1.0.1"


def test_modules_report_the_same_versions():
    import gymnasium
    import numpy
    import stable_baselines3

    assert gymnasium.__version__ == version("gymnasium")
    assert numpy.__version__ == version("numpy") and stable_baselines3.__version__ == version("stable-baselines3")


def test_pip_check_reports_only_imitations_two_pins(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, cwd=tmp_path,
                       timeout=120)
    lines = sorted(line for line in r.stdout.splitlines() if line.strip())
    assert r.returncode == 1 and len(lines) == 2, r.stdout + r.stderr
    gym_pin, sb3_pin = lines
    assert re.fullmatch(r"imitation 1\.0\.1 has requirement gymnasium(\[[\w-]+\])?~=0\.29, "
                        r"but you have gymnasium 1\.4\.\d+\.", gym_pin), gym_pin
    assert re.fullmatch(r"imitation 1\.0\.1 has requirement stable-baselines3~=2\.2\.1, "
                        r"but you have stable-baselines3 2\.9\.\d+\.", sb3_pin), sb3_pin


def run_python(code: str, cwd) -> subprocess.CompletedProcess:
    # -I: isolated mode, so neither the current directory nor PYTHONPATH can lend a module
    return subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.mark.parametrize("name", ["agents", "envs", "demos"])
def test_generic_top_level_names_are_not_installed(name, tmp_path):
    r = run_python(f"import {name}", tmp_path)
    assert r.returncode == 1 and f"No module named '{name}'" in r.stderr, r.stderr


def test_namespaced_packages_import_from_anywhere(tmp_path):
    r = run_python("import rlkit.agents.dqn, rlkit.envs, rlkit.demos; print(rlkit.agents.dqn.__name__)", tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "rlkit.agents.dqn", r.stderr


# ---------------------------------------------------------------------------------------------
# pyproject's filterwarnings: a warning attributed to an rlkit module fails the test
# ---------------------------------------------------------------------------------------------

def run_as_module(module: str, code: str, **names) -> None:
    """Run ``code`` with ``__name__ == module``: Python attributes a warning to the frame's module name."""
    exec(compile(code, f"<{module}>", "exec"), {"__name__": module, "warnings": warnings, **names})


def test_warning_from_an_rlkit_module_is_an_error():
    with pytest.raises(DeprecationWarning, match="old call"):
        run_as_module("rlkit.envs.somewhere", "warnings.warn('old call', DeprecationWarning)")
    with pytest.raises(UserWarning, match="lossy"):
        run_as_module("rlkit.agents.dqn_like", "warnings.warn('lossy')")


def test_library_warning_pointing_into_rlkit_is_an_error():
    """A library warns with stacklevel=2 about how it was called; rlkit was the caller, so it fails."""
    def deprecated_api() -> None:  # stands in for a third-party function
        warnings.warn("use the new API", DeprecationWarning, stacklevel=2)

    with pytest.raises(DeprecationWarning, match="new API"):
        run_as_module("rlkit.demos.caller", "deprecated_api()", deprecated_api=deprecated_api)
    # the same call from a user's module is not rlkit's fault: pyproject ignores DeprecationWarning there
    with warnings.catch_warnings(record=True) as seen:
        run_as_module("someone_elses.module", "deprecated_api()", deprecated_api=deprecated_api)
    assert seen == []
