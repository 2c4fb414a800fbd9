"""Multi-task DQN learns every task of CartPole-MT (issue 24, learning test).

Hard parameter sharing (preset ``cartpole-mt``: a shared [256, 256] trunk, one linear Q head per task) for 20,000
env steps instead of the preset's 200,000 (schedules scaled to that budget), seed 0: 28 s of CPU on this machine's
one core. Greedy return over 10 episodes per task (seeds 20,000-20,009), measured on this stack:

    task (half pole length, cart mass)   0 (0.5, 1.0)   1 (0.25, 0.3)   2 (1.0, 3.0)   3 (0.25, 3.0)
    multi-task DQN, 20k steps                 109.7           191.3           151.8           159.8
    uniform random actions                     21.0             8.3            53.2            21.3

(random: 20 episodes per task, seeds 100-119, actions seeded 0). The test asks each task for more than twice its
random return plus 20.
"""

from __future__ import annotations

import pytest
from rlkit.agents.dqn import DQNConfig, load_policy, train
from rlkit.envs import make_env

from rlkit.checkpoint import load_checkpoint
from rlkit.evaluation import evaluate
from rlkit.policy import RandomPolicy

SUITE = "rlkit/CartPole-MT-v0"


def per_task_returns(policy, episodes: int, seed: int) -> list[float]:
    returns = []
    for task in range(4):
        def factory(render_mode=None, task=task):
            return make_env(SUITE, env_kwargs={"task": task})
        returns.append(evaluate(policy, factory, episodes, seed=seed)["mean"])
    return returns


@pytest.mark.slow
def test_hard_shared_dqn_beats_random_on_every_cartpole_task(tmp_path):
    cfg = DQNConfig.from_preset("cartpole-mt", total_steps=20_000, eval_every=0, target_return=None, progress=False,
                                run_dir=str(tmp_path / "run"))
    result = train(cfg)
    trained = per_task_returns(load_policy(load_checkpoint(result["run_dir"])), episodes=10, seed=20_000)
    random = per_task_returns(RandomPolicy(make_env(SUITE).action_space, seed=0), episodes=20, seed=100)
    print("trained", trained, "random", random)
    assert all(t > 2 * r + 20 for t, r in zip(trained, random)), (trained, random)
