"""BC: loss math against hand values, networks, training bookkeeping, CLI, and learning CartPole."""

from __future__ import annotations

import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from rlkit.agents.bc import BCConfig, BCNet, load_policy, make_policy, resolve_loss, train, train_epoch

from rlkit import demos, envs
from rlkit.checkpoint import load_checkpoint
from rlkit.cloning import bc_loss, gaussian_nll
from rlkit.errors import RLKitError
from rlkit.fast.flat_adam import FlatAdam


class CartPoleRule:
    """The classic scripted CartPole controller: push towards where the pole is falling (scores 500)."""

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return (3.0 * obs[:, 2] + obs[:, 3] > 0).astype(np.int64)


class TargetExpert:
    """ContinuousTarget's expert: the action is the observed target."""

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return np.asarray(obs, dtype=np.float32)


@pytest.fixture(scope="module")
def cartpole_demos(tmp_path_factory):
    out = tmp_path_factory.mktemp("demos") / "cartpole"
    stats = demos.record(CartPoleRule(), "CartPole-v1", episodes=10, out=out, seed=0)
    assert stats["mean_return"] == 500.0
    return out


def quick(tmp_path, demos_path, name="run", **over) -> BCConfig:
    base = dict(demos=str(demos_path), run_dir=str(tmp_path / name), epochs=3, eval_episodes=1, progress=False,
                tensorboard=False)
    return BCConfig(**{**base, **over})


# -- layer 1: math ---------------------------------------------------------------------------------

def test_cross_entropy_hand_values():
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])  # p = (1/4, 3/4)
    actions = torch.tensor([1, 0])
    expected = (-math.log(0.75) + math.log(4.0)) / 2  # (0.2877 + 1.3863) / 2
    assert bc_loss(logits, actions, "ce").item() == pytest.approx(expected, abs=1e-6)


def test_mse_hand_values():
    means = torch.tensor([[0.5, 0.0], [1.0, 3.0]])
    actions = torch.tensor([[0.0, 0.0], [2.0, 1.0]])
    assert bc_loss(means, actions, "mse").item() == pytest.approx((0.25 + 0 + 1 + 4) / 4)


def test_gaussian_nll_hand_values():
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    # sigma = 1, error 1: 0.5 + 0 + 0.9189 per dim
    one = gaussian_nll(torch.zeros(1, 1), torch.zeros(1), torch.ones(1, 1))
    assert one.item() == pytest.approx(0.5 + half_log_2pi, abs=1e-6)
    # two dims, sigma = (e, 1), errors (2, 0): (0.5 * 4/e^2 + 1 + c) + (0 + 0 + c)
    two = bc_loss(torch.zeros(1, 2), torch.tensor([[2.0, 0.0]]), "nll", log_std=torch.tensor([1.0, 0.0]))
    assert two.item() == pytest.approx(2.0 / math.e ** 2 + 1.0 + 2 * half_log_2pi, abs=1e-6)
    # and it agrees with torch's Normal
    mean, log_std, act = torch.randn(5, 3), torch.randn(3), torch.randn(5, 3)
    ref = -torch.distributions.Normal(mean, log_std.exp()).log_prob(act).sum(-1).mean()
    assert gaussian_nll(mean, log_std, act).item() == pytest.approx(ref.item(), rel=1e-5)


def test_resolve_loss_checks_the_action_space():
    assert resolve_loss("auto", gym.spaces.Discrete(2)) == "ce"
    assert resolve_loss("auto", gym.spaces.Box(-1, 1, (2,))) == "mse"
    assert resolve_loss("nll", gym.spaces.Box(-1, 1, (2,))) == "nll"
    with pytest.raises(RLKitError, match="does not fit"):
        resolve_loss("mse", gym.spaces.Discrete(2))
    with pytest.raises(RLKitError, match="does not fit"):
        resolve_loss("ce", gym.spaces.Box(-1, 1, (2,)))


# -- layer 2: networks and policies ----------------------------------------------------------------

