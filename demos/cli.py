"""``rlkit demos record|replay|inspect|repair|convert``: thin layers over the :mod:`demos` functions."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rlkit.errors import RLKitError


def _json_arg(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        raise RLKitError(f"--env-kwargs must be a JSON object, e.g. '{{\"max_episode_steps\": 100}}'; got {text!r}"
                         ) from None
    if not isinstance(value, dict):
        raise RLKitError(f"--env-kwargs must be a JSON object; got {text!r}")
    return value


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 1e6:.2f} MB" if num_bytes >= 1e5 else f"{num_bytes / 1e3:.1f} kB"


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("demos", help="record, replay, inspect and convert demonstrations",
                              description="Demonstration datasets: record from any policy or a person, "
                                          "inspect, replay-verify, render, convert to and from imitation.")
    sub = p.add_subparsers(dest="demos_command", metavar="SUBCOMMAND")
    sub.required = True

    rec = sub.add_parser("record", help="record episodes of a policy into a dataset",
                         description="SOURCE: an rlkit run directory or checkpoint, sb3:ALGO:PATH.zip, random, "
                                     "human (keyboard) or python:module:callable (see the README).")
    rec.add_argument("--env", dest="env_id", required=True, help="env id (gymnasium.make id or pkg.module:Env-v0)")
    rec.add_argument("--policy", required=True, metavar="SOURCE", help="where actions come from")
    rec.add_argument("--checkpoint", default="latest", metavar="best|latest|STEP",
                     help="for an rlkit run: its latest checkpoint, its best evaluation or the one at STEP "
                          "(default: %(default)s)")
    rec.add_argument("--episodes", type=int, required=True, help="episodes to record")
    rec.add_argument("--out", required=True, metavar="DATASET", help="dataset directory")
    rec.add_argument("--seed", type=int, default=0, help="episode i is reset with seed + i")
    rec.add_argument("--keep-rewards", action="store_true", help="store per-step rewards (default: none)")
    rec.add_argument("--append", action="store_true", help="add to an existing dataset of the same env")
    rec.add_argument("--env-kwargs", type=_json_arg, default=None, metavar="JSON",
                     help="keyword arguments of the env, e.g. '{\"max_episode_steps\": 200}'")
    rec.add_argument("--stochastic", action="store_true", help="sample the policy's actions instead of greedy")
    rec.add_argument("--fsync", action="store_true", help="flush each episode to disk (survives power loss)")
    rec.add_argument("--trust-remote-code", action="store_true",
                     help="sb3: source: let SB3 unpickle what rlkit cannot rebuild (a custom policy class), "
                          "running any code in the zip; without it such a zip is refused")
    rec.add_argument("--keymap", metavar="FILE.json", help="human source: key names -> actions")
    rec.add_argument("--fps", type=float, default=None, help="human source: decisions per second")
    rec.add_argument("--quiet", action="store_true", help="no per-episode progress lines")
    rec.add_argument("--json", action="store_true", help="print the statistics as JSON")
    rec.set_defaults(func=cmd_record)

    rep = sub.add_parser("replay", help="re-run a dataset's actions from its seeds; verify; render video",
                         description="Exit status 1 when --verify finds an episode that does not reproduce.")
    rep.add_argument("dataset", metavar="DATASET")
    rep.add_argument("--verify", action="store_true", help="compare every observation with the stored one")
    rep.add_argument("--video", metavar="FILE", help="write the replay to an .mp4 or .gif")
    rep.add_argument("--episodes", metavar="LIST", help="episode indices, e.g. 0,2-4 (default: all)")
    rep.add_argument("--atol", type=float, default=1e-5, help="absolute tolerance of --verify")
    rep.add_argument("--rtol", type=float, default=1e-5, help="relative tolerance of --verify")
    rep.add_argument("--skip-corrupt", action="store_true", help="skip damaged episodes instead of failing")
    rep.add_argument("--env", dest="env_id", metavar="ENV_ID",
                     help="the env to replay in (default: the recorded one); a recorded pkg.module:Env-v0 id "
                          "imports pkg.module, so it must be named here")
    rep.add_argument("--json", action="store_true", help="print the report as JSON")
    rep.set_defaults(func=cmd_replay)

    ins = sub.add_parser("inspect", help="summarise a dataset",
                         description="Exit status 1 when a file is missing, truncated or (--check) corrupt.")
    ins.add_argument("dataset", metavar="DATASET")
    ins.add_argument("--check", action="store_true", help="also verify every episode's checksum")
    ins.add_argument("--json", action="store_true", help="print the summary as JSON")
    ins.set_defaults(func=cmd_inspect)

    fix = sub.add_parser("repair", help="rebuild a damaged or lost index from the packs",
                         description="Rebuild DATASET/episodes.jsonl from the episode archives in DATASET/episodes "
                                     "(the old index is kept as episodes.jsonl.before-repair-TIME). Byte ranges "
                                     "that hold no complete episode are listed in ignored.jsonl, never deleted.")
    fix.add_argument("dataset", metavar="DATASET")
    fix.add_argument("--json", action="store_true", help="print what was done as JSON")
    fix.set_defaults(func=cmd_repair)

    con = sub.add_parser("convert", help="convert to or from imitation and Minari",
                         description="rlkit demos convert DATASET --to imitation|minari --out PATH\n"
                                     "rlkit demos convert PATH|ID --from imitation|minari [--env ENV_ID]\n"
                                     "    --out DATASET\n"
                                     "Minari stores rewards: a dataset without them exports with rewards recomputed\n"
                                     "by replay, if every episode replays exactly. Minari round trips are lossless:\n"
                                     "reference scores (Minari's ref_min_score/ref_max_score), sources and returns\n"
                                     "travel; --from minari takes a DIR/name-v0 or an id in $MINARI_DATASETS_PATH.",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    con.add_argument("source", metavar="DATASET|PATH|ID")
    direction = con.add_mutually_exclusive_group(required=True)
    direction.add_argument("--to", choices=["imitation", "minari"], help="export an rlkit dataset")
    direction.add_argument("--from", dest="from_", choices=["imitation", "minari"], help="import into a dataset")
    con.add_argument("--out", required=True, help="output path (Minari: DIR/name-v0)")
    con.add_argument("--env", dest="env_id", help="--from: the env the trajectories come from")
    con.add_argument("--env-kwargs", type=_json_arg, default=None, metavar="JSON", help="--from: env kwargs")
    con.add_argument("--skip-corrupt", action="store_true", help="--to: skip damaged episodes")
    con.add_argument("--json", action="store_true", help="print the result as JSON")
    con.set_defaults(func=cmd_convert)


def cmd_record(args: argparse.Namespace) -> int:
    from rlkit.demos.record import record
    from rlkit.demos.sources import resolve_policy

    human: dict[str, Any] = {}
    if args.policy == "human":
        from rlkit.demos.human import load_key_map

        human = {"fps": args.fps, "key_map": load_key_map(args.keymap) if args.keymap else None}
    elif args.keymap or args.fps is not None:
        raise RLKitError("--keymap and --fps apply to --policy human only")
    if args.trust_remote_code and not args.policy.startswith("sb3:"):
        raise RLKitError("--trust-remote-code applies to --policy sb3:ALGO:PATH.zip only")
    policy = resolve_policy(args.policy, args.env_id, seed=args.seed, env_kwargs=args.env_kwargs,
                            checkpoint=args.checkpoint, trust_remote_code=args.trust_remote_code, **human)

    def progress(info: dict[str, Any]) -> None:
        if not args.quiet:
            print(f"episode {info['episode']}/{info['of']} (index {info['index']}): return {info['return']:.2f}, "
                  f"{info['length']} steps", file=sys.stderr, flush=True)

    stats = record(policy, args.env_id, args.episodes, args.out, seed=args.seed, keep_rewards=args.keep_rewards,
                   source=args.policy, env_kwargs=args.env_kwargs, append=args.append,
                   deterministic=not args.stochastic, fsync=args.fsync, on_episode=progress)
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        mean = "n/a" if stats["mean_return"] is None else f"{stats['mean_return']:.2f}"
        print(f"recorded {stats['episodes']} episodes ({stats['steps']} steps, mean return {mean}) of "
              f"{args.policy} on {args.env_id} -> {args.out} ({stats['total_episodes']} episodes, "
              f"{_size(stats['bytes'])})")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from rlkit.demos.replay import parse_episode_list, replay

    episodes = parse_episode_list(args.episodes) if args.episodes else None
    report = replay(args.dataset, episodes=episodes, verify=args.verify, video=args.video, atol=args.atol,
                    rtol=args.rtol, skip_corrupt=args.skip_corrupt, env_id=args.env_id)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for r in report["episodes"]:
            where = "" if r["diverged_at"] is None else f" at step {r['diverged_at']}: {r['reason']}"
            status = r["status"] if args.verify or r["status"] == "unreplayable" else "replayed"
            print(f"episode {r['index']} (seed {r['seed']}, {r['length']} steps): {status}{where}")
        summary = f"{report['reproduced']}/{report['replayed']} reproduced" if args.verify \
            else f"{report['replayed']} episodes replayed"
        print(summary + (f"; video: {report['video']}" if args.video else ""))
    return 1 if args.verify and not report["all_reproduced"] else 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from rlkit.demos.replay import inspect_dataset

    info = inspect_dataset(args.dataset, check=args.check)
    if args.json:
        print(json.dumps(info, indent=2))
        return 1 if info["problems"] else 0
    length, returns = info["length"], info["returns"]
    lines = [f"dataset   {info['path']} (format v{info['format_version']}, {_size(info['bytes'])})",
             f"env       {info['env_id']} {info['env_kwargs'] or ''}".rstrip(),
             f"source    {', '.join(info['sources']) or info['source']}",
             f"episodes  {info['episodes']} ({info['terminated']} terminated, {info['truncated']} truncated), "
             f"{info['steps']} steps",
             "length    " + ("n/a" if length is None else f"mean {length['mean']:.1f} ± {length['std']:.1f}, "
                                                        f"min {length['min']:.0f}, max {length['max']:.0f}"),
             "returns   " + ("unknown" if returns is None else f"mean {returns['mean']:.2f} ± {returns['std']:.2f}, "
                                                            f"min {returns['min']:.2f}, max {returns['max']:.2f} "
                                                            f"({info['returns_known']} episodes)"),
             f"rewards   {info['rewards_kept']} stored",
             "versions  " + ", ".join(f"{k} {v}" for k, v in info["versions"].items())]
    for tail in info["uncommitted"]:
        lines.append(f"note      {tail['bytes']} uncommitted bytes at the end of {tail['file']} (an interrupted "
                     f"recording; the next --append {'commits' if tail['complete'] else 'removes'} them)")
    lines += [f"PROBLEM   {p}" for p in info["problems"]]
    print("\n".join(lines))
    return 1 if info["problems"] else 0


def cmd_repair(args: argparse.Namespace) -> int:
    from rlkit.demos.repair import repair

    result = repair(args.dataset)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"repaired {result['path']}: {result['episodes']} episodes indexed ({result['previously_indexed']} "
              f"before); {len(result['ignored'])} range(s), {result['ignored_bytes']} bytes, hold no complete "
              f"episode (listed in ignored.jsonl, kept in place)")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from rlkit.demos import convert, minari_io
    from rlkit.demos.reader import load

    if args.to:
        dataset = load(args.source, skip_corrupt=args.skip_corrupt)
        out = convert.save_imitation(dataset, args.out) if args.to == "imitation" \
            else minari_io.to_minari(dataset, args.out)
        result = {"from": args.source, "to": args.to, "out": str(out), "episodes": len(dataset),
                  "steps": dataset.num_steps, "rewards": dataset.has_rewards}
    else:
        if args.from_ == "imitation":
            if not args.env_id:
                raise RLKitError("--from imitation needs --env ENV_ID (imitation's files do not name the env)")
            trajs = convert.load_imitation(args.source)
            dataset = convert.from_trajectories(trajs, args.env_id, args.out, env_kwargs=args.env_kwargs,
                                                source=f"imitation:{args.source}")
        else:
            dataset = minari_io.from_minari(args.source, args.env_id, args.out, env_kwargs=args.env_kwargs)
        result = {"from": args.source, "to": "rlkit", "out": args.out, "episodes": len(dataset),
                  "steps": dataset.num_steps, "rewards": dataset.has_rewards}
    print(json.dumps(result, indent=2) if args.json else
          f"converted {result['episodes']} episodes ({result['steps']} steps) from {args.source} -> {result['out']}")
    return 0
