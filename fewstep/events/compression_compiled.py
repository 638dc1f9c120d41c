"""STC's compiled path: one pass over the events in machine code (Numba), for :func:`fewstep.events.stc`.

Why: the NumPy path costs about fifteen array calls per stream whatever its length, tens of
microseconds of fixed overhead that dominate on N-MNIST-sized streams (a few thousand events).
One compiled loop reads each event once, fine bin by fine bin: it finds where the next bin starts
(binary search on the timestamps for ``by='time'``, arithmetic on ranks for ``by='count'``), then
checks each event's timestamp order and coordinates and adds its weight into the output.
The bin starts are the NumPy path's exactly (``t_first + ceil(k * D / T0)``, ``ceil(k * N / T0)``),
so both paths give bit-identical results; the tests hold them to
:func:`~fewstep.events.compression.reference_stc`.

Numba is optional (``pip install "fewstep[events]"``). Without it, :func:`available` is false and
:func:`~fewstep.events.compression.stc` uses NumPy. The loop is compiled on first use (about a
second) and cached on disk by Numba (``NUMBA_CACHE_DIR`` moves the cache).
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from collections.abc import Callable

import numpy as np

from .types import XY_VIEW_DTYPE

__all__ = ["available", "stc_into", "stc_batch_into", "OK", "UNSORTED", "OUT_OF_SENSOR", "SPAN_TOO_LONG"]

#: :func:`stc_into`'s return codes. ``SPAN_TOO_LONG``: for ``by='time'`` the loop bins in int64
#: and needs ``T0 * (D + 1) <= 2**63 - 1`` (fine bins times the time span plus one); the caller
#: sends longer spans (centuries of microseconds) to the NumPy path.
OK, UNSORTED, OUT_OF_SENSOR, SPAN_TOO_LONG = 0, 1, 2, 3

INT64_MAX = 2**63 - 1


@functools.lru_cache(maxsize=64)
def _ones(fine: int) -> np.ndarray:
    """Unit weights for counting, float32 like the output (a float64 weight would make every
    add convert, about 10 % slower)."""
    ones = np.ones(fine, np.float32)
    ones.setflags(write=False)
    return ones


_lock = threading.Lock()
_kernels: tuple[Callable[..., int], Callable[..., int]] | None = None


@functools.cache
def available() -> bool:
    """Whether Numba is installed (the compiled path can run)."""
    return importlib.util.find_spec("numba") is not None


def _build(cache: bool = True) -> tuple[Callable[..., int], Callable[..., int]]:
    import numba

    @numba.njit(cache=cache, nogil=True)
    def stream(xy, t, p, width, height, f, ho, wo, fine, r, by_time, weights, out, offset,
               step_stride):  # pragma: no cover - compiled
        n = t.shape[0]
        plane = np.uint64(ho * wo)
        t_first, t_last = t[0], t[n - 1]
        span = 0
        if by_time:
            if t_last < t_first:
                return UNSORTED
            if t_first < 0 and t_last > INT64_MAX + t_first:
                return SPAN_TOO_LONG  # the span itself overflows int64
            span = t_last - t_first
            if span > INT64_MAX // fine - 1:
                return SPAN_TOO_LONG  # (k + 1) * span could overflow below
        uw, uh, uf, uwo = np.uint64(width), np.uint64(height), np.uint64(f), np.uint64(wo)
        lo = 0
        previous = t_first
        for k in range(fine):
            # [lo, hi): the events of fine bin k
            if k == fine - 1 or (by_time and span == 0):
                hi = n
            elif by_time:  # the first position >= lo with t >= bin k + 1's start (order checked below)
                start = t_first + ((k + 1) * span + fine - 1) // fine
                a, b = lo, n
                while a < b:
                    m = (a + b) >> 1
                    if t[m] < start:
                        a = m + 1
                    else:
                        b = m
                hi = a
            else:
                hi = ((k + 1) * n + fine - 1) // fine
            base = np.uint64(offset + (k // r) * step_stride)
            w = weights[k]  # in out's dtype: float32 ones for counts
            # Unsigned indices spare Numba's negative-index wrap-around; one loop per pooling
            # case keeps the division out of the common one.
            if f == 1:
                for i in range(np.uint64(lo), np.uint64(hi)):
                    ti = t[i]
                    if ti < previous:
                        return UNSORTED
                    previous = ti
                    v = np.uint64(xy[i])  # x in the low 16 bits, y in the high; negative ones read as >= 2**15
                    xi = v & np.uint64(0xFFFF)
                    yi = v >> np.uint64(16)
                    if xi >= uw or yi >= uh:
                        return OUT_OF_SENSOR
                    out[base + (plane if p[i] > 0 else np.uint64(0)) + yi * uwo + xi] += w
            else:
                for i in range(np.uint64(lo), np.uint64(hi)):
                    ti = t[i]
                    if ti < previous:
                        return UNSORTED
                    previous = ti
                    v = np.uint64(xy[i])
                    xi = v & np.uint64(0xFFFF)
                    yi = v >> np.uint64(16)
                    if xi >= uw or yi >= uh:
                        return OUT_OF_SENSOR
                    out[base + (plane if p[i] > 0 else np.uint64(0)) + (yi // uf) * uwo + xi // uf] += w
            lo = hi
            if hi == n:
                break
        return OK

    @numba.njit(cache=cache, nogil=True)
    def batch(xy, t, p, offsets, width, height, f, ho, wo, fine, r, by_time, weights,
              out):  # pragma: no cover - compiled
        samples = offsets.shape[0] - 1
        sample_size = 2 * ho * wo
        for s in range(samples):
            a, b = offsets[s], offsets[s + 1]
            if a < b:
                status = stream(xy[a:b], t[a:b], p[a:b], width, height, f, ho, wo, fine, r, by_time,
                                weights, out, s * sample_size, samples * sample_size)
                if status != 0:
                    return status
        return OK

    return stream, batch


def _get() -> tuple[Callable[..., int], Callable[..., int]]:
    global _kernels
    if _kernels is None:
        with _lock:
            if _kernels is None:
                try:
                    _kernels = _build()
                except RuntimeError as exc:  # Numba found no writable cache folder: compile each run
                    if "cannot cache" not in str(exc):
                        raise
                    _kernels = _build(cache=False)
    return _kernels


def stc_into(ev: np.ndarray, width: int, height: int, f: int, ho: int, wo: int, fine: int, r: int,
             by_time: bool, weights: np.ndarray | None, out: np.ndarray) -> int:
    """Add the non-empty :data:`~fewstep.events.types.EVENT_DTYPE` stream ``ev`` into the flat
    ``out`` (``[T, 2, ho, wo]``; float32 for counts, float64 with ``weights``, the per-fine-bin
    weights of ``'exp'``) and return :data:`OK`; or stop early and return :data:`UNSORTED`,
    :data:`OUT_OF_SENSOR` or :data:`SPAN_TOO_LONG` (``out`` then holds a partial sum: the caller
    starts again or raises)."""
    w = weights if weights is not None else _ones(fine)
    return int(_get()[0](ev.view(XY_VIEW_DTYPE)["xy"], ev["t"], ev["p"], width, height, f, ho, wo, fine, r, by_time, w, out,
                         0, 2 * ho * wo))


def stc_batch_into(ev: np.ndarray, offsets: np.ndarray, width: int, height: int, f: int, ho: int, wo: int,
                   fine: int, r: int, by_time: bool, weights: np.ndarray | None, out: np.ndarray) -> int:
    """:func:`stc_into` for the packed streams ``ev[offsets[b]:offsets[b + 1]]``, into the flat
    time-major ``out`` (``[T, B, 2, ho, wo]``); the first stream that fails stops the batch."""
    w = weights if weights is not None else _ones(fine)
    return int(_get()[1](ev.view(XY_VIEW_DTYPE)["xy"], ev["t"], ev["p"], offsets, width, height, f, ho, wo, fine, r, by_time,
                         w, out))
