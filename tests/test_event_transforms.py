"""The transform forms of the event ops, augmentations and STC (#18 item 7): small frozen
dataclasses whose ``__call__(events)`` is the plain function with the bound parameters (Tonic's
``transform(events)`` protocol), and ``fewstep.events.stc`` is the STC function (#18 item 5)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import fewstep.events
from fewstep.augment_spec import EventAugmentSpec
from fewstep.events import compression
from fewstep.events.augment import (
    Augment,
    DropEvents,
    JitterTime,
    Shift,
    augment_events,
    drop_events,
    jitter_time,
    shift_events,
)
from fewstep.events.ops import (
    Crop,
    Denoise,
    Downsample,
    NormaliseTime,
    SortByTime,
    TimeWindow,
    crop_events,
    denoise_events,
    downsample_events,
    normalise_time,
    sort_events,
    time_window,
)
from fewstep.events.types import make_events

SENSOR = (20, 16)


def _events(n: int = 400, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(1000, 50_000, n))
    return make_events(rng.integers(0, SENSOR[0], n), rng.integers(0, SENSOR[1], n), t, rng.integers(0, 2, n))


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.tobytes() == b.tobytes()


def test_stc_names_the_function_and_compression_the_module() -> None:
    assert callable(fewstep.events.stc) and fewstep.events.stc is compression.stc
    assert fewstep.events.STC is compression.STC and fewstep.events.stc_batch is compression.stc_batch


@pytest.mark.parametrize("transform, function", [
    (SortByTime(), sort_events),
    (NormaliseTime(), normalise_time),
    (TimeWindow(5_000, 30_000), lambda ev: time_window(ev, 5_000, 30_000)),
    (Crop(SENSOR, (2, 3, 10, 8)), lambda ev: crop_events(ev, SENSOR, (2, 3, 10, 8))[0]),
    (Downsample(SENSOR, 3), lambda ev: downsample_events(ev, SENSOR, 3)[0]),
    (Denoise(SENSOR, 5_000), lambda ev: denoise_events(ev, SENSOR, 5_000)),
    (Shift(SENSOR, 2, -3), lambda ev: shift_events(ev, SENSOR, 2, -3)),
    (compression.STC(SENSOR, 4, integration="exp", kappa=0.8, fine_bins_per_step=3),
     lambda ev: compression.stc(ev, SENSOR, 4, integration="exp", kappa=0.8, fine_bins_per_step=3)),
])
def test_a_transform_is_its_function_with_the_parameters_bound(transform, function) -> None:
    ev = _events()
    assert dataclasses.is_dataclass(transform)
    with pytest.raises(dataclasses.FrozenInstanceError):
        transform.extra = 1
    assert _same(transform(ev), function(ev))


def test_random_transforms_draw_from_their_generator() -> None:
    ev = _events()
    spec = EventAugmentSpec(shift=2, drop=0.3, jitter_us=500.0)
    pairs = [
        (DropEvents(0.25, np.random.default_rng(7)), lambda e: drop_events(e, 0.25, np.random.default_rng(7))),
        (JitterTime(300.0, np.random.default_rng(7)), lambda e: jitter_time(e, 300.0, np.random.default_rng(7))),
        (Augment(SENSOR, spec, np.random.default_rng(7)),
         lambda e: augment_events(e, SENSOR, spec, np.random.default_rng(7))),
    ]
    for transform, function in pairs:
        assert _same(transform(ev), function(ev))


def test_geometry_transforms_say_their_new_sensor_size() -> None:
    ev = _events()
    assert Crop(SENSOR, (2, 3, 10, 8)).out_size == crop_events(ev, SENSOR, (2, 3, 10, 8))[1]
    assert Downsample(SENSOR, 3).out_size == downsample_events(ev, SENSOR, 3)[1] == (7, 6)
