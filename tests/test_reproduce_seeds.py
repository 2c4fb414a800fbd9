"""`rlkit reproduce`'s vectorised path: the seeds still to run grouped one group per worker, each group one
process training its seeds with registry.train_seeds; the results say per seed how its process ran."""

from __future__ import annotations

import json

import pytest

from rlkit.apps.backends import Job, JobGroup, execute, members
from rlkit.apps.reproduce import plan_jobs, reproduce
from rlkit.errors import RLKitError
from tests.conftest import run_cli

TINY_PRESETS = """
tiny-dqn:
  agent: dqn
  preset: cartpole
  seeds: 2
  budget: 1000
  eval_points: 2
  overrides: {learning_starts: 100, hidden: [16], buffer_size: 1000, target_update_every: 100,
              eval_episodes: 3, tensorboard: false}
  reference: {score: 500.0, plus_minus: 0.0, source: "test"}
tiny-ppo:
  agent: ppo
  preset: cartpole
  seeds: 2
  overrides: {n_steps: 64, batch_size: 32, n_epochs: 1, num_envs: 1, eval_episodes: 2, tensorboard: false}
"""


@pytest.fixture
def presets(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_PRESETS)
    return path


def _jobs(fresh: list[int], resumed: list[int] = ()) -> list[Job]:
    return [Job(f"seed {s}", "dqn", {"seed": s}, resume=s in resumed) for s in sorted([*fresh, *resumed])]


def _seeds(plan) -> list[list[int]]:
    return [[int(run.key.split()[1]) for run in members(job)] for job in plan]


def test_plan_groups_one_group_per_worker_and_never_mixes_resumed_with_fresh():
    assert _seeds(plan_jobs(_jobs([0, 1, 2, 3, 4]), workers=2, vectorise=True)) == [[0, 1, 2], [3, 4]]
    assert _seeds(plan_jobs(_jobs([0, 1, 2, 3, 4]), workers=1, vectorise=True)) == [[0, 1, 2, 3, 4]]
    assert _seeds(plan_jobs(_jobs([0, 1, 2]), workers=8, vectorise=True)) == [[0], [1], [2]]
    assert _seeds(plan_jobs(_jobs([0, 1, 2, 3, 4]), workers=2, vectorise=False)) == [[0], [1], [2], [3], [4]]
    plan = plan_jobs(_jobs([0, 1, 2], resumed=[3, 4]), workers=2, vectorise=True)
    assert _seeds(plan) == [[0, 1, 2], [3, 4]] and [members(j)[0].resume for j in plan] == [False, True]
    plan = plan_jobs(_jobs([0], resumed=[1, 2, 3, 4, 5]), workers=3, vectorise=True)
    assert _seeds(plan) == [[0], [1, 2, 3], [4, 5]]
    # one worker but fresh and resumed seeds: two groups, run one after the other
    assert _seeds(plan_jobs(_jobs([0, 2], resumed=[1]), workers=1, vectorise=True)) == [[0, 2], [1]]
    # a group of one is a plain job; a JobGroup refuses to mix
    assert all(isinstance(j, Job) for j in plan_jobs(_jobs([0, 1]), workers=2, vectorise=True))
    with pytest.raises(ValueError, match="all resumed or all fresh"):
        JobGroup(_jobs([0], resumed=[1]))


def test_a_failed_group_fails_each_of_its_runs():
    group = JobGroup([Job(f"seed {s}", "dqn", {"env_id": "NoSuchEnv-v0", "seed": s, "total_steps": 10})
                      for s in (0, 1)])
    seen = []
    with pytest.raises(RLKitError, match=r"2 of 2 runs failed \(seed 0, seed 1\); seed 0: .*NoSuchEnv-v0"):
        execute([group], "local", 1, None, lambda job, outcome, done, total: seen.append((job.key, done, total)))
    assert seen == [("seed 0", 1, 2), ("seed 1", 2, 2)]


