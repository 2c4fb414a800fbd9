"""`rlkit reproduce` for the offline learners: a preset builds its D4RL-style dataset once beside OUT (seeded),
trains its seeds on it and reports the normalised return from the dataset's reference scores; the shipped
presets are well formed; an unfinished or foreign dataset folder is handled in one line."""

from __future__ import annotations

import json

import pytest
import yaml

from rlkit.apps import offline_data
from rlkit.apps.reproduce import prepare_offline_data, reproduce
from rlkit.apps.reproduce_presets import ReproducePreset, load_presets
from rlkit.errors import RLKitError

# A TD3 "expert" of 400 steps (near random: this tests the plumbing, not learning), 2 episodes of each kind
TINY_DATA = {"env": "Pendulum-v1", "kind": "random", "kinds": ["random"], "dir": "datasets", "seed": 3,
             "episodes": 2, "reference_episodes": 2,
             "set": {"total_steps": 400, "learning_starts": 200, "train_every": 1, "gradient_steps": 1,
                     "hidden": [16, 16], "eval_episodes": 2}}


def tiny_presets(tmp_path):
    path = tmp_path / "presets.yaml"
    common = {"seeds": 2, "budget": 30, "eval_points": 2, "offline_data": TINY_DATA,
              "normalise": {"random": "dataset", "expert": "dataset"}}
    path.write_text(yaml.safe_dump({
        "iql-tiny": {"agent": "iql", "preset": "pendulum", **common,
                     "overrides": {"hidden": [16], "batch_size": 32, "eval_episodes": 2}},
        "cql-tiny": {"agent": "cql", "preset": "pendulum", **common,
                     "overrides": {"hidden": [16], "batch_size": 32, "eval_episodes": 2, "num_actions": 2}}}))
    return path


def test_an_offline_preset_builds_its_dataset_once_and_reports_normalised_returns(tmp_path, monkeypatch):
    presets = tiny_presets(tmp_path)
    results = reproduce("iql-tiny", out=tmp_path / "iql", presets_file=presets, workers=1)
    data = tmp_path / "datasets"
    manifest = json.loads((data / "random" / "manifest.json").read_text())
    low, high = manifest["reference_scores"]["ref_min_score"], manifest["reference_scores"]["ref_max_score"]
    assert manifest["offline_data"]["seed"] == 3 and manifest["offline_data"]["episodes"] == 2
    assert not (tmp_path / ".datasets.building").exists()
    assert results["seeds"] == [0, 1] and results["total_steps"] == 30
    assert (results["normalised"]["random"], results["normalised"]["expert"]) == (low, high)
    for row in results["per_seed"]:
        final = json.loads((tmp_path / "iql" / row["run_dir"] / "final.json").read_text())
        assert final["demos"] == str((data / "random").resolve()) and final["gradient_steps"] == 30
        # two computations of the same score: the offline loop's D4RL percent, reproduce's fraction
        assert row["normalised"] == pytest.approx((row["return"] - low) / (high - low))
        assert row["normalised"] * 100 == pytest.approx(final["normalized_return"])
        assert row["env_steps"] == 30  # its gradient steps: final.json's env_steps is 0 for a learner on a dataset
    report = (tmp_path / "iql" / "report.md").read_text()
    assert "## Normalised return" in report and "ref_min_score" in report and "Mean normalised return" in report
    assert "stopped early" not in report and "ended short" not in report  # no seed reads as stopped early

    # a second preset beside it learns from the same build: nothing is built again
    def no_rebuild(*args, **kwargs):
        raise AssertionError("the dataset was built again")

    monkeypatch.setattr(offline_data, "build_datasets", no_rebuild)
    again = reproduce("cql-tiny", out=tmp_path / "cql", presets_file=presets, workers=1)
    assert again["normalised"]["random"] == low and len(again["per_seed"]) == 2


def fake_build(calls):
    def build(env_id, out, *, kinds, **options):
        calls.append((env_id, str(out), list(kinds), options))
        for kind in kinds:
            (out / kind).mkdir(parents=True)
            (out / kind / "manifest.json").write_text("{}")
        (out / "datasets.json").write_text("{}")
        return {}
    return build


def preset(**data):
    return ReproducePreset(name="p", agent="iql", offline_data={"env": "Pendulum-v1", "kind": "medium", **data})


