"""Fuzzing of every file reader (and of STC), the fast CI subset of ``benchmarks/fuzz_readers.py``.

Each reader gets a few hundred property-based cases (mutated real-format files, see the harness's
docstring), the path-level cases (missing file, directory, symlink loop, non-UTF-8 names, ...) and
a sample of truncations at region boundaries; the only allowed failure is the documented error
(:class:`fewstep.errors.DataFormatError`; ``ConfigError`` for recipes, ``CheckpointError`` for
checkpoints) with a one-line message naming the file. Below, every crash the full fuzzing run
found is pinned as a deterministic regression test.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
from benchmark_scripts import load_benchmark
from format_writers import AEDAT4_XML, build_aedat4, event_packet, idx_header

from fewstep.errors import DataFormatError

ROOT = Path(__file__).resolve().parents[1]
CASES = 200  # per reader: about 2-4 s each


def _harness():
    return load_benchmark("fuzz_readers")


READERS = ["idx-raw", "idx-gz", "cifar-pickle", "nmnist-bin", "aedat2", "aedat31", "gesture-labels", "aedat4",
           "prophesee-dat", "read_events"]
LOADERS = ["config-toml", "checkpoint", "image-file"]  # recipes, checkpoints, images: fewer cases (slower calls)


@pytest.mark.parametrize("target", READERS + LOADERS)
def test_reader_survives_fuzzing(target: str, tmp_path: Path) -> None:
    fuzz = _harness()
    cases = CASES if target in READERS else CASES // 2
    stats = fuzz.fuzz(target, cases, seed=1, timeout=2.0, workdir=tmp_path, fixed_from=0, boundary_limit=6)
    assert stats.paths == len(fuzz.PATH_CASES) and stats.boundary > 0
    assert stats.cases - stats.paths - stats.boundary >= cases * 0.9
    assert stats.rejected > 0  # the mutations really produce malformed files...
    assert stats.accepted > 0 or target == "gesture-labels"  # ...and some still valid ones
    assert not stats.crashes, fuzz.format_table([stats])


@pytest.mark.parametrize("target", ["stc", "stc_batch"])
def test_stc_survives_fuzzing(target: str, tmp_path: Path) -> None:
    fuzz = _harness()
    stats = fuzz.fuzz(target, 100, seed=1, timeout=2.0, workdir=tmp_path)
    assert not stats.crashes, fuzz.format_table([stats])


def test_harness_counts_crashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness itself: an exception other than DataFormatError, and a bad result, are crashes."""
    fuzz = _harness()
    target = fuzz.TARGETS["nmnist-bin"]
    calls = {"n": 0}

    def flaky(path: Path):
        calls["n"] += 1
        if calls["n"] % 3 == 0:
            raise IndexError("boom")
        if calls["n"] % 3 == 1:
            raise DataFormatError(path, "bad")
        return np.zeros(1, [("x", "<i2")]), (1, 1)  # not EVENT_DTYPE

    monkeypatch.setitem(fuzz.TARGETS, "nmnist-bin", fuzz.FileTarget("nmnist-bin", target.seeds, flaky, target.check))
    stats = fuzz.fuzz("nmnist-bin", 30, workdir=tmp_path)
    assert stats.rejected == 10 and stats.cases == 30
    assert {s.split(" at ")[0] for s in stats.crashes} == {"IndexError", "bad result: events are [('x', '<i2')]"}
    assert "IndexError" in fuzz.format_table([stats])
    assert "| `nmnist-bin` | 30 | 10 | 0 | 20 |" in fuzz.format_markdown([stats])


