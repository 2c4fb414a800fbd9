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
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import numpy as np

from rlkit.buffers import ReplayBuffer
from rlkit.callbacks import Callback
from rlkit.config import BaseConfig
from rlkit.engine.common import EnvLearner, checkpoint_state, open_run, record_episodes
from rlkit.normalizers import ObsNormalizer
from rlkit.policy import Batch, Policy
from rlkit.registry import eval_env_factory
from rlkit.run import Run


class OffPolicyLearner(EnvLearner):
    """What an off-policy agent declares for :func:`train_off_policy` (subclass it; the defaults suit DDPG).

    Built after the run seeded every RNG, as ``Learner(cfg, observation_space, action_space, rng)``; it sets
    ``self.policy`` (the deterministic policy that evaluations score), ``self.buffer`` (its replay buffer,
    sampling from ``rng``) and, if it normalizes observations, ``self.normalizer``.
    """

    warmup_uniform: ClassVar[bool] = True  # uniform random actions until learning_starts (DDPG, SAC; not DQN)
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


def train_off_policy(agent: str, cfg: BaseConfig, learner_class: type[OffPolicyLearner], resume: bool = False,
                     callbacks: Sequence[Callback] | None = None) -> dict[str, Any]:
    """Train ``learner_class`` on ``cfg`` (a config with :class:`rlkit.config.ReplayOptions`), recorded as
    ``agent``; returns the contents of ``final.json``."""
    envs, run, learner = open_run(agent, cfg, learner_class, resume, callbacks)
    loop = _Loop(run, envs, learner)
    if run.resume_state is not None:
        learner.load_state_dict(run.resume_state)
        run.restore_replay_buffer(learner.buffer)
        loop.global_step = run.global_step
    run.restore_rng()
    saved_buffer = learner.buffer if cfg.save_buffer else None  # committed with the state, in one directory
    state = checkpoint_state(learner, envs.single_observation_space, envs.single_action_space)

    with run.checkpoint_on_interrupt(lambda: (loop.global_step, state(), saved_buffer)):
        loop.obs = envs.reset(seed=cfg.seed + loop.global_step)
        while loop.global_step < cfg.total_steps and run.stopped is None:
            loop.iteration()
            run.step_done(loop.global_step, cfg.num_envs, learner.policy, eval_env_factory(cfg), state,
                          learner.scalars, replay_buffer=saved_buffer)
    envs.close()
    return run.finish(learner.policy, eval_env_factory(cfg), loop.global_step, state(), replay_buffer=saved_buffer)


class _Loop:
    """The loop's state between iterations. ``global_step`` advances right after the transition is stored, so
    a checkpoint taken on Ctrl-C or SIGTERM anywhere in an iteration holds a buffer that matches its step."""

    def __init__(self, run: Run, envs: Any, learner: OffPolicyLearner) -> None:
        self.run, self.envs, self.learner = run, envs, learner
        self.global_step = 0
        self.obs: np.ndarray | None = None

    def iteration(self) -> None:
        """One step of every env, the transition stored, and the training round when one is due."""
        run, learner, obs = self.run, self.learner, self.obs
        cfg, buffer, normalizer = run.cfg, learner.buffer, learner.normalizer
        if normalizer is not None:
            normalizer.update(obs)
        if learner.warmup_uniform and self.global_step < cfg.learning_starts:
            space = self.envs.single_action_space
            actions = run.rng.uniform(space.low.astype(np.float32), space.high.astype(np.float32),
                                      size=(cfg.num_envs, *space.shape)).astype(np.float32)
        else:
            actions = learner.explore(obs, self.global_step)
        step = self.envs.step(actions)
        buffer.add(obs, actions, learner.rewards_to_store(step.rewards), step.final_obs, step.terminated,
                   step.truncated)
        self.global_step += cfg.num_envs
        self.obs = step.obs
        ended = record_episodes(run.logger, step.episode_returns, step.episode_lengths)
        if cfg.learning(self.global_step, len(buffer)) and Run.due(self.global_step, cfg.train_every, cfg.num_envs):
            batches = buffer.minibatches(cfg.batch_size, cfg.gradient_steps, cfg.device)
            if normalizer is not None:
                batches = (normalizer.batch(batch) for batch in batches)
            for key, value in learner.update(batches, self.global_step).items():
                run.logger.record(key, value)
        learner.after_env_step(self.global_step, ended)
