"""rlkit PPO/SAC against SB3 2.9 PPO/SAC with the RL-Zoo settings, side by side.

    ppo: rlkit's ``cartpole`` preset vs SB3 PPO with RL-Zoo's CartPole-v1 hyper-parameters (100k steps)
    sac: rlkit's ``pendulum`` preset vs SB3 SAC with RL-Zoo's Pendulum-v1 hyper-parameters (20k steps)

Each (library, algorithm, seed) run is a fresh subprocess with one torch thread (and one BLAS thread); the
runs are interleaved per seed and the order flips every seed, so machine noise hits both libraries alike.
Both sides are evaluated the same way during training (rlkit.evaluation.evaluate, 20 episodes, seeds 10000+,
every ``eval_every`` env steps) and at the end (20 episodes). The time spent in these evaluations is measured
and subtracted on both sides: ``wall_s`` / ``cpu_s`` are training only (rlkit: everything else a user's run
does, including CSV/TensorBoard logging and checkpoints; SB3: model construction + ``learn``).
``first_target_step`` is the first evaluation step whose mean reached the target (475 CartPole, -200 Pendulum).

    python benchmarks/bench_ppo_sac.py                         # full: 5 seeds each (about 1.5 h on one idle core)
    python benchmarks/bench_ppo_sac.py --algos ppo --seeds 2   # a quick look
The JSON (benchmarks/results/ppo_sac.json) is rewritten after every run, so a stopped benchmark keeps its rows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETUPS = {
    "ppo": {"env_id": "CartPole-v1", "preset": "cartpole", "steps": 100_000, "eval_every": 10_000, "target": 475.0,
            "zoo": {"n_envs": 8, "n_steps": 32, "batch_size": 256, "gae_lambda": 0.8, "gamma": 0.98, "n_epochs": 20,
                    "ent_coef": 0.0, "learning_rate": "lin_0.001", "clip_range": "lin_0.2"}},
    "sac": {"env_id": "Pendulum-v1", "preset": "pendulum", "steps": 20_000, "eval_every": 2_000, "target": -200.0,
            "zoo": {"learning_rate": 0.001}},
}
EVAL_EPISODES = 20


class EvalClock:
    """Times evaluations (wall and CPU) and records (step, mean) for those given a step."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self.step: int | None = None
        self.history: list[tuple[int, float]] = []

    def run(self, fn, *args, **kwargs) -> dict:
        w, c = time.perf_counter(), time.process_time()
        result = fn(*args, **kwargs)
        self.wall += time.perf_counter() - w
        self.cpu += time.process_time() - c
        if self.step is not None:
            self.history.append((self.step, result["mean"]))
            self.step = None
        return result


def run_rlkit(algo: str, seed: int, run_dir: str, clock: EvalClock) -> dict:
    import rlkit.run
    from rlkit.config import apply_overrides, resolve_preset
    from rlkit.registry import get_agent

    setup = SETUPS[algo]
    # Run.evaluate (periodic) and Run.finish (final) both call rlkit.run.evaluate: time it there.
    evaluate, periodic = rlkit.run.evaluate, rlkit.run.Run.evaluate
    rlkit.run.evaluate = lambda *a, **k: clock.run(evaluate, *a, **k)

    def timed_periodic(self, policy, make_env, global_step, *args, **kwargs):
        clock.step = global_step
        return periodic(self, policy, make_env, global_step, *args, **kwargs)

    rlkit.run.Run.evaluate = timed_periodic
    spec = get_agent(algo)
    cfg = apply_overrides(spec.config_cls(), resolve_preset(spec.presets(), setup["preset"], algo))
    cfg = apply_overrides(cfg, {"seed": seed, "total_steps": setup["steps"], "run_dir": run_dir, "progress": False,
                                "eval_every": setup["eval_every"], "eval_episodes": EVAL_EPISODES})
    t0, c0 = time.perf_counter(), time.process_time()
    result = spec.train(cfg)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"wall_s": wall - clock.wall, "cpu_s": cpu - clock.cpu, "wall_with_evals_s": wall, "eval": result["eval"]}


def run_sb3(algo: str, seed: int, clock: EvalClock) -> dict:
    import gymnasium as gym
    from stable_baselines3 import PPO, SAC
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    from rlkit.evaluation import evaluate
    from rlkit.policy import SB3ModelPolicy

    setup = SETUPS[algo]
    env_id, every = setup["env_id"], setup["eval_every"]

    def make_eval_env(render_mode=None):
        return gym.make(env_id)

    class PeriodicEval(BaseCallback):
        def _on_step(self) -> bool:
            n, stride = self.num_timesteps, self.training_env.num_envs
            if n // every != (n - stride) // every:
                clock.step = n
                clock.run(evaluate, SB3ModelPolicy(self.model), make_eval_env, EVAL_EPISODES, seed=10_000)
            return True

    t0, c0 = time.perf_counter(), time.process_time()
    if algo == "ppo":
        z = setup["zoo"]

        def lin(start: float):
            return lambda progress_remaining: progress_remaining * start  # RL-Zoo's lin_ schedule

        model = PPO("MlpPolicy", make_vec_env(env_id, n_envs=z["n_envs"], seed=seed), n_steps=z["n_steps"],
                    batch_size=z["batch_size"], gae_lambda=z["gae_lambda"], gamma=z["gamma"], n_epochs=z["n_epochs"],
                    ent_coef=z["ent_coef"], learning_rate=lin(0.001), clip_range=lin(0.2), seed=seed, device="cpu")
    else:
        model = SAC("MlpPolicy", gym.make(env_id), learning_rate=setup["zoo"]["learning_rate"], seed=seed,
                    device="cpu")
    model.learn(setup["steps"], callback=PeriodicEval())
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    out = {"wall_s": wall - clock.wall, "cpu_s": cpu - clock.cpu, "wall_with_evals_s": wall}
    clock.step = setup["steps"]
    out["eval"] = clock.run(evaluate, SB3ModelPolicy(model), make_eval_env, EVAL_EPISODES, seed=10_000)
    return out


