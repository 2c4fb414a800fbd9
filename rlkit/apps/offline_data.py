"""``rlkit offline-data``: D4RL-style datasets with rewards and reference scores, built from rlkit's own agents.

D4RL (Fu et al. 2020, https://arxiv.org/abs/2004.07219) names its locomotion datasets by the policy that
collected them; this builds the same kinds for any continuous-control env an rlkit agent can learn (TD3 by
default, with its preset for the env)::

    rlkit offline-data --env Pendulum-v1 --out data/pendulum

The recipe, in this order:

1. Train the expert (``OUT/runs/expert``): the agent with its preset for the env, its full budget; or, with
   ``--expert RUN_DIR``, take an already trained run's latest policy and its config (agent, settings, seed).
2. Reference scores: the mean return of a uniform random policy and of the expert (deterministic) over
   ``--reference-episodes`` (100) episodes, reset from seeds of their own: ``ref_min_score`` and
   ``ref_max_score``, D4RL's normalised 0 and 100.
3. Train again with the same seed (``OUT/runs/medium``), evaluating every ``--eval-every`` env steps, and stop at
   the first evaluation at a third of the way from random to expert (normalised score 33; Pendulum's returns are
   negative, so "a third of the expert's return" is read as D4RL's normalised third). That policy is ``medium``
   and its replay buffer (every transition of that training, kept whole) is ``medium-replay``.
4. Record ``--episodes`` episodes of each of the random, medium and expert policies (``random``, ``medium``,
   ``expert``); medium and expert act with Gaussian noise of ``--noise`` (0.1) times the half-range, as the agent
   explored in training (D4RL sampled its SAC policies). ``medium-expert`` is the medium episodes then the expert
   episodes, as D4RL concatenates them.

Each dataset is an rlkit dataset with rewards (``rlkit demos inspect`` reads it; offline learners train on it with
``--demos``) whose ``manifest.json`` holds ``reference_scores`` (``ref_min_score``, ``ref_max_score`` and how they
were measured) and ``offline_data`` (its kind and the recipe). ``OUT/datasets.json`` summarises the build.
Episodes from the replay buffer carry no reset seed (the training env reset itself), so ``rlkit demos replay``
cannot re-run ``medium-replay``; the recorded kinds replay.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from rlkit.checkpoint import atomic_write_text, list_checkpoints, load_buffer
from rlkit.config import BaseConfig, apply_overrides, parse_set_args, preset_for_env
from rlkit.errors import RLKitError
from rlkit.evaluation import evaluate
from rlkit.policy import Policy, RandomPolicy, load_policy
from rlkit.registry import AgentSpec, env_factory, get_agent

KINDS = ("random", "medium", "medium-replay", "expert", "medium-expert")
MEDIUM_FRACTION = 1 / 3  # D4RL's medium: "about 1/3 the performance of the expert"
# Reset seeds of each kind's episodes start at seed + offset, so that no two kinds share a start state by accident.
SEED_OFFSETS = {"random": 0, "medium": 1_000_000, "expert": 2_000_000, "reference": 3_000_000}


class NoisyPolicy:
    """``policy``'s actions plus N(0, (noise * half_range)^2), clipped to the bounds: the agent's own exploration."""

    def __init__(self, policy: Policy, action_space: gym.spaces.Box, noise: float, seed: int) -> None:
        self.policy, self.noise, self.rng = policy, noise, np.random.default_rng(seed)
        self.low, self.high = action_space.low.astype(np.float32), action_space.high.astype(np.float32)
        self.half_range = (self.high - self.low) / 2

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        actions = self.policy.act(obs, deterministic=True)
        noise = self.rng.standard_normal(actions.shape) * self.noise * self.half_range
        return np.clip(actions + noise, self.low, self.high).astype(np.float32)


def agent_config(spec: AgentSpec, env_id: str, preset: str, seed: int, run_dir: Path, overrides: dict[str, Any],
                 progress: bool = False) -> BaseConfig:
    """The agent's config for ``env_id``: its preset (``auto``: the one made for the env), the build's settings,
    then ``overrides`` (``--set``). The replay buffer keeps every transition: medium-replay is the whole history,
    and a capacity of at least the budget changes nothing else in training."""
    name = (preset_for_env(spec.presets(), env_id) or "none") if preset == "auto" else preset
    cfg = spec.config_cls.from_preset(name, agent=spec.name, env_id=env_id, seed=seed, run_dir=str(run_dir),
                                      progress=progress, tensorboard=False, checkpoint_every=0, save_buffer=False,
                                      **overrides)
    return _build_settings(spec, cfg)


def _build_settings(spec: AgentSpec, cfg: BaseConfig) -> BaseConfig:
    if not hasattr(cfg, "buffer_size"):
        raise RLKitError(f"offline-data trains an off-policy agent (td3, sac, ddpg), whose replay buffer becomes "
                         f"medium-replay; {spec.name} has none")
    return apply_overrides(cfg, {"buffer_size": cfg.total_steps}, source="offline-data")


def expert_from_run(run_dir: str | Path, env_id: str, progress: bool) -> tuple[AgentSpec, BaseConfig, Policy, int]:
    """An already trained run as the expert (``--expert RUN_DIR``): its latest checkpoint's policy, and its config
    (the same agent, settings and seed) as the recipe the medium run trains again with the build's settings."""
    from rlkit.checkpoint import load_checkpoint
    from rlkit.config import config_from_dict
    from rlkit.policy import policy_from_checkpoint

    state = load_checkpoint(run_dir)
    spec = get_agent(state["agent"])
    cfg = config_from_dict(spec.config_cls, state["config"])
    if cfg.env_id != env_id:
        raise RLKitError(f"--expert {run_dir} was trained on {cfg.env_id}, not {env_id}; give --env {cfg.env_id} "
                         "or an expert of this env")
    cfg = apply_overrides(cfg, {"run_dir": str(Path(run_dir)), "progress": progress, "tensorboard": False,
                                "checkpoint_every": 0, "save_buffer": False, "target_return": None},
                          source="offline-data")
    return spec, _build_settings(spec, cfg), policy_from_checkpoint(state), int(state["global_step"])


