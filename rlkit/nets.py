"""Network builders driven by gymnasium spaces.

Every builder takes ``observation_space`` / ``action_space`` and derives sizes from them, so the
same code serves CartPole (flat Box), Identity (Discrete, one-hot), Atari (uint8 image, Nature CNN) and
MinAtar (uint8 10x10 grid, the MinAtar paper's small CNN).
"""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Distribution

from rlkit.distributions import LOG_STD_MAX, LOG_STD_MIN, CategoricalHead, GaussianHead, squashed_log_prob
from rlkit.errors import RLKitError
from rlkit.memory import check_network_fits


def mlp(in_dim: int, out_dim: int, hidden: Sequence[int] = (64, 64), activation: type[nn.Module] = nn.ReLU,
        output_activation: type[nn.Module] | None = None) -> nn.Sequential:
    """A fully connected stack ``in_dim -> hidden... -> out_dim`` (``out_dim=0``: no output layer); one that
    would not fit in memory is refused in one line before anything is allocated."""
    check_network_fits(in_dim, hidden, out_dim)
    layers: list[nn.Module] = []
    last = in_dim
    for width in hidden:
        layers += [nn.Linear(last, width), activation()]
        last = width
    if out_dim > 0:
        layers.append(nn.Linear(last, out_dim))
        if output_activation is not None:
            layers.append(output_activation())
    return nn.Sequential(*layers)


