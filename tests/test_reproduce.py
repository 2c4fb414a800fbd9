"""rlkit reproduce / rlkit plot: aggregate statistics by hand, curves, resume, the report, Ray = local."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from rlkit.apps import reports
from rlkit.apps.reproduce import _pending_or_done, eval_curve, get_preset, load_presets, reproduce
from rlkit.errors import RLKitError
from tests.conftest import run_cli


# ---------------------------------------------------------------------------------------------
# IQM and stratified bootstrap against hand-checked values
# ---------------------------------------------------------------------------------------------
def test_iqm_hand_values():
    assert reports.iqm([4, 1, 3, 2]) == pytest.approx(2.5)           # 4 runs: trim 1 each end -> mean(2, 3)
    assert reports.iqm([10, 1, 3, 2, 100]) == pytest.approx(5.0)     # 5 runs: trim int(1.25)=1 -> mean(2, 3, 10)
    assert reports.iqm(np.arange(8)) == pytest.approx(3.5)           # 8 runs: trim 2 -> mean(2, 3, 4, 5)
    assert reports.iqm([7.0]) == pytest.approx(7.0)
    # Pooled over (runs, tasks) like rliable's aggregate_iqm; per-row with axis.
    scores = np.array([[1, 2, 3, 4], [4, 3, 2, 100]])
    assert reports.iqm(scores) == pytest.approx(3.0)                 # sorted 1 2 2 3 3 4 4 100 -> mean(2,3,3,4)
    np.testing.assert_allclose(reports.iqm(scores, axis=1), [2.5, 3.5])
    rng = np.random.default_rng(0)
    for n in (3, 4, 5, 9, 10):
        x = rng.normal(size=n)
        assert reports.iqm(x) == pytest.approx(scipy.stats.trim_mean(x, 0.25))  # the convention rliable uses
    with pytest.raises(RLKitError, match="empty"):
        reports.iqm([])


def test_bootstrap_ci_hand_checked():
    # 2 runs [0, 10]: a replicate's mean is 0 (p=1/4), 5 (1/2) or 10 (1/4) -> the 95% CI is exactly [0, 10].
    assert reports.stratified_bootstrap_ci([0.0, 10.0], reports.AGGREGATES["mean"], seed=1) == (5.0, 0.0, 10.0)
    # 3 runs [0, 0, 9]: mean 0 (p=8/27), 3 (12/27), 6 (6/27), 9 (1/27 = 3.7% > 2.5%) -> CI [0, 9] around 3.
    assert reports.stratified_bootstrap_ci([0.0, 0.0, 9.0], reports.AGGREGATES["mean"], seed=2) == (3.0, 0.0, 9.0)
    # At the 50% level the CI of the same example shrinks to [0, 6]: 29.6% of replicates are 0, 3.7% are 9.
    point, lo, hi = reports.stratified_bootstrap_ci([0.0, 0.0, 9.0], reports.AGGREGATES["mean"], confidence=0.5)
    assert (lo, hi) == (0.0, 6.0)
    # All runs equal: no uncertainty at all.
    assert reports.stratified_bootstrap_ci([3.0] * 4, reports.AGGREGATES["iqm"]) == (3.0, 3.0, 3.0)


def test_bootstrap_matches_direct_computation():
    """The vectorised, chunked bootstrap equals a plain loop that draws the same indices one replicate at a time."""
    scores = np.array([[1.0, 20.0], [3.0, 50.0], [4.0, 40.0], [10.0, 0.0]])  # 4 runs x 2 tasks
    reps, seed = 1_000, 7
    for name, direct_stat in (("mean", np.mean), ("iqm", lambda x: scipy.stats.trim_mean(x, 0.25, axis=None))):
        rng = np.random.default_rng(seed)
        direct = []
        for _ in range(reps):
            idx = rng.integers(0, 4, size=(4, 2))         # run indices, drawn per task (the strata)
            direct.append(direct_stat(scores[idx, [0, 1]]))
        expected = np.percentile(direct, [2.5, 97.5])
        point, lo, hi = reports.stratified_bootstrap_ci(scores, reports.AGGREGATES[name], reps=reps, seed=seed,
                                                        chunk=1_000)
        assert point == pytest.approx(direct_stat(scores))
        np.testing.assert_allclose([lo, hi], expected)


def test_bootstrap_is_stratified():
    """Every replicate keeps each task's run count: a task whose scores are all >= 100 always gives 4 of them."""
    scores = np.array([[0.0, 100.0], [1.0, 101.0], [2.0, 102.0], [3.0, 103.0]])

    def count_big(reps):
        return (reps.reshape(len(reps), -1) >= 100).sum(axis=1)

    assert reports.stratified_bootstrap_ci(scores, count_big, reps=5_000) == (4.0, 4.0, 4.0)


