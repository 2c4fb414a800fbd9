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
from rlkit.config import BaseConfig, config_from_dict, opt, require_at_least_one, validate_config
from rlkit.engine.imitation import mixture_episode, train_rounds
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
    demos: str | None = opt(None, "optional expert demonstrations used as round 0 (instead of expert rollouts); "
                                  "several, one per task of a multi-task suite: A,B,... or a directory of datasets")
    labels: str | None = opt(None, "dataset the expert-labelled states are appended to; default RUN_DIR/labels")
    total_steps: int = opt(0, "stop after the round in which this many env steps were collected (0 = no cap)", low=0)
    checkpoint_every: int = opt(0, "not used by dagger: it checkpoints after every round")
    log_every: int = opt(0, "not used by dagger: it writes metrics after every round")
    rounds: int = opt(10, "DAgger rounds, round 0 included")
    episodes_per_round: int = opt(5, "episodes collected (and labelled) per round")
    beta_schedule: Literal["exponential", "linear"] = opt("exponential", "how beta, the expert's share, decays")
    beta_decay: float = opt(0.5, "exponential schedule: beta_i = beta_decay ** i (Ross et al.'s p)", low=0, high=1)
    beta_rampdown: int = opt(5, "linear schedule: beta falls from 1 to 0 over this many rounds")
    epochs_per_round: int = opt(10, "BC epochs on the aggregated dataset after each round")
    batch_size: int = opt(64, "minibatch size", low=1)
    lr: float = opt(1e-3, "Adam learning rate", low=0)
    hidden: list[int] = opt([64, 64], "hidden layer sizes of the learner's MLP", low=1)
    loss: Literal["auto", "ce", "mse", "nll"] = opt("auto", "BC loss: auto (ce / mse), ce, mse or nll")

    def validate(self) -> None:
        # batch_size and beta_decay: their opt() ranges
        require_at_least_one(self, "rounds", "episodes_per_round", "epochs_per_round", "beta_rampdown")
        if self.expert_checkpoint not in ("latest", "best") and not str(self.expert_checkpoint).isdigit():
            raise RLKitError(f"expert_checkpoint must be latest, best or a step number; got {self.expert_checkpoint!r}")


# ALGO LOGIC: the schedule, a pure function (unit-tested).
def beta_at(round_index: int, schedule: str, decay: float = 0.5, rampdown: int = 5) -> float:
    """The expert's share in round ``round_index`` (0-based); round 0 is always pure expert."""
    if schedule == "exponential":
        return float(decay ** round_index)
    return float(max(0.0, 1.0 - round_index / rampdown))


