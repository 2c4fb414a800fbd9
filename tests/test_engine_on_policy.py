"""The on-policy loop (rlkit.engine.on_policy), once, with a recording learner: what each update gets, the log
rows, evaluations, the checkpoint and resume, Ctrl-C, early stops and space checks. The agents' own tests
(tests/test_a2c.py, tests/test_ppo.py) check only what is theirs."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlkit.callbacks import Event
from rlkit.checkpoint import list_checkpoints, load_checkpoint
from rlkit.config import BaseConfig, opt
from rlkit.engine.on_policy import OnPolicyLearner, train_on_policy
from rlkit.errors import RLKitError
from rlkit.policy import RandomPolicy


@dataclass
class LoopConfig(BaseConfig):
    num_envs: int = opt(2, "envs", low=1)
    n_steps: int = opt(8, "steps per env per rollout", low=1)
    clip_rewards: bool = opt(False, "sign of the rewards")

    def validate(self) -> None:
        pass


class Recorder(OnPolicyLearner):
    """Acts uniformly at random (from the run's Generator), records every update and counts them."""

    instances: list[Recorder] = []
    interrupt_at: int | None = None  # raise KeyboardInterrupt in the update at this step

    def __init__(self, cfg: LoopConfig, obs_space: gym.Space, act_space: gym.Space, rng: np.random.Generator) -> None:
        self.cfg, self.rng, self.act_space = cfg, rng, act_space
        self.updates: list[tuple[int, tuple[int, ...]]] = []  # (global_step, rewards' shape)
        self.rewards: list[np.ndarray] = []
        self.loaded: dict[str, Any] | None = None
        self.policy = RandomPolicy(act_space, seed=0)
        Recorder.instances.append(self)

    def actor(self, obs: np.ndarray, deterministic: bool = False) -> tuple[np.ndarray, np.ndarray]:
        return self.rng.integers(self.act_space.n, size=len(obs)), np.zeros(len(obs), np.float32)

    def update(self, rollout: Any, global_step: int) -> dict[str, Any]:
        if global_step == Recorder.interrupt_at:
            raise KeyboardInterrupt
        self.updates.append((global_step, rollout.rewards.shape))
        self.rewards.append(rollout.rewards)
        return {"losses/count": torch.tensor(float(len(self.updates))), "charts/step_seen": global_step}

    def state_dict(self) -> dict[str, Any]:
        return {"updates": len(self.updates)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loaded = state


@pytest.fixture(autouse=True)
def fresh_recorder():
    Recorder.instances, Recorder.interrupt_at = [], None


def config(tmp_path, **over) -> LoopConfig:
    return LoopConfig(**{"total_steps": 160, "run_dir": str(tmp_path / "run"), "progress": False,
                         "tensorboard": False, "eval_episodes": 1, "checkpoint_every": 0, "log_every": 32, **over})


def rows(run_dir) -> list[dict[str, str]]:
    with open(f"{run_dir}/metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_each_update_gets_one_rollout_and_the_steps_done_and_its_metrics_are_logged(tmp_path):
    result = train_on_policy("loop", config(tmp_path), Recorder)
    (learner,) = Recorder.instances
    assert learner.updates == [(16 * i, (8, 2)) for i in range(1, 11)]  # (n_steps, num_envs) per rollout
    assert result["env_steps"] == 160
    logged = rows(result["run_dir"])
    assert [int(r["global_step"]) for r in logged] == [32, 64, 96, 128, 160]  # every log_every steps
    assert [float(r["losses/count"]) for r in logged] == [2, 4, 6, 8, 10]  # the metrics of that row's update
    assert [float(r["charts/step_seen"]) for r in logged] == [32, 64, 96, 128, 160]
    assert all(r["charts/episode_return"] for r in logged[1:])  # the episodes that ended are recorded
    state = load_checkpoint(result["run_dir"])
    assert state["updates"] == 10 and state["agent"] == "loop"
    assert isinstance(state["observation_space"], gym.spaces.Box) and state["action_space"] == gym.spaces.Discrete(2)


def test_rewards_are_signed_when_asked(tmp_path):
    train_on_policy("loop", config(tmp_path, env_id="Pendulum-v1", total_steps=16, clip_rewards=True),
                    ContinuousRecorder)
    (learner,) = Recorder.instances
    assert set(np.unique(learner.rewards[0])) <= {-1.0, 0.0}


class ContinuousRecorder(Recorder):
    @staticmethod
    def check_spaces(observation_space, action_space, env_id, agent):
        pass

    def actor(self, obs, deterministic=False):
        return self.rng.uniform(-2, 2, size=(len(obs), 1)).astype(np.float32), np.zeros(len(obs), np.float32)


def test_evaluations_come_at_the_first_iteration_past_each_multiple(tmp_path):
    result = train_on_policy("loop", config(tmp_path, eval_every=40, log_every=0), Recorder)
    evaluated = [int(r["global_step"]) for r in rows(result["run_dir"]) if r["eval/mean_return"]]
    assert evaluated == [48, 80, 128, 160]  # iterations of 16 steps: first past 40, 80, 120; the final one


def test_resume_restores_the_learner_and_continues_the_step_count(tmp_path):
    first = train_on_policy("loop", config(tmp_path, total_steps=64), Recorder)
    assert first["env_steps"] == 64
    second = train_on_policy("loop", config(tmp_path, total_steps=128), Recorder, resume=True)
    learner = Recorder.instances[-1]
    assert learner.loaded is not None and learner.loaded["updates"] == 4 and learner.loaded["global_step"] == 64
    assert [step for step, _ in learner.updates] == [80, 96, 112, 128]
    assert second["env_steps"] == 128
    assert [int(r["global_step"]) for r in rows(second["run_dir"])] == [32, 64, 96, 128]


def test_ctrl_c_in_an_update_keeps_a_checkpoint_of_the_steps_before_it(tmp_path):
    Recorder.interrupt_at = 96
    with pytest.raises(KeyboardInterrupt):
        train_on_policy("loop", config(tmp_path), Recorder)
    (latest,) = list_checkpoints(tmp_path / "run")
    state = load_checkpoint(tmp_path / "run")
    # the rollout was collected (the step counted) but not learned from: the resumed run collects anew
    assert state["global_step"] == 96 and state["updates"] == 5
    assert not (tmp_path / "run" / "final.json").exists()


def test_a_callback_stops_the_run_after_its_iteration(tmp_path):
    def stop_at_64(event: Event) -> bool:
        return event.kind == "log" and event.step >= 64

    result = train_on_policy("loop", config(tmp_path), Recorder, callbacks=[stop_at_64])
    assert result["env_steps"] == 64 and result["stopped"]["reason"].startswith("callback")
    assert len(Recorder.instances[0].updates) == 4


def test_unsupported_spaces_are_refused_before_anything_is_written(tmp_path):
    seen = []

    class Refusing(Recorder):
        @staticmethod
        def check_spaces(observation_space, action_space, env_id, agent):
            seen.append((env_id, agent))
            raise RLKitError(f"{agent} refuses {action_space}")

    with pytest.raises(RLKitError, match="loop refuses Discrete"):
        train_on_policy("loop", config(tmp_path), Refusing)
    assert seen == [("CartPole-v1", "loop")]
    with pytest.raises(RLKitError, match="loop supports Box and Discrete observations"):  # the default check
        train_on_policy("loop", config(tmp_path, env_id="Blackjack-v1"), Recorder)
    assert not (tmp_path / "run").exists() and not Recorder.instances