def test_summary_and_reference_comparison():
    s = reports.summarize([1.0, 2.0, 3.0, 4.0], reps=2_000)
    assert (s["mean"], s["iqm"], s["median"]) == (2.5, 2.5, 2.5)
    assert s["std"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert s["mean_ci"][0] < 2.5 < s["mean_ci"][1] and 1.0 <= s["mean_ci"][0] and s["mean_ci"][1] <= 4.0
    assert reports.compare_to_reference(s, {"score": 2.0, "plus_minus": 1.0})["mean_in_range"] is True
    far = reports.compare_to_reference(s, {"score": 10.0, "plus_minus": 1.0})
    assert (far["mean_in_range"], far["ci_overlaps_range"], far["range"]) == (False, False, [9.0, 11.0])
    near = reports.compare_to_reference(s, {"range": [3.0, 5.0]})
    assert (near["mean_in_range"], near["ci_overlaps_range"]) == (False, True)
    assert reports.compare_to_reference(s, {"source": "none published"}) is None
    assert reports.format_reference({"score": -152.099, "plus_minus": 94.282}) == "-152.1 ± 94.3"


# ---------------------------------------------------------------------------------------------
# Learning curves from metrics.csv
# ---------------------------------------------------------------------------------------------
def write_metrics(run_dir: Path, rows: list[dict]) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    keys = ["global_step", "charts/episode_return", "eval/mean_return"]
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    return run_dir


def test_curves_load_align_band_and_plot(tmp_path):
    a = write_metrics(tmp_path / "a", [
        {"global_step": 100, "charts/episode_return": 5, "eval/mean_return": ""},
        {"global_step": 200, "charts/episode_return": 7, "eval/mean_return": 10},
        {"global_step": 300, "charts/episode_return": "", "eval/mean_return": 10},
        {"global_step": 400, "charts/episode_return": 9, "eval/mean_return": 30},
    ])
    b = write_metrics(tmp_path / "b", [
        {"global_step": 200, "charts/episode_return": 1, "eval/mean_return": 20},
        {"global_step": 350, "charts/episode_return": 2, "eval/mean_return": 40},
    ])
    ca = reports.load_curve(a)
    assert ca.metric == reports.EVAL_KEY
    np.testing.assert_array_equal(ca.steps, [200, 300, 400])
    train = reports.load_curve(a, "train")
    np.testing.assert_array_equal(train.values, [5, 7, 9])
    cb = reports.load_curve(b)
    # Grid: steps where both runs have started (200) up to where both still run (350); the value at a
    # grid step is the latest logged at or before it.
    grid, table = reports.align_curves([ca, cb])
    np.testing.assert_array_equal(grid, [200, 300, 350])
    np.testing.assert_array_equal(table, [[10, 10, 10], [20, 20, 40]])
    grid, mean, lo, hi = reports.curve_band([ca, cb], reps=500)
    np.testing.assert_allclose(mean, [15, 15, 25])
    assert np.all(lo <= mean) and np.all(mean <= hi) and hi[-1] == 40 and lo[-1] == 10
    _, mean1, lo1, hi1 = reports.curve_band([ca])
    np.testing.assert_array_equal(lo1, hi1)
    png = reports.plot_curves([("both", [ca, cb]), ("a", [ca])], tmp_path / "p" / "c.png",
                              reference={"score": 25, "plus_minus": 5, "source": "hand"}, title="t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(RLKitError, match="metrics.csv"):
        reports.load_curve(tmp_path / "nothing")
    with pytest.raises(RLKitError, match="no values for nope"):
        reports.load_curve(a, "nope")


# ---------------------------------------------------------------------------------------------
# Presets and resume bookkeeping
# ---------------------------------------------------------------------------------------------
def test_presets_name_references_and_missing_agents(tmp_path):
    presets = load_presets()
    for name in ("dqn-cartpole", "dqn-pong", "dqn-breakout", "ddpg-pendulum", "td3-pendulum", "td3-halfcheetah",
                 "ddpg-halfcheetah", "a3c-cartpole", "a3c-pong", "bc-cartpole", "gail-cartpole", "airl-cartpole",
                 "gail-pendulum", "preference-pendulum"):
        assert presets[name].reference.get("source"), name
    assert presets["dqn-pong"].reference["score"] == 18.9 and presets["dqn-pong"].also[0]["score"] == 20.602
    path = tmp_path / "mine.yaml"
    path.write_text("future:\n  agent: nosuchagent\n  reference: {source: x}\n")
    with pytest.raises(RLKitError, match="needs agent 'nosuchagent', which is not installed"):
        get_preset("future", path)
    with pytest.raises(RLKitError, match="unknown reproduction preset 'nope'"):
        get_preset("nope", path)
    path.write_text("bad:\n  agent: dqn\n  budgett: 10\n")
    with pytest.raises(RLKitError, match="unknown keys"):
        load_presets(path)


def test_pending_or_done(tmp_path):
    done = tmp_path / "done"
    done.mkdir()
    (done / "final.json").write_text('{"seed": 3}')
    assert _pending_or_done(done) == ({"seed": 3}, False)
    interrupted = tmp_path / "interrupted" / "checkpoints"
    interrupted.mkdir(parents=True)
    (interrupted / "step_0000000100").mkdir()
    assert _pending_or_done(interrupted.parent) == (None, True)          # resumed from its checkpoint
    started = tmp_path / "started"
    started.mkdir()
    (started / "config.json").write_text("{}")
    assert _pending_or_done(started) == (None, False) and not started.exists()  # nothing to resume: fresh
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(RLKitError, match="not an rlkit run"):
        _pending_or_done(stranger)


# ---------------------------------------------------------------------------------------------
# The command, at tiny budgets
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_repro(tmp_path_factory):
    """dqn-cartpole at 300 steps: 1 seed from Python, then extended to 2 from the CLI (seed 0 must be skipped)."""
    out = tmp_path_factory.mktemp("repro") / "dqn"
    first = reproduce("dqn-cartpole", seeds=1, steps=300, out=out)
    seed0 = (out / "seed_0" / "final.json").read_bytes()
    second = run_cli("reproduce", "dqn-cartpole", "--seeds", "2", "--steps", "300", "--out", str(out), "--json")
    assert second.returncode == 0, second.stderr
    return out, first, json.loads(second.stdout), second.stderr, seed0


def test_resumed_reproduction_skips_completed_seeds(tiny_repro):
    out, first, second, stderr, seed0 = tiny_repro
    assert first["ran_seeds"] == [0]
    assert (second["ran_seeds"], second["skipped_seeds"]) == ([1], [0])
    assert "skipping them: [0]" in stderr
    assert (out / "seed_0" / "final.json").read_bytes() == seed0       # not re-run
    assert [r["seed"] for r in second["per_seed"]] == [0, 1]
    with pytest.raises(RLKitError, match="total_steps=300"):        # another budget must not mix in
        reproduce("dqn-cartpole", seeds=2, steps=400, out=out)


def test_report_from_tiny_budget(tiny_repro):
    out, _, results, _, _ = tiny_repro
    assert results["full_budget"] is False and results["total_steps"] == 300 and results["budget"] == 50_000
    assert results["aggregate"]["runs"] == 2 and results["plot"] == "curves.png"
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "results.json").read_text())["per_seed"] == results["per_seed"]
    report = (out / "report.md").read_text()
    assert "Reduced budget: 300 of 50,000 steps, not a reproduction." in report
    for r in results["per_seed"]:                                         # the per-seed table
        assert f"| {r['seed']} | {reports.fmt(r['return'])} ± {reports.fmt(r['std'])} |" in report
    assert "| IQM |" in report and "stratified bootstrap" in report
    assert "RL-Zoo (rl-baselines3-zoo benchmark.md): dqn CartPole-v1" in report and "500.0 ± 0.0" in report
    assert "![learning curves](curves.png)" in report