def worker(lib: str, algo: str, seed: int) -> None:
    import torch

    torch.set_num_threads(1)
    clock = EvalClock()
    with tempfile.TemporaryDirectory() as tmp:
        out = run_rlkit(algo, seed, str(Path(tmp) / "run"), clock) if lib == "rlkit" else run_sb3(algo, seed, clock)
    out["evals"] = clock.history
    out["first_target_step"] = next((s for s, m in clock.history if m >= SETUPS[algo]["target"]), None)
    print("RESULT " + json.dumps(out))


def loadavg() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def launch(lib: str, algo: str, seed: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", lib, algo, str(seed)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}
    load_before = loadavg()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"{lib} {algo} seed {seed} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(line[len("RESULT "):])
    # the machine's load (1-minute average) around the run: the wall times mean little without it
    out.update(lib=lib, algo=algo, seed=seed, loadavg_1min_before_after=[load_before, loadavg()])
    print(f"{lib:5} {algo} seed {seed}: {out['wall_s']:7.1f}s wall, {out['cpu_s']:7.1f}s cpu (evals excluded), "
          f"final eval {out['eval']['mean']:8.1f} +- {out['eval']['std']:.1f}, "
          f"target first reached at {out['first_target_step']}", flush=True)
    return out


def summarize(runs: list[dict]) -> dict:
    summary: dict = {}
    for algo in dict.fromkeys(r["algo"] for r in runs):
        target, per = SETUPS[algo]["target"], {}
        for lib in ("rlkit", "sb3"):
            rs = [r for r in runs if r["lib"] == lib and r["algo"] == algo]
            if not rs:
                continue
            reached = [r["first_target_step"] for r in rs if r["first_target_step"] is not None]
            per[lib] = {"seeds": [r["seed"] for r in rs], "final_evals": [r["eval"]["mean"] for r in rs],
                        "seeds_final_eval_ge_target": sum(r["eval"]["mean"] >= target for r in rs),
                        "seeds_reached_target_during_training": len(reached),
                        "median_first_target_step": statistics.median(reached) if reached else None,
                        "median_wall_s": statistics.median(r["wall_s"] for r in rs),
                        "median_cpu_s": statistics.median(r["cpu_s"] for r in rs)}
        if "rlkit" in per and "sb3" in per:
            pairs = [(a, b) for a in runs for b in runs if a["algo"] == b["algo"] == algo and a["seed"] == b["seed"]
                     and a["lib"] == "rlkit" and b["lib"] == "sb3"]
            per["rlkit_over_sb3_median_wall"] = per["rlkit"]["median_wall_s"] / per["sb3"]["median_wall_s"]
            per["rlkit_over_sb3_cpu_per_seed"] = [round(a["cpu_s"] / b["cpu_s"], 3) for a, b in pairs]
            per["targets"] = {
                "solves_at_least_as_many_seeds": per["rlkit"]["seeds_final_eval_ge_target"]
                >= per["sb3"]["seeds_final_eval_ge_target"],
                "median_wall_at_most_0.6x": per["rlkit_over_sb3_median_wall"] <= 0.6,
                "cpu_never_above_sb3": all(x <= 1.0 for x in per["rlkit_over_sb3_cpu_per_seed"])}
        summary[algo] = per
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--algos", default="ppo,sac")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ppo_sac.json"))
    parser.add_argument("--worker", nargs=3, metavar=("LIB", "ALGO", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        lib, algo, seed = args.worker
        worker(lib, algo, int(seed))
        return
    import stable_baselines3
    import torch

    runs: list[dict] = []
    t0 = time.perf_counter()
    for algo in args.algos.split(","):
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for lib in (("rlkit", "sb3") if seed % 2 == 0 else ("sb3", "rlkit")):
                runs.append(launch(lib, algo, seed))
                out = {"benchmark": "rlkit vs SB3 PPO (CartPole-v1) and SAC (Pendulum-v1), RL-Zoo settings",
                       "command": "python benchmarks/bench_ppo_sac.py " + " ".join(sys.argv[1:]),
                       "settings": {algo: {k: v for k, v in s.items()} for algo, s in SETUPS.items()},
                       "eval_episodes": EVAL_EPISODES, "eval_seed": 10_000, "torch_threads": 1,
                       "versions": {"torch": torch.__version__, "stable_baselines3": stable_baselines3.__version__},
                       "machine": f"{os.cpu_count()} cores, shared with other jobs while measured",
                       "total_wall_s": time.perf_counter() - t0, "summary": summarize(runs), "runs": runs}
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(json.dumps(out, indent=2))
    for algo, per in summarize(runs).items():
        if "rlkit" in per and "sb3" in per:
            print(f"{algo}: median wall rlkit {per['rlkit']['median_wall_s']:.1f}s vs SB3 "
                  f"{per['sb3']['median_wall_s']:.1f}s ({per['rlkit_over_sb3_median_wall']:.2f}x); cpu ratios "
                  f"{per['rlkit_over_sb3_cpu_per_seed']}; solved rlkit {per['rlkit']['seeds_final_eval_ge_target']}"
                  f" vs SB3 {per['sb3']['seeds_final_eval_ge_target']}; targets {per['targets']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
