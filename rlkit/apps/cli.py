"""The ``rlkit`` command: a small dispatcher over agents and command groups found by entry point.

User errors (:class:`RLKitError`) print one line ``rlkit: error: ...`` and exit with status 2, as do
errors from the operating system about a user's file (a directory where a file belongs, a missing or
unreadable path: the line names it). ``--debug`` anywhere on the line shows the traceback instead.
Ctrl-C exits with 130, SIGTERM with 143, after the run saved a checkpoint.

``rlkit train AGENT --seeds 0-4`` trains several seeds in this one process (:func:`cmd_train_seeds`), each a
whole run in ``RUN_DIR/seedS``; ``--resume RUN_DIR`` continues all of them.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rlkit.config import (
    MAX_SEED,
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
from rlkit.registry import AgentSpec, agent_names, command_loaders, get_agent, train_seeds
from rlkit.run import default_run_dir, note_at_start
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

    _add_train_parser(sub)

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


def _add_train_parser(sub: Any) -> None:
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
    train.add_argument("--seeds", metavar="SPEC",
                       help="train several seeds in this one process, e.g. 0-4, 0,2,5 or 0-2,7: each a whole run in "
                            "RUN_DIR/seedS with the config --seed S would give it (in lockstep for dqn, ddpg, td3 and "
                            "sac, one after another otherwise); --resume RUN_DIR continues them all")
    train.add_argument("--run-dir", help="directory for the run's files (with --seeds: for the seeds' run dirs)")
    train.add_argument("--demos", help="demonstration dataset (imitation learners)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                       help="override a config field, e.g. --set lr=3e-4 --set hidden=[128,128]")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint "
                                                             "(or every seed of a --seeds run)")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.add_argument("--json", action="store_true", help="print final.json to stdout")
    train.set_defaults(func=cmd_train, parser=train)


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


def _train_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields that ``rlkit train``'s own flags set (not --set)."""
    flags = {k: getattr(args, k) for k in ("env_id", "total_steps", "seed", "run_dir", "demos")
             if getattr(args, k, None) is not None}
    if args.no_progress:
        flags["progress"] = False
    return flags


def resolve_train_config(args: argparse.Namespace) -> tuple[Any, BaseConfig, bool]:
    """Defaults -> agent defaults -> preset -> flags -> --set, or a saved config for --resume."""
    spec = get_agent(args.agent)
    flags, overrides = _train_flags(args), parse_set_args(args.set)
    if args.resume:
        return spec, _resumed_config(spec, args.agent, args.resume, flags, overrides), True
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


def _resumed_config(spec: AgentSpec, agent: str, run_dir: str | Path, flags: dict[str, Any],
                    overrides: dict[str, Any]) -> BaseConfig:
    """The config of the run in ``run_dir`` (its config.json), with this command's flags and --set on top."""
    from rlkit.checkpoint import checkpoint_agent, read_json

    config_path = Path(run_dir) / "config.json"
    if not config_path.exists():
        raise RLKitError(f"cannot resume: {config_path} not found; pass the run directory of an rlkit run "
                         f"(or of a --seeds run, which holds {SEEDS_FILE})")
    other = checkpoint_agent(run_dir)
    if other is not None and other != agent:
        raise RLKitError(f"{run_dir} is a {other} run, not {agent}; resume it with "
                         f"`rlkit train {other} --resume {run_dir}`")
    return _config_from_saved(spec, read_json(config_path), config_path, flags, overrides, run_dir)


def _config_from_saved(spec: AgentSpec, saved: dict[str, Any], path: Path, flags: dict[str, Any],
                       overrides: dict[str, Any], run_dir: str | Path) -> BaseConfig:
    """A config saved in ``path`` (a run's config.json, or a --seeds run's shared one), then flags and --set."""
    refuse_code_named_in_file(saved, {**flags, **overrides}, path, _named_on_the_command_line)
    try:
        cfg = config_from_dict(spec.config_cls, saved)
    except RLKitError as e:
        raise RLKitError(f"{path}: {e}") from None
    cfg = apply_overrides(cfg, {**flags, "run_dir": str(run_dir)}, source="flags")
    return apply_overrides(cfg, overrides)


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
    if args.seeds is not None or is_seeds_dir(args.resume):
        return cmd_train_seeds(args)
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
        print(summary_line(result))
    return 0


def summary_line(result: dict[str, Any]) -> str:
    """One run's line after training: what it did, its final evaluation and where it is."""
    ev = result["eval"]
    return (f"{result['agent']} on {result['env_id']} (seed {result['seed']}): {work_done(result)} in "
            f"{result['wall_s']:.1f}s, eval {ev['mean']:.1f} ± {ev['std']:.1f} over {ev['episodes']} episodes "
            f"-> {result['run_dir']}")


def work_done(result: dict[str, Any]) -> str:
    """What a run did, for its summary line: env steps, or for a learner that never steps an env (BC) its
    gradient steps and epochs ("0 steps" would read as if it did nothing)."""
    if not result.get("env_steps") and result.get("gradient_steps") is not None:
        epochs = f" ({result['epochs']} epochs)" if result.get("epochs") is not None else ""
        return f"{result['gradient_steps']} gradient steps{epochs}"
    return f"{result['env_steps']} steps"


