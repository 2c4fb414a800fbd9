"""SAC: the squashed log-prob against closed forms and Monte Carlo, the soft target and temperature update
against hand values, smoke runs, determinism, resume with the replay buffer, the CLI, learning."""

import json
import math

import numpy as np
import pytest
import torch
from rlkit.agents.sac import (
    AGENT,
    SACConfig,
    SquashedGaussianActor,
    load_policy,
    soft_td_target,
    temperature_loss,
    train,
)
from torch.distributions import Normal

from rlkit.checkpoint import list_checkpoints, load_buffer, load_checkpoint
from rlkit.config import apply_overrides, resolve_preset
from rlkit.distributions import squashed_log_prob
from rlkit.errors import RLKitError
from rlkit.policy import SB3PredictAdapter

TINY = dict(env_id="Pendulum-v1", total_steps=400, learning_starts=200, batch_size=32, buffer_size=1000,
            hidden=[32, 32], eval_episodes=2, checkpoint_every=200, log_every=100, progress=False)


def tiny(tmp_path, name="run", **over) -> SACConfig:
    return apply_overrides(SACConfig(), {**TINY, "run_dir": str(tmp_path / name), **over})


# ---------------------------------------------------------------- math against closed forms
def test_squashed_log_prob_matches_change_of_variables():
    # a = tanh(u): p_a(a) = p_u(u) / (1 - tanh(u)^2), per dimension, dimensions independent
    u = torch.tensor([[0.3, -1.2], [2.5, 0.0], [-8.0, 4.0]], dtype=torch.float64)
    mean = torch.tensor([0.1, -0.5], dtype=torch.float64).expand_as(u)
    log_std = torch.tensor([-0.7, 0.4], dtype=torch.float64).expand_as(u)
    expected = np.zeros(3)
    for i in range(3):
        for j in range(2):
            m, s, x = mean[i, j].item(), math.exp(log_std[i, j].item()), u[i, j].item()
            density = math.exp(-0.5 * ((x - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))
            expected[i] += math.log(density) - math.log(1 - math.tanh(x) ** 2)
    np.testing.assert_allclose(squashed_log_prob(u, mean, log_std).numpy(), expected, rtol=1e-9)
    # finite where tanh saturates in float32 (the naive log(1 - tanh^2) is -inf at |u| = 20)
    far = squashed_log_prob(torch.tensor([[20.0]]), torch.tensor([[20.0]]), torch.tensor([[0.0]]))
    # log N(20; 20, 1) - log(1 - tanh(20)^2) = -log(2 pi) / 2 + 2 * 20 - 2 log 2
    assert far.item() == pytest.approx(-0.5 * math.log(2 * math.pi) + 40 - 2 * math.log(2), rel=1e-5)


def test_squashed_density_integrates_to_one_and_entropy_matches_monte_carlo():
    # The density of a = tanh(u) on (-1, 1), integrated on a fine grid, is 1; -E[log p(a)] by Monte Carlo
    # equals the entropy computed by quadrature.
    mean, log_std = torch.tensor([[0.4]], dtype=torch.float64), torch.tensor([[-0.3]], dtype=torch.float64)
    a = torch.linspace(-1 + 1e-9, 1 - 1e-9, 400_001, dtype=torch.float64)[:, None]
    log_p = squashed_log_prob(torch.atanh(a), mean.expand_as(a), log_std.expand_as(a))
    step = (a[1] - a[0]).item()
    assert (log_p.exp().sum().item() * step) == pytest.approx(1.0, abs=1e-4)
    entropy_quadrature = -(log_p.exp() * log_p).sum().item() * step
    torch.manual_seed(0)
    u = Normal(mean, log_std.exp()).sample((200_000,)).reshape(-1, 1)
    entropy_mc = -squashed_log_prob(u, mean.expand_as(u), log_std.expand_as(u)).mean().item()
    assert entropy_mc == pytest.approx(entropy_quadrature, abs=0.01)


def test_actor_sample_log_prob_is_the_density_of_the_unit_action():
    import gymnasium as gym

    space = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32))
    actor = SquashedGaussianActor(gym.spaces.Box(-1, 1, (3,), np.float32), space, [16])
    obs = torch.randn(64, 3)
    torch.manual_seed(1)
    actions, log_prob = actor.sample(obs)
    assert (actions[:, 0].abs() < 2).all() and (actions[:, 1] > 0).all() and (actions[:, 1] < 1).all()
    mean, log_std = actor(obs)
    unit = (actions - actor.action_bias) / actor.action_scale
    recomputed = squashed_log_prob(torch.atanh(unit.double().clamp(-1 + 1e-12, 1 - 1e-12)), mean.double(),
                                   log_std.double())
    np.testing.assert_allclose(log_prob.detach().numpy(), recomputed.detach().numpy(), rtol=1e-3, atol=1e-3)


