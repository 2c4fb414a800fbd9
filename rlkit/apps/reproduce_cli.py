"""``rlkit reproduce``: the command line over :func:`rlkit.apps.reproduce.reproduce`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rlkit.apps import reports
from rlkit.apps.reproduce import reproduce
from rlkit.apps.reproduce_presets import load_presets
from rlkit.registry import agent_names


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "reproduce", help="reproduce a published baseline over several seeds, with CIs and plots",
        description="Train PRESET's agent over N seeds (in parallel; for dqn, ddpg, td3 and sac several seeds per "
                    "process, in lockstep, unless --no-vectorise), skip seeds already done in OUT, and write "
                    "OUT/results.json, OUT/report.md (per-seed returns, mean and IQM with 95% stratified-"
                    "bootstrap CIs, the published reference and its source) and OUT/curves.png. Without PRESET, "
                    "list the presets.")
    p.add_argument("preset", nargs="?", help="reproduction preset (omit to list them)")
    p.add_argument("--seeds", type=int, help="number of seeds, run as seeds 0..N-1 (default: the preset's)")
    p.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="local worker processes, or Ray tasks (pip install 'rlkit[ray]')")
    p.add_argument("--out", help="output directory (default: reproductions/PRESET, or ...-Nsteps with --steps)")
    p.add_argument("--steps", type=int, help="env steps per seed (default: the reference's budget); "
                                             "fewer are labelled a reduced budget")
    p.add_argument("--workers", type=int, help="processes at once (default: the cores available; with --backend ray "
                                               "and no cluster, the CPUs of the local Ray instance)")
    p.add_argument("--vectorise", action=argparse.BooleanOptionalAction, default=None,
                   help="split the seeds still to run into one group per worker, each group one process training "
                        "its seeds in lockstep (default: on where the agent can, i.e. dqn, ddpg, td3, sac); "
                        "--no-vectorise: one process per seed")
    p.add_argument("--ray-address", help="Ray cluster to join (default: $RAY_ADDRESS, else a local instance)")
    p.add_argument("--presets", help="YAML file of your own reproduction presets (default: rlkit's)")
    p.add_argument("--eval-points", type=int, help="evaluations during training, the learning-curve points "
                                                   "(default: the preset's); fewer make small budgets cheaper")
    p.add_argument("--json", action="store_true", help="print results.json to stdout")
    p.set_defaults(func=cmd_reproduce)


def cmd_reproduce(args: argparse.Namespace) -> int:
    if not args.preset:
        return _list_presets(args)
    from rlkit.signals import sigterm_as_interrupt

    with sigterm_as_interrupt():  # SIGTERM: every run checkpoints, then exit 143 (as Ctrl-C does, with 130)
        results = reproduce(args.preset, seeds=args.seeds, backend=args.backend, out=args.out, steps=args.steps,
                            workers=args.workers, ray_address=args.ray_address, presets_file=args.presets,
                            eval_points=args.eval_points, vectorise=args.vectorise)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    s = results["aggregate"]
    print(f"{results['preset']}: mean {reports.fmt(s['mean'])} [{reports.fmt(s['mean_ci'][0])}, "
          f"{reports.fmt(s['mean_ci'][1])}], IQM {reports.fmt(s['iqm'])} [{reports.fmt(s['iqm_ci'][0])}, "
          f"{reports.fmt(s['iqm_ci'][1])}] over {len(results['seeds'])} seeds; reference "
          f"{reports.format_reference(results['reference'])}. {results['label']}")
    if results.get("normalised"):
        n = results["normalised"]["aggregate"]
        print(f"normalised (random 0, expert 1): mean {n['mean']:.2f} [{n['mean_ci'][0]:.2f}, {n['mean_ci'][1]:.2f}]")
    print(f"report: {Path(results['out']) / 'report.md'}")
    return 0


def _list_presets(args: argparse.Namespace) -> int:
    presets, installed = load_presets(args.presets), set(agent_names())
    rows = [{"preset": p.name, "agent": p.agent, "installed": p.agent in installed, "seeds": p.seeds,
             "budget": p.budget, "reference": reports.format_reference(p.reference),
             "source": p.reference.get("source", "")} for p in presets.values()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(reports.markdown_table(["preset", "agent", "budget (steps)", "reference", "source"],
                                 [[r["preset"], r["agent"] + ("" if r["installed"] else " (not installed)"),
                                   reports.fmt(r["budget"]), r["reference"], r["source"]] for r in rows]))
    return 0
