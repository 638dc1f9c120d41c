"""Event-camera streams: data model, readers, emulator and spatio-temporal compression.

The STC function lives at :func:`fewstep.events.stc.stc` (the submodule keeps its name).
"""

from .emulator import emulate_dataset, saccade_events
from .stc import STC, stc_batch
from .types import EVENT_DTYPE, as_events, make_events

__all__ = ["EVENT_DTYPE", "STC", "as_events", "emulate_dataset", "make_events", "saccade_events", "stc_batch"]
