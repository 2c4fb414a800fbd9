"""The run directory: config, seeding, logger, checkpoints, resume and final.json in one place.

Each agent keeps its own training loop and uses a :class:`Run` for the bookkeeping around it::

    run = Run("dqn", cfg, resume=resume)          # seeds everything, writes config.json
    state = run.resume_state                      # the latest checkpoint when resuming, else None
    ...
    with run.checkpoint_on_interrupt(lambda: (global_step, state_dict())):
        while global_step < cfg.total_steps:
            ...                                   # act, store, learn
            run.step_done(global_step, num_envs, policy, make_eval_env, state_dict, scalars)  # eval, log, ckpt
    return run.finish(policy, make_eval_env, global_step, {...})   # final eval + final.json
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import rlkit
from rlkit.checkpoint import (
    CHECKPOINT_DIR,
    atomic_torch_save,
    atomic_write_text,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from rlkit.config import BaseConfig
from rlkit.errors import RLKitError
from rlkit.evaluation import evaluate
from rlkit.logger import Logger
from rlkit.seeding import get_rng_state, seed_everything, set_rng_state
from rlkit.types import Policy

# Observers of every evaluation during training, called as ``hook(run, global_step, result)`` (``rlkit tune``
# reports them to Optuna's pruner; a hook may raise to stop the run).
EVAL_HOOKS: list[Callable[[Run, int, dict[str, Any]], None]] = []


def default_run_dir(agent: str, env_id: str, seed: int) -> Path:
    env_name = env_id.replace("/", "_").replace(":", "_")
    return Path("runs") / f"{agent}-{env_name}-seed{seed}-{datetime.now():%Y%m%d-%H%M%S}"


def _limit_blas_threads(n: int) -> None:
    """numpy's BLAS threads spin on tiny matmuls (the numpy acting path): cap them like torch's."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(n, user_api="blas")


