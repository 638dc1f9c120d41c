"""Event-camera streams: data model, readers, emulator and spatio-temporal compression."""

from .types import EVENT_DTYPE, as_events, make_events

__all__ = ["EVENT_DTYPE", "as_events", "make_events"]
