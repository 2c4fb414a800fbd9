"""Replay buffers: preallocated numpy storage, n-step returns, and prioritized replay on a sum-tree.

Layout is ``[rows, num_envs, ...]``: one row per vector step. Observations are stored once: the
next observation of a transition is the next row's observation, except where the episode ended,
whose true final observation is kept in a small side table. So image frames (uint8) are not
duplicated into ``obs`` and ``next_obs`` arrays, and a truncated episode still bootstraps from
its real last observation. ``terminated`` and ``truncated`` are stored apart.

With ``frame_stack=k`` (Atari's stacked frames, newest last) only the newest frame of each
observation is stored and stacks are rebuilt at sampling time from the previous rows, clamped at
the episode start (where gymnasium's FrameStack repeats the first frame). A 1M-transition Atari
buffer then takes 7 GB instead of 28 GB.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import overload

import gymnasium as gym
import numpy as np
import torch

from rlkit.errors import RLKitError
from rlkit.memory import refuse_if_too_big
from rlkit.policy import Batch


def _space_storage(space: gym.Space) -> tuple[tuple[int, ...], np.dtype]:
    if isinstance(space, gym.spaces.Discrete):
        return (), np.dtype(np.int64)
    if isinstance(space, gym.spaces.Box):
        dtype = space.dtype if space.dtype == np.uint8 else np.dtype(np.float32)
        return tuple(space.shape), np.dtype(dtype)
    raise RLKitError(f"the replay buffer supports Box and Discrete spaces; got {space}")


def _check_memory(capacity: int, obs_shape: tuple[int, ...], obs_dtype: np.dtype, act_shape: tuple[int, ...],
                  act_dtype: np.dtype) -> None:
    """Refuse, with the number, a buffer whose arrays would not fit in the machine's available memory."""
    per_transition = (int(np.prod(obs_shape, dtype=np.int64)) * obs_dtype.itemsize
                      + int(np.prod(act_shape, dtype=np.int64)) * act_dtype.itemsize + 4 + 2 + 8)
    refuse_if_too_big(f"a replay buffer of {capacity:,} transitions", int(capacity) * per_transition,
                      "lower buffer_size")


class Round(Sequence[Batch]):
    """A training round's minibatches: consecutive row blocks of ``size`` of one sampled batch (``whole``), each
    made when it is read. Paths that take the round at once (a target net rating every minibatch, seeds'
    stacked steps) read ``whole`` and skip the per-minibatch slicing."""

    def __init__(self, whole: Batch, size: int) -> None:
        self.whole, self.size = whole, size

    def __len__(self) -> int:
        return len(self.whole.obs) // self.size

    @overload
    def __getitem__(self, i: int) -> Batch: ...

    @overload
    def __getitem__(self, i: slice) -> list[Batch]: ...

    def __getitem__(self, i: int | slice) -> Batch | list[Batch]:
        if isinstance(i, slice):
            return [self[j] for j in range(len(self))[i]]
        if not -len(self) <= i < len(self):
            raise IndexError(f"minibatch {i} of a round of {len(self)}")
        rows = slice(i % len(self) * self.size, (i % len(self) + 1) * self.size)
        return Batch(*(x[rows] for x in self.whole))


