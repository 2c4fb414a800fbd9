"""``make_env`` / ``make_vec_env``: one place that turns an env id into a seeded, wrapped env."""

from __future__ import annotations

import importlib
import os
import warnings
from typing import Any

import gymnasium as gym
from rlkit.envs import minatar
from rlkit.envs.vector import VecEnv

from rlkit.errors import RLKitError, missing_extra

_ATARI_ENTRY_POINTS = ("ale_py", "atari")


def _import_hint(module: str, error: ImportError) -> str:
    """What to do about a ``module:Env-v0`` prefix that does not import."""
    top = module.split(".")[0]
    if getattr(error, "name", None) != top:  # the module was found; something it imports was not
        return "install what it needs"
    # The `rlkit` script, unlike `python -m`, does not search the working directory for modules.
    if os.path.exists(f"{top}.py") or os.path.isdir(top):
        return f"{top} is in the working directory, which the rlkit command does not search: run it with PYTHONPATH=."
    return "is the package installed? (for a module in your working directory, run with PYTHONPATH=.)"


def _missing_dependency(env_id: str, error: gym.error.DependencyNotInstalled) -> RLKitError:
    """gymnasium's "X is not installed" as the rlkit extra that installs X (gymnasium's own advice,
    `pip install gymnasium[box2d]`, would not install into rlkit's pinned stack)."""
    text = str(error).lower()
    for needle, package, extra in (("box2d", "Box2D", "box2d"), ("mujoco", "MuJoCo", "mujoco"),
                                   ("ale", "ale-py", "atari")):
        if needle in text:
            return RLKitError(f"{env_id} needs {package}, which is not installed; install the extra with: "
                              f"pip install 'rlkit[{extra}]'")
    return RLKitError(f"{env_id} needs a missing dependency ({str(error).splitlines()[0]})")


