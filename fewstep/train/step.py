"""One optimiser step on a spiking model, for hand-written training loops."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..neurons import reset_net

__all__ = ["train_step"]


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer,
               loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
               y: torch.Tensor) -> torch.Tensor:
    """One step of a hand-written loop: forward ``x`` (per-step outputs ``[T, B, ...]``), the
    loss ``loss_fn(outputs, y)`` (e.g. :func:`~fewstep.train.losses.tet_loss`), backward, one
    ``optimizer`` step, then :func:`~fewstep.neurons.reset_net`, so the next batch starts from
    rest rather than from this batch's membranes (the step SpikingJelly users add by hand after
    each batch, and the one most often forgotten). Returns the loss, detached."""
    loss = loss_fn(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    reset_net(model)
    return loss.detach()
