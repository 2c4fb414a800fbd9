"""Typed configs: defaults in dataclasses, YAML presets, and checked ``key=value`` overrides.

Every agent config subclasses :class:`BaseConfig` (one level of inheritance, no deeper); option groups
that several agents share are dataclass mixins listed beside it (:class:`ReplayOptions` here,
:class:`rlkit.optim.OptimizerOptions`), and an agent re-declares a mixin's default with :func:`default`.
Each field carries its help text in ``metadata["help"]`` (see :func:`opt`), which
``rlkit train AGENT --help`` prints. The resolved config is written to ``run_dir/config.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from rlkit.errors import RLKitError

C = TypeVar("C", bound="BaseConfig")
MAX_SEED = 2**32 - 1  # numpy's legacy seeding and gymnasium's reset take seeds below 2**32
# The ceiling of every integer field whose range names none: a trillion env steps is years of simulation, so a
# larger count, size or budget is a typo (total_steps=1e99), and it would overflow numpy's int64 counters.
MAX_COUNT = 10**12
# Parallel envs of one process: each is a Python object stepped in turn; 100,000 of them take minutes to build.
MAX_ENVS = 4096
# Units of one hidden layer; the memory a whole network needs is checked when it is built (rlkit.memory).
MAX_WIDTH = 65_536


def opt(default: Any, help: str, *, low: float | str | None = None, high: float | str | None = None,  # noqa: A002
        low_open: bool = False, choices: tuple[Any, ...] | None = None) -> Any:
    """A dataclass field with a default, a one-line help text and the range of values it accepts.

    ``low``/``high`` bound a number, or each item of a list (``hidden=[64, 64]``); either may name another
    field (``high="buffer_size"``). ``low_open=True`` excludes ``low`` itself (``lr > 0``). ``choices`` lists
    the accepted values. Every float must be finite unless its range says otherwise (``high=math.inf``).
    :func:`validate_config` checks them all; lists get a default_factory.
    """
    meta = {"help": help, "low": low, "high": high, "low_open": low_open, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


def default(options: type, name: str, value: Any) -> Any:
    """Field ``name`` of the mixin ``options`` with another default and the same help text and range.

    ``tau: float = default(ReplayOptions, "tau", 0.005)`` in a config that mixes in ``ReplayOptions``.
    """
    meta = options.__dataclass_fields__[name].metadata
    return opt(value, meta["help"], low=meta.get("low"), high=meta.get("high"), low_open=meta.get("low_open", False),
               choices=meta.get("choices"))


def require_at_least_one(cfg: Any, *names: str) -> None:
    """A one-line RLKitError naming the first of the fields ``names`` of ``cfg`` that is below 1."""
    for name in names:
        if getattr(cfg, name) < 1:
            raise RLKitError(f"{name} must be at least 1; got {getattr(cfg, name)}")


@dataclass
class BaseConfig:
    """Fields every agent shares."""

    env_id: str = opt("CartPole-v1", "Gymnasium env id (anything gymnasium.make accepts, or pkg.module:Env-v0)")
    seed: int = opt(0, "seed of the run: python, numpy, torch, env i gets seed+i", low=0, high=MAX_SEED)
    total_steps: int = opt(50_000, "environment steps to train for (summed over parallel envs)", low=1)
    run_dir: str | None = opt(None, "where the run writes its files; default runs/AGENT-ENV-seedS-TIME")
    eval_episodes: int = opt(20, "episodes for the final evaluation written to final.json", low=1)
    eval_every: int = opt(0, "evaluate every this many env steps during training (0 = only at the end)", low=0)
    eval_seed: int = opt(10_000, "seed offset of the evaluation env stream (kept apart from training)",
                         low=0, high=MAX_SEED)
    target_return: float | None = opt(None, "stop at the first evaluation (eval_every) whose mean return reaches "
                                             "this")
    checkpoint_every: int = opt(10_000, "save a checkpoint every this many env steps (0 = only at the end)", low=0)
    keep_checkpoints: int = opt(3, "how many of the latest checkpoints to keep", low=1)
    log_every: int = opt(1_000, "write metrics (CSV, TensorBoard) every this many env steps", low=0)
    torch_threads: int = opt(1, "torch intra-op threads; 1 is fastest for small nets on few cores", low=1)
    flush_denormal: bool = opt(True, "treat subnormal floats as zero on the CPU, as XLA and TensorFlow do: Adam's "
                                     "tiny moment estimates otherwise slow small-net updates 1.5x or more")
    device: str = opt("cpu", "torch device (cpu, cuda)")
    progress: bool = opt(True, "show a progress bar with steps/s and the latest return")
    tensorboard: bool = opt(True, "write TensorBoard event files")
    env_kwargs: dict = opt({}, "keyword arguments passed to gymnasium.make")
    preset: str | None = opt(None, "the preset this run started from (recorded by --preset; `none`: plain defaults)")

    @classmethod
    def from_preset(cls: type[C], name: str = "auto", *, agent: str | None = None, **overrides: Any) -> C:
        """This config as ``rlkit train`` builds it: defaults, the agent's defaults, preset ``name``, then
        ``overrides`` (checked like ``--set``), e.g. ``DQNConfig.from_preset(env_id="CartPole-v1", seed=1)``.

        ``name``: ``"auto"`` (the agent's preset for ``env_id``, else plain defaults; either way the CLI's
        one-line notice goes to stderr), ``"none"``, a preset name (``rlkit train AGENT --help`` lists them) or
        a YAML file. ``agent`` is needed only where one config serves two agents (``DDPGConfig``: ``"ddpg"`` or
        ``"td3"``).
        """
        spec = _agent_for_config(cls, agent)
        cfg = apply_overrides(cls(), spec.defaults, source="agent defaults")
        env_id = str(overrides.get("env_id", cfg.env_id))
        chosen, values, notice = choose_preset(spec.presets(), name, spec.name, env_id,
                                               opt_out='from_preset("none")')
        cfg = apply_overrides(cfg, values, source=f"preset {chosen!r}")
        cfg = apply_overrides(cfg, overrides, source="from_preset arguments")
        if notice:  # now: the config is checked, and a Python caller may build configs it never trains
            print(notice, file=sys.stderr, flush=True)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path, home: str | Path | None = None) -> None:
        """Write the config as JSON, atomically; ``home``: the run directory ``path`` must be a plain file in."""
        from rlkit.checkpoint import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2, sort_keys=True), home=home)


@dataclass
class ReplayOptions:
    """Options of the off-policy agents that learn from a replay buffer (DQN, DDPG/TD3), mixed into their
    configs; the defaults are DQN's, ``default`` re-declares DDPG's."""

    num_envs: int = opt(1, "parallel envs stepping in lockstep", low=1, high=MAX_ENVS)
    buffer_size: int = opt(100_000, "replay capacity in transitions", low=1)
    learning_starts: int = opt(1_000, "env steps before learning: the first update comes once global_step > "
                                      "learning_starts (as SB3 counts them)", low=0)
    batch_size: int = opt(64, "minibatch size", low=1, high="buffer_size")
    gamma: float = opt(0.99, "discount factor", low=0, high=1)
    tau: float = opt(1.0, "Polyak factor of the target update in (0, 1]; 1.0 is a hard copy", low=0, low_open=True,
                     high=1)
    train_every: int = opt(4, "env steps between updates", low=1)
    gradient_steps: int = opt(1, "gradient steps per update", low=1)
    save_buffer: bool = opt(True, "save the replay buffer with each checkpoint so --resume continues exactly")

    def learning(self, global_step: int, buffered: int) -> bool:
        """Whether updates have started: past ``learning_starts`` and a full minibatch in the buffer."""
        return global_step > self.learning_starts and buffered >= self.batch_size



def field_help(cls: type[BaseConfig]) -> dict[str, str]:
    """Field name -> help text, in declaration order."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _yaml(text: str, name: str) -> Any:
    """YAML for one option's value; a syntax error is one line (the value, not yaml's 50-line trace)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem", None) or type(e).__name__
        raise RLKitError(f"option {name!r}: {text!r} is not valid YAML ({where}); e.g. hidden=[64,64]") from None


def coerce(value: Any, tp: Any, name: str) -> Any:
    """Convert ``value`` (often a string from the command line or YAML) to the field type ``tp``."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, get_args(tp), name)
    if origin is Literal:
        choices = get_args(tp)
        if value in choices:
            return value
        raise RLKitError(f"option {name!r} must be one of {', '.join(map(str, choices))}; got {value!r}")
    if origin in (list, tuple):
        return _coerce_sequence(value, origin, get_args(tp), name)
    if tp is dict or origin is dict:
        parsed = _yaml(value, name) if isinstance(value, str) else value
        if not isinstance(parsed, dict):
            raise RLKitError(f"option {name!r} expects a mapping like {{key: value}}; got {value!r}")
        return parsed
    scalar = {bool: _coerce_bool, int: _coerce_int, float: _coerce_float, str: lambda v, _: str(v)}.get(tp)
    return scalar(value, name) if scalar is not None else value


