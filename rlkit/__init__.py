"""rlkit: deep reinforcement learning and imitation learning on one shared core.

The core (this package) is algorithm-agnostic and imports nothing from ``agents``, ``envs`` or
``demos``; it reaches them through the ``rlkit.agents`` / ``rlkit.commands`` entry points.
"""

__version__ = "0.1.0"

from rlkit.errors import RLKitError  # noqa: E402

_MODELS = ("Model", "DQN", "DDPG", "TD3", "A2C", "A3C", "PPO", "SAC", "BC", "DAgger", "GAIL", "AIRL", "Preference",
           "TD3BC", "IQL", "CQL")

__all__ = ["RLKitError", "__version__", *_MODELS]


def __getattr__(name: str) -> object:
    """``from rlkit import DQN`` (:mod:`rlkit.model`), imported on first use so ``import rlkit`` stays cheap."""
    if name in _MODELS:
        from rlkit import model

        return getattr(model, name)
    raise AttributeError(f"module 'rlkit' has no attribute {name!r}")
