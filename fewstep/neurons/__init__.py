"""Spiking neurons: reference dynamics, surrogate gradients, modules and state handling.

The names below are imported lazily (on first use), so that importing the torch-free
:mod:`fewstep.neurons.spec` (what :mod:`fewstep.config` validates recipes with) loads no PyTorch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the lazy imports below provide (for type checkers and the API docs)
    from .functional import NeuronParams, StepOutput, neuron_multistep, neuron_step
    from .modules import (
        IF,
        LIF,
        MTLIF,
        NEURON_KINDS,
        PLIF,
        SpikingNeuron,
        reset_net,
        set_step_mode,
        spiking_neurons,
    )
    from .spec import NeuronSpec, make_neuron
    from .surrogate import SURROGATES, Surrogate, as_surrogate

_EXPORTS = {
    "NeuronParams": "functional", "StepOutput": "functional", "neuron_multistep": "functional",
    "neuron_step": "functional",
    "IF": "modules", "LIF": "modules", "MTLIF": "modules", "NEURON_KINDS": "modules", "PLIF": "modules",
    "SpikingNeuron": "modules", "reset_net": "modules", "set_step_mode": "modules", "spiking_neurons": "modules",
    "NeuronSpec": "spec", "make_neuron": "spec",
    "SURROGATES": "surrogate", "Surrogate": "surrogate", "as_surrogate": "surrogate",
}

__all__ = [
    "IF",
    "LIF",
    "MTLIF",
    "NEURON_KINDS",
    "PLIF",
    "SURROGATES",
    "NeuronParams",
    "NeuronSpec",
    "SpikingNeuron",
    "StepOutput",
    "Surrogate",
    "as_surrogate",
    "make_neuron",
    "neuron_multistep",
    "neuron_step",
    "reset_net",
    "set_step_mode",
    "spiking_neurons",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
