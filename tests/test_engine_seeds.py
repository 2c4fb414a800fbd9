"""Several seeds in one process (rlkit.engine.off_policy.train_off_policy_seeds) with the real agents: each seed
is a whole run (its files, RNG streams, resume); unstacked it equals the single runs bit for bit (SAC draws from
torch's RNG in acting and updating, so this checks the streams are kept apart); stacked DQN is deterministic for
a seed set and lands where single runs do; a kill -9 resumes every seed, also from checkpoints of different
steps."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from rlkit.agents import dqn, sac

from rlkit.checkpoint import list_checkpoints, load_checkpoint
from rlkit.config import apply_overrides
from rlkit.registry import get_agent, train_seeds

QUIET = {"progress": False, "tensorboard": False, "eval_episodes": 3, "log_every": 100}


def dqn_configs(root: Path, seeds, **changes):
    base = {**QUIET, "env_id": "CartPole-v1", "total_steps": 1_200, "learning_starts": 200, "train_every": 50,
            "gradient_steps": 8, "batch_size": 32, "target_update_every": 200, "hidden": [32, 32],
            "checkpoint_every": 400, **changes}
    return [apply_overrides(dqn.DQNConfig(), {**base, "seed": s, "run_dir": str(root / f"seed{s}")}) for s in seeds]


def sac_configs(root: Path, seeds):
    base = {**QUIET, "env_id": "Pendulum-v1", "total_steps": 400, "learning_starts": 100, "batch_size": 32,
            "hidden": [32, 32], "checkpoint_every": 200}
    return [apply_overrides(sac.SACConfig(), {**base, "seed": s, "run_dir": str(root / f"seed{s}")}) for s in seeds]


def final_weights(run_dir: str) -> dict[str, torch.Tensor]:
    state = load_checkpoint(run_dir)
    return {f"{net}.{k}": v for net in ("q_net", "actor", "critic1") if net in state for k, v in state[net].items()}


def learning_rows(run_dir: str) -> list[dict[str, str]]:
    """metrics.csv without its clock columns."""
    with open(Path(run_dir, "metrics.csv"), newline="") as f:
        return [{k: v for k, v in row.items() if k not in ("wall_s", "charts/steps_per_second")}
                for row in csv.DictReader(f)]


def assert_same_runs(a: str, b: str) -> None:
    """Two run directories that trained the same numbers: metrics, final weights and final return."""
    assert learning_rows(a) == learning_rows(b)
    wa, wb = final_weights(a), final_weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    finals = [json.loads(Path(run, "final.json").read_text()) for run in (a, b)]
    assert finals[0]["eval"] == finals[1]["eval"]


@pytest.mark.parametrize("agent", ["sac", "dqn"])
def test_unstacked_seeds_equal_single_runs(tmp_path, agent):
    """SAC (torch RNG in acting and updates) and DQN on the plain update path: seeds 0 and 3 in one process give
    exactly what two separate runs give, file by file."""
    make = sac_configs if agent == "sac" else lambda root, seeds: dqn_configs(root, seeds, fused_update=False)
    together = get_agent(agent).train_seeds(make(tmp_path / "together", [0, 3]))
    alone = [get_agent(agent).train(cfg) for cfg in make(tmp_path / "alone", [0, 3])]
    assert [r["seed"] for r in together] == [0, 3]
    for t, a in zip(together, alone):
        assert_same_runs(t["run_dir"], a["run_dir"])
        assert t["env_steps"] == a["env_steps"]


def test_stacked_dqn_runs_are_whole_and_deterministic(tmp_path):
    """Stacked DQN: each seed writes a single run's files, and the same seed set gives the same numbers again."""
    first = train_seeds(get_agent("dqn"), dqn_configs(tmp_path / "a", [0, 1, 2]))
    second = train_seeds(get_agent("dqn"), dqn_configs(tmp_path / "b", [0, 1, 2]))
    for r1, r2 in zip(first, second):
        run = Path(r1["run_dir"])
        assert {"config.json", "metrics.csv", "final.json", "checkpoints"} <= {p.name for p in run.iterdir()}
        assert json.loads((run / "config.json").read_text())["seed"] == r1["seed"]
        assert len(list_checkpoints(run)) >= 2
        assert_same_runs(r1["run_dir"], r2["run_dir"])
    biases = [final_weights(r["run_dir"])["q_net.head.bias"] for r in first]
    assert not torch.equal(biases[0], biases[1])  # the seeds are different runs


