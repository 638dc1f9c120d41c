"""Model registry (timm style): recipes name models by string.

This module holds the table and the decorator that every model module registers with; it never
imports those modules. :func:`fewstep.models.build_model` (in :mod:`fewstep.models.build`) fills
the table from :mod:`fewstep.models.catalog` and builds a model by name."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..registry import registrar

ModelFactory = Callable[..., nn.Module]
MODELS: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Register ``fn(*, num_classes, input_shape, timesteps, neuron, **kwargs) -> SpikingModel``."""
    return registrar(MODELS, "model", name)