def _coerce_union(value: Any, args: tuple[Any, ...], name: str) -> Any:
    """The first member type of ``args`` that takes ``value``; "none"/"null" is None where None is allowed."""
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


def _coerce_sequence(value: Any, origin: type, args: tuple[Any, ...], name: str) -> list | tuple:
    """A list (or tuple) from a list or from text: ``[64,64]`` or ``64,64``."""
    (item_tp, *_) = args or (Any,)
    if isinstance(value, str):
        text = value.strip()
        parsed = _yaml(text if text.startswith("[") else f"[{text}]", name) if text else []
    else:
        parsed = value
    if not isinstance(parsed, (list, tuple)):
        raise RLKitError(f"option {name!r} expects a list like [64,64]; got {value!r}")
    items = [coerce(v, item_tp, name) if item_tp is not Any else v for v in parsed]
    return tuple(items) if origin is tuple else items


def _coerce_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
        return False
    raise RLKitError(f"option {name!r} expects true or false; got {value!r}")


def _coerce_int(value: Any, name: str) -> int:
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


def _coerce_float(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise RLKitError(f"option {name!r} expects a number; got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise RLKitError(f"option {name!r} expects a number; got {value!r}") from None


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
    check_ranges(new)
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


def preset_for_env(presets: dict[str, dict[str, Any]], env_id: str | None) -> str | None:
    """The first preset (in file order) made for ``env_id``, or None when the agent has none for it."""
    if env_id is None:
        return None
    return next((name for name, values in presets.items() if values.get("env_id") == env_id), None)


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
        if Path(name).exists() and not Path(name).is_file():  # a FIFO would block the read forever
            raise RLKitError(f"preset file {name} is not a regular file; pass a YAML file")
        if not Path(name).is_file():
            raise RLKitError(f"preset file {name} not found; pass a YAML file or one of: {', '.join(sorted(presets))}")
        presets = {name: load_preset_file(Path(name))}
    if name not in presets:
        known = ", ".join(sorted(presets)) or "none"
        raise RLKitError(f"unknown preset {name!r} for agent {agent!r}; available: {known}")
    return {k: v for k, v in presets[name].items() if not k.startswith("_")}


def choose_preset(presets: dict[str, dict[str, Any]], name: str | None, agent: str, env_id: str | None,
                  opt_out: str = "--preset none") -> tuple[str | None, dict[str, Any], str | None]:
    """The one preset resolution of ``rlkit train`` and :meth:`BaseConfig.from_preset`.

    ``name`` None or ``"auto"``: the agent's preset made for ``env_id`` (as RL-Zoo does), else the plain
    defaults; ``"none"``: the plain defaults; anything else: that preset or YAML file (:func:`resolve_preset`).
    Returns ``(preset name or None, overrides to apply incl. "preset", notice)``; the notice is the line to show
    when the choice was automatic ("using preset ..." or "no tuned preset for ENV: plain defaults"), else None.
    """
    if name is None or name == "auto":
        chosen = preset_for_env(presets, env_id)
        if chosen is None:  # (no env id yet, e.g. an imitation learner's unreadable --demos: nothing to say)
            return None, {}, f"rlkit: no tuned preset for {env_id}: plain defaults" if env_id else None
        notice = f"rlkit: using preset {chosen}, tuned for {env_id}; {opt_out} for the plain defaults"
        return chosen, {**resolve_preset(presets, chosen, agent), "preset": chosen}, notice
    if name == "none":
        return None, {}, None
    return name, {**resolve_preset(presets, name, agent), "preset": name}, None


def _agent_for_config(config_cls: type[BaseConfig], agent: str | None) -> Any:
    """The registered agent (an ``rlkit.registry.AgentSpec``) whose config class is ``config_cls``; ``agent`` picks
    one where several share it. Read from the ``rlkit.agents`` entry points directly: the registry imports this
    module, so importing it back would make a cycle."""
    from importlib.metadata import entry_points

    eps = list(entry_points(group="rlkit.agents"))
    if agent is not None:
        named = [ep for ep in eps if ep.name == agent]
        if not named:
            raise RLKitError(f"unknown agent {agent!r}; available: {', '.join(sorted(ep.name for ep in eps))}")
        spec = named[0].load()
        if not issubclass(config_cls, spec.config_cls):
            raise RLKitError(f"agent {agent!r} takes {spec.config_cls.__name__}, not {config_cls.__name__}")
        return spec
    beside = [ep for ep in eps if ep.module == config_cls.__module__]  # already imported: cheap to load
    specs = [s for s in (ep.load() for ep in beside or eps) if getattr(s, "config_cls", None) is config_cls]
    if len(specs) != 1:
        names = " or ".join(repr(s.name) for s in sorted(specs, key=lambda s: s.name))
        raise RLKitError(f"{config_cls.__name__} serves several agents: pass agent={names}" if specs else
                         f"no registered agent takes {config_cls.__name__}; register one in the rlkit.agents "
                         "entry-point group")
    return specs[0]


def config_from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Rebuild a config saved with :meth:`BaseConfig.to_dict` (unknown keys are an error)."""
    return apply_overrides(cls(), data, source="config")


# ---------------------------------------------------------------------------------------- validation
def _bound(cfg: Any, bound: float | str | None) -> float | None:
    return getattr(cfg, bound) if isinstance(bound, str) else bound


def _shown(value: float) -> str:
    """A value for an error line: a huge integer (total_steps=1e99) as 1e+99, not its hundred digits."""
    if isinstance(value, int) and abs(value) >= MAX_COUNT:
        try:
            return f"{float(value):.3g}"
        except OverflowError:
            return "a number beyond 1e308"
    return repr(value)


def _check_value(name: str, value: Any, meta: Any, cfg: Any) -> None:
    """One field's value against the range its ``opt(...)`` declares; one-line RLKitError otherwise."""
    if value is None or isinstance(value, (str, bool, dict)):
        if meta.get("choices") is not None and value not in meta["choices"]:
            raise RLKitError(f"option {name!r} must be one of {', '.join(map(str, meta['choices']))}; got {value!r}")
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_value(name, item, meta, cfg)
        return
    if not isinstance(value, (int, float)):
        return
    low, high = _bound(cfg, meta.get("low")), _bound(cfg, meta.get("high"))
    if high is None and isinstance(value, int):  # no count is unbounded (MAX_COUNT)
        high = MAX_COUNT
    infinite_ok = high == math.inf or low == -math.inf
    if isinstance(value, float) and not math.isfinite(value) and not (infinite_ok and not math.isnan(value)):
        raise RLKitError(f"option {name!r} must be a finite number; got {value!r}")
    too_low = low is not None and (value <= low if meta.get("low_open") else value < low)
    too_high = high is not None and value > high
    if too_low or too_high:
        left = "(" if meta.get("low_open") else "["
        span = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else _shown(high)}]"
        what = {"low": meta.get("low"), "high": meta.get("high")}
        named = [f"{k} bound is {v}" for k, v in what.items() if isinstance(v, str)]
        hint = f" ({'; '.join(named)})" if named else ""
        raise RLKitError(f"option {name!r} must be in {span}{hint}; got {_shown(value)}")


