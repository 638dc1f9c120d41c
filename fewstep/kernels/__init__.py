"""Optional fused kernels (Triton). Importing this package never fails: without Triton,
``HAS_TRITON`` is false and :mod:`fewstep.neurons.dispatch` uses the PyTorch reference.

With Triton installed, :func:`triton_multistep` is registered with the dispatcher and used
automatically for CUDA tensors. On CPU it is used only under the Triton interpreter, when both
``TRITON_INTERPRET=1`` (set before Triton and this package are imported) and
``FEWSTEP_KERNELS=triton`` are set (that is how the tests run it). ``FEWSTEP_KERNELS=reference``
(or ``FEWSTEP_REFERENCE=1``) turns the kernels off.
"""

from __future__ import annotations

try:  # triton is an optional extra
    import triton  # noqa: F401
except Exception as exc:  # ImportError, or a broken install
    HAS_TRITON = False
    IMPORT_ERROR: Exception | None = exc
else:
    HAS_TRITON = True
    IMPORT_ERROR = None

if HAS_TRITON:
    try:
        from .triton_neuron import MAX_RECOMPUTE_T, dispatch_kernel, supports, triton_multistep
    except Exception as exc:  # pragma: no cover - e.g. a Triton too old for these kernels
        HAS_TRITON = False
        IMPORT_ERROR = exc
    else:
        from ..neurons.dispatch import register_kernel

        register_kernel(dispatch_kernel)

if not HAS_TRITON:  # pragma: no cover - depends on the environment
    MAX_RECOMPUTE_T = 8
    triton_multistep = None  # type: ignore[assignment]
    supports = None  # type: ignore[assignment]

__all__ = ["HAS_TRITON", "IMPORT_ERROR", "MAX_RECOMPUTE_T", "supports", "triton_multistep"]
