"""A3C: shared optimizer statistics, Hogwild updates from every worker, shutdown (normal end, a worker's
exception, Ctrl-C) without leftover processes, CLI, resume, learning."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from gymnasium.envs.classic_control.cartpole import CartPoleEnv
from rlkit.agents.a3c import A3C, A3CConfig

from rlkit import envs
from rlkit.checkpoint import list_checkpoints
from rlkit.config import apply_overrides
from rlkit.engine.asynchronous import share, share_optimizer_state, worker
from rlkit.errors import RLKitError
from rlkit.optim import make_optimizer

REPO = Path(__file__).resolve().parents[1]


class CrashOnSeed1(CartPoleEnv):
    """CartPole that raises in step() once reset with seed 1: worker rank 1 of a seed-0 run, nobody else."""

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.crash, self.steps = seed == 1, 0
        return super().reset(seed=seed, options=options)

    def step(self, action):
        self.steps += 1
        if self.crash and self.steps > 200:
            raise ValueError("injected failure")
        return super().step(action)


CRASH_ID = "rlkit_test/CrashOnSeed1-v0"
if CRASH_ID not in gym.envs.registry:
    gym.register(CRASH_ID, entry_point=f"{__name__}:CrashOnSeed1", max_episode_steps=500)


def marked_processes(marker: str) -> list[int]:
    """Live processes whose environment carries ``marker`` (a run's children inherit it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes() \
                    and (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def rlkit(*args: str, marker: str, wait: bool = True, timeout: float = 240):
    env = {**os.environ, "PYTHONHASHSEED": "0", "RLKIT_TEST_MARKER": marker}
    cmd = [sys.executable, "-m", "rlkit.apps.cli", *args]
    if wait:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env,
                            start_new_session=True)  # its own process group, as a shell gives a foreground job


def assert_no_leftovers(marker: str) -> None:
    deadline = time.monotonic() + 10  # multiprocessing's helpers exit when they see their parent's pipe close
    while marked_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marked_processes(marker) == []


SMALL = ["--preset", "none", "--set", "num_workers=2", "--set", "hidden=[16]", "--set", "eval_episodes=2",
         "--no-progress"]


@pytest.mark.parametrize("kind, centered", [("rmsprop", False), ("rmsprop", True), ("adam", False)])
def test_shared_optimizer_state_matches_torch(kind, centered):
    torch.manual_seed(0)
    shared, plain = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    plain.load_state_dict(shared.state_dict())
    opt_shared = make_optimizer(shared.parameters(), kind, 0.01, 1e-5, 0.99, centered=centered)
    opt_plain = make_optimizer(plain.parameters(), kind, 0.01, 1e-5, 0.99, centered=centered)
    states = share_optimizer_state(opt_shared)
    assert all(t.is_shared() for state in states for t in state.values())
    for _ in range(3):  # torch's own lazily created state and ours give the same steps
        x = torch.randn(4, 3)
        for model, opt in ((shared, opt_shared), (plain, opt_plain)):
            opt.zero_grad()
            model(x).pow(2).sum().backward()
            opt.step()
    for a, b in zip(shared.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b)
    assert states[0]["step"].item() == 3


def test_the_policy_acts_with_the_shared_weights():
    # The workers write into shared memory; a policy that viewed the weights before they moved there would
    # keep evaluating the initial network.
    env = envs.make_env("CartPole-v1")
    shared = A3C(A3CConfig(hidden=[8]), env.observation_space, env.action_space)
    assert all(p.is_shared() for p in shared.model.parameters())
    obs = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    for favoured in (0, 1):
        with torch.no_grad():
            shared.model.policy.logits.bias.copy_(torch.tensor([10.0, -10.0] if favoured == 0 else [-10.0, 10.0]))
        assert (shared.policy.act(obs) == favoured).all()


@pytest.mark.parametrize("start_method, ranks", [("fork", [0, 1]), ("spawn", [1])])
def test_every_worker_update_changes_shared_parameters(start_method, ranks):
    """Each worker process, run for exactly one update, moves the parent's shared weights and statistics."""
    cfg = A3CConfig(num_workers=2, t_max=5, total_steps=5, hidden=[16], start_method=start_method)
    env = envs.make_env(cfg.env_id)
    learner = A3C(cfg, env.observation_space, env.action_space)  # the model in shared memory
    model, ctx = learner.model, mp.get_context(start_method)
    shared = share(learner, ctx, num_workers=2, first_step=0)
    for done, rank in enumerate(ranks, start=1):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        shared.counter.value = 0  # a budget of one rollout
        p = ctx.Process(target=worker, args=(rank, A3C, cfg, shared, 0))
        p.start()
        p.join(120)
        assert p.exitcode == 0 and shared.messages.empty()
        assert shared.updates[rank] == 1 and shared.counter.value == 5
        after = model.state_dict()
        assert all(not torch.equal(before[k], after[k]) for k in before), "a parameter missed the worker's update"
        assert shared.optim_state[0]["step"].item() == done  # the shared statistics, not a copy, were updated
        assert all(state["square_avg"].abs().sum() > 0 for state in shared.optim_state)


