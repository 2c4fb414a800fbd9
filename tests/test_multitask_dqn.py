"""Multi-task DQN (issue 24, item 2 for DQN): the tasks / heads / pcgrad options on tiny budgets, checkpoints, resume,
`rlkit eval` on the suite and its held-out context, the fused path's switch, and one-line refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from rlkit.agents import dqn
from rlkit.agents.dqn import DQN, DQNConfig, load_policy, train
from rlkit.envs import make_env

from rlkit.checkpoint import load_checkpoint
from rlkit.config import apply_overrides
from rlkit.errors import RLKitError
from rlkit.multitask import HardSharing, TaskConditioned

SUITE = "rlkit/CartPole-MT-v0"
TINY = dict(env_id=SUITE, total_steps=400, learning_starts=100, batch_size=32, buffer_size=500, hidden=[16],
            target_update_every=50, train_every=4, gradient_steps=2, eval_episodes=4, checkpoint_every=200,
            log_every=100, progress=False)
VARIANTS = {"per_task": {"heads": "per_task"}, "conditioned": {"heads": "shared"},
            "pcgrad": {"heads": "per_task", "pcgrad": True}, "conditioned-pcgrad": {"pcgrad": True}}


def tiny(tmp_path, name="run", **over) -> DQNConfig:
    return apply_overrides(DQNConfig(), {**TINY, "run_dir": str(tmp_path / name), **over})


def learner(cfg: DQNConfig) -> DQN:
    env = make_env(cfg.env_id, env_kwargs=cfg.env_kwargs)
    return DQN(cfg, env.observation_space, env.action_space, np.random.default_rng(0))


@pytest.mark.parametrize("variant", VARIANTS)
def test_variants_train_every_part_and_checkpoint_their_task_count(tmp_path, monkeypatch, variant):
    built = []

    def recording_build(*args):
        q_net = original_build(*args)
        built.append({k: v.clone() for k, v in q_net.state_dict().items()})
        return q_net

    original_build = dqn.build_q_net
    monkeypatch.setattr(dqn, "build_q_net", recording_build)
    result = train(tiny(tmp_path, **VARIANTS[variant]))
    state = load_checkpoint(result["run_dir"])
    assert state["tasks"] == 4
    unchanged = [k for k in built[0] if torch.equal(built[0][k], state["q_net"][k])]
    assert not unchanged, f"parameters never updated: {unchanged}"  # every task's head learned
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    losses = [float(r.split(",")[header.index("losses/td_loss")]) for r in rows[1:]
              if r.split(",")[header.index("losses/td_loss")]]
    assert losses and np.isfinite(losses).all()
    assert ("losses/pcgrad_projections" in header) == VARIANTS[variant].get("pcgrad", False)


def test_network_choice_and_the_fused_path_only_for_one_task(tmp_path):
    hard = learner(tiny(tmp_path, heads="per_task"))
    conditioned = learner(tiny(tmp_path))
    plain = learner(tiny(tmp_path, env_id="CartPole-v1"))
    assert isinstance(hard.q_net, HardSharing) and hard.n_tasks == 4 and hard.fused is None
    assert isinstance(conditioned.q_net, TaskConditioned) and conditioned.fused is None
    assert plain.n_tasks == 0 and plain.fused is not None and plain.pcgrad is None
    # per_task: a trunk over the 4 CartPole values (not the 8 with the id), and 4 heads of 2 actions
    assert hard.q_net.trunk[0].in_features == 4 and len(hard.q_net.heads.heads) == 4
    assert learner(tiny(tmp_path, env_id="rlkit/CartPole-MT-heldout-v0", heads="per_task")).n_tasks == 4


def test_same_seed_same_pcgrad_run(tmp_path):
    a = train(tiny(tmp_path, "a", heads="per_task", pcgrad=True))
    b = train(tiny(tmp_path, "b", heads="per_task", pcgrad=True))
    sa, sb = load_checkpoint(a["run_dir"])["q_net"], load_checkpoint(b["run_dir"])["q_net"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa) and a["eval"]["returns"] == b["eval"]["returns"]


def test_checkpoint_round_trip_resume_and_rlkit_eval_on_the_suite_and_held_out(tmp_path, cli):
    first = train(tiny(tmp_path, heads="per_task", pcgrad=True, total_steps=200))
    assert first["env_steps"] == 200
    second = train(apply_overrides(tiny(tmp_path, heads="per_task", pcgrad=True), {"total_steps": 400}), resume=True)
    assert second["env_steps"] == 400
    policy = load_policy(load_checkpoint(second["run_dir"]))
    obs = np.concatenate([np.random.default_rng(0).normal(size=(64, 4)), np.eye(4)[np.arange(64) % 4]], 1)
    obs = obs.astype(np.float32)
    from rlkit.policy import load_policy as cli_load_policy

    np.testing.assert_array_equal(policy.act(obs), cli_load_policy(second["checkpoint"]).act(obs))
    with torch.no_grad():  # each row's action is its own task head's argmax
        heads = policy.module.heads.heads
        features = policy.module.trunk(torch.from_numpy(obs[:, :4]))
        expected = [heads[k](features[i]).argmax().item() for i, k in enumerate(np.arange(64) % 4)]
    assert policy.act(obs).tolist() == expected
    for env in ([], ["--env", "rlkit/CartPole-MT-heldout-v0"]):
        proc = cli("eval", second["run_dir"], "--episodes", "4", "--json", *env)
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
        assert result["episodes"] == 4 and result["env_id"] == (env[1] if env else SUITE)


def one_line(error: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(error.value)
    return str(error.value)


def test_bad_input_is_one_line_each(tmp_path, cli):
    # task ids that do not match the model's heads: a task count the env does not have
    with pytest.raises(RLKitError, match="tasks=3, but rlkit/CartPole-MT-v0 has 4 tasks") as e:
        tiny(tmp_path, tasks=3).validate()
    one_line(e)
    with pytest.raises(RLKitError, match="is no multi-task suite") as e:
        tiny(tmp_path, env_id="CartPole-v1", heads="per_task").validate()
    one_line(e)
    with pytest.raises(RLKitError, match="not a dueling head") as e:
        tiny(tmp_path, heads="per_task", dueling=True).validate()
    with pytest.raises(RLKitError, match="not its Dict observations; drop obs_mode") as e:
        train(tiny(tmp_path, "dict", env_kwargs={"obs_mode": "dict"}))
    one_line(e)
    # a checkpoint of 4 task heads resumed by a learner of another task count
    run = train(tiny(tmp_path, "heads", heads="per_task", total_steps=200))
    state = load_checkpoint(run["run_dir"])
    other = learner(tiny(tmp_path, env_id="CartPole-v1"))
    with pytest.raises(RLKitError, match="trained on 4 tasks, but CartPole-v1 has 0") as e:
        other.load_state_dict(state)
    one_line(e)
    # mixing observation spaces: the model's policy fed plain CartPole, or 8 values without a task one-hot
    policy = load_policy(state)
    with pytest.raises(RLKitError, match="observations have 4 values but this model takes 8") as e:
        policy.act(np.zeros((1, 4), np.float32))
    one_line(e)
    with pytest.raises(RLKitError, match="do not end in a 4-task one-hot id") as e:
        policy.act(np.full((1, 8), 0.5, np.float32))
    one_line(e)
    proc = cli("eval", run["run_dir"], "--episodes", "1", "--env", "CartPole-v1")
    assert proc.returncode != 0 and "observation space Box(8,)" in proc.stderr and "Box(4,)" in proc.stderr
