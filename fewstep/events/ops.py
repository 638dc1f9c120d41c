"""Helpers on event arrays: crop, downsample, denoise, slice by time, re-time, sort.

Pure, vectorised NumPy. Every function takes a structured event array (fewstep's
:data:`~fewstep.events.types.EVENT_DTYPE` or a Tonic-style one with fields x, y, t, p) and
returns new arrays; the input is never modified. Functions that change the geometry return
``(events, new_sensor_size)``. Events with coordinates outside the given sensor size are a
caller bug and raise :class:`ValueError` rather than being silently clipped.

Each function that maps a stream to a stream also has a transform form, Tonic's pattern: a
small frozen dataclass that holds the parameters and whose ``__call__(events)`` calls the
function (:class:`SortByTime`, :class:`NormaliseTime`, :class:`TimeWindow`, :class:`Crop`,
:class:`Downsample`, :class:`Denoise`). They compose with ``tonic.transforms.Compose`` and serve
as a dataset's ``transform``. A transform that changes the geometry returns the events only; its
``out_size`` is the new ``(width, height)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .types import EVENT_DTYPE, as_events

SensorSize = tuple[int, int]


#: The largest sensor side: fewstep's coordinates are int16, so 0..32767.
MAX_SENSOR_SIDE = 2**15


def _sensor(sensor_size: Sequence[int]) -> SensorSize:
    """Accept ``(W, H)`` or Tonic's ``(W, H, P)``; check both are integers in 1..2**15."""
    try:
        n = len(sensor_size)
    except TypeError:
        raise ValueError(f"sensor_size must be (width, height), got {sensor_size!r}") from None
    if n not in (2, 3):
        raise ValueError(f"sensor_size must be (width, height), got {sensor_size!r}")
    try:
        w, h = int(sensor_size[0]), int(sensor_size[1])
        whole = bool(w == sensor_size[0]) and bool(h == sensor_size[1])
    except (TypeError, ValueError, OverflowError):  # NaN, inf, text, arrays
        whole = False
    if isinstance(sensor_size[0], (bool, np.bool_)) or isinstance(sensor_size[1], (bool, np.bool_)):
        whole = False
    if not whole or not (1 <= w <= MAX_SENSOR_SIDE and 1 <= h <= MAX_SENSOR_SIDE):
        raise ValueError(f"sensor_size must be integers in 1..{MAX_SENSOR_SIDE}, got {sensor_size!r}")
    return w, h


def check_events(events: np.ndarray, sensor_size: Sequence[int]) -> np.ndarray:
    """Return ``events`` as :data:`EVENT_DTYPE`, raising ValueError when any coordinate lies
    outside ``sensor_size`` (naming how many and the first offending index)."""
    ev = as_events(events)
    w, h = _sensor(sensor_size)
    x, y = ev["x"], ev["y"]
    bad = (x < 0) | (y < 0) | (x >= w) | (y >= h)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"{int(bad.sum())} event(s) outside the {w}x{h} sensor; first at index {i}: "
            f"x={int(x[i])}, y={int(y[i])}"
        )
    return ev


def sort_events(events: np.ndarray) -> np.ndarray:
    """Events ordered by timestamp (stable: simultaneous events keep their file order)."""
    ev = as_events(events)
    return ev[np.argsort(ev["t"], kind="stable")]


def normalise_time(events: np.ndarray) -> np.ndarray:
    """A copy with ``t`` shifted so that the earliest event is at 0 (AEDAT 4 files carry
    absolute Unix-epoch microseconds)."""
    ev = as_events(events).copy()
    if len(ev):
        ev["t"] -= ev["t"].min()
    return ev


def time_window(events: np.ndarray, start: int, end: int) -> np.ndarray:
    """The events with ``start <= t < end`` (a copy), in their original order."""
    if end < start:
        raise ValueError(f"time window end {end} is before its start {start}")
    ev = as_events(events)
    return ev[(ev["t"] >= start) & (ev["t"] < end)]


