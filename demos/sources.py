"""Policy sources for the recorder: ``SOURCE`` strings turned into rlkit Policies.

=================================  ===========================================================
``runs/dqn-cartpole`` or ``.pt``   an rlkit run directory or checkpoint, rebuilt through the agent
                                   registry (``rlkit.policy.load_policy``)
``sb3:ALGO:PATH.zip``              a saved Stable-Baselines3 model (``PPO``, ``DQN``, ``A2C``, ``SAC``,
                                   ``TD3``, ``DDPG``), acting through ``model.predict``; loaded with
                                   nothing unpickled (:mod:`rlkit.sb3_files`; a zip that needs
                                   unpickling is refused unless ``trust_remote_code``)
``random``                         uniform random actions, seeded
``python:module:name``             ``name`` imported from ``module``: an object with ``act`` is used as
                                   the Policy; a class is a factory, called as
                                   ``name(observation_space, action_space)`` and must return a
                                   Policy; any other callable is a batched policy function
                                   ``name(obs_batch) -> actions_batch`` (numpy in, numpy out)
``human``                          a person at the keyboard (see :mod:`demos.human`)
=================================  ===========================================================
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from rlkit.errors import RLKitError

if TYPE_CHECKING:
    from rlkit.policy import Policy


class FunctionPolicy:
    """A batched function ``f(obs_batch) -> actions_batch`` as a Policy (``deterministic`` is ignored)."""

    def __init__(self, fn: Any, name: str = "") -> None:
        self.fn = fn
        self.name = name

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return np.asarray(self.fn(obs))


def _env_spaces(env_id: str, env_kwargs: dict[str, Any] | None) -> tuple[gym.Space, gym.Space]:
    from rlkit.envs import make_env

    env = make_env(env_id, env_kwargs=env_kwargs)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def _load_sb3(spec: str, observation_space: gym.Space, action_space: gym.Space, env_id: str,
              trust_remote_code: bool = False) -> Policy:
    """An ``sb3:ALGO:PATH.zip`` source, loaded with nothing unpickled (:mod:`rlkit.sb3_files`) unless
    ``trust_remote_code``."""
    _, algo, path = spec.split(":", 2) if spec.count(":") >= 2 else (None, "", "")
    if not algo or not path:
        raise RLKitError(f"bad SB3 source {spec!r}; use sb3:ALGO:PATH.zip, e.g. sb3:PPO:models/ppo_cartpole.zip")
    from rlkit.policy import SB3ModelPolicy
    from rlkit.sb3_files import load_sb3_zip, sb3_class

    sb3_class(algo, spec)  # an unknown algorithm is named before a missing file
    if not Path(path).is_file():
        raise RLKitError(f"SB3 model {path} does not exist; pass the .zip written by model.save()")
    return SB3ModelPolicy(load_sb3_zip(path, algo, observation_space, action_space, env_id,
                                       trust_remote_code=trust_remote_code))


def _load_python(spec: str, observation_space: gym.Space, action_space: gym.Space) -> Policy:
    module_name, _, name = spec[len("python:"):].partition(":")
    if not module_name or not name:
        raise RLKitError(f"bad python source {spec!r}; use python:package.module:callable")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise RLKitError(f"cannot import {module_name!r} for policy source {spec!r} ({e})") from None
    obj = module
    for part in name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise RLKitError(f"{module_name} has no attribute {name!r} (policy source {spec!r})")
    if inspect.isclass(obj):
        obj = obj(observation_space, action_space)  # a Policy factory
        if not callable(getattr(obj, "act", None)):
            raise RLKitError(f"{spec}: the class must build an object with act(obs_batch, deterministic)")
        return obj
    if callable(getattr(obj, "act", None)):
        return obj
    if callable(obj):
        return FunctionPolicy(obj, spec)
    raise RLKitError(f"{spec} is neither a Policy, a Policy class nor a callable")


def check_policy_spaces(policy: Any, observation_space: gym.Space, env_id: str, source: str) -> None:
    """A policy built for other observations (another env's checkpoint) fails here, in one line."""
    theirs = getattr(policy, "observation_space", None)
    if theirs is not None and getattr(theirs, "shape", None) != observation_space.shape:
        raise RLKitError(f"policy {source} expects observations of shape {theirs.shape}, but {env_id} gives "
                         f"{observation_space.shape}; use a policy trained on {env_id}")


def resolve_policy(source: str, env_id: str, seed: int = 0, env_kwargs: dict[str, Any] | None = None,
                   checkpoint: str = "latest", trust_remote_code: bool = False, **human_kwargs: Any) -> Policy:
    """Turn a ``SOURCE`` string into a Policy for ``env_id`` (see the module docstring for the forms).

    Args:
        source: the policy source.
        env_id: the env the policy will act in (its spaces are checked against the policy's).
        seed: seed of the ``random`` source.
        env_kwargs: keyword arguments of the env.
        checkpoint: for an rlkit run directory: ``latest``, ``best`` or a step number.
        trust_remote_code: for an ``sb3:`` source: let SB3 unpickle what rlkit cannot supply (a custom
            policy class, say), which runs any code the zip's author put in it. Off: such a zip is refused.
        human_kwargs: options of :class:`demos.human.HumanPolicy` (``key_map``, ``fps``, ...).
    """
    source = str(source)
    if checkpoint != "latest" and not Path(source).is_dir():
        raise RLKitError(f"--checkpoint {checkpoint} picks a checkpoint of an rlkit run directory; {source} is not one")
    if source == "human":
        from rlkit.demos.human import HumanPolicy

        return HumanPolicy(env_id, **human_kwargs)
    observation_space, action_space = _env_spaces(env_id, env_kwargs)
    if source == "random":
        from rlkit.policy import RandomPolicy

        return RandomPolicy(action_space, seed=seed)
    if source.startswith("sb3:"):
        policy = _load_sb3(source, observation_space, action_space, env_id, trust_remote_code)
    elif source.startswith("python:"):
        policy = _load_python(source, observation_space, action_space)
    elif Path(source).exists():
        from rlkit.policy import load_policy

        policy = load_policy(source, checkpoint)
    else:
        raise RLKitError(f"unknown policy source {source!r}; use a run directory or checkpoint, "
                         f"sb3:ALGO:PATH.zip, random, human or python:module:callable")
    check_policy_spaces(policy, observation_space, env_id, source)
    return policy
