"""Reward learning from preferences over trajectory fragments, through ``imitation``.

Paper: Christiano et al. 2017, "Deep Reinforcement Learning from Human Preferences",
https://arxiv.org/abs/1706.03741.

What is implemented: the glue around imitation's ``PreferenceComparisons``. SB3 PPO (imitation's
``AgentTrainer``) generates trajectories while training on the learned reward; a fragmenter cuts
them into pairs of ``fragment_length`` steps; a *synthetic* gatherer stands in for the human and
prefers the fragment with the higher true return (``gatherer_temperature`` 0 makes it always pick
the better one; > 0 gives Boltzmann-rational noisy answers, as in the paper's simulated raters);
``BasicRewardTrainer`` fits the reward net with the Bradley-Terry cross-entropy loss.

At the end the learned reward is compared with the true one on fresh transitions from the trained
agent and a uniform-random policy (both, so that good and bad behaviour are covered): final.json
reports their Pearson and Spearman correlations under ``reward_correlation``. A learned reward is
only defined up to a positive affine map on preferences, so correlation, not error, is the measure.
Envs whose true reward never varies (CartPole-v1: +1 per step) have no defined correlation; use the
fixed-horizon ``seals/CartPole-v0`` (reward 1 while the pole is up) or Pendulum-v1.

Deviations: imitation's defaults otherwise (hyperbolic query schedule, ``initial_comparison_frac``
0.1); no reward ensemble or active query selection (imitation has both; not exposed here).

Run it: ``rlkit train preference --env Pendulum-v1 --preset pendulum``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rlkit.agents.adversarial import load_sb3_policy, make_sb3_venv, sb3_bytes
from rlkit.envs import make_env

from rlkit.config import BaseConfig, opt
from rlkit.errors import RLKitError
from rlkit.registry import AgentSpec
from rlkit.run import Run
from rlkit.types import RandomPolicy, SB3ModelPolicy


@dataclass
class PreferenceConfig(BaseConfig):
    """Preference-comparison hyper-parameters (imitation's names)."""

    env_id: str = opt("Pendulum-v1", "env to learn a reward for (its true reward is only shown to the gatherer)")
    total_steps: int = opt(50_000, "agent env steps (PPO on the learned reward)", low=1)
    total_comparisons: int = opt(500, "preference queries answered by the synthetic gatherer")
    num_iterations: int = opt(10, "rounds of (collect, query, fit reward, train agent)")
    fragment_length: int = opt(25, "steps per compared fragment")
    initial_comparison_frac: float = opt(0.1, "share of the comparisons asked before the first agent training")
    gatherer_temperature: float = opt(0.0, "Boltzmann temperature of the synthetic rater (0 = always the better)")
    exploration_frac: float = opt(0.05, "share of the agent's trajectories with random actions mixed in")
    num_envs: int = opt(4, "parallel envs of the agent")
    reward_hidden: list[int] = opt([32, 32], "hidden sizes of the reward MLP")
    reward_epochs: int = opt(3, "reward-net epochs per iteration")
    reward_lr: float = opt(1e-3, "reward-net learning rate", low=0)
    policy_hidden: list[int] = opt([64, 64], "hidden sizes of PPO's policy and value MLPs")
    ppo_n_steps: int = opt(512, "PPO rollout length per env")
    ppo_batch_size: int = opt(64, "PPO minibatch size")
    ppo_epochs: int = opt(10, "PPO epochs per rollout")
    ppo_lr: float = opt(1e-3, "PPO learning rate", low=0)
    ppo_ent_coef: float = opt(0.0, "PPO entropy coefficient")
    ppo_clip_range: float = opt(0.2, "PPO clip range")
    ppo_vf_coef: float = opt(0.5, "PPO value-loss coefficient")
    gamma: float = opt(0.9, "discount of the agent", low=0, high=1)
    gae_lambda: float = opt(0.95, "GAE lambda of PPO")
    correlation_steps: int = opt(4_000, "transitions used to correlate the learned and the true reward")

    def validate(self) -> None:
        for name in ("total_comparisons", "num_iterations", "fragment_length", "num_envs", "correlation_steps"):
            if getattr(self, name) < 1:
                raise RLKitError(f"{name} must be at least 1; got {getattr(self, name)}")


# ALGO LOGIC: the measure of success, a pure function (unit-tested).
def reward_correlation(learned: np.ndarray, true: np.ndarray) -> dict[str, float | None]:
    """Pearson and Spearman correlation of two reward vectors (None where a vector is constant)."""
    learned, true = np.asarray(learned, np.float64), np.asarray(true, np.float64)
    if learned.std() == 0 or true.std() == 0:
        return {"pearson": None, "spearman": None}

    def ranks(x: np.ndarray) -> np.ndarray:
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        # ties share their mean rank, as in scipy.stats.spearmanr
        _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
        sums = np.bincount(inverse, weights=r)
        return (sums / counts)[inverse]

    return {"pearson": float(np.corrcoef(learned, true)[0, 1]),
            "spearman": float(np.corrcoef(ranks(learned), ranks(true))[0, 1])}


def sample_rewards(reward_net: Any, policies: list[Any], env_id: str, env_kwargs: dict, steps: int, seed: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(learned, true) rewards of ``steps`` transitions, split evenly over ``policies``."""
    learned, true = [], []
    env = make_env(env_id, seed=seed, env_kwargs=env_kwargs)
    try:
        for k, policy in enumerate(policies):
            obs, _ = env.reset(seed=seed + 1000 * k)
            rows: list[tuple] = []
            for _ in range(steps // len(policies)):
                action = policy.act(np.asarray(obs)[None], deterministic=False)[0]
                next_obs, reward, terminated, truncated, _ = env.step(action)
                rows.append((obs, action, next_obs, terminated))
                true.append(float(reward))
                obs = env.reset()[0] if terminated or truncated else next_obs
            o, a, n, d = (np.stack(col) for col in zip(*rows))
            learned.append(reward_net.predict_processed(o, a, n, d.astype(bool)))
    finally:
        env.close()
    return np.concatenate(learned), np.asarray(true)


def train(cfg: PreferenceConfig, resume: bool = False) -> dict[str, Any]:
    """Learn a reward from synthetic preferences and a PPO agent on it; returns final.json."""
    import seals  # noqa: F401  (registers seals/ envs)
    from imitation.algorithms import preference_comparisons as pc
    from imitation.rewards.reward_nets import BasicRewardNet
    from imitation.util import logger as imit_logger
    from imitation.util.networks import RunningNorm
    from stable_baselines3 import PPO

    cfg.validate()
    if resume:
        raise RLKitError("preference runs cannot be resumed (imitation keeps its comparison dataset in memory); "
                         "start a new run")
    run = Run("preference", cfg)
    venv = make_sb3_venv(cfg.env_id, cfg.num_envs, cfg.seed, cfg.env_kwargs)
    rng = np.random.default_rng(cfg.seed)
    log = imit_logger.configure(str(run.dir / "imitation"), ["csv"])
    reward_net = BasicRewardNet(venv.observation_space, venv.action_space, hid_sizes=cfg.reward_hidden,
                                normalize_input_layer=RunningNorm)
    agent = PPO("MlpPolicy", venv, n_steps=cfg.ppo_n_steps, batch_size=cfg.ppo_batch_size, n_epochs=cfg.ppo_epochs,
                learning_rate=cfg.ppo_lr, ent_coef=cfg.ppo_ent_coef, clip_range=cfg.ppo_clip_range,
                vf_coef=cfg.ppo_vf_coef, gamma=cfg.gamma, gae_lambda=cfg.gae_lambda, seed=cfg.seed,
                device=cfg.device, policy_kwargs={"net_arch": list(cfg.policy_hidden)}, verbose=0)
    # TRY NOT TO MODIFY: the rater is the only place the true reward enters training.
    # temperature 0: imitation returns 1, 0 (or 0.5 on a tie) for "the higher true return wins".
    gatherer = pc.SyntheticGatherer(temperature=cfg.gatherer_temperature, sample=cfg.gatherer_temperature > 0,
                                    rng=rng, custom_logger=log)
    trainer = pc.PreferenceComparisons(
        pc.AgentTrainer(agent, reward_net, venv, rng=rng, exploration_frac=cfg.exploration_frac, custom_logger=log),
        reward_net, num_iterations=cfg.num_iterations,
        fragmenter=pc.RandomFragmenter(rng=rng, warning_threshold=0, custom_logger=log),
        preference_gatherer=gatherer,
        reward_trainer=pc.BasicRewardTrainer(pc.PreferenceModel(reward_net), pc.CrossEntropyRewardLoss(), rng=rng,
                                             epochs=cfg.reward_epochs, lr=cfg.reward_lr, custom_logger=log),
        fragment_length=cfg.fragment_length, initial_comparison_frac=cfg.initial_comparison_frac,
        initial_epoch_multiplier=4.0, custom_logger=log)

    def on_iteration(iteration: int) -> None:
        for info in list(agent.ep_info_buffer)[-cfg.num_envs:]:  # true returns (Monitor under the reward)
            run.logger.record_episode(float(info["r"]), int(info["l"]))
        run.logger.record("charts/iteration", iteration)
        run.logger.record("charts/comparisons", len(trainer.dataset))
        run.logger.dump(agent.num_timesteps)

    stats = trainer.train(total_timesteps=cfg.total_steps, total_comparisons=cfg.total_comparisons,
                          callback=on_iteration)
    venv.close()
    policy = SB3ModelPolicy(agent)
    with torch.no_grad():
        learned, true = sample_rewards(reward_net, [policy, RandomPolicy(venv.action_space, seed=cfg.seed)],
                                       cfg.env_id, cfg.env_kwargs, cfg.correlation_steps, cfg.eval_seed + 777)
    corr = {**reward_correlation(learned, true), "transitions": len(true)}
    run.logger.record("charts/reward_pearson", corr["pearson"] if corr["pearson"] is not None else float("nan"))
    state = {"ppo_zip": sb3_bytes(agent), "reward_net": reward_net.state_dict(),
             "observation_space": venv.observation_space, "action_space": venv.action_space}
    extra = {"reward_correlation": corr, "comparisons": len(trainer.dataset),
             "reward_loss": float(stats["reward_loss"]), "reward_accuracy": float(stats["reward_accuracy"])}
    return run.finish(policy, lambda render_mode=None: make_env(cfg.env_id, render_mode=render_mode,
                                                                env_kwargs=cfg.env_kwargs),
                      agent.num_timesteps, state, extra=extra)


AGENT = AgentSpec(
    name="preference",
    config_cls=PreferenceConfig,
    train=train,
    load_policy=load_sb3_policy,
    presets_file=Path(__file__).parent / "presets" / "preference.yaml",
    summary="reward learning from synthetic preferences (Christiano et al. 2017) through imitation, PPO agent",
)


if __name__ == "__main__":
    from rlkit.cli import main

    main(["train", "preference", *__import__("sys").argv[1:]])
