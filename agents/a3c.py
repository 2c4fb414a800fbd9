"""A3C: asynchronous advantage actor-critic, with truly parallel Hogwild workers (Mnih et al. 2016).

Paper: Mnih et al. 2016, "Asynchronous Methods for Deep RL", https://arxiv.org/abs/1602.01783
(Algorithm S3 of its supplement is A3C's pseudo-code).

How it runs::

    main process: the evaluator                 N worker processes (torch.multiprocessing)
      shared model + optimizer statistics  <---   theta' <- theta; roll out t_max steps on its own env
      (in shared memory), global step counter      (seeded seed + rank); the A2C loss of rlkit/actor_critic.py;
      evaluates, logs, checkpoints, stops them     backward; shared.grad = own grad; shared optimizer
                                                   step, lock-free (Hogwild, Recht et al. 2011)

Every worker runs torch on one thread. The optimizer statistics (RMSProp's squared-gradient average,
or Adam's moments) live in shared memory, so all workers update the same ones: the paper's "shared
RMSProp". The global step counter reserves ``t_max`` steps before each rollout, so the budget is exact.

Start method: 'fork' by default, deliberately ('spawn' is an option). Workers must start fast: spawn
starts a fresh interpreter that imports torch, about a second per worker on an idle core and several on
a loaded one, which can be as long as a whole CartPole run; fork starts workers in milliseconds. Fork is
safe here because of what the children do, not by luck: the parent already holds threads (TensorBoard's
writer, tqdm's monitor), whose locks a forked child inherits in whatever state they were, but a worker
never touches the logger, tqdm or anything that the parent's threads lock; torch runs on one thread in
the parent (no OpenMP team exists to break) and the worker calls torch.set_num_threads(1) first; CPU
tensors in shared memory are inherited as they are (torch's docs restrict fork only for CUDA); and a
forked child leaves through os._exit, running none of the parent's exit handlers. Use
``start_method=spawn`` where fork is unavailable or unsafe (Windows, macOS with system frameworks
loaded, CUDA models): spawned workers read OMP_NUM_THREADS=1 before torch loads, and multiprocessing
adds its resource-tracker helper process, which exits with the main process.

Shutdown: the step budget, ``target_return``, Ctrl-C (SIGINT, which workers ignore so that the main
process decides) or any worker's exception set a shared stop event; workers finish their update and
exit; stragglers are terminated, then killed. In the main process SIGINT only raises a flag that the
evaluator loop turns into KeyboardInterrupt at its next tick: raised at an arbitrary point it could
cut a read from the workers' message pipe in half, and the shutdown's drain then waited forever on
the desynchronised stream. A checkpoint is saved in every case. A worker's
exception reaches the caller as :class:`WorkerError` carrying the worker's traceback (the CLI exits
non-zero). Workers also exit when their parent disappears.

Deviations from the paper, and why:
    * Feed-forward only (no LSTM variant); the CNN is the Nature-DQN torso (3 conv layers + 512),
      larger than the paper's A3C FF network (2 conv layers + 256), because rlkit shares one CNN.
    * The paper samples the learning rate from LogUniform(1e-4, 1e-2) per run; presets fix it.
    * torch's RMSprop adds eps after the square root (the paper inside); n-step returns as in the
      paper by default, GAE with ``gae_lambda < 1``; truncated episodes bootstrap (see agents/a2c.py).
    * Evaluation runs in the main process on a snapshot of the weights, concurrently with the workers.
    * Lock-free updates of the shared ``step`` counter can lose an increment now and then; it only
      enters Adam's bias correction.

Run it: ``rlkit train a3c --env CartPole-v1 --preset cartpole --set num_workers=2``.
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import torch
import torch.multiprocessing as mp
from rlkit.envs import make_env, make_vec_env

from rlkit.actor_critic import (
    ActorCriticOptions,
    actor_critic_gradients,
    build_model,
    check_spaces,
    make_actor,
    make_policy,
    policy_from_state,
)
from rlkit.callbacks import Callback
from rlkit.config import BaseConfig, config_from_dict, opt
from rlkit.engine import common
from rlkit.errors import RLKitError, Terminated
from rlkit.machine import available_cores
from rlkit.nets import ActorCritic
from rlkit.optim import OptimizerOptions, set_lr
from rlkit.registry import AgentSpec, eval_env_factory, train_from_command_line
from rlkit.rollouts import collect_rollout
from rlkit.run import Run
from rlkit.seeding import seed_everything

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass
class A3CConfig(ActorCriticOptions, OptimizerOptions, BaseConfig):
    """A3C hyper-parameters: the actor-critic and optimizer options A2C has too, plus the workers'."""

    num_workers: int = opt(0, "worker processes, one env each (0 = one per available CPU core)", low=0,
                           high=256)  # processes: beyond a few hundred the machine only thrashes
    start_method: Literal["fork", "spawn"] = opt("fork", "how workers start: fork (fast, POSIX) or spawn (portable)")
    t_max: int = opt(5, "steps each worker rolls out between its updates", low=1)

    def validate(self) -> None:
        self.validate_optimizer()
        if self.device != "cpu":
            raise RLKitError(f"a3c's workers share the model in CPU memory; drop device={self.device}")
        if self.torch_threads != 1:
            raise RLKitError("a3c runs every process on one torch thread (the cores belong to the workers); "
                             f"drop torch_threads={self.torch_threads} or raise num_workers")
        if self.start_method not in mp.get_all_start_methods():
            raise RLKitError(f"start_method {self.start_method!r} is not available on this platform; "
                             "use --set start_method=spawn")


