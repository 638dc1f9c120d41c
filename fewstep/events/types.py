"""Events as NumPy structured arrays with named fields, as Tonic keeps them.

One event is ``(x, y, t, p)``: pixel column, pixel row, timestamp in microseconds and
polarity (1 = ON, 0 = OFF). A stream is a 1-D structured array of :data:`EVENT_DTYPE`
sorted by ``t``, together with its sensor size ``(width, height)``.
"""

from __future__ import annotations

import numpy as np

EVENT_DTYPE = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "i1")])

#: A view of :data:`EVENT_DTYPE` records as one uint32 ``xy`` per event: ``x`` and ``y`` are
#: adjacent little-endian int16 fields, so one read fetches both (``y`` in the high half; a
#: negative coordinate reads as 32768 or more). STC's hot paths use it.
_EVENT_FIELDS = EVENT_DTYPE.fields
assert _EVENT_FIELDS is not None  # a structured dtype has fields (narrows the Optional for mypy)
XY_VIEW_DTYPE = np.dtype({"names": ["xy"], "formats": ["<u4"], "offsets": [_EVENT_FIELDS["x"][1]],
                          "itemsize": EVENT_DTYPE.itemsize})
assert _EVENT_FIELDS["y"][1] == _EVENT_FIELDS["x"][1] + 2


def make_events(x, y, t, p) -> np.ndarray:
    """Build an event array from four equal-length sequences."""
    x, y, t, p = (np.asarray(a) for a in (x, y, t, p))
    if not (len(x) == len(y) == len(t) == len(p)):
        raise ValueError(f"x, y, t, p lengths differ: {len(x)}, {len(y)}, {len(t)}, {len(p)}")
    ev = np.empty(len(x), dtype=EVENT_DTYPE)
    ev["x"], ev["y"], ev["t"], ev["p"] = x, y, t, p
    return ev


_INT16 = np.iinfo(np.int16)
_INT64 = np.iinfo(np.int64)


def _numeric_field(events: np.ndarray, name: str, expected: str) -> np.ndarray:
    """Field ``name``, refused (``ValueError`` naming the ``expected`` type) unless it holds bools,
    integers or floats."""
    col = events[name]
    if col.dtype.kind not in "biuf":
        raise ValueError(f"event field {name!r} has type {col.dtype}; expected {expected}")
    return col


def _coordinate_field(events: np.ndarray, name: str) -> np.ndarray:
    """Field ``x`` or ``y`` as int16, refusing values that int16 cannot hold (instead of wrapping)."""
    col = _numeric_field(events, name, "integers")
    kind = col.dtype.kind
    if len(col) == 0 or col.dtype in (np.int16, np.int8, np.uint8, np.bool_):
        return col.astype(np.int16)
    if kind == "f" and (not np.isfinite(col).all() or (col != np.floor(col)).any()):
        raise ValueError(f"event field {name!r} holds values that are not whole numbers (NaN, inf or fractions)")
    lo, hi = col.min(), col.max()
    if lo < _INT16.min or hi > _INT16.max:
        raise ValueError(f"event {name} coordinates span [{lo}, {hi}], beyond the 16-bit range "
                         f"[{_INT16.min}, {_INT16.max}] of fewstep's event arrays")
    return col.astype(np.int16)


def _time_field(events: np.ndarray) -> np.ndarray:
    """Field ``t`` as int64, refusing NaN/inf and values that int64 cannot hold (instead of wrapping)."""
    t = _numeric_field(events, "t", "integer (or float) microseconds")
    kind = t.dtype.kind
    if len(t) == 0 or t.dtype == np.int64 or (kind in "bi" and t.dtype.itemsize <= 8) or (
            kind == "u" and t.dtype.itemsize < 8):
        return t.astype(np.int64)
    if kind == "f":
        if not np.isfinite(t).all():
            raise ValueError("event timestamps include NaN or inf")
        # float(2**63) is the first float beyond int64; -2**63 itself is exact
        if t.min() < -(2.0**63) or t.max() >= 2.0**63:
            raise ValueError(f"event timestamps span [{t.min()}, {t.max()}] us, beyond the 64-bit integer range")
    elif t.max() > _INT64.max:  # uint64
        raise ValueError(f"event timestamps reach {t.max()} us, beyond the 64-bit integer range")
    return t.astype(np.int64)


def _polarity_field(events: np.ndarray) -> np.ndarray:
    """Field ``p`` as int8: bools and int8-sized integers as they are, anything else as ``p > 0``."""
    p = _numeric_field(events, "p", "integers or bools")
    kind = p.dtype.kind
    if kind == "b" or len(p) == 0 or (kind in "iu" and p.min() >= -128 and p.max() <= 127):
        return p.astype(np.int8)
    return (p > 0).astype(np.int8)  # keeps the ON/OFF meaning where a cast would wrap (or truncate 0.5 to 0)


def as_events(events: np.ndarray) -> np.ndarray:
    """Accept fewstep or Tonic-style structured arrays (fields x, y, t, p of any int/bool type)
    and return a :data:`EVENT_DTYPE` array.

    The input must be one-dimensional. Coordinates must fit in 16 bits and timestamps in 64 bits
    (float timestamps must be finite); a value that the conversion would wrap or make up raises
    ``ValueError`` instead. Polarities that are not int8-sized integers become ``p > 0``."""
    if isinstance(events, np.ndarray) and events.dtype is EVENT_DTYPE and events.ndim == 1:
        return events  # the common case, decided in a fraction of a microsecond
    if not isinstance(events, np.ndarray):
        raise TypeError(f"events must be a NumPy structured array, got {type(events).__name__}")
    names = events.dtype.names or ()
    missing = [f for f in ("x", "y", "t", "p") if f not in names]
    if missing:
        raise ValueError(f"event array lacks fields {missing}; it has {list(names)}")
    if events.ndim != 1:
        raise ValueError(f"an event array must be one-dimensional, got shape {events.shape}")
    fields = events.dtype.fields
    assert fields is not None  # it has the names checked above
    shaped = [f for f in ("x", "y", "t", "p") if fields[f][0].shape != ()]
    if shaped:
        raise ValueError(f"event fields {shaped} hold sub-arrays; each must be one number per event")
    if events.dtype == EVENT_DTYPE:
        return events
    ev = np.empty(len(events), dtype=EVENT_DTYPE)
    ev["x"], ev["y"] = _coordinate_field(events, "x"), _coordinate_field(events, "y")
    ev["t"], ev["p"] = _time_field(events), _polarity_field(events)
    return ev
