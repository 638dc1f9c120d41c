"""Chooses the implementation of a multi-step neuron run.

The pure-PyTorch reference (:func:`fewstep.neurons.functional.neuron_multistep`) is the oracle
and the fallback. Fused kernels register themselves here and are picked automatically for the
tensors they support, in registration order:

* the Triton kernel (:mod:`fewstep.kernels.triton_neuron`, optional), imported lazily on the first
  call with a GPU tensor (or with ``FEWSTEP_KERNELS=triton``), so ``import fewstep`` works without
  Triton and CPU-only runs never import it;
* the CPU kernel (:mod:`fewstep.kernels.cpu_neuron`), compiled on the first CPU call; where it
  cannot be built it warns once and the reference runs.

``FEWSTEP_KERNELS`` chooses: ``auto`` (default), ``cpu`` (the same), ``triton`` (Triton only: how
the tests run it under the interpreter on CPU), ``reference`` (no kernel; so does
``FEWSTEP_REFERENCE=1``). A kernel is called as
``kernel(x_seq, params, v0, need_membrane=...)`` and returns a :class:`StepOutput` or ``None``
when it does not handle the call. With ``need_membrane=False`` a kernel may skip the membrane
``[T, ...]`` and return ``StepOutput.membrane = None``; the reference always returns it.

The kernels register in :mod:`fewstep.kernels.registry` (:func:`register_kernel`, re-exported here),
which imports nothing of :mod:`fewstep.neurons`: the kernels never import this module back.
"""

from __future__ import annotations

import os
import warnings

import torch

from ..kernels.registry import _KERNELS, Kernel, register_kernel
from .functional import NeuronParams, StepOutput, neuron_multistep

_BUILTINS_LOADED = False


def registered_kernels() -> list[Kernel]:
    """The registered kernels, in the order they are tried (loads the built-in ones first)."""
    _load_builtin_kernels()
    return list(_KERNELS)


def _load_builtin_kernels() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    try:
        from fewstep.kernels import load_triton

        load_triton()  # registers the Triton kernel when Triton imports
    except Exception as exc:  # pragma: no cover - a broken optional dependency must not break fewstep
        warnings.warn(f"fewstep: fused kernels unavailable ({exc!r}); using the PyTorch reference", stacklevel=3)


def multistep(
    x_seq: torch.Tensor, p: NeuronParams, v0: torch.Tensor | None = None, need_membrane: bool = True
) -> StepOutput:
    """Run a neuron over ``[T, B, ...]`` with the fastest implementation that supports it.

    ``need_membrane=False`` lets a fused kernel skip writing the membrane (then
    ``StepOutput.membrane`` may be ``None``)."""
    mode = os.environ.get("FEWSTEP_KERNELS", "").strip().lower()
    # Under torch.jit.trace (the legacy ONNX exporter) a kernel's output would not be traced:
    # the exported graph must hold the reference's PyTorch ops.
    if os.environ.get("FEWSTEP_REFERENCE") != "1" and mode != "reference" and not torch.jit.is_tracing():
        if not _BUILTINS_LOADED and (x_seq.device.type != "cpu" or mode == "triton"):
            _load_builtin_kernels()  # CPU-only runs never pay for importing Triton
        for kernel in _KERNELS:
            out = kernel(x_seq, p, v0, need_membrane=need_membrane)
            if out is not None:
                return out
    return neuron_multistep(x_seq, p, v0)


def _register_cpu_kernel() -> None:
    from fewstep.kernels.cpu_neuron import dispatch_kernel  # imports no compiler: it builds on first use

    register_kernel(dispatch_kernel)


_register_cpu_kernel()
