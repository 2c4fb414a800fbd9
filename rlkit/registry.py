"""Entry-point lookup of agents and CLI command groups.

Agents register in the ``rlkit.agents`` group with an :class:`AgentSpec`; command groups
(``demos``, ``quickstart``, ...) in ``rlkit.commands`` with a function ``add_parser(subparsers)``.
A user's own package can add either in its pyproject.toml without touching rlkit.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from rlkit.callbacks import Callback
from rlkit.config import BaseConfig, load_presets
from rlkit.errors import AlreadyFinished, RLKitError


@dataclass
class AgentSpec:
    """What the CLI and the demo recorder need to know about an agent.

    Attributes:
        name: the registered name (``rlkit train NAME``).
        config_cls: the agent's dataclass config.
        train: ``train(cfg, resume=False, callbacks=None) -> result dict`` (the contents of final.json);
            ``callbacks`` as in :mod:`rlkit.callbacks`.
        load_policy: ``load_policy(checkpoint_state) -> Policy`` rebuilding the policy from a checkpoint.
        summary: one line for ``rlkit train --help``.
        presets_file: YAML file of presets for this agent; by default ``presets/NAME.yaml`` beside the
            module that defines ``train`` (where rlkit's own agents keep theirs), when it exists.
        defaults: overrides applied on top of ``config_cls()`` before presets (e.g. td3's switches).
        train_seeds: ``train_seeds(cfgs, resume=False, callbacks=None) -> [result dict per cfg]``, training
            several configs (seeds) in one process in lockstep, where the agent's loop offers it
            (:func:`rlkit.engine.off_policy.train_off_policy_seeds`); None: :func:`train_seeds` runs them one
            after another.
    """

    name: str
    config_cls: type[BaseConfig]
    train: Callable[..., dict[str, Any]]
    load_policy: Callable[[dict[str, Any]], Any]
    summary: str = ""
    presets_file: Path | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    train_seeds: Callable[..., list[dict[str, Any]]] | None = None

    def __post_init__(self) -> None:
        if self.presets_file is None:
            beside = Path(inspect.getfile(self.train)).parent / "presets" / f"{self.name}.yaml"
            self.presets_file = beside if beside.exists() else None

    def presets(self) -> dict[str, dict[str, Any]]:
        return load_presets(self.presets_file) if self.presets_file else {}


def _group(name: str) -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=name)}


def agent_names() -> list[str]:
    return sorted(_group("rlkit.agents"))


def get_agent(name: str) -> AgentSpec:
    """Look up an agent by name, with a one-line error listing the known ones."""
    eps = _group("rlkit.agents")
    if name not in eps:
        raise RLKitError(f"unknown agent {name!r}; available: {', '.join(sorted(eps)) or 'none installed'}")
    spec = eps[name].load()
    if not isinstance(spec, AgentSpec):
        raise RLKitError(f"entry point rlkit.agents:{name} is not an AgentSpec ({type(spec).__name__})")
    return spec


def command_loaders() -> dict[str, Callable[[Any], None]]:
    """Name -> ``add_parser(subparsers)`` for every registered command group.

    Loading is deferred to the returned callables, so one broken plugin fails alone (the CLI warns
    and goes on) instead of taking every command down with it.
    """

    def loader(ep: Any) -> Callable[[Any], None]:
        return lambda subparsers: ep.load()(subparsers)

    return {name: loader(ep) for name, ep in sorted(_group("rlkit.commands").items())}


def eval_env_factory(cfg: BaseConfig, env_id: str | None = None) -> Callable[..., Any]:
    """``make_eval_env(render_mode=None)`` for ``cfg.env_id`` with ``cfg.env_kwargs``, or for another ``env_id``
    (an evaluation env other than the training one; ``cfg.env_kwargs`` then do not apply)."""
    env_id = env_id or cfg.env_id
    kwargs = cfg.env_kwargs if env_id == cfg.env_id else {}
    # The entry-point lookup happens only when an env is made: agents build this factory every step, and a
    # lookup per step cost two thirds of a DQN CartPole run.
    return lambda render_mode=None: env_factory()(env_id, render_mode=render_mode, env_kwargs=kwargs)


def env_factory() -> Callable[..., Any]:
    """The installed env factory (``envs.make_env``), found through the ``rlkit.envs`` entry point.

    The core never imports ``envs`` directly; this keeps the dependency arrow pointing one way.
    """
    eps = _group("rlkit.envs")
    if "make_env" not in eps:
        raise RLKitError("no env factory registered in the rlkit.envs entry points; reinstall rlkit")
    return eps["make_env"].load()


def train_from_command_line(agent: str | None) -> None:
    """``python -m rlkit.agents.MODULE ARGS`` as ``rlkit train AGENT ARGS`` (None: ARGS name the agent).

    The command line is found through the ``rlkit`` console script's entry point, so an agent module
    imports no application.
    """
    import sys

    (script,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "rlkit"]
    script.load()(["train", *([agent] if agent else []), *sys.argv[1:]])


def preference_rater(name: str) -> Any:
    """The module behind a preference run's ``rater=NAME`` (``web``: the labelling page, its server and store).

    Found in the ``rlkit.raters`` entry-point group, so the preference learner imports no application.
    """
    eps = _group("rlkit.raters")
    if name not in eps:
        raise RLKitError(f"no preference rater {name!r} is installed (entry-point group rlkit.raters); "
                         f"installed: {', '.join(sorted(eps)) or 'none'}")
    return eps[name].load()


def train_seeds(spec: AgentSpec, cfgs: Sequence[BaseConfig], resume: bool = False,
                callbacks: Sequence[Callback] | None = None) -> list[dict[str, Any]]:
    """Train each of ``cfgs`` (one per seed, each with its own ``run_dir``) and return their results in order:
    in one process in lockstep where the agent offers it (``spec.train_seeds``), else one after another. With
    ``resume``, a seed that already finished gives its final.json and trains no further."""
    if spec.train_seeds is not None and len(cfgs) > 1:
        return spec.train_seeds(cfgs, resume, callbacks)
    results = []
    for cfg in cfgs:
        try:
            results.append(spec.train(cfg, resume, callbacks))
        except AlreadyFinished as done:
            results.append(done.result)
    return results
