"""The torch-free way to :class:`~fewstep.neurons.spec.NeuronSpec` and the neuron and surrogate
names, for :mod:`fewstep.config` and anything else that must not load PyTorch (``fewstep recipes``
starts in a fraction of a second). :class:`fewstep.neurons.NeuronSpec` is the same class, the name
to use in code.
"""

from __future__ import annotations

from .neuron_names import NEURON_KIND_NAMES, SURROGATE_NAMES
from .neurons.spec import NeuronSpec

__all__ = ["NEURON_KIND_NAMES", "SURROGATE_NAMES", "NeuronSpec"]
