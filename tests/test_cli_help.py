"""`rlkit train`/`eval` help, the automatic per-env preset, and every agent's default env."""

import json

import pytest

from rlkit.apps.cli import build_parser, resolve_train_config
from rlkit.config import BaseConfig, apply_overrides, config_from_dict, preset_for_env
from rlkit.registry import agent_names, get_agent
from tests.conftest import run_cli

TRAIN_FLAGS = ("--env", "--preset", "--steps", "--seed", "--run-dir", "--set", "--resume", "--json")


def test_train_agent_help_shows_cli_flags_and_config_fields():
    proc = run_cli("train", "dqn", "--help")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("usage: rlkit train dqn")
    for flag in TRAIN_FLAGS:
        assert f"  {flag}" in out, flag  # listed as an option line, not only inside the usage
    # and the config fields with their defaults, then the presets
    assert "  target_update_every" in out and "  double" in out and "  cartpole" in out
    assert out.index("--resume") < out.index("options (--set KEY=VALUE") < out.index("presets (--preset NAME)")


def test_eval_help_has_a_description_and_defaults():
    proc = run_cli("eval", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "Evaluate the policy of a run directory" in proc.stdout
    assert "(default: 10)" in proc.stdout and "(default: 10000)" in proc.stdout


def test_bare_train_exits_2_with_usage():
    proc = run_cli("train")
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: rlkit train")
    assert "rlkit: error: train: name an agent, one of: " in proc.stderr and "dqn" in proc.stderr
    assert "Traceback" not in proc.stderr


def _train_args(*argv: str):
    return build_parser().parse_args(["train", *argv])


def test_preset_for_env_picks_the_first_preset_made_for_the_env():
    presets = {"a": {"env_id": "X-v0"}, "b": {"env_id": "Y-v0"}, "c": {"env_id": "Y-v0"}}
    assert preset_for_env(presets, "Y-v0") == "b"
    assert preset_for_env(presets, "Z-v0") is None
    assert preset_for_env(presets, None) is None


def test_preset_applied_for_the_env_unless_none(capsys):
    from rlkit import run

    _, cfg, _ = resolve_train_config(_train_args("dqn", "--env", "CartPole-v1"))
    # the notice waits until the run starts writing (an error before that stays one line)
    assert run._START_NOTES == ["rlkit: using preset cartpole, tuned for CartPole-v1; --preset none for the plain "
                                "defaults"]
    run._START_NOTES.clear()
    tuned = get_agent("dqn").presets()["cartpole"]
    assert cfg.preset == "cartpole" and cfg.lr == tuned["lr"] and cfg.double is True
    # flags still win over the preset
    _, cfg, _ = resolve_train_config(_train_args("dqn", "--env", "CartPole-v1", "--steps", "123"))
    assert cfg.total_steps == 123 and cfg.lr == tuned["lr"]
    capsys.readouterr()

    _, plain, _ = resolve_train_config(_train_args("dqn", "--env", "CartPole-v1", "--preset", "none"))
    assert capsys.readouterr().err == ""
    assert plain.preset is None and plain.lr == get_agent("dqn").config_cls().lr != tuned["lr"]

    _, other, _ = resolve_train_config(_train_args("a2c", "--env", "MountainCar-v0"))  # no preset for it
    assert capsys.readouterr().err == "" and other.preset is None

    _, named, _ = resolve_train_config(_train_args("dqn", "--env", "CartPole-v1", "--preset", "acrobot"))
    assert capsys.readouterr().err == "" and named.preset == "acrobot"


def test_preset_is_recorded_in_config_json_and_old_configs_still_load(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli("train", "dqn", "--env", "CartPole-v1", "--steps", "50", "--run-dir", str(run_dir),
                   "--set", "eval_episodes=1", "--set", "hidden=[8]", "--no-progress", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "using preset cartpole" in proc.stderr
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["preset"] == "cartpole" and saved["hidden"] == [8]
    # a config.json written before the field existed loads, as "no preset"
    old = {k: v for k, v in saved.items() if k != "preset"}
    cfg_cls = get_agent("dqn").config_cls
    assert config_from_dict(cfg_cls, old).preset is None
    ev = run_cli("eval", str(run_dir), "--episodes", "1", "--json")
    assert ev.returncode == 0, ev.stderr


def _default_config(name: str) -> BaseConfig:
    spec = get_agent(name)
    return apply_overrides(spec.config_cls(), spec.defaults, source="agent defaults")


def _check_default_env(name: str, cfg: BaseConfig, tmp_path) -> None:
    """Run the agent's own space check on its default env; agents without one run a tiny training."""
    from rlkit.envs import make_env

    env = make_env(cfg.env_id)
    try:
        if name == "dqn":
            from rlkit.agents.dqn import check_action_space

            check_action_space(env.action_space, cfg.env_id)
            return
        if name in ("ddpg", "td3"):
            from rlkit.nets import check_continuous_spaces as check_spaces

            check_spaces(env.observation_space, env.action_space, cfg.env_id, name)
            return
    finally:
        env.close()
    small = {"total_steps": 64, "eval_episodes": 1, "run_dir": str(tmp_path / name), "progress": False,
             "tensorboard": False, "checkpoint_every": 0}
    result = get_agent(name).train(apply_overrides(cfg, small))
    assert result["env_id"] == cfg.env_id


CHEAP = {"dqn", "ddpg", "td3"}  # own space checks; the others run a tiny training


@pytest.mark.parametrize("name", [pytest.param(n, marks=[] if n in CHEAP else [pytest.mark.slow])
                                  for n in agent_names()])
def test_every_agents_default_env_is_one_it_can_train_on(name, tmp_path):
    cfg = _default_config(name)
    if cfg.env_id is None:  # imitation learners: the env comes from the --demos dataset
        env_help = get_agent(name).config_cls.__dataclass_fields__["env_id"].metadata["help"]
        assert "dataset" in env_help or "demonstrations" in env_help, env_help
        return
    _check_default_env(name, cfg, tmp_path)


def test_ddpg_default_env_was_the_broken_one():
    """`rlkit train ddpg` defaulted to CartPole-v1 (discrete) and always failed; now Pendulum-v1."""
    assert _default_config("ddpg").env_id == "Pendulum-v1" == _default_config("td3").env_id
