"""The recorder: run any Policy in an env and write each finished episode to a dataset.

Episode ``i`` of a call is reset with ``seed + i`` (and ``reset_options``); both are stored, so
``rlkit demos replay`` can rebuild it. An interrupted recording (Ctrl-C, a crash, kill -9) keeps
every episode committed before it; the episode in progress is dropped.

Interactive policies (the human keyboard source) follow :class:`demos.protocol.InteractivePolicy`:
the env is rendered for them, they are told when an episode begins, they may discard the episode in
progress or stop the recording, and they are closed at the end. ``record`` takes a Policy object; the
CLI (and scripts, through :func:`demos.resolve_policy`) turn ``SOURCE`` strings into one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rlkit.demos.protocol import DiscardEpisode, StopRecording, is_interactive
from rlkit.demos.writer import DatasetWriter

from rlkit.errors import RLKitError

if TYPE_CHECKING:  # importing rlkit.policy pulls in torch; `import demos` stays light for the CLI
    from rlkit.policy import Policy


def dir_bytes(path: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _join(chunks: list[bytes], dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """Per-step ``tobytes()`` chunks of arrays of ``dtype`` and ``shape`` as one (len(chunks), *shape) array."""
    data = b"".join(chunks)
    if len(data) != len(chunks) * dtype.itemsize * math.prod(shape):
        raise RLKitError(f"the env's observations or actions changed dtype or shape within an episode (expected "
                         f"{dtype} {shape}); make it return arrays of its declared space")
    return np.frombuffer(data, dtype=dtype).reshape(len(chunks), *shape)


def record(policy: Policy, env_id: str, episodes: int, out: str | Path, seed: int = 0,
           keep_rewards: bool = False, source: str | None = None, env_kwargs: dict[str, Any] | None = None,
           append: bool = False, deterministic: bool = True, reset_options: dict[str, Any] | None = None,
           fsync: bool = False, on_episode: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Record ``episodes`` episodes of ``policy`` in ``env_id`` into the dataset ``out``.

    Args:
        policy: a Policy (``demos.resolve_policy(SOURCE, env_id)`` builds one from a source string);
            an :class:`~demos.protocol.InteractivePolicy` gets the episode hooks.
        env_id: the env (any ``gymnasium.make`` id, made through ``envs.make_env``).
        episodes: number of episodes to commit.
        out: dataset directory.
        seed: episode ``i`` is reset with ``seed + i``.
        keep_rewards: store per-step rewards (off by default: imitation learners must not see them).
        source: the policy source stored in the metadata (default: the policy's class name).
        env_kwargs: keyword arguments of the env (``max_episode_steps`` caps episodes).
        append: add to an existing dataset of the same env and spaces.
        deterministic: greedy actions from the policy.
        reset_options: the ``options`` of every reset (stored per episode).
        fsync: flush each episode to the disk too (power-loss safety).
        on_episode: called with a small dict after each committed episode (progress output).

    Returns:
        Statistics: episodes and steps recorded, returns and lengths, dataset size, wall time.
    """
    from rlkit.envs import make_env

    if episodes < 1:
        raise RLKitError(f"episodes must be at least 1; got {episodes}")
    if isinstance(policy, str):
        raise RLKitError(f"record() takes a Policy, not the source string {policy!r}; build one with "
                         f"demos.resolve_policy({policy!r}, {env_id!r}) and pass source={policy!r}")
    if not callable(getattr(policy, "act", None)):
        raise RLKitError(f"record() takes a Policy (an object with act(obs_batch, deterministic)); got "
                         f"{type(policy).__name__}")
    source = source or type(policy).__name__
    interactive = is_interactive(policy)
    t0 = time.perf_counter()
    env = make_env(env_id, seed=seed, render_mode="rgb_array" if interactive and policy.needs_render else None,
                   env_kwargs=env_kwargs)
    writer = None
    returns: list[float] = []
    lengths: list[int] = []
    discarded, stopped = 0, False
    try:
        writer = DatasetWriter(out, env_id, env.observation_space, env.action_space, source,
                               env_kwargs=env_kwargs, append=append, fsync=fsync)
        obs_space, act_space = env.observation_space, env.action_space
        i = 0
        while i < episodes:
            obs, _ = env.reset(seed=seed + i, options=reset_options)
            obs = np.asarray(obs)
            # Each step's obs and action are kept as bytes and joined into arrays once per episode: half the
            # recorder's CPU cost went to np.array() over hundreds of small arrays and to freeing them.
            obs_chunks, action_chunks, rewards = [obs.tobytes()], [], []
            obs_dtype = obs.dtype  # the env's (add_episode casts to the space's); np.asarray(obs, dtype) costs more
            total = 0.0
            if interactive:
                policy.begin_episode(env, i, episodes)
            try:
                while True:
                    # cast before stepping so that replaying the stored (cast) action is exact
                    action = np.asarray(policy.act(obs[None], deterministic)[0], dtype=act_space.dtype)
                    obs, reward, terminated, truncated, _ = env.step(action)
                    obs = np.asarray(obs)
                    obs_chunks.append(obs.tobytes())
                    action_chunks.append(action.tobytes())
                    if keep_rewards:
                        rewards.append(reward)
                    total += float(reward)
                    if terminated or truncated:
                        break
            except DiscardEpisode:
                discarded += 1
                continue
            except StopRecording:
                stopped = True
                break
            index = writer.add_episode(_join(obs_chunks, obs_dtype, obs_space.shape),
                                       _join(action_chunks, act_space.dtype, act_space.shape), terminated,
                                       truncated, seed + i, options=reset_options,
                                       rewards=rewards if keep_rewards else None, episode_return=total)
            returns.append(total)
            lengths.append(len(action_chunks))
            i += 1
            if on_episode is not None:
                on_episode({"episode": i, "of": episodes, "index": index, "return": total, "length": lengths[-1]})
    finally:
        if writer is not None:
            writer.close()
        env.close()
        if interactive:
            policy.close()
    return {"out": str(out), "env_id": env_id, "source": source, "episodes": len(returns),
            "total_episodes": writer.num_episodes, "steps": int(sum(lengths)),
            "mean_return": float(np.mean(returns)) if returns else None,
            "std_return": float(np.std(returns)) if returns else None,
            "mean_length": float(np.mean(lengths)) if lengths else None,
            "returns": returns, "lengths": lengths, "discarded": discarded, "stopped_early": stopped,
            "bytes": dir_bytes(out), "wall_s": time.perf_counter() - t0}