def reference_scores(env_id: str, expert: Policy, episodes: int, seed: int) -> dict[str, Any]:
    """The random and the expert policy's mean return over ``episodes`` episodes from the same reset seeds."""
    def make_env(render_mode: str | None = None) -> gym.Env:
        return env_factory()(env_id, render_mode=render_mode)

    env = make_env()
    action_space = env.action_space
    env.close()
    first = seed + SEED_OFFSETS["reference"]
    random = evaluate(RandomPolicy(action_space, seed=first), make_env, episodes, seed=first, deterministic=False)
    best = evaluate(expert, make_env, episodes, seed=first, deterministic=True)
    return {"ref_min_score": random["mean"], "ref_max_score": best["mean"], "ref_min_std": random["std"],
            "ref_max_std": best["std"], "episodes": episodes, "first_seed": first,
            "ref_min_policy": "uniform random", "ref_max_policy": "the expert, deterministic"}


def replay_episodes(buffer: dict[str, Any]) -> list[dict[str, Any]]:
    """The complete episodes of a saved :class:`rlkit.buffers.ReplayBuffer` state (rows ``[0, pos)`` of each env's
    column; an episode's last observation is in ``_final_obs``), in the order they ended; a last episode still
    running is left out."""
    if buffer["full"] or buffer["frame_stack"]:
        raise RLKitError("the replay buffer wrapped around or stacks frames, so it no longer holds the whole training "
                         "history; raise buffer_size")
    episodes = []
    for env in range(buffer["num_envs"]):
        start = 0
        for row in range(buffer["pos"]):
            if not (buffer["terminated"][row, env] or buffer["truncated"][row, env]):
                continue
            rows = slice(start, row + 1)
            obs = np.concatenate([buffer["obs"][rows, env], buffer["_final_obs"][(row, env)][None]])
            terminated = bool(buffer["terminated"][row, env])
            episodes.append({"end": row, "obs": obs, "actions": buffer["actions"][rows, env],
                             "rewards": buffer["rewards"][rows, env], "terminated": terminated,
                             "truncated": not terminated})
            start = row + 1
    return sorted(episodes, key=lambda ep: ep["end"])


