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
      the network is a plain MLP on flat observations; images and Discrete observations act through torch.

Run it: ``rlkit train a2c --env CartPole-v1 --preset cartpole`` or ``python -m rlkit.agents.a2c --help``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rlkit.envs import make_vec_env
from torch import nn

from rlkit.actor_critic import (
    ActorCriticOptions,
    build_learner,
    check_spaces,
    make_actor,
    make_policy,
    policy_from_state,
    rollout_loss,
)
from rlkit.callbacks import Callback
from rlkit.config import MAX_ENVS, BaseConfig, config_from_dict, opt, require_at_least_one
from rlkit.optim import OptimizerOptions, set_lr
from rlkit.policy import TorchPolicy
from rlkit.registry import AgentSpec, eval_env_factory, train_from_command_line
from rlkit.rollouts import collect_rollout
from rlkit.run import Run


@dataclass
class A2CConfig(ActorCriticOptions, OptimizerOptions, BaseConfig):
    """A2C hyper-parameters: the shared actor-critic and optimizer options plus the vector env's."""

    num_envs: int = opt(8, "parallel envs stepping in lockstep", low=1, high=MAX_ENVS)
    n_steps: int = opt(5, "steps per env between updates (t_max in the A3C paper)")

    def validate(self) -> None:
        self.validate_actor_critic()
        self.validate_optimizer()
        require_at_least_one(self, "num_envs", "n_steps")


def train(cfg: A2CConfig, resume: bool = False, callbacks: Sequence[Callback] | None = None) -> dict[str, Any]:
    """Train A2C as configured; returns the contents of ``final.json``."""
    cfg.validate()
    envs = make_vec_env(cfg.env_id, cfg.num_envs, seed=cfg.seed, env_kwargs=cfg.env_kwargs)
    obs_space, act_space = envs.single_observation_space, envs.single_action_space
    check_spaces(obs_space, act_space, "a2c")
    run = Run("a2c", cfg, resume=resume, callbacks=callbacks)  # seeds the global RNGs, sets thread counts
    model, optimizer, global_step = build_learner(cfg, obs_space, act_space, run.resume_state)
    run.restore_rng()
    actor = make_actor(model, run.rng)
    policy = make_policy(model, obs_space, act_space)
    # A resumed run cannot restore the envs' internal state; it starts fresh episodes on a new seed.
    obs = envs.reset(seed=cfg.seed + global_step)

    def state_dict() -> dict[str, Any]:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "observation_space": obs_space, "action_space": act_space}

    stride = cfg.num_envs * cfg.n_steps
    with run.checkpoint_on_interrupt(lambda: (global_step, state_dict())):
        while global_step < cfg.total_steps and run.stopped is None:
            rollout, obs, episodes = collect_rollout(envs, obs, actor, cfg.n_steps, cfg.clip_rewards)
            global_step += stride
            for episode_return, length in episodes:
                run.logger.record_episode(episode_return, length)

            # ALGO LOGIC: one gradient step on the rollout.
            loss, terms = rollout_loss(model, rollout, cfg.gamma, cfg.gae_lambda, cfg.vf_coef, cfg.ent_coef)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            lr = cfg.lr_at((global_step - stride) / cfg.total_steps)
            set_lr(optimizer, lr)
            optimizer.step()

            run.step_done(global_step, stride, policy, eval_env_factory(cfg), state_dict,
                          lambda terms=terms, lr=lr: {**{k: v.item() for k, v in terms.items()},
                                                      "charts/learning_rate": lr})

    envs.close()
    return run.finish(policy, eval_env_factory(cfg), global_step, state_dict())


def load_policy(state: dict[str, Any]) -> TorchPolicy:
    return policy_from_state(state, config_from_dict(A2CConfig, state["config"]))


AGENT = AgentSpec("a2c", A2CConfig, train, load_policy,
                  summary="synchronous advantage actor-critic (n-step returns or GAE; discrete and Gaussian actions)")

if __name__ == "__main__":
    train_from_command_line("a2c")
