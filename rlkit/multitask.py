"""Multi-task parts any learner can use: task ids off the observation, per-task heads, PCGrad.

The observations of a multi-task suite (``rlkit.envs.multitask``) end in a one-hot task id. Two ways to share
one network between the tasks (Ruder 2017, "An Overview of Multi-Task Learning in Deep Neural Networks",
https://arxiv.org/abs/1706.05098):

* task-conditioned (:class:`TaskConditioned`): one network, the one-hot is just more input;
* hard parameter sharing (:class:`HardSharing`): a trunk shared by every task reads the observation without its
  task id, and one linear head per task (:class:`PerTaskHeads`) gives each sample its own task's output.
  :class:`HardSharingActor` and :class:`HardSharingCritics` are SAC's actor and twin critics built that way,
  :class:`HardSharingActorCritic` PPO's actor-critic (per-task policy heads, :class:`PerTaskPolicy`, and value heads).

:class:`MultiTaskOptions` are the config options of every learner that takes them (DQN, SAC):
``tasks``, ``heads``, ``pcgrad`` and ``init_from`` (fine-tuning, :func:`load_pretrained`).

Both check every observation's task id against the model's task count and observation width, so a model never
silently reads another suite (one line naming the mismatch).

PCGrad (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning", https://arxiv.org/abs/2001.06782,
Algorithm 1): :class:`PCGrad` wraps any torch optimizer. Deviation from the paper: a learner passes each
task's loss summed over that task's rows of the minibatch divided by the whole minibatch's size (see
:func:`task_losses`), so the task losses add up to the single-task loss and, where no two gradients conflict,
PCGrad's step is the plain step; the paper's tasks each had a batch of their own of equal size, which is the
same up to a constant factor when the tasks fill equal shares of the minibatch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal

from rlkit.config import opt
from rlkit.distributions import LOG_STD_MAX, LOG_STD_MIN, CategoricalHead, GaussianHead
from rlkit.errors import RLKitError
from rlkit.nets import ActorCritic, QCriticEnsemble, SquashedGaussianActor, init_orthogonal, mlp, policy_head


@dataclass
class MultiTaskOptions:
    """The multi-task options of a learner's config (mixed in, as ``ReplayOptions`` is)."""

    tasks: int = opt(0, "tasks whose one-hot ids end each observation; 0: the suite's count for a multi-task suite "
                        "(rlkit/CartPole-MT-v0), none for any other env", low=0)
    heads: Literal["shared", "per_task"] = opt("shared", "with tasks: shared = one network, the task one-hot is "
                                               "input (task-conditioned); per_task = a shared trunk on the "
                                               "observation without its id and one linear output head per task "
                                               "(hard sharing)")
    pcgrad: bool = opt(False, "with tasks: PCGrad (Yu et al. 2020) over per-task losses of each minibatch's rows")
    init_from: str | None = opt(None, "fine-tuning: start the networks (and their targets) from this run directory "
                                      "or checkpoint of the same agent; optimizer, buffer, counters and schedules "
                                      "start afresh")


def resolve_tasks(cfg: Any, suite: int) -> int:
    """The number of tasks of a config with :class:`MultiTaskOptions`: ``cfg.tasks``, or ``suite`` (the env's own
    count, 0 for an env that is no suite) when 0; one line for settings that contradict the env."""
    if cfg.tasks and suite and cfg.tasks != suite:
        raise RLKitError(f"tasks={cfg.tasks}, but {cfg.env_id} has {suite} tasks: the networks need one task id "
                         "per task of the env; drop the setting (tasks=0 reads the env's count)")
    if not (cfg.tasks or suite) and (cfg.heads == "per_task" or cfg.pcgrad):
        raise RLKitError(f"heads=per_task and pcgrad need task ids, but {cfg.env_id} is no multi-task suite; train "
                         "on one (rlkit/CartPole-MT-v0) or set tasks=N for observations that end in an N-task one-hot")
    return cfg.tasks or suite


