"""The schema of reproduction presets: ``agents/presets/reproduce.yaml`` or a user's own file (``--presets``).

A preset names an agent, that agent's preset, the budget at which the published number was measured,
the number itself with its source, and optionally an expert and demonstrations for imitation agents.
:func:`build_config` turns one into the agent's config (without a seed or run directory).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from rlkit.config import BaseConfig, apply_overrides, resolve_preset
from rlkit.errors import RLKitError
from rlkit.registry import agent_names, get_agent

_PRESET_KEYS = {"agent", "preset", "seeds", "budget", "eval_points", "reference", "also", "overrides", "demos",
                "normalise", "note", "split_tasks", "init_from", "threshold", "offline_data"}
# offline_data: the `rlkit offline-data` build an offline preset learns from (env, kind; optionally dir, seed,
# episodes, eval_every, reference_episodes, noise, agent, preset, set, kinds, and expert: a trained run beside OUT);
# rlkit.apps.reproduce.prepare_offline_data
_OFFLINE_KEYS = {"env", "kind", "dir", "seed", "episodes", "eval_every", "reference_episodes", "noise", "agent",
                 "preset", "set", "kinds", "expert"}


@dataclass
class ReproducePreset:
    """One entry of reproduce.yaml (see the comment at the top of that file)."""

    name: str
    agent: str
    preset: str | None = None
    seeds: int = 5
    budget: int | None = None
    eval_points: int = 20
    reference: dict[str, Any] = field(default_factory=dict)
    also: list[dict[str, Any]] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)
    demos: dict[str, Any] | None = None
    normalise: dict[str, Any] | None = None
    note: str = ""
    split_tasks: bool = False  # one run per task of a suite, budget / tasks steps each (rlkit.apps.reproduce_tasks)
    init_from: str | None = None  # fine-tune: seed S starts from seed S of this reproduction, in a sibling directory
    threshold: float | None = None  # report each seed's steps to its first evaluation at or above this
    offline_data: dict[str, Any] | None = None  # offline learners: build the D4RL-style datasets once, beside OUT

    @classmethod
    def from_dict(cls, name: str, data: dict[str, Any], source: Path) -> ReproducePreset:
        unknown = set(data) - _PRESET_KEYS
        if unknown:
            raise RLKitError(f"reproduce preset {name!r} in {source} has unknown keys {sorted(unknown)}; "
                             f"known: {', '.join(sorted(_PRESET_KEYS))}")
        if "agent" not in data:
            raise RLKitError(f"reproduce preset {name!r} in {source} names no agent; add `agent: NAME`")
        preset = cls(name=name, **data)
        if preset.seeds < 1 or preset.eval_points < 1 or (preset.budget is not None and preset.budget < 1):
            raise RLKitError(f"reproduce preset {name!r}: seeds, eval_points and budget must be positive")
        if preset.offline_data is not None:
            check_offline_data(name, preset.offline_data, source)
        if preset.normalise is not None:
            check_normalise(name, preset.normalise, preset.demos is not None, source, preset.offline_data is not None)
        return preset


def check_offline_data(name: str, spec: dict[str, Any], source: Path) -> None:
    """``offline_data: {env: ENV_ID, kind: random|medium|medium-replay|expert|medium-expert, ...}`` (the kinds
    themselves are checked when the data is built: rlkit.apps.offline_data imports torch, listing presets does not)."""
    unknown = set(spec) - _OFFLINE_KEYS
    if unknown or "env" not in spec or "kind" not in spec:
        optional = ", ".join(sorted(_OFFLINE_KEYS - {"env", "kind"}))
        raise RLKitError(f"reproduce preset {name!r} in {source}: offline_data needs env and kind, and optionally "
                         f"{optional}; got {dict(spec)}")


def check_normalise(name: str, spec: dict[str, Any], has_demos: bool, source: Path, has_dataset: bool = False
                    ) -> None:
    """``normalise: {random: measure | NUMBER, expert: demos | NUMBER, expert_source: TEXT}``; an offline preset's
    ``random: dataset, expert: dataset`` are its dataset's reference scores (D4RL's normalised 0 and 100)."""
    if has_dataset and spec.get("random") == "dataset" and spec.get("expert") == "dataset":
        return
    unknown = set(spec) - {"random", "expert", "expert_source"}
    random, expert = spec.get("random"), spec.get("expert")
    if unknown or random is None or expert is None:
        raise RLKitError(f"reproduce preset {name!r} in {source}: normalise needs random (measure or a number) and "
                         f"expert (demos or a number), and optionally expert_source; got {sorted(spec)}")
    if random != "measure" and not isinstance(random, (int, float)):
        raise RLKitError(f"reproduce preset {name!r}: normalise.random must be `measure` or a number; got {random!r}")
    if expert == "demos" and not has_demos:
        raise RLKitError(f"reproduce preset {name!r}: normalise.expert is `demos` but the preset records no demos; "
                         "give the expert's return as a number")
    if expert != "demos" and not isinstance(expert, (int, float)):
        raise RLKitError(f"reproduce preset {name!r}: normalise.expert must be `demos` or a number; got {expert!r}")


def default_presets_file() -> Path:
    """agents/presets/reproduce.yaml, package data of rlkit.agents (an application may import the learners;
    the package's ``__init__`` is empty, so listing presets still imports no torch)."""
    return Path(str(resources.files("rlkit.agents") / "presets" / "reproduce.yaml"))


def load_presets(path: str | Path | None = None) -> dict[str, ReproducePreset]:
    path = Path(path) if path else default_presets_file()
    if not path.exists():
        raise RLKitError(f"reproduction presets file {path} not found")
    data = yaml.safe_load(path.read_text()) or {}
    return {name: ReproducePreset.from_dict(name, dict(values or {}), path) for name, values in data.items()}


def get_preset(name: str, path: str | Path | None = None) -> ReproducePreset:
    presets = load_presets(path)
    if name not in presets:
        raise RLKitError(f"unknown reproduction preset {name!r}; available: {', '.join(sorted(presets))}")
    preset = presets[name]
    installed = agent_names()
    if preset.agent not in installed:
        raise RLKitError(f"preset {name!r} needs agent {preset.agent!r}, which is not installed yet "
                         f"(installed: {', '.join(installed) or 'none'})")
    return preset


def build_config(preset: ReproducePreset, steps: int | None = None, eval_points: int | None = None) -> BaseConfig:
    """Agent defaults -> agent preset -> reproduce overrides -> budget and eval schedule (seed not set)."""
    spec = get_agent(preset.agent)
    cfg = apply_overrides(spec.config_cls(), spec.defaults, source="agent defaults")
    if preset.preset:
        cfg = apply_overrides(cfg, resolve_preset(spec.presets(), preset.preset, preset.agent),
                              source=f"preset {preset.preset!r}")
    cfg = apply_overrides(cfg, preset.overrides, source=f"reproduce preset {preset.name!r}")
    if steps is not None and steps < 1:
        raise RLKitError(f"--steps must be at least 1; got {steps}")
    total = steps or preset.budget or cfg.total_steps
    # One torch thread per run: the seeds are the parallelism, and oversubscribed threads slow everyone.
    changes: dict[str, Any] = {"total_steps": total, "progress": False, "torch_threads": 1}
    if eval_points is not None and eval_points < 1:
        raise RLKitError(f"--eval-points must be at least 1; got {eval_points}")
    if total > 0:
        eval_every = max(total // (eval_points or preset.eval_points), 1)
        # Evaluations write their own rows; the training metrics are logged as often, for the same curve points.
        changes.update(eval_every=eval_every, log_every=min(cfg.log_every, eval_every))
    return apply_overrides(cfg, changes, source="reproduce")
