"""A person at the keyboard as a policy source (``--policy human``), through pygame.

A window shows the env's frames with an overlay of the episode and step. Keys:

* the env's key map (arrows for classic control; Atari's own map: W/A/S/D and space, from the
  ALE env's ``get_keys_to_action`` as ``gymnasium.utils.play`` uses it), or a user key map;
* ``P`` pauses and resumes, ``Backspace`` discards the episode in progress (it is played again
  with the same seed), ``Esc`` or closing the window stops recording (finished episodes are kept).

When no mapped key is held, the env's no-op action is sent; CartPole has none, so it repeats the
last action. A user key map is a dict (or a JSON file for the CLI's ``--keymap``) from key names,
joined with ``+`` for chords, to actions: ``{"left": 0, "right": 1}``, ``{"a": [-2.0], "d": [2.0]}``;
key names are pygame's (``pygame.key.key_code``: "left", "a", "space", "return", ...). A ``"noop"``
entry sets the action sent when nothing is held.

A person's input is never faked: without a real display (no ``DISPLAY``/``WAYLAND_DISPLAY`` on Linux,
``SDL_VIDEODRIVER=dummy`` or ``offscreen``, or pygame falling back to one of those drivers) the source
refuses in one line, so a headless machine cannot save an episode labelled ``source=human``. Tests drive
pygame's dummy driver through a subclass that overrides :meth:`HumanPolicy.require_display` and posts
``pygame.event`` key events from ``on_frame``; what they record is labelled by the test, not by a user.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rlkit.demos.protocol import DiscardEpisode, StopRecording

from rlkit.errors import RLKitError

# Classic control maps: key names -> action; "noop" when nothing is held (None: repeat the last action).
CLASSIC_KEY_MAPS: dict[str, dict[str, Any]] = {
    "CartPole": {"left": 0, "right": 1, "noop": None},
    "MountainCar": {"left": 0, "right": 2, "noop": 1},
    "Acrobot": {"left": 0, "right": 2, "noop": 1},
    "MountainCarContinuous": {"left": [-1.0], "right": [1.0], "noop": [0.0]},
    "Pendulum": {"left": [2.0], "right": [-2.0], "noop": [0.0]},  # positive torque turns counter-clockwise
    "LunarLander": {"left": 1, "up": 2, "right": 3, "noop": 0},
}


def _pygame() -> Any:
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    try:
        import pygame
    except ImportError:
        raise RLKitError("the human source needs pygame; pip install pygame") from None
    return pygame


# SDL's video drivers that draw nowhere: a window on them is invisible, and no key press can reach it.
FAKE_VIDEO_DRIVERS = ("dummy", "offscreen")


def no_display_reason(pygame: Any) -> str | None:
    """Why a person cannot see the recorder's window and press keys on this machine; None when they can."""
    requested = os.environ.get("SDL_VIDEODRIVER", "").strip().lower()
    if requested in FAKE_VIDEO_DRIVERS:
        return f"SDL_VIDEODRIVER={requested} draws nowhere"
    # X11 and Wayland are found through these variables; macOS and Windows always have their own display.
    if sys.platform not in ("darwin", "win32", "cygwin") \
            and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "DISPLAY and WAYLAND_DISPLAY are unset (no X11 or Wayland session)"
    try:
        pygame.display.init()
    except pygame.error as e:
        return f"pygame cannot open the display ({str(e).strip() or 'no reason given'})"
    driver = pygame.display.get_driver()
    if driver in FAKE_VIDEO_DRIVERS:  # SDL falls back to these when no real driver works
        pygame.display.quit()
        return f"pygame fell back to its {driver} video driver"
    return None


def _key_code(pygame: Any, name: str) -> int:
    if not pygame.get_init():
        pygame.init()  # key names resolve only after init
    try:
        return pygame.key.key_code(name)
    except ValueError:
        raise RLKitError(f"unknown key {name!r} in the key map; use pygame key names such as left, a, space"
                         ) from None


def parse_key_map(pygame: Any, mapping: dict[str, Any]) -> tuple[dict[frozenset[int], Any], Any]:
    """Key names (``"up+left"`` for chords) -> (keycode sets -> action, no-op action)."""
    keys: dict[frozenset[int], Any] = {}
    noop = mapping.get("noop", 0)
    for names, action in mapping.items():
        if names == "noop":
            continue
        keys[frozenset(_key_code(pygame, n.strip()) for n in names.split("+"))] = action
    return keys, noop


def default_key_map(pygame: Any, env_id: str, env: Any) -> tuple[dict[frozenset[int], Any], Any]:
    """The classic-control map of ``env_id``, or the env's own (Atari) ``get_keys_to_action``."""
    name = env_id.rpartition(":")[2].rpartition("/")[2].split("-")[0]
    if name in CLASSIC_KEY_MAPS:
        return parse_key_map(pygame, CLASSIC_KEY_MAPS[name])
    # the lookup gymnasium.utils.play.play does: a wrapper's own map first, then the base env's
    for candidate in (env, getattr(env, "unwrapped", None)):
        if candidate is not None and hasattr(type(candidate), "get_keys_to_action"):
            keys, noop = {}, 0
            for combo, action in candidate.get_keys_to_action().items():
                codes = frozenset(ord(k) if isinstance(k, str) else int(k) for k in combo if k is not None)
                if codes:
                    keys[codes] = action
                else:  # ALE maps the empty chord, (None,), to NOOP
                    noop = action
            return keys, noop
    raise RLKitError(f"no key map for {env_id}; pass one with --keymap FILE.json "
                     f'(e.g. {{"left": 0, "right": 1, "noop": 0}})')


