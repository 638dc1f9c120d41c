"""Spiking models and their registry. Every model returns per-step logits ``[T, B, classes]``."""

from .base import SpikingModel
from .registry import MODELS, build_model, register_model

from . import catalog  # noqa: E402,F401  (fills MODELS with the built-in models)

__all__ = ["MODELS", "SpikingModel", "build_model", "register_model"]
