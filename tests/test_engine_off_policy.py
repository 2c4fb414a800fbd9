"""The off-policy loop (rlkit/engine/off_policy.py) with a learner that records what the loop asks of it:
when updates come, how many minibatches a round holds, what acting sees, episode ends, resume. The
agents' own tests (test_dqn.py, test_ddpg.py, test_sac.py) check their algorithms on top of it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from rlkit.envs import register_test_envs

from rlkit.buffers import PrioritizedReplayBuffer, ReplayBuffer, Round
from rlkit.config import BaseConfig, ReplayOptions, opt
from rlkit.engine.off_policy import OffPolicyLearner, train_off_policy
from rlkit.errors import RLKitError
from rlkit.policy import RandomPolicy

register_test_envs()


@dataclass
class RecorderConfig(ReplayOptions, BaseConfig):
    env_id: str = opt("rlkit/ContinuousTarget-v0", "env")


class Recorder(OffPolicyLearner):
    """Acts with zeros and records every call the loop makes."""

    def __init__(self, cfg: RecorderConfig, obs_space: gym.Space, act_space: gym.Space, rng: np.random.Generator):
        self.cfg, self.act_space = cfg, act_space
        self.buffer = ReplayBuffer(cfg.buffer_size, obs_space, act_space, num_envs=cfg.num_envs, gamma=cfg.gamma,
                                   rng=rng)
        self.policy = RandomPolicy(act_space, seed=0)
        self.explored_at: list[int] = []
        self.updates: list[tuple[int, int]] = []  # (global_step, minibatches in the round)
        self.ended: list[tuple[int, list[int]]] = []

    def explore(self, obs: np.ndarray, global_step: int) -> np.ndarray:
        self.explored_at.append(global_step)
        return np.zeros((len(obs), *self.act_space.shape), np.float32)

    def update(self, batches, global_step: int) -> dict[str, float]:
        batches = list(batches)
        assert all(len(b.obs) == self.cfg.batch_size for b in batches)
        self.updates.append((global_step, len(batches)))
        return {"losses/recorded": float(len(self.updates))}

    def after_env_step(self, global_step: int, ended: np.ndarray) -> None:
        if len(ended):
            self.ended.append((global_step, ended.tolist()))

    def scalars(self) -> dict[str, float]:
        return {"charts/updates": len(self.updates)}

    def state_dict(self) -> dict[str, Any]:
        return {"updates": torch.tensor(self.updates, dtype=torch.int64).reshape(-1, 2)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = [tuple(row) for row in state["updates"].tolist()]


def config(tmp_path, **overrides: Any) -> RecorderConfig:
    values = dict(run_dir=str(tmp_path / "run"), total_steps=40, num_envs=2, learning_starts=10, train_every=4,
                  gradient_steps=3, batch_size=4, buffer_size=100, log_every=8, eval_every=0, checkpoint_every=20,
                  eval_episodes=1, progress=False, tensorboard=False)
    return RecorderConfig(**{**values, **overrides})


def kept() -> tuple[type[Recorder], list[Recorder]]:
    """A Recorder class whose instances are kept in the returned list, to be looked at after the run."""
    learners: list[Recorder] = []

    class Kept(Recorder):
        def __init__(self, *args):
            super().__init__(*args)
            learners.append(self)

    return Kept, learners


def test_updates_follow_learning_starts_and_train_every(tmp_path):
    Kept, learners = kept()
    result = train_off_policy("recorder", config(tmp_path), Kept)
    learner = learners[0]
    # Two envs: global_step advances by 2; a round comes where global_step > 10 crosses a multiple of 4.
    assert learner.updates == [(step, 3) for step in (12, 16, 20, 24, 28, 32, 36, 40)]
    # Before learning_starts actions are uniform random (no explore call); from then on the learner acts.
    assert learner.explored_at == list(range(10, 40, 2))
    # ContinuousTarget episodes last one step: every iteration ends both envs' episodes.
    assert learner.ended == [(step, [0, 1]) for step in range(2, 41, 2)]
    assert result["env_steps"] == 40
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert [int(r.split(",")[0]) for r in rows[1:]] == [8, 16, 24, 32, 40]
    assert "losses/recorded" in header and "charts/updates" in header


def test_resume_continues_the_learner_and_the_buffer(tmp_path):
    Kept, learners = kept()
    train_off_policy("recorder", config(tmp_path, total_steps=20, save_buffer=True), Kept)
    stored = len(learners[0].buffer)
    result = train_off_policy("recorder", config(tmp_path, total_steps=40, save_buffer=True), Kept, resume=True)
    resumed = learners[1]
    assert resumed.updates[:3] == [(12, 3), (16, 3), (20, 3)]  # restored from the checkpoint at step 20
    assert resumed.updates[3:] == [(step, 3) for step in (24, 28, 32, 36, 40)]
    assert resumed.explored_at == list(range(20, 40, 2))  # past learning_starts: no uniform warm-up again
    assert len(resumed.buffer) == stored + 20  # the saved buffer, plus the resumed run's 20 transitions
    assert json.loads((tmp_path / "run" / "final.json").read_text())["env_steps"] == result["env_steps"] == 40


def test_a_learner_that_refuses_the_spaces_stops_before_the_run_writes(tmp_path):
    class Refusing(Recorder):
        @staticmethod
        def check_spaces(observation_space, action_space, env_id, agent):
            raise RLKitError(f"{agent} cannot act in {env_id}")

    with pytest.raises(RLKitError, match="recorder cannot act in rlkit/ContinuousTarget-v0"):
        train_off_policy("recorder", config(tmp_path), Refusing)
    assert not (tmp_path / "run").exists()


def test_prioritized_minibatches_are_drawn_one_at_a_time():
    """A round's prioritized minibatches come lazily, so each sees the priorities the previous step set."""
    space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def filled(buffer: ReplayBuffer) -> ReplayBuffer:
        for i in range(10):
            buffer.add(np.full((1, 1), i, np.float32), np.zeros((1, 1), np.float32), np.ones(1, np.float32),
                       np.full((1, 1), i + 1, np.float32), np.zeros(1, bool), np.zeros(1, bool))
        return buffer

    buffer = filled(PrioritizedReplayBuffer(16, space, space, rng=np.random.default_rng(0)))
    batches = buffer.minibatches(batch_size=8, count=2)
    first = next(batches)
    buffer.update_priorities(first.indices, np.where(first.indices == first.indices[0], 1e6, 0.0))
    second = next(batches)
    assert (second.indices == first.indices[0]).mean() > 0.8  # the new priorities drew it
    uniform = filled(ReplayBuffer(16, space, space, rng=np.random.default_rng(0)))
    round_ = uniform.minibatches(4, 3)
    assert isinstance(round_, Round) and len(round_) == 3 and len(round_.whole.obs) == 12  # one gather
    assert [b.indices.tolist() for b in round_] == [round_.whole.indices[i:i + 4].tolist() for i in (0, 4, 8)]
    assert torch.equal(round_[-1].obs, round_[2].obs) and len(round_[1:]) == 2
    with pytest.raises(IndexError):
        round_[3]


def test_the_engine_page_example_trains_and_resumes(tmp_path, monkeypatch):
    """docs/engine.md's new agent runs as printed: a run directory with final.json, and it resumes."""
    import re
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "engine.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", page, flags=re.DOTALL)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/engine.md", "exec"), namespace)
    final = json.loads((tmp_path / "runs" / "plain-q" / "final.json").read_text())
    assert final["env_steps"] == 3_000 and final["agent"] == "plain-q"
    cfg = namespace["PlainQConfig"](env_id="CartPole-v1", total_steps=4_000, learning_starts=500,
                                    run_dir="runs/plain-q", eval_episodes=5, progress=False)
    assert train_off_policy("plain-q", cfg, namespace["PlainQ"], resume=True)["env_steps"] == 4_000
