"""Issue 19, items 12 and 14: the untuned-defaults notice, RL-Zoo's classic-control and Box2D presets, and
``Config.from_preset`` resolving presets exactly as ``rlkit train`` does."""

from __future__ import annotations

import gymnasium as gym
import pytest
from rlkit.agents.a2c import A2CConfig
from rlkit.agents.ddpg import DDPGConfig
from rlkit.agents.dqn import DQNConfig

from rlkit import run
from rlkit.apps.cli import build_parser, main, resolve_train_config
from rlkit.config import config_from_dict, preset_for_env, resolve_preset
from rlkit.errors import RLKitError
from rlkit.registry import get_agent

PLAIN = "rlkit: no tuned preset for MountainCar-v0: plain defaults"


@pytest.fixture(autouse=True)
def _no_leftover_notes():
    run._START_NOTES.clear()
    yield
    run._START_NOTES.clear()


def _resolve(*argv: str):
    return resolve_train_config(build_parser().parse_args(["train", *argv]))


# ---------------------------------------------------------------------------- item 12: the notice
def test_an_env_without_a_preset_is_said_at_the_resolution_step():
    _, cfg, _ = _resolve("a2c", "--env", "MountainCar-v0")
    assert run._START_NOTES == [PLAIN]
    assert cfg.preset is None and cfg.lr == A2CConfig().lr
    run._START_NOTES.clear()
    _, _, _ = _resolve("a2c", "--env", "MountainCar-v0", "--preset", "none")  # asked for: nothing to say
    assert run._START_NOTES == []
    _, cfg, _ = _resolve("a2c", "--env", "MountainCar-v0", "--preset", "cartpole")  # named: nothing to say
    assert run._START_NOTES == [] and cfg.preset == "cartpole"


def test_the_cli_prints_the_plain_defaults_line_once(tmp_path, capsys):
    try:
        main(["train", "a2c", "--env", "MountainCar-v0", "--steps", "20", "--run-dir", str(tmp_path / "r"),
              "--set", "eval_episodes=1", "--set", "checkpoint_every=0", "--set", "tensorboard=false", "--no-progress"])
        code = 0
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 0, err
    assert err.splitlines().count(PLAIN) == 1 and "using preset" not in err


# ---------------------------------------------------------------------------- item 12: the presets
NEW_PRESETS = [
    ("dqn", "mountaincar", "MountainCar-v0", gym.spaces.Discrete),
    ("dqn", "lunarlander", "LunarLander-v3", gym.spaces.Discrete),
    ("ppo", "mountaincar", "MountainCar-v0", gym.spaces.Discrete),
    ("ppo", "lunarlander", "LunarLander-v3", gym.spaces.Discrete),
    ("ppo", "lunarlander-continuous", "LunarLanderContinuous-v3", gym.spaces.Box),
    ("ppo", "bipedalwalker", "BipedalWalker-v3", gym.spaces.Box),
    ("sac", "lunarlander-continuous", "LunarLanderContinuous-v3", gym.spaces.Box),
    ("td3", "mountaincar-continuous", "MountainCarContinuous-v0", gym.spaces.Box),
]


@pytest.mark.parametrize(("agent", "name", "env_id", "space"), NEW_PRESETS)
def test_each_new_preset_loads_validates_and_is_the_envs_own(agent, name, env_id, space):
    spec = get_agent(agent)
    presets = spec.presets()
    assert name in presets, f"{agent} has no preset {name}"
    values = resolve_preset(presets, name, agent)
    cfg = config_from_dict(spec.config_cls, {**spec.defaults, **values})  # checks types, ranges and validate()
    cfg.validate()
    assert cfg.env_id == env_id
    assert preset_for_env(presets, env_id) == name  # what `rlkit train AGENT --env ENV` picks
    env = gym.make(env_id)
    try:
        assert isinstance(env.action_space, space)
    finally:
        env.close()
    reference = presets[name]["_reference"]
    assert "RL-Zoo hyperparams/" in reference and "measured seed 0" in reference
    assert "PENDING" not in reference


# ---------------------------------------------------------------------------- item 14: from_preset
def test_from_preset_auto_picks_what_the_cli_picks_for_cartpole(capsys):
    _, from_cli, _ = _resolve("dqn", "--env", "CartPole-v1")
    assert run._START_NOTES[0].startswith("rlkit: using preset cartpole, tuned for CartPole-v1")
    cfg = DQNConfig.from_preset("auto", env_id="CartPole-v1")
    assert cfg.to_dict() == from_cli.to_dict() and cfg.preset == "cartpole"
    assert cfg.double is True and cfg.lr == get_agent("dqn").presets()["cartpole"]["lr"]
    assert capsys.readouterr().err == ('rlkit: using preset cartpole, tuned for CartPole-v1; from_preset("none") '
                                       'for the plain defaults\n')
    assert DQNConfig.from_preset(env_id="CartPole-v1") == cfg  # "auto" is the default


def test_from_preset_auto_without_a_preset_is_plain_defaults_and_says_so(capsys):
    _, from_cli, _ = _resolve("a2c", "--env", "MountainCar-v0")
    cfg = A2CConfig.from_preset("auto", env_id="MountainCar-v0")
    assert cfg == A2CConfig(env_id="MountainCar-v0") and cfg.to_dict() == from_cli.to_dict()
    assert capsys.readouterr().err == PLAIN + "\n"


def test_from_preset_names_overrides_and_the_shared_ddpg_config(capsys):
    cfg = DQNConfig.from_preset("acrobot", seed=3, total_steps=1234)
    assert (cfg.preset, cfg.env_id, cfg.seed, cfg.total_steps) == ("acrobot", "Acrobot-v1", 3, 1234)
    assert DQNConfig.from_preset("none", env_id="CartPole-v1") == DQNConfig()
    assert capsys.readouterr().err == ""  # a named preset or "none" is what the caller asked for: nothing to say
    assert run._START_NOTES == []  # and nothing is left to print at some later run's start
    with pytest.raises(RLKitError, match="unknown preset 'nope' for agent 'dqn'"):
        DQNConfig.from_preset("nope")
    with pytest.raises(RLKitError, match="unknown option 'lrr'"):
        DQNConfig.from_preset("none", lrr=1.0)
    # DDPGConfig serves ddpg and td3: the caller says which, and td3 gets its switches and its own preset
    with pytest.raises(RLKitError, match="pass agent='ddpg' or 'td3'"):
        DDPGConfig.from_preset(env_id="Pendulum-v1")
    td3 = DDPGConfig.from_preset(env_id="Pendulum-v1", agent="td3")
    _, from_cli, _ = _resolve("td3", "--env", "Pendulum-v1")
    assert td3.to_dict() == from_cli.to_dict() and td3.twin_critics and td3.preset == "pendulum"
    with pytest.raises(RLKitError, match="takes DQNConfig"):
        A2CConfig.from_preset(agent="dqn")