class DAggerLearner:
    """DAgger for the imitation loop: a round collects ``episodes_per_round`` episodes with the beta-mixture,
    has the expert label every visited state, commits them to the labels dataset, and trains BC epochs on the
    aggregate. It writes a row and a checkpoint after every round."""

    log_every = 1
    checkpoint_every = 1
    checkpoint_on_interrupt = True

    def __init__(self, cfg: DAggerConfig, run: Run, expert: Policy, initial: Any, resume: bool) -> None:
        from rlkit import demos

        self.cfg, self.expert, self.initial = cfg, expert, initial
        render = "rgb_array" if getattr(expert, "needs_render", False) else None
        self.env = make_env(cfg.env_id, seed=cfg.seed, render_mode=render, env_kwargs=cfg.env_kwargs)
        obs_space, act_space = self.env.observation_space, self.env.action_space
        if initial is not None:
            initial.check_env(None, obs_space, act_space)
        self.loss_kind = resolve_loss(cfg.loss, act_space)
        self.net = BCNet(obs_space, act_space, cfg.hidden, self.loss_kind, cfg.device)
        self.optimizer = FlatAdam(self.net, lr=cfg.lr)
        self.policy = make_policy(self.net, obs_space, act_space)
        self.labels_path = Path(cfg.labels or run.dir / "labels")
        if not resume and (self.labels_path / "manifest.json").exists():
            raise RLKitError(f"labels dataset {self.labels_path} already exists; choose another --set labels=... "
                             "or continue that run with --resume")
        source = f"dagger:{cfg.expert or type(expert).__name__}"
        self.writer = demos.DatasetWriter(self.labels_path, cfg.env_id, obs_space, act_space, source=source,
                                          env_kwargs=cfg.env_kwargs, append=True)
        parts = [initial] if initial is not None else []
        if self.writer.num_episodes:  # resumed: every committed episode counts, even those of an unfinished round
            parts.append(demos.load(self.labels_path))
        self.episodes_done = self.writer.num_episodes
        self.data = [to_tensors(p, act_space, cfg.device) for p in parts if len(p)]
        self.spaces = {"observation_space": obs_space, "action_space": act_space}
        self.round_index, self.stopped = -1, False  # the last round trained; the expert stopped recording

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(), "round": self.round_index,
                **self.spaces, "loss_kind": self.loss_kind, "labels": str(self.labels_path)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.round_index = state["round"]

    def collect(self, run: Run, beta: float, wanted: int) -> tuple[list[float], int]:
        """``wanted`` labelled episodes of the mixture, each committed to disk before the learner uses it;
        returns (their returns, their steps)."""
        cfg, expert, act_space = self.cfg, self.expert, self.spaces["action_space"]
        returns, new, steps = [], 0, 0
        while new < wanted and not self.stopped:
            seed = cfg.seed + self.episodes_done
            if is_interactive(expert):
                expert.begin_episode(self.env, new, cfg.episodes_per_round)
            try:
                obs, labels, term, trunc, ret = mixture_episode(self.env, expert, self.policy, beta, seed, run.rng)
            except DiscardEpisode:
                continue
            except StopRecording:
                self.stopped = True
                break
            # Committed to disk before the learner uses it: a crash now loses nothing collected.
            self.writer.add_episode(obs, labels, term, trunc, seed=seed)
            self.data.append((torch.as_tensor(obs[:-1], device=cfg.device),
                              action_tensor(labels, act_space, cfg.device)))
            run.logger.record_episode(ret, len(labels))
            returns.append(ret)
            self.episodes_done, new, steps = self.episodes_done + 1, new + 1, steps + len(labels)
        return returns, steps

    def round(self, run: Run) -> int:
        cfg, round_index = self.cfg, self.round_index + 1
        beta = beta_at(round_index, cfg.beta_schedule, cfg.beta_decay, cfg.beta_rampdown)
        # Given demonstrations replace round 0's expert rollouts.
        wanted = 0 if round_index == 0 and self.initial is not None else cfg.episodes_per_round
        returns, steps = self.collect(run, beta, wanted)
        if not self.data:
            raise RLKitError("dagger collected no labelled states (the expert stopped at once)")
        # ALGO LOGIC: behavior cloning on the whole aggregate D.
        obs_all = torch.cat([d[0] for d in self.data])
        acts_all = torch.cat([d[1] for d in self.data])
        for _ in range(cfg.epochs_per_round):
            train_epoch(self.net, self.optimizer, obs_all, acts_all, cfg.batch_size, self.loss_kind)
        train_loss, accuracy = evaluate_loss(self.net, obs_all, acts_all, self.loss_kind)
        run.logger.record("losses/train", train_loss)
        if accuracy is not None:
            run.logger.record("charts/train_accuracy", accuracy)
        run.logger.record("charts/beta", beta)
        run.logger.record("charts/round", round_index)
        run.logger.record("charts/dataset_size", len(obs_all))
        if returns:
            run.logger.record("charts/mixture_return", float(np.mean(returns)))
        self.round_index = round_index  # what an interrupt checkpoints from here on
        return steps

    def finished(self, global_step: int) -> bool:
        budget_spent = bool(self.cfg.total_steps and global_step >= self.cfg.total_steps)
        return self.stopped or self.round_index + 1 >= self.cfg.rounds or budget_spent

    def close(self) -> None:
        self.writer.close()
        self.env.close()
        if is_interactive(self.expert):
            self.expert.close()

    def final(self) -> tuple[dict[str, Any], dict[str, Any]]:
        extra = {"rounds": self.round_index + 1, "labelled_episodes": self.episodes_done,
                 "labelled_states": int(sum(len(d[0]) for d in self.data)), "labels": str(self.labels_path)}
        return self.state_dict(), extra


def train(cfg: DAggerConfig, resume: bool = False, callbacks: Sequence[Callback] | None = None, *,
          expert: Policy | None = None) -> dict[str, Any]:
    """Train DAgger as configured; ``expert`` (a Policy) overrides ``cfg.expert``. Returns final.json."""
    from rlkit import demos

    validate_config(cfg)
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
    learner = DAggerLearner(cfg, run, expert, initial, resume)
    # Ctrl-C or SIGTERM mid-round checkpoints the learner of the last round trained: the labels of the
    # unfinished round are on disk already, and --resume trains on them too.
    return train_rounds(run, learner, eval_env_factory(cfg))


def load_policy(state: dict[str, Any]) -> Policy:
    """The learner is a BC network: rebuild it the same way."""
    cfg = config_from_dict(DAggerConfig, {k: v for k, v in state["config"].items() if k in ("hidden", "loss", "seed")})
    return policy_from_state(state, cfg.hidden)


AGENT = AgentSpec("dagger", DAggerConfig, train, load_policy,
                  summary="DAgger (Ross et al. 2011): BC on states the learner visits, labelled by an expert policy")

if __name__ == "__main__":
    train_from_command_line("dagger")
