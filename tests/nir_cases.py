"""The small network and the recorded run that the NIR tests share (``test_nir``, ``test_nir_export``)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fewstep.layers import TimeFold
from fewstep.neurons import spiking_neurons
from fewstep.nir_io import NIRModel


def mlp(neuron: Callable[[], nn.Module], timesteps: int = 4) -> NIRModel:
    """Linear -> neuron -> Linear -> neuron, weights scaled so both layers fire often."""
    torch.manual_seed(0)
    m = NIRModel(nn.Sequential(nn.Linear(16, 32)), nn.Sequential(neuron(), TimeFold(nn.Linear(32, 10)), neuron()),
                 (16,), 10, timesteps)
    with torch.no_grad():
        m.stem[0].weight.mul_(3)
        m.body[1][0].weight.mul_(4)
    return m.eval()


def run_recording(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[nn.Module]]:
    """The output for input ``x`` (no grad) and every neuron layer, each having recorded its run."""
    neurons = [n for _, n in spiking_neurons(model)]
    for n in neurons:
        n.record = True
    with torch.no_grad():
        out = model(x)
    return out, neurons