def test_training_moves_every_parameter_through_the_flat_buffer():
    env = envs.make_env("CartPole-v1")
    net = BCNet(env.observation_space, env.action_space, [16], "ce")
    before = [p.detach().clone() for p in net.parameters()]
    optimizer = FlatAdam(net, lr=0.01)
    loss, steps, samples = train_epoch(net, optimizer, torch.randn(100, 4), torch.randint(0, 2, (100,)), 32, "ce")
    assert (steps, samples) == (4, 100) and math.isfinite(loss)
    assert all(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert optimizer.param.data_ptr() == next(net.parameters()).data_ptr()  # still views of the flat buffer

def test_continuous_policy_stays_in_asymmetric_bounds_and_fast_path_matches():
    env = envs.make_env("rlkit/ContinuousTarget-v0")
    net = BCNet(env.observation_space, env.action_space, [16], "nll")
    policy = make_policy(net, env.observation_space, env.action_space)
    obs = np.random.default_rng(0).uniform(-1, 3, (8, 1)).astype(np.float32)
    fast, slow = policy.act(obs), policy.act(np.repeat(obs, 10, axis=0))[::10]  # >64 rows take torch
    assert fast.shape == (8, 1) and np.allclose(fast, slow, atol=1e-5)
    noisy = policy.act(np.repeat(obs, 20, axis=0), deterministic=False)
    assert (noisy >= -1).all() and (noisy <= 3).all() and noisy.std() > 0


def test_image_observations_get_the_cnn():
    obs_space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    net = BCNet(obs_space, gym.spaces.Discrete(6), [], "ce")
    obs = torch.randint(0, 255, (2, 4, 84, 84), dtype=torch.uint8)
    loss = bc_loss(net(obs), torch.tensor([1, 5]), "ce")
    loss.backward()
    assert net.body.encoder.cnn is not None and net.body.encoder.cnn.conv[0].weight.grad is not None


# -- layer 3: training runs ------------------------------------------------------------------------

def test_env_comes_from_the_dataset_and_best_weights_are_kept(tmp_path, cartpole_demos):
    result = train(quick(tmp_path, cartpole_demos, epochs=4, patience=0))
    assert result["env_id"] == "CartPole-v1" and result["env_steps"] == 0
    assert result["demo_episodes"] == 10 and result["train_transitions"] == 4000  # 8 of 10 episodes
    assert json.loads((tmp_path / "run" / "config.json").read_text())["env_id"] == "CartPole-v1"
    state = load_checkpoint(result["run_dir"])
    best = state["best"]
    assert best["epoch"] == result["best_epoch"] and best["loss"] == pytest.approx(result["best_val_loss"])
    assert all(torch.equal(state["net"][k], best["state"][k]) for k in best["state"])
    # the saved weights really score the reported validation loss on the held-out episodes
    from rlkit.agents.bc import evaluate_loss, to_tensors

    _, val = demos.load(cartpole_demos).split(0.2, seed=0)
    policy = load_policy(state)
    val_loss, acc = evaluate_loss(policy.module, *to_tensors(val, val.action_space), "ce")
    assert val_loss == pytest.approx(result["best_val_loss"], rel=1e-5) and 0.5 < acc <= 1.0
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"losses/train", "losses/val", "charts/val_accuracy", "charts/samples_per_second"} <= set(header)


def test_early_stopping_stops_after_patience(tmp_path, cartpole_demos):
    # lr 0: the validation loss never improves after epoch 1, so training stops after 1 + patience epochs
    result = train(quick(tmp_path, cartpole_demos, epochs=50, patience=2, lr=0.0))
    assert result["epochs"] == 3 and result["best_epoch"] == 1


