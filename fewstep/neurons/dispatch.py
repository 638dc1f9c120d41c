"""Chooses the implementation of a multi-step neuron run.

The pure-PyTorch reference (:func:`fewstep.neurons.functional.neuron_multistep`) is the CPU
path and the oracle. Fused kernels register themselves here and are picked automatically for
the tensors they support; set ``FEWSTEP_REFERENCE=1`` to force the reference everywhere.
"""

from __future__ import annotations

import os
from typing import Callable, Optional

import torch

from .functional import NeuronParams, StepOutput, neuron_multistep

# A kernel: (x_seq, params, v0) -> StepOutput, or None if it does not support this call.
Kernel = Callable[[torch.Tensor, NeuronParams, Optional[torch.Tensor]], Optional[StepOutput]]
_KERNELS: list[Kernel] = []


def register_kernel(kernel: Kernel) -> Kernel:
    """Add a fused implementation; it returns ``None`` for calls it does not handle."""
    _KERNELS.append(kernel)
    return kernel


def multistep(x_seq: torch.Tensor, p: NeuronParams, v0: torch.Tensor | None = None) -> StepOutput:
    """Run a neuron over ``[T, B, ...]`` with the fastest implementation that supports it."""
    if os.environ.get("FEWSTEP_REFERENCE") != "1":
        for kernel in _KERNELS:
            out = kernel(x_seq, p, v0)
            if out is not None:
                return out
    return neuron_multistep(x_seq, p, v0)
