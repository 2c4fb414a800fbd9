"""The ``rlkit`` command: a small dispatcher over agents and command groups found by entry point.

User errors (:class:`RLKitError`) print one line ``rlkit: error: ...`` and exit with status 2, as do
errors from the operating system about a user's file (a directory where a file belongs, a missing or
unreadable path: the line names it). ``--debug`` anywhere on the line shows the traceback instead.
Ctrl-C exits with 130, SIGTERM with 143, after the run saved a checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rlkit.config import (
    BaseConfig,
    apply_overrides,
    choose_preset,
    config_from_dict,
    field_help,
    imports_code,
    parse_set_args,
    refuse_code_named_in_file,
)
from rlkit.errors import AlreadyFinished, RLKitError, Terminated
from rlkit.policy import load_policy, policy_from_checkpoint  # noqa: F401  (rlkit.apps.cli.load_policy, as before)
from rlkit.registry import agent_names, command_loaders, get_agent
from rlkit.run import note_at_start
from rlkit.safe_files import disk_full_error, is_disk_full
from rlkit.signals import sigterm_as_interrupt


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors become one-line RLKitErrors (no usage dump, exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise RLKitError(f"{self.prog}: {message} (see {self.prog} --help)")


class _VersionAction(argparse.Action):
    """``rlkit --version``: rlkit's version and the key stack's on one line (argparse's own would rewrap it)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: Any = None) -> None:
        from rlkit.apps.doctor import version_line

        print(version_line())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    from rlkit.apps import doctor

    parser = _Parser(prog="rlkit", description="Deep RL and imitation learning toolkit.")
    parser.add_argument("--version", action=_VersionAction, nargs=0,
                        help="print rlkit's version and the key stack's, then exit (`rlkit doctor`: everything)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    train = sub.add_parser("train", help="train an agent", description=(
        "Train AGENT. Options come from the agent's config: defaults, then --preset, then the flags "
        "below, then --set key=value. `rlkit train AGENT --help` lists every option."),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("agent", nargs="?", help=f"one of: {', '.join(agent_names())}")
    train.add_argument("--env", dest="env_id", help="env id (gymnasium.make id or pkg.module:Env-v0)")
    train.add_argument("--preset", help="named preset of the agent (see `rlkit train AGENT --help`); default: "
                       "the agent's preset for --env if it has one; `none` for the plain defaults")
    train.add_argument("--steps", dest="total_steps", type=int, help="env steps to train for")
    train.add_argument("--seed", type=int, help="seed of the run")
    train.add_argument("--run-dir", help="directory for the run's files")
    train.add_argument("--demos", help="demonstration dataset (imitation learners)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                       help="override a config field, e.g. --set lr=3e-4 --set hidden=[128,128]")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.add_argument("--json", action="store_true", help="print final.json to stdout")
    train.set_defaults(func=cmd_train, parser=train)

    ev = sub.add_parser("eval", help="evaluate a run directory or checkpoint", description=(
        "Evaluate the policy of a run directory (its latest checkpoint, or --checkpoint best|STEP) or of one "
        "checkpoint: run "
        "--episodes episodes with greedy actions, seeded from --seed, and print the mean and std of the "
        "returns (--json: the whole result, returns per episode included)."))
    ev.add_argument("path", metavar="RUN_DIR|CHECKPOINT|SOURCE",
                    help="an rlkit run or checkpoint, or a policy source: sb3:ALGO:PATH.zip (needs --env), "
                         "python:module:callable, random")
    ev.add_argument("--checkpoint", default="latest", metavar="best|latest|STEP",
                    help="which checkpoint of a run: its latest, its best evaluation (checkpoints/best/) or the "
                         "one at step STEP (default: %(default)s)")
    ev.add_argument("--episodes", type=int, default=10, help="episodes to run (default: %(default)s)")
    ev.add_argument("--seed", type=int, default=10_000,
                    help="seed of the first episode; episode i gets seed+i (default: %(default)s)")
    ev.add_argument("--env", dest="env_id", help="evaluate on another env id (default: the run's training env)")
    ev.add_argument("--stochastic", action="store_true", help="sample actions instead of greedy ones")
    ev.add_argument("--video", help="write a video of the episodes (.mp4 or .gif)")
    ev.add_argument("--json", action="store_true", help="print the result as JSON")
    ev.add_argument("--trust-remote-code", action="store_true",
                    help="sb3: source: let SB3 unpickle what rlkit cannot rebuild (a custom policy class), running "
                         "any code in the zip; without it such a zip is refused")
    ev.set_defaults(func=cmd_eval)

    doctor.add_parser(sub)

    for name, add_parser in command_loaders().items():
        try:
            add_parser(sub)
        except Exception as e:  # a broken plugin must not break the whole CLI
            print(f"rlkit: warning: command {name!r} failed to load: {e}", file=sys.stderr)
    return parser


def agent_help(name: str) -> str:
    spec = get_agent(name)
    cfg = apply_overrides(spec.config_cls(), spec.defaults, source="agent defaults")  # e.g. td3's switches
    lines = [f"{name}: {spec.summary}", "", "options (--set KEY=VALUE; default in brackets):"]
    for key, text in field_help(spec.config_cls).items():
        lines.append(f"  {key:<24} {text} [{getattr(cfg, key)!r}]")
    presets = spec.presets()
    if presets:
        lines += ["", "presets (--preset NAME):"]
        for preset, values in presets.items():
            lines.append(f"  {preset:<24} {values.get('_reference', '')}")
    return "\n".join(lines)


def resolve_train_config(args: argparse.Namespace) -> tuple[Any, BaseConfig, bool]:
    """Defaults -> agent defaults -> preset -> flags -> --set, or a saved config for --resume."""
    spec = get_agent(args.agent)
    flags = {k: getattr(args, k) for k in ("env_id", "total_steps", "seed", "run_dir", "demos")
             if getattr(args, k, None) is not None}
    if args.no_progress:
        flags["progress"] = False
    overrides = parse_set_args(args.set)
    if args.resume:
        from rlkit.checkpoint import checkpoint_agent, read_json

        config_path = Path(args.resume) / "config.json"
        if not config_path.exists():
            raise RLKitError(f"cannot resume: {config_path} not found; pass the run directory of an rlkit run")
        other = checkpoint_agent(args.resume)
        if other is not None and other != args.agent:
            raise RLKitError(f"{args.resume} is a {other} run, not {args.agent}; resume it with "
                             f"`rlkit train {other} --resume {args.resume}`")
        saved = read_json(config_path)
        refuse_code_named_in_file(saved, {**flags, **overrides}, config_path, _named_on_the_command_line)
        try:
            cfg = config_from_dict(spec.config_cls, saved)
        except RLKitError as e:
            raise RLKitError(f"{config_path}: {e}") from None
        cfg = apply_overrides(cfg, {**flags, "run_dir": str(args.resume)}, source="flags")
        return spec, apply_overrides(cfg, overrides), True
    cfg = apply_overrides(spec.config_cls(), spec.defaults, source="agent defaults")
    # as RL-Zoo does: the tuned settings for the env when the agent has them (the same resolution as from_preset)
    env_id, name, demos_notice = flags.get("env_id", cfg.env_id), args.preset, None
    if name in (None, "auto") and env_id is None and "demos" in flags:  # an imitation learner without --env
        env_id, name, demos_notice = preset_for_demos(spec.presets(), flags["demos"])
    preset, values, notice = choose_preset(spec.presets(), name, args.agent, env_id)
    notice = notice or demos_notice
    cfg = apply_overrides(cfg, values, source=f"preset {preset!r}")
    if "demos" in flags and not hasattr(cfg, "demos"):
        raise RLKitError(f"agent {args.agent!r} does not learn from demonstrations; drop --demos")
    cfg = apply_overrides(apply_overrides(cfg, flags, source="flags"), overrides)
    if notice:  # said once the run passes its checks, so an error stays one line
        note_at_start(notice)
    return spec, cfg, False


def _task(env_id: str) -> str:
    """``seals:seals/CartPole-v0`` and ``CartPole-v1`` -> ``cartpole``: the task, whoever registered it."""
    return env_id.rpartition(":")[2].rpartition("/")[2].rsplit("-v", 1)[0].lower()


def preset_for_demos(presets: dict[str, dict[str, Any]], demos: str) -> tuple[str | None, str | None, str | None]:
    """``(the dataset's env id, the agent's preset for it or None, the line saying so)``.

    A preset made for that env id, else, for demos of a plain gymnasium id, one made for the same task as
    another package registers it: GAIL's ``cartpole`` trains its generator in ``seals:seals/CartPole-v0``
    (CartPole-v1 with a fixed horizon) on CartPole-v1 demos. A user's own ``module:Env-v0`` gets no such
    stand-in (and is imported only when named, so no preset may replace it).
    """
    from rlkit.demos.reader import read_manifest

    try:
        env_id = read_manifest(demos)["env_id"]
    except RLKitError:  # a missing or damaged dataset: the agent says so in its own one line
        return None, None, None
    made_for = {name: values.get("env_id") for name, values in presets.items()}
    chosen = next((name for name, env in made_for.items() if env == env_id), None)
    if chosen is None and ":" not in env_id:
        chosen = next((name for name, env in made_for.items()
                       if isinstance(env, str) and ":" in env and _task(env) == _task(env_id)), None)
    if chosen is None:
        return env_id, None, None
    return env_id, chosen, (f"rlkit: using preset {chosen}, tuned for {env_id} demonstrations; "
                            f"--preset none for the plain defaults")


def _named_on_the_command_line(key: str, value: Any) -> str:
    return f"add --env {value}" if key == "env_id" else f"add --set {key}={value}"


def cmd_train(args: argparse.Namespace) -> int:
    if args.help_agent:  # the command-line flags, then the agent's config fields and presets
        print(args.parser.format_help().replace("rlkit train [-h]", f"rlkit train {args.agent} [-h]", 1))
        print(agent_help(args.agent))
        return 0
    if not args.agent:
        args.parser.print_usage(sys.stderr)
        raise RLKitError(f"train: name an agent, one of: {', '.join(agent_names())} (see rlkit train --help)")
    spec, cfg, resume = resolve_train_config(args)
    try:
        result = spec.train(cfg, resume=resume)
    except AlreadyFinished as e:  # nothing evaluated or written; report the finished run's result
        print(f"rlkit: {e}", file=sys.stderr)
        result = e.result
        if args.json:
            print(json.dumps(result, indent=2))
        return 0
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        ev = result["eval"]
        print(f"{result['agent']} on {result['env_id']} (seed {result['seed']}): "
              f"{work_done(result)} in {result['wall_s']:.1f}s, "
              f"eval {ev['mean']:.1f} ± {ev['std']:.1f} over {ev['episodes']} episodes -> {result['run_dir']}")
    return 0


def work_done(result: dict[str, Any]) -> str:
    """What a run did, for its summary line: env steps, or for a learner that never steps an env (BC) its
    gradient steps and epochs ("0 steps" would read as if it did nothing)."""
    if not result.get("env_steps") and result.get("gradient_steps") is not None:
        epochs = f" ({result['epochs']} epochs)" if result.get("epochs") is not None else ""
        return f"{result['gradient_steps']} gradient steps{epochs}"
    return f"{result['env_steps']} steps"


def eval_env_id(state: dict[str, Any], path: str | Path) -> str:
    """The env a run is evaluated on: the checkpoint's ``eval_env_id``, else final.json's, else the config's.

    Adversarial and preference runs may train in another env than the task (GAIL's generator in
    seals/CartPole-v0 imitating CartPole-v1 demonstrations); ``rlkit eval`` must score the task.
    """
    if state.get("eval_env_id"):
        return str(state["eval_env_id"])
    from rlkit.checkpoint import read_json

    # RUN, RUN/checkpoints/<step_N or best>[/state.pt]: final.json is in RUN
    where = Path(state.get("checkpoint_dir") or path)
    where = where.parent if where.suffix == ".pt" else where
    run_dir = where.parent.parent if where.parent.name == "checkpoints" else \
        where.parent if where.name == "checkpoints" else where
    final = run_dir / "final.json"
    if final.exists():  # a damaged final.json is a one-line error naming it
        recorded = read_json(final).get("eval_env_id")
        if recorded:
            return str(recorded)
    return str(state["config"].get("eval_env_id") or state["config"]["env_id"])


def _check_spaces(state: dict[str, Any], factory: Any, env_id: str) -> None:
    """The env must offer the spaces the policy was trained on (a CartPole policy on Pendulum is one line)."""
    from rlkit.spaces import space_brief

    saved = {k: state.get(f"{k}_space") for k in ("observation", "action")}
    if not all(saved.values()):
        return  # an agent that keeps its spaces elsewhere (SB3 models) checks them itself
    env = factory()
    try:
        actual = {"observation": env.observation_space, "action": env.action_space}
    finally:
        env.close()
    for kind, space in saved.items():
        same = type(space) is type(actual[kind]) and getattr(space, "shape", None) == actual[kind].shape \
            and getattr(space, "n", None) == getattr(actual[kind], "n", None)
        if not same:
            raise RLKitError(f"the policy was trained on {kind} space {space_brief(space)}, but {env_id} has "
                             f"{space_brief(actual[kind])}; evaluate it on the env it was trained on")


def cmd_eval(args: argparse.Namespace) -> int:
    from rlkit.checkpoint import load_checkpoint, resolve_checkpoint
    from rlkit.evaluation import evaluate
    from rlkit.registry import env_factory

    if args.episodes < 1:
        raise RLKitError(f"--episodes must be at least 1; got {args.episodes}")
    if args.seed < 0:
        raise RLKitError(f"--seed must be at least 0; got {args.seed}")
    if not Path(args.path).exists() and (":" in args.path or args.path == "random"):
        if args.checkpoint != "latest":
            raise RLKitError(f"--checkpoint picks a checkpoint of an rlkit run; {args.path} is not one")
        return _eval_source(args)  # sb3:ALGO:PATH.zip, python:module:callable, random
    state = load_checkpoint(resolve_checkpoint(args.path, args.checkpoint))
    policy = policy_from_checkpoint(state)
    cfg = state["config"]
    env_id = args.env_id or eval_env_id(state, args.path)
    if not isinstance(env_id, str):
        raise RLKitError(f"{state.get('checkpoint_dir', args.path)} has no env id in its config; pass --env")
    if args.env_id is None and imports_code("env_id", env_id):
        raise RLKitError(f"the checkpoint's env id {env_id!r} imports code; rlkit imports it only when you name "
                         f"it yourself: add --env {env_id}")
    if not isinstance(cfg.get("env_kwargs") or {}, dict):
        raise RLKitError(f"{state.get('checkpoint_dir', args.path)}: env_kwargs in its config is not a mapping")
    make = env_factory()
    # env_kwargs belong to the training env; another eval env (GAIL's CartPole-v1 vs seals) gets none
    env_kwargs = (cfg.get("env_kwargs") or {}) if env_id == cfg["env_id"] else {}

    def factory(render_mode: str | None = None) -> Any:
        return make(env_id, render_mode=render_mode, env_kwargs=env_kwargs)

    _check_spaces(state, factory, env_id)

    result = evaluate(policy, factory, args.episodes, seed=args.seed, deterministic=not args.stochastic,
                      video=args.video)
    result = {"agent": state["agent"], "env_id": env_id, "checkpoint": str(state["checkpoint_dir"]),
              "checkpoint_step": state["global_step"], **result}
    return _print_eval(args, result, state["agent"])


def _os_error_line(e: OSError) -> str:
    """One line for an OSError about a user's path: what went wrong and which file."""
    where = f"{e.filename}" + (f" -> {e.filename2}" if e.filename2 else "") if e.filename else "a file"
    return f"{where}: {e.strerror or type(e).__name__}"


def _eval_source(args: argparse.Namespace) -> int:
    """Evaluate a policy source that is no rlkit run, through the demo recorder's resolver (found by entry point)."""
    from importlib.metadata import entry_points

    from rlkit.evaluation import evaluate
    from rlkit.registry import env_factory

    if not args.env_id:
        raise RLKitError(f"evaluating {args.path} needs --env ENV_ID (only rlkit runs record their env)")
    resolver = next((ep.load() for ep in entry_points(group="rlkit.sources") if ep.name == "resolve"), None)
    if resolver is None:
        raise RLKitError("no policy-source resolver registered in the rlkit.sources entry points; reinstall rlkit")
    opt_in = {"trust_remote_code": True} if args.trust_remote_code else {}  # other resolvers may not take it
    policy = resolver(args.path, args.env_id, seed=args.seed, **opt_in)
    make = env_factory()
    result = evaluate(policy, lambda render_mode=None: make(args.env_id, render_mode=render_mode), args.episodes,
                      seed=args.seed, deterministic=not args.stochastic, video=args.video)
    return _print_eval(args, {"source": args.path, "env_id": args.env_id, **result}, args.path)


def _print_eval(args: argparse.Namespace, result: dict[str, Any], name: str) -> int:
    """Print an evaluation as JSON (``--json``, with the video path when one was written) or as one line."""
    if args.video:
        result["video"] = args.video
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{name} on {result['env_id']}: {result['mean']:.2f} ± {result['std']:.2f} "
              f"over {result['episodes']} episodes")
    return 0


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        # `rlkit train AGENT --help` shows the agent's options rather than the generic help.
        help_agent = len(argv) >= 2 and argv[0] == "train" and not argv[1].startswith("-") \
            and any(a in ("-h", "--help") for a in argv[2:])
        if help_agent:
            argv = [a for a in argv if a not in ("-h", "--help")]
        args = build_parser().parse_args(argv)
        args.help_agent = help_agent
        with sigterm_as_interrupt():  # SIGTERM anywhere is Ctrl-C: agents checkpoint, the exit status is 143
            code = args.func(args)
    except RLKitError as e:
        if debug:
            raise
        print(f"rlkit: error: {e}", file=sys.stderr)
        sys.exit(2)
    except Terminated:
        print("rlkit: terminated (SIGTERM)", file=sys.stderr)
        sys.exit(143)
    except KeyboardInterrupt:
        print("rlkit: interrupted", file=sys.stderr)
        sys.exit(130)
    except (IsADirectoryError, NotADirectoryError, FileExistsError, FileNotFoundError, PermissionError) as e:
        if debug:
            raise
        print(f"rlkit: error: {_os_error_line(e)} (--debug shows the traceback)", file=sys.stderr)
        sys.exit(2)
    except BrokenPipeError:  # e.g. `rlkit train dqn --help | head`
        sys.stderr.close()
        sys.exit(0)
    except Exception as e:  # a full disk met by a writer that did not say so itself (torch's, TensorBoard's)
        if debug or not is_disk_full(e):
            raise
        where = getattr(e, "filename", None) or Path.cwd()
        print(f"rlkit: error: {disk_full_error(where)} (--debug shows the traceback)", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
