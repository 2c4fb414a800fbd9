"""Measuring multi-task learning with `rlkit reproduce` (issue 24, item 3): the single-task baseline split over a
suite's tasks (split_tasks), per-task aggregates, fine-tuning from another reproduction's seeds (init_from, DQN's
init_from option) and steps to a threshold; by hand where it is arithmetic, and one tiny reproduction of each."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from rlkit.agents.dqn import DQN, DQNConfig
from rlkit.envs import make_env

from rlkit.apps import reproduce_tasks
from rlkit.apps.reproduce import per_task_results, reproduce, steps_to_threshold
from rlkit.checkpoint import load_checkpoint
from rlkit.config import apply_overrides
from rlkit.errors import RLKitError

TINY = "{learning_starts: 50, hidden: [16], batch_size: 16, train_every: 16, gradient_steps: 2, buffer_size: 1000, " \
       "checkpoint_every: 0, eval_episodes: 4}"
PRESETS = f"""
mt:
  agent: dqn
  preset: cartpole-mt
  seeds: 2
  budget: 400
  eval_points: 2
  overrides: {TINY}
single:
  agent: dqn
  preset: cartpole
  seeds: 2
  budget: 800
  eval_points: 2
  split_tasks: true
  overrides: {{env_id: rlkit/CartPole-MT-v0, learning_starts: 50, hidden: [16], batch_size: 16, train_every: 16,
              gradient_steps: 2, buffer_size: 1000, checkpoint_every: 0, eval_episodes: 2}}
transfer:
  agent: dqn
  preset: cartpole-mt
  seeds: 2
  budget: 200
  eval_points: 4
  init_from: mt
  threshold: 20
  overrides: {{env_id: rlkit/CartPole-MT-heldout-v0, learning_starts: 50, hidden: [16], batch_size: 16,
              train_every: 16, gradient_steps: 2, buffer_size: 1000, checkpoint_every: 0, eval_episodes: 3}}
