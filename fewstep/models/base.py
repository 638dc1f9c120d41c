"""Base class of every fewstep model: direct encoding built in, per-step logits out."""

from __future__ import annotations

import torch
from torch import nn


class SpikingModel(nn.Module):
    """A spiking network returning per-step logits ``[T, B, classes]``.

    ``forward`` accepts either a static batch ``[B, C, H, W]`` (direct encoding: the first
    stateless block ``stem`` runs once and its output is repeated over ``timesteps`` steps, which
    equals feeding the image at every step at 1/T of the first-layer cost) or a sequence
    ``[T, B, C, H, W]`` (event data; ``T`` taken from the input). Subclasses define ``stem``
    (stateless, runs on ``[N, C, H, W]``) and ``body`` (runs on ``[T, B, ...]``, ends in logits).
    """

    stem: nn.Module
    body: nn.Module

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, timesteps: int) -> None:
        super().__init__()
        if timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {timesteps}")
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.timesteps = int(timesteps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(self.input_shape)
        if x.dim() == n + 1:  # static batch: direct encoding
            y = self.stem(x)
            y = y.unsqueeze(0).expand(self.timesteps, *y.shape)
        elif x.dim() == n + 2:  # [T, B, ...] sequence
            t, b = x.shape[:2]
            y = self.stem(x.flatten(0, 1)).unflatten(0, (t, b))
        else:
            raise ValueError(
                f"{type(self).__name__} expects [B, {', '.join(map(str, self.input_shape))}] or [T, B, ...], "
                f"got shape {tuple(x.shape)}"
            )
        return self.body(y)