def test_soft_td_target_hand_values():
    rewards, terminated = torch.tensor([1.0, 1.0]), torch.tensor([0.0, 1.0])
    next_q = torch.tensor([[3.0, 5.0], [2.0, 7.0]])  # (critics, batch): the minimum is [2, 5]
    target = soft_td_target(rewards, terminated, torch.tensor([0.9, 0.9]), next_q, torch.tensor([-1.0, -1.0]), 0.5)
    # 1 + 0.9 * (2 - 0.5 * -1) = 3.25; terminated: 1
    np.testing.assert_allclose(target.numpy(), [3.25, 1.0])


@pytest.mark.parametrize("log_prob, direction", [(-3.0, -1), (0.5, -1), (2.0, +1)])
def test_temperature_moves_alpha_towards_the_target_entropy(log_prob, direction):
    # target entropy -1: entropies 3 and -0.5 are above it, so alpha must fall; entropy -2 is below, alpha rises
    log_alpha = torch.zeros((), requires_grad=True)
    loss = temperature_loss(log_alpha, torch.full((8,), log_prob), target_entropy=-1.0)
    loss.backward()
    assert log_alpha.grad.item() == pytest.approx(-(log_prob - 1.0))
    opt = torch.optim.Adam([log_alpha], lr=0.1)
    opt.step()
    assert np.sign(log_alpha.item()) == direction


# ---------------------------------------------------------------- runs
def test_smoke_run_logs_and_tunes_alpha(tmp_path):
    result = train(tiny(tmp_path, normalize_obs=True))
    state = load_checkpoint(result["run_dir"])
    assert state["num_updates"] == 200 and state["log_alpha"].item() != 0.0
    assert all(torch.isfinite(v).all() for v in state["actor"].values())
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"losses/critic_loss", "losses/actor_loss", "losses/alpha", "losses/entropy"} <= set(header)
    fixed = train(tiny(tmp_path, "fixed", autotune=False, alpha=0.2))
    assert load_checkpoint(fixed["run_dir"])["log_alpha"].item() == pytest.approx(math.log(0.2))


def test_same_seed_same_result(tmp_path):
    a, b, c = (train(tiny(tmp_path, name, seed=seed)) for name, seed in (("a", 3), ("b", 3), ("c", 4)))
    sa, sb, sc = (load_checkpoint(r["run_dir"])["actor"] for r in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa) and a["eval"]["returns"] == b["eval"]["returns"]
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_discrete_env_and_bad_values_refused(tmp_path):
    with pytest.raises(RLKitError, match=r"sac needs a continuous \(Box\) action space"):
        train(tiny(tmp_path, env_id="CartPole-v1"))
    assert not (tmp_path / "run").exists()
    with pytest.raises(RLKitError, match="tau' must be in"):
        tiny(tmp_path, tau=0.0)
    with pytest.raises(RLKitError, match="alpha"):
        tiny(tmp_path, alpha=0.0)


@pytest.mark.parametrize("setting, fragment", [("tau=2", "'tau' must be in"), ("batch_size=0", "batch_size"),
                                              ("target_entropy=abc", "target_entropy")])
def test_bad_values_through_the_cli(tmp_path, cli, setting, fragment):
    proc = cli("train", "sac", "--env", "Pendulum-v1", "--set", setting, "--run-dir", str(tmp_path / "bad"))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("rlkit: error:"), proc.stderr
    assert fragment in lines[0] and not (tmp_path / "bad").exists()