def test_curves_outlive_metrics_csv(tiny_repro, tmp_path):
    """final.json keeps the evaluation curve, so a seed whose metrics.csv is gone (git keeps final.json, not the
    ignored run files) still has its curve in results.json, curves.png and `rlkit plot`."""
    out, _, results, _, _ = tiny_repro
    copy = tmp_path / "dqn"
    shutil.copytree(out, copy)
    for r in results["per_seed"]:
        final = json.loads((copy / r["run_dir"] / "final.json").read_text())
        assert r["curve"] and final["eval_curve"] == r["curve"] == eval_curve(out / r["run_dir"])
        (copy / r["run_dir"] / "metrics.csv").unlink()
    (copy / "curves.png").unlink()
    again = reproduce("dqn-cartpole", seeds=2, steps=300, out=copy)
    assert again["ran_seeds"] == [] and again["plot"] == "curves.png" and (copy / "curves.png").stat().st_size > 0
    assert [r["curve"] for r in again["per_seed"]] == [r["curve"] for r in results["per_seed"]]
    kept = reports.load_curve(copy / "seed_1")
    assert reports.expand_runs(copy / "seed_1") == ([copy / "seed_1"], None)  # `rlkit plot` finds the run too
    shutil.move(copy / "results.json", tmp_path / "results.json")  # a directory of runs without a report
    assert reports.expand_runs(copy)[0] == [copy / "seed_0", copy / "seed_1"]
    plotted = reports.plot_runs([str(copy / "seed_1")], tmp_path / "one.png")
    assert plotted["curves"][0]["runs"] and (tmp_path / "one.png").stat().st_size > 0
    shutil.move(tmp_path / "results.json", copy / "results.json")
    assert kept.metric == reports.EVAL_KEY and kept.values.tolist() == [v for _, v in results["per_seed"][1]["curve"]]
    with pytest.raises(RLKitError, match="not found"):  # the kept curve is the evaluation's, not training returns
        reports.load_curve(copy / "seed_1", "train")
    # A seed finished before final.json kept curves (an older rlkit): the plot shows the others and says so.
    final = json.loads((copy / "seed_0" / "final.json").read_text())
    del final["eval_curve"]
    (copy / "seed_0" / "final.json").write_text(json.dumps(final))
    (copy / "curves.png").unlink()
    partial = reproduce("dqn-cartpole", seeds=2, steps=300, out=copy)
    assert partial["plot"] == "curves.png" and (copy / "curves.png").stat().st_size > 0
    assert partial["per_seed"][0]["curve"] == [] and partial["per_seed"][1]["curve"] == results["per_seed"][1]["curve"]
    assert "No curve for seed 0 (" in (copy / "report.md").read_text()
    assert "the plot shows the other 1." in (copy / "report.md").read_text()


