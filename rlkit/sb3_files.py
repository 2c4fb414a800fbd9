"""Stable-Baselines3 model zips, loaded without unpickling anything from them.

An SB3 ``.zip`` holds the weights (``*.pth``, which SB3 2.9 reads with ``torch.load(weights_only=True)``)
and a JSON ``data`` file whose non-JSON entries (the spaces, the policy class, schedules, buffers'
classes, the last observations, sometimes ``policy_kwargs``) are cloudpickles: ``BaseAlgorithm.load``
unpickles them, which runs any code a file's author put there. rlkit supplies every such entry itself
(SB3's ``custom_objects``), so nothing is unpickled:

* the spaces are the env's, after checking them against the description SB3 writes beside each
  pickle (type, shape, ``n``, the bounds when printed in full);
* the policy class is one of the algorithm's own (``MlpPolicy``, ``CnnPolicy``, ``MultiInputPolicy``),
  picked by the class name SB3 writes beside its pickle, else by the observation space;
* ``policy_kwargs`` are rebuilt from their printed form: literals, plus classes named exactly as one of
  torch's activations or optimizers or SB3's feature extractors;
* schedules, buffer classes, action noise and the last observations matter only to ``learn()``; a
  placeholder stands in (``_setup_model`` rebuilds the schedules from the stored numbers).

An entry none of this covers (a custom policy class or feature extractor, an unknown key) is refused
in one line, unless the caller opted in (``trust_remote_code``, the name SB3 uses for the Hub), in which
case SB3 loads the file its own way.
"""

from __future__ import annotations

import ast
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from rlkit.errors import RLKitError
from rlkit.spaces import space_brief

SB3_ALGOS = ("A2C", "DDPG", "DQN", "PPO", "SAC", "TD3")

#: The opt-in to SB3's own, unpickling load, as the CLI spells it (`rlkit demos record`, `rlkit eval`;
#: DAgger's expert is a config option).
TRUST_FLAG = "--trust-remote-code (DAgger's expert: --set trust_remote_code=true)"

# A zip's JSON is a few kB (a few MB with pickled image observations), its weights rarely 100 MB; more
# is not an SB3 model, and zipfile never inflates past a member's declared size, so these bound memory.
_MAX_DATA_BYTES = 64 << 20
_MAX_ZIP_BYTES = 2 << 30

# Entries read only by learn() (or rebuilt from plain numbers by _setup_model): placeholders let the
# model act. The schedules come back from learning_rate / clip_range / exploration_* in _setup_model.
_TRAINING_ONLY: dict[str, Any] = {
    "lr_schedule": None, "exploration_schedule": None, "learning_rate": 0.0, "clip_range": 0.2,
    "clip_range_vf": None, "rollout_buffer_class": None, "replay_buffer_class": None, "action_noise": None,
    "train_freq": (1, "step"), "_last_obs": None, "_last_original_obs": None, "_last_episode_starts": None,
    "ep_info_buffer": None, "ep_success_buffer": None,
}

_CLASS_REPR = re.compile(r"<class '([\w.]+)'>")


def sb3_class(algo: str, spec: str) -> Any:
    """The SB3 algorithm class named ``algo`` (one of :data:`SB3_ALGOS`), or a one-line error."""
    import stable_baselines3

    cls = getattr(stable_baselines3, algo.upper(), None)
    if algo.upper() not in SB3_ALGOS or cls is None:
        raise RLKitError(f"unknown SB3 algorithm {algo!r} in {spec!r}; one of: {', '.join(SB3_ALGOS)}")
    return cls


