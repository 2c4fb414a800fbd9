"""Losses shared by learners that may not import each other (SAC and CQL): each a pure function, unit-tested
against hand values (``tests/test_offline_losses.py``)."""

from __future__ import annotations

import torch


def temperature_loss(log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """SAC's entropy-temperature loss (Haarnoja et al. 2018, arXiv:1812.05905, eq. 18), -mean(log alpha * (log pi
    + H_target)): alpha falls while the entropy -log pi exceeds the target. ``log_alpha``: one value, or each
    sample's own (a multi-task learner's, one per task); ``log_prob`` is detached (only alpha learns here)."""
    return -(log_alpha * (log_prob.detach() + target_entropy)).mean()