def init_orthogonal(module: nn.Module, gain: float = float(np.sqrt(2)), bias: float = 0.0) -> nn.Module:
    """Orthogonal weights and constant biases for every Linear/Conv layer (CleanRL's ``layer_init``)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.orthogonal_(m.weight, gain)
            nn.init.constant_(m.bias, bias)
    return module


def is_image_space(space: gym.Space) -> bool:
    """A uint8 Box with 3 dims (C,H,W or H,W,C) is treated as pixels."""
    return isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3


class NatureCNN(nn.Module):
    """The DQN-Nature torso (Mnih et al. 2015): 3 conv layers + a 512-unit linear layer.

    Takes uint8 frames (channels first; channels-last input is transposed) and scales to [0, 1].
    """

    def __init__(self, observation_space: gym.spaces.Box, features_dim: int = 512) -> None:
        super().__init__()
        shape = observation_space.shape
        self.channels_last = shape[-1] < shape[0]
        channels = shape[-1] if self.channels_last else shape[0]
        self.conv = nn.Sequential(
            nn.Conv2d(channels, 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            n_flat = self.conv(self._prepare(torch.zeros(1, *shape, dtype=torch.uint8))).shape[1]
        self.linear = nn.Sequential(nn.Linear(n_flat, features_dim), nn.ReLU())
        self.out_dim = features_dim

    def _prepare(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.float() / 255.0
        return x.permute(0, 3, 1, 2) if self.channels_last else x

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.linear(self.conv(self._prepare(obs)))


class MinAtarCNN(nn.Module):
    """The MinAtar torso (Young & Tian 2019, https://arxiv.org/abs/1903.03176): one 3x3 convolution with 16
    channels (stride 1, no padding), ReLU, flatten, a 128-unit linear layer, ReLU.

    As ``QNetwork`` and ``ACNetwork`` in MinAtar's examples/dqn.py and examples/AC_lambda.py (``nn.Conv2d(
    in_channels, 16, kernel_size=3, stride=1)``, ``fc_hidden`` of 128 units; AC_lambda.py's SiLU/dSiLU
    activations are ReLU here, as in dqn.py). A 10x10 grid gives 16 x 8 x 8 = 1024 features before the linear
    layer. Takes uint8 grids, channels first (channels-last input is transposed, as in :class:`NatureCNN`),
    divided by the space's upper bound: MinAtar's 0/1 grids reach the convolution unchanged, as in the paper.
    """

    def __init__(self, observation_space: gym.spaces.Box, features_dim: int = 128) -> None:
        super().__init__()
        shape = observation_space.shape
        self.channels_last = shape[-1] < shape[0]
        channels = shape[-1] if self.channels_last else shape[0]
        self.scale = 1.0 / float(np.max(observation_space.high))
        self.conv = nn.Sequential(nn.Conv2d(channels, 16, 3, stride=1), nn.ReLU(), nn.Flatten())
        with torch.no_grad():
            n_flat = self.conv(self._prepare(torch.zeros(1, *shape, dtype=torch.uint8))).shape[1]
        self.linear = nn.Sequential(nn.Linear(n_flat, features_dim), nn.ReLU())
        self.out_dim = features_dim

    def _prepare(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.float() * self.scale
        return x.permute(0, 3, 1, 2) if self.channels_last else x

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.linear(self.conv(self._prepare(obs)))


# The smallest image side the Nature CNN takes: its 8/4, 4/2 and 3/1 convolutions leave 1x1 of a 36x36 input.
NATURE_MIN_SIDE = 36
ENCODERS = ("auto", "nature", "minatar")


def image_encoder(observation_space: gym.spaces.Box) -> str:
    """``auto``'s choice for an image: the Nature CNN where it fits (Atari's 84x84), MinAtar's small CNN on
    smaller grids (MinAtar's 10x10), where the Nature CNN could not run at all."""
    height, width = sorted(observation_space.shape)[1:]  # the two largest sides; the channels are the smallest
    return "nature" if min(height, width) >= NATURE_MIN_SIDE else "minatar"


class ObsEncoder(nn.Module):
    """Observation -> feature vector: one-hot for Discrete, a CNN for images, flatten otherwise.

    ``out_dim`` is the feature size. Flat observations pass through unchanged (the MLP comes after).
    ``encoder`` picks the CNN for images: ``nature`` (:class:`NatureCNN`), ``minatar`` (:class:`MinAtarCNN`),
    or ``auto`` (:func:`image_encoder`: by the image's size). ``cnn_features`` (default: the CNN's own, 512 or
    128) sizes the CNN's last layer.
    """

    def __init__(self, observation_space: gym.Space, cnn_features: int | None = None, encoder: str = "auto") -> None:
        super().__init__()
        if encoder not in ENCODERS:
            raise RLKitError(f"unknown encoder {encoder!r}; use one of {', '.join(ENCODERS)}")
        self.cnn: NatureCNN | MinAtarCNN | None = None
        self.n_discrete = 0
        if encoder != "auto" and not is_image_space(observation_space):
            raise RLKitError(f"encoder {encoder!r} takes uint8 images (3 dims), not {observation_space}; "
                             "use encoder 'auto'")
        if isinstance(observation_space, gym.spaces.Discrete):
            self.n_discrete = int(observation_space.n)
            self.out_dim = self.n_discrete
        elif is_image_space(observation_space):
            kind = image_encoder(observation_space) if encoder == "auto" else encoder
            cnn = MinAtarCNN if kind == "minatar" else NatureCNN
            self.cnn = cnn(observation_space) if cnn_features is None else cnn(observation_space, cnn_features)
            self.out_dim = self.cnn.out_dim
        elif isinstance(observation_space, gym.spaces.Box):
            self.out_dim = int(np.prod(observation_space.shape))
        else:
            raise RLKitError(f"unsupported observation space {observation_space}; use Box or Discrete "
                             "(flatten Dict/Tuple spaces with gymnasium.wrappers.FlattenObservation)")

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.n_discrete:
            return nn.functional.one_hot(obs.long().reshape(-1), self.n_discrete).float()
        if self.cnn is not None:
            return self.cnn(obs)
        return obs.reshape(obs.shape[0], -1).float()


class DuelingHead(nn.Module):
    """Q = V + A - mean(A) (Wang et al. 2016), each stream one hidden layer."""

    def __init__(self, in_dim: int, n_actions: int, hidden: int = 64) -> None:
        super().__init__()
        self.value = mlp(in_dim, 1, [hidden])
        self.advantage = mlp(in_dim, n_actions, [hidden])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        adv = self.advantage(features)
        return self.value(features) + adv - adv.mean(dim=1, keepdim=True)


class QNetwork(nn.Module):
    """Discrete Q(s, .): encoder -> MLP trunk -> linear head (or dueling head)."""

    def __init__(self, observation_space: gym.Space, action_space: gym.spaces.Discrete,
                 hidden: Sequence[int] = (64, 64), dueling: bool = False, encoder: str = "auto") -> None:
        super().__init__()
        n_actions = int(action_space.n)
        self.encoder = ObsEncoder(observation_space, encoder=encoder)
        trunk_hidden = list(hidden[:-1]) if dueling and hidden else list(hidden)
        self.trunk = mlp(self.encoder.out_dim, 0, trunk_hidden)
        trunk_out = trunk_hidden[-1] if trunk_hidden else self.encoder.out_dim
        if dueling:
            self.head: nn.Module = DuelingHead(trunk_out, n_actions, hidden[-1] if hidden else 64)
        else:
            self.head = nn.Linear(trunk_out, n_actions)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(self.encoder(obs)))