def load_pretrained(source: str, agent: str | tuple[str, ...], observation_space: gym.Space, n_tasks: int,
                    modules: dict[str, nn.Module], settings: str) -> dict[str, Any]:
    """Fine-tuning (``init_from``): load each of ``modules`` from the entry of its name in the checkpoint ``source``
    names (a run directory or checkpoint), and return that checkpoint. Refused in one line: a checkpoint of an agent
    not in ``agent`` (one name or several), another observation space or task count, and networks of other shapes
    (naming ``settings``, the config options that shape them, as that run set them)."""
    from rlkit.checkpoint import load_checkpoint

    state = load_checkpoint(source)
    agents = (agent,) if isinstance(agent, str) else agent
    if state["agent"] not in agents:
        raise RLKitError(f"init_from={source} is a {state['agent']} checkpoint; fine-tuning starts from a "
                         f"{' or '.join(agents)} run")
    if state.get("observation_space") != observation_space or int(state.get("tasks", 0)) != n_tasks:
        raise RLKitError(f"init_from={source} was trained on {state.get('observation_space')} with "
                         f"{state.get('tasks', 0)} tasks, not {observation_space} with {n_tasks}; fine-tune on an env "
                         "of the same suite (its held-out context keeps the suite's width)")
    try:
        for name, module in modules.items():
            module.load_state_dict(state[name])
    except RuntimeError:
        shape = {key: state["config"].get(key) for key in settings.split(", ")}
        raise RLKitError(f"init_from={source} has other networks ({settings} differ); set them as that run did: "
                         + ", ".join(f"{key}={value}" for key, value in shape.items())) from None
    return state


