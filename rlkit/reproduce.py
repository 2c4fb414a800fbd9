"""``rlkit reproduce`` (multi-seed reproductions of published baselines) and ``rlkit plot``.

A reproduction preset (``agents/presets/reproduce.yaml``, or your own file with ``--presets``) names an
agent, that agent's preset, the budget at which the published number was measured and the number itself
with its source. ``reproduce`` trains one run per seed (``DIR/seed_S``) through the agent registry,
in parallel processes (or as Ray tasks), skips seeds that already finished so an interrupted
reproduction resumes, then writes ``DIR/results.json``, ``DIR/report.md`` and ``DIR/curves.png``.
The aggregates are rliable's (see :mod:`rlkit.reports`): mean and IQM with 95% stratified-bootstrap
confidence intervals. A run below the reference's budget is labelled as such, never as a reproduction.

Python use mirrors the command: ``reproduce("dqn-cartpole", seeds=5, out="repro/dqn")`` returns the
contents of results.json. Like any multiprocessing code, call it under ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import yaml

from rlkit import reports
from rlkit.config import BaseConfig, apply_overrides, resolve_preset
from rlkit.errors import RLKitError, missing_extra
from rlkit.registry import agent_names, get_agent

RESULTS_SCHEMA = 1
_PRESET_KEYS = {"agent", "preset", "seeds", "budget", "eval_points", "reference", "also", "overrides", "demos",
                "note"}


# ---------------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------------
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
    note: str = ""

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
        return preset


def default_presets_file() -> Path:
    """agents/presets/reproduce.yaml, found without importing the agents package (the core must not)."""
    spec = find_spec("agents")
    if spec is None or not spec.submodule_search_locations:
        raise RLKitError("the agents package is not installed, so rlkit has no reproduction presets; "
                         "pass --presets FILE")
    return Path(list(spec.submodule_search_locations)[0]) / "presets" / "reproduce.yaml"


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
        # Every evaluation must reach metrics.csv, so metrics are written at least as often.
        changes.update(eval_every=eval_every, log_every=min(cfg.log_every, eval_every))
    return apply_overrides(cfg, changes, source="reproduce")


# ---------------------------------------------------------------------------------------------
# Running jobs: one training run each, in worker processes or Ray tasks
# ---------------------------------------------------------------------------------------------
@dataclass
class Job:
    key: str  # "seed 3", "expert"
    agent: str
    config: dict[str, Any]
    resume: bool = False


_GATHERED_FILES = ("final.json", "config.json", "metrics.csv")


def run_job(agent: str, config: dict[str, Any], resume: bool = False, gather: bool = False) -> dict[str, Any]:
    """Train one run in this process and return its final.json (the worker function of both backends).

    With ``gather`` the small result files travel back too, so a run on another Ray node still lands
    in DIR on the driver's machine (checkpoints stay where the run ran unless DIR is shared storage).
    """
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    from rlkit.config import config_from_dict

    spec = get_agent(agent)
    result = spec.train(config_from_dict(spec.config_cls, config), resume=resume)
    if gather:
        run_dir = Path(result["run_dir"])
        result["_files"] = {name: (run_dir / name).read_text() for name in _GATHERED_FILES
                            if (run_dir / name).exists()}
    return result


def _worker_init() -> None:
    # Before torch is imported in the worker: one OpenMP/MKL thread per run.
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"


Report = Callable[[Job, dict[str, Any] | BaseException, int, int], None]


def run_local(jobs: list[Job], workers: int, report: Report) -> dict[str, dict[str, Any] | BaseException]:
    """Run jobs in ``workers`` fresh (spawned) processes; returns key -> result or the exception."""
    import multiprocessing

    outcomes: dict[str, dict[str, Any] | BaseException] = {}
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no inherited torch threads or seeds
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init) as pool:
        futures = {pool.submit(run_job, j.agent, j.config, j.resume): j for j in jobs}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    job = futures[fut]
                    exc = fut.exception()
                    outcomes[job.key] = exc if exc is not None else fut.result()
                    report(job, outcomes[job.key], len(outcomes), len(jobs))
        except KeyboardInterrupt:  # Ctrl-C reaches every process, SIGTERM only this one: pass it on to checkpoint
            for proc in list((getattr(pool, "_processes", None) or {}).values()):
                proc.terminate()
            raise
    return outcomes


def run_ray(jobs: list[Job], workers: int, report: Report, address: str | None = None
            ) -> dict[str, dict[str, Any] | BaseException]:
    """Run jobs as Ray tasks (one CPU each) on a local instance of ``workers`` CPUs or on a cluster."""
    try:
        import ray
    except ImportError:
        raise missing_extra("ray", "ray") from None
    started = not ray.is_initialized()
    if started:
        kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": False}
        address = address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=workers, **kwargs)
    outcomes: dict[str, dict[str, Any] | BaseException] = {}
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(run_job)
        refs = {task.remote(j.agent, j.config, j.resume, True): j for j in jobs}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                job = refs[ref]
                try:
                    result = ray.get(ref)
                    _write_gathered(Path(job.config["run_dir"]), result.pop("_files", {}))
                    outcomes[job.key] = result
                except Exception as e:  # RayTaskError wraps the task's own exception as .cause
                    outcomes[job.key] = getattr(e, "cause", None) or e
                report(job, outcomes[job.key], len(outcomes), len(jobs))
    finally:
        if started:
            ray.shutdown()
    return outcomes


def _write_gathered(run_dir: Path, files: dict[str, str]) -> None:
    """Write a remote run's result files where they are missing (on one machine they already exist)."""
    from rlkit.checkpoint import atomic_write_text

    for name, text in files.items():
        if not (run_dir / name).exists():
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / name, text)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _print_progress(job: Job, outcome: dict[str, Any] | BaseException, done: int, total: int) -> None:
    if isinstance(outcome, BaseException):
        print(f"[{done}/{total}] {job.key} failed: {type(outcome).__name__}: {outcome}", file=sys.stderr)
    else:
        ev = outcome["eval"]
        print(f"[{done}/{total}] {job.key} done: eval {ev['mean']:.1f} ± {ev['std']:.1f} "
              f"({outcome['env_steps']} steps, {outcome['wall_s']:.0f}s)", file=sys.stderr)


