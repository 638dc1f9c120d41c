"""AEDAT 2.0 files written by jAER (DVS128 recordings such as CIFAR10-DVS).

Layout (jAER "AEDAT 2.0"): ASCII header lines that start with ``#`` and end with ``\\r\\n``, the
first being ``#!AER-DAT2.0``; then big-endian pairs ``int32 address, int32 timestamp`` (us),
8 bytes per event.

DVS128 address layout, as jAER's ``DVS128`` extractor decodes it::

    bit 0        polarity bit: 0 = ON, 1 = OFF   (jAER: type = 1 - (addr & 1))
    bits 1..7    raw x;  jAER flips it: x = 127 - raw_x
    bits 8..14   y (jAER's y axis points up: row 0 is the bottom of the image)
    bit 15 and up   set only on special / sync events, which carry no pixel and are dropped

Coordinate conventions (``orientation``):

* ``"jaer"`` (default): exactly jAER's and ``dat2mat.m``'s decoding, ``x = 127 - raw_x``,
  ``y = raw_y``, ``p = 1 - bit0``.
* ``"spikingjelly"``: ``x = 127 - raw_y``, ``y = 127 - raw_x``, ``p = 1 - bit0``, the transposed
  and flipped layout that SpikingJelly's and (pre-AEDAT4) Tonic's CIFAR10-DVS loaders use, so
  that frames match theirs pixel for pixel.

Both agree on polarity. Timestamps are 32-bit and wrap; a backwards jump of more than 2**31 us
is taken as a wrap and unwrapped into the int64 ``t``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import numpy as np

from ...errors import DataFormatError, reading
from ..types import EVENT_DTYPE
from ._limits import fields_to_write
from ._order import time_ordered

MAGIC = b"#!AER-DAT2.0"
DVS128_SENSOR_SIZE = (128, 128)
Orientation = Literal["jaer", "spikingjelly"]
_RECORD = np.dtype([("addr", ">u4"), ("t", ">u4")])


def parse_hash_header(data: bytes, path: Path) -> tuple[list[str], int]:
    """Split the ``#``-prefixed ASCII header from the binary payload.

    Returns the header lines (without ``#`` and line ends) and the payload's byte offset.
    Header lines are read while the next byte is ``#``; each must end with a newline.
    """
    lines: list[str] = []
    pos = 0
    while pos < len(data) and data[pos] == 0x23:  # '#'
        end = data.find(b"\n", pos)
        if end < 0:
            raise DataFormatError(path, "header line not terminated by a newline (truncated header?)", pos)
        lines.append(data[pos + 1 : end].rstrip(b"\r").decode("latin-1"))
        pos = end + 1
    return lines, pos


def read_aedat2(
    path: str | Path, camera: str = "DVS128", orientation: Orientation = "jaer"
) -> tuple[np.ndarray, tuple[int, int]]:
    """Read a jAER AEDAT 2.0 file recorded with a DVS128 (128x128).

    Args:
        path: the ``.aedat`` file.
        camera: address layout; only ``"DVS128"`` (CIFAR10-DVS, jAER DVS128 recordings).
        orientation: ``"jaer"`` or ``"spikingjelly"`` (see the module docstring).

    Raises:
        DataFormatError: missing ``#!AER-DAT2.0`` line, unterminated header, or a payload that is
            not a whole number of 8-byte records (truncated); names file and byte offset.
    """
    if camera.upper() != "DVS128":
        raise ValueError(f"camera {camera!r} not supported; only 'DVS128' address layout is implemented")
    if orientation not in ("jaer", "spikingjelly"):
        raise ValueError(f"orientation must be 'jaer' or 'spikingjelly', not {orientation!r}")
    path = Path(path)
    with reading(path):
        data = path.read_bytes()
    if not data.startswith(MAGIC):
        raise DataFormatError(path, f"not an AEDAT 2.0 file: first line is not {MAGIC.decode()!r}", 0)
    _, start = parse_hash_header(data, path)
    payload = len(data) - start
    if payload % _RECORD.itemsize:
        whole = payload - payload % _RECORD.itemsize
        raise DataFormatError(
            path,
            f"event data of {payload} bytes is not a multiple of 8: truncated record "
            f"({payload % _RECORD.itemsize} of 8 bytes)",
            start + whole,
        )
    rec = np.frombuffer(data, dtype=_RECORD, offset=start)
    addr = rec["addr"].astype(np.int64)
    t = rec["t"].astype(np.int64)
    if len(t) > 1:
        wraps = np.diff(t) < -(1 << 31)
        if wraps.any():
            t[1:] += np.cumsum(wraps) << 32
    pixel = addr < (1 << 15)
    addr, t = addr[pixel], t[pixel]
    raw_x = (addr >> 1) & 0x7F
    raw_y = (addr >> 8) & 0x7F
    ev = np.empty(len(addr), dtype=EVENT_DTYPE)
    if orientation == "jaer":
        ev["x"], ev["y"] = 127 - raw_x, raw_y
    else:
        ev["x"], ev["y"] = 127 - raw_y, 127 - raw_x
    ev["t"] = t
    ev["p"] = 1 - (addr & 1)
    return time_ordered(ev), DVS128_SENSOR_SIZE


def write_aedat2(path: str | Path, events: np.ndarray, orientation: Orientation = "jaer") -> None:
    """Write DVS128 events as a jAER AEDAT 2.0 file (the inverse of :func:`read_aedat2`).

    Coordinates must lie in 0..127 and timestamps in 0..2**32-1 us.
    """
    ev, x, y, t = fields_to_write(events, 127, "DVS128 coordinates must lie in 0..127",
                                  (1 << 32) - 1, "AEDAT 2.0 timestamps are 32-bit (0..2**32-1 us)")
    if orientation == "jaer":
        raw_x, raw_y = 127 - x, y
    elif orientation == "spikingjelly":
        raw_x, raw_y = 127 - y, 127 - x
    else:
        raise ValueError(f"orientation must be 'jaer' or 'spikingjelly', not {orientation!r}")
    rec = np.empty(len(ev), dtype=_RECORD)
    rec["addr"] = (raw_y << 8) | (raw_x << 1) | (ev["p"] == 0).astype(np.int64)
    rec["t"] = t
    header = (
        "#!AER-DAT2.0\r\n"
        "# This is a raw AE data file - do not edit\r\n"
        "# Data format is int32 address, int32 timestamp (8 bytes total), repeated for each event\r\n"
        "# Timestamps tick is 1 us\r\n"
        f"# created {time.strftime('%a %b %d %H:%M:%S %Y')} by fewstep\r\n"
    )
    Path(path).write_bytes(header.encode("ascii") + rec.tobytes())
