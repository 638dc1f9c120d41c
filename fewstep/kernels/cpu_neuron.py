r"""Fused multi-step neuron kernels for the CPU: one C++ pass over all ``T`` steps, forward and backward.

Why: on the CPU the reference loop (:func:`fewstep.neurons.functional.neuron_multistep`) costs
about fifteen PyTorch elementwise calls per time step, each a full pass over memory, and autograd
saves their intermediates; in a spiking CNN's training step that was 46 % of the time. These
kernels run the recurrence of :mod:`fewstep.neurons.functional` for a block of neurons over all
steps with the state in cache, write only the spikes (and the membrane when asked for), and in
backward re-run the recurrence from the saved input ``x`` before walking back in time: five passes
over the ``[T, N]`` tensor in all, the floor of ``anchors.md`` (see ``cpu_neuron.cpp``).

Mechanism, chosen by measurement (``benchmarks/bench_cpu.py``, ``benchmarks/RESULTS.md``): a small
C++ file compiled on first use with the system compiler (about 4 s; the float64 variant separately,
when first asked for), cached per user and called through :mod:`ctypes` (see :mod:`.cpu_build`).
It is built with OpenMP against the runtime PyTorch has already loaded, so it shares PyTorch's
thread pool (``torch.set_num_threads`` applies) instead of starting a second one. A
``torch.compile`` of the plain loop is fast per call too, but compiles for every shape and option
set (tens of seconds each on two cores); Numba would bring a second thread pool competing with
PyTorch's for the cores.

Every option of the reference is handled: IF / LIF / PLIF / MT-LIF (any ``K``), hard and soft
reset, ``v_reset``, the four surrogates with their width, a fixed or learnable (one-element
tensor) decay and threshold, ``detach_reset``, ``scale_output`` and an initial state ``v0``, in
float32 and float64 (the tests run ``gradcheck`` on the kernel itself; the dispatcher sends only
float32 here, float64 stays on the reference, which has double backward). Forward outputs and
input gradients equal the reference's bit for bit (same operation order, no FMA contraction, and
autograd's order of summation; the one exception is the sigmoid surrogate's exp, equal to the last
bit or so); parameter gradients equal them up to float rounding. Where the compiler or the build
is missing, :func:`available` is false, one warning is issued, and the dispatcher uses the
reference. ``FEWSTEP_KERNELS=reference`` turns it off.
"""

from __future__ import annotations

import ctypes
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..neuron_params import NeuronParams, StepOutput
from ..surrogate import Surrogate
from .cpu_build import CpuLibrary
from .neuron_host import SURROGATE_ID, BackwardCall, NeuronConfig, fused_neuron_function, step_output

__all__ = ["available", "build_error", "cpu_multistep", "dispatch_kernel", "library_path", "supports"]

SOURCE = Path(__file__).with_name("cpu_neuron.cpp")
_ABI = 2
_DTYPES = {torch.float32: "f32", torch.float64: "f64"}
_MAX_K = 32
#: Below this many elements (T x N) one thread does the work: waking the pool costs more.
_PARALLEL_MIN = 1 << 15
_warned = False


def _declare(lib: ctypes.CDLL, sfx: str) -> None:
    p, i64, i, d = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_double
    fwd = getattr(lib, f"fewstep_neuron_fwd_{sfx}")
    fwd.argtypes = [p, p, p, p, p, i64, i64, i, i, d, d, d, i, i, i, i]
    fwd.restype = i
    bwd = getattr(lib, f"fewstep_neuron_bwd_{sfx}")
    bwd.argtypes = [p, p, p, p, p, p, p, p, p, i64, i64, i, i, d, d, d, i, i, i, d, i, i, i]
    bwd.restype = i
    lib.fewstep_cpu_neuron_block.restype = ctypes.c_int64


# One library per element type: float32 is what training uses; float64 is built only when asked.
_LIB = CpuLibrary(SOURCE, _ABI, "fewstep_cpu_neuron_abi", _declare,
                  defines=lambda sfx: ["-DFEWSTEP_F64"] if sfx == "f64" else [])


def available(dtype: torch.dtype = torch.float32) -> bool:
    """Whether the compiled kernel for ``dtype`` is usable here (builds it on the first call)."""
    return _LIB.load(_DTYPES[dtype]) is not None


def build_error(dtype: torch.dtype = torch.float32) -> str | None:
    """Why the kernel for ``dtype`` is unavailable (``None`` if it built, or was never tried)."""
    return _LIB.error(_DTYPES[dtype])


def library_path(dtype: torch.dtype = torch.float32) -> str | None:
    """The loaded shared object for ``dtype``, or ``None``."""
    lib = _LIB.load(_DTYPES[dtype])
    return None if lib is None else lib._name


