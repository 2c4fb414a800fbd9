"""benchmarks/bench_d3rlpy.py's pure parts: the 95% CI, the summary (ratios, targets), the table, the arrays handed
to d3rlpy and the committed JSON's schema; no side venv is made."""

from __future__ import annotations

import importlib.util
import json
import math
import statistics
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from rlkit import demos
from rlkit.apps.offline_data import add_metadata
from rlkit.policy import RandomPolicy

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_d3rlpy", ROOT / "benchmarks" / "bench_d3rlpy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(library, algo, seed, score, cpu, dataset="medium"):
    return {"library": library, "algo": algo, "dataset": dataset, "seed": seed, "normalized_return": score,
            "cpu_s": cpu, "wall_s": cpu * 1.5}


def test_mean_ci_by_hand(bench):
    # n = 3: mean 20, sample std 10, t(0.975, 2) = 4.303 -> half width 4.303 * 10 / sqrt(3) = 24.843
    ci = bench.mean_ci([10.0, 20.0, 30.0])
    assert ci["mean"] == 20.0 and ci["n"] == 3
    assert ci["half_width"] == pytest.approx(4.303 * 10 / math.sqrt(3))
    assert ci["ci95"] == pytest.approx([20 - 24.8434, 20 + 24.8434], abs=1e-3)
    five = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert bench.mean_ci(five)["half_width"] == pytest.approx(2.776 * statistics.stdev(five) / math.sqrt(5))
    assert bench.mean_ci([7.0]) == {"n": 1, "mean": 7.0, "ci95": None, "half_width": None}


def test_summary_ratios_and_targets(bench):
    runs = [run("rlkit", "iql", s, x, 10.0) for s, x in enumerate([60.0, 70.0, 80.0])]
    runs += [run("d3rlpy", "iql", s, x, 20.0) for s, x in enumerate([70.0, 80.0, 90.0])]
    runs += [run("rlkit", "cql", s, x, 16.0) for s, x in enumerate([10.0, 11.0, 12.0])]
    runs += [run("d3rlpy", "cql", s, x, 20.0) for s, x in enumerate([50.0, 51.0, 52.0])]
    runs.append({**run("d3rlpy", "cql", 3, 0.0, 1.0), "error": "worker exited 1"})  # errors are left out
    summary = bench.summarize(runs)
    iql, cql = summary["medium/iql"], summary["medium/cql"]
    assert iql["cpu_ratio_rlkit_over_d3rlpy"] == 0.5 and iql["cpu_target_met"]
    assert iql["wall_ratio_rlkit_over_d3rlpy"] == 0.5
    # rlkit's mean 70 against d3rlpy's CI 80 +- 24.8: inside
    assert iql["return_target_met"] and iql["d3rlpy"]["normalized_return"]["ci95"][0] < 70
    assert cql["cpu_ratio_rlkit_over_d3rlpy"] == 0.8 and not cql["cpu_target_met"]
    assert not cql["return_target_met"]  # 11 is far below d3rlpy's 51 +- 2.5
    assert cql["d3rlpy"]["seeds"] == [0, 1, 2]
    table = bench.markdown_table({"summary": summary})
    assert "| medium | iql | 70.0 (45.2, 94.8) | 80.0 (55.2, 104.8) | 10 | 20 | 0.50x |" in table


def test_one_library_only_has_no_ratio(bench):
    summary = bench.summarize([run("rlkit", "td3_bc", 0, 50.0, 5.0)])
    assert "cpu_ratio_rlkit_over_d3rlpy" not in summary["medium/td3_bc"]
    assert "| medium | td3_bc | 50.0 | - | 5 | - | - |" in bench.markdown_table({"summary": summary})


def test_arrays_for_d3rlpy_match_rlkit_dataset_and_normalisation(bench, tmp_path):
    out = tmp_path / "d"
    space = gym.make("Pendulum-v1").action_space
    demos.record(RandomPolicy(space, seed=0), "Pendulum-v1", episodes=3, out=out, seed=0, keep_rewards=True,
                 env_kwargs={"max_episode_steps": 10}, source="random")
    add_metadata(out, {"ref_min_score": -100.0, "ref_max_score": -10.0}, {"kind": "test"})
    info = bench.export_arrays(out, tmp_path / "a.npz")
    assert info == {"transitions": 30, "episodes": 3, "reference_scores": [-100.0, -10.0]}
    ds = demos.load(out)
    with np.load(tmp_path / "a.npz", allow_pickle=False) as f:
        assert np.array_equal(f["observations"], np.concatenate([ep.obs[:-1] for ep in ds]))
        assert np.array_equal(f["rewards"], np.concatenate([ep.rewards for ep in ds]))
        assert f["timeouts"].sum() == 3 and f["terminals"].sum() == 0 and f["timeouts"][9] == 1
        from rlkit.engine.offline import dataset_normalizer, reward_scale

        normalizer = dataset_normalizer(ds.transitions().obs.astype(np.float32))
        obs = f["observations"][:5]
        d3rlpy_style = (obs - f["obs_mean"]) / (f["obs_std"] + f["obs_std_eps"])  # StandardObservationScaler
        assert np.allclose(normalizer(obs), d3rlpy_style, atol=1e-5)
        assert float(f["reward_scale"]) == reward_scale(ds)


def test_committed_results_have_the_schema(bench):
    path = ROOT / "benchmarks" / "results" / "d3rlpy.json"
    if not path.exists():
        pytest.skip("benchmarks/results/d3rlpy.json not written yet")
    results = json.loads(path.read_text())
    for key in ("steps", "seeds", "eval", "datasets", "notes", "versions", "runs", "summary", "git"):
        assert key in results, key
    assert results["versions"]["side_venv"]["d3rlpy"] == "2.8.1"
    assert "d3rlpy" not in results["versions"]["rlkit_venv"]  # d3rlpy never enters rlkit's venv
    for r in results["runs"]:
        if "error" not in r:
            low, high = results["datasets"][r["dataset"]]["reference_scores"]
            assert r["normalized_return"] == pytest.approx(100 * (np.mean(r["returns"]) - low) / (high - low))
            assert len(r["returns"]) == results["eval"]["episodes"] and r["cpu_s"] > 0
    assert results["summary"] == bench.summarize(results["runs"])
    # the same algorithm in both libraries: rlkit's CQL with d3rlpy's backup (its NOTES)
    assert {r["config"]["backup_action"] for r in results["runs"] if r["library"] == "rlkit" and r["algo"] == "cql"} \
        == {"mean"}
