"""A3C: asynchronous advantage actor-critic, with truly parallel Hogwild workers (Mnih et al. 2016).

Paper: Mnih et al. 2016, "Asynchronous Methods for Deep RL", https://arxiv.org/abs/1602.01783
(Algorithm S3 of its supplement is A3C's pseudo-code).

What is A3C's own here: its config (the workers', besides A2C's options) and its learner, A2C's model,
actor, policy and gradients (rlkit/actor_critic.py). The Hogwild machinery, written once, is
:mod:`rlkit.engine.asynchronous`: ``num_workers`` processes (0 = one per core), each with its own env
seeded ``seed + rank``, loop: reserve ``t_max`` steps of the global budget, theta' <- theta, roll out
(rlkit.rollouts.collect_rollout), A2C's loss and gradients, shared.grad = own grad, a lock-free step of
the shared optimizer, whose statistics (RMSProp's squared-gradient average, or Adam's moments) live in
shared memory: the paper's "shared RMSProp". The main process evaluates a snapshot of the weights, logs,
checkpoints and stops the workers (step budget, ``target_return``, Ctrl-C, SIGTERM, a worker's exception,
raised as :class:`rlkit.engine.asynchronous.WorkerError` with its traceback). Workers start with 'fork'
by default (``start_method=spawn`` is the portable option; the engine's docstring says why).

Deviations from the paper, and why:
    * Feed-forward only (no LSTM variant); the CNN is the Nature-DQN torso (3 conv layers + 512),
      larger than the paper's A3C FF network (2 conv layers + 256), because rlkit shares one CNN.
    * The paper samples the learning rate from LogUniform(1e-4, 1e-2) per run; presets fix it.
    * torch's RMSprop adds eps after the square root (the paper inside); n-step returns as in the
      paper by default, GAE with ``gae_lambda < 1``; truncated episodes bootstrap (see agents/a2c.py).
    * Evaluation runs in the main process on a snapshot of the weights, concurrently with the workers.
    * Lock-free updates of the shared ``step`` counter can lose an increment now and then; it only
      enters Adam's bias correction.

Run it: ``rlkit train a3c --env CartPole-v1 --preset cartpole --set num_workers=2``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch.multiprocessing as mp

from rlkit import actor_critic
from rlkit.actor_critic import ActorCriticOptions, policy_from_state
from rlkit.callbacks import Callback
from rlkit.config import BaseConfig, config_from_dict, opt
from rlkit.engine.asynchronous import AsynchronousLearner, train_asynchronous
from rlkit.errors import RLKitError
from rlkit.nets import ActorCritic
from rlkit.optim import OptimizerOptions
from rlkit.policy import TorchPolicy
from rlkit.registry import AgentSpec, train_from_command_line


@dataclass
class A3CConfig(ActorCriticOptions, OptimizerOptions, BaseConfig):
    """A3C hyper-parameters: the actor-critic and optimizer options A2C has too, plus the workers'."""

    num_workers: int = opt(0, "worker processes, one env each (0 = one per available CPU core)", low=0,
                           high=256)  # processes: beyond a few hundred the machine only thrashes
    start_method: Literal["fork", "spawn"] = opt("fork", "how workers start: fork (fast, POSIX) or spawn (portable)")
    t_max: int = opt(5, "steps each worker rolls out between its updates", low=1)

    def validate(self) -> None:
        self.validate_optimizer()
        if self.device != "cpu":
            raise RLKitError(f"a3c's workers share the model in CPU memory; drop device={self.device}")
        if self.torch_threads != 1:
            raise RLKitError("a3c runs every process on one torch thread (the cores belong to the workers); "
                             f"drop torch_threads={self.torch_threads} or raise num_workers")
        if self.start_method not in mp.get_all_start_methods():
            raise RLKitError(f"start_method {self.start_method!r} is not available on this platform; "
                             "use --set start_method=spawn")


class A3C(AsynchronousLearner):
    """A3C for :func:`rlkit.engine.asynchronous.train_asynchronous`: A2C's network, rollout actor, evaluation
    policy and gradients, which every worker applies to the shared model (what checkpoints keep: ``model``
    and ``optimizer``, the keys A2C's checkpoints have)."""

    @staticmethod
    def build_model(cfg: A3CConfig, observation_space: Any, action_space: Any) -> ActorCritic:
        return actor_critic.build_model(observation_space, action_space, cfg.hidden, cfg.activation, cfg.shared_trunk)

    make_actor = staticmethod(actor_critic.make_actor)  # numpy views of a worker's own weights, its own RNG
    make_policy = staticmethod(actor_critic.make_policy)
    gradients = staticmethod(actor_critic.actor_critic_gradients)  # A2C's loss, backward, clipped to max_grad_norm


def train(cfg: A3CConfig, resume: bool = False, callbacks: Sequence[Callback] | None = None) -> dict[str, Any]:
    """Train A3C as configured; returns the contents of ``final.json``."""
    return train_asynchronous("a3c", cfg, A3C, resume, callbacks)


def load_policy(state: dict[str, Any]) -> TorchPolicy:
    return policy_from_state(state, config_from_dict(A3CConfig, state["config"]))


AGENT = AgentSpec("a3c", A3CConfig, train, load_policy,
                  summary="asynchronous advantage actor-critic: Hogwild worker processes with shared optimizer "
                          "statistics")

if __name__ == "__main__":
    train_from_command_line("a3c")
