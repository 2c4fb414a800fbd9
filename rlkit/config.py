"""Typed configs: defaults in dataclasses, YAML presets, and checked ``key=value`` overrides.

Every agent config subclasses :class:`BaseConfig` (one level of inheritance, no deeper). Each field
carries its help text in ``metadata["help"]`` (see :func:`opt`), which ``rlkit train AGENT --help``
prints. The resolved config is written to ``run_dir/config.json``.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from rlkit.errors import RLKitError

C = TypeVar("C", bound="BaseConfig")


def opt(default: Any, help: str) -> Any:  # noqa: A002 - mirrors argparse's name
    """A dataclass field with a default and a one-line help text (lists get a default_factory)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class BaseConfig:
    """Fields every agent shares."""

    env_id: str = opt("CartPole-v1", "Gymnasium env id (anything gymnasium.make accepts, or pkg.module:Env-v0)")
    seed: int = opt(0, "seed of the run: python, numpy, torch, env i gets seed+i")
    total_steps: int = opt(50_000, "environment steps to train for (summed over parallel envs)")
    run_dir: str | None = opt(None, "where the run writes its files; default runs/AGENT-ENV-seedS-TIME")
    eval_episodes: int = opt(20, "episodes for the final evaluation written to final.json")
    eval_every: int = opt(0, "evaluate every this many env steps during training (0 = only at the end)")
    eval_seed: int = opt(10_000, "seed offset of the evaluation env stream (kept apart from training)")
    checkpoint_every: int = opt(10_000, "save a checkpoint every this many env steps (0 = only at the end)")
    keep_checkpoints: int = opt(3, "how many of the latest checkpoints to keep")
    log_every: int = opt(1_000, "write metrics (CSV, TensorBoard) every this many env steps")
    torch_threads: int = opt(1, "torch intra-op threads; 1 is fastest for small nets on few cores")
    device: str = opt("cpu", "torch device (cpu, cuda)")
    progress: bool = opt(True, "show a progress bar with steps/s and the latest return")
    tensorboard: bool = opt(True, "write TensorBoard event files")
    env_kwargs: dict = opt({}, "keyword arguments passed to gymnasium.make")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        from rlkit.checkpoint import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2, sort_keys=True))


def field_help(cls: type[BaseConfig]) -> dict[str, str]:
    """Field name -> help text, in declaration order."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, name: str) -> Any:
    """Convert ``value`` (often a string from the command line or YAML) to the field type ``tp``."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, name)
            except RLKitError as e:
                errors.append(str(e))
        raise RLKitError(errors[0] if errors else f"option {name!r} cannot be {value!r}")
    if origin is Literal:
        choices = get_args(tp)
        if value in choices:
            return value
        raise RLKitError(f"option {name!r} must be one of {', '.join(map(str, choices))}; got {value!r}")
    if origin in (list, tuple):
        (item_tp, *_) = get_args(tp) or (Any,)
        if isinstance(value, str):
            text = value.strip()
            parsed = yaml.safe_load(text if text.startswith("[") else f"[{text}]") if text else []
        else:
            parsed = value
        if not isinstance(parsed, (list, tuple)):
            raise RLKitError(f"option {name!r} expects a list like [64,64]; got {value!r}")
        items = [coerce(v, item_tp, name) if item_tp is not Any else v for v in parsed]
        return tuple(items) if origin is tuple else items
    if tp is dict or origin is dict:
        parsed = yaml.safe_load(value) if isinstance(value, str) else value
        if not isinstance(parsed, dict):
            raise RLKitError(f"option {name!r} expects a mapping like {{key: value}}; got {value!r}")
        return parsed
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise RLKitError(f"option {name!r} expects true or false; got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise RLKitError(f"option {name!r} expects an integer; got {value!r}")
        if isinstance(value, int):
            return value
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise RLKitError(f"option {name!r} expects an integer; got {value!r}") from None
        if not as_float.is_integer():
            raise RLKitError(f"option {name!r} expects an integer; got {value!r}")
        return int(as_float)  # accepts 1e5 and 100_000
    if tp is float:
        if isinstance(value, bool):
            raise RLKitError(f"option {name!r} expects a number; got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise RLKitError(f"option {name!r} expects a number; got {value!r}") from None
    if tp is str:
        return str(value)
    return value


def apply_overrides(cfg: C, overrides: dict[str, Any], source: str = "--set") -> C:
    """Return a copy of ``cfg`` with ``overrides`` applied, each checked against the field's type."""
    hints = _type_hints(type(cfg))
    names = [f.name for f in dataclasses.fields(cfg)]
    changes = {}
    for key, value in overrides.items():
        if key not in hints or key not in names:
            close = [n for n in names if key.replace("-", "_") in n or n in key]
            hint = f" (did you mean {', '.join(close[:3])}?)" if close else ""
            raise RLKitError(
                f"unknown option {key!r} in {source} for {type(cfg).__name__}{hint}; "
                f"see `rlkit train AGENT --help` for the list"
            )
        changes[key] = coerce(value, hints[key], key)
    new = dataclasses.replace(cfg, **changes)
    validate = getattr(new, "validate", None)
    if validate is not None:
        validate()
    return new


def parse_set_args(items: list[str] | None) -> dict[str, str]:
    """Parse ``["lr=1e-3", "hidden=[64,64]"]`` into a dict; malformed items give a one-line error."""
    result: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RLKitError(f"malformed --set {item!r}: expected key=value, e.g. --set lr=0.001")
        result[key.strip().replace("-", "_")] = value.strip()
    return result


def load_presets(path: Path) -> dict[str, dict[str, Any]]:
    """Read a presets YAML: a mapping ``preset name -> {field: value, ...}``."""
    if not path.exists():
        return {}
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    return {name: dict(values or {}) for name, values in data.items()}


def load_preset_file(path: Path) -> dict[str, Any]:
    """A user's own preset: a YAML file holding one mapping ``{field: value, ...}`` (what ``rlkit tune`` writes)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise RLKitError(f"cannot read preset file {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise RLKitError(f"preset file {path} must hold one mapping of config fields, e.g. `lr: 0.001`")
    return data


def resolve_preset(presets: dict[str, dict[str, Any]], name: str, agent: str) -> dict[str, Any]:
    """The overrides of preset ``name`` (or of the YAML file ``name`` names); keys starting with ``_``
    (references, notes) are dropped."""
    if name.endswith((".yaml", ".yml")) or (name not in presets and Path(name).is_file()):
        if not Path(name).is_file():
            raise RLKitError(f"preset file {name} not found; pass a YAML file or one of: {', '.join(sorted(presets))}")
        presets = {name: load_preset_file(Path(name))}
    if name not in presets:
        known = ", ".join(sorted(presets)) or "none"
        raise RLKitError(f"unknown preset {name!r} for agent {agent!r}; available: {known}")
    return {k: v for k, v in presets[name].items() if not k.startswith("_")}


def config_from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Rebuild a config saved with :meth:`BaseConfig.to_dict` (unknown keys are an error)."""
    return apply_overrides(cls(), data, source="config")
