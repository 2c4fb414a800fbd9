"""The web rater's side of ``imitation``: where fragments come from, the gatherer, and offline reward training.

:mod:`rlkit.apps.prefs_web` stores pairs and answers and serves the page; this module connects it to
imitation's ``PreferenceComparisons``, which runs unchanged:

* :class:`EpisodeOrigin` wraps each env of the agent's vector env: every reset gets an explicit seed
  (drawn from a seeded stream when the caller gives none) and every step's ``info`` carries
  ``rlkit_origin = (env rank, episode number, reset seed, step)``. imitation keeps infos in its
  trajectories and fragments, so each queried fragment knows its episode and steps; the actions of
  that episode (kept in an :class:`EpisodeLog`) replay it for the clip.
* :class:`WebGatherer` is an imitation ``PreferenceGatherer``: it commits the round to the store,
  renders the clips pair by pair (each pair is served as soon as its clips exist), waits until every
  pair is answered, and returns P(fragment 1 better) per pair, NaN for "can't tell".
* :class:`SkipAwarePreferenceDataset` drops the NaN pairs when they are pushed (the paper leaves
  incomparable pairs out of the database).
* :class:`StoredRoundsFragmenter` makes ``--resume`` work: a resumed run trains again from the start
  with the same seeds, and for every round already in the store it hands out the stored fragments
  (the ones people labelled) instead of new ones, so their answers are reused and only the
  unanswered pairs are served again. The base fragmenter still runs, so the random streams advance
  exactly as in the first run. Compute is spent again; a person's time is not.
* :func:`train_reward_from_store` trains a reward net on the stored labels alone (offline).
"""

from __future__ import annotations

import secrets
import sys
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from imitation.algorithms import preference_comparisons as pc
from imitation.data.types import TrajectoryWithRew

from rlkit.apps.prefs_web import (  # noqa: F401  (the preference learner reaches these through this module)
    PREFS_DIR,
    LabelQueue,
    PreferenceStore,
    PrefsServer,
    store_status,
)
from rlkit.errors import RLKitError

ORIGIN_KEY = "rlkit_origin"


class EpisodeLog:
    """The actions of recent episodes, keyed by (env rank, episode number); oldest dropped past ``max_steps``."""

    def __init__(self, max_steps: int = 1_000_000) -> None:
        self.max_steps = max_steps
        self.episodes: OrderedDict[tuple[int, int], list[np.ndarray]] = OrderedDict()
        self.steps = 0

    def start(self, key: tuple[int, int]) -> None:
        self.episodes[key] = []
        while self.steps > self.max_steps and len(self.episodes) > 1:
            _, dropped = self.episodes.popitem(last=False)
            self.steps -= len(dropped)

    def add(self, key: tuple[int, int], action: Any) -> None:
        self.episodes[key].append(np.array(action, copy=True))
        self.steps += 1

    def actions(self, key: tuple[int, int], end: int) -> np.ndarray:
        if key not in self.episodes or len(self.episodes[key]) < end:
            raise RLKitError(f"the actions of episode {key} are no longer kept (EpisodeLog max_steps="
                             f"{self.max_steps}); cannot render its fragment")
        return np.stack(self.episodes[key][:end])


class EpisodeOrigin(gym.Wrapper):
    """Seeds every reset explicitly and tags each step's info with (rank, episode, reset seed, step)."""

    def __init__(self, env: gym.Env, log: EpisodeLog, rank: int, seed: int) -> None:
        super().__init__(env)
        self.log, self.rank = log, rank
        self.seed_stream = np.random.default_rng([seed, rank, 0x5EED])
        self.episode, self.reset_seed, self.t = -1, 0, 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        self.reset_seed = int(self.seed_stream.integers(2**31 - 1)) if seed is None else int(seed)
        self.episode, self.t = self.episode + 1, 0
        self.log.start((self.rank, self.episode))
        return self.env.reset(seed=self.reset_seed, options=options)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        self.log.add((self.rank, self.episode), action)
        obs, reward, terminated, truncated, info = self.env.step(action)
        info = {**info, ORIGIN_KEY: (self.rank, self.episode, self.reset_seed, self.t)}
        self.t += 1
        return obs, reward, terminated, truncated, info


def make_origin_venv(env_id: str, num_envs: int, seed: int, env_kwargs: dict | None, log: EpisodeLog) -> Any:
    """Like ``adversarial.make_sb3_venv`` with :class:`EpisodeOrigin` innermost (it must see the env's own actions)."""
    from imitation.data.wrappers import RolloutInfoWrapper
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from rlkit.envs import make_env

    def factory(i: int) -> Callable[[], gym.Env]:
        return lambda: RolloutInfoWrapper(Monitor(EpisodeOrigin(
            make_env(env_id, seed=seed + i, env_kwargs=env_kwargs), log, i, seed)))

    venv = DummyVecEnv([factory(i) for i in range(num_envs)])
    venv.seed(seed)
    return venv