class WorkerError(RuntimeError):
    """A worker process failed; the message carries its traceback."""

    def __init__(self, rank: int, details: str) -> None:
        super().__init__(f"A3C worker {rank} failed:\n{details}")
        self.rank = rank
        self.details = details


def share_optimizer_state(optimizer: torch.optim.Optimizer) -> list[dict[str, torch.Tensor]]:
    """Create the optimizer's per-parameter statistics now and move them into shared memory.

    torch creates them lazily on the first step; creating them here (with torch's own names and
    initial values: a zero step count and zero moments) lets every worker's optimizer point at the
    same tensors. Existing statistics (after a resume) are moved as they are.
    """
    states = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                if isinstance(optimizer, torch.optim.RMSprop):
                    state["square_avg"] = torch.zeros_like(p)
                    if group["centered"]:
                        state["grad_avg"] = torch.zeros_like(p)
                else:
                    state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
            for value in state.values():
                value.share_memory_()
            states.append(state)
    return states


def worker(rank: int, cfg: A3CConfig, shared_model: ActorCritic, optim_state: list[dict[str, torch.Tensor]],
           counter: Any, updates: Any, stop: Any, messages: Any, first_step: int) -> None:
    """Entry point of worker ``rank``: report any exception with its traceback, then stop everyone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C hits the whole process group; the main process decides
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's flag handler: terminate() must stop a worker
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # blocked only while the workers started
    torch.set_num_threads(1)
    try:
        _work(rank, cfg, shared_model, optim_state, counter, updates, stop, messages, first_step)
    except BaseException:
        messages.put(("error", rank, traceback.format_exc()))
        stop.set()
        sys.exit(1)


def _work(rank: int, cfg: A3CConfig, shared_model: ActorCritic, optim_state: list[dict[str, torch.Tensor]],
          counter: Any, updates: Any, stop: Any, messages: Any, first_step: int) -> None:
    rng = seed_everything(cfg.seed + rank)
    # A resumed run (first_step > 0) starts fresh episodes on new seeds, as agents/a2c.py does.
    envs = make_vec_env(cfg.env_id, 1, seed=cfg.seed + rank + first_step, env_kwargs=cfg.env_kwargs)
    local = build_model(envs.single_observation_space, envs.single_action_space, cfg.hidden, cfg.activation,
                        cfg.shared_trunk)
    optimizer = cfg.build_optimizer(shared_model.parameters())
    for param, state in zip(shared_model.parameters(), optim_state):
        optimizer.state[param] = state  # the shared statistics, not a private copy
    actor = make_actor(local, rng)
    # Parameter lists once: Module.parameters() walks the module tree, which costs more than a small update.
    shared_params, local_params = list(shared_model.parameters()), list(local.parameters())
    torch.distributions.Distribution.set_default_validate_args(False)  # this process only; saves ~10% per update
    obs = envs.reset()
    parent, episodes, last_flush = os.getppid(), [], time.monotonic()
    while not stop.is_set() and os.getppid() == parent:
        with counter.get_lock():  # reserve t_max steps of the global budget
            start = counter.value
            if start >= cfg.total_steps:
                break
            counter.value = start + cfg.t_max

        # ALGO LOGIC: theta' <- theta, roll out, and apply this worker's gradients to the shared weights.
        with torch.no_grad():
            torch._foreach_copy_(local_params, shared_params)
        rollout, obs, finished = collect_rollout(envs, obs, actor, cfg.t_max, cfg.clip_rewards)
        terms = actor_critic_gradients(local, local_params, rollout, cfg)  # A2C's loss and gradients
        # TRY NOT TO MODIFY: assign (not accumulate, not "only if None") the fresh gradients every update.
        for shared, own in zip(shared_params, local_params):
            shared.grad = own.grad
        set_lr(optimizer, cfg.lr_at(common.progress(start, cfg.total_steps)))
        optimizer.step()
        updates[rank] += 1

        # Batched reports keep the pipe to the main process far from full.
        episodes += finished
        if episodes and (len(episodes) >= 32 or time.monotonic() - last_flush > 0.5):
            messages.put(("episodes", episodes))
            episodes, last_flush = [], time.monotonic()
        if Run.due(start + cfg.t_max, cfg.log_every, cfg.t_max):
            messages.put(("terms", {k: v.item() for k, v in terms.items()}))
    if episodes:
        messages.put(("episodes", episodes))
    envs.close()


@contextlib.contextmanager
def _worker_start_conditions() -> Iterator[None]:
    """What children inherit (through fork, or spawn's exec): one-thread math libraries, a blocked SIGINT.

    Blocked rather than ignored: a Ctrl-C while the workers start stays pending for the main process
    (and is handled when the block ends) instead of being lost; a child never sees it before its
    ``worker()`` ignores SIGINT.
    """
    saved = {name: os.environ.get(name) for name in THREAD_VARS}
    os.environ.update({name: "1" for name in THREAD_VARS})
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


@contextlib.contextmanager
def _sigint_as_flag() -> Iterator[threading.Event]:
    """Within the block, SIGINT and SIGTERM set the yielded event (``.signum`` says which) instead of raising
    KeyboardInterrupt anywhere."""
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread():  # only the main thread gets signals
        yield interrupted
        return
    old_handlers = {sig: signal.signal(sig, lambda signum, frame: (setattr(interrupted, "signum", signum),
                                                                   interrupted.set()))
                    for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield interrupted
    finally:
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)


def _drain(messages: Any, run: Run) -> WorkerError | None:
    """Log what the workers sent; return the first reported failure, if any."""
    error = None
    while not messages.empty():
        kind, *payload = messages.get()
        if kind == "episodes":
            for episode_return, length in payload[0]:
                run.logger.record_episode(episode_return, length)
        elif kind == "terms":
            for key, value in payload[0].items():
                run.logger.record(key, value)
        elif kind == "error" and error is None:
            error = WorkerError(payload[0], payload[1])
    return error


def _stop_workers(stop: Any, workers: list[Any], messages: Any, run: Run, timeout: float = 15.0) -> WorkerError | None:
    """Set the stop event and wait for every worker to exit (terminate, then kill, stragglers)."""
    stop.set()
    error = None
    deadline = time.monotonic() + timeout
    while any(w.is_alive() for w in workers) and time.monotonic() < deadline:
        error = error or _drain(messages, run)  # a worker blocked on a full pipe could never see the stop
        time.sleep(0.02)
    for w in workers:
        if w.is_alive():
            w.terminate()
            w.join(2.0)
        if w.is_alive():
            w.kill()
        if w.pid is not None:
            w.join()
    return error or _drain(messages, run)


class SharedModel:
    """What the main process holds: the shared model and optimizer (the workers step both), the policy that
    evaluations score, and what checkpoints keep (the keys A2C's checkpoints have)."""

    def __init__(self, cfg: A3CConfig, obs_space: gym.Space, act_space: gym.Space) -> None:
        self.model = build_model(obs_space, act_space, cfg.hidden, cfg.activation, cfg.shared_trunk)
        self.model.share_memory()  # first: the policy's numpy arrays view the weights where they then live
        self.optimizer = cfg.build_optimizer(self.model.parameters())
        self.policy = make_policy(self.model, obs_space, act_space)
        self.spaces = {"observation_space": obs_space, "action_space": act_space}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), **self.spaces}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


