"""A neuron described as data, so recipes and models can name their neurons in TOML.

:class:`NeuronSpec` itself lives in the torch-free :mod:`fewstep.neuron_spec` (recipes are
validated without loading PyTorch); this module maps its ``kind`` names to the neuron classes."""

from __future__ import annotations

from dataclasses import asdict

from ..neuron_spec import NeuronSpec
from .modules import IF, LIF, MTLIF, PLIF, SpikingNeuron

#: ``neuron.kind`` -> neuron class; its keys are :data:`fewstep.neuron_spec.NEURON_KIND_NAMES`.
NEURON_KINDS: dict[str, type[SpikingNeuron]] = {"if": IF, "lif": LIF, "plif": PLIF, "mtlif": MTLIF}


def make_neuron(spec: NeuronSpec | dict | None = None, **overrides) -> SpikingNeuron:
    """Build a neuron from a :class:`NeuronSpec`, a dict of its fields, or keyword overrides."""
    if spec is None:
        spec = NeuronSpec()
    elif isinstance(spec, dict):
        spec = NeuronSpec(**spec)
    if overrides:
        spec = NeuronSpec(**{**asdict(spec), **overrides})
    return spec.build()


__all__ = ["NEURON_KINDS", "NeuronSpec", "make_neuron"]
