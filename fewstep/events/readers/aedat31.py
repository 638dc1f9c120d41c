"""AEDAT 3.1 files written by cAER / libcaer (the DVS128 Gesture recordings), and the DVS128
Gesture label files.

Layout (iniVation, "AEDAT 3.1"): ASCII header lines starting with ``#`` (first
``#!AER-DAT3.1``), the last being ``#!END-HEADER\\r\\n``. Then event packets, each a 28-byte
little-endian header (libcaer ``struct caer_event_packet_header``)::

    int16 eventType, int16 eventSource, int32 eventSize, int32 eventTSOffset,
    int32 eventTSOverflow, int32 eventCapacity, int32 eventNumber, int32 eventValid

followed by ``eventCapacity * eventSize`` bytes of events, of which the first ``eventNumber``
are used. Polarity events (type 1) are 8 bytes: ``uint32 data, int32 timestamp`` with
``data`` bit 0 = valid mark, bit 1 = polarity (1 = ON), bits 2..16 = y, bits 17..31 = x
(libcaer ``polarity.h``; origin at the top-left, y grows downwards). The 64-bit timestamp is
``(eventTSOverflow << 31) | timestamp`` in us. Packets of other types (special, frame, IMU,
...) are skipped, as are events whose valid mark is 0.
"""

from __future__ import annotations

import csv
import io
import struct
import time
from pathlib import Path

import numpy as np

from ...errors import DataFormatError, reading
from ..types import EVENT_DTYPE, as_events
from ._limits import fields_to_write
from ._order import time_ordered

MAGIC = b"#!AER-DAT3."
END_HEADER = "!END-HEADER"
POLARITY_EVENT = 1
PACKET_HEADER = struct.Struct("<hhiiiiii")
_POLARITY = np.dtype([("data", "<u4"), ("ts", "<i4")])
LABEL_HEADER = ["class", "startTime_usec", "endTime_usec"]
GESTURE_CLASSES = (
    "hand_clapping",
    "right_hand_wave",
    "left_hand_wave",
    "right_arm_clockwise",
    "right_arm_counter_clockwise",
    "left_arm_clockwise",
    "left_arm_counter_clockwise",
    "arm_roll",
    "air_drums",
    "air_guitar",
    "other_gestures",
)
LABEL_DTYPE = np.dtype([("label", "<i8"), ("start", "<i8"), ("end", "<i8")])

# Sensor sizes for the camera names cAER writes in "#Source N: NAME" header lines.
_CAMERAS = (
    ("DVS128", (128, 128)),
    ("DAVIS240", (240, 180)),
    ("DAVIS346", (346, 260)),
    ("DAVIS640", (640, 480)),
    ("DVXPLORERLITE", (320, 240)),
    ("DVXPLORER", (640, 480)),
)


def _parse_header(data: bytes, path: Path) -> tuple[list[str], int]:
    """Header lines (without ``#`` and line ends) up to ``#!END-HEADER``, and where packets start."""
    if not data.startswith(MAGIC):
        raise DataFormatError(path, "not an AEDAT 3.x file: first line is not '#!AER-DAT3.1'", 0)
    lines: list[str] = []
    pos = 0
    while True:
        if pos >= len(data):
            raise DataFormatError(path, "header ends before the '#!END-HEADER' line (truncated header)", pos)
        if data[pos] != 0x23:
            raise DataFormatError(path, "header line does not start with '#' before '#!END-HEADER'", pos)
        end = data.find(b"\n", pos)
        if end < 0:
            raise DataFormatError(path, "header line not terminated by a newline (truncated header)", pos)
        line = data[pos + 1 : end].rstrip(b"\r").decode("latin-1")
        lines.append(line)
        pos = end + 1
        if line == END_HEADER:
            return lines, pos


def _sensor_from_header(lines: list[str]) -> tuple[int, int] | None:
    for line in lines:
        if line.startswith("Source") and ":" in line:
            name = line.split(":", 1)[1].replace(" ", "").replace("_", "").upper()
            for prefix, size in _CAMERAS:
                if name.startswith(prefix):
                    return size
    return None


