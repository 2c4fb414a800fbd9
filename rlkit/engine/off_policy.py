"""The off-policy loop, written once: act, store the transition in a replay buffer, update (DQN, DDPG, TD3, SAC).

An agent declares an :class:`OffPolicyLearner`: its networks and replay buffer, how it acts while training
(:meth:`~OffPolicyLearner.explore`), one training round of ``gradient_steps`` minibatches
(:meth:`~OffPolicyLearner.update`) and what it checkpoints. :func:`train_off_policy` runs it::

    for each iteration (one step of every env):
        actions = uniform random before learning_starts (if the learner warms up that way), else explore(obs)
        step the envs; store (obs, action, reward, the real final obs, terminated, truncated)
        every train_every env steps, once learning started: update(the round's minibatches)
        after_env_step (target networks, noise resets); run.step_done (evaluation, log row, checkpoint)

It is SB3's ``OffPolicyAlgorithm.learn`` with the per-algorithm ``train()``, and Dopamine's Runner with its
Agent. Counting follows SB3: updates start once ``global_step > learning_starts`` and a full minibatch is
stored, and an iteration advances ``global_step`` by ``num_envs``. Truncated episodes bootstrap from their
real last observation (``VecStep.final_obs``). A resumed run restores the networks, optimizers, counters,
the replay buffer (when ``save_buffer``) and every RNG stream; it cannot restore the envs' internal state,
so it starts fresh episodes on the seed ``seed + global_step``.

:func:`train_off_policy_seeds` runs several seeds' loops in one process, iteration by iteration; a learner that
can stack its seeds' networks (:meth:`OffPolicyLearner.stack`, a :class:`Stacked`) then trains and acts for all
of them at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any, ClassVar

import numpy as np
import torch

from rlkit.buffers import ReplayBuffer
from rlkit.callbacks import Callback
from rlkit.config import BaseConfig
from rlkit.engine.common import EnvLearner, checkpoint_state, open_run, record_episodes
from rlkit.errors import AlreadyFinished
from rlkit.normalizers import ObsNormalizer
from rlkit.policy import Batch, Policy
from rlkit.registry import eval_env_factory
from rlkit.run import Run


class Stacked:
    """What :meth:`OffPolicyLearner.stack` returns: a training round, and optionally acting, for several seeds'
    learners at once (their networks stacked), each seed's numbers its own."""

    def update(self, batches_of_each: list[Iterable[Batch]], global_step: int) -> list[dict[str, float]]:
        """One training round of every seed (``batches_of_each[i]``: seed i's); returns each seed's scalars."""
        raise NotImplementedError

    def explore(self, obs_of_each: list[np.ndarray], global_step: int) -> list[np.ndarray] | None:
        """Every seed's behaviour actions at once (before the step's observations reach any normalizer), or
        None: each seed explores alone."""
        return None


class OffPolicyLearner(EnvLearner):
    """What an off-policy agent declares for :func:`train_off_policy` (subclass it; the defaults suit DDPG).

    Built after the run seeded every RNG, as ``Learner(cfg, observation_space, action_space, rng)``; it sets
    ``self.policy`` (the deterministic policy that evaluations score), ``self.buffer`` (its replay buffer,
    sampling from ``rng``) and, if it normalizes observations, ``self.normalizer``.
    """

    warmup_uniform: bool = True  # uniform random actions until learning_starts (DDPG, SAC; not DQN, nor fine-tuning)
    draws_torch_rng: ClassVar[bool] = True  # explore/update sample from torch's global RNG (SAC, TD3's smoothing)
    policy: Policy
    buffer: ReplayBuffer
    normalizer: ObsNormalizer | None = None

    def explore(self, obs: np.ndarray, global_step: int) -> np.ndarray:
        """The behaviour actions for ``obs`` (a batch, one row per env) at ``global_step``."""
        raise NotImplementedError

    def update(self, batches: Iterable[Batch], global_step: int) -> dict[str, float]:
        """One training round on ``batches`` (``gradient_steps`` minibatches; drawn lazily for prioritized
        replay, whose priorities change in between); returns the scalars to log."""
        raise NotImplementedError

    def rewards_to_store(self, rewards: np.ndarray) -> np.ndarray:
        """The rewards the buffer stores (DQN's Atari presets clip them); logged returns stay raw."""
        return rewards

    def after_env_step(self, global_step: int, ended: np.ndarray) -> None:
        """After each iteration's update: ``ended`` are the envs whose episode just ended."""

    def scalars(self) -> dict[str, float]:
        """Extra scalars for a log row (exploration rate, learning rate, update count)."""
        return {}

    @classmethod
    def stack(cls, learners: list[Any]) -> Stacked | None:
        """The training rounds (and acting) of all of ``learners`` (seeds of one config) at once, their networks
        stacked; or None, and each updates alone (:func:`train_off_policy_seeds`). Each learner must stay
        usable alone afterwards (a seed that stops early leaves the others to update alone)."""
        return None


