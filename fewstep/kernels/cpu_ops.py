"""Fused CPU kernels for the stateless layers of spiking CNNs: 2x2 max pooling and dropout.

Why: in a spiking CNN's training step on the CPU, PyTorch's NCHW max pooling (64-bit indices,
a zero-filled gradient then a scatter) and dropout (a Bernoulli draw per element, then two
multiplications) took a quarter of the time once the neurons were fused. These kernels run at
memory speed (see ``cpu_ops.cpp``):

* :func:`max_pool2x2` equals :func:`torch.nn.functional.max_pool2d` with kernel 2, stride 2,
  floor mode, bit for bit in outputs and gradients (ties to the first maximum, NaN wins);
* :func:`dropout` draws its mask from a counter-based hash of a seed taken from PyTorch's
  generator (so ``torch.manual_seed`` and checkpointed RNG states reproduce it) and the element's
  index; the backward pass recomputes the mask, nothing is stored. Same distribution and scaling
  as :func:`torch.nn.functional.dropout`, a different random stream.

* :func:`batch_norm_train` is batch norm with batch statistics (training mode) on NCHW: statistics
  accumulated in double, two fused passes forward and two backward; equal to
  :func:`torch.nn.functional.batch_norm` up to float rounding. It also returns the batch mean and
  unbiased variance for the caller's running statistics.

All fall back to PyTorch (returning ``None`` from the ``try_`` entry points) for calls they do not
handle or where the library cannot be built; :mod:`fewstep.layers.fast` wraps them as modules.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import torch

from .cpu_build import CpuLibrary

__all__ = ["available", "batch_norm_train", "dropout", "max_pool2x2", "try_batch_norm_train", "try_dropout",
           "try_max_pool2x2"]

SOURCE = Path(__file__).with_name("cpu_ops.cpp")
_SFX = {torch.float32: "f32", torch.float64: "f64"}
_PARALLEL_MIN = 1 << 15


def _declare(lib: ctypes.CDLL, _variant: str) -> None:
    p, i64, i, u64, u32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_uint64, ctypes.c_uint32
    for sfx, real in (("f32", ctypes.c_float), ("f64", ctypes.c_double)):
        getattr(lib, f"fewstep_pool2_fwd_{sfx}").argtypes = [p, p, p, i64, i64, i64, i]
        getattr(lib, f"fewstep_pool2_bwd_{sfx}").argtypes = [p, p, p, i64, i64, i64, i]
        getattr(lib, f"fewstep_dropout_{sfx}").argtypes = [p, p, i64, u64, u32, real, i]
        getattr(lib, f"fewstep_bn_stats_{sfx}").argtypes = [p, i64, i64, i64, p, p, i]
        getattr(lib, f"fewstep_bn_apply_{sfx}").argtypes = [p, p, i64, i64, i64, p, p, i]
        getattr(lib, f"fewstep_bn_bwd_sums_{sfx}").argtypes = [p, p, i64, i64, i64, p, p, p, i]
        getattr(lib, f"fewstep_bn_bwd_apply_{sfx}").argtypes = [p, p, p, i64, i64, i64, p, p, p, i]


_LIB = CpuLibrary(SOURCE, 1, "fewstep_cpu_ops_abi", _declare)


def available() -> bool:
    """Whether the library is usable here (builds it on the first call)."""
    return _LIB.load("all") is not None


def _enabled() -> bool:
    """Kernels on (``FEWSTEP_KERNELS``) and not being traced by ``torch.compile`` or ``torch.jit.trace``
    (the legacy ONNX exporter): neither sees through ctypes, so compiled and exported graphs use
    PyTorch's own ops (which inductor fuses)."""
    mode = os.environ.get("FEWSTEP_KERNELS", "auto").strip().lower()
    return (mode in ("", "auto", "cpu") and os.environ.get("FEWSTEP_REFERENCE") != "1"
            and not torch.compiler.is_compiling() and not torch.jit.is_tracing())


