"""GAIL and AIRL through the ``imitation`` library, on rlkit's reward-free demonstrations.

Papers:
    GAIL  Ho & Ermon 2016, "Generative Adversarial Imitation Learning", https://arxiv.org/abs/1606.03476
    AIRL  Fu, Luo & Levine 2018, "Learning Robust Rewards with Adversarial IRL", https://arxiv.org/abs/1710.11248

What is implemented: the glue, not the algorithms. The dataset is converted in memory to imitation
``Trajectory`` objects (``demos.to_trajectories``: no rewards), SB3 PPO is the generator, and
imitation's ``GAIL`` / ``AIRL`` trainers (``BasicRewardNet`` / ``BasicShapedRewardNet`` with
running input normalisation, as in imitation's examples) train the discriminator. The round loop
(generator rollouts, then ``n_disc_updates_per_round`` discriminator steps) is written out here
instead of calling ``trainer.train`` so that rlkit's logger, checkpoints and evaluation see each round.

Deviations, and why:
    * imitation refuses episodes of different lengths unless told (their termination leaks the
      reward). The CartPole presets therefore train the generator in ``seals/CartPole-v0`` (fixed
      500-step horizon, same spaces as CartPole-v1) on CartPole-v1 demonstrations of 500 steps;
      ``allow_variable_horizon=true`` lifts the check at the user's risk.
    * Evaluation (final.json) runs on ``eval_env_id``, by default the env the demonstrations came
      from, because that is the task the user wants imitated.
    * ``--resume`` restores PPO, the reward net and the discriminator optimiser, but not imitation's
      buffer of generator samples, which the next round refills.

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
from rlkit.config import MAX_WIDTH, BaseConfig, config_from_dict, opt, require_at_least_one
from rlkit.errors import RLKitError, require_imitation
from rlkit.evaluation import evaluate
from rlkit.generator import GeneratorOptions, load_sb3_policy, make_ppo, make_sb3_venv, sb3_bytes
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
        reward_net = BasicShapedRewardNet(*spaces, reward_hid_sizes=cfg.reward_hidden,
                                          potential_hid_sizes=cfg.reward_hidden, normalize_input_layer=RunningNorm)
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


def train_adversarial(algo: str, cfg: AdversarialConfig, resume: bool = False,
                      on_round: Callable[[Any, int, dict], None] | None = None,
                      callbacks: Sequence[Callback] | None = None) -> dict[str, Any]:
    """Train GAIL or AIRL as configured; returns the contents of ``final.json``.

    ``on_round(trainer, round_index, disc_stats)`` is called after each round (tests and notebooks
    inspect the imitation trainer there).
    """
    require_imitation(algo.upper())
    with contextlib.ExitStack() as cleanup:  # closes imitation's CSV logger however the run ends
        return _train_adversarial(algo, cfg, resume, on_round, cleanup, callbacks)


def _train_adversarial(algo: str, cfg: AdversarialConfig, resume: bool,
                       on_round: Callable[[Any, int, dict], None] | None, cleanup: contextlib.ExitStack,
                       callbacks: Sequence[Callback] | None = None) -> dict[str, Any]:
    import seals  # noqa: F401  (registers the seals/ fixed-horizon envs the presets train in)
    from imitation.util import networks

    from rlkit import demos

    cfg.validate()
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
    cleanup.callback(trainer.logger.close)
    # imitation keeps the bare reward net and the discriminator optimiser in these attributes.
    ppo, reward_net = trainer.gen_algo, trainer._reward_net
    global_step, round_index = 0, 0
    if run.resume_state is not None:
        state = run.resume_state
        ppo.set_parameters(io.BytesIO(state["ppo_zip"]), exact_match=True)
        reward_net.load_state_dict(state["reward_net"])
        trainer._disc_opt.load_state_dict(state["disc_optimizer"])
        global_step, round_index = run.global_step, state["round"]
    run.restore_rng()

    def state_dict() -> dict[str, Any]:
        return {"ppo_zip": sb3_bytes(ppo), "reward_net": reward_net.state_dict(),
                "disc_optimizer": trainer._disc_opt.state_dict(), "round": round_index,
                "eval_env_id": eval_env_id,  # `rlkit eval` scores this env, not the generator's
                "observation_space": venv.observation_space, "action_space": venv.action_space}

    policy = SB3ModelPolicy(ppo)
    make_eval_env = eval_env_factory(cfg, eval_env_id)
    # The untrained generator's score, for final.json: a baseline, so neither a best checkpoint nor a stop.
    initial = None if resume else evaluate(policy, make_eval_env, cfg.eval_episodes, seed=cfg.eval_seed)["mean"]
    steps_per_round = trainer.gen_train_timesteps
    if cfg.total_steps < steps_per_round:
        raise RLKitError(f"total_steps={cfg.total_steps} is less than one round "
                         f"(num_envs * ppo_n_steps = {steps_per_round}); raise --steps")
    disc_stats: dict[str, float] = {}
    # Ctrl-C or SIGTERM: checkpoint the generator and discriminator as they are, at the last whole round's step.
    with run.checkpoint_on_interrupt(lambda: (global_step, state_dict())):
        while global_step + steps_per_round <= cfg.total_steps and run.stopped is None:
            # ALGO LOGIC: the generator (PPO on the discriminator's reward), then the discriminator.
            with imitation_errors(cfg.env_id):  # the generator's episodes must have one fixed length too
                trainer.train_gen(steps_per_round)
            with networks.training(trainer.reward_train):
                for _ in range(cfg.n_disc_updates_per_round):
                    disc_stats = trainer.train_disc()
            global_step += steps_per_round
            round_index += 1
            for key in ("disc_loss", "disc_acc", "disc_acc_expert", "disc_acc_gen", "disc_entropy"):
                if key in disc_stats:
                    run.logger.record(("losses/" if key == "disc_loss" else "charts/") + key, float(disc_stats[key]))
            if not np.isfinite(float(disc_stats.get("disc_loss", 0.0))):
                raise RLKitError(f"{algo}: the discriminator loss became {disc_stats['disc_loss']}; lower disc_lr")
            for info in list(ppo.ep_info_buffer)[-cfg.num_envs:]:  # true returns, from the Monitor below the reward
                run.logger.record_episode(float(info["r"]), int(info["l"]))
            run.logger.progress(global_step)
            log_due = Run.due(global_step, cfg.log_every, steps_per_round)
            if on_round is not None:
                on_round(trainer, round_index, disc_stats)
            if Run.due(global_step, cfg.eval_every, steps_per_round):
                run.evaluate(policy, make_eval_env, global_step, state=state_dict, write_row=not log_due)
            if log_due:
                run.logger.dump(global_step)
            if Run.due(global_step, cfg.checkpoint_every, steps_per_round) and global_step < cfg.total_steps:
                run.checkpoint(global_step, state_dict())
    venv.close()
    extra = {"eval_env_id": eval_env_id, "train_env_id": cfg.env_id, "eval_initial_mean": initial,
             "rounds": round_index,
             "demo_episodes": len(dataset), "disc": {k: float(v) for k, v in disc_stats.items()}}
    return run.finish(policy, make_eval_env, global_step, state_dict(), extra=extra)


def train_gail(cfg: AdversarialConfig, resume: bool = False, **kwargs: Any) -> dict[str, Any]:
    return train_adversarial("gail", cfg, resume, **kwargs)


def train_airl(cfg: AdversarialConfig, resume: bool = False, **kwargs: Any) -> dict[str, Any]:
    return train_adversarial("airl", cfg, resume, **kwargs)


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
