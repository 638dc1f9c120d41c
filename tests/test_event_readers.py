"""Event-file readers: each format is written byte by byte here (struct / hand-packed, not by
the library's writers) and read back exactly; writers round-trip; truncated and malformed
files raise DataFormatError naming the file and byte offset; the real sample recordings in
``$FEWSTEP_DATA/event-samples`` read to their known sizes."""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from format_writers import AEDAT4_EVENTS_A as EVENTS_A
from format_writers import AEDAT4_EVENTS_B as EVENTS_B
from format_writers import (
    AEDAT4_MAGIC,
    AEDAT4_XML,
    AEDAT31_HEADER,
    build_aedat4,
    caer_packet,
    dat_bytes,
    event_packet,
    nmnist_record,
    polarity_event,
)

from fewstep.errors import DataFormatError
from fewstep.events.readers import (
    read_aedat2,
    read_aedat4,
    read_aedat4_header,
    read_aedat31,
    read_events,
    read_gesture_labels,
    read_nmnist_bin,
    read_prophesee_dat,
    split_gesture_recording,
    write_aedat2,
    write_aedat31,
    write_nmnist_bin,
    write_prophesee_dat,
)
from fewstep.events.types import EVENT_DTYPE, make_events

# ----------------------------------------------------------------------------- helpers


def _sample(name: str) -> Path:
    root = os.environ.get("FEWSTEP_DATA")
    if not root:
        pytest.skip("FEWSTEP_DATA is not set: the real event samples live in $FEWSTEP_DATA/event-samples")
    path = Path(root) / "event-samples" / name
    if not path.is_file():
        pytest.skip(f"real sample {path} is absent (see shared/data/README.md)")
    return path


def _random_events(rng: np.random.Generator, n: int, w: int, h: int, t_max: int) -> np.ndarray:
    t = np.sort(rng.integers(0, t_max, n))
    return make_events(rng.integers(0, w, n), rng.integers(0, h, n), t, rng.integers(0, 2, n))


