"""Honest aggregates over seeds, learning curves from run directories, tables and plots.

The statistics follow rliable (Agarwal et al. 2021, "Deep RL at the Edge of the Statistical
Precipice", https://arxiv.org/abs/2108.13264), re-implemented in a few lines of numpy so the core
needs no extra dependency (rliable pulls arch, statsmodels and seaborn):

* **IQM**, the interquartile mean: the mean of the middle 50% of all run scores, pooled over tasks.
  It trims ``int(0.25 * n)`` scores from each end, exactly as ``scipy.stats.trim_mean(x, 0.25)``
  (which rliable calls), so with 4 runs it is the mean of the middle 2 and with 5 runs of the middle 3.
* **Stratified bootstrap CIs**: each bootstrap replicate resamples, with replacement and independently
  for every task (the strata), as many runs as that task has; the statistic is recomputed on each
  replicate and the CI is the percentile interval of those values (rliable's default ``percentile``
  method, 50,000 replicates). With one task this is the ordinary bootstrap over seeds.

Learning curves come from a run directory's ``metrics.csv`` (column ``global_step`` and
``eval/mean_return``, else ``charts/episode_return``); :func:`plot_runs` (``rlkit plot``) overlays
runs and reproductions. Plots are drawn with matplotlib's Agg canvas directly, without pyplot, so
making one never changes a notebook's backend.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlkit.errors import RLKitError
from rlkit.logger import EVAL_KEY, read_metric_curve

TRAIN_KEY = "charts/episode_return"


# ---------------------------------------------------------------------------------------------
# Aggregate statistics (pure functions on arrays)
# ---------------------------------------------------------------------------------------------
def iqm(scores: Any, axis: int | None = None) -> Any:
    """Interquartile mean: mean of the scores left after trimming ``int(0.25 * n)`` from each end.

    Args:
        scores: any array of scores; pooled (flattened) when ``axis`` is None, as rliable's
            ``aggregate_iqm`` pools runs and tasks.
        axis: reduce along this axis only (used to evaluate many bootstrap replicates at once).
    """
    x = np.asarray(scores, dtype=np.float64)
    if axis is None:
        x, axis = x.reshape(-1), 0
    n = x.shape[axis]
    if n == 0:
        raise RLKitError("IQM of an empty set of scores; at least one run must have finished")
    cut = int(0.25 * n)
    trimmed = np.take(np.sort(x, axis=axis), np.arange(cut, n - cut), axis=axis)
    return trimmed.mean(axis=axis)


def _as_runs_by_tasks(scores: Any) -> np.ndarray:
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise RLKitError(f"scores must be a (runs,) or (runs, tasks) array with at least one run; got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise RLKitError("scores contain NaN or inf; check the runs' final.json files")
    return x


def _pooled(statistic: Callable[..., Any]) -> Callable[[np.ndarray], np.ndarray]:
    """Turn a reducer ``f(x, axis)`` into one over the pooled (runs, tasks) axes of each replicate."""
    return lambda reps: statistic(reps.reshape(reps.shape[0], -1), axis=1)


# "median" is the median of all runs pooled; rliable's aggregate_median is the median over tasks of the
# per-task mean, which for a single task is just the mean again, so the pooled one says more per seed.
AGGREGATES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mean": _pooled(np.mean),
    "iqm": _pooled(iqm),
    "median": _pooled(np.median),
}


def stratified_bootstrap_ci(scores: Any, statistic: Callable[[np.ndarray], np.ndarray], reps: int = 50_000,
                            confidence: float = 0.95, seed: int = 0, chunk: int = 10_000
                            ) -> tuple[float, float, float]:
    """Point estimate and percentile stratified-bootstrap confidence interval.

    Args:
        scores: (runs,) or (runs, tasks) array of final scores (one task = ordinary bootstrap).
        statistic: maps a batch of replicates shaped (reps, runs, tasks) to (reps,) values;
            see :data:`AGGREGATES`.
        reps: bootstrap replicates (rliable's default is 50,000).
        confidence: size of the interval in (0, 1).
        seed: seed of the resampling, so a report is reproducible.
        chunk: replicates drawn at once (bounds memory; the draws do not depend on it).

    Returns:
        ``(point, low, high)``, the point estimate on the original scores and the interval.
    """
    if not 0 < confidence < 1:
        raise RLKitError(f"confidence must be in (0, 1); got {confidence}")
    if reps < 1:
        raise RLKitError(f"reps must be at least 1; got {reps}")
    x = _as_runs_by_tasks(scores)
    runs, tasks = x.shape
    rng = np.random.default_rng(seed)
    values = []
    for start in range(0, reps, chunk):
        n = min(chunk, reps - start)
        # Run indices drawn independently per task: a replicate keeps every task's run count (the strata).
        idx = rng.integers(0, runs, size=(n, runs, tasks))
        values.append(statistic(np.take_along_axis(np.broadcast_to(x, (n, runs, tasks)), idx, axis=1)))
    stats = np.concatenate(values)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(stats, [tail, 100 - tail])
    point = float(statistic(x[None])[0])
    return point, float(low), float(high)


def summarize(scores: Any, reps: int = 50_000, confidence: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Mean, IQM and median with stratified-bootstrap CIs, plus std/min/max over runs."""
    x = _as_runs_by_tasks(scores)
    out: dict[str, Any] = {"runs": int(x.shape[0]), "tasks": int(x.shape[1])}
    for name, statistic in AGGREGATES.items():
        point, low, high = stratified_bootstrap_ci(x, statistic, reps=reps, confidence=confidence, seed=seed)
        out[name] = point
        out[f"{name}_ci"] = [low, high]
    out.update(std=float(x.std(ddof=1)) if x.size > 1 else 0.0, min=float(x.min()), max=float(x.max()),
               confidence=confidence, bootstrap_reps=reps, bootstrap_seed=seed)
    return out


# ---------------------------------------------------------------------------------------------
# References (published results)
# ---------------------------------------------------------------------------------------------
def reference_range(ref: dict[str, Any] | None) -> tuple[float, float] | None:
    """The interval a reference spans: ``range: [lo, hi]``, else ``score ± plus_minus``, else the point."""
    if not ref or ref.get("score") is None and ref.get("range") is None:
        return None
    if ref.get("range") is not None:
        lo, hi = ref["range"]
        return float(lo), float(hi)
    score, pm = float(ref["score"]), float(ref.get("plus_minus") or 0.0)
    return score - pm, score + pm


def format_reference(ref: dict[str, Any]) -> str:
    """``500.0 ± 0.0`` / ``[475, 500]`` / ``none published`` for tables."""
    if ref.get("score") is None and ref.get("range") is None:
        return "none published"
    text = fmt(ref["score"]) if ref.get("score") is not None else ""
    if ref.get("plus_minus") is not None:
        text += f" ± {fmt(ref['plus_minus'], like=ref.get('score'))}"
    if ref.get("range") is not None:
        lo, hi = ref["range"]
        text += f"{' ' if text else ''}[{fmt(lo)}, {fmt(hi)}]"
    if ref.get("normalised"):
        text += " (normalised)"
    return text


def compare_to_reference(summary: dict[str, Any], ref: dict[str, Any] | None) -> dict[str, Any] | None:
    """Whether the mean falls in the reference's range and whether its CI overlaps that range."""
    span = reference_range(ref)
    if span is None:
        return None
    lo, hi = span
    m, (c_lo, c_hi) = summary["mean"], summary["mean_ci"]
    in_range = lo <= m <= hi
    overlaps = c_lo <= hi and c_hi >= lo
    if in_range:
        verdict = "the mean is within the range"
    elif overlaps:
        verdict = f"the mean is {'below' if m < lo else 'above'} the range, but its 95% CI overlaps it"
    else:
        verdict = f"the mean is {'below' if m < lo else 'above'} the range and its 95% CI does not overlap it"
    return {"range": [lo, hi], "mean_in_range": in_range, "ci_overlaps_range": overlaps, "verdict": verdict}


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------
def fmt(x: Any, like: Any = None) -> str:
    """Numbers for tables: one decimal for large values, two for small ones (or as many as ``like`` gets)."""
    if x is None:
        return "—"
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return str(int(x))
    x = float(x)
    if not math.isfinite(x):
        return str(x)
    return f"{x:.1f}" if abs(float(x if like is None else like)) >= 100 else f"{x:.2f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table; cells are formatted with :func:`fmt` unless already strings."""
    def cell(v: Any) -> str:
        return (v if isinstance(v, str) else fmt(v)).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def per_seed_table(rows: Sequence[dict[str, Any]]) -> str:
    """Per-seed final returns from ``final.json``-like dicts (``seed``, ``eval``, ``env_steps``, ``wall_s``); a
    ``process`` column when any row says how its process ran (``vectorised``, ``seeds_in_process``)."""
    with_process = any(r.get("seeds_in_process") is not None for r in rows)
    body = [[str(r["seed"]), f"{fmt(r['eval']['mean'])} ± {fmt(r['eval']['std'])}", str(r["eval"]["episodes"]),
             str(r["env_steps"]), f"{float(r['wall_s']):.0f}"] + ([process_cell(r)] if with_process else [])
            for r in rows]
    return markdown_table(["seed", "final return (mean ± std over episodes)", "eval episodes", "steps", "wall s"]
                          + (["process"] if with_process else []), body)


def process_cell(row: dict[str, Any]) -> str:
    """How a seed's process ran: ``vectorised, 3 seeds`` (in lockstep with the others), ``alone`` (one seed per
    job; a worker process may run several such jobs one after another), or ``—`` (a seed that finished before
    reproductions recorded it)."""
    if row.get("seeds_in_process") is None:
        return "—"
    return f"vectorised, {row['seeds_in_process']} seeds" if row.get("vectorised") else "alone"


def summary_table(summary: dict[str, Any]) -> str:
    pct = f"{summary['confidence']:.0%}"
    rows = [[name, summary[name], f"[{fmt(summary[f'{name}_ci'][0])}, {fmt(summary[f'{name}_ci'][1])}]"]
            for name in ("mean", "iqm", "median")]
    rows[1][0], rows[2][0] = "IQM", "median of runs"
    rows.append(["std over seeds", summary["std"], "—"])
    rows.append(["min / max", f"{fmt(summary['min'])} / {fmt(summary['max'])}", "—"])
    return markdown_table(["statistic", "value", f"{pct} CI (stratified bootstrap)"], rows)


# ---------------------------------------------------------------------------------------------
# Learning curves
# ---------------------------------------------------------------------------------------------
@dataclass
class Curve:
    """One run's learning curve: ``values[i]`` is the metric logged at env step ``steps[i]``."""

    steps: np.ndarray
    values: np.ndarray
    metric: str
    source: str

    @classmethod
    def from_points(cls, points: Sequence[Sequence[float]], metric: str, source: str) -> Curve:
        """From ``[[step, value], ...]`` (metrics.csv's columns, final.json's ``eval_curve``, results.json's
        ``curve``), at least one point."""
        steps, values = np.array(points, dtype=np.float64).reshape(-1, 2).T
        return cls(steps=steps, values=values, metric=metric, source=source)


def load_curve(run_dir: str | Path, metric: str = "auto") -> Curve:
    """Read a run's learning curve from its ``metrics.csv`` (without one, the evaluation curve final.json keeps).

    Args:
        run_dir: an rlkit run directory.
        metric: ``eval`` (``eval/mean_return``), ``train`` (``charts/episode_return``), ``auto``
            (eval when the run has eval points, else train) or any other column name.
    """
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        if metric in ("eval", "auto", EVAL_KEY) and (kept := _kept_eval_curve(Path(run_dir))):
            return Curve.from_points(kept, EVAL_KEY, str(run_dir))
        raise RLKitError(f"{path} not found and no final.json beside it keeps an eval_curve; pass rlkit run "
                         "directories (they hold metrics.csv)")
    wanted = {"eval": [EVAL_KEY], "train": [TRAIN_KEY], "auto": [EVAL_KEY, TRAIN_KEY]}.get(metric, [metric])
    for key in wanted:
        if points := read_metric_curve(path, key, skip_damaged=False):
            return Curve.from_points(points, key, str(run_dir))
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        columns = next(csv.reader(f), [])
    raise RLKitError(f"{path} has no values for {' or '.join(wanted)} (columns: {', '.join(sorted(columns))}); "
                     "train with eval_every > 0 or choose --metric train")


def _kept_eval_curve(run_dir: Path) -> list[list[float]]:
    """The evaluation curve final.json keeps (``eval_curve``) for a run whose metrics.csv is gone; [] if none."""
    from rlkit.checkpoint import read_json

    if not (run_dir / "final.json").is_file():
        return []
    try:
        curve = read_json(run_dir / "final.json").get("eval_curve") or []
    except RLKitError:
        return []
    numbers = all(isinstance(p, list) and len(p) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                               for v in p) for p in curve)
    return curve if isinstance(curve, list) and numbers else []  # a damaged or foreign file keeps no curve


