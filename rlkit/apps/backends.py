"""Execution backends: run training jobs in spawned worker processes or as Ray tasks.

A job is one run (:class:`Job`) or several seeds of one agent in one process (:class:`JobGroup`, trained by
:func:`rlkit.registry.train_seeds`: in lockstep where the agent offers it). Both backends take a list of jobs
and a progress callback and return ``key -> final.json dict`` (or the exception the run raised) for every
run, a group's seeds each under its own key; :func:`execute` picks one and turns failures into one
RLKitError. Each process gets one OpenMP/MKL/torch thread: the processes are the parallelism.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlkit.errors import RLKitError, missing_extra
from rlkit.registry import get_agent, train_seeds


@dataclass
class Job:
    key: str  # "seed 3", "expert"
    agent: str
    config: dict[str, Any]
    resume: bool = False


@dataclass
class JobGroup:
    """Several runs of one agent (its seeds) trained in one process by :func:`rlkit.registry.train_seeds`.

    All of them resume or none: ``train_seeds`` takes one ``resume`` for every config it trains.
    """

    jobs: list[Job]

    def __post_init__(self) -> None:
        if not self.jobs or len({(j.agent, j.resume) for j in self.jobs}) != 1:
            raise ValueError("a JobGroup needs at least one job, all of one agent and all resumed or all fresh")

    @property
    def key(self) -> str:
        return " + ".join(j.key for j in self.jobs)


def members(job: Job | JobGroup) -> list[Job]:
    """The runs of a job: itself, or a group's."""
    return job.jobs if isinstance(job, JobGroup) else [job]


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
    return _with_files(result) if gather else result


def run_group(agent: str, configs: list[dict[str, Any]], resume: bool = False, gather: bool = False
              ) -> list[dict[str, Any]]:
    """Train several runs of ``agent`` in this process with :func:`rlkit.registry.train_seeds`; their final.json
    dicts in the order of ``configs`` (the worker function of a :class:`JobGroup`, on both backends)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    from rlkit.config import config_from_dict

    spec = get_agent(agent)
    results = train_seeds(spec, [config_from_dict(spec.config_cls, c) for c in configs], resume=resume)
    return [_with_files(r) for r in results] if gather else results


def _with_files(result: dict[str, Any]) -> dict[str, Any]:
    run_dir = Path(result["run_dir"])
    result["_files"] = {name: (run_dir / name).read_text() for name in _GATHERED_FILES if (run_dir / name).exists()}
    return result


def _submit(submit: Callable[..., Any], job: Job | JobGroup, gather: bool) -> Any:
    """Start ``job`` through ``submit(fn, *args)`` (a pool's submit, a Ray task's remote)."""
    if isinstance(job, JobGroup):
        return submit(run_group, job.jobs[0].agent, [j.config for j in job.jobs], job.jobs[0].resume, gather)
    return submit(run_job, job.agent, job.config, job.resume, gather)


def _outcomes_of(job: Job | JobGroup, outcome: Any) -> list[tuple[Job, dict[str, Any] | BaseException]]:
    """Each run of ``job`` with its result: a group's list of results, or its one exception for every run."""
    runs = members(job)
    if isinstance(outcome, BaseException):
        return [(run, outcome) for run in runs]
    return list(zip(runs, outcome if isinstance(job, JobGroup) else [outcome]))


def _worker_init() -> None:
    # Before torch is imported in the worker: one OpenMP/MKL thread per run.
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"


Report = Callable[[Job, dict[str, Any] | BaseException, int, int], None]


def run_local(jobs: Sequence[Job | JobGroup], workers: int, report: Report
              ) -> dict[str, dict[str, Any] | BaseException]:
    """Run jobs in ``workers`` fresh (spawned) processes; returns each run's key -> result or the exception."""
    import multiprocessing

    outcomes: dict[str, dict[str, Any] | BaseException] = {}
    total = sum(len(members(j)) for j in jobs)
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no inherited torch threads or seeds
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init) as pool:
        futures = {_submit(pool.submit, j, False): j for j in jobs}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    exc = fut.exception()
                    for run, outcome in _outcomes_of(futures[fut], exc if exc is not None else fut.result()):
                        outcomes[run.key] = outcome
                        report(run, outcome, len(outcomes), total)
        except KeyboardInterrupt:
            # Ctrl-C reaches every process, SIGTERM only this one: drop the queued jobs and pass the signal on,
            # so that each running job checkpoints on its way out.
            processes = list((getattr(pool, "_processes", None) or {}).values())  # shutdown() forgets them
            pool.shutdown(wait=False, cancel_futures=True)
            _stop_processes(processes)
            raise
    return outcomes


def _stop_processes(processes: list[Any], timeout: float = 120.0) -> None:
    """SIGTERM each worker until it exits (SIGKILL after ``timeout``). One signal is not enough: a worker that
    has checkpointed and returned may already hold the next job from the pool's queue, and starts it."""
    deadline = time.monotonic() + timeout
    while any(p.is_alive() for p in processes) and time.monotonic() < deadline:
        for proc in processes:
            if proc.is_alive():
                proc.terminate()  # ignored while a checkpoint is being written (rlkit.signals.signals_deferred)
        time.sleep(0.5)
    for proc in processes:
        if proc.is_alive():
            proc.kill()


def run_ray(jobs: Sequence[Job | JobGroup], workers: int, report: Report, address: str | None = None
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
    total = sum(len(members(j)) for j in jobs)
    try:
        tasks = {fn: ray.remote(num_cpus=1, max_retries=0)(fn) for fn in (run_job, run_group)}
        refs = {_submit(lambda fn, *a: tasks[fn].remote(*a), j, True): j for j in jobs}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    outcome = ray.get(ref)
                except Exception as e:  # RayTaskError wraps the task's own exception as .cause
                    outcome = getattr(e, "cause", None) or e
                for run, result in _outcomes_of(refs[ref], outcome):
                    if not isinstance(result, BaseException):
                        _write_gathered(Path(run.config["run_dir"]), result.pop("_files", {}))
                    outcomes[run.key] = result
                    report(run, result, len(outcomes), total)
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


def print_progress(job: Job, outcome: dict[str, Any] | BaseException, done: int, total: int) -> None:
    if isinstance(outcome, BaseException):
        print(f"[{done}/{total}] {job.key} failed: {type(outcome).__name__}: {outcome}", file=sys.stderr)
    else:
        ev = outcome["eval"]
        # offline learners never step the env: their budget is gradient steps
        steps = f"{outcome['gradient_steps']} gradient steps" if not outcome["env_steps"] and \
            outcome.get("gradient_steps") else f"{outcome['env_steps']} steps"
        print(f"[{done}/{total}] {job.key} done: eval {ev['mean']:.1f} ± {ev['std']:.1f} "
              f"({steps}, {outcome['wall_s']:.0f}s)", file=sys.stderr)


def execute(jobs: Sequence[Job | JobGroup], backend: str, workers: int, address: str | None, report: Report
            ) -> dict[str, dict[str, Any]]:
    """Run ``jobs`` on ``backend``; every run's key -> its final.json dict, or one RLKitError naming the failed."""
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
        raise RLKitError(f"{len(failed)} of {len(outcomes)} runs failed ({', '.join(failed)}); {key}: {message}; "
                         "completed runs are kept, rerun the same command to retry the rest")
    return outcomes  # type: ignore[return-value]
