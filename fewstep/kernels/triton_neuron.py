r"""Fused multi-step neuron kernels in Triton (forward and backward).

One program handles a block of neurons and loops over the ``T`` time steps inside the kernel,
keeping the membrane state in registers, so each tensor is touched exactly once per pass. The
dynamics are those of :mod:`fewstep.neurons.functional` (the oracle the tests compare with):
any number ``K`` of thresholds, hard or soft reset, ``v_reset``, ``detach_reset``,
``scale_output``, the four surrogates with their width, a constant or learnable (0-dim tensor)
decay and threshold, and an optional initial state ``v0``. All maths is fp32 inside; I/O is
fp32, bf16 or fp16.

What is saved for backward, and why
-----------------------------------
The backward pass runs in reverse time and needs the charged membrane ``h_t`` at every step
(and ``v_{t-1}`` for the decay gradient). Two ways to get it:

* **save x, recompute h** (used for ``T <= MAX_RECOMPUTE_T`` = 8, i.e. every few-step setting).
  The forward pass writes only the spikes and ``v_T``; autograd keeps a reference to the input
  ``x`` (``T x N`` values in the input dtype: the memory a saved membrane in that dtype would
  take, none extra if something else keeps ``x`` alive anyway). The backward kernel first
  re-runs the forward recurrence from ``x``, holding ``h_1..h_T`` in registers (the time loop is
  unrolled), then walks back in time. Traffic: forward reads ``x`` and writes ``s`` (2 passes),
  backward reads ``x`` and ``grad_s`` and writes ``grad_x`` (3 passes): five passes in all,
  exactly the floor of ``anchors.md``. Saving ``h`` instead costs an extra write of ``T x N``
  values in the forward pass (six passes) plus that memory for the whole BPTT window, and
  saving it in low precision would flip spikes at the threshold in the recomputed reset
  derivative. Recomputation costs only a few FLOPs per element, which this memory-bound
  kernel gets for free, and is bit-identical to the forward pass.
* **save h (fp32)** for ``T > 8``: holding ``T`` membranes per neuron in registers would spill,
  so the forward pass also writes ``h`` in fp32 and the backward kernel reads it in reverse
  (``v_{t-1}`` is recomputed from ``h_{t-1}``). Six passes and ``4 T N`` bytes saved.

The gradients of a learnable decay / threshold are reduced per block into an fp32 buffer of
partial sums and summed with ``torch.sum`` afterwards (deterministic, no atomics).

Other notes
-----------
* The input may have any shape and strides: it is made contiguous (a copy if it is not) and
  viewed as ``[T, N]``; the same happens to ``v0`` and to incoming gradients.
* ``need_membrane=False`` (the default) skips writing the membrane ``[T, ...]`` entirely and
  returns ``StepOutput.membrane = None``. With ``need_membrane=True`` it is written in the
  output dtype and is differentiable (its gradient is folded into the backward pass).
* Floating-point contraction (FMA) is disabled at launch, so ``h`` is computed with the same
  roundings as the PyTorch reference and fp32 spikes match it bit for bit (the only known
  exception: ``K >= 3`` with a float threshold whose ``3 * V_th`` rounds differently in
  fp32 than in double, which matters only for ``h`` falling in that one-ulp gap).
* Output dtype follows the reference: the input dtype, promoted with ``v0``'s dtype if given.
  float64 is not handled (the dispatcher falls back to the reference).
* Double backward (``create_graph=True`` through this op) is not supported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ..neuron_params import NeuronParams, StepOutput
from ..surrogate import Surrogate
from .neuron_host import SURROGATE_ID, BackwardCall, NeuronConfig, fused_neuron_function, step_output

__all__ = ["INTERPRET", "MAX_RECOMPUTE_T", "supports", "triton_multistep"]

#: Up to this many time steps the backward pass recomputes ``h`` from ``x`` (see module doc).
MAX_RECOMPUTE_T = 8

_IO_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_BLOCK_FWD = 1024  # 4 warps x 32 threads x 8 elements: 128-bit accesses for fp32 and bf16
_BLOCK_BWD = 512  # fewer elements per thread: the unrolled backward holds T membranes each
_NUM_WARPS = 4


def _block_bwd(T: int) -> int:
    """Backward block: 4 elements per thread up to T = 4, then 2 (keeps the unrolled
    recompute kernel at <= 128 registers for T = 8 with every gradient on, no spills)."""
    return _BLOCK_BWD if (T <= 4 or T > MAX_RECOMPUTE_T) else _BLOCK_BWD // 2


# ----------------------------------------------------------------------------------------------
# Device helpers
# ----------------------------------------------------------------------------------------------


@triton.jit
def _surrogate_grad(z, width, SG: tl.constexpr):
    """Surrogate derivative g(z) (ids follow SURROGATES: rectangle, triangle, sigmoid, arctan)."""
    if SG == 0:
        g = tl.where(tl.abs(z) < width, 0.5 / width, 0.0)
    elif SG == 1:
        g = tl.maximum(width - tl.abs(z), 0.0) / (width * width)
    elif SG == 2:
        sg = tl.sigmoid(z / width)
        g = sg * (1.0 - sg) / width
    else:
        a = z * (3.141592653589793 / (2.0 * width))
        g = 0.5 / (width * (1.0 + a * a))
    return g


@triton.jit
def _load_params(decay_ptr, thr_ptr, decay_val, thr_val,
                 DECAY_FROM_PTR: tl.constexpr, THR_FROM_PTR: tl.constexpr):
    if DECAY_FROM_PTR:
        lam = tl.load(decay_ptr).to(tl.float32)
    else:
        lam = decay_val
    if THR_FROM_PTR:
        thr = tl.load(thr_ptr).to(tl.float32)
    else:
        thr = thr_val
    return lam, thr


@triton.jit
def _initial_v(v0_ptr, offs, mask, v_reset, HAS_V0: tl.constexpr, HARD: tl.constexpr, BLOCK: tl.constexpr):
    if HAS_V0:
        v = tl.load(v0_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    elif HARD:
        v = tl.zeros([BLOCK], dtype=tl.float32) + v_reset
    else:
        v = tl.zeros([BLOCK], dtype=tl.float32)
    return v


@triton.jit
def _charge(v, x, lam, v_reset, HARD: tl.constexpr):
    # Same operation order as the reference: (v_reset + decay * (v - v_reset)) + x.
    if HARD:
        h = (v_reset + lam * (v - v_reset)) + x
    else:
        h = lam * v + x
    return h


@triton.jit
def _fire_reset(h, thr, v_reset, K: tl.constexpr, HARD: tl.constexpr, SCALE: tl.constexpr):
    """Returns (output, next state): output = s or s * V_th, s = sum_k H(h - k V_th)."""
    s = tl.zeros_like(h)
    for k in tl.static_range(1, K + 1):
        s += tl.where(h - k * thr >= 0.0, 1.0, 0.0)
    if HARD:
        v = tl.where(h - thr >= 0.0, v_reset, h)
    else:
        v = h - s * thr
    if SCALE:
        out = s * thr
    else:
        out = s
    return out, v


@triton.jit
def _block_start(N, v0_ptr, decay_ptr, thr_ptr, decay_val, thr_val, v_reset,
                 HAS_V0: tl.constexpr, HARD: tl.constexpr, DECAY_FROM_PTR: tl.constexpr,
                 THR_FROM_PTR: tl.constexpr, BLOCK: tl.constexpr):
    """This program's block of neurons (pid, offsets, in-range mask), decay, threshold and initial state."""
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    lam, thr = _load_params(decay_ptr, thr_ptr, decay_val, thr_val, DECAY_FROM_PTR, THR_FROM_PTR)
    v = _initial_v(v0_ptr, offs, mask, v_reset, HAS_V0, HARD, BLOCK)
    return pid, offs, mask, lam, thr, v


