"""Neuron configurations that the CPU-kernel and Triton-kernel tests both compare against the
reference loop: one per neuron class, each with a different surrogate and learnable parts."""

from __future__ import annotations

import pytest

from fewstep.neurons import IF, LIF, MTLIF, PLIF

# ``@MODULES_VS_REFERENCE`` parametrizes a test over ``make``, a factory of a fresh neuron
MODULES_VS_REFERENCE = pytest.mark.parametrize("make", [
    lambda: LIF(),
    lambda: PLIF(decay=0.6, surrogate="sigmoid", learnable_threshold=True),
    lambda: MTLIF(num_thresholds=3, surrogate="arctan", v_threshold=0.5),
    lambda: IF(reset="soft", learnable_threshold=True, surrogate="rectangle"),
], ids=["LIF", "PLIF", "MTLIF", "IF"])
