"""rlkit against SB3 and SBX (SB3 on JAX), side by side in one run, at RL-Zoo settings.

Tasks (the same env steps and the same updates for every arm):

    dqn-cartpole  DQN CartPole-v1, 50k steps: lr 2.3e-3 (constant), batch 64, buffer 100k, learning_starts 1k,
                  target update every 10 steps, train_freq 256 x 128 gradient steps, eps 1 -> 0.04 over 16%,
                  [256, 256]; rlkit's preset ``cartpole`` with ``double=false, lr_schedule=constant`` (the Zoo's)
    td3-pendulum  TD3 Pendulum-v1, 20k steps, the Zoo's settings (rlkit preset ``pendulum``; bench_ddpg.py)
    sac-pendulum  SAC Pendulum-v1, 20k steps, lr 1e-3, else SB3's defaults (rlkit preset ``pendulum``)
    ppo-cartpole  PPO CartPole-v1, 100k steps, 8 envs, the Zoo's settings (rlkit preset ``cartpole``)

Arms: ``rlkit`` and ``sb3`` run in rlkit's own interpreter (its venv has SB3); ``sbx`` runs in a side
virtualenv (default ``benchmarks/.sbx-venv``, made on first use and reused) with sbx-rl and jax plus SB3,
gymnasium, numpy and torch at the versions of rlkit's venv, so SBX never enters rlkit's environment.

Every training is its own process, pinned to one core (``taskset -c CORE``) with one thread: torch
``set_num_threads(1)``, ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1`` for
JAX, and OMP/MKL/OpenBLAS at 1. Per seed the arms run in an order that rotates with the seed; with several
``--cores`` as many processes run at once, each on its own core. Per arm and seed it records:

* ``wall_s``: training only (model construction + learning; rlkit: ``train`` less its final evaluation),
  after the imports and torch's one-time optimizer import; JAX's compilation is inside (a user pays it);
* ``cpu_s``: user+sys seconds of the whole worker process (``os.wait4``'s rusage: imports, training and
  the evaluation included), and ``train_cpu_s``, the process time of the training alone;
* ``final_return``: greedy mean return over 20 episodes, episode i reset with seed 10000+i, the same
  evaluation code for every arm; ``solved``: CartPole >= 475, Pendulum >= -200.

rlkit's periodic evaluation and early stop are off (``eval_every=0``, ``target_return=None``, as SB3/SBX
evaluate only at the end), it saves only the final checkpoint (no replay buffer, no TensorBoard) and its run
directory is on tmpfs (``/dev/shm``). The JSON (default ``benchmarks/results/sbx.json``) is rewritten after
every run; ``--merge`` keeps the runs of an earlier invocation that this one does not repeat.

    python benchmarks/bench_sbx.py --tasks dqn-cartpole,td3-pendulum --seeds 0,1,2 --cores 0,1
    python benchmarks/bench_sbx.py --tasks sac-pendulum,ppo-cartpole --seeds 0 --cores 0,1 --merge
    python benchmarks/bench_sbx.py --table        # the Markdown table of the JSON
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
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
ARMS = ("rlkit", "sb3", "sbx")
EVAL_EPISODES, EVAL_SEED = 20, 10_000
SIDE_PINS = {"sbx-rl": "0.28.0", "jax": "0.10.2", "jaxlib": "0.10.2"}
SAME_AS_RLKIT = ("stable-baselines3", "gymnasium", "numpy", "torch")
REPORTED = ("rlkit", "sbx-rl", "jax", "jaxlib", "flax", "optax", "stable-baselines3", "gymnasium", "numpy", "torch")
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "VECLIB_MAXIMUM_THREADS": "1", "NUMEXPR_NUM_THREADS": "1"}
JAX_ENV = {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
           "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2"}

DQN_ZOO = dict(learning_rate=2.3e-3, batch_size=64, buffer_size=100_000, learning_starts=1_000, gamma=0.99,
               target_update_interval=10, train_freq=256, gradient_steps=128, exploration_fraction=0.16,
               exploration_final_eps=0.04, policy_kwargs=dict(net_arch=[256, 256]))
TD3_ZOO = dict(gamma=0.98, buffer_size=200_000, learning_starts=10_000, learning_rate=1e-3, batch_size=100,
               tau=0.005, train_freq=(1, "episode"), gradient_steps=-1, policy_kwargs=dict(net_arch=[400, 300]))
SAC_ZOO = dict(learning_rate=1e-3, buffer_size=1_000_000, learning_starts=100, batch_size=256, tau=0.005, gamma=0.99,
               train_freq=1, gradient_steps=1, policy_kwargs=dict(net_arch=[256, 256]))
PPO_ZOO = dict(n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20, ent_coef=0.0)
TASKS = {
    "dqn-cartpole": {"algo": "dqn", "env_id": "CartPole-v1", "steps": 50_000, "solved": 475.0, "preset": "cartpole",
                     "rlkit": {"double": False, "lr_schedule": "constant"}, "zoo": DQN_ZOO},
    "td3-pendulum": {"algo": "td3", "env_id": "Pendulum-v1", "steps": 20_000, "solved": -200.0, "preset": "pendulum",
                     "rlkit": {}, "zoo": {**TD3_ZOO, "action_noise_std": 0.1}},
    "sac-pendulum": {"algo": "sac", "env_id": "Pendulum-v1", "steps": 20_000, "solved": -200.0, "preset": "pendulum",
                     "rlkit": {}, "zoo": SAC_ZOO},
    "ppo-cartpole": {"algo": "ppo", "env_id": "CartPole-v1", "steps": 100_000, "solved": 475.0, "preset": "cartpole",
                     "rlkit": {}, "zoo": {**PPO_ZOO, "n_envs": 8, "learning_rate": "lin_0.001",
                                          "clip_range": "lin_0.2"}},
}

# The FLOP floor: per task, the network shapes of one update (CartPole: 4 observations, 2 actions; Pendulum: 3
# and 1), the update count of one run, and the product the floor is timed on. Forward of an MLP: 2 * batch * the
# sum of in*out over its layers; a backward computes weight gradients (the same again) and input gradients (the
# same again, without the first layer's unless the input's gradient is needed: the action in an actor loss).
FLOOR = {
    "dqn-cartpole": {"updates": (50_000 // 256 - 1_000 // 256) * 128, "batch": 64, "product": (256, 256),
                     "nets": {"q": [4, 256, 256, 2]}},
    "td3-pendulum": {"updates": 20_000 - 10_000, "batch": 100, "product": (400, 300),
                     "nets": {"actor": [3, 400, 300, 1], "critic": [4, 400, 300, 1]}},
    "sac-pendulum": {"updates": 20_000 - 100, "batch": 256, "product": (256, 256),
                     "nets": {"actor": [3, 256, 256, 2], "critic": [4, 256, 256, 1]}},
    "ppo-cartpole": {"updates": (100_000 // 256) * 20, "batch": 256, "product": (64, 64),
                     "nets": {"actor": [4, 64, 64, 2], "critic": [4, 64, 64, 1]}},
}


def forward_flops(sizes: list[int], batch: int) -> int:
    return 2 * batch * sum(a * b for a, b in zip(sizes, sizes[1:]))


def backward_flops(sizes: list[int], batch: int, weights: bool = True, input_grad: bool = False) -> int:
    products = [a * b for a, b in zip(sizes, sizes[1:])]
    return 2 * batch * ((sum(products) if weights else 0) + sum(products[0 if input_grad else 1:]))


def flops_per_update(task: str) -> float:
    """FLOPs of one gradient step of ``task``'s algorithm (TD3's actor step counted at its rate, every 2nd)."""
    spec = FLOOR[task]
    b, nets = spec["batch"], spec["nets"]
    f, bw = (lambda net: forward_flops(nets[net], b)), (lambda net, **kw: backward_flops(nets[net], b, **kw))
    if task == "dqn-cartpole":  # online and target forwards (plain DQN), backward
        return 2 * f("q") + bw("q")
    critic_step = f("actor") + 4 * f("critic") + 2 * bw("critic")  # target actor, 2 target + 2 online critics
    if task == "td3-pendulum":  # actor step: actor, critic 0 and dQ/da through it, actor backward
        return critic_step + (f("actor") + f("critic") + bw("critic", weights=False, input_grad=True)
                              + bw("actor")) / 2
    if task == "sac-pendulum":  # actor step: actor, both critics and dQ/da through them, actor backward
        return critic_step + f("actor") + 2 * f("critic") + 2 * bw("critic", weights=False, input_grad=True) \
            + bw("actor")
    return f("actor") + f("critic") + bw("actor") + bw("critic")  # PPO: one minibatch of 256


def matmul_gflops(task: str) -> float:
    """This core's GFLOP/s on ``task``'s largest product of an update."""
    return matmul_rate(*FLOOR[task]["product"], FLOOR[task]["batch"])


def matmul_rate(n_in: int, n_out: int, batch: int, repeats: int = 400) -> float:
    """GFLOP/s of (batch x n_in) @ (n_in x n_out) on this thread (torch at one thread)."""
    import torch

    x, w, out = torch.randn(batch, n_in), torch.randn(n_in, n_out), torch.empty(batch, n_out)
    for _ in range(50):
        torch.mm(x, w, out=out)
    t0 = time.perf_counter()
    for _ in range(repeats):
        torch.mm(x, w, out=out)
    return 2 * batch * n_in * n_out * repeats / (time.perf_counter() - t0) / 1e9


# ---------------------------------------------------------------------------------------------- worker side
# Runs in rlkit's venv (rlkit, sb3) or in the side venv (sbx): only the standard library at module level.

def greedy_return(act, env_id: str, episodes: int = EVAL_EPISODES, seed: int = EVAL_SEED) -> list[float]:
    """Mean-free list of the returns of ``episodes`` greedy episodes, episode i reset with ``seed + i``;
    ``act(obs) -> action`` for one observation. The same code scores every arm."""
    import gymnasium as gym

    env = gym.make(env_id)
    env.action_space.seed(seed)
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        done, total = False, 0.0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return returns


def lin(start: float):
    return lambda progress_remaining: progress_remaining * start  # RL-Zoo's lin_ schedule


def build_sb3_style(arm: str, task: dict, seed: int):
    """The SB3 or SBX model of ``task`` (both take the same arguments)."""
    import gymnasium as gym
    import numpy as np
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.noise import NormalActionNoise

    if arm == "sbx":
        from sbx import DQN, PPO, SAC, TD3
    else:
        from stable_baselines3 import DQN, PPO, SAC, TD3
    zoo, env_id, algo = dict(task["zoo"]), task["env_id"], task["algo"]
    common = {"seed": seed, "verbose": 0, "device": "cpu"}
    if algo == "dqn":
        return DQN("MlpPolicy", gym.make(env_id), **zoo, **common)
    if algo == "td3":
        std = zoo.pop("action_noise_std")
        return TD3("MlpPolicy", gym.make(env_id), action_noise=NormalActionNoise(np.zeros(1), std * np.ones(1)),
                   **zoo, **common)
    if algo == "sac":
        return SAC("MlpPolicy", gym.make(env_id), **zoo, **common)
    n_envs = zoo.pop("n_envs")
    zoo["learning_rate"] = lin(float(zoo["learning_rate"].split("_")[1]))
    zoo["clip_range"] = lin(float(zoo["clip_range"].split("_")[1]))
    return PPO("MlpPolicy", make_vec_env(env_id, n_envs=n_envs, seed=seed), **zoo, **common)


def warm_up_torch() -> None:
    """torch's first optimizer imports torch._dynamo (seconds): an import, paid before the clock starts."""
    import torch

    param = torch.zeros(1, requires_grad=True)
    for kwargs in ({}, {"fused": True}):
        optimizer = torch.optim.Adam([param], **kwargs)
        param.sum().backward()
        torch.nn.utils.clip_grad_norm_([param], 1.0)
        optimizer.step()


