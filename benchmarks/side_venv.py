"""The peers' side virtualenvs (SBX and JAX, d3rlpy): made on first use beside rlkit's, never inside it.

``ensure_side_venv`` creates the venv, installs torch first when it is pinned (an open torch range, as a peer's own
requirement would be, pulls a multi-GB CUDA build; the pin takes the local CPU build) and then the rest, and writes
the requirements into a marker file: the venv is reused while they are unchanged.
"""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path


def installed_versions(names: Iterable[str]) -> dict[str, str]:
    """The installed version of each of ``names`` that this interpreter has."""
    found = {}
    for name in names:
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return found


def side_requirements(side_pins: dict[str, str], same_as_here: Iterable[str]) -> list[str]:
    """``side_pins`` as ``name==version``, then each of ``same_as_here`` at this interpreter's version (without a
    local label such as ``+cpu``, which ``==`` matches anyway)."""
    return [f"{name}=={version}" for name, version in side_pins.items()] + \
        [f"{name}=={md.version(name).split('+')[0]}" for name in same_as_here]


def ensure_side_venv(path: Path, requirements: list[str], marker_name: str) -> Path:
    """The side venv's python at ``path``, made (and filled) on first use; reused while ``requirements`` match
    its marker file ``marker_name``."""
    python, marker = path / "bin" / "python", path / marker_name
    wanted = "\n".join(requirements) + "\n"
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    if not python.exists():
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(path)], check=True)
    torch_pin = [r for r in requirements if r.startswith("torch==")]
    for reqs in (torch_pin, requirements):
        if reqs:
            cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check", *reqs]
            print("side venv:", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
    marker.write_text(wanted)
    return python