def _warn_unavailable() -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            f"fewstep: the fused CPU neuron kernel is unavailable ({_LIB.error('f32')}); using the PyTorch reference "
            "(same results, several times slower). Set FEWSTEP_KERNELS=reference to silence this.",
            RuntimeWarning,
            stacklevel=4,
        )


# ------------------------------------------------------------------------------------ autograd


@dataclass(frozen=True)
class _Config(NeuronConfig):
    decay: float
    thr: float
    thr_is_tensor: bool
    broadcast: bool  # x is one step [N] repeated over the T steps (see _repeated_step)
    sfx: str  # the element type's library: "f32" or "f64"


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _threads(cfg: _Config) -> int:
    return torch.get_num_threads() if (_LIB.threaded(cfg.sfx) and cfg.T * cfg.N >= _PARALLEL_MIN) else 1


def _forward(x, v0, decay_t, thr_t, cfg: _Config):
    lib = _LIB.loaded(cfg.sfx)
    spikes = torch.empty((cfg.T, cfg.N), dtype=x.dtype)
    v_T = torch.empty(cfg.N, dtype=x.dtype)
    membrane = torch.empty((cfg.T, cfg.N), dtype=x.dtype) if cfg.need_membrane else None
    fwd = getattr(lib, f"fewstep_neuron_fwd_{_DTYPES[x.dtype]}")
    fwd(x.data_ptr(), spikes.data_ptr(), _ptr(membrane), _ptr(v0), v_T.data_ptr(), cfg.T, cfg.N, cfg.K,
        int(cfg.hard), cfg.decay, cfg.v_reset, cfg.thr, int(cfg.thr_is_tensor), int(cfg.scale),
        int(cfg.broadcast), _threads(cfg))
    return spikes, v_T, membrane, x


