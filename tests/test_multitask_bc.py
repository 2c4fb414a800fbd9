"""Multi-task BC from one dataset per task (issue 24, item 2): record two CartPole-MT tasks' experts with the demos
pipeline, train one BC policy on both datasets (a list or a directory of them), and the one-line refusals for
mixed observation spaces and for datasets whose tasks the suite does not know."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rlkit.agents.bc import BCConfig, load_policy, train
from rlkit.demos import record, resolve_policy
from rlkit.demos.scripted import cartpole_mt
from rlkit.demos.tasks import dataset_paths
from rlkit.demos.training import load_demos

from rlkit import demos
from rlkit.checkpoint import load_checkpoint
from rlkit.config import apply_overrides
from rlkit.errors import RLKitError
from tests.conftest import run_cli

SUITE = "rlkit/CartPole-MT-v0"


SCRIPTED = "python:rlkit.demos.scripted:cartpole_mt"  # balances every CartPole-MT task (500 on each)


def record_task(out, task, episodes=3, env_id=SUITE, seed=0):
    kwargs = {"max_episode_steps": 60, **({} if task is None else {"task": task})}
    source = SCRIPTED if env_id != "CartPole-v1" else "python:rlkit.demos.scripted:cartpole"
    policy = resolve_policy(source, env_id, env_kwargs=kwargs)
    record(policy, env_id, episodes=episodes, out=out, seed=seed, env_kwargs=kwargs, source=source)


@pytest.fixture(scope="module")
def task_demos(tmp_path_factory):
    """Tasks 1 and 3 (short poles, light and heavy carts), 3 scripted episodes of 60 steps each."""
    root = tmp_path_factory.mktemp("mt-demos") / "demos"
    for task in (1, 3):
        record_task(root / f"task_{task}", task, seed=10 * task)
    return root


def test_two_tasks_datasets_train_one_bc_policy(task_demos, tmp_path):
    listed = f"{task_demos / 'task_1'},{task_demos / 'task_3'}"
    assert dataset_paths(str(task_demos)) == dataset_paths(listed)  # a directory of datasets = their list
    assert dataset_paths(str(task_demos / "task_1")) == [task_demos / "task_1"]
    (tmp_path / "a,b").mkdir()
    assert dataset_paths(str(tmp_path / "a,b")) == [tmp_path / "a,b"]  # a comma in an existing path's name
    merged = load_demos(str(task_demos))
    assert len(merged) == 6 and merged.meta["env_kwargs"] == {"max_episode_steps": 60}  # the suite, both tasks
    assert [m["task"] for m in merged.meta["merged_from"]] == [1, 3]
    cfg = apply_overrides(BCConfig(), {"demos": str(task_demos), "epochs": 300, "val_fraction": 0.0, "hidden": [64],
                                       "lr": 3e-3, "eval_episodes": 4, "progress": False,
                                       "run_dir": str(tmp_path / "bc")})
    final = train(cfg)
    assert final["env_id"] == SUITE and final["demo_episodes"] == 6
    assert list(final["eval"]["per_task"]) == ["0", "1", "2", "3"]  # round-robin evaluation: every task
    policy = load_policy(load_checkpoint(final["run_dir"]))
    for task in (1, 3):  # one network imitates both experts, each on its own task's states
        states = np.concatenate([ep.obs[:-1] for ep in demos.load(task_demos / f"task_{task}")])
        agreement = np.mean(policy.act(states, deterministic=True) == cartpole_mt(states))
        assert agreement > 0.9, (task, agreement)  # 60 epochs of [32] reached only 0.83: a test that can fail
    assert json.loads((tmp_path / "bc" / "config.json").read_text())["demos"] == str(task_demos)


def test_the_two_commands_of_the_docs(task_demos, tmp_path):
    out = tmp_path / "demos"
    for task in (0, 2):  # the docs' first command, for two of the tasks
        rec = run_cli("demos", "record", "--env", SUITE, "--env-kwargs", f'{{"task": {task}, "max_episode_steps": 60}}',
                      "--policy", SCRIPTED, "--episodes", "2", "--out", str(out / f"task_{task}"), "--quiet")
        assert rec.returncode == 0, rec.stderr
    proc = run_cli("train", "bc", "--demos", str(out), "--set", "epochs=2", "--set", "eval_episodes=4",
                   "--run-dir", str(tmp_path / "bc"), "--json")  # the second
    assert proc.returncode == 0, proc.stderr
    final = json.loads((tmp_path / "bc" / "final.json").read_text())
    assert final["demo_episodes"] == 4 and list(final["eval"]["per_task"]) == ["0", "1", "2", "3"]
    record_task(tmp_path / "long", 1)
    short = tmp_path / "short"
    record(resolve_policy(SCRIPTED, SUITE), SUITE, episodes=1, out=short, env_kwargs={"task": 1,
                                                                                       "max_episode_steps": 30})
    with pytest.raises(RLKitError, match="record every task with the same env settings"):
        load_demos(f"{tmp_path / 'long'},{short}")


def test_mixed_observation_spaces_are_refused_in_one_line(task_demos, tmp_path):
    plain = tmp_path / "cartpole"
    record_task(plain, None, episodes=1, env_id="CartPole-v1")
    with pytest.raises(RLKitError, match=r"their observation spaces differ \(Box\(8,\).* vs Box\(4,\)") as e:
        load_demos(f"{task_demos / 'task_1'},{plain}")
    assert "\n" not in str(e.value)


def test_a_dataset_whose_tasks_the_suite_does_not_know_is_refused(task_demos, tmp_path):
    heldout = tmp_path / "heldout"
    record_task(heldout, None, episodes=1, env_id="rlkit/CartPole-MT-heldout-v0")
    with pytest.raises(RLKitError, match="CartPole-MT-heldout-v0, whose tasks rlkit/CartPole-MT-v0 does not know"):
        load_demos(f"{task_demos / 'task_1'},{heldout}")
    # an edited dataset: its observations lose their one-hot
    edited = demos.load(task_demos / "task_3")
    edited.episodes[0].obs[:, -4:] = 0.0
    from rlkit.demos.tasks import merge_task_datasets

    with pytest.raises(RLKitError, match="do not end in a 4-task one-hot, so its tasks are none"):
        merge_task_datasets([demos.load(task_demos / "task_1"), edited])



def test_dagger_starts_from_the_tasks_datasets_and_labels_every_task(task_demos, tmp_path):
    from rlkit.agents.dagger import DAggerConfig
    from rlkit.agents.dagger import train as train_dagger

    cfg = apply_overrides(DAggerConfig(), {"demos": str(task_demos), "expert": SCRIPTED, "rounds": 2,
                                           "episodes_per_round": 4, "epochs_per_round": 2, "eval_episodes": 4,
                                           "progress": False, "run_dir": str(tmp_path / "dagger")})
    final = train_dagger(cfg)
    assert final["env_id"] == SUITE and list(final["eval"]["per_task"]) == ["0", "1", "2", "3"]
    labels = demos.load(final["labels"])  # round 1's rollouts on the suite: episode i plays task (seed + i) % 4
    shown = {int(ep.obs[0, -4:].argmax()) for ep in labels}
    assert len(labels) == 4 and shown == {0, 1, 2, 3}
