"""Prophesee / Metavision ``.dat`` files of CD events (N-CARS, Gen1 Automotive, Metavision).

Layout (Prophesee "DAT File Format"): ASCII header lines ``% keyword value\\n``
(``Width``/``Height`` when the writer knew the sensor), then two bytes: event type
(0x00 Event2d, 0x0C EventCd; 0x0E would be external triggers) and event size (8). Then
little-endian 8-byte events: ``uint32 timestamp`` (us) and ``uint32 data`` with
``x = bits 0..13``, ``y = bits 14..27``, ``p = bits 28..31`` (Metavision ``EventCD`` bit fields:
14 + 14 + 4 bits; p is 0 = OFF, 1 = ON).

Old files (N-CARS, "% Version 2" without Width/Height) come from the ATIS Gen1 sensor, so the
sensor size defaults to 304x240 there (the default of Prophesee's own ``PSEELoader``); N-CARS
samples themselves are crops inside 120x100 (pass ``sensor_size=(120, 100)`` for them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import DataFormatError, reading
from ..types import EVENT_DTYPE
from ._limits import fields_to_write
from ._order import time_ordered

EVENT2D, EVENT_CD, EVENT_EXT_TRIGGER = 0x00, 0x0C, 0x0E
ATIS_GEN1_SENSOR_SIZE = (304, 240)
MAX_SENSOR = 1 << 14  # x and y are 14-bit fields
_RECORD = np.dtype([("t", "<u4"), ("data", "<u4")])


def _parse_header(data: bytes, path: Path, offsets: dict[str, int] | None = None) -> tuple[dict[str, str], int]:
    """``({keyword: value}, offset of the event-type byte)``; ``offsets`` receives each keyword's line offset."""
    header: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos] == 0x25:  # '%'
        end = data.find(b"\n", pos)
        if end < 0:
            raise DataFormatError(path, "header line not terminated by a newline (truncated header)", pos)
        words = data[pos + 1 : end].decode("latin-1").strip().split(None, 1)
        if words:
            header[words[0]] = words[1] if len(words) > 1 else ""
            if offsets is not None:
                offsets[words[0]] = pos
        pos = end + 1
    return header, pos


def read_prophesee_dat(
    path: str | Path, sensor_size: tuple[int, int] | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """Read a Prophesee ``.dat`` file of CD events.

    Args:
        path: the ``.dat`` file.
        sensor_size: ``(width, height)``; by default the header's Width/Height, else 304x240.

    Raises:
        DataFormatError: no ``%`` header, an event type other than Event2d/EventCd, an event
            size other than 8, a payload that is not whole 8-byte events (truncated), or events
            outside the sensor; names the file and byte offset.
    """
    path = Path(path)
    with reading(path):
        data = path.read_bytes()
    if not data.startswith(b"%"):
        raise DataFormatError(path, "not a Prophesee .dat file: no '%' header", 0)
    offsets: dict[str, int] = {}
    header, pos = _parse_header(data, path, offsets)
    if len(data) - pos < 2:
        raise DataFormatError(path, "file ends before the event type and size bytes (truncated)", pos)
    ev_type, ev_size = data[pos], data[pos + 1]
    if ev_type not in (EVENT2D, EVENT_CD):
        kind = "external-trigger" if ev_type == EVENT_EXT_TRIGGER else "unknown"
        raise DataFormatError(path, f"event type 0x{ev_type:02X} ({kind}) is not a CD event type (0x00 or 0x0C)", pos)
    if ev_size != _RECORD.itemsize:
        raise DataFormatError(path, f"event size {ev_size}, expected 8", pos + 1)
    start = pos + 2
    payload = len(data) - start
    if payload % 8:
        raise DataFormatError(
            path,
            f"event data of {payload} bytes is not a multiple of 8: truncated event",
            start + payload - payload % 8,
        )
    rec = np.frombuffer(data, dtype=_RECORD, offset=start)
    word = rec["data"]
    ev = np.empty(len(rec), dtype=EVENT_DTYPE)
    ev["x"] = word & 0x3FFF
    ev["y"] = (word >> 14) & 0x3FFF
    ev["p"] = word >> 28
    ev["t"] = rec["t"]

    if sensor_size is None:
        try:
            sensor_size = (int(header["Width"]), int(header["Height"]))
        except (KeyError, ValueError):
            sensor_size = ATIS_GEN1_SENSOR_SIZE
        for key, value in zip(("Width", "Height"), sensor_size):
            if not 1 <= value <= MAX_SENSOR:
                raise DataFormatError(
                    path, f"header {key} {value} is not a sensor size (1..{MAX_SENSOR}: coordinates are 14-bit)",
                    offsets.get(key, 0),
                )
    w, h = sensor_size
    bad = (ev["x"] >= w) | (ev["y"] >= h)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataFormatError(
            path,
            f"event ({int(ev['x'][i])}, {int(ev['y'][i])}) outside the {w}x{h} sensor ({int(bad.sum())} such events)",
            start + 8 * i,
        )
    if (ev["p"] > 1).any():
        i = int(np.argmax(ev["p"] > 1))
        raise DataFormatError(path, f"polarity {int(ev['p'][i])} is not 0 or 1", start + 8 * i)
    return time_ordered(ev), (int(w), int(h))


def write_prophesee_dat(path: str | Path, events: np.ndarray, sensor_size: tuple[int, int] | None = None) -> None:
    """Write CD events as a Prophesee ``.dat`` file (EventCd, 8-byte events)."""
    ev, x, y, t = fields_to_write(events, 0x3FFF, ".dat coordinates are 14-bit (0..16383)",
                                  (1 << 32) - 1, ".dat timestamps are 32-bit (0..2**32-1 us)")
    lines = ["% Data file containing CD events", "% Version 2"]
    if sensor_size is not None:
        lines += [f"% Width {int(sensor_size[0])}", f"% Height {int(sensor_size[1])}"]
    rec = np.empty(len(ev), dtype=_RECORD)
    rec["t"] = t
    rec["data"] = x | (y << 14) | ((ev["p"] != 0).astype(np.int64) << 28)
    Path(path).write_bytes(("\n".join(lines) + "\n").encode("ascii") + bytes([EVENT_CD, 8]) + rec.tobytes())
