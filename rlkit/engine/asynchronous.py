"""The asynchronous on-policy loop (A3C): Hogwild worker processes over one model in shared memory.

How it runs::

    main process: the evaluator                 N worker processes (torch.multiprocessing)
      shared model + optimizer statistics  <---   theta' <- theta; roll out t_max steps on its own env
      (in shared memory), global step counter      (seeded seed + rank; rlkit.rollouts.collect_rollout);
      evaluates, logs, checkpoints, stops them     the learner's gradients; shared.grad = own grad;
      (rlkit.run.Run, as every loop)               shared optimizer step, lock-free (Hogwild, Recht et al. 2011)

The agent declares an :class:`AsynchronousLearner` (its model, actor, policy and gradient function); the
class itself travels to the workers, so it must be importable by name (``spawn`` pickles it by reference).
The config needs ``num_workers``, ``start_method``, ``t_max`` and ``clip_rewards`` besides the optimizer
options (:class:`rlkit.optim.OptimizerOptions`) and the base options.

Every worker runs torch on one thread. The optimizer statistics (RMSProp's squared-gradient average, or
Adam's moments) live in shared memory, so all workers update the same ones: the paper's "shared RMSProp".
The global step counter reserves ``t_max`` steps before each rollout, so the budget is exact; the learning
rate anneals on the steps reserved before each rollout (:func:`rlkit.engine.common.progress`).

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
the desynchronised stream. A checkpoint is saved in every case. A worker's exception reaches the caller
as :class:`WorkerError` carrying the worker's traceback (the CLI exits non-zero). Workers also exit when
their parent disappears. A resumed run continues the step count from its checkpoint; its workers start
fresh episodes on new seeds (``seed + rank + step``).
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
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch
import torch.multiprocessing as mp
from torch import nn

from rlkit.actor_critic import check_spaces
from rlkit.callbacks import Callback
from rlkit.config import BaseConfig
from rlkit.engine import common
from rlkit.envs import make_env, make_vec_env
from rlkit.errors import Terminated
from rlkit.machine import available_cores
from rlkit.optim import set_lr
from rlkit.policy import Policy
from rlkit.registry import eval_env_factory
from rlkit.rollouts import Actor, Rollout, collect_rollout
from rlkit.run import Run
from rlkit.seeding import seed_everything

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class AsynchronousLearner:
    """What an asynchronous agent declares for :func:`train_asynchronous` (subclass it; the static methods run
    in every worker, the instance only in the main process).

    Built after the run seeded every RNG, as ``Learner(cfg, observation_space, action_space)``: the shared
    ``model`` (moved into shared memory before the ``policy`` views its weights), the ``optimizer`` whose
    statistics the workers share, and the ``policy`` that evaluations score. Checkpoints hold ``model`` and
    ``optimizer`` (the engine adds the spaces, the run its step, RNG and config).
    """

    def __init__(self, cfg: Any, observation_space: gym.Space, action_space: gym.Space) -> None:
        self.observation_space, self.action_space = observation_space, action_space
        self.model = self.build_model(cfg, observation_space, action_space)
        self.model.share_memory()  # first: the policy's numpy arrays view the weights where they then live
        self.optimizer = cfg.build_optimizer(self.model.parameters())
        self.policy = self.make_policy(self.model, observation_space, action_space)

    @staticmethod
    def check_spaces(observation_space: gym.Space, action_space: gym.Space, env_id: str, agent: str) -> None:
        """Refuse spaces the agent cannot handle, in one line, before a run directory is written (default: what
        :class:`rlkit.nets.ActorCritic` takes)."""
        check_spaces(observation_space, action_space, env_id, agent)

    @staticmethod
    def build_model(cfg: Any, observation_space: gym.Space, action_space: gym.Space) -> nn.Module:
        """The network (the shared one in the main process, each worker's own copy in the workers)."""
        raise NotImplementedError

    @staticmethod
    def make_actor(model: nn.Module, rng: np.random.Generator) -> Actor:
        """What acts in a worker's rollouts: ``(obs, deterministic=False) -> (actions, values)``."""
        raise NotImplementedError

    @staticmethod
    def make_policy(model: nn.Module, observation_space: gym.Space, action_space: gym.Space) -> Policy:
        """What evaluations score."""
        raise NotImplementedError

    @staticmethod
    def gradients(model: nn.Module, parameters: list[nn.Parameter], rollout: Rollout, cfg: Any
                  ) -> dict[str, torch.Tensor]:
        """Fresh gradients of the loss on ``rollout`` in ``parameters`` (``model``'s); returns the terms to log."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


class WorkerError(RuntimeError):
    """A worker process failed; the message's first line names it, the rest is its traceback."""

    def __init__(self, agent: str, rank: int, details: str) -> None:
        super().__init__(f"{agent.upper()} worker {rank} failed:\n{details}")
        self.rank = rank
        self.details = details


class Shared(NamedTuple):
    """What the main process and the workers share."""

    model: nn.Module  # in shared memory: every worker's optimizer steps it
    optim_state: list[dict[str, torch.Tensor]]  # the optimizer's statistics, per parameter, in shared memory
    counter: Any  # mp.Value: env steps reserved so far (the global step)
    updates: Any  # mp.Array: updates done per worker
    stop: Any  # mp.Event: workers finish their update and exit
    messages: Any  # mp.SimpleQueue: ("episodes", [(return, length)]), ("terms", {key: value}), ("error", rank, tb)


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


def share(learner: AsynchronousLearner, ctx: Any, num_workers: int, first_step: int) -> Shared:
    """The shared objects of ``num_workers`` workers of ``learner`` (its model is in shared memory already)."""
    return Shared(learner.model, share_optimizer_state(learner.optimizer), ctx.Value("q", first_step),
                  ctx.Array("q", num_workers, lock=False), ctx.Event(), ctx.SimpleQueue())


# ---------------------------------------------------------------------------------------------- the workers
def worker(rank: int, learner_class: type[AsynchronousLearner], cfg: Any, shared: Shared, first_step: int) -> None:
    """Entry point of worker ``rank``: report any exception with its traceback, then stop everyone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C hits the whole process group; the main process decides
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's flag handler: terminate() must stop a worker
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # blocked only while the workers started
    torch.set_num_threads(1)
    torch.set_flush_denormal(cfg.flush_denormal)  # a CPU flag of each thread, not inherited from the parent's Run
    try:
        _work(rank, learner_class, cfg, shared, first_step)
    except BaseException:
        shared.messages.put(("error", rank, traceback.format_exc()))
        shared.stop.set()
        sys.exit(1)


def _reserve(counter: Any, steps: int, total_steps: int) -> int | None:
    """Reserve ``steps`` of the global budget; returns the global step before them (None: the budget is spent)."""
    with counter.get_lock():
        start = counter.value
        if start >= total_steps:
            return None
        counter.value = start + steps
        return start


def _work(rank: int, learner_class: type[AsynchronousLearner], cfg: Any, shared: Shared, first_step: int) -> None:
    rng = seed_everything(cfg.seed + rank)
    # A resumed run (first_step > 0) starts fresh episodes on new seeds, as the on-policy loop does.
    envs = make_vec_env(cfg.env_id, 1, seed=cfg.seed + rank + first_step, env_kwargs=cfg.env_kwargs)
    local = learner_class.build_model(cfg, envs.single_observation_space, envs.single_action_space)
    optimizer = cfg.build_optimizer(shared.model.parameters())
    for param, state in zip(shared.model.parameters(), shared.optim_state):
        optimizer.state[param] = state  # the shared statistics, not a private copy
    actor = learner_class.make_actor(local, rng)
    # Parameter lists once: Module.parameters() walks the module tree, which costs more than a small update.
    shared_params, local_params = list(shared.model.parameters()), list(local.parameters())
    torch.distributions.Distribution.set_default_validate_args(False)  # this process only; saves ~10% per update
    obs = envs.reset()
    parent, episodes, last_flush = os.getppid(), [], time.monotonic()
    while not shared.stop.is_set() and os.getppid() == parent:
        start = _reserve(shared.counter, cfg.t_max, cfg.total_steps)
        if start is None:
            break

        # ALGO LOGIC: theta' <- theta, roll out, and apply this worker's gradients to the shared weights.
        with torch.no_grad():
            torch._foreach_copy_(local_params, shared_params)
        rollout, obs, finished = collect_rollout(envs, obs, actor, cfg.t_max, cfg.clip_rewards)
        terms = learner_class.gradients(local, local_params, rollout, cfg)
        # TRY NOT TO MODIFY: assign (not accumulate, not "only if None") the fresh gradients every update.
        for shared_param, own in zip(shared_params, local_params):
            shared_param.grad = own.grad
        set_lr(optimizer, cfg.lr_at(common.progress(start, cfg.total_steps)))
        optimizer.step()
        shared.updates[rank] += 1

        # Batched reports keep the pipe to the main process far from full.
        episodes += finished
        if episodes and (len(episodes) >= 32 or time.monotonic() - last_flush > 0.5):
            shared.messages.put(("episodes", episodes))
            episodes, last_flush = [], time.monotonic()
        if Run.due(start + cfg.t_max, cfg.log_every, cfg.t_max):
            shared.messages.put(("terms", {k: float(v) for k, v in terms.items()}))
    if episodes:
        shared.messages.put(("episodes", episodes))
    envs.close()


# ------------------------------------------------------------------------------ starting and stopping them
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
def _signals_as_flag() -> Iterator[threading.Event]:
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
            error = WorkerError(run.agent, payload[0], payload[1])
    return error


def _stop_workers(shared: Shared, workers: list[Any], run: Run, timeout: float = 15.0) -> WorkerError | None:
    """Set the stop event and wait for every worker to exit (terminate, then kill, stragglers)."""
    shared.stop.set()
    error = None
    deadline = time.monotonic() + timeout
    while any(w.is_alive() for w in workers) and time.monotonic() < deadline:
        error = error or _drain(shared.messages, run)  # a worker blocked on a full pipe could never see the stop
        time.sleep(0.02)
    for w in workers:
        if w.is_alive():
            w.terminate()
            w.join(2.0)
        if w.is_alive():
            w.kill()
        if w.pid is not None:
            w.join()
    return error or _drain(shared.messages, run)


def _worker_failure(workers: list[Any], messages: Any, run: Run) -> WorkerError | None:
    """A worker that exited with an error: its traceback (it writes that before it exits), else its exit code."""
    if not any(w.exitcode not in (None, 0) for w in workers):
        return None
    error = _drain(messages, run)
    if error is None:
        dead = next(w for w in workers if w.exitcode not in (None, 0))
        error = WorkerError(run.agent, workers.index(dead), f"exited with code {dead.exitcode} (no traceback)")
    return error


# ---------------------------------------------------------------------------------------------- the loop
def train_asynchronous(agent: str, cfg: BaseConfig, learner_class: type[AsynchronousLearner], resume: bool = False,
                       callbacks: Sequence[Callback] | None = None) -> dict[str, Any]:
    """Train ``learner_class`` on ``cfg`` with ``cfg.num_workers`` Hogwild workers (0: one per available core),
    recorded as ``agent``; returns the contents of ``final.json`` (plus ``num_workers``, ``worker_updates``
    and ``start_method``). A worker's failure raises :class:`WorkerError`, Ctrl-C KeyboardInterrupt and
    SIGTERM :class:`rlkit.errors.Terminated`, each after a checkpoint."""
    cfg.validate()
    probe = make_env(cfg.env_id, env_kwargs=cfg.env_kwargs)
    obs_space, act_space = probe.observation_space, probe.action_space
    probe.close()
    learner_class.check_spaces(obs_space, act_space, cfg.env_id, agent)
    # cfg.num_workers stays as given (0 = one per core): config.json keeps the choice, final.json the count.
    num_workers = cfg.num_workers or available_cores()
    run = Run(agent, cfg, resume=resume, callbacks=callbacks)  # seeds the global RNGs, sets thread counts
    learner = learner_class(cfg, obs_space, act_space)
    first_step = common.resume(run, learner)
    ctx = mp.get_context(cfg.start_method)
    shared = share(learner, ctx, num_workers, first_step)
    workers = [ctx.Process(target=worker, name=f"{agent}-worker-{rank}", daemon=True,
                           args=(rank, learner_class, cfg, shared, first_step))
               for rank in range(num_workers)]

    state = common.checkpoint_state(learner, obs_space, act_space)

    with _signals_as_flag() as interrupted:
        try:
            with _worker_start_conditions():
                for w in workers:
                    w.start()
            _evaluator(run, learner, state, workers, shared, interrupted, first_step)
        except BaseException:  # Ctrl-C or a worker's failure: stop every worker, keep the weights, re-raise
            _stop_workers(shared, workers, run)
            run.checkpoint(shared.counter.value, state())
            run.close()
            raise
    extra = {"num_workers": num_workers, "worker_updates": list(shared.updates), "start_method": cfg.start_method}
    return run.finish(learner.policy, eval_env_factory(cfg), shared.counter.value, state(), extra=extra)


def _evaluator(run: Run, learner: AsynchronousLearner, state: Any, workers: list[Any], shared: Shared,
               interrupted: threading.Event, first_step: int) -> None:
    """The main process while the workers train: log what they report, evaluate, checkpoint, watch for
    failures; returns once every worker has exited."""
    cfg = run.cfg
    # Evaluations run on a snapshot: the workers keep changing the shared weights meanwhile.
    snapshot = copy.deepcopy(learner.model)
    snapshot_policy = learner.make_policy(snapshot, learner.observation_space, learner.action_space)

    def snapshot_state() -> dict[str, Any]:  # the weights an evaluation scored (checkpoints/best/)
        return {**state(), "model": snapshot.state_dict()}

    stopped_at_evaluation = False  # then the snapshot holds the weights that the stopping evaluation scored
    seen = first_step
    while any(w.is_alive() for w in workers):
        if interrupted.is_set():
            raise Terminated if getattr(interrupted, "signum", None) == signal.SIGTERM else KeyboardInterrupt
        error = _drain(shared.messages, run) or _worker_failure(workers, shared.messages, run)
        if error is not None:
            raise error
        step = shared.counter.value
        run.logger.progress(step)
        # The counter advances by any amount between two ticks: the stride is what it moved.
        log_due = Run.due(step, cfg.log_every, step - seen)
        if Run.due(step, cfg.eval_every, step - seen) and not shared.stop.is_set():
            snapshot.load_state_dict(learner.model.state_dict())
            run.evaluate(snapshot_policy, eval_env_factory(cfg), step, state=snapshot_state, write_row=not log_due)
            stopped_at_evaluation = run.stopped is not None  # target_return, or a callback on it
        if log_due:
            run.logger.dump(step)
        if Run.due(step, cfg.checkpoint_every, step - seen) and step < cfg.total_steps:
            run.checkpoint(step, state())
        if run.stopped is not None:
            shared.stop.set()
        seen = step
        time.sleep(0.02)
    if interrupted.is_set():  # came while the workers were finishing (a target reached): still a stop by signal
        raise Terminated if getattr(interrupted, "signum", None) == signal.SIGTERM else KeyboardInterrupt
    error = _stop_workers(shared, workers, run)
    if error is not None:
        raise error
    if stopped_at_evaluation:
        # keep the weights that passed, not those of the updates in flight when the stop came
        learner.model.load_state_dict(snapshot.state_dict())
