"""One DQN gradient step, plain autograd vs the fused path (``rlkit.fast.fused_mlp``), against its FLOP floor.

The step is the ``cartpole`` preset's: batch 64, a 4-256-256-2 ReLU Q-network, Double DQN, Huber loss,
gradient clip 10, Adam, rounds of 128 gradient steps whose target values are rated at once
(``rlkit.fast.presample.rate_once``). Both sides run ``DQN.update`` of the real learner (``fused_update``
off and on) on the same minibatches drawn from a filled replay buffer; rounds alternate between the two so
machine load hits both alike. Reported per update: median round wall and process-CPU time, the FLOPs of
an update (every matrix product: the online forward, Double DQN's online pass over next_obs, the target
net's share of the round's one pass, the weight and input gradients), this machine's matmul rate (eight
64x256x256 products, best of ``--repeats``) and the floor those give. The torch profiler's op table of one
round of each side goes into the JSON too (self CPU per op, per update).

    python benchmarks/profile_dqn_update.py --threads 1      # writes benchmarks/results/profile_dqn_update.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from rlkit.agents.dqn import DQN, DQNConfig
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[1]
BATCH, HIDDEN, GRADIENT_STEPS = 64, [256, 256], 128


def learner(fused: bool, seed: int = 0) -> DQN:
    """A cartpole-preset DQN learner with a buffer of 20k random CartPole-like transitions."""
    cfg = DQNConfig(env_id="CartPole-v1", total_steps=50_000, batch_size=BATCH, lr=2.3e-3, lr_schedule="linear",
                    gradient_steps=GRADIENT_STEPS, hidden=HIDDEN, double=True, fused_update=fused, progress=False)
    torch.manual_seed(seed)
    obs_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
    agent = DQN(cfg, obs_space, gym.spaces.Discrete(2), np.random.default_rng(seed))
    data = np.random.default_rng(seed)
    for _ in range(20_000):
        agent.buffer.add(data.normal(size=(1, 4)).astype(np.float32), data.integers(2, size=1), np.ones(1, np.float32),
                         data.normal(size=(1, 4)).astype(np.float32), data.random(1) < 0.05, np.zeros(1, bool))
    return agent


def flops_per_update() -> dict[str, float]:
    widths = [4, *HIDDEN, 2]
    layer = [2 * BATCH * i * o for i, o in zip(widths[:-1], widths[1:])]
    forward = sum(layer)
    backward = sum(layer) + sum(layer[1:])  # weight gradients of every layer, input gradients above the first
    return {"forward_online": forward, "forward_online_next_obs": forward, "forward_target": forward,
            "backward": backward, "total": 3 * forward + backward}


def matmul_rate(repeats: int) -> dict[str, float]:
    """Eight 64x256x256 products (the 256-wide layer at batch 64), best of ``repeats``."""
    a, b, out = torch.randn(64, 256), torch.randn(256, 256), torch.empty(64, 256)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(8):
            torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return {"eight_matmuls_us": best * 1e6, "gflops": 8 * 2 * 64 * 256 * 256 / best / 1e9}


def time_rounds(agents: dict[str, DQN], rounds: int) -> dict[str, dict[str, float]]:
    """Median per-update wall and CPU microseconds of ``DQN.update``, rounds alternating between the sides."""
    walls: dict[str, list[float]] = {k: [] for k in agents}
    cpus: dict[str, list[float]] = {k: [] for k in agents}
    sampler = np.random.default_rng(1)
    for r in range(rounds + 2):
        for name, agent in agents.items():
            agent.buffer.rng = np.random.default_rng(sampler.integers(1 << 30))
            batches = agent.buffer.minibatches(BATCH, GRADIENT_STEPS)
            wall, cpu = time.perf_counter(), time.process_time()
            agent.update(batches, 5_000)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if r >= 2:  # two warm-up rounds
                walls[name].append(wall / GRADIENT_STEPS * 1e6)
                cpus[name].append(cpu / GRADIENT_STEPS * 1e6)
    return {k: {"wall_us_median": statistics.median(walls[k]), "cpu_us_median": statistics.median(cpus[k]),
                "wall_us_min": min(walls[k]), "rounds": len(walls[k])} for k in agents}


def profile_round(agent: DQN, top: int) -> list[dict[str, Any]]:
    """The torch profiler's ops of one round, by self CPU time (microseconds per update)."""
    batches = agent.buffer.minibatches(BATCH, GRADIENT_STEPS)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        agent.update(batches, 5_000)
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows)
    out = [{"op": e.key, "calls_per_update": e.count / GRADIENT_STEPS,
            "self_cpu_us_per_update": e.self_cpu_time_total / GRADIENT_STEPS,
            "share": e.self_cpu_time_total / total} for e in rows[:top]]
    out.append({"op": "(all ops)", "self_cpu_us_per_update": total / GRADIENT_STEPS})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds of 128 updates per side")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the issue's runs used 1)")
    parser.add_argument("--repeats", type=int, default=200, help="repeats of the matmul-rate measurement")
    parser.add_argument("--top", type=int, default=15, help="profiler rows kept per side")
    parser.add_argument("--flush-denormal", action="store_true",
                        help="torch.set_flush_denormal(True): Adam's subnormal moments cost ~0.4 ms an update here")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "profile_dqn_update.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(args.flush_denormal)
    agents = {"plain": learner(False), "fused": learner(True)}
    assert agents["fused"].fused is not None and agents["plain"].fused is None
    timings = time_rounds(agents, args.rounds)
    rate = matmul_rate(args.repeats)
    flops = flops_per_update()
    floor_us = flops["total"] / (rate["gflops"] * 1e3)
    result = {
        "setup": {"batch": BATCH, "hidden": HIDDEN, "double": True, "loss": "huber", "max_grad_norm": 10.0,
                  "gradient_steps_per_round": GRADIENT_STEPS, "threads": args.threads,
                  "flush_denormal": args.flush_denormal, "torch": torch.__version__,
                  "machine": platform.processor() or platform.machine()},
        "per_update": timings,
        "speedup_wall": timings["plain"]["wall_us_median"] / timings["fused"]["wall_us_median"],
        "flops_per_update": flops, "matmul_rate": rate, "floor_us": floor_us,
        "fraction_of_floor": {k: floor_us / v["wall_us_median"] for k, v in timings.items()},
        "profile": {name: profile_round(agent, args.top) for name, agent in agents.items()},
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    for name, t in timings.items():
        print(f"{name}: {t['wall_us_median']:.0f} us wall, {t['cpu_us_median']:.0f} us CPU per update "
              f"({floor_us / t['wall_us_median']:.0%} of the floor)")
    print(f"floor: {flops['total'] / 1e6:.1f} MFLOP at {rate['gflops']:.0f} GFLOP/s = {floor_us:.0f} us; "
          f"speedup {result['speedup_wall']:.2f}x; wrote {args.out}")


if __name__ == "__main__":
    main()
