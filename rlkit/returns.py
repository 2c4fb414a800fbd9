"""Returns and advantages of a rollout: n-step returns and GAE(lambda), bootstrapping on truncation."""

from __future__ import annotations

import numpy as np


# ALGO LOGIC: the math, as pure functions (unit-tested against a loop reference and hand values).
def n_step_returns(rewards: np.ndarray, next_values: np.ndarray, terminated: np.ndarray, truncated: np.ndarray,
                   gamma: float) -> np.ndarray:
    """Bootstrapped n-step returns of a (T, N) rollout, computed backwards.

    ``R_t = r_t + gamma * R_{t+1}`` inside an episode; the sum stops at an episode end and at the end
    of the rollout, where it bootstraps from ``next_values``.

    Args:
        rewards: (T, N) rewards.
        next_values: (T, N) V of the observation that followed step t: V(s_{t+1}) inside an episode,
            V(final_obs) where the episode was truncated; ignored where it terminated.
        terminated: (T, N) the step ended the episode in a terminal state (no bootstrap).
        truncated: (T, N) the step hit a time limit (bootstrap from ``next_values``).
        gamma: discount in [0, 1].
    """
    returns = np.zeros_like(rewards, dtype=np.float32)
    following = next_values[-1]  # what step T-1 bootstraps from
    for t in reversed(range(len(rewards))):
        following = np.where(truncated[t], next_values[t], following)
        following = rewards[t] + gamma * (1.0 - terminated[t]) * following
        returns[t] = following
    return returns


def gae_advantages(rewards: np.ndarray, values: np.ndarray, next_values: np.ndarray, terminated: np.ndarray,
                   truncated: np.ndarray, gamma: float, lam: float) -> np.ndarray:
    """GAE(lambda): A_t = delta_t + gamma * lambda * A_{t+1} within an episode and the rollout.

    ``delta_t = r_t + gamma * (1 - terminated_t) * next_values_t - values_t``; arguments as in
    :func:`n_step_returns`, plus ``values`` (T, N) = V(s_t). With ``lam = 1`` this equals
    ``n_step_returns(...) - values``.
    """
    deltas = rewards + gamma * (1.0 - terminated) * next_values - values
    continues = 1.0 - (terminated | truncated)
    advantages = np.zeros_like(rewards, dtype=np.float32)
    running = np.zeros(rewards.shape[1], dtype=np.float32)
    for t in reversed(range(len(rewards))):
        running = deltas[t] + gamma * lam * continues[t] * running
        advantages[t] = running
    return advantages
