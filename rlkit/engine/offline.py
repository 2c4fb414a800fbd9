"""The offline loop, written once: learn from a fixed dataset with rewards, stepping the env only to evaluate
(TD3+BC, IQL, CQL).

An agent declares an :class:`OfflineLearner`: its networks, one gradient step on a minibatch
(:meth:`~OfflineLearner.update`) and what it checkpoints. :func:`train_offline` runs it::

    load the dataset (``cfg.demos``): rewards required, spaces checked against the env and the learner
    observations normalised by the dataset's mean and std (normalize_obs), rewards scaled (normalize_reward)
    for each gradient step up to total_steps:
        update(a uniform minibatch of the dataset's transitions)
        run.step_done: evaluation in the env every eval_every gradient steps, log row, checkpoint
    the final checkpoint, evaluation and final.json

Every counter is in gradient steps (``total_steps``, ``eval_every``, ``checkpoint_every``, ``log_every``), as
for BC; ``final.json`` says ``env_steps: 0`` and ``gradient_steps: N``. Evaluations also log the D4RL
normalised return ``100 * (R - R_random) / (R_expert - R_random)`` (``eval/normalized_return``; Fu et al. 2020,
https://arxiv.org/abs/2004.07219), from the dataset's reference scores (``manifest.json``'s
``reference_scores``, which ``rlkit offline-data`` writes) or from ``ref_min_score``/``ref_max_score``.

The minibatches come from the dataset's transitions held as tensors and indexed with the run's numpy
Generator, rather than from :class:`rlkit.buffers.ReplayBuffer`: that buffer stores each observation once and
leaves its newest transition out of sampling (its next observation is not written yet), which here would drop
one transition, and filling it costs a Python call per transition. A resumed run rebuilds the same tensors
from the dataset (its size and reward sum are checked against the checkpoint's) and restores every RNG
stream, so it continues as the uninterrupted run would have.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlkit.callbacks import Callback
from rlkit.config import BaseConfig, opt, validate_config
from rlkit.engine.common import EnvLearner, resume
from rlkit.errors import AlreadyFinished, RLKitError
from rlkit.fast.numpy_forward import numpy_forward, numpy_squashed_gaussian
from rlkit.nets import DeterministicActor, SquashedGaussianActor, is_image_space
from rlkit.normalizers import ObsNormalizer
from rlkit.policy import Batch, Policy, TorchPolicy
from rlkit.registry import eval_env_factory
from rlkit.run import Run

# TD3+BC's epsilon on the observations' standard deviation (Fujimoto & Gu 2021, and CORL's compute_mean_std).
OBS_STD_EPS = 1e-3


@dataclass
class OfflineOptions:
    """Options every offline learner shares, mixed into its config before :class:`BaseConfig`; the counters of
    :class:`BaseConfig` are re-declared here in gradient steps."""

    demos: str | None = opt(None, "dataset with rewards to learn from: `rlkit offline-data` builds D4RL-style ones, "
                                  "`rlkit demos record ... --keep-rewards` records one; a Minari dataset (its "
                                  "directory, or an id in $MINARI_DATASETS_PATH) is converted in memory")
    total_steps: int = opt(1_000_000, "gradient steps to train for (the env is stepped only to evaluate)", low=1)
    eval_every: int = opt(5_000, "evaluate in the env every this many gradient steps (0 = only at the end)", low=0)
    checkpoint_every: int = opt(50_000, "save a checkpoint every this many gradient steps (0 = only at the end)",
                                low=0)
    log_every: int = opt(1_000, "write metrics (CSV, TensorBoard) every this many gradient steps", low=0)
    eval_episodes: int = opt(10, "episodes of each evaluation (the papers and CORL: 10)", low=1)
    batch_size: int = opt(256, "minibatch size (the papers and CORL: 256)", low=1)
    gamma: float = opt(0.99, "discount factor", low=0, high=1)
    normalize_obs: bool = opt(True, "normalise observations by the dataset's mean and std + 1e-3 (TD3+BC; CORL "
                                    "does it for all three), kept in checkpoints")
    normalize_reward: bool = opt(False, "scale rewards by L / (max - min episode return of the dataset), L its "
                                        "longest episode (IQL's locomotion recipe, where L = 1000)")
    ref_min_score: float | None = opt(None, "return of a random policy for the normalised score (None: the "
                                            "dataset's reference_scores)")
    ref_max_score: float | None = opt(None, "return of an expert for the normalised score (None: the dataset's "
                                            "reference_scores)")

    def validate_offline(self) -> None:
        both = (self.ref_min_score is None) == (self.ref_max_score is None)
        if not both:
            raise RLKitError("set both ref_min_score and ref_max_score (a random and an expert return), or neither")
        if self.ref_min_score is not None and self.ref_min_score == self.ref_max_score:
            raise RLKitError(f"ref_min_score and ref_max_score are both {self.ref_min_score}; the normalised score "
                             "divides by their difference")


# ALGO LOGIC: the one formula the loop owns (the learners' losses live in their files).
def normalized_score(episode_return: float, ref_min: float, ref_max: float) -> float:
    """D4RL's normalised score: 100 * (R - R_random) / (R_expert - R_random); 0 is random, 100 expert."""
    return 100.0 * (episode_return - ref_min) / (ref_max - ref_min)


