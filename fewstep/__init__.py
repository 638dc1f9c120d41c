"""fewstep: ultra-low-latency spiking neural networks (1 to 4 time steps) on PyTorch."""

__version__ = "0.1.0"
