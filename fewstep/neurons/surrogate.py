"""Surrogate gradients for the Heaviside spike function: :mod:`fewstep.surrogate`, re-exported here.

They live outside :mod:`fewstep.neurons` because the fused kernels (:mod:`fewstep.kernels`), which
the neurons' dispatcher loads, use them too."""

from ..surrogate import DEFAULT_WIDTH, SURROGATES, Surrogate, as_surrogate, surrogate_primitive

__all__ = ["DEFAULT_WIDTH", "SURROGATES", "Surrogate", "as_surrogate", "surrogate_primitive"]
