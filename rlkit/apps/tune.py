"""``rlkit tune``: hyperparameter search with Optuna (TPE sampler, median pruner), locally or on Ray.

Each trial is a normal training run (its own run directory ``OUT/trial-NNNN``) of the agent with
parameters sampled from a search space; every periodic evaluation (``eval_every``) is reported to
the trial, and Optuna's median pruner stops trials whose evaluations fall below the median of earlier
trials at the same step. The objective is the run's final evaluation (``final.json``'s ``eval.mean``).

Seeding: the sampler is seeded with ``--seed`` and every trial trains with the same ``--seed``, so
trials differ by their parameters only (as RL-Zoo does) and a rerun samples the same sequence.

Storage: an SQLite file ``OUT/study.db`` unless ``--storage URL`` names another (any URL Optuna
accepts, e.g. ``postgresql://...`` for several machines). Rerunning the same command loads the study
and adds ``--trials`` more; several processes may share one storage.

Backends: ``local`` runs the trials one after another in this process; ``ray`` runs ``--workers``
trials at once as Ray tasks (a local instance, or the cluster at ``--ray-address``, whose workers must
reach the storage): the driver samples each trial's parameters, a task trains and reports its
evaluations to the storage, and the driver records the outcome.

Output in OUT: ``best_preset.yaml`` (``rlkit train AGENT --preset OUT/best_preset.yaml``),
``optimization_history.png``, ``param_importances.png`` and ``tune.json`` (the ``--json`` summary;
schema in :func:`summary`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from rlkit.callbacks import Callback, Event
from rlkit.config import BaseConfig, apply_overrides, config_from_dict
from rlkit.errors import RLKitError
from rlkit.registry import AgentSpec, get_agent
from rlkit.safe_files import check_dir_inside, check_inside

SPACES_FILE = "tune_spaces.yaml"
KINDS = ("float", "int", "categorical")


# ---------------------------------------------------------------------------------------------- search spaces
def load_space(agent: str, spec: AgentSpec, path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The search space of ``agent``: from ``path`` (a YAML mapping ``param -> spec``, or ``agent -> {...}``)
    or the default shipped beside the agent's presets; checked against the agent's config fields."""
    if path is None:
        default = spec.presets_file.parent / SPACES_FILE if spec.presets_file else None
        data = yaml.safe_load(default.read_text()) if default is not None and default.exists() else {}
        if agent not in (data or {}):
            raise RLKitError(f"no default search space for agent {agent!r}; pass --space FILE.yaml")
        space, source = data[agent], f"the default space of {agent}"
    else:
        if not Path(path).exists():
            raise RLKitError(f"search space {path} not found; pass a YAML file (see rlkit tune --help)")
        if not Path(path).is_file():  # a FIFO would block the read forever
            raise RLKitError(f"search space {path} is not a regular file; pass a YAML file")
        try:
            data = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as e:
            raise RLKitError(f"cannot read search space {path}: {str(e).splitlines()[0]}") from None
        if isinstance(data, dict) and isinstance(data.get(agent), dict):
            data = data[agent]
        space, source = data, str(path)
    if not isinstance(space, dict) or not space:
        raise RLKitError(f"search space {source} must be a non-empty mapping param -> spec (see rlkit tune --help)")
    check_space(space, spec.config_cls, source)
    return space


def check_space(space: dict[str, Any], config_cls: type[BaseConfig], source: str) -> None:
    """One-line errors for unknown params, malformed specs and derived entries naming missing params."""
    fields = {f for f in config_cls.__dataclass_fields__}
    used_by_derived = set()
    for name, entry in space.items():
        if not isinstance(entry, dict):
            raise RLKitError(f"param {name!r} in {source} must be a mapping like {{type: float, low: 0, high: 1}}")
        if "divide" in entry or "copy" in entry:
            refs = [entry["copy"]] if "copy" in entry else [entry.get("divide"), entry.get("by")]
            for ref in refs:
                if ref not in space:
                    raise RLKitError(f"derived param {name!r} in {source} refers to {ref!r}, which the space lacks")
            used_by_derived |= set(refs)
            continue
        kind = entry.get("type")
        if kind not in KINDS:
            raise RLKitError(f"param {name!r} in {source} has type {kind!r}; use one of {', '.join(KINDS)}")
        if kind == "categorical":
            if not isinstance(entry.get("choices"), (list, dict)) or not entry["choices"]:
                raise RLKitError(f"categorical param {name!r} in {source} needs a non-empty list or mapping of choices")
        elif not ("low" in entry and "high" in entry) or not float(entry["low"]) <= float(entry["high"]):
            raise RLKitError(f"{kind} param {name!r} in {source} needs low <= high")
    for name in space:
        if name not in fields and name not in used_by_derived:
            close = [f for f in sorted(fields) if name in f or f in name]
            hint = f" (did you mean {', '.join(close[:3])}?)" if close else ""
            raise RLKitError(f"unknown param {name!r} in {source}: {config_cls.__name__} has no such field{hint}; "
                             f"see `rlkit train AGENT --help`")