def _origin(fragment: TrajectoryWithRew) -> tuple[tuple[int, int], int, int, int]:
    """((rank, episode), reset seed, start, end) of a fragment, from its steps' infos."""
    infos = fragment.infos
    if infos is None or len(infos) == 0 or ORIGIN_KEY not in infos[0]:
        raise RLKitError("a fragment carries no origin; the web rater needs the agent's envs wrapped in "
                         "EpisodeOrigin (make_origin_venv)")
    rank, episode, seed, start = infos[0][ORIGIN_KEY]
    last = infos[-1][ORIGIN_KEY]
    if last[:3] != (rank, episode, seed) or last[3] != start + len(fragment.acts) - 1:
        raise RLKitError("a fragment spans more than one episode; cannot replay it")
    return (rank, episode), seed, start, start + len(fragment.acts)


class WebGatherer(pc.PreferenceGatherer):
    """imitation's gatherer interface over the answer store: people answer through the web page.

    Args:
        store: the run's :class:`PreferenceStore`.
        queue: the :class:`LabelQueue` the server serves from.
        log: the :class:`EpisodeLog` the agent's envs write to.
        rng: draws which fragment of a pair is shown on the left.
        url: printed with each round, so a rater knows where to go.
    """

    def __init__(self, store: PreferenceStore, queue: LabelQueue, log: EpisodeLog, rng: np.random.Generator,
                 url: str = "", custom_logger: Any = None) -> None:
        super().__init__(custom_logger=custom_logger)
        self.store, self.queue, self.log, self.rng, self.url = store, queue, log, rng, url
        self.round = 0

    def __call__(self, fragment_pairs: Sequence[tuple[TrajectoryWithRew, TrajectoryWithRew]]) -> np.ndarray:
        round_index, self.round = self.round, self.round + 1
        if round_index in self.store.rounds:  # resumed: the stored fragments came back (StoredRoundsFragmenter)
            ids = [p["pair"] for p in self.store.rounds[round_index]["pairs"]]
            if len(ids) != len(fragment_pairs):
                raise RLKitError(f"round {round_index} holds {len(ids)} stored pairs but {len(fragment_pairs)} "
                                 "were queried; resume with the run's own config (total_comparisons, num_iterations)")
        else:
            ids = self.commit_round(round_index, fragment_pairs)
        open_ids = [p for p in ids if p not in self.store.resolved]
        self.queue.open_round(round_index, ids)
        if open_ids:
            print(f"rlkit prefs: round {round_index}: {len(open_ids)} pairs to label at {self.url}",
                  file=sys.stderr, flush=True)
        for pair_id in open_ids:
            self.store.render_pair(pair_id)
            self.queue.mark_ready(pair_id)
        self.queue.wait_resolved(ids)
        self.queue.set_status("training")
        preferences = self.store.preferences(ids)
        if np.isnan(preferences).all() and not any(a["preference"] is not None for a in self.store.resolved.values()):
            raise RLKitError("every pair so far was answered \"can't tell\"; the reward model has nothing to learn "
                             "from. Start again and answer some pairs left or right")
        self.logger.record("skipped", float(np.isnan(preferences).mean()))
        return preferences

    def commit_round(self, round_index: int, fragment_pairs: Sequence[tuple[TrajectoryWithRew, TrajectoryWithRew]]
                     ) -> list[str]:
        pairs, prefixes = [], []
        for i, pair in enumerate(fragment_pairs):
            origins = []
            for fragment in pair:
                key, seed, start, end = _origin(fragment)
                prefixes.append(self.log.actions(key, end))
                origins.append({"seed": int(seed), "start": int(start), "end": int(end)})
            # 64 random bits: a page on another site cannot name a pair (secrets, not self.rng: the seeded
            # stream must draw exactly as in the first run when a run is resumed)
            pair_id = f"{round_index:04d}-{i:04d}-{secrets.token_hex(8)}"
            pairs.append({"pair": pair_id, "left_fragment": int(self.rng.integers(1, 3)), "fragments": origins})
        arrays: dict[str, np.ndarray] = {}
        for which in (1, 2):
            frags = [p[which - 1] for p in fragment_pairs]
            arrays[f"obs{which}"] = np.stack([np.asarray(f.obs) for f in frags])
            arrays[f"acts{which}"] = np.stack([np.asarray(f.acts) for f in frags])
            arrays[f"rews{which}"] = np.stack([np.asarray(f.rews, np.float32) for f in frags])
            arrays[f"terminal{which}"] = np.array([bool(f.terminal) for f in frags])
        arrays["prefix_acts"] = np.concatenate(prefixes)
        arrays["prefix_offsets"] = np.concatenate([[0], np.cumsum([len(p) for p in prefixes])])
        self.store.add_round(round_index, pairs, arrays)
        return [p["pair"] for p in pairs]


