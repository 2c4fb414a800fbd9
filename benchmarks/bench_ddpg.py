"""rlkit DDPG/TD3 against SB3 DDPG/TD3 on Pendulum-v1 with the RL-Zoo settings, side by side.

Each (library, agent, seed) run is a fresh subprocess with one torch thread; the runs are interleaved
per seed (and the order flips every seed) so machine noise hits both libraries alike. Both sides get
the Zoo's Pendulum-v1 settings (20k steps, gamma 0.98, buffer 2e5, 10k random steps, Gaussian noise
0.1, lr 1e-3, [400, 300] nets, batch 100, tau 0.005, 200 gradient steps after each 200-step episode)
and the same final evaluation (rlkit.evaluation.evaluate, 10 episodes, seeds 10000+).

Wall time is measured around the whole training call. rlkit's includes what a user's run does
(CSV and TensorBoard logging, checkpoints with the replay buffer, the final 10-episode evaluation);
SB3's is model construction + ``learn`` only. The run directory is on tmpfs (``/dev/shm``) so that
other jobs' disk traffic does not land in rlkit's figure (``--run-root`` changes it). ``cpu_s``
(process time) is recorded too, as it is less sensitive to other load on a shared machine.

    python benchmarks/bench_ddpg.py --seeds 3 --agents td3     # 6 runs, ~8 min on a quiet machine
    python benchmarks/bench_ddpg.py --seeds 3                  # DDPG and TD3, ~16 min
    python benchmarks/bench_ddpg.py --seeds 2 --steps 3000 --learning-starts 1000   # quick look
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
ZOO = {"gamma": 0.98, "buffer_size": 200_000, "learning_starts": 10_000, "noise_std": 0.1, "lr": 1e-3,
       "net_arch": [400, 300], "batch_size": 100, "tau": 0.005, "episode_length": 200}


def run_rlkit(agent: str, seed: int, steps: int, learning_starts: int, run_dir: str) -> dict:
    from rlkit.agents.ddpg import AGENT, TD3_AGENT

    from rlkit.config import apply_overrides, resolve_preset

    spec = TD3_AGENT if agent == "td3" else AGENT
    cfg = apply_overrides(spec.config_cls(), spec.defaults)
    cfg = apply_overrides(cfg, resolve_preset(spec.presets(), "pendulum", agent))
    cfg = apply_overrides(cfg, {"seed": seed, "total_steps": steps, "learning_starts": learning_starts,
                                "run_dir": run_dir, "progress": False, "eval_episodes": 10})
    t0, c0 = time.perf_counter(), time.process_time()
    result = spec.train(cfg)
    return {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "eval": result["eval"]}


def run_sb3(agent: str, seed: int, steps: int, learning_starts: int) -> dict:
    import gymnasium as gym
    import numpy as np
    from stable_baselines3 import DDPG, TD3
    from stable_baselines3.common.noise import NormalActionNoise

    from rlkit.evaluation import evaluate
    from rlkit.policy import SB3ModelPolicy

    algo = TD3 if agent == "td3" else DDPG
    t0, c0 = time.perf_counter(), time.process_time()
    env = gym.make("Pendulum-v1")
    model = algo("MlpPolicy", env, gamma=ZOO["gamma"], buffer_size=ZOO["buffer_size"],
                 learning_starts=learning_starts, batch_size=ZOO["batch_size"], tau=ZOO["tau"],
                 action_noise=NormalActionNoise(np.zeros(1), ZOO["noise_std"] * np.ones(1)),
                 train_freq=(1, "episode"), gradient_steps=-1, learning_rate=ZOO["lr"],
                 policy_kwargs={"net_arch": ZOO["net_arch"]}, seed=seed, device="cpu")
    model.learn(steps)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    result = evaluate(SB3ModelPolicy(model), lambda render_mode=None: gym.make("Pendulum-v1"), 10, seed=10_000)
    return {"wall_s": wall, "cpu_s": cpu, "eval": result}


def worker(lib: str, agent: str, seed: int, steps: int, learning_starts: int, run_root: str | None) -> None:
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(dir=run_root) as tmp:
        if lib == "rlkit":
            out = run_rlkit(agent, seed, steps, learning_starts, str(Path(tmp) / "run"))
        else:
            out = run_sb3(agent, seed, steps, learning_starts)
    print("RESULT " + json.dumps(out))


def launch(lib: str, agent: str, seed: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", lib, agent, str(seed), "--steps", str(args.steps),
           "--learning-starts", str(args.learning_starts), *(["--run-root", args.run_root] if args.run_root else [])]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"{lib} {agent} seed {seed} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(line[len("RESULT "):])
    out.update(lib=lib, agent=agent, seed=seed, steps_per_s=args.steps / out["wall_s"],
               load_average_after=os.getloadavg()[0])
    ev = out["eval"]
    print(f"{lib:5} {agent:4} seed {seed}: {out['wall_s']:7.1f}s wall, {out['cpu_s']:7.1f}s cpu, "
          f"{out['steps_per_s']:6.1f} steps/s, eval {ev['mean']:8.1f} +- {ev['std']:.1f}", flush=True)
    return out


def summarize(runs: list[dict], agents: list[str], threshold: float) -> dict:
    summary: dict = {}
    for agent in agents:
        per = {}
        for lib in ("rlkit", "sb3"):
            rs = [r for r in runs if r["lib"] == lib and r["agent"] == agent]
            evals = [r["eval"]["mean"] for r in rs]
            per[lib] = {"median_wall_s": statistics.median(r["wall_s"] for r in rs),
                        "median_cpu_s": statistics.median(r["cpu_s"] for r in rs),
                        "median_steps_per_s": statistics.median(r["steps_per_s"] for r in rs),
                        "eval_means": evals, "median_eval": statistics.median(evals),
                        f"seeds_eval_ge_{threshold:g}": sum(e >= threshold for e in evals)}
        per["rlkit_over_sb3_wall"] = per["rlkit"]["median_wall_s"] / per["sb3"]["median_wall_s"]
        per["rlkit_over_sb3_cpu"] = per["rlkit"]["median_cpu_s"] / per["sb3"]["median_cpu_s"]
        pairs = [(r, s) for r in runs for s in runs if r["lib"] == "rlkit" and s["lib"] == "sb3"
                 and r["agent"] == s["agent"] == agent and r["seed"] == s["seed"]]
        per["per_seed_wall_ratios"] = [r["wall_s"] / s["wall_s"] for r, s in pairs]
        per["per_seed_cpu_ratios"] = [r["cpu_s"] / s["cpu_s"] for r, s in pairs]
        summary[agent] = per
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--learning-starts", type=int, default=ZOO["learning_starts"])
    parser.add_argument("--agents", default="ddpg,td3")
    parser.add_argument("--threshold", type=float, default=-200.0, help="eval target per seed")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ddpg.json"))
    parser.add_argument("--run-root", default="/dev/shm" if Path("/dev/shm").is_dir() else None,
                        help="where rlkit's run directories go (default: tmpfs)")
    parser.add_argument("--worker", nargs=3, metavar=("LIB", "AGENT", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        lib, agent, seed = args.worker
        worker(lib, agent, int(seed), args.steps, args.learning_starts, args.run_root)
        return
    agents = args.agents.split(",")
    runs = []
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        for agent in agents:
            order = ("rlkit", "sb3") if seed % 2 == 0 else ("sb3", "rlkit")
            runs += [launch(lib, agent, seed, args) for lib in order]
    summary = summarize(runs, agents, args.threshold)
    import gymnasium
    import numpy
    import stable_baselines3
    import torch

    out = {"benchmark": "rlkit vs SB3 DDPG/TD3 on Pendulum-v1, RL-Zoo settings",
           "command": "python benchmarks/bench_ddpg.py " + " ".join(sys.argv[1:]),
           "settings": {**ZOO, "total_steps": args.steps, "learning_starts": args.learning_starts,
                        "seeds": args.seeds, "torch_threads": 1, "eval_episodes": 10, "eval_seed": 10_000},
           "versions": {"torch": torch.__version__, "stable_baselines3": stable_baselines3.__version__,
                        "gymnasium": gymnasium.__version__, "numpy": numpy.__version__},
           "machine": f"{os.cpu_count()} cores", "load_average_before": load_before,
           "load_average_after": os.getloadavg(), "total_wall_s": time.perf_counter() - t0,
           "summary": summary, "runs": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    for agent, per in summary.items():
        rl, sb = per["rlkit"], per["sb3"]
        print(f"{agent}: median wall rlkit {rl['median_wall_s']:.1f}s vs SB3 {sb['median_wall_s']:.1f}s "
              f"(rlkit/SB3 {per['rlkit_over_sb3_wall']:.2f}x, cpu {per['rlkit_over_sb3_cpu']:.2f}x); "
              f"median eval rlkit {rl['median_eval']:.1f}, SB3 {sb['median_eval']:.1f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
