"""A2C: synchronous advantage actor-critic on a vector env (n-step returns or GAE, entropy bonus).

Papers:
    A3C/A2C  Mnih et al. 2016, "Asynchronous Methods for Deep RL", https://arxiv.org/abs/1602.01783
             (A2C is its synchronous, batched variant, as in OpenAI Baselines 2017 and SB3)
    GAE      Schulman et al. 2016, https://arxiv.org/abs/1506.02438

Each iteration, ``num_envs`` envs step in lockstep for ``n_steps`` steps; the rollout's bootstrapped
n-step returns R (or GAE(lambda) advantages) drive one gradient step on

    loss = -mean(A * log pi(a|s)) + vf_coef * mean((R - V(s))^2) - ent_coef * mean(H[pi(.|s)]),   A = R - V(s)

of a shared-trunk actor-critic (:class:`rlkit.nets.ActorCritic`, categorical or Gaussian head), with
RMSProp (the paper's) or Adam. ``agents/a3c.py`` runs the same functions in asynchronous workers.

Deviations from the paper, and why:
    * The value loss is a mean squared error weighted by ``vf_coef`` 0.5 (Baselines/SB3); the paper's
      gradient of (R - V)^2 differs by a constant factor that vf_coef absorbs.
    * Truncated episodes (time limits) bootstrap from V(the real final observation, ``VecStep.final_obs``);
      only ``terminated`` stops the bootstrap. The paper's Atari episodes had no time limits.
    * RMSProp is torch's (eps added after the square root; alpha 0.99, eps 1e-5 as in Baselines).
    * A rollout is always ``n_steps`` long and runs across episode ends (the returns are cut there);
      the paper's workers end a rollout at a terminal state.
    * Gaussian actions are clipped to the Box bounds before the env sees them; the log-probability
      uses the unclipped sample (as SB3 does).
    * Rollouts act through numpy views of the same weights (:func:`rlkit.fast.numpy_forward.numpy_actor_critic`) when
      the network is a plain MLP on flat observations on the CPU; images, Discrete observations and GPU models
      act through torch.

The loop (rollouts, logging, evaluation, checkpoints, resume) is :mod:`rlkit.engine.on_policy`'s.

Run it: ``rlkit train a2c --env CartPole-v1 --preset cartpole`` or ``python -m rlkit.agents.a2c --help``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from rlkit.actor_critic import (
    ActorCriticOptions,
    actor_critic_gradients,
    build_model,
    make_actor,
    make_policy,
    policy_from_state,
    rollout_tensors,
)
from rlkit.callbacks import Callback
from rlkit.config import MAX_ENVS, BaseConfig, config_from_dict, opt
from rlkit.engine.common import progress
from rlkit.engine.on_policy import OnPolicyLearner, train_on_policy
from rlkit.fast.fused_ac_conv import fused_actor_critic
from rlkit.optim import OptimizerOptions, set_lr
from rlkit.policy import TorchPolicy
from rlkit.registry import AgentSpec, train_from_command_line
from rlkit.rollouts import Rollout


@dataclass
class A2CConfig(ActorCriticOptions, OptimizerOptions, BaseConfig):
    """A2C hyper-parameters: the shared actor-critic and optimizer options plus the vector env's."""

    num_envs: int = opt(8, "parallel envs stepping in lockstep", low=1, high=MAX_ENVS)
    n_steps: int = opt(5, "steps per env between updates (t_max in the A3C paper)", low=1)

    def validate(self) -> None:
        self.validate_optimizer()


class A2C(OnPolicyLearner):
    """A2C for :func:`rlkit.engine.on_policy.train_on_policy`: one gradient step on each rollout."""

    def __init__(self, cfg: A2CConfig, obs_space: gym.Space, act_space: gym.Space, rng: np.random.Generator) -> None:
        self.cfg = cfg
        self.model = build_model(obs_space, act_space, cfg.hidden, cfg.activation, cfg.shared_trunk).to(cfg.device)
        self.parameters = list(self.model.parameters())
        self.optimizer = cfg.build_optimizer(self.parameters)
        # the update and acting by hand for MinAtar's network on the CPU (rlkit.fast.fused_ac_conv); else None
        self.fused = fused_actor_critic(self.model, self.optimizer, cfg.vf_coef, cfg.ent_coef, cfg.max_grad_norm)
        self.actor = make_actor(self.model, rng) if self.fused is None else self.fused.act
        self.policy = make_policy(self.model, obs_space, act_space)

    def update(self, rollout: Rollout, global_step: int) -> dict[str, Any]:
        # ALGO LOGIC: one gradient step on the rollout; the learning rate anneals on the steps before it.
        lr = self.cfg.lr_at(progress(global_step - rollout.rewards.size, self.cfg.total_steps))
        set_lr(self.optimizer, lr)
        if self.fused is not None:
            terms = self.fused.update(*rollout_tensors(rollout, self.cfg.gamma, self.cfg.gae_lambda))
        else:
            terms = actor_critic_gradients(self.model, self.parameters, rollout, self.cfg)
            self.optimizer.step()
        return {**terms, "charts/learning_rate": lr}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


def train(cfg: A2CConfig, resume: bool = False, callbacks: Sequence[Callback] | None = None) -> dict[str, Any]:
    """Train A2C as configured; returns the contents of ``final.json``."""
    return train_on_policy("a2c", cfg, A2C, resume, callbacks)


def load_policy(state: dict[str, Any]) -> TorchPolicy:
    return policy_from_state(state, config_from_dict(A2CConfig, state["config"]))


AGENT = AgentSpec("a2c", A2CConfig, train, load_policy,
                  summary="synchronous advantage actor-critic (n-step returns or GAE; discrete and Gaussian actions)")

if __name__ == "__main__":
    train_from_command_line("a2c")