def _threads(n: int) -> int:
    return torch.get_num_threads() if (_LIB.threaded("all") and n >= _PARALLEL_MIN) else 1


# --------------------------------------------------------------------------------------- pooling


class _MaxPool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor):
        lib = _LIB.loaded("all")
        *lead, H, W = x.shape
        M = x.numel() // (H * W)
        y = torch.empty((*lead, H // 2, W // 2), dtype=x.dtype)
        code = torch.empty(y.shape, dtype=torch.uint8)
        getattr(lib, f"fewstep_pool2_fwd_{_SFX[x.dtype]}")(x.data_ptr(), y.data_ptr(), code.data_ptr(), M, H, W,
                                                          _threads(x.numel()))
        ctx.save_for_backward(code)
        ctx.shape = x.shape
        ctx.mark_non_differentiable(code)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy: torch.Tensor):
        (code,) = ctx.saved_tensors
        lib = _LIB.loaded("all")
        *_, H, W = ctx.shape
        gy = gy.contiguous()
        gx = torch.empty(ctx.shape, dtype=gy.dtype)
        getattr(lib, f"fewstep_pool2_bwd_{_SFX[gy.dtype]}")(gy.data_ptr(), code.data_ptr(), gx.data_ptr(),
                                                           gx.numel() // (H * W), H, W, _threads(gx.numel()))
        return gx


def try_max_pool2x2(x: torch.Tensor) -> torch.Tensor | None:
    """2x2 / stride 2 max pooling of ``[..., H, W]`` (contiguous float CPU, H, W >= 2) with the fused
    kernel, or ``None`` when the kernel does not handle this call or is unavailable."""
    if (x.device.type != "cpu" or x.dtype not in _SFX or x.dim() < 3 or x.shape[-1] < 2 or x.shape[-2] < 2
            or not x.is_contiguous() or not _enabled() or _LIB.load("all") is None):
        return None
    return _MaxPool2x2.apply(x)


def max_pool2x2(x: torch.Tensor) -> torch.Tensor:
    """:func:`try_max_pool2x2`, falling back to :func:`torch.nn.functional.max_pool2d`."""
    out = try_max_pool2x2(x)
    return torch.nn.functional.max_pool2d(x, 2) if out is None else out


# --------------------------------------------------------------------------------------- dropout


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float, seed: int):
        ctx.args = (p, seed)
        return _masked(x, p, seed)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy: torch.Tensor):
        p, seed = ctx.args
        return _masked(gy.contiguous(), p, seed), None, None


def _masked(x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    q = 1.0 - p
    threshold = min(int(round(q * 2**32)), 2**32 - 1)
    # PyTorch scales as noise.div_(1 - p) in the tensor's precision: 1 / (1 - p) rounded the same way
    scale = float(torch.ones((), dtype=x.dtype).div_(q))
    y = torch.empty_like(x)
    getattr(_LIB.loaded("all"), f"fewstep_dropout_{_SFX[x.dtype]}")(x.data_ptr(), y.data_ptr(), x.numel(), seed,
                                                                    threshold, scale, _threads(x.numel()))
    return y


def try_dropout(x: torch.Tensor, p: float) -> torch.Tensor | None:
    """Training-mode dropout of ``x`` with the fused kernel (mask seeded from PyTorch's default
    generator), or ``None`` when the kernel does not handle this call or is unavailable."""
    if (x.device.type != "cpu" or x.dtype not in _SFX or not 0.0 < p < 1.0 or not x.is_contiguous()
            or not _enabled() or _LIB.load("all") is None):
        return None
    seed = int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64))
    return _Dropout.apply(x, float(p), seed)


def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """:func:`try_dropout`, falling back to :func:`torch.nn.functional.dropout` (training mode)."""
    out = try_dropout(x, p)
    return torch.nn.functional.dropout(x, p, training=True) if out is None else out


# ------------------------------------------------------------------------------------ batch norm


