"""Layers that run over time-major ``[T, B, ...]`` tensors."""

from .encoding import DirectEncoding
from .fast import BatchNorm2d, Dropout, MaxPool2d
from .stcb import STCB, ConversionIF, ConversionSpec
from .timefold import TimeFold

__all__ = [
    "STCB", "BatchNorm2d", "ConversionIF", "ConversionSpec", "DirectEncoding", "Dropout", "MaxPool2d", "TimeFold",
]
from .scb import SCB, Synapse, SynapticConv  # synaptic current blocks, methods.md section 1

__all__ += ["SCB", "Synapse", "SynapticConv"]
