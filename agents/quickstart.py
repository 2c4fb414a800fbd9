"""``rlkit quickstart``: the whole pipeline on CartPole-v1, in minutes on a laptop CPU."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from rlkit.checkpoint import atomic_write_text


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("quickstart", help="train, evaluate and report on CartPole-v1 in minutes",
                              description="Train a DQN expert on CartPole-v1, evaluate it against a random "
                                          "policy, and print a table (also written to OUT/report.md).")
    p.add_argument("--out", default="quickstart-out", help="output directory")
    p.add_argument("--seed", type=int, default=0, help="seed")
    p.add_argument("--steps", type=int, default=None, help="DQN training steps (default: the preset's)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=run_quickstart)


def run_quickstart(args: argparse.Namespace) -> int:
    import envs
    from agents.dqn import AGENT as DQN
    from rlkit.config import apply_overrides, resolve_preset
    from rlkit.evaluation import evaluate
    from rlkit.types import RandomPolicy

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cfg = apply_overrides(DQN.config_cls(), resolve_preset(DQN.presets(), "cartpole", "dqn"))
    overrides: dict[str, Any] = {"seed": args.seed, "run_dir": str(out / f"dqn-expert-{time.strftime('%H%M%S')}")}
    if args.steps:
        overrides["total_steps"] = args.steps
    cfg = apply_overrides(cfg, overrides)
    print(f"[1/2] training a DQN expert on CartPole-v1 ({cfg.total_steps} steps)...")
    expert = DQN.train(cfg)
    print("[2/2] evaluating expert and random policies (20 episodes each)...")
    env_factory = lambda render_mode=None: envs.make_env("CartPole-v1", render_mode=render_mode)  # noqa: E731
    random_eval = evaluate(RandomPolicy(env_factory().action_space, seed=args.seed), env_factory, 20, seed=10_000)
    rows = [("DQN expert", expert["eval"]), ("random", random_eval)]
    table = ["| policy | mean return | std | episodes |", "|---|---|---|---|"]
    table += [f"| {name} | {r['mean']:.1f} | {r['std']:.1f} | {r['episodes']} |" for name, r in rows]
    report = "# rlkit quickstart (CartPole-v1)\n\n" + "\n".join(table) + \
        f"\n\nTotal time: {time.perf_counter() - t0:.0f}s. Expert run: `{expert['run_dir']}`\n"
    atomic_write_text(out / "report.md", report)
    results = {"expert": expert["eval"], "random": random_eval, "expert_run_dir": expert["run_dir"],
               "wall_s": time.perf_counter() - t0}
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    print(json.dumps(results, indent=2) if args.json else "\n" + "\n".join(table) + f"\n\nreport: {out / 'report.md'}")
    return 0