def read_aedat31(
    path: str | Path, sensor_size: tuple[int, int] | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """Read the polarity events of an AEDAT 3.1 file.

    Args:
        path: the ``.aedat`` file.
        sensor_size: ``(width, height)``; by default taken from the ``#Source`` header line
            (``DVS128`` -> 128x128, DAVIS240/346, DVXplorer), else from the largest coordinates.

    Returns:
        ``(events, sensor_size)``, valid polarity events sorted by time (stably: file order
        among equal timestamps).

    Raises:
        DataFormatError: bad magic or header, a packet header or body cut short, impossible
            packet sizes, or events outside the sensor; names the file and byte offset.
    """
    path = Path(path)
    with reading(path):
        data = path.read_bytes()
    lines, pos = _parse_header(data, path)
    chunks: list[np.ndarray] = []
    overflows: list[int] = []
    bodies: list[int] = []
    n = len(data)
    while pos < n:
        if n - pos < PACKET_HEADER.size:
            raise DataFormatError(
                path, f"packet header cut short: {n - pos} of {PACKET_HEADER.size} bytes left (truncated file)", pos
            )
        etype, _src, esize, ts_off, ts_ovf, capacity, number, _valid = PACKET_HEADER.unpack_from(data, pos)
        if esize <= 0 or capacity < 0 or not 0 <= number <= capacity or ts_ovf < 0:
            raise DataFormatError(
                path,
                f"malformed packet header (type {etype}, eventSize {esize}, capacity {capacity}, "
                f"number {number}, tsOverflow {ts_ovf})",
                pos,
            )
        body = pos + PACKET_HEADER.size
        length = capacity * esize
        if body + length > n:
            raise DataFormatError(
                path,
                f"packet body cut short: header says {length} bytes, {n - body} left (truncated file)",
                pos,
            )
        if etype == POLARITY_EVENT:
            if esize != _POLARITY.itemsize or ts_off != 4:
                raise DataFormatError(
                    path, f"polarity packet with eventSize {esize} / eventTSOffset {ts_off} (expected 8 / 4)", pos
                )
            chunks.append(np.frombuffer(data, dtype=_POLARITY, count=number, offset=body))
            overflows.append(ts_ovf)
            bodies.append(body)
        pos = body + length

    counts = np.array([len(c) for c in chunks], dtype=np.int64)
    rec = np.concatenate(chunks) if chunks else np.empty(0, dtype=_POLARITY)
    word = rec["data"].astype(np.int64)
    overflow = np.repeat(np.array(overflows, dtype=np.int64), counts)
    valid = (word & 1) == 1
    ev = np.empty(int(valid.sum()), dtype=EVENT_DTYPE)
    word = word[valid]
    ev["x"] = (word >> 17) & 0x7FFF
    ev["y"] = (word >> 2) & 0x7FFF
    ev["p"] = (word >> 1) & 1
    ev["t"] = (overflow[valid] << 31) | (rec["ts"][valid].astype(np.int64) & 0x7FFFFFFF)

    if sensor_size is None:
        sensor_size = _sensor_from_header(lines)
    if sensor_size is None:
        sensor_size = (int(ev["x"].max()) + 1, int(ev["y"].max()) + 1) if len(ev) else (0, 0)
    else:
        w, h = sensor_size
        bad = (ev["x"] >= w) | (ev["y"] >= h)
        if bad.any():
            i = int(np.argmax(bad))
            # byte offset of the offending event: packet body start + 8 * index within packet
            index = np.flatnonzero(valid)[i]
            packet = int(np.searchsorted(np.cumsum(counts), index, side="right"))
            offset = bodies[packet] + 8 * int(index - (counts[:packet].sum()))
            raise DataFormatError(
                path,
                f"event ({int(ev['x'][i])}, {int(ev['y'][i])}) outside the {w}x{h} sensor "
                f"({int(bad.sum())} such events)",
                offset,
            )
    return time_ordered(ev), (int(sensor_size[0]), int(sensor_size[1]))


def write_aedat31(
    path: str | Path, events: np.ndarray, source: str = "DVS128", events_per_packet: int = 4096
) -> None:
    """Write events as an AEDAT 3.1 file of polarity packets (inverse of :func:`read_aedat31`).

    Events are written in the given order, split into packets of at most
    ``events_per_packet`` events that never straddle a 2**31 us timestamp overflow.
    """
    ev = as_events(events)
    if events_per_packet <= 0:
        raise ValueError("events_per_packet must be positive")
    ev, x, y, t = fields_to_write(ev, 0x7FFF, "AEDAT 3.1 coordinates are 15-bit (0..32767)", None,
                                  "timestamps must be non-negative")
    word = (x << 17) | (y << 2) | ((ev["p"] != 0).astype(np.int64) << 1) | 1
    rec = np.empty(len(ev), dtype=_POLARITY)
    rec["data"] = word
    rec["ts"] = t & 0x7FFFFFFF
    overflow = t >> 31
    header = (
        "#!AER-DAT3.1\r\n"
        "#Format: RAW\r\n"
        f"#Source 1: {source}\r\n"
        f"#Start-Time: {time.strftime('%Y-%m-%d %H:%M:%S')} (written by fewstep)\r\n"
        "#!END-HEADER\r\n"
    )
    out = io.BytesIO()
    out.write(header.encode("ascii"))
    # packet boundaries: every overflow change and every events_per_packet events
    change = np.flatnonzero(np.diff(overflow)) + 1
    starts = np.unique(np.concatenate([[0], change, np.arange(0, len(ev), events_per_packet)]))
    ends = np.append(starts[1:], len(ev))
    for s, e in zip(starts.tolist(), ends.tolist()):
        if e <= s:
            continue
        k = e - s
        out.write(PACKET_HEADER.pack(POLARITY_EVENT, 1, 8, 4, int(overflow[s]), k, k, k))
        out.write(rec[s:e].tobytes())
    Path(path).write_bytes(out.getvalue())


def read_gesture_labels(path: str | Path) -> np.ndarray:
    """Read a DVS128 Gesture ``userXX_lighting_labels.csv``.

    The file has the header ``class,startTime_usec,endTime_usec`` and one row per gesture,
    with 1-based classes 1..11. Returns a :data:`LABEL_DTYPE` array whose ``label`` is 0-based
    (0..10, indexing :data:`GESTURE_CLASSES`).

    Raises:
        DataFormatError: wrong header, non-integer fields, class outside 1..11 or an empty
            time range; the offset is the start of the offending line.
    """
    path = Path(path)
    with reading(path):
        text = path.read_bytes()
    rows: list[tuple[int, int, int]] = []
    offset = 0
    for lineno, raw in enumerate(text.splitlines(keepends=True)):
        line_offset = offset
        offset += len(raw)
        line = raw.decode("utf-8", "replace").strip()
        if not line:
            continue
        fields = next(csv.reader([line]))
        fields = [f.strip() for f in fields]
        if lineno == 0:
            if fields != LABEL_HEADER:
                raise DataFormatError(path, f"label header is {fields}, expected {LABEL_HEADER}", line_offset)
            continue
        try:
            cls, start, end = (int(f) for f in fields)
        except ValueError:
            problem = f"line {lineno + 1}: expected three integers, got {line!r}"
            raise DataFormatError(path, problem, line_offset) from None
        if not 1 <= cls <= len(GESTURE_CLASSES):
            problem = f"line {lineno + 1}: class {cls} outside 1..{len(GESTURE_CLASSES)}"
            raise DataFormatError(path, problem, line_offset)
        if end <= start:
            raise DataFormatError(path, f"line {lineno + 1}: end time {end} not after start time {start}", line_offset)
        if not -(2**63) <= start < 2**63 or not -(2**63) <= end < 2**63:
            problem = f"line {lineno + 1}: time {start if abs(start) >= 2**63 else end} does not fit in 64 bits"
            raise DataFormatError(path, problem, line_offset)
        rows.append((cls - 1, start, end))
    if not text.strip():
        raise DataFormatError(path, "empty label file", 0)
    return np.array(rows, dtype=LABEL_DTYPE)


def split_gesture_recording(events: np.ndarray, labels: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """Cut one DVS128 Gesture recording into its labelled gestures.

    Each label row keeps the events with ``start <= t < end`` (the convention of SpikingJelly's
    DVS128 Gesture conversion); returns ``[(events, class_id), ...]`` in label order with
    0-based class ids from :func:`read_gesture_labels`.
    """
    ev = as_events(events)
    t = ev["t"]
    out: list[tuple[np.ndarray, int]] = []
    if len(t) > 1 and np.all(t[1:] >= t[:-1]):
        for row in labels:
            lo, hi = np.searchsorted(t, [row["start"], row["end"]], side="left")
            out.append((ev[lo:hi].copy(), int(row["label"])))
    else:
        for row in labels:
            mask = (t >= row["start"]) & (t < row["end"])
            out.append((ev[mask], int(row["label"])))
    return out
