"""Reward learning from preferences over trajectory fragments, through ``imitation``.

Paper: Christiano et al. 2017, "Deep Reinforcement Learning from Human Preferences",
https://arxiv.org/abs/1706.03741.

What is implemented: the glue around imitation's ``PreferenceComparisons``. SB3 PPO (imitation's
``AgentTrainer``) generates trajectories while training on the learned reward; a fragmenter cuts
them into pairs of ``fragment_length`` steps; a *synthetic* gatherer stands in for the human and
prefers the fragment with the higher true return (``gatherer_temperature`` 0 makes it always pick
the better one; > 0 gives Boltzmann-rational noisy answers, as in the paper's simulated raters);
``BasicRewardTrainer`` fits the reward net with the Bradley-Terry cross-entropy loss. The body of
imitation's training loop (one iteration: gather comparisons, fit the reward, train the agent) is written
out as :meth:`PreferenceLearner.round`, same calls in the same order, so that rlkit's imitation loop
(:mod:`rlkit.engine.imitation`) runs the rounds with its evaluation, checkpoints and resume.

Resume: a checkpoint holds the comparisons as plain arrays (fragment pairs and preferences, no pickle),
PPO, the reward net and its optimiser, the rater's RNG and the query plan; ``--resume`` and a
``learn`` after ``Model.load`` continue from it. The agent's buffered trajectories and the envs'
episodes in flight are not stored (the envs reset), so a resumed run is not bit-identical to an
uninterrupted one. A run continued past its plan (more ``total_steps``) goes on with rounds like its
last one: ``total_steps // num_iterations`` agent steps and the last round's number of comparisons.

At the end the learned reward is compared with the true one on fresh transitions from the trained
agent and a uniform-random policy (both, so that good and bad behaviour are covered): final.json
reports their Pearson and Spearman correlations under ``reward_correlation``. A learned reward is
only defined up to a positive affine map on preferences, so correlation, not error, is the measure.
Envs whose true reward never varies (CartPole-v1: +1 per step) have no defined correlation; use the
fixed-horizon ``seals/CartPole-v0`` (reward 1 while the pole is up) or Pendulum-v1.

``--set rater=web`` replaces the synthetic rater by people: each round's pairs are shown as clips on a
local web page and the run waits for the answers (rlkit/apps/prefs_web.py, rlkit/apps/preference_web.py; the
README's "Human preferences in the browser"). Such a run can be resumed: it trains again from the
start with the same seeds, reusing every stored label, and serves only the unanswered pairs (it writes
no checkpoint before the end).

Deviations: imitation's defaults otherwise (hyperbolic query schedule, ``initial_comparison_frac``
0.1); no reward ensemble or active query selection (imitation has both; not exposed here). The agent
trains on the raw learned reward unless ``normalize_reward`` (imitation's ``NormalizedRewardNet``,
which its scripts use): on Pendulum it made no difference we could measure (one seed each: -361
with, -286 without). The Pendulum preset's PPO explores with gSDE, as the RL Zoo's Pendulum
settings do; without it the agent reaches -286 where with it -119 (seed 0, same comparisons).

Run it: ``rlkit train preference --env Pendulum-v1 --preset pendulum``.
"""

from __future__ import annotations

import io
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from rlkit.envs import make_env

from rlkit.callbacks import Callback
from rlkit.config import BaseConfig, default, opt, require_at_least_one, validate_config
from rlkit.engine.imitation import sample_transitions, train_rounds
from rlkit.errors import RLKitError, require_imitation
from rlkit.generator import GeneratorOptions, load_sb3_policy, make_ppo, make_sb3_venv, sb3_bytes
from rlkit.policy import RandomPolicy, SB3ModelPolicy
from rlkit.registry import AgentSpec, eval_env_factory, preference_rater, train_from_command_line
from rlkit.run import Run


