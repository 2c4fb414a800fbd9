"""``rlkit plot``: overlay learning curves of runs or reproductions (:func:`rlkit.apps.reports.plot_runs`)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rlkit.apps import reports


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "plot", help="overlay learning curves of runs or reproductions",
        description="Plot learning curves from run directories (metrics.csv; where it is gone, the evaluation curve "
                    "final.json keeps). A reproduction directory (or any "
                    "directory of runs) becomes one mean curve with a 95% bootstrap CI band.")
    p.add_argument("paths", nargs="+", metavar="RUN_DIR", help="run directories or reproduction directories")
    p.add_argument("--out", default="curves.png", help="PNG file to write (default: curves.png)")
    p.add_argument("--label", action="append", help="legend label, once per RUN_DIR in order")
    p.add_argument("--metric", default="auto",
                   help="eval (eval/mean_return), train (charts/episode_return), auto, or any metrics.csv column")
    p.add_argument("--title", default="", help="plot title")
    p.add_argument("--reference", type=float, help="draw a reference score as a horizontal line")
    p.add_argument("--json", action="store_true", help="print what was plotted as JSON")
    p.set_defaults(func=cmd_plot)


def cmd_plot(args: argparse.Namespace) -> int:
    result = reports.plot_runs(args.paths, args.out, args.label, args.metric, args.title, args.reference)
    print(json.dumps(result, indent=2) if args.json else f"wrote {result['plot']}")
    return 0
