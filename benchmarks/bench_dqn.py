"""rlkit DQN (preset ``cartpole``) vs SB3 DQN (RL-Zoo CartPole settings), side by side, several seeds.

For each seed the two run back to back (interleaved, the order flipping every seed, so machine noise
hits both), in one process with one torch thread, after a warm-up that pays the one-time imports (torch's
optimizer module imports ``torch._dynamo`` on first use) for both. Both get the same evaluation schedule:
every ``--eval-every`` steps, 10 greedy episodes; 20 episodes at the end. Same work: 50k env steps,
(50k - 1k) / 256 updates of 128 gradient steps on batches of 64. rlkit's side is a whole user run: its
wall time includes writing metrics.csv, the final checkpoint and final.json (SB3's side saves nothing);
the run directory is on tmpfs (``/dev/shm``) so that other jobs' disk traffic does not land in the
figure (``--run-root`` changes it). Writes ``benchmarks/results/dqn_cartpole.json`` with, per seed and
side: wall and process-CPU time, env steps/s, final eval mean, and the first step at which eval
reached >= 475; the summary gives the median ratios. Also measures the cost of one greedy action
(rlkit ``Policy.act`` vs SB3 ``predict``) on a CartPole-sized network.

    python benchmarks/bench_dqn.py --seeds 3      # ~6 min on a quiet 2-core machine
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ZOO = dict(learning_rate=2.3e-3, batch_size=64, buffer_size=100_000, learning_starts=1_000, gamma=0.99,
           target_update_interval=10, train_freq=256, gradient_steps=128, exploration_fraction=0.16,
           exploration_final_eps=0.04, policy_kwargs=dict(net_arch=[256, 256]))
ZOO_STEPS = 50_000
SOLVED = 475.0


def first_solved(curve: list[tuple[int, float]]) -> int | None:
    return next((step for step, value in curve if value >= SOLVED), None)


def run_rlkit(seed: int, eval_every: int, out: Path) -> dict:
    from rlkit.agents.dqn import AGENT, train

    from rlkit.config import apply_overrides, resolve_preset

    cfg = apply_overrides(AGENT.config_cls(), resolve_preset(AGENT.presets(), "cartpole", "dqn"))
    cfg = apply_overrides(cfg, {"seed": seed, "run_dir": str(out / f"rlkit-{seed}"), "progress": False,
                                "eval_every": eval_every, "checkpoint_every": 0, "save_buffer": False,
                                "tensorboard": False,
                                "target_return": None})  # the same 50k steps as SB3, not the preset's early stop
    # eval_every uses cfg.eval_episodes (20); keep it equal to SB3's 10 during training.
    cfg.eval_episodes = 10
    t0, c0 = time.perf_counter(), time.process_time()
    result = train(cfg)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    import csv

    rows = list(csv.DictReader(open(out / f"rlkit-{seed}" / "metrics.csv")))
    curve = [(int(r["global_step"]), float(r["eval/mean_return"])) for r in rows if r.get("eval/mean_return")]
    from rlkit.agents.dqn import eval_env_factory, load_policy

    from rlkit.checkpoint import load_checkpoint
    from rlkit.evaluation import evaluate

    final = evaluate(load_policy(load_checkpoint(result["run_dir"])), eval_env_factory(cfg), 20, seed=10_000)
    return {"wall_s": wall, "cpu_s": cpu, "steps": cfg.total_steps, "steps_per_s": cfg.total_steps / wall,
            "final_eval": final["mean"], "first_step_475": first_solved(curve[:-1]), "curve": curve[:-1]}


def run_sb3(seed: int, eval_every: int) -> dict:
    import gymnasium as gym
    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.evaluation import evaluate_policy

    curve: list[tuple[int, float]] = []

    class Eval(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.env = gym.make("CartPole-v1")

        def _on_step(self) -> bool:
            if self.num_timesteps % eval_every == 0:
                self.env.reset(seed=10_000)
                mean, _ = evaluate_policy(self.model, self.env, n_eval_episodes=10, deterministic=True)
                curve.append((self.num_timesteps, float(mean)))
            return True

    model = DQN("MlpPolicy", "CartPole-v1", seed=seed, verbose=0, device="cpu", **ZOO)
    t0, c0 = time.perf_counter(), time.process_time()
    model.learn(ZOO_STEPS, callback=Eval())
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    env = gym.make("CartPole-v1")
    env.reset(seed=10_000)
    final, _ = evaluate_policy(model, env, n_eval_episodes=20, deterministic=True)
    return {"wall_s": wall, "cpu_s": cpu, "steps": ZOO_STEPS, "steps_per_s": ZOO_STEPS / wall,
            "final_eval": float(final),
            "first_step_475": first_solved(curve), "curve": curve}


def action_latency(n: int = 5000) -> dict:
    import gymnasium as gym
    from rlkit.agents.dqn import DQNConfig, make_policy
    from stable_baselines3 import DQN

    from rlkit.nets import QNetwork
    from rlkit.policy import TorchPolicy

    env = gym.make("CartPole-v1")
    obs = np.zeros((1, 4), np.float32)
    q = QNetwork(env.observation_space, env.action_space, [64, 64])
    fast = make_policy(q, env.observation_space, env.action_space, DQNConfig().epsilon_end)
    plain = TorchPolicy(q, fast.act_fn, env.action_space, env.observation_space)
    model = DQN("MlpPolicy", "CartPole-v1", device="cpu", policy_kwargs=dict(net_arch=[64, 64]))

    def per_call(fn) -> float:
        for _ in range(200):
            fn()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t0) / n * 1e6

    return {"net": "[64, 64] MLP, CartPole", "rlkit_act_us": per_call(lambda: fast.act(obs)),
            "rlkit_act_torch_path_us": per_call(lambda: plain.act(obs)),
            "sb3_predict_us": per_call(lambda: model.predict(obs[0], deterministic=True))}


def summarize(runs: list[dict]) -> dict:
    solved = [r["first_step_475"] for r in runs if r["first_step_475"] is not None]
    return {"median_wall_s": statistics.median(r["wall_s"] for r in runs),
            "median_cpu_s": statistics.median(r["cpu_s"] for r in runs),
            "median_steps_per_s": statistics.median(r["steps_per_s"] for r in runs),
            "final_evals": [r["final_eval"] for r in runs],
            "seeds_final_ge_475": sum(r["final_eval"] >= SOLVED for r in runs),
            "median_first_step_475": statistics.median(solved) if solved else None}


def warm_up() -> None:
    """Pay the one-time costs both sides would otherwise charge to whichever runs first."""
    import stable_baselines3  # noqa: F401
    from rlkit.agents import dqn  # noqa: F401

    param = torch.zeros(1, requires_grad=True)
    for kwargs in ({}, {"fused": True}):  # the first optimizer imports torch._dynamo (seconds)
        optimizer = torch.optim.Adam([param], **kwargs)
        param.sum().backward()
        torch.nn.utils.clip_grad_norm_([param], 1.0)
        optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--eval-every", type=int, default=5_000)
    parser.add_argument("--run-root", default="/dev/shm" if Path("/dev/shm").is_dir() else None,
                        help="where rlkit's run directories go (default: tmpfs)")
    parser.add_argument("--out", default="benchmarks/results/dqn_cartpole.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warm_up()
    import gymnasium
    import stable_baselines3

    results: dict = {"command": "python benchmarks/bench_dqn.py " + " ".join(sys.argv[1:]),
                     "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch_threads": 1,
                                 "load_average_before": os.getloadavg()},
                     "versions": {"torch": torch.__version__, "gymnasium": gymnasium.__version__,
                                  "numpy": np.__version__, "stable_baselines3": stable_baselines3.__version__},
                     "rlkit": [], "sb3": []}
    with tempfile.TemporaryDirectory(dir=args.run_root) as tmp:
        for seed in range(args.seeds):
            for side in (("rlkit", "sb3") if seed % 2 == 0 else ("sb3", "rlkit")):
                run = run_rlkit(seed, args.eval_every, Path(tmp)) if side == "rlkit" else run_sb3(seed, args.eval_every)
                results[side].append({"seed": seed, "load_average_after": os.getloadavg()[0], **run})
            rl, sb = results["rlkit"][-1], results["sb3"][-1]
            print(f"seed {seed}: rlkit {rl['final_eval']:.0f} in {rl['wall_s']:.0f}s ({rl['cpu_s']:.0f}s cpu) | "
                  f"sb3 {sb['final_eval']:.0f} in {sb['wall_s']:.0f}s ({sb['cpu_s']:.0f}s cpu)", flush=True)
    results["machine"]["load_average_after"] = os.getloadavg()
    summary = {"rlkit": summarize(results["rlkit"]), "sb3": summarize(results["sb3"])}
    summary["wall_ratio_rlkit_over_sb3"] = summary["rlkit"]["median_wall_s"] / summary["sb3"]["median_wall_s"]
    summary["cpu_ratio_rlkit_over_sb3"] = summary["rlkit"]["median_cpu_s"] / summary["sb3"]["median_cpu_s"]
    summary["per_seed_wall_ratios"] = [r["wall_s"] / s["wall_s"] for r, s in zip(results["rlkit"], results["sb3"])]
    summary["per_seed_cpu_ratios"] = [r["cpu_s"] / s["cpu_s"] for r, s in zip(results["rlkit"], results["sb3"])]
    results["summary"] = summary
    results["action_latency"] = action_latency()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps({"summary": results["summary"], "action_latency": results["action_latency"]}, indent=2))


if __name__ == "__main__":
    main()
