"""The documentation site builds offline with ``mkdocs build --strict`` (what .ci/docs runs)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_mkdocs_build_strict(tmp_path):
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings_handlers") is None:
        pytest.skip("mkdocs is not installed: pip install -e '.[docs]' -c constraints.txt")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the API reference was rendered from the docstrings, including the folders installed under rlkit.*
    api = (site / "api" / "index.html").read_text()
    assert "rlkit.envs.make_env" in api and "rlkit.agents.dqn" in api and "rlkit.run.Run" in api
    # nothing fetched from the network when the pages are read: no Google fonts, no CDN scripts
    index = (site / "index.html").read_text()
    assert "fonts.googleapis" not in index and "cdn.jsdelivr" not in index
