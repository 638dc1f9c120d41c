"""IDX reader: round trips on files written in the real format, and every malformed case.

The files are written here with ``struct`` straight from the IDX description (magic
``00 00 type ndim``, big-endian uint32 dims, big-endian data), independently of
:func:`fewstep.data.idx.write_idx`, so the reader is not only checked against itself.
"""

from __future__ import annotations

import gzip
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from format_writers import IDX_CODES as CODES
from format_writers import idx_bytes
from hypothesis import given, settings
from hypothesis import strategies as st

from fewstep.data.idx import IDX_TYPES, read_idx, write_idx
from fewstep.errors import DataFormatError


def write(tmp_path: Path, name: str, blob: bytes, gz: bool = False) -> Path:
    p = tmp_path / name
    p.write_bytes(gzip.compress(blob) if gz else blob)
    return p


def assert_error(path: Path, offset: int | None, pattern: str) -> DataFormatError:
    with pytest.raises(DataFormatError) as ei:
        read_idx(path)
    err = ei.value
    msg = str(err)
    assert path.name in msg, msg
    assert err.offset == offset, msg
    if offset is not None:
        assert f"offset {offset}" in msg, msg
    assert re.search(pattern, msg, re.I), msg
    return err


@pytest.mark.parametrize("gz", [False, True])
def test_round_trip_mnist_like(tmp_path: Path, gz: bool) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 7).astype(np.uint8)
    pi = write(tmp_path, "imgs", idx_bytes(images), gz)  # no .gz suffix: detection is by magic bytes
    pl = write(tmp_path, "labels.gz" if not gz else "labels.raw", idx_bytes(labels), gz)
    out_i, out_l = read_idx(pi), read_idx(pl)
    assert out_i.dtype == np.uint8 and out_i.shape == (7, 28, 28)
    np.testing.assert_array_equal(out_i, images)
    np.testing.assert_array_equal(out_l, labels)


@settings(max_examples=25, deadline=None)
@given(dtype=st.sampled_from(list(CODES)), shape=st.lists(st.integers(0, 5), min_size=1, max_size=4),
       gz=st.booleans(), seed=st.integers(0, 2**16))
def test_round_trip_all_types(tmp_path_factory: pytest.TempPathFactory, dtype: np.dtype, shape: list[int],
                              gz: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    if dtype.kind == "f":
        a = rng.standard_normal(shape).astype(dtype)
    else:
        info = np.iinfo(dtype)
        a = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    d = tmp_path_factory.mktemp("rt")
    out = read_idx(write(d, "a.idx", idx_bytes(a), gz))
    assert out.dtype == dtype and out.dtype.isnative and out.shape == a.shape
    np.testing.assert_array_equal(out, a)
    # and the library's writer produces the same bytes as the hand-made encoding
    assert gzip.decompress(write_idx(d / "w.gz", a).read_bytes()) == idx_bytes(a)


def test_concatenated_gzip_members_and_zero_padding(tmp_path: Path) -> None:
    a = np.arange(600, dtype=np.int16).reshape(20, 30)
    blob = idx_bytes(a)
    p = tmp_path / "multi"
    p.write_bytes(gzip.compress(blob[:500]) + gzip.compress(blob[500:]) + b"\0" * 16)
    np.testing.assert_array_equal(read_idx(p), a)


# ---------------------------------------------------------------- malformed raw files

GOOD = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))  # 4 + 12 header bytes + 24 data bytes


def test_bad_magic(tmp_path: Path) -> None:
    assert_error(write(tmp_path, "bad_magic", b"\x01\x00" + GOOD[2:]), 0, "magic")


def test_unknown_type_code(tmp_path: Path) -> None:
    for code in (0x0A, 0x07, 0x0F, 0xFF):
        assert_error(write(tmp_path, f"code{code}", GOOD[:2] + bytes([code]) + GOOD[3:]), 2, "type code")


def test_zero_dimensions(tmp_path: Path) -> None:
    assert_error(write(tmp_path, "ndim0", b"\x00\x00\x08\x00"), 3, "0 dimensions")


@pytest.mark.parametrize("n", [0, 3, 4, 9, 15])
def test_truncated_header(tmp_path: Path, n: int) -> None:
    assert_error(write(tmp_path, f"head{n}", GOOD[:n]), n, "truncated IDX header")