class ReplayBuffer:
    """Uniform replay with optional n-step returns.

    Args:
        capacity: transitions to keep (rounded down to a multiple of ``num_envs``).
        observation_space: the single-env observation space; it fixes the observations' shape and dtype.
        action_space: the single-env action space; it fixes the actions' shape and dtype.
        num_envs: parallel envs adding one transition each per :meth:`add`.
        n_step: length of the return; it is cut at the first terminated or truncated step.
        gamma: discount for the n-step return.
        rng: the run's numpy Generator (from ``seed_everything``), for reproducible sampling.
    """

    def __init__(self, capacity: int, observation_space: gym.Space, action_space: gym.Space,
                 num_envs: int = 1, n_step: int = 1, gamma: float = 0.99,
                 rng: np.random.Generator | None = None, frame_stack: int = 0) -> None:
        if n_step < 1:
            raise RLKitError(f"n_step must be at least 1; got {n_step}")
        obs_shape, obs_dtype = _space_storage(observation_space)
        act_shape, act_dtype = _space_storage(action_space)
        if frame_stack and (len(obs_shape) < 2 or obs_shape[0] != frame_stack):
            raise RLKitError(f"frame_stack={frame_stack} needs observations of shape ({frame_stack}, ...); "
                             f"got {obs_shape}")
        self.frame_stack = frame_stack
        _check_memory(capacity, obs_shape[1:] if frame_stack else obs_shape, obs_dtype, act_shape, act_dtype)
        # Stacked storage needs the k-1 rows before a sampled row: keep them out of the sampling range.
        self._history = max(frame_stack - 1, 0)
        self.rows = max(capacity // num_envs, n_step + 2 + self._history)
        self.num_envs = num_envs
        self.n_step = n_step
        self.gamma = gamma
        self.rng = rng if rng is not None else np.random.default_rng()
        self.obs_shape = obs_shape
        stored_shape = obs_shape[1:] if frame_stack else obs_shape
        self.obs = np.zeros((self.rows, num_envs, *stored_shape), dtype=obs_dtype)
        self.step_in_episode = np.zeros((self.rows, num_envs), dtype=np.int64)
        self._episode_t = np.zeros(num_envs, dtype=np.int64)
        self.actions = np.zeros((self.rows, num_envs, *act_shape), dtype=act_dtype)
        self.rewards = np.zeros((self.rows, num_envs), dtype=np.float32)
        self.terminated = np.zeros((self.rows, num_envs), dtype=bool)
        self.truncated = np.zeros((self.rows, num_envs), dtype=bool)
        self._final_obs: dict[tuple[int, int], np.ndarray] = {}
        self.pos = 0
        self.full = False
        self._discounts = gamma ** np.arange(n_step + 1, dtype=np.float64)

    # ------------------------------------------------------------------ writing
    def add(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray,
            terminated: np.ndarray, truncated: np.ndarray) -> None:
        """Store one vector step. ``next_obs`` is the true next observation (``VecStep.final_obs``)."""
        row = self.pos
        self.obs[row] = np.asarray(obs)[:, -1] if self.frame_stack else obs
        self.step_in_episode[row] = self._episode_t
        done = np.logical_or(terminated, truncated)
        self._episode_t = np.where(done, 0, self._episode_t + 1)
        self.actions[row] = np.asarray(actions).reshape(self.actions.shape[1:])
        self.rewards[row] = rewards
        self.terminated[row] = terminated
        self.truncated[row] = truncated
        for env in range(self.num_envs):
            self._final_obs.pop((row, env), None)
            if terminated[env] or truncated[env]:
                self._final_obs[(row, env)] = np.array(next_obs[env], dtype=self.obs.dtype)
        self.pos = (row + 1) % self.rows
        self.full = self.full or self.pos == 0
        self._on_add(row)

    def _on_add(self, row: int) -> None:
        """Hook for the prioritized subclass."""

    # ------------------------------------------------------------------ reading
    def num_valid_rows(self) -> int:
        """Rows whose n-step window and next observation are already written (the newest n are not).

        With frame stacking, the oldest k-1 rows of a full buffer are also left out: the frames
        before them were overwritten.
        """
        if self.full:
            return self.rows - self.n_step - self._history
        return max(self.pos - self.n_step, 0)

    def _first_row(self) -> int:
        return (self.pos + self._history) % self.rows if self.full else 0

    def observations(self, rows: np.ndarray, envs: np.ndarray) -> np.ndarray:
        """The observations stored at (row, env) pairs, with frame stacks rebuilt where needed."""
        if not self.frame_stack:
            return self.obs[rows, envs]
        k = self.frame_stack
        # Frame j of the stack (0 = oldest) is (k-1-j) rows back, but never before the episode start.
        back = np.minimum(np.arange(k - 1, -1, -1)[None, :], self.step_in_episode[rows, envs][:, None])
        return self.obs[(rows[:, None] - back) % self.rows, envs[:, None]]

    def __len__(self) -> int:
        return self.num_valid_rows() * self.num_envs

    def minibatches(self, batch_size: int, count: int, device: torch.device | str = "cpu") -> Sequence[Batch]:
        """``count`` uniform minibatches of ``batch_size`` for one training round, drawn in one gather (the
        round's gradient steps add nothing to the buffer in between, so this is distributed as ``count``
        separate draws of the same size; it consumes the RNG in another order)."""
        return Round(self.sample(batch_size * count).to(device), batch_size)

    def sample(self, batch_size: int) -> Batch:
        valid = self.num_valid_rows()
        if valid == 0:
            raise RuntimeError("cannot sample from a replay buffer with no complete transitions yet")
        rows = (self._first_row() + self.rng.integers(valid, size=batch_size)) % self.rows
        envs = self.rng.integers(self.num_envs, size=batch_size)
        return self._gather(rows, envs, np.ones(batch_size, dtype=np.float32))

    def _gather(self, rows: np.ndarray, envs: np.ndarray, weights: np.ndarray) -> Batch:
        n = self.n_step
        batch = len(rows)
        window = (rows[:, None] + np.arange(n)) % self.rows  # (B, n)
        env_col = envs[:, None]
        rewards = self.rewards[window, env_col]
        term = self.terminated[window, env_col]
        done = term | self.truncated[window, env_col]
        # Steps after the first done belong to another episode: mask them out.
        alive = np.ones((batch, n), dtype=bool)
        if n > 1:
            alive[:, 1:] = np.cumprod(~done[:, :-1], axis=1).astype(bool)
        returns = (rewards * alive * self._discounts[:n]).sum(axis=1)
        last = np.where(done.any(axis=1), done.argmax(axis=1), n - 1)  # index of the last step used
        arange = np.arange(batch)
        end_rows = window[arange, last]
        ended = done[arange, last]
        next_obs = self.observations((end_rows + 1) % self.rows, envs)
        for i in np.flatnonzero(ended):
            next_obs[i] = self._final_obs[(int(end_rows[i]), int(envs[i]))]
        return Batch(
            obs=torch.from_numpy(self.observations(rows, envs)),
            actions=torch.from_numpy(self.actions[rows, envs]),
            rewards=torch.from_numpy(returns.astype(np.float32)),
            next_obs=torch.from_numpy(next_obs),
            terminated=torch.from_numpy(term[arange, last].astype(np.float32)),
            discounts=torch.from_numpy(self._discounts[last + 1].astype(np.float32)),
            weights=torch.from_numpy(weights.astype(np.float32)),
            indices=rows * self.num_envs + envs,
        )

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """No-op for uniform replay (so agents can call it unconditionally)."""

    def state_dict(self) -> dict:
        """Plain data only (arrays, numbers, tuples, dicts), so a checkpoint stores it without pickling objects."""
        state = {k: v for k, v in self.__dict__.items() if k != "rng"}
        if isinstance(state.get("tree"), SumTree):
            state["tree"] = state["tree"].tree
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; a state of another shape, dtype or layout (a damaged or foreign file,
        another ``buffer_size``) is refused with a one-line :class:`RLKitError` instead of being half-applied."""
        mine = self.state_dict()
        if not isinstance(state, dict) or set(state) != set(mine):
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise RLKitError(f"the replay buffer state does not match this buffer (keys {got})")
        for key, value in mine.items():
            new = state[key]
            if isinstance(value, np.ndarray):
                ok = isinstance(new, np.ndarray) and new.shape == value.shape and new.dtype == value.dtype
            else:
                ok = type(new) is type(value) or (isinstance(value, float) and isinstance(new, int))
            if not ok:
                raise RLKitError(f"the replay buffer's {key!r} does not match this buffer's "
                                 f"(buffer_size, spaces or num_envs changed, or the file is damaged)")
        if not 0 <= state["pos"] < self.rows or not all(
                isinstance(k, tuple) and len(k) == 2 and isinstance(v, np.ndarray)
                and v.shape == self.obs_shape for k, v in state["_final_obs"].items()):
            raise RLKitError("the replay buffer's position or final observations are out of range (damaged file)")
        tree = self.__dict__.get("tree")
        self.__dict__.update({k: v for k, v in state.items() if k != "tree"})
        if isinstance(tree, SumTree):
            tree.tree = state["tree"]


class SumTree:
    """A binary sum-tree over ``size`` leaves: O(log n) updates and prefix-sum search, vectorized."""

    def __init__(self, size: int) -> None:
        self.size = 1
        while self.size < size:
            self.size *= 2
        self.tree = np.zeros(2 * self.size, dtype=np.float64)

    @property
    def total(self) -> float:
        return float(self.tree[1])

    def __getitem__(self, leaves: np.ndarray) -> np.ndarray:
        return self.tree[np.asarray(leaves) + self.size]

    def update(self, leaves: np.ndarray, values: np.ndarray) -> None:
        nodes = np.asarray(leaves, dtype=np.int64) + self.size
        self.tree[nodes] = values
        nodes = np.unique(nodes // 2)
        while nodes[0] >= 1:
            self.tree[nodes] = self.tree[2 * nodes] + self.tree[2 * nodes + 1]
            if nodes[0] == 1:
                break
            nodes = np.unique(nodes // 2)

    def find(self, prefix: np.ndarray) -> np.ndarray:
        """Leaf index ``i`` for each value such that sum(leaves < i) <= value < sum(leaves <= i)."""
        values = np.asarray(prefix, dtype=np.float64).copy()
        nodes = np.ones(len(values), dtype=np.int64)
        while nodes[0] < self.size:
            left = 2 * nodes
            left_sum = self.tree[left]
            go_right = values >= left_sum
            values -= left_sum * go_right
            nodes = left + go_right
        return nodes - self.size


class PrioritizedReplayBuffer(ReplayBuffer):
    """Proportional prioritized replay (Schaul et al. 2016).

    P(i) = p_i^alpha / sum_k p_k^alpha, importance weight w_i = (N * P(i))^-beta / max_batch w.
    New transitions get the maximum priority seen so far. Sampling is stratified: the total mass is
    cut into ``batch_size`` equal segments and one transition is drawn from each.
    """

    def __init__(self, *args: object, alpha: float = 0.6, eps: float = 1e-6, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.alpha = alpha
        self.eps = eps
        self.beta = 0.4
        self.max_priority = 1.0
        self.tree = SumTree(self.rows * self.num_envs)

    def _row_leaves(self, row: int) -> np.ndarray:
        return row * self.num_envs + np.arange(self.num_envs)

    def _on_add(self, row: int) -> None:
        # The row just written cannot be sampled yet (its n-step window is incomplete); the row
        # n steps back just became complete, so it enters with the maximum priority. With frame
        # stacking, the row whose history was just overwritten leaves the sampling range.
        self.tree.update(self._row_leaves(row), np.zeros(self.num_envs))
        if self.full and self._history:
            stale = np.concatenate([self._row_leaves((row + i) % self.rows) for i in range(1, self._history + 1)])
            self.tree.update(stale, np.zeros(len(stale)))
        ready = row - self.n_step
        if ready >= 0 or self.full:
            self.tree.update(self._row_leaves(ready % self.rows),
                             np.full(self.num_envs, self.max_priority**self.alpha))

    def probabilities(self, leaves: np.ndarray) -> np.ndarray:
        return self.tree[leaves] / self.tree.total

    def sample(self, batch_size: int) -> Batch:
        if self.num_valid_rows() == 0:
            raise RuntimeError("cannot sample from a replay buffer with no complete transitions yet")
        total = self.tree.total
        segment = total / batch_size
        prefix = (np.arange(batch_size) + self.rng.random(batch_size)) * segment
        leaves = self.tree.find(np.minimum(prefix, np.nextafter(total, 0)))
        empty = self.tree[leaves] <= 0  # float round-off at a segment edge: fall back to the top leaf
        if empty.any():
            leaves[empty] = self.tree.find(np.full(int(empty.sum()), total * 0.5))
        probs = self.probabilities(leaves)
        weights = (len(self) * probs) ** (-self.beta)
        weights /= weights.max()
        rows, envs = np.divmod(leaves, self.num_envs)
        return self._gather(rows, envs, weights)

    def minibatches(self, batch_size: int, count: int, device: torch.device | str = "cpu") -> Iterator[Batch]:
        """``count`` minibatches, each drawn when the previous one is done with: the priorities (and ``beta``)
        change between the gradient steps of a round."""
        for _ in range(count):
            yield self.sample(batch_size).to(device)

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        priorities = np.abs(np.asarray(td_errors, dtype=np.float64)) + self.eps
        self.max_priority = max(self.max_priority, float(priorities.max()))
        self.tree.update(indices, priorities**self.alpha)
