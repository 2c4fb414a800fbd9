"""The floor: one bare gradient step of rlkit vs SB3 on the benchmarked networks, interleaved.

DQN: CartPole, [256, 256] MLP, batch 64, Huber loss, grad-norm clip 10, Adam (the ``cartpole``
preset and the RL-Zoo settings). rlkit's step is Double DQN (one forward over [obs; next_obs]), SB3's
is plain DQN. TD3: Pendulum, [400, 300] actor and twin critics, batch 100, policy delay 2.

Each side runs ``--steps`` gradient steps from a filled buffer in rounds of ``--round`` steps,
rounds alternating between the libraries (so machine load hits both alike); per step it reports
the median round's wall and process-CPU time. The rlkit side includes the minibatch slicing of its
training loop; SB3's is ``model.train(gradient_steps, batch_size)``, which samples inside.

    python benchmarks/bench_grad_step.py --steps 2560
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


def joined_double_loss(q_net, q_target, batch):
    """rlkit's Double DQN loss before this change: one autograd pass over [obs; next_obs]."""
    from rlkit.agents.dqn import td_target

    with torch.no_grad():
        next_q_target = q_target(batch.next_obs)
    q_both = q_net(torch.cat([batch.obs, batch.next_obs]))
    q_all, next_q_online = q_both[: len(batch.obs)], q_both[len(batch.obs):].detach()
    target = td_target(batch.rewards, batch.terminated, batch.discounts, next_q_target, next_q_online)
    q_taken = q_all.gather(1, batch.actions.long().reshape(-1, 1)).squeeze(1)
    return (batch.weights * torch.nn.functional.smooth_l1_loss(q_taken, target, reduction="none")).mean()


def rlkit_dqn(before: bool) -> Callable[[int], None]:
    """The gradient-step part of rlkit's DQN loop (``before``: the code as it was before this change)."""
    import copy

    import gymnasium as gym
    from rlkit.agents.dqn import DQNConfig, build_q_net, dqn_loss

    from rlkit.buffers import ReplayBuffer
    from rlkit.policy import Batch

    env = gym.make("CartPole-v1")
    cfg = DQNConfig(env_id="CartPole-v1", hidden=[256, 256], double=True, batch_size=64, lr=2.3e-3)
    q_net = build_q_net(cfg, env.observation_space, env.action_space)
    q_target = copy.deepcopy(q_net).requires_grad_(False)
    if before:
        optimizer = torch.optim.Adam(q_net.parameters(), lr=cfg.lr, foreach=True)
    else:
        optimizer = cfg.build_optimizer(q_net.parameters())
    buffer = fill(ReplayBuffer(10_000, env.observation_space, env.action_space, rng=np.random.default_rng(0)),
                  env)
    params = list(q_net.parameters())

    def steps(n: int) -> None:
        presampled = buffer.sample(cfg.batch_size * n)
        if not before:
            with torch.no_grad():
                next_q_targets = q_target(presampled.next_obs)
        for i in range(n):
            rows = slice(i * cfg.batch_size, (i + 1) * cfg.batch_size)
            batch = Batch(*(x[rows] for x in presampled))
            if before:
                loss = joined_double_loss(q_net, q_target, batch)
            else:
                loss, _, _ = dqn_loss(q_net, q_target, batch, True, "huber", next_q_targets[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(q_net.parameters() if before else params, 10.0)
            optimizer.step()
    return steps


def fill(buffer, env, n: int = 5_000):
    obs, _ = env.reset(seed=0)
    for _ in range(n):
        a = env.action_space.sample()
        nxt, r, term, trunc, _ = env.step(a)
        buffer.add(np.asarray(obs)[None], np.asarray([a]), np.asarray([r]), np.asarray(nxt)[None],
                   np.asarray([term]), np.asarray([trunc]))
        obs = env.reset()[0] if term or trunc else nxt
    return buffer


def sb3_dqn() -> Callable[[int], None]:
    from stable_baselines3 import DQN

    model = DQN("MlpPolicy", "CartPole-v1", learning_rate=2.3e-3, batch_size=64, learning_starts=0,
                policy_kwargs=dict(net_arch=[256, 256]), device="cpu", seed=0)
    model.learn(5_000)  # fills the buffer (trains too: the Zoo's train_freq is not set here)
    return lambda n: model.train(gradient_steps=n, batch_size=64)


def rlkit_td3() -> Callable[[int], None]:
    import gymnasium as gym
    from rlkit.agents.ddpg import build_nets, gradient_step, td3_config

    from rlkit.buffers import ReplayBuffer
    from rlkit.policy import Batch

    env = gym.make("Pendulum-v1")
    cfg = td3_config(env_id="Pendulum-v1", hidden=[400, 300], batch_size=100)
    nets = build_nets(cfg, env.observation_space, env.action_space)
    buffer = fill(ReplayBuffer(10_000, env.observation_space, env.action_space, rng=np.random.default_rng(0)),
                  env)
    counter = [0]

    def steps(n: int) -> None:
        batches = buffer.sample(cfg.batch_size * n)
        for i in range(n):
            counter[0] += 1
            batch = Batch(*(x[i * cfg.batch_size:(i + 1) * cfg.batch_size] for x in batches))
            gradient_step(nets, batch, cfg, counter[0])
    return steps


def sb3_td3() -> Callable[[int], None]:
    from stable_baselines3 import TD3

    model = TD3("MlpPolicy", "Pendulum-v1", learning_rate=1e-3, batch_size=100, learning_starts=5_000,
                policy_kwargs=dict(net_arch=[400, 300]), device="cpu", seed=0, gamma=0.98, tau=0.005)
    model.learn(5_000)
    return lambda n: model.train(gradient_steps=n, batch_size=100)


def measure(sides: dict, total: int, round_size: int) -> dict:
    times = {name: ([], []) for name in sides}
    for fn in sides.values():
        fn(round_size)  # warm-up
    for _ in range(total // round_size):
        for name, fn in sides.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn(round_size)
            times[name][0].append((time.perf_counter() - t0) / round_size * 1e3)
            times[name][1].append((time.process_time() - c0) / round_size * 1e3)
    return {name: {"wall_ms_per_step": statistics.median(w), "cpu_ms_per_step": statistics.median(c)}
            for name, (w, c) in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2560)
    parser.add_argument("--round", type=int, default=128)
    parser.add_argument("--out", default="benchmarks/results/grad_step.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory():
        dqn = measure({"rlkit_dqn": rlkit_dqn(False), "rlkit_dqn_before": rlkit_dqn(True),
                       "sb3_dqn": sb3_dqn()}, args.steps, args.round)
        td3 = measure({"rlkit_td3": rlkit_td3(), "sb3_td3": sb3_td3()}, args.steps, args.round)
    out = {"torch": torch.__version__, "torch_threads": 1, "dqn": dqn, "td3": td3}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
