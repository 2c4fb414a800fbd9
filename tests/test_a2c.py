"""A2C: returns/GAE against a loop reference, loss terms against hand values, smoke runs, determinism,
resume, truncation bootstrapping, CLI, learning."""

import json
import math

import numpy as np
import pytest
import torch
from rlkit.agents import a2c
from rlkit.agents.a2c import A2CConfig, load_policy, train
from torch.distributions import Categorical, Independent, Normal

from rlkit import envs
from rlkit.actor_critic import actor_critic_loss, build_model
from rlkit.checkpoint import load_checkpoint
from rlkit.config import apply_overrides
from rlkit.errors import RLKitError
from rlkit.fast.numpy_forward import numpy_actor_critic
from rlkit.returns import gae_advantages, n_step_returns
from rlkit.rollouts import collect_rollout

TINY = dict(total_steps=480, num_envs=4, n_steps=5, hidden=[16], eval_episodes=2, checkpoint_every=240,
            log_every=120, progress=False)


def tiny(tmp_path, name="run", **over) -> A2CConfig:
    return apply_overrides(A2CConfig(), {**TINY, "run_dir": str(tmp_path / name), **over})


# --- math: a loop that follows the definitions, one env and one step at a time --------------------------
def reference_returns(rewards, next_values, terminated, truncated, gamma):
    """R_t = sum_k gamma^k r_{t+k} up to the episode end or the rollout end, plus the bootstrap there."""
    T, N = rewards.shape
    out = np.zeros((T, N))
    for i in range(N):
        for t in range(T):
            total, discount = 0.0, 1.0
            for k in range(t, T):
                total += discount * rewards[k, i]
                if terminated[k, i]:
                    break
                if truncated[k, i] or k == T - 1:
                    total += discount * gamma * next_values[k, i]
                    break
                discount *= gamma
            out[t, i] = total
    return out


def reference_gae(rewards, values, next_values, terminated, truncated, gamma, lam):
    """A_t = sum_k (gamma * lam)^k delta_{t+k} up to the episode end or the rollout end."""
    T, N = rewards.shape
    out = np.zeros((T, N))
    for i in range(N):
        for t in range(T):
            total, weight = 0.0, 1.0
            for k in range(t, T):
                bootstrap = 0.0 if terminated[k, i] else gamma * next_values[k, i]
                total += weight * (rewards[k, i] + bootstrap - values[k, i])
                if terminated[k, i] or truncated[k, i]:
                    break
                weight *= gamma * lam
            out[t, i] = total
    return out


def random_rollout(seed, T=7, N=4):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(T, N)).astype(np.float32)
    values = rng.normal(size=(T, N)).astype(np.float32)
    next_values = rng.normal(size=(T, N)).astype(np.float32)
    ends = rng.random((T, N))
    terminated, truncated = ends < 0.15, (ends >= 0.15) & (ends < 0.3)
    terminated[2, 0], truncated[4, 1], truncated[-1, 2], terminated[-1, 3] = True, True, True, True
    # as collect_rollout builds them: inside an episode the next value is the next step's value
    ongoing = ~(terminated | truncated)
    next_values[:-1][ongoing[:-1]] = values[1:][ongoing[:-1]]
    return rewards, values, next_values, terminated, truncated


