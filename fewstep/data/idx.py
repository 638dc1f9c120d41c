"""Reader (and writer) for the IDX format used by MNIST and Fashion-MNIST.

An IDX file is a 4-byte magic number ``00 00 TT DD`` (``TT`` the element type code,
``DD`` the number of dimensions), ``DD`` big-endian unsigned 32-bit dimension sizes,
then the elements, big-endian, in row-major order. Files are usually distributed
gzipped; :func:`read_idx` detects gzip by its magic bytes (``1f 8b``), never by the
file name, because mirrors and distributions rename and re-compress these files.

Every structural problem is reported as a :class:`~fewstep.errors.DataFormatError`
naming the file and the byte offset of the problem. For gzipped files the message
says whether the offset is into the compressed file or into the decompressed IDX
stream. The payload size claimed by the header is always checked against the data
actually present before anything of that size is allocated, so a corrupt header
cannot make the reader allocate gigabytes.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataFormatError, reading

__all__ = ["IDX_TYPES", "read_idx", "write_idx"]

#: IDX element type code -> big-endian numpy dtype (0x0A is not defined by the spec).
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20  # compressed bytes fed to zlib per step
_OUT_STEP = 4 << 20  # most decompressed bytes produced per zlib call (bounds memory overshoot)
#: Default ceiling on the payload size a header may claim (16 GiB): far above any IDX
#: dataset, far below what a random 32-bit header can claim (up to 2**(32*255) bytes).
DEFAULT_MAX_BYTES = 16 << 30
#: numpy's limit on dimensions (64 since numpy 2, 32 before); an IDX header allows up to 255.
_MAX_NDIM = 64 if int(np.__version__.split(".")[0]) >= 2 else 32


def _parse_header(path: Path, head: bytes, where: str, max_bytes: int) -> tuple[np.dtype, tuple[int, ...], int]:
    """Validate the IDX header in ``head`` (the first bytes of the IDX stream).

    Returns ``(dtype, dims, header_length)``. ``where`` names the stream the offsets refer to, for the error messages.
    """
    if len(head) < 4:
        raise DataFormatError(path, f"truncated IDX header: the file holds {len(head)} byte(s){where}, "
                                    "the 4-byte magic number needs 4", len(head))
    if head[0] != 0 or head[1] != 0:
        raise DataFormatError(path, f"bad IDX magic number {head[:4].hex(' ')}{where}: the first two bytes "
                                    "must be zero (is this an IDX file?)", 0)
    code, ndim = head[2], head[3]
    if code not in IDX_TYPES:
        raise DataFormatError(path, f"unknown IDX element type code 0x{code:02X}{where} "
                                    f"(known: {', '.join(f'0x{c:02X}' for c in IDX_TYPES)})", 2)
    if ndim == 0:
        raise DataFormatError(path, f"IDX header declares 0 dimensions{where}", 3)
    if ndim > _MAX_NDIM:
        raise DataFormatError(path, f"IDX header declares {ndim} dimensions{where}; a numpy array has at most "
                                    f"{_MAX_NDIM}", 3)
    header_len = 4 + 4 * ndim
    if len(head) < header_len:
        raise DataFormatError(path, f"truncated IDX header{where}: {ndim} dimensions need a {header_len}-byte "
                                    f"header but the stream ends after {len(head)} bytes", len(head))
    dims = struct.unpack(f">{ndim}I", head[4:header_len])
    dtype = IDX_TYPES[code]
    payload = math.prod(dims) * dtype.itemsize
    if payload > max_bytes:
        raise DataFormatError(path, f"IDX header claims dims {list(dims)} of {dtype.name} = {payload} bytes{where}, "
                                    f"more than the {max_bytes}-byte limit: the header is corrupt", 4)
    if math.prod(d for d in dims if d) * dtype.itemsize >= 2**63:  # empty, but numpy cannot index that shape
        raise DataFormatError(path, f"IDX header claims dims {list(dims)} of {dtype.name}{where}: no array can have "
                                    "that shape (the header is corrupt)", 4)
    return dtype, tuple(int(d) for d in dims), header_len


def _check_payload(path: Path, got: int, header_len: int, dtype: np.dtype, dims: tuple[int, ...], where: str) -> None:
    """Raise unless exactly ``prod(dims) * itemsize`` payload bytes follow the header."""
    expected = math.prod(dims) * dtype.itemsize
    if got < expected:
        raise DataFormatError(path, f"IDX data truncated{where}: dims {list(dims)} of {dtype.name} need "
                                    f"{expected} bytes after the {header_len}-byte header, only {got} present",
                              header_len + got)
    if got > expected:
        raise DataFormatError(path, f"{got - expected} unexpected trailing byte(s) after the IDX data{where} "
                                    f"(dims {list(dims)} of {dtype.name} = {expected} bytes after the "
                                    f"{header_len}-byte header)", header_len + expected)


def _to_native(arr: np.ndarray) -> np.ndarray:
    """Big-endian elements -> native byte order (no copy for single-byte types)."""
    if arr.dtype.itemsize == 1:
        return arr.view(arr.dtype.newbyteorder("="))
    return arr.astype(arr.dtype.newbyteorder("="))


def _read_raw(path: Path, max_bytes: int) -> np.ndarray:
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(4)
        if len(head) == 4 and head[0] == 0 and head[1] == 0 and head[2] in IDX_TYPES:
            head += f.read(4 * head[3])
        dtype, dims, header_len = _parse_header(path, head, "", max_bytes)
        _check_payload(path, size - header_len, header_len, dtype, dims, "")
        count = math.prod(dims)
        arr = np.fromfile(f, dtype=dtype, count=count)
    if arr.size != count:  # the file shrank between stat and read
        raise DataFormatError(path, f"IDX data truncated: expected {count} elements, read {arr.size}",
                              header_len + arr.size * dtype.itemsize)
    return _to_native(arr.reshape(dims))


def _read_gzip(path: Path, max_bytes: int) -> np.ndarray:
    """Decompress ``path`` incrementally, validating the IDX header as soon as it is available.

    Output is bounded by what the header declares: decompression stops (with an error) as
    soon as the stream produces more bytes than header + payload, so a gzip bomb cannot
    grow memory beyond the declared size plus one step.
    """
    where = " (offset into the decompressed IDX stream)"
    out = bytearray()
    expected_total: int | None = None
    header: tuple[np.dtype, tuple[int, ...], int] | None = None
    comp_size = os.path.getsize(path)
    with open(path, "rb") as f:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        pos = 0  # compressed offset of the first byte of `pending`
        member_start = 0
        pending = b""
        while True:
            if not pending:
                pending = f.read(_CHUNK)
                if not pending:
                    break
            state = d.copy()
            try:
                chunk = d.decompress(pending, _OUT_STEP)
            except zlib.error as e:
                bad = _locate_zlib_error(state, pending, pos)
                raise DataFormatError(path, f"corrupt gzip stream ({e}); offset into the compressed file "
                                            f"(gzip member starting at {member_start}); {len(out)} bytes "
                                            "were decompressed before the error", bad) from None
            consumed = len(pending) - len(d.unconsumed_tail) - len(d.unused_data)
            out += chunk
            if header is None:
                if len(out) >= 4 and (out[0] or out[1] or out[2] not in IDX_TYPES or len(out) >= 4 + 4 * out[3]):
                    header = _parse_header(path, bytes(out[:4 + 4 * out[3]]), where, max_bytes)
                    expected_total = header[2] + math.prod(header[1]) * header[0].itemsize
            if expected_total is not None and len(out) > expected_total:
                dtype, dims, header_len = header  # type: ignore[misc]
                _check_payload(path, len(out) - header_len, header_len, dtype, dims, where)
            if d.eof:
                rest = d.unused_data
                pos += consumed
                if len(rest) < 2:
                    rest += f.read(_CHUNK)
                if rest.startswith(_GZIP_MAGIC):  # concatenated gzip members are valid gzip
                    member_start = pos
                    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    pending = rest
                    continue
                tail = rest + f.read()
                if tail.strip(b"\x00"):  # zero padding after the last member is tolerated, as by gzip(1)
                    raise DataFormatError(path, f"{len(tail)} byte(s) of garbage after the end of the gzip stream "
                                                "(offset into the compressed file)", pos)
                break
            pos += consumed
            pending = d.unconsumed_tail
        if not d.eof:
            try:  # output zlib still holds after the last input (bounded by its 32 KiB window)
                out += d.flush()
            except zlib.error as e:
                raise DataFormatError(path, f"corrupt gzip stream ({e}) at the end of the compressed file",
                                      comp_size) from None
    if not d.eof:
        raise DataFormatError(path, f"gzip stream truncated: the file ends (offset into the compressed file) "
                                    f"before the end-of-stream marker, after {len(out)} decompressed bytes",
                              comp_size)
    if header is None:
        header = _parse_header(path, bytes(out), where, max_bytes)
    dtype, dims, header_len = header
    _check_payload(path, len(out) - header_len, header_len, dtype, dims, where)
    arr = np.frombuffer(out, dtype=dtype, offset=header_len).reshape(dims)
    return _to_native(arr)


def _locate_zlib_error(state: zlib._Decompress, data: bytes, pos: int) -> int:
    """Exact compressed offset of a zlib error: replay ``data`` byte by byte from ``state``."""
    for i in range(len(data)):
        try:
            state.decompress(data[i:i + 1], _OUT_STEP)
            while state.unconsumed_tail:  # flush output held back by max_length
                state.decompress(state.unconsumed_tail, _OUT_STEP)
        except zlib.error:
            return pos + i
        if state.eof:
            break
    return pos


def read_idx(path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """Read an IDX file (raw or gzipped) into a native-byte-order numpy array of its declared shape.

    Gzip is detected by the magic bytes ``1f 8b``: an IDX file always starts with ``00 00``,
    so the two cannot be confused. Raises :class:`DataFormatError` (file name and byte
    offset in the message) for a bad magic number, an unknown type code, a truncated
    header, a payload shorter or longer than the product of the dimensions, a header
    claiming more than ``max_bytes`` of data, or a corrupt / truncated gzip stream.
    """
    path = Path(path)
    with reading(path), open(path, "rb") as f:
        magic = f.read(2)
    if magic == _GZIP_MAGIC:
        return _read_gzip(path, max_bytes)
    return _read_raw(path, max_bytes)


def write_idx(path: str | Path, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file (gzipped if ``compress``, default: if the name ends in ``.gz``).

    Useful to convert data into the MNIST format, and to produce test files. The array's
    dtype must be one of the IDX element types (uint8, int8, int16, int32, float32, float64).
    """
    path = Path(path)
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_TYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise TypeError(f"IDX cannot store dtype {array.dtype}; use one of {[str(d) for d in codes]}")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions, got {array.ndim}")
    code = codes[native]
    blob = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    blob += np.ascontiguousarray(array, dtype=IDX_TYPES[code]).tobytes()
    if compress is None:
        compress = path.name.endswith(".gz")
    path.write_bytes(gzip.compress(blob, mtime=0) if compress else blob)
    return path
