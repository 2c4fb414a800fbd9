"""DAgger: the beta schedule, on-disk labels and resume, the CLI, and beating BC under covariate shift."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rlkit.agents.bc import BCConfig
from rlkit.agents.bc import train as train_bc
from rlkit.agents.dagger import DAggerConfig, beta_at, train
from rlkit.envs.test_envs import CurvyRoadExpert

from rlkit import demos, envs
from rlkit.engine.imitation import mixture_episode
from rlkit.errors import RLKitError
from rlkit.evaluation import evaluate

ROAD = "rlkit/CurvyRoad-v0"


def quick(tmp_path, name="run", **over) -> DAggerConfig:
    base = dict(env_id=ROAD, run_dir=str(tmp_path / name), rounds=3, episodes_per_round=1, epochs_per_round=2,
                eval_episodes=2, progress=False, tensorboard=False)
    return DAggerConfig(**{**base, **over})


def test_beta_schedules_hand_values():
    assert [beta_at(i, "exponential", 0.5) for i in range(4)] == [1.0, 0.5, 0.25, 0.125]
    assert [beta_at(i, "linear", rampdown=4) for i in range(6)] == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]


def test_curvy_road_expert_is_perfect_and_random_is_not():
    make = lambda render_mode=None: envs.make_env(ROAD)  # noqa: E731
    assert evaluate(CurvyRoadExpert(), make, 5)["mean"] == 50.0
    assert evaluate(demos.resolve_policy("random", ROAD), make, 5)["mean"] < 10


def test_mixture_queries_the_expert_everywhere():
    class Fixed:
        def __init__(self, action):
            self.action, self.calls = action, 0

        def act(self, obs, deterministic=True):
            self.calls += 1
            return np.full(len(obs), self.action)

    env = envs.make_env(ROAD)
    expert, learner = Fixed(1), Fixed(0)
    # beta 0: the learner acts (always left: off the road within 3 steps), the expert labels each state
    obs, labels, terminated, _, _ = mixture_episode(env, expert, learner, 0.0, seed=0, rng=np.random.default_rng(0))
    assert terminated and len(obs) == len(labels) + 1 and (labels == 1).all()
    assert expert.calls == learner.calls == len(labels)
    expert.calls = learner.calls = 0
    _, labels, *_ = mixture_episode(env, expert, learner, 1.0, seed=0, rng=np.random.default_rng(0))
    assert learner.calls == 0 and expert.calls == len(labels)


def test_labels_are_on_disk_and_resume_continues(tmp_path):
    result = train(quick(tmp_path), expert=CurvyRoadExpert())
    labels = demos.load(result["labels"])
    assert result["rounds"] == 3 and len(labels) == 3 == result["labelled_episodes"]
    assert result["labelled_states"] == labels.num_steps
    assert all(ep.rewards is None for ep in labels) and labels.meta["source"] == "dagger:CurvyRoadExpert"
    # expert-labelled states: the stored actions are what the expert does in the stored states
    ep = labels[2]
    assert (CurvyRoadExpert().act(ep.obs[:-1]) == ep.actions).all()
    again = train(quick(tmp_path, rounds=5), resume=True, expert=CurvyRoadExpert())
    assert again["rounds"] == 5 and len(demos.load(result["labels"])) == 5
    with pytest.raises(RLKitError, match="already exists"):
        train(quick(tmp_path, "other", labels=result["labels"]), expert=CurvyRoadExpert())


def test_same_seed_same_labels(tmp_path):
    a = train(quick(tmp_path, "a", rounds=2), expert=CurvyRoadExpert())
    b = train(quick(tmp_path, "b", rounds=2), expert=CurvyRoadExpert())
    la, lb = demos.load(a["labels"]), demos.load(b["labels"])
    assert all(np.array_equal(x.obs, y.obs) and np.array_equal(x.actions, y.actions) for x, y in zip(la, lb))
    assert a["eval"]["returns"] == b["eval"]["returns"]


def test_a_human_expert_labels_through_the_keyboard(tmp_path):
    pygame = pytest.importorskip("pygame")
    from rlkit.demos.human import HumanPolicy

    class ScriptedKeyboard(HumanPolicy):  # the real source refuses a machine without a display
        def require_display(self) -> None:
            pass

    frames = {"n": 0}

    def on_frame(policy):  # the person presses RIGHT as each episode starts, and Esc on the 60th frame
        frames["n"] += 1
        if policy.step == 0 or frames["n"] == 60:
            key = pygame.K_ESCAPE if frames["n"] == 60 else pygame.K_RIGHT
            pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=key))

    human = ScriptedKeyboard("CartPole-v1", fps=0, on_frame=on_frame)
    result = train(quick(tmp_path, env_id="CartPole-v1", rounds=10, episodes_per_round=2), expert=human)
    labels = demos.load(result["labels"])
    assert 1 <= result["rounds"] < 10 and len(labels) >= 2  # Esc ended the collection; finished episodes count
    assert all((ep.actions == 1).all() for ep in labels)  # every state labelled with the key held
    assert labels.num_steps == result["labelled_states"] < frames["n"]  # the unfinished episode was dropped


def test_needs_an_expert_and_an_env(tmp_path):
    with pytest.raises(RLKitError, match="needs an expert"):
        train(quick(tmp_path))
    with pytest.raises(RLKitError, match="needs an env"):
        train(quick(tmp_path, env_id=None), expert=CurvyRoadExpert())


def test_cli_with_a_python_expert_and_eval(tmp_path, cli):
    run_dir = tmp_path / "cli"
    proc = cli("train", "dagger", "--preset", "curvyroad", "--steps", "100", "--run-dir", str(run_dir),
               "--set", "epochs_per_round=2", "--set", "eval_episodes=1", "--no-progress", "--json")
    assert proc.returncode == 0, proc.stderr
    final = json.loads(proc.stdout)
    assert final["agent"] == "dagger" and final["labelled_states"] >= 100
    proc = cli("eval", str(run_dir), "--episodes", "1", "--json")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_dagger_beats_bc_under_covariate_shift(tmp_path):
    # ~20 s here. BC gets 7 expert episodes (350 labelled states); DAgger stops at the round that reaches
    # 300 labels, so it has at most as many. The expert never leaves the centre lane, so BC never sees
    # an off-centre state; DAgger's learner goes there and is taught to steer back.
    bc_returns, dagger_returns = [], []
    for seed in range(3):
        out = tmp_path / f"demos{seed}"
        demos.record(CurvyRoadExpert(), ROAD, episodes=7, out=out, seed=100 * seed)
        bc = train_bc(BCConfig(demos=str(out), run_dir=str(tmp_path / f"bc{seed}"), seed=seed, val_fraction=0.0,
                               epochs=50, eval_episodes=50, progress=False, tensorboard=False))
        dagger = train(DAggerConfig(env_id=ROAD, run_dir=str(tmp_path / f"dagger{seed}"), seed=seed, rounds=100,
                                    total_steps=300, episodes_per_round=1, beta_schedule="linear", beta_rampdown=5,
                                    epochs_per_round=50, eval_episodes=50, progress=False, tensorboard=False),
                       expert=CurvyRoadExpert())
        assert dagger["labelled_states"] <= bc["train_transitions"] == 350
        bc_returns.append(bc["eval"]["mean"])
        dagger_returns.append(dagger["eval"]["mean"])
    # measured: BC 5-7, DAgger about 41 of the expert's 50
    assert all(d > b + 15 for d, b in zip(dagger_returns, bc_returns)), (dagger_returns, bc_returns)
    assert np.mean(dagger_returns) >= 35 and np.mean(dagger_returns) - np.mean(bc_returns) >= 25
