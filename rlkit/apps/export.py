"""``rlkit export RUN --to sb3 --out model.zip``: an rlkit checkpoint as a Stable-Baselines3 model file.

The SB3 model is built with the same architecture (``net_arch``, activation, Nature-CNN for images)
and the weights are copied layer by layer, so ``stable_baselines3.<ALGO>.load(path)`` acts as the rlkit
policy does (greedy/deterministic actions; tested on 1,000 random observations per agent).

What maps (rlkit agent -> SB3 class):
    dqn        -> DQN   (MLP or Nature-CNN body; online and target nets)
    ddpg, td3  -> DDPG when the run has one critic, TD3 with twin critics (actor, critics and their targets;
                  SB3's critics take actions scaled to [-1, 1], so the action columns of each critic's first
                  layer absorb rlkit's scale and offset: the same Q values)
    a2c, ppo   -> A2C, PPO (categorical or diagonal-Gaussian head; a shared trunk is copied into both of
                  SB3's towers, which then compute the same outputs; further SB3 training updates them apart)
    sac        -> SAC   (squashed-Gaussian actor, critics and targets, as ddpg's; the learned temperature
                  is SB3's initial one)

Refused in one line: dueling DQN (SB3's DQN has no dueling head), observation normalisation (SB3 keeps
it in a VecNormalize file beside the model, not in it), and agents with no SB3 counterpart here.
The optimizers' states are not carried over: SB3 starts fresh optimizers when training goes on.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlkit.checkpoint import load_checkpoint
from rlkit.config import config_from_dict
from rlkit.errors import RLKitError
from rlkit.registry import get_agent

SUPPORTED = ("dqn", "ddpg", "td3", "a2c", "ppo", "sac")


class _SpacesEnv(gym.Env):
    """An env that only carries the spaces: SB3 needs one to build a model, never steps it here."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        return self.observation_space.sample(), 0.0, True, False, {}


def _linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


@torch.no_grad()
def _copy_linears(source: list[nn.Linear], target: list[nn.Linear], what: str) -> None:
    if [tuple(m.weight.shape) for m in source] != [tuple(m.weight.shape) for m in target]:
        raise RLKitError(f"cannot map {what} onto SB3: layer shapes {[tuple(m.weight.shape) for m in source]} "
                         f"vs {[tuple(m.weight.shape) for m in target]}")
    for src, dst in zip(source, target):
        dst.weight.copy_(src.weight)
        dst.bias.copy_(src.bias)


@torch.no_grad()
def _copy_encoder(encoder: nn.Module, features_extractor: nn.Module) -> None:
    """rlkit's NatureCNN -> SB3's NatureCNN (same layers); flat or one-hot inputs have no weights."""
    if getattr(encoder, "cnn", None) is None:
        return
    convs = [m for m in encoder.cnn.conv if isinstance(m, nn.Conv2d)]
    sb3_convs = [m for m in features_extractor.cnn if isinstance(m, nn.Conv2d)]
    for src, dst in zip(convs, sb3_convs, strict=True):
        dst.weight.copy_(src.weight)
        dst.bias.copy_(src.bias)
    _copy_linears(_linears(encoder.cnn.linear), _linears(features_extractor.linear), "the CNN's linear layer")


def _check_images(obs_space: gym.Space) -> str:
    from rlkit.nets import is_image_space

    if not is_image_space(obs_space):
        return "MlpPolicy"
    if obs_space.shape[-1] < obs_space.shape[0]:  # SB3 would transpose channels-last input itself, in its VecEnv
        raise RLKitError("cannot export channels-last image observations to SB3; rlkit's Atari envs are channels-first")
    return "CnnPolicy"


def _refuse_normalized_observations(state: dict[str, Any], cfg: Any) -> None:
    """SB3 keeps observation statistics in a VecNormalize file beside a model, so a model alone cannot carry them."""
    if state.get("obs_normalizer") is not None or cfg.normalize_obs:
        raise RLKitError("cannot export a run with normalize_obs to SB3: SB3 keeps observation statistics in a "
                         "VecNormalize file, not in the model")


def _flat_actor_critic(state: dict[str, Any], config_cls: type, image_refusal: str) -> tuple[Any, gym.Space, gym.Space]:
    """The config and spaces of a DDPG/TD3 or SAC checkpoint that SB3's MlpPolicy can hold: no observation
    normalizer, no images (``image_refusal`` says why for this agent)."""
    cfg = config_from_dict(config_cls, state["config"])
    _refuse_normalized_observations(state, cfg)
    obs_space, act_space = state["observation_space"], state["action_space"]
    if _check_images(obs_space) != "MlpPolicy":
        raise RLKitError(image_refusal)
    return cfg, obs_space, act_space


