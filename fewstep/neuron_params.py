"""The parameters of a neuron population (:class:`NeuronParams`) and what a run returns
(:class:`StepOutput`): the types that the reference dynamics (:mod:`fewstep.neurons.functional`,
which re-exports them) and the fused kernels (:mod:`fewstep.kernels`) share. The kernels import them
from here, so they never import :mod:`fewstep.neurons`, whose dispatcher loads them."""

from __future__ import annotations

from typing import NamedTuple

import torch

from .surrogate import Surrogate

Scalar = float | torch.Tensor


class NeuronParams(NamedTuple):
    """Parameters of one neuron population (see :mod:`fewstep.neurons.functional` for the dynamics)."""

    decay: Scalar = 0.5
    v_threshold: Scalar = 1.0
    num_thresholds: int = 1
    reset: str = "hard"  # "hard" | "soft"
    v_reset: float = 0.0
    surrogate: Surrogate = Surrogate()
    detach_reset: bool = False
    scale_output: bool = False


class StepOutput(NamedTuple):
    spikes: torch.Tensor
    # h_t: membrane after charging, before reset; None from a fused kernel run without need_membrane
    membrane: torch.Tensor | None
    v: torch.Tensor  # v_t: state carried to the next step


__all__ = ["NeuronParams", "Scalar", "StepOutput"]