def split_tasks(obs: torch.Tensor, n_tasks: int, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(base observation, task ids)`` of a batch of flat observations that end in an ``n_tasks``-wide one-hot.

    ``width``: the observation width the model was built for; a batch of another width, or whose last
    ``n_tasks`` columns are not one-hot, is refused in one line (a model of one suite fed another suite).
    """
    obs = obs.reshape(obs.shape[0], -1).float()
    if width is not None and obs.shape[1] != width:
        raise RLKitError(f"observations have {obs.shape[1]} values but this model takes {width} ({width - n_tasks} "
                         f"of the base env and a {n_tasks}-task one-hot): it was trained on another suite; use a "
                         "suite with the same base observation and task count")
    onehot = obs[:, obs.shape[1] - n_tasks:]
    if n_tasks < 1 or obs.shape[1] <= n_tasks or not bool(((onehot == 0) | (onehot == 1)).all()) \
            or not bool((onehot.sum(dim=1) == 1).all()):
        raise RLKitError(f"observations do not end in a {n_tasks}-task one-hot id, which this model's {n_tasks} "
                         "tasks need: the env has another task count or is no multi-task suite; use the suite the "
                         "model was trained on")
    return obs[:, : obs.shape[1] - n_tasks], onehot.argmax(dim=1)


def task_ids(obs: torch.Tensor, n_tasks: int) -> torch.Tensor:
    """Each row's task id: the position of the 1 in the ``n_tasks``-wide one-hot that ends the observation."""
    return split_tasks(obs, n_tasks)[1]


def flat_width(observation_space: gym.Space, n_tasks: int) -> int:
    """The width of a suite's flat observation; one line for spaces that carry no appended one-hot."""
    if isinstance(observation_space, gym.spaces.Dict):
        raise RLKitError("multi-task networks take the suite's one-hot observations, not its Dict mode; drop the "
                         "env's obs_mode='dict'")
    if not (isinstance(observation_space, gym.spaces.Box) and len(observation_space.shape) == 1):
        raise RLKitError(f"multi-task networks take flat Box observations ending in a task one-hot, not "
                         f"{observation_space}")
    width = int(observation_space.shape[0])
    if width <= n_tasks:
        raise RLKitError(f"an observation of {width} values cannot hold a base observation and a {n_tasks}-task "
                         "one-hot; check the `tasks` setting against the env")
    return width


class PerTaskHeads(nn.Module):
    """One linear head per task; each sample gets the output of its own task's head."""

    def __init__(self, in_dim: int, out_dim: int, n_tasks: int) -> None:
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(in_dim, out_dim) for _ in range(n_tasks))

    def forward(self, features: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        every = torch.stack([head(features) for head in self.heads], dim=1)  # (batch, tasks, out)
        return every[torch.arange(len(ids), device=ids.device), ids]


class HardSharing(nn.Module):
    """Hard parameter sharing: ``heads[task](trunk(base observation))``; the trunk never sees the task id."""

    def __init__(self, observation_space: gym.Space, out_dim: int, hidden: Sequence[int], n_tasks: int) -> None:
        super().__init__()
        self.n_tasks, self.width = n_tasks, flat_width(observation_space, n_tasks)
        base = self.width - n_tasks
        self.trunk = mlp(base, 0, hidden)
        self.heads = PerTaskHeads(hidden[-1] if hidden else base, out_dim, n_tasks)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        base, ids = split_tasks(obs, self.n_tasks, self.width)
        return self.heads(self.trunk(base), ids)


def base_space(observation_space: gym.Space, n_tasks: int) -> gym.spaces.Box:
    """The suite's observation space without its one-hot task id (what a hard-sharing trunk reads)."""
    width = flat_width(observation_space, n_tasks)
    return gym.spaces.Box(observation_space.low[: width - n_tasks], observation_space.high[: width - n_tasks],
                          dtype=observation_space.dtype)


class HardSharingActor(SquashedGaussianActor):
    """SAC's squashed Gaussian actor with hard sharing: the trunk reads the observation without its task id, and
    each task has its own linear mean and log-std heads."""

    def __init__(self, observation_space: gym.Space, action_space: gym.spaces.Box, hidden: list[int],
                 n_tasks: int) -> None:
        super().__init__(base_space(observation_space, n_tasks), action_space, hidden)
        self.n_tasks, self.width = n_tasks, flat_width(observation_space, n_tasks)
        width, dim = self.mean.in_features, self.mean.out_features
        self.mean, self.log_std = PerTaskHeads(width, dim, n_tasks), PerTaskHeads(width, dim, n_tasks)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        base, ids = split_tasks(obs, self.n_tasks, self.width)
        h = self.trunk(self.encoder(base))
        return self.mean(h, ids), self.log_std(h, ids).clamp(LOG_STD_MIN, LOG_STD_MAX)


class HardSharingCritics(QCriticEnsemble):
    """Twin critics with hard sharing: each critic's trunk reads (observation without its task id, action), and
    its last layer has one output per task (one linear head per task, stacked); each sample gets its task's."""

    def __init__(self, observation_space: gym.Space, action_space: gym.spaces.Box, hidden: Sequence[int],
                 n_critics: int, n_tasks: int) -> None:
        super().__init__(base_space(observation_space, n_tasks), action_space, hidden, n_critics, outputs=n_tasks)
        self.n_tasks, self.width = n_tasks, flat_width(observation_space, n_tasks)

    def forward(self, obs: torch.Tensor, action: torch.Tensor, first_only: bool = False) -> torch.Tensor:
        base, ids = split_tasks(obs, self.n_tasks, self.width)
        every = self.stacked(base, action, first_only)  # (critics, batch, tasks)
        return every.gather(2, ids.expand(len(every), -1).unsqueeze(-1)).squeeze(-1)


class PerTaskPolicy(nn.Module):
    """One policy head per task (categorical logits, or a Gaussian's mean and state-independent log std); each
    sample's distribution is its own task's head's."""

    def __init__(self, heads: Sequence[CategoricalHead | GaussianHead]) -> None:
        super().__init__()
        self.heads = nn.ModuleList(heads)
        self.gaussian = isinstance(heads[0], GaussianHead)
        self.mode = type(heads[0]).mode

    def forward(self, features: torch.Tensor, ids: torch.Tensor) -> Distribution:
        rows = torch.arange(len(ids), device=ids.device)
        if not self.gaussian:
            return Categorical(logits=torch.stack([head.logits(features) for head in self.heads], dim=1)[rows, ids])
        mean = torch.stack([head.mean(features) for head in self.heads], dim=1)[rows, ids]
        log_std = torch.stack([head.log_std for head in self.heads])[ids]
        return Independent(Normal(mean, log_std.exp()), 1)


class HardSharingActorCritic(ActorCritic):
    """PPO's actor-critic with hard sharing: the trunk (and the value trunk) read the observation without its task
    id; each task has its own policy head and value head, initialised as :class:`ActorCritic` initialises its one."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, hidden: Sequence[int], shared: bool,
                 activation: type[nn.Module], n_tasks: int) -> None:
        super().__init__(base_space(observation_space, n_tasks), action_space, hidden, shared, activation)
        self.n_tasks, self.width = n_tasks, flat_width(observation_space, n_tasks)
        width = self.value.in_features
        self.policy = PerTaskPolicy([init_orthogonal(policy_head(width, action_space), gain=0.01)
                                     for _ in range(n_tasks)])
        self.value = init_orthogonal(PerTaskHeads(width, 1, n_tasks), gain=1.0)

    def forward(self, obs: torch.Tensor) -> tuple[Distribution, torch.Tensor]:
        base, ids = split_tasks(obs, self.n_tasks, self.width)
        features = self.encoder(base)
        hidden = self.trunk(features)
        value_hidden = hidden if self.value_trunk is None else self.value_trunk(features)
        return self.policy(hidden, ids), self.value(value_hidden, ids).squeeze(-1)


class TaskConditioned(nn.Module):
    """A single-task network that reads the whole observation, task one-hot included, after the task id check."""

    def __init__(self, net: nn.Module, observation_space: gym.Space, n_tasks: int) -> None:
        super().__init__()
        self.net, self.n_tasks, self.width = net, n_tasks, flat_width(observation_space, n_tasks)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        split_tasks(obs, self.n_tasks, self.width)
        return self.net(obs)


def task_losses(per_sample: torch.Tensor, ids: torch.Tensor, n_tasks: int) -> list[torch.Tensor]:
    """Each task present in the minibatch: its rows' losses summed, divided by the minibatch size (so the task
    losses add up to ``per_sample.mean()``); tasks with no row in the minibatch are left out."""
    return [per_sample[ids == k].sum() / len(per_sample) for k in range(n_tasks) if bool((ids == k).any())]


def pcgrad_combine(grads: torch.Tensor, orders: Sequence[Sequence[int]]) -> tuple[torch.Tensor, int]:
    """PCGrad's update direction (Yu et al. 2020, Algorithm 1) from task gradients ``grads`` (tasks, params).

    Each task's gradient ``g_i`` is projected, in turn, onto the normal plane of every other task's (original)
    gradient ``g_j`` it conflicts with (``g_i . g_j < 0``): ``g_i -= (g_i . g_j) / |g_j|^2 g_j``, visiting the
    others in the order ``orders[i]``; the projected gradients are summed. Returns the sum and how many
    projections were made.
    """
    projected = grads.clone()
    conflicts = 0
    for i, order in enumerate(orders):
        for j in order:
            dot = torch.dot(projected[i], grads[j])
            if dot < 0:
                projected[i] -= dot / torch.dot(grads[j], grads[j]) * grads[j]
                conflicts += 1
    return projected.sum(dim=0), conflicts


class PCGrad:
    """Projecting conflicting gradients around a torch optimizer: ``PCGrad(optimizer).step(per_task_losses)``.

    ``step`` computes each task's gradient of every parameter of the optimizer, combines them with
    :func:`pcgrad_combine` (each task's others in a random order drawn from ``rng``, as the paper shuffles
    them), writes the result into ``.grad`` and steps. A learner that clips gradients calls ``backward``, clips,
    then ``optimizer.step()``. Parameters a task's loss does not reach (another task's head) get a zero
    gradient from it.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, rng: np.random.Generator | int = 0) -> None:
        self.optimizer = optimizer
        self.params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self.conflicts = 0  # projections made by the last backward

    def backward(self, losses: Sequence[torch.Tensor]) -> None:
        """Set every parameter's ``.grad`` to PCGrad's combination of the gradients of ``losses``."""
        if not losses:
            raise RLKitError("PCGrad needs at least one task loss")
        rows = []
        for loss in losses:
            grads = torch.autograd.grad(loss, self.params, retain_graph=True, allow_unused=True)
            rows.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1)
                                   for p, g in zip(self.params, grads)]))
        others = [[j for j in range(len(losses)) if j != i] for i in range(len(losses))]
        combined, self.conflicts = pcgrad_combine(torch.stack(rows), [self.rng.permutation(o) for o in others])
        offset = 0
        for p in self.params:
            p.grad = combined[offset: offset + p.numel()].view_as(p).clone()
            offset += p.numel()

    def step(self, losses: Sequence[torch.Tensor]) -> None:
        """One optimizer step along PCGrad's combined gradient of ``losses`` (one loss per task)."""
        self.backward(losses)
        self.optimizer.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)