def _execute(jobs: list[Job], backend: str, workers: int, address: str | None, report: Report
             ) -> dict[str, dict[str, Any]]:
    if not jobs:
        return {}
    if backend == "ray":
        outcomes = run_ray(jobs, workers, report, address)
    else:
        outcomes = run_local(jobs, min(workers, len(jobs)), report)
    failed = {k: v for k, v in outcomes.items() if isinstance(v, BaseException)}
    if failed:
        key, exc = next(iter(failed.items()))
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise RLKitError(f"{len(failed)} of {len(jobs)} runs failed ({', '.join(failed)}); {key}: {message}; "
                         "completed runs are kept, rerun the same command to retry the rest")
    return outcomes  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# The reproduction
# ---------------------------------------------------------------------------------------------
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
    from rlkit.checkpoint import atomic_write_text

    path = out / "reproduce.json"
    if path.exists():
        old = json.loads(path.read_text())
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
        final = _execute([Job("expert", expert["agent"], cfg.to_dict(), resume)], backend, workers, address,
                         report)["expert"]
    demos_dir, marker = out / "demos", out / "demos.json"
    if not marker.exists():
        if demos_dir.exists():
            shutil.rmtree(demos_dir)  # an interrupted recording: record it again, whole
        cmd = [sys.executable, "-m", "rlkit.cli", "demos", "record", "--env", final["env_id"], "--policy",
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


def default_out(preset: ReproducePreset, steps: int | None) -> Path:
    reduced = steps is not None and steps != preset.budget
    return Path("reproductions") / (f"{preset.name}-{steps}steps" if reduced else preset.name)


def reproduce(preset_name: str, seeds: int | None = None, backend: str = "local", out: str | Path | None = None,
              steps: int | None = None, workers: int | None = None, ray_address: str | None = None,
              presets_file: str | Path | None = None, eval_points: int | None = None,
              report: Report = _print_progress) -> dict[str, Any]:
    """Run (or resume) a reproduction and write results.json, report.md and curves.png into ``out``.

    Args:
        preset_name: a reproduction preset (``rlkit reproduce`` lists them).
        seeds: number of seeds, 0..N-1; default the preset's.
        backend: ``local`` (worker processes) or ``ray`` (Ray tasks; extra ``rlkit[ray]``).
        out: output directory; default ``reproductions/PRESET`` (``...-Nsteps`` for other budgets).
        steps: env steps per seed; default the reference's budget.
        workers: runs at once; default the cores available (ray: the CPUs of the local instance).
        ray_address: an existing Ray cluster (default ``$RAY_ADDRESS``, else a local instance).
        presets_file: a YAML of your own reproduction presets.
        eval_points: evaluations during training (the learning-curve points); default the preset's.
        report: called after each run finishes (progress output).

    Returns:
        The contents of ``results.json``.
    """
    if backend not in ("local", "ray"):
        raise RLKitError(f"backend must be local or ray; got {backend!r}")
    preset = get_preset(preset_name, presets_file)
    n_seeds = preset.seeds if seeds is None else seeds
    if n_seeds < 1:
        raise RLKitError(f"--seeds must be at least 1; got {n_seeds}")
    workers = workers or available_cores()
    if workers < 1:
        raise RLKitError(f"--workers must be at least 1; got {workers}")
    out = Path(out) if out else default_out(preset, steps)
    base = build_config(preset, steps, eval_points)
    _check_manifest(out, {"preset": preset.name, "agent": preset.agent, "agent_preset": preset.preset,
                          "total_steps": base.total_steps, "budget": preset.budget})
    t0 = time.perf_counter()
    if preset.demos:
        base = apply_overrides(base, {"demos": _prepare_demos(preset, out, backend, workers, ray_address, report)},
                               source="reproduce demos")

    finals: dict[int, dict[str, Any]] = {}
    jobs: list[Job] = []
    for seed in range(n_seeds):
        run_dir = out / f"seed_{seed}"
        final, resume = _pending_or_done(run_dir)
        if final is not None:
            finals[seed] = final
            continue
        cfg = apply_overrides(base, {"seed": seed, "run_dir": str(run_dir.resolve())}, source="reproduce")
        jobs.append(Job(f"seed {seed}", preset.agent, cfg.to_dict(), resume))
    if finals:
        print(f"{len(finals)} of {n_seeds} seeds already done in {out}, skipping them: {sorted(finals)}",
              file=sys.stderr)
    if jobs:
        where = f"Ray ({ray_address or os.environ.get('RAY_ADDRESS') or f'local, {workers} CPUs'})" \
            if backend == "ray" else f"{min(workers, len(jobs))} processes"
        length = f"{base.total_steps} steps" if base.total_steps else "the agent preset's schedule"
        print(f"{preset.name}: running {len(jobs)} seeds x {length} on {where}", file=sys.stderr)
    for key, result in _execute(jobs, backend, workers, ray_address, report).items():
        finals[int(key.split()[1])] = result

    results = build_results(preset, base, [finals[s] for s in range(n_seeds)], backend,
                            ran=[int(j.key.split()[1]) for j in jobs], wall_s=time.perf_counter() - t0)
    results["out"] = str(out)
    results["command"] = " ".join(["rlkit reproduce", preset.name, f"--seeds {n_seeds}"]
                                  + ([f"--steps {steps}"] if steps else [])
                                  + ([f"--eval-points {eval_points}"] if eval_points else [])
                                  + ([f"--presets {presets_file}"] if presets_file else []) + [f"--out {out}"])
    write_outputs(out, preset, results)
    return results


def build_results(preset: ReproducePreset, cfg: BaseConfig, finals: list[dict[str, Any]], backend: str,
                  ran: list[int], wall_s: float) -> dict[str, Any]:
    """The results.json dict: per-seed finals, aggregates with CIs, and the reference comparison."""
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
    return {
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
                      "episodes": f["eval"]["episodes"], "env_steps": f["env_steps"], "wall_s": f["wall_s"],
                      "run_dir": f"seed_{f['seed']}"} for f in finals],  # relative: DIR may move
        "aggregate": summary,
        "reference": preset.reference,
        "also": preset.also,
        "comparison": reports.compare_to_reference(summary, preset.reference),
        "note": preset.note,
        "ran_seeds": ran,
        "skipped_seeds": [f["seed"] for f in finals if f["seed"] not in ran],
        "wall_s": round(wall_s, 1),
        "report": "report.md",
        "plot": None,
        "versions": finals[0].get("versions", {}),
    }


