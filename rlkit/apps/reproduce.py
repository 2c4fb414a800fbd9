"""``rlkit reproduce``: multi-seed reproductions of published baselines (the orchestration).

A reproduction preset (:mod:`rlkit.apps.reproduce_presets`) names an agent, its preset, the budget at
which the published number was measured and the number with its source. :func:`reproduce` trains one
run per seed (``DIR/seed_S``) through the agent registry on a backend of :mod:`rlkit.apps.backends`
(worker processes or Ray tasks), skips seeds that already finished so an interrupted reproduction
resumes, then writes ``DIR/results.json``, ``DIR/report.md`` (:func:`rlkit.apps.reports.reproduction_report`)
and ``DIR/curves.png``. The aggregates are rliable's (see :mod:`rlkit.apps.reports`): mean and IQM with 95%
stratified-bootstrap confidence intervals. A run below the reference's budget is labelled as such,
never as a reproduction. The command line is :mod:`rlkit.apps.reproduce_cli`.

Where the agent trains several seeds in one process in lockstep (``AgentSpec.train_seeds``: dqn, ddpg, td3,
sac), the seeds still to run are split into one group per worker and each group is one job, one process
(``vectorise``, the default for those agents; ``--no-vectorise``: one process per seed). A group's seeds keep
their own run directories, so skipping finished seeds and resuming work as for one seed per job;
``DIR/processes.json`` and the results record, per seed, whether it ran vectorised and how many seeds
shared its process.

Python use mirrors the command: ``reproduce("dqn-cartpole", seeds=5, out="repro/dqn")`` returns the
contents of results.json. Like any multiprocessing code, call it under ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rlkit.apps import reports, reproduce_tasks
from rlkit.apps.backends import Job, JobGroup, Report, execute, members, print_progress
from rlkit.apps.reproduce_presets import ReproducePreset, build_config, get_preset, load_presets
from rlkit.config import BaseConfig, apply_overrides
from rlkit.errors import RLKitError
from rlkit.machine import available_cores
from rlkit.registry import get_agent

__all__ = ["RESULTS_SCHEMA", "ReproducePreset", "build_config", "build_results", "get_preset", "load_presets",
           "plan_jobs", "reproduce", "write_outputs"]

RESULTS_SCHEMA = 1


def _pending_or_done(run_dir: Path) -> tuple[dict[str, Any] | None, bool]:
    """(final.json if the run finished, resume?) for one run directory; clears a run that left nothing."""
    from rlkit.checkpoint import list_checkpoints, read_json

    final = run_dir / "final.json"
    if final.exists():
        return read_json(final), False
    if list_checkpoints(run_dir):
        return None, True
    if run_dir.exists():
        if not (run_dir / "config.json").exists():
            raise RLKitError(f"{run_dir} exists but is not an rlkit run; move it away or choose another --out")
        shutil.rmtree(run_dir)  # started but never checkpointed: nothing to resume, start it afresh
    return None, False


def _check_manifest(out: Path, manifest: dict[str, Any]) -> None:
    from rlkit.checkpoint import atomic_write_text, read_json

    path = out / "reproduce.json"
    if path.exists():
        old = read_json(path)  # a damaged one is a one-line error, and is left as it is
        for key in ("preset", "agent", "total_steps"):
            if old.get(key) != manifest[key]:
                raise RLKitError(f"{out} holds a reproduction with {key}={old.get(key)!r}, not {manifest[key]!r}; "
                                 "choose another --out (or rerun with the same settings to resume)")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(manifest, indent=2))


def _prepare_demos(preset: ReproducePreset, out: Path, backend: str, workers: int, address: str | None,
                   report: Report) -> str:
    """Imitation presets: train the expert once (OUT/expert) and record its dataset once (OUT/demos)."""
    from rlkit.checkpoint import atomic_write_text

    spec = dict(preset.demos or {})
    expert = dict(spec.get("expert") or {})
    if "agent" not in expert:
        raise RLKitError(f"reproduce preset {preset.name!r}: demos.expert needs an agent")
    expert_dir = out / "expert"
    final, resume = _pending_or_done(expert_dir)
    if final is None:
        expert_preset = ReproducePreset(name=f"{preset.name} expert", agent=expert["agent"],
                                        preset=expert.get("preset"), eval_points=preset.eval_points)
        cfg = build_config(expert_preset, expert.get("steps"))
        cfg = apply_overrides(cfg, {"seed": int(expert.get("seed", 0)), "run_dir": str(expert_dir.resolve())})
        final = execute([Job("expert", expert["agent"], cfg.to_dict(), resume)], backend, workers, address,
                         report)["expert"]
    demos_dir, marker = out / "demos", out / "demos.json"
    if not marker.exists():
        if demos_dir.exists():
            shutil.rmtree(demos_dir)  # an interrupted recording: record it again, whole
        cmd = [sys.executable, "-m", "rlkit.apps.cli", "demos", "record", "--env", final["env_id"], "--policy",
               str(expert_dir), "--episodes", str(int(spec.get("episodes", 10))), "--out", str(demos_dir),
               "--seed", str(int(spec.get("seed", 0))), "--quiet"]
        print(f"recording {spec.get('episodes', 10)} expert episodes into {demos_dir}", file=sys.stderr)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RLKitError(f"recording the expert's demonstrations failed: {tail}")
        atomic_write_text(marker, json.dumps({"expert": str(expert_dir), "expert_eval": final["eval"],
                                              "command": cmd[1:]}, indent=2))
    return str(demos_dir.resolve())


def prepare_offline_data(preset: ReproducePreset, out: Path) -> str:
    """Offline presets: the dataset ``offline_data.kind``, from the D4RL-style set that ``rlkit offline-data``
    builds once per OUT parent (``OUT/../DIR``, DIR default ``ENV-datasets``), seeded, so every offline preset
    beside OUT learns from the same data. An interrupted build (its marker file left) is removed and built again;
    a DIR that is not such a build and holds no datasets.json is refused, never overwritten."""
    from rlkit.apps.offline_data import KINDS, build_datasets
    from rlkit.checkpoint import atomic_write_text

    spec = dict(preset.offline_data or {})
    kinds = list(spec.get("kinds") or KINDS)  # all five by default: the presets beside OUT share them
    if spec["kind"] not in KINDS or spec["kind"] not in kinds or not set(kinds) <= set(KINDS):
        raise RLKitError(f"reproduce preset {preset.name!r}: offline_data.kind {spec['kind']!r} must be one of "
                         f"{', '.join(KINDS)} and among offline_data.kinds {kinds}")
    root = out.parent / str(spec.get("dir") or f"{spec['env'].split(':')[-1]}-datasets")
    options = {key: spec[key] for key in ("seed", "episodes", "eval_every", "reference_episodes", "noise", "agent",
                                          "preset") if key in spec}
    options["kinds"] = kinds
    options["overrides"] = dict(spec.get("set") or {})
    if spec.get("expert"):  # a run of another reproduction beside OUT, e.g. td3-hopper-300k/seed_1
        expert = out.parent / str(spec["expert"])
        if not (expert / "checkpoints").is_dir():
            raise RLKitError(f"reproduce preset {preset.name!r} takes its expert from {expert}, which holds no "
                             f"checkpoints; run `rlkit reproduce {Path(str(spec['expert'])).parts[0]} --out "
                             f"{expert.parent}` first")
        options["expert_run"] = str(expert)
    root.parent.mkdir(parents=True, exist_ok=True)
    marker = root.parent / f".{root.name}.building"
    with open(root.parent / f".{root.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another reproduction beside OUT may be building the same set
        if not (root / "datasets.json").exists():
            if root.exists() and not marker.exists():
                raise RLKitError(f"{root} exists but holds no datasets.json of `rlkit offline-data`; move it away "
                                 f"(reproduce preset {preset.name!r} builds its datasets there)")
            if root.exists():
                shutil.rmtree(root)  # our own interrupted build: start it again, whole
            atomic_write_text(marker, json.dumps({"env": spec["env"], **options}, indent=2))
            print(f"building the {spec['env']} offline datasets into {root} (once for every preset beside {out})",
                  file=sys.stderr)
            build_datasets(spec["env"], root, **options)
            marker.unlink()
    if not (root / spec["kind"] / "manifest.json").exists():
        raise RLKitError(f"{root} holds no {spec['kind']} dataset (built with other kinds); move it away to build "
                         f"all of them, or build it with `rlkit offline-data --env {spec['env']} --kinds "
                         f"{spec['kind']} --out DIR` and give that DIR")
    return str((root / spec["kind"]).resolve())


def default_out(preset: ReproducePreset, steps: int | None) -> Path:
    reduced = steps is not None and steps != preset.budget
    return Path("reproductions") / (f"{preset.name}-{steps}steps" if reduced else preset.name)


def reproduce(preset_name: str, seeds: int | None = None, backend: str = "local", out: str | Path | None = None,
              steps: int | None = None, workers: int | None = None, ray_address: str | None = None,
              presets_file: str | Path | None = None, eval_points: int | None = None,
              report: Report = print_progress, vectorise: bool | None = None) -> dict[str, Any]:
    """Run (or resume) a reproduction and write results.json, report.md and curves.png into ``out``.

    Args:
        preset_name: a reproduction preset (``rlkit reproduce`` lists them).
        seeds: number of seeds, 0..N-1; default the preset's.
        backend: ``local`` (worker processes) or ``ray`` (Ray tasks; extra ``rlkit[ray]``).
        out: output directory; default ``reproductions/PRESET`` (``...-Nsteps`` for other budgets).
        steps: env steps per seed; default the reference's budget.
        workers: processes at once; default the cores available (ray: the CPUs of the local instance).
        ray_address: an existing Ray cluster (default ``$RAY_ADDRESS``, else a local instance).
        presets_file: a YAML of your own reproduction presets.
        eval_points: evaluations during training (the learning-curve points); default the preset's.
        report: called after each run finishes (progress output); a group's runs are reported one by one.
        vectorise: split the seeds still to run into one group per worker, each group trained in one process
            by :func:`rlkit.registry.train_seeds` (in lockstep); False: one process per seed. Default: True
            where the agent offers lockstep training (``AgentSpec.train_seeds``: dqn, ddpg, td3, sac).

    Returns:
        The contents of ``results.json``.
    """
    if backend not in ("local", "ray"):
        raise RLKitError(f"backend must be local or ray; got {backend!r}")
    preset = get_preset(preset_name, presets_file)
    n_seeds, workers = _counts(preset.seeds if seeds is None else seeds, workers or available_cores())
    lockstep = get_agent(preset.agent).train_seeds is not None
    vectorise = _vectorise(preset.agent, lockstep, vectorise)
    out = Path(out) if out else default_out(preset, steps)
    base = build_config(preset, steps, eval_points)
    _check_manifest(out, {"preset": preset.name, "agent": preset.agent, "agent_preset": preset.preset,
                          "total_steps": base.total_steps, "budget": preset.budget})
    t0 = time.perf_counter()
    if preset.demos:
        base = apply_overrides(base, {"demos": _prepare_demos(preset, out, backend, workers, ray_address, report)},
                               source="reproduce demos")
    if preset.offline_data:
        base = apply_overrides(base, {"demos": prepare_offline_data(preset, out)}, source="reproduce offline data")
    finals, pending = reproduce_tasks.task_runs(preset.name, base, out, n_seeds, preset.agent, _pending_or_done) \
        if preset.split_tasks else _seed_runs(preset, base, out, n_seeds)
    jobs = plan_jobs(pending, workers, vectorise)
    processes = _record_processes(out, jobs)
    _announce(preset, base, jobs, backend, workers, ray_address)
    for key, result in execute(jobs, backend, workers, ray_address, report).items():
        finals[int(key.split()[1])] = result
    if preset.split_tasks:  # a seed is its tasks' runs together (rlkit.apps.reproduce_tasks)
        side_by_side = {seed: bool(how.get("vectorised")) for seed, how in processes.items()}
        finals = reproduce_tasks.task_runs(preset.name, base, out, n_seeds, preset.agent, _pending_or_done,
                                           side_by_side)[0]

    ordered = [finals[s] for s in range(n_seeds)]
    normaliser = score_range(preset, out, base, ordered[0]) if preset.normalise else None
    results = build_results(preset, base, ordered, backend, ran=sorted({int(j.key.split()[1]) for j in pending}),
                            wall_s=time.perf_counter() - t0, normaliser=normaliser, processes=processes,
                            curves=[eval_curve(out / f"seed_{s}") for s in range(n_seeds)])
    results["vectorise"] = vectorise
    results["out"] = str(out)
    results["command"] = " ".join(["rlkit reproduce", preset.name, f"--seeds {n_seeds}"]
                                  + ([f"--steps {steps}"] if steps else [])
                                  + ([f"--eval-points {eval_points}"] if eval_points else [])
                                  + (["--no-vectorise"] if lockstep and not vectorise else [])
                                  + ([f"--presets {presets_file}"] if presets_file else []) + [f"--out {out}"])
    write_outputs(out, preset, results)
    return results


def _counts(n_seeds: int, workers: int) -> tuple[int, int]:
    if n_seeds < 1:
        raise RLKitError(f"--seeds must be at least 1; got {n_seeds}")
    if workers < 1:
        raise RLKitError(f"--workers must be at least 1; got {workers}")
    return n_seeds, workers


def _vectorise(agent: str, lockstep: bool, requested: bool | None) -> bool:
    """Whether seeds share processes: as ``requested``, by default where the agent trains seeds in lockstep."""
    if requested and not lockstep:
        raise RLKitError(f"--vectorise: agent {agent} cannot train several seeds in one process (its AgentSpec has "
                         "no train_seeds); drop --vectorise")
    return lockstep if requested is None else requested


def _seed_runs(preset: ReproducePreset, base: BaseConfig, out: Path, n_seeds: int
               ) -> tuple[dict[int, dict[str, Any]], list[Job]]:
    """(final.json of each seed already done, a job for each seed still to run: DIR/seed_S, fresh or resumed)."""
    finals: dict[int, dict[str, Any]] = {}
    pending: list[Job] = []
    for seed in range(n_seeds):
        run_dir = out / f"seed_{seed}"
        final, resume = _pending_or_done(run_dir)
        if final is not None:
            finals[seed] = final
            continue
        changes: dict[str, Any] = {"seed": seed, "run_dir": str(run_dir.resolve())}
        if preset.init_from:
            changes["init_from"] = pretrained_seed(preset, out, seed)
        cfg = apply_overrides(base, changes, source="reproduce")
        pending.append(Job(f"seed {seed}", preset.agent, cfg.to_dict(), resume))
    if finals:
        print(f"{len(finals)} of {n_seeds} seeds already done in {out}, skipping them: {sorted(finals)}",
              file=sys.stderr)
    return finals, pending


def pretrained_seed(preset: ReproducePreset, out: Path, seed: int) -> str:
    """``init_from``: seed ``seed`` of the reproduction ``preset.init_from`` beside ``out`` (its final network):
    ``OUT/../NAME``, else the one reduced-budget ``OUT/../NAME-Nsteps`` there (several: name the one you mean)."""
    name = str(preset.init_from)
    reduced = sorted(p for p in out.parent.glob(f"{name}-*steps") if p.name[len(name) + 1:-5].isdigit())
    if not (out.parent / name).exists() and len(reduced) > 1:
        raise RLKitError(f"reproduce preset {preset.name!r} fine-tunes {name!r}, but {out.parent} holds several "
                         f"reduced runs of it ({', '.join(p.name for p in reduced)}) and no {name}; move all but one")
    source = (out.parent / name if (out.parent / name).exists() or not reduced else reduced[0]) / f"seed_{seed}"
    if not (source / "final.json").exists():
        raise RLKitError(f"reproduce preset {preset.name!r} fine-tunes seed {seed} of {preset.init_from!r}, but "
                         f"{source} has not finished; run `rlkit reproduce {preset.init_from} --out {source.parent}` "
                         "first (with at least as many seeds)")
    return str(source.resolve())


def plan_jobs(pending: list[Job], workers: int, vectorise: bool) -> list[Job | JobGroup]:
    """The processes to run: with ``vectorise``, the seeds still to run split into (at most) one group per worker,
    as even in size as can be, fresh and resumed seeds in separate groups (``train_seeds`` resumes all its seeds
    or none); without, one job per seed. A group of one is a plain job."""
    if not vectorise or not pending:
        return list(pending)
    n_groups = min(workers, len(pending))
    parts = [part for part in ([j for j in pending if not j.resume], [j for j in pending if j.resume]) if part]
    if len(parts) == 2:  # groups in proportion to each part's seeds, at least one each
        resumed = min(max(1, round(n_groups * len(parts[1]) / len(pending))), max(n_groups - 1, 1))
        counts = [max(n_groups - resumed, 1), resumed]
    else:
        counts = [n_groups]
    groups = [group for part, count in zip(parts, counts) for group in _split(part, count)]
    return [group[0] if len(group) == 1 else JobGroup(group) for group in groups]


def _split(items: list[Job], count: int) -> list[list[Job]]:
    """``items`` in ``count`` consecutive slices whose sizes differ by one at most (the first ones larger)."""
    size, extra = divmod(len(items), count)
    bounds = [i * size + min(i, extra) for i in range(count + 1)]
    return [items[lo:hi] for lo, hi in zip(bounds, bounds[1:]) if hi > lo]


PROCESSES_FILE = "processes.json"


def _record_processes(out: Path, jobs: list[Job | JobGroup]) -> dict[int, dict[str, Any]]:
    """How each seed ran: ``{seed: {"vectorised", "seeds_in_process"}}``, for the seeds of ``jobs`` and, from
    DIR/processes.json, for the seeds an earlier invocation ran (the process that ran a seed last; a seed that
    finished before this file existed has none). Saved before the jobs start, so an interruption keeps it."""
    from rlkit.checkpoint import atomic_write_text

    path = out / PROCESSES_FILE
    try:
        known = json.loads(path.read_text()) if path.exists() else {}
    except (ValueError, UnicodeDecodeError):
        known = {}  # damaged: written again below, for the seeds that run now
    processes = {int(k): v for k, v in known.items() if k.isdigit() and isinstance(v, dict)} \
        if isinstance(known, dict) else {}
    for job in jobs:
        runs = members(job)
        for run in runs:
            processes[int(run.key.split()[1])] = {"vectorised": len(runs) > 1, "seeds_in_process": len(runs)}
    if jobs:
        atomic_write_text(path, json.dumps({str(k): v for k, v in sorted(processes.items())}, indent=2))
    return processes


def _announce(preset: ReproducePreset, base: BaseConfig, jobs: list[Job | JobGroup], backend: str, workers: int,
              ray_address: str | None) -> None:
    """One line on stderr: how many seeds run, how long, where, and how many share each process."""
    if not jobs:
        return
    where = f"Ray ({ray_address or os.environ.get('RAY_ADDRESS') or f'local, {workers} CPUs'})" \
        if backend == "ray" else f"{min(workers, len(jobs))} processes"
    length = f"{base.total_steps} steps" if base.total_steps else "the agent preset's schedule"
    sizes = [len(members(j)) for j in jobs]
    how = f" (vectorised: {' + '.join(map(str, sizes))} seeds per process)" if max(sizes) > 1 else ""
    print(f"{preset.name}: running {sum(sizes)} seeds x {length} on {where}{how}", file=sys.stderr)


RANDOM_EPISODES = 100


def score_range(preset: ReproducePreset, out: Path, cfg: BaseConfig, final: dict[str, Any]) -> dict[str, Any]:
    """The returns that normalisation maps to 0 (a uniform-random policy) and 1 (the expert).

    ``random: measure`` evaluates a seeded uniform-random policy for :data:`RANDOM_EPISODES` episodes on the env
    the seeds were evaluated on (``eval_env_id`` for imitation agents), from the same evaluation seed stream;
    ``expert: demos`` is the final evaluation of the expert that recorded the demonstrations (``OUT/demos.json``).
    """
    from rlkit.evaluation import evaluate
    from rlkit.policy import RandomPolicy
    from rlkit.registry import eval_env_factory

    spec = preset.normalise or {}
    env_id = final.get("eval_env_id") or final["env_id"]
    if spec["random"] == "dataset":  # an offline preset: its dataset's reference scores (rlkit offline-data)
        ref = json.loads((Path(str(cfg.demos)) / "manifest.json").read_text())["reference_scores"]
        return {"random": float(ref["ref_min_score"]), "expert": float(ref["ref_max_score"]), "env_id": env_id,
                "random_source": f"the dataset's ref_min_score: a uniform-random policy, {ref['episodes']} episodes",
                "expert_source": f"the dataset's ref_max_score: its expert, {ref['episodes']} episodes; D4RL's "
                                 "normalised score is 100 times the normalised return"}
    if spec["random"] == "measure":
        make_env = eval_env_factory(cfg, env_id)
        probe = make_env()
        space = probe.action_space
        probe.close()
        random = evaluate(RandomPolicy(space, seed=cfg.eval_seed), make_env, RANDOM_EPISODES, seed=cfg.eval_seed,
                          deterministic=False)["mean"]
        random_source = f"measured: a uniform-random policy, {RANDOM_EPISODES} episodes on {env_id}"
    else:
        random, random_source = float(spec["random"]), "given in the preset"
    if spec["expert"] == "demos":
        expert = float(json.loads((out / "demos.json").read_text())["expert_eval"]["mean"])
        expert_source = spec.get("expert_source") or "the demonstrations' expert: its final evaluation in demos.json"
    else:
        expert, expert_source = float(spec["expert"]), spec.get("expert_source") or "given in the preset"
    if expert == random:
        raise RLKitError(f"cannot normalise {preset.name}: the expert's return equals the random policy's ({expert})")
    return {"random": float(random), "random_source": random_source, "expert": expert,
            "expert_source": expert_source, "env_id": env_id}


def normalised(score: float, normaliser: dict[str, Any]) -> float:
    """(R - R_random) / (R_expert - R_random): 0 is the random policy, 1 the expert."""
    return (score - normaliser["random"]) / (normaliser["expert"] - normaliser["random"])


def eval_curve(run_dir: Path) -> list[list[float]]:
    """A seed's evaluation curve, [[env step, mean return], ...] from its metrics.csv, or from final.json's
    ``eval_curve`` where metrics.csv is gone; [] where it has none (a run without evaluations, or a seed finished
    before final.json kept its curve and whose metrics.csv is gone)."""
    try:
        curve = reports.load_curve(run_dir, "eval")
    except RLKitError:
        return []
    return [[int(step), float(value)] for step, value in zip(curve.steps, curve.values)]


def returns_at(steps: int, curves: list[list[list[float]]]) -> dict[str, Any] | None:
    """Each seed's return at ``steps`` (its last evaluation at or before it) and their aggregate; None unless
    every seed has one and trained that far (a reference past the budget is not set beside the final return)."""
    values = [next((v for s, v in reversed(curve) if s <= steps), None) if curve and curve[-1][0] >= steps
              else None for curve in curves]
    if not values or any(v is None for v in values):
        return None
    return {"steps": steps, "per_seed": values, "aggregate": reports.summarize(values)}


def per_task_results(finals: list[dict[str, Any]]) -> dict[str, Any]:
    """Where every seed's final evaluation has ``per_task`` returns of the same tasks, more than one (a multi-task
    suite; a held-out context shows one task's id and is one task): each task's returns over seeds with their
    aggregate, and the aggregate over tasks x seeds (IQM pooled; CIs resampling seeds within each task, the tasks
    being the bootstrap's strata). Empty otherwise."""
    per_task = [f["eval"].get("per_task") for f in finals]
    if not per_task or any(not p for p in per_task) or any(list(p) != list(per_task[0]) for p in per_task) \
            or len(per_task[0]) < 2:
        return {}
    tasks = list(per_task[0])
    table = [[p[k] for k in tasks] for p in per_task]  # (seeds, tasks)
    return {"per_task": {k: {"per_seed": [row[i] for row in table], "aggregate": reports.summarize([row[i] for row
                                                                                                    in table])}
                         for i, k in enumerate(tasks)},
            "tasks_aggregate": reports.summarize(table)}


def steps_to_threshold(threshold: float, curves: list[list[list[float]]], total_steps: int) -> dict[str, Any]:
    """Each seed's env steps to its first evaluation at or above ``threshold`` (None: never), and their aggregate
    with a seed that never reached it counted as ``total_steps`` (so that mean is a lower bound)."""
    steps = [next((int(s) for s, v in curve if v >= threshold), None) for curve in curves]
    censored = [total_steps if s is None else s for s in steps]
    return {"value": threshold, "per_seed": steps, "reached": sum(s is not None for s in steps),
            "aggregate": reports.summarize(censored) if censored else None}


def build_results(preset: ReproducePreset, cfg: BaseConfig, finals: list[dict[str, Any]], backend: str,
                  ran: list[int], wall_s: float, normaliser: dict[str, Any] | None = None,
                  processes: dict[int, dict[str, Any]] | None = None,
                  curves: list[list[list[float]]] | None = None) -> dict[str, Any]:
    """The results.json dict: per-seed finals (with how each seed's process ran, from ``processes``: vectorised
    or not, and how many seeds shared it; None where unknown), aggregates with CIs, the reference comparison,
    rlkit's returns at the steps of the preset's ``also`` references (from each seed's evaluation curve in
    ``curves``), and (when the preset says how) normalised returns and the learned reward's correlation with the
    true one."""
    processes = processes or {}
    scores = [f["eval"]["mean"] for f in finals]
    summary = reports.summarize(scores)
    total, budget = cfg.total_steps, preset.budget
    full = None if budget is None else total >= budget
    if budget is None:
        per_seed = f" ({total:,} steps per seed)" if total else ""
        label = f"No published budget: the agent preset's settings{per_seed}."
    elif full:
        label = f"Full budget: {total:,} steps per seed (the reference's budget is {budget:,})."
    else:
        label = f"Reduced budget: {total:,} of {budget:,} steps, not a reproduction."
    results = {
        "schema": RESULTS_SCHEMA,
        "preset": preset.name,
        "agent": preset.agent,
        "agent_preset": preset.preset,
        "env_id": finals[0]["env_id"],
        "backend": backend,
        "seeds": [f["seed"] for f in finals],
        "total_steps": total,
        "budget": budget,
        "full_budget": full,
        "label": label,
        "per_seed": [{"seed": f["seed"], "return": f["eval"]["mean"], "std": f["eval"]["std"],
                      "episodes": f["eval"]["episodes"], "env_steps": _steps(preset, f), "wall_s": f["wall_s"],
                      "run_dir": f"seed_{f['seed']}",  # relative: DIR may move
                      "stopped": (f.get("stopped") or {}).get("reason"),  # an early stop: target_return, ...
                      "vectorised": processes.get(f["seed"], {}).get("vectorised"),
                      "seeds_in_process": processes.get(f["seed"], {}).get("seeds_in_process"),
                      "curve": (curves or [[]] * len(finals))[i]} for i, f in enumerate(finals)],
        "aggregate": summary,
        "reference": preset.reference,
        "also": preset.also,
        "at_steps": [dict(at, reference=entry) for entry in preset.also if entry.get("steps")
                     and (at := returns_at(int(entry["steps"]), curves or [])) is not None],
        "comparison": reports.compare_to_reference(summary, preset.reference),
        "note": preset.note,
        "ran_seeds": ran,
        "skipped_seeds": [f["seed"] for f in finals if f["seed"] not in ran],
        "wall_s": round(wall_s, 1),
        "report": "report.md",
        "plot": None,
        "versions": finals[0].get("versions", {}),
    }
    if normaliser is not None:
        norm = [normalised(x, normaliser) for x in scores]
        for row, value in zip(results["per_seed"], norm):
            row["normalised"] = value
        results["normalised"] = {**normaliser, "aggregate": reports.summarize(norm)}
    results.update(per_task_results(finals))
    if preset.threshold is not None:
        results["threshold"] = steps_to_threshold(float(preset.threshold), curves or [], total)
        for row, steps in zip(results["per_seed"], results["threshold"]["per_seed"]):
            row["steps_to_threshold"] = steps
    pearson = [(f.get("reward_correlation") or {}).get("pearson") for f in finals]
    if any(p is not None for p in pearson):  # preference learning: how well the learned reward follows the true one
        for row, f, p in zip(results["per_seed"], finals, pearson):
            row["reward_pearson"], row["reward_spearman"] = p, f["reward_correlation"].get("spearman")
        known = [p for p in pearson if p is not None]
        results["reward_correlation"] = {"pearson": reports.summarize(known), "seeds_with_value": len(known)}
    return results


def _steps(preset: ReproducePreset, final: dict[str, Any]) -> int:
    """A seed's steps for the report: env steps, but an offline preset's gradient steps (it steps no env while it
    trains, so its final.json says env_steps 0 and the report would read every seed as stopped early)."""
    return int(final.get("gradient_steps", 0)) if preset.offline_data else final["env_steps"]


def write_outputs(out: Path, preset: ReproducePreset, results: dict[str, Any]) -> None:
    """curves.png (when the runs logged curves), report.md and results.json."""
    from rlkit.checkpoint import atomic_write_text

    curves, missing, plot_note = [], [], ""
    for r in results["per_seed"]:
        if r.get("curve"):  # its evaluation curve, read once for results.json
            curves.append(reports.Curve.from_points(r["curve"], reports.EVAL_KEY, str(out / r["run_dir"])))
            continue
        try:  # a run without evaluations: its training curve
            curves.append(reports.load_curve(out / r["run_dir"]))
        except RLKitError as e:
            missing.append((r["seed"], str(e).split("; ")[0]))  # the reason, not the hint for `rlkit plot`
    if missing:  # a seed finished before final.json kept its curve, and its metrics.csv is gone
        seeds = ", ".join(str(seed) for seed, _ in missing)
        plot_note = (f"No curve for seed{'s' * (len(missing) > 1)} {seeds} ({missing[0][1]})"
                     + (f"; the plot shows the other {len(curves)}." if curves else "."))
    if curves:
        n = len(curves)
        of_all = f" of {len(results['per_seed'])}" if missing else ""
        title = (f"{preset.name}: {results['agent']} on {results['env_id']}, {n}{of_all} seed{'s' * (n > 1)}"
                 f"{'' if results['full_budget'] in (True, None) else ' (reduced budget)'}")
        ylabel = "eval return" if curves[0].metric == reports.EVAL_KEY else "training episode return"
        reports.plot_curves([(preset.name, curves)], out / "curves.png", reference=preset.reference, title=title,
                            ylabel=ylabel)
        results["plot"] = "curves.png"
    atomic_write_text(out / "report.md", reports.reproduction_report(results, plot_note))
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
