"""Event helpers on small arrays with known answers, plus a brute-force reference for the
vectorised denoise filter."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fewstep.events.ops import (
    check_events,
    crop_events,
    denoise_events,
    downsample_events,
    normalise_time,
    slice_by_time,
    sort_events,
    time_window,
)
from fewstep.events.types import EVENT_DTYPE, make_events


def ev(*rows):
    """Events from ``(x, y, t, p)`` rows."""
    if not rows:
        return np.empty(0, dtype=EVENT_DTYPE)
    x, y, t, p = zip(*rows)
    return make_events(x, y, t, p)


def rows(events):
    return [tuple(int(v) for v in e) for e in events[["x", "y", "t", "p"]].tolist()]


def test_check_events_rejects_out_of_range_and_accepts_tonic_dtype():
    with pytest.raises(ValueError, match=r"outside the 4x3 sensor; first at index 1: x=4"):
        check_events(ev((0, 0, 0, 1), (4, 0, 1, 1)), (4, 3))
    with pytest.raises(ValueError, match="outside"):
        check_events(ev((0, -1, 0, 1)), (4, 3))
    with pytest.raises(ValueError, match="sensor_size"):
        check_events(ev((0, 0, 0, 1)), (0, 3))
    tonic = np.zeros(2, dtype=[("x", "<i8"), ("y", "<i8"), ("p", "<i8"), ("t", "<i8")])
    tonic["x"], tonic["t"], tonic["p"] = [1, 2], [5, 6], [1, 0]
    out = check_events(tonic, (4, 3, 2))  # Tonic's (W, H, P) sensor size is accepted
    assert out.dtype == EVENT_DTYPE and rows(out) == [(1, 0, 5, 1), (2, 0, 6, 0)]


def test_crop_shifts_coordinates():
    e = ev((0, 0, 1, 1), (2, 1, 2, 0), (3, 2, 3, 1), (4, 4, 4, 1), (2, 3, 5, 0))
    out, size = crop_events(e, (5, 5), (2, 1, 2, 3))  # x in 2..3, y in 1..3
    assert size == (2, 3)
    assert rows(out) == [(0, 0, 2, 0), (1, 1, 3, 1), (0, 2, 5, 0)]
    assert rows(e)[1] == (2, 1, 2, 0)  # input untouched
    with pytest.raises(ValueError, match="crop box"):
        crop_events(e, (5, 5), (4, 0, 2, 2))
    with pytest.raises(ValueError, match="outside"):
        crop_events(e, (4, 4), (0, 0, 2, 2))


def test_downsample_integer_division():
    e = ev((0, 0, 1, 1), (3, 3, 2, 0), (4, 7, 3, 1), (33, 33, 4, 0))
    out, size = downsample_events(e, (34, 34), 4)
    assert size == (9, 9)  # ceil(34 / 4)
    assert rows(out) == [(0, 0, 1, 1), (0, 0, 2, 0), (1, 1, 3, 1), (8, 8, 4, 0)]
    assert e["x"][3] == 33
    with pytest.raises(ValueError, match="factor"):
        downsample_events(e, (34, 34), 0)
    with pytest.raises(ValueError, match="factor"):
        downsample_events(e, (34, 34), 1.5)


def test_denoise_known_answer():
    e = ev(
        (5, 5, 0, 1),  # first event: nothing before it -> dropped
        (6, 6, 100, 1),  # diagonal neighbour (5,5) fired 100 us ago -> kept
        (5, 5, 150, 0),  # neighbour (6,6) at 100 -> kept
        (20, 20, 160, 1),  # isolated -> dropped
        (20, 20, 170, 1),  # same pixel does not count -> dropped
        (7, 6, 1100, 1),  # neighbour (6,6) fired exactly filter_time ago -> dropped (strict)
        (8, 6, 1101, 1),  # neighbour (7,6) fired 1 us ago -> kept
        (9, 9, 1200, 0),  # ... and simultaneous neighbour events support each other:
        (9, 8, 1200, 1),
    )
    out = denoise_events(e, (32, 32), filter_time=1000)
    assert rows(out) == [(6, 6, 100, 1), (5, 5, 150, 0), (8, 6, 1101, 1), (9, 9, 1200, 0), (9, 8, 1200, 1)]
    assert len(denoise_events(ev(), (32, 32), 10)) == 0
    with pytest.raises(ValueError):
        denoise_events(e, (32, 32), 0)


def _denoise_reference(e, size, filter_time):
    """Per-event loop: keep if any of the 8 neighbours has an event with t - filter_time < t' <= t."""
    w, h = size
    keep = []
    for i, (x, y, t) in enumerate(zip(e["x"], e["y"], e["t"])):
        near = (np.abs(e["x"].astype(int) - x) <= 1) & (np.abs(e["y"].astype(int) - y) <= 1)
        near &= ~((e["x"] == x) & (e["y"] == y))
        near &= (e["t"] <= t) & (e["t"] > t - filter_time)
        keep.append(bool(near.any()))
    return e[np.array(keep, dtype=bool)]


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 60),
    seed=st.integers(0, 2**31 - 1),
    filter_time=st.integers(1, 50),
)
def test_denoise_matches_reference(n, seed, filter_time):
    rng = np.random.default_rng(seed)
    e = make_events(rng.integers(0, 6, n), rng.integers(0, 5, n), rng.integers(0, 200, n), rng.integers(0, 2, n))
    e = e[np.argsort(e["t"], kind="stable")]
    assert rows(denoise_events(e, (6, 5), filter_time)) == rows(_denoise_reference(e, (6, 5), filter_time))