def test_truncated_payload(tmp_path: Path) -> None:
    assert_error(write(tmp_path, "short", GOOD[:-5]), len(GOOD) - 5, "truncated.*need 24 bytes.*only 19")


def test_trailing_bytes(tmp_path: Path) -> None:
    assert_error(write(tmp_path, "long", GOOD + b"xyz"), len(GOOD), "3 unexpected trailing byte")


def test_absurd_header_is_rejected_before_allocating(tmp_path: Path) -> None:
    # 4 dims of 2**32-1 float64s: ~10**39 bytes claimed by a 20-byte file
    blob = b"\x00\x00\x0e\x04" + b"\xff\xff\xff\xff" * 4
    assert_error(write(tmp_path, "huge", blob), 4, "limit")
    # a plausible-size claim (~1 GB) with no data: rejected by the size check, nothing allocated
    blob = b"\x00\x00\x08\x03" + struct.pack(">III", 1_000_000, 1000, 1)
    assert_error(write(tmp_path, "big_empty", blob), 16, "truncated")
    assert_error(write(tmp_path, "big_empty.gz", blob, gz=True), 16, "truncated.*decompressed")


# ---------------------------------------------------------------- malformed gzip files

def test_gz_header_errors_say_decompressed_offset(tmp_path: Path) -> None:
    err = assert_error(write(tmp_path, "m.gz", b"\x00\x01" + GOOD[2:], gz=True), 0, "magic")
    assert "decompressed" in str(err)
    assert_error(write(tmp_path, "t.gz", GOOD[:2] + b"\x0a" + GOOD[3:], gz=True), 2, "type code.*decompressed")
    assert_error(write(tmp_path, "h.gz", GOOD[:10], gz=True), 10, "truncated IDX header")


def test_gz_payload_size(tmp_path: Path) -> None:
    assert_error(write(tmp_path, "short.gz", GOOD[:-1], gz=True), len(GOOD) - 1, "truncated.*decompressed")
    assert_error(write(tmp_path, "long.gz", GOOD + b"\0", gz=True), len(GOOD), "trailing.*decompressed")


def test_gz_truncated_stream(tmp_path: Path) -> None:
    z = gzip.compress(GOOD)
    p = write(tmp_path, "cut.gz", z[:-6])  # loses part of the CRC/size trailer
    assert_error(p, len(z) - 6, "gzip stream truncated.*compressed")


def test_gz_corrupt_stream_reports_exact_compressed_offset(tmp_path: Path) -> None:
    a = np.random.default_rng(1).integers(0, 256, (50, 28, 28), dtype=np.uint8)
    z = bytearray(gzip.compress(idx_bytes(a)))
    z[-8] ^= 0xFF  # flip the CRC32: data decodes, the check fails on the trailer
    p = write(tmp_path, "crc.gz", bytes(z))
    with pytest.raises(DataFormatError) as ei:
        read_idx(p)
    msg = str(ei.value)
    assert "crc.gz" in msg and "corrupt gzip stream" in msg and "compressed file" in msg
    assert ei.value.offset is not None and len(z) - 8 <= ei.value.offset < len(z)
    # an invalid deflate block type right after the 10-byte gzip header
    bad = bytes(z[:10]) + b"\xff" * 40
    p2 = write(tmp_path, "blocktype.gz", bad)
    err = assert_error(p2, 10, "corrupt gzip stream")
    # the offset is exactly the first byte zlib rejects (checked against zlib itself)
    d = zlib.decompressobj(31)
    with pytest.raises(zlib.error):
        d.decompress(bad[: err.offset + 1])
    zlib.decompressobj(31).decompress(bad[: err.offset])


def test_gz_trailing_garbage(tmp_path: Path) -> None:
    z = gzip.compress(GOOD)
    assert_error(write(tmp_path, "junk.gz", z + b"JUNK"), len(z), "garbage")


def test_empty_and_missing_files(tmp_path: Path) -> None:
    assert_error(write(tmp_path, "empty", b""), 0, "truncated IDX header")
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


def test_idx_types_cover_spec() -> None:
    assert sorted(IDX_TYPES) == [0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]