class _BatchNormTrain(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                eps: float):
        lib = _LIB.loaded("all")
        sfx = _SFX[x.dtype]
        N, C = x.shape[:2]
        HW = x.numel() // (N * C)
        nt = _threads(x.numel())
        mean = torch.empty(C, dtype=torch.float64)
        var = torch.empty(C, dtype=torch.float64)
        getattr(lib, f"fewstep_bn_stats_{sfx}")(x.data_ptr(), N, C, HW, mean.data_ptr(), var.data_ptr(), nt)
        invstd = (var + eps).rsqrt()
        w = weight.detach().double() if weight is not None else torch.ones(C, dtype=torch.float64)
        b = bias.detach().double() if bias is not None else torch.zeros(C, dtype=torch.float64)
        a = w * invstd
        shift = (b - mean * a).to(x.dtype)
        a_x = a.to(x.dtype)
        y = torch.empty_like(x)
        getattr(lib, f"fewstep_bn_apply_{sfx}")(x.data_ptr(), y.data_ptr(), N, C, HW, a_x.data_ptr(),
                                               shift.data_ptr(), nt)
        ctx.save_for_backward(x, mean, invstd, w)
        ctx.has_affine = (weight is not None, bias is not None)
        cnt = N * HW
        unbiased = var * (cnt / (cnt - 1)) if cnt > 1 else var
        ctx.mark_non_differentiable(mean, unbiased)
        return y, mean, unbiased

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: torch.Tensor, _gm, _gv):
        x, mean, invstd, w = ctx.saved_tensors
        lib = _LIB.loaded("all")
        sfx = _SFX[x.dtype]
        N, C = x.shape[:2]
        HW = x.numel() // (N * C)
        cnt = N * HW
        nt = _threads(x.numel())
        g = g.contiguous()
        sg = torch.empty(C, dtype=torch.float64)
        sgx = torch.empty(C, dtype=torch.float64)
        getattr(lib, f"fewstep_bn_bwd_sums_{sfx}")(g.data_ptr(), x.data_ptr(), N, C, HW, mean.data_ptr(),
                                                  sg.data_ptr(), sgx.data_ptr(), nt)
        gx = None
        if ctx.needs_input_grad[0]:
            a = w * invstd
            k2 = -a * invstd * invstd * sgx / cnt
            k3 = -a * sg / cnt - k2 * mean
            k1, k2, k3 = (k.to(x.dtype) for k in (a, k2, k3))
            gx = torch.empty_like(x)
            getattr(lib, f"fewstep_bn_bwd_apply_{sfx}")(g.data_ptr(), x.data_ptr(), gx.data_ptr(), N, C, HW,
                                                       k1.data_ptr(), k2.data_ptr(), k3.data_ptr(), nt)
        gw = (sgx * invstd).to(x.dtype) if ctx.has_affine[0] and ctx.needs_input_grad[1] else None
        gb = sg.to(x.dtype) if ctx.has_affine[1] and ctx.needs_input_grad[2] else None
        return gx, gw, gb, None


def try_batch_norm_train(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                         eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Batch norm of ``x`` ``[N, C, ...]`` with its batch statistics: ``(y, batch mean, unbiased
    batch variance)`` (the statistics in float64, for the caller's running averages), or ``None``
    when the kernel does not handle this call or is unavailable."""
    if (x.device.type != "cpu" or x.dtype not in _SFX or x.dim() < 3 or not x.is_contiguous()
            or x.numel() == 0 or not _enabled() or _LIB.load("all") is None):
        return None
    for t in (weight, bias):
        if t is not None and (t.device.type != "cpu" or t.dtype != x.dtype):
            return None
    return _BatchNormTrain.apply(x, weight, bias, float(eps))


def batch_norm_train(x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                     eps: float = 1e-5) -> torch.Tensor:
    """:func:`try_batch_norm_train`'s output, falling back to :func:`torch.nn.functional.batch_norm`."""
    out = try_batch_norm_train(x, weight, bias, eps)
    if out is None:
        return torch.nn.functional.batch_norm(x, None, None, weight, bias, training=True, eps=eps)
    return out[0]
