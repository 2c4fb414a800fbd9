"""The contract between the recorder (and DAgger) and interactive policies such as a person at the keyboard.

Any Policy (``act(obs_batch, deterministic) -> actions_batch``) can be recorded. A policy that also
satisfies :class:`InteractivePolicy` gets three more calls from the recorder and from DAgger:

* ``needs_render``: True makes the env with ``render_mode="rgb_array"`` (a window shows its frames);
* ``begin_episode(env, index, total)``: before each episode's first ``act`` (index counts committed
  episodes; a discarded episode is begun again with the same index and seed);
* ``close()``: once, when recording ends, however it ends.

From ``act`` it may raise :class:`DiscardEpisode` (the episode in progress is dropped and played
again with the same seed) or :class:`StopRecording` (recording ends; committed episodes are kept).

This module imports nothing of rlkit's, so the recorder, the keyboard source and DAgger all import
it without importing each other.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


class DiscardEpisode(Exception):
    """Raised by an interactive policy to drop the episode in progress."""


class StopRecording(Exception):
    """Raised by an interactive policy to end the recording after the committed episodes."""


@runtime_checkable
class InteractivePolicy(Protocol):
    """A Policy that takes part in the episode loop (see the module docstring)."""

    needs_render: bool

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray: ...

    def begin_episode(self, env: Any, index: int, total: int) -> None: ...

    def close(self) -> None: ...


def is_interactive(policy: Any) -> bool:
    """True when ``policy`` satisfies :class:`InteractivePolicy` (every member present)."""
    return isinstance(policy, InteractivePolicy)