class OfflineLearner(EnvLearner):
    """What an offline agent declares for :func:`train_offline` (subclass it).

    Built once the run has seeded every RNG, as ``Learner(cfg, observation_space, action_space, normalizer)``:
    ``normalizer`` is the dataset's observation normaliser (an :class:`ObsNormalizer`; None without
    ``normalize_obs``); minibatches arrive normalised, and ``self.policy`` (what evaluations score) must apply it
    to raw observations (:func:`actor_policy` does).
    """

    policy: Policy

    @staticmethod
    def check_spaces(observation_space: gym.Space, action_space: gym.Space, env_id: str, agent: str) -> None:
        """Continuous actions with finite bounds, flat observations (TD3+BC, IQL and CQL)."""
        if not isinstance(action_space, gym.spaces.Box):
            raise RLKitError(f"{agent} learns continuous (Box) actions, but the dataset's env {env_id} has "
                             f"{action_space}; use a dataset of a continuous-action env (or bc for discrete actions)")
        if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
            raise RLKitError(f"{agent} needs finite action bounds, but {env_id} has {action_space}; record the "
                             "dataset in a wrapped env (gymnasium.wrappers.ClipAction or RescaleAction)")
        if is_image_space(observation_space):
            raise RLKitError(f"{agent} takes flat observations, but {env_id} has images {observation_space}")

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor | float]:
        """One gradient step on ``batch`` (``step``: gradient steps done before it); returns the scalars to log
        (detached tensors are fine: they become floats only when a row is written)."""
        raise NotImplementedError

    def scalars(self) -> dict[str, float]:
        """Extra scalars for a log row (a learning rate, a temperature)."""
        return {}


