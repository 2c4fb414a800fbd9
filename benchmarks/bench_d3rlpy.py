"""rlkit's offline learners (TD3+BC, IQL, CQL) beside d3rlpy's, on the same datasets, budgets, seeds and evaluation.

Datasets: Pendulum-v1 ``medium`` and ``medium-replay`` of ``rlkit offline-data`` (docs/offline.md), read from
``--data`` (default ``data/pendulum``; build it with ``rlkit offline-data --env Pendulum-v1 --out data/pendulum
--eval-every 200``). Algorithms at rlkit's ``pendulum`` presets (the papers' settings; CQL with 64-64 networks),
d3rlpy's configs set to the same values where it exposes them (``NOTES`` says where the two differ).

Arms: ``rlkit`` runs in rlkit's own interpreter; ``d3rlpy`` (2.8.1) runs in a side virtualenv (default
``benchmarks/.d3rlpy-venv``, made on first use and reused) with torch at rlkit's version (the CPU build from
local disk: ``pip install torch==2.13.0``), so d3rlpy and its pins (gymnasium 1.0.0, gym, h5py) never enter
rlkit's environment. Every training is its own process with one torch thread (OMP/MKL/OpenBLAS at 1), one after
another. The d3rlpy worker gets the dataset as plain arrays (an ``.npz`` read without pickle), with the
observation mean and std and IQL's reward scale computed by rlkit's own formulas, so both arms see the same
normalisation.

Per run it records ``wall_s`` and ``cpu_s``: wall and process seconds of the training alone (model construction
and every gradient step; rlkit's final evaluation is timed apart and subtracted, as d3rlpy's ``fit`` runs none);
``process_cpu_s``: user+sys of the whole worker (imports included, ``os.wait4``); and ``normalized_return``: the
greedy policy's mean return over ``EVAL_EPISODES`` episodes of Pendulum-v1 (episode i reset with seed 10000+i),
scored by the same code for both arms, ``rlkit.evaluation.evaluate`` in rlkit's interpreter (d3rlpy's policy
is exported by its ``save_policy`` as TorchScript, observation and action scalers inside), and D4RL-normalised
with the dataset's reference scores. The summary gives per library x algorithm x dataset the mean and 95% CI
(Student t over seeds) of the normalised return and the mean CPU seconds, per algorithm x dataset the ratio
rlkit/d3rlpy of the mean CPU seconds, and the issue's two targets: rlkit's mean inside or above d3rlpy's CI, and
a CPU ratio of at most 0.7. The JSON (default ``benchmarks/results/d3rlpy.json``) is rewritten after every run.

    python benchmarks/bench_d3rlpy.py --quick                 # plumbing: 1 seed, 300 steps, one dataset
    nohup nice -n 10 python benchmarks/bench_d3rlpy.py --seeds 0,1,2 &
    nice -n 5 python benchmarks/bench_d3rlpy.py --algos cql --seeds 0,1,2 --merge   # rerun CQL, keep the rest

With ``--merge`` the runs of ``--out`` outside this selection (other algorithms, datasets or seeds) are kept,
each stamped with the commit that measured it (``git``), and the summary covers old and new runs; the runs of
the selection are measured again (both libraries), so a ratio always compares runs made under the same load.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling side_venv module
from side_venv import ensure_side_venv as make_side_venv  # noqa: E402
from side_venv import installed_versions  # noqa: E402
from side_venv import side_requirements as pinned_requirements  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = ("rlkit", "d3rlpy")
ALGOS = ("td3_bc", "iql", "cql")
DATASETS = ("medium", "medium-replay")
STEPS = {"td3_bc": 5_000, "iql": 5_000, "cql": 3_000}  # gradient steps, the same for both libraries (CPU budget)
EVAL_EPISODES, EVAL_SEED = 20, 10_000
SIDE_PINS = {"d3rlpy": "2.8.1"}
SAME_AS_RLKIT = ("torch",)
REPORTED = ("rlkit", "d3rlpy", "torch", "gymnasium", "numpy", "gym", "h5py")
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "VECLIB_MAXIMUM_THREADS": "1", "NUMEXPR_NUM_THREADS": "1"}
# Two-sided 95% Student t quantiles by degrees of freedom (scipy.stats.t.ppf(0.975, df)); a normal 1.96 beyond.
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 20: 2.086, 30: 2.042}
NOTES = [
    "Same for both: gamma 0.99, batch 256, Adam, tau 0.005, two critics, 256-256 networks (CQL 64-64, rlkit's "
    "pendulum preset), gradient steps per algorithm as in 'steps', observations normalised by the dataset's mean "
    "and std + 1e-3 (computed by rlkit, passed to d3rlpy's StandardObservationScaler), greedy evaluation by rlkit.",
    "TD3+BC: alpha 2.5, lr 3e-4 both, target noise 0.2 clipped at 0.5 (fractions of the half-range), policy delay "
    "2. Both put the BC term on actions rescaled to [-1, 1] (d3rlpy: MinMaxActionScaler, without which its tanh "
    "actor cannot reach Pendulum's +-2; rlkit: its BC term divided by the half-range, always).",
    "IQL: expectile 0.7, beta 3.0, weights clipped at 100, lr 3e-4 (V, Q, actor), cosine schedule on the actor's "
    "lr over the budget (d3rlpy: AdamFactory with CosineAnnealingLRFactory(T_max=steps)), rewards scaled by "
    "L / (max - min episode return), L the longest episode (rlkit's formula; d3rlpy: MultiplyRewardScaler of that "
    "factor). Differences: d3rlpy clamps the actor's log std to [-5, 2], rlkit to [-20, 2] (the authors').",
    "CQL: conservative weight 5.0 fixed (d3rlpy: alpha_learning_rate 0, initial_alpha 1; its alpha_threshold "
    "shifts the loss by a constant only), 10 sampled actions per source, importance-sampled, no entropy in the "
    "backup (soft_q_backup false), actor and temperature lr 1e-4, critic lr 3e-4, initial temperature 1, target "
    "entropy -|A|. d3rlpy has no CQL temperature T; rlkit's is 1 (the same logsumexp). The backup's action at s' "
    "is the policy's deterministic action in d3rlpy (squashed mean, hard-coded), a draw from pi(.|s') in the "
    "authors' code, CORL and rlkit's default: rlkit runs here with backup_action 'mean', d3rlpy's algorithm.",
    "Data: d3rlpy drops the last transition of every truncated episode (its transition picker has no next "
    "observation for it): on Pendulum's 200-step episodes it trains on 199 of every 200 transitions.",
    "Timing: rlkit's training includes writing its final checkpoint (d3rlpy's fit writes nothing with "
    "NoopAdapterFactory); rlkit's final evaluation is subtracted. d3rlpy's first fit compiles nothing "
    "(compile_graph false, its default).",
]


# ---------------------------------------------------------------------------------------------- summary maths
def mean_ci(values: list[float]) -> dict:
    """Mean and 95% Student t confidence interval over seeds (no interval for one value)."""
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return {"n": n, "mean": mean, "ci95": None, "half_width": None}
    df = n - 1
    t = T95.get(df) or next((T95[k] for k in sorted(T95) if k >= df), 1.96)
    half = t * statistics.stdev(values) / math.sqrt(n)
    return {"n": n, "mean": mean, "ci95": [mean - half, mean + half], "half_width": half}


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarize(runs: list[dict]) -> dict:
    """Per ``dataset/algo``: each library's normalised return (mean, CI), mean wall and CPU seconds; the CPU
    ratio rlkit/d3rlpy; and the targets: rlkit's mean inside or above d3rlpy's CI, CPU ratio <= 0.7."""
    summary: dict = {}
    keys = dict.fromkeys((r["dataset"], r["algo"]) for r in runs)
    for dataset, algo in keys:
        per: dict = {}
        for lib in LIBRARIES:
            rs = sorted((r for r in runs if (r["dataset"], r["algo"], r["library"]) == (dataset, algo, lib)
                         and "error" not in r), key=lambda r: r["seed"])
            if rs:
                per[lib] = {"seeds": [r["seed"] for r in rs],
                            "normalized_return": mean_ci([r["normalized_return"] for r in rs]),
                            "mean_wall_s": statistics.fmean(r["wall_s"] for r in rs),
                            "mean_cpu_s": statistics.fmean(r["cpu_s"] for r in rs)}
        entry: dict = {"dataset": dataset, "algo": algo, **per}
        if "rlkit" in per and "d3rlpy" in per:
            ours, theirs = per["rlkit"]["normalized_return"], per["d3rlpy"]["normalized_return"]
            cpu = ratio(per["rlkit"]["mean_cpu_s"], per["d3rlpy"]["mean_cpu_s"])
            low = theirs["ci95"][0] if theirs["ci95"] else theirs["mean"]
            entry.update({"cpu_ratio_rlkit_over_d3rlpy": cpu,
                          "wall_ratio_rlkit_over_d3rlpy": ratio(per["rlkit"]["mean_wall_s"],
                                                                per["d3rlpy"]["mean_wall_s"]),
                          "return_target_met": ours["mean"] >= low,
                          "cpu_target_met": cpu is not None and cpu <= 0.7})
        summary[f"{dataset}/{algo}"] = entry
    return summary


def markdown_table(results: dict) -> str:
    rows = ["| dataset | algorithm | rlkit normalised (95% CI) | d3rlpy normalised (95% CI) | rlkit CPU s | "
            "d3rlpy CPU s | CPU ratio |", "|---|---|---|---|---|---|---|"]

    def ret(side: dict | None) -> str:
        if not side:
            return "-"
        r = side["normalized_return"]
        return f"{r['mean']:.1f}" + ("" if r["ci95"] is None else f" ({r['ci95'][0]:.1f}, {r['ci95'][1]:.1f})")

    for entry in results["summary"].values():
        rl, d3 = entry.get("rlkit"), entry.get("d3rlpy")
        cpu = entry.get("cpu_ratio_rlkit_over_d3rlpy")
        rows.append(f"| {entry['dataset']} | {entry['algo']} | {ret(rl)} | {ret(d3)} | "
                    f"{'-' if not rl else format(rl['mean_cpu_s'], '.0f')} | "
                    f"{'-' if not d3 else format(d3['mean_cpu_s'], '.0f')} | "
                    f"{'-' if cpu is None else format(cpu, '.2f') + 'x'} |")
    return "\n".join(rows)


# ------------------------------------------------------------------------------------- the data (rlkit's venv)
def export_arrays(dataset_path: Path, out: Path) -> dict:
    """The dataset as d3rlpy's MDPDataset arrays (one row per step: obs without each episode's last observation,
    terminals and timeouts on the last step) plus rlkit's normalisation constants, written to ``out`` (.npz)."""
    import numpy as np

    from rlkit import demos
    from rlkit.engine.offline import OBS_STD_EPS, reward_scale

    dataset = demos.load(dataset_path)
    obs = np.concatenate([ep.obs[:-1] for ep in dataset]).astype(np.float32)
    terminals = np.concatenate([np.arange(ep.length) == ep.length - 1 if ep.terminated else np.zeros(ep.length, bool)
                                for ep in dataset]).astype(np.float32)
    timeouts = np.concatenate([np.arange(ep.length) == ep.length - 1 if not ep.terminated
                               else np.zeros(ep.length, bool) for ep in dataset]).astype(np.float32)
    tr_obs = dataset.transitions().obs.astype(np.float32)  # what rlkit normalises by (dataset_normalizer)
    np.savez(out, observations=obs, actions=np.concatenate([ep.actions for ep in dataset]).astype(np.float32),
             rewards=np.concatenate([ep.rewards for ep in dataset]).astype(np.float32), terminals=terminals,
             timeouts=timeouts, obs_mean=tr_obs.mean(axis=0, dtype=np.float64),
             obs_std=tr_obs.std(axis=0, dtype=np.float64), obs_std_eps=np.float64(OBS_STD_EPS),
             action_low=dataset.action_space.low, action_high=dataset.action_space.high,
             reward_scale=np.float64(reward_scale(dataset)))
    ref = dataset.meta["reference_scores"]
    return {"transitions": int(len(obs)), "episodes": len(dataset),
            "reference_scores": [float(ref["ref_min_score"]), float(ref["ref_max_score"])]}


