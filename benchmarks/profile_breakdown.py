"""Where the time goes: rlkit DQN (``cartpole`` preset) / TD3 (``pendulum`` preset) and SB3 with the
RL-Zoo settings, each run once with exclusive timers around its parts.

The parts (env stepping, acting, buffer add and sampling, network forward, backward, optimizer,
gradient clipping, target sync, evaluation, logging, checkpoints) are timed by wrapping the functions
that do them; a part's time excludes the other timed parts it calls, and "loop and other" is the
run's total minus all parts. The timers cost about a microsecond per call, so totals are slightly
above an untimed run. Evaluation follows ``bench_dqn.py`` (10 episodes every 5k steps on both sides)
and ``bench_ddpg.py`` (a final 10-episode evaluation on both sides).

    python benchmarks/profile_breakdown.py --agent dqn      # or td3; --steps N for a shorter look
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]


class Timers:
    """Exclusive wall and CPU time per named part."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[list[float]] = []  # per active part: [child wall, child cpu]
        self._undo: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, attr: str, part: str) -> None:
        original = getattr(owner, attr)
        timers = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0, c0 = time.perf_counter(), time.process_time()
            timers._stack.append([0.0, 0.0])
            try:
                return original(*args, **kwargs)
            finally:
                child_wall, child_cpu = timers._stack.pop()
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                timers.wall[part] += wall - child_wall
                timers.cpu[part] += cpu - child_cpu
                timers.calls[part] += 1
                if timers._stack:
                    timers._stack[-1][0] += wall
                    timers._stack[-1][1] += cpu

        self._undo.append((owner, attr, original))
        setattr(owner, attr, timed)

    def table(self, total_wall: float, total_cpu: float) -> dict[str, dict[str, float]]:
        rows = {part: {"wall_s": round(self.wall[part], 3), "cpu_s": round(self.cpu[part], 3),
                       "calls": self.calls[part]} for part in sorted(self.wall, key=self.wall.get, reverse=True)}
        rows["loop and other"] = {"wall_s": round(total_wall - sum(self.wall.values()), 3),
                                  "cpu_s": round(total_cpu - sum(self.cpu.values()), 3), "calls": 1}
        rows["total"] = {"wall_s": round(total_wall, 3), "cpu_s": round(total_cpu, 3), "calls": 1}
        return rows


def common_torch(t: Timers) -> None:
    t.wrap(torch.Tensor, "backward", "backward")
    t.wrap(torch.optim.Adam, "step", "optimizer step")
    t.wrap(torch.optim.Optimizer, "zero_grad", "zero_grad")
    t.wrap(torch.nn.utils, "clip_grad_norm_", "grad clipping")


def rlkit_dqn(t: Timers, steps: int | None, tmp: str) -> Callable[[], Any]:
    from rlkit.agents import dqn
    from rlkit.envs.vector import VecEnv

    from rlkit import run as run_module
    from rlkit.buffers import ReplayBuffer
    from rlkit.config import apply_overrides, resolve_preset
    from rlkit.logger import Logger
    from rlkit.nets import QNetwork
    from rlkit.policy import TorchPolicy

    cfg = apply_overrides(dqn.AGENT.config_cls(), resolve_preset(dqn.AGENT.presets(), "cartpole", "dqn"))
    cfg = apply_overrides(cfg, {"seed": 0, "run_dir": f"{tmp}/rlkit", "progress": False, "eval_every": 5_000,
                                "eval_episodes": 10, "checkpoint_every": 0, "save_buffer": False,
                                "tensorboard": False, "target_return": None,  # all 50k steps, as SB3
                                **({"total_steps": steps} if steps else {})})
    common_torch(t)
    t.wrap(VecEnv, "step", "env step")
    t.wrap(TorchPolicy, "act", "acting")
    t.wrap(ReplayBuffer, "add", "buffer add")
    t.wrap(ReplayBuffer, "sample", "buffer sample")
    t.wrap(QNetwork, "forward", "network forward")
    t.wrap(dqn, "dqn_loss", "loss arithmetic")
    t.wrap(dqn, "polyak_update", "target sync")
    t.wrap(run_module, "evaluate", "evaluation")
    t.wrap(Logger, "dump", "logging")
    t.wrap(Logger, "record_episode", "logging")
    t.wrap(Run_checkpoint_owner(), "checkpoint", "checkpoint")
    return lambda: dqn.train(cfg)


def Run_checkpoint_owner() -> Any:  # noqa: N802 (reads as the class it returns)
    from rlkit.run import Run

    return Run