@dataclass
class PreferenceConfig(GeneratorOptions, BaseConfig):
    """Preference-comparison hyper-parameters (imitation's names) and the PPO agent's options."""

    env_id: str = opt("Pendulum-v1", "env to learn a reward for (its true reward is only shown to the gatherer)")
    total_steps: int = opt(50_000, "agent env steps (PPO on the learned reward)", low=1)
    total_comparisons: int = opt(500, "preference queries answered by the synthetic gatherer")
    num_iterations: int = opt(10, "rounds of (collect, query, fit reward, train agent)")
    fragment_length: int = opt(25, "steps per compared fragment")
    initial_comparison_frac: float = opt(0.1, "share of the comparisons asked before the first agent training")
    gatherer_temperature: float = opt(0.0, "Boltzmann temperature of the synthetic rater (0 = always the better)")
    exploration_frac: float = opt(0.05, "share of the agent's trajectories with random actions mixed in")
    reward_hidden: list[int] = opt([32, 32], "hidden sizes of the reward MLP")
    reward_epochs: int = opt(3, "reward-net epochs per iteration")
    reward_lr: float = opt(1e-3, "reward-net learning rate", low=0)
    correlation_steps: int = opt(4_000, "transitions used to correlate the learned and the true reward")
    normalize_reward: bool = opt(False, "the agent trains on the learned reward standardised by running statistics "
                                       "(imitation's NormalizedRewardNet, its scripts' default); the rater and the "
                                       "reward fit see the raw net")
    # The PPO agent's defaults for Pendulum (RL Zoo); GAIL's are GeneratorOptions' own.
    num_envs: int = default(GeneratorOptions, "num_envs", 4)
    ppo_n_steps: int = default(GeneratorOptions, "ppo_n_steps", 512)
    ppo_epochs: int = default(GeneratorOptions, "ppo_epochs", 10)
    ppo_lr: float = default(GeneratorOptions, "ppo_lr", 1e-3)
    gamma: float = default(GeneratorOptions, "gamma", 0.9)
    rater: Literal["synthetic", "web"] = opt("synthetic", "who answers the queries: the synthetic rater (true "
                                             "return) or people on a local web page (see README)")
    web_host: str = opt("127.0.0.1", "rater=web: address the label page binds to (beyond loopback needs a token)")
    web_port: int = opt(8765, "rater=web: TCP port of the label page (0 = any free port)")
    web_token: str | None = opt(None, "rater=web: access token for the page's URL (generated when binding "
                                      "beyond loopback)")
    web_lease_s: float = opt(120.0, "rater=web: seconds a pair stays reserved for the rater who got it")
    web_prompt: str = opt("", "rater=web: the task, shown to the rater above the clips (what makes a clip better: "
                              "the presets say it for their env)")

    def validate(self) -> None:
        self.validate_generator()
        require_at_least_one(self, "total_comparisons", "num_iterations", "fragment_length", "correlation_steps")


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
    env = make_env(env_id, seed=seed, env_kwargs=env_kwargs)
    try:
        samples = sample_transitions(env, policies, steps, seed)
    finally:
        env.close()
    learned = [reward_net.predict_processed(o, a, n, d.astype(bool)) for o, a, n, d, _ in samples]
    return np.concatenate(learned), np.concatenate([true for *_, true in samples])


# ALGO LOGIC: one round of imitation's PreferenceComparisons.train, written out so that rlkit's loop runs the
# rounds (evaluation, checkpoints, resume). Same calls in the same order as imitation 1.0.1's loop body.
def query_plan(trainer: Any, total_comparisons: int) -> list[int]:
    """Comparisons asked per round, as imitation plans them: round 0 the initial share, then the query schedule's
    (hyperbolic by default) shares of the rest over ``num_iterations`` rounds."""
    from imitation.util import util

    initial = int(total_comparisons * trainer.initial_comparison_frac)
    probs = np.vectorize(trainer.query_schedule)(np.linspace(0, 1, trainer.num_iterations))
    probs = probs / np.sum(probs)
    return [initial] + util.oric(probs * (total_comparisons - initial)).tolist()


