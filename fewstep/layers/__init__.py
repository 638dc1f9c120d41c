"""Layers that run over time-major ``[T, B, ...]`` tensors."""

from .encoding import DirectEncoding
from .timefold import TimeFold
from .stcb import STCB, ConversionIF, ConversionSpec

