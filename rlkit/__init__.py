"""rlkit: deep reinforcement learning and imitation learning on one shared core.

The core (this package) is algorithm-agnostic and imports nothing from ``agents``, ``envs`` or
``demos``; it reaches them through the ``rlkit.agents`` / ``rlkit.commands`` entry points.
"""

__version__ = "0.1.0"

from rlkit.errors import RLKitError  # noqa: E402

__all__ = ["RLKitError", "__version__"]
