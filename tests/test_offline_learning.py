"""Learning: TD3+BC, IQL and CQL trained on a Pendulum ``medium-replay`` dataset beat the dataset's behaviour and
behaviour cloning (TD3+BC with alpha = 0, which is BC: the Q term vanishes) trained on the same data.

The dataset comes from ``rlkit offline-data``'s recipe with a small TD3 (6000 steps, 64-64 networks, updates from
step 1000; about 20 s): the replay buffer of the run stopped at a third of the way from random to its expert, 22
episodes (4400 transitions) of a random warm-up and of a policy learning to swing up, with the random and expert
reference returns measured over 10 episodes.

Measured (seed 0, one torch thread, the 2-core dev machine shared with other jobs at load average about 4;
evaluation over 10 episodes; normalised = 100 (R - R_random) / (R_expert - R_random) with R_random -1194.2 and
R_expert -325.0):

    ==============  ==========================  ==========  ==========  ======
    policy          budget (gradient steps)     return      normalised  wall s
    ==============  ==========================  ==========  ==========  ======
    the dataset     22 episodes                 -1325.2     -15.1
    BC (alpha=0)    3000, batch 256, 64-64      -1230.6     -4.2        6
    TD3+BC          20000, batch 256, 64-64     -1137.1     6.6         37
    IQL             5000, batch 256, 64-64      -994.7      23.0        20
    CQL             4000, batch 64, 64-64       -928.7      30.6        18
    ==============  ==========================  ==========  ==========  ======

Building the dataset takes about 25-35 s more. Each learner must beat the dataset's mean return by 10 normalised
points (87 in return) and BC's return. The budgets are far below the papers' 1M steps (CPU, one core): IQL and CQL
improve fastest here; TD3+BC, whose BC term keeps it close to this mostly random data, improves more slowly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rlkit.agents import cql, iql, td3_bc

from rlkit import demos
from rlkit.apps.offline_data import build_datasets
from rlkit.engine.offline import normalized_score

SMALL_TD3 = {"total_steps": 6000, "learning_starts": 1000, "train_every": 1, "gradient_steps": 1, "hidden": [64, 64]}
COMMON = dict(hidden=[64, 64], eval_episodes=10, progress=False, tensorboard=False, checkpoint_every=0, seed=0)
MARGIN = 10.0  # normalised points above the dataset's mean return
BUDGETS = {
    "td3_bc": (td3_bc.train, td3_bc.TD3BCConfig, dict(total_steps=20_000, eval_every=5_000)),
    "iql": (iql.train, iql.IQLConfig, dict(total_steps=5_000, eval_every=1_250)),
    "cql": (cql.train, cql.CQLConfig, dict(total_steps=4_000, eval_every=1_000, batch_size=64)),
}


@pytest.fixture(scope="module")
def medium_replay(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("offline_learning") / "pendulum"
    summary = build_datasets("Pendulum-v1", out, seed=0, overrides=SMALL_TD3, eval_every=500, reference_episodes=10,
                             kinds=["medium-replay"])
    return out / "medium-replay", summary


@pytest.fixture(scope="module")
def bc_return(medium_replay, tmp_path_factory) -> float:
    path, _ = medium_replay
    run_dir = tmp_path_factory.mktemp("offline_learning_bc") / "bc"
    result = td3_bc.train(td3_bc.TD3BCConfig(demos=str(path), alpha=0.0, total_steps=3_000, eval_every=0,
                                             run_dir=str(run_dir), **COMMON))
    print(f"BC (td3_bc alpha=0, 3000 steps): {result['eval']['mean']:.1f} (normalised "
          f"{result['normalized_return']:.1f}), {result['wall_s']:.0f} s")
    return result["eval"]["mean"]


@pytest.mark.slow
@pytest.mark.parametrize("agent", sorted(BUDGETS))
def test_offline_rl_beats_the_behaviour_and_bc_on_medium_replay(agent, medium_replay, bc_return, tmp_path):
    path, summary = medium_replay
    reference = summary["reference_scores"]
    low, high = reference["ref_min_score"], reference["ref_max_score"]
    dataset = demos.load(path)
    behaviour = float(np.mean([np.sum(ep.rewards, dtype=np.float64) for ep in dataset]))
    train, config, budget = BUDGETS[agent]
    result = train(config(demos=str(path), run_dir=str(tmp_path / agent), **COMMON, **budget))
    mean = result["eval"]["mean"]
    print(f"{agent}: {mean:.1f} (normalised {result['normalized_return']:.1f}) after {result['gradient_steps']} steps "
          f"in {result['wall_s']:.0f} s; dataset {behaviour:.1f} (normalised "
          f"{normalized_score(behaviour, low, high):.1f}, {dataset.num_steps} transitions), BC {bc_return:.1f}")
    assert result["normalized_return"] == pytest.approx(normalized_score(mean, low, high))
    assert normalized_score(mean, low, high) >= normalized_score(behaviour, low, high) + MARGIN
    assert mean > bc_return
