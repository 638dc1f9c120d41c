"""Build a registered model by name, after :mod:`fewstep.models.catalog` has filled the registry."""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from ..neurons import NeuronSpec
from .registry import MODELS


def build_model(
    name: str,
    *,
    num_classes: int,
    input_shape: tuple[int, ...],
    timesteps: int,
    neuron: NeuronSpec | dict | None = None,
    **kwargs,
) -> nn.Module:
    """Build a registered model. ``input_shape`` is one step's ``(C, H, W)``."""
    from . import catalog  # noqa: F401  (registers the built-in models)

    if name not in MODELS:
        raise ConfigError("model.name", f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    if isinstance(neuron, dict):
        neuron = NeuronSpec(**neuron)
    try:
        return MODELS[name](num_classes=num_classes, input_shape=tuple(input_shape), timesteps=timesteps,
                            neuron=neuron or NeuronSpec(), **kwargs)
    except TypeError as exc:
        raise ConfigError("model.options", f"model {name!r} rejected its options: {exc}") from None