def train(cfg: A3CConfig, resume: bool = False, callbacks: Sequence[Callback] | None = None) -> dict[str, Any]:
    """Train A3C as configured; returns the contents of ``final.json``."""
    cfg.validate()
    probe = make_env(cfg.env_id, env_kwargs=cfg.env_kwargs)
    obs_space, act_space = probe.observation_space, probe.action_space
    probe.close()
    check_spaces(obs_space, act_space, "a3c")
    # cfg.num_workers stays as given (0 = one per core): config.json keeps the choice, final.json the count.
    num_workers = cfg.num_workers or available_cores()
    run = Run("a3c", cfg, resume=resume, callbacks=callbacks)  # seeds the global RNGs, sets thread counts
    shared = SharedModel(cfg, obs_space, act_space)
    first_step = common.resume(run, shared)
    optim_state = share_optimizer_state(shared.optimizer)

    ctx = mp.get_context(cfg.start_method)
    counter = ctx.Value("q", first_step)
    updates = ctx.Array("q", num_workers, lock=False)
    stop, messages = ctx.Event(), ctx.SimpleQueue()
    workers = [ctx.Process(target=worker, name=f"a3c-worker-{rank}", daemon=True,
                           args=(rank, cfg, shared.model, optim_state, counter, updates, stop, messages, first_step))
               for rank in range(num_workers)]
    with _sigint_as_flag() as interrupted:
        try:
            with _worker_start_conditions():
                for w in workers:
                    w.start()
            _evaluator(run, shared, workers, counter, stop, messages, interrupted, first_step)
        except BaseException:  # Ctrl-C or a worker's failure: stop every worker, keep the weights, re-raise
            _stop_workers(stop, workers, messages, run)
            run.checkpoint(counter.value, shared.state_dict())
            run.close()
            raise
    extra = {"num_workers": num_workers, "worker_updates": list(updates), "start_method": cfg.start_method}
    return run.finish(shared.policy, eval_env_factory(cfg), counter.value, shared.state_dict(), extra=extra)