def write_outputs(out: Path, preset: ReproducePreset, results: dict[str, Any]) -> None:
    """curves.png (when the runs logged curves), report.md and results.json."""
    from rlkit.checkpoint import atomic_write_text

    curves, plot_note = [], ""
    try:
        curves = [reports.load_curve(out / r["run_dir"]) for r in results["per_seed"]]
    except RLKitError as e:
        plot_note = f"No learning-curve plot: {e}"
    if curves:
        n = len(curves)
        title = (f"{preset.name}: {results['agent']} on {results['env_id']}, {n} seed{'s' * (n > 1)}"
                 f"{'' if results['full_budget'] in (True, None) else ' (reduced budget)'}")
        ylabel = "eval return" if curves[0].metric == reports.EVAL_KEY else "training episode return"
        reports.plot_curves([(preset.name, curves)], out / "curves.png", reference=preset.reference, title=title,
                            ylabel=ylabel)
        results["plot"] = "curves.png"
    atomic_write_text(out / "report.md", render_report(results, plot_note))
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))


def _early_stop_note(results: dict[str, Any]) -> list[str]:
    """Runs that ended before their step budget (an agent's own early stop, e.g. ``target_return``)."""
    total = results["total_steps"]
    early = [r for r in results["per_seed"] if total and r["env_steps"] < total]
    if not early:
        return []
    steps = ", ".join(f"seed {r['seed']}: {r['env_steps']:,}" for r in early)
    return [f"{len(early)} of {len(results['per_seed'])} seeds stopped before {total:,} steps through the "
            f"agent's own early stop ({steps}).", ""]


