"""Evaluate any Policy on fresh, separately seeded episodes; optionally render a video."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from rlkit.policy import Policy


def evaluate(policy: Policy, make_env: Callable[..., gym.Env], episodes: int = 10, seed: int = 10_000,
             deterministic: bool = True, video: str | Path | None = None, max_video_frames: int = 5_000
             ) -> dict[str, Any]:
    """Run ``episodes`` episodes, episode ``i`` reset with ``seed + i``.

    Args:
        policy: anything with ``act(obs_batch, deterministic)``.
        make_env: ``make_env(render_mode=...) -> gym.Env`` (e.g. a partial of ``envs.make_env``).
        episodes: number of episodes.
        seed: seed of the first episode; kept apart from training seeds.
        deterministic: greedy actions.
        video: write the episodes' frames to this file (.mp4 or .gif) through imageio.

    Returns:
        ``{"mean", "std", "episodes", "returns", "lengths"}``, and ``"per_task": {"0": mean, ...}`` when the
        env's ``reset`` info carries a ``"task"`` (a multi-task suite, :mod:`rlkit.envs.multitask`): each task's
        mean return over the episodes that played it, keyed by the task id as a string (JSON's keys).
    """
    env = make_env(render_mode="rgb_array" if video else None)
    env.action_space.seed(seed)
    returns, lengths, frames, tasks = [], [], [], []
    try:
        for i in range(episodes):
            obs, info = env.reset(seed=seed + i)
            # read from the env rather than assumed from the schedule: a fixed task or a uniform draw differ
            tasks.append(info.get("task") if isinstance(info, dict) else None)
            done, total, steps = False, 0.0, 0
            while not done:
                if video and len(frames) < max_video_frames:
                    frames.append(env.render())
                action = policy.act(np.asarray(obs)[None], deterministic=deterministic)[0]
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                steps += 1
                done = terminated or truncated
            returns.append(total)
            lengths.append(steps)
    finally:
        env.close()
    if video:
        write_video(frames, video, fps=env.metadata.get("render_fps", 30) or 30)
    result = {"mean": float(np.mean(returns)), "std": float(np.std(returns)), "episodes": episodes,
              "returns": returns, "lengths": lengths}
    if tasks and all(task is not None for task in tasks):
        result["per_task"] = per_task_means(returns, tasks)
    return result


def per_task_means(returns: list[float], tasks: list[Any]) -> dict[str, float]:
    """Each task's mean return over its episodes, ``{"0": ..., "1": ...}`` in task order (ids as strings)."""
    ids = sorted({int(task) for task in tasks})
    return {str(k): float(np.mean([r for r, t in zip(returns, tasks) if int(t) == k])) for k in ids}


def write_video(frames: list[np.ndarray], path: str | Path, fps: int = 30) -> Path:
    """Write RGB frames to an .mp4 (ffmpeg through imageio-ffmpeg) or .gif file."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = [np.asarray(f) for f in frames if f is not None]
    if path.suffix.lower() == ".gif":
        imageio.mimsave(path, frames, duration=1000 / fps, loop=0)
    else:
        # macro_block_size=1 keeps odd frame sizes (CartPole's 600x400 is fine, Atari's 160x210 too).
        with imageio.get_writer(path, fps=fps, codec="libx264", macro_block_size=1) as writer:
            for frame in frames:
                writer.append_data(frame)
    return path