@pytest.mark.parametrize("outcome, signature", [
    ("names another file", "DataFormatError does not name the file"),
    ("memory", "memory blow-up (MemoryError"),
    ("wrapped memory", "memory blow-up (wrapped in DataFormatError)"),
    ("two lines", "DataFormatError spans lines"),
    ("unsorted", "bad result: timestamps not sorted"),
    ("negative", "bad result: negative timestamp -5"),
    ("sleeps", "hang"),
])
def test_harness_counts_every_unclean_outcome(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, outcome: str,
                                              signature: str) -> None:
    """A documented error is clean only when its one-line message names the file; a memory blow-up
    (also one a reader wrapped in its own error), unsorted or negative timestamps and a case that
    blocks (no CPU used) are all counted as failures."""
    import time

    from fewstep.events.types import make_events

    fuzz = _harness()
    target = fuzz.TARGETS["nmnist-bin"]

    def call(path: Path):
        if outcome == "names another file":
            raise DataFormatError(path.with_name("other.bin"), "bad")
        if outcome == "memory":
            return np.empty(8 << 30, np.uint8).sum()  # 8 GiB, above the 1 GiB allowed below
        if outcome == "wrapped memory":
            raise DataFormatError(path, "not a valid file: MemoryError: ")
        if outcome == "two lines":
            raise DataFormatError(path, "bad\nand worse")
        if outcome == "sleeps":
            time.sleep(30)
        t = [5, 3] if outcome == "unsorted" else [-5, 3]
        return make_events([0, 0], [0, 0], t, [1, 1]), (1, 1)

    monkeypatch.setitem(fuzz.TARGETS, "nmnist-bin", fuzz.FileTarget("nmnist-bin", target.seeds, call, target.check))
    stats = fuzz.fuzz("nmnist-bin", 1, timeout=0.2, workdir=tmp_path, memory_bytes=1 << 30)
    assert stats.cases == 1 and stats.rejected == stats.accepted == 0
    assert [s for s in stats.crashes if s.startswith(signature)], stats.crashes


def test_boundary_cuts_cover_every_region_of_an_aedat31_file(tmp_path: Path) -> None:
    """The deterministic truncations hit the header's end and every packet boundary (+-1 byte)."""
    from fewstep.events.readers import write_aedat31
    from fewstep.events.types import make_events

    fuzz = _harness()
    write_aedat31(tmp_path / "a.aedat", make_events([1] * 7, [2] * 7, range(7), [1] * 7), events_per_packet=3)
    data = (tmp_path / "a.aedat").read_bytes()  # 7 events in packets of 3: 3 packets
    cuts = fuzz.region_boundaries(data, "aedat31")
    header_end = data.find(b"#!END-HEADER\r\n") + len(b"#!END-HEADER\r\n")
    packets = [header_end + k * (28 + 3 * 8) for k in range(3)]
    assert packets[2] + 28 + 8 == len(data)
    for b in [header_end, *packets[1:], packets[2] + 4, packets[2] + 28]:
        assert {b - 1, b, b + 1} <= set(cuts)
    assert len(data) not in cuts and max(cuts) == len(data) - 1


# ================================================================= regressions: crashes found by fuzzing


def _idx(path: Path, code: int, dims: list[int], payload: bytes, gz: bool = False) -> Path:
    blob = idx_header(code, dims) + payload
    path.write_bytes(gzip.compress(blob) if gz else blob)
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_idx_more_dimensions_than_numpy_allows(tmp_path: Path, gz: bool) -> None:
    from fewstep.data.idx import read_idx

    p = _idx(tmp_path / "a.idx", 0x08, [1] * 65, b"\x07", gz)  # was: ValueError from numpy's reshape
    with pytest.raises(DataFormatError, match="65 dimensions"):
        read_idx(p)
    assert read_idx(_idx(tmp_path / "b.idx", 0x08, [1] * 64, b"\x07", gz)).shape == (1,) * 64


@pytest.mark.parametrize("gz", [False, True])
def test_idx_empty_array_with_an_impossible_shape(tmp_path: Path, gz: bool) -> None:
    from fewstep.data.idx import read_idx

    p = _idx(tmp_path / "a.idx", 0x0E, [0, 2**31, 2**32 - 1, 2], b"", gz)  # was: numpy "array is too big"
    with pytest.raises(DataFormatError, match="no array can have that shape"):
        read_idx(p)
    assert read_idx(_idx(tmp_path / "b.idx", 0x08, [0, 2**31, 2**31], b"", gz)).shape == (0, 2**31, 2**31)


def _pickle_file(tmp_path: Path, blob: bytes) -> Path:
    p = tmp_path / "data_batch_1"
    p.write_bytes(blob)
    return p


@pytest.mark.parametrize("body", [
    b"}" + b")" + b"\x85" * 200_000 + b"K\x01s",  # a tuple nested 200,000 deep as a dict key: was a SEGFAULT
    b"(" + b")" + b"\x85" * 200_000 + b"\x91",  # ... as a frozenset element
    b"\x8f(" + b")" + b"K\x00\x86" * 200_000 + b"\x90",  # ... TUPLE2 chain added to a set
])
def test_cifar_deeply_nested_pickle_is_refused_before_loading(tmp_path: Path, body: bytes) -> None:
    from fewstep.data.cifar import safe_unpickle

    with pytest.raises(DataFormatError, match="nested more than 100 levels"):
        safe_unpickle(_pickle_file(tmp_path, b"\x80\x02" + body + b"."))