class DeterministicActor(nn.Module):
    """mu(s) = tanh(net(s)) * scale + bias, mapped onto the Box bounds (any, asymmetric too).

    Scale and bias are registered buffers so checkpoints carry them.
    """

    def __init__(self, observation_space: gym.Space, action_space: gym.spaces.Box,
                 hidden: Sequence[int] = (256, 256)) -> None:
        super().__init__()
        check_bounded_box(action_space)
        self.encoder = ObsEncoder(observation_space)
        self.net = mlp(self.encoder.out_dim, int(np.prod(action_space.shape)), hidden, output_activation=nn.Tanh)
        low = torch.as_tensor(action_space.low, dtype=torch.float32).flatten()
        high = torch.as_tensor(action_space.high, dtype=torch.float32).flatten()
        self.register_buffer("action_scale", (high - low) / 2.0)
        self.register_buffer("action_bias", (high + low) / 2.0)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(self.encoder(obs)) * self.action_scale + self.action_bias


class QCriticEnsemble(nn.Module):
    """``n_critics`` independent Q(s, a) MLPs (TD3's twin critics) evaluated in one pass.

    Layer ``i`` of every critic is stacked into one ``(n, in, out)`` weight, so a single batched
    matmul (``baddbmm``) serves all critics: for twin [400, 300] critics on one CPU thread an update
    is about a fifth faster than with two separate MLPs. Each critic starts as an independent stack of
    freshly built ``nn.Linear`` layers (torch's default initialisation, as ``mlp(in_dim, 1, hidden)``).
    Takes flat or discrete observations (a per-critic CNN would not stack).

    ``forward(obs, action) -> (n_critics, batch)``; ``forward(obs, action, first_only=True)`` runs
    critic 0 alone, ``(1, batch)`` (TD3's actor loss). ``outputs`` > 1 gives each critic that many outputs
    (``stacked``: ``(n, batch, outputs)``; the multi-task critics' one output per task).
    """

    def __init__(self, observation_space: gym.Space, action_space: gym.spaces.Box,
                 hidden: Sequence[int] = (256, 256), n_critics: int = 2, outputs: int = 1) -> None:
        super().__init__()
        if n_critics < 1:
            raise RLKitError(f"n_critics must be at least 1; got {n_critics}")
        self.encoder = ObsEncoder(observation_space)
        if self.encoder.cnn is not None:
            raise RLKitError("QCriticEnsemble takes flat or discrete observations; got image observations "
                             f"{observation_space} (flatten them first)")
        self.n_critics = n_critics
        sizes = [self.encoder.out_dim + int(np.prod(action_space.shape)), *hidden, outputs]
        check_network_fits(sizes[0], hidden, outputs, copies=n_critics)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            layers = [nn.Linear(fan_in, fan_out) for _ in range(n_critics)]
            self.weights.append(nn.Parameter(torch.stack([layer.weight.detach().T for layer in layers])))
            self.biases.append(nn.Parameter(torch.stack([layer.bias.detach()[None] for layer in layers])))

    def forward(self, obs: torch.Tensor, action: torch.Tensor, first_only: bool = False) -> torch.Tensor:
        return self.stacked(obs, action, first_only).squeeze(-1)

    def stacked(self, obs: torch.Tensor, action: torch.Tensor, first_only: bool = False) -> torch.Tensor:
        """Every critic's outputs, ``(n_critics or 1, batch, outputs)``."""
        x = torch.cat([self.encoder(obs), action.reshape(action.shape[0], -1).float()], dim=1)
        n = 1 if first_only else self.n_critics
        h = x.expand(n, *x.shape)
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(bias[:n], h, weight[:n])
            if i < last:
                h = torch.relu(h)
        return h


def policy_head(in_dim: int, action_space: gym.Space) -> CategoricalHead | GaussianHead:
    """The distribution head that fits ``action_space`` (Discrete or Box)."""
    if isinstance(action_space, gym.spaces.Discrete):
        return CategoricalHead(in_dim, int(action_space.n))
    if isinstance(action_space, gym.spaces.Box):
        return GaussianHead(in_dim, int(np.prod(action_space.shape)))
    raise RLKitError(f"no policy head for action space {action_space}; rlkit supports Discrete and Box")