# ---------------------------------------------------------------------------------------------
# rlkit train AGENT --seeds SPEC: several seeds in one process
# ---------------------------------------------------------------------------------------------
SEEDS_FILE = "seeds.json"  # in a --seeds run's directory: the agent, its seeds and the config they share
MAX_SEEDS = 1_000  # each seed holds its own envs, networks and replay buffer in this one process


def parse_seeds(text: str) -> list[int]:
    """``--seeds``: ``0-4`` (a range, both ends included), ``0,2,5``, or a mix such as ``0-2,7``; the seeds in the
    order written. An empty list, a backwards range, a negative seed, a seed named twice or anything else is a
    one-line RLKitError."""
    fix = "write seeds as 0-4, 0,2,5 or 0-2,7"
    if not text.strip():
        raise RLKitError(f"--seeds is empty; {fix}")
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if match is None:
            problem = ("an empty item between commas" if not part else "seeds cannot be negative"
                       if re.fullmatch(r"-\s*\d+(\s*-\s*\d+)?", part) else f"{part!r} is neither a seed nor a range")
            raise RLKitError(f"--seeds {text}: {problem}; {fix}")
        low, high = int(match[1]), int(match[2] or match[1])
        if high < low:
            raise RLKitError(f"--seeds {text}: the range {low}-{high} runs backwards; write {high}-{low}")
        if high > MAX_SEED:
            raise RLKitError(f"--seeds {text}: seed {high} is above {MAX_SEED}, the largest seed numpy and gymnasium "
                             "take; choose smaller seeds")
        if len(seeds) + high - low + 1 > MAX_SEEDS:
            raise RLKitError(f"--seeds {text}: more than {MAX_SEEDS} seeds in one process; split them over "
                             "several commands")
        seeds.extend(range(low, high + 1))
    twice = sorted(seed for seed, n in Counter(seeds).items() if n > 1)
    if twice:
        raise RLKitError(f"--seeds {text}: {', '.join(map(str, twice))} named twice; name each seed once")
    return seeds


def seeds_label(seeds: list[int]) -> str:
    """``[0, 1, 2, 7]`` -> ``0-2_7``: the seeds as --seeds would write them, with ``_`` for the comma (a path)."""
    runs: list[list[int]] = []
    for seed in seeds:
        if runs and seed == runs[-1][-1] + 1:
            runs[-1].append(seed)
        else:
            runs.append([seed])
    return "_".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def seeds_run_dir(agent: str, env_id: str, seeds: list[int]) -> Path:
    """The default directory of a --seeds run: a single run's default (``runs/dqn-CartPole-v1-seed0-TIME``) with
    its seed part naming all the seeds (``runs/dqn-CartPole-v1-seeds0-4-TIME``)."""
    single = default_run_dir(agent, env_id, seeds[0])
    head, _, stamp = single.name.rpartition(f"-seed{seeds[0]}-")
    return single.with_name(f"{head}-seeds{seeds_label(seeds)}-{stamp}")


def is_seeds_dir(path: str | None) -> bool:
    """Whether ``--resume path`` names a --seeds run (its seeds.json, and no config.json of a single run)."""
    return path is not None and not (Path(path) / "config.json").exists() and (Path(path) / SEEDS_FILE).exists()


def _refuse_seed_conflicts(args: argparse.Namespace) -> None:
    if args.seeds is not None and args.seed is not None:
        raise RLKitError("--seed and --seeds both given; --seed S trains one run, --seeds SPEC several: pass one")
    if args.seeds is not None and args.resume:
        raise RLKitError(f"--seeds with --resume {args.resume}: a resume continues the seeds its directory "
                         "records; drop --seeds")
    if args.resume and args.seed is not None:
        raise RLKitError(f"--seed with --resume of the --seeds run {args.resume}: drop --seed (to resume one seed "
                         f"alone: --resume {Path(args.resume) / 'seedS'})")
    overrides = parse_set_args(args.set)
    if "seed" in overrides:
        raise RLKitError("--set seed=... for a --seeds run: its seeds come from --seeds; drop --set seed")
    if args.resume and "run_dir" in overrides:
        raise RLKitError(f"--set run_dir=... with --resume {args.resume}: each seed continues in its own directory; "
                         "drop --set run_dir")


def cmd_train_seeds(args: argparse.Namespace) -> int:
    """``--seeds SPEC``, or ``--resume D`` of such a run: every seed trained through :func:`registry.train_seeds
    <rlkit.registry.train_seeds>` (in one process, in lockstep where the agent offers it, else one after another),
    then a line per seed and the mean over seeds with its 95% CI."""
    _refuse_seed_conflicts(args)
    spec = get_agent(args.agent)
    if args.resume:
        parent = Path(args.resume)
        seeds, batches = _resumed_seeds(args, spec, parent)
        results = [r for cfgs, resume in batches for r in train_seeds(spec, cfgs, resume=resume)]
    else:
        seeds = parse_seeds(args.seeds)
        parent, cfgs = _new_seeds(args, seeds)
        with _forgotten_if_none_started(parent, seeds):
            results = train_seeds(spec, cfgs)
    results.sort(key=lambda r: seeds.index(r["seed"]))
    _print_seeds(args, parent, results)
    return 0


