"""The names a recipe may give a neuron and its surrogate gradient, torch-free.

:mod:`fewstep.config` checks recipes against them without loading PyTorch; the neuron classes
(:data:`fewstep.neurons.NEURON_KINDS`) and the surrogates (:mod:`fewstep.surrogate`) are keyed by
them (a test checks they agree). A leaf module: it imports nothing of fewstep's.
"""

from __future__ import annotations

#: The ``neuron.kind`` values, the keys of :data:`fewstep.neurons.NEURON_KINDS`.
NEURON_KIND_NAMES: tuple[str, ...] = ("if", "lif", "plif", "mtlif")

#: The surrogate gradient names (:data:`fewstep.neurons.SURROGATES` is this tuple).
SURROGATE_NAMES: tuple[str, ...] = ("rectangle", "triangle", "sigmoid", "arctan")

__all__ = ["NEURON_KIND_NAMES", "SURROGATE_NAMES"]