@pytest.mark.parametrize("kept", [[[0, "x"]], "curve", [[0, 1.0, 2.0]], {"0": 1.0}, [[True, 1.0]]])
def test_a_damaged_kept_curve_is_no_curve(tmp_path, kept):
    """final.json comes from strangers too: an eval_curve of the wrong shape is a one-line error, not a crash."""
    from rlkit.logger import read_metric_curve

    (tmp_path / "final.json").write_text(json.dumps({"eval_curve": kept}))
    with pytest.raises(RLKitError, match="metrics.csv not found"):
        reports.load_curve(tmp_path)
    (tmp_path / "metrics.csv").write_text("global_step,eval/mean_return\n0,1.5\n50,\n100,x\n200,2.5\n")
    assert read_metric_curve(tmp_path / "metrics.csv") == [[0, 1.5], [200, 2.5]]  # what Run.finish keeps


@pytest.mark.parametrize("text, problem", [
    ("global_step,eval/mean_return\n0,1.5\n100,x\n", "line 3 has no number for global_step or eval/mean_return"),
    ("global_step,eval/mean_return\nten,1.5\n", "line 2 has no number"),
    ("global_step,eval/mean_return\n0,1.5\ninf,2.5\n", "line 3 has no number"),
    ("global_step,eval/mean_return\n0,1\x00.5\n", "line 2 has no number"),
    (b"\xff\xfe\x00garbage", "UnicodeDecodeError"),
])
def test_plot_names_a_damaged_metrics_file(tmp_path, text, problem):
    """`rlkit plot` on a damaged metrics.csv: a one-line error naming the file (and the line), not a traceback;
    the end of a run skips such a row instead, so that it cannot fail a long run (the test above)."""
    from rlkit.logger import read_metric_curve

    path = tmp_path / "metrics.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(RLKitError, match=f"{path} is damaged.*{problem}") as caught:
        reports.load_curve(tmp_path)
    assert "\n" not in str(caught.value)
    proc = run_cli("plot", str(tmp_path), "--out", str(tmp_path / "c.png"))
    assert proc.returncode != 0 and "is damaged" in proc.stderr and "Traceback" not in proc.stderr
    assert isinstance(read_metric_curve(path), list)  # skipping, never raising


