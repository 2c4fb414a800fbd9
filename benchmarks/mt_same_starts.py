"""Single-task vs multi-task learners evaluated on the same start states (issue 24).

`rlkit reproduce`'s multi-task evaluation plays episode i (reset seed 10000 + i) on task (10000 + i) % 4, so task k
sees the start states of seeds 10000 + k + 4j; the single-task baseline's run for task k (split_tasks) evaluates on
seeds 10000 + j instead. On Pendulum, where the return depends on the start state as much as on the policy (a solved
task's return varies by tens between start states), that difference alone moves a task's mean. This script
re-evaluates every final policy of the reproductions of one family the same way: on the suite's round-robin
evaluation, 4 x EPISODES episodes from seed 10000, keeping each single-task run's own task's episodes. The
multi-task rows reproduce their reports' per-task figures (a check); the single-task row is the like-for-like one.

    python benchmarks/mt_same_starts.py sac-pendulum-mt [--episodes 5] [--out benchmarks/results/...json]

Reads the runs' checkpoints under benchmarks/results/reproduce/FAMILY*/seed_S (kept on the machine that ran them).
"""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

from rlkit.envs import make_env

from rlkit.apps import reports
from rlkit.checkpoint import atomic_write_text, load_checkpoint
from rlkit.evaluation import evaluate
from rlkit.registry import get_agent

ROOT = Path(__file__).resolve().parents[1]
LEARNERS = {"-single": "single-task", "": "hard sharing", "-conditioned": "task-conditioned",
            "-pcgrad": "hard sharing + PCGrad"}


def per_task_returns(run_dir: Path, env_id: str, episodes: int) -> dict[str, float]:
    """The final policy of ``run_dir`` on the suite's round-robin evaluation: each task's mean return."""
    state = load_checkpoint(run_dir)
    policy = get_agent(state["agent"]).load_policy(state)
    result = evaluate(policy, partial(make_env, env_id), episodes=episodes * n_tasks(env_id), seed=10_000)
    return result["per_task"]


def n_tasks(env_id: str) -> int:
    from rlkit.envs.multitask import task_count

    return task_count(env_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family", help="dqn-cartpole-mt or sac-pendulum-mt")
    parser.add_argument("--episodes", type=int, default=5, help="episodes per task (the presets' 5)")
    parser.add_argument("--out", default=None, help="JSON (default benchmarks/results/FAMILY_same_starts.json)")
    args = parser.parse_args()
    results_dir = ROOT / "benchmarks" / "results" / "reproduce"
    env_id = json.loads((results_dir / args.family / "results.json").read_text())["env_id"]
    tasks = [str(k) for k in range(n_tasks(env_id))]
    rows = {}
    for suffix, label in LEARNERS.items():
        preset = args.family + suffix
        seeds = sorted(results_dir.joinpath(preset).glob("seed_*"), key=lambda p: int(p.name.split("_")[1]))
        table = []  # (seeds, tasks)
        for seed_dir in seeds:
            if suffix == "-single":  # task k's own run, on task k's episodes of the round-robin evaluation
                table.append([per_task_returns(seed_dir / f"task_{k}", env_id, args.episodes)[k] for k in tasks])
            else:
                returns = per_task_returns(seed_dir, env_id, args.episodes)
                table.append([returns[k] for k in tasks])
            print(f"{preset} {seed_dir.name}: " + ", ".join(f"{v:.1f}" for v in table[-1]), flush=True)
        rows[preset] = {"learner": label, "per_seed": table,
                        "per_task": {k: reports.summarize([row[i] for row in table]) for i, k in enumerate(tasks)},
                        "tasks_aggregate": reports.summarize(table)}
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"{args.family}_same_starts.json"
    atomic_write_text(out, json.dumps({"family": args.family, "env_id": env_id, "episodes_per_task": args.episodes,
                                       "first_seed": 10_000, "protocol": __doc__.split("\n\n")[1].replace("\n", " "),
                                       "rows": rows}, indent=1))
    for preset, row in rows.items():
        agg = row["tasks_aggregate"]
        print(f"{preset}: " + " | ".join(f"{row['per_task'][k]['mean']:.1f}" for k in tasks)
              + f" | mean {agg['mean']:.1f} [{agg['mean_ci'][0]:.1f}, {agg['mean_ci'][1]:.1f}]"
              + f" | IQM {agg['iqm']:.1f} [{agg['iqm_ci'][0]:.1f}, {agg['iqm_ci'][1]:.1f}]")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