@pytest.mark.parametrize("seed", range(5))
def test_n_step_returns_match_loop_reference(seed):
    rewards, _, next_values, terminated, truncated = random_rollout(seed)
    got = n_step_returns(rewards, next_values, terminated, truncated, 0.9)
    np.testing.assert_allclose(got, reference_returns(rewards, next_values, terminated, truncated, 0.9), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("lam", [0.0, 0.5, 0.95, 1.0])
def test_gae_matches_loop_reference(seed, lam):
    rewards, values, next_values, terminated, truncated = random_rollout(seed)
    got = gae_advantages(rewards, values, next_values, terminated, truncated, 0.9, lam)
    want = reference_gae(rewards, values, next_values, terminated, truncated, 0.9, lam)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    if lam == 1.0:  # GAE(1) is the n-step return minus the baseline
        np.testing.assert_allclose(got, n_step_returns(rewards, next_values, terminated, truncated, 0.9) - values,
                                   rtol=1e-5, atol=1e-5)


def test_n_step_returns_hand_values():
    r = np.array([[1.0], [2.0], [3.0]], np.float32)
    nv = np.array([[9.0], [10.0], [4.0]], np.float32)
    none = np.zeros((3, 1), bool)
    at1 = np.array([[False], [True], [False]])
    # no episode end: 3 + .5*4 = 5, 2 + .5*5 = 4.5, 1 + .5*4.5 = 3.25 (next_values of steps 0, 1 unused)
    np.testing.assert_allclose(n_step_returns(r, nv, none, none, 0.5)[:, 0], [3.25, 4.5, 5.0])
    # terminal at step 1: R_1 = 2, R_0 = 1 + .5*2
    np.testing.assert_allclose(n_step_returns(r, nv, at1, none, 0.5)[:, 0], [2.0, 2.0, 5.0])
    # time limit at step 1 bootstraps from V(final obs) = 10: R_1 = 2 + .5*10 = 7, R_0 = 1 + .5*7
    np.testing.assert_allclose(n_step_returns(r, nv, none, at1, 0.5)[:, 0], [4.5, 7.0, 5.0])
    # GAE(0) is the one-step TD error: r + gamma * V' - V
    v = np.array([[1.0], [1.0], [1.0]], np.float32)
    np.testing.assert_allclose(gae_advantages(r, v, nv, at1, none, 0.5, 0.0)[:, 0], [1 + 4.5 - 1, 2 - 1, 3 + 2 - 1])


def test_loss_terms_match_hand_values():
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]], requires_grad=True)  # probs [.25, .75], [.5, .5]
    dist = Categorical(logits=logits)
    values = torch.tensor([1.0, 0.0], requires_grad=True)
    actions, advantages, returns = torch.tensor([1, 0]), torch.tensor([2.0, -1.0]), torch.tensor([3.0, 1.0])
    loss, terms = actor_critic_loss(dist, values, actions, advantages, returns, vf_coef=0.5, ent_coef=0.01)
    policy_loss = -(2 * math.log(0.75) - math.log(0.5)) / 2
    entropy = (-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)) + math.log(2)) / 2
    assert terms["losses/policy_loss"].item() == pytest.approx(policy_loss, abs=1e-6)
    assert terms["losses/entropy"].item() == pytest.approx(entropy, abs=1e-6)
    assert terms["losses/value_loss"].item() == pytest.approx((2**2 + 1**2) / 2, abs=1e-6)
    assert loss.item() == pytest.approx(policy_loss + 0.5 * 2.5 - 0.01 * entropy, abs=1e-6)

    # the policy-gradient term alone: d/dlogits = -A * (onehot(a) - p) / batch
    loss, _ = actor_critic_loss(Categorical(logits=logits), values, actions, advantages, returns, 0.0, 0.0)
    loss.backward()
    np.testing.assert_allclose(logits.grad.numpy(), [[0.25, -0.25], [0.25, -0.25]], atol=1e-6)
    assert values.grad is None or torch.all(values.grad == 0)  # advantages are constants for the policy term


def test_gaussian_entropy_and_log_prob_hand_values():
    dist = Independent(Normal(torch.zeros(1, 1), torch.full((1, 1), 2.0)), 1)
    _, terms = actor_critic_loss(dist, torch.zeros(1), torch.tensor([[2.0]]), torch.ones(1), torch.zeros(1), 0.5, 0.0)
    assert terms["losses/entropy"].item() == pytest.approx(0.5 * math.log(2 * math.pi * math.e) + math.log(2.0),
                                                           abs=1e-6)
    log_prob = -0.5 * (2.0 / 2.0) ** 2 - math.log(2.0) - 0.5 * math.log(2 * math.pi)
    assert terms["losses/policy_loss"].item() == pytest.approx(-log_prob, abs=1e-6)


