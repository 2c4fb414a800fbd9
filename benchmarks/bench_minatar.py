"""MinAtar DQN speed: rlkit (the hand-written conv step, one seed and five seeds stacked; and its plain autograd
path) against SB3's DQN with the same network and settings, side by side in one process, one torch thread.

The work is the ``dqn`` preset ``minatar-breakout`` (the MinAtar paper's DQN: conv 3x3x16 + 128 units, centered
RMSProp alpha 0.95 eps 0.01, batch 32, an update every frame, target copy every 1000 frames, Huber loss) cut to
``--steps`` frames with ``learning_starts`` 5000 and epsilon annealed over the first 10% of the run. SB3 gets the
same network as a features extractor (``MinAtarExtractor``: the same layers as ``rlkit.nets.MinAtarCNN``), the
same optimizer and settings; its gradient clipping (always on in SB3) is set out of reach, as the paper does not
clip. No evaluations during training on either side; rlkit writes its run files (metrics.csv, final.json) to
tmpfs. A 5M-frame reproduction does 5M - 5000 updates, so the per-frame figure is what decides its wall time:
the JSON gives frames/s and CPU ms per frame for each side, and the 5M-frame hours they imply.

    python benchmarks/bench_minatar.py --steps 30000     # ~6 min on a quiet 2-core machine
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

GAME = "MinAtar/Breakout-v0"
PAPER_FRAMES = 5_000_000


def rlkit_config(seed: int, steps: int, run_dir: Path, fused: bool):
    from rlkit.agents.dqn import AGENT

    from rlkit.config import apply_overrides, resolve_preset

    cfg = apply_overrides(AGENT.config_cls(), resolve_preset(AGENT.presets(), "minatar-breakout", "dqn"))
    return apply_overrides(cfg, {"seed": seed, "total_steps": steps, "exploration_fraction": 0.1,
                                 "run_dir": str(run_dir), "progress": False, "eval_every": 0, "eval_episodes": 1,
                                 "checkpoint_every": 0, "save_buffer": False, "tensorboard": False,
                                 "fused_update": fused})


def run_rlkit(seeds: list[int], steps: int, root: Path, fused: bool = True) -> dict:
    """One seed (``train``) or several in one process (``train_seeds``: their rounds stacked)."""
    from rlkit.agents.dqn import train, train_seeds

    tag = "fused" if fused else "plain"
    cfgs = [rlkit_config(s, steps, root / f"rlkit-{tag}-{len(seeds)}-{s}", fused) for s in seeds]
    t0, c0 = time.perf_counter(), time.process_time()
    finals = [train(cfgs[0])] if len(cfgs) == 1 else train_seeds(cfgs)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return timing(wall, cpu, steps * len(seeds)) | {"seeds": seeds, "final_eval": [f["eval"]["mean"] for f in finals]}


class MinAtarExtractor(nn.Module):
    """SB3 features extractor with rlkit.nets.MinAtarCNN's layers: conv 3x3x16 (stride 1, no padding), ReLU,
    flatten, 128 units, ReLU."""

    def __init__(self, observation_space, features_dim: int = 128) -> None:
        super().__init__()
        self.features_dim = features_dim
        channels, height, width = observation_space.shape
        self.net = nn.Sequential(nn.Conv2d(channels, 16, 3, stride=1), nn.ReLU(), nn.Flatten(),
                                 nn.Linear(16 * (height - 2) * (width - 2), features_dim), nn.ReLU())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


def run_sb3(seed: int, steps: int) -> dict:
    from rlkit.envs import make_env
    from stable_baselines3 import DQN
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

    class Extractor(BaseFeaturesExtractor):
        def __init__(self, observation_space, features_dim: int = 128) -> None:
            super().__init__(observation_space, features_dim)
            self.body = MinAtarExtractor(observation_space, features_dim)

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            return self.body(obs)

    model = DQN("CnnPolicy", make_env(GAME, seed=seed), seed=seed, verbose=0, device="cpu",
                learning_rate=0.001953125, buffer_size=100_000, learning_starts=5_000, batch_size=32, tau=1.0,
                gamma=0.99, train_freq=1, gradient_steps=1, target_update_interval=1_000,
                exploration_fraction=0.1, exploration_initial_eps=1.0, exploration_final_eps=0.1,
                max_grad_norm=1e12, optimize_memory_usage=False,
                policy_kwargs=dict(features_extractor_class=Extractor, features_extractor_kwargs={"features_dim": 128},
                                   net_arch=[], normalize_images=False, optimizer_class=torch.optim.RMSprop,
                                   optimizer_kwargs=dict(alpha=0.95, centered=True, eps=0.01)))
    t0, c0 = time.perf_counter(), time.process_time()
    model.learn(steps)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return timing(wall, cpu, steps) | {"seeds": [seed]}


def timing(wall: float, cpu: float, frames: int) -> dict:
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "frames": frames,
            "frames_per_s": round(frames / wall, 1), "cpu_ms_per_frame": round(cpu / frames * 1e3, 3),
            "hours_per_5M_frame_seed_cpu": round(cpu / frames * PAPER_FRAMES / 3600, 2)}


def warm_up() -> None:
    """Pay one-time imports (torch's optimizers import torch._dynamo) before anything is timed."""
    import stable_baselines3  # noqa: F401
    from rlkit.agents import dqn  # noqa: F401

    param = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.RMSprop([param], centered=True)
    param.sum().backward()
    optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30_000, help="frames per seed (5000 before the first update)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/minatar_dqn.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warm_up()
    root = Path(tempfile.mkdtemp(dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    runs = {"sb3": run_sb3(args.seed, args.steps),
            "rlkit_fused": run_rlkit([args.seed], args.steps, root),
            "rlkit_plain_autograd": run_rlkit([args.seed], args.steps, root, fused=False),
            "rlkit_fused_5_seeds_stacked": run_rlkit(list(range(args.seed, args.seed + 5)), args.steps, root)}
    sb3 = runs["sb3"]["cpu_ms_per_frame"]
    result = {
        "benchmark": "MinAtar Breakout DQN speed (MinAtar paper settings), rlkit vs SB3, one torch thread",
        "command": "python " + " ".join(sys.argv), "game": GAME, "steps_per_seed": args.steps,
        "updates_per_seed": args.steps - 5_000,
        "runs": runs,
        "cpu_per_frame_vs_sb3": {name: round(run["cpu_ms_per_frame"] / sb3, 3) for name, run in runs.items()},
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "processor": platform.processor() or platform.machine()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["cpu_per_frame_vs_sb3"], indent=2))


if __name__ == "__main__":
    main()