@pytest.mark.parametrize("run_dir", ["../outside", "/etc", "a/b", "..", "", None, 3])
def test_plot_reads_no_seed_outside_a_reproduction(tmp_path, run_dir):
    """A reproduction's results.json comes from strangers: its per_seed run_dir must name a directory inside it."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "metrics.csv").write_text("global_step,eval/mean_return\n0,1.0\n")
    repro = tmp_path / "repro"
    repro.mkdir()
    (repro / "results.json").write_text(json.dumps({"per_seed": [{"run_dir": run_dir}]}))
    with pytest.raises(RLKitError, match="is damaged: per_seed run_dir"):
        reports.expand_runs(repro)


def test_plot_refuses_a_symlinked_seed_and_an_empty_report(tmp_path):
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "metrics.csv").write_text("global_step,eval/mean_return\n0,1.0\n")
    repro = tmp_path / "repro"
    repro.mkdir()
    (repro / "seed_0").symlink_to(tmp_path / "outside")
    (repro / "results.json").write_text(json.dumps({"per_seed": [{"run_dir": "seed_0"}]}))
    with pytest.raises(RLKitError, match="seed_0"):
        reports.expand_runs(repro)
    for damaged in ({"per_seed": {}}, {"per_seed": []}, {}):
        (repro / "results.json").write_text(json.dumps(damaged))
        with pytest.raises(RLKitError, match="lists no per_seed runs"):
            reports.expand_runs(repro)
    (repro / "results.json").write_text("[1, 2]")
    with pytest.raises(RLKitError, match="expected a JSON dict"):
        reports.expand_runs(repro)


def test_report_tells_an_early_stop_from_the_last_whole_iteration():
    """A seed stopped by target_return reads as stopped early; one that ended at its last whole round (GAIL's
    999,424 of 1,000,000 steps) reads as short of the budget with no early stop; a full seed is not named."""
    rows = [{"seed": 0, "env_steps": 1_000_000}, {"seed": 1, "env_steps": 999_424, "stopped": None},
            {"seed": 2, "env_steps": 40_000, "stopped": "target_return"}]
    text = "\n".join(reports._early_stop_note({"total_steps": 1_000_000, "per_seed": rows}))
    assert "1 of 3 seeds stopped early, before 1,000,000 steps (seed 2: 40,000, target_return)." in text
    assert "1 of 3 seeds ended short of 1,000,000 steps with no early stop" in text and "seed 1: 999,424" in text
    assert "seed 0" not in text
    assert reports._early_stop_note({"total_steps": 1_000_000, "per_seed": rows[:1]}) == []


def test_plot_command(tiny_repro, tmp_path):
    out, *_ = tiny_repro
    proc = run_cli("plot", str(out), str(out / "seed_1"), "--out", str(tmp_path / "c.png"), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert [c["label"] for c in result["curves"]] == ["dqn-cartpole", "seed_1"]
    assert len(result["curves"][0]["runs"]) == 2 and (tmp_path / "c.png").stat().st_size > 0
    with pytest.raises(RLKitError, match="no runs in"):
        reports.expand_runs(tmp_path)
    (tmp_path / "odd" / "metrics.csv").mkdir(parents=True)  # a folder of that name is not a run
    with pytest.raises(RLKitError, match="no runs in"):
        reports.expand_runs(tmp_path)


def test_presets_are_found_from_any_directory(tmp_path):
    # the shipped presets live in the installed rlkit.agents package, not in an `agents` folder of the cwd
    proc = run_cli("reproduce", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "dqn-cartpole" in [row["preset"] for row in json.loads(proc.stdout)]


def test_the_split_modules_keep_their_concerns():
    from rlkit.apps import backends, plot_cli, reproduce_cli, reproduce_presets

    assert reproduce_presets.get_preset("dqn-cartpole").agent == "dqn"
    assert callable(backends.run_local) and callable(backends.run_ray)
    assert callable(reproduce_cli.add_parser) and callable(plot_cli.add_parser)
    from importlib.metadata import entry_points

    targets = {ep.name: ep.value for ep in entry_points(group="rlkit.commands")}
    assert targets["reproduce"] == "rlkit.apps.reproduce_cli:add_parser"
    assert targets["plot"] == "rlkit.apps.plot_cli:add_parser"


def test_unknown_preset_is_one_line_error():
    proc = run_cli("reproduce", "nope")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("rlkit: error: unknown reproduction preset 'nope'; available: ")


# ---------------------------------------------------------------------------------------------
# Ray backend = local backend (synchronous agents are deterministic)
# ---------------------------------------------------------------------------------------------
TINY_PRESETS = """
tiny-dqn:
  agent: dqn
  preset: cartpole
  seeds: 2
  budget: 1000
  eval_points: 4
  overrides: {learning_starts: 200, hidden: [32], buffer_size: 2000, target_update_every: 100,
              eval_episodes: 3, tensorboard: false}
  reference: {score: 500.0, plus_minus: 0.0, source: "test"}