def align_curves(curves: Sequence[Curve]) -> tuple[np.ndarray, np.ndarray]:
    """Put several runs on one step grid: (grid, values shaped (runs, points)).

    The grid is the union of the runs' logged steps where every run has started logging. A run's
    value at a grid step is its latest logged value at or before that step (the metric a run
    reports stays in force until the next evaluation, which is also how metrics.csv carries it).
    """
    if not curves:
        raise RLKitError("no learning curves to align")
    start = max(c.steps[0] for c in curves)
    end = min(c.steps[-1] for c in curves)
    grid = np.unique(np.concatenate([c.steps for c in curves]))
    grid = grid[(grid >= start) & (grid <= end)]
    if grid.size == 0:  # runs that never overlap: fall back to the last run's own steps
        grid = np.unique(np.concatenate([c.steps for c in curves]))
    table = np.empty((len(curves), grid.size))
    for i, c in enumerate(curves):
        order = np.argsort(c.steps, kind="stable")
        steps, values = c.steps[order], c.values[order]
        pos = np.clip(np.searchsorted(steps, grid, side="right") - 1, 0, len(steps) - 1)
        table[i] = values[pos]
    return grid, table


def curve_band(curves: Sequence[Curve], reps: int = 2_000, confidence: float = 0.95, seed: int = 0
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean curve over runs with a bootstrap CI band: (grid, mean, low, high).

    Whole curves are resampled (a replicate draws runs with replacement), so the band at each step
    is the percentile CI of the mean over runs at that step. Fewer replicates than for the final
    table keep plotting fast; the band is a picture, the table carries the numbers.
    """
    grid, table = align_curves(curves)
    mean = table.mean(axis=0)
    if len(curves) < 2:
        return grid, mean, mean.copy(), mean.copy()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(curves), size=(reps, len(curves)))
    boot = table[idx].mean(axis=1)  # (reps, points)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(boot, [tail, 100 - tail], axis=0)
    return grid, mean, low, high


def plot_curves(groups: Sequence[tuple[str, Sequence[Curve]]], path: str | Path,
                reference: dict[str, Any] | None = None, title: str = "", ylabel: str = "return",
                xlabel: str = "steps (global_step: env steps; gradient steps for offline learners)") -> Path:
    """Write a PNG: for each (label, runs) the mean curve with a 95% CI band, and the reference line.

    Args:
        groups: (label, curves) pairs; a group of one run is drawn as a plain line.
        path: the PNG file to write.
        reference: ``{"score", "plus_minus" | "range", "source"}``; drawn as a horizontal line with
            its range shaded.
        title, ylabel, xlabel: axis texts.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.8 + 0.2 * len(groups)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, (label, curves) in enumerate(groups):
        color = f"C{i % 10}"
        grid, mean, low, high = curve_band(curves)
        n = len(curves)
        ax.plot(grid, mean, color=color, lw=1.8, label=f"{label} (mean of {n} runs)" if n > 1 else label)
        if n > 1:
            ax.fill_between(grid, low, high, color=color, alpha=0.2, lw=0)
    span = reference_range(reference)
    if span is not None:
        score = float(reference["score"]) if reference.get("score") is not None else sum(span) / 2
        # The legend names the source's short form (before any ':'); the report carries the full citation.
        source = str(reference.get("source") or "unknown source").split(":")[0][:60]
        ax.axhline(score, color="black", ls="--", lw=1.2, label=f"reference {format_reference(reference)} ({source})")
        if span[1] > span[0]:
            ax.axhspan(span[0], span[1], color="gray", alpha=0.12, lw=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    # Below the axes, so the legend never hides a curve or the reference line.
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=1, frameon=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


# ---------------------------------------------------------------------------------------------
# Plotting runs and reproductions (rlkit plot)
# ---------------------------------------------------------------------------------------------
def _is_run(path: Path) -> bool:
    """A run directory: its metrics.csv, or (once that is gone) its final.json, which keeps the evaluation curve."""
    return (path / "metrics.csv").is_file() or (path / "final.json").is_file()


def expand_runs(path: str | Path) -> tuple[list[Path], dict[str, Any] | None]:
    """A run directory -> [it]; a reproduction DIR -> its seed runs (and its results.json)."""
    from rlkit.checkpoint import read_json

    path = Path(path)
    if _is_run(path):
        return [path], None
    if (path / "results.json").exists():
        results = read_json(path / "results.json")
        rows = results.get("per_seed")
        if not isinstance(rows, list) or not rows:
            raise RLKitError(f"{path / 'results.json'} is damaged: it lists no per_seed runs")
        return [_seed_dir(path, row) for row in rows], results
    runs = sorted((p for p in path.glob("*") if _is_run(p)), key=lambda p: p.name)
    if not runs:
        raise RLKitError(f"no runs in {path}: pass run directories (with metrics.csv or final.json) or reproduction "
                         "directories")
    return runs, None


def _seed_dir(reproduction: Path, row: Any) -> Path:
    """A seed's run directory named by a reproduction's results.json: a plain name of a real directory inside the
    reproduction, since the file may come from a stranger (``../..``, an absolute path or a symlink would read
    elsewhere)."""
    from rlkit.safe_files import check_dir_inside

    name = row.get("run_dir") if isinstance(row, dict) else None
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise RLKitError(f"{reproduction / 'results.json'} is damaged: per_seed run_dir {name!r} is not a directory "
                         "name inside the reproduction")
    return check_dir_inside(reproduction / name, reproduction)


def plot_runs(paths: list[str], out: str | Path = "curves.png", labels: list[str] | None = None,
              metric: str = "auto", title: str = "", reference: float | None = None) -> dict[str, Any]:
    """Overlay learning curves; each path is one line, or a band when it holds several runs."""
    if labels and len(labels) != len(paths):
        raise RLKitError(f"got {len(labels)} --label for {len(paths)} paths; give one label per path or none")
    groups, info, ref = [], [], None
    for i, p in enumerate(paths):
        runs, results = expand_runs(p)
        curves = [load_curve(r, metric) for r in runs]
        label = labels[i] if labels else (results["preset"] if results else Path(p).resolve().name)
        groups.append((label, curves))
        info.append({"label": label, "runs": [str(r) for r in runs], "metric": curves[0].metric,
                     "final_mean": float(sum(c.values[-1] for c in curves) / len(curves))})
        if results and len(paths) == 1:
            ref = results.get("reference")
    if reference is not None:
        ref = {"score": reference, "source": "--reference"}
    ylabel = "eval return" if all(c.metric == EVAL_KEY for _, cs in groups for c in cs) else "return"
    path = plot_curves(groups, out, reference=ref, title=title, ylabel=ylabel)
    return {"plot": str(path), "curves": info}


# ---------------------------------------------------------------------------------------------
# The report of a reproduction (report.md)
# ---------------------------------------------------------------------------------------------

def _early_stop_note(results: dict[str, Any]) -> list[str]:
    """Runs that ended before their step budget: stopped early (``target_return``, a callback: final.json's
    ``stopped``), or short of it by less than one training iteration (GAIL's and AIRL's whole rounds)."""
    total = results["total_steps"]
    short = [r for r in results["per_seed"] if total and r["env_steps"] < total]
    stopped = [r for r in short if r.get("stopped")]
    rounded = [r for r in short if not r.get("stopped")]
    lines = []
    if stopped:
        steps = ", ".join(f"seed {r['seed']}: {r['env_steps']:,}, {r['stopped']}" for r in stopped)
        lines.append(f"{len(stopped)} of {len(results['per_seed'])} seeds stopped early, before {total:,} steps "
                     f"({steps}).")
    if rounded:
        steps = ", ".join(f"seed {r['seed']}: {r['env_steps']:,}" for r in rounded)
        lines.append(f"{len(rounded)} of {len(results['per_seed'])} seeds ended short of {total:,} steps with no "
                     f"early stop: the agent trains in whole iterations and the next would pass the budget ({steps}).")
    return [*lines, ""] if lines else []


def _normalised_section(results: dict[str, Any]) -> list[str]:
    """Normalised returns (random = 0, expert = 1) and the learned reward's correlation, where results hold them."""
    norm, corr = results.get("normalised"), results.get("reward_correlation")
    if norm is None and corr is None:
        return []
    lines = ["## Normalised return" if norm else "## Learned reward", ""]
    if norm:
        lines += [f"(R − R_random) / (R_expert − R_random) on `{norm['env_id']}`: R_random = {fmt(norm['random'])} "
                  f"({norm['random_source']}), R_expert = {fmt(norm['expert'])} ({norm['expert_source']}).", ""]
    headers = ["seed", "final return"] + (["normalised"] if norm else []) + \
        (["reward Pearson r", "reward Spearman ρ"] if corr else [])
    body = [[str(r["seed"]), r["return"]] + ([f"{r['normalised']:.2f}"] if norm else []) +
            ([r.get("reward_pearson"), r.get("reward_spearman")] if corr else []) for r in results["per_seed"]]
    lines += [markdown_table(headers, body), ""]
    for label, summary in (("normalised return", norm and norm["aggregate"]),
                           ("learned-vs-true reward Pearson r", corr and corr["pearson"])):
        if summary:
            lines += [f"Mean {label}: {summary['mean']:.2f} (95% CI [{summary['mean_ci'][0]:.2f}, "
                      f"{summary['mean_ci'][1]:.2f}]); IQM {summary['iqm']:.2f} [{summary['iqm_ci'][0]:.2f}, "
                      f"{summary['iqm_ci'][1]:.2f}]; min {summary['min']:.2f}.", ""]
    if corr:
        lines += ["The correlation is measured on fresh transitions of the trained agent and of a uniform-random "
                  "policy (final.json `reward_correlation`).", ""]
    return lines


def _vectorised_note(results: dict[str, Any]) -> list[str]:
    """What the process column means, when some seeds shared a process."""
    if not any(r.get("vectorised") for r in results["per_seed"]):
        return []
    return ["Vectorised seeds trained together in one process, in lockstep (`registry.train_seeds`), each in its "
            "own run directory with its own envs, buffer and RNG streams; each one's wall time counts the time the "
            "process spent on all of its seeds, not on that seed alone.", ""]


def _at_steps_section(results: dict[str, Any]) -> list[str]:
    """rlkit's returns at the steps of the ``also`` references (each seed's last evaluation at or before)."""
    at_steps = results.get("at_steps") or []
    if not at_steps:
        return []
    rows = [[fmt(a["steps"]), format_reference(a["reference"]), a["reference"].get("source", "—"),
             f"{fmt(a['aggregate']['mean'])} [{fmt(a['aggregate']['mean_ci'][0])}, "
             f"{fmt(a['aggregate']['mean_ci'][1])}]", ", ".join(fmt(v) for v in a["per_seed"])] for a in at_steps]
    return ["rlkit along the way, beside the references published for those steps: each seed's last evaluation "
            "at or before the step; mean over seeds with its 95% bootstrap CI.", "",
            markdown_table(["steps", "reference", "source", "rlkit mean [95% CI]", "per seed"], rows), ""]


def _ci_cell(summary: dict[str, Any], name: str) -> str:
    return f"{fmt(summary[name])} [{fmt(summary[f'{name}_ci'][0])}, {fmt(summary[f'{name}_ci'][1])}]"


def _per_task_section(results: dict[str, Any]) -> list[str]:
    """Each task's final return over seeds, and the aggregate over tasks x seeds, for multi-task suites."""
    per_task, overall = results.get("per_task"), results.get("tasks_aggregate")
    if not per_task:
        return []
    rows = [[f"task {k}", _ci_cell(t["aggregate"], "mean"), _ci_cell(t["aggregate"], "iqm"),
             ", ".join(fmt(v) for v in t["per_seed"])] for k, t in per_task.items()]
    rows.append([f"all tasks x seeds ({overall['runs']} x {overall['tasks']})", _ci_cell(overall, "mean"),
                 _ci_cell(overall, "iqm"), "—"])
    return ["## Per task", "",
            "Each seed's final evaluation split by the task each episode played (final.json `eval.per_task`); the last "
            "row pools tasks and seeds, its CIs resampling seeds within each task (stratified bootstrap, the tasks "
            "as strata), its IQM the mean of the middle 50% of all task-seed returns.", "",
            markdown_table(["task", "mean [95% CI]", "IQM [95% CI]", "per seed"], rows), ""]


def _threshold_section(results: dict[str, Any]) -> list[str]:
    """Env steps to the first evaluation at or above the preset's threshold."""
    th = results.get("threshold")
    if not th:
        return []
    per_seed = ", ".join("never" if s is None else f"{s:,}" for s in th["per_seed"])
    lines = ["## Steps to threshold", "",
             f"Env steps to each seed's first evaluation of at least {fmt(th['value'])}: {per_seed} "
             f"({th['reached']} of {len(th['per_seed'])} seeds reached it)."]
    if th["aggregate"]:
        agg = th["aggregate"]
        lines[-1] += (f" Mean {_ci_cell(agg, 'mean')}, IQM {_ci_cell(agg, 'iqm')}"
                      + (", a seed that never reached it counted at the full budget (a lower bound)."
                         if th["reached"] < len(th["per_seed"]) else "."))
    return lines + [""]


def reproduction_report(results: dict[str, Any], plot_note: str = "") -> str:
    """report.md of a reproduction from its results.json dict (``plot_note``: the seeds missing from the plot,
    or why there is none)."""
    s, ref = results["aggregate"], results["reference"]
    n = len(results["seeds"])
    lines = [f"# Reproduction: {results['preset']}", ""]
    if results["full_budget"] is False:
        lines += [f"> **{results['label']}** The comparison with the reference below is for orientation only.", ""]
    else:
        lines += [results["label"], ""]
    lines += [f"Agent `{results['agent']}` (preset `{results['agent_preset']}`) on `{results['env_id']}`, "
              f"{n} seeds ({', '.join(map(str, results['seeds']))}), backend `{results['backend']}`.",
              f"Command: `{results['command']}`", "",
              "## Final return per seed", "",
              "Each seed's deterministic evaluation after training (final.json).", "",
              per_seed_table([{"seed": r["seed"], "eval": {"mean": r["return"], "std": r["std"],
                                                          "episodes": r["episodes"]},
                               "env_steps": r["env_steps"], "wall_s": r["wall_s"], "vectorised": r.get("vectorised"),
                               "seeds_in_process": r.get("seeds_in_process")}
                              for r in results["per_seed"]]), "",
              *_vectorised_note(results),
              "## Aggregate over seeds", "",
              summary_table(s), "",
              *_early_stop_note(results),
              f"IQM: mean of the middle 50% of seeds (trims int(0.25·n) = {int(0.25 * n)} from each end). "
              f"CIs: percentile stratified bootstrap over seeds, {s['bootstrap_reps']:,} replicates, seed "
              f"{s['bootstrap_seed']} (Agarwal et al. 2021, rliable). With {n} seeds they are wide; "
              "read them as such.", "",
              *_per_task_section(results),
              *_threshold_section(results),
              *_normalised_section(results),
              "## Reference", ""]
    rows = [[ref.get("source", "—"), format_reference(ref), fmt(results["budget"])]]
    rows += [[r.get("source", "—"), format_reference(r), fmt(r.get("steps"))]
             for r in results["also"]]
    lines += [markdown_table(["source", "score", "budget (steps)"], rows), ""]
    lines += _at_steps_section(results)
    cmp_ = results["comparison"]
    if cmp_ is not None:
        lo, hi = cmp_["range"]
        verdict = f"rlkit's mean {fmt(s['mean'])} (95% CI [{fmt(s['mean_ci'][0])}, " \
                  f"{fmt(s['mean_ci'][1])}]) against the reference range [{fmt(lo)}, " \
                  f"{fmt(hi)}]: {cmp_['verdict']}."
        if results["full_budget"] is False:
            verdict += " Reduced budget: this says nothing about the reproduction."
        lines += [verdict, ""]
    if results["note"]:
        lines += [f"Note: {results['note']}", ""]
    lines += ["## Learning curves", ""]
    if results["plot"]:
        lines += [f"![learning curves]({results['plot']})", "",
                  "Mean over seeds with a 95% bootstrap CI band; the dashed line is the reference.", ""]
        lines += [plot_note, ""] if plot_note else []
    else:
        lines += [plot_note or "No learning-curve plot.", ""]
    return "\n".join(lines)
