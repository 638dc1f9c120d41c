"""AEDAT 4.0 files written by iniVation's DV software (DVXplorer, DAVIS, converted datasets).

Layout (iniVation "AEDAT 4.0")::

    "#!AER-DAT4.0\\r\\n"
    int32 n, then n bytes: FlatBuffer ``IOHeader`` (file identifier "IOHE")
        field 0  compression        int32 enum: 0 NONE, 1 LZ4, 2 LZ4_HIGH, 3 ZSTD, 4 ZSTD_HIGH
        field 1  dataTablePosition  int64 (-1 when absent): where the packets end
        field 2  infoNode           string: XML listing the streams (id, typeIdentifier,
                                    sizeX/sizeY)
    packets until dataTablePosition (or the end of the file):
        int32 streamId, int32 size, then size bytes: one FlatBuffer, compressed as a whole
        (LZ4 frame / Zstandard frame) when the header says so

An ``EVTS`` packet is a size-prefixed FlatBuffer ``EventPacket`` (identifier "EVTS") whose
field 0 is a vector of 16-byte structs ``Event {int64 timestamp; int16 x; int16 y;
bool polarity; 3 pad bytes}``. Streams of other types (IMUS, TRIG, FRME, ...) are skipped.

The FlatBuffers are read by hand from the binary spec (root uoffset, table soffset to its
vtable, uint16 field offsets, uoffsets to strings and vectors): only the few fields above are
needed, so there is no ``flatbuffers`` dependency. LZ4 needs the optional ``lz4`` package
(``pip install fewstep[events]``), Zstandard the ``zstandard`` package; both are imported
only when a file needs them. Timestamps are returned as recorded (absolute us since the Unix
epoch); use :func:`fewstep.events.ops.normalise_time` for a stream starting at 0.
"""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import DataFormatError, reading
from ..types import EVENT_DTYPE
from ._order import time_ordered

MAGIC = b"#!AER-DAT4.0\r\n"
MAX_SENSOR = 32768  # event coordinates are int16
COMPRESSION = {0: "NONE", 1: "LZ4", 2: "LZ4_HIGH", 3: "ZSTD", 4: "ZSTD_HIGH"}
_EVENT = np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "u1"), ("pad", "V3")])
_PACKET_HEADER = struct.Struct("<ii")


class _FlatBufferError(Exception):
    """Malformed FlatBuffer; ``offset`` is relative to the buffer being parsed."""

    def __init__(self, problem: str, offset: int) -> None:
        super().__init__(problem)
        self.problem, self.offset = problem, offset


class _Table:
    """A FlatBuffers table: reads fields through its vtable, with bounds checks."""

    def __init__(self, buf: bytes | memoryview, pos: int) -> None:
        self.buf, self.pos = buf, pos
        self._need(pos, 4, "table")
        vt = pos - struct.unpack_from("<i", buf, pos)[0]
        self._need(vt, 4, "vtable")
        self.vt = vt
        self.vt_size = struct.unpack_from("<H", buf, vt)[0]
        if self.vt_size < 4 or self.vt_size % 2:
            raise _FlatBufferError(f"bad vtable size {self.vt_size}", vt)
        self._need(vt, self.vt_size, "vtable")

    def _need(self, pos: int, size: int, what: str) -> None:
        if pos < 0 or pos + size > len(self.buf):
            raise _FlatBufferError(f"{what} at {pos} (+{size} bytes) outside the {len(self.buf)}-byte buffer", pos)

    def _field(self, index: int) -> int:
        """Absolute position of field ``index``, or 0 when it is absent (default value)."""
        slot = 4 + 2 * index
        if slot + 2 > self.vt_size:
            return 0
        rel = struct.unpack_from("<H", self.buf, self.vt + slot)[0]
        return self.pos + rel if rel else 0

    def scalar(self, index: int, fmt: str, default: int) -> int:
        at = self._field(index)
        if not at:
            return default
        self._need(at, struct.calcsize(fmt), f"field {index}")
        return struct.unpack_from(fmt, self.buf, at)[0]

    def _indirect(self, index: int) -> int:
        at = self._field(index)
        if not at:
            return 0
        self._need(at, 4, f"field {index}")
        target = at + struct.unpack_from("<I", self.buf, at)[0]
        self._need(target, 4, f"field {index} target")
        return target

    def string(self, index: int) -> str | None:
        at = self._indirect(index)
        if not at:
            return None
        n = struct.unpack_from("<I", self.buf, at)[0]
        self._need(at + 4, n, f"string field {index}")
        return bytes(self.buf[at + 4 : at + 4 + n]).decode("utf-8")

    def vector(self, index: int, element_size: int) -> tuple[int, int]:
        """``(start, length)`` of a vector of fixed-size elements; ``(0, 0)`` when absent."""
        at = self._indirect(index)
        if not at:
            return 0, 0
        n = struct.unpack_from("<I", self.buf, at)[0]
        self._need(at + 4, n * element_size, f"vector field {index} of {n} elements")
        return at + 4, n


