"""Files from other people run no code and cannot make rlkit allocate the impossible (docs/reliability.md: "Loading
never executes code", "Other libraries' files are read as data").

* imitation trajectory files (a datasets directory, the old .npz, the oldest .pkl) are read as data:
  a pickle inside one never runs, and a file only unpickling could read is refused in one line;
* SB3 model zips: every pickled entry of their ``data`` is supplied by rlkit, for every ``sb3:`` entry
  point (``demos record``, ``eval``, DAgger's expert); the weights are read ``weights_only``; a zip that
  needs unpickling is refused unless the user opts in, and then it loads;
* a dataset's manifest is checked against the env before training, and absurd declared sizes are refused.

Each hostile file is an otherwise valid one carrying a real payload: unpickling it touches a marker file.
"""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import shlex
import zipfile
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from rlkit.demos.reader import MANIFEST
from torch import nn

from rlkit import demos
from rlkit.errors import RLKitError
from rlkit.spaces import space_from_json


class Payload:
    """What a hostile file's author runs: unpickling this touches ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {shlex.quote(self.marker)}",)


class ScaledTanh(nn.Tanh):
    """A custom activation: an SB3 zip that uses it stores its class as a pickle rlkit cannot supply."""


def rlkit(capsys, *args: str) -> tuple[int, str, str]:
    """``rlkit ARGS`` in this process: (exit status, stdout, stderr)."""
    from rlkit.apps.cli import main

    capsys.readouterr()  # what came before (datasets' progress bars) is not this command's output
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def one_line_error(err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rlkit: error: "), err
    for word in words:
        assert word in lines[0], err


# ---------------------------------------------------------------------------------------------
# imitation trajectory files
# ---------------------------------------------------------------------------------------------

def old_npz(path: Path, lengths=(3, 4), **replace: np.ndarray) -> Path:
    """Trajectories in imitation's older .npz layout (as its old ``save`` wrote them), ``replace`` swapping
    arrays; ``infos`` is an object array, so np.savez pickles it."""
    rng = np.random.default_rng(0)
    arrays = {"obs": rng.normal(size=(sum(lengths) + len(lengths), 4)).astype(np.float32),
              "acts": rng.integers(0, 2, sum(lengths)), "rews": np.ones(sum(lengths), np.float32),
              "infos": np.array([{} for _ in range(sum(lengths))], dtype=object),
              "terminal": np.arange(len(lengths)) % 2 == 0, "indices": np.cumsum(lengths[:-1])}
    with open(path, "wb") as f:  # np.savez would append .npz to a name without it
        np.savez(f, **{**arrays, **replace})
    return path


def convert_from_imitation(capsys, source: Path, out: Path) -> tuple[int, str, str]:
    return rlkit(capsys, "demos", "convert", source, "--from", "imitation", "--env", "CartPole-v1", "--out", out,
                 "--json")


def test_a_pickle_in_an_imitation_npz_never_runs(tmp_path, capsys, faults):
    marker = tmp_path / "PWNED"
    payload = np.array([Payload(marker)] * 7, dtype=object)
    # in infos, which carry nothing rlkit stores: never read, and the trajectories convert
    code, out, err = convert_from_imitation(capsys, old_npz(tmp_path / "infos.npz", infos=payload), tmp_path / "a")
    assert code == 0, err
    assert json.loads(out)["episodes"] == 2 and json.loads(out)["steps"] == 7 and json.loads(out)["rewards"]
    assert not marker.exists()
    # in the observations: only unpickling could read them, so the file is refused, naming the risk
    obs = np.array([Payload(marker)] * 9, dtype=object)
    code, _, err = convert_from_imitation(capsys, old_npz(tmp_path / "obs.npz", obs=obs), tmp_path / "b")
    assert code == 2 and not marker.exists() and not (tmp_path / "b").exists()
    one_line_error(err, "'obs'", "runs any code")
    faults.held("malicious files refused", 2)


@pytest.mark.parametrize("name", ["trajectories.pkl", "trajectories.npz"])
def test_a_pickled_trajectory_file_is_refused_whatever_its_name(tmp_path, capsys, name, faults):
    marker = tmp_path / "PWNED"
    (tmp_path / name).write_bytes(pickle.dumps([Payload(marker)]))
    code, _, err = convert_from_imitation(capsys, tmp_path / name, tmp_path / "out")
    assert code == 2 and not marker.exists() and not (tmp_path / "out").exists()
    one_line_error(err, "unpickling", "runs any code", "imitation.data.serialize.save")
    faults.held("malicious files refused")


def saved_by_imitation(path: Path, infos: list | None = None) -> list:
    from imitation.data import serialize
    from imitation.data.types import TrajectoryWithRew

    rng = np.random.default_rng(1)
    trajs = [TrajectoryWithRew(obs=rng.normal(size=(n + 1, 4)).astype(np.float32), acts=rng.integers(0, 2, n),
                               infos=None if infos is None else infos[:n], terminal=n == 5,
                               rews=rng.normal(size=n).astype(np.float32)) for n in (5, 8)]
    serialize.save(path, trajs)
    return trajs


def test_imitation_files_convert_as_data(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    # a real serialize.save, its infos jsonpickled objects that would run when decoded: never decoded
    trajs = saved_by_imitation(tmp_path / "imi", infos=[{"note": Payload(marker)}] * 8)
    code, out, err = convert_from_imitation(capsys, tmp_path / "imi", tmp_path / "ds")
    assert code == 0, err
    assert not marker.exists()
    ds = demos.load(tmp_path / "ds")
    for traj, ep in zip(trajs, ds):
        np.testing.assert_array_equal(ep.obs, traj.obs)
        np.testing.assert_array_equal(ep.actions, traj.acts)
        np.testing.assert_array_equal(ep.rewards, traj.rews)
        assert ep.terminated == traj.terminal
    # and the older .npz layout, split at its indices as imitation splits it
    back = demos.load_imitation(old_npz(tmp_path / "old.npz", lengths=(2, 3, 1)))
    assert [len(t.acts) for t in back] == [2, 3, 1] and [len(t.obs) for t in back] == [3, 4, 2]
    assert [t.terminal for t in back[:2]] == [True, False]


def test_a_datasets_directory_cannot_point_outside_itself(tmp_path, capsys, faults):
    saved_by_imitation(tmp_path / "elsewhere")
    saved_by_imitation(tmp_path / "imi")
    state = json.loads((tmp_path / "imi" / "state.json").read_text())
    state["_data_files"] = [{"filename": "../elsewhere/data-00000-of-00001.arrow"}]
    (tmp_path / "imi" / "state.json").write_text(json.dumps(state))
    code, _, err = convert_from_imitation(capsys, tmp_path / "imi", tmp_path / "ds")
    assert code == 2 and not (tmp_path / "ds").exists()
    one_line_error(err, "state.json", "plain files")
    faults.held("malicious files refused")


# ---------------------------------------------------------------------------------------------
# SB3 model zips
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dqn_zip(tmp_path_factory) -> Path:
    """A tiny DQN trained a few hundred steps: a real model, whose zip pickles its spaces and schedules."""
    from stable_baselines3 import DQN

    model = DQN("MlpPolicy", "CartPole-v1", learning_starts=100, buffer_size=1000, train_freq=4, seed=0,
                device="cpu", policy_kwargs={"net_arch": [16]})
    model.learn(300)
    path = tmp_path_factory.mktemp("sb3") / "dqn.zip"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def custom_zip(tmp_path_factory) -> Path:
    """A PPO whose policy uses a custom activation: only unpickling (an import of its module) rebuilds it."""
    from stable_baselines3 import PPO

    model = PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, seed=0, device="cpu",
                policy_kwargs={"net_arch": [8], "activation_fn": ScaledTanh})
    path = tmp_path_factory.mktemp("sb3") / "custom.zip"
    model.save(path)
    return path


def patched_zip(src: Path, dst: Path, edit: Callable[[str, bytes], bytes]) -> Path:
    """A copy of the zip ``src`` with each entry passed through ``edit(name, bytes)``."""
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w") as new:
        for name in old.namelist():
            new.writestr(name, edit(name, old.read(name)))
    return dst


def with_payload(src: Path, dst: Path, marker: Path, key: str = "observation_space") -> Path:
    """``src`` with the pickle of ``data[key]`` replaced by the payload (its readable description kept)."""
    def edit(name: str, raw: bytes) -> bytes:
        if name != "data":
            return raw
        data = json.loads(raw)
        entry = data.get(key) if isinstance(data.get(key), dict) else {":type:": "<class 'object'>"}
        data[key] = {**entry, ":serialized:": base64.b64encode(pickle.dumps(Payload(marker))).decode()}
        return json.dumps(data).encode()

    return patched_zip(src, dst, edit)


def dagger_args(tmp_path: Path, expert: str, *more: str) -> list[str]:
    return ["train", "dagger", "--env", "CartPole-v1", "--set", f"expert={expert}", "--set", "rounds=1",
            "--set", "episodes_per_round=1", "--set", "epochs_per_round=1", "--set", "eval_episodes=1",
            "--set", "tensorboard=false", "--no-progress", "--run-dir", str(tmp_path / "run"), *more]


def entry_point(kind: str, tmp_path: Path, source: str, *more: str) -> list[str]:
    """The command that takes ``source``, for each place an ``sb3:`` source is taken."""
    if kind == "record":
        return ["demos", "record", "--env", "CartPole-v1", "--policy", source, "--episodes", "1",
                "--out", str(tmp_path / "ds"), "--quiet", *more]
    if kind == "eval":
        return ["eval", source, "--env", "CartPole-v1", "--episodes", "1", *more]
    return dagger_args(tmp_path, source, *more)


@pytest.mark.parametrize("kind", ["record", "eval", "dagger"])
def test_a_payload_in_an_sb3_zip_never_runs(dqn_zip, tmp_path, capsys, kind, faults):
    marker = tmp_path / "PWNED"
    hostile = with_payload(dqn_zip, tmp_path / "model.zip", marker)
    code, _, err = rlkit(capsys, *entry_point(kind, tmp_path, f"sb3:DQN:{hostile}"))
    assert code == 0, err  # the spaces were rlkit's (the env's): the payload was never needed
    assert not marker.exists()
    # an entry rlkit cannot supply is refused in one line, saying why and how to opt in
    hostile = with_payload(dqn_zip, tmp_path / "extra.zip", marker, key="my_callback")
    code, _, err = rlkit(capsys, *entry_point(kind, tmp_path / "2", f"sb3:DQN:{hostile}"))
    assert code == 2 and not marker.exists()
    one_line_error(err, "'my_callback'", "runs any code", "--trust-remote-code")
    faults.held("malicious files refused", 2)


def test_pickled_weights_never_run(dqn_zip, tmp_path, capsys, faults):
    """SB3 2.9 reads policy.pth with torch.load(weights_only=True); a pickle there is refused, not run."""
    marker = tmp_path / "PWNED"

    def edit(name: str, raw: bytes) -> bytes:
        if name != "policy.pth":
            return raw
        buffer = io.BytesIO()
        torch.save({"q_net.q_net.0.weight": Payload(marker)}, buffer)
        return buffer.getvalue()

    hostile = patched_zip(dqn_zip, tmp_path / "model.zip", edit)
    code, _, err = rlkit(capsys, *entry_point("record", tmp_path, f"sb3:DQN:{hostile}"))
    assert code == 2 and not marker.exists()
    one_line_error(err, "cannot load", "UnpicklingError")
    faults.held("malicious files refused")


def test_a_trained_sb3_model_records_its_own_actions(dqn_zip, tmp_path, capsys):
    from stable_baselines3 import DQN

    code, _, err = rlkit(capsys, "demos", "record", "--env", "CartPole-v1", "--policy", f"sb3:DQN:{dqn_zip}",
                         "--episodes", "2", "--out", tmp_path / "ds", "--quiet", "--json")
    assert code == 0, err
    model = DQN.load(dqn_zip, device="cpu")  # SB3's own load of our own, benign file
    for ep in demos.load(tmp_path / "ds"):
        np.testing.assert_array_equal(model.predict(ep.obs[:-1], deterministic=True)[0], ep.actions)


@pytest.mark.parametrize("kind", ["record", "eval", "dagger"])
def test_the_opt_in_loads_a_zip_that_needs_unpickling(custom_zip, tmp_path, capsys, kind):
    source = f"sb3:PPO:{custom_zip}"
    opt_in = ["--set", "trust_remote_code=true"] if kind == "dagger" else ["--trust-remote-code"]
    code, _, err = rlkit(capsys, *entry_point(kind, tmp_path, source))
    assert code == 2
    one_line_error(err, "activation_fn", "ScaledTanh", "runs any code")
    code, _, err = rlkit(capsys, *entry_point(kind, tmp_path / "2", source, *opt_in))
    assert code == 0, err
    if kind == "dagger":  # the opt-in holds for the command that gives it, not for a resume read from the run
        code, _, err = rlkit(capsys, "train", "dagger", "--resume", tmp_path / "2" / "run", "--set", f"expert={source}")
        assert code == 2
        one_line_error(err, "trust_remote_code=True", "name it yourself")


def test_every_sb3_algorithm_loads_with_nothing_unpickled(tmp_path, monkeypatch):
    """The zips of all six algorithms (A2C's pickles its policy_kwargs) load with SB3's unpickler removed,
    and act as SB3's own load of the same file does."""
    import stable_baselines3
    from stable_baselines3.common import save_util

    from rlkit.sb3_files import SB3_ALGOS, load_sb3_zip

    def forbidden(*args, **kwargs):
        raise AssertionError("an SB3 entry was unpickled")

    for algo in SB3_ALGOS:
        env = gym.make("CartPole-v1" if algo in ("A2C", "DQN", "PPO") else "Pendulum-v1")
        extra = {"buffer_size": 100} if algo in ("DQN", "SAC", "TD3", "DDPG") else {}
        cls = getattr(stable_baselines3, algo)
        cls("MlpPolicy", env, seed=0, device="cpu", policy_kwargs={"net_arch": [8]}, **extra).save(tmp_path / algo)
        theirs = cls.load(tmp_path / f"{algo}.zip", device="cpu")
        with monkeypatch.context() as m:
            m.setattr(save_util.cloudpickle, "loads", forbidden)
            file = (tmp_path / f"{algo}.zip").read_bytes() if algo == "PPO" else tmp_path / f"{algo}.zip"  # both kinds
            ours = load_sb3_zip(file, algo, env.observation_space, env.action_space, "env")
        obs = np.stack([env.observation_space.sample() for _ in range(20)])
        np.testing.assert_allclose(ours.predict(obs, deterministic=True)[0],
                                   theirs.predict(obs, deterministic=True)[0], atol=1e-6)


def test_an_sb3_model_for_another_env_or_algorithm_is_named(dqn_zip):
    with pytest.raises(RLKitError, match=r"expects observations of shape \(4,\), but Pendulum-v1 gives \(3,\)"):
        demos.resolve_policy(f"sb3:DQN:{dqn_zip}", "Pendulum-v1")
    with pytest.raises(RLKitError, match="its policy class is .*DQNPolicy, not one of PPO's"):
        demos.resolve_policy(f"sb3:PPO:{dqn_zip}", "CartPole-v1")
    from rlkit.sb3_files import load_sb3_zip

    with pytest.raises(RLKitError, match="trained for actions with n=2, but Acrobot-v1 has Discrete.3."):
        load_sb3_zip(dqn_zip, "DQN", gym.make("CartPole-v1").observation_space, gym.spaces.Discrete(3), "Acrobot-v1")
    with pytest.raises(RLKitError, match=r"trained for observations with low bounds \[-4.8 "):
        load_sb3_zip(dqn_zip, "DQN", gym.spaces.Box(-1, 1, (4,), np.float32), gym.spaces.Discrete(2), "Drift")


def test_an_sb3_zip_declaring_more_bytes_than_a_model_holds_is_refused(dqn_zip, monkeypatch):
    """zipfile never inflates past a member's declared size, so bounding the declared sizes bounds memory."""
    from rlkit import sb3_files

    total = sum(info.file_size for info in zipfile.ZipFile(dqn_zip).infolist())
    monkeypatch.setattr(sb3_files, "_MAX_ZIP_BYTES", total - 1)  # as a zip declaring 2 GiB meets the real bound
    with pytest.raises(RLKitError, match=f"declare {total} bytes in all") as err:
        demos.resolve_policy(f"sb3:DQN:{dqn_zip}", "CartPole-v1")
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------
# A dataset's manifest against the env
# ---------------------------------------------------------------------------------------------

def cartpole_dataset(path: Path, observation_space: gym.Space | None = None) -> Path:
    """A dataset that says it is CartPole-v1's, its observations those of ``observation_space``."""
    observation_space = observation_space or gym.make("CartPole-v1").observation_space
    with demos.DatasetWriter(path, "CartPole-v1", observation_space, gym.spaces.Discrete(2), source="test") as w:
        for seed in range(2):
            obs = np.stack([observation_space.sample() for _ in range(4)])
            w.add_episode(obs, np.array([0, 1, 0]), True, False, seed=seed)
    return path


@pytest.mark.parametrize("agent", ["bc", "dagger", "gail"])
def test_a_manifest_that_does_not_fit_its_env_is_refused_before_training(tmp_path, capsys, agent, faults):
    frames = cartpole_dataset(tmp_path / "ds", gym.spaces.Box(0, 255, (512, 512), np.uint8))
    more = ["--set", "expert=random"] if agent == "dagger" else []
    code, _, err = rlkit(capsys, "train", agent, "--demos", frames, "--preset", "none", "--run-dir", tmp_path / "run",
                         "--no-progress", "--steps", "64", *more)
    assert code == 2 and not (tmp_path / "run").exists()
    one_line_error(err, "manifest declares observation space Box(512, 512) uint8", "CartPole-v1 has Box(4,)")
    faults.held("damaged datasets refused")


def test_absurd_declared_sizes_are_refused_naming_the_file(tmp_path, capsys, faults):
    from rlkit.spaces import MAX_SPACE_VALUES

    path = cartpole_dataset(tmp_path / "ds")
    manifest = json.loads((path / MANIFEST).read_text())
    manifest["action_space"] = {"type": "Discrete", "n": 10 ** 12, "start": 0}
    (path / MANIFEST).write_text(json.dumps(manifest))
    code, _, err = rlkit(capsys, "train", "bc", "--demos", path, "--preset", "none", "--run-dir", tmp_path / "run",
                         "--no-progress")
    assert code == 2 and not (tmp_path / "run").exists()
    one_line_error(err, str(path / MANIFEST), "Discrete(n=1000000000000)", "more than rlkit accepts")
    huge = [{"type": "Box", "shape": [1 << 20, 1 << 20], "dtype": "float32", "low": 0, "high": 1},
            {"type": "Box", "shape": [-4], "dtype": "float32", "low": 0, "high": 1},
            {"type": "Box", "shape": [4], "dtype": "object", "low": 0, "high": 1},
            {"type": "Discrete", "n": 1e12}, {"type": "MultiDiscrete", "nvec": [MAX_SPACE_VALUES, 2]},
            {"type": "MultiBinary", "n": [1 << 13, 1 << 13]}]
    for description in huge:
        with pytest.raises(RLKitError, match="f.json: a space declares") as err:
            space_from_json(description, where="f.json")
        assert "\n" not in str(err.value)
    faults.held("damaged datasets refused", 1 + len(huge))
