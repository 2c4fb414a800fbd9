"""A2C and A3C against SB3's A2C on CartPole-v1, side by side in one run, seeds interleaved.

Measures, per seed:
  * throughput (env steps/s, no evaluation): rlkit A3C with 1 and 2 workers, rlkit A2C (8 envs),
    SB3 A2C (8 envs, the same hyper-parameters);
  * wall time and env steps until a 10-episode deterministic evaluation, run every ``--eval-every``
    steps, reaches 475: rlkit A3C (2 workers, cartpole preset), rlkit A2C (cartpole preset), SB3 A2C
    (RL-Zoo settings = the rlkit A2C preset), each stopping at the first passing evaluation.

Every process uses one torch thread; the A3C workers are one process each. The order of the
algorithms rotates from seed to seed so that slow phases of a shared machine hit all of them. The
load average before and after each run is recorded, because throughput on a shared machine is noisy.

Run: ``python benchmarks/bench_a2c_a3c.py --seeds 5`` (writes benchmarks/results/bench_a2c_a3c.json).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

THRESHOLD = 475.0
EVAL_EPISODES = 10


def rlkit_run(agent: str, seed: int, overrides: dict[str, Any], tmp: Path) -> dict[str, Any]:
    from rlkit.agents import a2c, a3c

    from rlkit.config import apply_overrides, resolve_preset

    spec = a2c.AGENT if agent == "a2c" else a3c.AGENT
    cfg = apply_overrides(spec.config_cls(), resolve_preset(spec.presets(), "cartpole", agent))
    common = {"seed": seed, "progress": False, "tensorboard": False, "checkpoint_every": 0, "eval_episodes": 2,
              "run_dir": str(tmp / f"{agent}-{seed}-{time.time_ns()}")}
    cfg = apply_overrides(cfg, {**common, **overrides})
    t0 = time.perf_counter()
    result = spec.train(cfg)
    return {"result": result, "wall_s": time.perf_counter() - t0}


def sb3_run(seed: int, total_steps: int, eval_every: int | None) -> dict[str, Any]:
    """SB3 A2C with RL-Zoo's CartPole settings (8 envs, n_steps 5, lr 7e-4, ent 0, separate value MLP)."""
    from stable_baselines3 import A2C
    from stable_baselines3.common.callbacks import EvalCallback, StopTrainingOnRewardThreshold
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.monitor import Monitor

    from rlkit import envs

    vec = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
    model = A2C("MlpPolicy", vec, seed=seed, device="cpu", n_steps=5, learning_rate=7e-4, ent_coef=0.0, verbose=0)
    reached: dict[str, Any] = {}

    class StopAndMark(StopTrainingOnRewardThreshold):
        def _on_step(self) -> bool:
            keep_going = super()._on_step()
            if not keep_going:
                reached.update(env_steps=self.num_timesteps, wall_s=time.perf_counter() - t0)
            return keep_going

    callback = None
    if eval_every:
        callback = EvalCallback(Monitor(envs.make_env("CartPole-v1")), eval_freq=eval_every // 8,
                                n_eval_episodes=EVAL_EPISODES, callback_on_new_best=StopAndMark(THRESHOLD), verbose=0)
    # Timed from here, like rlkit's Run clock (which starts after its envs exist).
    t0 = time.perf_counter()
    model.learn(total_steps, callback=callback)
    return {"env_steps": model.num_timesteps, "wall_s": time.perf_counter() - t0,
            "target_reached": reached or None}


def _spin(seconds: float, out: Any) -> None:
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        for _ in range(10_000):
            n += 1
    out.put(n)


