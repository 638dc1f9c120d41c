"""Base class of every fewstep model: direct encoding built in, per-step logits out."""

from __future__ import annotations

import torch
from torch import nn


class SpikingModel(nn.Module):
    """A spiking network returning per-step logits ``[T, B, classes]``.

    ``forward`` accepts either a static batch ``[B, C, H, W]`` (direct encoding: the first
    stateless block ``stem`` runs once and its output is repeated over ``timesteps`` steps, which
    equals feeding the image at every step at 1/T of the first-layer cost; the stem's BatchNorm
    therefore sees B rather than T*B samples per batch) or a sequence
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
        self.step_mode = "m"  # "s": forward takes one step [B, C, H, W] (streaming; see set_step_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(self.input_shape)
        if x.dim() in (n + 1, n + 2) and tuple(x.shape[-n:]) != self.input_shape:
            raise ValueError(f"{type(self).__name__} expects steps of shape {list(self.input_shape)}, "
                             f"got input of shape {tuple(x.shape)}")
        if self.step_mode == "s":  # one step of a stream; neurons keep their state between calls
            if x.dim() != n + 1:
                raise ValueError(f"in single-step mode {type(self).__name__} expects one step "
                                 f"[B, {', '.join(map(str, self.input_shape))}], got shape {tuple(x.shape)}")
            return self.body(self.stem(x))
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