# --- components ------------------------------------------------------------------------------------------
def test_truncated_steps_bootstrap_from_final_obs():
    """A 3-step TimeLimit on CartPole: the reset observation differs from the final one."""
    kwargs = {"max_episode_steps": 3}
    weights = np.array([1.0, -2.0, 3.0, 0.5], np.float32)

    def actor(obs, deterministic=False):  # a fixed policy and a value that tells observations apart
        return np.zeros(len(obs), np.int64), (np.asarray(obs) @ weights).astype(np.float32)

    vec = envs.make_vec_env("CartPole-v1", 2, seed=3, env_kwargs=kwargs)
    rollout, _, episodes = collect_rollout(vec, vec.reset(), actor, 7)
    assert rollout.truncated.sum() == 4 and not rollout.terminated.any() and len(episodes) == 4
    replay = envs.make_vec_env("CartPole-v1", 2, seed=3, env_kwargs=kwargs)
    replay.reset()
    for t in range(7):
        step = replay.step(np.zeros(2, np.int64))
        expected = step.final_obs @ weights  # V(final_obs), not V(the reset observation in step.obs)
        np.testing.assert_allclose(rollout.next_values[t], expected, rtol=1e-5)
        if step.truncated.any():
            assert not np.allclose(step.obs @ weights, expected)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "rlkit/ContinuousTarget-v0"])
def test_numpy_actor_critic_matches_torch(env_id):
    env = envs.make_env(env_id)
    torch.manual_seed(0)
    model = build_model(env.observation_space, env.action_space, [32, 32], "tanh", shared_trunk=False)
    with torch.no_grad():  # move the heads off their near-zero initialisation
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    obs = np.random.default_rng(0).uniform(-1, 1, size=(4000, *env.observation_space.shape)).astype(np.float32)
    actor = numpy_actor_critic(model, np.random.default_rng(1))
    with torch.no_grad():
        dist, values = model(torch.from_numpy(obs))
        mode = model.policy.mode(dist).numpy()
    greedy, v = actor(obs, deterministic=True)
    np.testing.assert_allclose(v, values.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(greedy, mode, rtol=1e-4, atol=1e-5)
    sampled, _ = actor(obs)
    if env_id == "CartPole-v1":  # the sampled frequencies follow pi: mean of P(a=1) vs the frequency of a=1
        assert abs(sampled.mean() - dist.probs[:, 1].mean().item()) < 0.03
    else:  # (a - mean) / std is standard normal
        z = (sampled - mode) / np.exp(model.policy.log_std.detach().numpy())
        assert abs(z.mean()) < 0.06 and abs(z.std() - 1) < 0.06


@pytest.mark.parametrize("variant", [
    {}, {"gae_lambda": 0.95, "optimizer": "adam", "shared_trunk": False, "lr_schedule": "linear"},
    {"env_id": "rlkit/ContinuousTarget-v0"}, {"env_id": "rlkit/Identity-v0"},
])
def test_smoke_variants_change_parameters(tmp_path, monkeypatch, variant):
    built = []  # the run's own model, as train() built it, before any update

    def recording_build(*args):
        model = original_build(*args)
        built.append({k: v.clone() for k, v in model.state_dict().items()})
        return model

    original_build = a2c.build_model
    monkeypatch.setattr(a2c, "build_model", recording_build)
    result = train(tiny(tmp_path, **variant))
    assert result["env_steps"] == 480
    state = load_checkpoint(result["run_dir"])
    (initial,) = built
    assert initial.keys() == state["model"].keys()
    unchanged = [k for k in initial if torch.equal(initial[k], state["model"][k])]
    assert not unchanged, f"parameters never updated: {unchanged}"
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"losses/policy_loss", "losses/value_loss", "losses/entropy", "charts/steps_per_second"} <= set(header)
    final = json.loads((tmp_path / "run" / "final.json").read_text())
    assert {"agent", "env_id", "seed", "env_steps", "wall_s", "eval"} <= set(final)
    assert list((tmp_path / "run").glob("events.out.tfevents.*"))