def rlkit_td3(t: Timers, steps: int | None, tmp: str) -> Callable[[], Any]:
    from rlkit.agents import ddpg
    from rlkit.envs.vector import VecEnv

    from rlkit import run as run_module
    from rlkit.buffers import ReplayBuffer
    from rlkit.config import apply_overrides, resolve_preset
    from rlkit.logger import Logger
    from rlkit.nets import DeterministicActor, QCriticEnsemble
    from rlkit.policy import TorchPolicy

    spec = ddpg.TD3_AGENT
    cfg = apply_overrides(spec.config_cls(), spec.defaults)
    cfg = apply_overrides(cfg, resolve_preset(spec.presets(), "pendulum", "td3"))
    cfg = apply_overrides(cfg, {"seed": 0, "run_dir": f"{tmp}/rlkit", "progress": False, "eval_episodes": 10,
                                **({"total_steps": steps, "learning_starts": steps // 2} if steps else {})})
    common_torch(t)
    t.wrap(VecEnv, "step", "env step")
    t.wrap(TorchPolicy, "act", "acting")
    t.wrap(ReplayBuffer, "add", "buffer add")
    t.wrap(ReplayBuffer, "sample", "buffer sample")
    t.wrap(DeterministicActor, "forward", "network forward")
    t.wrap(QCriticEnsemble, "forward", "network forward")
    t.wrap(ddpg, "gradient_step", "loss arithmetic")
    t.wrap(ddpg, "polyak_update", "target sync")
    t.wrap(run_module, "evaluate", "evaluation")
    t.wrap(Logger, "dump", "logging")
    t.wrap(Logger, "record_episode", "logging")
    t.wrap(Run_checkpoint_owner(), "checkpoint", "checkpoint")
    return lambda: spec.train(cfg)


def sb3_common(t: Timers, algo: Any) -> None:
    from stable_baselines3.common import evaluation
    from stable_baselines3.common.buffers import ReplayBuffer
    from stable_baselines3.common.logger import Logger
    from stable_baselines3.common.policies import BasePolicy
    from stable_baselines3.common.vec_env import DummyVecEnv

    common_torch(t)
    t.wrap(DummyVecEnv, "step_wait", "env step")
    t.wrap(BasePolicy, "predict", "acting")
    t.wrap(ReplayBuffer, "add", "buffer add")
    t.wrap(ReplayBuffer, "sample", "buffer sample")
    t.wrap(algo, "train", "loss arithmetic")
    t.wrap(evaluation, "evaluate_policy", "evaluation")
    t.wrap(Logger, "dump", "logging")
    t.wrap(Logger, "record", "logging")


def sb3_dqn(t: Timers, steps: int | None, tmp: str) -> Callable[[], Any]:
    import gymnasium as gym
    from stable_baselines3 import DQN
    from stable_baselines3.common import evaluation
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.dqn.policies import QNetwork

    from benchmarks.bench_dqn import ZOO, ZOO_STEPS

    sb3_common(t, DQN)
    t.wrap(QNetwork, "forward", "network forward")
    t.wrap(__import__("stable_baselines3.dqn.dqn", fromlist=["polyak_update"]), "polyak_update", "target sync")

    class Eval(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % 5_000 == 0:
                env = gym.make("CartPole-v1")
                env.reset(seed=10_000)
                evaluation.evaluate_policy(self.model, env, n_eval_episodes=10, deterministic=True)
            return True

    def go() -> None:
        model = DQN("MlpPolicy", "CartPole-v1", seed=0, verbose=0, device="cpu", **ZOO)
        model.learn(steps or ZOO_STEPS, callback=Eval())
    return go


def sb3_td3(t: Timers, steps: int | None, tmp: str) -> Callable[[], Any]:
    import gymnasium as gym
    import numpy as np
    from stable_baselines3 import TD3
    from stable_baselines3.common import evaluation
    from stable_baselines3.common.noise import NormalActionNoise
    from stable_baselines3.common.policies import ContinuousCritic
    from stable_baselines3.td3.policies import Actor

    sb3_common(t, TD3)
    t.wrap(Actor, "forward", "network forward")
    t.wrap(ContinuousCritic, "forward", "network forward")
    t.wrap(ContinuousCritic, "q1_forward", "network forward")
    t.wrap(__import__("stable_baselines3.td3.td3", fromlist=["polyak_update"]), "polyak_update", "target sync")

    def go() -> None:
        model = TD3("MlpPolicy", "Pendulum-v1", gamma=0.98, buffer_size=200_000,
                    learning_starts=steps // 2 if steps else 10_000, batch_size=100, tau=0.005,
                    action_noise=NormalActionNoise(np.zeros(1), 0.1 * np.ones(1)), train_freq=(1, "episode"),
                    gradient_steps=-1, learning_rate=1e-3, policy_kwargs={"net_arch": [400, 300]}, seed=0,
                    device="cpu")
        model.learn(steps or 20_000)
        env = gym.make("Pendulum-v1")
        env.reset(seed=10_000)
        evaluation.evaluate_policy(model, env, n_eval_episodes=10, deterministic=True)
    return go


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", choices=["dqn", "td3"], default="dqn")
    parser.add_argument("--lib", choices=["rlkit", "sb3"], default="rlkit")
    parser.add_argument("--steps", type=int, default=None, help="env steps (default: the preset's)")
    parser.add_argument("--out", default=None, help="JSON file (default: print only)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import sys

    sys.path.insert(0, str(ROOT))
    builders = {("rlkit", "dqn"): rlkit_dqn, ("rlkit", "td3"): rlkit_td3, ("sb3", "dqn"): sb3_dqn,
                ("sb3", "td3"): sb3_td3}
    timers = Timers()
    with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
        go = builders[(args.lib, args.agent)](timers, args.steps, tmp)
        t0, c0 = time.perf_counter(), time.process_time()
        go()
        table = timers.table(time.perf_counter() - t0, time.process_time() - c0)
    width = max(map(len, table))
    print(f"{args.lib} {args.agent}: exclusive time per part")
    for part, row in table.items():
        print(f"  {part:{width}}  {row['wall_s']:8.2f} s wall  {row['cpu_s']:8.2f} s cpu  {row['calls']:8d} calls")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"lib": args.lib, "agent": args.agent, "steps": args.steps,
                                              "torch": torch.__version__, "parts": table}, indent=2))


if __name__ == "__main__":
    main()
