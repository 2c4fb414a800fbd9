"""The imitation loop (rlkit.engine.imitation), once, with a fake learner: cadences, resume, interrupts, the end."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from rlkit.checkpoint import list_checkpoints, load_checkpoint, read_checksums
from rlkit.config import BaseConfig, opt
from rlkit.engine.imitation import train_rounds
from rlkit.run import Run


@dataclass
class FakeConfig(BaseConfig):
    total_steps: int = opt(50, "steps", low=1)
    round_steps: int = opt(10, "steps per round", low=0)


class LeftPolicy:
    """CartPole's action 0 everywhere: a short, deterministic evaluation."""

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return np.zeros(len(obs), dtype=np.int64)


class FakeLearner:
    """Counts rounds; records one scalar per round; can fail or be interrupted in a given round."""

    def __init__(self, cfg: FakeConfig, log_every: int = 1, checkpoint_every: int = 20, interrupt_at: int = 0,
                 fail_at: int = 0, checkpoint_on_interrupt: bool = True) -> None:
        self.cfg, self.log_every, self.checkpoint_every = cfg, log_every, checkpoint_every
        self.checkpoint_on_interrupt = checkpoint_on_interrupt
        self.interrupt_at, self.fail_at = interrupt_at, fail_at
        self.policy = LeftPolicy()
        self.rounds, self.loaded, self.closed, self.finals = 0, None, 0, 0

    def state_dict(self) -> dict[str, Any]:
        return {"rounds": self.rounds, "observation_space": gym.spaces.Box(-1, 1, (4,)),
                "action_space": gym.spaces.Discrete(2)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loaded, self.rounds = state, state["rounds"]

    def round(self, run: Run) -> int:
        if self.rounds + 1 == self.interrupt_at:
            raise KeyboardInterrupt
        if self.rounds + 1 == self.fail_at:
            raise RuntimeError("round failed")
        self.rounds += 1
        run.logger.record("charts/round", self.rounds)
        return self.cfg.round_steps

    def finished(self, global_step: int) -> bool:
        return global_step >= self.cfg.total_steps

    def close(self) -> None:
        self.closed += 1

    def final(self) -> tuple[dict[str, Any], dict[str, Any]]:
        self.finals += 1
        return self.state_dict(), {"rounds": self.rounds}


def make_eval_env(render_mode: str | None = None) -> gym.Env:
    return gym.make("CartPole-v1", render_mode=render_mode)


def config(tmp_path, **over: Any) -> FakeConfig:
    return FakeConfig(**{"run_dir": str(tmp_path / "run"), "eval_episodes": 1, "eval_every": 20, "progress": False,
                         "tensorboard": False, **over})


def rows(tmp_path) -> list[dict[str, str]]:
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def steps_of_checkpoints(tmp_path) -> list[int]:
    return [int(read_checksums(p)["step"]) for p in list_checkpoints(tmp_path / "run")]


def test_rounds_evaluate_log_and_checkpoint_on_their_cadences(tmp_path):
    cfg = config(tmp_path)
    learner, events = FakeLearner(cfg), []
    result = train_rounds(Run("fake", cfg, callbacks=[events.append]), learner, make_eval_env)
    assert result["env_steps"] == 50 and result["rounds"] == 5 and learner.closed == learner.finals == 1
    table = rows(tmp_path)
    assert [int(r["global_step"]) for r in table] == [10, 20, 30, 40, 50]  # log_every 1: a row per round
    assert [r["charts/round"] for r in table] == ["1.0", "2.0", "3.0", "4.0", "5.0"]
    # evaluations at 20 and 40 join their round's row; the final one is the last row's
    assert [bool(r["eval/mean_return"]) for r in table] == [False, True, False, True, True]
    # periodic checkpoints at 20 and 40, none periodic at 50 (the last round): the final one is there
    assert steps_of_checkpoints(tmp_path) == [20, 40, 50]
    assert [(e.step, e.final) for e in events if e.kind == "checkpoint"] == [(20, False), (40, False), (50, True)]
    assert read_checksums(tmp_path / "run" / "checkpoints" / "best")["step"] == 20  # the first eval was the best


def test_log_every_spans_rounds_and_a_round_of_no_steps_still_counts(tmp_path):
    cfg = config(tmp_path, eval_every=0)
    learner = FakeLearner(cfg, log_every=20, checkpoint_every=0)
    train_rounds(Run("fake", cfg), learner, make_eval_env)
    assert [int(r["global_step"]) for r in rows(tmp_path)] == [20, 40, 50]  # 50: the final evaluation's row
    assert steps_of_checkpoints(tmp_path) == [50]  # checkpoint_every 0: only the final one

    zero = config(tmp_path / "zero", total_steps=1, round_steps=0, eval_every=1)
    learner = FakeLearner(zero, checkpoint_every=1)
    learner.finished = lambda global_step: learner.rounds >= 2  # two rounds that take no step
    train_rounds(Run("fake", zero), learner, make_eval_env)
    table = rows(tmp_path / "zero")
    assert [int(r["global_step"]) for r in table] == [0] and table[0]["charts/round"] == "2.0"
    assert steps_of_checkpoints(tmp_path / "zero") == [0]  # after round 1 (stride 1), then the final one


def test_an_interrupt_checkpoints_the_last_whole_round_and_resume_continues_from_it(tmp_path):
    cfg = config(tmp_path, checkpoint_every=0)
    learner = FakeLearner(cfg, checkpoint_every=0, interrupt_at=3)
    with pytest.raises(KeyboardInterrupt):
        train_rounds(Run("fake", cfg), learner, make_eval_env)
    assert learner.closed == 1 and learner.finals == 0
    assert steps_of_checkpoints(tmp_path) == [20] and load_checkpoint(tmp_path / "run")["rounds"] == 2

    again = FakeLearner(cfg)
    result = train_rounds(Run("fake", cfg, resume=True), again, make_eval_env)
    assert again.loaded["rounds"] == 2 and again.rounds == 5 and result["env_steps"] == 50
    assert [int(r["global_step"]) for r in rows(tmp_path)] == [10, 20, 30, 40, 50]


def test_a_learner_that_resumes_otherwise_is_not_checkpointed_on_interrupt(tmp_path):
    cfg = config(tmp_path)
    learner = FakeLearner(cfg, interrupt_at=2, checkpoint_on_interrupt=False)
    with pytest.raises(KeyboardInterrupt):
        train_rounds(Run("fake", cfg), learner, make_eval_env)
    assert not list_checkpoints(tmp_path / "run") and learner.closed == 1


def test_a_failing_round_still_closes_the_learner(tmp_path):
    cfg = config(tmp_path)
    learner = FakeLearner(cfg, fail_at=2)
    with pytest.raises(RuntimeError, match="round failed"):
        train_rounds(Run("fake", cfg), learner, make_eval_env)
    assert learner.closed == 1 and learner.finals == 0


def test_target_return_stops_at_the_first_evaluation_and_the_run_finishes(tmp_path):
    cfg = config(tmp_path, target_return=-1e9)
    learner = FakeLearner(cfg)
    result = train_rounds(Run("fake", cfg), learner, make_eval_env)
    assert result["stopped"]["reason"] == "target_return" and result["stopped"]["global_step"] == 20
    assert result["env_steps"] == 20 and learner.rounds == 2 and learner.finals == 1
    assert steps_of_checkpoints(tmp_path) == [20]  # no periodic checkpoint at the stop: the final one
