"""Replay (re-run stored actions from stored seeds, verify, render) and inspection of datasets."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rlkit.demos.dataset import Dataset, Episode
from rlkit.demos.reader import DataFiles, check_coverage, coverage_error, index_lines, load, read_index, read_manifest
from rlkit.demos.record import dir_bytes

from rlkit.errors import RLKitError


def parse_episode_list(text: str) -> list[int]:
    """``"0,2-4"`` -> ``[0, 2, 3, 4]`` (episode indices as stored on disk)."""
    out: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            lo, sep, hi = part.partition("-")
            first, last = int(lo), int(hi) if sep else int(lo)
            if first < 0 or last < first:
                raise ValueError(part)
            out.extend(range(first, last + 1))
    except ValueError:
        raise RLKitError(f"bad episode list {text!r}; use indices and ranges like 0,2-4") from None
    if not out:
        raise RLKitError("empty episode list; use indices and ranges like 0,2-4")
    return sorted(set(out))


def _first_mismatch(got: np.ndarray, want: np.ndarray, atol: float, rtol: float) -> float | None:
    """The largest absolute difference when ``got`` and ``want`` differ beyond tolerance, else None."""
    if got.shape != want.shape:
        return float("inf")
    if np.allclose(got, want, atol=atol, rtol=rtol, equal_nan=True):
        return None
    return float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))


def replay_episode(env: Any, ep: Episode, verify: bool, atol: float, rtol: float,
                   frames: list[np.ndarray] | None) -> dict[str, Any]:
    """Reset ``env`` with the episode's seed and options and re-run its actions."""
    result: dict[str, Any] = {"index": ep.index, "seed": ep.seed, "length": ep.length, "status": "reproduced",
                              "diverged_at": None, "reason": None, "replay_return": 0.0}
    if ep.seed is None:
        return {**result, "status": "unreplayable", "reason": "no reset seed stored (converted from imitation?)"}

    def diverge(step: int, reason: str) -> dict[str, Any]:
        return {**result, "status": "diverged", "diverged_at": step, "reason": reason}

    obs, _ = env.reset(seed=ep.seed, options=ep.options)
    if frames is not None:
        frames.append(env.render())
    if verify and (err := _first_mismatch(np.asarray(obs), ep.obs[0], atol, rtol)) is not None:
        return diverge(0, f"reset observation differs (max abs diff {err:.3g})")
    terminated = truncated = False
    for t, action in enumerate(ep.actions):
        if terminated or truncated:
            return diverge(t, f"the env ended the episode after {t} steps, the recording after {ep.length}")
        obs, reward, terminated, truncated, _ = env.step(action)
        result["replay_return"] += float(reward)
        if frames is not None:
            frames.append(env.render())
        if verify and (err := _first_mismatch(np.asarray(obs), ep.obs[t + 1], atol, rtol)) is not None:
            return diverge(t + 1, f"observation differs (max abs diff {err:.3g})")
    if verify and (bool(terminated), bool(truncated)) != (ep.terminated, ep.truncated):
        return diverge(ep.length, f"end flags differ: terminated={terminated} truncated={truncated}, "
                                  f"recorded terminated={ep.terminated} truncated={ep.truncated}")
    return result


