"""Multi-task PPO (issue 24, item 2 for PPO): the hard-sharing actor-critic routed by task id (categorical and
Gaussian heads), PCGrad over the tasks' shares of each minibatch's PPO loss, every variant training and checkpointing
on a suite, fine-tuning with init_from, and one-line refusals."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from rlkit.agents import ppo
from rlkit.agents.ppo import PPO, PPOConfig, load_policy, ppo_loss, train
from rlkit.envs import make_env

from rlkit.checkpoint import load_checkpoint
from rlkit.config import apply_overrides
from rlkit.errors import RLKitError
from rlkit.multitask import HardSharingActorCritic, PerTaskPolicy

SUITE = "rlkit/CartPole-MT-v0"
# 30-step episodes: a rollout of 4 envs x 32 steps plays every task (round robin) in each update
TINY = dict(env_id=SUITE, env_kwargs={"max_episode_steps": 30}, total_steps=512, num_envs=4, n_steps=32,
            batch_size=32, n_epochs=2, hidden=[16], eval_episodes=4, checkpoint_every=256, log_every=128,
            progress=False)
VARIANTS = {"per_task": {"heads": "per_task"}, "conditioned": {"heads": "shared"},
            "pcgrad": {"heads": "per_task", "pcgrad": True}}


def tiny(tmp_path, name="run", **over) -> PPOConfig:
    return apply_overrides(PPOConfig(), {**TINY, "run_dir": str(tmp_path / name), **over})


def suite_obs(ids: list[int], base: int, n_tasks: int = 4) -> torch.Tensor:
    return torch.cat([torch.linspace(-1, 1, base * len(ids)).reshape(len(ids), base), torch.eye(n_tasks)[ids]], 1)


def test_categorical_heads_route_each_sample_to_its_tasks_policy_and_value():
    torch.manual_seed(0)
    space = gym.spaces.Box(-5, 5, (4 + 4,), np.float32)
    model = HardSharingActorCritic(space, gym.spaces.Discrete(2), [8], shared=False, activation=torch.nn.Tanh,
                                   n_tasks=4)
    obs = suite_obs([3, 0, 3], base=4)
    dist, values = model(obs)
    hidden, value_hidden = model.trunk(obs[:, :4]), model.value_trunk(obs[:, :4])
    for row, task in enumerate([3, 0, 3]):
        logits = model.policy.heads[task].logits(hidden[row])
        torch.testing.assert_close(dist.logits[row], torch.log_softmax(logits, -1))
        torch.testing.assert_close(values[row], model.value.heads[task](value_hidden[row])[0])
    # the heads start as ActorCritic's: policy weights orthogonal with gain 0.01, zero biases
    weight = model.policy.heads[1].logits.weight
    torch.testing.assert_close(weight @ weight.T, 1e-4 * torch.eye(2), atol=1e-7, rtol=0)
    assert model.act(obs, deterministic=True).tolist() == dist.probs.argmax(-1).tolist()


def test_gaussian_heads_have_each_tasks_own_log_std():
    torch.manual_seed(0)
    space = gym.spaces.Box(-5, 5, (3 + 2,), np.float32)
    model = HardSharingActorCritic(space, gym.spaces.Box(-2, 2, (1,), np.float32), [8], shared=True,
                                   activation=torch.nn.Tanh, n_tasks=2)
    assert isinstance(model.policy, PerTaskPolicy) and model.policy.gaussian
    with torch.no_grad():
        model.policy.heads[1].log_std.fill_(-1.0)
    dist, _ = model(suite_obs([0, 1], base=3, n_tasks=2))
    torch.testing.assert_close(dist.stddev, torch.tensor([[1.0], [np.exp(-1.0)]], dtype=torch.float32))
    hidden = model.trunk(suite_obs([0, 1], base=3, n_tasks=2)[:, :3])
    torch.testing.assert_close(dist.mean[1], model.policy.heads[1].mean(hidden[1]))


@pytest.mark.parametrize("variant", VARIANTS)
def test_variants_train_checkpoint_and_evaluate_per_task(tmp_path, variant):
    result = train(tiny(tmp_path, **VARIANTS[variant]))
    state = load_checkpoint(result["run_dir"])
    assert state["tasks"] == 4 and set(result["eval"]["per_task"]) == {"0", "1", "2", "3"}
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert ("losses/pcgrad_projections" in header) == VARIANTS[variant].get("pcgrad", False)
    policy = load_policy(state)
    obs, _ = make_env(SUITE).reset(seed=2)
    assert policy.act(obs[None]).shape == (1,)
    if variant != "conditioned":
        assert isinstance(policy.module, HardSharingActorCritic)


def test_pcgrad_task_losses_add_up_to_the_minibatch_loss(tmp_path, monkeypatch):
    seen = []

    def recording_backward(self, losses):
        seen.append(losses)
        original(self, losses)

    original = ppo.PCGrad.backward
    monkeypatch.setattr(ppo.PCGrad, "backward", recording_backward)
    cfg = tiny(tmp_path, heads="per_task", pcgrad=True)
    env = make_env(SUITE)
    learner = PPO(cfg, env.observation_space, env.action_space, np.random.default_rng(0))
    torch.manual_seed(0)
    n = 12
    ids = torch.tensor([0, 1, 2, 3] * 3)
    inputs = (torch.randn(n), torch.randn(n), torch.randn(n), torch.randn(n, requires_grad=True), torch.randn(n),
              torch.randn(n), torch.rand(n))
    learner.optimizer.zero_grad()
    learner.pcgrad_backward(inputs, ids, clip=0.2, normalize=True)
    whole, _ = ppo_loss(*inputs, 0.2, None, cfg.vf_coef, cfg.ent_coef, True)
    assert len(seen[0]) == 4
    assert sum(loss.item() for loss in seen[0]) == pytest.approx(whole.item(), rel=1e-5)


def test_init_from_and_bad_input(tmp_path):
    source = train(tiny(tmp_path, "suite", heads="per_task"))["run_dir"]
    cfg = tiny(tmp_path, "heldout", heads="per_task", env_id="rlkit/CartPole-MT-heldout-v0", init_from=source)
    env = make_env(cfg.env_id)
    learner = PPO(cfg, env.observation_space, env.action_space, np.random.default_rng(0))
    trained = load_checkpoint(source)["model"]
    assert all(torch.equal(value, trained[key]) for key, value in learner.model.state_dict().items())

    def refused(match: str, **over):
        with pytest.raises(RLKitError, match=match) as e:
            bad = tiny(tmp_path, **over)
            bad_env = make_env(bad.env_id)
            PPO(bad, bad_env.observation_space, bad_env.action_space, np.random.default_rng(0))
        assert "\n" not in str(e.value)

    refused(r"has other networks \(hidden, shared_trunk, activation, heads differ\)", heads="shared",
            init_from=source)
    refused("tasks=2, but rlkit/CartPole-MT-v0 has 4 tasks", tasks=2)
    refused("is no multi-task suite", env_id="CartPole-v1", pcgrad=True)
    state = load_checkpoint(source)
    plain = make_env("CartPole-v1")
    with pytest.raises(RLKitError, match="trained on 4 tasks, but CartPole-v1 has 0"):
        PPO(apply_overrides(PPOConfig(), {**TINY, "env_id": "CartPole-v1"}), plain.observation_space,
            plain.action_space, np.random.default_rng(0)).load_state_dict(state)