def test_same_seed_same_result(tmp_path):
    a = train(tiny(tmp_path, "a", seed=7))
    b = train(tiny(tmp_path, "b", seed=7))
    c = train(tiny(tmp_path, "c", seed=8))
    sa, sb, sc = (load_checkpoint(r["run_dir"])["model"] for r in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa) and a["eval"]["returns"] == b["eval"]["returns"]
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_resume_continues(tmp_path):
    assert train(tiny(tmp_path, total_steps=240))["env_steps"] == 240
    second = train(tiny(tmp_path, total_steps=480), resume=True)
    assert second["env_steps"] == 480
    steps = [int(r.split(",")[0]) for r in (tmp_path / "run" / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == sorted(steps) and 120 in steps and steps[-1] == 480


def test_checkpoint_policy_roundtrip(tmp_path):
    result = train(tiny(tmp_path, env_id="rlkit/ContinuousTarget-v0"))
    policy = load_policy(load_checkpoint(result["run_dir"]))
    obs = np.linspace(-1, 3, 50, dtype=np.float32).reshape(50, 1)
    actions = policy.act(obs)
    assert actions.shape == (50, 1) and actions.min() >= -1 and actions.max() <= 3  # clipped to the Box
    np.testing.assert_allclose(actions, policy.act(np.concatenate([obs, obs]))[:50], rtol=1e-5)  # torch == numpy


def test_truncation_bootstraps_to_infinite_horizon_value(tmp_path):
    # Reward 1 forever, cut by a 20-step TimeLimit: bootstrapping on truncation gives V = 1/(1-gamma) = 10;
    # treating the time limit as terminal would give 10 * (1 - 0.9^k) for k steps left (about 6 on average).
    cfg = tiny(tmp_path, env_id="rlkit/ConstantReward-v0", gamma=0.9, total_steps=4000, lr=0.01, ent_coef=0.0,
               max_grad_norm=0.0, vf_coef=1.0, checkpoint_every=0)
    policy = load_policy(load_checkpoint(train(cfg)["run_dir"]))
    with torch.no_grad():
        value = policy.module(torch.ones(1, 1))[1].item()
    assert value == pytest.approx(10.0, abs=0.7)


def test_refuses_unsupported_spaces(tmp_path):
    with pytest.raises(RLKitError, match="a2c supports Box and Discrete observations"):
        train(tiny(tmp_path, env_id="Blackjack-v1"))
    assert not (tmp_path / "run").exists()
    with pytest.raises(RLKitError, match="gae_lambda"):
        tiny(tmp_path, gae_lambda=1.5)


def test_cli_train_eval(tmp_path, cli):
    run_dir = tmp_path / "cli"
    out = cli("train", "a2c", "--env", "CartPole-v1", "--preset", "none", "--steps", "400", "--run-dir", str(run_dir),
              "--json", "--set", "num_envs=4", "--set", "hidden=[16]", "--set", "eval_episodes=2")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["env_steps"] == 400
    ev = cli("eval", str(run_dir), "--episodes", "2", "--json")
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["agent"] == "a2c"
    bad = cli("train", "a2c", "--env", "CartPole-v1", "--set", "n_steps=0", "--run-dir", str(tmp_path / "bad"))
    assert bad.returncode == 2 and bad.stderr.startswith("rlkit: error:") and "Traceback" not in bad.stderr


def test_pong_preset_smoke(tmp_path):
    pytest.importorskip("ale_py")
    from rlkit.agents.a2c import AGENT

    from rlkit.config import resolve_preset

    cfg = apply_overrides(A2CConfig(), resolve_preset(AGENT.presets(), "pong", "a2c"))
    assert (cfg.n_steps, cfg.rmsprop_alpha, cfg.ent_coef) == (5, 0.99, 0.01)
    cfg = apply_overrides(cfg, {"num_envs": 2, "total_steps": 100, "eval_episodes": 1, "progress": False,
                                "run_dir": str(tmp_path / "pong"), "env_kwargs": {"max_num_frames_per_episode": 400}})
    result = train(cfg)
    assert result["env_steps"] == 100 and np.isfinite(result["eval"]["mean"])


@pytest.mark.slow
def test_learns_cartpole(tmp_path):
    from rlkit.agents.a2c import AGENT

    from rlkit.config import resolve_preset

    cfg = apply_overrides(A2CConfig(), resolve_preset(AGENT.presets(), "cartpole", "a2c"))
    result = train(apply_overrides(cfg, {"seed": 0, "run_dir": str(tmp_path / "cp"), "progress": False}))
    assert result["eval"]["mean"] >= 475, result["eval"]