def _evaluator(run: Run, shared: SharedModel, workers: list[Any], counter: Any, stop: Any, messages: Any,
               interrupted: threading.Event, first_step: int) -> None:
    """The main process while the workers train: log what they report, evaluate, checkpoint, watch for
    failures; returns once every worker has exited."""
    cfg = run.cfg
    # Evaluations run on a snapshot: the workers keep changing the shared weights meanwhile.
    snapshot = copy.deepcopy(shared.model)
    snapshot_policy = make_policy(snapshot, shared.spaces["observation_space"], shared.spaces["action_space"])

    def snapshot_state() -> dict[str, Any]:  # the weights an evaluation scored (checkpoints/best/)
        return {**shared.state_dict(), "model": snapshot.state_dict()}

    stopped_at_evaluation = False  # then the snapshot holds the weights that the stopping evaluation scored
    seen = first_step
    while any(w.is_alive() for w in workers):
        if interrupted.is_set():
            raise Terminated if getattr(interrupted, "signum", None) == signal.SIGTERM else KeyboardInterrupt
        error = _drain(messages, run) or _worker_failure(workers, messages, run)
        if error is not None:
            raise error
        step = counter.value
        run.logger.progress(step)
        # The counter advances by any amount between two ticks: the stride is what it moved.
        log_due = Run.due(step, cfg.log_every, step - seen)
        if Run.due(step, cfg.eval_every, step - seen) and not stop.is_set():
            snapshot.load_state_dict(shared.model.state_dict())
            run.evaluate(snapshot_policy, eval_env_factory(cfg), step, state=snapshot_state, write_row=not log_due)
            stopped_at_evaluation = run.stopped is not None  # target_return, or a callback on it
        if log_due:
            run.logger.dump(step)
        if Run.due(step, cfg.checkpoint_every, step - seen) and step < cfg.total_steps:
            run.checkpoint(step, shared.state_dict())
        if run.stopped is not None:
            stop.set()
        seen = step
        time.sleep(0.02)
    error = _stop_workers(stop, workers, messages, run)
    if error is not None:
        raise error
    if stopped_at_evaluation:
        # keep the weights that passed, not those of the updates in flight when the stop came
        shared.model.load_state_dict(snapshot.state_dict())


def _worker_failure(workers: list[Any], messages: Any, run: Run) -> WorkerError | None:
    """A worker that exited with an error: its traceback (it writes that before it exits), else its exit code."""
    if not any(w.exitcode not in (None, 0) for w in workers):
        return None
    error = _drain(messages, run)
    if error is None:
        dead = next(w for w in workers if w.exitcode not in (None, 0))
        error = WorkerError(workers.index(dead), f"exited with code {dead.exitcode} (no traceback)")
    return error


def load_policy(state: dict[str, Any]) -> Any:
    return policy_from_state(state, config_from_dict(A3CConfig, state["config"]))


AGENT = AgentSpec("a3c", A3CConfig, train, load_policy,
                  summary="asynchronous advantage actor-critic: Hogwild worker processes with shared optimizer "
                          "statistics")

if __name__ == "__main__":
    train_from_command_line("a3c")
