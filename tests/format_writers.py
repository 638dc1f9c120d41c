"""Writers of real-format files, byte by byte from the formats' descriptions, shared by the tests and
``benchmarks/fuzz_readers.py`` (#18 item 8).

They are independent of fewstep's own writers on purpose: a reader tested only against the writer of
the same package can share its misreading of the format. Each function builds the bytes exactly as
the original tool wrote them (Python 2's cPickle for the CIFAR batches, DV's FlatBuffers for AEDAT 4,
cAER packets for AEDAT 3.1, ...).

A plain module (``tests`` is no package): pytest puts ``tests/`` on ``sys.path``; the fuzz script
adds it before importing.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

# ----------------------------------------------------------------------------- IDX (MNIST)

IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
             np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}


def idx_header(code: int, dims: list[int]) -> bytes:
    """The IDX header: two zero bytes, the type code, the number of dimensions, each dimension as
    a big-endian uint32."""
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def idx_bytes(a: np.ndarray) -> bytes:
    """The IDX encoding of ``a``, built by hand from the format description."""
    return idx_header(IDX_CODES[a.dtype], list(a.shape)) + a.astype(a.dtype.newbyteorder(">")).tobytes()


# ----------------------------------------------------------------------------- CIFAR: Python 2 pickles


def pystr(b: bytes) -> bytes:
    """A Python 2 ``str``: SHORT_BINSTRING or BINSTRING."""
    return (b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + struct.pack("<I", len(b))) + b


def pickle_int(i: int) -> bytes:
    """The shortest protocol-2 opcode for ``i``: BININT1, BININT2, BININT, LONG1 or LONG4."""
    if 0 <= i < 256:
        return b"K" + bytes([i])
    if 0 <= i < 65536:
        return b"M" + struct.pack("<H", i)
    if -(2**31) <= i < 2**31:
        return b"J" + struct.pack("<i", i)
    raw = i.to_bytes((i.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw if len(raw) < 256 else b"\x8b" + struct.pack("<i", len(raw)) + raw


def py2_value(v: Any) -> bytes:
    """One value (``bytes``, ``int``, ``list``, uint8 array) as Python 2's cPickle protocol 2 wrote it."""
    if isinstance(v, bytes):
        return pystr(v)
    if isinstance(v, int):
        return pickle_int(v)
    if isinstance(v, list):
        return b"](" + b"".join(py2_value(x) for x in v) + b"e"
    if isinstance(v, np.ndarray):  # what numpy 1.x under Python 2 emitted for a uint8 array
        assert v.dtype == np.uint8
        dtype = (b"cnumpy\ndtype\n" + pystr(b"u1") + pickle_int(0) + pickle_int(1) + b"\x87R"
                 + b"(" + pickle_int(3) + pystr(b"|") + b"NNN" + b"J\xff\xff\xff\xffJ\xff\xff\xff\xff"
                 + pickle_int(0) + b"tb")
        shape = b"(" + b"".join(pickle_int(d) for d in v.shape) + b"t"
        return (b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n" + pickle_int(0) + b"\x85"
                + pystr(b"b") + b"\x87R" + b"(" + pickle_int(1) + shape + dtype + b"\x89" + pystr(v.tobytes())
                + b"tb")
    raise TypeError(type(v))


def py2_pickle(d: dict[bytes, Any]) -> bytes:
    """A protocol-2 pickle of a dict as Python 2's cPickle wrote the CIFAR batches."""
    body = b"".join(py2_value(k) + py2_value(v) for k, v in d.items())
    return b"\x80\x02}(" + body + b"u."


# ----------------------------------------------------------------------------- N-MNIST .bin


def nmnist_record(x: int, y: int, p: int, t: int) -> bytes:
    """One 40-bit N-MNIST event: x, y, then polarity in bit 23 above a 23-bit timestamp (big-endian)."""
    return bytes([x, y, (p << 7) | (t >> 16), (t >> 8) & 0xFF, t & 0xFF])


# ----------------------------------------------------------------------------- AEDAT 3.1 (cAER packets)

AEDAT31_HEADER = b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n"


def caer_packet(etype: int, size: int, overflow: int, events: list[bytes], capacity: int | None = None) -> bytes:
    """A cAER packet: 28-byte header (type, source, event size, ts offset, overflow, capacity,
    number, valid) and ``capacity`` slots of ``size`` bytes (unused ones zero)."""
    n = len(events)
    cap = n if capacity is None else capacity
    body = b"".join(events) + b"\x00" * size * (cap - n)
    return struct.pack("<hhiiiiii", etype, 1, size, 4, overflow, cap, n, n) + body


def polarity_event(x: int, y: int, p: int, ts: int, valid: int = 1) -> bytes:
    """One 8-byte cAER polarity event: data word (x << 17 | y << 2 | p << 1 | valid), timestamp."""
    return struct.pack("<Ii", (x << 17) | (y << 2) | (p << 1) | valid, ts)


# ----------------------------------------------------------------------------- DVS Gesture labels


def gesture_labels_csv(rows: list[tuple[Any, Any, Any]]) -> str:
    """A DVS128 Gesture ``*_labels.csv``: the header line, then ``class,start,end`` per row."""
    return "class,startTime_usec,endTime_usec\n" + "".join(f"{c},{s},{e}\n" for c, s, e in rows)


