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
from rlkit.config import BaseConfig, config_from_dict, opt, require_at_least_one
from rlkit.errors import RLKitError
from rlkit.fast.flat_adam import FlatAdam
from rlkit.policy import TorchPolicy
from rlkit.registry import AgentSpec, eval_env_factory, train_from_command_line
from rlkit.run import Run


@dataclass
class BCConfig(BaseConfig):
    """BC hyper-parameters (defaults suit classic-control demonstrations)."""

    env_id: str | None = opt(None, "env to evaluate on; default: the env the demonstrations were recorded on")
    demos: str | None = opt(None, "demonstration dataset directory (rlkit demos record ... --out DATASET)")
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
        require_at_least_one(self, "batch_size", "epochs")


def train(cfg: BCConfig, resume: bool = False, callbacks: Sequence[Callback] | None = None) -> dict[str, Any]:
    """Train BC as configured; returns the contents of ``final.json``."""
    cfg.validate()
    dataset = load_demos(cfg.demos, cfg.skip_corrupt)
    if cfg.num_demos:
        if cfg.num_demos > len(dataset):
            raise RLKitError(f"num_demos={cfg.num_demos} but {cfg.demos} holds {len(dataset)} episodes")
        dataset = dataset.subset(range(cfg.num_demos))
    resolve_env(cfg, dataset)
    obs_space, act_space = dataset.observation_space, dataset.action_space
    loss_kind = resolve_loss(cfg.loss, act_space)
    # Validation is by whole episodes (transitions within an episode are correlated).
    if round(cfg.val_fraction * len(dataset)) >= 1 and len(dataset) >= 2:
        train_set, val_set = dataset.split(cfg.val_fraction, seed=cfg.seed)
    else:
        train_set, val_set = dataset, None
    run = Run("bc", cfg, resume=resume, callbacks=callbacks)  # seeds the global RNGs, sets thread counts
    obs, acts = to_tensors(train_set, act_space, cfg.device)
    val_obs, val_acts = to_tensors(val_set, act_space, cfg.device) if val_set is not None else (None, None)

    net = BCNet(obs_space, act_space, cfg.hidden, loss_kind, cfg.device)
    optimizer = FlatAdam(net, lr=cfg.lr, weight_decay=cfg.weight_decay)
    policy = make_policy(net, obs_space, act_space)
    global_step, epoch, bad_epochs = 0, 0, 0
    best = {"loss": float("inf"), "epoch": 0, "state": copy.deepcopy(net.state_dict())}
    if run.resume_state is not None:
        state = run.resume_state
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        global_step, epoch, bad_epochs, best = run.global_step, state["epoch"], state["bad_epochs"], state["best"]
    run.restore_rng()

    def state_dict(final: bool = False) -> dict[str, Any]:
        # The final checkpoint carries the best weights; a mid-run one the current ones (to resume).
        return {"net": best["state"] if final else net.state_dict(), "optimizer": optimizer.state_dict(),
                "epoch": epoch, "bad_epochs": bad_epochs, "best": best,
                "observation_space": obs_space, "action_space": act_space, "loss_kind": loss_kind}

    train_time, samples = 0.0, 0
    budget = cfg.total_steps or None
    with run.checkpoint_on_interrupt(lambda: (global_step, state_dict())):
        while epoch < cfg.epochs and (budget is None or global_step < budget) and run.stopped is None:
            # ALGO LOGIC: one pass over the training episodes, then validation.
            t0 = time.perf_counter()
            train_loss, steps, n = train_epoch(net, optimizer, obs, acts, cfg.batch_size, loss_kind,
                                               None if budget is None else budget - global_step)
            train_time += time.perf_counter() - t0
            samples += n
            global_step += steps
            epoch += 1
            run.logger.record("losses/train", train_loss)
            run.logger.record("charts/epoch", epoch)
            run.logger.record("charts/samples_per_second", samples / max(train_time, 1e-9))
            if val_obs is not None:
                val_loss, val_acc = evaluate_loss(net, val_obs, val_acts, loss_kind)
                run.logger.record("losses/val", val_loss)
                if val_acc is not None:
                    run.logger.record("charts/val_accuracy", val_acc)
            else:
                val_loss = train_loss  # no held-out episodes: keep the last weights, never stop early
            # Keep the best weights by validation loss; stop after `patience` bad epochs.
            if val_obs is None or val_loss < best["loss"]:
                best = {"loss": val_loss, "epoch": epoch, "state": copy.deepcopy(net.state_dict())}
                bad_epochs = 0
            else:
                bad_epochs += 1
            if Run.due(global_step, cfg.eval_every, steps):
                run.evaluate(policy, eval_env_factory(cfg), global_step, state=state_dict, write_row=False)
            run.logger.dump(global_step)
            stop = cfg.patience > 0 and val_obs is not None and bad_epochs >= cfg.patience
            if Run.due(global_step, cfg.checkpoint_every, steps) and not stop and epoch < cfg.epochs:
                run.checkpoint(global_step, state_dict())
            if stop:
                break

    net.load_state_dict(best["state"])
    extra = {"env_steps": 0, "gradient_steps": global_step, "epochs": epoch, "best_epoch": best["epoch"],
             "best_val_loss": best["loss"] if val_obs is not None else None,
             "demo_episodes": len(dataset), "train_transitions": len(obs),
             "samples_per_second": round(samples / max(train_time, 1e-9), 1), "demos": cfg.demos}
    return run.finish(policy, eval_env_factory(cfg), global_step, state_dict(final=True), extra=extra)


def load_policy(state: dict[str, Any]) -> TorchPolicy:
    """Rebuild the policy from a checkpoint (the final one holds the best weights)."""
    return policy_from_state(state, config_from_dict(BCConfig, state["config"]).hidden)


AGENT = AgentSpec("bc", BCConfig, train, load_policy,
                  summary="behavior cloning from reward-free demonstrations (--demos DATASET)")

if __name__ == "__main__":
    train_from_command_line("bc")