def test_vectorised_by_default_and_one_seed_per_process_without(presets, tmp_path):
    vec, alone = tmp_path / "vec", tmp_path / "alone"
    results = reproduce("tiny-dqn", steps=500, workers=1, out=vec, presets_file=presets)
    assert results["vectorise"] is True and results["ran_seeds"] == [0, 1]
    assert [(r["vectorised"], r["seeds_in_process"]) for r in results["per_seed"]] == [(True, 2), (True, 2)]
    assert [r["env_steps"] for r in results["per_seed"]] == [500, 500] and all(r["wall_s"] > 0
                                                                                for r in results["per_seed"])
    report = (vec / "report.md").read_text()
    assert "| process |" in report and report.count("| vectorised, 2 seeds |") == 2 and "lockstep" in report
    assert "--no-vectorise" not in results["command"]

    proc = run_cli("reproduce", "tiny-dqn", "--presets", str(presets), "--steps", "500", "--workers", "1",
                   "--no-vectorise", "--out", str(alone), "--json")
    assert proc.returncode == 0, proc.stderr
    single = json.loads(proc.stdout)
    assert single["vectorise"] is False and "--no-vectorise" in single["command"]
    assert [(r["vectorised"], r["seeds_in_process"]) for r in single["per_seed"]] == [(False, 1), (False, 1)]
    assert (alone / "report.md").read_text().count("| alone |") == 2
    assert "on 1 processes" in proc.stderr and "vectorised:" not in proc.stderr

    # extended to 3 seeds: 0 and 1 are skipped and keep their record, 2 runs alone in its process
    more = run_cli("reproduce", "tiny-dqn", "--presets", str(presets), "--steps", "500", "--workers", "1",
                   "--seeds", "3", "--out", str(vec), "--json")
    assert more.returncode == 0, more.stderr
    extended = json.loads(more.stdout)
    assert (extended["ran_seeds"], extended["skipped_seeds"]) == ([2], [0, 1])
    assert [(r["vectorised"], r["seeds_in_process"]) for r in extended["per_seed"]] == [(True, 2), (True, 2),
                                                                                          (False, 1)]


def test_an_interrupted_vectorised_group_resumes_from_its_checkpoints(presets, tmp_path):
    out = tmp_path / "vec"
    first = reproduce("tiny-dqn", steps=500, workers=1, out=out, presets_file=presets)
    for seed in (0, 1):  # as if stopped after the last checkpoint, before final.json
        (out / f"seed_{seed}" / "final.json").unlink()
    again = reproduce("tiny-dqn", steps=500, workers=1, out=out, presets_file=presets)
    assert again["ran_seeds"] == [0, 1]
    assert [(r["vectorised"], r["seeds_in_process"]) for r in again["per_seed"]] == [(True, 2), (True, 2)]
    assert [r["return"] for r in again["per_seed"]] == [r["return"] for r in first["per_seed"]]
    steps = [row.split(",")[0] for row in (out / "seed_0" / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == ["250", "500"]  # resumed at 500, not trained again from 0


def test_vectorise_is_refused_for_an_agent_without_lockstep(presets, tmp_path):
    with pytest.raises(RLKitError, match="agent ppo cannot train several seeds in one process.*drop --vectorise"):
        reproduce("tiny-ppo", steps=128, workers=1, out=tmp_path / "p", presets_file=presets, vectorise=True)
    assert not (tmp_path / "p").exists()


@pytest.mark.slow
def test_a_vectorised_group_on_ray_matches_local(presets, tmp_path):
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'rlkit[ray]')")
    runs = {}
    for backend in ("local", "ray"):  # --workers 1: both seeds in one group, one Ray task
        proc = run_cli("reproduce", "tiny-dqn", "--presets", str(presets), "--steps", "500", "--workers", "1",
                       "--backend", backend, "--out", str(tmp_path / backend), "--json", timeout=400)
        assert proc.returncode == 0, proc.stderr
        runs[backend] = json.loads(proc.stdout)["per_seed"]
        assert "(vectorised: 2 seeds per process)" in proc.stderr
    assert runs["ray"] == [{**r, "wall_s": ray["wall_s"]} for r, ray in zip(runs["local"], runs["ray"])]
    for seed in (0, 1):
        finals = [json.loads((tmp_path / b / f"seed_{seed}" / "final.json").read_text()) for b in ("local", "ray")]
        assert finals[0]["eval"]["returns"] == finals[1]["eval"]["returns"]