@triton.jit
def _fwd_step(x_ptr, s_ptr, m_ptr, hs_ptr, N, offs, mask, v, lam, thr, v_reset,
              K: tl.constexpr, HARD: tl.constexpr, SCALE: tl.constexpr,
              STORE_M: tl.constexpr, SAVE_H: tl.constexpr):
    """One forward step; returns the next state and the four pointers advanced to the next step
    (by ``N``: no ``t * N`` products, so no int32 overflow for large ``T * N``)."""
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    h = _charge(v, x, lam, v_reset, HARD)
    out, v = _fire_reset(h, thr, v_reset, K, HARD, SCALE)
    tl.store(s_ptr + offs, out.to(s_ptr.dtype.element_ty), mask=mask)
    if STORE_M:
        tl.store(m_ptr + offs, h.to(m_ptr.dtype.element_ty), mask=mask)
    if SAVE_H:
        tl.store(hs_ptr + offs, h, mask=mask)
    return v, x_ptr + N, s_ptr + N, m_ptr + N, hs_ptr + N


@triton.jit
def _bwd_step(h, gout, gv, thr, v_reset, width,
              K: tl.constexpr, SG: tl.constexpr, HARD: tl.constexpr, DETACH: tl.constexpr,
              SCALE: tl.constexpr):
    """Given h_t, dL/d(out_t) and dL/dv_t, return dL/dh_t and this step's dL/dV_th."""
    s = tl.zeros_like(h)
    gsum = tl.zeros_like(h)  # sum_k g(h - k V_th)      = ds/dh
    gksum = tl.zeros_like(h)  # sum_k k g(h - k V_th)   = -ds/dV_th
    g1 = tl.zeros_like(h)
    for k in tl.static_range(1, K + 1):
        z = h - k * thr
        s += tl.where(z >= 0.0, 1.0, 0.0)
        g = _surrogate_grad(z, width, SG)
        gsum += g
        gksum += k * g
        if k == 1:
            g1 = g
    if SCALE:  # out = s * V_th
        gh = gout * (thr * gsum)
        gth = gout * (s - thr * gksum)
    else:
        gh = gout * gsum
        gth = -(gout * gksum)
    if HARD:  # v = h (1 - r) + v_reset r, r = H(h - V_th)
        gh += tl.where(h - thr >= 0.0, 0.0, gv)
        if not DETACH:
            c = gv * (v_reset - h) * g1
            gh += c
            gth -= c
    else:  # v = h - r V_th, r = s
        gh += gv
        gth -= gv * s
        if not DETACH:
            gh -= gv * (thr * gsum)
            gth += gv * (thr * gksum)
    return gh, gth