def test_the_build_is_seeded_as_asked_and_an_interrupted_one_is_redone(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(offline_data, "build_datasets", fake_build(calls))
    out = tmp_path / "reproductions" / "iql-pendulum-medium"
    # an interrupted build: its marker and a partial folder; it is removed and built again, whole
    partial = tmp_path / "reproductions" / "pendulum-datasets"
    (partial / "medium").mkdir(parents=True)
    (tmp_path / "reproductions" / ".pendulum-datasets.building").write_text("{}")
    path = prepare_offline_data(preset(dir="pendulum-datasets", seed=7, eval_every=200, set={"hidden": [8]}), out)
    assert path == str((partial / "medium").resolve())
    assert calls == [("Pendulum-v1", str(partial), list(offline_data.KINDS),
                      {"seed": 7, "eval_every": 200, "overrides": {"hidden": [8]}})]
    assert not (tmp_path / "reproductions" / ".pendulum-datasets.building").exists()
    prepare_offline_data(preset(dir="pendulum-datasets"), out)  # built: not again
    assert len(calls) == 1
    # the default folder is named after the env
    assert prepare_offline_data(preset(), out).endswith("Pendulum-v1-datasets/medium")


def test_foreign_folders_missing_kinds_and_unknown_kinds_are_refused_in_one_line(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(offline_data, "build_datasets", fake_build(calls))
    out = tmp_path / "repro" / "x"
    (tmp_path / "repro" / "mine").mkdir(parents=True)  # somebody's folder, not a build
    with pytest.raises(RLKitError, match=r"mine exists but holds no datasets.json.*move it away") as err:
        prepare_offline_data(preset(dir="mine"), out)
    assert "\n" not in str(err.value) and calls == []
    prepare_offline_data(ReproducePreset(name="p", agent="iql", offline_data={
        "env": "Pendulum-v1", "kind": "random", "kinds": ["random"], "dir": "few"}), out)
    with pytest.raises(RLKitError, match="holds no medium dataset"):
        prepare_offline_data(preset(dir="few"), out)
    with pytest.raises(RLKitError, match="must be one of random, medium"):
        prepare_offline_data(preset(kind="expert-replay"), out)


def test_the_shipped_offline_presets():
    presets = load_presets()
    names = [f"{agent}-pendulum-{kind}" for agent in ("bc", "td3_bc", "iql", "cql") for kind in offline_data.KINDS]
    for name in names:
        p = presets[name]
        assert p.seeds == 5 and p.agent == name.split("-")[0] and p.normalise == {"random": "dataset",
                                                                                   "expert": "dataset"}
        assert p.offline_data["kind"] == name.split("-pendulum-")[1] and p.offline_data["env"] == "Pendulum-v1"
        assert p.offline_data["dir"] == "pendulum-datasets" and p.offline_data["seed"] == 0
        assert f"{p.budget} gradient steps" in p.note  # the budget is said where the report prints it
        # CORL's figures are listed as D4RL's, never as the reference these runs are compared against
        assert "score" not in p.reference
        assert all("D4RL" in a["source"] and "NOT this Pendulum dataset" in a["source"] for a in p.also)
    assert len({presets[n].offline_data["eval_every"] for n in names}) == 1  # one shared build


def test_an_expert_beside_out_is_passed_to_the_build_and_a_missing_one_named_in_one_line(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(offline_data, "build_datasets", fake_build(calls))
    out = tmp_path / "repro" / "iql-hopper-medium"
    with pytest.raises(RLKitError) as err:
        prepare_offline_data(preset(dir="d", expert="td3-hopper-300k/seed_1"), out)
    assert "run `rlkit reproduce td3-hopper-300k --out" in str(err.value) and "\n" not in str(err.value)
    assert calls == []
    (tmp_path / "repro" / "td3-hopper-300k" / "seed_1" / "checkpoints").mkdir(parents=True)
    prepare_offline_data(preset(dir="d", expert="td3-hopper-300k/seed_1"), out)
    assert calls[0][3]["expert_run"] == str(tmp_path / "repro" / "td3-hopper-300k" / "seed_1")


@pytest.mark.parametrize("env_key,env_id", [("hopper", "Hopper-v5"), ("halfcheetah", "HalfCheetah-v5")])
def test_the_shipped_mujoco_offline_presets(env_key, env_id):
    """The same learners, budgets and seeds as the Pendulum presets, one shared build per env; CORL's figure for
    the same env and kind only, labelled as D4RL's."""
    presets = load_presets()
    names = [f"{agent}-{env_key}-{kind}" for agent in ("bc", "td3_bc", "iql", "cql") for kind in offline_data.KINDS]
    builds = set()
    for name in names:
        p, twin = presets[name], presets[name.replace(f"-{env_key}-", "-pendulum-")]
        assert (p.agent, p.seeds, p.budget, p.preset) == (twin.agent, twin.seeds, twin.budget, env_key)
        assert p.offline_data["kind"] == name.split(f"-{env_key}-")[1] and p.offline_data["env"] == env_id
        assert f"{p.budget} gradient steps" in p.note and "score" not in p.reference
        assert all(f"D4RL {env_key}-" in a["source"] and f"NOT this {env_id} dataset" in a["source"] for a in p.also)
        builds.add(json.dumps({k: v for k, v in p.offline_data.items() if k != "kind"}, sort_keys=True))
    assert len(builds) == 1
