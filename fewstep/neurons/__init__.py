"""Spiking neurons: reference dynamics, surrogate gradients, modules and state handling."""

from .functional import NeuronParams, StepOutput, neuron_multistep, neuron_step
from .modules import IF, LIF, MTLIF, PLIF, SpikingNeuron, reset_net, set_step_mode, spiking_neurons
from .spec import NEURON_KINDS, NeuronSpec, make_neuron
from .surrogate import SURROGATES, Surrogate, as_surrogate

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
