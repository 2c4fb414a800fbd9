"""The on-disk demonstration dataset: its layout, and the in-memory types learners use.

Layout of a dataset directory (format version 3; the README's "Demonstrations" section is the spec)::

    DATASET/
      manifest.json        header: format, env id and kwargs, spaces, versions, source (written atomically)
      episodes.jsonl       the index: one JSON line per committed episode (file, offset, bytes, sha256, seed, ...)
      episodes/000000.pack one pack per writer session: its episodes' archives back to back
                           (:mod:`demos.archive`: obs (T+1, ...), actions (T, ...), [rewards (T,)], meta.json)
      ignored.jsonl        only after `rlkit demos repair`: pack byte ranges it could not index

The modules: :mod:`demos.codec` (zip and .npy bytes), :mod:`demos.archive` (one episode's archive),
:mod:`demos.reader` (manifest, index, containment and coverage checks, :func:`load`),
:mod:`demos.writer` (the crash-safe :class:`DatasetWriter`), :mod:`demos.repair` (rebuild an index).

Why this shape:
    * An episode counts once its index line is appended, by one ``write(2)`` of a short line on an
      ``O_APPEND`` descriptor, after its archive is in the pack. Readers only read byte ranges named by
      complete index lines, so none sees half an episode. Appending is O(1) per episode (rewriting a
      JSON manifest each time is O(N^2) over a recording); a line cut by a crash has no trailing
      newline and is not committed. A recorder killed with SIGKILL therefore keeps every committed
      episode; what it leaves uncommitted is at most one archive (torn or complete) at the end of its
      pack, which the next writer settles (see :mod:`demos.writer`).
    * Every pack byte is accounted for: covered by an index line, or that one uncommitted archive of
      the last session. Anything else means a damaged index, and readers say so instead of silently
      showing fewer episodes; ``rlkit demos repair`` rebuilds the index from the archives' meta.json.
    * Packs, not a file per episode: creating a file cost ~0.8 ms of kernel time here, as much as
      recording 40 CartPole steps, while appending to an open file costs microseconds. Each session
      starts its own pack (named by its first episode), so appending never rewrites committed bytes.
    * ``manifest.json`` is written last when a dataset is created, so its presence marks a dataset.
    * Frame-stacked image observations (Atari's 4x84x84) are stored once per frame ("stacked"
      encoding) and rebuilt on load, so a dataset costs about what its frames cost compressed.
    * ``fsync=True`` also survives power loss at ~6 ms per episode here; a killed process does not
      need it (the page cache outlives the process), so it is off by default.
    * Formats 1 (one ``episodes/NNNNNN.npz`` per episode, no ``offset``) and 2 (archives without
      meta.json) are still read; appending to them upgrades the manifest to format 3.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np

import rlkit
from rlkit.errors import RLKitError
from rlkit.spaces import space_brief, space_from_json, space_to_json  # noqa: F401  (re-exported)

FORMAT = "rlkit-demos"
FORMAT_VERSION = 3
MANIFEST = "manifest.json"
INDEX = "episodes.jsonl"
IGNORED = "ignored.jsonl"  # byte ranges `rlkit demos repair` could not index, set aside (never deleted)
EPISODE_DIR = "episodes"


def versions() -> dict[str, str]:
    return {"rlkit": rlkit.__version__, "gymnasium": gym.__version__, "numpy": np.__version__,
            "python": sys.version.split()[0]}


def bare_id(env_id: str) -> str:
    """``pkg.module:Env-v0`` and ``Env-v0`` name the same env."""
    return env_id.rpartition(":")[2]


def env_module(env_id: str) -> str | None:
    """The module a ``pkg.module:Env-v0`` id imports (None for a plain id)."""
    module, sep, _ = env_id.rpartition(":")
    return module if sep else None


class Transitions(NamedTuple):
    """Flat (obs, action, next obs, done) arrays over all episodes, numpy or torch.

    ``dones[t]`` is True on the last step of an episode that *terminated* (not on truncation),
    like ``imitation.data.types.Transitions``: a learner must not bootstrap there.
    """

    obs: Any
    acts: Any
    next_obs: Any
    dones: Any


@dataclass
class Episode:
    """One demonstration. ``obs`` is T+1 long (it includes the final observation), ``actions`` T long.

    ``rewards`` is None unless the recording kept them; ``episode_return`` is metadata for reports
    (learners never read it) and may be None. ``index`` is the episode's number in its dataset on disk.
    """

    obs: np.ndarray
    actions: np.ndarray
    terminated: bool
    truncated: bool
    seed: int | None
    options: dict[str, Any] | None = None
    rewards: np.ndarray | None = None
    episode_return: float | None = None
    index: int = 0
    source: str | None = None

    @property
    def length(self) -> int:
        return len(self.actions)


class Dataset:
    """Episodes plus the dataset's metadata (``meta``; spaces as gymnasium spaces).

    ``len(dataset)`` is the number of episodes; iterating yields :class:`Episode` objects.
    """

    def __init__(self, meta: dict[str, Any], episodes: list[Episode], path: Path | None = None,
                 skipped: Sequence[tuple[int, str]] = (), trusted_env_id: str | None = None) -> None:
        self.meta = meta
        self.episodes = episodes
        self.path = path
        self.skipped = list(skipped)  # (episode index, reason) left out by skip_corrupt
        # A `pkg.module:Env-v0` id read from the manifest imports pkg.module when an env is made from it:
        # allowed only when the user named that id (load(env_id=...), the CLI's --env).
        self.trusted_env_id = trusted_env_id

    def __len__(self) -> int:
        return len(self.episodes)

    def __iter__(self) -> Iterator[Episode]:
        return iter(self.episodes)

    def __getitem__(self, i: int) -> Episode:
        return self.episodes[i]

    def __repr__(self) -> str:
        return (f"Dataset({self.meta['env_id']!r}, episodes={len(self)}, steps={self.num_steps}, "
                f"path={str(self.path)!r})")

    @property
    def env_id(self) -> str:
        """The env id to make; a module-prefixed id only when the user named it (else a one-line error)."""
        env_id = self.meta["env_id"]
        module = env_module(env_id)
        if module is not None and self.trusted_env_id != env_id:
            raise RLKitError(f"dataset {self.path} was recorded on {env_id!r}, which imports the Python module "
                             f"{module!r}; rlkit imports a module named in a file only when you name it: pass "
                             f"--env {env_id} (Python: demos.load(path, env_id={env_id!r}))")
        return env_id

    @property
    def observation_space(self) -> gym.Space:
        return self.meta["observation_space"]

    @property
    def action_space(self) -> gym.Space:
        return self.meta["action_space"]

    @property
    def num_steps(self) -> int:
        return sum(ep.length for ep in self.episodes)

    @property
    def has_rewards(self) -> bool:
        return bool(self.episodes) and all(ep.rewards is not None for ep in self.episodes)

    def transitions(self, torch: bool = False) -> Transitions:
        """All episodes as flat transitions (episode order); ``torch=True`` returns tensors sharing memory."""
        if not self.episodes:
            raise RLKitError(f"dataset {self.path} has no episodes; record some with `rlkit demos record`")
        eps = self.episodes
        obs = np.concatenate([ep.obs[:-1] for ep in eps])
        next_obs = np.concatenate([ep.obs[1:] for ep in eps])
        acts = np.concatenate([ep.actions for ep in eps])
        dones = np.zeros(len(acts), dtype=bool)
        ends = np.cumsum([ep.length for ep in eps]) - 1
        terminal = np.array([ep.terminated and ep.length > 0 for ep in eps])
        dones[ends[terminal]] = True
        if not torch:
            return Transitions(obs, acts, next_obs, dones)
        import torch as th

        return Transitions(*(th.from_numpy(np.ascontiguousarray(a)) for a in (obs, acts, next_obs, dones)))

    def subset(self, indices: Sequence[int]) -> Dataset:
        """The episodes at these positions (0..len-1, not on-disk indices), sharing ``meta``."""
        try:
            episodes = [self.episodes[int(i)] for i in indices]
        except IndexError:
            raise RLKitError(f"subset index out of range: the dataset has {len(self)} episodes") from None
        return Dataset(self.meta, episodes, self.path, trusted_env_id=self.trusted_env_id)

    def split(self, val_fraction: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
        """Split by whole episodes into (train, validation); at least one episode on each side."""
        if not 0.0 < val_fraction < 1.0:
            raise RLKitError(f"val_fraction must be in (0, 1); got {val_fraction}")
        if len(self) < 2:
            raise RLKitError(f"cannot split {len(self)} episode(s) into train and validation; record at least 2")
        order = np.random.default_rng(seed).permutation(len(self))
        num_val = min(max(1, round(val_fraction * len(self))), len(self) - 1)
        return self.subset(sorted(order[num_val:])), self.subset(sorted(order[:num_val]))

    def check_env(self, env_id: str | None = None, observation_space: gym.Space | None = None,
                  action_space: gym.Space | None = None) -> None:
        """Raise a one-line RLKitError when the dataset does not match this env (learners call it)."""
        recorded = self.meta["env_id"]
        if env_id is not None and bare_id(env_id) != bare_id(recorded):
            raise RLKitError(f"dataset {self.path} was recorded on {recorded}, not {env_id}; "
                             f"record demonstrations for {env_id} or train on {recorded}")
        for name, space in (("observation", observation_space), ("action", action_space)):
            if space is not None and space_to_json(space) != space_to_json(self.meta[f"{name}_space"]):
                raise RLKitError(f"dataset {self.path} has {name} space "
                                 f"{space_brief(self.meta[f'{name}_space'])}, but the env has {space_brief(space)}")
