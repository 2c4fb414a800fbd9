"""Demonstration pipeline benchmarks (issue 5), each measured side by side in one run.

1. Recording overhead: ``demos.record`` vs. stepping the same policy in the same env with the same
   reset seeds without recording, on CartPole-v1 over 20k steps; paired repetitions (the two back to
   back, order alternating), the overhead being the median of the pairs' process-CPU-time ratios with
   a bootstrap 95% interval (wall time too; both swing by +-30% between runs on a shared machine, and
   pairing cancels the slow phases). Because even the paired figure is noisy here, the instructions
   each side executes are counted too, under valgrind's callgrind with a fixed hash seed: a count
   that does not depend on the machine's load (user space only; the kernel's share is in CPU time).
   imitation's
   ``rollout.rollout`` + ``serialize.save`` of the same policy and episodes is timed alongside as the
   reference. Target: overhead <= 10% with a scripted expert (40 episodes of 500 steps). A random
   policy (about 900 episodes of ~22 steps, so the per-episode file write dominates) is reported too.
2. Loading 1M CartPole transitions (2,000 expert episodes) into the transitions view; target < 2 s.
   Reference: imitation's ``serialize.load`` + ``rollout.flatten_trajectories`` of the same episodes.
3. Atari bytes: a PongNoFrameskip-v4 dataset vs. its frames (every 84x84 frame once) compressed
   alone with zlib; target <= 2x. Compressing the 4-frame stacks as they come is shown for contrast.

Run: ``.venv/bin/python benchmarks/bench_demos.py [--quick]`` -> benchmarks/results/demos.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import record_side  # benchmarks/record_side.py, beside this script
import torch
from rlkit.demos import scripted
from rlkit.demos.record import dir_bytes
from rlkit.demos.sources import FunctionPolicy
from rlkit.envs import make_env

from rlkit import demos
from rlkit.policy import RandomPolicy

torch.set_num_threads(1)
datasets.disable_progress_bars()  # imitation's serialize.save draws a bar per save
RESULTS = Path(__file__).resolve().parent / "results" / "demos.json"


def step_without_recording(policy: Any, env_id: str, episodes: int, seed: int) -> tuple[float, float, int]:
    """The recorder's loop minus the dataset (record_side.py); returns (wall s, process CPU s, steps)."""
    t0, c0 = time.perf_counter(), time.process_time()
    steps = record_side.step_without_recording(policy, env_id, episodes, seed)
    return time.perf_counter() - t0, time.process_time() - c0, steps


def episodes_for_steps(policy: Any, steps: int, seed: int) -> int:
    """How many episodes from ``seed`` on add up to at least ``steps`` steps (lengths are seeded)."""
    env = make_env("CartPole-v1", seed=seed)
    total, i = 0, 0
    while total < steps:
        obs, _ = env.reset(seed=seed + i)
        done = False
        while not done:
            obs, _, terminated, truncated, _ = env.step(int(policy.act(np.asarray(obs)[None])[0]))
            total += 1
            done = terminated or truncated
        i += 1
    return i


def imitation_rollout_and_save(policy: Any, episodes: int, seed: int, out: Path) -> float:
    from imitation.data import rollout, serialize
    from imitation.data.wrappers import RolloutInfoWrapper
    from stable_baselines3.common.vec_env import DummyVecEnv

    from rlkit.policy import SB3PredictAdapter

    t0 = time.perf_counter()
    venv = DummyVecEnv([lambda: RolloutInfoWrapper(make_env("CartPole-v1"))])
    venv.seed(seed)
    adapter = SB3PredictAdapter(policy, venv.observation_space, venv.action_space)
    trajs = rollout.rollout(adapter, venv, rollout.make_sample_until(min_episodes=episodes),
                            rng=np.random.default_rng(seed), exclude_infos=True)
    serialize.save(out, trajs)
    venv.close()
    return time.perf_counter() - t0


