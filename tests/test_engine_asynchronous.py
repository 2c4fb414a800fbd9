"""The asynchronous loop (rlkit.engine.asynchronous), once, with a learner whose gradient is known: every
parameter gets gradient 1, so each of Adam's steps moves it by the learning rate. The step budget, the
learning-rate schedule, a worker's failure, Ctrl-C and SIGTERM, an early stop and resume, and the space
check. tests/test_a3c.py checks what is A3C's own (and the CLI end to end)."""

from __future__ import annotations

import csv
import multiprocessing
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from rlkit.callbacks import Event
from rlkit.checkpoint import list_checkpoints, load_checkpoint
from rlkit.config import BaseConfig, opt
from rlkit.engine.asynchronous import AsynchronousLearner, WorkerError, train_asynchronous
from rlkit.errors import RLKitError, Terminated
from rlkit.optim import OptimizerOptions
from rlkit.policy import RandomPolicy

LR = 0.01


@dataclass
class HogwildConfig(OptimizerOptions, BaseConfig):
    num_workers: int = opt(1, "workers", low=0)
    start_method: Literal["fork", "spawn"] = opt("fork", "how workers start")
    t_max: int = opt(5, "steps per rollout", low=1)
    clip_rewards: bool = opt(False, "sign of the rewards")

    def validate(self) -> None:
        pass


def small(tmp_path: Path, **overrides: Any) -> HogwildConfig:
    base = dict(total_steps=100, lr=LR, eval_episodes=1, checkpoint_every=0, log_every=50, progress=False,
                tensorboard=False, run_dir=str(tmp_path / "run"))
    return HogwildConfig(**{**base, **overrides})


class Ones(AsynchronousLearner):
    """A zero-initialised linear model whose every parameter gets gradient 1; acts at random."""

    fail_seed: int | None = None  # the worker seeded with this (cfg.seed + rank) raises in its gradients

    @staticmethod
    def build_model(cfg: Any, observation_space: gym.Space, action_space: gym.Space) -> nn.Module:
        model = nn.Linear(int(np.prod(observation_space.shape)), int(action_space.n))
        with torch.no_grad():
            for param in model.parameters():
                param.zero_()
        return model

    @staticmethod
    def make_actor(model: nn.Module, rng: np.random.Generator) -> Any:
        return lambda obs, deterministic=False: (rng.integers(2, size=len(obs)), np.zeros(len(obs), np.float32))

    @staticmethod
    def make_policy(model: nn.Module, observation_space: gym.Space, action_space: gym.Space) -> Any:
        return RandomPolicy(action_space, seed=0)

    @staticmethod
    def gradients(model: nn.Module, parameters: list[nn.Parameter], rollout: Any, cfg: Any) -> dict[str, Any]:
        if torch.initial_seed() == Ones.fail_seed:
            raise ValueError("injected failure")
        for param in parameters:
            param.grad = torch.ones_like(param)
        return {"losses/rollout_length": torch.tensor(float(rollout.rewards.size))}


@pytest.fixture(autouse=True)
def no_failures():
    Ones.fail_seed = None
    yield
    Ones.fail_seed = None
    assert multiprocessing.active_children() == []  # every worker was stopped and joined


def weights(state: dict[str, Any]) -> torch.Tensor:
    return state["model"]["weight"]


def test_budget_is_exact_and_every_update_reaches_the_shared_model(tmp_path):
    result = train_asynchronous("toy", small(tmp_path, num_workers=2, total_steps=300), Ones)
    assert result["env_steps"] == 300 and result["num_workers"] == 2 and result["start_method"] == "fork"
    assert sum(result["worker_updates"]) * 5 == 300
    final = load_checkpoint(tmp_path / "run")
    assert final["global_step"] == 300 and {"model", "optimizer", "observation_space", "action_space"} <= set(final)
    # Adam with a constant gradient moves by the learning rate per step (with one worker exactly, see below);
    # lock-free, a rare race on the shared step count or moments can make one step a little shorter or longer.
    assert -63 * LR < float(weights(final).mean()) < -55 * LR
    with open(tmp_path / "run" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["global_step"]) for r in rows][-1] == 300
    assert any(r.get("losses/rollout_length") == "5.0" for r in rows)  # the workers' terms reach the log


