"""The object API, as Stable-Baselines3 users expect it, for every registered agent::

    from rlkit import DQN
    model = DQN("CartPole-v1", preset="auto", seed=0)   # the env's tuned preset, as `rlkit train` picks it
    model.learn(50_000)                                 # trains; a later learn(n) trains n steps more
    model.save("runs/dqn-cartpole")                     # a run directory: config.json + the latest checkpoint
    model = DQN.load("runs/dqn-cartpole")               # no pickle: checksummed tensors, as everywhere in rlkit
    action, _ = model.predict(obs, deterministic=True)

One generic class, :class:`Model`; ``DQN``, ``PPO``, ... are its subclasses that name an agent, reached
through :func:`rlkit.registry.get_agent` (so a user's own registered agent works as ``Model(..., agent=NAME)``).
A model *is* a run: ``learn`` writes a run directory as ``rlkit train`` does, a later ``learn`` continues that
run as ``rlkit train --resume`` does, and ``save`` copies it, so ``rlkit eval PATH`` and ``rlkit train AGENT
--resume PATH`` work on a saved model too.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rlkit.callbacks import Callback
from rlkit.checkpoint import (
    CHECKPOINT_DIR,
    checkpoint_agent,
    list_checkpoints,
    load_checkpoint,
    read_checksums,
    read_json,
)
from rlkit.config import BaseConfig, apply_overrides, config_from_dict, refuse_code_named_in_file
from rlkit.errors import AlreadyFinished, RLKitError
from rlkit.policy import Policy, SB3PredictAdapter
from rlkit.registry import AgentSpec, get_agent

_COPIED = ("config.json", "metrics.csv", "final.json")  # besides the latest checkpoint (and best/, if any)


class Model:
    """An agent's run as an object: ``learn``, ``save``, ``load``, ``predict``.

    Args:
        env: the env id (``None``: the agent's default, or for an imitation learner the dataset's env).
        preset: ``"auto"`` (the agent's preset for ``env``, as the CLI picks it), ``"none"``, a preset name or
            a YAML file; see :meth:`rlkit.config.BaseConfig.from_preset`.
        seed: the run's seed.
        run_dir: where the run writes its files (default ``runs/AGENT-ENV-seedS-TIME``).
        agent: the registered agent; only for ``Model`` itself (``DQN`` etc. name theirs).
        **options: config fields of the agent (``rlkit train AGENT --help`` lists them), e.g. ``demos=``.
    """

    agent: ClassVar[str | None] = None

    def __init__(self, env: str | None = None, preset: str = "auto", seed: int = 0, run_dir: str | Path | None = None,
                 *, agent: str | None = None, **options: Any) -> None:
        name = self._agent_name(agent)
        self.spec: AgentSpec = get_agent(name)
        given = {"seed": seed, **({"env_id": env} if env is not None else {}),
                 **({"run_dir": str(run_dir)} if run_dir is not None else {}), **options}
        if run_dir is not None and list_checkpoints(run_dir):
            raise RLKitError(f"{run_dir} already holds a run; {type(self).__name__}.load({str(run_dir)!r}) "
                             f"continues it, or pass another run_dir")
        self.config: BaseConfig = self.spec.config_cls.from_preset(preset, agent=name, **given)
        self._trained = False  # True once a checkpoint of this model's run exists (after learn or load)
        self.policy: Policy | None = None

    @classmethod
    def _agent_name(cls, agent: str | None) -> str:
        if cls.agent is not None and agent not in (None, cls.agent):
            raise RLKitError(f"{cls.__name__} is the {cls.agent} agent; use Model(..., agent={agent!r}) for {agent}")
        name = agent or cls.agent
        if name is None:
            raise RLKitError("Model needs an agent: Model(env, agent='dqn'), or use rlkit.DQN, rlkit.PPO, ...")
        return name

    # ------------------------------------------------------------------------------------------- properties
    @property
    def run_dir(self) -> Path | None:
        """The run's directory: where ``learn`` writes (None until the first ``learn`` picks the default)."""
        return Path(self.config.run_dir) if self.config.run_dir else None

    @property
    def env_id(self) -> str:
        return self.config.env_id

    @property
    def num_timesteps(self) -> int:
        """Steps trained so far (the latest checkpoint's step counter; gradient steps for bc), as SB3 names it."""
        if not self._trained:
            return 0
        return int(read_checksums(list_checkpoints(self.run_dir)[-1])["step"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(agent={self.spec.name!r}, env={self.env_id!r}, run_dir={self.config.run_dir!r})"

    # ---------------------------------------------------------------------------------------------- learn
    def learn(self, total_timesteps: int, callbacks: Sequence[Callback] | None = None,
              progress: bool | None = None) -> Model:
        """Train ``total_timesteps`` steps more (SB3's ``learn(..., reset_num_timesteps=False)``), then reload
        the policy from the run's final checkpoint. The first call starts the run; each later call, also after
        :meth:`load`, continues it from its latest checkpoint with the run's step counter kept.

        Steps are the agent's own ``total_steps`` unit (env steps; gradient steps for bc). An agent's other
        limits still apply (bc's ``epochs``, dagger's ``rounds``, ``target_return``): raise them through
        ``model.config`` when a continued run should go past them. ``callbacks``: :mod:`rlkit.callbacks`;
        ``progress``: show the progress bar (default: the config's ``progress``). Returns the model.
        """
        if int(total_timesteps) < 1:
            raise RLKitError(f"learn: total_timesteps must be at least 1; got {total_timesteps}")
        changes: dict[str, Any] = {"total_steps": self.num_timesteps + int(total_timesteps)}
        if progress is not None:
            changes["progress"] = bool(progress)
        self.config = apply_overrides(self.config, changes, source="learn")
        try:
            result = self.spec.train(self.config, resume=self._trained, callbacks=list(callbacks or []))
        except AlreadyFinished:  # nothing left to do at this step count (an agent's other limit was reached)
            result = {"run_dir": self.config.run_dir}
        finally:  # also after Ctrl-C or an error mid-run: a run with a checkpoint is continued by the next learn
            self._trained = self._trained or bool(self.config.run_dir and list_checkpoints(self.config.run_dir))
        self.config.run_dir = str(result.get("run_dir") or self.config.run_dir)
        self._reload_policy()
        return self

    def _reload_policy(self) -> None:
        self.policy = self.spec.load_policy(load_checkpoint(self.run_dir))

    # ----------------------------------------------------------------------------------------- save, load
    def save(self, path: str | Path) -> Path:
        """Write the model to the directory ``path``: the run's ``config.json``, metrics, ``final.json`` and
        its latest (and best) checkpoint, in rlkit's checksummed format (tensors only, no pickle). The
        directory appears whole or not at all (written beside it, then renamed); an existing one is replaced
        only when it is an rlkit run. Returns ``path``."""
        if not self._trained:
            raise RLKitError(f"{type(self).__name__}.save: nothing to save yet; call learn() first")
        src, path = Path(self.run_dir), Path(path)
        if path.resolve() == src.resolve():
            return path
        if path.exists() and not (path / "config.json").is_file():
            raise RLKitError(f"{path} exists and is not an rlkit run; save to a new path")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            for name in _COPIED:
                if (src / name).is_file():
                    shutil.copy2(src / name, tmp / name)
            latest = list_checkpoints(src)[-1]
            (tmp / CHECKPOINT_DIR).mkdir()
            shutil.copytree(latest, tmp / CHECKPOINT_DIR / latest.name)
            if (src / CHECKPOINT_DIR / "best").is_dir():
                shutil.copytree(src / CHECKPOINT_DIR / "best", tmp / CHECKPOINT_DIR / "best")
            cfg = config_from_dict(type(self.config), {**self.config.to_dict(), "run_dir": str(path)})
            cfg.save(tmp / "config.json")
            if path.exists():
                old = path.parent / f".{path.name}.replaced.tmp"
                shutil.rmtree(old, ignore_errors=True)
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return path

    @classmethod
    def load(cls, path: str | Path, env: str | None = None, **overrides: Any) -> Model:
        """The model saved at ``path`` (or any rlkit run directory), ready to ``predict`` and to ``learn`` on:
        a later ``learn`` continues that run in ``path`` itself, as ``rlkit train AGENT --resume PATH`` would.

        ``env`` and ``overrides`` change config fields, as ``--resume``'s flags do. A value in the run's own
        config that imports code (a ``module:Env-v0`` env id, a ``python:``/``sb3:`` expert) is used only when
        you pass it yourself. ``DQN.load`` of another agent's run is refused; ``Model.load`` takes any.
        """
        path = Path(path)
        config_path = path / "config.json"
        if not config_path.is_file() or not list_checkpoints(path):
            raise RLKitError(f"{path} is not a saved rlkit model (a run directory with config.json and "
                             f"checkpoints/step_*/); save one with model.save(PATH) or pass runs/...")
        agent = checkpoint_agent(path)
        if agent is None:
            agent = load_checkpoint(path)["agent"]
        if cls.agent is not None and agent != cls.agent:
            raise RLKitError(f"{path} is a {agent} model, not {cls.agent}; load it with "
                             f"{_CLASS_NAMES.get(agent, 'Model')}.load({str(path)!r})")
        given = {**({"env_id": env} if env is not None else {}), **overrides}
        saved = read_json(config_path)
        refuse_code_named_in_file(saved, given, config_path,
                                  lambda key, value: f"load({str(path)!r}, {key}={value!r})")
        spec = get_agent(agent)
        try:
            cfg = config_from_dict(spec.config_cls, saved)
        except RLKitError as e:
            raise RLKitError(f"{config_path}: {e}") from None
        model = cls.__new__(_CLASSES.get(agent, Model) if cls is Model else cls)
        model.spec = spec
        model.config = apply_overrides(cfg, {**given, "run_dir": str(path)}, source="load")
        model._trained = True
        model.policy = None
        model._reload_policy()
        return model

    # -------------------------------------------------------------------------------------------- predict
    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = False) -> tuple[np.ndarray, None]:
        """SB3's ``predict``: ``(action, None)``; one observation gives one action, a batch a batch of them
        (told apart by the observation space's shape)."""
        if self.policy is None:
            raise RLKitError(f"{type(self).__name__}.predict: the model has no policy yet; call learn() or "
                             f"{type(self).__name__}.load(PATH) first")
        return SB3PredictAdapter(self.policy).predict(observation, state, episode_start, deterministic=deterministic)


def _named(class_name: str, agent: str) -> type[Model]:
    return type(class_name, (Model,), {"agent": agent, "__doc__": f"The {agent} agent as a :class:`Model`.",
                                       "__module__": __name__})


_CLASS_NAMES = {"dqn": "DQN", "ddpg": "DDPG", "td3": "TD3", "a2c": "A2C", "a3c": "A3C", "ppo": "PPO", "sac": "SAC",
                "bc": "BC", "dagger": "DAgger", "gail": "GAIL", "airl": "AIRL", "preference": "Preference",
                "td3_bc": "TD3BC", "iql": "IQL", "cql": "CQL"}
_CLASSES = {agent: _named(name, agent) for agent, name in _CLASS_NAMES.items()}
DQN, DDPG, TD3, A2C, A3C, PPO, SAC, BC, DAgger, GAIL, AIRL, Preference, TD3BC, IQL, CQL = _CLASSES.values()

__all__ = ["Model", *_CLASS_NAMES.values()]
