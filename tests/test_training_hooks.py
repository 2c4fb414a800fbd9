"""What every training run offers: evaluation rows at exact steps, the best checkpoint, target_return and
callbacks (rlkit.run, rlkit.callbacks), for every registered agent."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from rlkit.agents.dqn import DQNConfig
from rlkit.agents.dqn import train as train_dqn

from rlkit import demos
from rlkit.callbacks import Event, StopOnPlateau
from rlkit.checkpoint import list_checkpoints, load_checkpoint, read_checksums
from rlkit.config import apply_overrides
from rlkit.registry import agent_names, get_agent
from tests.test_faults_run import rlkit  # rlkit ARGS in this process: (exit status, stdout, stderr)

DQN_TINY = dict(env_id="CartPole-v1", total_steps=600, learning_starts=100, batch_size=16, buffer_size=500,
                hidden=[16], eval_episodes=2, checkpoint_every=0, log_every=1000, progress=False, tensorboard=False)


def dqn(tmp_path: Path, name: str = "run", **over) -> DQNConfig:
    return DQNConfig(**{**DQN_TINY, "run_dir": str(tmp_path / name), **over})


def rows(run_dir: str | Path) -> list[dict[str, str]]:
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def evaluations(run_dir: str | Path) -> dict[int, float]:
    return {int(r["global_step"]): float(r["eval/mean_return"]) for r in rows(run_dir) if r["eval/mean_return"]}


# ------------------------------------------------------------------------------------ evaluation cadence
@pytest.mark.parametrize("log_every", [1000, 100])
def test_evaluations_write_their_own_rows_at_exact_steps(tmp_path, log_every):
    result = train_dqn(dqn(tmp_path, eval_every=150, log_every=log_every))
    steps = [int(r["global_step"]) for r in rows(result["run_dir"])]
    assert list(evaluations(result["run_dir"])) == [150, 300, 450, 600]  # not snapped to the log cadence
    # one row per step: the final evaluation at 600 is not a second row, nor is an evaluation at a log step
    assert steps == ([150, 300, 450, 600] if log_every == 1000 else [100, 150, 200, 300, 400, 450, 500, 600])


# ------------------------------------------------------------------------------------ best checkpoint
def test_best_checkpoint_is_the_best_evaluation_and_eval_picks_it(tmp_path, capsys):
    result = train_dqn(dqn(tmp_path, eval_every=100, total_steps=800, checkpoint_every=400, learning_starts=50))
    run = Path(result["run_dir"])
    evals = evaluations(run)
    best_mean = max(evals.values())
    best_step = min(step for step, mean in evals.items() if mean == best_mean)  # a tie keeps the earlier one
    sidecar = read_checksums(run / "checkpoints" / "best")
    assert sidecar["best_return"] == best_mean and sidecar["step"] == best_step
    assert result["best_eval_mean"] == best_mean
    assert [p.name for p in list_checkpoints(run)] == ["step_0000000400", "step_0000000800"]  # best/ is apart

    # Scoring the best checkpoint again with the training evaluation's seed and episodes gives its number.
    code, out, err = rlkit(capsys, "eval", run, "--checkpoint", "best", "--episodes", 2, "--seed", 10_000, "--json")
    assert code == 0, err
    scored = json.loads(out)
    assert scored["checkpoint_step"] == best_step and scored["checkpoint"].endswith("best")
    assert scored["mean"] == pytest.approx(best_mean)
    code, out, _ = rlkit(capsys, "eval", run, "--checkpoint", "400", "--episodes", 1, "--json")
    assert code == 0 and json.loads(out)["checkpoint_step"] == 400
    code, out, _ = rlkit(capsys, "eval", run, "--episodes", 1, "--json")
    assert code == 0 and json.loads(out)["checkpoint_step"] == 800  # latest by default

    for bad, message in [("123", "no checkpoint at step 123; its steps: 400, 800"),
                         ("worst", "is not latest, best or a step number")]:
        code, _, err = rlkit(capsys, "eval", run, "--checkpoint", bad)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1

    # The recorder and DAgger take the same choice.
    stats = demos.record(demos.resolve_policy(str(run), "CartPole-v1", checkpoint="best"), "CartPole-v1",
                         episodes=1, out=tmp_path / "demos", seed=10_000)
    assert stats["total_episodes"] == 1
    code, _, err = rlkit(capsys, "demos", "record", "--env", "CartPole-v1", "--policy", run, "--checkpoint", "7",
                         "--episodes", "1", "--out", tmp_path / "d2")
    assert code == 2 and "no checkpoint at step 7" in err


def test_dagger_refuses_an_expert_checkpoint_that_is_no_checkpoint_choice():
    from rlkit.agents.dagger import DAggerConfig

    from rlkit.errors import RLKitError

    for good in ("latest", "best", "40000"):
        DAggerConfig(expert_checkpoint=good).validate()
    with pytest.raises(RLKitError, match="expert_checkpoint must be latest, best or a step number; got 'worst'"):
        DAggerConfig(expert_checkpoint="worst").validate()


def test_a_run_without_evaluations_has_no_best_and_says_so(tmp_path, capsys):
    result = train_dqn(dqn(tmp_path, total_steps=200))
    best = Path(result["run_dir"]) / "checkpoints" / "best"
    assert best.is_dir()  # the final evaluation is the only one, so it is the best
    assert load_checkpoint(best)["global_step"] == 200
    empty = tmp_path / "empty"
    (empty / "checkpoints" / "step_0000000100").mkdir(parents=True)
    code, _, err = rlkit(capsys, "eval", empty, "--checkpoint", "best")
    assert code == 2 and "has no best checkpoint" in err


def test_resume_keeps_the_best_of_the_first_part(tmp_path):
    first = train_dqn(dqn(tmp_path, eval_every=100, total_steps=400, checkpoint_every=200))
    best_before = read_checksums(Path(first["run_dir"]) / "checkpoints" / "best")
    again = train_dqn(dqn(tmp_path, eval_every=100, total_steps=800, checkpoint_every=200), resume=True)
    evals = evaluations(again["run_dir"])
    best_after = read_checksums(Path(again["run_dir"]) / "checkpoints" / "best")
    assert best_after["best_return"] == max(evals.values()) >= best_before["best_return"]
    if max(v for s, v in evals.items() if s > 400) <= best_before["best_return"]:
        assert best_after["step"] == best_before["step"]  # nothing later beat it: the first part's best stays


# ------------------------------------------------------------------------------------ callbacks
def test_callbacks_see_rows_evaluations_and_checkpoints_and_can_stop(tmp_path):
    seen: list[tuple[str, int, bool]] = []

    def observe(event: Event) -> None:
        seen.append((event.kind, event.step, event.final))

    def stop_at_second_evaluation(event: Event) -> bool:
        return event.kind == "eval" and event.step == 200

    result = train_dqn(dqn(tmp_path, eval_every=100, log_every=50, checkpoint_every=100, total_steps=1000),
                       callbacks=[observe, stop_at_second_evaluation])
    assert result["env_steps"] == 200
    assert result["stopped"]["reason"] == "callback stop_at_second_evaluation"
    assert result["stopped"]["global_step"] == 200
    periodic = [(k, s) for k, s, final in seen if not final]
    assert periodic == [("log", 50), ("eval", 100), ("log", 100), ("checkpoint", 100), ("log", 150),
                        ("eval", 200), ("log", 200)]  # the stop came at 200: no periodic checkpoint after it
    assert [k for k, _, final in seen if final] == ["checkpoint", "log", "eval"]
    assert [int(r["global_step"]) for r in rows(result["run_dir"])] == [50, 100, 150, 200]


def test_a_callback_exception_ends_the_run_and_propagates(tmp_path):
    def broken(event: Event) -> None:
        if event.kind == "eval":
            raise ValueError("my callback failed")

    with pytest.raises(ValueError, match="my callback failed"):
        train_dqn(dqn(tmp_path, eval_every=100, total_steps=1000), callbacks=[broken])
    assert not (tmp_path / "run" / "final.json").exists()


def test_stop_on_plateau_counts_evaluations_without_improvement():
    stop = StopOnPlateau(patience=2, min_delta=1.0)
    means = [10.0, 12.0, 12.5, 11.0, 30.0, 30.5, 29.0]
    decisions = [stop(Event("eval", i, {"mean": m})) for i, m in enumerate(means)]
    # 12.5 and 11 do not beat 12 by more than 1 -> stop at the 4th; 30 resets; 30.5, 29 -> stop again
    assert decisions == [False, False, False, True, False, False, True]
    assert stop(Event("log", 9, {"mean": 0.0})) is False  # only evaluations count
    with pytest.raises(ValueError):
        StopOnPlateau(patience=0)


# ------------------------------------------------------------------------------------ every agent
class CartPoleRule:
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return (3.0 * obs[:, 2] + obs[:, 3] > 0).astype(np.int64)


class PendulumRule:
    """A damping torque: a behaviour policy for small offline datasets."""

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return np.clip(-0.5 * obs[:, 2:3], -2.0, 2.0).astype(np.float32)


@pytest.fixture(scope="module")
def cartpole_demos(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hooks") / "cartpole"
    demos.record(CartPoleRule(), "CartPole-v1", episodes=2, out=out, seed=0)
    return out


@pytest.fixture(scope="module")
def pendulum_rewards(tmp_path_factory) -> Path:
    """Two Pendulum episodes with rewards (400 transitions): what the offline learners train on."""
    out = tmp_path_factory.mktemp("hooks") / "pendulum"
    demos.record(PendulumRule(), "Pendulum-v1", episodes=2, out=out, seed=0, keep_rewards=True)
    return out


OFFLINE = ("td3_bc", "iql", "cql")


def tiny_config(agent: str, demos_path: Path, rewards_path: Path | None = None) -> dict:
    """The smallest run of each agent that evaluates twice before its budget ends; (config, first eval step)."""
    if agent in OFFLINE:
        return dict(env_id="Pendulum-v1", demos=str(rewards_path), total_steps=600, batch_size=32, hidden=[16],
                    eval_every=200)
    off_policy = dict(total_steps=600, learning_starts=100, batch_size=16, buffer_size=1000, eval_every=200)
    imitation = dict(demos=str(demos_path), env_id="seals:seals/CartPole-v0", total_steps=2048, num_envs=4,
                     ppo_n_steps=128, demo_batch_size=256, n_disc_updates_per_round=1, eval_every=512)
    return {
        "dqn": dict(env_id="CartPole-v1", **off_policy),
        "ddpg": dict(env_id="Pendulum-v1", **off_policy),
        "td3": dict(env_id="Pendulum-v1", **off_policy),
        "sac": dict(env_id="Pendulum-v1", **off_policy),
        "a2c": dict(env_id="CartPole-v1", total_steps=400, num_envs=4, n_steps=5, eval_every=100),
        "ppo": dict(env_id="CartPole-v1", total_steps=1024, num_envs=4, n_steps=32, batch_size=32, n_epochs=1,
                    eval_every=256),
        "a3c": dict(env_id="CartPole-v1", total_steps=1_000_000, num_workers=2, eval_every=500),
        "bc": dict(demos=str(demos_path), epochs=50, eval_every=20),
        "dagger": dict(env_id="rlkit/CurvyRoad-v0", expert="python:rlkit.envs.test_envs:CurvyRoadExpert", rounds=6,
                       episodes_per_round=1, eval_every=1),
        "gail": imitation,
        "airl": imitation,
        "preference": dict(env_id="Pendulum-v1", total_steps=2048, total_comparisons=20, num_iterations=4,
                           num_envs=2, ppo_n_steps=256, fragment_length=10, correlation_steps=200, eval_every=512),
    }[agent]


# seals 0.2.1's CartPole builds its Box from float64 bounds; gymnasium warns about seals' code, not rlkit's
@pytest.mark.filterwarnings("ignore:.*Box (low|high)'s precision lowered:UserWarning")
@pytest.mark.parametrize("agent", agent_names())
def test_every_agent_stops_at_its_target_return_and_keeps_a_best_checkpoint(agent, tmp_path, cartpole_demos,
                                                                             pendulum_rewards):
    spec = get_agent(agent)
    over = {**tiny_config(agent, cartpole_demos, pendulum_rewards), "target_return": -1e9, "eval_episodes": 1,
            "run_dir": str(tmp_path / agent), "progress": False, "tensorboard": False}
    cfg = apply_overrides(apply_overrides(spec.config_cls(), spec.defaults, source="agent defaults"), over)
    result = spec.train(cfg)
    stopped = result["stopped"]
    assert stopped["reason"] == "target_return" and stopped["eval_mean"] > -1e9, result
    # it stopped at its first evaluation, long before its budget
    if agent == "bc":
        assert stopped["global_step"] == result["gradient_steps"] and result["epochs"] < 50
    elif agent in OFFLINE:  # counted in gradient steps, no env steps
        assert stopped["global_step"] == result["gradient_steps"] == cfg.eval_every and result["env_steps"] == 0
    elif agent == "dagger":
        assert stopped["global_step"] == result["env_steps"] and result["rounds"] == 1
    else:
        assert stopped["global_step"] == result["env_steps"] or agent == "a3c"  # a3c: updates in flight
        assert stopped["global_step"] >= cfg.eval_every and result["env_steps"] < cfg.total_steps / 2
    best = tmp_path / agent / "checkpoints" / "best"
    assert read_checksums(best)["step"] == stopped["global_step"]
    assert spec.load_policy(load_checkpoint(best)) is not None
