r"""Spatio-temporal compression (STC): an event stream straight to a few time steps of current.

Reconstruction of Xu, Liu and Yang (arXiv 2203.10006), see ``methods.md`` section 1. The
written-out definition bins the events into ``T0 = T * r`` fine frames ``F[k]`` of shape
``[2, H, W]`` (event counts per polarity) and compresses every ``r`` consecutive fine frames into
one step of current:

.. math::

    I[n] = \sum_{k=n r}^{(n+1) r - 1} \kappa^{(n+1) r - 1 - k} \, F[k],
    \qquad n = 0, \dots, T - 1,\ \kappa \in (0, 1]

(``integration='exp'``, a first-order synapse integrating inside each window and read out at the
window's end; ``methods.md`` writes the exponent ``n r - k`` with 1-based ``n`` and ``k``, which is
the same thing). ``kappa = 1`` or ``integration='sum'`` is the plain sum, which keeps the event
count exactly. Sum-pooling by an integer ``spatial_factor`` is the "spatio" half.

:func:`stc` never builds the fine frames. One pass over the (sorted) timestamps finds where
each fine bin starts in the stream, by binary search (for ``'count'``, by arithmetic on ranks);
a second pass computes every event's flat index into ``[T, 2, H', W']`` (its bin's step as an
offset) and, for ``'exp'``, its weight ``kappa ** (distance in fine bins to the window end)``,
and adds it into the output. Both passes walk the events in fixed-size chunks through reused
work arrays, so the output is the only memory allocated. :func:`reference_stc` builds the fine
frames explicitly, as the formula above says; it is the specification the tests hold the fast
paths to. :func:`stc_batch` computes a whole batch with torch ops, on any device.

On the CPU, :func:`stc` and :func:`stc_batch` take ``backend='numba'`` (default where Numba is
installed): :mod:`fewstep.events.compression_compiled` does both passes as one compiled loop per
stream, with the same bin starts, so its output is bit-identical to the NumPy path's. It matters for
short streams, where the NumPy path's dozen array calls cost more than the events.

Conventions (shared by all three functions):

* ``by='time'``: the stream's span ``[t_first, t_last]`` is cut into ``T0`` equal windows of
  length ``D / T0`` with ``D = max(t_last - t_first, 1)`` us. Event ``t`` falls in fine bin
  ``k = min(floor((t - t_first) * T0 / D), T0 - 1)``: windows are half-open ``[start, end)``
  except the last, which is closed, so the last event lands in the last window. A stream whose
  events all share one timestamp lands entirely in step 0. (Tonic's ``ToFrame(n_time_bins=T)``
  uses windows of ``D // T`` us and drops the events at or after ``t_first + T * (D // T)``,
  the last event always among them.)
* ``by='count'``: events ordered by time (stable, so ties keep their input order) get ranks
  ``i = 0..N-1`` and fine bin ``k = floor(i * T0 / N)``: every step holds ``N // T`` or
  ``N // T + 1`` events and none is dropped.
* Unsorted timestamps are accepted: the stream is sorted once (stable argsort, O(N log N)).
  Sorted input, the normal case, costs one O(N) check.
* Channel 0 is OFF and channel 1 is ON. Polarities ``{0, 1}`` are taken as they are; any other
  encoding (``{-1, 1}``, bool, ...) maps ``p > 0`` to ON and the rest to OFF.
* ``spatial_factor f`` sum-pools ``f x f`` blocks; the output is ``ceil(H / f) x ceil(W / f)``
  (a partial block at the border is kept, so the count is still conserved).
* Coordinates outside the sensor raise ``ValueError``.
* Everything is checked before any work: the events must be a 1-D structured array that
  :func:`~fewstep.events.types.as_events` converts without loss (16-bit coordinates, finite
  timestamps that fit in int64), the sensor sides lie in 1..32768, and the parameters are
  whole numbers in range with at most :data:`MAX_FINE_BINS` fine bins (``ConfigError``, a
  ``ValueError``, naming the parameter). Any int64 timestamps are binned exactly by the rule
  above, even a span of 2**64 - 1 us.
"""

from __future__ import annotations

import bisect
import functools
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, cast, overload

import numpy as np
import torch

from ..errors import ConfigError
from . import compression_compiled
from .ops import MAX_SENSOR_SIDE, _sensor
from .types import EVENT_DTYPE, XY_VIEW_DTYPE, as_events

Binning = Literal["time", "count"]
Integration = Literal["sum", "exp"]
Backend = Literal["auto", "numba", "numpy"]
PackedEvents = tuple[np.ndarray, np.ndarray]
EventBatch = Sequence[np.ndarray] | PackedEvents

__all__ = ["STC", "stc", "reference_stc", "stc_batch", "pack_events", "unpack_events", "concat_events"]