def bench_overhead(steps: int, reps: int, tmp: Path) -> dict[str, Any]:
    """Paired runs: each repetition steps without recording and records, back to back (order alternating).

    The overhead is the median over repetitions of (record CPU / plain CPU) - 1, with a bootstrap 95%
    interval of that median: pairing cancels the slow and fast phases of a shared machine, which swing a
    single 0.5 s run by +-30%.
    """
    action_space = make_env("CartPole-v1").action_space
    makers = {"scripted_expert": lambda: FunctionPolicy(scripted.cartpole),
              "random": lambda: RandomPolicy(action_space, seed=0)}
    rng = np.random.default_rng(0)
    results = {}
    for name, make_policy in makers.items():
        episodes = episodes_for_steps(make_policy(), steps, seed=0)
        plain, rec, plain_cpu, rec_cpu = [], [], [], []
        for r in range(reps):
            for side in (("plain", "record") if r % 2 == 0 else ("record", "plain")):
                if side == "plain":
                    wall, cpu, n = step_without_recording(make_policy(), "CartPole-v1", episodes, seed=0)
                    plain.append(wall)
                    plain_cpu.append(cpu)
                else:
                    path = tmp / f"rec-{name}-{r}"
                    t0, c0 = time.perf_counter(), time.process_time()
                    stats = demos.record(make_policy(), "CartPole-v1", episodes, path, seed=0)
                    rec.append(time.perf_counter() - t0)
                    rec_cpu.append(time.process_time() - c0)
                    shutil.rmtree(path)
        assert stats["steps"] == n, "both sides must run the same steps"
        reference = imitation_rollout_and_save(make_policy(), episodes, 0, tmp / f"imi-{name}")
        paired = {"cpu": np.array(rec_cpu) / np.array(plain_cpu) - 1, "wall": np.array(rec) / np.array(plain) - 1}
        summary = {}
        for kind, overheads in paired.items():
            boot = np.median(rng.choice(overheads, (10_000, len(overheads))), axis=1)
            summary[kind] = {"median": float(np.median(overheads)),
                             "ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]}
        results[name] = {"steps": n, "episodes": episodes, "reps": reps, "plain_s": plain, "record_s": rec,
                         "plain_cpu_s": plain_cpu, "record_cpu_s": rec_cpu,
                         "overhead_cpu": summary["cpu"]["median"], "overhead_cpu_ci95": summary["cpu"]["ci95"],
                         "overhead_wall": summary["wall"]["median"], "overhead_wall_ci95": summary["wall"]["ci95"],
                         "plain_cpu_median_s": statistics.median(plain_cpu),
                         "record_cpu_median_s": statistics.median(rec_cpu),
                         "imitation_rollout_save_s": reference}
        print(f"[overhead] {name}: {n} steps / {episodes} episodes, {reps} paired runs: CPU plain "
              f"{statistics.median(plain_cpu):.3f}s, record {statistics.median(rec_cpu):.3f}s; overhead (median "
              f"of pairs) CPU {100 * summary['cpu']['median']:+.1f}% (95% CI {100 * summary['cpu']['ci95'][0]:+.1f}"
              f"..{100 * summary['cpu']['ci95'][1]:+.1f}%), wall {100 * summary['wall']['median']:+.1f}%; "
              f"imitation rollout+save {reference:.3f}s (wall)", flush=True)
    return results


def bench_instructions(steps: int) -> dict[str, Any] | None:
    """Instructions executed by each side (minus an import-only run), counted by callgrind."""
    if shutil.which("valgrind") is None:
        print("[instructions] valgrind not found; skipped", flush=True)
        return None
    episodes = episodes_for_steps(FunctionPolicy(scripted.cartpole), steps, seed=0)
    env = {**os.environ, "PYTHONHASHSEED": "0"}  # dict probing depends on the string hash seed
    script = Path(__file__).resolve().parent / "record_side.py"
    procs = {side: subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                                     str(script), side, str(episodes)], stderr=subprocess.PIPE, text=True, env=env)
             for side in ("none", "plain", "record")}
    counts = {}
    for side, proc in procs.items():
        err = proc.communicate()[1]
        if proc.returncode != 0:
            raise RuntimeError(f"record_side.py {side} failed under valgrind:\n{err[-2000:]}")
        counts[side] = int(re.search(r"I\s+refs:\s+([\d,]+)", err).group(1).replace(",", ""))
    plain, record = counts["plain"] - counts["none"], counts["record"] - counts["none"]
    result = {"episodes": episodes, "plain_instructions": plain, "record_instructions": record,
              "overhead": record / plain - 1, "import_only_instructions": counts["none"]}
    print(f"[instructions] scripted expert, {episodes} episodes: plain {plain / 1e6:.0f}M, record "
          f"{record / 1e6:.0f}M -> {100 * result['overhead']:+.1f}%", flush=True)
    return result


