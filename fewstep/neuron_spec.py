"""A neuron described as data (:class:`NeuronSpec`), so recipes and models can name their neurons in TOML.

This module imports no torch: :mod:`fewstep.config` validates recipes with it, and ``fewstep
recipes`` (which only reads recipes) then starts in a fraction of a second instead of waiting for
PyTorch to load. The neuron modules are imported only when :meth:`NeuronSpec.build` makes one.
It is re-exported as :class:`fewstep.neurons.NeuronSpec`, the name to use.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .neurons.modules import SpikingNeuron

#: The ``neuron.kind`` values, the keys of :data:`fewstep.neurons.NEURON_KINDS` (a test checks they agree).
NEURON_KIND_NAMES: tuple[str, ...] = ("if", "lif", "plif", "mtlif")

#: The surrogate gradient names (:data:`fewstep.neurons.SURROGATES` is this tuple).
SURROGATE_NAMES: tuple[str, ...] = ("rectangle", "triangle", "sigmoid", "arctan")


@dataclass
class NeuronSpec:
    """What neuron a model uses. ``kind`` is one of ``if``, ``lif``, ``plif``, ``mtlif``."""

    kind: str = "lif"
    decay: float = 0.5
    v_threshold: float = 1.0
    reset: str | None = None  # None: the neuron's default (hard; soft for mtlif)
    v_reset: float = 0.0
    surrogate: str = "triangle"
    width: float = 1.0
    num_thresholds: int = 1
    learnable_decay: bool | None = None  # None: the neuron's default (True for plif/mtlif)
    learnable_threshold: bool = False
    detach_reset: bool = False
    scale_output: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or self.kind not in NEURON_KIND_NAMES:
            raise ValueError(f"neuron.kind must be one of {sorted(NEURON_KIND_NAMES)}, got {self.kind!r}")

    def build(self) -> SpikingNeuron:
        """A fresh neuron module from this spec."""
        from .neurons.spec import NEURON_KINDS

        kw = {k: v for k, v in asdict(self).items() if v is not None}
        kind = kw.pop("kind")
        if kind == "if":
            kw.pop("decay")
            kw.pop("learnable_decay", None)
        if kind == "plif":
            kw.pop("learnable_decay", None)
        if kind != "mtlif" and kw["num_thresholds"] != 1:
            raise ValueError("neuron.num_thresholds > 1 needs neuron.kind = 'mtlif'")
        return NEURON_KINDS[kind](**kw)


__all__ = ["NEURON_KIND_NAMES", "SURROGATE_NAMES", "NeuronSpec"]