def gather_and_fit(trainer: Any, round_index: int, num_pairs: int) -> dict[str, float]:
    """Sample trajectories, cut ``num_pairs`` fragment pairs, ask the rater, add them to the comparisons and fit
    the reward net on all of them (longer in round 0); returns the reward fit's final loss and accuracy."""
    num_steps = math.ceil(trainer.transition_oversampling * 2 * num_pairs * trainer.fragment_length)
    trajectories = trainer.trajectory_generator.sample(num_steps)
    # imitation's check that no fragment misses initial timesteps (fixed horizons)
    trainer._check_fixed_horizon(len(traj) for traj in trajectories if traj.terminal)
    fragments = trainer.fragmenter(trajectories, trainer.fragment_length, num_pairs)
    with trainer.logger.accumulate_means("preferences"):
        preferences = trainer.preference_gatherer(fragments)
    trainer.dataset.push(fragments, preferences)
    epoch_multiplier = trainer.initial_epoch_multiplier if round_index == 0 else 1.0
    trainer.reward_trainer.train(trainer.dataset, epoch_multiplier=epoch_multiplier)
    key = trainer.logger.get_accumulate_prefixes() + "reward/final/train"
    return {"reward_loss": trainer.logger.name_to_value[f"{key}/loss"],
            "reward_accuracy": trainer.logger.name_to_value[f"{key}/accuracy"]}


def comparisons_to_arrays(dataset: Any, count: int) -> dict[str, np.ndarray]:
    """The first ``count`` comparisons of imitation's PreferenceDataset as plain arrays (fragments of one length;
    their infos are left out: the reward fit does not read them)."""
    out = {"preferences": np.asarray(dataset.preferences[:count])}
    for side, fragments in (("1", dataset.fragments1[:count]), ("2", dataset.fragments2[:count])):
        for field in ("obs", "acts", "rews", "terminal"):
            out[field + side] = np.stack([np.asarray(getattr(f, field)) for f in fragments]) if count else np.zeros(0)
    return out


def comparisons_from_arrays(dataset: Any, arrays: dict[str, np.ndarray]) -> None:
    """Refill ``dataset`` (empty) with what :func:`comparisons_to_arrays` stored."""
    from imitation.data.types import TrajectoryWithRew

    def fragments(side: str) -> list[Any]:
        return [TrajectoryWithRew(obs=arrays["obs" + side][i], acts=arrays["acts" + side][i], infos=None,
                                  terminal=bool(arrays["terminal" + side][i]), rews=arrays["rews" + side][i])
                for i in range(len(arrays["preferences"]))]

    dataset.fragments1, dataset.fragments2 = fragments("1"), fragments("2")
    dataset.preferences = np.asarray(arrays["preferences"])


