"""A neuron described as data (:class:`NeuronSpec`), so recipes and models can name their neurons in TOML.

This module imports no torch: :mod:`fewstep.config` validates recipes with it (through
:mod:`fewstep.neuron_spec`), and ``fewstep recipes`` (which only reads recipes) then starts in a
fraction of a second instead of waiting for PyTorch to load. The neuron classes are imported only
when :meth:`NeuronSpec.build` makes one (the package's names are lazy, so importing this module
loads none of them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from ..neuron_names import NEURON_KIND_NAMES, SURROGATE_NAMES

if TYPE_CHECKING:  # pragma: no cover
    from .modules import SpikingNeuron


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
        from .modules import NEURON_KINDS

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


def make_neuron(spec: NeuronSpec | dict | None = None, **overrides) -> SpikingNeuron:
    """Build a neuron from a :class:`NeuronSpec`, a dict of its fields, or keyword overrides."""
    if spec is None:
        spec = NeuronSpec()
    elif isinstance(spec, dict):
        spec = NeuronSpec(**spec)
    if overrides:
        spec = NeuronSpec(**{**asdict(spec), **overrides})
    return spec.build()


__all__ = ["NEURON_KIND_NAMES", "SURROGATE_NAMES", "NeuronSpec", "make_neuron"]