# ----------------------------------------------------------------------------------------------
# shared checks and small helpers


#: The most fine bins ``T0 = T * r`` one call may use (``timesteps`` times ``fine_bins_per_step`` for
#: ``'exp'``, ``timesteps`` for ``'sum'``). Work and memory grow with ``T0``; far more than any
#: recipe needs (1024 steps x 64 fine bins per step).
MAX_FINE_BINS = 2**16


def _sensor_wh(sensor_size: Sequence[int]) -> tuple[int, int]:
    """``(width, height)`` from ``(W, H)`` or Tonic's ``(W, H, P)`` with ``P == 2``."""
    if type(sensor_size) is tuple and len(sensor_size) == 2:  # fast path: two plain ints in range
        w, h = sensor_size
        if type(w) is int and type(h) is int and 1 <= w <= MAX_SENSOR_SIDE and 1 <= h <= MAX_SENSOR_SIDE:
            return w, h
    try:
        three = len(sensor_size) == 3
    except TypeError:
        three = False  # _sensor says what is wrong
    if three:
        p = sensor_size[2]
        try:
            two = not isinstance(p, (bool, np.bool_)) and bool(p == 2)
        except (TypeError, ValueError):
            two = False
        if not two:
            raise ConfigError("sensor_size", f"STC always makes 2 polarity channels; sensor_size has {p!r}")
    return _sensor(sensor_size)


def _whole(name: str, value: object, low: int = 1) -> int:
    """``value`` as an ``int >= low`` (whole floats such as ``4.0`` too); ``ConfigError`` otherwise."""
    try:
        number = int(value)  # type: ignore[call-overload]
        ok = not isinstance(value, (bool, np.bool_)) and bool(number == value) and number >= low
    except (TypeError, ValueError, OverflowError):  # NaN, inf, text, arrays
        ok = False
    if not ok:
        raise ConfigError(name, f"must be an integer >= {low}, got {value!r}")
    return number


@dataclass(frozen=True)
class _Params:
    timesteps: int
    by: Binning
    integration: Integration
    kappa: float
    fine_bins_per_step: int
    spatial_factor: int
    fine: int  # T0: fine bins in all; T0 // timesteps of them per step

    @property
    def r(self) -> int:
        return self.fine // self.timesteps


def _check_params(timesteps: int, by: str, integration: str, kappa: float, fine_bins_per_step: int,
                  spatial_factor: int) -> _Params:
    """Validate the STC parameters (``ConfigError`` naming the first bad one) and return them normalised."""
    timesteps = _whole("timesteps", timesteps)
    if by not in ("time", "count"):
        raise ConfigError("by", f"must be 'time' or 'count', got {by!r}")
    if integration not in ("sum", "exp"):
        raise ConfigError("integration", f"must be 'sum' or 'exp', got {integration!r}")
    try:
        k = float(kappa)
        ok = not isinstance(kappa, (bool, np.bool_)) and 0.0 < k <= 1.0
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ConfigError("kappa", f"must lie in (0, 1], got {kappa!r}")
    r = _whole("fine_bins_per_step", fine_bins_per_step)
    f = _whole("spatial_factor", spatial_factor)
    fine = _fine_bins(timesteps, integration, k, r)
    if fine > MAX_FINE_BINS:
        what = "timesteps" if fine == timesteps else "timesteps * fine_bins_per_step"
        raise ConfigError(what, f"{what} = {fine} fine bins; STC allows at most {MAX_FINE_BINS}")
    # by and integration are one of their literals (checked above)
    return _Params(timesteps, cast(Binning, by), cast(Integration, integration), k, r, f, fine)


@functools.lru_cache(maxsize=256, typed=True)
def _cached_params(*args: object) -> _Params:
    return _check_params(*args)  # type: ignore[arg-type]


def _params(*args: object) -> _Params:
    """:func:`_check_params`, remembered for hashable arguments (``typed``: ``True`` is not ``1``);
    errors are never cached, so a bad value raises every time."""
    try:
        hash(args)
    except TypeError:
        return _check_params(*args)  # type: ignore[arg-type]
    return _cached_params(*args)