def _backward(c: BackwardCall):
    cfg: _Config = c.cfg
    x, v0 = c.saved, c.v0
    lib = _LIB.loaded(cfg.sfx)
    nblocks = -(-cfg.N // lib.fewstep_cpu_neuron_block())
    gx = torch.empty_like(x)
    gv0 = torch.empty_like(v0) if (c.need_v0 and v0 is not None) else None
    pdecay = torch.empty(nblocks, dtype=torch.float64) if c.need_decay else None
    pthr = torch.empty(nblocks, dtype=torch.float64) if c.need_thr else None
    gs, gv, gm = (None if g is None else g.to(x.dtype).contiguous() for g in (c.g_spikes, c.g_v, c.g_membrane))
    bwd = getattr(lib, f"fewstep_neuron_bwd_{_DTYPES[x.dtype]}")
    rc = bwd(x.data_ptr(), _ptr(v0), _ptr(gs), _ptr(gm), _ptr(gv), gx.data_ptr(), _ptr(gv0), _ptr(pdecay),
             _ptr(pthr), cfg.T, cfg.N, cfg.K, int(cfg.hard), cfg.decay, cfg.v_reset, cfg.thr,
             int(cfg.thr_is_tensor), int(cfg.scale), cfg.sg, cfg.width, int(cfg.detach), int(cfg.broadcast),
             _threads(cfg))
    if rc != 0:
        raise MemoryError("fewstep CPU neuron kernel: out of memory for the backward scratch")
    return gx, gv0, pdecay, pthr


_CpuNeuronFunction = fused_neuron_function("_CpuNeuronFunction", _forward, _backward)


# ------------------------------------------------------------------------------------- entries


def _scalar(value) -> tuple[float, torch.Tensor | None] | None:
    """(value, tensor or None) for a decay / threshold the kernel can take, else None."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or not value.is_floating_point() or value.device.type != "cpu":
            return None
        return float(value.detach().reshape(())), value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value), None


def supports(x_seq: torch.Tensor, p: NeuronParams, v0: torch.Tensor | None = None) -> str | None:
    """``None`` if the CPU kernel handles this call, else the reason it does not (the kernel may
    still be unavailable here: see :func:`available`)."""
    if not isinstance(x_seq, torch.Tensor) or x_seq.dim() < 2 or x_seq.shape[0] == 0:
        return "input is not a time-major tensor [T, B, ...] with T >= 1"
    if x_seq.device.type != "cpu":
        return f"device {x_seq.device} (CPU tensors only)"
    if x_seq.dtype not in _DTYPES:
        return f"dtype {x_seq.dtype} (float32 / float64 only)"
    if x_seq.numel() == 0:
        return "empty input"
    if p.reset not in ("hard", "soft"):
        return f"reset {p.reset!r}"
    if type(p.surrogate) is not Surrogate or p.surrogate.name not in SURROGATE_ID:
        return "custom surrogate"
    k = p.num_thresholds
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= _MAX_K:
        return f"num_thresholds {k!r} (1..{_MAX_K})"
    for name, value in (("decay", p.decay), ("v_threshold", p.v_threshold)):
        if _scalar(value) is None:
            return f"{name} must be a number or a one-element float tensor on the CPU"
    if isinstance(p.v_reset, (bool, torch.Tensor)) or not isinstance(p.v_reset, (int, float)):
        return "v_reset must be a number"
    if v0 is not None and (not isinstance(v0, torch.Tensor) or v0.shape != x_seq.shape[1:]
                           or v0.device.type != "cpu" or v0.dtype != x_seq.dtype):
        return "v0 must have the shape, device and dtype of one input step"
    return None


def _repeated_step(x_seq: torch.Tensor) -> torch.Tensor | None:
    """The one step ``[B, ...]`` that ``x_seq`` repeats over time, when it is such a view.

    Direct encoding feeds the same image (or stem output) at every step as
    ``y.unsqueeze(0).expand(T, ...)``: a view with time stride 0. The kernel then reads ``y``
    once per block and returns ``dL/dy`` (the sum over steps) directly to ``y``, instead of a
    ``[T, ...]`` copy forward and a ``[T, ...]`` gradient summed by ``expand``'s backward."""
    base = x_seq._base
    if x_seq.shape[0] < 2 or x_seq.stride(0) != 0 or base is None or base.shape != x_seq.shape[1:]:
        return None
    if not base.is_contiguous() or base.data_ptr() != x_seq.data_ptr() or base.stride() != x_seq.stride()[1:]:
        return None
    return base


def cpu_multistep(
    x_seq: torch.Tensor, p: NeuronParams, v0: torch.Tensor | None = None, need_membrane: bool = False
) -> StepOutput:
    """Fused multi-step run of ``x_seq`` ``[T, B, ...]`` on the CPU with the dynamics of
    :func:`fewstep.neurons.functional.neuron_multistep`, differentiable w.r.t. ``x_seq``, ``v0``
    and tensor-valued ``decay`` / ``v_threshold``.

    Returns ``StepOutput(spikes, membrane or None, v_T)``; the membrane ``[T, B, ...]`` is only
    computed when ``need_membrane`` is true. Raises ``ValueError`` for a call the kernel does not
    support (:func:`supports`) and ``RuntimeError`` when it could not be built here."""
    reason = supports(x_seq, p, v0)
    if reason is not None:
        raise ValueError(f"cpu_multistep does not support this call: {reason}")
    sfx = _DTYPES[x_seq.dtype]
    if _LIB.load(sfx) is None:
        raise RuntimeError(f"the fused CPU neuron kernel is unavailable: {_LIB.error(sfx)}")
    shape = x_seq.shape
    T = shape[0]
    N = x_seq.numel() // T
    decay, decay_t = _scalar(p.decay)  # type: ignore[misc]
    thr, thr_t = _scalar(p.v_threshold)  # type: ignore[misc]
    step = _repeated_step(x_seq)
    cfg = _Config(
        **NeuronConfig.fields(p, T, N, need_membrane),
        decay=decay, thr=thr, thr_is_tensor=thr_t is not None, broadcast=step is not None, sfx=sfx,
    )
    # one step [N] for a repeated step, else [T, N] (a copy only for non-contiguous input)
    x2 = step.view(N) if step is not None else x_seq.contiguous().view(T, N)
    v02 = v0.contiguous().view(N) if v0 is not None else None
    spikes, v_T, membrane = _CpuNeuronFunction.apply(x2, v02, decay_t, thr_t, cfg)
    return step_output(spikes, v_T, membrane, shape)


def _enabled() -> bool:
    mode = os.environ.get("FEWSTEP_KERNELS", "auto").strip().lower()
    return mode in ("", "auto", "cpu") and os.environ.get("FEWSTEP_REFERENCE") != "1"


def dispatch_kernel(
    x_seq: torch.Tensor, p: NeuronParams, v0: torch.Tensor | None = None, need_membrane: bool = True
) -> StepOutput | None:
    """The entry registered with :func:`fewstep.neurons.dispatch.register_kernel`: handles the float32
    CPU calls it supports when the kernel is available (warns once, then returns ``None``, when not).

    float64 stays on the reference, which supports double backward (``gradgradcheck``); call
    :func:`cpu_multistep` directly to run the kernel in float64. Under ``torch.compile`` it declines
    too, so the compiled graph holds the traceable reference."""
    if not isinstance(x_seq, torch.Tensor) or x_seq.device.type != "cpu" or x_seq.dtype != torch.float32:
        return None
    if not _enabled() or torch.compiler.is_compiling():
        # Under torch.compile the reference runs: dynamo cannot see through ctypes (tracing the
        # kernel's autograd function gave zero gradients upstream), and inductor fuses the
        # reference loop itself.
        return None
    if supports(x_seq, p, v0) is not None:
        return None
    if _LIB.load("f32") is None:
        _warn_unavailable()
        return None
    return cpu_multistep(x_seq, p, v0, need_membrane=need_membrane)
