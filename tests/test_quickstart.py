"""``rlkit quickstart`` driven as a user would, at a reduced budget."""

from __future__ import annotations

import json

import pytest

from rlkit.apps.quickstart import report_markdown, results_table


@pytest.mark.slow
def test_quickstart_pipeline_via_the_cli(tmp_path, cli):
    # ~40 s here: 3000 DQN steps, 3 demonstrations, 2 evaluation episodes, 1 DAgger round
    out = tmp_path / "qs"
    proc = cli("quickstart", "--out", str(out), "--steps", "3000", "--demos", "3", "--episodes", "2",
               "--dagger-rounds", "1", "--json", timeout=600)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert list(results["learners"]) == ["expert (DQN)", "BC (3 demos)", "DAgger", "random"]
    assert all(r["episodes"] == 2 and len(r["returns"]) == 2 for r in results["learners"].values())
    assert list(results["bc_by_demos"]) == ["1", "2", "3"]
    d = results["demos"]
    assert d["episodes"] == 3 and not d["rewards_stored"] and d["replay_reproduced"] == d["replay_episodes"] == 3
    assert json.loads((out / "results.json").read_text()) == results
    report = (out / "report.md").read_text()
    assert "| DAgger |" in report and "returns.png" in report
    assert (out / "returns.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from rlkit import demos

    assert all(ep.rewards is None for ep in demos.load(out / "demos"))
    # it never overwrites: a second run into the same directory is a one-line error
    again = cli("quickstart", "--out", str(out), "--steps", "1000")
    assert again.returncode == 2 and again.stderr.startswith("rlkit: error:") and "not empty" in again.stderr


def test_report_renders_the_table():
    learner = {"mean": 500.0, "std": 0.0, "episodes": 20, "returns": [500.0] * 20}
    results = {"env_id": "CartPole-v1", "eval_episodes": 20, "eval_seed": 10_000,
               "learners": {"expert (DQN)": learner, "random": {**learner, "mean": 22.5, "std": 11.25}},
               "bc_by_demos": {"1": learner}, "times_s": {"expert": 60.0},
               "demos": {"episodes": 10, "steps": 5000, "mean_return": 500.0, "path": "d", "replay_reproduced": 10,
                         "replay_episodes": 10}, "wall_s": 100.0}
    assert "| random | 22.5 | 11.2 | 20 |" in results_table(results)
    text = report_markdown(results)
    assert "seeds 10000..10019" in text and "10/10 reproduce" in text and "1: 500.0" in text
