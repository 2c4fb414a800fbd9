"""Many seeds in one process against the same seeds one process each, on the same core, with the same code.

Tasks (bench_sbx.py's settings: rlkit's preset, the Zoo's budget, evaluation and early stop off, only the final
checkpoint, run directories on tmpfs):

    dqn-cartpole     DQN CartPole-v1, 50k steps, [256, 256] (128 gradient steps every 256 env steps)
    dqn-cartpole-64  the same with hidden=[64, 64]: a small network, where per-op overhead is most of an update
    td3-pendulum     TD3 Pendulum-v1, 20k steps: seeds in lockstep, each updating alone (TD3 has no stacked path)

Arms, per task: ``together`` trains all ``--seeds`` in one process (``registry.train_seeds``: DQN's stacked
update and acting); ``alone`` trains each seed in its own process, one after another. Every process is pinned to
one core (``taskset``) with one thread; both arms of a task run on the same core, one after the other (with
``--cores 0,1`` two tasks run at once, one per core). Per arm it records ``train_wall_s`` / ``train_cpu_s``
(training only: after the imports, less rlkit's final evaluations, summed over the seeds for ``alone``) and
``process_cpu_s`` (the whole processes), each seed's final greedy return (rlkit's final evaluation: 20 episodes,
seeds 10000+), and their mean with a 95% CI (Student t). The ratio ``together / alone`` is the issue's target
(at most 0.6). The FLOP floor of each DQN task: FLOPs per update from the network's shapes (online and target
forwards, backward), this core's matmul rate at the hidden width, and the fraction of the floor reached.

    python benchmarks/bench_seeds.py --tasks dqn-cartpole,dqn-cartpole-64 --seeds 0-4 --cores 0,1
    python benchmarks/bench_seeds.py --table      # the Markdown table of the JSON
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_sbx  # noqa: E402  (its task settings, thread pins, git export)

ROOT = Path(__file__).resolve().parents[1]
TASKS = {
    "dqn-cartpole": {**bench_sbx.TASKS["dqn-cartpole"]},
    "dqn-cartpole-64": {**bench_sbx.TASKS["dqn-cartpole"],
                        "rlkit": {**bench_sbx.TASKS["dqn-cartpole"]["rlkit"], "hidden": [64, 64]}},
    "td3-pendulum": {**bench_sbx.TASKS["td3-pendulum"]},
}
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


# ---------------------------------------------------------------------------------------------- worker side
def configs(task: dict, seeds: list[int], run_root: str) -> list:
    return [bench_sbx.rlkit_config(task, seed, tempfile.mkdtemp(prefix=f"bench-seeds-{seed}-", dir=run_root))
            for seed in seeds]


def worker(task_name: str, seeds: list[int], result_path: str, run_root: str) -> None:
    import torch

    torch.set_num_threads(1)
    from rlkit.registry import get_agent, train_seeds

    task = TASKS[task_name]
    spec = get_agent(task["algo"])
    bench_sbx.warm_up_torch()
    cfgs = configs(task, seeds, run_root)
    results, wall, cpu = bench_sbx.without_evaluations(lambda: train_seeds(spec, cfgs))
    out = {"train_wall_s": wall, "train_cpu_s": cpu, "returns": [r["eval"]["mean"] for r in results],
           "seeds": seeds, "updates_per_seed": updates(cfgs[0])}
    if task["algo"] == "dqn":
        out["gflops"] = bench_sbx.matmul_rate(max(cfgs[0].hidden), max(cfgs[0].hidden), cfgs[0].batch_size)
    Path(result_path).write_text(json.dumps(out))


def updates(cfg) -> int:
    """Gradient steps one seed takes (the engine's counting: rounds after learning_starts, every train_every)."""
    if not hasattr(cfg, "train_every") or cfg.train_every <= 0:
        return 0
    rounds = sum(1 for step in range(cfg.learning_starts + 1, cfg.total_steps + 1) if step % cfg.train_every == 0)
    return rounds * cfg.gradient_steps


def dqn_flops(task: dict) -> int:
    """FLOPs of one DQN gradient step (bench_sbx's count): the online and target forwards (and the online one
    over next_obs for Double DQN), and the backward."""
    cfg = bench_sbx.rlkit_config(task, 0, None)
    sizes = [4, *cfg.hidden, 2]  # CartPole
    forward = bench_sbx.forward_flops(sizes, cfg.batch_size)
    return (3 if cfg.double else 2) * forward + bench_sbx.backward_flops(sizes, cfg.batch_size)


# ---------------------------------------------------------------------------------------------- driver side
def run_arm(task: str, seeds: list[int], core: str, logdir: Path, run_root: str, rlkit_path: str | None) -> dict:
    """One process for ``seeds`` on ``core``; returns its result with the process's rusage CPU seconds."""
    tag = f"{task}-{'_'.join(map(str, seeds))}"
    result = logdir / f"{tag}.json"
    cmd = ["taskset", "-c", core, sys.executable, str(Path(__file__).resolve()), "--worker", task,
           ",".join(map(str, seeds)), "--result", str(result), "--run-root", run_root,
           "--steps", str(TASKS[task]["steps"])]
    env = {**os.environ, **bench_sbx.THREAD_ENV}
    env.pop("PYTHONPATH", None)
    if rlkit_path:
        env["PYTHONPATH"] = rlkit_path
    with open(logdir / f"{tag}.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tempfile.gettempdir())
        _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise RuntimeError(f"{tag} failed:\n{(logdir / f'{tag}.log').read_text()[-3000:]}")
    return {**json.loads(result.read_text()), "process_cpu_s": usage.ru_utime + usage.ru_stime}


def run_task(task: str, seeds: list[int], core: str, logdir: Path, run_root: str, rlkit_path: str | None) -> dict:
    """Both arms of ``task`` on ``core``: the seeds together in one process, then each alone."""
    together = run_arm(task, seeds, core, logdir, run_root, rlkit_path)
    alone_runs = [run_arm(task, [seed], core, logdir, run_root, rlkit_path) for seed in seeds]
    alone = {key: sum(r[key] for r in alone_runs) for key in ("train_wall_s", "train_cpu_s", "process_cpu_s")}
    alone["returns"] = [r["returns"][0] for r in alone_runs]
    alone["per_seed_train_wall_s"] = [r["train_wall_s"] for r in alone_runs]
    out = {"task": task, "seeds": seeds, "core": core, "together": together, "alone": alone,
           "updates_per_seed": together["updates_per_seed"]}
    for arm in ("together", "alone"):
        out[arm].update(mean_ci(out[arm]["returns"]))
    out["ratio_wall"] = together["train_wall_s"] / alone["train_wall_s"]
    out["ratio_cpu"] = together["train_cpu_s"] / alone["train_cpu_s"]
    low, high = out["alone"]["ci95"]
    out["together_mean_inside_alone_ci"] = low <= out["together"]["mean"] <= high
    if TASKS[task]["algo"] == "dqn":
        flops = dqn_flops(TASKS[task])
        floor_s = flops * out["updates_per_seed"] * len(seeds) / (together["gflops"] * 1e9)
        out["floor"] = {"flops_per_update": flops, "matmul_gflops": together["gflops"], "updates_floor_s": floor_s,
                        "fraction_of_floor_together": floor_s / together["train_wall_s"],
                        "fraction_of_floor_alone": floor_s / alone["train_wall_s"]}
    return out


def mean_ci(values: list[float]) -> dict:
    mean = statistics.fmean(values)
    half = T_975.get(len(values) - 1, 1.96) * statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0
    return {"mean": mean, "ci95": [mean - half, mean + half]}


def parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        seeds += list(range(int(first), int(last or first) + 1))
    return seeds


def markdown_table(results: dict) -> str:
    lines = ["| task | seeds | together: wall s (CPU s) | alone, summed: wall s (CPU s) | together / alone wall (CPU) "
             "| return together | return alone (95% CI) | floor reached |", "|---|---|---|---|---|---|---|---|"]
    for r in results["tasks"].values():
        t, a = r["together"], r["alone"]
        floor = f"{r['floor']['fraction_of_floor_together']:.0%} / {r['floor']['fraction_of_floor_alone']:.0%}" \
            if "floor" in r else "—"
        lines.append(f"| {r['task']} | {len(r['seeds'])} | {t['train_wall_s']:.1f} ({t['train_cpu_s']:.1f}) | "
                     f"{a['train_wall_s']:.1f} ({a['train_cpu_s']:.1f}) | **{r['ratio_wall']:.2f}×** "
                     f"({r['ratio_cpu']:.2f}×) | {t['mean']:.1f} | {a['mean']:.1f} ({a['ci95'][0]:.1f} to "
                     f"{a['ci95'][1]:.1f}) | {floor} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="dqn-cartpole,dqn-cartpole-64", help=f"of {', '.join(TASKS)}")
    parser.add_argument("--seeds", default="0-4", help="e.g. 0-4 or 0,1,2")
    parser.add_argument("--cores", default="0", help="comma-separated; one task per core at a time")
    parser.add_argument("--run-root", default="/dev/shm" if Path("/dev/shm").is_dir() else tempfile.gettempdir())
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "seeds.json"))
    parser.add_argument("--steps", type=int, help="override every task's env steps (a quick check of the script)")
    parser.add_argument("--rlkit-ref", default="HEAD", help="the commit to run (git archive); 'worktree': as is")
    parser.add_argument("--merge", action="store_true", help="keep the tasks in --out that this call does not redo")
    parser.add_argument("--table", action="store_true", help="print the Markdown table of --out and exit")
    parser.add_argument("--worker", nargs=2, metavar=("TASK", "SEEDS"), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps:
        for task in TASKS.values():
            task["steps"] = args.steps
    if args.worker:
        return worker(args.worker[0], parse_seeds(args.worker[1]), args.result, args.run_root)
    if args.table:
        return print(markdown_table(json.loads(Path(args.out).read_text())))
    from concurrent.futures import ThreadPoolExecutor

    tasks, seeds, cores = args.tasks.split(","), parse_seeds(args.seeds), args.cores.split(",")
    rlkit_path, commit = bench_sbx.export_rlkit(args.rlkit_ref)
    logdir = Path(tempfile.mkdtemp(prefix="bench-seeds-logs-"))
    previous = json.loads(Path(args.out).read_text())["tasks"] if args.merge and Path(args.out).exists() else {}
    results = {"rlkit_commit": commit, "git": bench_sbx.git_state(), "machine": platform.machine(),
               "cpus": os.cpu_count(), "loadavg_before": bench_sbx.loadavg(), "tasks": dict(previous)}
    print(f"{len(tasks)} tasks x (1 + {len(seeds)}) processes on cores {cores}; logs in {logdir}", flush=True)
    queues = {core: tasks[i::len(cores)] for i, core in enumerate(cores)}  # each core runs its tasks in turn

    def run_queue(core: str) -> None:
        for task in queues[core]:
            results["tasks"][task] = r = run_task(task, seeds, core, logdir, args.run_root, rlkit_path)
            print(f"{task}: together {r['together']['train_wall_s']:.1f} s, alone {r['alone']['train_wall_s']:.1f} s"
                  f" -> {r['ratio_wall']:.2f}x wall, {r['ratio_cpu']:.2f}x CPU; returns {r['together']['mean']:.1f}"
                  f" vs {r['alone']['mean']:.1f} {r['alone']['ci95']}", flush=True)
            Path(args.out).write_text(json.dumps(results, indent=1))

    with ThreadPoolExecutor(len(cores)) as pool:
        for future in [pool.submit(run_queue, core) for core in cores]:
            future.result()
    results["loadavg_after"] = bench_sbx.loadavg()
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(markdown_table(results))


if __name__ == "__main__":
    main()
