"""One side of bench_demos.py's instruction count, in a process of its own that imports only what it runs.

``python benchmarks/record_side.py none|plain|record EPISODES``: ``none`` imports and stops (the baseline
subtracted from the other two), ``plain`` steps the scripted CartPole expert without recording,
``record`` records it with ``demos.record``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from rlkit.demos import scripted
from rlkit.demos.sources import FunctionPolicy
from rlkit.envs import make_env

from rlkit import demos


def step_without_recording(policy: FunctionPolicy, env_id: str, episodes: int, seed: int) -> int:
    """The recorder's loop minus the dataset: same env factory, resets, policy calls and casts."""
    env = make_env(env_id, seed=seed)
    dtype, steps = env.action_space.dtype, 0
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        obs = np.asarray(obs)
        while True:
            action = np.asarray(policy.act(obs[None], True)[0], dtype=dtype)
            obs, _, terminated, truncated, _ = env.step(action)
            obs = np.asarray(obs)
            steps += 1
            if terminated or truncated:
                break
    env.close()
    return steps


def main() -> None:
    side, episodes = sys.argv[1], int(sys.argv[2])
    policy = FunctionPolicy(scripted.cartpole)
    if side == "plain":
        step_without_recording(policy, "CartPole-v1", episodes, seed=0)
    elif side == "record":
        with tempfile.TemporaryDirectory() as tmp:
            demos.record(policy, "CartPole-v1", episodes, Path(tmp) / "ds", seed=0)


if __name__ == "__main__":
    main()