def crop_events(
    events: np.ndarray, sensor_size: Sequence[int], box: tuple[int, int, int, int]
) -> tuple[np.ndarray, SensorSize]:
    """Keep the events inside ``box = (x0, y0, width, height)`` and shift them so the box's
    corner becomes (0, 0). Returns ``(events, (width, height))``.

    The box must lie inside the sensor.
    """
    ev = check_events(events, sensor_size)
    w, h = _sensor(sensor_size)
    x0, y0, bw, bh = (int(v) for v in box)
    if bw <= 0 or bh <= 0 or x0 < 0 or y0 < 0 or x0 + bw > w or y0 + bh > h:
        raise ValueError(f"crop box {box} (x0, y0, width, height) does not lie inside the {w}x{h} sensor")
    keep = (ev["x"] >= x0) & (ev["x"] < x0 + bw) & (ev["y"] >= y0) & (ev["y"] < y0 + bh)
    out = ev[keep]
    out["x"] -= x0
    out["y"] -= y0
    return out, (bw, bh)


def downsample_events(events: np.ndarray, sensor_size: Sequence[int], factor: int) -> tuple[np.ndarray, SensorSize]:
    """Spatially downsample by an integer ``factor``: ``x // factor``, ``y // factor``.

    All events are kept (several may now share a pixel and time). The new sensor is
    ``ceil(W / factor) x ceil(H / factor)`` so a partial last block still has a pixel.
    """
    if int(factor) != factor or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor!r}")
    factor = int(factor)
    ev = check_events(events, sensor_size).copy()
    w, h = _sensor(sensor_size)
    ev["x"] //= factor
    ev["y"] //= factor
    return ev, (-(-w // factor), -(-h // factor))


def denoise_events(events: np.ndarray, sensor_size: Sequence[int], filter_time: int) -> np.ndarray:
    """Drop events that no neighbouring pixel supports: keep an event at ``(x, y, t)`` only if
    one of the 8 other pixels of its 3x3 neighbourhood had an event at ``t'`` with
    ``t - filter_time < t' <= t``.

    This is Tonic's ``Denoise`` filter (causal: only earlier events count; the event's own
    pixel does not, so a lone hot pixel is removed), widened from Tonic's 4-neighbourhood to
    the full 3x3 one. Vectorised: events are sorted once by (pixel, time), and for each of the
    8 neighbour offsets a binary search finds the latest neighbour event at or before ``t``.
    Returns the kept events in their original order.
    """
    if filter_time <= 0:
        raise ValueError(f"filter_time must be positive, got {filter_time!r}")
    ev = check_events(events, sensor_size)
    w, h = _sensor(sensor_size)
    n = len(ev)
    if n == 0:
        return ev.copy()
    x = ev["x"].astype(np.int64)
    y = ev["y"].astype(np.int64)
    t = ev["t"] - ev["t"].min()
    span = int(t.max()) + 1
    if (w * h + 1) * span >= 1 << 62:
        raise ValueError("recording too long for denoise_events' packed (pixel, time) keys; slice it first")
    pixel = y * w + x
    keys = np.sort(pixel * span + t)
    keep = np.zeros(n, dtype=bool)
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            if dx == 0 and dy == 0:
                continue
            nx, ny = x + dx, y + dy
            inside = (nx >= 0) & (nx < w) & (ny >= 0) & (ny < h) & ~keep
            if not inside.any():
                continue
            qpix = (ny * w + nx)[inside]
            qt = t[inside]
            # latest event at the neighbour pixel with time <= t
            j = np.searchsorted(keys, qpix * span + qt, side="right") - 1
            jc = np.maximum(j, 0)
            found = (j >= 0) & (keys[jc] // span == qpix) & (qt - keys[jc] % span < filter_time)
            keep[np.flatnonzero(inside)[found]] = True
    return ev[keep]


def slice_by_time(
    events: np.ndarray, duration: int | None = None, n_windows: int | None = None, start: int | None = None
) -> list[np.ndarray]:
    """Split a time-sorted stream into consecutive windows (each a copy).

    Give exactly one of:

    * ``duration``: windows ``[start + k*duration, start + (k+1)*duration)`` for k = 0, 1, ...
      up to the one holding the last event (``start`` defaults to the first timestamp);
    * ``n_windows``: ``n_windows`` windows covering ``[start, t_last]`` whose integer lengths
      differ by at most 1 (the longer ones first); every event falls in exactly one window.

    Empty windows are returned as empty arrays. Events before ``start`` are dropped.

    Raises:
        ValueError: both or neither of ``duration`` and ``n_windows``, non-positive values, or
            events not sorted by time.
    """
    if (duration is None) == (n_windows is None):
        raise ValueError("give exactly one of duration and n_windows")
    ev = as_events(events)
    t = ev["t"]
    if len(t) > 1 and np.any(t[1:] < t[:-1]):
        raise ValueError("events are not sorted by time; call sort_events first")
    if duration is not None and duration <= 0:
        raise ValueError(f"duration must be positive, got {duration!r}")
    if n_windows is not None and (int(n_windows) != n_windows or n_windows <= 0):
        raise ValueError(f"n_windows must be a positive integer, got {n_windows!r}")
    if len(ev) == 0:
        if duration is not None:
            return []
        assert n_windows is not None  # exactly one of the two is given (checked above)
        return [ev.copy() for _ in range(int(n_windows))]
    t0 = int(t[0]) if start is None else int(start)
    t_last = int(t[-1])
    if duration is not None:
        count = max(0, (t_last - t0) // int(duration) + 1)
        edges = t0 + int(duration) * np.arange(count + 1, dtype=np.int64)
    else:
        assert n_windows is not None  # exactly one of the two is given (checked above)
        count = int(n_windows)
        span = max(t_last - t0 + 1, 0)
        edges = t0 - (-(span * np.arange(count + 1, dtype=np.int64)) // count)  # ceil: early windows first
    idx = np.searchsorted(t, edges, side="left")
    return [ev[a:b].copy() for a, b in zip(idx[:-1].tolist(), idx[1:].tolist())]


# ----------------------------------------------------------------------------------------------
# the transform forms: parameters bound, ``transform(events) -> events``


@dataclass(frozen=True)
class SortByTime:
    """:func:`sort_events` as a transform: ``SortByTime()(events)``."""

    def __call__(self, events: np.ndarray) -> np.ndarray:
        return sort_events(events)


@dataclass(frozen=True)
class NormaliseTime:
    """:func:`normalise_time` as a transform: ``NormaliseTime()(events)``."""

    def __call__(self, events: np.ndarray) -> np.ndarray:
        return normalise_time(events)


@dataclass(frozen=True)
class TimeWindow:
    """:func:`time_window` as a transform: ``TimeWindow(start, end)(events)``."""

    start: int
    end: int

    def __call__(self, events: np.ndarray) -> np.ndarray:
        return time_window(events, self.start, self.end)


@dataclass(frozen=True)
class Crop:
    """:func:`crop_events` as a transform: ``Crop(sensor_size, box)(events)`` returns the
    events; the cropped sensor's ``(width, height)`` is :attr:`out_size`."""

    sensor_size: tuple[int, ...]
    box: tuple[int, int, int, int]

    def __call__(self, events: np.ndarray) -> np.ndarray:
        return crop_events(events, self.sensor_size, self.box)[0]

    @property
    def out_size(self) -> SensorSize:
        return int(self.box[2]), int(self.box[3])


@dataclass(frozen=True)
class Downsample:
    """:func:`downsample_events` as a transform: ``Downsample(sensor_size, factor)(events)``
    returns the events; the smaller sensor's ``(width, height)`` is :attr:`out_size`."""

    sensor_size: tuple[int, ...]
    factor: int

    def __call__(self, events: np.ndarray) -> np.ndarray:
        return downsample_events(events, self.sensor_size, self.factor)[0]

    @property
    def out_size(self) -> SensorSize:
        w, h = _sensor(self.sensor_size)
        return -(-w // int(self.factor)), -(-h // int(self.factor))


@dataclass(frozen=True)
class Denoise:
    """:func:`denoise_events` as a transform: ``Denoise(sensor_size, filter_time)(events)``."""

    sensor_size: tuple[int, ...]
    filter_time: int

    def __call__(self, events: np.ndarray) -> np.ndarray:
        return denoise_events(events, self.sensor_size, self.filter_time)


__all__ = [
    "EVENT_DTYPE",
    "Crop",
    "Denoise",
    "Downsample",
    "NormaliseTime",
    "SortByTime",
    "TimeWindow",
    "check_events",
    "crop_events",
    "denoise_events",
    "downsample_events",
    "normalise_time",
    "slice_by_time",
    "sort_events",
    "time_window",
]
