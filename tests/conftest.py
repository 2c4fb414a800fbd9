"""Shared test setup: one torch thread (as in CI), headless SDL, small helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(1)

import rlkit.envs  # noqa: E402,F401  (registers the rlkit/ test envs)

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``rlkit ARGS`` in a subprocess the way a user would."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return subprocess.run([sys.executable, "-m", "rlkit.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd or REPO, env=env)


@pytest.fixture
def cli():
    return run_cli
