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
      there is no DataLoader/collate cost per sample; the optimizer is :class:`rlkit.optim.FlatAdam`
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

import gymnasium as gym
import numpy as np
import torch
from rlkit.envs import make_env
from torch import nn
from torch.distributions import Categorical

from rlkit.callbacks import Callback
from rlkit.config import BaseConfig, config_from_dict, opt, require_at_least_one
from rlkit.errors import RLKitError
from rlkit.nets import DeterministicActor, QNetwork, init_orthogonal, numpy_forward
from rlkit.optim import FlatAdam
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


# ALGO LOGIC: the math, as pure functions (unit-tested against hand values).
def gaussian_nll(mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -log N(a; mean, diag(exp(log_std))^2), summed over action dimensions."""
    z = (actions - mean) * torch.exp(-log_std)
    per_dim = 0.5 * z.pow(2) + log_std + 0.5 * float(np.log(2 * np.pi))
    return per_dim.sum(dim=-1).mean()


def bc_loss(output: torch.Tensor, actions: torch.Tensor, loss: str, log_std: torch.Tensor | None = None
            ) -> torch.Tensor:
    """The BC loss of one minibatch.

    Args:
        output: logits (B, n) for ``ce``; action means (B, d) for ``mse`` / ``nll``.
        actions: expert actions, (B,) integers for ``ce``, (B, d) floats otherwise.
        loss: ``ce`` (cross-entropy), ``mse`` (mean over batch and dims) or ``nll`` (Gaussian).
        log_std: (d,) log standard deviation, needed by ``nll``.
    """
    if loss == "ce":
        return nn.functional.cross_entropy(output, actions)
    if loss == "mse":
        return nn.functional.mse_loss(output, actions)
    assert log_std is not None, "the nll loss needs log_std"
    return gaussian_nll(output, log_std, actions)


def resolve_loss(loss: str, action_space: gym.Space) -> str:
    discrete = isinstance(action_space, gym.spaces.Discrete)
    if not discrete and not isinstance(action_space, gym.spaces.Box):
        raise RLKitError(f"bc supports Discrete and Box action spaces; got {action_space}")
    if loss == "auto":
        return "ce" if discrete else "mse"
    if (loss == "ce") != discrete:
        raise RLKitError(f"loss {loss!r} does not fit action space {action_space}; use "
                         f"{'ce' if discrete else 'mse or nll'} (or loss=auto)")
    return loss


class BCNet(nn.Module):
    """obs -> logits (Discrete, a ``QNetwork`` body) or action mean in the Box (``DeterministicActor``).

    ``log_std`` exists only for the Gaussian NLL loss. Reusing the shared builders keeps the CNN for
    images and lets ``numpy_forward`` serve greedy actions fast.
    """

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, hidden: list[int], loss: str,
                 device: str = "cpu") -> None:
        super().__init__()
        if isinstance(action_space, gym.spaces.Discrete):
            self.body: nn.Module = QNetwork(observation_space, action_space, hidden)
            layers = [*self.body.trunk, self.body.head]
        else:
            self.body = DeterministicActor(observation_space, action_space, hidden)
            layers = list(self.body.net)
        # Orthogonal init, the output layer scaled down (as SB3's and CleanRL's policy nets): starting
        # near a uniform policy, BC from one CartPole demonstration scores 456 instead of 243 (4 seeds).
        init_orthogonal(self.body)
        init_orthogonal(next(m for m in reversed(layers) if isinstance(m, nn.Linear)), gain=0.01)
        dim = int(np.prod(action_space.shape or (1,)))
        self.log_std = nn.Parameter(torch.zeros(dim)) if loss == "nll" else None
        self.to(device)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.body(obs)


def bc_act(net: BCNet, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
    out = net(obs)
    if isinstance(net.body, QNetwork):
        return out.argmax(dim=1) if deterministic else Categorical(logits=out).sample()
    if deterministic or net.log_std is None:
        return out
    actor = net.body
    noisy = out + net.log_std.exp() * torch.randn_like(out)
    low, high = actor.action_bias - actor.action_scale, actor.action_bias + actor.action_scale
    return torch.maximum(torch.minimum(noisy, high), low)


def make_policy(net: BCNet, observation_space: gym.Space, action_space: gym.Space) -> TorchPolicy:
    act_shape = action_space.shape

    def act_fn(module: BCNet, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        out = bc_act(module, obs, deterministic)
        return out if isinstance(action_space, gym.spaces.Discrete) else out.reshape(len(out), *act_shape)

    fast = numpy_forward(net.body)
    if fast is not None and isinstance(action_space, gym.spaces.Box):
        base = fast
        fast = lambda obs: base(obs).astype(action_space.dtype).reshape(len(obs), *act_shape)  # noqa: E731
    return TorchPolicy(net, act_fn, action_space, observation_space, fast=fast)


def to_tensors(dataset: Any, action_space: gym.Space, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(obs, actions) of every transition as two tensors: the whole fast path's data.

    Observations keep their dtype (uint8 frames stay 1 byte each; the encoder converts per batch).
    """
    tr = dataset.transitions()
    return torch.as_tensor(np.ascontiguousarray(tr.obs), device=device), action_tensor(tr.acts, action_space, device)


def action_tensor(actions: np.ndarray, action_space: gym.Space, device: str = "cpu") -> torch.Tensor:
    """Actions as BC targets: class indices (int64) for Discrete, (N, d) float32 for Box."""
    if isinstance(action_space, gym.spaces.Discrete):
        return torch.as_tensor(np.asarray(actions).astype(np.int64) - int(action_space.start), device=device)
    return torch.as_tensor(np.asarray(actions, dtype=np.float32).reshape(len(actions), -1), device=device)


def train_epoch(net: BCNet, optimizer: FlatAdam | torch.optim.Optimizer, obs: torch.Tensor, acts: torch.Tensor,
                batch_size: int, loss: str, max_steps: int | None = None) -> tuple[float, int, int]:
    """One shuffled pass (or ``max_steps`` minibatches); returns (mean loss, gradient steps, samples)."""
    net.train()
    order = torch.randperm(len(obs), device=obs.device)
    total, steps, samples = torch.zeros(()), 0, 0
    for start in range(0, len(obs), batch_size):
        if max_steps is not None and steps >= max_steps:
            break
        idx = order[start:start + batch_size]
        batch_loss = bc_loss(net(obs[idx]), acts[idx], loss, net.log_std)
        optimizer.zero_grad()
        batch_loss.backward()
        optimizer.step()
        total += batch_loss.detach()  # no .item() per step: it would sync and cost a Python float
        steps += 1
        samples += len(idx)
    return float(total) / max(steps, 1), steps, samples


@torch.no_grad()
def evaluate_loss(net: BCNet, obs: torch.Tensor, acts: torch.Tensor, loss: str, chunk: int = 4096
                  ) -> tuple[float, float | None]:
    """(mean loss, accuracy for discrete actions or None) over a whole split, in chunks."""
    net.eval()
    total, correct = 0.0, 0
    for start in range(0, len(obs), chunk):
        out = net(obs[start:start + chunk])
        target = acts[start:start + chunk]
        total += float(bc_loss(out, target, loss, net.log_std)) * len(target)
        if loss == "ce":
            correct += int((out.argmax(dim=1) == target).sum())
    n = max(len(obs), 1)
    return total / n, (correct / n if loss == "ce" else None)


def load_demos(path: str | None, skip_corrupt: bool = False, agent: str = "bc") -> Any:
    """``demos.load`` with a one-line error when no dataset was given."""
    if not path:
        raise RLKitError(f"{agent} learns from demonstrations: pass --demos DATASET "
                         "(record one with `rlkit demos record --env ENV --policy SOURCE --out DATASET`)")
    from rlkit import demos

    return demos.load(path, skip_corrupt=skip_corrupt)


def resolve_env(cfg: BaseConfig, dataset: Any) -> None:
    """Fill ``cfg.env_id`` / ``env_kwargs`` from the dataset, or check that the given env fits it.

    Either way the env is made and its spaces checked against the dataset's manifest before anything
    trains: a manifest that does not describe its own env (damaged or edited) would otherwise train a
    network for the wrong shapes and fail only at the final evaluation.
    """
    from rlkit.spaces import space_brief, spaces_agree

    from_dataset = cfg.env_id is None
    if from_dataset:
        cfg.env_id = dataset.env_id
        cfg.env_kwargs = cfg.env_kwargs or dict(dataset.meta.get("env_kwargs") or {})
    env = make_env(cfg.env_id, env_kwargs=cfg.env_kwargs)
    try:
        # Another env id is fine (e.g. seals/CartPole-v0 for CartPole-v1 demos) when the spaces agree.
        for name, ours, theirs in (("observation", env.observation_space, dataset.observation_space),
                                   ("action", env.action_space, dataset.action_space)):
            if spaces_agree(ours, theirs):
                continue
            if from_dataset:
                raise RLKitError(f"dataset {dataset.path}'s manifest declares {name} space {space_brief(theirs)}, "
                                 f"but its env {cfg.env_id} has {space_brief(ours)}; the manifest does not describe "
                                 "its env (damaged or edited): record the demonstrations again")
            raise RLKitError(f"{cfg.env_id} has {name} space {space_brief(ours)}, but the demonstrations "
                             f"({dataset.env_id}) have {space_brief(theirs)}; omit --env to use the dataset's env")
    finally:
        env.close()


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
    cfg = config_from_dict(BCConfig, state["config"])
    net = BCNet(state["observation_space"], state["action_space"], cfg.hidden, state["loss_kind"])
    net.load_state_dict(state["net"])
    net.eval()
    return make_policy(net, state["observation_space"], state["action_space"])


AGENT = AgentSpec("bc", BCConfig, train, load_policy,
                  summary="behavior cloning from reward-free demonstrations (--demos DATASET)")

if __name__ == "__main__":
    train_from_command_line("bc")
