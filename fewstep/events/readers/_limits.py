"""What a file format can hold: the writers' shared check of coordinates and timestamps."""

from __future__ import annotations

import numpy as np

from ..types import as_events


def fields_to_write(events: np.ndarray, max_xy: int, xy_message: str, max_t: int | None,
                    t_message: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(ev, x, y, t)``: ``events`` as :data:`~fewstep.events.types.EVENT_DTYPE`, ``x`` and ``y``
    as int64 and ``t``, checked to fit a file format: coordinates in ``0..max_xy`` (else
    ``ValueError(xy_message)``) and timestamps in ``0..max_t`` (``max_t=None``: no upper
    bound; else ``ValueError(t_message)``)."""
    ev = as_events(events)
    x, y, t = ev["x"].astype(np.int64), ev["y"].astype(np.int64), ev["t"]
    if len(ev) and (min(x.min(), y.min()) < 0 or max(x.max(), y.max()) > max_xy):
        raise ValueError(xy_message)
    if len(ev) and (t.min() < 0 or (max_t is not None and t.max() > max_t)):
        raise ValueError(t_message)
    return ev, x, y, t
