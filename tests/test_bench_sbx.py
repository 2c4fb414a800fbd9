"""The summary maths and run order of benchmarks/bench_sbx.py (no side venv, no training)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "bench_sbx", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_sbx.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _run(arm: str, seed: int, cpu: float, wall: float, ret: float = 500.0, task: str = "dqn-cartpole") -> dict:
    return {"task": task, "arm": arm, "seed": seed, "cpu_s": cpu, "wall_s": wall, "train_cpu_s": cpu - 1,
            "final_return": ret, "solved": ret >= bench.TASKS[task]["solved"]}


def test_summary_takes_medians_and_ratios_of_medians():
    runs = [_run("rlkit", 0, 40, 30), _run("rlkit", 1, 50, 60), _run("rlkit", 2, 45, 35, ret=198),
            _run("sbx", 0, 20, 10), _run("sbx", 1, 10, 20), _run("sbx", 2, 30, 15),
            _run("sb3", 0, 60, 50), _run("sb3", 1, 90, 40),
            {**_run("sb3", 2, 1, 1), "error": "exit 1"}]  # a failed run counts nowhere
    per = bench.summarize(runs)["dqn-cartpole"]
    assert per["rlkit"]["median_cpu_s"] == 45 and per["rlkit"]["median_wall_s"] == 35
    assert per["rlkit"]["seeds_solved"] == 2 and per["sbx"]["seeds_solved"] == 3
    assert per["sb3"]["seeds"] == [0, 1] and per["sb3"]["median_cpu_s"] == 75
    assert per["rlkit_over_sbx"]["cpu"] == pytest.approx(45 / 20)
    assert per["rlkit_over_sbx"]["wall"] == pytest.approx(35 / 15)
    assert per["rlkit_over_sb3"]["cpu"] == pytest.approx(45 / 75)
    assert per["rlkit_over_sbx"]["per_seed_cpu"] == pytest.approx({"0": 2.0, "1": 5.0, "2": 1.5})
    assert set(per["rlkit_over_sb3"]["per_seed_wall"]) == {"0", "1"}
    table = bench.markdown_table({"summary": bench.summarize(runs), "runs": runs})
    assert ("| dqn-cartpole (0,1,2) | 45.0 / 75.0 / 20.0 | 35.0 / 45.0 / 15.0 | 2/3 / 2/2 / 3/3 | **2.25×** / 2.33× | "
            "0.60× / 0.78× |") in table


def test_summary_without_an_arm_gives_no_ratio():
    per = bench.summarize([_run("rlkit", 0, 40, 30, task="td3-pendulum", ret=-150)])["td3-pendulum"]
    assert "rlkit_over_sbx" not in per and per["rlkit"]["seeds_solved"] == 1


def test_plan_rotates_the_arms_per_seed():
    jobs = bench.plan(["dqn-cartpole", "td3-pendulum"], [0, 1, 2])
    assert len(jobs) == 18
    firsts = [jobs[i][1] for i in (0, 6, 12)]
    assert firsts == ["rlkit", "sb3", "sbx"]
    assert [j[1] for j in jobs[:3]] == [j[1] for j in jobs[3:6]]  # same order for every task of a seed


def test_flop_floor_by_hand():
    """DQN: forward 2*64*(4*256 + 256*256 + 256*2) = 8,585,216 twice (online, target) and a backward of
    2*64*(67,072 weight + 66,048 input products) = 17,039,360 (profile_dqn_update.json counts the same terms).
    TD3: actor [3, 400, 300, 1] (121,500 products), critic [4, 400, 300, 1] (121,900); batch 100."""
    assert bench.flops_per_update("dqn-cartpole") == 2 * 8_585_216 + 17_039_360
    actor, critic = 200 * 121_500, 200 * 121_900
    critic_backward, actor_backward = 200 * (121_900 + 120_300), 200 * (121_500 + 120_300)
    critic_step = actor + 4 * critic + 2 * critic_backward
    actor_step = actor + critic + critic + actor_backward  # dQ/da through critic 0: all its input gradients
    assert bench.flops_per_update("td3-pendulum") == pytest.approx(critic_step + actor_step / 2)
    runs = [{**_run("rlkit", 0, 41, 30), "matmul_gflops": 100.0}, {**_run("sbx", 0, 21, 10), "matmul_gflops": 120.0}]
    floor = bench.summarize(runs)["dqn-cartpole"]["floor"]
    assert floor["updates_floor_s"] == pytest.approx(34_209_792 * 24_576 / 110e9)
    assert floor["fraction_of_floor"]["rlkit"] == pytest.approx(floor["updates_floor_s"] / 40)