def _root(buf: bytes | memoryview, identifier: bytes) -> _Table:
    """Root table of a FlatBuffer, plain or size-prefixed, checking its file identifier."""
    if len(buf) >= 12 and bytes(buf[8:12]) == identifier and struct.unpack_from("<I", buf, 0)[0] == len(buf) - 4:
        buf = memoryview(buf)[4:]  # size-prefixed (how DV writes packets)
    elif len(buf) < 8 or bytes(buf[4:8]) != identifier:
        raise _FlatBufferError(f"FlatBuffer without the expected identifier {identifier.decode()!r}", 0)
    return _Table(buf, struct.unpack_from("<I", buf, 0)[0])


@dataclass(frozen=True)
class Aedat4Stream:
    """One stream declared in the file's info XML."""

    id: int
    type: str
    name: str
    size: tuple[int, int] | None


def _ascii_uint(text: str) -> int | None:
    """A plain decimal number of at most 10 ASCII digits (``str.isdigit`` also accepts '²' and other
    Unicode digits that ``int`` rejects, and ``int`` refuses more than 4300 digits), else None."""
    text = text.strip()
    if not text or len(text) > 10 or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def _parse_streams(xml: str) -> list[Aedat4Stream]:
    root = ET.fromstring(xml)
    streams = []
    for out_info in root.iter("node"):
        if out_info.get("name") != "outInfo":
            continue
        for node in out_info.findall("node"):
            stream_id = _ascii_uint(node.get("name", ""))
            if stream_id is None or stream_id >= 2**31:  # packets carry an int32 stream id
                continue
            attrs = {a.get("key"): (a.text or "") for a in node.findall("attr")}
            size = None
            info = next((n for n in node.findall("node") if n.get("name") == "info"), None)
            if info is not None:
                iattrs = {a.get("key"): (a.text or "") for a in info.findall("attr")}
                w, h = _ascii_uint(iattrs.get("sizeX", "")), _ascii_uint(iattrs.get("sizeY", ""))
                if w is not None and h is not None:
                    size = (w, h)
            streams.append(
                Aedat4Stream(stream_id, attrs.get("typeIdentifier", ""), attrs.get("originalOutputName", ""), size)
            )
    return sorted(streams, key=lambda s: s.id)


def _decompressor(compression: int, path: Path):
    if compression == 0:
        return None
    if compression in (1, 2):
        try:
            import lz4.frame
        except ImportError:
            raise ImportError(
                f"{path} has LZ4-compressed packets; reading it needs the 'lz4' package: "
                "pip install fewstep[events]  (or: pip install lz4)"
            ) from None
        return lz4.frame.decompress
    if compression in (3, 4):
        try:
            import zstandard
        except ImportError:
            raise ImportError(
                f"{path} has Zstandard-compressed packets; reading it needs the 'zstandard' package: "
                "pip install zstandard"
            ) from None

        def unzstd(blob: bytes) -> bytes:
            return zstandard.ZstdDecompressor().decompressobj().decompress(blob)

        return unzstd
    raise DataFormatError(path, f"unknown compression type {compression}", len(MAGIC) + 4)