def write_episodes(path: Path, env_id: str, spaces: tuple[gym.Space, gym.Space], groups: Sequence[tuple[str, list]]
                   ) -> None:
    """A dataset of ``groups``: (source, episodes) pairs, each episode a dict as :func:`replay_episodes` gives or an
    :class:`rlkit.demos.Episode`; one writer session per source, so each episode records its own."""
    from rlkit.demos import DatasetWriter, Episode

    for i, (source, episodes) in enumerate(groups):
        with DatasetWriter(path, env_id, *spaces, source=source, append=i > 0) as writer:
            for ep in episodes:
                if isinstance(ep, Episode):
                    writer.add_episode(ep.obs, ep.actions, ep.terminated, ep.truncated, ep.seed, options=ep.options,
                                       rewards=ep.rewards, episode_return=ep.episode_return)
                else:
                    writer.add_episode(ep["obs"], ep["actions"], ep["terminated"], ep["truncated"], None,
                                       rewards=ep["rewards"], episode_return=float(np.sum(ep["rewards"])))


def add_metadata(path: Path, reference: dict[str, Any], recipe: dict[str, Any]) -> None:
    """Write the reference scores and the recipe into the dataset's manifest (atomically, as the writer does)."""
    from rlkit.demos.dataset import MANIFEST
    from rlkit.demos.reader import read_manifest

    raw = read_manifest(path)
    raw.update({"reference_scores": reference, "offline_data": recipe})
    atomic_write_text(path / MANIFEST, json.dumps(raw, indent=1) + "\n", home=path)


def _train(spec: AgentSpec, cfg: BaseConfig, log: Callable[[str], None]) -> dict[str, Any]:
    log(f"training {spec.name} on {cfg.env_id} for up to {cfg.total_steps} steps -> {cfg.run_dir}")
    return spec.train(cfg)


def _medium_run(spec: AgentSpec, expert_cfg: BaseConfig, reference: dict[str, Any], eval_every: int, out: Path,
                log: Callable[[str], None]) -> tuple[dict[str, Any], float]:
    """Train again from the same seed, stopping at the first evaluation that reaches the medium level."""
    low, high = reference["ref_min_score"], reference["ref_max_score"]
    threshold = low + MEDIUM_FRACTION * (high - low)
    cfg = apply_overrides(expert_cfg, {"run_dir": str(out / "runs" / "medium"), "eval_every": eval_every,
                                       "target_return": threshold, "save_buffer": True}, source="offline-data")
    result = _train(spec, cfg, log)
    if result.get("stopped", {}).get("reason") != "target_return":
        raise RLKitError(f"the second {spec.name} run never reached the medium level {threshold:.1f} at its "
                         f"evaluations (every {eval_every} steps; best {result['best_eval_mean']:.1f}); lower "
                         "--eval-every or raise the budget")
    return result, threshold


def _summary(path: Path, reference: dict[str, Any]) -> dict[str, Any]:
    from rlkit.demos import load

    dataset = load(path)
    returns = [float(np.sum(ep.rewards, dtype=np.float64)) for ep in dataset]
    mean = float(np.mean(returns))
    low, high = reference["ref_min_score"], reference["ref_max_score"]
    return {"path": str(path), "episodes": len(dataset), "transitions": dataset.num_steps, "mean_return": mean,
            "normalized_return": 100.0 * (mean - low) / (high - low)}


def _check_out(out: Path, kinds: Sequence[str]) -> None:
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown or not kinds:
        raise RLKitError(f"unknown dataset kind(s) {', '.join(unknown) or '(none given)'}; choose from "
                         f"{', '.join(KINDS)}")
    taken = [str(out / name) for name in (*KINDS, "runs") if (out / name).exists()]
    if taken:
        raise RLKitError(f"{taken[0]} already exists; build into a new --out (nothing is overwritten)")


