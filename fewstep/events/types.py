"""Events as NumPy structured arrays with named fields, as Tonic keeps them.

One event is ``(x, y, t, p)``: pixel column, pixel row, timestamp in microseconds and
polarity (1 = ON, 0 = OFF). A stream is a 1-D structured array of :data:`EVENT_DTYPE`
sorted by ``t``, together with its sensor size ``(width, height)``.
"""

from __future__ import annotations

import numpy as np

EVENT_DTYPE = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "i1")])


def make_events(x, y, t, p) -> np.ndarray:
    """Build an event array from four equal-length sequences."""
    x, y, t, p = (np.asarray(a) for a in (x, y, t, p))
    if not (len(x) == len(y) == len(t) == len(p)):
        raise ValueError(f"x, y, t, p lengths differ: {len(x)}, {len(y)}, {len(t)}, {len(p)}")
    ev = np.empty(len(x), dtype=EVENT_DTYPE)
    ev["x"], ev["y"], ev["t"], ev["p"] = x, y, t, p
    return ev


def as_events(events: np.ndarray) -> np.ndarray:
    """Accept fewstep or Tonic-style structured arrays (fields x, y, t, p of any int/bool type)
    and return a :data:`EVENT_DTYPE` array."""
    names = events.dtype.names or ()
    missing = [f for f in ("x", "y", "t", "p") if f not in names]
    if missing:
        raise ValueError(f"event array lacks fields {missing}; it has {list(names)}")
    if events.dtype == EVENT_DTYPE:
        return events
    return make_events(events["x"], events["y"], events["t"], events["p"].astype(np.int8))
