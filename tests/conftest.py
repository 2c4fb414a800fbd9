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
    return subprocess.run([sys.executable, "-m", "rlkit.apps.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd or REPO, env=env)


@pytest.fixture
def cli():
    return run_cli


# ------------------------------------------------------------------------------------ fault-suite figures
# Fault tests count what they tried with the ``faults`` fixture (``faults.held("category", n)``). A test's
# counts join the totals only when the test passed, and the totals are printed at the end of the run and,
# with RLKIT_FAULT_FIGURES=FILE, written as JSON: the README's Reliability table comes from that output.

class FaultCounts:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def held(self, category: str, cases: int = 1) -> None:
        """``cases`` faults of ``category`` that were tried and held (refused in one line, or answered right)."""
        self.counts[category] = self.counts.get(category, 0) + cases


FAULT_TOTALS: dict[str, int] = {}


@pytest.fixture
def faults(request) -> FaultCounts:
    counts = FaultCounts()
    request.node.fault_counts = counts
    return counts


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    counts = getattr(item, "fault_counts", None)
    if counts is not None and report.when == "call" and report.passed:
        for category, n in counts.counts.items():
            FAULT_TOTALS[category] = FAULT_TOTALS.get(category, 0) + n


def pytest_terminal_summary(terminalreporter):
    if not FAULT_TOTALS:
        return
    terminalreporter.section("fault suite: cases tried that held")
    for category, n in sorted(FAULT_TOTALS.items()):
        terminalreporter.write_line(f"{n:5d}  {category}")
    out = os.environ.get("RLKIT_FAULT_FIGURES")
    if out:
        import json

        Path(out).write_text(json.dumps(dict(sorted(FAULT_TOTALS.items())), indent=2) + "\n")
