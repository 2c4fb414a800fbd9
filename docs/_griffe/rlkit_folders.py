"""A griffe extension: the folders agents/, envs/, demos/ install as rlkit.agents, rlkit.envs, rlkit.demos.

setuptools maps them with ``package-dir``, which griffe's static finder does not follow: it looks for
``rlkit/envs``. This loads each folder on its own and hangs it under the ``rlkit`` package, so
``::: rlkit.envs`` and cross-references resolve to the installed names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import griffe

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"agents": "agents", "envs": "envs", "demos": "demos"}


class RlkitFolders(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if pkg.name != "rlkit":
            return
        for name, folder in FOLDERS.items():
            sub = loader.load(ROOT / folder, try_relative_path=True)
            sub.name = name
            pkg.set_member(name, sub)