@pytest.mark.parametrize("blob, match", [
    (b"\x80\x02c__builtin__\nbytearray\nJ\x00\x00\x00\x40\x85R.", "bytearray"),  # 1 GiB from 33 bytes
    (b"\x80\x02c__builtin__\nbytes\nJ\x00\x00\x00\x40\x85R.", "bytes"),
    (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n(J\x00\x00\x00\x40tU\x01b\x87R.", "an array"),
    (b"\x80\x02cnumpy\nndarray\n(J\x00\x00\x00\x40tU\x02u1\x86R.", "only be used through"),
    (b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00b.png\x86R.", "encoding"),  # was LookupError
    (b"\x80\x04\x95\xff\xff\xff\xff\xff\xff\xff\xff}.", "not a valid CIFAR pickle"),  # FRAME: was OverflowError
    (pickle.dumps({2**20000: 1}, protocol=2), "int key"),  # str(key): was ValueError (4300 digits)
    (b"\x80\x02}r\xff\xff\xff\x7f.", "LONG_BINPUT to memo slot 2147483647"),  # a 16 GiB memo table: MemoryError
    (b"(dp99999999999999\n.", "PUT to memo slot 99999999999999"),
    (b"(dpx\n.", "PUT names no memo slot number"),
])
def test_cifar_hostile_pickles_are_format_errors(tmp_path: Path, blob: bytes, match: str) -> None:
    from fewstep.data.cifar import safe_unpickle

    with pytest.raises(DataFormatError, match=match):
        safe_unpickle(_pickle_file(tmp_path, blob))


@pytest.mark.parametrize("labels, match", [
    ([2**70, 1], "not a list of integers"),  # was OverflowError
    ([1.5, 1], "not a list of integers"),  # was silently truncated to 1
    (np.array([2**64 - 1, 1], np.uint64), "0..9"),
])
def test_cifar_bad_labels(tmp_path: Path, labels: object, match: str) -> None:
    from fewstep.data.cifar import _batch

    p = _pickle_file(tmp_path, pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": labels}, protocol=2))
    with pytest.raises(DataFormatError, match=match):
        _batch(p, "labels", 10)


def test_cifar_label_names_that_are_not_text(tmp_path: Path) -> None:
    from fewstep.data.cifar import _names, safe_unpickle

    p = _pickle_file(tmp_path, pickle.dumps({"label_names": [b"cat", b"\xff\xfe"]}, protocol=2))
    with pytest.raises(DataFormatError, match=r"'label_names'\[1\] is not UTF-8"):  # was UnicodeDecodeError
        _names(p, safe_unpickle(p), "label_names")


def test_cifar_real_layout_still_loads_and_checks_cost_little(tmp_path: Path) -> None:
    import time

    from fewstep.data.cifar import _batch, check_pickle_structure

    rng = np.random.default_rng(0)
    d = {b"batch_label": b"training batch 1 of 5", b"labels": [int(v) for v in rng.integers(0, 10, 2000)],
         b"data": rng.integers(0, 256, (2000, 3072), dtype=np.uint8),
         b"filenames": [b"img_%05d.png" % i for i in range(2000)]}
    p = _pickle_file(tmp_path, pickle.dumps(d, protocol=2))
    x, y = _batch(p, "labels", 10)
    assert x.shape == (2000, 3, 32, 32) and (x.reshape(2000, -1) == d[b"data"]).all()
    assert y.tolist() == d[b"labels"]
    t = time.process_time()
    check_pickle_structure(p, p.read_bytes())
    assert time.process_time() - t < 1.0  # ~10k opcodes


def test_gesture_label_times_beyond_64_bits(tmp_path: Path) -> None:
    from fewstep.events.readers import read_gesture_labels

    p = tmp_path / "user01_led_labels.csv"
    p.write_text(f"class,startTime_usec,endTime_usec\n1,0,{10**30}\n")  # was OverflowError from numpy
    with pytest.raises(DataFormatError, match="line 2: time .* does not fit in 64 bits"):
        read_gesture_labels(p)


def _aedat4_with(tmp_path: Path, xml: str, events: list[tuple[int, int, int, int]]) -> Path:
    p = tmp_path / "rec.aedat4"
    p.write_bytes(build_aedat4([(0, event_packet(events))], 0, xml))
    return p


@pytest.mark.parametrize("size_x, sensor", [("²", None), ("9" * 5000, None), ("٣٢٠", None), ("320", (320, 30))])
def test_aedat4_sizes_in_the_xml_are_plain_numbers(tmp_path: Path, size_x: str, sensor: object) -> None:
    from fewstep.events.readers import read_aedat4

    xml = AEDAT4_XML.format(comp="NONE", w=size_x, h=30)  # '²'.isdigit() is True: was ValueError from int()
    ev, size = read_aedat4(_aedat4_with(tmp_path, xml, [(1, 2, 3, 1)]))
    assert size == (sensor or (3, 4)) and len(ev) == 1


@pytest.mark.parametrize("name", ["²", "9" * 5000, "99999999999"])
def test_aedat4_stream_ids_in_the_xml_are_plain_numbers(tmp_path: Path, name: str) -> None:
    from fewstep.events.readers import read_aedat4

    xml = AEDAT4_XML.format(comp="NONE", w=40, h=30).replace('name="0"', f'name="{name}"')
    with pytest.raises(DataFormatError, match="no event"):  # the stream is ignored, not a ValueError
        read_aedat4(_aedat4_with(tmp_path, xml, [(1, 2, 3, 1)]))


@pytest.mark.parametrize("w, h", [(99999, 99999), (0, 30)])
def test_aedat4_declared_sensor_size_out_of_range(tmp_path: Path, w: int, h: int) -> None:
    from fewstep.events.readers import read_aedat4

    xml = AEDAT4_XML.format(comp="NONE", w=w, h=h)
    with pytest.raises(DataFormatError, match=f"declares a {w}x{h} sensor"):
        read_aedat4(_aedat4_with(tmp_path, xml, []))


def test_aedat4_negative_coordinates_without_a_declared_size(tmp_path: Path) -> None:
    from fewstep.events.readers import read_aedat4

    xml = AEDAT4_XML.format(comp="NONE", w="", h="")  # no size: inferred from the coordinates
    with pytest.raises(DataFormatError, match=r"event \(-5, 3\) outside"):  # was returned with a (0, 4) sensor
        read_aedat4(_aedat4_with(tmp_path, xml, [(1, -5, 3, 1)]))


@pytest.mark.parametrize("header, match", [(b"% Width -5\n% Height 100\n", "Width -5"),
                                           (b"% Width 120\n% Height 99999999999999\n", "Height 99999999999999")])
def test_prophesee_header_sizes_out_of_range(tmp_path: Path, header: bytes, match: str) -> None:
    from fewstep.events.readers import read_prophesee_dat

    p = tmp_path / "a.dat"
    p.write_bytes(b"% Version 2\n" + header + bytes([0x0C, 8]))  # no events: was returned as the sensor size
    with pytest.raises(DataFormatError, match=match) as info:
        read_prophesee_dat(p)
    assert info.value.offset == len(b"% Version 2\n") + (0 if b"-5" in header else len(b"% Width 120\n"))


# ================================================================= regressions: STC crashes found by fuzzing

_T_MIN, _T_MAX = -(2**63), 2**63 - 1


def _ev(t: list[int], x: list[int] | None = None) -> np.ndarray:
    from fewstep.events.types import make_events

    n = len(t)
    return make_events(x if x is not None else [0] * n, [0] * n, t, [1] * n)


def _steps(out) -> list[int]:
    arr = out.numpy() if hasattr(out, "numpy") else out
    return arr.reshape(arr.shape[0], -1).sum(axis=1).round().astype(np.int64).tolist()


@pytest.mark.parametrize("t, T, want", [
    ([_T_MAX, 0, _T_MIN], 4, [1, 0, 1, 1]),  # unsorted, full int64 span: was OverflowError (bin starts)
    ([_T_MAX] * 3, 2, [3, 0]),  # one timestamp at the top of int64: D = 1 put the bin start past int64
    ([_T_MIN, -5, 3, _T_MAX], 3, [1, 2, 1]),  # sorted, span 2**64 - 1
])
@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("backend", ["numpy", "auto"])  # auto: the compiled pass where Numba is installed
def test_stc_extreme_timestamps_follow_the_binning_rule(t: list[int], T: int, want: list[int], batched: bool,
                                                        backend: str) -> None:
    from fewstep.events.compression import stc, stc_batch

    ev = _ev(t)
    out = (stc_batch([ev, ev], (1, 1), T, backend=backend)[:, 0] if batched  # batch: was the float64 path
           else stc(ev, (1, 1), T, backend=backend))
    assert _steps(out) == want


@pytest.mark.parametrize("backend", ["numpy", "auto"])
def test_stc_batch_long_spans_equal_stc_exactly(backend: str) -> None:
    from fewstep.events.compression import stc, stc_batch

    rng = np.random.default_rng(3)
    streams = [_ev(sorted(rng.integers(_T_MIN, _T_MAX, 50, endpoint=True).tolist()), rng.integers(0, 4, 50).tolist()),
               _ev([0, 2**60, 2**61 + 3]), _ev([])]
    for kw in ({}, {"by": "count"}, {"integration": "exp", "kappa": 0.5, "fine_bins_per_step": 7}):
        got = stc_batch(streams, (4, 1), 5, backend=backend, **kw)
        for b, s in enumerate(streams):
            np.testing.assert_allclose(got[:, b].numpy(), stc(s, (4, 1), 5, backend=backend, **kw), rtol=1e-6)


@pytest.mark.parametrize("events, match", [
    (np.zeros((3, 1), [("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "i1")]), "one-dimensional"),  # was TypeError
    (np.array([(0, 0, np.nan, 1)], [("x", "<i2"), ("y", "<i2"), ("t", "<f8"), ("p", "?")]), "NaN or inf"),
    (np.array([(0, 0, 1e300, 1)], [("x", "<i2"), ("y", "<i2"), ("t", "<f8"), ("p", "?")]), "64-bit"),
    (np.array([(0, 0, 2.0**63, 1)], [("x", "<i2"), ("y", "<i2"), ("t", "<f8"), ("p", "?")]), "64-bit"),
    (np.array([(0, 0, 2**64 - 1, 1)], [("x", "<i2"), ("y", "<i2"), ("t", "<u8"), ("p", "u1")]), "64-bit"),
    (np.array([(70_000, 0, 1, 1)], [("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")]), "16-bit"),  # was wrapped
    (np.array([(0, 40_000, 1, 1)], [("x", "<u2"), ("y", "<u2"), ("t", "<i8"), ("p", "<u1")]), "16-bit"),
])
@pytest.mark.parametrize("batched", [False, True])
def test_stc_refuses_events_it_cannot_convert_faithfully(events: np.ndarray, match: str, batched: bool) -> None:
    from fewstep.events.compression import stc, stc_batch

    with pytest.raises(ValueError, match=match):
        stc_batch([events], (34, 34), 2) if batched else stc(events, (34, 34), 2)


def test_as_events_polarity_beyond_int8_keeps_its_sign() -> None:
    from fewstep.events.types import as_events

    ev = np.array([(1, 2, 3, 256), (1, 2, 4, -300), (1, 2, 5, 0)],
                  [("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")])
    assert as_events(ev)["p"].tolist() == [1, 0, 0]  # a cast to int8 made 256 OFF (0)
    assert as_events(ev[:2].astype([("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<f8")]))["p"].tolist() == [1, 0]


@pytest.mark.parametrize("sensor", [(float("inf"), 4), (float("nan"), 4), (2**40, 2**40), (2**15 + 1, 4), (0, 4),
                                    (4, 2.5), (4,), (4, 4, 2, 1), (True, 4), None, (4, 4, float("nan"))])
def test_stc_bad_sensor_sizes_are_value_errors(sensor: object) -> None:
    from fewstep.events.compression import stc, stc_batch

    ev = _ev([0, 1])
    with pytest.raises(ValueError, match="sensor_size"):  # was OverflowError / numpy "maximum dimension"
        stc(ev, sensor, 2)
    with pytest.raises(ValueError, match="sensor_size"):
        stc_batch([ev], sensor, 2)


@pytest.mark.parametrize("kw, key", [
    ({"timesteps": float("nan")}, "timesteps"), ({"timesteps": float("inf")}, "timesteps"),  # were ValueError/Overflow
    ({"timesteps": True}, "timesteps"), ({"timesteps": 2**40}, "timesteps"),  # was a hang
    ({"timesteps": 1000, "integration": "exp", "kappa": 0.5, "fine_bins_per_step": 1000}, "fine_bins_per_step"),
    ({"fine_bins_per_step": float("nan")}, "fine_bins_per_step"), ({"spatial_factor": float("nan")}, "spatial_factor"),
    ({"kappa": "high"}, "kappa"), ({"kappa": float("nan")}, "kappa"),
])
def test_stc_bad_parameters_are_config_errors(kw: dict, key: str) -> None:
    from fewstep.errors import ConfigError
    from fewstep.events.compression import stc, stc_batch

    args = {"timesteps": 2, **kw}
    with pytest.raises(ConfigError, match=key):
        stc(_ev([0, 1]), (4, 4), **args)
    with pytest.raises(ConfigError, match=key):
        stc_batch([_ev([0, 1])], (4, 4), **args)


def test_stc_fine_bin_limit_itself_works() -> None:
    from fewstep.events.compression import MAX_FINE_BINS, stc

    assert _steps(stc(_ev([0, 1]), (4, 4), MAX_FINE_BINS)) == [1] + [0] * (MAX_FINE_BINS - 2) + [1]


def test_stc_whole_float_parameters_and_huge_pooling() -> None:
    from fewstep.events.compression import stc, stc_batch

    ev = _ev([0, 1, 2], [0, 1, 3])
    assert stc(ev, (4, 3), 2.0).shape == (2, 2, 3, 4)  # was: numpy refused the float shape
    one = stc(ev, (4, 3), 2, spatial_factor=4)
    for f in (2**31, 10**30):  # was: OverflowError in the int32 index arithmetic
        np.testing.assert_array_equal(stc(ev, (4, 3), 2, spatial_factor=f), one)
        np.testing.assert_array_equal(stc_batch([ev], (4, 3), 2, spatial_factor=f)[:, 0].numpy(), one)


# ================================================================= regressions: path-level cases and time order


def _reader_calls() -> dict[str, tuple[str, object]]:
    """Every file entry point: ``name: (suffix, call(path))``."""
    from fewstep.data.cifar import safe_unpickle
    from fewstep.data.idx import read_idx
    from fewstep.events import readers as r

    return {"read_idx": (".gz", read_idx), "safe_unpickle": ("", safe_unpickle),
            "read_nmnist_bin": (".bin", r.read_nmnist_bin), "read_aedat2": (".aedat", r.read_aedat2),
            "read_aedat31": (".aedat", r.read_aedat31), "read_gesture_labels": (".csv", r.read_gesture_labels),
            "read_aedat4": (".aedat4", r.read_aedat4), "read_aedat4_header": (".aedat4", r.read_aedat4_header),
            "read_prophesee_dat": (".dat", r.read_prophesee_dat), "read_events": (".bin", r.read_events)}


@pytest.mark.parametrize("kind, os_error", [
    ("missing", FileNotFoundError), ("dangling-symlink", FileNotFoundError), ("directory", IsADirectoryError),
    ("symlink-loop", OSError), ("self-symlink", OSError), ("parent-is-a-file", NotADirectoryError),
    ("non-utf8-name (truncated file)", None), ("non-utf8-directory", None),
])
@pytest.mark.parametrize("reader", sorted(_reader_calls()))
def test_unreadable_paths_are_one_data_format_error_naming_the_file(tmp_path: Path, reader: str, kind: str,
                                                                    os_error: type | None) -> None:
    """Was: the bare OSError (``[Errno 40] Too many levels of symbolic links``) from the first
    ``open``; now the documented error naming the file, still the OSError for callers that catch it."""
    fuzz = _harness()
    suffix, call = _reader_calls()[reader]
    valid = b"\x00\x00\x08\x01\x00\x00\x00\x02ab" if reader == "read_idx" else b"%" + b"\x00" * 63
    path, _ = fuzz.path_case(kind, tmp_path, suffix, valid)
    with pytest.raises(DataFormatError) as info:
        call(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    if os_error is not None:
        assert isinstance(info.value, os_error) and info.value.errno is not None
        assert str(info.value).endswith(f"cannot read the file: {info.value.strerror}")


def test_image_and_checkpoint_loaders_name_an_unreadable_file(tmp_path: Path) -> None:
    from fewstep.data.imagefolder import decode_images
    from fewstep.errors import CheckpointError
    from fewstep.train.checkpoint import load_checkpoint

    fuzz = _harness()
    for i, kind in enumerate(["missing", "directory", "symlink-loop", "non-utf8-name (truncated file)"]):
        folder = tmp_path / str(i)
        folder.mkdir()
        path, _ = fuzz.path_case(kind, folder, ".jpg", b"\xff\xd8\xff\xe0" + b"\x00" * 60)
        with pytest.raises(DataFormatError, match="cannot decode image") as info:
            decode_images([path])
        assert str(path) in str(info.value)
        with pytest.raises(CheckpointError) as ckpt:
            load_checkpoint(path)
        assert str(path) in str(ckpt.value)


@pytest.mark.parametrize("kind, match", [("directory", "cannot read the recipe file: Is a directory"),  # IsADirectoryError
                                         ("symlink-loop", "no such recipe file"), ("missing", "no such recipe file")])
def test_recipe_paths_that_cannot_be_read(tmp_path: Path, kind: str, match: str) -> None:
    from fewstep.config import load_recipe
    from fewstep.errors import ConfigError

    path, _ = _harness().path_case(kind, tmp_path, ".toml", b"")
    with pytest.raises(ConfigError, match=match) as info:
        load_recipe(str(path))
    assert str(path) in str(info.value)


@pytest.mark.parametrize("text, match", [
    (b"name = '\xff'\n", "not a text .UTF-8. file: byte 8 is 0xff"),  # was a ConfigError quoting the codec
    (b"x = " + b"[" * 2000 + b"]" * 2000 + b"\n", "nested too deeply"),  # was RecursionError from tomllib
    (b"x = " + b"{a=" * 2000 + b"1" + b"}" * 2000 + b"\n", "nested too deeply"),
])
def test_recipe_contents_tomllib_cannot_take(tmp_path: Path, text: bytes, match: str) -> None:
    from fewstep.config import load_recipe
    from fewstep.errors import ConfigError

    path = tmp_path / "r.toml"
    path.write_bytes(text)
    with pytest.raises(ConfigError, match=match) as info:
        load_recipe(str(path))
    assert str(path) in str(info.value)


_UNSORTED_T = [50, 10, 30, 10, 20]  # out of order, with a tie (stable: file order kept among equals)


def _unsorted_events() -> np.ndarray:
    from fewstep.events.types import make_events

    return make_events([0, 1, 2, 3, 4], [5, 6, 7, 8, 9], _UNSORTED_T, [1, 0, 1, 1, 0])


@pytest.mark.parametrize("fmt", ["nmnist", "aedat2", "aedat31", "aedat4", "dat"])
def test_readers_return_time_sorted_events(tmp_path: Path, fmt: str) -> None:
    """Was: events in file order, so a file (or a corrupt timestamp) out of order gave an unsorted
    stream, which STC's time bins and the gesture splitting silently get wrong."""
    from fewstep.events import readers as r

    ev = _unsorted_events()
    p = tmp_path / f"rec.{fmt}"
    if fmt == "nmnist":
        r.write_nmnist_bin(p, ev)
        got, _ = r.read_nmnist_bin(p)
    elif fmt == "aedat2":
        r.write_aedat2(p, ev)
        got, _ = r.read_aedat2(p)
    elif fmt == "aedat31":
        r.write_aedat31(p, ev)
        got, _ = r.read_aedat31(p)
    elif fmt == "aedat4":
        xml = AEDAT4_XML.format(comp="NONE", w=40, h=30)
        p.write_bytes(build_aedat4([(0, event_packet([(int(e["t"]), int(e["x"]), int(e["y"]), int(e["p"]))
                                                                  for e in ev]))], 0, xml))
        got, _ = r.read_aedat4(p)
    else:
        r.write_prophesee_dat(p, ev, (40, 30))
        got, _ = r.read_prophesee_dat(p)
    order = np.argsort(ev["t"], kind="stable")
    assert got["t"].tolist() == sorted(_UNSORTED_T)
    for field in "xyp":
        assert got[field].tolist() == ev[field][order].tolist()


def test_aedat4_negative_timestamps_are_refused(tmp_path: Path) -> None:
    from fewstep.events.readers import read_aedat4

    xml = AEDAT4_XML.format(comp="NONE", w=40, h=30)
    with pytest.raises(DataFormatError, match=r"negative timestamp -7 \(1 such events\)"):  # was returned as is
        read_aedat4(_aedat4_with(tmp_path, xml, [(-7, 1, 1, 1), (5, 2, 2, 0)]))
