"""The fused kernels that :func:`fewstep.neurons.dispatch.multistep` tries, in order.

The kernels register here (:mod:`fewstep.kernels`' ``load_triton``) and the dispatcher reads this
table (and re-exports :func:`register_kernel`), so no kernel imports the dispatcher that loads it."""

from __future__ import annotations

from collections.abc import Callable

from ..neuron_params import StepOutput

# A kernel: (x_seq, params, v0, need_membrane=bool) -> StepOutput, or None if it does not support this call.
Kernel = Callable[..., StepOutput | None]
_KERNELS: list[Kernel] = []


def register_kernel(kernel: Kernel) -> Kernel:
    """Add a fused implementation; it returns ``None`` for calls it does not handle.

    Registering a function with the same module and name again replaces the old one (so a
    reloaded kernel module does not run twice)."""
    key = (getattr(kernel, "__module__", None), getattr(kernel, "__qualname__", None))
    for i, k in enumerate(_KERNELS):
        if key[1] is not None and (getattr(k, "__module__", None), getattr(k, "__qualname__", None)) == key:
            _KERNELS[i] = kernel
            return kernel
    _KERNELS.append(kernel)
    return kernel


__all__ = ["Kernel", "register_kernel"]
