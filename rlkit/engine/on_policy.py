"""The on-policy loop (A2C, PPO): roll out ``n_steps`` on a vector env, hand the rollout to the learner's update.

Per iteration::

    rollout = collect_rollout(envs, obs, learner.actor, n_steps)   # rlkit.rollouts: both done flags, bootstraps
    global_step += num_envs * n_steps                               # the episodes that ended are logged
    metrics = learner.update(rollout, global_step)                  # the algorithm: losses, optimizer steps
    run.step_done(...)                                              # evaluation, log row, checkpoint, callbacks

The learner is built after the :class:`rlkit.run.Run` (which seeds the RNGs), resumed from its checkpoint by
:func:`rlkit.engine.common.resume`, and its ``state_dict()`` is what every checkpoint holds. A resumed run
cannot restore the envs' internal state: it starts fresh episodes on the seed ``cfg.seed + global_step``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym

from rlkit.actor_critic import check_spaces
from rlkit.callbacks import Callback
from rlkit.config import BaseConfig
from rlkit.engine import common
from rlkit.policy import Policy
from rlkit.registry import eval_env_factory
from rlkit.rollouts import Actor, Rollout, collect_rollout


class OnPolicyLearner(common.EnvLearner):
    """What an on-policy agent declares for :func:`train_on_policy` (subclass it).

    Built after the run seeded every RNG, as ``Learner(cfg, observation_space, action_space, rng)``; it sets
    ``self.policy`` (what evaluations score) and ``self.actor`` (what acts in the rollouts:
    ``(obs, deterministic=False) -> (actions, values)``, sampling from ``rng``).
    """

    policy: Policy
    actor: Actor

    @staticmethod
    def check_spaces(observation_space: gym.Space, action_space: gym.Space, env_id: str, agent: str) -> None:
        """Refuse spaces the agent cannot handle, in one line, before a run directory is written (default: what
        :class:`rlkit.nets.ActorCritic` takes, Discrete or Box actions)."""
        check_spaces(observation_space, action_space, env_id, agent)

    def update(self, rollout: Rollout, global_step: int) -> dict[str, Any]:
        """Learn from ``rollout``; ``global_step`` counts the env steps done, this rollout's included. Returns
        the scalars of the log row (floats, or 0-d tensors: they are read only when a row is written)."""
        raise NotImplementedError


def train_on_policy(agent: str, cfg: BaseConfig, learner_class: type[OnPolicyLearner], resume: bool = False,
                    callbacks: Sequence[Callback] | None = None) -> dict[str, Any]:
    """Train ``learner_class`` on ``cfg`` (a config with ``num_envs``, ``n_steps`` and ``clip_rewards``),
    recorded as ``agent``; returns the contents of ``final.json``."""
    envs, run, learner = common.open_run(agent, cfg, learner_class, resume, callbacks)
    global_step = common.resume(run, learner)
    obs = envs.reset(seed=cfg.seed + global_step)
    make_eval_env = eval_env_factory(cfg)
    state = common.checkpoint_state(learner, envs.single_observation_space, envs.single_action_space)

    stride = cfg.num_envs * cfg.n_steps
    with run.checkpoint_on_interrupt(lambda: (global_step, state())):
        while global_step < cfg.total_steps and run.stopped is None:
            rollout, obs, episodes = collect_rollout(envs, obs, learner.actor, cfg.n_steps, cfg.clip_rewards)
            global_step += stride
            for episode_return, length in episodes:
                run.logger.record_episode(episode_return, length)
            metrics = learner.update(rollout, global_step)
            run.step_done(global_step, stride, learner.policy, make_eval_env, state,
                          lambda metrics=metrics: {key: float(value) for key, value in metrics.items()})
    envs.close()
    return run.finish(learner.policy, make_eval_env, global_step, state())
