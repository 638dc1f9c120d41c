"""Run stateless modules (conv, BN, linear, pooling, dropout) over ``[T, B, ...]``."""

from __future__ import annotations

import torch
from torch import nn


class TimeFold(nn.Sequential):
    """Apply stateless modules to every time step at once by folding time into batch.

    ``[T, B, ...] -> [T*B, ...] -> modules -> [T, B, ...]``. In single-step mode
    (``step_mode = "s"``) the input is one step ``[B, ...]`` and is passed straight through.
    BatchNorm statistics are therefore shared across steps (SpikingJelly's convention).
    """

    def __init__(self, *modules: nn.Module) -> None:
        super().__init__(*modules)
        self.step_mode = "m"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.step_mode == "s":
            return super().forward(x)
        if x.dim() < 3:
            raise ValueError(f"TimeFold expects [T, B, ...], got shape {tuple(x.shape)}")
        t, b = x.shape[:2]
        y = super().forward(x.flatten(0, 1))
        return y.unflatten(0, (t, b))
