"""Spatio-temporal compression: the one-pass fast path against the written-out definition,
count conservation, the binning conventions, the batched torch path and Tonic interop."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fewstep.events.compression as stc_module
from fewstep.errors import ConfigError
from fewstep.events import EVENT_DTYPE, make_events
from fewstep.events import compression_compiled as stc_compiled
from fewstep.events.compression import STC, concat_events, pack_events, reference_stc, stc, stc_batch, unpack_events

#: Both implementations of stc / stc_batch on the CPU; the compiled one needs Numba (in the test extra).
BACKENDS = ["numpy", pytest.param("numba", marks=pytest.mark.skipif(
    not stc_compiled.available(), reason="Numba is not installed (pip install numba): compiled STC path untested"))]


def random_events(rng: np.random.Generator, n: int, width: int, height: int, t_max: int, *,
                  sort: bool = True) -> np.ndarray:
    t = rng.integers(0, t_max + 1, n)
    return make_events(rng.integers(0, width, n), rng.integers(0, height, n), np.sort(t) if sort else t,
                       rng.integers(0, 2, n))


event_streams = st.builds(
    lambda seed, n, w, h, t_max, sort: (random_events(np.random.default_rng(seed), n, w, h, t_max, sort=sort), (w, h)),
    seed=st.integers(0, 2**32 - 1),
    n=st.one_of(st.just(0), st.just(1), st.integers(0, 400)),
    w=st.integers(1, 40),
    h=st.integers(1, 40),
    t_max=st.one_of(st.just(0), st.integers(1, 20), st.integers(21, 10**7)),  # small ranges: many ties
    sort=st.booleans(),
)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=150, deadline=None)
@given(stream=event_streams, T=st.integers(1, 8), by=st.sampled_from(["time", "count"]), f=st.integers(1, 4))
def test_plain_sum_conserves_the_event_count(backend, stream, T, by, f):
    ev, size = stream
    out = stc(ev, size, T, by=by, spatial_factor=f, backend=backend)
    assert out.dtype == np.float32
    assert out.shape == (T, 2, -(-size[1] // f), -(-size[0] // f))
    assert out.sum() == len(ev)
    assert (out >= 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=120, deadline=None)
@given(stream=event_streams, T=st.integers(1, 6), by=st.sampled_from(["time", "count"]),
       integration=st.sampled_from(["sum", "exp"]), kappa=st.floats(0.05, 1.0), r=st.integers(1, 6),
       f=st.integers(1, 3))
def test_fast_path_equals_reference(backend, stream, T, by, integration, kappa, r, f):
    ev, size = stream
    kw = dict(by=by, integration=integration, kappa=kappa, fine_bins_per_step=r, spatial_factor=f)
    fast, ref = stc(ev, size, T, backend=backend, **kw), reference_stc(ev, size, T, **kw)
    assert fast.shape == ref.shape
    if integration == "sum":
        np.testing.assert_array_equal(fast, ref)
    else:
        np.testing.assert_allclose(fast, ref, rtol=1e-6, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(stream=event_streams, chunk=st.integers(1, 50), by=st.sampled_from(["time", "count"]),
       integration=st.sampled_from(["sum", "exp"]), f=st.integers(1, 2))
def test_fast_path_is_exact_across_chunk_boundaries(stream, chunk, by, integration, f):
    """:func:`stc` walks long streams in chunks; shrink the chunk to put boundaries everywhere
    (including an out-of-order pair straddling two chunks)."""
    ev, size = stream
    kw = dict(by=by, integration=integration, kappa=0.7, fine_bins_per_step=3, spatial_factor=f)
    expected = reference_stc(ev, size, 3, **kw)
    original = stc_module._CHUNK
    stc_module._CHUNK = chunk
    try:
        np.testing.assert_allclose(stc(ev, size, 3, backend="numpy", **kw), expected, rtol=1e-6, atol=1e-6)
    finally:
        stc_module._CHUNK = original


@pytest.mark.parametrize("backend", BACKENDS)
def test_long_stream_against_reference(backend):
    ev = random_events(np.random.default_rng(11), 200_000, 64, 48, 6_000_000)  # several chunks
    for kw in (dict(), dict(by="count", integration="exp", kappa=0.8, fine_bins_per_step=4, spatial_factor=2)):
        np.testing.assert_allclose(stc(ev, (64, 48), 4, backend=backend, **kw), reference_stc(ev, (64, 48), 4, **kw),
                                   rtol=1e-6)


@pytest.mark.parametrize("by", ["time", "count"])
def test_exp_with_kappa_one_is_the_sum(by):
    ev = random_events(np.random.default_rng(1), 500, 20, 16, 10_000)
    np.testing.assert_array_equal(stc(ev, (20, 16), 4, by=by, integration="exp", kappa=1.0, fine_bins_per_step=7),
                                  stc(ev, (20, 16), 4, by=by))


def test_exp_weights_events_by_distance_to_the_window_end():
    # T = 1, r = 3 fine bins over [0, 30]: t=0 -> bin 0, t=15 -> bin 1, t=30 -> bin 2 (last, closed).
    ev = make_events([0, 0, 0], [0, 0, 0], [0, 15, 30], [1, 1, 1])
    out = stc(ev, (1, 1), 1, integration="exp", kappa=0.5, fine_bins_per_step=3)
    assert out[0, 1, 0, 0] == pytest.approx(0.25 + 0.5 + 1.0)
    # T = 2, r = 2: bins of 7.5 us; window 0 = bins {0, 1}, window 1 = bins {2, 3}.
    ev = make_events([0] * 4, [0] * 4, [0, 8, 15, 30], [1] * 4)
    out = stc(ev, (1, 1), 2, integration="exp", kappa=0.5, fine_bins_per_step=2)
    np.testing.assert_allclose(out[:, 1, 0, 0], [0.5 + 1.0, 0.5 + 1.0])


def test_polarity_channels():
    ev = make_events([1, 2, 2], [0, 1, 1], [0, 5, 9], [1, 0, 0])
    out = stc(ev, (3, 2), 1)
    assert out[0, 1, 0, 1] == 1 and out[0, 1].sum() == 1  # ON -> channel 1
    assert out[0, 0, 1, 2] == 2 and out[0, 0].sum() == 2  # OFF -> channel 0
    # The {-1, 1} encoding and bool polarities map p > 0 to ON as well.
    signed = make_events([1, 2, 2], [0, 1, 1], [0, 5, 9], [1, -1, -1])
    np.testing.assert_array_equal(stc(signed, (3, 2), 1), out)
    tonic_like = np.zeros(3, dtype=[("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "?")])
    for name, values in zip("xytp", ([1, 2, 2], [0, 1, 1], [0, 5, 9], [True, False, False])):
        tonic_like[name] = values
    np.testing.assert_array_equal(stc(tonic_like, (3, 2), 1), out)


def test_time_windows_put_the_last_event_in_the_last_step():
    ev = make_events([0] * 5, [0] * 5, [100, 124, 125, 199, 200], [1] * 5)  # span 100 us, T = 4
    per_step = stc(ev, (1, 1), 4).sum(axis=(1, 2, 3))
    np.testing.assert_array_equal(per_step, [2, 1, 0, 2])  # [100,125) [125,150) [150,175) [175,200]


def test_degenerate_streams():
    assert not stc(np.empty(0, EVENT_DTYPE), (4, 3), 3).any()
    one = make_events([3], [2], [77], [0])
    out = stc(one, (4, 3), 3)
    assert out[0, 0, 2, 3] == 1 and out.sum() == 1  # a single event: step 0
    same_t = make_events([0, 1, 2], [0, 0, 0], [5, 5, 5], [1, 1, 1])
    assert stc(same_t, (3, 1), 2)[0].sum() == 3  # no duration: everything in step 0
    assert stc(same_t, (3, 1), 3, by="count").sum(axis=(1, 2, 3)).tolist() == [1, 1, 1]


@settings(max_examples=150, deadline=None)
@given(stream=event_streams, T=st.integers(1, 6), by=st.sampled_from(["time", "count"]),
       integration=st.sampled_from(["sum", "exp"]), kappa=st.floats(0.05, 1.0), r=st.integers(1, 6),
       f=st.integers(1, 3), batch=st.integers(1, 3))
def test_compiled_path_is_bit_identical_to_numpy(stream, T, by, integration, kappa, r, f, batch):
    """One compiled pass (bin starts by binary search or rank arithmetic) against the chunked
    NumPy path: the same float32 bits, single streams and packed batches with empty ones mixed in."""
    if not stc_compiled.available():
        pytest.skip("Numba is not installed (pip install numba): compiled STC path untested")
    ev, size = stream
    kw = dict(by=by, integration=integration, kappa=kappa, fine_bins_per_step=r, spatial_factor=f)
    expected = stc(ev, size, T, backend="numpy", **kw)
    np.testing.assert_array_equal(stc(ev, size, T, backend="numba", **kw), expected)
    streams = [ev, ev[:0]] * batch
    got = stc_batch(streams, size, T, backend="numba", **kw).numpy()
    np.testing.assert_array_equal(got[:, ::2], np.stack([expected] * batch, axis=1))
    assert not got[:, 1::2].any()


def test_compiled_pass_reports_what_stops_it():
    """The compiled pass itself, so that a silent fallback to NumPy cannot pass for it."""
    if not stc_compiled.available():
        pytest.skip("Numba is not installed (pip install numba): compiled STC path untested")

    def run(x, t, fine=2):
        out = np.zeros(fine * 2 * 1 * 6, np.float32)
        status = stc_compiled.stc_into(make_events(x, [0] * len(x), t, [1] * len(x)), 6, 1, 1, 1, 6, fine, 1, True,
                                       None, out)
        return status, out.reshape(fine, 2, 6)

    status, out = run([0, 1, 5], [0, 9, 20])  # step 1 starts at t = 10
    assert status == stc_compiled.OK and out[0, 1].tolist() == [1, 1, 0, 0, 0, 0] and out[1, 1, 5] == 1
    assert out.sum() == 3
    assert run([0, 1, 5], [0, 20, 10])[0] == stc_compiled.UNSORTED
    assert run([0, 6], [0, 1])[0] == stc_compiled.OUT_OF_SENSOR
    assert run([-1, 0], [0, 1])[0] == stc_compiled.OUT_OF_SENSOR
    assert run([0, 0], [-(2**62), 2**62])[0] == stc_compiled.SPAN_TOO_LONG  # 2 * (2**63 + 1) overflows int64
    assert run([0, 0], [0, 2**61], fine=3)[0] == stc_compiled.OK


def test_backend_choice_and_errors(monkeypatch):
    ev = random_events(np.random.default_rng(9), 50, 6, 6, 1000)
    with pytest.raises(ConfigError, match="backend"):
        stc(ev, (6, 6), 2, backend="cuda")
    with pytest.raises(ConfigError, match="backend"):
        STC((6, 6), 2, backend="fast")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="CPU only"):
        stc_batch([ev], (6, 6), 2, device="cuda", backend="numba")
    monkeypatch.setattr(stc_compiled, "available", lambda: False)  # as on a machine without Numba
    with pytest.raises(ImportError, match="pip install numba"):
        stc(ev, (6, 6), 2, backend="numba")
    np.testing.assert_array_equal(stc(ev, (6, 6), 2), stc(ev, (6, 6), 2, backend="numpy"))  # auto falls back


def test_count_bins_hold_equal_shares():
    ev = random_events(np.random.default_rng(2), 1003, 10, 10, 10**6)
    per_step = stc(ev, (10, 10), 4, by="count").sum(axis=(1, 2, 3))
    assert sorted(per_step.tolist()) == [250, 251, 251, 251]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("by", ["time", "count"])
@pytest.mark.parametrize("integration", ["sum", "exp"])
def test_unsorted_streams_give_the_sorted_result(by, integration, backend):
    ev = random_events(np.random.default_rng(3), 800, 12, 9, 5_000)  # sorted, with ties
    shuffled = ev[np.random.default_rng(4).permutation(len(ev))]
    kw = dict(by=by, integration=integration, kappa=0.7, fine_bins_per_step=3, backend=backend)
    if by == "count":  # ties make 'count' depend on input order: compare against a stable re-sort
        ev = shuffled[np.argsort(shuffled["t"], kind="stable")]
    np.testing.assert_allclose(stc(shuffled, (12, 9), 3, **kw), stc(ev, (12, 9), 3, **kw), rtol=1e-6)


def test_spatial_pooling_keeps_partial_border_blocks():
    ev = make_events([0, 4, 4], [0, 4, 0], [0, 1, 2], [1, 1, 0])  # 5x5 sensor, f = 2 -> 3x3
    out = stc(ev, (5, 5), 1, spatial_factor=2)
    assert out.shape == (1, 2, 3, 3)
    assert out[0, 1, 0, 0] == 1 and out[0, 1, 2, 2] == 1 and out[0, 0, 0, 2] == 1


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("x, y", [(5, 0), (0, 4), (-1, 0), (0, -3), (-32768, 0), (0, 32767)])
def test_coordinates_outside_the_sensor_raise(x, y, backend):
    ev = make_events([1, x], [1, y], [0, 1], [1, 1])
    with pytest.raises(ValueError, match="outside the sensor"):
        stc(ev, (5, 4), 2, backend=backend)
    with pytest.raises(ValueError, match="outside the sensor"):
        stc_batch([ev], (5, 4), 2, backend=backend)
    with pytest.raises(ValueError, match="outside the sensor"):  # unsorted too: the sort happens first
        stc(ev[::-1], (5, 4), 2, backend=backend)


@pytest.mark.parametrize("kw", [dict(timesteps=0), dict(by="frames"), dict(integration="alpha"), dict(kappa=0.0),
                                dict(kappa=1.5), dict(fine_bins_per_step=0), dict(spatial_factor=0),
                                dict(sensor_size=(34, 34, 1))])
def test_bad_parameters_raise_config_errors(kw):
    args = dict(sensor_size=(34, 34), timesteps=4) | kw
    with pytest.raises(ConfigError):
        STC(**args)


def test_transform_is_frozen_and_equals_the_function():
    ev = random_events(np.random.default_rng(5), 300, 34, 34, 300_000)
    transform = STC((34, 34, 2), 4, integration="exp", kappa=0.8, fine_bins_per_step=4, spatial_factor=2)
    np.testing.assert_array_equal(transform(ev), stc(ev, (34, 34), 4, integration="exp", kappa=0.8,
                                                     fine_bins_per_step=4, spatial_factor=2))
    with pytest.raises(AttributeError):
        transform.timesteps = 2  # type: ignore[misc]


def test_pack_unpack_round_trip():
    rng = np.random.default_rng(6)
    streams = [random_events(rng, n, 8, 8, 1000) for n in (5, 0, 17)]
    events, offsets = pack_events(streams)
    assert offsets.tolist() == [0, 5, 5, 22] and events.dtype == EVENT_DTYPE
    for a, b in zip(unpack_events(events, offsets), streams):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(concat_events([streams[2][::2], streams[0]]),  # strided input too
                                  np.concatenate([streams[2][::2], streams[0]]))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("by", ["time", "count"])
@pytest.mark.parametrize("integration", ["sum", "exp"])
@pytest.mark.parametrize("f", [1, 3])
def test_batch_equals_per_sample(by, integration, f, backend):
    rng = np.random.default_rng(7)
    streams = [random_events(rng, n, 34, 30, t_max, sort=n != 40) for n, t_max in
               [(400, 300_000), (0, 0), (1, 5), (40, 30), (2_000, 10**6)]]
    kw = dict(by=by, integration=integration, kappa=0.6, fine_bins_per_step=5, spatial_factor=f)
    expected = np.stack([stc(s, (34, 30), 4, **kw) for s in streams], axis=1)
    for batch in (streams, pack_events(streams)):
        out = stc_batch(batch, (34, 30), 4, device="cpu", backend=backend, **kw)
        assert out.shape == (4, 5, 2, -(-30 // f), -(-34 // f)) and out.dtype == torch.float32
        if integration == "sum" or backend == "numba":  # the compiled pass is stc's, bit for bit
            np.testing.assert_array_equal(out.numpy(), expected)
        else:
            np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6, atol=1e-6)


def test_batch_of_nothing():
    assert stc_batch([np.empty(0, EVENT_DTYPE)] * 3, (4, 4), 2).shape == (2, 3, 2, 4, 4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_batch_on_cuda_equals_cpu():
    rng = np.random.default_rng(8)
    streams = [random_events(rng, 4000, 34, 34, 300_000) for _ in range(16)]
    np.testing.assert_array_equal(stc_batch(streams, (34, 34), 4, device="cuda").cpu().numpy(),
                                  stc_batch(streams, (34, 34), 4).numpy())


def _sample_nmnist() -> Path | None:
    root = os.environ.get("FEWSTEP_DATA")
    candidates = ([Path(root)] if root else []) + [Path(__file__).resolve().parents[2] / "shared" / "data"]
    for base in candidates:
        if (base / "event-samples" / "sample_nmnist.bin").exists():
            return base / "event-samples" / "sample_nmnist.bin"
    return None


@pytest.mark.skipif(_sample_nmnist() is None, reason="real N-MNIST sample not available")
def test_real_nmnist_sample():
    from fewstep.events.readers.nmnist import read_nmnist_bin

    ev, size = read_nmnist_bin(_sample_nmnist())
    for by in ("time", "count"):
        out = stc(ev, size, 4, by=by)
        assert out.sum() == len(ev) == 4325
        np.testing.assert_array_equal(out, reference_stc(ev, size, 4, by=by))


# ----------------------------------------------------------------------------------------------
# Tonic interop (Tonic is a benchmark/test extra, not a dependency)


def test_tonic_compose_and_time_bins_agree():
    """``ToFrame(n_time_bins=T)`` uses windows of ``D // T`` us, half-open, and so drops the
    events at or after ``t_first + T * (D // T)`` -- the last event always. Where ``D`` is a
    multiple of ``T`` the windows are ours, so every step agrees except the last, where ours
    also holds the events stamped ``t_last``."""
    tonic = pytest.importorskip("tonic")
    rng = np.random.default_rng(9)
    T = 4
    t = np.sort(rng.integers(1_000, 301_000, 3_000))
    t[0], t[-3:] = 1_000, 301_000  # span 300,000 us, divisible by T; three events at t_last
    ev = np.zeros(len(t), dtype=[("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")])  # Tonic's dtype
    ev["x"], ev["y"], ev["p"] = rng.integers(0, 34, len(t)), rng.integers(0, 34, len(t)), rng.integers(0, 2, len(t))
    ev["t"] = t
    theirs = tonic.transforms.ToFrame(sensor_size=(34, 34, 2), n_time_bins=T)(ev).astype(np.float32)
    ours = tonic.transforms.Compose([STC((34, 34, 2), T)])(ev)
    assert theirs.shape == ours.shape == (T, 2, 34, 34)
    np.testing.assert_array_equal(ours[:-1], theirs[:-1])
    at_end = stc(ev[ev["t"] == 301_000], (34, 34), 1)[0]
    np.testing.assert_array_equal(ours[-1], theirs[-1] + at_end)
    assert ours.sum() == len(ev) == theirs.sum() + 3


def test_tonic_event_bins_agree():
    """``ToFrame(n_event_bins=T)`` takes ``N // T`` events per bin and drops the remainder; when
    ``T`` divides ``N`` it is exactly ``by='count'``."""
    tonic = pytest.importorskip("tonic")
    ev = random_events(np.random.default_rng(10), 4_000, 34, 34, 300_000)
    theirs = tonic.transforms.ToFrame(sensor_size=(34, 34, 2), n_event_bins=4)(ev)
    np.testing.assert_array_equal(stc(ev, (34, 34), 4, by="count"), theirs)


def test_compiled_pass_without_a_writable_numba_cache(monkeypatch):
    """Where Numba finds no folder to cache compiled code in, the pass is compiled every run instead."""
    if not stc_compiled.available():
        pytest.skip("Numba is not installed (pip install numba): compiled STC path untested")
    real_build, calls = stc_compiled._build, []

    def build(cache: bool = True):
        calls.append(cache)
        if cache:
            raise RuntimeError("cannot cache function 'stream': no locator available for file '...'")
        return real_build(cache=False)

    monkeypatch.setattr(stc_compiled, "_kernels", None)
    monkeypatch.setattr(stc_compiled, "_build", build)
    ev = random_events(np.random.default_rng(12), 300, 8, 8, 10_000)
    np.testing.assert_array_equal(stc(ev, (8, 8), 3, backend="numba"), stc(ev, (8, 8), 3, backend="numpy"))
    assert calls == [True, False]
