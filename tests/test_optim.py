"""The shared optimizer builder and schedule."""

import pytest
import torch

from rlkit.optim import linear, make_optimizer, scheduled, set_lr


def test_linear_and_scheduled_at_hand_values():
    assert linear(1.0, 0.1, 0.0) == 1.0
    assert linear(1.0, 0.1, 0.5) == pytest.approx(0.55)
    assert linear(1.0, 0.1, 2.0) == pytest.approx(0.1)
    assert linear(1.0, 0.1, -1.0) == 1.0
    assert scheduled(3e-4, "constant", 0.9) == 3e-4
    assert scheduled(3e-4, "linear", 0.25) == pytest.approx(2.25e-4)
    assert scheduled(3e-4, "linear", 1.5) == 0.0


@pytest.mark.parametrize("name", ["adam", "rmsprop"])
def test_optimizer_matches_torch_reference(name):
    torch.manual_seed(0)
    a = torch.nn.Linear(3, 2)
    b = torch.nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    ours = make_optimizer(a.parameters(), name, lr=1e-2, eps=1e-5, rmsprop_alpha=0.95, centered=True)
    if name == "adam":
        ref = torch.optim.Adam(b.parameters(), lr=1e-2, eps=1e-5)
    else:
        ref = torch.optim.RMSprop(b.parameters(), lr=1e-2, alpha=0.95, eps=1e-5, centered=True)
    x = torch.randn(8, 3)
    for _ in range(3):
        for net, opt in ((a, ours), (b, ref)):
            opt.zero_grad()
            net(x).pow(2).sum().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q)
    set_lr(ours, 0.5)
    assert all(g["lr"] == 0.5 for g in ours.param_groups)


def test_unknown_optimizer_is_refused():
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        make_optimizer(torch.nn.Linear(1, 1).parameters(), "sgd")