def _coordinates(ev: np.ndarray, width: int, height: int,
                 buffers: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``x`` and ``y`` of :data:`EVENT_DTYPE` events as contiguous int32 arrays (written into
    the uint32 ``buffers = (xy, x, y)`` when given), checked to lie on the sensor
    (``ValueError`` otherwise).

    The hot path's version of :func:`~fewstep.events.ops.check_events`: a single strided pass
    reads both fields as one uint32, and as unsigned 16-bit halves a negative coordinate reads
    as >= 32768, so one ``max`` per axis checks both bounds."""
    xy, x, y = buffers if buffers is not None else (np.empty(len(ev), np.uint32) for _ in range(3))
    np.copyto(xy, ev.view(XY_VIEW_DTYPE)["xy"])
    np.bitwise_and(xy, 0xFFFF, out=x)
    np.right_shift(xy, 16, out=y)
    if len(ev) and (int(x.max()) >= width or int(y.max()) >= height):
        for name, limit in (("x", width), ("y", height)):
            col = ev[name]
            if col.min() < 0 or col.max() >= limit:
                raise ValueError(f"event {name} coordinates span [{int(col.min())}, {int(col.max())}], "
                                 f"outside the sensor's [0, {limit - 1}]")
    return x.view(np.int32), y.view(np.int32)


def _channels(ev: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Polarity channel per event as contiguous int8 (into ``out`` when given): 1 for ON, 0 for
    OFF. ``{0, 1}`` is taken as it is; any other encoding maps ``p > 0`` to ON."""
    p = np.empty(len(ev), np.int8) if out is None else out
    np.copyto(p, ev["p"])
    if int(p.view(np.uint8).max(initial=0)) > 1:
        np.greater(p, 0, out=p)
    return p


def _fine_bins(timesteps: int, integration: str, kappa: float, fine_bins_per_step: int) -> int:
    """``T0``: the number of fine bins. The plain sum needs none finer than the steps."""
    r = fine_bins_per_step if integration == "exp" and kappa < 1.0 else 1
    return timesteps * r


def _pool_factor(spatial_factor: int, width: int, height: int) -> int:
    """The pooling factor to compute with: one beyond the sensor's larger side pools the same
    (everything into one pixel), and a smaller one keeps the index arithmetic in 32 bits."""
    return min(spatial_factor, max(width, height))


def _exp_weights(timesteps: int, fine: int, kappa: float) -> np.ndarray:
    """``kappa ** ((n + 1) r - 1 - k)`` for every fine bin ``k`` (float64, length ``T0``)."""
    r = fine // timesteps
    k = np.arange(fine)
    return np.power(float(kappa), (r - 1 - k % r).astype(np.float64))


@overload
def _ceil_div(a: int, b: int) -> int: ...
@overload
def _ceil_div(a: np.ndarray, b: int) -> np.ndarray: ...
def _ceil_div(a: np.ndarray | int, b: int) -> np.ndarray | int:
    return -(-a // b)


# ----------------------------------------------------------------------------------------------
# the fast path

_CHUNK = 1 << 16  # events per chunk


class _Scratch(threading.local):
    """Per-thread work arrays for :func:`stc`, allocated once and reused.

    :func:`stc` walks the stream in chunks of :data:`_CHUNK` events through these buffers, so
    its only fresh allocation is the output. Fresh arrays are not free: the first touch of each
    page faults, and profiling showed those faults costing more than the arithmetic (five times
    more on a 300k-event stream in a VM)."""

    def __init__(self) -> None:
        self.t = np.empty(_CHUNK, np.int64)
        self.ordered = np.empty(_CHUNK, bool)
        self.xy = tuple(np.empty(_CHUNK, np.uint32) for _ in range(3))
        self.p = np.empty(_CHUNK, np.int8)
        self.idx32 = np.empty(_CHUNK, np.int32)  # int32 arithmetic is 2.5x faster; torch takes it
        self.idx64 = np.empty(_CHUNK, np.int64)  # for outputs of 2**31 values or more
        self.weight = np.empty(_CHUNK, np.float64)
        self.ones = torch.ones(_CHUNK, dtype=torch.float32)


_SCRATCH = _Scratch()


def _fine_bin_bounds(ev: np.ndarray, by: str, fine: int) -> list[int] | None:
    """Positions ``[0, b_1, ..., b_{T0-1}, N]`` where each fine bin starts in the stream, or
    ``None`` when the stream is not sorted by time. One chunked pass over ``t``."""
    n, scratch = len(ev), _SCRATCH
    if by == "time":  # bin k starts at the first t with (t - t_first) * T0 >= k * D
        t = ev["t"]
        if t[-1] < t[0]:
            return None  # not sorted (and the starts below would not lie between t[0] and t[-1])
        t_first, span = int(t[0]), int(t[-1]) - int(t[0])
        if span == 0:  # one timestamp (if sorted): every event in bin 0; D = 1 would put the
            starts, inner = None, np.full(fine - 1, n, np.int64)  # starts at t + 1, maybe past int64
        else:  # Python integers: exact, and every start lies in [t_first, t_last]
            starts = np.array([t_first + _ceil_div(k * span, fine) for k in range(1, fine)], np.int64)
            inner = np.zeros(fine - 1, np.int64)
    else:  # rank i is in bin floor(i * T0 / N)
        starts, inner = None, np.array([_ceil_div(k * n, fine) for k in range(1, fine)], np.int64)
    previous = None
    for c0 in range(0, n, _CHUNK):
        t = scratch.t[:min(_CHUNK, n - c0)]
        np.copyto(t, ev["t"][c0:c0 + len(t)])
        if (previous is not None and t[0] < previous) or not np.greater_equal(
                t[1:], t[:-1], out=scratch.ordered[:len(t) - 1]).all():
            return None
        previous = t[-1]
        if starts is not None:
            inner += np.searchsorted(t, starts)  # sorted: positions add up over the chunks
    return [0, *inner.tolist(), n]


def _use_compiled(backend: str) -> bool:
    """Whether :func:`stc` takes the compiled path (``ConfigError`` for an unknown ``backend``)."""
    if backend == "numpy":
        return False
    if backend not in ("auto", "numba"):
        raise ConfigError("backend", f"must be 'auto', 'numba' or 'numpy', got {backend!r}")
    if compression_compiled.available():
        return True
    if backend == "numba":
        raise ImportError("STC backend='numba' needs Numba: pip install numba (or \"fewstep[events]\")")
    return False


def _compiled_stc(ev: np.ndarray, offsets: np.ndarray | None, width: int, height: int, f: int, ho: int, wo: int,
                  prm: _Params, weights: np.ndarray | None) -> np.ndarray | None:
    """The flat output of the compiled pass over one stream (``offsets`` None: ``[T, 2, H', W']``)
    or a packed batch (``[T, B, 2, H', W']``), sorting each stream by time first if one is not
    sorted; or ``None`` when a stream's span is too long for its int64 arithmetic (the NumPy path
    or the torch ops, which bin exactly, take those)."""
    samples = 1 if offsets is None else len(offsets) - 1
    by_time = prm.by == "time"
    for _ in range(2):
        out = np.zeros(prm.timesteps * samples * 2 * ho * wo, np.float32 if weights is None else np.float64)
        if offsets is None:
            status = compression_compiled.stc_into(ev, width, height, f, ho, wo, prm.fine, prm.r, by_time, weights, out)
        else:
            status = compression_compiled.stc_batch_into(ev, offsets, width, height, f, ho, wo, prm.fine, prm.r,
                                                         by_time, weights, out)
        if status == compression_compiled.OK:
            return out
        if status == compression_compiled.SPAN_TOO_LONG:
            return None
        if status == compression_compiled.OUT_OF_SENSOR:
            _coordinates(ev, width, height)  # raises ValueError naming the axis and the range
            raise AssertionError("the compiled STC pass and _coordinates disagree on the sensor bounds")
        # UNSORTED: sort (within each stream), stably, once, and start again
        if offsets is None:
            ev = ev[np.argsort(ev["t"], kind="stable")]
        else:
            ev = ev[np.lexsort((ev["t"], np.repeat(np.arange(samples), np.diff(offsets))))]
    raise AssertionError("the compiled STC pass found stably sorted streams unsorted")


def stc(
    events: np.ndarray,
    sensor_size: Sequence[int],
    timesteps: int,
    *,
    by: Binning = "time",
    integration: Integration = "sum",
    kappa: float = 0.9,
    fine_bins_per_step: int = 10,
    spatial_factor: int = 1,
    backend: Backend = "auto",
) -> np.ndarray:
    r"""Compress an event stream into ``timesteps`` frames of synaptic current, straight from the
    events (no fine frames; see the module docstring). Event :math:`i = (x_i, y_i, t_i, p_i)`
    falls in fine bin :math:`k_i` and adds its weight to one pixel of one step:

    .. math::

        k_i &= \begin{cases} \min(\lfloor (t_i - t_{first})\, T_0 / D \rfloor,\ T_0 - 1),
                            \ D = \max(t_{last} - t_{first}, 1) & \text{by='time'}\\
                            \lfloor \operatorname{rank}(i)\, T_0 / N \rfloor & \text{by='count'}\end{cases}\\
        I[n, c, y', x'] &= \sum_{i:\ \lfloor k_i / r \rfloor = n,\ [p_i > 0] = c,\
                            \lfloor y_i / f \rfloor = y',\ \lfloor x_i / f \rfloor = x'}
                            \kappa^{(n+1) r - 1 - k_i}

    with :math:`T_0 = T r` fine bins, :math:`r` = ``fine_bins_per_step`` for ``'exp'`` with
    :math:`\kappa < 1` and :math:`r = 1` (every weight 1, the event count) otherwise, ``rank``
    the stable time order and :math:`N` the number of events.

    Args:
        events: structured array with fields ``x, y, t, p`` (fewstep's or Tonic's dtypes).
        sensor_size: ``(width, height)`` or Tonic's ``(width, height, 2)``.
        timesteps: ``T``, the number of output steps.
        by: ``'time'`` for equal time windows, ``'count'`` for equal event counts per step.
        integration: ``'sum'`` (count events) or ``'exp'`` (synaptic integration inside each
            window, see the module docstring).
        kappa: synaptic decay per fine bin for ``'exp'``, in ``(0, 1]``; 1 equals ``'sum'``.
        fine_bins_per_step: ``r``, fine bins per step for ``'exp'`` (ignored by ``'sum'``).
        spatial_factor: sum-pooling factor ``f``.
        backend: ``'numba'`` (one compiled pass, :mod:`fewstep.events.compression_compiled`; needs
            Numba), ``'numpy'`` (chunked array operations) or ``'auto'``: Numba when it is
            installed. Both give bit-identical results.

    Returns:
        float32 array ``[T, 2, ceil(H / f), ceil(W / f)]``; channel 0 OFF, channel 1 ON.
    """
    prm = _params(timesteps, by, integration, kappa, fine_bins_per_step, spatial_factor)
    compiled = _use_compiled(backend)
    timesteps, by, fine, r = prm.timesteps, prm.by, prm.fine, prm.r
    width, height = _sensor_wh(sensor_size)
    f = _pool_factor(prm.spatial_factor, width, height)
    ho, wo = _ceil_div(height, f), _ceil_div(width, f)
    step_size = 2 * ho * wo
    out_shape = (timesteps, 2, ho, wo)
    ev = as_events(events)
    n = len(ev)
    if n == 0:
        return np.zeros(out_shape, np.float32)
    weights = _exp_weights(timesteps, fine, prm.kappa) if r > 1 else None
    if compiled:
        out = _compiled_stc(ev, None, width, height, f, ho, wo, prm, weights)
        if out is not None:
            return out.reshape(out_shape).astype(np.float32, copy=False)

    bounds = _fine_bin_bounds(ev, by, fine)
    if bounds is None:  # unsorted: sort once, stably (ties keep their input order)
        ev = ev[np.argsort(ev["t"], kind="stable")]
        bounds = _fine_bin_bounds(ev, by, fine)
    assert bounds is not None  # the events are sorted by time now
    # Counts accumulate exactly in float32 (to 2**24 per pixel); weighted sums in float64.
    out = np.zeros(timesteps * step_size, np.float32 if weights is None else np.float64)
    accumulate = torch.from_numpy(out).index_add_
    scratch = _SCRATCH
    index = scratch.idx32 if len(out) < 2**31 else scratch.idx64
    xy_buf, x_buf, y_buf = scratch.xy
    for c0 in range(0, n, _CHUNK):
        c1 = min(c0 + _CHUNK, n)
        chunk, m = ev[c0:c1], c1 - c0
        x, y = _coordinates(chunk, width, height, (xy_buf[:m], x_buf[:m], y_buf[:m]))
        if f > 1:
            np.floor_divide(x, f, out=x)
            np.floor_divide(y, f, out=y)
        idx = index[:m]  # (step * 2 + channel) * H' * W' + y' * W' + x'
        np.multiply(_channels(chunk, scratch.p[:m]), ho, out=idx, dtype=idx.dtype)
        np.add(idx, y, out=idx)
        np.multiply(idx, wo, out=idx)
        np.add(idx, x, out=idx)
        # The fine bins overlapping this chunk, as runs [lo, hi) of chunk positions.
        for k in range(bisect.bisect_right(bounds, c0) - 1, bisect.bisect_left(bounds, c1)):
            lo, hi = max(bounds[k], c0) - c0, min(bounds[k + 1], c1) - c0
            if k >= r:
                idx[lo:hi] += (k // r) * step_size
            if weights is not None:
                scratch.weight[lo:hi] = weights[k]
        values = scratch.ones[:m] if weights is None else torch.from_numpy(scratch.weight[:m])
        accumulate(0, torch.from_numpy(idx), values)
    return out.reshape(out_shape).astype(np.float32, copy=False)


def reference_stc(
    events: np.ndarray,
    sensor_size: Sequence[int],
    timesteps: int,
    *,
    by: Binning = "time",
    integration: Integration = "sum",
    kappa: float = 0.9,
    fine_bins_per_step: int = 10,
    spatial_factor: int = 1,
) -> np.ndarray:
    r"""STC as ``methods.md`` writes it: fine frames ``F[k]``, pooled, then compressed.

    .. math::

        k_i &= \begin{cases} \min(\lfloor (t_i - t_{first})\, T_0 / D \rfloor,\ T_0 - 1),
                            \ D = \max(t_{last} - t_{first}, 1) & \text{by='time'}\\
                            \lfloor \operatorname{rank}(i)\, T_0 / N \rfloor & \text{by='count'}\end{cases}\\
        F[k, c, y, x] &= \#\{i : k_i = k,\ [p_i > 0] = c,\ y_i = y,\ x_i = x\}\\
        \bar F[k, c, y', x'] &= \sum_{a=0}^{f-1} \sum_{b=0}^{f-1} F[k, c, f y' + a, f x' + b]\\
        I[n] &= \sum_{k=n r}^{(n+1) r - 1} \kappa^{(n+1) r - 1 - k}\, \bar F[k]

    with :math:`T_0 = T r` fine bins, :math:`r` = ``fine_bins_per_step`` for ``'exp'`` and 1 for
    ``'sum'`` (where :math:`\kappa` is taken as 1), and :math:`F` zero beyond the sensor.

    Slow and memory-hungry (``[T0, 2, H, W]`` in memory) on purpose: it is the specification
    that :func:`stc` and :func:`stc_batch` are tested against. Same arguments and result."""
    prm = _check_params(timesteps, by, integration, kappa, fine_bins_per_step, spatial_factor)
    timesteps, kappa, spatial_factor = prm.timesteps, prm.kappa, prm.spatial_factor
    width, height = _sensor_wh(sensor_size)
    ev = as_events(events)
    _coordinates(ev, width, height)
    r = prm.fine_bins_per_step if integration == "exp" else 1
    fine = timesteps * r
    if fine > MAX_FINE_BINS:  # (kappa = 1 needs no fine bins in the fast paths, but this one makes them)
        raise ConfigError("timesteps * fine_bins_per_step", f"{fine} fine bins; STC allows at most {MAX_FINE_BINS}")
    n = len(ev)

    # Fine bin of every event, by the closed-form rule of the module docstring.
    t = ev["t"].astype(np.int64)
    if by == "time":  # in Python integers: (t - t0) * T0 can exceed 64 bits
        t0 = int(t.min()) if n else 0
        span = max(int(t.max()) - t0, 1) if n else 1
        k = np.array([min((v - t0) * fine // span, fine - 1) for v in t.tolist()], np.int64)
    else:
        rank = np.empty(n, np.int64)
        rank[np.argsort(t, kind="stable")] = np.arange(n)
        k = rank * fine // max(n, 1)
    channel = (ev["p"] > 0).astype(np.int64)

    F = np.zeros((fine, 2, height, width), np.float64)
    np.add.at(F, (k, channel, ev["y"].astype(np.int64), ev["x"].astype(np.int64)), 1.0)

    f = _pool_factor(spatial_factor, width, height)
    ho, wo = _ceil_div(height, f), _ceil_div(width, f)
    padded = np.zeros((fine, 2, ho * f, wo * f))
    padded[:, :, :height, :width] = F
    F = padded.reshape(fine, 2, ho, f, wo, f).sum(axis=(3, 5))

    decay = kappa if integration == "exp" else 1.0
    current = np.zeros((timesteps, 2, ho, wo))
    for step in range(timesteps):
        for kk in range(step * r, (step + 1) * r):
            current[step] += decay ** ((step + 1) * r - 1 - kk) * F[kk]
    return current.astype(np.float32)


@dataclass(frozen=True)
class STC:
    r"""Tonic-style transform: ``STC(sensor_size, timesteps)(events) -> float32 [T, 2, H', W']``,

    .. math::

        I[n] = \sum_{k=n r}^{(n+1) r - 1} \kappa^{(n+1) r - 1 - k}\, F[k],
        \qquad n = 0, \dots, T - 1,

    computed by :func:`stc` (which writes out the fine bins :math:`F[k]` and the pooling).

    A frozen dataclass whose ``__call__`` is :func:`stc`, so it composes with
    ``tonic.transforms.Compose``, serves as a dataset's ``transform`` (Tonic's datasets and
    fewstep's :mod:`fewstep.data.event_datasets` call ``transform(events)``) and accepts Tonic's
    structured arrays. The sensor size is bound when it is made: ``(W, H)`` or Tonic's
    ``(W, H, 2)``, e.g. ``STC(ds.sensor_size, 4)``. Callers that pass the sensor size along with
    the events, ``transform(events, sensor_size)`` (the convention of fewstep's event datasets
    before they followed Tonic), still work: that size must name the same ``W x H``."""

    sensor_size: tuple[int, ...]
    timesteps: int
    by: Binning = "time"
    integration: Integration = "sum"
    kappa: float = 0.9
    fine_bins_per_step: int = 10
    spatial_factor: int = 1
    backend: Backend = "auto"

    def __post_init__(self) -> None:
        _sensor_wh(self.sensor_size)
        _check_params(self.timesteps, self.by, self.integration, self.kappa, self.fine_bins_per_step,
                      self.spatial_factor)
        _use_compiled(self.backend)

    def __call__(self, events: np.ndarray, sensor_size: Sequence[int] | None = None) -> np.ndarray:
        """STC of one stream. ``sensor_size``, if given (the older two-argument convention), must
        agree with the bound one (``(W, H)`` or ``(W, H, 2)``); a different size is a
        :class:`~fewstep.errors.ConfigError` rather than frames of the wrong shape."""
        if sensor_size is not None and _sensor_wh(sensor_size) != _sensor_wh(self.sensor_size):
            raise ConfigError("sensor_size", f"the events come with sensor size {tuple(sensor_size)}, but this STC "
                              f"transform was made for {tuple(self.sensor_size)}")
        return stc(events, self.sensor_size, self.timesteps, by=self.by, integration=self.integration,
                   kappa=self.kappa, fine_bins_per_step=self.fine_bins_per_step,
                   spatial_factor=self.spatial_factor, backend=self.backend)


# ----------------------------------------------------------------------------------------------
# batches: packed storage and the torch path


def pack_events(streams: Sequence[np.ndarray]) -> PackedEvents:
    """Concatenate streams into one :data:`EVENT_DTYPE` array plus ``offsets`` (int64,
    length ``B + 1``, ``offsets[0] == 0``): stream ``b`` is ``events[offsets[b]:offsets[b + 1]]``."""
    arrays = [as_events(s) for s in streams]
    offsets = np.zeros(len(arrays) + 1, np.int64)
    np.cumsum([len(a) for a in arrays], out=offsets[1:])
    return concat_events(arrays), offsets


def concat_events(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Concatenate :data:`EVENT_DTYPE` arrays. Joined as raw bytes: a plain memory copy, many
    times faster than NumPy's field-by-field copy of structured arrays."""
    raw = [np.ascontiguousarray(a).view(np.uint8) for a in arrays]
    return np.concatenate(raw).view(EVENT_DTYPE) if raw else np.empty(0, EVENT_DTYPE)


def unpack_events(events: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    """The inverse of :func:`pack_events`: a list of views into ``events``."""
    return [events[a:b] for a, b in zip(offsets[:-1], offsets[1:])]


def _as_packed(batch: EventBatch) -> PackedEvents:
    """A packed batch is a pair ``(events, offsets)`` whose second item is a plain integer array."""
    if (isinstance(batch, tuple) and len(batch) == 2 and isinstance(batch[1], np.ndarray)
            and batch[1].dtype.names is None):
        events, offsets = as_events(batch[0]), np.asarray(batch[1], np.int64)
        if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != len(events) \
                or (np.diff(offsets) < 0).any():
            raise ValueError("offsets must rise from 0 to len(events)")
        return events, offsets
    return pack_events(batch)


def _longest_span(t: np.ndarray, offsets: np.ndarray) -> int:
    """``max(t_last - t_first)`` over the non-empty samples, as a Python integer (exact: a span
    of int64 timestamps may need 64 bits)."""
    starts = offsets[:-1][np.diff(offsets) > 0]
    if len(starts) == 0:
        return 0
    lo, hi = np.minimum.reduceat(t, starts), np.maximum.reduceat(t, starts)
    # hi - lo lies in [0, 2**64): exact in uint64 arithmetic, which wraps where int64 would overflow
    return int((hi.view(np.uint64) - lo.view(np.uint64)).max())


def _exact_time_bins(t: np.ndarray, offsets: np.ndarray, fine: int) -> torch.Tensor:
    """Fine bin ``min((t - t_first) * T0 // D, T0 - 1)`` of every event in Python integers, for
    streams whose span is too long for the float64 path. Slow (per event), and only ever needed
    for timestamps spanning centuries."""
    k = np.empty(len(t), np.int64)
    for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist()):
        if a == b:
            continue
        seg = t[a:b].tolist()
        t0 = min(seg)
        span = max(max(seg) - t0, 1)
        k[a:b] = [min((v - t0) * fine // span, fine - 1) for v in seg]
    return torch.from_numpy(k)


def stc_batch(
    batch: EventBatch,
    sensor_size: Sequence[int],
    timesteps: int,
    *,
    by: Binning = "time",
    integration: Integration = "sum",
    kappa: float = 0.9,
    fine_bins_per_step: int = 10,
    spatial_factor: int = 1,
    device: torch.device | str | None = None,
    backend: Backend = "auto",
) -> torch.Tensor:
    r"""STC of a whole batch with torch ops on ``device``: float32 ``[T, B, 2, H', W']``,

    .. math::

        I[n, b] = \operatorname{stc}(\text{events}_b)[n],

    each sample's fine bins :math:`k_i` taken from its own :math:`t_{first}, t_{last}` (or
    ranks and :math:`N`), as :func:`stc` writes out.

    ``batch`` is a list of event arrays or a packed pair ``(events, offsets)`` (see
    :func:`pack_events`). Equal to stacking :func:`stc` per sample (exactly for ``'sum'``, to
    float rounding for ``'exp'``). Per event it computes the sample's ``t_first``/``t_last`` (or
    its rank, for ``'count'``), the fine bin, the step and weight, and one flat index into the
    whole output; a single ``index_add_`` accumulates the batch, so on a GPU the work is a
    handful of kernels however large the batch.

    On the CPU, ``backend`` chooses as for :func:`stc`: with Numba (``'auto'`` or ``'numba'``)
    one compiled pass walks the streams one after another, bit-identical to :func:`stc` for
    ``'exp'`` too; ``'numpy'`` forces the torch ops. Other devices always use the torch ops
    (``backend='numba'`` there is a ``ConfigError``)."""
    prm = _params(timesteps, by, integration, kappa, fine_bins_per_step, spatial_factor)
    timesteps, fine = prm.timesteps, prm.fine
    width, height = _sensor_wh(sensor_size)
    device = torch.device(device) if device is not None else torch.device("cpu")
    if backend == "numba" and device.type != "cpu":
        raise ConfigError("backend", f"'numba' runs on the CPU only; device is {device}")
    compiled = _use_compiled(backend) and device.type == "cpu"
    events, offsets = _as_packed(batch)
    B = len(offsets) - 1
    f = _pool_factor(prm.spatial_factor, width, height)
    ho, wo = _ceil_div(height, f), _ceil_div(width, f)
    exp = prm.r > 1
    dtype = torch.float64 if exp else torch.float32
    out = torch.zeros(timesteps * B * 2 * ho * wo, dtype=dtype, device=device)
    n = len(events)
    if n == 0:
        return out.float().view(timesteps, B, 2, ho, wo)
    if compiled:
        weights = _exp_weights(timesteps, fine, prm.kappa) if prm.r > 1 else None
        compiled_flat = _compiled_stc(events, offsets, width, height, f, ho, wo, prm, weights)
        if compiled_flat is not None:
            return torch.from_numpy(compiled_flat.astype(np.float32, copy=False)).view(timesteps, B, 2, ho, wo)
    xs, ys = _coordinates(events, width, height)

    def to_dev(a: np.ndarray) -> torch.Tensor:  # narrow dtypes over the bus, widen on the device
        return torch.from_numpy(a).to(device).long()

    # Fresh contiguous copies (torch.from_numpy rejects the fields' 13-byte strides).
    x, y = to_dev(xs.astype(np.int16)), to_dev(ys.astype(np.int16))
    t_host = events["t"].copy()
    t, on = to_dev(t_host), to_dev(_channels(events))
    counts = torch.from_numpy(np.diff(offsets)).to(device)
    sample = torch.repeat_interleave(torch.arange(B, device=device), counts, output_size=n)

    # Fine bin k = floor(a / b) with a = (t - t_first) * T0 or rank * T0. Float64 division is
    # exact for this (a < 2**53, b * T0 < 2**52) and, unlike int64 division, vectorised. Spans
    # too long for that (over 2**53 / T0 us, 285 years / T0) take an exact integer path.
    if by == "time":
        if _longest_span(t_host, offsets) * fine >= 2**53:
            k = _exact_time_bins(t_host, offsets, fine).to(device)
        else:
            t0 = torch.full((B,), torch.iinfo(torch.int64).max, device=device).scatter_reduce_(0, sample, t, "amin")
            t1 = torch.full((B,), torch.iinfo(torch.int64).min, device=device).scatter_reduce_(0, sample, t, "amax")
            numerator, denominator = t.sub_(t0[sample]), (t1 - t0).clamp_(min=1)
            k = numerator.mul_(fine).double().div_(denominator.double()[sample]).floor_().long()
    else:
        order = torch.argsort(t, stable=True)
        order = order[torch.argsort(sample[order], stable=True)]  # by sample, then by time
        numerator = torch.empty_like(t)
        numerator[order] = torch.arange(n, device=device) - torch.from_numpy(offsets[:-1]).to(device)[sample[order]]
        k = numerator.mul_(fine).double().div_(counts.double()[sample]).floor_().long()  # rank * T0 < 2**53
    k = k.clamp_(min=0, max=fine - 1)

    # Flat index ((step * B + sample) * 2 + channel) * H' * W' + y' * W' + x'.
    flat = torch.div(k, fine // timesteps, rounding_mode="floor") if fine > timesteps else k.clone()
    flat.mul_(B).add_(sample).mul_(2).add_(on).mul_(ho).add_(y.div_(f, rounding_mode="floor") if f > 1 else y)
    flat.mul_(wo).add_(x.div_(f, rounding_mode="floor") if f > 1 else x)
    if exp:
        values = torch.from_numpy(_exp_weights(timesteps, fine, prm.kappa)).to(device)[k]
    else:
        values = torch.ones(n, dtype=dtype, device=device)
    out.index_add_(0, flat, values)
    return out.float().view(timesteps, B, 2, ho, wo)
