"""Behavior cloning: supervised learning of expert actions from reward-free demonstrations.

Papers:
    BC       Pomerleau 1991, "Efficient training of artificial neural networks for autonomous
             navigation" (ALVINN); the modern form is plain maximum likelihood of the expert's actions.
    Context  Ross et al. 2011, https://arxiv.org/abs/1011.0686 (why BC's errors compound; see dagger.py)

What is implemented:
    * Losses: cross-entropy for Discrete actions; MSE or diagonal-Gaussian NLL for Box actions
      (the mean is squashed into the Box bounds by ``DeterministicActor``; NLL adds a learned,
      state-independent log std).
    * Networks from the shared builders (``QNetwork`` outputs the logits; images get the Nature CNN).
    * A validation split by whole episodes, early stopping on validation loss, best weights kept:
      the final checkpoint (what ``rlkit eval`` and ``rlkit demos record --policy RUN`` load) holds them.
    * The dataset lives in one tensor (images stay uint8) and each minibatch is one index into it, so
      there is no DataLoader/collate cost per sample; the optimizer is :class:`rlkit.fast.flat_adam.FlatAdam`
      (Adam over one flat parameter buffer). ``benchmarks/bench_bc.py`` measures the result.

Deviations, and why:
    * No entropy term (imitation's ``bc.BC`` adds ent_weight=1e-3); ``weight_decay`` gives the L2 one.
    * Orthogonal initialisation with a 0.01-gain output layer (SB3's and CleanRL's policy init): it
      starts near the uniform policy and generalises far better from a single demonstration.
    * Counters are in gradient steps: ``total_steps``, ``eval_every``, ``checkpoint_every``
      count minibatches, since BC never steps an env while training; metrics are written every epoch
      (``log_every`` does not apply).

Run it: ``rlkit train bc --demos DATASET`` (the env comes from the dataset) or ``python -m rlkit.agents.bc --help``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rlkit.demos.training import load_demos, resolve_env

from rlkit.callbacks import Callback
from rlkit.cloning import (
    BCNet,
    evaluate_loss,
    make_policy,
    policy_from_state,
    resolve_loss,
    to_tensors,
    train_epoch,
)
from rlkit.config import BaseConfig, config_from_dict, opt, require_at_least_one, validate_config
from rlkit.engine.imitation import train_rounds
from rlkit.errors import RLKitError
from rlkit.fast.flat_adam import FlatAdam
from rlkit.policy import TorchPolicy
from rlkit.registry import AgentSpec, eval_env_factory, train_from_command_line
from rlkit.run import Run


@dataclass
class BCConfig(BaseConfig):
    """BC hyper-parameters (defaults suit classic-control demonstrations)."""

    env_id: str | None = opt(None, "env to evaluate on; default: the env the demonstrations were recorded on")
    demos: str | None = opt(None, "demonstration dataset directory (rlkit demos record ... --out DATASET); several, "
                                  "one per task of a multi-task suite: A,B,... or a directory of datasets")
    num_demos: int = opt(0, "use only the first N episodes of the dataset (0 = all)", low=0)
    skip_corrupt: bool = opt(False, "skip damaged episodes of the dataset instead of stopping")
    total_steps: int = opt(0, "gradient steps to train for at most (0 = run `epochs` epochs)", low=0)
    epochs: int = opt(100, "passes over the training episodes (early stopping may end sooner)")
    batch_size: int = opt(64, "minibatch size", low=1)
    lr: float = opt(1e-3, "Adam learning rate", low=0)
    weight_decay: float = opt(0.0, "L2 penalty (Adam weight_decay)")
    hidden: list[int] = opt([64, 64], "hidden layer sizes of the MLP (after the CNN for images)", low=1)
    loss: Literal["auto", "ce", "mse", "nll"] = opt("auto", "auto: ce for Discrete actions, mse for Box; "
                                                    "nll = Gaussian negative log-likelihood")
    val_fraction: float = opt(0.2, "fraction of episodes held out for validation, rounded; when that is 0 "
                                   "episodes (0, or under 3 episodes at 0.2) all train and nothing stops early")
    patience: int = opt(10, "stop after this many epochs without a better validation loss (0 = never stop early)")
    checkpoint_every: int = opt(5_000, "checkpoint every this many gradient steps, at the end of an epoch", low=0)
    eval_every: int = opt(0, "evaluate every this many gradient steps, at the end of an epoch (0 = only at the end)")

    def validate(self) -> None:
        if not 0 <= self.val_fraction < 1:
            raise RLKitError(f"val_fraction must be in [0, 1); got {self.val_fraction}")
        require_at_least_one(self, "epochs")  # batch_size: its opt(low=1)


class BCLearner:
    """BC for the imitation loop: a round is one epoch over the training episodes, then validation.

    The best weights by validation loss are kept; ``patience`` epochs without a better one end training.
    """

    log_every = 1  # a row after every epoch
    checkpoint_on_interrupt = True

    def __init__(self, cfg: BCConfig, dataset: Any, train_set: Any, val_set: Any, loss_kind: str) -> None:
        obs_space, act_space = dataset.observation_space, dataset.action_space
        self.cfg, self.loss_kind, self.checkpoint_every = cfg, loss_kind, cfg.checkpoint_every
        self.spaces, self.demo_episodes = {"observation_space": obs_space, "action_space": act_space}, len(dataset)
        self.obs, self.acts = to_tensors(train_set, act_space, cfg.device)
        self.val_obs, self.val_acts = (to_tensors(val_set, act_space, cfg.device) if val_set is not None
                                       else (None, None))
        self.net = BCNet(obs_space, act_space, cfg.hidden, loss_kind, cfg.device)
        self.optimizer = FlatAdam(self.net, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.policy = make_policy(self.net, obs_space, act_space)
        self.global_step, self.epoch, self.bad_epochs = 0, 0, 0
        self.best = {"loss": float("inf"), "epoch": 0, "state": copy.deepcopy(self.net.state_dict())}
        self.train_time, self.samples = 0.0, 0

    def state_dict(self, final: bool = False) -> dict[str, Any]:
        # The final checkpoint carries the best weights; a mid-run one the current ones (to resume).
        return {"net": self.best["state"] if final else self.net.state_dict(),
                "optimizer": self.optimizer.state_dict(), "epoch": self.epoch, "bad_epochs": self.bad_epochs,
                "best": self.best, **self.spaces, "loss_kind": self.loss_kind}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.global_step = int(state["global_step"])
        self.epoch, self.bad_epochs, self.best = state["epoch"], state["bad_epochs"], state["best"]

    def round(self, run: Run) -> int:
        # ALGO LOGIC: one pass over the training episodes, then validation.
        budget = self.cfg.total_steps or None
        t0 = time.perf_counter()
        train_loss, steps, n = train_epoch(self.net, self.optimizer, self.obs, self.acts, self.cfg.batch_size,
                                           self.loss_kind, None if budget is None else budget - self.global_step)
        self.train_time += time.perf_counter() - t0
        self.samples += n
        self.global_step += steps
        self.epoch += 1
        run.logger.record("losses/train", train_loss)
        run.logger.record("charts/epoch", self.epoch)
        run.logger.record("charts/samples_per_second", self.samples / max(self.train_time, 1e-9))
        if self.val_obs is None:  # no held-out episodes: keep the last weights, never stop early
            self.best = {"loss": train_loss, "epoch": self.epoch, "state": copy.deepcopy(self.net.state_dict())}
            return steps
        val_loss, val_acc = evaluate_loss(self.net, self.val_obs, self.val_acts, self.loss_kind)
        run.logger.record("losses/val", val_loss)
        if val_acc is not None:
            run.logger.record("charts/val_accuracy", val_acc)
        # Keep the best weights by validation loss; stop after `patience` bad epochs.
        if val_loss < self.best["loss"]:
            self.best = {"loss": val_loss, "epoch": self.epoch, "state": copy.deepcopy(self.net.state_dict())}
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        return steps

    def finished(self, global_step: int) -> bool:
        early_stop = self.cfg.patience > 0 and self.val_obs is not None and self.bad_epochs >= self.cfg.patience
        budget = self.cfg.total_steps
        return early_stop or self.epoch >= self.cfg.epochs or bool(budget and global_step >= budget)

    def close(self) -> None:
        pass

    def final(self) -> tuple[dict[str, Any], dict[str, Any]]:
        self.net.load_state_dict(self.best["state"])
        extra = {"env_steps": 0, "gradient_steps": self.global_step, "epochs": self.epoch,
                 "best_epoch": self.best["epoch"],
                 "best_val_loss": self.best["loss"] if self.val_obs is not None else None,
                 "demo_episodes": self.demo_episodes, "train_transitions": len(self.obs),
                 "samples_per_second": round(self.samples / max(self.train_time, 1e-9), 1), "demos": self.cfg.demos}
        return self.state_dict(final=True), extra


def train(cfg: BCConfig, resume: bool = False, callbacks: Sequence[Callback] | None = None) -> dict[str, Any]:
    """Train BC as configured; returns the contents of ``final.json``."""
    validate_config(cfg)  # before the dataset is read
    dataset = load_demos(cfg.demos, cfg.skip_corrupt)
    if cfg.num_demos:
        if cfg.num_demos > len(dataset):
            raise RLKitError(f"num_demos={cfg.num_demos} but {cfg.demos} holds {len(dataset)} episodes")
        dataset = dataset.subset(range(cfg.num_demos))
    resolve_env(cfg, dataset)
    loss_kind = resolve_loss(cfg.loss, dataset.action_space)
    # Validation is by whole episodes (transitions within an episode are correlated).
    if round(cfg.val_fraction * len(dataset)) >= 1 and len(dataset) >= 2:
        train_set, val_set = dataset.split(cfg.val_fraction, seed=cfg.seed)
    else:
        train_set, val_set = dataset, None
    run = Run("bc", cfg, resume=resume, callbacks=callbacks)  # seeds the global RNGs, sets thread counts
    return train_rounds(run, BCLearner(cfg, dataset, train_set, val_set, loss_kind), eval_env_factory(cfg))


def load_policy(state: dict[str, Any]) -> TorchPolicy:
    """Rebuild the policy from a checkpoint (the final one holds the best weights)."""
    return policy_from_state(state, config_from_dict(BCConfig, state["config"]).hidden)


AGENT = AgentSpec("bc", BCConfig, train, load_policy,
                  summary="behavior cloning from reward-free demonstrations (--demos DATASET)")

if __name__ == "__main__":
    train_from_command_line("bc")