def replay(dataset: Dataset | str | Path, episodes: Sequence[int] | None = None, verify: bool = True,
           video: str | Path | None = None, atol: float = 1e-5, rtol: float = 1e-5, skip_corrupt: bool = False,
           max_video_frames: int = 20_000, env_id: str | None = None) -> dict[str, Any]:
    """Rebuild the env from the dataset's metadata and re-run episodes from their stored seeds.

    Args:
        dataset: a loaded Dataset or a dataset directory.
        episodes: on-disk episode indices to replay (default: all).
        verify: compare every observation with the stored one (``np.allclose`` with atol/rtol; exact
            for integer observations) and the end flags; report the first step that diverges.
        video: write the replayed frames to this .mp4 or .gif.
        skip_corrupt: when loading from a path, skip damaged episodes.
        env_id: the env to replay in (it must be the recorded env); a manifest's ``pkg.module:Env-v0``
            id is imported only when named here (CLI: ``--env``), since the dataset may come from others.

    Returns:
        ``{"env_id", "episodes": [{"index", "seed", "length", "status", "diverged_at", "reason",
        "replay_return"}], "replayed", "reproduced", "diverged", "unreplayable", "all_reproduced", "wall_s"}``.
    """
    from rlkit.envs import make_env

    from rlkit.evaluation import write_video

    t0 = time.perf_counter()
    if not (atol >= 0 and rtol >= 0):
        raise RLKitError(f"atol and rtol must be non-negative; got {atol} and {rtol}")
    if not isinstance(dataset, Dataset):
        dataset = load(dataset, skip_corrupt=skip_corrupt, env_id=env_id)
    elif env_id is not None:
        dataset.check_env(env_id)
    make_id = env_id if env_id is not None else dataset.env_id
    by_index = {ep.index: ep for ep in dataset}
    if episodes is None:
        chosen = list(dataset)
    else:
        missing = [i for i in episodes if i not in by_index]
        if missing:
            raise RLKitError(f"episode(s) {missing} not in {dataset.path} (it has indices "
                             f"{min(by_index, default=0)}..{max(by_index, default=-1)})")
        chosen = [by_index[i] for i in episodes]
    meta = dataset.meta
    env = make_env(make_id, render_mode="rgb_array" if video else None, env_kwargs=meta.get("env_kwargs"))
    frames: list[np.ndarray] | None = [] if video else None
    results = []
    try:
        for ep in chosen:
            keep = frames if frames is not None and len(frames) < max_video_frames else None
            results.append(replay_episode(env, ep, verify, atol, rtol, keep))
    finally:
        env.close()
    out: dict[str, Any] = {"env_id": meta["env_id"], "path": str(dataset.path), "verified": verify,
                           "episodes": results, "replayed": len(results)}
    for status in ("reproduced", "diverged", "unreplayable"):
        out[status] = sum(r["status"] == status for r in results)
    out["all_reproduced"] = out["reproduced"] == len(results)
    if video:
        fps = env.metadata.get("render_fps") or 30
        out["video"] = str(write_video(frames or [], video, fps=int(fps)))
    out["wall_s"] = time.perf_counter() - t0
    return out


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std()), "min": float(arr.min()), "max": float(arr.max())}


def inspect_dataset(path: str | Path, check: bool = False) -> dict[str, Any]:
    """Summary of a dataset from its manifest and index (``check=True`` also verifies every checksum).

    Per-episode damage (a missing, cut or corrupt episode, a corrupt index line) is listed in
    ``problems``; damage to the whole (pack bytes no index line covers, a file that is not a regular
    file inside the dataset) raises a one-line RLKitError. ``uncommitted`` describes the archive a
    killed recorder may have left (the next ``record --append`` settles it).
    """
    root = Path(path)
    raw = read_manifest(root)
    records, bad_lines = read_index(root, skip_corrupt=True)
    lines, index_exists = index_lines(root)
    coverage = check_coverage(root, records, len(lines), index_exists)
    if coverage.damage and not bad_lines:  # with corrupt lines, their episodes' bytes are uncovered too
        raise coverage_error(root, coverage)
    tails = coverage.tails
    lengths = [r["length"] for r in records]
    returns = [r["episode_return"] for r in records if r.get("episode_return") is not None]
    problems = [reason for _, reason in bad_lines] + (coverage.damage if bad_lines else [])
    with DataFiles(root) as files:
        for r in records:
            try:
                files.episode_bytes(r, verify=check)
            except RLKitError as e:
                problems.append(str(e))
    with_rewards = sum(bool(r.get("rewards")) for r in records)
    return {
        "path": str(root), "format_version": raw["format_version"], "env_id": raw["env_id"],
        "env_kwargs": raw["env_kwargs"], "source": raw["source"],
        "sources": sorted({r.get("source") or raw["source"] for r in records}),
        "versions": raw["versions"], "created": raw.get("created"),
        "observation_space": raw["observation_space"], "action_space": raw["action_space"],
        "episodes": len(records), "steps": int(sum(lengths)), "length": _stats(lengths),
        "returns": _stats(returns), "returns_known": len(returns),
        "rewards_kept": "all" if records and with_rewards == len(records) else "some" if with_rewards else "none",
        "terminated": sum(bool(r["terminated"]) for r in records),
        "truncated": sum(bool(r["truncated"]) for r in records),
        "bytes": dir_bytes(root), "checked": check, "problems": problems,
        "uncommitted": [{"file": t["file"], "offset": t["offset"], "bytes": t["bytes"], "complete": t["complete"]}
                        for t in tails],
    }
