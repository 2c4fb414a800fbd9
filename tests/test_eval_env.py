"""`rlkit eval` scores the env a run was evaluated on (final.json's eval_env_id), not the generator's env."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rlkit.agents.adversarial import AdversarialConfig, train_gail

from rlkit import demos
from rlkit.apps.cli import eval_env_id, main


class CartPoleRule:
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return (3.0 * obs[:, 2] + obs[:, 3] > 0).astype(np.int64)


def test_eval_of_a_gail_run_uses_the_demonstrations_env(tmp_path, capsys):
    data = tmp_path / "demos"
    demos.record(CartPoleRule(), "CartPole-v1", episodes=1, out=data, seed=0)  # 500 steps
    cfg = AdversarialConfig(demos=str(data), env_id="seals:seals/CartPole-v0", run_dir=str(tmp_path / "gail"),
                            total_steps=512, num_envs=4, ppo_n_steps=128, demo_batch_size=128, eval_episodes=1,
                            progress=False, tensorboard=False)
    result = train_gail(cfg)
    assert result["eval_env_id"] == "CartPole-v1" and result["train_env_id"] == "seals:seals/CartPole-v0"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", result["run_dir"], "--episodes", "1", "--json"])
    assert exit_info.value.code == 0
    assert json.loads(capsys.readouterr().out)["env_id"] == "CartPole-v1"


def test_eval_env_falls_back_to_final_json_then_config(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    old_state = {"config": {"env_id": "seals:seals/CartPole-v0", "eval_env_id": None}}  # a checkpoint from before
    assert eval_env_id(old_state, run) == "seals:seals/CartPole-v0"
    (run / "final.json").write_text(json.dumps({"eval_env_id": "CartPole-v1"}))
    assert eval_env_id(old_state, run) == "CartPole-v1"
    assert eval_env_id(old_state, run / "checkpoints" / "step_512.pt") == "CartPole-v1"
    for checkpoint in ("step_0000000512", "best"):  # a checkpoint directory, as load_checkpoint records it
        assert eval_env_id({**old_state, "checkpoint_dir": str(run / "checkpoints" / checkpoint)}, "x") == "CartPole-v1"
        assert eval_env_id(old_state, run / "checkpoints" / checkpoint / "state.pt") == "CartPole-v1"
    assert eval_env_id({**old_state, "eval_env_id": "Acrobot-v1"}, run) == "Acrobot-v1"
    assert eval_env_id({"config": {"env_id": "Pendulum-v1"}}, tmp_path / "elsewhere") == "Pendulum-v1"