def render_report(results: dict[str, Any], plot_note: str = "") -> str:
    s, ref = results["aggregate"], results["reference"]
    n = len(results["seeds"])
    lines = [f"# Reproduction: {results['preset']}", ""]
    if results["full_budget"] is False:
        lines += [f"> **{results['label']}** The comparison with the reference below is for orientation only.", ""]
    else:
        lines += [results["label"], ""]
    lines += [f"Agent `{results['agent']}` (preset `{results['agent_preset']}`) on `{results['env_id']}`, "
              f"{n} seeds ({', '.join(map(str, results['seeds']))}), backend `{results['backend']}`.",
              f"Command: `{results['command']}`", "",
              "## Final return per seed", "",
              "Each seed's deterministic evaluation after training (final.json).", "",
              reports.per_seed_table([{"seed": r["seed"], "eval": {"mean": r["return"], "std": r["std"],
                                                                  "episodes": r["episodes"]},
                                       "env_steps": r["env_steps"], "wall_s": r["wall_s"]}
                                      for r in results["per_seed"]]), "",
              "## Aggregate over seeds", "",
              reports.summary_table(s), "",
              *_early_stop_note(results),
              f"IQM: mean of the middle 50% of seeds (trims int(0.25·n) = {int(0.25 * n)} from each end). "
              f"CIs: percentile stratified bootstrap over seeds, {s['bootstrap_reps']:,} replicates, seed "
              f"{s['bootstrap_seed']} (Agarwal et al. 2021, rliable). With {n} seeds they are wide; "
              "read them as such.", "",
              "## Reference", ""]
    rows = [[ref.get("source", "—"), reports.format_reference(ref), reports.fmt(results["budget"])]]
    rows += [[r.get("source", "—"), reports.format_reference(r), reports.fmt(r.get("steps"))]
             for r in results["also"]]
    lines += [reports.markdown_table(["source", "score", "budget (steps)"], rows), ""]
    cmp_ = results["comparison"]
    if cmp_ is not None:
        lo, hi = cmp_["range"]
        verdict = f"rlkit's mean {reports.fmt(s['mean'])} (95% CI [{reports.fmt(s['mean_ci'][0])}, " \
                  f"{reports.fmt(s['mean_ci'][1])}]) against the reference range [{reports.fmt(lo)}, " \
                  f"{reports.fmt(hi)}]: {cmp_['verdict']}."
        if results["full_budget"] is False:
            verdict += " Reduced budget: this says nothing about the reproduction."
        lines += [verdict, ""]
    if results["note"]:
        lines += [f"Note: {results['note']}", ""]
    lines += ["## Learning curves", ""]
    if results["plot"]:
        lines += [f"![learning curves]({results['plot']})", "",
                  "Mean over seeds with a 95% bootstrap CI band; the dashed line is the reference.", ""]
    else:
        lines += [plot_note or "No learning-curve plot.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------
def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "reproduce", help="reproduce a published baseline over several seeds, with CIs and plots",
        description="Train PRESET's agent over N seeds (in parallel), skip seeds already done in OUT, and write "
                    "OUT/results.json, OUT/report.md (per-seed returns, mean and IQM with 95% stratified-"
                    "bootstrap CIs, the published reference and its source) and OUT/curves.png. Without PRESET, "
                    "list the presets.")
    p.add_argument("preset", nargs="?", help="reproduction preset (omit to list them)")
    p.add_argument("--seeds", type=int, help="number of seeds, run as seeds 0..N-1 (default: the preset's)")
    p.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="local worker processes, or Ray tasks (pip install 'rlkit[ray]')")
    p.add_argument("--out", help="output directory (default: reproductions/PRESET, or ...-Nsteps with --steps)")
    p.add_argument("--steps", type=int, help="env steps per seed (default: the reference's budget); "
                                             "fewer are labelled a reduced budget")
    p.add_argument("--workers", type=int, help="runs at once (default: the cores available; with --backend ray and "
                                               "no cluster, the CPUs of the local Ray instance)")
    p.add_argument("--ray-address", help="Ray cluster to join (default: $RAY_ADDRESS, else a local instance)")
    p.add_argument("--presets", help="YAML file of your own reproduction presets (default: rlkit's)")
    p.add_argument("--eval-points", type=int, help="evaluations during training, the learning-curve points "
                                                   "(default: the preset's); fewer make small budgets cheaper")
    p.add_argument("--json", action="store_true", help="print results.json to stdout")
    p.set_defaults(func=cmd_reproduce)


