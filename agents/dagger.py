"""DAgger: dataset aggregation with an interactive expert.

Paper: Ross, Gordon & Bagnell 2011, "A Reduction of Imitation Learning and Structured Prediction to
No-Regret Online Learning", https://arxiv.org/abs/1011.0686 (Algorithm 3.1).

Each round ``i`` runs the mixture ``pi_i = beta_i * expert + (1 - beta_i) * learner`` (chosen per
step), asks the expert for its action in *every* visited state, appends those labelled states to the
dataset D, and trains the learner by behavior cloning on all of D. Because the learner's own
mistakes take it to the states it is then taught in, its error grows linearly in the horizon rather
than quadratically as BC's does.

What is implemented:
    * Any rlkit ``Policy`` is the expert: a run directory or checkpoint, ``sb3:ALGO:PATH.zip``,
      ``python:module:callable`` or ``human`` (the keyboard source of ``demos``), or a Policy object
      passed to :func:`train` from Python. An SB3 zip is loaded with nothing unpickled; one that needs
      unpickling is refused unless ``--set trust_remote_code=true``.
    * beta schedules: ``exponential`` (beta_i = p^i, the paper's) and ``linear`` (1 -> 0 over
      ``beta_rampdown`` rounds, imitation's ``LinearBetaSchedule``).
    * Crash safety: each episode's labelled states are appended to an rlkit dataset on disk
      (``demos.DatasetWriter``, one atomic commit per episode) before the learner trains on them, and a
      checkpoint follows every round, so a crash loses at most the current round; ``--resume``
      reloads the dataset.

Deviations, and why:
    * The learner is warm-started each round (``epochs_per_round`` epochs on the aggregate) instead of
      trained from scratch, as imitation does: much cheaper, and the paper's guarantee concerns the
      data, not the optimiser's starting point.
    * With ``--demos`` the given expert demonstrations stand in for round 0 (the pure-expert round).
    * The stored actions are the expert's *labels*, not the actions taken, so the labels dataset
      cannot be replay-verified (its states came from the mixture).

Run it: ``rlkit train dagger --env rlkit/CurvyRoad-v0 --set expert=python:rlkit.envs.test_envs:CurvyRoadExpert``
(or ``--preset curvyroad``, which names both).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from rlkit.demos.protocol import DiscardEpisode, StopRecording, is_interactive
from rlkit.demos.training import load_demos, resolve_env
from rlkit.envs import make_env

from rlkit.callbacks import Callback
from rlkit.cloning import (
    BCNet,
    action_tensor,
    evaluate_loss,
    make_policy,
    policy_from_state,
    resolve_loss,
    to_tensors,
    train_epoch,
)
from rlkit.config import BaseConfig, config_from_dict, opt, require_at_least_one
from rlkit.errors import RLKitError
from rlkit.fast.flat_adam import FlatAdam
from rlkit.policy import Policy
from rlkit.registry import AgentSpec, eval_env_factory, train_from_command_line
from rlkit.run import Run


@dataclass
class DAggerConfig(BaseConfig):
    """DAgger hyper-parameters; the learner's fields mean what they mean for bc."""

    env_id: str | None = opt(None, "env to run in; default: the env of the --demos dataset")
    expert: str | None = opt(None, "expert SOURCE: run dir/checkpoint, sb3:ALGO:PATH.zip, python:mod:fn or human")
    expert_checkpoint: str = opt("latest", "which checkpoint of an rlkit run expert: latest, best or a step number")
    trust_remote_code: bool = opt(False, "an sb3: expert whose zip needs unpickling (a custom policy class) is loaded "
                                         "SB3's way, running any code in it; off: refused (see docs/imitation.md)")
    demos: str | None = opt(None, "optional expert demonstrations used as round 0 (instead of expert rollouts)")
    labels: str | None = opt(None, "dataset the expert-labelled states are appended to; default RUN_DIR/labels")
    total_steps: int = opt(0, "stop after the round in which this many env steps were collected (0 = no cap)", low=0)
    checkpoint_every: int = opt(0, "not used by dagger: it checkpoints after every round")
    log_every: int = opt(0, "not used by dagger: it writes metrics after every round")
    rounds: int = opt(10, "DAgger rounds, round 0 included")
    episodes_per_round: int = opt(5, "episodes collected (and labelled) per round")
    beta_schedule: Literal["exponential", "linear"] = opt("exponential", "how beta, the expert's share, decays")
    beta_decay: float = opt(0.5, "exponential schedule: beta_i = beta_decay ** i (Ross et al.'s p)")
    beta_rampdown: int = opt(5, "linear schedule: beta falls from 1 to 0 over this many rounds")
    epochs_per_round: int = opt(10, "BC epochs on the aggregated dataset after each round")
    batch_size: int = opt(64, "minibatch size", low=1)
    lr: float = opt(1e-3, "Adam learning rate", low=0)
    hidden: list[int] = opt([64, 64], "hidden layer sizes of the learner's MLP", low=1)
    loss: Literal["auto", "ce", "mse", "nll"] = opt("auto", "BC loss: auto (ce / mse), ce, mse or nll")

    def validate(self) -> None:
        require_at_least_one(self, "rounds", "episodes_per_round", "epochs_per_round", "batch_size", "beta_rampdown")
        if not 0 <= self.beta_decay <= 1:
            raise RLKitError(f"beta_decay must be in [0, 1]; got {self.beta_decay}")
        if self.expert_checkpoint not in ("latest", "best") and not str(self.expert_checkpoint).isdigit():
            raise RLKitError(f"expert_checkpoint must be latest, best or a step number; got {self.expert_checkpoint!r}")


