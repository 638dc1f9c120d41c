"""N-MNIST / N-Caltech101 ``.bin`` files (Orchard et al. 2015, ATIS camera).

Each event is one 40-bit (5-byte) big-endian record::

    byte 0        x address (8 bit)
    byte 1        y address (8 bit)
    byte 2 bit 7  polarity (1 = ON, 0 = OFF)
    bits 22..0    timestamp in microseconds: byte 2 bits 6..0 are bits 22..16,
                  byte 3 is bits 15..8, byte 4 is bits 7..0

The file is nothing but these records, so its size must be a multiple of 5. The reference
MATLAB reader (``Read_Ndataset.m``, also followed by Tonic) treats a record with ``y == 240`` as
a timestamp-overflow marker that adds 2**13 us to every later event; it never occurs in the
34x34 N-MNIST samples but is honoured here so N-Caltech101 files read the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import DataFormatError, reading
from ..types import EVENT_DTYPE
from ._limits import fields_to_write
from ._order import time_ordered

RECORD_BYTES = 5
NMNIST_SENSOR_SIZE = (34, 34)
_OVERFLOW_Y = 240
_OVERFLOW_INCREMENT = 1 << 13
_MAX_TIMESTAMP = (1 << 23) - 1


def read_nmnist_bin(
    path: str | Path, sensor_size: tuple[int, int] | None = NMNIST_SENSOR_SIZE
) -> tuple[np.ndarray, tuple[int, int]]:
    """Read one N-MNIST ``.bin`` file.

    Args:
        path: the ``.bin`` file.
        sensor_size: ``(width, height)`` every event must fit in (34x34 for N-MNIST); ``None``
            infers it from the largest coordinates (use that for N-Caltech101, whose samples
            have varying sizes).

    Returns:
        ``(events, sensor_size)``; events sorted by time (the recordings are time-ordered; a stable
        sort puts any out-of-order record in place).

    Raises:
        DataFormatError: the size is not a multiple of 5 (truncated record) or a coordinate lies
            outside ``sensor_size``; the message names the file and the record's byte offset.
    """
    path = Path(path)
    with reading(path):
        raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % RECORD_BYTES:
        start = raw.size - raw.size % RECORD_BYTES
        raise DataFormatError(
            path,
            f"file size {raw.size} is not a multiple of {RECORD_BYTES}: truncated record "
            f"({raw.size % RECORD_BYTES} of {RECORD_BYTES} bytes)",
            start,
        )
    rec = raw.reshape(-1, RECORD_BYTES)
    x = rec[:, 0]
    y = rec[:, 1]
    b2 = rec[:, 2].astype(np.int64)
    t = ((b2 & 0x7F) << 16) | (rec[:, 3].astype(np.int64) << 8) | rec[:, 4].astype(np.int64)
    p = (b2 >> 7).astype(np.int8)

    overflow = y == _OVERFLOW_Y
    record_index = np.arange(len(rec))
    if overflow.any():
        t = t + _OVERFLOW_INCREMENT * np.cumsum(overflow)
        keep = ~overflow
        x, y, t, p, record_index = x[keep], y[keep], t[keep], p[keep], record_index[keep]

    if sensor_size is None:
        sensor_size = (int(x.max()) + 1, int(y.max()) + 1) if len(x) else (0, 0)
    else:
        w, h = sensor_size
        bad = (x >= w) | (y >= h)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataFormatError(
                path,
                f"event ({int(x[i])}, {int(y[i])}) outside the {w}x{h} sensor "
                f"({int(bad.sum())} such records)",
                int(record_index[i]) * RECORD_BYTES,
            )

    ev = np.empty(len(x), dtype=EVENT_DTYPE)
    ev["x"], ev["y"], ev["t"], ev["p"] = x, y, t, p
    return time_ordered(ev), (int(sensor_size[0]), int(sensor_size[1]))


def write_nmnist_bin(path: str | Path, events: np.ndarray) -> None:
    """Write events as N-MNIST 40-bit records (the inverse of :func:`read_nmnist_bin`).

    Coordinates must fit in 8 bits and timestamps in 23 bits (no overflow markers are written);
    ``p`` is stored as 1 for any non-zero polarity.
    """
    ev, x, y, t = fields_to_write(events, 255, "N-MNIST records hold 8-bit coordinates (0..255)",
                                  _MAX_TIMESTAMP, f"N-MNIST records hold 23-bit timestamps (0..{_MAX_TIMESTAMP} us)")
    if len(ev) and (y == _OVERFLOW_Y).any():
        raise ValueError(f"y == {_OVERFLOW_Y} is the timestamp-overflow marker and cannot be written")
    rec = np.empty((len(ev), RECORD_BYTES), dtype=np.uint8)
    rec[:, 0] = x
    rec[:, 1] = y
    rec[:, 2] = ((ev["p"] != 0).astype(np.int64) << 7) | (t >> 16)
    rec[:, 3] = (t >> 8) & 0xFF
    rec[:, 4] = t & 0xFF
    Path(path).write_bytes(rec.tobytes())