def test_same_seed_same_weights_and_total_steps_cap(tmp_path, cartpole_demos):
    a = train(quick(tmp_path, cartpole_demos, "a", total_steps=30, seed=3))
    b = train(quick(tmp_path, cartpole_demos, "b", total_steps=30, seed=3))
    assert a["gradient_steps"] == 30
    sa, sb = load_checkpoint(a["run_dir"])["net"], load_checkpoint(b["run_dir"])["net"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_continues_the_epoch_count(tmp_path, cartpole_demos):
    first = train(quick(tmp_path, cartpole_demos, epochs=2, val_fraction=0.0))
    assert first["epochs"] == 2
    again = train(quick(tmp_path, cartpole_demos, epochs=4, val_fraction=0.0), resume=True)
    assert again["epochs"] == 4 and again["gradient_steps"] == 2 * first["gradient_steps"]


def test_ctrl_c_saves_a_checkpoint_that_resumes(tmp_path, cartpole_demos, monkeypatch):
    from rlkit.agents import bc

    calls = []

    def interrupted_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original_epoch(*args, **kwargs)

    original_epoch = bc.train_epoch
    monkeypatch.setattr(bc, "train_epoch", interrupted_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(quick(tmp_path, cartpole_demos, epochs=5, checkpoint_every=0))
    state = load_checkpoint(tmp_path / "run")  # written on the way out, after two finished epochs
    assert state["epoch"] == 2 and state["global_step"] > 0
    monkeypatch.setattr(bc, "train_epoch", original_epoch)
    result = train(quick(tmp_path, cartpole_demos, epochs=5, checkpoint_every=0), resume=True)
    assert result["epochs"] == 5


def test_num_demos_and_bad_input(tmp_path, cartpole_demos):
    assert train(quick(tmp_path, cartpole_demos, num_demos=1))["train_transitions"] == 500  # 1 episode: no split
    with pytest.raises(RLKitError, match="holds 10 episodes"):
        train(quick(tmp_path, cartpole_demos, "x", num_demos=11))
    with pytest.raises(RLKitError, match="--demos DATASET"):
        train(BCConfig(run_dir=str(tmp_path / "y")))
    with pytest.raises(RLKitError, match="observation space"):
        train(quick(tmp_path, cartpole_demos, "z", env_id="Acrobot-v1"))


def test_continuous_bc_learns_the_target_task(tmp_path):
    out = tmp_path / "target"
    demos.record(TargetExpert(), "rlkit/ContinuousTarget-v0", episodes=300, out=out, seed=0)
    for loss in ("mse", "nll"):
        result = train(BCConfig(demos=str(out), run_dir=str(tmp_path / loss), loss=loss, epochs=60, hidden=[32],
                                lr=3e-3, eval_episodes=20, progress=False, tensorboard=False))
        # random actions in [-1, 3] score about -2.7 on average; the expert 0
        assert result["eval"]["mean"] > -0.05, (loss, result["eval"])


# -- layer 5: the CLI, eval, and BC as a demo source -------------------------------------------------

def test_cli_train_eval_and_record_from_bc(tmp_path, cli, cartpole_demos):
    run_dir = tmp_path / "cli-bc"
    proc = cli("train", "bc", "--demos", str(cartpole_demos), "--run-dir", str(run_dir), "--set", "epochs=2",
               "--set", "eval_episodes=1", "--no-progress", "--json")
    assert proc.returncode == 0, proc.stderr
    final = json.loads(proc.stdout)
    assert final["agent"] == "bc" and final["env_id"] == "CartPole-v1"
    proc = cli("eval", str(run_dir), "--episodes", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["episodes"] == 2
    policy = demos.resolve_policy(str(run_dir), "CartPole-v1")
    stats = demos.record(policy, "CartPole-v1", episodes=1, out=tmp_path / "from-bc")
    assert stats["episodes"] == 1


def test_cli_without_demos_is_a_one_line_error(tmp_path, capsys):
    from rlkit.apps.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "bc", "--run-dir", str(tmp_path / "none"), "--no-progress"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("rlkit: error:") and "--demos" in err
    assert len(err.strip().splitlines()) == 1


# imitation's BC logs float(loss) of a tensor that requires grad: torch's warning, raised inside imitation
@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True to a scalar:UserWarning")
def test_dataset_to_imitation_trajectories_trains_imitation_bc(cartpole_demos, tmp_path):
    from imitation.algorithms import bc as imitation_bc
    from imitation.data import rollout
    from imitation.data.types import TrajectoryWithRew
    from imitation.util import logger as imit_logger

    dataset = demos.load(cartpole_demos)
    trajectories = demos.to_trajectories(dataset)
    assert len(trajectories) == 10 and not any(isinstance(t, TrajectoryWithRew) for t in trajectories)
    transitions = rollout.flatten_trajectories(trajectories)
    assert len(transitions) == dataset.num_steps
    log = imit_logger.configure(str(tmp_path / "imitation"), ["csv"])  # not imitation's default under /tmp
    trainer = imitation_bc.BC(observation_space=dataset.observation_space, action_space=dataset.action_space,
                              demonstrations=transitions, rng=np.random.default_rng(0), device="cpu",
                              custom_logger=log)
    obs = torch.as_tensor(np.array(transitions.obs))  # imitation's arrays are read-only; torch wants writable
    acts = torch.as_tensor(np.array(transitions.acts))
    before = trainer.policy.evaluate_actions(obs, acts)[1].mean().item()
    trainer.train(n_batches=150, progress_bar=False)
    log.close()
    after = trainer.policy.evaluate_actions(obs, acts)[1].mean().item()
    assert np.isfinite(after) and after > before + 0.1  # the expert's actions became more likely


# -- layer 4: learning ---------------------------------------------------------------------------

@pytest.mark.slow
def test_bc_learns_cartpole_from_ten_scripted_episodes(tmp_path, cartpole_demos):
    # ~10 s here: 10 episodes (5000 transitions) of the angle rule, evaluated on 20 unseen seeds
    result = train(BCConfig(demos=str(cartpole_demos), run_dir=str(tmp_path / "learn"), seed=0, eval_episodes=20,
                            progress=False, tensorboard=False))
    assert result["eval"]["mean"] >= 475, result["eval"]