# ALGO LOGIC: the schedule, a pure function (unit-tested).
def beta_at(round_index: int, schedule: str, decay: float = 0.5, rampdown: int = 5) -> float:
    """The expert's share in round ``round_index`` (0-based); round 0 is always pure expert."""
    if schedule == "exponential":
        return float(decay ** round_index)
    return float(max(0.0, 1.0 - round_index / rampdown))


def collect_episode(env: Any, expert: Policy, learner: Policy, beta: float, seed: int, rng: np.random.Generator,
                    ) -> tuple[np.ndarray, np.ndarray, bool, bool, float]:
    """Run the beta-mixture for one episode; returns (obs T+1, expert labels T, terminated, truncated, return)."""
    obs, _ = env.reset(seed=seed)
    visited, labels, total = [np.asarray(obs)], [], 0.0
    dtype = env.action_space.dtype
    while True:
        label = np.asarray(expert.act(visited[-1][None])[0], dtype=dtype)
        # TRY NOT TO MODIFY: the expert labels every state, whoever acts in it.
        action = label if rng.random() < beta else np.asarray(learner.act(visited[-1][None])[0], dtype=dtype)
        obs, reward, terminated, truncated, _ = env.step(action)
        visited.append(np.asarray(obs))
        labels.append(label)
        total += float(reward)
        if terminated or truncated:
            return np.stack(visited), np.stack(labels), bool(terminated), bool(truncated), total


