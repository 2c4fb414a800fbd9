"""rlkit DQN (preset ``cartpole``) vs SB3 DQN (RL-Zoo CartPole settings), side by side, several seeds.

For each seed the two run back to back (interleaved, so machine noise hits both), each with one
torch thread and the same evaluation schedule: every ``--eval-every`` steps, 10 greedy episodes;
20 episodes at the end. Writes ``benchmarks/results/dqn_cartpole.json`` with, per seed and side: wall
time, env steps/s, final eval mean, and the first step at which eval reached >= 475. Also measures the
cost of one greedy action (rlkit ``Policy.act`` vs SB3 ``predict``) on a CartPole-sized network.

    python benchmarks/bench_dqn.py --seeds 5
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
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
                                "tensorboard": False})
    # eval_every uses cfg.eval_episodes (20); keep it equal to SB3's 10 during training.
    cfg.eval_episodes = 10
    t0 = time.perf_counter()
    result = train(cfg)
    wall = time.perf_counter() - t0
    import csv

    rows = list(csv.DictReader(open(out / f"rlkit-{seed}" / "metrics.csv")))
    curve = [(int(r["global_step"]), float(r["eval/mean_return"])) for r in rows if r.get("eval/mean_return")]
    from rlkit.agents.dqn import eval_env_factory, load_policy

    from rlkit.checkpoint import load_checkpoint
    from rlkit.evaluation import evaluate

    final = evaluate(load_policy(load_checkpoint(result["run_dir"])), eval_env_factory(cfg), 20, seed=10_000)
    return {"wall_s": wall, "steps": cfg.total_steps, "steps_per_s": cfg.total_steps / wall,
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
    t0 = time.perf_counter()
    model.learn(ZOO_STEPS, callback=Eval())
    wall = time.perf_counter() - t0
    env = gym.make("CartPole-v1")
    env.reset(seed=10_000)
    final, _ = evaluate_policy(model, env, n_eval_episodes=20, deterministic=True)
    return {"wall_s": wall, "steps": ZOO_STEPS, "steps_per_s": ZOO_STEPS / wall, "final_eval": float(final),
            "first_step_475": first_solved(curve), "curve": curve}


def action_latency(n: int = 5000) -> dict:
    import gymnasium as gym
    from rlkit.agents.dqn import DQNConfig, make_policy
    from stable_baselines3 import DQN

    from rlkit.nets import QNetwork
    from rlkit.types import TorchPolicy

    env = gym.make("CartPole-v1")
    obs = np.zeros((1, 4), np.float32)
    q = QNetwork(env.observation_space, env.action_space, [64, 64])
    fast = make_policy(q, DQNConfig(), env.observation_space, env.action_space)
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
            "median_steps_per_s": statistics.median(r["steps_per_s"] for r in runs),
            "final_evals": [r["final_eval"] for r in runs],
            "seeds_final_ge_475": sum(r["final_eval"] >= SOLVED for r in runs),
            "median_first_step_475": statistics.median(solved) if solved else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--eval-every", type=int, default=5_000)
    parser.add_argument("--out", default="benchmarks/results/dqn_cartpole.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results: dict = {"machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version(),
                                 "torch": torch.__version__, "torch_threads": 1},
                     "rlkit": [], "sb3": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            results["rlkit"].append({"seed": seed, **run_rlkit(seed, args.eval_every, Path(tmp))})
            results["sb3"].append({"seed": seed, **run_sb3(seed, args.eval_every)})
            print(f"seed {seed}: rlkit {results['rlkit'][-1]['final_eval']:.0f} in "
                  f"{results['rlkit'][-1]['wall_s']:.0f}s | sb3 {results['sb3'][-1]['final_eval']:.0f} in "
                  f"{results['sb3'][-1]['wall_s']:.0f}s", flush=True)
    results["summary"] = {"rlkit": summarize(results["rlkit"]), "sb3": summarize(results["sb3"])}
    results["summary"]["wall_ratio_rlkit_over_sb3"] = (results["summary"]["rlkit"]["median_wall_s"]
                                                       / results["summary"]["sb3"]["median_wall_s"])
    results["action_latency"] = action_latency()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps({"summary": results["summary"], "action_latency": results["action_latency"]}, indent=2))


if __name__ == "__main__":
    main()