def _new_seeds(args: argparse.Namespace, seeds: list[int]) -> tuple[Path, list[BaseConfig]]:
    """The seeds' configs, each exactly what ``--seed S`` would train, in ``D/seedS``; writes ``D/seeds.json``."""
    from rlkit.checkpoint import atomic_write_text, list_checkpoints

    _, base, _ = resolve_train_config(args)  # a single run's config: presets, flags, --set (no seed given)
    parent = Path(base.run_dir) if base.run_dir else seeds_run_dir(args.agent, base.env_id, seeds)
    if (parent / "config.json").exists() or list_checkpoints(parent):
        raise RLKitError(f"{parent} is a single run's directory; choose another --run-dir for the seeds")
    if (parent / SEEDS_FILE).exists():
        raise RLKitError(f"{parent} already holds a --seeds run; pass --resume {parent} to continue it "
                         "or choose another --run-dir")
    cfgs = [apply_overrides(base, {"seed": seed, "run_dir": str(parent / f"seed{seed}")}, source="--seeds")
            for seed in seeds]
    shared = {k: v for k, v in base.to_dict().items() if k not in ("seed", "run_dir")}
    parent.mkdir(parents=True, exist_ok=True)
    # Written before any seed starts: a resume must know the seeds that had not started yet (one after another).
    atomic_write_text(parent / SEEDS_FILE, json.dumps({"agent": args.agent, "seeds": seeds, "config": shared},
                                                      indent=2))
    return parent, cfgs


@contextmanager
def _forgotten_if_none_started(parent: Path, seeds: list[int]) -> Iterator[None]:
    """A --seeds run refused before any seed wrote a file (a bad env id) leaves nothing behind, as a single run."""
    try:
        yield
    except BaseException:
        if not any((parent / f"seed{seed}").exists() for seed in seeds):
            (parent / SEEDS_FILE).unlink(missing_ok=True)
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
        raise


def _read_seeds_file(parent: Path, agent: str) -> dict[str, Any]:
    from rlkit.checkpoint import read_json

    path = parent / SEEDS_FILE
    manifest = read_json(path)
    seeds = manifest.get("seeds")
    if not (isinstance(seeds, list) and seeds and all(type(s) is int and 0 <= s <= MAX_SEED for s in seeds)
            and len(set(seeds)) == len(seeds) and isinstance(manifest.get("config"), dict)):
        raise RLKitError(f"{path} is damaged: it needs a list of distinct seeds and a config; resume each seed "
                         f"alone with --resume {parent / 'seedS'}")
    if manifest.get("agent") != agent:
        other = manifest.get("agent")
        raise RLKitError(f"{parent} holds {other} runs, not {agent}; resume them with "
                         f"`rlkit train {other} --resume {parent}`")
    return manifest


def _resumed_seeds(args: argparse.Namespace, spec: AgentSpec, parent: Path
                   ) -> tuple[list[int], list[tuple[list[BaseConfig], bool]]]:
    """The seeds of the --seeds run in ``parent`` and their configs, as (configs, resume) batches: a seed with a
    checkpoint resumes from it as ``--resume D/seedS`` would; one without (not started when the run stopped, or
    stopped before its first checkpoint) starts afresh from the config the seeds share. This command's flags
    (a larger --steps) and --set apply to every seed."""
    from rlkit.checkpoint import list_checkpoints

    manifest = _read_seeds_file(parent, args.agent)
    flags, overrides = _train_flags(args), parse_set_args(args.set)
    flags.pop("run_dir", None)  # each seed stays in its own directory
    resumed, fresh = [], []
    for seed in manifest["seeds"]:
        run_dir = parent / f"seed{seed}"
        if list_checkpoints(run_dir):
            resumed.append(_resumed_config(spec, args.agent, run_dir, flags, overrides))
        else:
            fresh.append(_config_from_saved(spec, {**manifest["config"], "seed": seed}, parent / SEEDS_FILE, flags,
                                            overrides, run_dir))
    return manifest["seeds"], [(resumed, True), (fresh, False)]


def _print_seeds(args: argparse.Namespace, parent: Path, results: list[dict[str, Any]]) -> None:
    """A line per seed, then the mean final evaluation over seeds with its 95% bootstrap CI (``--json``: all of
    it as one JSON object)."""
    from rlkit.apps import reports

    summary = reports.summarize([r["eval"]["mean"] for r in results])
    if args.json:
        print(json.dumps({"run_dir": str(parent), "seeds": [r["seed"] for r in results], "runs": results,
                          "aggregate": summary}, indent=2))
        return
    for result in results:
        print(summary_line(result))
    n, (low, high) = len(results), summary["mean_ci"]
    print(f"mean eval over {n} seed{'s' * (n > 1)}: {reports.fmt(summary['mean'])}, 95% CI [{reports.fmt(low)}, "
          f"{reports.fmt(high)}] (bootstrap over seeds) -> {parent}")


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