def test_slice_by_duration():
    e = ev(*[(0, 0, t, 1) for t in (10, 11, 19, 20, 45)])
    parts = slice_by_time(e, duration=10)
    assert [p["t"].tolist() for p in parts] == [[10, 11, 19], [20], [], [45]]
    parts = slice_by_time(e, duration=10, start=0)
    assert [p["t"].tolist() for p in parts] == [[], [10, 11, 19], [20], [], [45]]
    assert slice_by_time(ev(), duration=5) == []


def test_slice_into_n_windows():
    e = ev(*[(0, 0, t, 1) for t in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)])
    parts = slice_by_time(e, n_windows=3)
    assert [p["t"].tolist() for p in parts] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert sum(len(p) for p in slice_by_time(e, n_windows=7)) == 10
    empty = slice_by_time(ev(), n_windows=4)
    assert len(empty) == 4 and all(len(p) == 0 for p in empty)
    single = slice_by_time(ev((1, 1, 5, 0)), n_windows=2)
    assert [len(p) for p in single] == [1, 0]


def test_slice_validation():
    e = ev((0, 0, 5, 1), (0, 0, 3, 1))
    with pytest.raises(ValueError, match="not sorted"):
        slice_by_time(e, duration=2)
    with pytest.raises(ValueError, match="exactly one"):
        slice_by_time(sort_events(e), duration=2, n_windows=2)
    with pytest.raises(ValueError, match="exactly one"):
        slice_by_time(sort_events(e))
    with pytest.raises(ValueError):
        slice_by_time(sort_events(e), duration=0)
    with pytest.raises(ValueError):
        slice_by_time(sort_events(e), n_windows=0)


def test_time_window_normalise_sort():
    e = ev((1, 0, 30, 1), (2, 0, 10, 0), (3, 0, 20, 1), (4, 0, 10, 1))
    assert rows(time_window(e, 10, 30)) == [(2, 0, 10, 0), (3, 0, 20, 1), (4, 0, 10, 1)]
    with pytest.raises(ValueError):
        time_window(e, 5, 4)
    assert normalise_time(e)["t"].tolist() == [20, 0, 10, 0]
    assert e["t"].tolist() == [30, 10, 20, 10]  # input untouched
    assert [r[0] for r in rows(sort_events(e))] == [2, 4, 3, 1]  # stable for equal t
    assert len(normalise_time(ev())) == 0
