"""Event-camera streams: data model, readers, emulator and spatio-temporal compression.

``fewstep.events.stc`` is the STC function (:func:`fewstep.events.compression.stc`); the module
that holds it and its batch and reference forms is :mod:`fewstep.events.compression`.
"""

from .compression import STC, stc, stc_batch
from .emulator import emulate_dataset, saccade_events
from .types import EVENT_DTYPE, as_events, make_events

__all__ = ["EVENT_DTYPE", "STC", "as_events", "emulate_dataset", "make_events", "saccade_events", "stc", "stc_batch"]
