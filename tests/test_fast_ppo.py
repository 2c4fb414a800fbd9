"""PPO's fast minibatch step (rlkit.fast.ppo_update) against the plain PyTorch path it replaces: the functional
evaluator against ``model(obs)`` and its distribution (outputs and gradients), FlatAdam with its one-norm clip
against torch's Adam and ``clip_grad_norm_``, and a torch-Adam checkpoint continuing in FlatAdam."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from rlkit.agents.ppo import PPO, PPOConfig, build_model, evaluate_actions
from torch.testing import assert_close

from rlkit.fast.flat_adam import FlatAdam
from rlkit.fast.ppo_update import clip_grad_norm, flat_adam, functional_evaluator, load_optimizer_state

BOX_OBS = gym.spaces.Box(-5, 5, (4,), np.float32)
EXACT = dict(rtol=0.0, atol=0.0)


def grads(model, loss):
    model.zero_grad()
    loss.backward()
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("shared_trunk", [False, True])
def test_functional_evaluator_equals_the_model_and_its_categorical(shared_trunk):
    # CartPole's update runs the categorical MLP as functional calls: bit-identical outputs and gradients.
    torch.manual_seed(0)
    model = build_model(PPOConfig(shared_trunk=shared_trunk, hidden=[16, 8]), BOX_OBS, gym.spaces.Discrete(3))
    fast = functional_evaluator(model)
    assert fast is not None
    obs, actions, weights = torch.randn(40, 4) * 3, torch.randint(0, 3, (40,)), torch.randn(40)
    ours, ref = fast(obs, actions, True), evaluate_actions(model, obs, actions, True)
    for a, b in zip(ours, ref):  # log-probs, entropy, values
        assert_close(a, b, **EXACT)
    # exactly the gradients without an entropy term (ent_coef 0, CartPole's preset)
    for a, b in zip(grads(model, (weights * ours[0] + ours[2]).sum()), grads(model, (weights * ref[0] + ref[2]).sum())):
        assert_close(a, b, **EXACT)
    # with one, the same up to the order in which autograd sums the two paths into the logits
    ours, ref = fast(obs, actions, True), evaluate_actions(model, obs, actions, True)
    fast_grads, ref_grads = grads(model, (ours[0] - ours[1]).sum()), grads(model, (ref[0] - ref[1]).sum())
    for a, b in zip(fast_grads, ref_grads):
        assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert any(a.abs().sum() > 0 for a in fast_grads)
    assert not fast(obs, actions, False)[1].requires_grad  # ent_coef 0: no entropy graph
    assert not evaluate_actions(model, obs, actions, False)[1].requires_grad


def test_gaussian_and_multidiscrete_models_take_the_plain_path(tmp_path):
    # The functional path covers categorical MLPs only: the others decline it, and PPO then evaluates through
    # the distribution (the same numbers, with the entropy's gradient as asked).
    for act_space in (gym.spaces.Box(-1, 1, (2,)), gym.spaces.MultiDiscrete([3, 2])):
        cfg = PPOConfig(hidden=[8], run_dir=str(tmp_path))
        assert functional_evaluator(build_model(cfg, BOX_OBS, act_space)) is None
        learner = PPO(cfg, BOX_OBS, act_space, np.random.default_rng(0))
        obs = torch.randn(10, 4)
        actions = torch.as_tensor(np.stack([act_space.sample() for _ in range(10)]))
        ours, ref = learner.evaluate(obs, actions, True), evaluate_actions(learner.model, obs, actions, True)
        for a, b in zip(ours, ref):
            assert_close(a, b, **EXACT)
        assert ours[1].requires_grad and not learner.evaluate(obs, actions, False)[1].requires_grad
        for a, b in zip(grads(learner.model, (ours[0] - ours[1] + ours[2]).sum()),
                        grads(learner.model, (ref[0] - ref[1] + ref[2]).sum())):
            assert_close(a, b, **EXACT)


def test_flat_adam_and_its_clip_follow_torch_adam_and_clip_grad_norm():
    torch.manual_seed(0)
    cfg = PPOConfig(hidden=[8], max_grad_norm=0.05)
    ref = build_model(cfg, BOX_OBS, gym.spaces.Discrete(2))
    ours = build_model(cfg, BOX_OBS, gym.spaces.Discrete(2))
    ours.load_state_dict(ref.state_dict())
    ref_opt = torch.optim.Adam(ref.parameters(), lr=cfg.lr, eps=cfg.optimizer_eps)
    opt = flat_adam(ours, cfg.optimizer, cfg.lr, cfg.optimizer_eps)
    assert isinstance(opt, FlatAdam) and flat_adam(ours, "rmsprop", cfg.lr, cfg.optimizer_eps) is None
    for _ in range(5):
        obs = torch.randn(16, 4) * 3
        for model, optimizer in ((ref, ref_opt), (ours, opt)):
            optimizer.zero_grad()
            dist, values = model(obs)
            (-dist.entropy().mean() + values.pow(2).mean()).backward()
            clip_grad_norm(optimizer, list(model.parameters()), cfg.max_grad_norm)
            optimizer.step()
    for a, b in zip(ours.parameters(), ref.parameters()):
        assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_optimizer_state_of_torch_adam_continues_in_flat_adam():
    # A checkpoint of a run trained with torch's Adam resumes with the same moments in FlatAdam.
    cfg = PPOConfig(hidden=[8])
    torch.manual_seed(0)
    ref = build_model(cfg, BOX_OBS, gym.spaces.Discrete(2))
    ours = build_model(cfg, BOX_OBS, gym.spaces.Discrete(2))
    ours.load_state_dict(ref.state_dict())
    ref_opt = torch.optim.Adam(ref.parameters(), lr=cfg.lr, eps=cfg.optimizer_eps)
    obs = torch.randn(16, 4)

    def loss(model):
        dist, values = model(obs)
        return -dist.entropy().mean() + values.pow(2).mean()

    for _ in range(3):
        ref_opt.zero_grad()
        loss(ref).backward()
        ref_opt.step()
    ours.load_state_dict(ref.state_dict())
    opt = flat_adam(ours, "adam", cfg.lr, cfg.optimizer_eps)
    load_optimizer_state(opt, ref_opt.state_dict())
    assert opt.steps == 3
    for model, o in ((ref, ref_opt), (ours, opt)):
        o.zero_grad()
        loss(model).backward()
        o.step()
    for a, b in zip(ours.parameters(), ref.parameters()):
        assert_close(a, b, atol=1e-6, rtol=1e-5)
    fresh = flat_adam(build_model(cfg, BOX_OBS, gym.spaces.Discrete(2)), "adam", cfg.lr, cfg.optimizer_eps)
    load_optimizer_state(fresh, torch.optim.Adam(ref.parameters()).state_dict())  # saved before any step
    assert fresh.steps == 0
