"""The imitation loop, written once: rounds of a learner, with the run's bookkeeping after each.

A round is what the learner trains between two looks at it: an epoch over the demonstrations (BC), a DAgger
round (collect with the beta-mixture, label, aggregate, train), a round of generator and discriminator
(GAIL/AIRL) or of comparisons, reward fit and agent training (preference learning). The learner's
``round(run)`` trains one and records its own scalars in ``run.logger``; this module owns everything
around it, the same for every imitation learner:

* resume (the learner's state, then the RNG streams) before the first round;
* after each round, in this order: progress bar, evaluation every ``cfg.eval_every`` steps (a new best
  commits ``checkpoints/best/``; ``target_return`` and callbacks may stop the run), a ``metrics.csv`` row
  every ``learner.log_every`` steps (1: after every round), a checkpoint every ``learner.checkpoint_every``
  steps unless the run ends with this round (the final one follows);
* Ctrl-C or SIGTERM mid-round checkpoints the learner at the last whole round's step (unless the learner
  says it resumes otherwise: ``checkpoint_on_interrupt = False``);
* the end: ``learner.close()`` (however the loop ended), ``learner.final()``, then
  :meth:`rlkit.run.Run.finish` (final checkpoint, evaluation, ``final.json``).

Steps are the learner's unit (gradient steps for BC, env steps otherwise); a round of no steps (DAgger's
round 0 on given demonstrations) still counts as one for the cadences.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from rlkit.engine.common import Learner, resume
from rlkit.policy import Policy
from rlkit.run import Run


class RoundLearner(Learner, Protocol):
    """What the imitation loop needs of a learner, besides its policy and state (:class:`Learner`).

    Attributes:
        log_every: a metrics row every this many steps (1: after every round).
        checkpoint_every: a checkpoint every this many steps (1: after every round; 0: only the final one).
        checkpoint_on_interrupt: Ctrl-C / SIGTERM checkpoints the learner (False: the learner resumes by
            other means, e.g. preference learning with people rating, which replays its stored labels).
    """

    log_every: int
    checkpoint_every: int
    checkpoint_on_interrupt: bool

    def round(self, run: Run) -> int:
        """Train one round and record its scalars in ``run.logger``; returns the steps it took (0 or more)."""

    def finished(self, global_step: int) -> bool:
        """True when no round is left at ``global_step`` (budget, round count, early stop)."""

    def close(self) -> None:
        """Release envs, writers and servers; called once the loop ends, however it ends."""

    def final(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the final checkpoint's state, extra entries of ``final.json``), after :meth:`close`."""


def train_rounds(run: Run, learner: RoundLearner, make_eval_env: Callable[..., gym.Env]) -> dict[str, Any]:
    """Resume ``learner`` if the run resumes, train rounds until it is finished or the run stopped, and finish
    the run; returns the contents of ``final.json``. Call it once everything random has been built."""
    global_step = resume(run, learner)
    try:
        global_step = _rounds(run, learner, make_eval_env, global_step)
    finally:
        learner.close()
    state, extra = learner.final()
    return run.finish(learner.policy, make_eval_env, global_step, state, extra=extra)


def _rounds(run: Run, learner: RoundLearner, make_eval_env: Callable[..., gym.Env], global_step: int) -> int:
    done = [global_step]  # the last whole round's step: what an interrupt checkpoints
    guard = (run.checkpoint_on_interrupt(lambda: (done[0], learner.state_dict()))
             if learner.checkpoint_on_interrupt else contextlib.nullcontext())
    with guard:
        while not learner.finished(done[0]) and run.stopped is None:
            steps = learner.round(run)
            done[0] += steps
            after_round(run, learner, make_eval_env, done[0], max(steps, 1))
    return done[0]


def after_round(run: Run, learner: RoundLearner, make_eval_env: Callable[..., gym.Env], global_step: int,
                stride: int) -> None:
    """Progress, evaluation, log row and periodic checkpoint after a round that ended at ``global_step``."""
    run.logger.progress(global_step)
    log_due = Run.due(global_step, learner.log_every, stride)
    if Run.due(global_step, run.cfg.eval_every, stride):
        # the round's scalars are recorded already: the evaluation joins the round's row
        run.evaluate(learner.policy, make_eval_env, global_step, state=learner.state_dict, write_row=not log_due)
    if log_due:
        run.logger.dump(global_step)
    if Run.due(global_step, learner.checkpoint_every, stride) and run.stopped is None \
            and not learner.finished(global_step):  # the run's final checkpoint comes next otherwise
        run.checkpoint(global_step, learner.state_dict())


# The env-stepping collectors of the imitation learners (DAgger's labelled mixture, preference learning's
# reward check): the loops over env steps live in the engine, the learners say what to collect.
def mixture_episode(env: gym.Env, expert: Policy, learner: Policy, beta: float, seed: int, rng: np.random.Generator,
                    ) -> tuple[np.ndarray, np.ndarray, bool, bool, float]:
    """One episode of the mixture that acts as ``expert`` with probability ``beta`` per step and as ``learner``
    otherwise, the expert labelling every state (DAgger's data collection); returns (obs T+1, expert labels T,
    terminated, truncated, undiscounted return)."""
    obs, _ = env.reset(seed=seed)
    visited, labels, total = [np.asarray(obs)], [], 0.0
    dtype = env.action_space.dtype
    while True:
        label = np.asarray(expert.act(visited[-1][None])[0], dtype=dtype)
        # TRY NOT TO MODIFY: the expert labels every state, whoever acts in it.
        action = label if rng.random() < beta else np.asarray(learner.act(visited[-1][None])[0], dtype=dtype)
        obs, reward, terminated, truncated, _ = env.step(action)
        visited.append(np.asarray(obs))
        labels.append(label)
        total += float(reward)
        if terminated or truncated:
            return np.stack(visited), np.stack(labels), bool(terminated), bool(truncated), total


def sample_transitions(env: gym.Env, policies: list[Policy], steps: int, seed: int
                       ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """``steps`` transitions split evenly over ``policies`` (each acting stochastically from its own reset):
    per policy the arrays (obs, actions, next_obs, terminated, true rewards)."""
    samples = []
    for k, policy in enumerate(policies):
        obs, _ = env.reset(seed=seed + 1000 * k)
        rows: list[tuple] = []
        for _ in range(steps // len(policies)):
            action = policy.act(np.asarray(obs)[None], deterministic=False)[0]
            next_obs, reward, terminated, truncated, _ = env.step(action)
            rows.append((obs, action, next_obs, terminated, float(reward)))
            obs = env.reset()[0] if terminated or truncated else next_obs
        samples.append(tuple(np.stack(col) for col in zip(*rows)))
    return samples