def actor_policy(actor: DeterministicActor | SquashedGaussianActor, observation_space: gym.Space,
                 action_space: gym.spaces.Box, normalizer: ObsNormalizer | None) -> TorchPolicy:
    """The actor as the Policy evaluations score: raw observations normalised as in training, then mu(s) (a
    :class:`DeterministicActor`) or tanh of the mean (a :class:`SquashedGaussianActor`; sampled when not
    deterministic), reshaped to the action space and kept in its bounds. Small batches act in numpy."""
    low, high, shape = action_space.low.astype(np.float32), action_space.high.astype(np.float32), action_space.shape
    low_t, high_t = torch.from_numpy(low.reshape(-1)), torch.from_numpy(high.reshape(-1))
    squashed = isinstance(actor, SquashedGaussianActor)

    def act_fn(module: torch.nn.Module, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        obs = normalizer.torch(obs) if normalizer is not None else obs.float()
        out = module.act(obs, deterministic) if squashed else module(obs)
        return torch.clamp(out, low_t.to(obs.device), high_t.to(obs.device)).reshape(len(obs), *shape)

    net_np = numpy_squashed_gaussian(actor, rng=None) if squashed else numpy_forward(actor)

    def fast(obs: np.ndarray) -> np.ndarray:
        obs = normalizer(obs) if normalizer is not None else obs
        out = net_np(obs, True) if squashed else net_np(obs)
        return np.clip(np.asarray(out, dtype=np.float32).reshape(len(obs), *shape), low, high)

    return TorchPolicy(actor, act_fn, action_space, observation_space, fast=fast if net_np is not None else None)


# ---------------------------------------------------------------------------------------------------- the data
def _space_text(space: gym.Space) -> str:
    """A space in one line, with a small Box's bounds (they decide whether the dataset's actions fit the env)."""
    if isinstance(space, gym.spaces.Box) and space.low.size <= 8:
        return f"Box(low={space.low.reshape(-1).tolist()}, high={space.high.reshape(-1).tolist()})"
    return repr(space).replace("\n", " ")


def _same_space(ours: gym.Space, theirs: gym.Space, bounds: bool) -> bool:
    if type(ours) is not type(theirs) or ours.shape != theirs.shape:
        return False
    if isinstance(ours, gym.spaces.Box) and bounds:
        return bool(np.allclose(ours.low, theirs.low) and np.allclose(ours.high, theirs.high))
    return ours == theirs if isinstance(ours, gym.spaces.Discrete) else True


def load_dataset(cfg: BaseConfig, agent: str, learner_class: type[OfflineLearner]) -> Any:
    """The dataset ``cfg.demos`` (rlkit's, or Minari's by directory or id) as a :class:`rlkit.demos.Dataset`,
    checked before a run directory is written: it exists, holds rewards and at least a minibatch of transitions, and
    fits the env it is evaluated in (action bounds included) and the learner. Fills ``cfg.env_id`` / ``env_kwargs``
    from the dataset when not given."""
    if not cfg.demos:
        raise RLKitError(f"{agent} learns from a dataset with rewards: pass --demos DATASET (build D4RL-style ones "
                         "with `rlkit offline-data --env Pendulum-v1 --out DIR`)")
    dataset = _read_dataset(str(cfg.demos))
    if not dataset.has_rewards:
        raise RLKitError(f"dataset {cfg.demos} stores no rewards, and offline RL learns from them; record it with "
                         "`rlkit demos record ... --keep-rewards` (or use bc, which needs none)")
    if dataset.num_steps < cfg.batch_size:
        raise RLKitError(f"dataset {cfg.demos} holds {dataset.num_steps} transitions, fewer than batch_size="
                         f"{cfg.batch_size}; lower it (--set batch_size={max(dataset.num_steps, 1)}) or record more "
                         "episodes")
    from_dataset = cfg.env_id is None
    if from_dataset:
        cfg.env_id = dataset.env_id  # a module:Env-v0 id named only in the manifest is refused here, in one line
        cfg.env_kwargs = cfg.env_kwargs or dict(dataset.meta.get("env_kwargs") or {})
    _check_env(cfg, dataset, from_dataset)
    learner_class.check_spaces(dataset.observation_space, dataset.action_space, cfg.env_id, agent)
    return dataset


def _read_dataset(name: str) -> Any:
    """An rlkit dataset directory, or a Minari dataset (its ``DIR/name-vN`` directory or an id in the local Minari
    root) converted in memory: Minari's arrays as they are, its reference scores kept (``demos.minari_io``)."""
    from rlkit import demos
    from rlkit.demos.minari_io import looks_like_minari_id, minari_root, resolve_minari

    minari_path = resolve_minari(name)
    if minari_path is not None:
        dataset = demos.load_minari(minari_path)
        dataset.path = minari_path  # what errors and the checkpoint's fingerprint name
        return dataset
    if looks_like_minari_id(name):
        raise RLKitError(f"dataset {name} is neither a directory nor a Minari dataset in the local Minari root "
                         f"{minari_root()}; set MINARI_DATASETS_PATH to the root that holds it, or pass its directory")
    if not Path(name).exists():
        raise RLKitError(f"dataset {name} does not exist; build one with `rlkit offline-data --out DIR` or record "
                         f"one with `rlkit demos record ... --keep-rewards --out {name}`")
    return demos.load(name)


def _check_env(cfg: BaseConfig, dataset: Any, from_dataset: bool) -> None:
    """The env the policy is evaluated in must take the dataset's actions as they are (same bounds) and give its
    observations' shape: the learner never sees the env before its first evaluation."""
    env = eval_env_factory(cfg)()
    try:
        for name, ours, theirs in (("action", env.action_space, dataset.action_space),
                                   ("observation", env.observation_space, dataset.observation_space)):
            if _same_space(ours, theirs, bounds=name == "action"):
                continue
            fix = ("record the dataset in the env as evaluated, or name an env wrapped to its spaces with --env "
                   "pkg.module:Env-v0" if from_dataset else
                   f"evaluate in the env the dataset was recorded on ({dataset.meta['env_id']}: omit --env)")
            raise RLKitError(f"dataset {dataset.path} has {name} space {_space_text(theirs)}, but the env "
                             f"{cfg.env_id} has {_space_text(ours)}; {fix}")
    finally:
        env.close()


class OfflineData:
    """A dataset's transitions as tensors (observations normalised, rewards scaled), sampled uniformly.

    Attributes:
        normalizer: the observation normaliser (None without ``normalize_obs``).
        reward_scale: the factor the rewards were multiplied by (1.0 without ``normalize_reward``).
        reference: ``(ref_min_score, ref_max_score)`` of the normalised score, or None when unknown.
    """

    def __init__(self, dataset: Any, cfg: BaseConfig, rng: np.random.Generator) -> None:
        self.path, self.rng, self.device = str(dataset.path), rng, cfg.device
        self.observation_space, self.action_space = dataset.observation_space, dataset.action_space
        tr = dataset.transitions()
        rewards = np.concatenate([ep.rewards for ep in dataset]).astype(np.float32)
        obs, next_obs = tr.obs.astype(np.float32), tr.next_obs.astype(np.float32)
        self.normalizer = dataset_normalizer(obs) if cfg.normalize_obs else None
        if self.normalizer is not None:
            obs, next_obs = self.normalizer(obs), self.normalizer(next_obs)
        self.reward_scale = reward_scale(dataset) if cfg.normalize_reward else 1.0
        self.size, self.reward_sum = len(rewards), float(rewards.astype(np.float64).sum())

        def as_tensor(array: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(array), device=cfg.device)

        self.obs, self.next_obs = as_tensor(obs), as_tensor(next_obs)
        self.actions = as_tensor(np.asarray(tr.acts, dtype=np.float32).reshape(self.size, -1))
        self.rewards = as_tensor(rewards * np.float32(self.reward_scale))
        self.terminated = as_tensor(tr.dones.astype(np.float32))
        self.discounts = torch.full((cfg.batch_size,), float(cfg.gamma), device=cfg.device)
        self.weights = torch.ones(cfg.batch_size, device=cfg.device)
        self.reference = reference_scores(dataset, cfg)

    def sample(self, batch_size: int) -> Batch:
        """A uniform minibatch (with replacement, as CORL's and the papers' buffers draw), from the run's RNG."""
        indices = self.rng.integers(self.size, size=batch_size)
        idx = torch.from_numpy(indices).to(self.device)
        return Batch(obs=self.obs[idx], actions=self.actions[idx], rewards=self.rewards[idx],
                     next_obs=self.next_obs[idx], terminated=self.terminated[idx],
                     discounts=self.discounts[:batch_size], weights=self.weights[:batch_size], indices=indices)

    def fingerprint(self) -> dict[str, Any]:
        """What a checkpoint records of the dataset, to refuse resuming on another one."""
        return {"path": self.path, "transitions": self.size, "reward_sum": self.reward_sum}

    def check_same(self, saved: dict[str, Any] | None) -> None:
        if saved is None:
            return
        if saved["transitions"] != self.size or not math.isclose(saved["reward_sum"], self.reward_sum, rel_tol=1e-9,
                                                                  abs_tol=1e-6):
            raise RLKitError(f"dataset {self.path} is not the one this run trained on ({saved['path']}: "
                             f"{saved['transitions']} transitions, now {self.size}); resume with --demos "
                             f"{saved['path']} as it was, or start a new run")


def dataset_normalizer(obs: np.ndarray) -> ObsNormalizer:
    """(obs - mean) / (std + 1e-3) over the dataset's observations (TD3+BC), unclipped, as an ObsNormalizer
    (which divides by sqrt(var + 1e-8): var is set so that this equals std + 1e-3)."""
    normalizer = ObsNormalizer(obs.shape[1:], clip=math.inf)
    std = obs.std(axis=0, dtype=np.float64) + OBS_STD_EPS
    normalizer.load_state_dict({"mean": obs.mean(axis=0, dtype=np.float64), "var": std**2 - 1e-8,
                                "count": float(len(obs)), "clip": math.inf})
    return normalizer


def reward_scale(dataset: Any) -> float:
    """IQL's locomotion reward normalisation, L / (max - min episode return), L the longest episode (1000 on
    D4RL's locomotion tasks, the paper's constant)."""
    returns = [float(np.sum(ep.rewards, dtype=np.float64)) for ep in dataset]
    spread = max(returns) - min(returns)
    if spread <= 0:
        raise RLKitError(f"normalize_reward divides by the spread of the dataset's episode returns, but all "
                         f"{len(returns)} of {dataset.path} return {returns[0]:.6g}; set normalize_reward=false")
    return max(ep.length for ep in dataset) / spread


def reference_scores(dataset: Any, cfg: BaseConfig) -> tuple[float, float] | None:
    """``(ref_min_score, ref_max_score)``: the config's, else the dataset manifest's ``reference_scores``."""
    if cfg.ref_min_score is not None:
        return float(cfg.ref_min_score), float(cfg.ref_max_score)
    ref = dataset.meta.get("reference_scores")
    try:
        low, high = float(ref["ref_min_score"]), float(ref["ref_max_score"])
    except (TypeError, KeyError, ValueError):
        return None  # a dataset without them: raw returns only
    if not (math.isfinite(low) and math.isfinite(high)) or low == high:
        raise RLKitError(f"dataset {dataset.path}'s reference_scores are unusable ({ref}); set ref_min_score and "
                         "ref_max_score")
    return low, high


# ---------------------------------------------------------------------------------------------------- the loop
class _ScoredEnv(gym.Wrapper):
    """The evaluation env: it sums each episode's rewards and, when the evaluation closes it (before the run
    writes its row), records the mean's normalised score in the log row and in ``scores``."""

    def __init__(self, env: gym.Env, run: Run, reference: tuple[float, float], scores: dict[str, Any]) -> None:
        super().__init__(env)
        self.run, self.reference, self.scores = run, reference, scores
        self.returns: list[float] = []
        self.current = 0.0

    def reset(self, **kwargs: Any) -> Any:
        self.current = 0.0
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> Any:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.current += float(reward)
        if terminated or truncated:
            self.returns.append(self.current)
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        if self.returns:
            score = normalized_score(float(np.mean(self.returns)), *self.reference)
            self.run.logger.record("eval/normalized_return", score)
            self.scores["normalized_return"] = score
        super().close()


def train_offline(agent: str, cfg: BaseConfig, learner_class: type[OfflineLearner], resume_run: bool = False,
                  callbacks: Sequence[Callback] | None = None) -> dict[str, Any]:
    """Train ``learner_class`` on the dataset ``cfg.demos`` (a config with :class:`OfflineOptions`), recorded as
    ``agent``; returns the contents of ``final.json``. Bad input (no dataset, none at that path, no rewards, too
    few transitions, spaces that do not fit) is refused in one line before the run directory is written."""
    validate_config(cfg)
    dataset = load_dataset(cfg, agent, learner_class)
    run = Run(agent, cfg, resume=resume_run, callbacks=callbacks)  # seeds every RNG, sets thread counts
    data = OfflineData(dataset, cfg, run.rng)
    learner = learner_class(cfg, data.observation_space, data.action_space, data.normalizer)
    if run.resume_state is not None:
        data.check_same(run.resume_state.get("dataset"))
        _check_finished(run)
    step = resume(run, learner)

    def state() -> dict[str, Any]:
        return {**learner.state_dict(), "observation_space": data.observation_space,
                "action_space": data.action_space, "dataset": data.fingerprint(), "reward_scale": data.reward_scale,
                "obs_normalizer": data.normalizer.state_dict() if data.normalizer is not None else None}

    final = {"env_steps": 0, "demos": cfg.demos, "transitions": data.size,
             "reference_scores": list(data.reference) if data.reference else None, "normalized_return": None}
    make_eval_env = _eval_env_factory(cfg, run, data.reference, final)
    step = _gradient_steps(run, learner, data, step, state, make_eval_env)
    final["gradient_steps"] = step
    # the final evaluation fills in final["normalized_return"] as its env closes, before final.json is written
    return run.finish(learner.policy, make_eval_env, step, state(), extra=final)


def _eval_env_factory(cfg: BaseConfig, run: Run, reference: tuple[float, float] | None,
                      scores: dict[str, Any]) -> Callable[..., gym.Env]:
    make_env = eval_env_factory(cfg)
    if reference is None:
        return make_env
    return lambda render_mode=None: _ScoredEnv(make_env(render_mode=render_mode), run, reference, scores)


def _gradient_steps(run: Run, learner: OfflineLearner, data: OfflineData, step: int,
                    state: Callable[[], dict[str, Any]], make_eval_env: Callable[..., gym.Env]) -> int:
    """Gradient steps until the budget or a stop (target_return, a callback); returns the steps done."""
    cfg = run.cfg
    done = [step]  # the last whole step: what Ctrl-C or SIGTERM checkpoints
    last: dict[str, Any] = {}

    def scalars() -> dict[str, float]:
        return {**{key: float(value) for key, value in last.items()}, **learner.scalars()}

    with run.checkpoint_on_interrupt(lambda: (done[0], state())):
        while done[0] < cfg.total_steps and run.stopped is None:
            last = learner.update(data.sample(cfg.batch_size), done[0])
            done[0] += 1
            run.step_done(done[0], 1, learner.policy, make_eval_env, state, scalars)
    return done[0]


def _check_finished(run: Run) -> None:
    """``--resume`` of a run that finished its budget (final.json at this step): nothing to do (the offline
    final.json says env_steps 0, so :class:`Run`'s own check, which compares env steps, cannot tell)."""
    final_path = run.dir / "final.json"
    if run.global_step < run.cfg.total_steps or not final_path.is_file():
        return
    try:
        final = json.loads(final_path.read_bytes())
    except (ValueError, UnicodeDecodeError):
        return  # damaged: the run is finished again and final.json rewritten
    if isinstance(final, dict) and final.get("gradient_steps") == run.global_step:
        raise AlreadyFinished(f"{run.dir} already finished ({run.global_step} gradient steps, see final.json); "
                              "pass a larger --steps to train further", final)
