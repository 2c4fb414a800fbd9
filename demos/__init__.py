"""Demonstrations: record from any policy or a person, store crash-safe and reward-free, replay, convert.

The Python API (stable; ``agents/bc.py`` and ``agents/dagger.py`` build on it)::

    from rlkit import demos
    policy = demos.resolve_policy("random", "CartPole-v1")   # or any Policy object
    stats = demos.record(policy, "CartPole-v1", episodes=10, out="data/cartpole", source="random")
    dataset = demos.load("data/cartpole")            # checksums verified; skip_corrupt=True to skip damage
    obs, acts, next_obs, dones = dataset.transitions(torch=True)
    train, val = dataset.split(val_fraction=0.2, seed=0)
    report = demos.replay(dataset, verify=True)      # re-run the actions from the stored seeds
    trajs = demos.to_trajectories(dataset)           # imitation.data.types.Trajectory list

The on-disk format is documented in the README ("Demonstrations") and in :mod:`demos.dataset`;
``demos.repair(path)`` rebuilds a damaged index from the packs.
"""

from rlkit.demos.convert import from_trajectories, load_imitation, save_imitation, to_trajectories
from rlkit.demos.dataset import (
    FORMAT_VERSION,
    Dataset,
    Episode,
    Transitions,
    space_from_json,
    space_to_json,
)
from rlkit.demos.minari_io import from_minari, load_minari, resolve_minari, to_minari
from rlkit.demos.protocol import DiscardEpisode, InteractivePolicy, StopRecording
from rlkit.demos.reader import load
from rlkit.demos.record import record
from rlkit.demos.repair import repair
from rlkit.demos.replay import inspect_dataset, parse_episode_list, replay
from rlkit.demos.sources import resolve_policy
from rlkit.demos.writer import DatasetWriter

__all__ = [
    "FORMAT_VERSION", "Dataset", "DatasetWriter", "DiscardEpisode", "Episode", "InteractivePolicy", "StopRecording",
    "Transitions",
    "from_minari", "from_trajectories", "inspect_dataset", "load", "load_imitation", "load_minari",
    "parse_episode_list", "resolve_minari",
    "record", "repair", "replay", "resolve_policy", "save_imitation", "space_from_json", "space_to_json", "to_minari",
    "to_trajectories",
]