"""


def write_metrics(run_dir: Path, rows: list[tuple[int, float]]) -> None:
    run_dir.mkdir(parents=True)
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["global_step", "eval/mean_return"])
        writer.writerows(rows)


def test_combined_curve_by_hand(tmp_path):
    # task 0 evaluated at 100, 200, 300; task 1 stopped early (its target) at 200 and keeps its last value
    write_metrics(tmp_path / "task_0", [(100, 10.0), (200, 20.0), (300, 40.0)])
    write_metrics(tmp_path / "task_1", [(100, 30.0), (200, 500.0)])
    rows = list(csv.reader(reproduce_tasks.combined_curve_csv([tmp_path / "task_0", tmp_path / "task_1"])
                           .splitlines()))
    assert rows[0] == ["global_step", "eval/mean_return", "eval/task_0/mean_return", "eval/task_1/mean_return"]
    assert [[float(v) for v in r] for r in rows[1:]] == [[200, 20.0, 10.0, 30.0], [400, 260.0, 20.0, 500.0],
                                                          [500, 270.0, 40.0, 500.0]]  # summed steps 300 + 200


def test_steps_to_threshold_by_hand():
    curves = [[[1000, 100.0], [2000, 480.0], [3000, 500.0]], [[1000, 475.0]], [[1000, 10.0], [2000, 474.9]]]
    result = steps_to_threshold(475.0, curves, total_steps=3000)
    assert result["per_seed"] == [2000, 1000, None] and result["reached"] == 2
    assert result["aggregate"]["mean"] == pytest.approx(2000.0)  # (2000 + 1000 + 3000) / 3: never = the budget


def test_per_task_results_pool_tasks_and_seeds():
    finals = [{"eval": {"per_task": {"0": 1.0, "1": 10.0}}}, {"eval": {"per_task": {"0": 3.0, "1": 30.0}}}]
    out = per_task_results(finals)
    assert out["per_task"]["1"]["per_seed"] == [10.0, 30.0] and out["per_task"]["0"]["aggregate"]["mean"] == 2.0
    assert (out["tasks_aggregate"]["runs"], out["tasks_aggregate"]["tasks"]) == (2, 2)
    assert out["tasks_aggregate"]["iqm"] == pytest.approx(6.5)  # sorted 1 3 10 30: the middle two
    assert per_task_results([{"eval": {"per_task": {"2": 5.0}}}]) == {}  # one task (a held-out context)
    assert per_task_results([{"eval": {"mean": 5.0}}]) == {}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("mt-repro")
    presets = root / "presets.yaml"
    presets.write_text(PRESETS)
    out = {name: reproduce(name, out=root / name, presets_file=presets, workers=1) for name in ("mt", "single")}
    return root, presets, out


def test_split_tasks_trains_one_run_per_task_and_reports_them_as_one_seed(tiny):
    root, _, out = tiny
    results = out["single"]
    assert results["seeds"] == [0, 1] and results["ran_seeds"] == [0, 1]
    for seed in (0, 1):
        final = json.loads((root / "single" / f"seed_{seed}" / "final.json").read_text())
        tasks = [json.loads((root / "single" / f"seed_{seed}" / f"task_{k}" / "final.json").read_text())
                 for k in range(4)]
        assert [t["env_steps"] for t in tasks] == [200] * 4 and final["env_steps"] == 800
        assert final["eval"]["per_task"] == {str(k): t["eval"]["mean"] for k, t in enumerate(tasks)}
        assert final["eval"]["mean"] == pytest.approx(np.mean([t["eval"]["mean"] for t in tasks]))
        # one process trained the seeds' task runs side by side: their wall times overlap, so the seed's is the longest
        assert results["per_seed"][seed]["vectorised"]
        assert final["wall_s"] == pytest.approx(max(t["wall_s"] for t in tasks), abs=1e-3)
        config = json.loads((root / "single" / f"seed_{seed}" / "task_2" / "config.json").read_text())
        assert config["env_kwargs"] == {"task": 2} and config["seed"] == seed and config["eval_every"] == 100
    assert set(results["per_task"]) == {"0", "1", "2", "3"} and results["tasks_aggregate"]["runs"] == 2
    report = (root / "single" / "report.md").read_text()
    assert "## Per task" in report and "all tasks x seeds (2 x 4)" in report and results["plot"] == "curves.png"
    # the multi-task run reports the same tables, from its round-robin evaluation
    assert set(out["mt"]["per_task"]) == {"0", "1", "2", "3"}
    assert "## Per task" in (root / "mt" / "report.md").read_text()
    again = reproduce("single", out=root / "single", presets_file=root / "presets.yaml", workers=1)
    assert again["ran_seeds"] == [] and again["per_seed"] == results["per_seed"]  # finished tasks are skipped


def test_fine_tuning_starts_from_each_seeds_network_and_reports_steps_to_threshold(tiny):
    root, presets, _ = tiny
    results = reproduce("transfer", out=root / "transfer", presets_file=presets, workers=1)
    assert results["threshold"]["value"] == 20 and len(results["threshold"]["per_seed"]) == 2
    assert [r["steps_to_threshold"] for r in results["per_seed"]] == results["threshold"]["per_seed"]
    assert "## Steps to threshold" in (root / "transfer" / "report.md").read_text()
    for seed in (0, 1):
        config = json.loads((root / "transfer" / f"seed_{seed}" / "config.json").read_text())
        assert config["init_from"] == str((root / "mt" / f"seed_{seed}").resolve())
    with pytest.raises(RLKitError, match="has not finished; run `rlkit reproduce mt"):
        reproduce("transfer", seeds=3, out=root / "transfer", presets_file=presets, workers=1)


def test_init_from_loads_the_q_network_and_refuses_what_does_not_fit(tiny):
    root, *_ = tiny
    source = root / "mt" / "seed_0"
    cfg = apply_overrides(DQNConfig(), {"env_id": "rlkit/CartPole-MT-heldout-v0", "heads": "per_task",
                                        "hidden": [16], "init_from": str(source), "progress": False})
    env = make_env(cfg.env_id)
    learner = DQN(cfg, env.observation_space, env.action_space, np.random.default_rng(0))
    trained = load_checkpoint(source)["q_net"]
    for key, value in learner.q_net.state_dict().items():
        assert torch.equal(value, trained[key]) and torch.equal(learner.q_target.state_dict()[key], value)
    assert learner.optimizer.state_dict()["state"] == {}  # the optimizer starts afresh
    with pytest.raises(RLKitError, match=r"has other networks \(hidden, heads, dueling differ\)"):
        DQN(apply_overrides(cfg, {"hidden": [32]}), env.observation_space, env.action_space, np.random.default_rng(0))
    plain = make_env("CartPole-v1")
    with pytest.raises(RLKitError, match="fine-tune on an env of the same suite"):
        DQN(apply_overrides(cfg, {"env_id": "CartPole-v1", "heads": "shared"}), plain.observation_space,
            plain.action_space, np.random.default_rng(0))


def test_init_from_finds_the_one_reduced_run_beside_it(tmp_path):
    from rlkit.apps.reproduce import pretrained_seed
    from rlkit.apps.reproduce_presets import ReproducePreset

    preset = ReproducePreset(name="transfer", agent="dqn", init_from="mt")
    for name in ("mt-400steps", "mt-conditioned-400steps"):  # another preset's reduced run is not mt's
        (tmp_path / name / "seed_0").mkdir(parents=True)
        (tmp_path / name / "seed_0" / "final.json").write_text("{}")
    assert pretrained_seed(preset, tmp_path / "transfer-100steps", 0) == str((tmp_path / "mt-400steps" / "seed_0")
                                                                             .resolve())
    (tmp_path / "mt-800steps").mkdir()
    with pytest.raises(RLKitError, match="several reduced runs of it \\(mt-400steps, mt-800steps\\)"):
        pretrained_seed(preset, tmp_path / "transfer", 0)
    (tmp_path / "mt" / "seed_0").mkdir(parents=True)
    with pytest.raises(RLKitError, match="has not finished"):  # the full run is preferred, finished or not
        pretrained_seed(preset, tmp_path / "transfer", 0)
