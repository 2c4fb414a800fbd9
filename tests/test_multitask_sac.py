"""Multi-task SAC (issue 24, item 2 for SAC): hard-sharing actor and critics routed by task id, one temperature per
task, PCGrad on the critic and actor steps, checkpoints and `rlkit eval` on the suite, fine-tuning with init_from,
and one-line refusals."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from rlkit.agents.sac import SAC, SACConfig, build_nets, load_policy, temperature_loss, train
from rlkit.envs import make_env

from rlkit.checkpoint import load_checkpoint
from rlkit.config import apply_overrides
from rlkit.errors import RLKitError
from rlkit.multitask import HardSharingActor, HardSharingCritics
from rlkit.nets import QCriticEnsemble, SquashedGaussianActor

SUITE = "rlkit/Pendulum-MT-v0"
# 50-step episodes: 300 steps play every task (round robin) at least once, from step 150 on with updates
TINY = dict(env_id=SUITE, env_kwargs={"max_episode_steps": 50}, total_steps=300, learning_starts=100, batch_size=32,
            buffer_size=400, hidden=[16], eval_episodes=4, checkpoint_every=150, log_every=50, progress=False)
VARIANTS = {"per_task": {"heads": "per_task"}, "conditioned": {"heads": "shared"},
            "pcgrad": {"heads": "per_task", "pcgrad": True}}
BOX = gym.spaces.Box(-1.0, 1.0, (3 + 4,), np.float32)  # Pendulum's 3 values + a 4-task one-hot
ACTIONS = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)


def tiny(tmp_path, name="run", **over) -> SACConfig:
    return apply_overrides(SACConfig(), {**TINY, "run_dir": str(tmp_path / name), **over})


def suite_obs(ids: list[int], n_tasks: int = 4) -> torch.Tensor:
    base = torch.linspace(-1, 1, 3 * len(ids)).reshape(len(ids), 3)
    return torch.cat([base, torch.eye(n_tasks)[ids]], dim=1)


def test_hard_sharing_critics_give_each_sample_its_tasks_output_of_every_critic():
    torch.manual_seed(0)
    critics = HardSharingCritics(BOX, ACTIONS, [8], n_critics=2, n_tasks=4)
    obs, actions = suite_obs([2, 0, 3, 2]), torch.tensor([[0.5], [-1.0], [1.5], [0.0]])
    every = critics.stacked(obs[:, :3], actions)  # (critics, batch, tasks): the trunk never reads the one-hot
    assert every.shape == (2, 4, 4)
    expected = torch.stack([every[:, i, k] for i, k in enumerate([2, 0, 3, 2])], dim=1)
    torch.testing.assert_close(critics(obs, actions), expected)
    # By hand for critic 1 and sample 0: relu(x W0 + b0) W1[:, task 2] + b1[task 2]
    x = torch.cat([obs[0, :3], actions[0]])
    hidden = torch.relu(x @ critics.weights[0][1] + critics.biases[0][1, 0])
    by_hand = hidden @ critics.weights[1][1][:, 2] + critics.biases[1][1, 0, 2]
    torch.testing.assert_close(critics(obs, actions)[1, 0], by_hand)
    # A loss on task 0's rows reaches task 0's head column only.
    critics(obs[1:2], actions[1:2]).sum().backward()
    head_grad = critics.weights[1].grad  # (critics, hidden, tasks)
    assert head_grad[:, :, 0].abs().sum() > 0 and head_grad[:, :, 1:].abs().sum() == 0


def test_hard_sharing_actor_routes_mean_and_log_std_by_task_and_squashes_into_the_bounds():
    torch.manual_seed(0)
    actor = HardSharingActor(BOX, ACTIONS, [8], n_tasks=4)
    obs = suite_obs([1, 3])
    mean, log_std = actor(obs)
    h = actor.trunk(obs[:, :3])
    torch.testing.assert_close(mean[0], actor.mean.heads[1](h[0]))
    torch.testing.assert_close(mean[1], actor.mean.heads[3](h[1]))
    torch.testing.assert_close(log_std[1], actor.log_std.heads[3](h[1]).clamp(-20, 2))
    actions, log_prob = actor.sample(obs)
    assert actions.abs().max() <= 2.0 and log_prob.shape == (2,)
    torch.testing.assert_close(actor.act(obs), torch.tanh(mean) * 2.0)


def test_each_task_has_its_own_temperature_learned_on_its_rows():
    log_alpha = torch.tensor([0.0, math.log(0.5), 1.0], requires_grad=True)
    ids = torch.tensor([0, 1, 1, 0])
    log_prob = torch.tensor([-0.5, 0.25, -1.0, 1.5])
    loss = temperature_loss(log_alpha[ids], log_prob, target_entropy=-1.0)
    # -mean(log_alpha_k * (log pi + H)): (log pi + H) = [-1.5, -0.75, -2.0, 0.5]
    by_hand = -(0.0 * -1.5 + math.log(0.5) * -0.75 + math.log(0.5) * -2.0 + 0.0 * 0.5) / 4
    assert loss.item() == pytest.approx(by_hand)
    loss.backward()
    # d/d log_alpha_0 = -(-1.5 + 0.5) / 4 = 0.25; task 1: -(-0.75 - 2.0) / 4 = 0.6875; task 2 has no row: 0
    torch.testing.assert_close(log_alpha.grad, torch.tensor([0.25, 0.6875, 0.0]))


def test_network_choice_follows_heads_and_tasks():
    cfg = apply_overrides(SACConfig(), {"env_id": SUITE, "hidden": [8]})
    shared = build_nets(cfg, BOX, ACTIONS, n_tasks=4)
    assert type(shared.actor) is SquashedGaussianActor and type(shared.critic) is QCriticEnsemble
    assert shared.log_alpha.shape == (4,) and shared.critic_pcgrad is None
    hard = build_nets(apply_overrides(cfg, {"heads": "per_task", "pcgrad": True}), BOX, ACTIONS, n_tasks=4)
    assert isinstance(hard.actor, HardSharingActor) and isinstance(hard.critic_target, HardSharingCritics)
    assert hard.critic_pcgrad is not None and hard.actor_pcgrad is not None
    single = build_nets(apply_overrides(SACConfig(), {"hidden": [8]}), BOX, ACTIONS)
    assert single.log_alpha.shape == ()


@pytest.mark.parametrize("variant", VARIANTS)
def test_variants_train_every_part_checkpoint_and_evaluate_per_task(tmp_path, variant):
    result = train(tiny(tmp_path, **VARIANTS[variant]))
    state = load_checkpoint(result["run_dir"])
    assert state["tasks"] == 4 and state["log_alpha"].shape == (4,)
    assert bool((state["log_alpha"] != 0).all())  # every task's temperature moved from log 1
    assert set(result["eval"]["per_task"]) == {"0", "1", "2", "3"}
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert ("losses/pcgrad_projections" in header) == VARIANTS[variant].get("pcgrad", False)
    policy = load_policy(state)
    env = make_env(SUITE)
    obs, _ = env.reset(seed=3)
    action = policy.act(obs[None])
    assert action.shape == (1, 1) and np.abs(action).max() <= 2.0


def test_same_seed_same_pcgrad_run(tmp_path):
    first = train(tiny(tmp_path, "a", heads="per_task", pcgrad=True, total_steps=200))
    second = train(tiny(tmp_path, "b", heads="per_task", pcgrad=True, total_steps=200))
    assert first["eval"]["returns"] == second["eval"]["returns"]
    a, b = load_checkpoint(first["run_dir"]), load_checkpoint(second["run_dir"])
    assert all(torch.equal(a["actor"][k], b["actor"][k]) for k in a["actor"])


def test_init_from_starts_the_held_out_context_from_the_trained_networks_and_temperatures(tmp_path):
    source = train(tiny(tmp_path, "suite", heads="per_task"))["run_dir"]
    cfg = tiny(tmp_path, "heldout", heads="per_task", env_id="rlkit/Pendulum-MT-heldout-v0", init_from=source)
    env = make_env(cfg.env_id)
    learner = SAC(cfg, env.observation_space, env.action_space, np.random.default_rng(0))
    trained = load_checkpoint(source)
    for name in ("actor", "critic", "critic_target"):
        mine = getattr(learner.nets, name).state_dict()
        assert all(torch.equal(mine[k], trained[name][k]) for k in mine), name
    assert torch.equal(learner.nets.log_alpha.detach(), trained["log_alpha"])
    assert learner.nets.actor_opt.state == {}  # the optimizer starts afresh


def test_bad_input_is_one_line_each(tmp_path):
    def refused(match: str, **over):
        with pytest.raises(RLKitError, match=match) as e:
            cfg = tiny(tmp_path, **over)
            env = make_env(cfg.env_id)
            SAC(cfg, env.observation_space, env.action_space, np.random.default_rng(0))
        assert "\n" not in str(e.value)

    refused("tasks=3, but rlkit/Pendulum-MT-v0 has 4 tasks", tasks=3)
    refused("is no multi-task suite", env_id="Pendulum-v1", heads="per_task")
    source = train(tiny(tmp_path, "plain", env_id="Pendulum-v1", total_steps=150))["run_dir"]
    refused("trained on Box.* with 0 tasks, not Box.* with 4", init_from=source)
    wide = train(tiny(tmp_path, "wide", heads="per_task", hidden=[8], total_steps=150))["run_dir"]
    refused(r"has other networks \(hidden, n_critics, heads differ\); set them as that run did: hidden=\[8\]",
            heads="per_task", init_from=wide)
    dqn_run = tmp_path / "dqn"
    from rlkit.agents.dqn import DQNConfig
    from rlkit.agents.dqn import train as train_dqn
    train_dqn(apply_overrides(DQNConfig(), {"env_id": "rlkit/CartPole-MT-v0", "total_steps": 150,
                                             "learning_starts": 50, "batch_size": 16, "hidden": [8],
                                             "run_dir": str(dqn_run), "progress": False, "eval_episodes": 4}))
    refused("is a dqn checkpoint; fine-tuning starts from a sac run", init_from=str(dqn_run))
    state = load_checkpoint(train(tiny(tmp_path, "cond", total_steps=150))["run_dir"])
    env = make_env("Pendulum-v1")
    with pytest.raises(RLKitError, match="trained on 4 tasks, but Pendulum-v1 has 0") as e:
        SAC(apply_overrides(SACConfig(), {"hidden": [16]}), env.observation_space, env.action_space,
            np.random.default_rng(0)).load_state_dict(state)
    assert "\n" not in str(e.value)