def test_resume_with_replay_buffer_eval_and_record_through_cli(tmp_path, cli):
    run_dir = str(tmp_path / "sac")
    sets = ["--set", "hidden=[32,32]", "--set", "learning_starts=100", "--set", "batch_size=32",
            "--set", "checkpoint_every=100", "--set", "eval_episodes=2", "--set", "normalize_obs=true"]
    first = cli("train", "sac", "--env", "Pendulum-v1", "--steps", "200", "--seed", "1", "--run-dir", run_dir,
                "--no-progress", "--json", *sets)
    assert first.returncode == 0, first.stderr
    second = cli("train", "sac", "--resume", run_dir, "--steps", "400", "--no-progress", "--json")
    assert second.returncode == 0, second.stderr
    result = json.loads(second.stdout)
    assert result["env_steps"] == 400 and result["agent"] == "sac"
    state = load_checkpoint(run_dir)
    assert state["global_step"] == 400 and state["num_updates"] == 300  # updates continued after the resume
    buffer = load_buffer(list_checkpoints(tmp_path / "sac")[-1])  # committed with its checkpoint
    assert buffer["pos"] == 400  # the buffer kept the first run's 200 transitions and added 200
    ev = cli("eval", run_dir, "--episodes", "2", "--seed", "10000", "--json", "--video", str(tmp_path / "v.gif"))
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["returns"] == pytest.approx(result["eval"]["returns"])
    rec = cli("demos", "record", "--env", "Pendulum-v1", "--policy", run_dir, "--episodes", "1",
              "--out", str(tmp_path / "demos"), "--quiet", "--json")
    assert rec.returncode == 0, rec.stderr
    policy = load_policy(state)
    obs = np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32)
    np.testing.assert_allclose(policy.act(obs[:8]), policy.act(obs)[:8], atol=1e-5)  # numpy path == torch path
    sampled = policy.act(obs, deterministic=False)
    assert sampled.shape == (100, 1) and np.abs(sampled).max() <= 2.0 and not np.allclose(sampled, policy.act(obs))
    adapter = SB3PredictAdapter(policy, policy.observation_space, policy.action_space)
    np.testing.assert_allclose(adapter.predict(obs[0], deterministic=True)[0], policy.act(obs[:1])[0])


def test_presets_carry_references():
    presets = AGENT.presets()
    assert {"pendulum", "halfcheetah", "hopper"} <= set(presets)
    assert all(p["_reference"] for p in presets.values())
    assert all(presets[name]["env_id"].endswith("-v5") for name in ("halfcheetah", "hopper"))


def test_mujoco_presets_smoke(tmp_path, monkeypatch):
    pytest.importorskip("mujoco")
    monkeypatch.chdir(tmp_path)  # MuJoCo writes MUJOCO_LOG.TXT into the working directory
    for preset in ("halfcheetah", "hopper"):
        cfg = apply_overrides(SACConfig(), resolve_preset(AGENT.presets(), preset, "sac"))
        cfg = apply_overrides(cfg, {"total_steps": 300, "learning_starts": 200, "eval_every": 0, "eval_episodes": 1,
                                    "checkpoint_every": 0, "run_dir": str(tmp_path / preset), "progress": False})
        result = train(cfg)
        assert result["env_steps"] == 300 and np.isfinite(result["eval"]["mean"])


# ---------------------------------------------------------------- learning (fixed seed)
@pytest.mark.slow
def test_learns_pendulum(tmp_path):
    cfg = apply_overrides(SACConfig(), resolve_preset(AGENT.presets(), "pendulum", "sac"))
    result = train(apply_overrides(cfg, {"seed": 0, "total_steps": 8000, "hidden": [128, 128], "eval_every": 0,
                                         "checkpoint_every": 0, "tensorboard": False, "progress": False,
                                         "run_dir": str(tmp_path / "sac")}))
    assert result["eval"]["mean"] >= -250, result["eval"]