def read_aedat4_header(path: str | Path) -> tuple[int, int, list[Aedat4Stream], int]:
    """``(compression, dataTablePosition, streams, first_packet_offset)`` of an AEDAT 4 file."""
    path = Path(path)
    with reading(path), open(path, "rb") as f:
        head = f.read(len(MAGIC) + 4)
        if not head.startswith(MAGIC):
            raise DataFormatError(path, "not an AEDAT 4.0 file: first line is not '#!AER-DAT4.0'", 0)
        if len(head) < len(MAGIC) + 4:
            raise DataFormatError(path, "file ends before the IOHeader size (truncated)", len(MAGIC))
        size = struct.unpack_from("<i", head, len(MAGIC))[0]
        body = f.read(size) if size > 0 else b""
    return _parse_io_header(path, head + body, size)


def _parse_io_header(path: Path, data: bytes, size: int) -> tuple[int, int, list[Aedat4Stream], int]:
    start = len(MAGIC) + 4
    if size <= 0:
        raise DataFormatError(path, f"IOHeader size {size} is not positive", len(MAGIC))
    if start + size > len(data):
        raise DataFormatError(
            path, f"IOHeader of {size} bytes cut short: {len(data) - start} left (truncated file)", start
        )
    try:
        table = _root(memoryview(data)[start : start + size], b"IOHE")
        compression = table.scalar(0, "<i", 0)
        table_pos = table.scalar(1, "<q", -1)
        info = table.string(2) or ""
    except _FlatBufferError as e:
        raise DataFormatError(path, f"malformed IOHeader FlatBuffer: {e.problem}", start + e.offset) from None
    except UnicodeDecodeError:
        raise DataFormatError(path, "IOHeader infoNode is not UTF-8", start) from None
    if compression not in COMPRESSION:
        raise DataFormatError(path, f"unknown compression type {compression}", start)
    try:
        streams = _parse_streams(info)
    except ET.ParseError as e:
        raise DataFormatError(path, f"IOHeader infoNode is not valid XML ({e})", start) from None
    return compression, table_pos, streams, start + size