def build_datasets(env_id: str, out: str | Path, *, seed: int = 0, episodes: int = 250, agent: str = "td3",
                   preset: str = "auto", overrides: dict[str, Any] | None = None, noise: float = 0.1,
                   eval_every: int = 1_000, reference_episodes: int = 100, kinds: Sequence[str] = KINDS,
                   expert_run: str | Path | None = None, progress: bool = False,
                   log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Build the D4RL kinds ``kinds`` for ``env_id`` into ``out/<kind>`` (see the module docstring).

    Args:
        env_id: a continuous-control env the agent learns.
        out: the folder of the datasets and of the two training runs (``out/runs``); none of them may exist yet.
        seed: seed of both training runs and of every episode's reset (``seed + offset + i``).
        episodes: episodes recorded of each of the random, medium and expert policies.
        agent: the off-policy agent that trains (``td3``, ``sac``, ``ddpg``).
        preset: its preset (``auto``: the one made for ``env_id``).
        overrides: config fields of the agent, over the preset (a shorter budget, smaller networks).
        noise: std of the Gaussian noise on the medium and expert actions, a fraction of the half-range.
        eval_every: env steps between the evaluations of the second run, which stops at the medium level.
        reference_episodes: episodes of the random and expert reference returns (D4RL: 100).
        kinds: which datasets to write.
        expert_run: an already trained run of an off-policy agent to take as the expert instead of training one;
            its config (agent, settings, seed) replaces ``agent``, ``preset`` and ``overrides`` for the medium run.
        progress: show the training runs' progress.
        log: called with a line per stage (the CLI prints them on stderr).

    Returns:
        What ``out/datasets.json`` holds: the reference scores, the medium run's stop, and per dataset its path,
        episodes, transitions, mean return and normalised return.
    """
    t0, out, log = time.perf_counter(), Path(out), log or (lambda line: None)
    _check_out(out, kinds)
    if episodes < 1 or reference_episodes < 1 or eval_every < 1 or noise < 0:
        raise RLKitError("episodes, reference-episodes and eval-every must be at least 1 and noise at least 0")
    if expert_run is None:
        spec = get_agent(agent)
        expert_cfg = agent_config(spec, env_id, preset, seed, out / "runs" / "expert", overrides or {}, progress)
        _train(spec, expert_cfg, log)
        expert = load_policy(out / "runs" / "expert")
    else:
        if overrides:
            raise RLKitError("--set changes the training that --expert's run came from; drop it (the medium run "
                             "trains again with the expert run's own config)")
        spec, expert_cfg, expert, expert_step = expert_from_run(expert_run, env_id, progress)
        agent = spec.name
        log(f"expert: {expert_run} ({spec.name}, step {expert_step}, seed {expert_cfg.seed})")
    reference = reference_scores(env_id, expert, reference_episodes, seed)
    log(f"reference returns over {reference_episodes} episodes: random {reference['ref_min_score']:.1f}, expert "
        f"{reference['ref_max_score']:.1f}")
    medium, medium_stop = None, None
    if {"medium", "medium-replay", "medium-expert"} & set(kinds):
        result, threshold = _medium_run(spec, expert_cfg, reference, eval_every, out, log)
        medium = load_policy(out / "runs" / "medium")
        medium_stop = {"step": result["stopped"]["global_step"], "eval_mean": result["stopped"]["eval_mean"],
                       "threshold": threshold}
        log(f"medium: step {medium_stop['step']}, evaluation {medium_stop['eval_mean']:.1f} (level {threshold:.1f})")
    recipe = {"env_id": env_id, "agent": agent, "agent_config": expert_cfg.to_dict(), "seed": seed, "noise": noise,
              "medium": medium_stop, "episodes": episodes}
    if expert_run is not None:
        recipe["expert_run"] = {"path": str(expert_run), "step": expert_step}
    _write_kinds(out, env_id, kinds, {"expert": expert, "medium": medium}, recipe, reference, log)
    summary = {"env_id": env_id, "reference_scores": reference, "medium": medium_stop,
               "datasets": {kind: _summary(out / kind, reference) for kind in kinds},
               "wall_s": round(time.perf_counter() - t0, 1), "command": recipe}
    atomic_write_text(out / "datasets.json", json.dumps(summary, indent=2) + "\n", home=out)
    return summary


def _write_kinds(out: Path, env_id: str, kinds: Sequence[str], policies: dict[str, Policy | None],
                 recipe: dict[str, Any], reference: dict[str, Any], log: Callable[[str], None]) -> None:
    """Record random, medium and expert; write medium-replay from the medium run's buffer and medium-expert from
    the recorded medium and expert episodes (recorded for it even when they are not written themselves)."""
    from rlkit.demos import load, record

    env = env_factory()(env_id)
    spaces = (env.observation_space, env.action_space)
    env.close()
    seed, episodes, noise = recipe["seed"], recipe["episodes"], recipe["noise"]
    staged: dict[str, Path] = {}
    for kind in ("random", "medium", "expert"):
        if kind not in kinds and not (kind != "random" and "medium-expert" in kinds):
            continue
        first = seed + SEED_OFFSETS[kind]
        policy = RandomPolicy(spaces[1], seed=first) if kind == "random" else \
            NoisyPolicy(policies[kind], spaces[1], noise, seed=first)
        path = out / kind if kind in kinds else out / "runs" / f"{kind}-episodes"
        log(f"recording {episodes} episodes of the {kind} policy -> {path}")
        record(policy, env_id, episodes, path, seed=first, keep_rewards=True,
               source=kind if kind == "random" else f"{out / 'runs' / kind} + noise {noise}")
        staged[kind] = path
    if "medium-replay" in kinds:
        step_dir = list_checkpoints(out / "runs" / "medium")[-1]
        log(f"writing the medium run's replay buffer ({step_dir}) -> {out / 'medium-replay'}")
        source = f"{recipe['agent']} replay buffer up to medium ({step_dir})"
        write_episodes(out / "medium-replay", env_id, spaces, [(source, replay_episodes(load_buffer(step_dir)))])
    if "medium-expert" in kinds:
        recorded = [load(staged[kind]) for kind in ("medium", "expert")]
        write_episodes(out / "medium-expert", env_id, spaces, [(ds.meta["source"], ds.episodes) for ds in recorded])
    for kind in kinds:
        add_metadata(out / kind, reference, {**recipe, "kind": kind})


# ------------------------------------------------------------------------------------------------ the command
def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "offline-data", help="build D4RL-style datasets (random ... medium-expert) with reference scores",
        description="Train the agent to expert, measure the random and expert reference returns, train again to "
                    "a third of the way (medium), then write the random, medium, medium-replay, expert and "
                    "medium-expert datasets into OUT, each with rewards and its reference scores (docs/offline.md). "
                    "Export one to Minari with `rlkit demos convert OUT/KIND --to minari --out DIR/NAME-v0` (its "
                    "reference scores travel); the offline learners' --demos take a Minari id or directory too.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--env", dest="env_id", required=True, help="a continuous-control env id, e.g. Pendulum-v1")
    p.add_argument("--out", required=True, help="folder of the datasets (OUT/KIND) and training runs (OUT/runs)")
    p.add_argument("--episodes", type=int, default=250, help="episodes of each of random, medium and expert")
    p.add_argument("--seed", type=int, default=0, help="seed of the training runs and of the episodes' resets")
    p.add_argument("--agent", default="td3", help="the off-policy agent that trains (td3, sac, ddpg)")
    p.add_argument("--preset", default="auto", help="its preset (auto: the one made for --env)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of the agent over its preset, e.g. --set total_steps=30000")
    p.add_argument("--noise", type=float, default=0.1,
                   help="std of the Gaussian noise on medium and expert actions, a fraction of the half-range")
    p.add_argument("--eval-every", type=int, default=1_000,
                   help="env steps between the evaluations of the run that stops at the medium level")
    p.add_argument("--reference-episodes", type=int, default=100, help="episodes of each reference return")
    p.add_argument("--expert", metavar="RUN_DIR",
                   help="an already trained run (td3, sac, ddpg) as the expert: no expert training; the medium run "
                        "trains again with that run's config and seed")
    p.add_argument("--kinds", default=",".join(KINDS), help="which datasets to write, comma-separated")
    p.add_argument("--quiet", action="store_true", help="no stage lines or progress on stderr")
    p.add_argument("--json", action="store_true", help="print datasets.json to stdout")
    p.set_defaults(func=cmd_offline_data)


def cmd_offline_data(args: argparse.Namespace) -> int:
    def log(line: str) -> None:
        if not args.quiet:
            print(f"rlkit offline-data: {line}", file=sys.stderr, flush=True)

    kinds = [kind.strip() for kind in args.kinds.split(",") if kind.strip()]
    summary = build_datasets(args.env_id, args.out, seed=args.seed, episodes=args.episodes, agent=args.agent,
                             preset=args.preset, overrides=parse_set_args(args.set), noise=args.noise,
                             eval_every=args.eval_every, reference_episodes=args.reference_episodes, kinds=kinds,
                             expert_run=args.expert, progress=not args.quiet, log=log)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    for kind, info in summary["datasets"].items():
        print(f"{kind:<14} {info['episodes']:>5} episodes {info['transitions']:>8} transitions  mean return "
              f"{info['mean_return']:9.1f}  normalised {info['normalized_return']:6.1f}  {info['path']}")
    ref = summary["reference_scores"]
    print(f"reference scores: random {ref['ref_min_score']:.1f}, expert {ref['ref_max_score']:.1f} "
          f"({ref['episodes']} episodes each); {Path(args.out) / 'datasets.json'}")
    return 0