def versions() -> dict[str, str]:
    return {"rlkit": rlkit.__version__, "torch": torch.__version__, "gymnasium": gym.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


class Run:
    """Bookkeeping for one training run (see module docstring).

    Args:
        agent: registered agent name, stored in checkpoints so ``rlkit eval`` can rebuild the policy.
        cfg: the resolved config; ``cfg.run_dir`` is filled in when it was None.
        resume: continue from the latest checkpoint in ``cfg.run_dir``.
    """

    def __init__(self, agent: str, cfg: BaseConfig, resume: bool = False) -> None:
        self.agent = agent
        self.cfg = cfg
        self.dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(agent, cfg.env_id, cfg.seed)
        cfg.run_dir = str(self.dir)
        if resume and not list_checkpoints(self.dir):
            raise RLKitError(f"cannot resume: no checkpoints in {self.dir}/checkpoints")
        if not resume and list_checkpoints(self.dir):
            raise RLKitError(f"{self.dir} already holds a run; pass --resume {self.dir} to continue it "
                             "or choose another --run-dir")
        self.dir.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(max(cfg.torch_threads, 1))
        _limit_blas_threads(max(cfg.torch_threads, 1))
        self.rng = seed_everything(cfg.seed)
        self.resume_state: dict[str, Any] | None = None
        self.global_step = 0
        self._wall_before = 0.0
        if resume:
            self.resume_state = load_checkpoint(self.dir)
            if self.resume_state["agent"] != agent:
                raise RLKitError(f"{self.dir} is a {self.resume_state['agent']} run, not {agent}")
            self.global_step = int(self.resume_state["global_step"])
            self._wall_before = float(self.resume_state.get("wall_s", 0.0))
        cfg.save(self.dir / "config.json")
        self.logger = Logger(self.dir, total_steps=cfg.total_steps, initial_step=self.global_step,
                             progress=cfg.progress, tensorboard=cfg.tensorboard)
        if not resume:
            table = "\n".join(f"|{k}|{v}|" for k, v in cfg.to_dict().items())
            self.logger.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
        self._t0 = time.perf_counter()

    def restore_rng(self) -> None:
        """Put the RNG streams back where the checkpoint left them (call after building everything)."""
        if self.resume_state is not None:
            set_rng_state(self.resume_state["rng"], self.rng)

    @property
    def wall_s(self) -> float:
        return self._wall_before + time.perf_counter() - self._t0

    @staticmethod
    def due(global_step: int, every: int, stride: int = 1) -> bool:
        """True when ``global_step`` (advancing by ``stride``) just crossed a multiple of ``every``."""
        return every > 0 and global_step // every != (global_step - stride) // every

    def checkpoint(self, global_step: int, state: dict[str, Any]) -> Path:
        """Atomically save ``state`` plus config, counters, RNG states and versions."""
        full = {
            "agent": self.agent,
            "config": self.cfg.to_dict(),
            "global_step": global_step,
            "wall_s": self.wall_s,
            "rng": get_rng_state(self.rng),
            "versions": versions(),
            **state,
        }
        return save_checkpoint(self.dir, full, global_step, keep=self.cfg.keep_checkpoints)

    def step_done(self, global_step: int, stride: int, policy: Policy, make_eval_env: Callable[..., gym.Env],
                  state: Callable[[], dict[str, Any]], scalars: Callable[[], dict[str, float]] | None = None
                  ) -> dict[str, Any] | None:
        """The bookkeeping after each training iteration, in this order: progress bar, evaluation (before
        the log row, so the row carries it), log row with ``scalars()``, periodic checkpoint of ``state()``.

        Returns the evaluation's result when one ran this iteration, else None.
        """
        cfg = self.cfg
        self.logger.progress(global_step)
        result = None
        if Run.due(global_step, cfg.eval_every, stride):
            result = self.evaluate(policy, make_eval_env, global_step)
        if Run.due(global_step, cfg.log_every, stride):
            for key, value in (scalars() if scalars is not None else {}).items():
                self.logger.record(key, value)
            self.logger.dump(global_step)
        if Run.due(global_step, cfg.checkpoint_every, stride) and global_step < cfg.total_steps:
            self.checkpoint(global_step, state())
        return result

    @contextmanager
    def checkpoint_on_interrupt(self, current: Callable[[], tuple[int, dict[str, Any]]]) -> Iterator[None]:
        """On Ctrl-C inside the block, checkpoint ``current()`` (global step, state) and close, then re-raise:
        what was learned is kept, and ``rlkit train AGENT --resume RUN_DIR`` continues from there."""
        try:
            yield
        except KeyboardInterrupt:
            self.checkpoint(*current())
            self.close()
            raise

    @property
    def _replay_buffer_path(self) -> Path:
        return self.dir / CHECKPOINT_DIR / "replay_buffer.pt"

    def save_replay_buffer(self, buffer: Any) -> None:
        """Save ``buffer`` beside the checkpoints (one file, replaced atomically) so --resume continues exactly."""
        atomic_torch_save(buffer.state_dict(), self._replay_buffer_path)

    def restore_replay_buffer(self, buffer: Any) -> None:
        """Load the buffer :meth:`save_replay_buffer` saved, if any; it samples from the run's RNG again."""
        if self._replay_buffer_path.exists():
            buffer.load_state_dict(torch.load(self._replay_buffer_path, weights_only=False))
            buffer.rng = self.rng

    def evaluate(self, policy: Policy, make_eval_env: Callable[..., gym.Env], global_step: int,
                 episodes: int | None = None) -> dict[str, Any]:
        """Evaluate during training and log ``eval/mean_return``."""
        result = evaluate(policy, make_eval_env, episodes or self.cfg.eval_episodes, seed=self.cfg.eval_seed)
        self.logger.record("eval/mean_return", result["mean"])
        self.logger.record("eval/std_return", result["std"])
        for hook in EVAL_HOOKS:
            hook(self, global_step, result)
        return result

    def finish(self, policy: Policy, make_eval_env: Callable[..., gym.Env], global_step: int,
               state: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Save the final checkpoint, evaluate, write ``final.json`` and close the logger."""
        wall_s = self.wall_s
        ckpt = self.checkpoint(global_step, state)
        result_eval = evaluate(policy, make_eval_env, self.cfg.eval_episodes, seed=self.cfg.eval_seed)
        self.logger.record("eval/mean_return", result_eval["mean"])
        self.logger.record("eval/std_return", result_eval["std"])
        self.logger.dump(global_step)
        self.logger.close()
        result = {
            "agent": self.agent,
            "env_id": self.cfg.env_id,
            "seed": self.cfg.seed,
            "env_steps": global_step,
            "wall_s": round(wall_s, 3),
            "eval": result_eval,
            "run_dir": str(self.dir),
            "checkpoint": str(ckpt),
            "versions": versions(),
            **(extra or {}),
        }
        atomic_write_text(self.dir / "final.json", json.dumps(result, indent=2))
        return result

    def close(self) -> None:
        self.logger.close()
