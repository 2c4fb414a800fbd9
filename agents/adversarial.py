"""GAIL and AIRL through the ``imitation`` library, on rlkit's reward-free demonstrations.

Papers:
    GAIL  Ho & Ermon 2016, "Generative Adversarial Imitation Learning", https://arxiv.org/abs/1606.03476
    AIRL  Fu, Luo & Levine 2018, "Learning Robust Rewards with Adversarial IRL", https://arxiv.org/abs/1710.11248

What is implemented: the glue, not the algorithms. The dataset is converted in memory to imitation
``Trajectory`` objects (``demos.to_trajectories``: no rewards), SB3 PPO is the generator, and
imitation's ``GAIL`` / ``AIRL`` trainers (``BasicRewardNet`` / ``BasicShapedRewardNet`` with
running input normalisation, as in imitation's examples) train the discriminator. A round
(generator rollouts, then ``n_disc_updates_per_round`` discriminator steps) is :meth:`AdversarialLearner.round`,
run by rlkit's imitation loop (:mod:`rlkit.engine.imitation`) instead of ``trainer.train``, so that rlkit's
logger, checkpoints and evaluation see each round.

Deviations, and why:
    * imitation refuses episodes of different lengths unless told (their termination leaks the
      reward). The CartPole presets therefore train the generator in ``seals/CartPole-v0`` (fixed
      500-step horizon, same spaces as CartPole-v1) on CartPole-v1 demonstrations of 500 steps;
      ``allow_variable_horizon=true`` lifts the check at the user's risk.
    * Evaluation (final.json) runs on ``eval_env_id``, by default the env the demonstrations came
      from, because that is the task the user wants imitated.
    * ``--resume`` restores PPO, the reward net and the discriminator optimiser, but not imitation's
      buffer of generator samples, which the next round refills.
    * AIRL's potential shaping ``gamma h(s') - h(s)`` uses the generator's discount (``gamma``), as the paper
      defines f(s, a, s'). imitation's ``BasicShapedRewardNet`` defaults to 0.99 whatever the generator's
      discount, and its AIRL example (PPO gamma 0.95) keeps that default; then the shaping is not
      potential-based for the generator and leaks ``(0.99 - gamma) h(s')`` into its reward. It does not explain
      the drift seen on CartPole at 1M steps (seed 0): with the mismatch the generator reached the expert's 500
      by 200k steps, then slid the cart to x = 2.4 (CartPole-v1's bound; seals' CartPole has none) and ended
      at 317; with the matched discount, at 307 (docs/imitation.md).
    * ``ppo_lr_schedule=linear`` (off by default; imitation's examples keep PPO's rate constant) anneals the
      generator's learning rate to 0 over the whole run, set before each round, since imitation trains each
      round as its own ``learn()`` call and SB3's schedule would restart in each. (On the run above it did not
      stop the drift: 318 at 1M.)

Run it: ``rlkit train gail --demos DATASET --preset cartpole`` (likewise ``airl``).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rlkit.demos.training import load_demos, resolve_env

from rlkit.callbacks import Callback
from rlkit.config import MAX_WIDTH, BaseConfig, config_from_dict, opt, require_at_least_one, validate_config
from rlkit.engine.imitation import train_rounds
from rlkit.errors import RLKitError, require_imitation
from rlkit.evaluation import evaluate
from rlkit.generator import GeneratorOptions, load_sb3_policy, make_ppo, make_sb3_venv, sb3_bytes
from rlkit.optim import Schedule, scheduled
from rlkit.policy import SB3ModelPolicy
from rlkit.registry import AgentSpec, eval_env_factory, train_from_command_line
from rlkit.run import Run


@dataclass
class AdversarialConfig(GeneratorOptions, BaseConfig):
    """GAIL/AIRL hyper-parameters (imitation's and SB3 PPO's names, prefixed by what they tune)."""

    env_id: str | None = opt(None, "env the generator trains in; default: the dataset's env")
    eval_env_id: str | None = opt(None, "env of the final evaluation; default: the dataset's env")
    demos: str | None = opt(None, "demonstration dataset directory (no rewards needed)")
    num_demos: int = opt(0, "use only the first N episodes of the dataset (0 = all)", low=0)
    total_steps: int = opt(200_000, "generator env steps (summed over envs)", low=1)
    demo_batch_size: int = opt(1024, "expert transitions per discriminator step (as many generator ones)")
    gen_replay_buffer_capacity: int = opt(0, "generator transitions kept for the discriminator (0 = one round)")
    n_disc_updates_per_round: int = opt(4, "discriminator steps after each round of generator training")
    disc_lr: float = opt(5e-4, "discriminator Adam learning rate", low=0)
    reward_hidden: list[int] = opt([32, 32], "hidden sizes of the reward (and AIRL potential) MLP", low=1,
                                   high=MAX_WIDTH)
    allow_variable_horizon: bool = opt(False, "accept episodes of different lengths (biased; see imitation docs)")
    ppo_lr_schedule: Schedule = opt("constant", "constant, or linear: PPO's learning rate annealed to 0 at "
                                                "total_steps (set before each round)")

    def validate(self) -> None:
        self.validate_generator()
        require_at_least_one(self, "demo_batch_size", "n_disc_updates_per_round")


def build_trainer(algo: str, cfg: AdversarialConfig, trajectories: list, venv: Any, log_dir: Path) -> Any:
    require_imitation(algo.upper())
    from imitation.algorithms.adversarial.airl import AIRL
    from imitation.algorithms.adversarial.gail import GAIL
    from imitation.rewards.reward_nets import BasicRewardNet, BasicShapedRewardNet
    from imitation.util import logger as imit_logger
    from imitation.util.networks import RunningNorm

    spaces = (venv.observation_space, venv.action_space)
    if algo == "gail":
        reward_net = BasicRewardNet(*spaces, hid_sizes=cfg.reward_hidden, normalize_input_layer=RunningNorm)
    else:
        # the potential's shaping gamma h(s') - h(s) with the generator's own discount, as AIRL's f is defined
        reward_net = BasicShapedRewardNet(*spaces, reward_hid_sizes=cfg.reward_hidden,
                                          potential_hid_sizes=cfg.reward_hidden, normalize_input_layer=RunningNorm,
                                          discount_factor=cfg.gamma)
    trainer_cls = GAIL if algo == "gail" else AIRL
    csv_logger = imit_logger.configure(str(log_dir), ["csv"])
    try:
        with imitation_errors():
            return trainer_cls(demonstrations=trajectories, demo_batch_size=cfg.demo_batch_size, venv=venv,
                               gen_algo=make_ppo(cfg, venv), reward_net=reward_net,
                               gen_replay_buffer_capacity=cfg.gen_replay_buffer_capacity or None,
                               n_disc_updates_per_round=cfg.n_disc_updates_per_round,
                               disc_opt_kwargs={"lr": cfg.disc_lr}, log_dir=log_dir, custom_logger=csv_logger,
                               allow_variable_horizon=cfg.allow_variable_horizon)
    except BaseException:
        csv_logger.close()  # no trainer to own imitation's open CSV files
        raise


@contextlib.contextmanager
def imitation_errors(generator_env: str | None = None) -> Iterator[None]:
    """imitation's ValueErrors about the data become one-line RLKitErrors naming the fix.

    ``generator_env``: set around the generator's rollouts, whose episodes imitation checks for a fixed
    length; then a "different length" error is the generator env's doing, not the demonstrations'."""
    try:
        yield
    except ValueError as e:
        first = str(e).split(". ")[0]
        if "different length" in first and generator_env is not None:
            # e.g. CartPole-v1 ends when the pole falls: the demos may all be 500 steps, the generator's are not
            raise RLKitError(f"imitation: {first}: the generator's env {generator_env} ends episodes early (the "
                             "demonstrations are fine); train the generator in a fixed-horizon env (e.g. --env "
                             "seals:seals/CartPole-v0, as --preset cartpole does), or --set "
                             "allow_variable_horizon=true") from None
        if "different length" in first:
            raise RLKitError(f"imitation: {first}; record fixed-length episodes and train the generator in a "
                             "fixed-horizon env (e.g. --env seals:seals/CartPole-v0), or --set "
                             "allow_variable_horizon=true") from None
        if "smaller than batch size" in first:
            raise RLKitError(f"imitation: {first}; record more demonstrations or lower --set demo_batch_size"
                             ) from None
        raise


class AdversarialLearner:
    """GAIL/AIRL for the imitation loop: a round is ``num_envs * ppo_n_steps`` generator steps of PPO on the
    discriminator's reward, then ``n_disc_updates_per_round`` discriminator steps (imitation's trainer)."""

    checkpoint_on_interrupt = True

    def __init__(self, algo: str, cfg: AdversarialConfig, trainer: Any, venv: Any, eval_env_id: str,
                 demo_episodes: int, on_round: Callable[[Any, int, dict], None] | None) -> None:
        self.algo, self.cfg, self.trainer, self.venv, self.on_round = algo, cfg, trainer, venv, on_round
        self.log_every, self.checkpoint_every = cfg.log_every, cfg.checkpoint_every
        self.eval_env_id, self.demo_episodes = eval_env_id, demo_episodes
        # imitation keeps the bare reward net and the discriminator optimiser in these attributes.
        self.ppo, self.reward_net = trainer.gen_algo, trainer._reward_net
        self.policy = SB3ModelPolicy(self.ppo)
        self.steps_per_round = trainer.gen_train_timesteps
        if cfg.total_steps < self.steps_per_round:
            raise RLKitError(f"total_steps={cfg.total_steps} is less than one round "
                             f"(num_envs * ppo_n_steps = {self.steps_per_round}); raise --steps")
        self.round_index, self.disc_stats = 0, {}
        self.initial_mean: float | None = None  # the untrained generator's evaluation (a new run's baseline)

    def state_dict(self) -> dict[str, Any]:
        return {"ppo_zip": sb3_bytes(self.ppo), "reward_net": self.reward_net.state_dict(),
                "disc_optimizer": self.trainer._disc_opt.state_dict(), "round": self.round_index,
                "eval_env_id": self.eval_env_id,  # `rlkit eval` scores this env, not the generator's
                "observation_space": self.venv.observation_space, "action_space": self.venv.action_space}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ppo.set_parameters(io.BytesIO(state["ppo_zip"]), exact_match=True)
        self.reward_net.load_state_dict(state["reward_net"])
        self.trainer._disc_opt.load_state_dict(state["disc_optimizer"])
        self.round_index = state["round"]

    def round(self, run: Run) -> int:
        from imitation.util import networks
        from stable_baselines3.common.utils import ConstantSchedule

        cfg, trainer = self.cfg, self.trainer
        if cfg.ppo_lr_schedule != "constant":  # imitation's rounds are separate learn() calls: SB3's own
            # progress restarts in each, so the global one is set here (as RL-Zoo's lin_ schedules anneal PPO)
            done = self.round_index * self.steps_per_round / cfg.total_steps
            self.ppo.lr_schedule = ConstantSchedule(scheduled(cfg.ppo_lr, cfg.ppo_lr_schedule, done))
        # ALGO LOGIC: the generator (PPO on the discriminator's reward), then the discriminator.
        with imitation_errors(cfg.env_id):  # the generator's episodes must have one fixed length too
            trainer.train_gen(self.steps_per_round)
        with networks.training(trainer.reward_train):
            for _ in range(cfg.n_disc_updates_per_round):
                self.disc_stats = trainer.train_disc()
        self.round_index += 1
        for key in ("disc_loss", "disc_acc", "disc_acc_expert", "disc_acc_gen", "disc_entropy"):
            if key in self.disc_stats:
                run.logger.record(("losses/" if key == "disc_loss" else "charts/") + key, float(self.disc_stats[key]))
        if not np.isfinite(float(self.disc_stats.get("disc_loss", 0.0))):
            raise RLKitError(f"{self.algo}: the discriminator loss became {self.disc_stats['disc_loss']}; "
                             "lower disc_lr")
        for info in list(self.ppo.ep_info_buffer)[-cfg.num_envs:]:  # true returns, from the Monitor below the reward
            run.logger.record_episode(float(info["r"]), int(info["l"]))
        if self.on_round is not None:
            self.on_round(trainer, self.round_index, self.disc_stats)
        return self.steps_per_round

    def finished(self, global_step: int) -> bool:
        return global_step + self.steps_per_round > self.cfg.total_steps

    def close(self) -> None:
        self.venv.close()

    def final(self) -> tuple[dict[str, Any], dict[str, Any]]:
        extra = {"eval_env_id": self.eval_env_id, "train_env_id": self.cfg.env_id,
                 "eval_initial_mean": self.initial_mean, "rounds": self.round_index,
                 "demo_episodes": self.demo_episodes, "disc": {k: float(v) for k, v in self.disc_stats.items()}}
        return self.state_dict(), extra


def train_adversarial(algo: str, cfg: AdversarialConfig, resume: bool = False,
                      callbacks: Sequence[Callback] | None = None, *,
                      on_round: Callable[[Any, int, dict], None] | None = None) -> dict[str, Any]:
    """Train GAIL or AIRL as configured; returns the contents of ``final.json``.

    ``on_round(trainer, round_index, disc_stats)`` is called after each round (tests and notebooks
    inspect the imitation trainer there).
    """
    require_imitation(algo.upper())
    import seals  # noqa: F401  (registers the seals/ fixed-horizon envs the presets train in)

    from rlkit import demos

    validate_config(cfg)
    dataset = load_demos(cfg.demos, agent=algo)
    if cfg.num_demos:
        dataset = dataset.subset(range(min(cfg.num_demos, len(dataset))))
    lengths = sorted({ep.length for ep in dataset})
    if len(lengths) > 1 and not cfg.allow_variable_horizon:
        # imitation checks only the generator's episodes; a demo's length leaks the reward just the same
        raise RLKitError(f"the demonstrations have different lengths ({lengths[0]}..{lengths[-1]} steps); record "
                         "fixed-length episodes (e.g. an expert that always reaches the time limit) or --set "
                         "allow_variable_horizon=true")
    eval_env_id = cfg.eval_env_id or dataset.env_id
    resolve_env(cfg, dataset)
    run = Run(algo, cfg, resume=resume, callbacks=callbacks)  # seeds the global RNGs, sets thread counts
    venv = make_sb3_venv(cfg.env_id, cfg.num_envs, cfg.seed, cfg.env_kwargs)
    # In memory, reward-free: imitation sees exactly what the learner may see.
    trainer = build_trainer(algo, cfg, demos.to_trajectories(dataset), venv, run.dir / "imitation")
    with contextlib.closing(trainer.logger):  # imitation's CSV logger, however the run ends
        learner = AdversarialLearner(algo, cfg, trainer, venv, eval_env_id, len(dataset), on_round)
        make_eval_env = eval_env_factory(cfg, eval_env_id)
        if not resume:  # the untrained generator's score: a baseline for final.json, so no best checkpoint or stop
            baseline = evaluate(learner.policy, make_eval_env, cfg.eval_episodes, seed=cfg.eval_seed)
            learner.initial_mean = baseline["mean"]
        return train_rounds(run, learner, make_eval_env)


def train_gail(cfg: AdversarialConfig, resume: bool = False, callbacks: Sequence[Callback] | None = None, *,
               on_round: Callable[[Any, int, dict], None] | None = None) -> dict[str, Any]:
    return train_adversarial("gail", cfg, resume, callbacks, on_round=on_round)


def train_airl(cfg: AdversarialConfig, resume: bool = False, callbacks: Sequence[Callback] | None = None, *,
               on_round: Callable[[Any, int, dict], None] | None = None) -> dict[str, Any]:
    return train_adversarial("airl", cfg, resume, callbacks, on_round=on_round)


def load_policy(state: dict[str, Any]) -> SB3ModelPolicy:
    """The generator is the imitating policy."""
    config_from_dict(AdversarialConfig, state["config"])  # fail early on a config from another agent
    return load_sb3_policy(state)


GAIL = AgentSpec("gail", AdversarialConfig, train_gail, load_policy,
                 summary="GAIL (Ho & Ermon 2016) through imitation, SB3 PPO generator (--demos DATASET)")
AIRL = AgentSpec("airl", AdversarialConfig, train_airl, load_policy,
                 summary="AIRL (Fu et al. 2018) through imitation, SB3 PPO generator (--demos DATASET)")

if __name__ == "__main__":
    train_from_command_line(None)  # python -m rlkit.agents.adversarial gail|airl ...
