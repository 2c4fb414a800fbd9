"""``rlkit quickstart``: the whole imitation pipeline on CartPole-v1, in minutes on a laptop CPU.

1. train a DQN expert (the ``dqn`` ``cartpole`` preset) and take its best evaluation's checkpoint;
2. record demonstrations from it, without rewards;
3. replay-verify them (every episode must reproduce from its stored seed);
4. train BC on them, and DAgger starting from them with the DQN as the interactive expert;
5. evaluate expert, BC, DAgger and a random policy on the same unseen episode seeds;
6. print a table and write ``OUT/report.md`` with ``OUT/returns.png`` (returns per learner, and BC's
   return against the number of demonstrations), plus ``OUT/results.json``.

The same pipeline is a Python function, :func:`quickstart`, returning what results.json holds.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlkit.checkpoint import atomic_write_text
from rlkit.errors import RLKitError

ENV_ID = "CartPole-v1"
DEMO_COUNTS = (1, 2, 5, 10)


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "quickstart", help="expert -> demos -> BC and DAgger -> report, on CartPole-v1 in minutes",
        description="Train a DQN expert on CartPole-v1, record reward-free demonstrations, replay-verify them, "
                    "train BC and DAgger on them, evaluate expert/BC/DAgger/random and write OUT/report.md "
                    "with a plot.")
    p.add_argument("--out", default="quickstart-out", help="output directory (must be new or empty)")
    p.add_argument("--seed", type=int, default=0, help="seed of every stage")
    p.add_argument("--steps", type=int, default=None, help="DQN training steps (default: the preset's 50000)")
    p.add_argument("--demos", type=int, default=10, help="demonstration episodes to record")
    p.add_argument("--episodes", type=int, default=20, help="evaluation episodes per policy")
    p.add_argument("--dagger-rounds", type=int, default=3, help="DAgger rounds after the demonstrations")
    p.add_argument("--json", action="store_true", help="print results.json instead of the table")
    p.set_defaults(func=run_quickstart)


def run_quickstart(args: argparse.Namespace) -> int:
    results = quickstart(args.out, seed=args.seed, dqn_steps=args.steps, num_demos=args.demos,
                         eval_episodes=args.episodes, dagger_rounds=args.dagger_rounds,
                         log=(lambda _: None) if args.json else print)
    print(json.dumps(results, indent=2) if args.json else "\n" + results_table(results)
          + f"\n\nreport: {Path(args.out) / 'report.md'}  ({results['wall_s']:.0f}s in all)")
    return 0


def quickstart(out: str | Path, seed: int = 0, dqn_steps: int | None = None, num_demos: int = 10,
               eval_episodes: int = 20, dagger_rounds: int = 3, log: Callable[[str], None] = print
               ) -> dict[str, Any]:
    """Run the pipeline into ``out``; returns the results (also written to ``out/results.json``)."""
    from rlkit import demos, envs
    from rlkit.agents import bc, dagger, dqn
    from rlkit.config import apply_overrides, resolve_preset
    from rlkit.evaluation import evaluate
    from rlkit.policy import RandomPolicy, load_policy

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise RLKitError(f"{out} is not empty; pass --out NEW_DIR (the quickstart never overwrites)")
    if num_demos < 1 or eval_episodes < 1 or dagger_rounds < 0:
        raise RLKitError("--demos and --episodes must be at least 1, --dagger-rounds at least 0")
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    times: dict[str, float] = {}
    quiet = {"seed": seed, "progress": False, "eval_episodes": eval_episodes}

    def stage(name: str, t0: float) -> None:
        times[name] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    cfg = apply_overrides(dqn.DQNConfig(), resolve_preset(dqn.AGENT.presets(), "cartpole", "dqn"))
    cfg = apply_overrides(cfg, {**quiet, "run_dir": str(out / "runs" / "expert-dqn"),
                                **({"total_steps": dqn_steps} if dqn_steps else {})})
    log(f"[1/5] training a DQN expert on {ENV_ID} ({cfg.total_steps} steps)...")
    expert = dqn.train(cfg)
    # The expert is the run's best evaluation (checkpoints/best/), as an RL-Zoo user takes best_model.zip:
    # DQN on CartPole wobbles after it solves the task, and the demonstrations should come from its best.
    expert_policy = load_policy(expert["run_dir"], "best")
    expert["eval"] = evaluate(expert_policy, lambda render_mode=None: envs.make_env(ENV_ID, render_mode=render_mode),
                              eval_episodes, seed=cfg.eval_seed)
    stage("expert", t0)
    log(f"      expert (best checkpoint): {expert['eval']['mean']:.1f} ± {expert['eval']['std']:.1f} "
        f"({times['expert']:.0f}s)")

    t0 = time.perf_counter()
    log(f"[2/5] recording {num_demos} demonstrations without rewards, then replay-verifying them...")
    demo_dir = out / "demos"
    recorded = demos.record(expert_policy, ENV_ID, episodes=num_demos, out=demo_dir, seed=seed,
                            source=f"{expert['run_dir']} (best checkpoint)")
    verified = demos.replay(demo_dir, verify=True)
    if not verified["all_reproduced"]:
        bad = [e for e in verified["episodes"] if e["status"] != "reproduced"]
        raise RLKitError(f"replay verification failed for {len(bad)} episode(s) of {demo_dir}: {bad[0]['reason']}")
    stage("demos", t0)
    log(f"      {recorded['steps']} steps, demo return {recorded['mean_return']:.1f}; "
        f"{verified['reproduced']}/{verified['replayed']} episodes reproduce exactly")

    t0 = time.perf_counter()
    counts = sorted({k for k in DEMO_COUNTS if k < num_demos} | {num_demos})
    log(f"[3/5] behavior cloning on {', '.join(map(str, counts))} demonstration(s)...")
    bc_preset = resolve_preset(bc.AGENT.presets(), "cartpole", "bc")
    bc_runs = {}
    for k in counts:
        bc_cfg = apply_overrides(bc.BCConfig(), {**bc_preset, **quiet, "demos": str(demo_dir), "num_demos": k,
                                                 "run_dir": str(out / "runs" / f"bc-{k}demos")})
        bc_runs[k] = bc.train(bc_cfg)
        log(f"      BC, {k:>2} demos: {bc_runs[k]['eval']['mean']:.1f} ± {bc_runs[k]['eval']['std']:.1f}")
    stage("bc", t0)

    t0 = time.perf_counter()
    log(f"[4/5] DAgger: the demonstrations, then {dagger_rounds} round(s) labelled by the DQN expert...")
    dagger_cfg = dagger.DAggerConfig(**quiet, demos=str(demo_dir), expert=expert["run_dir"], expert_checkpoint="best",
                                     rounds=1 + dagger_rounds, episodes_per_round=2, epochs_per_round=10,
                                     hidden=bc_preset["hidden"], run_dir=str(out / "runs" / "dagger"))
    dagger_result = dagger.train(dagger_cfg)
    stage("dagger", t0)
    log(f"      DAgger: {dagger_result['eval']['mean']:.1f} ± {dagger_result['eval']['std']:.1f} "
        f"({dagger_result['labelled_states']} labelled states)")

    t0 = time.perf_counter()
    log(f"[5/5] evaluating a random policy ({eval_episodes} episodes) and writing the report...")
    factory = lambda render_mode=None: envs.make_env(ENV_ID, render_mode=render_mode)  # noqa: E731
    random_eval = evaluate(RandomPolicy(factory().action_space, seed=seed), factory, eval_episodes,
                           seed=cfg.eval_seed)
    results = {
        "env_id": ENV_ID, "seed": seed, "eval_episodes": eval_episodes, "eval_seed": cfg.eval_seed,
        "learners": {"expert (DQN)": summary(expert), f"BC ({num_demos} demos)": summary(bc_runs[num_demos]),
                     "DAgger": summary(dagger_result), "random": summary({"eval": random_eval})},
        "bc_by_demos": {str(k): summary(r) for k, r in bc_runs.items()},
        "demos": {"path": str(demo_dir), "episodes": recorded["episodes"], "steps": recorded["steps"],
                  "mean_return": recorded["mean_return"], "rewards_stored": False,
                  "replay_reproduced": verified["reproduced"], "replay_episodes": verified["replayed"]},
        "times_s": times,
    }
    plot_results(results, out / "returns.png")
    stage("report", t0)
    results["wall_s"] = round(time.perf_counter() - t_start, 1)
    atomic_write_text(out / "report.md", report_markdown(results))
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    return results


def summary(result: dict[str, Any]) -> dict[str, Any]:
    ev = result["eval"]
    return {"mean": ev["mean"], "std": ev["std"], "episodes": ev["episodes"], "returns": ev["returns"],
            **({"run_dir": result["run_dir"]} if "run_dir" in result else {})}


def results_table(results: dict[str, Any]) -> str:
    rows = ["| policy | mean return | std | episodes |", "|---|---:|---:|---:|"]
    rows += [f"| {name} | {r['mean']:.1f} | {r['std']:.1f} | {r['episodes']} |"
             for name, r in results["learners"].items()]
    return "\n".join(rows)


def report_markdown(results: dict[str, Any]) -> str:
    d = results["demos"]
    by_demos = " | ".join(f"{k}: {r['mean']:.1f}" for k, r in results["bc_by_demos"].items())
    times = ", ".join(f"{k} {v:.0f}s" for k, v in results["times_s"].items())
    return (
        f"# rlkit quickstart ({results['env_id']})\n\n"
        f"Every policy is evaluated on the same {results['eval_episodes']} episodes (reset seeds "
        f"{results['eval_seed']}..{results['eval_seed'] + results['eval_episodes'] - 1}), none of which was "
        f"a demonstration.\n\n{results_table(results)}\n\n"
        f"![returns per learner, and BC's return against the number of demonstrations](returns.png)\n\n"
        f"BC return by number of demonstrations: {by_demos}.\n\n"
        f"Demonstrations: {d['episodes']} episodes, {d['steps']} steps, expert return {d['mean_return']:.1f}, "
        f"stored without rewards in `{d['path']}`; {d['replay_reproduced']}/{d['replay_episodes']} reproduce "
        f"exactly when replayed from their seeds.\n\nTime: {results['wall_s']:.0f}s ({times}).\n"
    )


def plot_results(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    names = list(results["learners"])
    means = [results["learners"][n]["mean"] for n in names]
    stds = [results["learners"][n]["std"] for n in names]
    left.bar(range(len(names)), means, yerr=stds, capsize=4, color=["#4c72b0", "#55a868", "#c44e52", "#8c8c8c"])
    left.set_xticks(range(len(names)), names, rotation=15)
    left.set_ylabel(f"return ({results['eval_episodes']} episodes)")
    left.set_title("Returns per learner")
    counts = [int(k) for k in results["bc_by_demos"]]
    bc_means = [results["bc_by_demos"][str(k)]["mean"] for k in counts]
    bc_stds = [results["bc_by_demos"][str(k)]["std"] for k in counts]
    right.errorbar(counts, bc_means, yerr=bc_stds, marker="o", capsize=4, label="BC")
    for name, style in (("expert (DQN)", "--"), ("random", ":")):
        right.axhline(results["learners"][name]["mean"], linestyle=style, color="gray", label=name)
    right.set_xscale("log")
    right.set_xticks(counts, [str(k) for k in counts])
    right.set_xlabel("demonstration episodes")
    right.set_ylabel("return")
    right.set_title("BC return vs number of demonstrations")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