def cmd_reproduce(args: argparse.Namespace) -> int:
    if not args.preset:
        return _list_presets(args)
    from rlkit.signals import sigterm_as_interrupt

    with sigterm_as_interrupt():  # SIGTERM: every run checkpoints, then exit 143 (as Ctrl-C does, with 130)
        results = reproduce(args.preset, seeds=args.seeds, backend=args.backend, out=args.out, steps=args.steps,
                            workers=args.workers, ray_address=args.ray_address, presets_file=args.presets,
                            eval_points=args.eval_points)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    s = results["aggregate"]
    print(f"{results['preset']}: mean {reports.fmt(s['mean'])} [{reports.fmt(s['mean_ci'][0])}, "
          f"{reports.fmt(s['mean_ci'][1])}], IQM {reports.fmt(s['iqm'])} [{reports.fmt(s['iqm_ci'][0])}, "
          f"{reports.fmt(s['iqm_ci'][1])}] over {len(results['seeds'])} seeds; reference "
          f"{reports.format_reference(results['reference'])}. {results['label']}")
    print(f"report: {Path(results['out']) / 'report.md'}")
    return 0


def _list_presets(args: argparse.Namespace) -> int:
    presets, installed = load_presets(args.presets), set(agent_names())
    rows = [{"preset": p.name, "agent": p.agent, "installed": p.agent in installed, "seeds": p.seeds,
             "budget": p.budget, "reference": reports.format_reference(p.reference),
             "source": p.reference.get("source", "")} for p in presets.values()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(reports.markdown_table(["preset", "agent", "budget (steps)", "reference", "source"],
                                 [[r["preset"], r["agent"] + ("" if r["installed"] else " (not installed)"),
                                   reports.fmt(r["budget"]), r["reference"], r["source"]] for r in rows]))
    return 0


def add_plot_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "plot", help="overlay learning curves of runs or reproductions",
        description="Plot learning curves from run directories (metrics.csv). A reproduction directory (or any "
                    "directory of runs) becomes one mean curve with a 95% bootstrap CI band.")
    p.add_argument("paths", nargs="+", metavar="RUN_DIR", help="run directories or reproduction directories")
    p.add_argument("--out", default="curves.png", help="PNG file to write (default: curves.png)")
    p.add_argument("--label", action="append", help="legend label, once per RUN_DIR in order")
    p.add_argument("--metric", default="auto",
                   help="eval (eval/mean_return), train (charts/episode_return), auto, or any metrics.csv column")
    p.add_argument("--title", default="", help="plot title")
    p.add_argument("--reference", type=float, help="draw a reference score as a horizontal line")
    p.add_argument("--json", action="store_true", help="print what was plotted as JSON")
    p.set_defaults(func=cmd_plot)


def cmd_plot(args: argparse.Namespace) -> int:
    result = reports.plot_runs(args.paths, args.out, args.label, args.metric, args.title, args.reference)
    print(json.dumps(result, indent=2) if args.json else f"wrote {result['plot']}")
    return 0
