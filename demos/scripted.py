"""Scripted experts for tests, benchmarks and examples (``--policy python:rlkit.demos.scripted:cartpole``).

Each is a batched policy function ``f(obs_batch) -> actions_batch`` (the ``python:`` source form).
"""

from __future__ import annotations

import numpy as np


def cartpole(obs: np.ndarray) -> np.ndarray:
    """A linear state-feedback controller that balances CartPole-v1 for all 500 steps.

    Push right when the weighted sum of pole angle, angular velocity, cart position and velocity is
    positive (gains found by hand; 500/500 on seeds 0-9).
    """
    obs = np.asarray(obs, dtype=np.float64)
    return (obs @ np.array([0.1, 0.3, 3.0, 1.0]) > 0).astype(np.int64)


def pendulum(obs: np.ndarray) -> np.ndarray:
    """Energy-pumping swing-up plus a PD balance near the top for Pendulum-v1 (obs: cos, sin, theta_dot)."""
    obs = np.asarray(obs, dtype=np.float64)
    cos, sin, theta_dot = obs[:, 0], obs[:, 1], obs[:, 2]
    theta = np.arctan2(sin, cos)
    balance = -10.0 * theta - 2.0 * theta_dot
    energy = 0.5 * theta_dot**2 + 15.0 * (cos - 1.0)  # conserved by theta_ddot = 15 sin(theta); 0 upright
    swing = 2.0 * np.sign(theta_dot * -energy + 1e-9)  # push along the motion while energy is short
    torque = np.where(cos > 0.85, balance, swing)
    return np.clip(torque, -2.0, 2.0)[:, None].astype(np.float32)


def cartpole_mt(obs: np.ndarray) -> np.ndarray:
    """:func:`cartpole` on a CartPole-MT suite's observations (the 4 CartPole values, before the task one-hot): one
    scripted expert for every task, to record one dataset per task."""
    return cartpole(np.asarray(obs)[:, :4])