# ------------------------------------------------------------------------------------------------ the workers
def warm_up_torch() -> None:
    """torch's first optimizer imports torch._dynamo (seconds): an import, paid before the clock starts."""
    import torch

    param = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.Adam([param])
    param.sum().backward()
    optimizer.step()


def rlkit_worker(algo: str, dataset: str, seed: int, steps: int, run_dir: str) -> dict:
    """Train rlkit's ``algo`` at its pendulum preset; wall and CPU seconds less its final evaluation."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_sbx  # the evaluation-subtracting timer, shared with the other benchmarks

    from rlkit.registry import get_agent

    spec = get_agent(algo)
    overrides = {"demos": dataset, "seed": seed, "run_dir": run_dir, "total_steps": steps, "eval_every": 0,
                 "checkpoint_every": 0, "eval_episodes": 1, "progress": False, "tensorboard": False,
                 "torch_threads": 1, "log_every": steps}
    if algo == "cql":
        overrides["backup_action"] = "mean"  # d3rlpy's backup (NOTES)
    cfg = spec.config_cls.from_preset("pendulum", agent=algo, **overrides)
    warm_up_torch()
    _, wall, cpu = bench_sbx.without_evaluations(lambda: spec.train(cfg))
    return {"wall_s": wall, "cpu_s": cpu, "config": cfg.to_dict()}


def d3rlpy_config(algo: str, arrays: dict, steps: int):
    """d3rlpy's config of ``algo`` with rlkit's preset values (NOTES lists what differs)."""
    import d3rlpy
    from d3rlpy.models.encoders import VectorEncoderFactory
    from d3rlpy.optimizers import AdamFactory
    from d3rlpy.optimizers.lr_schedulers import CosineAnnealingLRFactory

    common = dict(batch_size=256, gamma=0.99, tau=0.005, n_critics=2,
                  observation_scaler=d3rlpy.preprocessing.StandardObservationScaler(
                      mean=arrays["obs_mean"], std=arrays["obs_std"], eps=float(arrays["obs_std_eps"])),
                  action_scaler=d3rlpy.preprocessing.MinMaxActionScaler(
                      minimum=arrays["action_low"], maximum=arrays["action_high"]))
    if algo == "td3_bc":
        return d3rlpy.algos.TD3PlusBCConfig(
            actor_learning_rate=3e-4, critic_learning_rate=3e-4, alpha=2.5, target_smoothing_sigma=0.2,
            target_smoothing_clip=0.5, update_actor_interval=2,
            actor_encoder_factory=VectorEncoderFactory([256, 256]),
            critic_encoder_factory=VectorEncoderFactory([256, 256]), **common)
    if algo == "iql":
        return d3rlpy.algos.IQLConfig(
            actor_learning_rate=3e-4, critic_learning_rate=3e-4, expectile=0.7, weight_temp=3.0, max_weight=100.0,
            actor_optim_factory=AdamFactory(lr_scheduler_factory=CosineAnnealingLRFactory(T_max=steps)),
            actor_encoder_factory=VectorEncoderFactory([256, 256]),
            critic_encoder_factory=VectorEncoderFactory([256, 256]),
            value_encoder_factory=VectorEncoderFactory([256, 256]),
            reward_scaler=d3rlpy.preprocessing.MultiplyRewardScaler(float(arrays["reward_scale"])), **common)
    return d3rlpy.algos.CQLConfig(
        actor_learning_rate=1e-4, critic_learning_rate=3e-4, temp_learning_rate=1e-4, alpha_learning_rate=0.0,
        initial_temperature=1.0, initial_alpha=1.0, conservative_weight=5.0, n_action_samples=10,
        soft_q_backup=False, max_q_backup=False, actor_encoder_factory=VectorEncoderFactory([64, 64]),
        critic_encoder_factory=VectorEncoderFactory([64, 64]), **common)


def d3rlpy_worker(algo: str, data_npz: str, seed: int, steps: int, run_dir: str) -> dict:
    """Train d3rlpy's ``algo`` on the arrays; the greedy policy is saved as TorchScript for rlkit to evaluate."""
    import d3rlpy
    import numpy as np
    from d3rlpy.logging import NoopAdapterFactory

    with np.load(data_npz, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    d3rlpy.seed(seed)
    warm_up_torch()
    t0, c0 = time.perf_counter(), time.process_time()
    dataset = d3rlpy.dataset.MDPDataset(arrays["observations"], arrays["actions"], arrays["rewards"],
                                        arrays["terminals"], arrays["timeouts"],
                                        action_space=d3rlpy.ActionSpace.CONTINUOUS)
    algo_obj = d3rlpy_config(algo, arrays, steps).create(device="cpu:0")
    algo_obj.fit(dataset, n_steps=steps, n_steps_per_epoch=steps, logger_adapter=NoopAdapterFactory(),
                 show_progress=False, save_interval=10**9)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    algo_obj.save_policy(str(Path(run_dir) / "policy.pt"))
    return {"wall_s": wall, "cpu_s": cpu, "transitions_trained_on": int(dataset.transition_count),
            "config": json.loads(algo_obj.config.serialize())}


def worker_main(args: argparse.Namespace) -> None:
    """One training, in its own process: ``--worker rlkit|d3rlpy``; writes its JSON to ``--result``."""
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    if args.worker == "rlkit":
        out = rlkit_worker(args.algo, args.dataset, args.seed, args.steps, args.run_dir)
    else:
        out = d3rlpy_worker(args.algo, args.dataset, args.seed, args.steps, args.run_dir)
    out["versions"] = versions()
    Path(args.result).write_text(json.dumps(out))


def versions() -> dict:
    return installed_versions(REPORTED)


# ------------------------------------------------------------------------------------------------ side venv
def side_requirements() -> list[str]:
    return pinned_requirements(SIDE_PINS, SAME_AS_RLKIT)


def ensure_side_venv(path: Path) -> Path:
    return make_side_venv(path, side_requirements(), "bench-d3rlpy-requirements.txt")


# ---------------------------------------------------------------------------------------------- the driver
def run_one(library: str, python: str, algo: str, dataset: str, seed: int, steps: int, data: dict,
            logdir: Path) -> dict:
    """Train in a worker process, then evaluate its policy here with rlkit's evaluation."""
    run_dir = tempfile.mkdtemp(prefix=f"bench-d3rlpy-{library}-{algo}-{seed}-", dir=data["run_root"])
    result = Path(run_dir) / "result.json"
    source = str(data["paths"][dataset]) if library == "rlkit" else str(data["npz"][dataset])
    cmd = [python, str(Path(__file__).resolve()), "--worker", library, "--algo", algo, "--dataset", source,
           "--seed", str(seed), "--steps", str(steps), "--run-dir", run_dir, "--result", str(result)]
    env = {**os.environ, **THREAD_ENV, "PYTHONHASHSEED": "0"}
    with open(logdir / f"{library}-{dataset}-{algo}-{seed}.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tempfile.gettempdir())
        _, status, usage = os.wait4(proc.pid, 0)
    entry = {"library": library, "algo": algo, "dataset": dataset, "seed": seed, "steps": steps}
    if os.waitstatus_to_exitcode(status) != 0 or not result.exists():
        return {**entry, "error": f"worker exited {os.waitstatus_to_exitcode(status)}; see {log.name}"}
    out = json.loads(result.read_text())
    returns = evaluate_policy(library, run_dir)
    low, high = data["info"][dataset]["reference_scores"]
    mean = statistics.fmean(returns)
    return {**entry, "wall_s": out["wall_s"], "cpu_s": out["cpu_s"],
            "process_cpu_s": usage.ru_utime + usage.ru_stime, "mean_return": mean,
            "normalized_return": 100.0 * (mean - low) / (high - low), "returns": returns,
            **({"transitions_trained_on": out["transitions_trained_on"]} if "transitions_trained_on" in out else {}),
            "config": out["config"], "versions": out["versions"]}


class _TorchScriptPolicy:
    """d3rlpy's exported greedy policy (TorchScript made by this benchmark's own worker) as an rlkit Policy."""

    def __init__(self, path: str) -> None:
        import torch

        self.module = torch.jit.load(path)

    def act(self, obs, deterministic: bool = True):
        import numpy as np
        import torch

        with torch.no_grad():
            return self.module(torch.as_tensor(np.asarray(obs, dtype=np.float32))).numpy()


def evaluate_policy(library: str, run_dir: str) -> list[float]:
    """The greedy policy's returns over EVAL_EPISODES Pendulum-v1 episodes (seeds 10000+i): rlkit's evaluate."""
    import torch
    from rlkit.envs import make_env

    from rlkit.evaluation import evaluate
    from rlkit.policy import load_policy

    torch.set_num_threads(1)
    policy = load_policy(run_dir) if library == "rlkit" else _TorchScriptPolicy(str(Path(run_dir) / "policy.pt"))
    return evaluate(policy, lambda render_mode=None: make_env("Pendulum-v1", render_mode=render_mode),
                    EVAL_EPISODES, seed=EVAL_SEED, deterministic=True)["returns"]


def git_state() -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def merge_previous(results: dict, previous: dict, datasets: list[str], algos: list[str], seeds: list[int]) -> None:
    """Carry ``previous``'s runs outside the selection (and their datasets, steps and seeds) into ``results``;
    each keeps the commit that measured it (the old file's ``git`` where a run has none of its own)."""
    selected = {(d, a, s) for d in datasets for a in algos for s in seeds}
    kept = [{**run, "git": run.get("git", previous.get("git"))} for run in previous.get("runs", [])
            if (run["dataset"], run["algo"], run["seed"]) not in selected]
    results["runs"] = kept
    results["steps"] = {**previous.get("steps", {}), **results["steps"]}
    results["seeds"] = sorted({*previous.get("seeds", []), *results["seeds"]})
    results["datasets"] = {**previous.get("datasets", {}), **results["datasets"]}
    results["merged"] = {"previous_created": previous.get("created"), "previous_git": previous.get("git"),
                         "kept_runs": len(kept), "rerun": {"datasets": datasets, "algos": algos, "seeds": seeds}}
    results["summary"] = summarize(kept)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT / "data" / "pendulum"), help="folder of the rlkit offline-data set")
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--algos", default=",".join(ALGOS))
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--steps-scale", type=float, default=1.0, help="multiply every algorithm's gradient steps")
    p.add_argument("--quick", action="store_true", help="plumbing check: seed 0, 300 steps, medium-replay")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "d3rlpy.json"))
    p.add_argument("--side-venv", default=str(ROOT / "benchmarks" / ".d3rlpy-venv"))
    p.add_argument("--setup", action="store_true", help="make the side venv and exit")
    p.add_argument("--table", action="store_true", help="print the Markdown table of --out and exit")
    p.add_argument("--merge", action="store_true", help="keep --out's runs outside this selection (algorithms x "
                   "datasets x seeds) and rerun the selection's")
    # worker mode (internal)
    for flag in ("--worker", "--algo", "--dataset", "--run-dir", "--result"):
        p.add_argument(flag, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.worker:
        return worker_main(args)
    if args.table:
        return print(markdown_table(json.loads(Path(args.out).read_text())))
    side_python = ensure_side_venv(Path(args.side_venv))
    if args.setup:
        return None
    datasets, algos = args.datasets.split(","), args.algos.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    steps = {a: max(1, round(STEPS[a] * args.steps_scale)) for a in algos}
    if args.quick:
        datasets, seeds, steps = ["medium-replay"], [0], {a: 300 for a in algos}
    paths = {d: Path(args.data).resolve() / d for d in datasets}  # the workers run in folders of their own
    missing = [str(p) for p in paths.values() if not (p / "manifest.json").exists()]
    if missing:
        sys.exit(f"bench_d3rlpy: {missing[0]} is missing; build it with `rlkit offline-data --env Pendulum-v1 "
                 f"--out {args.data} --eval-every 200`")
    work = Path(tempfile.mkdtemp(prefix="bench-d3rlpy-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    npz = {d: work / f"{d}.npz" for d in datasets}
    info = {d: export_arrays(paths[d], npz[d]) for d in datasets}
    data = {"paths": paths, "npz": npz, "info": info, "run_root": str(work)}
    logdir = work / "logs"
    logdir.mkdir()
    pythons = {"rlkit": sys.executable, "d3rlpy": str(side_python)}
    results = {"benchmark": "bench_d3rlpy", "quick": args.quick, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "env_id": "Pendulum-v1", "steps": steps, "seeds": seeds, "eval": {"episodes": EVAL_EPISODES,
               "first_seed": EVAL_SEED, "by": "rlkit.evaluation.evaluate, greedy, in rlkit's venv"},
               "datasets": {d: {"path": str(paths[d]), **info[d]} for d in datasets}, "notes": NOTES,
               "git": git_state(), "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                              "loadavg_start": list(os.getloadavg())},
               "versions": {"rlkit_venv": versions(), "side_venv": None,  # the d3rlpy worker's, once one ran
                            "side_venv_requirements": side_requirements()}, "runs": [], "summary": {}}
    if args.merge and Path(args.out).exists():
        merge_previous(results, json.loads(Path(args.out).read_text()), datasets, algos, seeds)
    for dataset in datasets:
        for seed in seeds:
            for algo in algos:
                order = LIBRARIES if seed % 2 == 0 else LIBRARIES[::-1]  # neither library always goes first
                for library in order:
                    t0 = time.perf_counter()
                    run = {**run_one(library, pythons[library], algo, dataset, seed, steps[algo], data, logdir),
                           "git": results["git"]}
                    results["runs"].append(run)
                    results["summary"] = summarize(results["runs"])
                    if run.get("versions") and library == "d3rlpy":
                        results["versions"]["side_venv"] = run["versions"]
                    results["machine"]["loadavg_end"] = list(os.getloadavg())
                    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
                    print(f"{dataset} {algo} seed {seed} {library}: "
                          + (run["error"] if "error" in run else
                             f"normalised {run['normalized_return']:.1f}, cpu {run['cpu_s']:.0f} s")
                          + f" ({time.perf_counter() - t0:.0f} s)", flush=True)
    print(markdown_table(results))


if __name__ == "__main__":
    main()
