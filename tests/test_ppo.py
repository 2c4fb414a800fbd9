"""PPO: the loss against hand values (both clip sides, advantage normalisation, value clip), VecNormalize's
reward scaling against SB3's running statistics, multi-discrete heads, smoke runs, determinism, resume, the
CLI (eval, video, demo recording, SB3 adapter), learning."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from rlkit.agents.ppo import (
    AGENT,
    PPOConfig,
    build_model,
    explained_variance,
    load_policy,
    ppo_loss,
    scale_rewards,
    train,
)
from torch.distributions import Categorical

from rlkit.checkpoint import load_checkpoint
from rlkit.config import apply_overrides, resolve_preset
from rlkit.distributions import MultiCategorical
from rlkit.errors import RLKitError
from rlkit.normalizers import ObsNormalizer
from rlkit.policy import SB3PredictAdapter

TINY = dict(total_steps=512, num_envs=4, n_steps=32, batch_size=32, n_epochs=2, hidden=[16], eval_episodes=2,
            checkpoint_every=256, log_every=128, progress=False)


def tiny(tmp_path, name="run", **over) -> PPOConfig:
    return apply_overrides(PPOConfig(), {**TINY, "run_dir": str(tmp_path / name), **over})


def loss_of(ratios, advantages, clip=0.2, normalize=False, values=None, old_values=None, returns=None,
            clip_vf=None, vf_coef=0.0, ent_coef=0.0, entropy=None):
    n = len(ratios)
    log_prob = torch.log(torch.tensor(ratios, dtype=torch.float64)).requires_grad_(True)
    zeros = torch.zeros(n, dtype=torch.float64)

    def t(x):
        return zeros if x is None else torch.tensor(x, dtype=torch.float64)

    loss, terms = ppo_loss(log_prob, zeros, t(advantages), t(values), t(old_values), t(returns), t(entropy),
                           clip, clip_vf, vf_coef, ent_coef, normalize)
    loss.backward()
    return loss.item(), terms, log_prob.grad


# ---------------------------------------------------------------- the loss against hand values
def test_policy_loss_clips_on_both_sides_of_one_plus_minus_eps():
    # (ratio, A): above 1+eps with A>0 is clipped (1.2), below 1-eps with A<0 is clipped (0.8); the two
    # others keep the unclipped, more pessimistic term; 1.1 lies inside the interval.
    ratios, adv = [1.5, 0.5, 0.5, 1.5, 1.1], [1.0, 1.0, -1.0, -1.0, 2.0]
    loss, terms, grad = loss_of(ratios, adv)
    assert loss == pytest.approx((-1.2 - 0.5 + 0.8 + 1.5 - 2.2) / 5)
    # clipped samples get no gradient; the others get -ratio * A / n (d ratio / d log_prob = ratio)
    np.testing.assert_allclose(grad.numpy(), [0.0, -0.5 / 5, 0.0, 1.5 / 5, -2.2 / 5], atol=1e-12)
    assert terms["losses/clip_fraction"].item() == pytest.approx(4 / 5)
    expected_kl = np.mean([(r - 1) - np.log(r) for r in ratios])
    assert terms["losses/approx_kl"].item() == pytest.approx(expected_kl)


def test_advantage_normalisation():
    # A = [1, 2, 3]: mean 2, unbiased std 1 -> [-1, 0, 1]; ratios inside the clip interval
    loss, _, _ = loss_of([1.1, 1.0, 0.9], [1.0, 2.0, 3.0], normalize=True)
    assert loss == pytest.approx(-(-1.1 + 0.0 + 0.9) / 3, abs=1e-7)
    unnormalised, _, _ = loss_of([1.1, 1.0, 0.9], [1.0, 2.0, 3.0], normalize=False)
    assert unnormalised == pytest.approx(-(1.1 + 2.0 + 2.7) / 3)


def test_value_clip_takes_the_pessimistic_term_and_coefficients_combine():
    # old V = 0, clip 0.1: V = 1 -> V_c = 0.1. Return 0: max(1, 0.01) = 1; return 2: max(1, 3.61) = 3.61.
    kw = dict(values=[1.0, 1.0], old_values=[0.0, 0.0], returns=[0.0, 2.0])
    _, clipped, _ = loss_of([1.0, 1.0], [0.0, 0.0], clip_vf=0.1, **kw)
    assert clipped["losses/value_loss"].item() == pytest.approx((1.0 + 3.61) / 2)
    _, plain, _ = loss_of([1.0, 1.0], [0.0, 0.0], **kw)
    assert plain["losses/value_loss"].item() == pytest.approx(1.0)
    loss, terms, _ = loss_of([1.0, 1.0], [1.0, 3.0], vf_coef=0.5, ent_coef=0.1, entropy=[0.5, 1.5], **kw)
    assert terms["losses/entropy"].item() == pytest.approx(1.0)
    assert loss == pytest.approx(-2.0 + 0.5 * 1.0 - 0.1 * 1.0)


def test_explained_variance_hand_values():
    target = np.array([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(target, target) == 1.0
    assert explained_variance(np.full(4, 2.5), target) == pytest.approx(0.0)
    assert explained_variance(target - 1.0, target) == pytest.approx(1.0)  # a constant offset is not penalised
    assert explained_variance(-target, target) == pytest.approx(1 - np.var(2 * target) / np.var(target))


def test_reward_scaling_matches_sb3_vecnormalize_statistics():
    from stable_baselines3.common.running_mean_std import RunningMeanStd

    rng = np.random.default_rng(0)
    rewards = rng.normal(2.0, 3.0, size=(50, 3)).astype(np.float32)
    dones = rng.random((50, 3)) < 0.1
    running, stats = np.zeros(3), ObsNormalizer((), 10.0)
    got = scale_rewards(rewards, dones, running, stats, gamma=0.9, clip=10.0)
    ref_rms, ref_ret, expected = RunningMeanStd(shape=()), np.zeros(3), []
    for t in range(50):  # VecNormalize.step_wait / normalize_reward, step by step
        ref_ret = ref_ret * 0.9 + rewards[t]
        ref_rms.update(ref_ret)
        expected.append(np.clip(rewards[t] / np.sqrt(ref_rms.var + 1e-8), -10, 10))
        ref_ret[dones[t]] = 0
    np.testing.assert_allclose(got, np.array(expected), rtol=1e-5)
    np.testing.assert_allclose(running, ref_ret)
    assert not np.allclose(got, rewards)


def test_multi_categorical_sums_independent_parts():
    logits = torch.tensor([[0.0, 1.0, 2.0, 0.5, -0.5]])
    dist = MultiCategorical(logits, [3, 2])
    a, b = Categorical(logits=logits[:, :3]), Categorical(logits=logits[:, 3:])
    actions = torch.tensor([[2, 1]])
    assert dist.log_prob(actions).item() == pytest.approx((a.log_prob(torch.tensor([2])) +
                                                           b.log_prob(torch.tensor([1]))).item())
    assert dist.entropy().item() == pytest.approx((a.entropy() + b.entropy()).item())
    assert dist.mode.tolist() == [[2, 0]]
    assert dist.sample((7,)).shape == (7, 1, 2)


# ---------------------------------------------------------------- a multi-discrete test env
class TwoSymbolEnv(gym.Env):
    """Observe two symbols (3 and 2 values), reward 0.5 per symbol repeated by the MultiDiscrete action."""

    observation_space = gym.spaces.Box(0.0, 2.0, (2,), np.float32)
    action_space = gym.spaces.MultiDiscrete([3, 2])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        self._state = np.array([self.np_random.integers(3), self.np_random.integers(2)])
        return self._state.astype(np.float32), {}

    def step(self, action):
        reward = 0.5 * float(np.sum(np.asarray(action) == self._state))
        self._t += 1
        self._state = np.array([self.np_random.integers(3), self.np_random.integers(2)])
        return self._state.astype(np.float32), reward, False, self._t >= 20, {}


class MultiBinaryEnv(TwoSymbolEnv):
    action_space = gym.spaces.MultiBinary(2)


for _name, _cls in (("tests/TwoSymbol-v0", TwoSymbolEnv), ("tests/MultiBinary-v0", MultiBinaryEnv)):
    if _name not in gym.envs.registry:
        gym.register(_name, entry_point=_cls)


# ---------------------------------------------------------------- runs
@pytest.mark.parametrize("variant", [
    {},
    {"env_id": "Pendulum-v1", "normalize_obs": True, "normalize_reward": True, "clip_range_vf": 0.2,
     "lr_schedule": "linear", "clip_range_schedule": "linear", "ent_coef": 0.01, "target_kl": 0.01},
    {"env_id": "tests/TwoSymbol-v0"},
    {"env_id": "rlkit/Identity-v0", "shared_trunk": True},
])
def test_smoke_variants_change_parameters(tmp_path, variant):
    result = train(tiny(tmp_path, **variant))
    assert result["env_steps"] == 512
    state = load_checkpoint(result["run_dir"])
    env = gym.make(variant.get("env_id", "CartPole-v1"))
    torch.manual_seed(0)  # Run seeds torch with cfg.seed (0) before building: the same initial network
    initial = build_model(tiny(tmp_path, **variant), env.observation_space, env.action_space)
    assert any(not torch.allclose(v, state["model"][k]) for k, v in initial.state_dict().items())
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"losses/approx_kl", "losses/clip_fraction", "losses/explained_variance", "losses/policy_loss",
            "charts/clip_range", "charts/learning_rate"} <= set(header)
    policy = load_policy(state)
    actions = policy.act(np.stack([env.observation_space.sample() for _ in range(5)]))
    assert all(env.action_space.contains(a.astype(env.action_space.dtype)) for a in actions)
    if variant.get("normalize_obs"):
        assert state["obs_normalizer"]["count"] > 500 and state["return_normalizer"]["count"] > 500


def test_same_seed_same_result(tmp_path):
    a, b, c = (train(tiny(tmp_path, name, seed=seed)) for name, seed in (("a", 5), ("b", 5), ("c", 6)))
    sa, sb, sc = (load_checkpoint(r["run_dir"])["model"] for r in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa) and a["eval"]["returns"] == b["eval"]["returns"]
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


@pytest.mark.parametrize("setting, fragment", [("batch_size=0", "'batch_size' must be in [1, 1e+12]"),
                                              ("gae_lambda=1.5", "gae_lambda"), ("clip_range=-1", "clip_range"),
                                              ("n_epochs=x", "n_epochs")])
def test_bad_values_through_the_cli(tmp_path, cli, setting, fragment):
    proc = cli("train", "ppo", "--env", "CartPole-v1", "--set", setting, "--run-dir", str(tmp_path / "bad"))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("rlkit: error:"), proc.stderr
    assert fragment in lines[0] and not (tmp_path / "bad").exists()


def test_bad_values_are_one_line_errors(tmp_path):
    with pytest.raises(RLKitError, match="batch_size 512 exceeds a rollout"):
        tiny(tmp_path, batch_size=512)
    with pytest.raises(RLKitError, match="clip_range"):
        tiny(tmp_path, clip_range=0.0)
    with pytest.raises(RLKitError, match="ppo supports Discrete, MultiDiscrete and Box"):
        train(tiny(tmp_path, env_id="tests/MultiBinary-v0"))
    assert not (tmp_path / "run").exists()


def test_resume_eval_video_record_and_sb3_adapter_through_cli(tmp_path, cli):
    run_dir = str(tmp_path / "ppo")
    sets = ["--set", "num_envs=2", "--set", "n_steps=64", "--set", "batch_size=32", "--set", "n_epochs=2",
            "--set", "hidden=[16]", "--set", "checkpoint_every=128", "--set", "eval_episodes=2",
            "--set", "normalize_obs=true", "--set", "normalize_reward=true"]
    first = cli("train", "ppo", "--env", "Pendulum-v1", "--steps", "256", "--run-dir", run_dir, "--no-progress",
                "--json", *sets)
    assert first.returncode == 0, first.stderr
    second = cli("train", "ppo", "--resume", run_dir, "--steps", "512", "--no-progress", "--json")
    assert second.returncode == 0, second.stderr
    result = json.loads(second.stdout)
    assert result["env_steps"] == 512 and result["agent"] == "ppo"
    state = load_checkpoint(run_dir)
    assert state["obs_normalizer"]["count"] > 511  # the statistics continued after the resume
    ev = cli("eval", run_dir, "--episodes", "2", "--seed", "10000", "--json", "--video", str(tmp_path / "v.gif"))
    assert ev.returncode == 0, ev.stderr
    # `rlkit eval` rebuilds the same policy (normaliser included) and matches the run's final evaluation
    assert json.loads(ev.stdout)["returns"] == pytest.approx(result["eval"]["returns"])
    assert (tmp_path / "v.gif").stat().st_size > 0
    rec = cli("demos", "record", "--env", "Pendulum-v1", "--policy", run_dir, "--episodes", "2",
              "--out", str(tmp_path / "demos"), "--quiet", "--json")
    assert rec.returncode == 0, rec.stderr
    policy = load_policy(state)
    obs = np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32)
    np.testing.assert_allclose(policy.act(obs[:8]), policy.act(obs)[:8], atol=1e-5)  # numpy path == torch path
    raw = policy.module(torch.as_tensor(obs[:8]))[0].mean.detach().numpy()
    assert not np.allclose(np.clip(raw, -2, 2), policy.act(obs[:8]), atol=1e-3)  # observations are normalised
    adapter = SB3PredictAdapter(policy, policy.observation_space, policy.action_space)
    action, _ = adapter.predict(obs[0], deterministic=True)
    np.testing.assert_allclose(action, policy.act(obs[:1])[0])


def test_trained_run_is_a_dagger_expert(tmp_path, cli):
    expert = train(tiny(tmp_path, "expert"))["run_dir"]
    out = cli("train", "dagger", "--env", "CartPole-v1", "--set", f"expert={expert}", "--set", "rounds=2",
              "--set", "episodes_per_round=2", "--set", "epochs_per_round=1", "--set", "eval_episodes=1",
              "--run-dir", str(tmp_path / "dagger"), "--no-progress", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["env_steps"] > 0
    # the PPO run is the expert: every state DAgger visited carries the PPO policy's deterministic action
    from rlkit import demos
    from rlkit.policy import load_policy as load_run_policy

    labels = demos.load(tmp_path / "dagger" / "labels")
    ppo_policy = load_run_policy(expert)
    assert len(labels) == 2 * 2  # rounds x episodes_per_round
    for episode in labels:
        np.testing.assert_array_equal(episode.actions, ppo_policy.act(episode.obs[:-1], deterministic=True))


def test_presets_carry_references():
    presets = AGENT.presets()
    assert {"cartpole", "pendulum", "halfcheetah", "pong"} <= set(presets)
    assert all(p["_reference"] for p in presets.values())
    assert presets["halfcheetah"]["env_id"].endswith("-v5")


def test_pong_preset_smoke(tmp_path):
    pytest.importorskip("ale_py")
    cfg = apply_overrides(PPOConfig(), resolve_preset(AGENT.presets(), "pong", "ppo"))
    cfg = apply_overrides(cfg, {"num_envs": 2, "n_steps": 32, "batch_size": 32, "n_epochs": 1, "total_steps": 64,
                                "eval_episodes": 1, "progress": False, "run_dir": str(tmp_path / "pong"),
                                "env_kwargs": {"max_num_frames_per_episode": 400}})
    result = train(cfg)
    assert result["env_steps"] == 64 and np.isfinite(result["eval"]["mean"])


# ---------------------------------------------------------------- learning (fixed seeds)
def test_learns_multidiscrete_and_gaussian_target(tmp_path):
    # Two symbols to repeat (a bandit, so gamma 0; best mean return 20 over 20 steps, random 8.3) and a
    # one-step continuous target (reward -(a - target)^2, targets in [-1, 3]; a constant action scores about -1.3).
    md = train(tiny(tmp_path, "md", env_id="tests/TwoSymbol-v0", total_steps=8192, n_steps=128, batch_size=128,
                    gamma=0.0, n_epochs=4, lr=1e-2, hidden=[32], eval_episodes=5, checkpoint_every=0))
    assert md["eval"]["mean"] >= 19.0, md["eval"]
    gauss = train(tiny(tmp_path, "g", env_id="rlkit/ContinuousTarget-v0", total_steps=8192, n_steps=128,
                       batch_size=128, n_epochs=4, lr=3e-3, hidden=[32], eval_episodes=20, checkpoint_every=0))
    assert gauss["eval"]["mean"] >= -0.05, gauss["eval"]


@pytest.mark.slow
def test_learns_cartpole(tmp_path):
    cfg = apply_overrides(PPOConfig(), resolve_preset(AGENT.presets(), "cartpole", "ppo"))
    result = train(apply_overrides(cfg, {"seed": 0, "run_dir": str(tmp_path / "cp"), "progress": False,
                                         "eval_every": 0, "checkpoint_every": 0}))
    assert result["eval"]["mean"] >= 475, result["eval"]
