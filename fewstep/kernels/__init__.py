"""Optional fused kernels. Importing this package never fails and imports neither Triton nor a
compiler: each kernel loads on first use.

* :mod:`fewstep.kernels.cpu_neuron`: a C++ kernel for CPU tensors, compiled on first use with the
  system compiler; used automatically for the CPU calls it supports. Without a compiler the
  dispatcher warns once and uses the PyTorch reference.
* :mod:`fewstep.kernels.triton_neuron` (the optional ``gpu`` extra): with Triton installed,
  :func:`triton_multistep` is registered with the dispatcher and used automatically for CUDA
  tensors. On CPU it is used only under the Triton interpreter, when both ``TRITON_INTERPRET=1``
  (set before Triton and this package's Triton names are first touched) and
  ``FEWSTEP_KERNELS=triton`` are set (that is how the tests run it).

``FEWSTEP_KERNELS=reference`` (or ``FEWSTEP_REFERENCE=1``) turns every kernel off. The Triton names
below (``HAS_TRITON``, ``IMPORT_ERROR``, ``MAX_RECOMPUTE_T``, ``supports``, ``triton_multistep``)
are resolved on first access, which imports Triton.
"""

from __future__ import annotations

from typing import Any

_TRITON_NAMES = ("HAS_TRITON", "IMPORT_ERROR", "MAX_RECOMPUTE_T", "supports", "triton_multistep")
_triton_loaded = False

# Declared, not bound: the names stay unset (so __getattr__ resolves them) until load_triton().
HAS_TRITON: bool
IMPORT_ERROR: BaseException | None
MAX_RECOMPUTE_T: int
supports: Any
triton_multistep: Any


def load_triton() -> bool:
    """Import the Triton kernels (once) and register them with the dispatcher; whether they are usable."""
    global _triton_loaded, HAS_TRITON, IMPORT_ERROR, MAX_RECOMPUTE_T, supports, triton_multistep
    if _triton_loaded:
        return HAS_TRITON
    _triton_loaded = True
    HAS_TRITON, IMPORT_ERROR = False, None
    MAX_RECOMPUTE_T, supports, triton_multistep = 8, None, None
    try:  # triton is an optional extra
        import triton  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install
        IMPORT_ERROR = exc
        return False
    try:
        from . import triton_neuron
    except Exception as exc:  # pragma: no cover - e.g. a Triton too old for these kernels
        IMPORT_ERROR = exc
        return False
    from .registry import register_kernel

    HAS_TRITON = True
    MAX_RECOMPUTE_T, supports, triton_multistep = (
        triton_neuron.MAX_RECOMPUTE_T, triton_neuron.supports, triton_neuron.triton_multistep)
    register_kernel(triton_neuron.dispatch_kernel)
    return True


def __getattr__(name: str) -> Any:
    if name in _TRITON_NAMES:
        load_triton()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["HAS_TRITON", "IMPORT_ERROR", "MAX_RECOMPUTE_T", "load_triton", "supports", "triton_multistep"]
