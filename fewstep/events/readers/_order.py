"""Time order of decoded events: every reader returns a stream sorted by ``t``."""

from __future__ import annotations

import numpy as np


def time_ordered(events: np.ndarray) -> np.ndarray:
    """``events`` sorted by ``t`` (stable: equal timestamps keep their file order).

    Recordings are written in time order, but camera packets can arrive slightly out of order
    (and a corrupt timestamp can point anywhere): the streams fewstep returns are sorted, as
    :mod:`fewstep.events.types` promises and STC and the gesture splitting assume. Already
    sorted streams (the usual case) cost one comparison pass and are returned as they are."""
    t = events["t"]
    if len(t) > 1 and bool((t[1:] < t[:-1]).any()):
        return events[np.argsort(t, kind="stable")]
    return events