def read_data(raw: bytes, name: str) -> dict[str, Any]:
    """The zip's ``data`` entry as JSON (never unpickled), with one-line errors for a damaged file."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
        info = archive.getinfo("data")
        if info.file_size > _MAX_DATA_BYTES:
            raise ValueError(f"its data entry declares {info.file_size} bytes")
        total = sum(member.file_size for member in archive.infolist())
        if total > _MAX_ZIP_BYTES:
            raise ValueError(f"its entries declare {total} bytes in all, more than an SB3 model holds")
        data = json.loads(archive.read(info))
    except Exception as e:  # zipfile, KeyError, json and unicode errors for a foreign or damaged file
        raise RLKitError(f"cannot load {name} as an SB3 model ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else 'not an SB3 zip'})") from None
    if not isinstance(data, dict):
        raise RLKitError(f"cannot load {name} as an SB3 model (its data entry is not a JSON object)")
    return data


def pickled_entries(data: dict[str, Any]) -> list[str]:
    """Keys of ``data`` that SB3 would unpickle."""
    return sorted(k for k, v in data.items() if isinstance(v, dict) and ":serialized:" in v)


def _numbers(text: Any, size: int) -> np.ndarray | None:
    """An array printed by numpy (``[-4.8 -inf 0.42]``, nested for more dims), or None when numpy
    abridged it (``...``) or it does not hold ``size`` numbers."""
    if not isinstance(text, str) or "..." in text:
        return None
    try:
        values = np.array([float(x) for x in text.replace("[", " ").replace("]", " ").split()])
    except ValueError:
        return None
    return values if values.size == size else None


def _short(value: Any) -> str:
    """A value read from the zip, on one short line (numpy prints 2-D bounds over several)."""
    text = " ".join(str(value).split())
    return text if len(text) <= 80 else text[:77] + "..."


def _space_mismatch(described: Any, space: gym.Space, what: str, name: str, env_name: str) -> str | None:
    """What in SB3's description of the model's space contradicts the env's ``space`` (None: nothing).

    The description is advisory (a pickle's readable neighbour): fields that are absent or unreadable
    are skipped; the env's space is what the model gets."""
    if not isinstance(described, dict):
        return None
    theirs = f"SB3 model {name} was trained for {what} "
    match = _CLASS_REPR.fullmatch(str(described.get(":type:", "")))
    if match and match.group(1).startswith(("gymnasium.spaces.", "gym.spaces.")) \
            and match.group(1).rsplit(".", 1)[-1] != type(space).__name__:
        return f"{theirs}of type {_short(match.group(1).rsplit('.', 1)[-1])}, but {env_name} has {space_brief(space)}"
    shape = described.get("_shape")
    if isinstance(shape, list) and tuple(shape) != tuple(space.shape or ()):
        if what == "observations":  # the wording rlkit uses for any policy built for another env
            return f"SB3 model {name} expects observations of shape {_short(tuple(shape))}, but {env_name} " \
                   f"gives {space.shape}"
        return f"{theirs}of shape {_short(tuple(shape))}, but {env_name} has {space_brief(space)}"
    if isinstance(space, gym.spaces.Discrete):
        for key in ("n", "start"):
            if str(described.get(key, getattr(space, key))) != str(int(getattr(space, key))):
                return f"{theirs}with {key}={_short(described[key])}, but {env_name} has {space_brief(space)}"
    if isinstance(space, gym.spaces.Box):
        for key in ("low", "high"):
            printed = described.get(f"{key}_repr") or described.get(key)  # *_repr: the one value of uniform bounds
            bound = np.asarray(getattr(space, key), dtype=np.float64).reshape(-1)
            values = _numbers(printed, bound.size) if "[" in str(printed) else _numbers(f"[{printed}]", 1)
            if values is not None and values.size == 1 and bound.size > 1:
                values = np.full(bound.size, values[0])
            if values is not None and not np.allclose(values, bound, rtol=1e-6, atol=0.0, equal_nan=True):
                return f"{theirs}with {key} bounds {_short(printed)}, but {env_name} has {space_brief(space)} " \
                       f"with {key} {_short(bound.tolist())}"
    return None


def _policy_class(cls: Any, described: Any, observation_space: gym.Space, name: str) -> Any:
    """One of ``cls``'s own policy classes: the one SB3's description names, else by the observation space."""
    from stable_baselines3.common.preprocessing import is_image_space

    own = {(c.__module__, c.__name__): c for c in cls.policy_aliases.values()}
    if isinstance(described, dict):
        # SB3 prints the class's attributes beside its pickle; __init__'s repr carries the class name.
        init = re.match(r"<function (\w+)\.__init__ at ", str(described.get("__init__", "")))
        module = described.get("__module__")
        if init and isinstance(module, str):
            if (module, init.group(1)) in own:
                return own[(module, init.group(1))]
            raise RLKitError(f"cannot load {name} as an SB3 {cls.__name__} model: its policy class is "
                             f"{module}.{init.group(1)}, not one of {cls.__name__}'s "
                             f"({', '.join(sorted(cls.policy_aliases))}); is it another algorithm's model?")
    if isinstance(observation_space, gym.spaces.Dict):
        return cls.policy_aliases["MultiInputPolicy"]
    image = is_image_space(observation_space, check_channels=False)
    return cls.policy_aliases["CnnPolicy" if image else "MlpPolicy"]


def _known_classes() -> dict[str, Any]:
    """The classes a ``policy_kwargs`` entry may name, by the exact repr SB3 prints for them."""
    import torch
    from stable_baselines3.common import torch_layers
    from torch.nn.modules import activation

    candidates = [getattr(activation, n) for n in activation.__all__] + [torch.nn.Identity]
    candidates += [c for c in vars(torch.optim).values() if isinstance(c, type)
                   and issubclass(c, torch.optim.Optimizer)]
    candidates += [torch_layers.FlattenExtractor, torch_layers.NatureCNN, torch_layers.CombinedExtractor]
    return {f"{c.__module__}.{c.__qualname__}": c for c in candidates}


def _policy_kwargs(described: dict[str, Any], name: str, opt_in: str | None) -> dict[str, Any]:
    """``policy_kwargs`` rebuilt from what SB3 prints beside their pickle: JSON values as they are,
    printed classes when they are torch's or SB3's own, printed literals (a dict of optimizer options)."""
    known = _known_classes()
    kwargs: dict[str, Any] = {}
    for key, value in described.items():
        if key.startswith(":"):
            continue
        if not isinstance(value, str):
            kwargs[key] = value
            continue
        match = _CLASS_REPR.fullmatch(value)
        if match and match.group(1) in known:
            kwargs[key] = known[match.group(1)]
        elif "<" in value:  # the printed form of some other object (a custom class, a function)
            raise needs_unpickling(name, f"policy_kwargs[{key!r}] = {value[:80]}", opt_in)
        else:
            try:
                kwargs[key] = ast.literal_eval(value)  # literals only: no names, calls or attributes
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                kwargs[key] = value  # a plain string option, stored as JSON
    return kwargs


def needs_unpickling(name: str, what: str, opt_in: str | None) -> RLKitError:
    """The one-line refusal of an entry rlkit cannot supply without unpickling it."""
    how = f"; if you trust the file and its author, pass {opt_in}" if opt_in else ""
    return RLKitError(f"SB3 model {name} stores {what} as a pickle, which rlkit does not unpickle (refusing: "
                      f"unpickling runs any code the file's author put in it){how}")


def supplied_entries(cls: Any, data: dict[str, Any], observation_space: gym.Space, action_space: gym.Space,
                     name: str, env_name: str, opt_in: str | None = TRUST_FLAG) -> dict[str, Any]:
    """SB3's ``custom_objects`` for ``data``: a value for every pickled entry, or a one-line error."""
    for key, space, what in (("observation_space", observation_space, "observations"),
                             ("action_space", action_space, "actions")):
        problem = _space_mismatch(data.get(key), space, what, name, env_name)
        if problem:
            raise RLKitError(f"{problem}; use a model trained on {env_name}")
    # The spaces are always the env's, pickled or not: the model acts in this env.
    supplied: dict[str, Any] = {"observation_space": observation_space, "action_space": action_space}
    for key in pickled_entries(data):
        if key in supplied:
            continue
        if key == "policy_class":
            supplied[key] = _policy_class(cls, data[key], observation_space, name)
        elif key == "policy_kwargs":
            supplied[key] = _policy_kwargs(data[key], name, opt_in)
        elif key in _TRAINING_ONLY:
            supplied[key] = _TRAINING_ONLY[key]
        else:
            raise needs_unpickling(name, f"the entry {key!r} ({str(data[key].get(':type:', 'an object'))[:80]})",
                                   opt_in)
    return supplied


def load_sb3_zip(file: str | Path | bytes, algo: str, observation_space: gym.Space, action_space: gym.Space,
                 env_name: str, trust_remote_code: bool = False, name: str | None = None,
                 opt_in: str | None = TRUST_FLAG) -> Any:
    """An SB3 model from its zip (a path or the bytes), on the CPU, with nothing unpickled.

    Args:
        file: the ``.zip`` written by ``model.save()``, or its bytes.
        algo: the SB3 class name (``PPO``, ``DQN``, ...).
        observation_space: the env's observation space, which the model gets (checked against the zip's).
        action_space: the env's action space, likewise.
        env_name: how errors name the env (``CartPole-v1``).
        trust_remote_code: load the file SB3's own way, unpickling its entries (runs their code).
        name: how errors name the file (default: the path).
        opt_in: how the refusal names the opt-in (None: the caller offers none).
    """
    name = name or ("the model's bytes" if isinstance(file, bytes) else str(file))
    cls = sb3_class(algo, f"sb3:{algo}:{name}")
    raw = file if isinstance(file, bytes) else Path(file).read_bytes()
    data = read_data(raw, name)
    custom_objects = None if trust_remote_code else \
        supplied_entries(cls, data, observation_space, action_space, name, env_name, opt_in)
    try:
        return cls.load(io.BytesIO(raw), device="cpu", custom_objects=custom_objects)
    except Exception as e:  # SB3 raises many types for a wrong algorithm or a damaged zip
        raise RLKitError(f"cannot load {name} as an SB3 {cls.__name__} model ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