def _import_box2d_quietly() -> None:
    """Import Box2D before gymnasium does, with its SWIG bindings' import-time DeprecationWarnings ("builtin
    type SwigPyPacked has no __module__ attribute") ignored: where warnings are errors (``python -W error``,
    pytest's ``-W error``), that warning, raised inside the extension's init, crashes the interpreter."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="builtin type .* has no __module__ attribute",
                                category=DeprecationWarning)
        try:
            import Box2D  # noqa: F401
        except ImportError:
            pass  # gymnasium.make says so next; _missing_dependency names the extra


def _spec(env_id: str) -> Any:
    """The registered spec of ``env_id``, importing ``pkg.module:`` prefixes; one-line errors."""
    if ":" in env_id:
        module, _, name = env_id.partition(":")
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise RLKitError(f"cannot import {module!r} for env id {env_id!r} ({e}); {_import_hint(module, e)}"
                             ) from None
        env_id = name
    if env_id.startswith("ALE/") or "NoFrameskip" in env_id:
        try:
            import ale_py
        except ImportError:
            raise missing_extra("ale-py (Atari)", "atari") from None
        gym.register_envs(ale_py)  # explicit: gymnasium 1.x no longer imports ALE by itself
    if minatar.is_minatar(env_id):
        minatar.register()  # MinAtar's own ids; its package (GPL-3.0) is imported here, when one is asked for
    try:
        return gym.spec(env_id)
    except gym.error.Error as e:
        close = [k for k in gym.envs.registry if env_id.split("-")[0].lower() in k.lower()][:3]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise RLKitError(f"unknown env id {env_id!r}{hint}: {str(e).splitlines()[0]}") from None


def is_atari(env_id: str) -> bool:
    """True for ALE ids (``ALE/Pong-v5``, ``PongNoFrameskip-v4``)."""
    spec = _spec(env_id)
    entry = spec.entry_point if isinstance(spec.entry_point, str) else getattr(spec.entry_point, "__module__", "")
    return any(tag in entry for tag in _ATARI_ENTRY_POINTS)


def make_env(env_id: str, seed: int | None = None, render_mode: str | None = None,
             atari_wrappers: bool = True, frame_stack: int = 4, env_kwargs: dict | None = None) -> gym.Env:
    """Make one env, Atari-preprocessed when the id is an ALE game, and seed its spaces.

    The env's first ``reset`` should use the same ``seed`` (``VecEnv`` does this); the action and
    observation spaces are seeded here so that ``action_space.sample()`` is reproducible too.

    Args:
        env_id: any id ``gymnasium.make`` accepts, including ``package.module:EnvName-v0``.
        seed: seed for the spaces (and for the first reset, by the caller).
        render_mode: e.g. ``"rgb_array"`` for video.
        atari_wrappers: apply DQN-Nature preprocessing to ALE ids (84x84 gray, frame skip 4 with a
            max over the last two frames, 30 no-op starts, frame stack).
        frame_stack: frames to stack for Atari.
        env_kwargs: keyword arguments for ``gymnasium.make``.

    Atari ids: ``*NoFrameskip-v4`` (the Nature/A3C protocol: no sticky actions) and ``ALE/*-v5``
    both come out as ``(frame_stack, 84, 84)`` uint8. A v5 env skips 4 frames inside ALE by default;
    it is made with ``frameskip=1`` so that the skip happens once, in ``AtariPreprocessing`` (which
    also max-pools the last two frames, which ALE's own skip does not). v5's sticky actions stay on
    (``repeat_action_probability=0.25``, Machado et al. 2018): ALE applies them to every emulator
    frame, so with the skip moved into the wrapper they act exactly as under ALE's own skip. Pass
    ``env_kwargs={"repeat_action_probability": 0.0}`` to turn them off.

    MinAtar ids (``MinAtar/Breakout-v0``; needs ``rlkit[minatar]``) come out as uint8 (channels, 10, 10)
    grids of 0/1 with MinAtar's sticky actions (0.1) and difficulty ramping on (:mod:`rlkit.envs.minatar`).
    """
    spec = _spec(env_id)
    kwargs = dict(env_kwargs or {})
    limit = kwargs.get("max_episode_steps")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        # gymnasium takes -1 or 0 silently (and 2.5 fails mid-episode); a time limit is a positive step count
        raise RLKitError(f"env_kwargs max_episode_steps must be a positive whole number of steps; got {limit!r}")
    atari = is_atari(env_id) and atari_wrappers
    if atari:
        if kwargs.get("frameskip", 1) != 1:
            raise RLKitError(f"env_kwargs frameskip={kwargs['frameskip']!r} with Atari preprocessing would skip "
                             f"frames twice; drop it (the wrapper skips 4) or pass atari_wrappers=False")
        if spec.kwargs.get("frameskip", 1) != 1:  # ALE/*-v5 skips 4 by default; the wrapper skips instead
            kwargs["frameskip"] = 1
    if "box2d" in str(spec.entry_point):
        _import_box2d_quietly()
    try:
        if render_mode is not None:
            kwargs["render_mode"] = render_mode
        with warnings.catch_warnings():
            if minatar.is_minatar(spec.id):
                minatar.ignore_version_notice()
            env = gym.make(env_id, **kwargs)
    except gym.error.DependencyNotInstalled as e:
        raise _missing_dependency(env_id, e) from None
    except TypeError as e:
        raise RLKitError(f"bad env_kwargs for {env_id}: {e}") from None
    if atari:
        try:
            import cv2  # noqa: F401
        except ImportError:
            raise missing_extra("opencv-python-headless", "atari") from None
        env = gym.wrappers.AtariPreprocessing(env, noop_max=30, frame_skip=4, screen_size=84,
                                              terminal_on_life_loss=False, grayscale_obs=True)
        env = gym.wrappers.FrameStackObservation(env, stack_size=frame_stack)
    if minatar.is_minatar(spec.id):
        env = minatar.MinAtarObservation(env)  # uint8 channels-first grids, fully seeded resets
    if seed is not None:
        env.action_space.seed(seed)
        env.observation_space.seed(seed)
    return env


def make_vec_env(env_id: str, num_envs: int = 1, seed: int = 0, **make_kwargs: Any) -> VecEnv:
    """``num_envs`` copies of :func:`make_env`, env ``i`` seeded ``seed + i``, with explicit autoreset."""
    if num_envs < 1:
        raise RLKitError(f"num_envs must be at least 1; got {num_envs}")
    return VecEnv([make_env(env_id, seed=seed + i, **make_kwargs) for i in range(num_envs)], seed=seed)
