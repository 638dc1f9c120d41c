"""Spiking models and their registry. Every model returns per-step logits ``[T, B, classes]``."""

from . import catalog  # noqa: F401  (fills MODELS with the built-in models)
from .base import SpikingModel
from .build import build_model
from .registry import MODELS, register_model

__all__ = ["MODELS", "SpikingModel", "build_model", "register_model"]