def test_cli_normal_end_eval_resume_and_no_leftovers(tmp_path):
    marker, run_dir = uuid.uuid4().hex, str(tmp_path / "run")
    out = rlkit("train", "a3c", "--env", "CartPole-v1", "--steps", "3000", "--run-dir", run_dir, "--json",
                "--set", "checkpoint_every=1000", "--set", "log_every=500", *SMALL, marker=marker)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["env_steps"] == 3000 and result["start_method"] == "fork"
    assert len(result["worker_updates"]) == 2 and all(n > 0 for n in result["worker_updates"])
    assert sum(result["worker_updates"]) * 5 == 3000
    assert list_checkpoints(run_dir) and list(Path(run_dir).glob("events.out.tfevents.*"))
    header = (Path(run_dir) / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"charts/episode_return", "losses/policy_loss", "charts/steps_per_second"} <= set(header)
    assert_no_leftovers(marker)

    ev = rlkit("eval", run_dir, "--episodes", "2", "--json", marker=marker)
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["agent"] == "a3c"
    resumed = rlkit("train", "a3c", "--resume", run_dir, "--steps", "4000", "--json", marker=marker)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["env_steps"] == 4000
    assert_no_leftovers(marker)


def test_worker_exception_stops_everything_with_traceback(tmp_path):
    marker, run_dir = uuid.uuid4().hex, tmp_path / "crash"
    out = rlkit("train", "a3c", "--env", f"tests.test_a3c:{CRASH_ID}", "--steps", "1000000", "--run-dir",
                str(run_dir), *SMALL, marker=marker)
    assert out.returncode == 1, out.stderr
    assert "A3C worker 1 failed" in out.stderr and "ValueError: injected failure" in out.stderr
    assert "in step" in out.stderr  # the worker's own frames, not just the main process's
    assert list_checkpoints(run_dir)
    assert not (run_dir / "final.json").exists()
    assert_no_leftovers(marker)


def test_ctrl_c_stops_everything_and_keeps_a_checkpoint(tmp_path):
    marker, run_dir = uuid.uuid4().hex, tmp_path / "interrupted"
    proc = rlkit("train", "a3c", "--env", "CartPole-v1", "--steps", "10000000", "--run-dir", str(run_dir),
                 "--set", "log_every=500", *SMALL, marker=marker, wait=False)
    deadline = time.monotonic() + 120
    while not (run_dir / "metrics.csv").exists():  # the workers are training once metrics appear
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    assert len(marked_processes(marker)) >= 3  # main + 2 workers
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    assert list_checkpoints(run_dir)
    assert_no_leftovers(marker)


def test_config_errors():
    with pytest.raises(RLKitError, match="num_workers"):
        apply_overrides(A3CConfig(), {"num_workers": -1})
    with pytest.raises(RLKitError, match="one torch thread"):
        apply_overrides(A3CConfig(), {"torch_threads": 2})
    with pytest.raises(RLKitError, match="start_method"):
        apply_overrides(A3CConfig(), {"start_method": "forkserver"})
    with pytest.raises(RLKitError, match="CPU memory; drop device=cuda"):
        apply_overrides(A3CConfig(), {"device": "cuda"})


@pytest.mark.slow
def test_pong_preset_smoke(tmp_path):
    pytest.importorskip("ale_py")
    from rlkit.agents.a3c import AGENT, train

    from rlkit.config import resolve_preset

    cfg = apply_overrides(A3CConfig(), resolve_preset(AGENT.presets(), "pong", "a3c"))
    assert (cfg.num_workers, cfg.t_max, cfg.optimizer, cfg.rmsprop_alpha, cfg.ent_coef) == (16, 5, "rmsprop", 0.99,
                                                                                          0.01)
    cfg = apply_overrides(cfg, {"num_workers": 2, "total_steps": 200, "eval_episodes": 1, "progress": False,
                                "run_dir": str(tmp_path / "pong"), "env_kwargs": {"max_num_frames_per_episode": 400}})
    result = train(cfg)
    assert result["env_steps"] == 200 and np.isfinite(result["eval"]["mean"])


@pytest.mark.slow
def test_learns_cartpole_with_two_workers(tmp_path):
    from rlkit.agents.a3c import AGENT, train

    from rlkit.config import resolve_preset

    cfg = apply_overrides(A3CConfig(), resolve_preset(AGENT.presets(), "cartpole", "a3c"))
    cfg = apply_overrides(cfg, {"num_workers": 2, "seed": 0, "run_dir": str(tmp_path / "cp"), "progress": False})
    result = train(cfg)
    assert result["eval"]["mean"] >= 475, result["eval"]
