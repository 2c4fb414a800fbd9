"""PPO's minibatch step, fast: the categorical MLP evaluated as functional calls, and Adam over one flat buffer.

py-spy put 68% of a 100k-step CartPole PPO run in its 7,820 minibatch steps (256 samples, two 64-64 tanh
MLPs): backward 22%, forward 17%, loss 10%, gradient clipping 7.5%, Adam 6%. Most of it is per-call overhead,
not arithmetic, so a step here

* runs the model as plain ``torch.nn.functional`` calls on its own parameters (:func:`functional_evaluator`):
  the same ops as ``model(obs)`` and :class:`torch.distributions.Categorical`'s normalisation, log_prob and
  entropy, so bit-identical outputs and gradients, without the per-module calls and the distribution
  object's argument checks (a third of a CartPole minibatch step);
* steps :class:`rlkit.fast.flat_adam.FlatAdam` (:func:`flat_adam`): five tensor ops and one norm for the
  gradient clip, where torch's Adam and ``clip_grad_norm_`` loop over a dozen small tensors (and
  ``torch.optim``'s first use imports ``torch._dynamo``: 1.4 s CPU).

A step went from 2.4 to 1.7 ms CPU. ``tests/test_fast_ppo.py`` checks each against the plain PyTorch path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's own alias

from rlkit.distributions import CategoricalHead
from rlkit.fast.flat_adam import FlatAdam
from rlkit.nets import ActorCritic

# (obs, actions, entropy_grad) -> (log_prob, entropy, values)
Evaluator = Callable[[torch.Tensor, torch.Tensor, bool], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
Layer = Callable[[torch.Tensor], torch.Tensor]


def functional_evaluator(model: ActorCritic) -> Evaluator | None:
    """The update's ``(obs, actions, entropy_grad) -> (log_prob, entropy, values)`` as functional calls, for a
    flat-input MLP with a categorical head (CartPole and the like); None for any other model. The entropy
    carries a gradient only when ``entropy_grad``."""
    layers = functional_layers(model)
    if layers is None:
        return None
    trunk, value_trunk, policy, value = layers
    min_real = torch.finfo(torch.float32).min

    def categorical(obs: torch.Tensor, actions: torch.Tensor, entropy_grad: bool
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = model.encoder(obs)
        hidden = run_layers(trunk, features)
        logits = policy(hidden)
        log_probs = logits - logits.logsumexp(dim=-1, keepdim=True)  # Categorical(logits=...) normalises so
        values = value(hidden if value_trunk is None else run_layers(value_trunk, features)).squeeze(-1)
        log_prob = log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = -(log_probs.clamp(min=min_real) * log_probs.softmax(dim=-1)).sum(-1)  # Categorical.entropy
        return log_prob, entropy, values

    return categorical


def functional_layers(model: ActorCritic) -> tuple[list[Layer], list[Layer] | None, Layer, Layer] | None:
    """(trunk, value trunk or None, policy logits, value) of a flat-input categorical MLP actor-critic as
    ``torch.nn.functional`` calls bound to its parameters, or None for any other model."""
    def as_functions(modules: list[nn.Module]) -> list[Layer] | None:
        out: list[Layer] = []
        for m in modules:
            if isinstance(m, nn.Linear):
                out.append(lambda x, w=m.weight, b=m.bias: F.linear(x, w, b))
            elif isinstance(m, (nn.Tanh, nn.ReLU)):
                out.append(torch.tanh if isinstance(m, nn.Tanh) else torch.relu)
            else:
                return None
        return out

    if model.encoder.cnn is not None or model.encoder.n_discrete or not isinstance(model.policy, CategoricalHead):
        return None
    trunk = as_functions(list(model.trunk))
    value_trunk = None if model.value_trunk is None else as_functions(list(model.value_trunk))
    heads = as_functions([model.policy.logits, model.value])
    if trunk is None or heads is None or (model.value_trunk is not None and value_trunk is None):
        return None
    return trunk, value_trunk, heads[0], heads[1]


def run_layers(layers: list[Layer], x: torch.Tensor) -> torch.Tensor:
    for layer in layers:
        x = layer(x)
    return x


def flat_adam(model: nn.Module, optimizer: str, lr: float, eps: float) -> FlatAdam | None:
    """Adam as :class:`FlatAdam` (the parameters become views of one buffer), or None for another optimizer.
    Build it before anything keeps views of the parameters (the numpy actor)."""
    return FlatAdam(model, lr=lr, eps=eps) if optimizer == "adam" else None


def clip_grad_norm(optimizer: Any, parameters: list[nn.Parameter], max_norm: float) -> None:
    """Clip the gradients to ``max_norm`` (global L2 norm): one norm over FlatAdam's flat gradient, else torch's
    ``clip_grad_norm_`` (foreach)."""
    if isinstance(optimizer, FlatAdam):
        optimizer.clip_grad_norm_(max_norm)
    else:
        nn.utils.clip_grad_norm_(parameters, max_norm, foreach=True)


def load_optimizer_state(optimizer: Any, saved: dict[str, Any]) -> None:
    """Restore the optimizer; a checkpoint of a run that trained with torch's Adam (rlkit before FlatAdam in
    PPO) has per-parameter moments, concatenated here in parameter order (the flat buffer's order)."""
    if isinstance(optimizer, FlatAdam) and "param_groups" in saved:
        moments = [saved["state"][i] for i in saved["param_groups"][0]["params"] if i in saved["state"]]
        if not moments:  # saved before the first step
            return
        saved = {"exp_avg": torch.cat([m["exp_avg"].reshape(-1) for m in moments]),
                 "exp_avg_sq": torch.cat([m["exp_avg_sq"].reshape(-1) for m in moments]),
                 "steps": int(moments[0]["step"])}
    optimizer.load_state_dict(saved)