def cpu_scaling_reference(seconds: float = 2.0) -> float:
    """Pure-Python busy work in 2 processes over 1: the most any 2-process program could scale right now."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    work = []
    for n in (1, 2):
        out = ctx.SimpleQueue()
        procs = [ctx.Process(target=_spin, args=(seconds, out)) for _ in range(n)]
        for p in procs:
            p.start()
        work.append(sum(out.get() for _ in procs))
        for p in procs:
            p.join()
    return round(work[1] / work[0], 3)


def _cpu_s(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def throughput(name: str, seed: int, steps: int, tmp: Path) -> dict[str, Any]:
    """Steps/s, and steps per CPU-second of the workers (exited children) and of this process."""
    load = os.getloadavg()[0]
    children0, self0 = _cpu_s(resource.RUSAGE_CHILDREN), _cpu_s(resource.RUSAGE_SELF)
    if name == "sb3_a2c":
        out = sb3_run(seed, steps, None)
        env_steps, wall = out["env_steps"], out["wall_s"]
    else:
        agent, over = {"a3c_1": ("a3c", {"num_workers": 1}), "a3c_2": ("a3c", {"num_workers": 2}),
                       "a2c": ("a2c", {})}[name]
        out = rlkit_run(agent, seed, {**over, "total_steps": steps, "eval_every": 0, "target_return": None}, tmp)
        # training only: the result's wall_s stops before the final evaluation
        env_steps, wall = out["result"]["env_steps"], out["result"]["wall_s"]
    children, main = _cpu_s(resource.RUSAGE_CHILDREN) - children0, _cpu_s(resource.RUSAGE_SELF) - self0
    return {"algo": name, "seed": seed, "env_steps": env_steps, "wall_s": round(wall, 3),
            "steps_per_s": round(env_steps / wall, 1), "worker_cpu_s": round(children, 3),
            "main_cpu_s": round(main, 3),
            "steps_per_cpu_s": round(env_steps / (children + main), 1),
            "load_before": load, "load_after": os.getloadavg()[0]}


def time_to_threshold(name: str, seed: int, max_steps: int, eval_every: int, tmp: Path) -> dict[str, Any]:
    load = os.getloadavg()[0]
    if name == "sb3_a2c":
        out = sb3_run(seed, max_steps, eval_every)
        reached = out["target_reached"]
    else:
        agent, over = {"a3c_2": ("a3c", {"num_workers": 2}), "a2c": ("a2c", {})}[name]
        over = {**over, "total_steps": max_steps, "eval_every": eval_every, "eval_episodes": EVAL_EPISODES,
                "target_return": THRESHOLD}
        out = rlkit_run(agent, seed, over, tmp)
        stopped = out["result"].get("stopped")  # rlkit's target_return stop: {"global_step", "wall_s", ...}
        reached = {"env_steps": stopped["global_step"], "wall_s": stopped["wall_s"]} if stopped else None
    return {"algo": name, "seed": seed, "reached": reached is not None,
            "wall_s": round(reached["wall_s"], 3) if reached else None,
            "env_steps": reached["env_steps"] if reached else None,
            "load_before": load, "load_after": os.getloadavg()[0]}


def summarize(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    out = {}
    for algo in sorted({r["algo"] for r in rows}):
        values = [r[key] for r in rows if r["algo"] == algo and r.get(key) is not None]
        failed = sum(1 for r in rows if r["algo"] == algo and r.get(key) is None)
        out[algo] = {"median": statistics.median(values) if values else None,
                     "iqr": [float(np.percentile(values, 25)), float(np.percentile(values, 75))] if values else None,
                     "n": len(values), "not_reached": failed}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--throughput-steps", type=int, default=20_000)
    parser.add_argument("--max-steps", type=int, default=200_000, help="budget per time-to-475 run")
    parser.add_argument("--eval-every", type=int, default=5_000)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_a2c_a3c.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.time()
    tput_rows: list[dict[str, Any]] = []
    t475_rows: list[dict[str, Any]] = []
    machine_scaling: list[float] = []
    print(json.dumps({"pid": os.getpid()}), flush=True)
    tput_algos = ["a3c_1", "a3c_2", "a2c", "sb3_a2c"]
    t475_algos = ["a3c_2", "sb3_a2c", "a2c"]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        # Warm-up, discarded: the first run of each kind pays imports and first-touch costs.
        for name in tput_algos:
            throughput(name, 10_000, 2_000, tmp)
        for seed in range(args.seeds):
            machine_scaling.append(cpu_scaling_reference())
            print(json.dumps({"seed": seed, "cpu_scaling_reference": machine_scaling[-1]}), flush=True)
            shift = seed % len(tput_algos)
            for name in tput_algos[shift:] + tput_algos[:shift]:
                tput_rows.append(throughput(name, seed, args.throughput_steps, tmp))
                print(json.dumps(tput_rows[-1]), flush=True)
            shift = seed % len(t475_algos)
            for name in t475_algos[shift:] + t475_algos[:shift]:
                t475_rows.append(time_to_threshold(name, seed, args.max_steps, args.eval_every, tmp))
                print(json.dumps(t475_rows[-1]), flush=True)
    tput = summarize(tput_rows, "steps_per_s")
    scaling = [b["steps_per_s"] / a["steps_per_s"] for a in tput_rows if a["algo"] == "a3c_1"
               for b in tput_rows if b["algo"] == "a3c_2" and b["seed"] == a["seed"]]
    # CPU efficiency of 2 workers over 1 (steps per CPU-second, workers and main process together): 1.0 means
    # running two workers costs nothing extra, so on two free cores throughput doubles.
    efficiency = [b["steps_per_cpu_s"] / a["steps_per_cpu_s"] for a in tput_rows if a["algo"] == "a3c_1"
                  for b in tput_rows if b["algo"] == "a3c_2" and b["seed"] == a["seed"]]
    t475 = summarize(t475_rows, "wall_s")
    result = {
        "benchmark": "bench_a2c_a3c",
        "command": "python " + " ".join(sys.argv),
        "conditions": {"cpu_count": os.cpu_count(), "torch_threads": 1, "env": "CartPole-v1",
                       "threshold": THRESHOLD, "eval_episodes": EVAL_EPISODES, "eval_every": args.eval_every,
                       "throughput_steps": args.throughput_steps, "max_steps": args.max_steps,
                       "shared_machine_load_avg_at_start_and_end": None, "wall_s": None,
                       "note": "2 cores shared with other developers' jobs; see load_before/after per run"},
        "throughput_steps_per_s": tput,
        "a3c_scaling_1_to_2_workers": {"per_seed": [round(s, 3) for s in scaling],
                                       "median": round(statistics.median(scaling), 3) if scaling else None},
        "a3c_cpu_efficiency_2_over_1_worker": {
            "per_seed": [round(e, 3) for e in efficiency],
            "median": round(statistics.median(efficiency), 3) if efficiency else None},
        "steps_per_cpu_s": summarize(tput_rows, "steps_per_cpu_s"),
        # what 2 busy processes got over 1 on this machine just before each seed's runs (2.0 on idle cores)
        "cpu_scaling_reference_1_to_2_processes": {"per_seed": machine_scaling,
                                                    "median": statistics.median(machine_scaling)},
        "time_to_475_wall_s": t475,
        "steps_to_475": summarize(t475_rows, "env_steps"),
        "targets": {
            "a3c_2_faster_than_sb3_median": (t475["a3c_2"]["median"] is not None and t475["sb3_a2c"]["median"]
                                             is not None and t475["a3c_2"]["median"] < t475["sb3_a2c"]["median"]),
            "scaling_at_least_1.6": bool(scaling) and statistics.median(scaling) >= 1.6,
        },
        "runs": {"throughput": tput_rows, "time_to_475": t475_rows},
    }
    result["conditions"]["wall_s"] = round(time.time() - started, 1)
    loads = [r["load_before"] for r in tput_rows + t475_rows]
    result["conditions"]["shared_machine_load_avg_at_start_and_end"] = [loads[0], os.getloadavg()[0]]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("throughput_steps_per_s", "a3c_scaling_1_to_2_workers",
                                              "time_to_475_wall_s", "steps_to_475", "targets")}, indent=2))


if __name__ == "__main__":
    main()
