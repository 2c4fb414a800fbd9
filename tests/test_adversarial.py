"""GAIL, AIRL and preference comparisons: the real imitation code on short budgets, plus the glue's math."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from rlkit.agents.adversarial import AdversarialConfig, train_airl, train_gail
from rlkit.agents.preference import PreferenceConfig, reward_correlation
from rlkit.agents.preference import train as train_preference

from rlkit import demos
from rlkit.checkpoint import load_checkpoint
from rlkit.errors import RLKitError
from rlkit.policy import load_policy


class CartPoleRule:
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return (3.0 * obs[:, 2] + obs[:, 3] > 0).astype(np.int64)


@pytest.fixture(scope="module")
def fixed_length_demos(tmp_path_factory):
    out = tmp_path_factory.mktemp("adv") / "cartpole"
    demos.record(CartPoleRule(), "CartPole-v1", episodes=2, out=out, seed=0)  # 2 x 500 steps, no rewards
    return out


def test_reward_correlation_hand_values():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert reward_correlation(x, 2 * x + 1) == {"pearson": pytest.approx(1.0), "spearman": pytest.approx(1.0)}
    assert reward_correlation(x, -x)["pearson"] == pytest.approx(-1.0)
    # monotone, not linear: Spearman 1; Pearson by hand = 151 / sqrt(5 * 6849) = 0.81598
    corr = reward_correlation(x, np.array([1.0, 4.0, 9.0, 100.0]))
    assert corr["spearman"] == pytest.approx(1.0) and corr["pearson"] == pytest.approx(0.81598, abs=1e-4)
    # ties share the mean rank: ranks [0.5, 0.5, 2, 3] vs [0, 1, 2, 3] -> 0.9486833
    assert reward_correlation(np.array([1.0, 1.0, 2.0, 3.0]), x)["spearman"] == pytest.approx(0.9486833, abs=1e-6)
    assert reward_correlation(x, np.ones(4)) == {"pearson": None, "spearman": None}  # CartPole-v1's reward


def small(tmp_path, demos_path, name, **over) -> AdversarialConfig:
    base = dict(demos=str(demos_path), env_id="seals:seals/CartPole-v0", run_dir=str(tmp_path / name),
                total_steps=1024, num_envs=4, ppo_n_steps=128, demo_batch_size=256, n_disc_updates_per_round=4,
                eval_episodes=2, progress=False, tensorboard=False)
    return AdversarialConfig(**{**base, **over})


# seals 0.2.1's CartPole builds its Box from float64 bounds; gymnasium warns about seals' code, not rlkit's
@pytest.mark.filterwarnings("ignore:.*Box (low|high)'s precision lowered:UserWarning")
@pytest.mark.parametrize("algo", ["gail", "airl"])
def test_adversarial_runs_the_real_imitation_code(tmp_path, fixed_length_demos, algo):
    """Both halves learn in the glue's round loop: every reward-net (discriminator) tensor and every PPO
    (generator) tensor moves between rounds, and the discriminator's loss falls from round 1 to round 2
    (16 updates a round: enough to see it at this budget, measured on seeds 0-2)."""
    disc_snapshots, gen_snapshots, losses = [], [], []

    def on_round(trainer, round_index, stats):
        # the real imitation trainer: its reward net is the discriminator being trained
        assert type(trainer).__name__ == algo.upper()
        if algo == "airl":  # AIRL's shaping gamma h(s') - h(s) discounts as the generator does (imitation: 0.99)
            assert trainer._reward_net.discount_factor == trainer.gen_algo.gamma == 0.95
        disc_snapshots.append({k: v.detach().clone() for k, v in trainer._reward_net.named_parameters()})
        gen_snapshots.append({k: v.detach().clone() for k, v in trainer.gen_algo.policy.named_parameters()})
        losses.append(float(stats["disc_loss"]))

    train = train_gail if algo == "gail" else train_airl
    result = train(small(tmp_path, fixed_length_demos, algo, n_disc_updates_per_round=16), on_round=on_round)
    assert result["rounds"] == 2 == len(disc_snapshots) and result["env_steps"] == 1024
    assert all(math.isfinite(loss) for loss in losses)
    for name, (first, second) in (("discriminator", disc_snapshots), ("generator", gen_snapshots)):
        frozen = [k for k in first if torch.equal(first[k], second[k])]
        assert not frozen, f"{name} tensors did not move between rounds: {frozen}"
    assert losses[1] < losses[0], f"the discriminator's loss did not fall: {losses}"
    assert result["eval_env_id"] == "CartPole-v1"  # evaluated on the task the demonstrations show
    policy = load_policy(result["run_dir"])  # what `rlkit eval` and the demo recorder load
    assert policy.act(np.zeros((3, 4), np.float32)).shape == (3,)
    assert load_checkpoint(result["run_dir"])["agent"] == algo


# seals 0.2.1's CartPole builds its Box from float64 bounds; gymnasium warns about seals' code, not rlkit's
@pytest.mark.filterwarnings("ignore:.*Box (low|high)'s precision lowered:UserWarning")
@pytest.mark.parametrize("schedule, factors", [("linear", [1.0, 0.75, 0.5, 0.25]), ("constant", [1.0] * 4)])
def test_the_generators_learning_rate_follows_the_whole_run(tmp_path, fixed_length_demos, schedule, factors):
    """ppo_lr_schedule=linear anneals PPO's rate over the run's rounds, not over each round's learn() call: 4
    rounds of 512 steps in 2048 train at lr x (1 - 512 k / 2048) = 1, 0.75, 0.5, 0.25 (the rate PPO's optimizer
    held in round k)."""
    lrs = []
    cfg = small(tmp_path, fixed_length_demos, "gail", total_steps=2048, ppo_lr=1e-3, ppo_lr_schedule=schedule)
    train_gail(cfg, on_round=lambda trainer, i, stats: lrs.append(
        trainer.gen_algo.policy.optimizer.param_groups[0]["lr"]))
    assert lrs == pytest.approx([1e-3 * f for f in factors], rel=1e-12)


# seals 0.2.1's CartPole builds its Box from float64 bounds; gymnasium warns about seals' code, not rlkit's
@pytest.mark.filterwarnings("ignore:.*Box (low|high)'s precision lowered:UserWarning")
def test_variable_horizons_are_refused_in_one_line(tmp_path, fixed_length_demos):
    out = tmp_path / "random"
    policy = demos.resolve_policy("random", "CartPole-v1")
    demos.record(policy, "CartPole-v1", episodes=12, out=out, seed=0)  # lengths differ
    with pytest.raises(RLKitError, match="different lengths .*allow_variable_horizon"):
        train_gail(small(tmp_path, out, "vh", demo_batch_size=32))
    with pytest.raises(RLKitError, match="lower --set demo_batch_size"):
        train_gail(small(tmp_path, out, "small", demo_batch_size=100_000, allow_variable_horizon=True))
    # fixed-length demonstrations, but a generator env whose episodes end early (imitation's own check)
    with pytest.raises(RLKitError, match="different length.*seals:seals/CartPole-v0"):
        train_gail(small(tmp_path, fixed_length_demos, "gen", env_id="CartPole-v1"))


def test_preference_comparisons_report_reward_correlation(tmp_path):
    result = train_preference(PreferenceConfig(
        env_id="Pendulum-v1", run_dir=str(tmp_path / "pref"), total_steps=1024, total_comparisons=40,
        num_iterations=2, num_envs=2, ppo_n_steps=256, fragment_length=10, correlation_steps=400,
        eval_episodes=1, progress=False, tensorboard=False))
    corr = result["reward_correlation"]
    # 40 answers already make the learned reward follow the true one (seed 0: Pearson 0.38; seeds 1, 2: 0.27,
    # 0.10); a rater or reward fit that got the preference's direction wrong makes it negative.
    assert corr["transitions"] == 400 and corr["pearson"] > 0.2 and corr["spearman"] > 0.1
    assert result["comparisons"] == 40 and math.isfinite(result["reward_loss"])
    policy = load_policy(result["run_dir"])
    assert policy.act(np.zeros((2, 3), np.float32)).shape == (2, 1)


# ---------------------------------------------------------------------------------------------
# Learning tests: the learners reach a bar they would miss if they did not learn
# ---------------------------------------------------------------------------------------------
PREF_TEST_STEPS = 65_536  # 8 iterations of 8192 agent steps


def random_return(env_id: str) -> float:
    """Mean return of a seeded uniform-random policy over 100 episodes (normalised 0)."""
    from rlkit.envs import make_env

    from rlkit.evaluation import evaluate
    from rlkit.policy import RandomPolicy

    space = make_env(env_id).action_space
    return evaluate(RandomPolicy(space, seed=0), lambda render_mode=None: make_env(env_id), 100, seed=10_000,
                    deterministic=False)["mean"]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*Box (low|high)'s precision lowered:UserWarning")
def test_gail_imitates_a_cartpole_expert(tmp_path):
    """GAIL with the cartpole preset's settings reaches >= 0.8 normalised return on CartPole-v1 in 150k generator
    steps (measured: 500.0, the expert's return, on seed 0, from 10 demonstrations of a scripted rule; a generator
    that has not learned yet scores 9-60 after its first rounds)."""
    from rlkit.config import resolve_preset
    from rlkit.registry import get_agent

    data = tmp_path / "expert"
    demos.record(CartPoleRule(), "CartPole-v1", episodes=10, out=data, seed=0)  # 10 x 500 steps
    spec = get_agent("gail")
    preset = resolve_preset(spec.presets(), "cartpole", "gail")
    cfg = AdversarialConfig(**{**preset, "demos": str(data), "run_dir": str(tmp_path / "gail"), "seed": 0,
                               "total_steps": 150_000, "eval_episodes": 10, "progress": False, "tensorboard": False})
    result = train_gail(cfg)
    low = random_return("CartPole-v1")
    normalised = (result["eval"]["mean"] - low) / (500.0 - low)
    assert 15 < low < 30 and normalised >= 0.8, (result["eval"]["mean"], low)


@pytest.mark.slow
def test_preference_learning_learns_pendulum_reward_and_policy(tmp_path):
    """From synthetic preferences alone, the learned reward follows Pendulum's true reward (Pearson >= 0.8) and
    the PPO agent trained on it swings up (normalised return >= 0.5 against a random policy's -1166 and a TD3
    expert's -110.8). Measured on seed 0: Pearson 0.975, eval -146.9 (normalised 0.97) after 73,728 agent steps
    (imitation runs one extra agent round); about 100 s of CPU."""
    result = train_preference(PreferenceConfig(
        env_id="Pendulum-v1", run_dir=str(tmp_path / "pref"), total_steps=PREF_TEST_STEPS, total_comparisons=600,
        num_iterations=PREF_TEST_STEPS // 8192, num_envs=4, ppo_n_steps=1024, ppo_use_sde=True, ppo_sde_sample_freq=4,
        correlation_steps=2000, eval_episodes=10, progress=False, tensorboard=False))
    low, expert = random_return("Pendulum-v1"), -110.8
    normalised = (result["eval"]["mean"] - low) / (expert - low)
    pearson = result["reward_correlation"]["pearson"]
    assert -1300 < low < -1000 and pearson >= 0.8 and normalised >= 0.5, (pearson, result["eval"]["mean"], low)