# ----------------------------------------------------------------------------- AEDAT 4 (DV FlatBuffers)

AEDAT4_MAGIC = b"#!AER-DAT4.0\r\n"
AEDAT4_XML = """<dv version="2.0">
    <node name="outInfo" path="/mainloop/Recorder/outInfo/">
        <node name="0" path="/mainloop/Recorder/outInfo/0/">
            <attr key="compression" type="string">{comp}</attr>
            <attr key="originalOutputName" type="string">events</attr>
            <attr key="typeIdentifier" type="string">EVTS</attr>
            <node name="info" path="/mainloop/Recorder/outInfo/0/info/">
                <attr key="sizeX" type="int">{w}</attr>
                <attr key="sizeY" type="int">{h}</attr>
            </node>
        </node>
        <node name="2" path="/mainloop/Recorder/outInfo/2/">
            <attr key="originalOutputName" type="string">imu</attr>
            <attr key="typeIdentifier" type="string">IMUS</attr>
        </node>
    </node>
</dv>
"""
# (t, x, y, p) of two small event packets on a 40x30 sensor
AEDAT4_EVENTS_A = [(1_000_000, 0, 0, 1), (1_000_005, 39, 29, 0), (1_000_005, 7, 3, 1)]
AEDAT4_EVENTS_B = [(1_000_100, 20, 10, 0)]


def io_header(compression: int, table_position: int, info: bytes) -> bytes:
    """FlatBuffer IOHeader laid out by hand: root offset, "IOHE", vtable, table, string."""
    vtable = struct.pack("<HHHHH", 10, 24, 4, 8, 16) + b"\x00\x00"  # 3 fields, padded to 12 bytes
    table_at = 8 + len(vtable)  # 20: soffset, compression, (pad), dataTablePosition, infoNode
    table = struct.pack("<iiqI", table_at - 8, compression, table_position, 0)
    string_at = table_at + len(table)
    table = table[:-4] + struct.pack("<I", string_at - (table_at + 16))
    return struct.pack("<I", table_at) + b"IOHE" + vtable + table + struct.pack("<I", len(info)) + info + b"\x00"


def event_packet(events: list[tuple[int, int, int, int]], identifier: bytes = b"EVTS") -> bytes:
    """Size-prefixed FlatBuffer EventPacket (as DV writes it) with a vector of 16-byte Events."""
    # layout after the size prefix: root(4) id(4) vtable(6)+pad(2) table(8: soffset, uoffset)
    # vector length at 24, elements at 28 -> pad so that elements start 8-aligned (at 32)
    vtable = struct.pack("<HHH", 6, 8, 4) + b"\x00\x00"
    table_at = 8 + len(vtable)  # 16
    vec_at = 28  # uint32 length at 28, structs from 32
    table = struct.pack("<iI", table_at - 8, vec_at - (table_at + 4))
    buf = struct.pack("<I", table_at) + identifier + vtable + table + b"\x00" * (vec_at - table_at - 8)
    buf += struct.pack("<I", len(events))
    buf += b"".join(struct.pack("<qhh?3x", t, x, y, bool(p)) for t, x, y, p in events)
    return struct.pack("<I", len(buf)) + buf


def _lz4(b: bytes) -> bytes:
    import lz4.frame

    return lz4.frame.compress(b)


def build_aedat4(packets: list[tuple[int, bytes]], compression: int, xml: str, with_table: bool = True,
                 data_table: bytes = b"DATA-TABLE") -> bytes:
    """An AEDAT 4 file: magic, size-prefixed IOHeader, ``(stream id, size, packet)`` records (LZ4
    frames when ``compression`` is 1) and, ``with_table``, ``data_table`` bytes where the header
    says the data table lies (-1 without)."""
    compress = (lambda b: b) if compression == 0 else _lz4
    body = b"".join(struct.pack("<ii", sid, len(compress(p))) + compress(p) for sid, p in packets)
    info = xml.encode("utf-8")
    header = io_header(compression, 0, info)
    start = len(AEDAT4_MAGIC) + 4 + len(header)
    table_pos = start + len(body) if with_table else -1
    header = io_header(compression, table_pos, info)
    return AEDAT4_MAGIC + struct.pack("<i", len(header)) + header + body + (data_table if with_table else b"")


# ----------------------------------------------------------------------------- Prophesee .dat (EVT 2.0 CD)

DAT_HEADER = b"% Data file containing CD events\n% Version 2\n% Width 64\n% Height 48\n"


def dat_bytes(events: list[tuple[int, int, int, int]], header: bytes = DAT_HEADER, etype: int = 0x0C,
              size: int = 8) -> bytes:
    """A Prophesee ``.dat``: ``%`` header lines, event type and size bytes, then per ``(x, y, t, p)``
    a uint32 timestamp and a uint32 of x (14 bits), y (14 bits), p (4 bits)."""
    body = b"".join(struct.pack("<II", t, x | (y << 14) | (p << 28)) for x, y, t, p in events)
    return header + bytes([etype, size]) + body
