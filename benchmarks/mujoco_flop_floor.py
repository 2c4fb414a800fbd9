"""The FLOP floor of TD3 and SAC on Hopper-v5 and HalfCheetah-v5, beside the speed rlkit and SB3 reach (issue 22).

    python benchmarks/mujoco_flop_floor.py                 # about 4 min alone on a core, 5-10 with other jobs
    python benchmarks/mujoco_flop_floor.py --steps 1000    # a quick look

1. The analytic count. rlkit's presets (``hopper``, ``halfcheetah`` of agents/presets/td3.yaml and sac.yaml, read
with :func:`rlkit.config.resolve_preset`) give the networks; gymnasium gives the dimensions. One env step at
``train_every=1, gradient_steps=1`` costs, with o = obs dim, a = action dim, hidden widths h1, h2, batch B, d = the
policy delay (TD3 2, SAC 1), a matmul (m x k)(k x n) counted as 2mkn FLOPs:

    F_pi(B) = 2B (o h1 + h1 h2 + h2 a)          TD3 actor forward (SAC: + h2 a, its second head, log std)
    F_Q(B)  = 2B ((o+a) h1 + h1 h2 + h2)        one critic forward on cat(s, a)
    backward with trainable weights = weight grads (F) + input grads (F) less the first layer's input grad, as the
             input is data:                     2F - 2B d0 h1       (d0 = the first layer's input width)
    backward through a frozen critic to a (the actor step needs dQ/da only): input grads only, and in the first
             layer only the action columns:     F_Q(B) - 2B (o+a) h1 + 2B a h1

    TD3  acting  = F_pi(1)
         critic  = F_pi(B) [target actor on s'] + 2 F_Q(B) [target twins] + 2 F_Q(B) + 2 (2 F_Q(B) - 2B (o+a) h1)
         actor   = (1/d) [F_pi(B) + F_Q(B) [critic 1 only] + (F_Q(B) - 2B o h1) + (2 F_pi(B) - 2B o h1)]
         polyak  = (1/d) 3 (P_pi + 2 P_Q)        (target actor and twin critics)
         adam    = k (2 P_Q + P_pi / d)
    SAC  acting  = F_pi(1)
         critic  = F_pi(B) [a' ~ pi(s')] + 2 F_Q(B) [target twins] + 2 F_Q(B) + 2 (2 F_Q(B) - 2B (o+a) h1)
         actor   = F_pi(B) [a ~ pi(s), shared by the temperature loss] + 2 F_Q(B) [min of both critics]
                   + 2 (F_Q(B) - 2B o h1) + (2 F_pi(B) - 2B o h1)
         polyak  = 3 (2 P_Q)                     (twin critic targets; SAC has no target actor)
         adam    = k (2 P_Q + P_pi + 1)          (+1: log alpha)

P_pi, P_Q: parameters of the actor and of one critic (weights and biases). Adam is counted at k = 13 FLOPs per
parameter (first moment 3, second moment 4, sqrt(v)/sqrt(bias correction) + eps 3, the step m/denominator x lr and
the subtraction 3; a sqrt or a division counted as one FLOP); Polyak's lerp at 3. Neglected (said here once): bias
adds, ReLU/tanh, the losses, TD3's target smoothing noise and clipping, SAC's sampling, log-prob and tanh terms and
its temperature loss. They are O(B x the layer widths) against the matmuls' O(B x width^2), well under 1% here.
The floor is the minimum these updates need: SB3's actor step also computes the critics' weight gradients (TD3:
critic 1, SAC: both), which it then discards (``sb3_extra_flops`` in the JSON); rlkit's freezes them. The env
(MuJoCo) is outside the floor; ``env_step_ms`` in the JSON measures it alone.

2. The rates, on one thread (``torch.set_num_threads(1)``, OMP/MKL/OpenBLAS at 1) in a fresh subprocess: a 2048^3
float32 torch.mm as the peak (best of 5), and torch.mm of every GEMM shape the count above is made of (forward
(B x in)(in x out), input grads (B x out)(out x in), weight grads (in x B)(B x out), acting at B = 1; contiguous
operands, best of 3 timings of a loop of at least 0.05 s each). The small-shape rate of an (agent, env) is its
matmul FLOPs per step over the time those GEMMs take (each weighted by how often a step runs it). The floor is
FLOPs per step / peak; the second floor FLOPs per step / small-shape rate.

3. The real thing on Hopper-v5: rlkit's TD3 and SAC (``rlkit.agents.ddpg:TD3_AGENT``, ``rlkit.agents.sac``, the
``hopper`` presets) and SB3's TD3 and SAC with the same settings (networks, batch, learning rates, tau, gamma,
buffer 1e6, noise, policy delay, target smoothing, automatic temperature), each in a fresh subprocess with one
torch thread, learning_starts 1000 then ``--steps`` training steps, seed 0, ``--rounds`` times (default 2; the
figure is the mean). The libraries alternate (round 0: rlkit, SB3 for TD3, SB3, rlkit for SAC; each round flips
both orders) so machine noise hits both alike. Timing is taken inside the run, not by subtracting a
second run (that would double the cost and add a second run's noise): the clock starts when the step counter
reaches learning_starts (rlkit: entering the loop iteration at global_step == learning_starts, patched around
``rlkit.engine.off_policy._Loop.iteration``; SB3: the callback's ``_on_step`` at num_timesteps == learning_starts)
and stops after the last training step (rlkit: that iteration's end; SB3: ``_on_training_end``). The window holds
``--steps`` env steps, each acting, one MuJoCo step, storing and one gradient step, and each library's own
bookkeeping (rlkit: its log rows and TensorBoard every 1000 steps); not the start-up, the warm-up and rlkit's final
checkpoint and evaluation. CPU seconds (``time.process_time``, the main figure: other jobs share the 2 cores) and
wall seconds beside them.

4. The long reproductions, if present: benchmarks/results/reproduce/td3-hopper-300k/seed_*/final.json and
td3-halfcheetah-300k (env_steps / wall_s). They ran beside other jobs and include their periodic evaluations
(every 5000 steps, 10 episodes), so their steps/s are lower bounds of what the code does alone.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AGENTS = ("td3", "sac")
ENVS = {"hopper": "Hopper-v5", "halfcheetah": "HalfCheetah-v5"}
ADAM_FLOPS_PER_PARAM = 13
POLYAK_FLOPS_PER_PARAM = 3
PEAK_N = 2048
LONG_RUNS = ("td3-hopper-300k", "td3-halfcheetah-300k")
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


# ---------------------------------------------------------------------------------------------- the analytic count
def preset_config(agent: str, preset: str):
    """The config ``rlkit train AGENT --preset PRESET`` builds (the agent's defaults, then the preset)."""
    from rlkit.config import apply_overrides, resolve_preset
    from rlkit.registry import get_agent

    spec = get_agent(agent)
    cfg = apply_overrides(spec.config_cls(), spec.defaults)
    return apply_overrides(cfg, resolve_preset(spec.presets(), preset, agent))


def env_dims(env_id: str) -> tuple[int, int]:
    import gymnasium as gym
    import numpy as np

    env = gym.make(env_id)
    dims = int(np.prod(env.observation_space.shape)), int(np.prod(env.action_space.shape))
    env.close()
    return dims


def forward(layers: list[tuple[int, int, int]], batch: int) -> list[tuple[int, int, int]]:
    """GEMMs (m, k, n) of a forward pass; ``layers``: (in, out, copies) (copies: parallel heads on one input)."""
    return [(batch, fan_in, fan_out) for fan_in, fan_out, copies in layers for _ in range(copies)]


def backward(layers: list[tuple[int, int, int]], batch: int, weights: bool, first_input_cols: int | None
             ) -> list[tuple[int, int, int]]:
    """GEMMs of a backward pass: weight grads (when ``weights``) and input grads; the first layer's input grad is
    skipped (None: the input is data) or only its first ``first_input_cols`` columns' (the action's)."""
    out = []
    for i, (fan_in, fan_out, copies) in enumerate(layers):
        for _ in range(copies):
            if weights:
                out.append((fan_in, batch, fan_out))
            if i > 0:
                out.append((batch, fan_out, fan_in))
            elif first_input_cols:
                out.append((batch, fan_out, first_input_cols))
    return out


def n_params(layers: list[tuple[int, int, int]]) -> int:
    return sum(copies * (fan_in * fan_out + fan_out) for fan_in, fan_out, copies in layers)


def analyse(agent: str, preset: str) -> dict:
    """The per-step GEMMs (with how often a step runs each) and FLOPs by part of one (agent, preset)."""
    cfg = preset_config(agent, preset)
    assert cfg.train_every == 1 and cfg.gradient_steps == 1, (agent, preset, cfg.train_every, cfg.gradient_steps)
    obs, act = env_dims(cfg.env_id)
    h1, h2 = cfg.hidden
    batch = cfg.batch_size
    critic = [(obs + act, h1, 1), (h1, h2, 1), (h2, 1, 1)]
    if agent == "td3":
        assert cfg.twin_critics and cfg.target_noise > 0, "the td3 preset lost its TD3 switches"
        n_critics, delay = 2, cfg.policy_delay
        actor = [(obs, h1, 1), (h1, h2, 1), (h2, act, 1)]
    else:
        assert cfg.autotune, "the sac preset lost its automatic temperature"
        n_critics, delay = cfg.n_critics, 1
        actor = [(obs, h1, 1), (h1, h2, 1), (h2, act, 2)]  # mean and log-std heads
    qf, qb = forward(critic, batch), backward(critic, batch, True, None)
    qb_frozen = backward(critic, batch, False, act)
    pf, pb = forward(actor, batch), backward(actor, batch, True, None)
    # (gemms, how many times per env step) by part
    if agent == "td3":
        parts = {"acting": [(forward(actor, 1), 1.0)],
                 "critic_update": [(pf, 1.0), (qf, 2.0 * n_critics), (qb, float(n_critics))],
                 "actor_update": [(pf, 1 / delay), (qf, 1 / delay), (qb_frozen, 1 / delay), (pb, 1 / delay)]}
        polyak = (n_params(actor) + n_critics * n_params(critic)) / delay
        adam = n_critics * n_params(critic) + n_params(actor) / delay
        sb3_extra = [([(fi, batch, fo) for fi, fo, _ in critic], 1 / delay)]  # critic 1's weight grads
    else:
        parts = {"acting": [(forward(actor, 1), 1.0)],
                 "critic_update": [(pf, 1.0), (qf, 2.0 * n_critics), (qb, float(n_critics))],
                 "actor_update": [(pf, 1.0), (qf, float(n_critics)), (qb_frozen, float(n_critics)), (pb, 1.0)]}
        polyak = n_critics * n_params(critic)
        adam = n_critics * n_params(critic) + n_params(actor) + 1
        sb3_extra = [([(fi, batch, fo) for fi, fo, _ in critic], float(n_critics))]  # both critics' weight grads
    flops = {part: sum(count * sum(2 * m * k * n for m, k, n in gemms) for gemms, count in items)
             for part, items in parts.items()}
    flops["polyak"] = POLYAK_FLOPS_PER_PARAM * polyak
    flops["adam"] = ADAM_FLOPS_PER_PARAM * adam
    flops["total"] = sum(flops.values())
    gemm_counts: dict[tuple[int, int, int], float] = {}
    for items in parts.values():
        for gemms, count in items:
            for shape in gemms:
                gemm_counts[shape] = gemm_counts.get(shape, 0.0) + count
    return {
        "env_id": cfg.env_id, "obs_dim": obs, "act_dim": act, "hidden": [h1, h2], "batch_size": batch,
        "n_critics": n_critics, "policy_delay": delay, "train_every": cfg.train_every,
        "gradient_steps": cfg.gradient_steps,
        "params": {"actor": n_params(actor), "critic_each": n_params(critic), "critics": n_critics * n_params(critic),
                   "trained": n_params(actor) + n_critics * n_params(critic) + (agent == "sac"),
                   "targets": n_critics * n_params(critic) + (n_params(actor) if agent == "td3" else 0)},
        "flops_per_step": flops,
        "matmul_flops_per_step": sum(flops[p] for p in parts),
        "sb3_extra_flops": sum(count * sum(2 * m * k * n for m, k, n in gemms) for gemms, count in sb3_extra),
        "gemms": [[m, k, n, count] for (m, k, n), count in sorted(gemm_counts.items())],
    }


# ---------------------------------------------------------------------------------------------- workers (subprocess)
def time_loop(fn, min_s: float = 0.05, repeats: int = 3) -> tuple[float, float]:
    """(CPU s, wall s) per call of ``fn``: the best of ``repeats`` loops of at least ``min_s`` CPU seconds."""
    for _ in range(3):
        fn()
    reps = 1
    while True:
        t = time.process_time()
        for _ in range(reps):
            fn()
        spent = time.process_time() - t
        if spent >= min_s / 4:
            break
        reps *= 4
    reps = max(1, math.ceil(reps * min_s / spent))
    best_cpu = best_wall = float("inf")
    for _ in range(repeats):
        c, w = time.process_time(), time.perf_counter()
        for _ in range(reps):
            fn()
        best_cpu = min(best_cpu, (time.process_time() - c) / reps)
        best_wall = min(best_wall, (time.perf_counter() - w) / reps)
    return best_cpu, best_wall


def gemm_worker(shapes: list[list[int]]) -> dict:
    import gymnasium as gym
    import numpy as np
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    a, b = torch.randn(PEAK_N, PEAK_N), torch.randn(PEAK_N, PEAK_N)
    c = torch.empty(PEAK_N, PEAK_N)
    torch.mm(a, b, out=c)
    peak_cpu = peak_wall = float("inf")
    for _ in range(5):
        t, w = time.process_time(), time.perf_counter()
        torch.mm(a, b, out=c)
        peak_cpu, peak_wall = min(peak_cpu, time.process_time() - t), min(peak_wall, time.perf_counter() - w)
    del a, b, c
    out = {"peak": {"shape": [PEAK_N] * 3, "cpu_s": peak_cpu, "wall_s": peak_wall,
                    "gflops_cpu": 2 * PEAK_N**3 / peak_cpu / 1e9, "gflops_wall": 2 * PEAK_N**3 / peak_wall / 1e9},
           "shapes": {}, "env_step_ms": {}}
    for m, k, n in shapes:
        x, y, z = torch.randn(m, k), torch.randn(k, n), torch.empty(m, n)
        cpu, wall = time_loop(lambda x=x, y=y, z=z: torch.mm(x, y, out=z))
        out["shapes"][f"{m}x{k}x{n}"] = {"cpu_us": cpu * 1e6, "wall_us": wall * 1e6,
                                         "gflops_cpu": 2 * m * k * n / cpu / 1e9}
    for env_id in ENVS.values():  # the simulator alone: random actions, resets on episode end
        env = gym.make(env_id)
        env.reset(seed=0)
        env.action_space.seed(0)
        actions = [env.action_space.sample() for _ in range(2000)]
        c, w = time.process_time(), time.perf_counter()
        for action in actions:
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()
        out["env_step_ms"][env_id] = {"cpu": (time.process_time() - c) / 2, "wall": (time.perf_counter() - w) / 2}
        env.close()
    out["numpy"] = np.__version__
    return out


def run_config(agent: str, learning_starts: int, steps: int):
    cfg = preset_config(agent, "hopper")
    from rlkit.config import apply_overrides

    return apply_overrides(cfg, {"seed": 0, "total_steps": learning_starts + steps, "learning_starts": learning_starts,
                                 "train_every": 1, "gradient_steps": 1, "progress": False, "eval_episodes": 1,
                                 "eval_every": 0})


def run_rlkit(agent: str, learning_starts: int, steps: int, run_dir: str) -> dict:
    from rlkit.engine import off_policy
    from rlkit.registry import get_agent

    cfg = run_config(agent, learning_starts, steps)
    cfg.run_dir = run_dir
    marks: dict[str, tuple[float, float]] = {}
    iteration = off_policy._Loop.iteration

    def timed(loop) -> None:
        if loop.global_step == learning_starts:
            marks["start"] = (time.process_time(), time.perf_counter())
        iteration(loop)
        if loop.global_step >= loop.cfg.total_steps:
            marks["end"] = (time.process_time(), time.perf_counter())

    off_policy._Loop.iteration = timed
    c0, w0 = time.process_time(), time.perf_counter()
    get_agent(agent).train(cfg)
    total = (time.process_time() - c0, time.perf_counter() - w0)
    return window(marks, total)


def run_sb3(agent: str, learning_starts: int, steps: int) -> dict:
    import gymnasium as gym
    import numpy as np
    from stable_baselines3 import SAC, TD3
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.noise import NormalActionNoise

    cfg = run_config(agent, learning_starts, steps)
    marks: dict[str, tuple[float, float]] = {}

    class Clock(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps == learning_starts:
                marks["start"] = (time.process_time(), time.perf_counter())
            return True

        def _on_training_end(self) -> None:
            marks["end"] = (time.process_time(), time.perf_counter())

    c0, w0 = time.process_time(), time.perf_counter()
    env = gym.make(cfg.env_id)
    common = {"buffer_size": cfg.buffer_size, "learning_starts": learning_starts, "batch_size": cfg.batch_size,
              "tau": cfg.tau, "gamma": cfg.gamma, "train_freq": 1, "gradient_steps": 1, "seed": 0, "device": "cpu",
              "policy_kwargs": {"net_arch": list(cfg.hidden)}}
    if agent == "td3":
        assert cfg.actor_lr == cfg.critic_lr and cfg.noise == "gaussian"
        half = (env.action_space.high - env.action_space.low) / 2  # rlkit's noise is in units of the half-range
        model = TD3("MlpPolicy", env, learning_rate=cfg.actor_lr, policy_delay=cfg.policy_delay,
                    target_policy_noise=cfg.target_noise, target_noise_clip=cfg.target_noise_clip,
                    action_noise=NormalActionNoise(np.zeros_like(half), cfg.noise_std * half), **common)
    else:
        model = SAC("MlpPolicy", env, learning_rate=cfg.lr, ent_coef="auto", **common)
    model.learn(learning_starts + steps, callback=Clock())
    total = (time.process_time() - c0, time.perf_counter() - w0)
    return window(marks, total)


def window(marks: dict[str, tuple[float, float]], total: tuple[float, float]) -> dict:
    (c0, w0), (c1, w1) = marks["start"], marks["end"]
    return {"window_cpu_s": c1 - c0, "window_wall_s": w1 - w0, "process_cpu_s": total[0], "process_wall_s": total[1]}


def worker(kind: str, arg: str, learning_starts: int, steps: int) -> None:
    import torch

    torch.set_num_threads(1)
    if kind == "gemm":
        out = gemm_worker(json.loads(Path(arg).read_text()))
    elif kind == "rlkit":
        root = "/dev/shm" if Path("/dev/shm").is_dir() else None  # run files on tmpfs, away from others' disk traffic
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            out = run_rlkit(arg, learning_starts, steps, str(Path(tmp) / "run"))
    else:
        out = run_sb3(arg, learning_starts, steps)
    print("RESULT " + json.dumps(out))


def launch(kind: str, arg: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, arg, "--steps", str(args.steps),
           "--learning-starts", str(args.learning_starts)]
    env = {**os.environ, **THREAD_ENV, "PYTHONPATH": str(ROOT)}
    load = os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"worker {kind} {arg} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(line[len("RESULT "):])
    out["loadavg_1min_before_after"] = [load, os.getloadavg()[0]]
    return out


# ---------------------------------------------------------------------------------------------- long runs
def long_runs() -> dict:
    out = {}
    for name in LONG_RUNS:
        base = ROOT / "benchmarks" / "results" / "reproduce" / name
        if not base.is_dir():
            out[name] = {"present": False}
            continue
        seeds = {}
        for seed_dir in sorted(base.glob("seed_*")):
            final = seed_dir / "final.json"
            if not final.is_file():
                seeds[seed_dir.name] = {"final_json": False}
                continue
            result = json.loads(final.read_text())
            seeds[seed_dir.name] = row = {
                "env_steps": result["env_steps"], "wall_s": result["wall_s"],
                "steps_per_s": result["env_steps"] / result["wall_s"],
                "ms_per_step": 1e3 * result["wall_s"] / result["env_steps"],
                "processes": len(list(seed_dir.glob("events.out.tfevents.*"))),  # > 1: resumed
                "best_eval_mean": result.get("best_eval_mean")}
            metrics = seed_dir / "metrics.csv"
            if metrics.is_file():  # the typical 1000-step log interval: pauses and evaluations drop out of a median
                with metrics.open() as fh:
                    rows = [(int(r["global_step"]), float(r["wall_s"])) for r in csv.DictReader(fh)]
                per_step = [(w1 - w0) / (s1 - s0) for (s0, w0), (s1, w1) in zip(rows, rows[1:]) if s1 > s0]
                if per_step:
                    row["median_ms_per_step_over_log_intervals"] = 1e3 * statistics.median(per_step)
        out[name] = {"present": True, "seeds": seeds,
                     "note": "wall clock of whole runs beside other jobs on the 2 shared cores, periodic evaluations "
                             "included (every 5000 steps, 10 episodes); 'processes' > 1: the run was resumed, and "
                             "its wall_s then includes the time it stood still; the median over the metrics.csv "
                             "log intervals leaves such pauses and the evaluations out"}
    return out


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000, help="training steps timed after learning_starts")
    parser.add_argument("--learning-starts", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2, help="runs per (library, agent), the order flipped each round")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "mujoco_flop_floor.json"))
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "ARG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker, args.learning_starts, args.steps)
        return
    t0 = time.perf_counter()
    load_before = os.getloadavg()
    analysis = {(agent, preset): analyse(agent, preset) for agent in AGENTS for preset in ENVS}
    shapes = sorted({tuple(g[:3]) for a in analysis.values() for g in a["gemms"]})
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump([list(s) for s in shapes], f)
    try:
        rates = launch("gemm", f.name, args)
    finally:
        os.unlink(f.name)
    peak = rates["peak"]["gflops_cpu"] * 1e9
    print(f"peak {rates['peak']['gflops_cpu']:.1f} GFLOP/s (CPU time; {rates['peak']['gflops_wall']:.1f} wall)",
          flush=True)

    measured: dict[str, dict[str, list[dict]]] = {agent: {"rlkit": [], "sb3": []} for agent in AGENTS}
    for rnd in range(args.rounds):  # round 0: TD3 rlkit then SB3, SAC SB3 then rlkit; each round flips the orders
        for i, agent in enumerate(AGENTS):
            for lib in (("rlkit", "sb3") if (rnd + i) % 2 == 0 else ("sb3", "rlkit")):
                r = launch(lib, agent, args)
                r.update(round=rnd, cpu_ms_per_step=1e3 * r["window_cpu_s"] / args.steps,
                         wall_ms_per_step=1e3 * r["window_wall_s"] / args.steps)
                measured[agent][lib].append(r)
                print(f"round {rnd} {lib:5} {agent} Hopper-v5: {r['cpu_ms_per_step']:.2f} ms/step CPU, "
                      f"{r['wall_ms_per_step']:.2f} wall ({args.steps} training steps)", flush=True)

    results = {}
    for (agent, preset), a in analysis.items():
        matmul_time = sum(count * rates["shapes"][f"{m}x{k}x{n}"]["cpu_us"] * 1e-6 for m, k, n, count in a["gemms"])
        small_rate = a["matmul_flops_per_step"] / matmul_time
        total = a["flops_per_step"]["total"]
        row = {**a, "small_shape_gflops": small_rate / 1e9,
               "floor_ms_per_step": {"at_peak": 1e3 * total / peak, "at_small_shape_rate": 1e3 * total / small_rate},
               "env_step_ms": rates["env_step_ms"][a["env_id"]]}
        if preset == "hopper":
            row["measured"] = {}
            for lib, runs in measured[agent].items():
                cpu = statistics.mean(r["cpu_ms_per_step"] for r in runs)
                wall = statistics.mean(r["wall_ms_per_step"] for r in runs)
                row["measured"][lib] = {
                    "cpu_ms_per_step": cpu, "wall_ms_per_step": wall,
                    "steps_per_s_cpu": 1e3 / cpu, "steps_per_s_wall": 1e3 / wall,
                    "cpu_over_floor_at_peak": cpu / row["floor_ms_per_step"]["at_peak"],
                    "cpu_over_floor_at_small_shape_rate": cpu / row["floor_ms_per_step"]["at_small_shape_rate"],
                    "cpu_ms_per_step_each_round": [r["cpu_ms_per_step"] for r in runs], "runs": runs}
            row["measured"]["rlkit_over_sb3_cpu"] = row["measured"]["rlkit"]["cpu_ms_per_step"] \
                / row["measured"]["sb3"]["cpu_ms_per_step"]
        results[f"{agent}-{preset}"] = row

    import gymnasium
    import mujoco
    import stable_baselines3
    import torch

    out = {
        "benchmark": "FLOP floor of TD3 and SAC (rlkit presets) on Hopper-v5 / HalfCheetah-v5, beside rlkit and SB3 "
                     "measured on Hopper-v5 (issue 22)",
        "command": "python benchmarks/mujoco_flop_floor.py " + " ".join(sys.argv[1:]),
        "settings": {"steps": args.steps, "learning_starts": args.learning_starts, "seed": 0, "torch_threads": 1,
                     "train_every": 1, "gradient_steps": 1, "measured_env": "Hopper-v5",
                     "adam_flops_per_param": ADAM_FLOPS_PER_PARAM, "polyak_flops_per_param": POLYAK_FLOPS_PER_PARAM,
                     "timing": "inside the run: from the step counter reaching learning_starts to the end of the "
                               "last training step; CPU = time.process_time of the worker process",
                     "rounds": args.rounds, "measured_figure": "mean over the rounds",
                     "order": "round 0: td3 rlkit, sb3; sac sb3, rlkit; every round flips both"},
        "versions": {"torch": torch.__version__, "stable_baselines3": stable_baselines3.__version__,
                     "gymnasium": gymnasium.__version__, "mujoco": mujoco.__version__, "numpy": rates["numpy"],
                     "python": sys.version.split()[0]},
        "machine": f"2 shared cores ({os.cpu_count()} CPUs seen), other jobs running; torch "
                   f"{torch.backends.cpu.get_cpu_capability()}",
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "peak": rates["peak"], "gemm_shapes": rates["shapes"],
        "results": results, "long_runs": long_runs(), "total_wall_s": time.perf_counter() - t0,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")

    print(f"\n{'agent-env':18} {'params':>8} {'MFLOP/step':>10} {'floor@peak':>10} {'floor@small':>11} "
          f"{'rlkit cpu/wall':>15} {'SB3 cpu/wall':>15} (ms/step)")
    for key, r in results.items():
        f = r["floor_ms_per_step"]
        cells = [f"{r['measured'][lib]['cpu_ms_per_step']:6.2f}/{r['measured'][lib]['wall_ms_per_step']:6.2f}"
                 if "measured" in r else f"{'-':>13}" for lib in ("rlkit", "sb3")]
        print(f"{key:18} {r['params']['trained']:8d} {r['flops_per_step']['total'] / 1e6:10.1f} "
              f"{f['at_peak']:10.3f} {f['at_small_shape_rate']:11.3f} {cells[0]:>15} {cells[1]:>15}")
    print(f"wrote {args.out} ({out['total_wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
