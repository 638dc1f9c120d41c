"""Losses on per-step logits ``[T, B, classes]``."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mean_output_ce(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of the time-averaged output (the usual rate-coded readout)."""
    return F.cross_entropy(logits.float().mean(0), target, label_smoothing=label_smoothing)


def tet_loss(logits: torch.Tensor, target: torch.Tensor, lam: float = 1e-3, phi: float = 1.0,
             label_smoothing: float = 0.0) -> torch.Tensor:
    """Temporal efficient training: ``(1 - lam) * mean_t CE(o_t, y) + lam * mean_t MSE(o_t, phi)``.

    Every step's output is trained to be correct on its own, which is what anytime (cutoff)
    inference needs; the MSE term keeps the outputs near ``phi``.
    """
    t, b, c = logits.shape
    flat = logits.float().flatten(0, 1)
    ce = F.cross_entropy(flat, target.repeat(t), label_smoothing=label_smoothing)
    mse = (flat - phi).pow(2).mean() if lam else flat.new_zeros(())
    return (1.0 - lam) * ce + lam * mse


def cumulative_accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Number of correct predictions at every step t = 1..T, predicting from the mean of the
    first t outputs. Returns a ``[T]`` tensor of counts."""
    cum = logits.float().cumsum(0)
    return (cum.argmax(-1) == target.unsqueeze(0)).sum(1)
