"""Per-task evaluation (issue 24, item 3): an env whose reset info carries "task" gets each task's mean return beside
the overall one, in evaluate's result, in a run's metrics.csv (eval/task_K/mean_return) and in final.json."""

from __future__ import annotations

import csv
import json

import gymnasium as gym
import numpy as np
from rlkit.agents.dqn import DQNConfig, train
from rlkit.envs import make_env

from rlkit.config import apply_overrides
from rlkit.evaluation import evaluate, per_task_means
from rlkit.policy import RandomPolicy


class TaskCounter(gym.Env):
    """Episode i (reset seed s) plays task ``(s * 7) % 3`` (not the round-robin a reader might assume) and lasts
    ``task + 1`` steps of reward 10, so task k returns 10 (k + 1)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.task, self.t = (seed * 7) % 3, 0
        return np.zeros(1, np.float32), {"task": self.task}

    def step(self, action):
        self.t += 1
        return np.zeros(1, np.float32), 10.0, self.t > self.task, False, {"task": self.task}


def test_per_task_means_by_hand():
    assert per_task_means([1.0, 2.0, 4.0, 8.0], [1, 0, 1, 0]) == {"0": 5.0, "1": 2.5}
    assert per_task_means([3.0], [np.int64(2)]) == {"2": 3.0}


def test_evaluate_reads_each_episodes_task_from_the_env():
    result = evaluate(RandomPolicy(TaskCounter.action_space, seed=0), lambda render_mode=None: TaskCounter(),
                      episodes=5, seed=1)
    # seeds 1..5 -> tasks 7%3=1, 14%3=2, 21%3=0, 28%3=1, 35%3=2: returns 20, 30, 10, 20, 30
    assert result["returns"] == [20.0, 30.0, 10.0, 20.0, 30.0]
    assert result["per_task"] == {"0": 10.0, "1": 20.0, "2": 30.0}
    assert result["mean"] == 22.0


def test_single_task_envs_get_no_per_task():
    result = evaluate(RandomPolicy(gym.spaces.Discrete(2), seed=0),
                      lambda render_mode=None: make_env("CartPole-v1"), episodes=2, seed=0)
    assert "per_task" not in result


def test_a_suite_run_reports_each_tasks_return_in_final_json_and_metrics(tmp_path):
    cfg = apply_overrides(DQNConfig(), dict(
        env_id="rlkit/CartPole-MT-v0", heads="per_task", total_steps=300, learning_starts=100, batch_size=16,
        buffer_size=300, hidden=[8], train_every=4, gradient_steps=1, eval_episodes=8, eval_every=150,
        log_every=150, checkpoint_every=0, progress=False, run_dir=str(tmp_path / "run")))
    final = train(cfg)
    per_task = final["eval"]["per_task"]
    assert list(per_task) == ["0", "1", "2", "3"]
    returns = final["eval"]["returns"]  # episode i (seed eval_seed + i) plays task (eval_seed + i) % 4
    for k in range(4):
        mine = [r for i, r in enumerate(returns) if (cfg.eval_seed + i) % 4 == k]
        assert per_task[str(k)] == np.mean(mine)
    assert json.loads((tmp_path / "run" / "final.json").read_text())["eval"]["per_task"] == per_task
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("eval/mean_return")]
    assert [int(r["global_step"]) for r in rows] == [150, 300]
    for row in rows:  # the tasks' means average to the overall mean (each task played twice)
        tasks = [float(row[f"eval/task_{k}/mean_return"]) for k in range(4)]
        assert np.isclose(np.mean(tasks), float(row["eval/mean_return"]))
    assert float(rows[-1]["eval/task_2/mean_return"]) == per_task["2"]


def test_a_fixed_task_run_reports_that_task_alone(tmp_path):
    cfg = apply_overrides(DQNConfig(), dict(
        env_id="rlkit/CartPole-MT-v0", env_kwargs={"task": 3}, total_steps=200, learning_starts=100,
        batch_size=16, buffer_size=200, hidden=[8], eval_episodes=3, checkpoint_every=0, progress=False,
        run_dir=str(tmp_path / "run")))
    final = train(cfg)
    assert final["eval"]["per_task"] == {"3": final["eval"]["mean"]}