def without_evaluations(train):
    """``train()``'s result, wall and process seconds, less the time rlkit's evaluations took inside it (its
    final evaluation: timed apart, as SB3 and SBX evaluate outside their ``learn``)."""
    import rlkit.run

    evaluate, spent = rlkit.run.evaluate, [0.0, 0.0]

    def timed(*args, **kwargs):
        w, c = time.perf_counter(), time.process_time()
        try:
            return evaluate(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - w
            spent[1] += time.process_time() - c

    rlkit.run.evaluate = timed
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        result = train()
        return result, time.perf_counter() - t0 - spent[0], time.process_time() - c0 - spent[1]
    finally:
        rlkit.run.evaluate = evaluate


def rlkit_config(task: dict, seed: int, run_dir: str | None):
    """The agent's preset at the task's budget, without periodic evaluations, early stop, buffer or TensorBoard."""
    from rlkit.config import apply_overrides, resolve_preset
    from rlkit.registry import get_agent

    spec = get_agent(task["algo"])
    cfg = apply_overrides(spec.config_cls(), spec.defaults)
    cfg = apply_overrides(cfg, resolve_preset(spec.presets(), task["preset"], task["algo"]))
    overrides = {"seed": seed, "total_steps": task["steps"], "run_dir": run_dir, "progress": False,
                 "eval_every": 0, "target_return": None, "checkpoint_every": 0, "save_buffer": False,
                 "tensorboard": False, "torch_threads": 1, **task["rlkit"]}
    return apply_overrides(cfg, {k: v for k, v in overrides.items() if hasattr(cfg, k)})


def run_rlkit(task: dict, seed: int, run_root: str) -> tuple[float, float, object]:
    from rlkit.policy import load_policy
    from rlkit.registry import get_agent

    run_dir = tempfile.mkdtemp(prefix=f"bench-sbx-rlkit-{task['algo']}-{seed}-", dir=run_root)
    cfg = rlkit_config(task, seed, run_dir)
    _, wall, cpu = without_evaluations(lambda: get_agent(task["algo"]).train(cfg))
    policy = load_policy(run_dir)
    return wall, cpu, lambda obs: policy.act(obs[None], deterministic=True)[0]


def worker(arm: str, task_name: str, seed: int, result_path: str, run_root: str) -> None:
    task = TASKS[task_name]
    import numpy as np
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    if arm == "rlkit":
        import rlkit.registry

        rlkit.registry.get_agent(task["algo"])  # the agent's imports, before the clock
    else:
        import stable_baselines3  # noqa: F401

        if arm == "sbx":
            import jax
            import sbx  # noqa: F401

            assert jax.default_backend() == "cpu", jax.default_backend()
    warm_up_torch()
    if arm == "rlkit":
        wall, cpu, act = run_rlkit(task, seed, run_root)
    else:
        t0, c0 = time.perf_counter(), time.process_time()
        model = build_sb3_style(arm, task, seed)
        model.learn(task["steps"])
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0

        def act(obs):
            return model.predict(np.asarray(obs), deterministic=True)[0]

    returns = greedy_return(act, task["env_id"])
    out = {"wall_s": wall, "train_cpu_s": cpu, "final_return": float(np.mean(returns)),
           "matmul_gflops": matmul_gflops(task_name),
           "final_return_std": float(np.std(returns)), "returns": returns, "versions": versions()}
    if arm == "rlkit":
        import inspect

        import rlkit.registry

        out["rlkit_agent_file"] = inspect.getfile(rlkit.registry.get_agent(task["algo"]).train)
    Path(result_path).write_text(json.dumps(out))


def versions() -> dict:
    return installed_versions(REPORTED)


# ------------------------------------------------------------------------------------------------ side venv
def side_requirements() -> list[str]:
    return pinned_requirements(SIDE_PINS, SAME_AS_RLKIT)


def ensure_side_venv(path: Path) -> Path:
    return make_side_venv(path, side_requirements(), "bench-sbx-requirements.txt")


# ---------------------------------------------------------------------------------------------- summary maths
def median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarize(runs: list[dict]) -> dict:
    """Per task: each arm's medians (wall, CPU, training CPU), returns and seeds solved; the ratios
    rlkit/SBX and rlkit/SB3 of the median CPU and wall seconds, and per seed."""
    summary: dict = {}
    for task in dict.fromkeys(r["task"] for r in runs):
        ok = [r for r in runs if r["task"] == task and "error" not in r]
        per: dict = {}
        for arm in ARMS:
            rs = sorted((r for r in ok if r["arm"] == arm), key=lambda r: r["seed"])
            if rs:
                per[arm] = {"seeds": [r["seed"] for r in rs],
                            "median_cpu_s": median_or_none([r["cpu_s"] for r in rs]),
                            "median_wall_s": median_or_none([r["wall_s"] for r in rs]),
                            "median_train_cpu_s": median_or_none([r["train_cpu_s"] for r in rs]),
                            "final_returns": [r["final_return"] for r in rs],
                            "seeds_solved": sum(r["solved"] for r in rs)}
        for other in ("sbx", "sb3"):
            if "rlkit" in per and other in per:
                per[f"rlkit_over_{other}"] = {
                    "cpu": ratio(per["rlkit"]["median_cpu_s"], per[other]["median_cpu_s"]),
                    "wall": ratio(per["rlkit"]["median_wall_s"], per[other]["median_wall_s"]),
                    "per_seed_cpu": {str(a["seed"]): ratio(a["cpu_s"], b["cpu_s"])
                                     for a in ok for b in ok if a["arm"] == "rlkit" and b["arm"] == other
                                     and a["seed"] == b["seed"]},
                    "per_seed_wall": {str(a["seed"]): ratio(a["wall_s"], b["wall_s"])
                                      for a in ok for b in ok if a["arm"] == "rlkit" and b["arm"] == other
                                      and a["seed"] == b["seed"]}}
        summary[task] = per
        rates = [r["matmul_gflops"] for r in ok if "matmul_gflops" in r]
        if task in FLOOR and rates:
            floor_s = flops_per_update(task) * FLOOR[task]["updates"] / (statistics.median(rates) * 1e9)
            per["floor"] = {"flops_per_update": flops_per_update(task), "updates": FLOOR[task]["updates"],
                            "matmul_gflops": statistics.median(rates), "updates_floor_s": floor_s,
                            "fraction_of_floor": {arm: ratio(floor_s, per[arm]["median_train_cpu_s"])
                                                  for arm in ARMS if arm in per}}
    return summary


def _fmt(x: float | None, unit: str = "x") -> str:
    return f"{x:.2f}{unit}" if x is not None else "-"


def readme_table(results: dict) -> str:
    """One row per task: the arms' median CPU and wall seconds, seeds solved, and rlkit's ratios."""
    lines = ["| task (seeds) | median CPU s, rlkit / SB3 / SBX | median wall s, rlkit / SB3 / SBX | "
             "solved, rlkit / SB3 / SBX | rlkit ÷ SBX, CPU / wall | rlkit ÷ SB3, CPU / wall |",
             "|---|---|---|---|---|---|"]
    for task, per in results["summary"].items():
        arms = [per.get(arm, {}) for arm in ARMS]

        def col(key: str, arms: list[dict] = arms) -> str:
            return " / ".join(f"{a[key]:.1f}" if a.get(key) is not None else "-" for a in arms)

        solved = " / ".join(f"{a['seeds_solved']}/{len(a['seeds'])}" if a else "-" for a in arms)
        seeds = ",".join(str(s) for s in sorted({s for a in arms for s in a.get("seeds", [])}))
        sbx, sb3 = per.get("rlkit_over_sbx", {}), per.get("rlkit_over_sb3", {})
        lines.append(f"| {task} ({seeds}) | {col('median_cpu_s')} | {col('median_wall_s')} | {solved} | "
                     f"**{_fmt(sbx.get('cpu'), '×')}** / {_fmt(sbx.get('wall'), '×')} | "
                     f"{_fmt(sb3.get('cpu'), '×')} / {_fmt(sb3.get('wall'), '×')} |")
    return "\n".join(lines)


def floor_table(results: dict) -> str:
    """Per task: FLOPs per update, updates, this core's matmul rate, the floor in seconds and the fraction of it
    each arm reached (floor / median training CPU seconds)."""
    lines = ["| task | MFLOP per update | updates | matmul GFLOP/s | floor s | floor reached, rlkit / SB3 / SBX |",
             "|---|---|---|---|---|---|"]
    for task, per in results["summary"].items():
        if "floor" not in per:
            continue
        fl = per["floor"]
        reached = " / ".join(f"{fl['fraction_of_floor'][a]:.0%}" if fl["fraction_of_floor"].get(a) else "-"
                             for a in ARMS)
        lines.append(f"| {task} | {fl['flops_per_update'] / 1e6:.1f} | {fl['updates']:,} | {fl['matmul_gflops']:.0f} "
                     f"| {fl['updates_floor_s']:.1f} | {reached} |")
    return "\n".join(lines)


def markdown_table(results: dict) -> str:
    """The README's table and the floor table, then each arm's CPU and wall seconds and final return per seed."""
    lines = [readme_table(results), "", floor_table(results), "",
             "| task | arm | CPU s per seed | wall s per seed | final return per seed |", "|---|---|---|---|---|"]
    for task, per in results["summary"].items():
        for arm in ARMS:
            if arm not in per:
                continue
            rs = sorted((r for r in results["runs"] if r["task"] == task and r["arm"] == arm and "error" not in r),
                        key=lambda r: r["seed"])
            cpu, wall = ", ".join(f"{r['cpu_s']:.1f}" for r in rs), ", ".join(f"{r['wall_s']:.1f}" for r in rs)
            returns = ", ".join(f"{r['final_return']:.0f}" for r in rs)
            lines.append(f"| {task} | {arm} | {cpu} | {wall} | {returns} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ driver side
def plan(tasks: list[str], seeds: list[int]) -> list[tuple[str, str, int]]:
    """(task, arm, seed) in run order: per seed and task, the arms' order rotates with the seed."""
    jobs = []
    for seed in seeds:
        for task in tasks:
            k = seed % len(ARMS)
            jobs += [(task, arm, seed) for arm in ARMS[k:] + ARMS[:k]]
    return jobs


def launch(job: tuple[str, str, int], core: str, pythons: dict[str, str], logdir: Path, run_root: str,
           rlkit_path: str | None):
    task, arm, seed = job
    result = logdir / f"{task}-{arm}-{seed}.json"
    cmd = ["taskset", "-c", core, pythons[arm], str(Path(__file__).resolve()), "--worker", arm, task, str(seed),
           "--result", str(result), "--run-root", run_root]
    env = {**os.environ, **THREAD_ENV, **(JAX_ENV if arm == "sbx" else {})}
    env.pop("PYTHONPATH", None)
    if arm == "rlkit" and rlkit_path:
        env["PYTHONPATH"] = rlkit_path
    log = open(logdir / f"{task}-{arm}-{seed}.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tempfile.gettempdir())
    log.close()
    return proc, cmd, result


def loadavg() -> list[float] | None:
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def export_rlkit(ref: str) -> tuple[str | None, str]:
    """A PYTHONPATH entry holding rlkit at ``ref`` (``git archive``), and the commit; ``worktree``: none.

    The editable install maps ``rlkit.agents``/``demos``/``envs`` to top-level folders through a finder that
    comes after sys.path, so the export gets links to its own copies of them under ``rlkit/``."""
    if ref == "worktree":
        return None, "worktree"
    commit = subprocess.run(["git", "rev-parse", ref], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.strip()
    dest = Path(tempfile.mkdtemp(prefix=f"bench-sbx-rlkit-{commit[:8]}-"))
    archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    for sub in ("agents", "demos", "envs"):
        if (dest / sub).is_dir() and not (dest / "rlkit" / sub).exists():
            (dest / "rlkit" / sub).symlink_to(dest / sub)
    return str(dest), commit


def git_state() -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"),
            "uncommitted_in_rlkit_or_agents": git("status", "--porcelain", "--", "rlkit", "agents").splitlines()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)}")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--cores", default="0", help="comma-separated cores; one training per core at a time")
    parser.add_argument("--side-venv", default=str(ROOT / "benchmarks" / ".sbx-venv"))
    parser.add_argument("--run-root", default="/dev/shm" if Path("/dev/shm").is_dir() else tempfile.gettempdir(),
                        help="where rlkit's run directories go (default: tmpfs)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sbx.json"))
    parser.add_argument("--rlkit-ref", default="HEAD",
                        help="the rlkit commit the rlkit arm runs (exported from git, so uncommitted edits in the "
                             "checkout stay out); 'worktree' runs the checkout as it is")
    parser.add_argument("--merge", action="store_true", help="keep the runs in --out that this call does not redo")
    parser.add_argument("--table", action="store_true", help="print the Markdown table of --out and exit")
    parser.add_argument("--setup", action="store_true", help="make the side venv and exit")
    parser.add_argument("--versions", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", nargs=3, metavar=("ARM", "TASK", "SEED"), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.versions:
        print(json.dumps(versions()))
        return
    if args.worker:
        arm, task, seed = args.worker
        worker(arm, task, int(seed), args.result, args.run_root)
        return
    out_path = Path(args.out)
    if args.table:
        print(markdown_table(json.loads(out_path.read_text())))
        return
    tasks, seeds, cores = args.tasks.split(","), [int(s) for s in args.seeds.split(",")], args.cores.split(",")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        parser.error(f"unknown tasks {unknown}; choose from {list(TASKS)}")
    side_python = ensure_side_venv(Path(args.side_venv))
    if args.setup:
        return
    pythons = {"rlkit": sys.executable, "sb3": sys.executable, "sbx": str(side_python)}
    rlkit_path, rlkit_commit = export_rlkit(args.rlkit_ref)
    jobs = plan(tasks, seeds)
    redo = {(t, a, s) for t, a, s in jobs}
    previous = json.loads(out_path.read_text()) if args.merge and out_path.exists() else {}
    runs = [r for r in previous.get("runs", []) if (r["task"], r["arm"], r["seed"]) not in redo]
    command = "python benchmarks/bench_sbx.py " + " ".join(sys.argv[1:])
    results = {
        "benchmark": "rlkit vs SB3 vs SBX at RL-Zoo settings, one process per training pinned to one core, one thread",
        "commands": previous.get("commands", []) + [command],
        "settings": {"tasks": {t: {k: v for k, v in TASKS[t].items()} for t in TASKS},
                     "eval": f"{EVAL_EPISODES} greedy episodes, episode i reset with seed {EVAL_SEED}+i, same code "
                             "for every arm",
                     "rlkit": "eval_every=0, target_return=None, checkpoint_every=0 (final only), save_buffer=False, "
                              "tensorboard=False, run dir on " + args.run_root,
                     "threads": {**THREAD_ENV, **JAX_ENV, "torch": "set_num_threads(1)"},
                     "cpu_s": "user+sys of the whole worker process (os.wait4 rusage)",
                     "wall_s": "training only (construction + learning; rlkit: train() less its final evaluation)"},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor(),
                    "concurrency": f"{len(cores)} trainings at once, each pinned to its own core"
                                   + ("" if len(cores) == 1 else "; the machine is shared with other jobs"),
                    "shared_with_other_jobs": True},
        "versions": {"rlkit_venv": versions(), "side_venv": json.loads(subprocess.run(
            [str(side_python), str(Path(__file__).resolve()), "--versions"], capture_output=True, text=True,
            check=True).stdout),
            "python": platform.python_version(), "side_venv_requirements": side_requirements()},
        "invocations": previous.get("invocations", []) + [{"command": command, "cores": cores,
                                                              "rlkit_arm_runs": rlkit_commit, "git": git_state()}],
        "runs": runs}

    def write() -> None:
        results["summary"] = summarize(results["runs"])
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(results, indent=2))

    logdir = Path(tempfile.mkdtemp(prefix="bench-sbx-"))
    print(f"{len(jobs)} runs on cores {cores}; logs in {logdir}", flush=True)
    pending, running, free = list(jobs), {}, list(cores)
    while pending or running:
        while pending and free:
            job, core = pending.pop(0), free.pop(0)
            proc, cmd, result = launch(job, core, pythons, logdir, args.run_root, rlkit_path)
            running[proc.pid] = (job, core, proc, cmd, result, loadavg(), time.perf_counter())
        pid, status, usage = os.wait4(-1, 0)
        if pid not in running:
            continue
        (task, arm, seed), core, proc, cmd, result, load_before, started = running.pop(pid)
        proc.returncode = os.waitstatus_to_exitcode(status)
        free.append(core)
        run = {"task": task, "arm": arm, "seed": seed, "core": core, "rlkit_commit": rlkit_commit,
               "command": " ".join(cmd),
               "process_wall_s": time.perf_counter() - started, "cpu_s": usage.ru_utime + usage.ru_stime,
               "max_rss_mb": usage.ru_maxrss / 1024, "loadavg_before": load_before, "loadavg_after": loadavg()}
        if proc.returncode == 0 and result.exists():
            run.update(json.loads(result.read_text()))
            run["solved"] = run["final_return"] >= TASKS[task]["solved"]
            print(f"{task} {arm:5} seed {seed} core {core}: {run['cpu_s']:6.1f}s cpu, {run['wall_s']:6.1f}s wall, "
                  f"return {run['final_return']:7.1f}", flush=True)
        else:
            log = (logdir / f"{task}-{arm}-{seed}.log").read_text()[-3000:]
            run["error"] = f"exit {proc.returncode}: {log}"
            print(f"{task} {arm} seed {seed} FAILED:\n{log}", flush=True)
        results["runs"].append(run)
        write()
    write()
    if rlkit_path:
        shutil.rmtree(rlkit_path, ignore_errors=True)
    print(markdown_table(results))
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