"""


@pytest.mark.slow
def test_ray_backend_matches_local(tmp_path):
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'rlkit[ray]')")
    presets = tmp_path / "tiny.yaml"
    presets.write_text(TINY_PRESETS)
    results = {}
    for backend in ("local", "ray"):
        # --workers 2 with --backend ray starts a local Ray instance limited to 2 CPUs.
        proc = run_cli("reproduce", "tiny-dqn", "--presets", str(presets), "--backend", backend, "--workers", "2",
                       "--out", str(tmp_path / backend), "--json", timeout=400)
        assert proc.returncode == 0, proc.stderr
        results[backend] = json.loads(proc.stdout)
    assert results["ray"]["backend"] == "ray"
    assert [r["return"] for r in results["ray"]["per_seed"]] == [r["return"] for r in results["local"]["per_seed"]]
    for seed in (0, 1):
        finals = [json.loads((tmp_path / b / f"seed_{seed}" / "final.json").read_text()) for b in ("local", "ray")]
        assert finals[0]["eval"]["returns"] == finals[1]["eval"]["returns"]
        losses = [[row["losses/td_loss"] for row in csv.DictReader(open(tmp_path / b / f"seed_{seed}" / "metrics.csv"))
                   if row.get("losses/td_loss")] for b in ("local", "ray")]
        assert losses[0] and losses[0] == losses[1]                         # identical training, not just eval


# ---------------------------------------------------------------------------------------------
# Normalised returns (random = 0, expert = 1) and the learned reward's correlation
# ---------------------------------------------------------------------------------------------
def _final(seed: int, mean: float, pearson: float | None = None) -> dict:
    final = {"seed": seed, "env_id": "seals:seals/CartPole-v0", "eval_env_id": "CartPole-v1", "env_steps": 1000,
             "wall_s": 1.0, "eval": {"mean": mean, "std": 0.0, "episodes": 20}}
    if pearson is not None:
        final["reward_correlation"] = {"pearson": pearson, "spearman": pearson / 2}
    return final


def test_normalised_returns_and_reward_correlation(tmp_path):
    from rlkit.apps.reproduce import build_results, score_range
    from rlkit.apps.reproduce_presets import ReproducePreset, build_config

    preset = ReproducePreset(name="n", agent="gail", normalise={"random": 20, "expert": "demos"}, demos={},
                             reference={"source": "s"})
    (tmp_path / "demos.json").write_text(json.dumps({"expert_eval": {"mean": 500.0}}))
    normaliser = score_range(preset, tmp_path, build_config(preset, 1000), _final(0, 0.0))
    assert (normaliser["random"], normaliser["expert"], normaliser["env_id"]) == (20.0, 500.0, "CartPole-v1")
    finals = [_final(0, 500.0, 0.9), _final(1, 260.0, 0.7), _final(2, 20.0, 0.8)]
    results = build_results(preset, build_config(preset, 1000), finals, "local", [0, 1, 2], 1.0, normaliser)
    # (500 - 20) / 480 = 1, (260 - 20) / 480 = 0.5, (20 - 20) / 480 = 0
    assert [r["normalised"] for r in results["per_seed"]] == pytest.approx([1.0, 0.5, 0.0])
    assert results["normalised"]["aggregate"]["mean"] == pytest.approx(0.5)
    assert results["reward_correlation"]["pearson"]["mean"] == pytest.approx(0.8)
    assert [r["reward_spearman"] for r in results["per_seed"]] == pytest.approx([0.45, 0.35, 0.4])
    report = reports.reproduction_report({**results, "command": "rlkit reproduce n"})
    assert "| 1 | 260.0 | 0.50 | 0.70 | 0.35 |" in report
    assert "R_random = 20.00 (given in the preset), R_expert = 500.0" in report
    assert "Mean normalised return: 0.50 (95% CI [0.00, 1.00])" in report
    assert "Mean learned-vs-true reward Pearson r: 0.80" in report
    # measured: a uniform-random policy on CartPole-v1 lasts about 22 steps (100 seeded episodes)
    measured = ReproducePreset(name="m", agent="gail", normalise={"random": "measure", "expert": 500.0})
    random = score_range(measured, tmp_path, build_config(measured, 1000), _final(0, 0.0))["random"]
    assert 17 < random < 28, random


def test_normalise_spec_errors(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("x:\n  agent: gail\n  normalise: {random: measure, expert: demos}\n")
    with pytest.raises(RLKitError, match="records no demos"):
        load_presets(path)
    path.write_text("x:\n  agent: gail\n  normalise: {random: 1}\n")
    with pytest.raises(RLKitError, match="normalise needs random"):
        load_presets(path)
    path.write_text("x:\n  agent: gail\n  normalise: {random: lots, expert: 5}\n")
    with pytest.raises(RLKitError, match="`measure` or a number"):
        load_presets(path)


def test_imitation_presets_normalise_against_their_expert():
    presets = load_presets()
    for name in ("gail-cartpole", "airl-cartpole", "gail-pendulum"):
        assert presets[name].normalise == {"random": "measure", "expert": "demos"}, name
    assert presets["preference-pendulum"].normalise["expert"] == -110.8  # rlkit's td3-pendulum reproduction
    assert [a["score"] for a in presets["gail-cartpole"].also] == [0.94]  # imitation's published GAIL figure
    assert [a["score"] for a in presets["airl-cartpole"].also] == [0.79]


def test_returns_at_the_also_references_steps_and_their_report_rows(tmp_path):
    """Each seed's last evaluation at or before a reference's step, aggregated and put in the report beside it;
    a step that some seed never reached (or that lies past the budget) is left out rather than half-filled."""
    from rlkit.apps.reproduce import returns_at

    curves = [[[0, 1.0], [100, 2.0], [200, 4.0]], [[0, 0.0], [100, 3.0], [200, 5.0]]]
    at = returns_at(150, curves)
    assert at["steps"] == 150 and at["per_seed"] == [2.0, 3.0] and at["aggregate"]["mean"] == pytest.approx(2.5)
    assert returns_at(200, curves)["per_seed"] == [4.0, 5.0]
    assert returns_at(150, [curves[0], []]) is None and returns_at(-1, curves) is None
    assert returns_at(1000, curves) is None  # past the runs' last evaluation: the budget ended before that step
    run = tmp_path / "seed_0"
    run.mkdir()
    (run / "metrics.csv").write_text("global_step,eval/mean_return,x\n0,1.5,7\n50,,8\n100,2.5,9\n")
    assert eval_curve(run) == [[0, 1.5], [100, 2.5]] and eval_curve(tmp_path / "gone") == []
    results = {"at_steps": [dict(at, reference={"score": 9.2, "steps": 150, "source": "the paper at 150"})]}
    text = "\n".join(reports._at_steps_section(results))
    assert "| 150 | 9.20 | the paper at 150 | 2.50 [2.00, 3.00] | 2.00, 3.00 |" in text


def test_a_damaged_or_foreign_manifest_stops_a_reproduction(tmp_path):
    """DIR/reproduce.json is what a continued run checks its settings against: a damaged one, or one of another
    preset or budget, is a one-line error before any seed runs, and the file is left as it was."""
    out = tmp_path / "dqn"
    out.mkdir()
    manifest = out / "reproduce.json"
    for text, problem in [("{not json", "is damaged"), ("[]", "expected a JSON dict"),
                          (json.dumps({"preset": "dqn-cartpole", "agent": "dqn", "total_steps": 999}),
                           "holds a reproduction with total_steps=999, not 300")]:
        manifest.write_text(text)
        with pytest.raises(RLKitError, match=problem):
            reproduce("dqn-cartpole", seeds=1, steps=300, out=out)
        assert manifest.read_text() == text and not (out / "seed_0").exists()


def test_every_shipped_preset_builds_its_config():
    """A misspelt override or an out-of-range value in reproduce.yaml would surface only when its hours-long run
    starts; each shipped preset builds its agent's config here (the settings of the SAC fixed-alpha row too)."""
    from rlkit.apps.reproduce_presets import build_config

    built = {name: build_config(preset) for name, preset in load_presets().items()}
    fixed = built["sac-hopper-300k-fixed-alpha"]
    assert (fixed.lr, fixed.alpha, fixed.autotune, fixed.env_id) == (0.001, 0.2, False, "Hopper-v5")
    zoo = built["sac-hopper-300k"]
    assert (zoo.lr, zoo.autotune, zoo.learning_starts) == (0.0003, True, fixed.learning_starts)