def suggest(trial: Any, space: dict[str, dict[str, Any]], fields: set[str]) -> dict[str, Any]:
    """Sample ``space`` on an Optuna trial; returns the overrides of config ``fields`` (derived params resolved)."""
    values: dict[str, Any] = {}
    for name, entry in space.items():
        kind = entry.get("type")
        if kind == "float":
            values[name] = trial.suggest_float(name, float(entry["low"]), float(entry["high"]),
                                               log=bool(entry.get("log", False)))
        elif kind == "int":
            values[name] = trial.suggest_int(name, int(entry["low"]), int(entry["high"]),
                                             log=bool(entry.get("log", False)))
        elif kind == "categorical":
            choices = entry["choices"]
            if isinstance(choices, dict):  # named choices of any type (Optuna stores the name)
                values[name] = choices[trial.suggest_categorical(name, list(choices))]
            else:
                values[name] = trial.suggest_categorical(name, list(choices))
    for name, entry in space.items():
        if "copy" in entry:
            values[name] = values[entry["copy"]]
        elif "divide" in entry:
            values[name] = max(int(values[entry["divide"]]) // int(values[entry["by"]]), int(entry.get("min", 1)))
    return {k: v for k, v in values.items() if k in fields}


# ---------------------------------------------------------------------------------------------- one trial
def base_overrides(env_id: str, steps: int, seed: int, evaluations: int, eval_episodes: int) -> dict[str, Any]:
    """What every trial's config sets besides the sampled params: quiet, lean runs with periodic evaluations."""
    return {"env_id": env_id, "total_steps": steps, "seed": seed, "eval_every": max(steps // evaluations, 1),
            "eval_episodes": eval_episodes, "checkpoint_every": 0, "keep_checkpoints": 1, "progress": False,
            "tensorboard": False}


def pruning_callback(trial: Any) -> Callback:
    """A run callback that reports each periodic evaluation to ``trial`` and prunes when Optuna says so."""
    import optuna

    def report_to_optuna(event: Event) -> None:
        if event.kind != "eval" or event.final:  # the final evaluation is the trial's value, not a report
            return
        mean = float(event.metrics["mean"])  # type: ignore[arg-type]
        trial.report(mean, event.step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"eval {mean:.2f} at step {event.step} is below the median")

    return report_to_optuna


def train_trial(agent: str, config: dict[str, Any], trial: Any) -> float:
    """Train one trial's config (a full config dict) and return its final evaluation's mean."""
    spec = get_agent(agent)
    cfg = config_from_dict(spec.config_cls, config)
    result = spec.train(cfg, callbacks=[pruning_callback(trial)])
    return float(result["eval"]["mean"])


def trial_config(spec: AgentSpec, base: dict[str, Any], params: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    cfg = apply_overrides(spec.config_cls(), spec.defaults, source="agent defaults")
    cfg = apply_overrides(cfg, {**base, "run_dir": str(run_dir)}, source="rlkit tune")
    return apply_overrides(cfg, params, source="the search space").to_dict()


def _ray_trial(storage_url: str, study_name: str, trial_id: int, agent: str, config: dict[str, Any],
               warmup_steps: int) -> tuple[str, float | None]:
    """A Ray task: train one trial, reporting its evaluations to the shared storage."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=make_storage(storage_url),
                              pruner=make_pruner(warmup_steps))
    trial = optuna.trial.Trial(study, trial_id)
    try:
        return "complete", train_trial(agent, config, trial)
    except optuna.TrialPruned:
        return "pruned", None


# ---------------------------------------------------------------------------------------------- the study
def make_storage(url: str) -> Any:
    import optuna

    if url.startswith("sqlite:"):  # several processes write: wait for the lock rather than fail
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 120}})
    return url


def make_pruner(warmup_steps: int) -> Any:
    import optuna

    # As RL-Zoo: no pruning during the first 5 trials nor in the first third of a run.
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warmup_steps)


def _redact(url: str) -> str:
    """A storage URL without its password (it goes into tune.json)."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest and ":" in rest.split("@", 1)[0]:
        user = rest.split("@", 1)[0].split(":", 1)[0]
        return f"{scheme}://{user}:***@{rest.split('@', 1)[1]}"
    return url


def tune(agent: str, env_id: str, trials: int, out: str | Path, steps: int = 20_000, seed: int = 0,
         storage: str | None = None, study_name: str | None = None, space_file: str | Path | None = None,
         backend: str = "local", ray_address: str | None = None, workers: int = 2, evaluations: int = 4,
         eval_episodes: int = 10, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run ``trials`` more trials of the study and write its outputs in ``out``; returns :func:`summary`.

    Args:
        agent: registered agent name.
        env_id: env of every trial.
        trials: trials to add to the study in this call.
        out: directory of the study: trial run dirs, default storage, preset, plots, tune.json.
        steps: env steps of each trial.
        seed: seed of the sampler and of every trial's training.
        storage: Optuna storage URL; default ``sqlite:///OUT/study.db``.
        study_name: default ``AGENT-ENV_ID``.
        space_file: YAML search space; default the agent's in ``agents/presets/tune_spaces.yaml``.
        backend: ``local`` (in this process) or ``ray`` (``workers`` Ray tasks at once).
        ray_address: Ray cluster to join (default ``$RAY_ADDRESS``, else a local instance of ``workers`` CPUs).
        workers: trials at once with the ray backend.
        evaluations: periodic evaluations per trial, reported to the pruner.
        eval_episodes: episodes of each evaluation (the final one too).
        log: receives one line per finished trial.
    """
    import optuna

    if trials < 1 or steps < 1 or evaluations < 1 or eval_episodes < 1:
        raise RLKitError("--trials, --steps, --evaluations and --eval-episodes must be at least 1")
    if backend not in ("local", "ray"):
        raise RLKitError(f"backend must be local or ray; got {backend!r}")
    spec = get_agent(agent)
    space = load_space(agent, spec, space_file)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if storage is None:  # SQLite follows a symlink: the study would be written (and locked) elsewhere
        check_inside(out / "study.db", out)
    storage_url = storage or f"sqlite:///{out / 'study.db'}"
    if backend == "ray" and (ray_address or os.environ.get("RAY_ADDRESS")) and storage_url.startswith("sqlite:"):
        raise RLKitError("--backend ray on a cluster needs a --storage every node reaches (e.g. postgresql://...), "
                         "not an SQLite file")
    study_name = study_name or f"{agent}-{env_id}"
    base = base_overrides(env_id, steps, seed, evaluations, eval_episodes)
    warmup = steps // 3
    log = log or (lambda line: print(line, file=sys.stderr))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for attempt in range(5):
        try:
            study = optuna.create_study(study_name=study_name, storage=make_storage(storage_url),
                                        load_if_exists=True, direction="maximize",
                                        sampler=optuna.samplers.TPESampler(seed=seed), pruner=make_pruner(warmup))
            break
        except Exception as e:  # a bad URL or an unreachable database: SQLAlchemy/Optuna raise many types
            # Two processes creating one new SQLite file race on its schema ("table ... already exists",
            # "UNIQUE constraint failed: alembic_version"): the loser opens it again, as it stands now.
            if attempt < 4 and any(m in str(e) for m in ("already exists", "UNIQUE constraint", "locked")):
                time.sleep(0.5 + attempt)
                continue
            raise RLKitError(f"cannot open the study storage {_redact(storage_url)}: "
                             f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    if study.user_attrs.get("agent", agent) != agent or study.user_attrs.get("env_id", env_id) != env_id:
        raise RLKitError(f"study {study_name!r} in {_redact(storage_url)} tunes {study.user_attrs['agent']} on "
                         f"{study.user_attrs['env_id']}; pass another --study-name or --out")
    study.set_user_attr("agent", agent)
    study.set_user_attr("env_id", env_id)
    t0 = time.perf_counter()

    def start(trial: optuna.Trial) -> dict[str, Any]:
        params = suggest(trial, space, set(spec.config_cls.__dataclass_fields__))
        run_dir = check_dir_inside(out / f"trial-{trial.number:04d}", out)
        config = trial_config(spec, base, params, run_dir)
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("overrides", params)
        return config

    def report(trial_number: int, state: str, value: float | None) -> None:
        best = study.best_value if any(t.state.name == "COMPLETE" for t in study.trials) else None
        shown = f"{value:.2f}" if value is not None else state
        log(f"[trial {trial_number}] {shown}" + (f" (best so far {best:.2f})" if best is not None else ""))

    if backend == "local":
        def objective(trial: optuna.Trial) -> float:
            return train_trial(agent, start(trial), trial)

        def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            report(trial.number, trial.state.name.lower(), trial.value)

        study.optimize(objective, n_trials=trials, callbacks=[callback], gc_after_trial=False)
    else:
        _run_ray(study, start, trials, storage_url, agent, warmup, workers, ray_address, report)
    return finish(study, spec, out, storage_url, base, backend, time.perf_counter() - t0)


def _run_ray(study: Any, start: Callable[[Any], dict[str, Any]], trials: int, storage_url: str, agent: str,
             warmup: int, workers: int, address: str | None, report: Callable[..., None]) -> None:
    import optuna

    try:
        import ray
    except ImportError:
        raise RLKitError("--backend ray needs Ray: pip install 'rlkit[ray]'") from None
    started = not ray.is_initialized()
    if started:
        kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": False}
        address = address or os.environ.get("RAY_ADDRESS")
        ray.init(**({"address": address} if address else {"num_cpus": workers}), **kwargs)
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(_ray_trial)
        pending: dict[Any, Any] = {}
        asked = 0
        while asked < trials or pending:
            while asked < trials and len(pending) < workers:
                trial = study.ask()
                config = start(trial)
                pending[task.remote(storage_url, study.study_name, trial._trial_id, agent, config, warmup)] = trial
                asked += 1
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                trial = pending.pop(ref)
                try:
                    state, value = ray.get(ref)
                except Exception as e:  # RayTaskError wraps the task's exception as .cause
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    cause = getattr(e, "cause", None) or e
                    if isinstance(cause, RLKitError):
                        raise cause from None
                    raise
                if state == "pruned":
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                else:
                    study.tell(trial, value)
                report(trial.number, state, value)
    finally:
        if started:
            ray.shutdown()


# ---------------------------------------------------------------------------------------------- outputs
def finish(study: Any, spec: AgentSpec, out: Path, storage_url: str, base: dict[str, Any], backend: str,
           wall_s: float) -> dict[str, Any]:
    """Write the best preset, the plots and tune.json; return the summary."""
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    preset_path = None
    if complete:
        best = study.best_trial
        preset = {"_reference": f"rlkit tune: best of {len(complete)} complete trials of study {study.study_name!r}, "
                                f"final eval {best.value:.2f} over {base['eval_episodes']} episodes "
                                f"(trial {best.number}, seed {base['seed']})",
                  "env_id": base["env_id"], "total_steps": base["total_steps"], **best.user_attrs["overrides"]}
        preset_path = out / "best_preset.yaml"
        from rlkit.checkpoint import atomic_write_text  # lazily: the CLI starts without gymnasium

        atomic_write_text(preset_path, yaml.safe_dump(preset, sort_keys=False), home=out)
    plots, importances = write_plots(study, out)
    result = summary(study, spec.name, storage_url, base, backend, preset_path, plots, importances, wall_s)
    from rlkit.checkpoint import atomic_write_text

    atomic_write_text(out / "tune.json", json.dumps(result, indent=2), home=out)
    return result


def save_figure(figure: Any, path: Path, out: Path) -> None:
    """Save a 7x4-inch PNG atomically as a plain file of the study directory ``out`` (matplotlib's own
    savefig would truncate whatever file a symlink planted at ``path`` points to), then close it."""
    import matplotlib.pyplot as plt

    from rlkit.checkpoint import atomic_open

    figure.set_size_inches(7, 4)
    figure.tight_layout()
    try:
        with atomic_open(path, fsync=False, home=out) as f:
            figure.savefig(f, format="png", dpi=100)
    finally:
        plt.close(figure)


def write_plots(study: Any, out: Path) -> tuple[dict[str, str | None], dict[str, float]]:
    """``optimization_history.png`` and ``param_importances.png`` (the latter needs 2+ complete trials)."""
    import matplotlib

    matplotlib.use("Agg")
    import optuna
    from optuna.visualization import matplotlib as optuna_plots

    plots: dict[str, str | None] = {"history": None, "importance": None}
    importances: dict[str, float] = {}
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if complete:
            ax = optuna_plots.plot_optimization_history(study)
            save_figure(ax.figure, out / "optimization_history.png", out)
            plots["history"] = str(out / "optimization_history.png")
        if len(complete) >= 2:
            try:
                evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)  # seeded: same study, same figure
                importances = {k: round(float(v), 4) for k, v in
                               optuna.importance.get_param_importances(study, evaluator=evaluator).items()}
                ax = optuna_plots.plot_param_importances(study, evaluator=evaluator)
                save_figure(ax.figure, out / "param_importances.png", out)
                plots["importance"] = str(out / "param_importances.png")
            except (RuntimeError, ValueError):  # e.g. every trial sampled the same values
                importances = {}
    return plots, importances


def summary(study: Any, agent: str, storage_url: str, base: dict[str, Any], backend: str,
            preset_path: Path | None, plots: dict[str, str | None], importances: dict[str, float],
            wall_s: float) -> dict[str, Any]:
    """The ``--json`` summary (also ``OUT/tune.json``). Schema (format 1)::

        {"format": 1, "study": str, "storage": str (password redacted), "agent": str, "env_id": str,
         "steps": int, "seed": int, "backend": "local"|"ray", "wall_s": float (this call),
         "trials": {"total": int, "complete": int, "pruned": int, "failed": int, "running": int},
         "best": null | {"number": int, "value": float, "params": {name: value as sampled},
                         "overrides": {config field: value}, "run_dir": str},
         "preset": str|null, "plots": {"history": str|null, "importance": str|null},
         "importances": {param: float}, "values": [{"number": int, "state": str, "value": float|null}]}
    """
    states = [t.state.name for t in study.trials]
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    best = None
    if complete:
        b = study.best_trial
        best = {"number": b.number, "value": b.value, "params": b.params, "overrides": b.user_attrs.get("overrides"),
                "run_dir": b.user_attrs.get("run_dir")}
    return {
        "format": 1, "study": study.study_name, "storage": _redact(storage_url), "agent": agent,
        "env_id": base["env_id"], "steps": base["total_steps"], "seed": base["seed"], "backend": backend,
        "wall_s": round(wall_s, 1),
        "trials": {"total": len(states), "complete": states.count("COMPLETE"), "pruned": states.count("PRUNED"),
                   "failed": states.count("FAIL"), "running": states.count("RUNNING")},
        "best": best, "preset": str(preset_path) if preset_path else None, "plots": plots,
        "importances": importances,
        "values": [{"number": t.number, "state": t.state.name.lower(), "value": t.value} for t in study.trials],
    }


# ---------------------------------------------------------------------------------------------- CLI
def cmd_tune(args: argparse.Namespace) -> int:
    out = args.out or f"tune/{args.agent}-{args.env_id.replace('/', '_').replace(':', '_')}"
    result = tune(args.agent, args.env_id, args.trials, out, steps=args.steps, seed=args.seed, storage=args.storage,
                  study_name=args.study_name, space_file=args.space, backend=args.backend,
                  ray_address=args.ray_address, workers=args.workers, evaluations=args.evaluations,
                  eval_episodes=args.eval_episodes)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        t = result["trials"]
        line = f"study {result['study']}: {t['complete']} complete, {t['pruned']} pruned, {t['failed']} failed"
        if result["best"]:
            line += (f"; best trial {result['best']['number']}: eval {result['best']['value']:.2f} -> "
                     f"rlkit train {result['agent']} --preset {result['preset']}")
        print(line)
    return 0


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("tune", help="tune an agent's hyperparameters with Optuna", description=(
        "Search AGENT's hyperparameters on ENV with Optuna (TPE sampler, median pruner over the periodic "
        "evaluations). Each trial is a run directory OUT/trial-NNNN; the study lives in OUT/study.db unless "
        "--storage names another, and rerunning the command adds --trials more. Writes OUT/best_preset.yaml "
        "(for rlkit train AGENT --preset), OUT/optimization_history.png, OUT/param_importances.png, OUT/tune.json."))
    p.add_argument("agent", help="the agent to tune (its default search space: agents/presets/tune_spaces.yaml)")
    p.add_argument("--env", dest="env_id", required=True, help="env id of every trial")
    p.add_argument("--trials", type=int, required=True, help="trials to run in this call")
    p.add_argument("--steps", type=int, default=20_000, help="env steps per trial (default 20000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler and of every trial (default 0)")
    p.add_argument("--out", help="study directory (default tune/AGENT-ENV)")
    p.add_argument("--storage", help="Optuna storage URL (default sqlite:///OUT/study.db), e.g. postgresql://...")
    p.add_argument("--study-name", help="study name in the storage (default AGENT-ENV)")
    p.add_argument("--space",
                   help="YAML search space, param: {type: float|int|categorical, ...} (default: the agent's)")
    p.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="local: trials one by one in this process; ray: --workers trials at once as Ray tasks")
    p.add_argument("--ray-address", help="Ray cluster to join (default $RAY_ADDRESS, else a local instance)")
    p.add_argument("--workers", type=int, default=2, help="trials at once with --backend ray (default 2)")
    p.add_argument("--evaluations", type=int, default=4, help="periodic evaluations per trial, for pruning (default 4)")
    p.add_argument("--eval-episodes", type=int, default=10, help="episodes per evaluation (default 10)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON (schema: rlkit.apps.tune.summary)")
    p.set_defaults(func=cmd_tune)