@triton.jit
def _load_or_zeros(ptr, offs, mask, HAS: tl.constexpr, BLOCK: tl.constexpr):
    """The block's values at ``ptr`` in fp32, or zeros when there is no such tensor."""
    if HAS:
        val = tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        val = tl.zeros([BLOCK], dtype=tl.float32)
    return val


@triton.jit
def _bwd_start(gvT_ptr, offs, mask, HAS_GVT: tl.constexpr, BLOCK: tl.constexpr):
    """The reverse pass's running dL/dv (from dL/dv_T) and the zeroed decay and threshold sums."""
    gv = _load_or_zeros(gvT_ptr, offs, mask, HAS_GVT, BLOCK)
    return gv, tl.zeros([BLOCK], dtype=tl.float32), tl.zeros([BLOCK], dtype=tl.float32)


@triton.jit
def _bwd_grad_x(h, gs_ptr, gm_ptr, gx_ptr, offs, mask, gv, thr, v_reset, width,
                K: tl.constexpr, SG: tl.constexpr, HARD: tl.constexpr, DETACH: tl.constexpr,
                SCALE: tl.constexpr, HAS_GS: tl.constexpr, HAS_GM: tl.constexpr, BLOCK: tl.constexpr):
    """One reverse step: stores dL/dx_t (= dL/dh_t, the membrane's own gradient included) and
    returns it with this step's dL/dV_th."""
    gout = _load_or_zeros(gs_ptr, offs, mask, HAS_GS, BLOCK)
    gh, gth = _bwd_step(h, gout, gv, thr, v_reset, width, K, SG, HARD, DETACH, SCALE)
    if HAS_GM:
        gh += tl.load(gm_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(gx_ptr + offs, gh.to(gx_ptr.dtype.element_ty), mask=mask)
    return gh, gth


@triton.jit
def _add_decay_grad(gdecay, gh, v_prev, v_reset, HARD: tl.constexpr):
    """``gdecay`` plus this step's dL/d(decay) = dL/dh_t * (v_{t-1} - v_reset) (hard reset) or * v_{t-1}."""
    if HARD:
        gdecay += gh * (v_prev - v_reset)
    else:
        gdecay += gh * v_prev
    return gdecay


@triton.jit
def _bwd_store(gv0_ptr, pdecay_ptr, pthr_ptr, pid, offs, mask, gv, gdecay, gthr,
               V0_GRAD: tl.constexpr, DECAY_GRAD: tl.constexpr, THR_GRAD: tl.constexpr):
    """Stores dL/dv0 and the block's partial sums of the decay and threshold gradients."""
    if V0_GRAD:
        tl.store(gv0_ptr + offs, gv.to(gv0_ptr.dtype.element_ty), mask=mask)
    if DECAY_GRAD:
        tl.store(pdecay_ptr + pid, tl.sum(tl.where(mask, gdecay, 0.0), axis=0))
    if THR_GRAD:
        tl.store(pthr_ptr + pid, tl.sum(tl.where(mask, gthr, 0.0), axis=0))


# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------


@triton.jit
def _neuron_fwd_kernel(
    x_ptr, s_ptr, m_ptr, hs_ptr, v0_ptr, vT_ptr, decay_ptr, thr_ptr,
    N, decay_val, thr_val, v_reset,
    T: tl.constexpr, K: tl.constexpr, HARD: tl.constexpr, SCALE: tl.constexpr,
    HAS_V0: tl.constexpr, DECAY_FROM_PTR: tl.constexpr, THR_FROM_PTR: tl.constexpr,
    STORE_M: tl.constexpr, SAVE_H: tl.constexpr, UNROLL: tl.constexpr, BLOCK: tl.constexpr,
):
    pid, offs, mask, lam, thr, v = _block_start(N, v0_ptr, decay_ptr, thr_ptr, decay_val, thr_val, v_reset,
                                                HAS_V0, HARD, DECAY_FROM_PTR, THR_FROM_PTR, BLOCK)
    if UNROLL:
        for t in tl.static_range(T):
            v, x_ptr, s_ptr, m_ptr, hs_ptr = _fwd_step(x_ptr, s_ptr, m_ptr, hs_ptr, N, offs, mask, v, lam, thr,
                                                       v_reset, K, HARD, SCALE, STORE_M, SAVE_H)
    else:
        for t in range(T):
            v, x_ptr, s_ptr, m_ptr, hs_ptr = _fwd_step(x_ptr, s_ptr, m_ptr, hs_ptr, N, offs, mask, v, lam, thr,
                                                       v_reset, K, HARD, SCALE, STORE_M, SAVE_H)
    tl.store(vT_ptr + offs, v.to(vT_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _neuron_bwd_kernel(
    in_ptr, v0_ptr, gs_ptr, gm_ptr, gvT_ptr, gx_ptr, gv0_ptr, pdecay_ptr, pthr_ptr, decay_ptr, thr_ptr,
    N, decay_val, thr_val, v_reset, width,
    T: tl.constexpr, K: tl.constexpr, SG: tl.constexpr, HARD: tl.constexpr, DETACH: tl.constexpr,
    SCALE: tl.constexpr, HAS_V0: tl.constexpr, HAS_GS: tl.constexpr, HAS_GM: tl.constexpr,
    HAS_GVT: tl.constexpr, V0_GRAD: tl.constexpr, DECAY_GRAD: tl.constexpr, THR_GRAD: tl.constexpr,
    DECAY_FROM_PTR: tl.constexpr, THR_FROM_PTR: tl.constexpr, SAVED_H: tl.constexpr, BLOCK: tl.constexpr,
):
    """Backward pass, one of two ways (see the module doc), chosen at compile time by ``SAVED_H``:

    * false (T <= MAX_RECOMPUTE_T): ``in_ptr`` is the input x; h_1..h_T are recomputed from it into
      registers, then time runs in reverse;
    * true (T > MAX_RECOMPUTE_T): ``in_ptr`` holds the fp32 membranes saved by the forward pass,
      read in reverse."""
    pid, offs, mask, lam, thr, v = _block_start(N, v0_ptr, decay_ptr, thr_ptr, decay_val, thr_val, v_reset,
                                                HAS_V0, HARD, DECAY_FROM_PTR, THR_FROM_PTR, BLOCK)
    if SAVED_H:
        v_init = v
        for j in range(T - 1):
            in_ptr += N
            gs_ptr += N
            gm_ptr += N
            gx_ptr += N
        gv, gdecay, gthr = _bwd_start(gvT_ptr, offs, mask, HAS_GVT, BLOCK)
        h = tl.load(in_ptr + offs, mask=mask, other=0.0)
        for i in range(T):
            step = T - 1 - i
            # h_{t-1} (the next iteration's h); at t = 0 the state before it is v_init.
            has_prev = (offs * 0 + step) > 0
            hp = tl.load(in_ptr - N + offs, mask=mask & has_prev, other=0.0)
            gh, gth = _bwd_grad_x(h, gs_ptr, gm_ptr, gx_ptr, offs, mask, gv, thr, v_reset, width,
                                  K, SG, HARD, DETACH, SCALE, HAS_GS, HAS_GM, BLOCK)
            if DECAY_GRAD:
                _, vp = _fire_reset(hp, thr, v_reset, K, HARD, SCALE)
                vp = tl.where(has_prev, vp, v_init)
                gdecay = _add_decay_grad(gdecay, gh, vp, v_reset, HARD)
            if THR_GRAD:
                gthr += gth
            gv = gh * lam
            h = hp
            in_ptr -= N
            gs_ptr -= N
            gm_ptr -= N
            gx_ptr -= N
    else:
        # Phase 1: forward recurrence (bit-identical to the forward kernel), membranes kept in registers.
        # type comments, not annotations: Triton's code generator evaluates an annotation
        hs = ()  # type: tuple
        vs = ()  # type: tuple  # v_{t-1}, for the decay gradient
        for t in tl.static_range(T):
            x = tl.load(in_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            h = _charge(v, x, lam, v_reset, HARD)
            hs = hs + (h,)
            if DECAY_GRAD:
                vs = vs + (v,)
            _, v = _fire_reset(h, thr, v_reset, K, HARD, SCALE)
            in_ptr += N

        # Phase 2: reverse time. Point at step T - 1.
        for j in tl.static_range(T - 1):
            gs_ptr += N
            gm_ptr += N
            gx_ptr += N
        gv, gdecay, gthr = _bwd_start(gvT_ptr, offs, mask, HAS_GVT, BLOCK)
        for i in tl.static_range(T):
            h = hs[T - 1 - i]
            gh, gth = _bwd_grad_x(h, gs_ptr, gm_ptr, gx_ptr, offs, mask, gv, thr, v_reset, width,
                                  K, SG, HARD, DETACH, SCALE, HAS_GS, HAS_GM, BLOCK)
            if DECAY_GRAD:
                gdecay = _add_decay_grad(gdecay, gh, vs[T - 1 - i], v_reset, HARD)
            if THR_GRAD:
                gthr += gth
            gv = gh * lam
            gs_ptr -= N
            gm_ptr -= N
            gx_ptr -= N
    _bwd_store(gv0_ptr, pdecay_ptr, pthr_ptr, pid, offs, mask, gv, gdecay, gthr, V0_GRAD, DECAY_GRAD, THR_GRAD)


#: Whether the kernels were built for the Triton CPU interpreter (TRITON_INTERPRET=1 at import).
INTERPRET = type(_neuron_fwd_kernel).__name__ == "InterpretedFunction"


# ----------------------------------------------------------------------------------------------
# Host side
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Config(NeuronConfig):
    decay_val: float
    thr_val: float
    save_h: bool  # T > MAX_RECOMPUTE_T and a backward pass may follow


def _scalar_param(value, device: torch.device) -> tuple[float, torch.Tensor | None] | None:
    """(float value, tensor or None) for a decay/threshold, or None if the kernel can't take it."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or not value.is_floating_point() or value.device != device:
            return None
        return 0.0, value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value), None


def supports(x_seq: torch.Tensor, p: NeuronParams, v0: torch.Tensor | None = None) -> str | None:
    """``None`` if the kernel handles this call, else the reason it does not."""
    if not isinstance(x_seq, torch.Tensor) or x_seq.dim() < 2 or x_seq.shape[0] == 0:
        return "input is not a time-major tensor [T, B, ...] with T >= 1"
    if x_seq.dtype not in _IO_DTYPES:
        return f"dtype {x_seq.dtype} (fp32/bf16/fp16 only)"
    if x_seq.numel() == 0:
        return "empty input"
    if x_seq.numel() // x_seq.shape[0] >= 2**31 - _BLOCK_FWD:
        return "more than 2^31 neurons per time step"
    if p.reset not in ("hard", "soft"):
        return f"reset {p.reset!r}"
    if type(p.surrogate) is not Surrogate or p.surrogate.name not in SURROGATE_ID:
        return "custom surrogate"
    if not isinstance(p.num_thresholds, int) or isinstance(p.num_thresholds, bool) or not 1 <= p.num_thresholds <= 32:
        return f"num_thresholds {p.num_thresholds!r}"
    for name, value in (("decay", p.decay), ("v_threshold", p.v_threshold)):
        if _scalar_param(value, x_seq.device) is None:
            return f"{name} must be a number or a one-element float tensor on the input's device"
    if isinstance(p.v_reset, torch.Tensor) or not isinstance(p.v_reset, (int, float)):
        return "v_reset must be a number"
    if v0 is not None:
        if not isinstance(v0, torch.Tensor) or v0.shape != x_seq.shape[1:] or v0.device != x_seq.device:
            return "v0 must have the shape of one input step and its device"
        if v0.dtype not in _IO_DTYPES or torch.promote_types(x_seq.dtype, v0.dtype) not in _IO_DTYPES:
            return f"v0 dtype {v0.dtype}"
    return None


def _device_ctx(x: torch.Tensor):
    if x.is_cuda:
        return torch.cuda.device(x.device)
    import contextlib

    return contextlib.nullcontext()


def _launch_opts() -> dict:
    # No FMA contraction: h is computed with the reference's roundings (exact spikes).
    return {"num_warps": _NUM_WARPS, "enable_fp_fusion": False}


def _forward(x, v0, decay_t, thr_t, cfg: _Config):
    T, N = cfg.T, cfg.N
    out_dtype = x.dtype if v0 is None else torch.promote_types(x.dtype, v0.dtype)
    spikes = torch.empty((T, N), dtype=out_dtype, device=x.device)
    v_T = torch.empty((N,), dtype=out_dtype, device=x.device)
    membrane = torch.empty((T, N), dtype=out_dtype, device=x.device) if cfg.need_membrane else None
    h_saved = torch.empty((T, N), dtype=torch.float32, device=x.device) if cfg.save_h else None
    grid = (triton.cdiv(N, _BLOCK_FWD),)
    with _device_ctx(x):
        _neuron_fwd_kernel[grid](
            x, spikes, membrane if membrane is not None else spikes,
            h_saved if h_saved is not None else spikes,
            v0 if v0 is not None else x, v_T,
            decay_t if decay_t is not None else x, thr_t if thr_t is not None else x,
            N, cfg.decay_val, cfg.thr_val, cfg.v_reset,
            T=T, K=cfg.K, HARD=cfg.hard, SCALE=cfg.scale, HAS_V0=v0 is not None,
            DECAY_FROM_PTR=decay_t is not None, THR_FROM_PTR=thr_t is not None,
            STORE_M=membrane is not None, SAVE_H=h_saved is not None,
            UNROLL=T <= MAX_RECOMPUTE_T, BLOCK=_BLOCK_FWD, **_launch_opts(),
        )
    return spikes, v_T, membrane, (h_saved if cfg.save_h else x)


def _backward(c: BackwardCall):
    cfg: _Config = c.cfg
    saved, v0, decay_t, thr_t = c.saved, c.v0, c.decay_t, c.thr_t
    T, N = cfg.T, cfg.N
    dev = saved.device
    if cfg.save_h is False and saved.shape != (T, N):  # pragma: no cover - defensive
        raise RuntimeError("triton neuron: saved input has an unexpected shape")
    gx = torch.empty((T, N), dtype=c.x_dtype, device=dev)
    gv0 = torch.empty_like(v0) if (c.need_v0 and v0 is not None) else None
    block = _block_bwd(T)
    grid = (triton.cdiv(N, block),)
    pdecay = torch.empty(grid, dtype=torch.float32, device=dev) if c.need_decay else None
    pthr = torch.empty(grid, dtype=torch.float32, device=dev) if c.need_thr else None
    g_spikes = c.g_spikes.contiguous() if c.g_spikes is not None else None
    g_v = c.g_v.contiguous() if c.g_v is not None else None
    g_membrane = c.g_membrane.contiguous() if c.g_membrane is not None else None
    with _device_ctx(saved):
        _neuron_bwd_kernel[grid](
            saved, v0 if v0 is not None else saved,
            g_spikes if g_spikes is not None else gx,
            g_membrane if g_membrane is not None else gx,
            g_v if g_v is not None else gx,
            gx, gv0 if gv0 is not None else gx,
            pdecay if pdecay is not None else gx, pthr if pthr is not None else gx,
            decay_t if decay_t is not None else saved, thr_t if thr_t is not None else saved,
            N, cfg.decay_val, cfg.thr_val, cfg.v_reset, cfg.width,
            T=T, K=cfg.K, SG=cfg.sg, HARD=cfg.hard, DETACH=cfg.detach, SCALE=cfg.scale,
            HAS_V0=v0 is not None, HAS_GS=g_spikes is not None, HAS_GM=g_membrane is not None,
            HAS_GVT=g_v is not None, V0_GRAD=gv0 is not None,
            DECAY_GRAD=pdecay is not None, THR_GRAD=pthr is not None,
            DECAY_FROM_PTR=decay_t is not None, THR_FROM_PTR=thr_t is not None, SAVED_H=cfg.save_h,
            BLOCK=block, **_launch_opts(),
        )
    return gx, gv0, pdecay, pthr


_TritonNeuronFunction = fused_neuron_function("_TritonNeuronFunction", _forward, _backward)


def triton_multistep(
    x_seq: torch.Tensor, p: NeuronParams, v0: torch.Tensor | None = None, need_membrane: bool = False
) -> StepOutput:
    """Fused multi-step run of ``x_seq`` ``[T, B, ...]`` (any strides) with the dynamics of
    :func:`fewstep.neurons.functional.neuron_multistep`, differentiable w.r.t. ``x_seq``,
    ``v0`` and tensor-valued ``decay`` / ``v_threshold``.

    Returns ``StepOutput(spikes [T, B, ...], membrane [T, B, ...] or None, v_T [B, ...])``;
    the membrane is only computed when ``need_membrane`` is true. Raises ``ValueError`` for
    calls the kernel does not support (see :func:`supports`)."""
    reason = supports(x_seq, p, v0)
    if reason is not None:
        raise ValueError(f"triton_multistep does not support this call: {reason}")
    shape = x_seq.shape
    T = shape[0]
    N = x_seq.numel() // T
    x2 = x_seq.contiguous().view(T, N)  # a copy only for non-contiguous input
    v02 = v0.contiguous().view(N) if v0 is not None else None
    decay_val, decay_t = _scalar_param(p.decay, x_seq.device)  # type: ignore[misc]
    thr_val, thr_t = _scalar_param(p.v_threshold, x_seq.device)  # type: ignore[misc]
    grad_possible = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x_seq, v0, decay_t, thr_t)
    )
    cfg = _Config(
        **NeuronConfig.fields(p, T, N, need_membrane),
        decay_val=decay_val, thr_val=thr_val, save_h=grad_possible and T > MAX_RECOMPUTE_T,
    )
    spikes, v_T, membrane = _TritonNeuronFunction.apply(x2, v02, decay_t, thr_t, cfg)
    return step_output(spikes, v_T, membrane, shape)


def _enabled_for(x_seq: torch.Tensor) -> bool:
    mode = os.environ.get("FEWSTEP_KERNELS", "auto").strip().lower()
    if mode in ("reference", "none", "off", "0"):
        return False
    if INTERPRET:
        # Kernels built for the interpreter run on host copies: only when explicitly asked for.
        return mode == "triton" and os.environ.get("TRITON_INTERPRET") == "1"
    return x_seq.is_cuda


def dispatch_kernel(
    x_seq: torch.Tensor, p: NeuronParams, v0: torch.Tensor | None = None, need_membrane: bool = True
) -> StepOutput | None:
    """The entry registered with :func:`fewstep.neurons.dispatch.register_kernel`."""
    if not isinstance(x_seq, torch.Tensor) or not _enabled_for(x_seq) or supports(x_seq, p, v0) is not None:
        return None
    return triton_multistep(x_seq, p, v0, need_membrane=need_membrane)
