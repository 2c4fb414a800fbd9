"""Preference learning continues after a checkpoint: its comparisons are stored as plain arrays and rebuilt."""

from __future__ import annotations

import numpy as np
import pytest
from rlkit.agents.preference import (
    PreferenceConfig,
    comparisons_from_arrays,
    comparisons_to_arrays,
    query_plan,
)
from rlkit.agents.preference import train as train_preference

from rlkit.checkpoint import list_checkpoints, load_checkpoint, read_checksums

TINY = dict(env_id="Pendulum-v1", total_steps=256, total_comparisons=10, num_iterations=2, num_envs=2, ppo_n_steps=64,
            fragment_length=10, correlation_steps=100, eval_episodes=1, progress=False, tensorboard=False)


def test_comparisons_round_trip_as_plain_arrays():
    pytest.importorskip("imitation")
    from imitation.algorithms.preference_comparisons import PreferenceDataset
    from imitation.data.types import TrajectoryWithRew

    rng = np.random.default_rng(0)

    def fragment() -> TrajectoryWithRew:
        return TrajectoryWithRew(obs=rng.normal(size=(4, 3)).astype(np.float32), acts=rng.normal(size=(3, 1)),
                                 infos=None, terminal=False, rews=rng.normal(size=3))

    dataset = PreferenceDataset()
    dataset.push([(fragment(), fragment()) for _ in range(3)], np.array([1.0, 0.0, 0.5], np.float32))
    dataset.push([(fragment(), fragment())], np.array([1.0], np.float32))
    arrays = comparisons_to_arrays(dataset, 3)  # the comparisons of the whole rounds only
    assert all(isinstance(v, np.ndarray) for v in arrays.values()) and arrays["obs1"].shape == (3, 4, 3)
    again = PreferenceDataset()
    comparisons_from_arrays(again, arrays)
    assert len(again) == 3
    np.testing.assert_array_equal(again.preferences, dataset.preferences[:3])
    for a, b in zip(again.fragments2, dataset.fragments2[:3]):
        np.testing.assert_array_equal(a.obs, b.obs)
        np.testing.assert_array_equal(a.acts, b.acts)
        np.testing.assert_array_equal(a.rews, b.rews)
    empty = PreferenceDataset()
    comparisons_from_arrays(empty, comparisons_to_arrays(dataset, 0))
    assert len(empty) == 0


@pytest.mark.filterwarnings("ignore:.*Box (low|high)'s precision lowered:UserWarning")
def test_resumed_run_continues_from_its_checkpoint_with_its_comparisons(tmp_path):
    pytest.importorskip("imitation")
    run_dir = tmp_path / "run"
    first = train_preference(PreferenceConfig(run_dir=str(run_dir), **TINY))
    saved = load_checkpoint(run_dir)
    step = int(read_checksums(list_checkpoints(run_dir)[-1])["step"])
    # 3 rounds (the initial comparisons, then 2 iterations) of 128 steps each
    assert step == first["env_steps"] == 384 and saved["round"] == 3
    assert len(saved["comparisons"]["preferences"]) == first["comparisons"] == 10

    more = train_preference(PreferenceConfig(run_dir=str(run_dir), **{**TINY, "total_steps": step + 256}),
                            resume=True)
    # it went on from the saved step (two more rounds like the last one), not from scratch
    assert more["env_steps"] == step + 256 and read_checksums(list_checkpoints(run_dir)[-1])["step"] == step + 256
    after = load_checkpoint(run_dir)
    assert after["round"] == 5 and more["comparisons"] > first["comparisons"]
    kept = after["comparisons"]
    np.testing.assert_array_equal(kept["obs1"][:10], saved["comparisons"]["obs1"])  # the old ones stayed
    rows = (run_dir / "metrics.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [128, 256, 384, 512, 640]


def test_query_plan_is_imitations():
    pytest.importorskip("imitation")
    from imitation.algorithms import preference_comparisons as pc

    class Plan:  # what query_plan reads of imitation's PreferenceComparisons
        initial_comparison_frac, num_iterations = 0.1, 2
        query_schedule = staticmethod(pc.QUERY_SCHEDULES["hyperbolic"])

    assert query_plan(Plan(), 40) == [4, 24, 12]  # imitation printed "Query schedule: [4, 24, 12]" for these
