"""Layers that run over time-major ``[T, B, ...]`` tensors."""

from .encoding import DirectEncoding
from .stcb import STCB, ConversionIF, ConversionSpec
from .timefold import TimeFold

__all__ = ["STCB", "ConversionIF", "ConversionSpec", "DirectEncoding", "TimeFold"]
from .scb import SCB, Synapse, SynapticConv  # synaptic current blocks, methods.md section 1

__all__ += ["SCB", "Synapse", "SynapticConv"]
