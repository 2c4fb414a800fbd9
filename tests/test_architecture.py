"""The dependency direction of DESIGN.md: agents -> demos, envs, rlkit; demos -> envs, rlkit;
envs -> rlkit; rlkit -> nothing of ours (it reaches the rest through entry points)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {
    "rlkit": {"rlkit"},
    "envs": {"envs", "rlkit"},
    "demos": {"demos", "envs", "rlkit"},
    "agents": {"agents", "demos", "envs", "rlkit"},
}
OURS = set(ALLOWED)


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):  # every import, including lazy ones inside functions
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & OURS


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_dependency_direction(package):
    offenders = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = imported_packages(path) - ALLOWED[package]
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert not offenders, f"{package} must not import {offenders}"