class PreferenceLearner:
    """Preference learning for the imitation loop: a round asks the round's comparisons, fits the reward net
    and trains the agent on it (imitation's iteration); round 0 asks the initial comparisons. A run continued
    past its plan (more ``total_steps``) goes on with rounds like the last one."""

    log_every = 1  # a row after every round

    def __init__(self, cfg: PreferenceConfig, run: Run, parts: dict[str, Any]) -> None:
        self.cfg, self.run, self.web = cfg, run, parts.get("web")
        self.venv, self.agent, self.reward_net = parts["venv"], parts["agent"], parts["reward_net"]
        self.agent_reward, self.trainer, self.rng, self.log = (parts["agent_reward"], parts["trainer"], parts["rng"],
                                                               parts["log"])
        self.policy = SB3ModelPolicy(self.agent)
        # people rating: no mid-run checkpoint; a resumed run replays its stored labels from the start instead
        self.checkpoint_every = 0 if self.web is not None else cfg.checkpoint_every
        self.checkpoint_on_interrupt = self.web is None
        self.plan = query_plan(self.trainer, cfg.total_comparisons)
        self.steps_per_round, self.extra_steps = divmod(cfg.total_steps, cfg.num_iterations)
        self.round_index, self.steps_seen, self.kept, self.stats = 0, 0, 0, {}

    def state_dict(self) -> dict[str, Any]:
        state = {"ppo_zip": sb3_bytes(self.agent), "reward_net": self.reward_net.state_dict(),
                 "observation_space": self.venv.observation_space, "action_space": self.venv.action_space,
                 "eval_env_id": self.cfg.env_id, "round": self.round_index,
                 "plan": {"comparisons": self.plan, "steps_per_round": self.steps_per_round,
                          "extra_steps": self.extra_steps},
                 "reward_optimizer": self.trainer.reward_trainer.optim.state_dict(),
                 "rater_rng": self.rng.bit_generator.state}
        if self.agent_reward is not self.reward_net:
            state["reward_normalizer"] = self.agent_reward.state_dict()
        if self.web is None:  # people's labels live in the run's prefs/ store
            state["comparisons"] = comparisons_to_arrays(self.trainer.dataset, self.kept)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.agent.set_parameters(io.BytesIO(state["ppo_zip"]), exact_match=True)
        self.agent.num_timesteps = self.steps_seen = int(state["global_step"])
        self.reward_net.load_state_dict(state["reward_net"])
        self.trainer.reward_trainer.optim.load_state_dict(state["reward_optimizer"])
        if "reward_normalizer" in state:
            self.agent_reward.load_state_dict(state["reward_normalizer"])
        comparisons_from_arrays(self.trainer.dataset, state["comparisons"])
        self.rng.bit_generator.state = state["rater_rng"]
        plan = state["plan"]
        self.plan, self.steps_per_round, self.extra_steps = (list(plan["comparisons"]), plan["steps_per_round"],
                                                             plan["extra_steps"])
        self.round_index = self.trainer._iteration = int(state["round"])
        self.kept = len(self.trainer.dataset)

    def round(self, run: Run) -> int:
        i, trainer = self.round_index, self.trainer
        num_pairs = self.plan[i] if i < len(self.plan) else max(self.plan[-1], 1)
        self.stats = gather_and_fit(trainer, i, num_pairs)
        # the last planned iteration trains the agent a bit longer when the budget does not divide (imitation's)
        steps = self.steps_per_round + (self.extra_steps if i == self.cfg.num_iterations - 1 else 0)
        with trainer.logger.accumulate_means("agent"):
            trainer.trajectory_generator.train(steps=steps)
        trainer.logger.dump(trainer._iteration)
        for info in list(self.agent.ep_info_buffer)[-self.cfg.num_envs:]:  # true returns (Monitor under the reward)
            run.logger.record_episode(float(info["r"]), int(info["l"]))
        run.logger.record("charts/iteration", trainer._iteration)
        run.logger.record("charts/comparisons", len(trainer.dataset))
        trainer._iteration += 1
        self.round_index, self.kept = i + 1, len(trainer.dataset)
        done, self.steps_seen = self.agent.num_timesteps - self.steps_seen, self.agent.num_timesteps
        return done

    def finished(self, global_step: int) -> bool:
        return self.round_index >= len(self.plan) and global_step >= self.cfg.total_steps

    def close(self) -> None:
        self.log.close()  # imitation's CSV files stay open otherwise
        self.venv.close()
        if self.web is not None:
            self.web["server"].stop()
            self.web["store"].close()

    def final(self) -> tuple[dict[str, Any], dict[str, Any]]:
        cfg = self.cfg
        with torch.no_grad():
            learned, true = sample_rewards(self.reward_net, [self.policy, RandomPolicy(self.venv.action_space,
                                                                                       seed=cfg.seed)],
                                           cfg.env_id, cfg.env_kwargs, cfg.correlation_steps, cfg.eval_seed + 777)
        corr = {**reward_correlation(learned, true), "transitions": len(true)}
        self.run.logger.record("charts/reward_pearson", corr["pearson"] if corr["pearson"] is not None else math.nan)
        stats = {} if self.run.stopped is not None else self.stats  # a stopped run reports no final reward fit
        extra = {"reward_correlation": corr, "comparisons": len(self.trainer.dataset),
                 **{k: float(stats[k]) if k in stats else None for k in ("reward_loss", "reward_accuracy")},
                 "eval_env_id": cfg.env_id, "train_env_id": cfg.env_id, "rater": cfg.rater}
        if self.web is not None:
            status = preference_rater("web").store_status(self.run.dir)
            extra["labels"] = {k: status[k] for k in ("pairs", "answered", "answers", "skipped", "raters")}
        return self.state_dict(), extra


