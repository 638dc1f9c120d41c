"""Event augmentations that recordings such as N-MNIST permit: shift, event drop, time jitter.

Pure NumPy on structured event arrays (:data:`~fewstep.events.types.EVENT_DTYPE` or Tonic-style):
every function returns a new array and never modifies its input. Randomness comes only from the
``numpy.random.Generator`` passed in, so a seeded generator gives the same result every time.

What is *not* here on purpose: flips and rotations. A mirrored "2" is no "2", and a rotated "6"
is a "9": for digits they change the class. The recipe's ``[data.augment]`` table
(:class:`fewstep.augment_spec.EventAugmentSpec`) chooses the strengths; the training engine applies
:func:`augment_events` to the training split only (:mod:`fewstep.train.event_feed`).

Each function also has a transform form, Tonic's pattern: a small frozen dataclass that holds the
parameters (the generator included) and whose ``__call__(events)`` calls the function
(:class:`Shift`, :class:`DropEvents`, :class:`JitterTime`, :class:`Augment`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..augment_spec import EventAugmentSpec
from .ops import _sensor, check_events
from .types import as_events


def shift_events(events: np.ndarray, sensor_size: Sequence[int], dx: int, dy: int) -> np.ndarray:
    """Move every event by ``(dx, dy)`` pixels; those that leave the ``(width, height)`` sensor
    are dropped (as a sensor that saw the scene shifted would not have recorded them)."""
    ev = check_events(events, sensor_size)
    w, h = _sensor(sensor_size)
    dx, dy = int(dx), int(dy)
    x = ev["x"].astype(np.int64) + dx
    y = ev["y"].astype(np.int64) + dy
    keep = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    out = ev[keep]  # a copy (boolean indexing)
    out["x"] = x[keep]
    out["y"] = y[keep]
    return out


def drop_events(events: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Drop each event independently with probability ``fraction`` (``0 <= fraction < 1``); the
    kept events stay in their order."""
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must lie in [0, 1), got {fraction!r}")
    ev = as_events(events)
    if fraction == 0 or len(ev) == 0:
        return ev.copy()
    return ev[rng.random(len(ev)) >= fraction]


def jitter_time(events: np.ndarray, std_us: float, rng: np.random.Generator) -> np.ndarray:
    """Add Gaussian noise of ``std_us`` microseconds (rounded to whole us) to every timestamp,
    clamp at 0 and re-sort by time (stable: events that end up simultaneous keep their order)."""
    if not (np.isfinite(std_us) and std_us >= 0):
        raise ValueError(f"std_us must be a finite number >= 0, got {std_us!r}")
    ev = as_events(events).copy()
    if std_us == 0 or len(ev) == 0:
        return ev
    noise = np.rint(rng.normal(0.0, std_us, len(ev))).astype(np.int64)
    ev["t"] = np.maximum(ev["t"] + noise, 0)
    return ev[np.argsort(ev["t"], kind="stable")]


def augment_events(events: np.ndarray, sensor_size: Sequence[int], spec: EventAugmentSpec,
                   rng: np.random.Generator) -> np.ndarray:
    """One random draw of ``spec``'s augmentations for one sample: shift, then drop, then jitter
    (each skipped when its strength is 0, so no random numbers are drawn for it)."""
    ev = check_events(events, sensor_size)
    if spec.shift > 0:
        dx, dy = rng.integers(-spec.shift, spec.shift + 1, size=2)
        ev = shift_events(ev, sensor_size, int(dx), int(dy))
    if spec.drop > 0:
        ev = drop_events(ev, float(rng.uniform(0.0, spec.drop)), rng)
    if spec.jitter_us > 0:
        ev = jitter_time(ev, spec.jitter_us, rng)
    return ev if ev is not events else ev.copy()


# ----------------------------------------------------------------------------------------------
# the transform forms: parameters bound, ``transform(events) -> events``


@dataclass(frozen=True)
class Shift:
    """:func:`shift_events` as a transform: ``Shift(sensor_size, dx, dy)(events)``."""

    sensor_size: tuple[int, ...]
    dx: int
    dy: int

    def __call__(self, events: np.ndarray) -> np.ndarray:
        return shift_events(events, self.sensor_size, self.dx, self.dy)


@dataclass(frozen=True)
class DropEvents:
    """:func:`drop_events` as a transform: ``DropEvents(fraction, rng)(events)``; each call
    draws from ``rng``."""

    fraction: float
    rng: np.random.Generator

    def __call__(self, events: np.ndarray) -> np.ndarray:
        return drop_events(events, self.fraction, self.rng)


@dataclass(frozen=True)
class JitterTime:
    """:func:`jitter_time` as a transform: ``JitterTime(std_us, rng)(events)``; each call draws
    from ``rng``."""

    std_us: float
    rng: np.random.Generator

    def __call__(self, events: np.ndarray) -> np.ndarray:
        return jitter_time(events, self.std_us, self.rng)


@dataclass(frozen=True)
class Augment:
    """:func:`augment_events` as a transform: ``Augment(sensor_size, spec, rng)(events)``, one
    random draw of ``spec``'s augmentations per call."""

    sensor_size: tuple[int, ...]
    spec: EventAugmentSpec
    rng: np.random.Generator

    def __call__(self, events: np.ndarray) -> np.ndarray:
        return augment_events(events, self.sensor_size, self.spec, self.rng)


__all__ = ["Augment", "DropEvents", "JitterTime", "Shift", "augment_events", "drop_events", "jitter_time",
           "shift_events"]