def test_learning_rate_anneals_on_the_steps_before_each_rollout(tmp_path):
    # One worker, 20 rollouts of 5 steps starting at 0, 5, ..., 95: sum of (1 - start / 100) = 10.5 steps of LR.
    train_asynchronous("toy", small(tmp_path, lr_schedule="linear"), Ones)
    final = load_checkpoint(tmp_path / "run")
    torch.testing.assert_close(weights(final), torch.full((2, 4), -10.5 * LR), rtol=1e-5, atol=1e-7)


def test_a_failing_worker_stops_the_run_and_is_named_in_one_line(tmp_path):
    Ones.fail_seed = 1  # rank 1 of a seed-0 run
    with pytest.raises(WorkerError) as caught:
        train_asynchronous("toy", small(tmp_path, num_workers=2, total_steps=10**9), Ones)
    first_line, *traceback = str(caught.value).splitlines()
    assert first_line == "TOY worker 1 failed:" and caught.value.rank == 1
    assert "ValueError: injected failure" in traceback[-1] and any("in gradients" in line for line in traceback)
    assert list_checkpoints(tmp_path / "run")  # the weights are kept
    assert not (tmp_path / "run" / "final.json").exists()


@pytest.mark.parametrize("signum, raised", [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, Terminated)])
def test_a_signal_stops_the_workers_then_checkpoints(tmp_path, signum, raised):
    def signal_at_first_row(event: Event) -> None:
        if event.kind == "log":
            os.kill(os.getpid(), signum)

    handler_before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN when started with `cmd &`
    with pytest.raises(raised):
        train_asynchronous("toy", small(tmp_path, total_steps=10**9), Ones, callbacks=[signal_at_first_row])
    saved = load_checkpoint(tmp_path / "run")
    step = saved["global_step"]
    assert step >= 50 and step % 5 == 0 and not (tmp_path / "run" / "final.json").exists()
    # Saved after the worker stopped: every reserved rollout's update is in the weights and the statistics.
    updates = step // 5
    assert int(saved["optimizer"]["state"][0]["step"]) == updates
    torch.testing.assert_close(weights(saved), torch.full((2, 4), -updates * LR), rtol=1e-5, atol=1e-7)
    assert signal.getsignal(signal.SIGINT) is handler_before  # the handlers are restored


def test_resume_continues_the_step_count_and_the_shared_statistics(tmp_path):
    first = train_asynchronous("toy", small(tmp_path), Ones)
    assert first["env_steps"] == 100 and first["worker_updates"] == [20]
    resumed = train_asynchronous("toy", small(tmp_path, total_steps=200), Ones, resume=True)
    assert resumed["env_steps"] == 200 and resumed["worker_updates"] == [20]  # only the 100 new steps
    final = load_checkpoint(tmp_path / "run")
    assert int(final["optimizer"]["state"][0]["step"]) == 40
    torch.testing.assert_close(weights(final), torch.full((2, 4), -40 * LR), rtol=1e-5, atol=1e-7)


def test_a_stop_at_an_evaluation_keeps_the_weights_it_scored(tmp_path):
    def stop_at_first_eval(event: Event) -> bool:
        return event.kind == "eval"

    result = train_asynchronous("toy", small(tmp_path, total_steps=10**9, eval_every=100), Ones,
                                callbacks=[stop_at_first_eval])
    assert result["stopped"]["reason"] == "callback stop_at_first_eval"
    final = load_checkpoint(tmp_path / "run")
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best")
    assert final["global_step"] >= 100
    torch.testing.assert_close(weights(final), weights(best))  # not the updates in flight when the stop came


def test_refused_spaces_write_nothing(tmp_path):
    class Refuses(Ones):
        @staticmethod
        def check_spaces(observation_space: gym.Space, action_space: gym.Space, env_id: str, agent: str) -> None:
            raise RLKitError(f"{agent} refuses {action_space}")

    with pytest.raises(RLKitError, match="toy refuses Discrete"):
        train_asynchronous("toy", small(tmp_path), Refuses)
    assert not (tmp_path / "run").exists()