def train_off_policy(agent: str, cfg: BaseConfig, learner_class: type[OffPolicyLearner], resume: bool = False,
                     callbacks: Sequence[Callback] | None = None) -> dict[str, Any]:
    """Train ``learner_class`` on ``cfg`` (a config with :class:`rlkit.config.ReplayOptions`), recorded as
    ``agent``; returns the contents of ``final.json``."""
    loop = _Loop.open(agent, cfg, learner_class, resume, callbacks)
    with loop.run.checkpoint_on_interrupt(loop.current):
        loop.start()
        while loop.running:
            loop.iteration()
    return loop.finish()


def train_off_policy_seeds(agent: str, cfgs: Sequence[BaseConfig], learner_class: type[OffPolicyLearner],
                           resume: bool = False, callbacks: Sequence[Callback] | None = None) -> list[dict[str, Any]]:
    """Train one ``learner_class`` per config (one per seed) in this process, in lockstep; returns each seed's
    ``final.json`` contents, in the order of ``cfgs``.

    Every seed is a whole run of its own: its env, replay buffer, numpy Generator, torch RNG stream (swapped in
    around its own work), run directory and files, checkpoints and ``--resume``; the progress bar follows the
    first. While all seeds stand at the same step, one training round serves them all when the learner can
    stack its networks (:meth:`OffPolicyLearner.stack`: DQN's fused update); otherwise, and for a seed that
    stops early, each seed updates alone. After a resume whose seeds were checkpointed at different steps, the
    seeds behind run alone until they catch up.
    """
    loops: list[_Loop] = []
    finished: dict[int, dict[str, Any]] = {}
    for i, cfg in enumerate(cfgs):
        cfg.progress = cfg.progress and not loops and not finished  # one bar, the first seed's
        try:
            loops.append(_Loop.open(agent, cfg, learner_class, resume, callbacks))
        except AlreadyFinished as done:
            finished[i] = done.result
    with ExitStack() as interrupts:
        for loop in loops:
            interrupts.enter_context(loop.run.checkpoint_on_interrupt(loop.current))
        for loop in loops:
            with loop.rng_swapped_in():
                loop.start()
        _lockstep(loops, learner_class)
    results = iter(loop.finish() for loop in loops)
    return [finished[i] if i in finished else next(results) for i in range(len(cfgs))]


def _lockstep(loops: list[_Loop], learner_class: type[OffPolicyLearner]) -> None:
    """Iterate the seeds that are behind (all of them, once in step) until every one is done."""
    stacked: Stacked | None = None
    tried_stacking = False
    while running := [loop for loop in loops if loop.running]:
        behind = min(loop.global_step for loop in running)
        group = [loop for loop in running if loop.global_step == behind]
        if not tried_stacking and len(group) == len(loops) > 1:
            tried_stacking = True
            stacked = learner_class.stack([loop.learner for loop in loops])
        if stacked is None or len(group) < len(loops):
            for loop in group:
                with loop.rng_swapped_in():
                    loop.iteration()
            continue
        actions = None if group[0].warming_up else stacked.explore([loop.obs for loop in group], behind)
        ended = []
        for i, loop in enumerate(group):
            with loop.rng_swapped_in():
                ended.append(loop.collect(None if actions is None else actions[i]))
        if group[0].round_due():
            for loop, scalars in zip(group, stacked.update([loop.minibatches() for loop in group],
                                                           group[0].global_step)):
                loop.log(scalars)
        for loop, seed_ended in zip(group, ended):
            with loop.rng_swapped_in():
                loop.after_iteration(seed_ended)


