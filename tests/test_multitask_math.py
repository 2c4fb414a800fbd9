"""Multi-task maths by hand (issue 24, item 2): PCGrad's projection (Yu et al. 2020, Algorithm 1) on hand-made 2-D
gradients, the task losses, task ids off the observation, per-task heads routing and hard sharing."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from rlkit.errors import RLKitError
from rlkit.multitask import (
    HardSharing,
    PCGrad,
    PerTaskHeads,
    TaskConditioned,
    pcgrad_combine,
    split_tasks,
    task_ids,
    task_losses,
)

G1, G2, G3 = [1.0, 0.0], [-1.0, 1.0], [-1.0, -2.0]


def combine(grads: list[list[float]], orders: list[list[int]]) -> tuple[list[float], int]:
    total, conflicts = pcgrad_combine(torch.tensor(grads), orders)
    return total.tolist(), conflicts


def test_two_conflicting_gradients_are_projected_onto_each_others_normal_plane():
    # g1.g2 = -1 < 0: g1 - (-1 / |g2|^2 = 2) g2 = (1, 0) + 0.5 (-1, 1) = (0.5, 0.5);
    # g2 - (-1 / |g1|^2 = 1) g1 = (-1, 1) + (1, 0) = (0, 1); sum (0.5, 1.5) (plain sum: (0, 1))
    total, conflicts = combine([G1, G2], [[1], [0]])
    assert total == pytest.approx([0.5, 1.5]) and conflicts == 2


def test_gradients_that_do_not_conflict_are_summed_unchanged():
    total, conflicts = combine([G1, [1.0, 1.0]], [[1], [0]])  # g1.g2 = 1 > 0
    assert total == pytest.approx([2.0, 1.0]) and conflicts == 0
    total, conflicts = combine([G1, [0.0, 3.0]], [[1], [0]])  # orthogonal: dot 0, not a conflict
    assert total == pytest.approx([1.0, 3.0]) and conflicts == 0


def test_three_tasks_project_against_the_original_gradients_in_the_order_given():
    # Order 1: g1 vs g2 -> (0.5, 0.5), vs g3 (dot -1.5, |g3|^2 5) -> (0.2, -0.1);
    #          g2 vs g1 -> (0, 1), vs g3 (dot -2) -> (-0.4, 0.2); g3 vs g1 -> (0, -2), vs g2 (dot -2) -> (-1, -1).
    total, conflicts = combine([G1, G2, G3], [[1, 2], [0, 2], [0, 1]])
    assert total == pytest.approx([0.2 - 0.4 - 1.0, -0.1 + 0.2 - 1.0]) and conflicts == 6
    # Order 2: g1 vs g3 (dot -1) -> (0.8, -0.4), vs g2 (dot -1.2) -> (0.2, 0.2);
    #          g2 vs g3 (dot -1) -> (-1.2, 0.6), vs g1 (dot -1.2) -> (0, 0.6);
    #          g3 vs g2 (dot -1) -> (-1.5, -1.5), vs g1 (dot -1.5) -> (0, -1.5)
    total, conflicts = combine([G1, G2, G3], [[2, 1], [2, 0], [1, 0]])
    assert total == pytest.approx([0.2, 0.2 + 0.6 - 1.5]) and conflicts == 6


def linear_losses(theta: nn.Parameter, grads: list[list[float]]) -> list[torch.Tensor]:
    """Loss g_k . theta has gradient g_k."""
    return [torch.dot(torch.tensor(g), theta) for g in grads]


def test_pcgrad_steps_the_wrapped_optimizer_along_the_combined_gradient():
    theta = nn.Parameter(torch.tensor([3.0, -2.0]))
    pcgrad = PCGrad(torch.optim.SGD([theta], lr=1.0))
    pcgrad.step(linear_losses(theta, [G1, G2]))
    assert theta.tolist() == pytest.approx([3.0 - 0.5, -2.0 - 1.5]) and pcgrad.conflicts == 2
    # without a conflict PCGrad's step is the plain step on the summed loss
    plain = nn.Parameter(torch.tensor([3.0, -2.0]))
    optimizer = torch.optim.SGD([plain], lr=1.0)
    sum(linear_losses(plain, [G1, [1.0, 1.0]])).backward()
    optimizer.step()
    theta = nn.Parameter(torch.tensor([3.0, -2.0]))
    PCGrad(torch.optim.SGD([theta], lr=1.0)).step(linear_losses(theta, [G1, [1.0, 1.0]]))
    assert theta.tolist() == plain.tolist() == pytest.approx([1.0, -3.0])


def test_pcgrad_draws_each_tasks_order_from_its_seed():
    def run(seed: int) -> list[float]:
        theta = nn.Parameter(torch.zeros(2))
        pcgrad = PCGrad(torch.optim.SGD([theta], lr=1.0), rng=seed)
        for _ in range(20):
            pcgrad.step(linear_losses(theta, [G1, G2, G3]))
        return theta.tolist()

    assert run(0) == run(0)
    # the two orders of each task give different sums (above): 20 steps of random orders are not all alike
    steps = set()
    theta = nn.Parameter(torch.zeros(2))
    pcgrad = PCGrad(torch.optim.SGD([theta], lr=1.0), rng=1)
    for _ in range(20):
        before = theta.detach().clone()
        pcgrad.step(linear_losses(theta, [G1, G2, G3]))
        steps.add(tuple(np.round((before - theta.detach()).tolist(), 6)))
    assert len(steps) > 1


def test_parameters_a_task_does_not_reach_get_a_zero_gradient_from_it():
    head_a, head_b = nn.Parameter(torch.tensor([1.0])), nn.Parameter(torch.tensor([1.0]))
    pcgrad = PCGrad(torch.optim.SGD([head_a, head_b], lr=1.0))
    pcgrad.backward([2.0 * head_a.sum(), -3.0 * head_b.sum()])  # disjoint: orthogonal, no projection
    assert head_a.grad.tolist() == [2.0] and head_b.grad.tolist() == [-3.0] and pcgrad.conflicts == 0
    with pytest.raises(RLKitError, match="at least one task loss"):
        pcgrad.backward([])


def test_task_losses_are_each_tasks_share_of_the_minibatch_mean():
    per_sample = torch.tensor([1.0, 2.0, 3.0, 4.0])
    losses = task_losses(per_sample, torch.tensor([0, 1, 0, 1]), 3)  # task 2 has no row: left out
    assert [loss.item() for loss in losses] == [(1 + 3) / 4, (2 + 4) / 4]
    assert sum(losses).item() == per_sample.mean().item()


def test_task_ids_split_off_the_one_hot_and_refuse_what_is_not_one():
    obs = torch.tensor([[0.5, -1.0, 0, 0, 1], [2.0, 3.0, 1, 0, 0]])
    base, ids = split_tasks(obs, 3)
    assert base.tolist() == [[0.5, -1.0], [2.0, 3.0]] and ids.tolist() == [2, 0]
    assert task_ids(obs, 3).tolist() == [2, 0]
    with pytest.raises(RLKitError, match="do not end in a 3-task one-hot id") as e:
        task_ids(torch.tensor([[0.5, -1.0, 0, 1, 1]]), 3)  # two ids at once
    assert "\n" not in str(e.value)
    with pytest.raises(RLKitError, match="do not end in a 3-task one-hot id"):
        task_ids(torch.tensor([[0.5, -1.0, 0, 0.5, 0.5]]), 3)
    with pytest.raises(RLKitError, match="observations have 4 values but this model takes 5"):
        split_tasks(torch.tensor([[0.5, 0, 0, 1]]), 3, width=5)


def test_per_task_heads_route_each_sample_to_its_tasks_head():
    heads = PerTaskHeads(2, 3, n_tasks=4)
    features = torch.tensor([[1.0, 2.0], [1.0, 2.0], [-1.0, 0.5]])
    ids = torch.tensor([3, 0, 3])
    out = heads(features, ids)
    for row, task in enumerate(ids.tolist()):
        torch.testing.assert_close(out[row], heads.heads[task](features[row]))
    with torch.no_grad():  # by hand: head k outputs k + the features' sum on every action
        for k, head in enumerate(heads.heads):
            head.weight.fill_(1.0)
            head.bias.fill_(float(k))
    assert heads(features, ids).tolist() == [[6.0] * 3, [3.0] * 3, [2.5] * 3]


def test_hard_sharing_trunk_reads_the_observation_without_its_id_and_heads_pick_by_it():
    space = gym.spaces.Box(-np.inf, np.inf, (3 + 2,), np.float32)
    net = HardSharing(space, out_dim=2, hidden=[8], n_tasks=2)
    obs = torch.tensor([[0.1, 0.2, 0.3, 1, 0], [0.1, 0.2, 0.3, 0, 1]])
    features = net.trunk(obs[:1, :3])
    out = net(obs)
    torch.testing.assert_close(out[0], net.heads.heads[0](features)[0])
    torch.testing.assert_close(out[1], net.heads.heads[1](features)[0])
    net(obs[:1]).sum().backward()  # task 0's sample: head 1 gets no gradient, the trunk does
    assert not net.heads.heads[1].weight.grad.any() and net.heads.heads[0].weight.grad.any()
    assert net.trunk[0].weight.grad[:, :3].any()
    with pytest.raises(RLKitError, match="takes 5"):
        net(torch.zeros(1, 4))
    with pytest.raises(RLKitError, match="not its Dict mode"):
        HardSharing(gym.spaces.Dict({"obs": space}), 2, [8], 2)


def test_task_conditioned_checks_the_id_then_reads_the_whole_observation():
    space = gym.spaces.Box(-1, 1, (4,), np.float32)
    inner = nn.Linear(4, 2)
    net = TaskConditioned(inner, space, n_tasks=2)
    obs = torch.tensor([[0.3, -0.2, 0, 1]])
    torch.testing.assert_close(net(obs), inner(obs))
    with pytest.raises(RLKitError, match="2-task one-hot"):
        net(torch.tensor([[0.3, -0.2, 0, 0]]))