def read_aedat4(path: str | Path, stream: int | str | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Read the polarity events of one event stream of an AEDAT 4 file.

    Args:
        path: the ``.aedat4`` file.
        stream: which ``EVTS`` stream: its id (int), its output name (str, e.g. ``"events"``),
            or ``None`` for the first event stream.

    Returns:
        ``(events, (sizeX, sizeY))``; ``t`` in absolute microseconds as recorded, sorted (stably).

    Raises:
        DataFormatError: bad magic, malformed IOHeader or packet FlatBuffer, a packet cut short,
            a data table beyond the end of the file (truncated), no event stream, a negative
            timestamp; names the file
            and the byte offset (of the packet, for problems inside a compressed packet).
        ImportError: the packets are compressed and ``lz4`` / ``zstandard`` is not installed.
    """
    path = Path(path)
    with reading(path):
        data = path.read_bytes()
    if not data.startswith(MAGIC):
        raise DataFormatError(path, "not an AEDAT 4.0 file: first line is not '#!AER-DAT4.0'", 0)
    if len(data) < len(MAGIC) + 4:
        raise DataFormatError(path, "file ends before the IOHeader size (truncated)", len(MAGIC))
    size = struct.unpack_from("<i", data, len(MAGIC))[0]
    compression, table_pos, streams, pos = _parse_io_header(path, data, size)

    events_streams = [s for s in streams if s.type == "EVTS"]
    if stream is None:
        chosen = events_streams[:1]
    elif isinstance(stream, int):
        chosen = [s for s in events_streams if s.id == stream]
    else:
        chosen = [s for s in events_streams if s.name == stream]
    if not chosen:
        have = ", ".join(f"{s.id}:{s.type}:{s.name}" for s in streams) or "none"
        raise DataFormatError(path, f"no event (EVTS) stream {stream!r} in the file; streams: {have}", len(MAGIC) + 4)
    target = chosen[0]
    if target.size is not None and not (1 <= target.size[0] <= MAX_SENSOR and 1 <= target.size[1] <= MAX_SENSOR):
        raise DataFormatError(
            path,
            f"stream {target.id} declares a {target.size[0]}x{target.size[1]} sensor; sizes must lie in "
            f"1..{MAX_SENSOR} (event coordinates are 16-bit)",
            len(MAGIC) + 4,
        )
    decompress = _decompressor(compression, path)

    end = len(data)
    if table_pos >= 0:
        if table_pos > len(data):
            raise DataFormatError(
                path,
                f"data table position {table_pos} beyond the end of the file ({len(data)} bytes): truncated",
                len(data),
            )
        end = table_pos
    chunks: list[np.ndarray] = []
    packet_offsets: list[int] = []
    view = memoryview(data)
    while pos < end:
        if end - pos < _PACKET_HEADER.size:
            raise DataFormatError(path, f"packet header cut short: {end - pos} of 8 bytes left (truncated file)", pos)
        stream_id, n = _PACKET_HEADER.unpack_from(data, pos)
        if n <= 0:
            raise DataFormatError(path, f"packet of stream {stream_id} has size {n}", pos)
        if pos + 8 + n > end:
            raise DataFormatError(
                path,
                f"packet of stream {stream_id} cut short: {n} bytes declared, {end - pos - 8} left (truncated)",
                pos,
            )
        if stream_id == target.id:
            blob = view[pos + 8 : pos + 8 + n]
            if decompress is not None:
                try:
                    blob = decompress(bytes(blob))
                except Exception as e:  # lz4 / zstandard raise their own error types
                    raise DataFormatError(
                        path, f"cannot decompress {COMPRESSION[compression]} packet: {e}", pos
                    ) from None
            try:
                table = _root(blob, b"EVTS")
                start, count = table.vector(0, _EVENT.itemsize)
            except _FlatBufferError as e:
                where = "decompressed packet" if decompress else "packet data"
                raise DataFormatError(
                    path, f"malformed EventPacket FlatBuffer: {e.problem} (byte {e.offset} of the {where})", pos
                ) from None
            if count:
                chunks.append(np.frombuffer(table.buf, dtype=_EVENT, count=count, offset=start))
                packet_offsets.append(pos)
        pos += 8 + n

    raw = np.concatenate(chunks) if chunks else np.empty(0, dtype=_EVENT)
    ev = np.empty(len(raw), dtype=EVENT_DTYPE)
    ev["x"], ev["y"], ev["t"], ev["p"] = raw["x"], raw["y"], raw["t"], raw["p"] != 0
    sensor = target.size
    if sensor is None:  # not declared: from the largest coordinates (negative ones are still refused)
        sensor = (int(ev["x"].max()) + 1, int(ev["y"].max()) + 1) if len(ev) else (0, 0)
    if len(ev):
        bad = (ev["x"] < 0) | (ev["y"] < 0) | (ev["x"] >= sensor[0]) | (ev["y"] >= sensor[1])
        if bad.any():
            i = int(np.argmax(bad))
            packet = int(np.searchsorted(np.cumsum([len(c) for c in chunks]), i, side="right"))
            raise DataFormatError(
                path,
                f"event ({int(ev['x'][i])}, {int(ev['y'][i])}) outside the {sensor[0]}x{sensor[1]} sensor "
                f"({int(bad.sum())} such events)",
                packet_offsets[packet],
            )
        early = ev["t"] < 0
        if early.any():  # DV timestamps count microseconds since 1970: a negative one is corrupt
            i = int(np.argmax(early))
            packet = int(np.searchsorted(np.cumsum([len(c) for c in chunks]), i, side="right"))
            raise DataFormatError(
                path, f"negative timestamp {int(ev['t'][i])} ({int(early.sum())} such events)", packet_offsets[packet]
            )
    return time_ordered(ev), (int(sensor[0]), int(sensor[1]))