def _assert_events_equal(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == EVENT_DTYPE
    assert len(a) == len(b)
    for f in ("x", "y", "t", "p"):
        np.testing.assert_array_equal(a[f], b[f], err_msg=f)


def _expect_error(path: Path, offset: int | None, func, *args, **kwargs) -> DataFormatError:
    with pytest.raises(DataFormatError) as info:
        func(path, *args, **kwargs)
    err = info.value
    assert str(path) in str(err)
    if offset is not None:
        assert err.offset == offset
        assert f"offset {offset}" in str(err)
    return err


# ----------------------------------------------------------------------------- N-MNIST


def test_nmnist_hand_packed(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(
        nmnist_record(3, 30, 1, 0x123456) + nmnist_record(0, 0, 0, 0) + nmnist_record(33, 1, 1, (1 << 23) - 1)
    )
    ev, size = read_nmnist_bin(path)
    assert size == (34, 34)
    # returned sorted by time (the readers' contract), so the record with t = 0 comes first
    _assert_events_equal(ev, make_events([0, 3, 33], [0, 30, 1], [0, 0x123456, (1 << 23) - 1], [0, 1, 1]))


def test_nmnist_overflow_marker(tmp_path):
    # y == 240 marks a timestamp overflow of 2**13 us for every later event (Read_Ndataset.m)
    path = tmp_path / "ovf.bin"
    path.write_bytes(nmnist_record(1, 2, 1, 100) + nmnist_record(0, 240, 0, 0) + nmnist_record(4, 5, 0, 50))
    ev, size = read_nmnist_bin(path, sensor_size=None)
    _assert_events_equal(ev, make_events([1, 4], [2, 5], [100, 50 + 8192], [1, 0]))
    assert size == (5, 6)


def test_nmnist_writer_round_trip(tmp_path):
    ev = _random_events(np.random.default_rng(0), 500, 34, 34, 1 << 23)
    write_nmnist_bin(tmp_path / "r.bin", ev)
    assert (tmp_path / "r.bin").stat().st_size == 5 * 500
    got, _ = read_nmnist_bin(tmp_path / "r.bin")
    _assert_events_equal(got, ev)


def test_nmnist_truncated_and_out_of_range(tmp_path):
    path = tmp_path / "trunc.bin"
    path.write_bytes(nmnist_record(1, 1, 0, 10) * 2 + b"\x01\x02")
    err = _expect_error(path, 10, read_nmnist_bin)
    assert "truncated" in str(err)
    path.write_bytes(nmnist_record(1, 1, 0, 10) + nmnist_record(34, 1, 0, 11))
    err = _expect_error(path, 5, read_nmnist_bin)
    assert "outside the 34x34 sensor" in str(err)


def test_nmnist_real_sample():
    ev, size = read_nmnist_bin(_sample("sample_nmnist.bin"))
    assert len(ev) == 4325 and size == (34, 34)
    assert ev["x"].max() < 34 and ev["y"].max() < 34 and ev["x"].min() >= 0
    assert np.all(np.diff(ev["t"]) >= 0)
    assert set(np.unique(ev["p"])) == {0, 1}


# ----------------------------------------------------------------------------- AEDAT 2.0

AEDAT2_HEADER = b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n# Timestamps tick is 1 us\r\n"


def test_aedat2_hand_packed_jaer_and_spikingjelly(tmp_path):
    # raw_x = 5, raw_y = 10; bit 0 clear = ON in jAER's DVS128 extractor
    on = (10 << 8) | (5 << 1)
    off = (127 << 8) | (0 << 1) | 1
    special = 0x8000  # bit 15: sync / special event, no pixel
    body = struct.pack(">II", on, 7) + struct.pack(">II", special, 8) + struct.pack(">II", off, 9)
    path = tmp_path / "c.aedat"
    path.write_bytes(AEDAT2_HEADER + body)
    ev, size = read_aedat2(path)
    assert size == (128, 128)
    _assert_events_equal(ev, make_events([122, 127], [10, 127], [7, 9], [1, 0]))
    sj, _ = read_aedat2(path, orientation="spikingjelly")
    _assert_events_equal(sj, make_events([117, 0], [122, 127], [7, 9], [1, 0]))


def test_aedat2_timestamp_wrap(tmp_path):
    path = tmp_path / "wrap.aedat"
    path.write_bytes(AEDAT2_HEADER + struct.pack(">IIII", 2, 0xFFFFFFF0, 2, 0x10))
    ev, _ = read_aedat2(path)
    np.testing.assert_array_equal(ev["t"], [0xFFFFFFF0, (1 << 32) + 0x10])


@pytest.mark.parametrize("orientation", ["jaer", "spikingjelly"])
def test_aedat2_writer_round_trip(tmp_path, orientation):
    ev = _random_events(np.random.default_rng(1), 400, 128, 128, 1 << 32)
    write_aedat2(tmp_path / "w.aedat", ev, orientation=orientation)
    got, _ = read_aedat2(tmp_path / "w.aedat", orientation=orientation)
    _assert_events_equal(got, ev)


def test_aedat2_malformed(tmp_path):
    path = tmp_path / "bad.aedat"
    path.write_bytes(AEDAT2_HEADER + struct.pack(">II", 2, 1) + b"\x00\x00\x01")
    err = _expect_error(path, len(AEDAT2_HEADER) + 8, read_aedat2)
    assert "truncated" in str(err)
    path.write_bytes(b"#!AER-DAT1.0\r\n" + struct.pack(">II", 2, 1))
    _expect_error(path, 0, read_aedat2)
    path.write_bytes(b"#!AER-DAT2.0\r\n# header line without end")
    _expect_error(path, 14, read_aedat2)


# ----------------------------------------------------------------------------- AEDAT 3.1

def test_aedat31_hand_packed(tmp_path):
    special = caer_packet(0, 8, 0, [struct.pack("<Ii", 0xDEADBEEF, 3)])
    imu = caer_packet(3, 36, 0, [b"\x01" * 36])
    pkt1 = caer_packet(1, 8, 0, [polarity_event(127, 0, 1, 5), polarity_event(9, 9, 0, 6, valid=0),
                                 polarity_event(0, 127, 0, 7)])
    pkt2 = caer_packet(1, 8, 1, [polarity_event(64, 32, 1, 2)], capacity=3)  # unused capacity is skipped
    path = tmp_path / "user01_led.aedat"
    path.write_bytes(AEDAT31_HEADER + special + pkt1 + imu + pkt2)
    ev, size = read_aedat31(path)
    assert size == (128, 128)
    _assert_events_equal(ev, make_events([127, 0, 64], [0, 127, 32], [5, 7, (1 << 31) | 2], [1, 0, 1]))


def test_aedat31_writer_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    ev = _random_events(rng, 700, 128, 128, 1000)
    ev["t"] += (1 << 31) - 500  # crosses one timestamp overflow
    write_aedat31(tmp_path / "w.aedat", ev, events_per_packet=64)
    got, size = read_aedat31(tmp_path / "w.aedat")
    assert size == (128, 128)
    _assert_events_equal(got, ev)


def test_aedat31_truncated_and_malformed(tmp_path):
    pkt = caer_packet(1, 8, 0, [polarity_event(1, 2, 1, 3)] * 4)
    path = tmp_path / "t.aedat"
    start = len(AEDAT31_HEADER)
    path.write_bytes(AEDAT31_HEADER + pkt + pkt[:-5])  # body of the second packet cut short
    err = _expect_error(path, start + len(pkt), read_aedat31)
    assert "truncated" in str(err)
    path.write_bytes(AEDAT31_HEADER + pkt + pkt[:10])  # packet header cut short
    _expect_error(path, start + len(pkt), read_aedat31)
    path.write_bytes(AEDAT31_HEADER[:-len(b"#!END-HEADER\r\n")])  # no end of header
    _expect_error(path, None, read_aedat31)
    bad_size = struct.pack("<hhiiiiii", 1, 1, 12, 4, 0, 1, 1, 1) + b"\x00" * 12
    path.write_bytes(AEDAT31_HEADER + bad_size)
    _expect_error(path, start, read_aedat31)
    bad_count = struct.pack("<hhiiiiii", 1, 1, 8, 4, 0, 1, 2, 2) + b"\x00" * 8  # number > capacity
    path.write_bytes(AEDAT31_HEADER + bad_count)
    _expect_error(path, start, read_aedat31)
    path.write_bytes(AEDAT31_HEADER + caer_packet(1, 8, 0, [polarity_event(200, 2, 1, 3)]))
    err = _expect_error(path, start + 28, read_aedat31)
    assert "outside the 128x128 sensor" in str(err)


def test_gesture_labels_and_split(tmp_path):
    csv = tmp_path / "user01_fluorescent_labels.csv"
    csv.write_text("class,startTime_usec,endTime_usec\n1,100,200\n11,200,350\n")
    labels = read_gesture_labels(csv)
    assert labels["label"].tolist() == [0, 10]
    assert labels["start"].tolist() == [100, 200] and labels["end"].tolist() == [200, 350]
    ev = make_events(np.arange(8), np.zeros(8), [50, 100, 150, 199, 200, 349, 350, 400], np.ones(8))
    parts = split_gesture_recording(ev, labels)
    assert [c for _, c in parts] == [0, 10]
    assert parts[0][0]["t"].tolist() == [100, 150, 199]
    assert parts[1][0]["t"].tolist() == [200, 349]
    # unsorted input gives the same segments
    shuffled = ev[::-1]
    assert sorted(split_gesture_recording(shuffled, labels)[0][0]["t"].tolist()) == [100, 150, 199]


@pytest.mark.parametrize(
    "text, line",
    [
        ("klass,startTime_usec,endTime_usec\n1,1,2\n", 0),
        ("class,startTime_usec,endTime_usec\n12,1,2\n", 1),
        ("class,startTime_usec,endTime_usec\n1,1,2\n3,5,x\n", 2),
        ("class,startTime_usec,endTime_usec\n2,9,9\n", 1),
    ],
)
def test_gesture_labels_malformed(tmp_path, text, line):
    csv = tmp_path / "labels.csv"
    csv.write_text(text)
    offset = sum(len(s) for s in text.splitlines(keepends=True)[:line])
    _expect_error(csv, offset, read_gesture_labels)


# ----------------------------------------------------------------------------- AEDAT 4.0

def _aedat4_file(packets: list[tuple[int, bytes]], compression: int = 0, with_table: bool = True) -> bytes:
    info = AEDAT4_XML.format(comp={0: "NONE", 1: "LZ4"}[compression], w=40, h=30)
    return build_aedat4(packets, compression, info, with_table, data_table=b"FAKE-DATA-TABLE")


@pytest.mark.parametrize("compression", [0, 1])
def test_aedat4_hand_built(tmp_path, compression):
    if compression:
        pytest.importorskip("lz4.frame")
    imu = event_packet([(5, 1, 1, 1)], identifier=b"IMUS")  # other stream: skipped unparsed
    path = tmp_path / "rec.aedat4"
    path.write_bytes(_aedat4_file([(0, event_packet(EVENTS_A)), (2, imu), (0, event_packet(EVENTS_B))], compression))
    ev, size = read_aedat4(path)
    assert size == (40, 30)
    t, x, y, p = zip(*(EVENTS_A + EVENTS_B))
    _assert_events_equal(ev, make_events(x, y, t, p))
    comp, table_pos, streams, first = read_aedat4_header(path)
    assert comp == compression and [s.type for s in streams] == ["EVTS", "IMUS"]
    assert table_pos == path.stat().st_size - len(b"FAKE-DATA-TABLE")
    assert read_events(path)[0].tolist() == ev.tolist()


def test_aedat4_truncated_and_malformed(tmp_path):
    good = _aedat4_file([(0, event_packet(EVENTS_A)), (0, event_packet(EVENTS_B))], with_table=False)
    path = tmp_path / "t.aedat4"
    last_packet = len(good) - (8 + len(event_packet(EVENTS_B)))
    path.write_bytes(good[:-7])
    err = _expect_error(path, last_packet, read_aedat4)
    assert "cut short" in str(err)
    with_table = _aedat4_file([(0, event_packet(EVENTS_A))])
    path.write_bytes(with_table[:-20])  # data table position now lies beyond the end
    err = _expect_error(path, None, read_aedat4)
    assert "truncated" in str(err)
    path.write_bytes(good[:30])  # IOHeader cut short
    _expect_error(path, len(AEDAT4_MAGIC) + 4, read_aedat4)
    wrong_id = _aedat4_file([(0, event_packet(EVENTS_A, identifier=b"XXXX"))], with_table=False)
    path.write_bytes(wrong_id)
    first = len(wrong_id) - (8 + len(event_packet(EVENTS_A)))
    err = _expect_error(path, first, read_aedat4)
    assert "EVTS" in str(err)
    path.write_bytes(b"#!AER-DAT4.1\r\n")
    _expect_error(path, 0, read_aedat4)


def test_aedat4_lz4_missing_gives_install_hint(tmp_path, monkeypatch):
    pytest.importorskip("lz4.frame")
    path = tmp_path / "c.aedat4"
    path.write_bytes(_aedat4_file([(0, event_packet(EVENTS_A))], compression=1))
    monkeypatch.setitem(sys.modules, "lz4", None)
    monkeypatch.setitem(sys.modules, "lz4.frame", None)
    with pytest.raises(ImportError, match=r"pip install fewstep\[events\]"):
        read_aedat4(path)


def test_aedat4_real_sample():
    pytest.importorskip("lz4.frame", reason="the sample's packets are LZ4-compressed: pip install fewstep[events]")
    ev, size = read_aedat4(_sample("sample.aedat4"))
    assert size == (320, 240)
    assert 110_000 <= len(ev) <= 114_000  # 111,954 polarity events
    duration = (ev["t"].max() - ev["t"].min()) / 1e6
    assert duration == pytest.approx(0.59, abs=0.01)
    assert np.all(np.diff(ev["t"]) >= 0)
    assert ev["x"].min() >= 0 and ev["x"].max() < 320 and ev["y"].min() >= 0 and ev["y"].max() < 240
    assert 0.3 < ev["p"].mean() < 0.7


# ----------------------------------------------------------------------------- Prophesee .dat


def test_prophesee_hand_packed(tmp_path):
    path = tmp_path / "c.dat"
    path.write_bytes(dat_bytes([(63, 47, 10, 1), (0, 0, 20, 0), (5, 6, 2**32 - 1, 1)]))
    ev, size = read_prophesee_dat(path)
    assert size == (64, 48)
    _assert_events_equal(ev, make_events([63, 0, 5], [47, 0, 6], [10, 20, 2**32 - 1], [1, 0, 1]))
    # Event2d (type 0) files without Width/Height default to the ATIS Gen1 304x240
    path.write_bytes(dat_bytes([(300, 200, 1, 0)], header=b"% Version 2\n", etype=0))
    assert read_prophesee_dat(path)[1] == (304, 240)


def test_prophesee_writer_round_trip(tmp_path):
    ev = _random_events(np.random.default_rng(3), 300, 640, 480, 1 << 32)
    write_prophesee_dat(tmp_path / "w.dat", ev, sensor_size=(640, 480))
    got, size = read_prophesee_dat(tmp_path / "w.dat")
    assert size == (640, 480)
    _assert_events_equal(got, ev)


def test_prophesee_malformed(tmp_path):
    path = tmp_path / "bad.dat"
    header = b"% Version 2\n% Width 64\n% Height 48\n"
    good = dat_bytes([(1, 2, 3, 1)] * 3, header=header)
    path.write_bytes(good[:-3])
    err = _expect_error(path, len(header) + 2 + 16, read_prophesee_dat)
    assert "truncated" in str(err)
    path.write_bytes(dat_bytes([(1, 2, 3, 1)], header=header, etype=0x0E))
    _expect_error(path, len(header), read_prophesee_dat)
    path.write_bytes(dat_bytes([(1, 2, 3, 1)], header=header, size=16))
    _expect_error(path, len(header) + 1, read_prophesee_dat)
    path.write_bytes(dat_bytes([(1, 2, 3, 1), (64, 2, 3, 1)], header=header))
    _expect_error(path, len(header) + 2 + 8, read_prophesee_dat)


def test_prophesee_real_sample():
    ev, size = read_prophesee_dat(_sample("sample_ncars.dat"))
    assert len(ev) == 2009 and size == (304, 240)
    assert np.all(np.diff(ev["t"]) >= 0)
    assert ev["x"].max() < 120 and ev["y"].max() < 100  # N-CARS samples are crops within 120x100
    assert set(np.unique(ev["p"])) == {0, 1}


# ----------------------------------------------------------------------------- dispatch


def test_read_events_dispatch(tmp_path):
    ev = _random_events(np.random.default_rng(4), 50, 34, 34, 100_000)
    write_nmnist_bin(tmp_path / "a.bin", ev)
    write_aedat2(tmp_path / "b.aedat", ev)
    write_aedat31(tmp_path / "c.aedat", ev)
    write_prophesee_dat(tmp_path / "d.dat", ev, sensor_size=(34, 34))
    for name in ("a.bin", "b.aedat", "c.aedat", "d.dat"):
        got, _ = read_events(tmp_path / name)
        _assert_events_equal(got, ev)
    (tmp_path / "e.xyz").write_bytes(b"\x00" * 16)
    _expect_error(tmp_path / "e.xyz", 0, read_events)
    (tmp_path / "f.aedat").write_bytes(b"#!AER-DAT1.0\r\n")
    err = _expect_error(tmp_path / "f.aedat", 0, read_events)
    assert "unsupported AEDAT version" in str(err)


def test_read_events_real_samples():
    for name, n in (("sample_nmnist.bin", 4325), ("sample_ncars.dat", 2009)):
        assert len(read_events(_sample(name))[0]) == n