def build(cfg: PreferenceConfig, run: Run) -> dict[str, Any]:
    """The venv, PPO agent, reward net, rater and imitation's PreferenceComparisons trainer of a run."""
    from imitation.algorithms import preference_comparisons as pc
    from imitation.rewards.reward_nets import BasicRewardNet, NormalizedRewardNet
    from imitation.util import logger as imit_logger
    from imitation.util.networks import RunningNorm

    web = None
    if cfg.rater == "web":
        pw = preference_rater("web")
        episode_log = pw.EpisodeLog()
        venv = pw.make_origin_venv(cfg.env_id, cfg.num_envs, cfg.seed, cfg.env_kwargs, episode_log)
    else:
        venv = make_sb3_venv(cfg.env_id, cfg.num_envs, cfg.seed, cfg.env_kwargs)
    rng = np.random.default_rng(cfg.seed)
    log = imit_logger.configure(str(run.dir / "imitation"), ["csv"])
    reward_net = BasicRewardNet(venv.observation_space, venv.action_space, hid_sizes=cfg.reward_hidden,
                                normalize_input_layer=RunningNorm)
    agent = make_ppo(cfg, venv)
    # The Bradley-Terry fit fixes the reward only up to scale and shift, and both drift between iterations;
    # PPO sees it standardised (running mean and std) so its value targets keep one scale.
    agent_reward = NormalizedRewardNet(reward_net, RunningNorm) if cfg.normalize_reward else reward_net
    # TRY NOT TO MODIFY: the rater is the only place the true reward enters training.
    # temperature 0: imitation returns 1, 0 (or 0.5 on a tie) for "the higher true return wins".
    gatherer = pc.SyntheticGatherer(temperature=cfg.gatherer_temperature, sample=cfg.gatherer_temperature > 0,
                                    rng=rng, custom_logger=log)
    fragmenter = pc.RandomFragmenter(rng=rng, warning_threshold=0, custom_logger=log)
    if cfg.rater == "web":
        web = start_web_rater(cfg, run.dir, venv, episode_log, log)
        gatherer, fragmenter = web["gatherer"], pw.StoredRoundsFragmenter(fragmenter, web["store"], log)
    trainer = pc.PreferenceComparisons(
        pc.AgentTrainer(agent, agent_reward, venv, rng=rng, exploration_frac=cfg.exploration_frac, custom_logger=log),
        reward_net, num_iterations=cfg.num_iterations,
        fragmenter=fragmenter,
        preference_gatherer=gatherer,
        reward_trainer=pc.BasicRewardTrainer(pc.PreferenceModel(reward_net), pc.CrossEntropyRewardLoss(), rng=rng,
                                             epochs=cfg.reward_epochs, lr=cfg.reward_lr, custom_logger=log),
        fragment_length=cfg.fragment_length, initial_comparison_frac=cfg.initial_comparison_frac,
        initial_epoch_multiplier=4.0, custom_logger=log)
    if web is not None:
        trainer.dataset = pw.SkipAwarePreferenceDataset()  # "can't tell" answers stay out of training
    return {"venv": venv, "agent": agent, "reward_net": reward_net, "agent_reward": agent_reward, "trainer": trainer,
            "rng": rng, "log": log, "web": web}


def train(cfg: PreferenceConfig, resume: bool = False, callbacks: Sequence[Callback] | None = None) -> dict[str, Any]:
    """Learn a reward from synthetic preferences and a PPO agent on it; returns final.json."""
    require_imitation("preference learning")
    import seals  # noqa: F401  (registers seals/ envs)

    validate_config(cfg)
    web = cfg.rater == "web"
    if resume and web:
        web_resume_check(cfg)
    # A resumed web run trains again from the start with the stored labels (rlkit/apps/preference_web.py);
    # a synthetic one continues from its latest checkpoint, comparisons included.
    run = Run("preference", cfg, resume=resume and not web, callbacks=callbacks)  # seeds the global RNGs
    learner = PreferenceLearner(cfg, run, build(cfg, run))
    try:
        return train_rounds(run, learner, eval_env_factory(cfg))
    except KeyboardInterrupt:
        if web:
            print(f"rlkit prefs: every answer is kept in {learner.web['store'].root}; continue with "
                  f"`rlkit train preference --resume {run.dir}`", file=sys.stderr, flush=True)
        raise


