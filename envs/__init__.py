"""Gymnasium glue: seeded env factories, an explicit same-step-autoreset vector env, test envs."""

from rlkit.envs.factory import is_atari, make_env, make_vec_env
from rlkit.envs.multitask import register_suites
from rlkit.envs.test_envs import register_test_envs
from rlkit.envs.vector import VecEnv, VecStep

register_test_envs()
register_suites()

__all__ = ["VecEnv", "VecStep", "is_atari", "make_env", "make_vec_env", "register_test_envs"]