class _Loop:
    """One run of the loop: its env, run and learner, and its state between iterations. ``global_step`` advances
    right after the transition is stored, so a checkpoint taken on Ctrl-C or SIGTERM anywhere in an iteration
    holds a buffer that matches its step."""

    def __init__(self, run: Run, envs: Any, learner: OffPolicyLearner) -> None:
        self.run, self.envs, self.learner = run, envs, learner
        self.cfg = run.cfg
        self.stride = run.cfg.num_envs
        self.global_step = 0
        self.obs: np.ndarray | None = None
        self.saved_buffer = learner.buffer if self.cfg.save_buffer else None  # committed with the state
        self.state = checkpoint_state(learner, envs.single_observation_space, envs.single_action_space)
        self.own_rng = torch.get_rng_state()  # this seed's torch RNG stream, kept here while another seed runs

    @classmethod
    def open(cls, agent: str, cfg: BaseConfig, learner_class: type[OffPolicyLearner], resume: bool,
             callbacks: Sequence[Callback] | None) -> _Loop:
        """Open the run (or resume it: networks, optimizers, replay buffer, counters, RNG streams)."""
        envs, run, learner = open_run(agent, cfg, learner_class, resume, callbacks)
        loop = cls(run, envs, learner)
        if run.resume_state is not None:
            learner.load_state_dict(run.resume_state)
            run.restore_replay_buffer(learner.buffer)
            loop.global_step = run.global_step
        run.restore_rng()
        loop.own_rng = torch.get_rng_state()  # as built and restored
        return loop

    @contextmanager
    def rng_swapped_in(self) -> Iterator[None]:
        """Run the block on this seed's torch RNG stream (others' streams are kept aside meanwhile); a no-op for
        learners that never draw from it while training."""
        if not self.learner.draws_torch_rng:
            yield
            return
        torch.set_rng_state(self.own_rng)
        try:
            yield
        finally:
            self.own_rng = torch.get_rng_state()

    def current(self) -> tuple[int, dict[str, Any], Any]:
        """What a checkpoint on Ctrl-C or SIGTERM holds: the step, the state and the buffer."""
        torch.set_rng_state(self.own_rng)  # the RNG state it records is this seed's
        return self.global_step, self.state(), self.saved_buffer

    @property
    def running(self) -> bool:
        return self.global_step < self.cfg.total_steps and self.run.stopped is None

    def start(self) -> None:
        self.obs = self.envs.reset(seed=self.cfg.seed + self.global_step)

    def iteration(self) -> None:
        """One step of every env, the transition stored, the training round when one is due, and the run's
        bookkeeping (evaluation, log row, checkpoint)."""
        ended = self.collect()
        if self.round_due():
            self.log(self.learner.update(self.minibatches(), self.global_step))
        self.after_iteration(ended)

    @property
    def warming_up(self) -> bool:
        """Acting uniformly at random until ``learning_starts`` (learners that warm up that way)."""
        return self.learner.warmup_uniform and self.global_step < self.cfg.learning_starts

    def collect(self, actions: np.ndarray | None = None) -> np.ndarray:
        """Act (or take ``actions``, chosen for all seeds at once), step the envs and store the transitions;
        returns the envs whose episode ended."""
        run, learner, obs, cfg = self.run, self.learner, self.obs, self.cfg
        if learner.normalizer is not None:
            learner.normalizer.update(obs)
        if self.warming_up:
            space = self.envs.single_action_space
            actions = run.rng.uniform(space.low.astype(np.float32), space.high.astype(np.float32),
                                      size=(cfg.num_envs, *space.shape)).astype(np.float32)
        elif actions is None:
            actions = learner.explore(obs, self.global_step)
        step = self.envs.step(actions)
        learner.buffer.add(obs, actions, learner.rewards_to_store(step.rewards), step.final_obs, step.terminated,
                           step.truncated)
        self.global_step += cfg.num_envs
        self.obs = step.obs
        return record_episodes(run.logger, step.episode_returns, step.episode_lengths)

    def round_due(self) -> bool:
        cfg = self.cfg
        return cfg.learning(self.global_step, len(self.learner.buffer)) and \
            Run.due(self.global_step, cfg.train_every, cfg.num_envs)

    def minibatches(self) -> Iterable[Batch]:
        """The round's ``gradient_steps`` minibatches (observations normalized, if the learner does)."""
        cfg, normalizer = self.cfg, self.learner.normalizer
        batches = self.learner.buffer.minibatches(cfg.batch_size, cfg.gradient_steps, cfg.device)
        return batches if normalizer is None else (normalizer.batch(batch) for batch in batches)

    def log(self, scalars: dict[str, float]) -> None:
        for key, value in scalars.items():
            self.run.logger.record(key, value)

    def after_iteration(self, ended: np.ndarray) -> None:
        """The learner's after-step work (target networks, noise resets), then evaluation, log row, checkpoint."""
        self.learner.after_env_step(self.global_step, ended)
        self.run.step_done(self.global_step, self.stride, self.learner.policy, eval_env_factory(self.cfg),
                           self.state, self.learner.scalars, replay_buffer=self.saved_buffer)

    def finish(self) -> dict[str, Any]:
        """Close the envs; the final checkpoint, evaluation and ``final.json``."""
        with self.rng_swapped_in():
            self.envs.close()
            return self.run.finish(self.learner.policy, eval_env_factory(self.cfg), self.global_step, self.state(),
                                   replay_buffer=self.saved_buffer)
