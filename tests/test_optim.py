"""The shared optimizer builder and schedule."""

import pytest
import torch

from rlkit.fast.flat_adam import FlatAdam
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


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_flat_adam_matches_torch_adam_step_for_step(weight_decay):
    def net():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8), torch.nn.ReLU(),
                                   torch.nn.Linear(8, 2))

    ours, ref = net(), net()
    opt_ours = FlatAdam(ours, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=weight_decay)
    opt_ref = torch.optim.Adam(ref.parameters(), lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=weight_decay)
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    for _ in range(5):
        for model, opt in ((ours, opt_ours), (ref, opt_ref)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        for (name, a), b in zip(ours.named_parameters(), ref.parameters()):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)
    # every parameter (and its gradient) is a view of the one buffer the five ops update
    assert sum(p.numel() for p in ours.parameters()) == opt_ours.param.numel()
    assert all(p.untyped_storage().data_ptr() == opt_ours.param.untyped_storage().data_ptr() for p in ours.parameters())
    assert all(p.grad.untyped_storage().data_ptr() == opt_ours.grad.untyped_storage().data_ptr()
               for p in ours.parameters())
    # state round trip: a restored optimizer continues identically
    clone = FlatAdam(net(), lr=0.01)
    clone.load_state_dict(opt_ours.state_dict())
    assert clone.steps == 5 and torch.equal(clone.exp_avg_sq, opt_ours.exp_avg_sq)


@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_flat_adam_clips_like_torch_and_takes_its_learning_rate(max_norm):
    # Gradients of norm well above 0.5 are scaled to norm 0.5 as clip_grad_norm_ does; a huge max_norm
    # leaves them as they are (the scale is clamped at 1).
    def net():
        torch.manual_seed(1)
        return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))

    ours, ref = net(), net()
    opt_ours = FlatAdam(ours, lr=0.01)
    x = torch.randn(32, 4) * 10
    for model in (ours, ref):
        model(x).pow(2).sum().backward()
    norm = opt_ours.clip_grad_norm_(max_norm)
    ref_norm = torch.nn.utils.clip_grad_norm_(ref.parameters(), max_norm)
    assert norm.item() > 5 and norm.item() == pytest.approx(ref_norm.item(), rel=1e-6)
    for a, b in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(a.grad, b.grad)
    expected = min(max_norm, norm.item())
    assert torch.linalg.vector_norm(opt_ours.grad).item() == pytest.approx(expected, rel=1e-5)
    set_lr(opt_ours, 0.25)
    assert opt_ours.lr == 0.25