def web_resume_check(cfg: PreferenceConfig) -> None:
    from rlkit.checkpoint import list_checkpoints

    PREFS_DIR = preference_rater("web").PREFS_DIR

    run_dir = Path(cfg.run_dir or "")
    if not (run_dir / PREFS_DIR / "meta.json").exists():
        raise RLKitError(f"cannot resume: {run_dir} holds no preference labels ({PREFS_DIR}/meta.json)")
    if list_checkpoints(run_dir):
        raise RLKitError(f"{run_dir} finished already; its labels are in {run_dir / PREFS_DIR} (train a reward on "
                         "them with rlkit.apps.preference_web.train_reward_from_store, or start a new run)")
    # the replay writes the metrics of the replayed iterations again; keep the interrupted run's rows apart
    metrics = run_dir / "metrics.csv"
    if metrics.exists():
        metrics.replace(run_dir / "metrics.interrupted.csv")


def start_web_rater(cfg: PreferenceConfig, run_dir: Path, venv: Any, episode_log: Any, log: Any) -> dict[str, Any]:
    """The store, label queue, server and gatherer of ``rater=web``; prints the page's URL."""
    pw = preference_rater("web")  # the page, its server and store: an application, found by entry point
    LabelQueue, PreferenceStore, PrefsServer = pw.LabelQueue, pw.PreferenceStore, pw.PrefsServer
    from rlkit.spaces import space_to_json

    if cfg.web_lease_s <= 0 or not 0 <= cfg.web_port <= 65535:
        raise RLKitError(f"web_lease_s must be > 0 and web_port in 0..65535; got {cfg.web_lease_s}, {cfg.web_port}")
    probe = make_env(cfg.env_id, env_kwargs=cfg.env_kwargs)
    fps = int(probe.metadata.get("render_fps") or 30)
    probe.close()
    # env_id: the run's config names it, and the CLI imports a module named there only when the user named it too
    store = PreferenceStore.create(run_dir, {
        "env_id": cfg.env_id, "env_kwargs": cfg.env_kwargs, "fragment_length": cfg.fragment_length, "fps": fps,
        "observation_space": space_to_json(venv.observation_space), "action_space": space_to_json(venv.action_space),
        "web_prompt": cfg.web_prompt}, env_id=cfg.env_id)
    if store.meta["env_id"] != cfg.env_id or store.meta["fragment_length"] != cfg.fragment_length:
        store.close()
        raise RLKitError(f"{run_dir / 'prefs'} holds labels for {store.meta['env_id']} with fragment_length "
                         f"{store.meta['fragment_length']}; use another --run-dir")
    queue = LabelQueue(store, cfg.web_lease_s)
    try:
        server = PrefsServer(queue, cfg.web_host, cfg.web_port, cfg.web_token, prompt=cfg.web_prompt).start()
    except RLKitError:
        store.close()
        raise
    print(f"rlkit prefs: label preferences at {server.url} (answers go to {store.root / 'answers.jsonl'})",
          file=sys.stderr, flush=True)
    gatherer = pw.WebGatherer(store, queue, episode_log, np.random.default_rng([cfg.seed, 0x1EF7]), server.url,
                              custom_logger=log)
    return {"store": store, "queue": queue, "server": server, "gatherer": gatherer}


AGENT = AgentSpec("preference", PreferenceConfig, train, load_sb3_policy,
                  summary="reward learning from preferences (Christiano et al. 2017) through imitation, PPO agent; "
                          "--set rater=web asks people on a local web page")

if __name__ == "__main__":
    train_from_command_line("preference")