def load_key_map(path: str | Path) -> dict[str, Any]:
    try:
        mapping = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise RLKitError(f"cannot read key map {path} ({type(e).__name__}); expected JSON like "
                         f'{{"left": 0, "right": 1}}') from None
    if not isinstance(mapping, dict):
        raise RLKitError(f"key map {path} must be a JSON object of key names to actions")
    return mapping


class HumanPolicy:
    """Keyboard actions for the recorder (a :class:`demos.protocol.InteractivePolicy`).

    Args:
        env_id: the env (chooses the default key map).
        key_map: key names -> actions (overrides the default map); see the module docstring.
        fps: decisions per second; default: the env's render fps (Atari: 15, i.e. 60 / frame skip).
            0 runs as fast as possible (tests).
        zoom: window scale; default: about 600 pixels on the longer side.
        on_frame: ``on_frame(policy)`` is called once per displayed frame before events are read
            (tests post ``pygame.event`` events from it).
    """

    needs_render = True

    def __init__(self, env_id: str, key_map: dict[str, Any] | None = None, fps: float | None = None,
                 zoom: float | None = None, on_frame: Callable[[HumanPolicy], None] | None = None) -> None:
        self.pygame = _pygame()
        self.require_display()
        self.env_id = env_id
        self.user_key_map = key_map
        self.fps = fps
        self.zoom = zoom
        self.on_frame = on_frame
        self.env: Any = None
        self.screen: Any = None
        self.font: Any = None
        self.clock: Any = None
        self.keys: dict[frozenset[int], Any] = {}
        self.noop: Any = 0
        self.pressed: set[int] = set()
        self.paused = False
        self.episode = self.total = self.step = 0
        self.last_action: Any = None

    def require_display(self) -> None:
        """Refuse, before anything is recorded, when no person can see the window or press its keys."""
        reason = no_display_reason(self.pygame)
        if reason is not None:
            raise RLKitError(f"--policy human needs a display a person can see and type into: {reason}; "
                             f"record on a desktop session (or over ssh -X)")

    def begin_episode(self, env: Any, index: int, total: int) -> None:
        pg = self.pygame
        if self.env is None:
            pg.init()
            self.env = env
            if self.user_key_map is not None:
                self.keys, self.noop = parse_key_map(pg, self.user_key_map)
            else:
                self.keys, self.noop = default_key_map(pg, self.env_id, env)
            if self.fps is None:
                skip = 4 if "NoFrameskip" in self.env_id or self.env_id.startswith("ALE/") else 1
                self.fps = (env.metadata.get("render_fps") or 30) / skip
            self.clock = pg.time.Clock()
            self.font = pg.font.Font(None, 22)
        self.episode, self.total, self.step = index, total, 0
        self.pressed.clear()
        self.last_action = None

    def _handle_events(self) -> None:
        pg = self.pygame
        relevant = set().union(*self.keys) if self.keys else set()
        for event in pg.event.get():
            if event.type == pg.QUIT or (event.type == pg.KEYDOWN and event.key == pg.K_ESCAPE):
                raise StopRecording
            if event.type == pg.KEYDOWN and event.key == pg.K_BACKSPACE:
                raise DiscardEpisode
            if event.type == pg.KEYDOWN and event.key == pg.K_p:
                self.paused = not self.paused
            elif event.type == pg.KEYDOWN and event.key in relevant:
                self.pressed.add(event.key)
            elif event.type == pg.KEYUP:
                self.pressed.discard(event.key)

    def _draw(self) -> None:
        pg = self.pygame
        frame = np.asarray(self.env.render())
        h, w = frame.shape[:2]
        zoom = self.zoom or max(1.0, 600 / max(h, w))
        size = (int(w * zoom), int(h * zoom) + 24)
        if self.screen is None or self.screen.get_size() != size:
            self.screen = pg.display.set_mode(size)
            pg.display.set_caption(f"rlkit demos record: {self.env_id}")
        surface = pg.transform.scale(pg.surfarray.make_surface(frame.swapaxes(0, 1)), (size[0], size[1] - 24))
        self.screen.fill((0, 0, 0))
        self.screen.blit(surface, (0, 24))
        state = "PAUSED  " if self.paused else ""
        text = (f"{state}episode {self.episode + 1}/{self.total}  step {self.step}   "
                f"P pause  Backspace discard  Esc quit")
        self.screen.blit(self.font.render(text, True, (255, 255, 255)), (6, 4))
        pg.display.flip()

    def current_action(self) -> Any:
        held = frozenset(self.pressed)
        if held in self.keys:
            return self.keys[held]
        # a chord not in the map: fall back to a single held key the map knows (latest wins)
        for key in sorted(self.pressed):
            if frozenset([key]) in self.keys:
                return self.keys[frozenset([key])]
        if self.noop is None:
            return self.last_action if self.last_action is not None else next(iter(self.keys.values()))
        return self.noop

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        while True:
            if self.on_frame is not None:
                self.on_frame(self)
            self._handle_events()
            self._draw()
            if self.fps:
                self.clock.tick(self.fps)
            if not self.paused:
                break
        action = self.current_action()
        self.last_action = action
        self.step += 1
        return np.asarray(action)[None]

    def close(self) -> None:
        if self.env is not None:
            self.pygame.display.quit()
            self.pygame.quit()
            self.env = self.screen = None