def _dqn(state: dict[str, Any]) -> Any:
    from stable_baselines3 import DQN

    from rlkit.agents.dqn import DQNConfig, build_q_net

    cfg = config_from_dict(DQNConfig, state["config"])
    if cfg.dueling:
        raise RLKitError("cannot export a dueling DQN to SB3: SB3's DQN has no dueling head (train with dueling=false)")
    obs_space, act_space = state["observation_space"], state["action_space"]
    policy = _check_images(obs_space)
    model = DQN(policy, _SpacesEnv(obs_space, act_space), buffer_size=1, device="cpu",
                policy_kwargs={"net_arch": list(cfg.hidden), "activation_fn": nn.ReLU},
                learning_rate=cfg.lr, learning_starts=cfg.learning_starts, batch_size=cfg.batch_size, tau=cfg.tau,
                gamma=cfg.gamma, train_freq=cfg.train_every, gradient_steps=cfg.gradient_steps,
                target_update_interval=cfg.target_update_every, exploration_fraction=cfg.exploration_fraction,
                exploration_initial_eps=cfg.epsilon_start, exploration_final_eps=cfg.epsilon_end,
                max_grad_norm=cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf"))
    model.buffer_size = cfg.buffer_size  # built with 1 (no allocation here); SB3 allocates the real one on load
    for key, sb3_net in (("q_net", model.policy.q_net), ("q_target", model.policy.q_net_target)):
        net = build_q_net(cfg, obs_space, act_space)
        net.load_state_dict(state[key])
        _copy_encoder(net.encoder, sb3_net.features_extractor)
        _copy_linears(_linears(net.trunk) + _linears(net.head), _linears(sb3_net.q_net), "the Q-network")
    return model


@torch.no_grad()
def _copy_critics(critic_state: dict[str, torch.Tensor], sb3_critic: nn.Module, obs_dim: int,
                  scale: torch.Tensor, bias: torch.Tensor) -> None:
    """rlkit's stacked critic ensemble (x @ W + b per critic) -> SB3's qf0, qf1, ... (scaled actions)."""
    weights = [critic_state[f"weights.{i}"] for i in range(len(sb3_critic.q_networks[0]) // 2 + 1)]
    biases = [critic_state[f"biases.{i}"] for i in range(len(weights))]
    for c, qf in enumerate(sb3_critic.q_networks):
        layers = _linears(qf)
        if len(layers) != len(weights) or any(w.shape[1:] != layer.weight.T.shape for w, layer in zip(weights, layers)):
            raise RLKitError("cannot map the critics onto SB3: layer shapes differ")
        for i, (w, b, layer) in enumerate(zip(weights, biases, layers)):
            weight, offset = w[c].T.clone(), b[c, 0].clone()
            if i == 0:  # a_raw = scale * a_sb3 + bias: fold into the action columns
                action_cols = weight[:, obs_dim:]
                offset += action_cols @ bias
                weight[:, obs_dim:] = action_cols * scale
            layer.weight.copy_(weight)
            layer.bias.copy_(offset)


def _ddpg(state: dict[str, Any]) -> Any:
    from stable_baselines3 import DDPG, TD3

    from rlkit.agents.ddpg import DDPGConfig
    from rlkit.nets import DeterministicActor

    cfg, obs_space, act_space = _flat_actor_critic(
        state, DDPGConfig, "cannot export ddpg/td3 with image observations to SB3 (rlkit's actor and critic each "
                           "have their own CNN; SB3's share none of this layout)")
    n_critics = 2 if cfg.twin_critics else 1
    cls = TD3 if cfg.twin_critics else DDPG
    kwargs: dict[str, Any] = {"policy_delay": cfg.policy_delay, "target_policy_noise": cfg.target_noise,
                              "target_noise_clip": cfg.target_noise_clip} if cfg.twin_critics else {}
    model = cls("MlpPolicy", _SpacesEnv(obs_space, act_space), buffer_size=1, device="cpu",
                policy_kwargs={"net_arch": list(cfg.hidden), "activation_fn": nn.ReLU, "n_critics": n_critics},
                learning_rate=cfg.actor_lr, learning_starts=cfg.learning_starts, batch_size=cfg.batch_size,
                tau=cfg.tau, gamma=cfg.gamma, train_freq=cfg.train_every, gradient_steps=cfg.gradient_steps,
                **kwargs)
    model.buffer_size = cfg.buffer_size
    obs_dim = int(np.prod(obs_space.shape))
    for key, sb3_actor in (("actor", model.policy.actor), ("actor_target", model.policy.actor_target)):
        actor = DeterministicActor(obs_space, act_space, cfg.hidden)
        actor.load_state_dict(state.get(key, state["actor"]))
        # rlkit's mu = tanh(net) * scale + bias, SB3's = unscale(tanh(net)): the same map onto the bounds.
        _copy_linears(_linears(actor.net), _linears(sb3_actor.mu), "the actor")
        scale, bias = actor.action_scale, actor.action_bias
    for key, sb3_critic in (("critic", model.policy.critic), ("critic_target", model.policy.critic_target)):
        _copy_critics(state.get(key, state["critic"]), sb3_critic, obs_dim, scale, bias)
    return model


def _copy_actor_critic(net: nn.Module, sb3: nn.Module, act_space: gym.Space) -> None:
    """rlkit's ActorCritic -> SB3's ActorCriticPolicy (a shared trunk goes into both towers)."""
    _copy_encoder(net.encoder, sb3.features_extractor)
    value_trunk = net.trunk if net.value_trunk is None else net.value_trunk
    _copy_linears(_linears(net.trunk), _linears(sb3.mlp_extractor.policy_net), "the policy trunk")
    _copy_linears(_linears(value_trunk), _linears(sb3.mlp_extractor.value_net), "the value trunk")
    _copy_linears(_linears(net.policy), [sb3.action_net], "the policy head")
    _copy_linears([net.value], [sb3.value_net], "the value head")
    if isinstance(act_space, gym.spaces.Box):
        with torch.no_grad():
            sb3.log_std.copy_(net.policy.log_std)


def _actor_critic_kwargs(cfg: Any) -> dict[str, Any]:
    activation = {"tanh": nn.Tanh, "relu": nn.ReLU}[cfg.activation]
    return {"net_arch": {"pi": list(cfg.hidden), "vf": list(cfg.hidden)}, "activation_fn": activation,
            "ortho_init": False}


def _a2c(state: dict[str, Any]) -> Any:
    from stable_baselines3 import A2C

    from rlkit.actor_critic import build_model
    from rlkit.agents.a2c import A2CConfig

    cfg = config_from_dict(A2CConfig, state["config"])
    obs_space, act_space = state["observation_space"], state["action_space"]
    model = A2C(_check_images(obs_space), _SpacesEnv(obs_space, act_space), device="cpu", n_steps=cfg.n_steps,
                gamma=cfg.gamma, gae_lambda=cfg.gae_lambda, ent_coef=cfg.ent_coef, vf_coef=cfg.vf_coef,
                learning_rate=cfg.lr, max_grad_norm=cfg.max_grad_norm, use_rms_prop=cfg.optimizer == "rmsprop",
                policy_kwargs=_actor_critic_kwargs(cfg))
    net = build_model(obs_space, act_space, cfg.hidden, cfg.activation, cfg.shared_trunk)
    net.load_state_dict(state["model"])
    _copy_actor_critic(net, model.policy, act_space)
    return model


def _ppo(state: dict[str, Any]) -> Any:
    from stable_baselines3 import PPO

    from rlkit.agents.ppo import PPOConfig, build_model

    cfg = config_from_dict(PPOConfig, state["config"])
    obs_space, act_space = state["observation_space"], state["action_space"]
    _refuse_normalized_observations(state, cfg)
    if not isinstance(act_space, (gym.spaces.Discrete, gym.spaces.Box)):
        raise RLKitError(f"cannot export ppo with {type(act_space).__name__} actions to SB3 (Discrete and Box map)")
    model = PPO(_check_images(obs_space), _SpacesEnv(obs_space, act_space), device="cpu", n_steps=cfg.n_steps,
                batch_size=cfg.batch_size, n_epochs=cfg.n_epochs, gamma=cfg.gamma, gae_lambda=cfg.gae_lambda,
                clip_range=cfg.clip_range, clip_range_vf=cfg.clip_range_vf, normalize_advantage=cfg.normalize_advantage,
                ent_coef=cfg.ent_coef, vf_coef=cfg.vf_coef, max_grad_norm=cfg.max_grad_norm, target_kl=cfg.target_kl,
                learning_rate=cfg.lr, policy_kwargs=_actor_critic_kwargs(cfg))
    net = build_model(cfg, obs_space, act_space, device="cpu")
    net.load_state_dict(state["model"])
    _copy_actor_critic(net, model.policy, act_space)
    return model


def _sac(state: dict[str, Any]) -> Any:
    from stable_baselines3 import SAC

    from rlkit.agents.sac import SACConfig
    from rlkit.nets import SquashedGaussianActor

    cfg, obs_space, act_space = _flat_actor_critic(
        state, SACConfig, "cannot export sac with image observations to SB3 (rlkit's actor and critics each have "
                          "their own CNN)")
    alpha = float(torch.as_tensor(state["log_alpha"]).exp()) if "log_alpha" in state else cfg.alpha
    model = SAC("MlpPolicy", _SpacesEnv(obs_space, act_space), buffer_size=1, device="cpu",
                policy_kwargs={"net_arch": list(cfg.hidden), "activation_fn": nn.ReLU, "n_critics": cfg.n_critics},
                learning_rate=cfg.lr, learning_starts=cfg.learning_starts, batch_size=cfg.batch_size, tau=cfg.tau,
                gamma=cfg.gamma, train_freq=cfg.train_every, gradient_steps=cfg.gradient_steps,
                ent_coef=f"auto_{alpha}" if cfg.autotune else alpha,  # the learned temperature carries over
                target_entropy=cfg.target_entropy if cfg.target_entropy is not None else "auto")
    model.buffer_size = cfg.buffer_size
    actor = SquashedGaussianActor(obs_space, act_space, cfg.hidden)
    actor.load_state_dict(state["actor"])
    # rlkit: a = tanh(mean) * scale + bias; SB3: unscale(tanh(mu)), the same map onto the bounds.
    _copy_linears(_linears(actor.trunk), _linears(model.policy.actor.latent_pi), "the actor trunk")
    _copy_linears([actor.mean, actor.log_std], [model.policy.actor.mu, model.policy.actor.log_std], "the actor heads")
    obs_dim = int(np.prod(obs_space.shape))
    for key, sb3_critic in (("critic", model.policy.critic), ("critic_target", model.policy.critic_target)):
        _copy_critics(state[key], sb3_critic, obs_dim, actor.action_scale, actor.action_bias)
    return model


def to_sb3(state: dict[str, Any]) -> Any:
    """The SB3 model of a loaded rlkit checkpoint state; one-line RLKitError for what cannot map."""
    agent = state.get("agent")
    builders = {"dqn": _dqn, "ddpg": _ddpg, "td3": _ddpg, "a2c": _a2c, "ppo": _ppo, "sac": _sac}
    if agent not in builders:
        raise RLKitError(f"cannot export {agent!r} to SB3: rlkit export maps {', '.join(SUPPORTED)} "
                         f"({agent} has no SB3 mapping here)")
    get_agent(agent)  # its module imports cleanly
    return builders[agent](state)


def sb3_algo(model: Any) -> str:
    return type(model).__name__


def export_sb3(path: str | Path, out: str | Path) -> dict[str, Any]:
    """Write the SB3 model of the run directory or checkpoint ``path`` to ``out``; returns a summary."""
    state = load_checkpoint(path)
    model = to_sb3(state)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    saved = out if out.suffix == ".zip" else out.with_name(out.name + ".zip")  # SB3 appends .zip
    return {"agent": state["agent"], "sb3_algo": sb3_algo(model), "checkpoint_step": state["global_step"],
            "out": str(saved), "source": f"sb3:{sb3_algo(model)}:{saved}"}


def cmd_export(args: argparse.Namespace) -> int:
    if args.to != "sb3":
        raise RLKitError(f"unknown export format {args.to!r}; rlkit export writes --to sb3")
    result = export_sb3(args.run, args.out)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['agent']} -> {result['out']} (load with stable_baselines3.{result['sb3_algo']}.load; "
              f"as a policy source: {result['source']})")
    return 0


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("export", help="export a run's policy to another library's model format",
                              description="Write the latest checkpoint of RUN (or a checkpoint file) as a "
                                          "Stable-Baselines3 model: dqn, ddpg, td3, a2c, ppo, sac.")
    p.add_argument("run", metavar="RUN_DIR|CHECKPOINT")
    p.add_argument("--to", default="sb3", help="target format (sb3)")
    p.add_argument("--out", required=True, help="the model file to write (model.zip)")
    p.add_argument("--json", action="store_true",
                   help='print {"agent", "sb3_algo", "checkpoint_step", "out", "source"} as JSON')
    p.set_defaults(func=cmd_export)
