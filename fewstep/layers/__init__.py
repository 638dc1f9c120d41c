"""Layers that run over time-major ``[T, B, ...]`` tensors."""

from .encoding import DirectEncoding
from .timefold import TimeFold

__all__ = ["DirectEncoding", "TimeFold"]
