"""Layer 5: the CLI driven as a user would, in a subprocess."""

import gc
import json
import warnings

import pytest

from tests.conftest import run_cli


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("rlkit: error:")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("args, fragments", [
    (["train", "dqn", "--env", "CartPol-v1", "--steps", "10"], ["unknown env id 'CartPol-v1'", "CartPole"]),
    (["train", "dqn", "--env", "Pendulum-v1", "--steps", "10"], ["discrete action space", "ddpg"]),
    (["train", "dqn", "--set", "lr"], ["malformed --set 'lr'", "key=value"]),
    (["train", "dqn", "--set", "learning_rate=0.1"], ["unknown option 'learning_rate'"]),
    (["train", "dqn", "--set", "batch_size=big"], ["batch_size", "integer"]),
    (["train", "dqn", "--preset", "nope"], ["unknown preset 'nope'", "cartpole"]),
    (["train", "nosuchagent"], ["unknown agent 'nosuchagent'", "dqn"]),
    (["eval", "/no/such/run"], ["/no/such/run does not exist"]),
    (["train", "dqn", "--resume", "/no/such/run"], ["cannot resume"]),
    (["train", "dqn", "--bogus-flag"], ["unrecognized arguments: --bogus-flag"]),
])
def test_bad_input_gives_one_line_error(args, fragments):
    assert_one_line_error(run_cli(*args), *fragments)


def test_help_everywhere():
    for args in (["--help"], ["train", "--help"], ["eval", "--help"], ["train", "dqn", "--help"]):
        proc = run_cli(*args)
        assert proc.returncode == 0, proc.stderr
        assert "usage" in proc.stdout.lower() or "options" in proc.stdout
    agent_help = run_cli("train", "dqn", "--help").stdout
    assert "double" in agent_help and "cartpole" in agent_help and "pong" in agent_help


def test_train_eval_resume_json_roundtrip(tmp_path):
    run_dir = tmp_path / "run"
    base = ["train", "dqn", "--env", "CartPole-v1", "--preset", "none", "--seed", "1", "--run-dir", str(run_dir),
            "--no-progress", "--set", "learning_starts=50", "--set", "hidden=[8]", "--set", "eval_episodes=2", "--json"]
    proc = run_cli(*base, "--steps", "150")
    assert proc.returncode == 0, proc.stderr
    final = json.loads(proc.stdout)
    assert final["env_steps"] == 150 and final["agent"] == "dqn" and final["seed"] == 1
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["hidden"] == [8] and saved["total_steps"] == 150

    again = run_cli(*base, "--steps", "150")
    assert_one_line_error(again, "already holds a run", "--resume")

    resumed = run_cli("train", "dqn", "--resume", str(run_dir), "--steps", "300", "--no-progress", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["env_steps"] == 300

    ev = run_cli("eval", str(run_dir), "--episodes", "3", "--json")
    assert ev.returncode == 0, ev.stderr
    result = json.loads(ev.stdout)
    assert result["episodes"] == 3 and len(result["returns"]) == 3 and result["checkpoint_step"] == 300

    video = tmp_path / "cartpole.mp4"
    ev = run_cli("eval", str(run_dir), "--episodes", "1", "--video", str(video), "--json")
    assert ev.returncode == 0, ev.stderr
    import imageio.v3 as iio

    with warnings.catch_warnings():  # imageio-ffmpeg's frame reader leaves ffmpeg's pipes to the GC
        warnings.simplefilter("ignore", ResourceWarning)
        frames = iio.imread(video)
        gc.collect()
    assert frames.shape[0] == json.loads(ev.stdout)["lengths"][0] and frames.shape[-1] == 3


# ---------------------------------------------------------------------------------------------
# The Python side of `rlkit eval`: the SB3 adapter over a loaded policy
# ---------------------------------------------------------------------------------------------


class _ThresholdPolicy:
    """A policy that carries its spaces, as every policy rlkit trains or loads does."""

    def __init__(self):
        import gymnasium as gym
        import numpy as np

        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def act(self, obs, deterministic=True):
        return (obs[:, 0] > 0).astype("int64")


def test_sb3_adapter_takes_the_policys_spaces():
    import numpy as np

    from rlkit.policy import SB3PredictAdapter

    policy = _ThresholdPolicy()
    adapter = SB3PredictAdapter(policy)
    assert adapter.observation_space is policy.observation_space and adapter.action_space is policy.action_space
    action, state = adapter.predict(np.array([0.5, 0.0], np.float32))  # one observation -> one action
    assert action == 1 and np.ndim(action) == 0 and state is None
    actions, _ = adapter.predict(np.array([[0.5, 0.0], [-0.5, 0.0], [0.1, 0.0]], np.float32))
    assert actions.tolist() == [1, 0, 1]


def test_sb3_adapter_without_spaces_is_a_one_line_error():
    import gymnasium as gym

    from rlkit.errors import RLKitError
    from rlkit.policy import RandomPolicy, SB3PredictAdapter

    space = gym.spaces.Discrete(3)
    with pytest.raises(RLKitError) as err:
        SB3PredictAdapter(RandomPolicy(space))  # it knows its action space, not its observations
    message = str(err.value)
    assert "\n" not in message and "RandomPolicy) has no observation_space;" in message
    assert "SB3PredictAdapter(policy, env.observation_space, env.action_space)" in message
    obs_space = gym.spaces.Box(0.0, 1.0, (4,))
    adapter = SB3PredictAdapter(RandomPolicy(space), obs_space)  # the missing one given, the other from the policy
    assert adapter.observation_space is obs_space and adapter.action_space is space