def bench_load(episodes: int, tmp: Path) -> dict[str, Any]:
    from imitation.data import rollout, serialize

    path = tmp / "load"
    t0 = time.perf_counter()
    demos.record(FunctionPolicy(scripted.cartpole), "CartPole-v1", episodes, path, seed=0)
    record_s = time.perf_counter() - t0
    demos.save_imitation(demos.load(path), tmp / "load-imitation")
    timings: dict[str, list[float]] = {"rlkit_load": [], "rlkit_transitions": [], "rlkit_torch": [],
                                       "imitation_load_flatten": []}
    for _ in range(3):
        t0 = time.perf_counter()
        ds = demos.load(path)
        t1 = time.perf_counter()
        tr = ds.transitions()
        t2 = time.perf_counter()
        ds.transitions(torch=True)
        t3 = time.perf_counter()
        timings["rlkit_load"].append(t1 - t0)
        timings["rlkit_transitions"].append(t2 - t1)
        timings["rlkit_torch"].append(t3 - t2)
        t0 = time.perf_counter()
        flat = rollout.flatten_trajectories(list(serialize.load(tmp / "load-imitation")))
        timings["imitation_load_flatten"].append(time.perf_counter() - t0)
        assert len(flat) == len(tr.acts)
        num_transitions = len(tr.acts)
        del ds, tr, flat
    best = {k: min(v) for k, v in timings.items()}
    result = {"transitions": num_transitions, "episodes": episodes,
              "bytes": dir_bytes(path), "record_s": record_s, "timings_s": timings,
              "load_plus_transitions_s": best["rlkit_load"] + best["rlkit_transitions"],
              "imitation_load_flatten_s": best["imitation_load_flatten"]}
    print(f"[load] {result['transitions']} transitions ({result['bytes'] / 1e6:.1f} MB on disk): load "
          f"{best['rlkit_load']:.2f}s + transitions {best['rlkit_transitions']:.2f}s = "
          f"{result['load_plus_transitions_s']:.2f}s (torch view {best['rlkit_torch']:.2f}s); imitation "
          f"load+flatten {best['imitation_load_flatten']:.2f}s", flush=True)
    return result


def bench_atari_bytes(episodes: int, max_frames: int, tmp: Path) -> dict[str, Any]:
    path = tmp / "pong"
    env_kwargs = {"max_episode_steps": max_frames}
    demos.record(demos.resolve_policy("random", "PongNoFrameskip-v4", env_kwargs=env_kwargs), "PongNoFrameskip-v4",
                 episodes, path, seed=0, env_kwargs=env_kwargs)
    ds = demos.load(path)
    # every frame once: the reset stack, then the newest frame of each step's observation
    frames = np.concatenate([np.concatenate([ep.obs[0], ep.obs[1:, -1]]) for ep in ds])
    frames_z = len(zlib.compress(frames.tobytes(), 6))  # np.savez_compressed's deflate level
    stacks_z = sum(len(zlib.compress(ep.obs.tobytes(), 6)) for ep in ds)
    dataset_bytes = dir_bytes(path)
    result = {"episodes": len(ds), "steps": ds.num_steps, "frames": len(frames), "frames_raw_bytes": frames.nbytes,
              "frames_compressed_bytes": frames_z, "stacked_obs_compressed_bytes": stacks_z,
              "dataset_bytes": dataset_bytes, "ratio": dataset_bytes / frames_z}
    print(f"[atari] {len(ds)} episodes, {ds.num_steps} steps, {len(frames)} frames: "
          f"dataset {dataset_bytes / 1e3:.0f} kB, "
          f"frames compressed alone {frames_z / 1e3:.0f} kB -> {result['ratio']:.2f}x "
          f"(stacked obs compressed: {stacks_z / 1e3:.0f} kB)", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="demonstration pipeline benchmarks")
    parser.add_argument("--quick", action="store_true", help="reduced scale (smoke run)")
    parser.add_argument("--reps", "--seeds", type=int, default=41,
                        help="paired repetitions of the overhead test (--seeds is an alias: the scripted expert is "
                             "deterministic, so repetitions are what more seeds would add)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON file (a --quick run writes only if given)")
    args = parser.parse_args()
    scale = {"steps": 20_000, "load_episodes": 2_000, "atari_episodes": 3, "atari_frames": 2_000}
    if args.quick:
        scale = {"steps": 5_000, "load_episodes": 100, "atari_episodes": 1, "atari_frames": 400}
    with tempfile.TemporaryDirectory(prefix="bench-demos-") as tmp:
        tmp_path = Path(tmp)
        results = {"scale": scale, "quick": args.quick, "versions": demos.dataset.versions(),
                   "overhead": bench_overhead(scale["steps"], args.reps, tmp_path),
                   "overhead_instructions": bench_instructions(scale["steps"]),
                   "load": bench_load(scale["load_episodes"], tmp_path),
                   "atari": bench_atari_bytes(scale["atari_episodes"], scale["atari_frames"], tmp_path)}
    # judged on the paired CPU-time median, and on instructions where valgrind is present (load-independent)
    instructions = results["overhead_instructions"]
    results["targets"] = {"overhead_le_10pct": results["overhead"]["scripted_expert"]["overhead_cpu"] <= 0.10,
                          "overhead_instructions_le_10pct": instructions["overhead"] <= 0.10 if instructions else None,
                          "load_1m_lt_2s": results["load"]["load_plus_transitions_s"] < 2.0,
                          "atari_bytes_le_2x": results["atari"]["ratio"] <= 2.0}
    print("targets:", results["targets"])
    if not args.quick or args.out != RESULTS:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