def train(cfg: DAggerConfig, resume: bool = False, expert: Policy | None = None,
          callbacks: Sequence[Callback] | None = None) -> dict[str, Any]:
    """Train DAgger as configured; ``expert`` (a Policy) overrides ``cfg.expert``. Returns final.json."""
    from rlkit import demos

    cfg.validate()
    initial = load_demos(cfg.demos, agent="dagger") if cfg.demos else None
    if initial is not None:
        resolve_env(cfg, initial)
    elif cfg.env_id is None:
        raise RLKitError("dagger needs an env: pass --env ENV_ID (or --demos DATASET to take it from there)")
    if expert is None:
        if not cfg.expert:
            raise RLKitError("dagger needs an expert: --set expert=SOURCE (a run dir, sb3:ALGO:PATH.zip, "
                             "python:module:callable or human)")
        expert = demos.resolve_policy(cfg.expert, cfg.env_id, seed=cfg.seed, env_kwargs=cfg.env_kwargs,
                                      checkpoint=cfg.expert_checkpoint, trust_remote_code=cfg.trust_remote_code)
    run = Run("dagger", cfg, resume=resume, callbacks=callbacks)  # seeds the global RNGs, sets thread counts
    render = "rgb_array" if getattr(expert, "needs_render", False) else None
    env = make_env(cfg.env_id, seed=cfg.seed, render_mode=render, env_kwargs=cfg.env_kwargs)
    obs_space, act_space = env.observation_space, env.action_space
    if initial is not None:
        initial.check_env(None, obs_space, act_space)
    loss_kind = resolve_loss(cfg.loss, act_space)
    net = BCNet(obs_space, act_space, cfg.hidden, loss_kind, cfg.device)
    optimizer = FlatAdam(net, lr=cfg.lr)
    learner = make_policy(net, obs_space, act_space)

    labels_path = Path(cfg.labels or run.dir / "labels")
    if not resume and (labels_path / "manifest.json").exists():
        raise RLKitError(f"labels dataset {labels_path} already exists; choose another --set labels=... "
                         "or continue that run with --resume")
    source = f"dagger:{cfg.expert or type(expert).__name__}"
    writer = demos.DatasetWriter(labels_path, cfg.env_id, obs_space, act_space, source=source,
                                 env_kwargs=cfg.env_kwargs, append=True)
    parts = [initial] if initial is not None else []
    start_round, global_step = 0, 0
    if run.resume_state is not None:
        state = run.resume_state
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        start_round, global_step = state["round"] + 1, run.global_step
    if writer.num_episodes:  # resumed: every committed episode counts, even those of an unfinished round
        parts.append(demos.load(labels_path))
    run.restore_rng()
    episodes_done = writer.num_episodes

    def state_dict(round_index: int) -> dict[str, Any]:
        return {"net": net.state_dict(), "optimizer": optimizer.state_dict(), "round": round_index,
                "observation_space": obs_space, "action_space": act_space, "loss_kind": loss_kind,
                "labels": str(labels_path)}

    data = [to_tensors(p, act_space, cfg.device) for p in parts if len(p)]
    round_index, stopped = start_round - 1, False
    # Ctrl-C or SIGTERM mid-round checkpoints the learner of the last round trained: the labels of the
    # unfinished round are on disk already, and --resume trains on them too.
    trained = (global_step, round_index)
    try:
        with run.checkpoint_on_interrupt(lambda: (trained[0], state_dict(trained[1]))):
            for round_index in range(start_round, cfg.rounds):
                beta = beta_at(round_index, cfg.beta_schedule, cfg.beta_decay, cfg.beta_rampdown)
                returns, new, steps = [], 0, 0
                # Given demonstrations replace round 0's expert rollouts.
                wanted = 0 if round_index == 0 and initial is not None else cfg.episodes_per_round
                while new < wanted and not stopped:
                    seed = cfg.seed + episodes_done
                    if is_interactive(expert):
                        expert.begin_episode(env, new, cfg.episodes_per_round)
                    try:
                        obs, labels, term, trunc, ret = collect_episode(env, expert, learner, beta, seed, run.rng)
                    except DiscardEpisode:
                        continue
                    except StopRecording:
                        stopped = True
                        break
                    # Committed to disk before the learner uses it: a crash now loses nothing collected.
                    writer.add_episode(obs, labels, term, trunc, seed=seed)
                    data.append((torch.as_tensor(obs[:-1], device=cfg.device),
                                 action_tensor(labels, act_space, cfg.device)))
                    run.logger.record_episode(ret, len(labels))
                    returns.append(ret)
                    episodes_done, new, steps = episodes_done + 1, new + 1, steps + len(labels)
                global_step += steps
                if not data:
                    raise RLKitError("dagger collected no labelled states (the expert stopped at once)")
                # ALGO LOGIC: behavior cloning on the whole aggregate D.
                obs_all = torch.cat([d[0] for d in data])
                acts_all = torch.cat([d[1] for d in data])
                for _ in range(cfg.epochs_per_round):
                    train_epoch(net, optimizer, obs_all, acts_all, cfg.batch_size, loss_kind)
                train_loss, accuracy = evaluate_loss(net, obs_all, acts_all, loss_kind)
                run.logger.record("losses/train", train_loss)
                if accuracy is not None:
                    run.logger.record("charts/train_accuracy", accuracy)
                run.logger.record("charts/beta", beta)
                run.logger.record("charts/round", round_index)
                run.logger.record("charts/dataset_size", len(obs_all))
                if returns:
                    run.logger.record("charts/mixture_return", float(np.mean(returns)))
                trained = (global_step, round_index)  # what an interrupt checkpoints from here on
                if Run.due(global_step, cfg.eval_every, max(steps, 1)):
                    run.evaluate(learner, eval_env_factory(cfg), global_step,
                                 state=lambda round_index=round_index: state_dict(round_index), write_row=False)
                run.logger.dump(global_step)
                if stopped or run.stopped is not None or (cfg.total_steps and global_step >= cfg.total_steps):
                    break
                if round_index + 1 < cfg.rounds:
                    run.checkpoint(global_step, state_dict(round_index))
    finally:
        writer.close()
        env.close()
        if is_interactive(expert):
            expert.close()
    extra = {"rounds": round_index + 1, "labelled_episodes": episodes_done,
             "labelled_states": int(sum(len(d[0]) for d in data)), "labels": str(labels_path)}
    return run.finish(learner, eval_env_factory(cfg), global_step, state_dict(round_index), extra=extra)


def load_policy(state: dict[str, Any]) -> Policy:
    """The learner is a BC network: rebuild it the same way."""
    cfg = config_from_dict(DAggerConfig, {k: v for k, v in state["config"].items() if k in ("hidden", "loss", "seed")})
    return policy_from_state(state, cfg.hidden)


AGENT = AgentSpec("dagger", DAggerConfig, train, load_policy,
                  summary="DAgger (Ross et al. 2011): BC on states the learner visits, labelled by an expert policy")

if __name__ == "__main__":
    train_from_command_line("dagger")