def check_device(device: str) -> None:
    """The device must parse and exist in this torch build (``cuda`` on a CPU build is refused)."""
    import torch  # lazily: the CLI starts without torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise RLKitError(f"option 'device' must be a torch device such as cpu, cuda or cuda:1; got {device!r}") \
            from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise RLKitError(f"device={device!r} but this torch build has no usable CUDA "
                             f"(torch {torch.__version__}); use device=cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise RLKitError(f"device={device!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise RLKitError(f"device={device!r} but MPS is not available here; use device=cpu")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise RLKitError(f"device={device!r} is not supported by rlkit; use cpu, cuda or mps")


def check_ranges(cfg: Any) -> None:
    """Check every field against the range declared in its ``opt(...)`` (after every override)."""
    for f in dataclasses.fields(cfg):
        _check_value(f.name, getattr(cfg, f.name), f.metadata, cfg)


def validate_config(cfg: Any) -> None:
    """Ranges, then the device, then the config's own ``validate()``: what ``Run.__init__`` runs before a run
    writes anything."""
    check_ranges(cfg)
    if getattr(cfg, "target_return", None) is not None and getattr(cfg, "eval_every", 0) == 0:
        raise RLKitError(f"target_return={cfg.target_return} is checked at the evaluations during training, but "
                         "eval_every is 0; set one (e.g. --set eval_every=5000)")
    if isinstance(getattr(cfg, "device", None), str):
        check_device(cfg.device)
    validate = getattr(cfg, "validate", None)
    if validate is not None:
        validate()


def imports_code(key: str, value: Any) -> bool:
    """A value that would import a module named inside it: a ``module:Env-v0`` env id or a ``python:``/``sb3:``
    policy source (sb3 zips may hold pickled objects), or DAgger's opt-in to unpickling an sb3 expert."""
    if key == "trust_remote_code":
        return value is True
    if not isinstance(value, str):
        return False
    if key == "env_id":
        return ":" in value
    return value.startswith(("python:", "sb3:"))


#: The fields of a saved config whose value can import code (:func:`imports_code`).
CODE_FIELDS = ("env_id", "expert", "trust_remote_code")


def refuse_code_named_in_file(saved: dict[str, Any], given: dict[str, Any], path: Path,
                              how_to_name: Callable[[str, Any], str]) -> None:
    """A module named in a run's own file is imported only when the user names the same value too.

    ``saved``: the file's config; ``given``: what the user passed (command-line strings or Python values);
    ``how_to_name(key, value)``: how this caller's user names it (``--env X``, ``load(path, env_id=X)``).
    """
    for key in CODE_FIELDS:
        value, named = saved.get(key), given.get(key)
        if key == "trust_remote_code" and isinstance(named, str):  # --set gives a string; the config, a bool
            named = named.lower() in ("true", "1", "yes", "on")
        if imports_code(key, value) and named != value:
            raise RLKitError(f"{path} names {key}={value!r}, which imports code; rlkit imports it only when you "
                             f"name it yourself: {how_to_name(key, value)}")
