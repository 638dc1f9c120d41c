"""Direct encoding: the analog image is the input current at every step."""

from __future__ import annotations

import torch
from torch import nn


class DirectEncoding(nn.Module):
    """``[B, ...] -> [T, B, ...]`` by repeating the input at each of ``timesteps`` steps.

    Uses ``expand`` (no copy). Models that start with a stateless layer can instead apply
    it once and repeat its output, which gives the same result at 1/T of the first-layer cost.
    """

    def __init__(self, timesteps: int) -> None:
        super().__init__()
        if timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {timesteps}")
        self.timesteps = int(timesteps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(0).expand(self.timesteps, *x.shape)