def stored_fragment_pairs(store: PreferenceStore, round_index: int) -> list[tuple[TrajectoryWithRew, ...]]:
    """A stored round's fragment pairs as imitation trajectories (fragment 1, fragment 2)."""
    a = store.load_round(round_index)
    n = len(store.rounds[round_index]["pairs"])
    return [tuple(TrajectoryWithRew(obs=a[f"obs{w}"][i], acts=a[f"acts{w}"][i], infos=None,
                                    rews=a[f"rews{w}"][i].astype(np.float32), terminal=bool(a[f"terminal{w}"][i]))
                  for w in (1, 2)) for i in range(n)]


class StoredRoundsFragmenter(pc.Fragmenter):
    """Hands out the stored fragments of rounds already in the store (resume), new ones after that."""

    def __init__(self, base: pc.Fragmenter, store: PreferenceStore, custom_logger: Any = None) -> None:
        super().__init__(custom_logger=custom_logger)
        self.base, self.store, self.round = base, store, 0
        self.reproduced: dict[int, bool] = {}  # round -> the resumed run sampled the stored fragments again

    def __call__(self, trajectories: Sequence[TrajectoryWithRew], fragment_length: int, num_pairs: int
                 ) -> Sequence[tuple[TrajectoryWithRew, TrajectoryWithRew]]:
        round_index, self.round = self.round, self.round + 1
        fresh = self.base(trajectories, fragment_length, num_pairs)  # keeps the random stream as in the first run
        if round_index not in self.store.rounds:
            return fresh
        stored = stored_fragment_pairs(self.store, round_index)
        # With the same seeds the replayed run queries the same fragments again; say so when it does not
        # (e.g. after a library upgrade): the stored ones, which people labelled, are used either way.
        same = len(fresh) == len(stored) and all(np.array_equal(np.asarray(f.obs), s.obs)
                                                  for a, b in zip(fresh, stored) for f, s in zip(a, b))
        self.reproduced[round_index] = same
        if not same:
            print(f"rlkit prefs: resumed round {round_index} sampled other fragments than the first run; using the "
                  "stored (labelled) ones", file=sys.stderr, flush=True)
        return stored


class SkipAwarePreferenceDataset(pc.PreferenceDataset):
    """imitation's PreferenceDataset, leaving out pairs whose preference is NaN ("can't tell")."""

    def push(self, fragments: Sequence[Any], preferences: np.ndarray) -> None:
        keep = ~np.isnan(preferences)
        if keep.any():
            super().push([f for f, k in zip(fragments, keep) if k], preferences[keep])


def labelled_dataset(store: PreferenceStore) -> SkipAwarePreferenceDataset:
    """Every answered, comparable pair of the store as an imitation preference dataset (first answer counts)."""
    dataset = SkipAwarePreferenceDataset()
    for round_index in sorted(store.rounds):
        ids = [p["pair"] for p in store.rounds[round_index]["pairs"]]
        answered = [k for k, p in enumerate(ids) if p in store.resolved]
        if answered:
            pairs = stored_fragment_pairs(store, round_index)
            dataset.push([pairs[k] for k in answered], store.preferences([ids[k] for k in answered]))
    return dataset


def train_reward_from_store(run_dir: str | Path, hidden: Sequence[int] = (32, 32), epochs: int = 20,
                            lr: float = 1e-3, batch_size: int = 32, seed: int = 0) -> tuple[Any, dict[str, float]]:
    """Train a new reward net offline on a run's stored labels; returns (reward net, metrics).

    Args:
        run_dir: a run of ``rlkit train preference --set rater=web`` (or one served with ``rlkit prefs serve``).
        hidden: hidden sizes of imitation's ``BasicRewardNet``.
        epochs: passes over the labelled pairs.
        lr: Adam learning rate.
        batch_size: pairs per gradient step.
        seed: seeds torch and the batch order.

    The metrics are the number of labels and the trained model's accuracy on them (pairs it ranks
    the way the people did, equal answers left out).
    """
    import torch
    from imitation.rewards.reward_nets import BasicRewardNet
    from imitation.util import logger as imit_logger
    from imitation.util.networks import RunningNorm

    from rlkit.spaces import space_from_json

    store = PreferenceStore(run_dir, write=False)
    dataset = labelled_dataset(store)
    if len(dataset) == 0:
        raise RLKitError(f"{run_dir} holds no answered pairs (other than \"can't tell\") to train on")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    obs_space = space_from_json(store.meta["observation_space"])
    act_space = space_from_json(store.meta["action_space"])
    net = BasicRewardNet(obs_space, act_space, hid_sizes=list(hidden), normalize_input_layer=RunningNorm)
    log = imit_logger.configure(format_strs=[])
    model = pc.PreferenceModel(net)
    trainer = pc.BasicRewardTrainer(model, pc.CrossEntropyRewardLoss(), rng=rng, batch_size=batch_size,
                                    epochs=epochs, lr=lr, custom_logger=log)
    trainer.train(dataset)
    with torch.no_grad():
        probs = model(list(zip(dataset.fragments1, dataset.fragments2)))[0].numpy()
    decided = dataset.preferences != 0.5
    accuracy = float(((probs > 0.5) == (dataset.preferences > 0.5))[decided].mean()) if decided.any() else float("nan")
    return net, {"labels": len(dataset), "accuracy": accuracy}