def test_stacked_dqn_lands_where_single_runs_do(tmp_path):
    """Five stacked seeds against five single runs at a small budget (CartPole, 64-unit nets, 8k steps): the
    stacked mean lies inside the singles' 95% CI. Measured: singles 258.4 +- 101.3 (146.7 to 344.1),
    stacked 228.4."""
    changes = dict(total_steps=8_000, learning_starts=500, train_every=64, gradient_steps=32, batch_size=64,
                   hidden=[64, 64], target_update_every=500, exploration_fraction=0.2, lr=2.3e-3,
                   checkpoint_every=0, eval_episodes=10)
    stacked = train_seeds(get_agent("dqn"), dqn_configs(tmp_path / "stacked", range(5), **changes))
    singles = [dqn.train(cfg) for cfg in dqn_configs(tmp_path / "singles", range(5), **changes)]
    single_means = np.array([r["eval"]["mean"] for r in singles])
    half_width = 2.776 * single_means.std(ddof=1) / np.sqrt(5)  # t(0.975, 4 degrees of freedom)
    stacked_mean = float(np.mean([r["eval"]["mean"] for r in stacked]))
    assert abs(stacked_mean - single_means.mean()) <= half_width, (stacked_mean, single_means)


def test_dqn_stacks_only_seeds_of_one_config():
    """The stacked round takes one learning rate and schedule for all: configs that differ in more than seed and
    run directory (here the learning rate) train side by side, each alone."""
    import gymnasium as gym

    space, actions = gym.spaces.Box(-1, 1, (4,), np.float32), gym.spaces.Discrete(2)
    same = [dqn.DQN(cfg, space, actions, np.random.default_rng(0)) for cfg in dqn_configs(Path("/tmp"), [0, 1])]
    assert dqn.DQN.stack(same) is not None
    other = dqn_configs(Path("/tmp"), [0, 1])
    other[1].lr = 1e-4
    assert dqn.DQN.stack([dqn.DQN(cfg, space, actions, np.random.default_rng(0)) for cfg in other]) is None


KILLED_RUN = """
import sys
from pathlib import Path
from rlkit.agents import dqn
from rlkit.config import apply_overrides
root = Path(sys.argv[1])
cfgs = [apply_overrides(dqn.DQNConfig(), {"env_id": "CartPole-v1", "total_steps": int(sys.argv[2]), "seed": s,
        "learning_starts": 200, "train_every": 50, "gradient_steps": 8, "batch_size": 32, "hidden": [32, 32],
        "checkpoint_every": 500, "progress": False, "tensorboard": False, "eval_episodes": 2,
        "run_dir": str(root / f"seed{s}")}) for s in (0, 1)]
dqn.train_seeds(cfgs, resume=len(sys.argv) > 3)
"""


def test_kill_9_resumes_every_seed(tmp_path):
    """SIGKILL a two-seed process once both seeds have checkpoints; drop seed 1's newest so the seeds resume from
    different steps; the resumed process catches seed 1 up and finishes both."""
    script = tmp_path / "seeds.py"
    script.write_text(KILLED_RUN)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path), "1000000"], env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and min(len(list_checkpoints(tmp_path / f"seed{s}")) for s in (0, 1)) < 2:
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    steps = {s: [int(p.name.split("_")[1]) for p in list_checkpoints(tmp_path / f"seed{s}")] for s in (0, 1)}
    assert min(len(v) for v in steps.values()) >= 2, steps
    newest = list_checkpoints(tmp_path / "seed1")[-1]
    for part in sorted(newest.rglob("*"), reverse=True):
        part.unlink() if part.is_file() else part.rmdir()
    newest.rmdir()
    total = max(steps[0]) + 1_000
    subprocess.run([sys.executable, str(script), str(tmp_path), str(total), "resume"], env=env, check=True,
                   timeout=300)
    for s in (0, 1):
        final = json.loads((tmp_path / f"seed{s}" / "final.json").read_text())
        assert final["env_steps"] == total and final["seed"] == s