class ActorCritic(nn.Module):
    """Shared trunk (encoder + MLP) with a policy head and a value head.

    ``forward(obs) -> (distribution, value)``. With ``shared=False`` the value function gets its own
    trunk (as SB3 does for continuous control). ``encoder`` picks the CNN for images (:class:`ObsEncoder`).
    """

    def __init__(self, observation_space: gym.Space, action_space: gym.Space,
                 hidden: Sequence[int] = (64, 64), shared: bool = True,
                 activation: type[nn.Module] = nn.Tanh, encoder: str = "auto") -> None:
        super().__init__()
        self.encoder = ObsEncoder(observation_space, encoder=encoder)
        feat = self.encoder.out_dim
        out = hidden[-1] if hidden else feat
        self.trunk = mlp(feat, 0, hidden, activation)
        self.value_trunk = None if shared else mlp(feat, 0, hidden, activation)
        self.policy = policy_head(out, action_space)
        self.value = nn.Linear(out, 1)
        init_orthogonal(self.trunk)
        if self.value_trunk is not None:
            init_orthogonal(self.value_trunk)
        init_orthogonal(self.policy, gain=0.01)
        init_orthogonal(self.value, gain=1.0)

    def forward(self, obs: torch.Tensor) -> tuple[Distribution, torch.Tensor]:
        features = self.encoder(obs)
        hidden = self.trunk(features)
        value_hidden = hidden if self.value_trunk is None else self.value_trunk(features)
        return self.policy(hidden), self.value(value_hidden).squeeze(-1)

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        dist, _ = self(obs)
        return self.policy.mode(dist) if deterministic else dist.sample()


def check_bounded_box(space: gym.Space) -> None:
    if not isinstance(space, gym.spaces.Box) or not np.all(np.isfinite(space.low)) \
            or not np.all(np.isfinite(space.high)):
        raise RLKitError(f"a deterministic actor needs a bounded Box action space; got {space}")


def polyak_update(source: nn.Module, target: nn.Module, tau: float) -> None:
    """target <- tau * source + (1 - tau) * target, in place (tau = 1 is a hard copy).

    Buffers (e.g. the actor's action scale) are copied as they are.
    """
    with torch.no_grad():
        src = list(source.parameters())
        tgt = list(target.parameters())
        if tau >= 1.0:
            torch._foreach_copy_(tgt, src)
        else:
            torch._foreach_lerp_(tgt, src, tau)
        for t, s in zip(target.buffers(), source.buffers()):
            t.copy_(s)


def check_continuous_spaces(obs_space: gym.Space, act_space: gym.Space, env_id: str, agent: str) -> None:
    """DDPG/TD3's and SAC's spaces: bounded Box actions, flat observations (one-line errors naming the env)."""
    if not isinstance(act_space, gym.spaces.Box):
        raise RLKitError(f"{agent} needs a continuous (Box) action space, but {env_id} has {act_space}; "
                         "use dqn or a2c for discrete actions")
    if not (np.all(np.isfinite(act_space.low)) and np.all(np.isfinite(act_space.high))):
        raise RLKitError(f"{agent} needs finite action bounds, but {env_id} has {act_space}; "
                         "wrap the env in gymnasium.wrappers.ClipAction or RescaleAction")
    if is_image_space(obs_space):
        raise RLKitError(f"{agent} takes flat observations, but {env_id} has images {obs_space}; use a2c")


class SquashedGaussianActor(nn.Module):
    """s -> (mean, log std) of u; ``a = tanh(u) * scale + bias`` lies inside the Box bounds."""

    def __init__(self, observation_space: gym.Space, action_space: gym.spaces.Box, hidden: list[int]) -> None:
        super().__init__()
        check_bounded_box(action_space)
        self.encoder = ObsEncoder(observation_space)
        dim = int(np.prod(action_space.shape))
        self.trunk = mlp(self.encoder.out_dim, 0, hidden)
        width = hidden[-1] if hidden else self.encoder.out_dim
        self.mean, self.log_std = nn.Linear(width, dim), nn.Linear(width, dim)
        low = torch.as_tensor(action_space.low, dtype=torch.float32).flatten()
        high = torch.as_tensor(action_space.high, dtype=torch.float32).flatten()
        self.register_buffer("action_scale", (high - low) / 2.0)
        self.register_buffer("action_bias", (high + low) / 2.0)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(self.encoder(obs))
        return self.mean(h), self.log_std(h).clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised action (Box units) and its log-prob (of the [-1, 1] action)."""
        mean, log_std = self(obs)
        u = mean + log_std.exp() * torch.randn_like(mean)
        return torch.tanh(u) * self.action_scale + self.action_bias, squashed_log_prob(u, mean, log_std)

    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return torch.tanh(self(obs)[0]) * self.action_scale + self.action_bias if deterministic \
            else self.sample(obs)[0]
