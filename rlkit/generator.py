"""The SB3 PPO generator that GAIL, AIRL and the preference learner train: its options, its vector env of
rlkit envs, and its checkpoint bytes (saved and rebuilt without unpickling)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from rlkit.config import MAX_ENVS, MAX_WIDTH, opt, require_at_least_one
from rlkit.errors import RLKitError, require_imitation
from rlkit.policy import SB3ModelPolicy
from rlkit.registry import env_factory


@dataclass
class GeneratorOptions:
    """The SB3 PPO agent that GAIL/AIRL train as the generator and preference learning as the agent (mixed
    into both configs; the defaults are GAIL's, :class:`rlkit.agents.preference.PreferenceConfig`
    re-declares its own, presets hold per-task values)."""

    num_envs: int = opt(8, "parallel envs of the PPO agent", low=1, high=MAX_ENVS)
    policy_hidden: list[int] = opt([64, 64], "hidden sizes of PPO's policy and value MLPs", low=1, high=MAX_WIDTH)
    ppo_n_steps: int = opt(256, "PPO rollout length per env (one round = num_envs * ppo_n_steps steps)")
    ppo_batch_size: int = opt(64, "PPO minibatch size")
    ppo_epochs: int = opt(5, "PPO epochs per rollout")
    ppo_lr: float = opt(4e-4, "PPO learning rate", low=0)
    ppo_ent_coef: float = opt(0.0, "PPO entropy coefficient")
    ppo_clip_range: float = opt(0.2, "PPO clip range")
    ppo_vf_coef: float = opt(0.5, "PPO value-loss coefficient")
    gamma: float = opt(0.95, "discount of the PPO agent's RL problem", low=0, high=1)
    gae_lambda: float = opt(0.95, "GAE lambda of PPO")
    ppo_use_sde: bool = opt(False, "PPO explores with generalised state-dependent noise (gSDE; continuous actions, "
                                   "as the RL Zoo's Pendulum settings)")
    ppo_sde_sample_freq: int = opt(-1, "with ppo_use_sde: resample the noise matrix every N steps (-1 = per rollout)")

    def validate_generator(self) -> None:
        require_at_least_one(self, "ppo_n_steps", "ppo_batch_size", "ppo_epochs")  # num_envs: its opt(low=1)


def make_sb3_venv(env_id: str, num_envs: int, seed: int, env_kwargs: dict | None = None) -> Any:
    """SB3 DummyVecEnv of rlkit-made envs (Monitor for true returns, RolloutInfoWrapper for imitation)."""
    require_imitation("GAIL/AIRL/preference learning")
    from imitation.data.wrappers import RolloutInfoWrapper
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    make_env = env_factory()  # envs.make_env, found by entry point: the core imports no env

    def factory(i: int) -> Any:
        return lambda: RolloutInfoWrapper(Monitor(make_env(env_id, seed=seed + i, env_kwargs=env_kwargs)))

    venv = DummyVecEnv([factory(i) for i in range(num_envs)])
    venv.seed(seed)
    return venv


def make_ppo(cfg: GeneratorOptions, venv: Any) -> Any:
    """SB3 PPO on ``venv`` with the generator options (and ``cfg.seed``, ``cfg.device``)."""
    from stable_baselines3 import PPO

    return PPO("MlpPolicy", venv, n_steps=cfg.ppo_n_steps, batch_size=cfg.ppo_batch_size, n_epochs=cfg.ppo_epochs,
               learning_rate=cfg.ppo_lr, ent_coef=cfg.ppo_ent_coef, clip_range=cfg.ppo_clip_range,
               vf_coef=cfg.ppo_vf_coef, gamma=cfg.gamma, gae_lambda=cfg.gae_lambda, seed=cfg.seed,
               use_sde=cfg.ppo_use_sde, sde_sample_freq=cfg.ppo_sde_sample_freq,
               device=cfg.device, policy_kwargs={"net_arch": list(cfg.policy_hidden)}, verbose=0)


def sb3_bytes(model: Any) -> bytes:
    """An SB3 model as its .zip bytes, so the checkpoint is one self-contained state dict."""
    buffer = io.BytesIO()
    model.save(buffer)
    return buffer.getvalue()


def load_sb3_policy(state: dict[str, Any]) -> SB3ModelPolicy:
    """Rebuild the PPO generator saved by :func:`sb3_bytes` as an rlkit Policy, without unpickling.

    SB3 stores classes, spaces and schedules in its zip as cloudpickles; loading them could run code from
    the checkpoint. Every pickled entry is supplied instead (the spaces from the checkpoint's JSON, the
    policy class by the observation space; the schedules are rebuilt from the stored numbers), and an
    entry rlkit does not know is refused.
    """
    import json
    import zipfile

    import gymnasium as gym
    from stable_baselines3 import PPO

    obs_space, act_space = state.get("observation_space"), state.get("action_space")
    if not isinstance(obs_space, gym.Space) or not isinstance(act_space, gym.Space):
        raise RLKitError("this checkpoint stores no observation/action spaces; it cannot be loaded safely")
    try:
        data = json.loads(zipfile.ZipFile(io.BytesIO(state["ppo_zip"])).read("data"))
    except Exception as e:  # zipfile, json and KeyError for a damaged archive
        raise RLKitError(f"the checkpoint's PPO model is damaged ({type(e).__name__})") from None
    alias = "CnnPolicy" if len(getattr(obs_space, "shape", ()) or ()) == 3 else "MlpPolicy"
    supplied = {"policy_class": PPO.policy_aliases[alias], "observation_space": obs_space, "action_space": act_space,
                "rollout_buffer_class": None, "lr_schedule": None, "clip_range": 0.2,
                # training-loop state of a model that has learned (not needed to act)
                "_last_obs": None, "_last_original_obs": None, "_last_episode_starts": None,
                "ep_info_buffer": None, "ep_success_buffer": None}
    pickled = {k for k, v in data.items() if isinstance(v, dict) and ":serialized:" in v}
    if pickled - set(supplied):
        raise RLKitError(f"the checkpoint's PPO model holds pickled entries {sorted(pickled - set(supplied))}; "
                         "refusing to load them")
    return SB3ModelPolicy(PPO.load(io.BytesIO(state["ppo_zip"]), device="cpu",
                                   custom_objects={k: v for k, v in supplied.items() if k in pickled}))
