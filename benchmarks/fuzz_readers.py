#!/usr/bin/env python
"""Property-based fuzzing of every fewstep file reader and loader, and of STC on adversarial event arrays.

Targets: the IDX, CIFAR-pickle, N-MNIST, AEDAT 2.0 / 3.1 / 4, Prophesee DAT and gesture-CSV
readers, ``read_events``, images as the image-folder datasets decode them, recipe TOML files as
``load_recipe`` (``fewstep train --config FILE``) reads them, and checkpoints as ``fewstep eval`` /
``fewstep convert`` load them. Run it as a benchmark (each target in child processes with a CPU
and wall-clock limit per case and an address-space limit)::

    python benchmarks/fuzz_readers.py --cases 10000
    python benchmarks/fuzz_readers.py --cases 2000 --targets cifar-pickle,aedat4 --save-crashes crashes/

and ``tests/test_fuzz_readers.py`` runs the same harness with a few hundred cases per target.

Before the random cases, every file target runs its fixed cases: the path-level ones (a missing
file, an empty one, a directory, a symlink loop, a link to itself, a dangling link, a file
whose name or folder is not UTF-8 (valid and truncated contents), a file without read
permission (root reads it anyway: then it counts as accepted), a path through a file), and
each seed file truncated at every region boundary and one byte either side (header fields and
the header's end, every record, packet, opcode, line, zip record, PNG chunk or JPEG marker;
``--boundary-limit`` spread over each seed).

How the cases are made (with `hypothesis`, generate phase only, a fixed seed: a run is
reproducible): every file target starts from *valid* files in the real format, written by
fewstep's own writers, built here byte by byte after the published layouts, or taken from the
real recordings in ``$FEWSTEP_DATA/event-samples`` (``../shared/data/event-samples``). A case
picks a seed file and a *view* of it (the file itself, or an inner layer that is re-wrapped
after mutation: the IDX stream inside the gzip, the FlatBuffer inside an LZ4 packet, the
AEDAT 4 info XML, the Prophesee header text), then applies up to six mutations: bit flips,
byte sets, "interesting" integers (0, -1, 2**31, 2**63-1, ...) written over random bytes or
over the seed's known structural fields (IDX dims, packet headers, FlatBuffer offsets, pickle
length prefixes, ...), truncation, insertion, deletion, duplication of a chunk (duplicated
headers), appended junk and splices from other seeds. The CIFAR target also gets whole
pickles generated opcode by opcode: dicts of random values, deep nesting, calls to the allowed
callables with hostile arguments, and references to forbidden globals (``os.system``,
``builtins.eval``, a canary module whose functions record any call).

What counts as a crash:

* readers: any exception but the documented one (:class:`fewstep.errors.DataFormatError`;
  ``ConfigError`` for recipes; ``CheckpointError`` or ``ConfigError`` for checkpoints), or that
  one when its message does not name the file or spans lines (an ``ImportError`` that asks to
  ``pip install`` an optional decompressor is tallied apart, not as a crash), a ``MemoryError``
  (also one a reader wrapped in its own error: a memory blow-up under the ``--memory-gb`` limit),
  a case running longer than ``--timeout`` seconds of CPU (or five times that in wall time), a
  result that breaks the reader's contract (events outside the returned sensor, timestamps
  negative or not sorted, polarity not 0/1, a sensor size that is negative or over
  32768, an IDX array whose shape disagrees with its size, CIFAR images that are not
  uint8 [N, 3, 32, 32] or labels out of range), an output more than 64 times larger than an
  uncompressed input file (a memory amplification), and for CIFAR any unpickled object that
  is not plain data or any call reaching the canary;
* STC: any exception but a ``ValueError`` raised on purpose by fewstep (an explicit ``raise``
  in fewstep's code, so the message was written for the user; ``ConfigError`` is a
  ``ValueError``), a timeout, or a result that is not what the documented binning rule gives:
  the shape, float32, finite and non-negative values, and the exact number of events per step
  recomputed here with Python integers (no overflow) from the rule in the module docstring.

Prints one table row per target: cases tried (random, boundary cuts, path cases), rejected
cleanly (the documented error naming the file), accepted, crashes (distinct signatures, and
failing cases), then one line per crash signature, then the same per reader as a Markdown table
(also written to ``--markdown FILE``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gzip
import json
import linecache
import math
import os
import pickle
import pickletools
import signal
import struct
import sys
import tempfile
import time
import traceback
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(ROOT / "tests") not in sys.path:  # the format writers shared with the tests
    sys.path.append(str(ROOT / "tests"))

from format_writers import (
    AEDAT4_EVENTS_A,
    AEDAT4_EVENTS_B,
    AEDAT4_MAGIC,
    AEDAT4_XML,
    build_aedat4,
    caer_packet,
    event_packet,
    gesture_labels_csv,
    idx_header,
    nmnist_record,
    pickle_int,
    polarity_event,
    py2_pickle,
    py2_value,
    pystr,
)
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

import fewstep
from fewstep.errors import DataFormatError

FEWSTEP_DIR = str(Path(fewstep.__file__).resolve().parent)
MAX_SENSOR = 32768  # int16 coordinates: no sensor can be wider
AMPLIFICATION = 64  # an uncompressed format may grow at most this much when decoded
INTERESTING = [0, 1, 2, 3, 7, 8, 16, 127, 128, 255, 256, 1023, 1024, 4096, 32767, 32768, 65535, 65536,
               2**24, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**53 + 1, 2**62, 2**63 - 1, 2**63, 2**64 - 1,
               -1, -2, -128, -32768, -(2**31), -(2**63)]


# ============================================================================ seeds and mutations


@dataclasses.dataclass
class View:
    """Bytes to mutate; ``wrap`` turns mutated bytes back into a whole file. ``fields``:
    ``(offset, size, endian)`` of the structural integers in ``data``."""

    data: bytes
    fields: list[tuple[int, int, str]] = dataclasses.field(default_factory=list)
    wrap: Callable[[bytes], bytes] | None = None
    name: str = "file"


@dataclasses.dataclass
class Seed:
    name: str
    views: list[View]
    suffix: str = ""


_pos = st.integers(0, 2**20)
_value = st.one_of(st.sampled_from(INTERESTING), st.integers(-(2**63), 2**64 - 1))
MUTATION = st.one_of(
    st.tuples(st.just("flip"), _pos, st.integers(0, 7)),
    st.tuples(st.just("byte"), _pos, st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, 0x0A, 0x23, 0x25, 0x00])),
    st.tuples(st.just("int"), _pos, st.sampled_from([1, 2, 4, 8]), st.sampled_from("<>"), _value),
    st.tuples(st.just("field"), st.integers(0, 10_000), _value),
    st.tuples(st.just("field"), st.integers(0, 10_000), _value),  # (twice as likely)
    st.tuples(st.just("truncate"), _pos),
    st.tuples(st.just("insert"), _pos, st.binary(max_size=48)),
    st.tuples(st.just("delete"), _pos, st.integers(1, 64)),
    st.tuples(st.just("dup"), _pos, st.integers(1, 512), _pos),
    st.tuples(st.just("append"), st.binary(max_size=48)),
    st.tuples(st.just("splice"), st.integers(0, 1000), _pos, _pos),
)


def _write_int(buf: bytearray, at: int, size: int, endian: str, value: int) -> None:
    value &= (1 << (8 * size)) - 1
    buf[at:at + size] = value.to_bytes(size, "little" if endian == "<" else "big")[: max(0, len(buf) - at)]


def mutate(view: View, ops: list[tuple], others: list[bytes]) -> bytes:
    buf = bytearray(view.data)
    for op in ops:
        kind, n = op[0], len(buf)
        if kind == "flip" and n:
            buf[op[1] % n] ^= 1 << op[2]
        elif kind == "byte" and n:
            buf[op[1] % n] = op[2]
        elif kind == "int" and n:
            _write_int(buf, op[1] % n, op[2], op[3], op[4])
        elif kind == "field":
            if view.fields:
                at, size, endian = view.fields[op[1] % len(view.fields)]
                if at < len(buf):
                    _write_int(buf, at, size, endian, op[2])
            elif n:
                _write_int(buf, op[1] % n, 4, "<", op[2])
        elif kind == "truncate":
            del buf[op[1] % (n + 1):]
        elif kind == "insert":
            at = op[1] % (n + 1)
            buf[at:at] = op[2]
        elif kind == "delete" and n:
            at = op[1] % n
            del buf[at:at + op[2]]
        elif kind == "dup" and n:
            a = op[1] % n
            chunk = bytes(buf[a:a + op[2]])
            b = op[3] % (n + 1)
            buf[b:b] = chunk
        elif kind == "append":
            buf += op[1]
        elif kind == "splice" and others:
            other = others[op[1] % len(others)]
            a = op[2] % (len(other) + 1)
            b = op[3] % (n + 1)
            buf[b:] = other[a:]
    return bytes(buf)


def file_case(seeds: list[Seed], extra: Callable[[Any], bytes] | None = None) -> st.SearchStrategy:
    """A strategy of ``(seed name, view name, file bytes)`` mutated from ``seeds``."""
    others = [s.views[0].data for s in seeds]

    @st.composite
    def case(draw: Callable) -> tuple[str, str, bytes]:
        if extra is not None and draw(st.integers(0, 3)) == 0:
            return "generated", "whole", extra(draw)
        seed = seeds[draw(st.integers(0, len(seeds) - 1))]
        view = seed.views[draw(st.integers(0, len(seed.views) - 1))]
        ops = draw(st.lists(MUTATION, max_size=6))
        data = mutate(view, ops, others)
        if view.wrap is not None:
            data = view.wrap(data)
        return seed.name, view.name, data

    return case()


# ---------------------------------------------------------------------------- sample files


def _data_dir(name: str, usable: Callable[[Path], bool] = Path.is_dir) -> Path | None:
    """``$FEWSTEP_DATA/<name>``, else ``../shared/data/<name>`` beside the checkout (or inside it),
    the first one that ``usable`` accepts."""
    candidates = []
    if os.environ.get("FEWSTEP_DATA"):
        candidates.append(Path(os.environ["FEWSTEP_DATA"]) / name)
    candidates += [ROOT.parent / "shared" / "data" / name, ROOT / "shared" / "data" / name]
    return next((c for c in candidates if usable(c)), None)


def samples_dir() -> Path | None:
    """``$FEWSTEP_DATA/event-samples``, else ``../shared/data/event-samples`` beside the checkout."""
    return _data_dir("event-samples")


def _mnist_dir() -> Path | None:
    return _data_dir("mnist", lambda c: (c / "t10k-labels-idx1-ubyte.gz").is_file())


def _events(rng: np.random.Generator, n: int, w: int, h: int, t0: int = 0, t1: int = 100_000) -> np.ndarray:
    from fewstep.events.types import make_events

    return make_events(rng.integers(0, w, n), rng.integers(0, h, n), np.sort(rng.integers(t0, t1, n)),
                       rng.integers(0, 2, n))


def _tmp_bytes(writer: Callable[[Path], None], suffix: str) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"seed{suffix}"
        writer(p)
        return p.read_bytes()


# ---------------------------------------------------------------------------- IDX


def idx_seeds(compressed: bool) -> list[Seed]:
    from fewstep.data.idx import write_idx

    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, 10, dtype=np.uint8), rng.integers(0, 256, (3, 4, 5), dtype=np.uint8),
              rng.integers(-128, 128, (2, 7), dtype=np.int8), rng.integers(-3000, 3000, (2, 3), dtype=np.int16),
              rng.integers(-(2**31), 2**31, (4,), dtype=np.int32),
              np.array([[0.5, np.nan], [np.inf, -1e30]], dtype=np.float32), rng.normal(size=(3, 2)),
              np.zeros((0, 5), np.uint8), rng.integers(0, 256, (1, 1, 1, 1, 2), dtype=np.uint8)]
    raws = [_tmp_bytes(lambda p, a=a: write_idx(p, a, compress=False), ".idx") for a in arrays]
    mnist = _mnist_dir()
    if mnist is not None:  # the real MNIST test labels (10,008 bytes raw)
        raws.append(gzip.decompress((mnist / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    seeds = []
    for i, raw in enumerate(raws):
        ndim = raw[3]
        fields = [(0, 1, ">"), (1, 1, ">"), (2, 1, ">"), (3, 1, ">")] + [(4 + 4 * k, 4, ">") for k in range(ndim)]
        if not compressed:
            seeds.append(Seed(f"idx{i}", [View(raw, fields)], ".idx"))
            continue
        gz = gzip.compress(raw, mtime=0)
        seeds.append(Seed(f"idx{i}.gz", [
            View(gz, [(0, 2, ">"), (2, 1, "<"), (3, 1, "<"), (4, 4, "<"), (len(gz) - 8, 4, "<"), (len(gz) - 4, 4, "<")]),
            View(raw, fields, wrap=lambda b: gzip.compress(b, mtime=0), name="inner"),
            View(raw, fields, wrap=lambda b: gzip.compress(b[: len(b) // 2], mtime=0)
                 + gzip.compress(b[len(b) // 2:], mtime=0), name="two-members"),
            View(raw, fields, wrap=lambda b: gzip.compress(b, mtime=0) + b"\x00" * 7, name="zero-padded"),
        ], ".gz"))
    if compressed and mnist is not None:
        real = (mnist / "t10k-labels-idx1-ubyte.gz").read_bytes()
        seeds.append(Seed("mnist-t10k-labels.gz", [View(real, [(0, 2, ">"), (4, 4, "<")])], ".gz"))
    return seeds


def idx_generated(compressed: bool) -> Callable[[Callable], bytes]:
    """Whole IDX files built from a drawn header: any type code, 0..255 dimensions (numpy allows
    64), dims from 0 to 2**32-1, a payload of exactly the declared size or a little off."""
    def make(draw: Callable) -> bytes:
        code = draw(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x0A, 0x00, 0xFF]))
        ndim = draw(st.sampled_from([0, 1, 2, 3, 4, 32, 33, 63, 64, 65, 100, 255]))
        dims = [draw(st.sampled_from([0, 1, 1, 1, 1, 2, 3, 255, 65535, 2**31, 2**32 - 1])) for _ in range(ndim)]
        itemsize = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}.get(code, 1)
        want = math.prod(dims) * itemsize
        size = max(0, min(want, 4096) + draw(st.sampled_from([0, 0, 0, -1, 1, 7, -8])))
        blob = idx_header(code, dims) + draw(st.binary(min_size=min(size, 64), max_size=min(size, 64)))
        blob += bytes(max(0, size - 64))
        return gzip.compress(blob, mtime=0) if compressed else blob

    return make


def idx_call(path: Path) -> Any:
    from fewstep.data.idx import read_idx

    return read_idx(path)


def idx_check(result: np.ndarray, size: int, compressed: bool) -> str | None:
    if not isinstance(result, np.ndarray):
        return f"read_idx returned {type(result).__name__}"
    if not result.dtype.isnative:
        return f"array not in native byte order ({result.dtype})"
    if result.size != math.prod(result.shape):
        return "array size disagrees with its shape"
    if not compressed and result.nbytes > AMPLIFICATION * size + 65536:
        return f"{result.nbytes}-byte array from a {size}-byte file"
    return None


# ---------------------------------------------------------------------------- CIFAR pickles


CANARY_MODULE = "fewstep_fuzz_canary"
CANARY_CALLS: list[tuple] = []


def _install_canary() -> None:
    """A module whose every function records its call: a pickle naming it must never reach it."""
    if CANARY_MODULE in sys.modules:
        return
    mod = types.ModuleType(CANARY_MODULE)

    def touch(*args: Any, **kwargs: Any) -> str:
        CANARY_CALLS.append(args)
        return "pwned"

    class Boom:
        def __init__(self, *args: Any) -> None:
            CANARY_CALLS.append(("Boom",) + args)

        def __setstate__(self, state: Any) -> None:
            CANARY_CALLS.append(("Boom.__setstate__", state))

    mod.touch, mod.Boom = touch, Boom
    sys.modules[CANARY_MODULE] = mod


def _pickle_fields(data: bytes) -> list[tuple[int, int, str]]:
    """Length prefixes and integer arguments of a pickle's opcodes, found with pickletools."""
    sizes = {"BINSTRING": 4, "SHORT_BINSTRING": 1, "BINBYTES": 4, "SHORT_BINBYTES": 1, "BINBYTES8": 8,
             "BINUNICODE": 4, "SHORT_BINUNICODE": 1, "BINUNICODE8": 8, "BYTEARRAY8": 8, "FRAME": 8,
             "BININT": 4, "BININT1": 1, "BININT2": 2, "LONG1": 1, "LONG4": 4, "BINPUT": 1, "LONG_BINPUT": 4,
             "BINGET": 1, "LONG_BINGET": 4, "PROTO": 1, "EXT1": 1, "EXT2": 2, "EXT4": 4}
    fields = []
    try:
        for op, _arg, pos in pickletools.genops(data):
            if op.name in sizes:
                fields.append((pos + 1, sizes[op.name], "<"))
    except Exception:
        pass
    return fields


def cifar_seeds() -> list[Seed]:
    rng = np.random.default_rng(1)
    names10 = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    blobs = []
    for n in (1, 2):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(x) for x in rng.integers(0, 10, n)]
        blobs.append(py2_pickle({b"batch_label": b"training batch 1 of 5", b"labels": labels, b"data": data,
                                 b"filenames": [b"img_%d.png" % i for i in range(n)]}))
    blobs.append(py2_pickle({b"label_names": names10, b"num_cases_per_batch": 10000, b"num_vis": 3072}))
    for protocol in (2, 3, 4, 5):
        data = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
        fine = [int(x) for x in rng.integers(0, 100, 2)]
        blobs.append(pickle.dumps({"filenames": ["a.png", "b.png"], "batch_label": "train", "fine_labels": fine,
                                   "coarse_labels": [f // 5 for f in fine], "data": data}, protocol=protocol))
    blobs.append(pickle.dumps({"fine_label_names": [f"fine{i}" for i in range(100)],
                               "coarse_label_names": [f"c{i}" for i in range(20)]}, protocol=2))
    blobs.append(pickle.dumps({"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), "labels": np.arange(3)},
                              protocol=4))
    return [Seed(f"cifar{i}", [View(b, _pickle_fields(b))]) for i, b in enumerate(blobs)]


_FORBIDDEN = [("os", "system"), ("posix", "system"), ("builtins", "eval"), ("builtins", "exec"),
              ("builtins", "getattr"), ("builtins", "__import__"), ("builtins", "open"), ("subprocess", "Popen"),
              ("pickle", "loads"), ("numpy", "load"), ("numpy.lib.npyio", "load"), ("torch", "load"),
              ("copyreg", "_reconstructor"), ("__builtin__", "eval"), ("numpy.core.multiarray", "frombuffer"),
              ("numpy", "frombuffer"), ("numpy.testing._private.utils", "runstring"), ("builtins", "type"),
              (CANARY_MODULE, "touch"), (CANARY_MODULE, "Boom")]
_ALLOWED_CALLS = [("builtins", "bytes"), ("builtins", "bytearray"), ("builtins", "int"), ("builtins", "str"),
                  ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "dict"), ("builtins", "list"),
                  ("builtins", "tuple"), ("builtins", "float"), ("builtins", "complex"), ("_codecs", "encode"),
                  ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                  ("numpy._core.multiarray", "scalar"), ("numpy._core.numeric", "_frombuffer"),
                  ("__builtin__", "bytes"), ("__builtin__", "set")]


def _global_op(module: str, name: str, stack_form: bool) -> bytes:
    if stack_form:  # protocol 4 STACK_GLOBAL
        m, n = module.encode(), name.encode()
        return b"\x8c" + bytes([len(m)]) + m + b"\x8c" + bytes([len(n)]) + n + b"\x93"
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _pickle_value(draw: Callable, depth: int = 0) -> bytes:
    """Opcodes that push one value: plain data, containers, deep nesting, arrays, calls."""
    kinds = ["int", "bigint", "float", "bytes", "str", "badutf8", "none", "bool", "list", "tuple", "dict",
             "array", "call_allowed", "call_forbidden", "nest", "memo", "memo_slot"]
    kind = draw(st.sampled_from(kinds if depth < 3 else kinds[:8]))
    if kind == "int":
        return pickle_int(draw(st.sampled_from(INTERESTING)))
    if kind == "bigint":
        return pickle_int(draw(st.sampled_from([2**70, -(2**70), 10**5000, 2**64])))
    if kind == "float":
        return b"G" + struct.pack(">d", draw(st.sampled_from([0.5, math.nan, math.inf, -math.inf, 1e308, -0.0])))
    if kind == "bytes":
        b = draw(st.binary(max_size=40))
        return b"C" + bytes([len(b)]) + b
    if kind == "str":
        s = draw(st.text(max_size=20)).encode("utf-8", "surrogatepass")
        return b"X" + struct.pack("<I", len(s)) + s
    if kind == "badutf8":
        return pystr(draw(st.sampled_from([b"\xff\xfe", b"\xc3", b"ok", b"\xed\xa0\x80"])))
    if kind == "none":
        return b"N"
    if kind == "bool":
        return b"\x88" if draw(st.booleans()) else b"\x89"
    if kind == "list":
        items = draw(st.lists(st.integers(0, 0), max_size=4))
        return b"](" + b"".join(_pickle_value(draw, depth + 1) for _ in items) + b"e"
    if kind == "tuple":
        items = draw(st.lists(st.integers(0, 0), max_size=3))
        return b"(" + b"".join(_pickle_value(draw, depth + 1) for _ in items) + b"t"
    if kind == "dict":
        items = draw(st.lists(st.integers(0, 0), max_size=3))
        return b"}(" + b"".join(_pickle_value(draw, depth + 1) + _pickle_value(draw, depth + 1) for _ in items) + b"u"
    if kind == "array":  # numpy's own pickle of a random array, possibly with a lying shape
        dtype = draw(st.sampled_from(["u1", "i8", "f4", "O", "V3", "<U2", "b1"]))
        shape = tuple(draw(st.lists(st.integers(0, 4), min_size=1, max_size=3)))
        arr = np.zeros(shape, dtype=dtype) if dtype != "O" else np.empty(shape, dtype=object)
        blob = pickle.dumps(arr, protocol=2)[2:-1]  # strip PROTO and STOP
        if draw(st.booleans()):  # lie about the shape: the buffer no longer matches
            blob = blob.replace(b"K\x00\x85", pickle_int(draw(st.sampled_from([2**40, 3, 2**31]))) + b"\x85", 1)
        return blob
    if kind in ("call_allowed", "call_forbidden"):
        module, name = draw(st.sampled_from(_ALLOWED_CALLS if kind == "call_allowed" else _FORBIDDEN))
        nargs = draw(st.integers(0, 3))
        args = b"".join(draw(st.sampled_from([
            pickle_int(draw(st.sampled_from([0, 1, 7, 3072, 2**20, 2**31, 2**40, -1]))),
            b"(" + pickle_int(2**40) + pickle_int(2**40) + b"t", pystr(b"u1"), pystr(b"O"), pystr(b"latin1"),
            pystr(b"rot13"), pystr(b"echo pwned"), b"N", b"](e", _pickle_value(draw, depth + 1)]))
            for _ in range(nargs))
        return _global_op(module, name, draw(st.booleans())) + b"(" + args + b"tR"
    if kind == "nest":  # deep tuples (hashable: as a dict key or set element their hash recurses) or lists
        n = draw(st.sampled_from([10, 1000, 100_000, 300_000]))
        body = draw(st.sampled_from([b")" + b"\x85" * n, b")" + b"K\x00\x86" * n, b"]" + b"\x85" * n]))
        wrap = draw(st.sampled_from(["as_is", "set", "frozenset", "dict_key"]))
        if wrap == "set":
            return b"\x8f(" + body + b"\x90"  # EMPTY_SET, MARK, ..., ADDITEMS
        if wrap == "frozenset":
            return b"(" + body + b"\x91"  # MARK ... FROZENSET
        if wrap == "dict_key":
            return b"}" + body + b"K\x01s"
        return body
    if kind == "memo_slot":  # a memo slot far beyond the file: the unpickler sizes its table to it
        slot = draw(st.sampled_from([300, 2**16, 2**24, 2**31 - 1, 2**32 - 1]))
        return draw(st.sampled_from([b"]r" + struct.pack("<I", slot), b"]p%d\n" % slot,
                                     b"]r" + struct.pack("<I", slot) + b"j" + struct.pack("<I", slot)]))
    # memo: put and get the same object twice (aliasing), and a recursive list
    return b"]q\x00h\x00a"


def cifar_generated(draw: Callable) -> bytes:
    """A whole pickle built opcode by opcode: a CIFAR-like dict of hostile values."""
    keys = draw(st.lists(st.sampled_from(
        [b"data", b"labels", b"fine_labels", b"label_names", b"fine_label_names", b"filenames", b"other"]),
        min_size=1, max_size=4, unique=True))
    body = b""
    for k in keys:
        body += pystr(k) + (_pickle_value(draw) if draw(st.booleans()) or k not in (b"data", b"labels")
                             else py2_value(np.zeros((draw(st.integers(0, 2)), 3072), np.uint8)) if k == b"data"
                             else py2_value([draw(st.integers(-1, 12))]))
    return b"\x80\x02}(" + body + b"u."


_PLAIN_TYPES = (dict, list, tuple, set, frozenset, bytes, bytearray, str, int, float, complex, bool, type(None),
                np.ndarray, np.generic, np.dtype)


def _check_plain(obj: Any, limit: int = 200_000) -> str | None:
    """Only plain data may come out of a CIFAR pickle (iterative walk, bounded)."""
    todo, seen = [obj], set()
    while todo and limit > 0:
        limit -= 1
        o = todo.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if not isinstance(o, _PLAIN_TYPES) or (isinstance(o, type) and o not in (np.ndarray,)):
            return f"unpickled a {type(o).__module__}.{type(o).__qualname__} object"
        if isinstance(o, dict):
            todo += list(o.keys()) + list(o.values())
        elif isinstance(o, (list, tuple, set, frozenset)):
            todo += list(o)
        elif isinstance(o, np.ndarray) and o.dtype == object:
            todo += list(o.ravel()[:1000])
    return None


def cifar_call(path: Path) -> Any:
    from fewstep.data.cifar import _batch, _names, safe_unpickle

    d = safe_unpickle(path)
    problem = _check_plain(d)
    if problem:
        return ("bad", problem)
    names = [k for k in ("label_names", "fine_label_names", "coarse_label_names") if k in d]
    if names:
        return ("names", [_names(path, d, k) for k in names])
    fine = "fine_labels" in d
    return ("batch", _batch(path, "fine_labels" if fine else "labels", 100 if fine else 10), 100 if fine else 10)


def cifar_check(result: Any, size: int, compressed: bool) -> str | None:
    if CANARY_CALLS:
        calls = list(CANARY_CALLS)
        CANARY_CALLS.clear()
        return f"a pickled global was called: {calls[:2]!r}"
    kind = result[0]
    if kind == "bad":
        return result[1]
    if kind == "names":
        return None if all(isinstance(n, str) for names in result[1] for n in names) else "label name not a str"
    (x, y), ncls = result[1], result[2]
    if not (isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 4 and x.shape[1:] == (3, 32, 32)):
        return f"images are {getattr(x, 'dtype', type(x))} {getattr(x, 'shape', '')}"
    if not (isinstance(y, np.ndarray) and y.dtype == np.int64 and y.shape == (len(x),)):
        return "labels are not int64 [N]"
    if y.size and (y.min() < 0 or y.max() >= ncls):
        return "labels out of range"
    if x.nbytes + y.nbytes > AMPLIFICATION * size + 65536:
        return f"{x.nbytes + y.nbytes} bytes of arrays from a {size}-byte pickle"
    return None


# ---------------------------------------------------------------------------- event files


def _event_check(result: Any, size: int, compressed: bool) -> str | None:
    from fewstep.events.types import EVENT_DTYPE

    ev, sensor = result
    if not isinstance(ev, np.ndarray) or ev.dtype != EVENT_DTYPE or ev.ndim != 1:
        return f"events are {getattr(ev, 'dtype', type(ev))}"
    if not (isinstance(sensor, tuple) and len(sensor) == 2 and all(type(v) is int for v in sensor)):
        return f"sensor size {sensor!r} is not two ints"
    w, h = sensor
    if not (0 <= w <= MAX_SENSOR and 0 <= h <= MAX_SENSOR):
        return f"sensor size {sensor} outside 0..{MAX_SENSOR}"
    if len(ev):
        x, y = ev["x"], ev["y"]
        if x.min() < 0 or y.min() < 0 or x.max() >= w or y.max() >= h:
            return f"events outside the returned {w}x{h} sensor"
        if not np.isin(ev["p"], (0, 1)).all():
            return "polarity other than 0/1"
        t = ev["t"]
        if t.min() < 0:
            return f"negative timestamp {int(t.min())}"
        if len(t) > 1 and (t[1:] < t[:-1]).any():
            return "timestamps not sorted"
    if not compressed and ev.nbytes > AMPLIFICATION * size + 65536:
        return f"{ev.nbytes} bytes of events from a {size}-byte file"
    return None


def nmnist_seeds() -> list[Seed]:
    from fewstep.events.readers import write_nmnist_bin

    rng = np.random.default_rng(2)
    blobs = [_tmp_bytes(lambda p, n=n: write_nmnist_bin(p, _events(rng, n, 34, 34, 0, 2**23 - 1)), ".bin")
             for n in (0, 1, 7, 40)]
    overflow = nmnist_record(1, 2, 1, 5) + nmnist_record(0, 240, 0, 0) + nmnist_record(3, 4, 0, 256)
    blobs += [overflow, bytes([200, 100, 0xFF, 0xFF, 0xFF]) * 3]
    s = samples_dir()
    if s and (s / "sample_nmnist.bin").is_file():
        blobs.append((s / "sample_nmnist.bin").read_bytes())
    return [Seed(f"nmnist{i}", [View(b, [(5 * k + j, 1, ">") for k in range(min(len(b) // 5, 8)) for j in range(5)])],
                 ".bin") for i, b in enumerate(blobs)]


def nmnist_call(path: Path) -> Any:
    from fewstep.events.readers import read_nmnist_bin

    with contextlib.suppress(DataFormatError):
        read_nmnist_bin(path)  # N-MNIST: 34x34
    return read_nmnist_bin(path, sensor_size=None)  # N-Caltech101: size inferred


def aedat2_seeds() -> list[Seed]:
    from fewstep.events.readers import write_aedat2

    rng = np.random.default_rng(3)
    blobs = [_tmp_bytes(lambda p, n=n, o=o: write_aedat2(p, _events(rng, n, 128, 128, 0, 2**32 - 1), o), ".aedat")
             for n, o in ((0, "jaer"), (5, "jaer"), (30, "spikingjelly"))]
    header = b"#!AER-DAT2.0\r\n# hand made\r\n"
    special = struct.pack(">II", 1 << 15, 10) + struct.pack(">II", 0x7F7F, 4_294_967_000) + struct.pack(">II", 3, 5)
    blobs += [header + special, b"#!AER-DAT2.0\n" + struct.pack(">II", 0xFFFFFFFF, 0xFFFFFFFF)]
    seeds = []
    for i, b in enumerate(blobs):
        start = b.rfind(b"\n", 0, 400) + 1
        fields = [(start + 4 * k, 4, ">") for k in range(min((len(b) - start) // 4, 16))]
        seeds.append(Seed(f"aedat2-{i}", [View(b, fields)], ".aedat"))
    return seeds


def aedat2_call(path: Path) -> Any:
    from fewstep.events.readers import read_aedat2

    with contextlib.suppress(DataFormatError):
        read_aedat2(path, orientation="spikingjelly")
    return read_aedat2(path)


def aedat31_seeds() -> list[Seed]:
    from fewstep.events.readers import write_aedat31
    from fewstep.events.readers.aedat31 import PACKET_HEADER

    rng = np.random.default_rng(4)
    blobs = []
    for n, src, per in ((0, "DVS128", 10), (7, "DVS128", 3), (12, "DAVIS346", 5), (5, "Unknown cam", 4)):
        w, h = (346, 260) if src == "DAVIS346" else (128, 128)
        blobs.append(_tmp_bytes(lambda p, n=n, src=src, per=per, w=w, h=h: write_aedat31(
            p, _events(rng, n, w, h, 0, 2**33), source=src, events_per_packet=per), ".aedat"))
    # a special-event packet (type 0, 8-byte events) before a polarity packet, and an invalid event
    special = caer_packet(0, 8, 0, [struct.pack("<Ii", 5, 1)] * 2)
    polarity = caer_packet(1, 8, 3, [polarity_event(5, 9, 1, 77), polarity_event(1, 0, 1, 78, valid=0)], capacity=3)
    blobs.append(b"#!AER-DAT3.1\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n" + special + polarity)
    seeds = []
    for i, b in enumerate(blobs):
        pos = b.find(b"#!END-HEADER\r\n") + len(b"#!END-HEADER\r\n")
        fields = []
        while pos + 28 <= len(b):
            fields += [(pos, 2, "<"), (pos + 2, 2, "<")] + [(pos + 4 + 4 * k, 4, "<") for k in range(6)]
            _, _, esize, _, _, cap, _, _ = PACKET_HEADER.unpack_from(b, pos)
            fields += [(pos + 28 + 8 * k, 4, "<") for k in range(min(cap, 4) * 2)]
            pos += 28 + cap * esize
        seeds.append(Seed(f"aedat31-{i}", [View(b, fields)], ".aedat"))
    return seeds


def aedat31_call(path: Path) -> Any:
    from fewstep.events.readers import read_aedat31

    with contextlib.suppress(DataFormatError):
        read_aedat31(path, sensor_size=(128, 128))
    return read_aedat31(path)


GESTURE_CSVS = [b"class,startTime_usec,endTime_usec\n1,80048239,85092709\n11,85000000,90000000\n",
                b"class,startTime_usec,endTime_usec\r\n2,0,10\r\n\r\n", b"class,startTime_usec,endTime_usec\n"]


def gesture_seeds() -> list[Seed]:
    return [Seed(f"labels{i}", [View(b)], ".csv") for i, b in enumerate(GESTURE_CSVS)]


def gesture_generated(draw: Callable) -> bytes:
    rows = draw(st.lists(st.tuples(st.sampled_from(["1", "11", "0", "12", "-1", "x", "1.5", " 3 ", "٣"]),
                                   st.sampled_from(["0", "-5", "10", str(2**63), str(10**30), "9" * 5000, ""]),
                                   st.sampled_from(["1", "20", str(2**63 - 1), str(2**64), "-1", "1e3"])),
                         max_size=4))
    return gesture_labels_csv(rows).encode()


def gesture_call(path: Path) -> Any:
    from fewstep.events.readers import read_gesture_labels

    return read_gesture_labels(path)


def gesture_check(result: Any, size: int, compressed: bool) -> str | None:
    from fewstep.events.readers.aedat31 import GESTURE_CLASSES, LABEL_DTYPE

    if not isinstance(result, np.ndarray) or result.dtype != LABEL_DTYPE:
        return "labels are not LABEL_DTYPE"
    if len(result) and (result["label"].min() < 0 or result["label"].max() >= len(GESTURE_CLASSES)
                        or (result["end"] <= result["start"]).any()):
        return "label row out of range"
    return None


# -- AEDAT 4: FlatBuffers built by hand after the DV layout (as tests/test_event_readers.py does)

XML_VARIANTS = [
    AEDAT4_XML.format(comp="NONE", w="0", h="30"), AEDAT4_XML.format(comp="NONE", w="²", h="30"),
    AEDAT4_XML.format(comp="NONE", w="9" * 5000, h="30"), AEDAT4_XML.format(comp="NONE", w="٣٢٠", h="240"),
    AEDAT4_XML.format(comp="NONE", w="99999", h="99999"), AEDAT4_XML.format(comp="NONE", w="-40", h="30"),
    AEDAT4_XML.replace('name="0"', 'name="²"'), AEDAT4_XML.replace('name="0"', 'name="' + "9" * 5000 + '"'),
    AEDAT4_XML.replace("EVTS", "evts"), "<dv><node name='outInfo'></node></dv>", "", "<dv>",
    ('<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
    '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">'
    '<!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;"><!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">'
    '<!ENTITY g "&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;">]><dv>&g;</dv>'),
    '<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><dv>&x;</dv>',
]


IO_HEADER_FIELDS = [(0, 4, "<")] + [(8 + 2 * k, 2, "<") for k in range(5)] + [(20, 4, "<"), (24, 4, "<"),
                                                                             (28, 8, "<"), (36, 4, "<"), (40, 4, "<")]


def _packet_fields(n_events: int) -> list[tuple[int, int, str]]:
    fields = [(0, 4, "<"), (4, 4, "<"), (12, 2, "<"), (14, 2, "<"), (16, 2, "<"), (20, 4, "<"), (24, 4, "<"),
              (32, 4, "<")]
    for k in range(min(n_events, 3)):
        at = 36 + 16 * k
        fields += [(at, 8, "<"), (at + 8, 2, "<"), (at + 10, 2, "<"), (at + 12, 1, "<")]
    return fields


def _real_aedat4_packets(limit: int = 3) -> tuple[int, str, list[tuple[int, bytes]]] | None:
    """``(compression, info XML, first packets decompressed)`` of the real sample, if present."""
    s = samples_dir()
    if not s or not (s / "sample.aedat4").is_file():
        return None
    from fewstep.events.readers.aedat4 import _root

    data = (s / "sample.aedat4").read_bytes()
    size = struct.unpack_from("<i", data, len(AEDAT4_MAGIC))[0]
    start = len(AEDAT4_MAGIC) + 4
    table = _root(memoryview(data)[start:start + size], b"IOHE")
    compression, xml = table.scalar(0, "<i", 0), table.string(2) or ""
    end = table.scalar(1, "<q", -1)
    end = len(data) if end < 0 else end
    pos, packets = start + size, []
    seen: dict[int, int] = {}
    while pos + 8 <= end and len(packets) < limit + 2:
        sid, n = struct.unpack_from("<ii", data, pos)
        blob = data[pos + 8:pos + 8 + n]
        if seen.get(sid, 0) < (limit if sid == 0 else 1):
            seen[sid] = seen.get(sid, 0) + 1
            packets.append((sid, _lz4_decompress(blob) if compression in (1, 2) else blob))
        pos += 8 + n
    return compression, xml, packets


def _lz4_decompress(b: bytes) -> bytes:
    import lz4.frame

    return lz4.frame.decompress(b)


def aedat4_seeds() -> list[Seed]:
    seeds = []
    imu = event_packet([(5, 1, 1, 1)], identifier=b"IMUS")
    xml = AEDAT4_XML.format(comp="{comp}", w=40, h=30)
    packet_sets = [[(0, event_packet(AEDAT4_EVENTS_A)), (2, imu), (0, event_packet(AEDAT4_EVENTS_B))],
                   [(0, event_packet([]))], []]
    real = _real_aedat4_packets()
    if real is not None:
        packet_sets.append(real[2])
    for i, packets in enumerate(packet_sets):
        info = real[1] if (real is not None and i == len(packet_sets) - 1) else xml
        for compression in (0, 1):
            comp_xml = info.replace("{comp}", "LZ4" if compression else "NONE")
            for with_table in (True, False):
                if i > 0 and not with_table:
                    continue
                data = build_aedat4(packets, compression, comp_xml, with_table)
                hdr = len(AEDAT4_MAGIC) + 4
                fields = [(len(AEDAT4_MAGIC), 4, "<")] + [(hdr + a, s, e) for a, s, e in IO_HEADER_FIELDS]
                pos = hdr + struct.unpack_from("<i", data, len(AEDAT4_MAGIC))[0]
                for sid, p in packets:
                    n = struct.unpack_from("<i", data, pos + 4)[0]
                    fields += [(pos, 4, "<"), (pos + 4, 4, "<")]
                    if compression == 0:
                        fields += [(pos + 8 + a, s, e) for a, s, e in _packet_fields(4)]
                    pos += 8 + n
                views = [View(data, fields)]
                # inner views: one packet's FlatBuffer, mutated then compressed; the info XML
                for k, (sid, p) in enumerate(packets[:2]):
                    def wrap(b: bytes, k: int = k, packets: list = packets, compression: int = compression,
                             comp_xml: str = comp_xml, with_table: bool = with_table) -> bytes:
                        changed = list(packets)
                        changed[k] = (changed[k][0], b)
                        return build_aedat4(changed, compression, comp_xml, with_table)

                    views.append(View(p, _packet_fields(4), wrap, name=f"packet{k}"))

                def wrap_xml(b: bytes, packets: list = packets, compression: int = compression,
                             with_table: bool = with_table) -> bytes:
                    return build_aedat4(packets, compression, b.decode("utf-8", "replace"), with_table)

                views.append(View(comp_xml.encode(), [], wrap_xml, name="xml"))
                for v in XML_VARIANTS[:: 1 + (i > 0) * 3]:
                    views.append(View(v.encode(), [], wrap_xml, name="xml-variant"))
                seeds.append(Seed(f"aedat4-{i}-c{compression}-t{int(with_table)}", views, ".aedat4"))
    return seeds


def aedat4_call(path: Path) -> Any:
    from fewstep.events.readers import read_aedat4, read_aedat4_header

    with contextlib.suppress(DataFormatError):
        read_aedat4_header(path)
    with contextlib.suppress(DataFormatError):
        read_aedat4(path, stream="events")
    return read_aedat4(path)


def prophesee_seeds() -> list[Seed]:
    from fewstep.events.readers import write_prophesee_dat

    rng = np.random.default_rng(5)
    blobs = [_tmp_bytes(lambda p, n=n, s=s: write_prophesee_dat(p, _events(rng, n, 120, 100, 0, 2**32 - 1), s), ".dat")
             for n, s in ((0, None), (6, (120, 100)), (9, None))]
    s = samples_dir()
    if s and (s / "sample_ncars.dat").is_file():
        blobs.append((s / "sample_ncars.dat").read_bytes())
    seeds = []
    for i, b in enumerate(blobs):
        pos = 0
        while pos < len(b) and b[pos] == 0x25:
            pos = b.index(b"\n", pos) + 1
        header, payload = b[:pos], b[pos:]
        fields = [(pos, 1, "<"), (pos + 1, 1, "<")] + [(pos + 2 + 4 * k, 4, "<") for k in range(12)]
        views = [View(b, fields),
                 View(header, [], lambda h, payload=payload: h + payload, name="header"),
                 View(header + b"% Width -5\n% Height 99999999999999\n", [], lambda h, payload=payload: h + payload,
                      name="header-sizes"),
                 View(b"% Width \xd9\xa3\xd9\xa2\n% Height 0\n", [], lambda h, payload=payload: h + payload,
                      name="header-digits")]
        seeds.append(Seed(f"dat{i}", views, ".dat"))
    return seeds


def prophesee_call(path: Path) -> Any:
    from fewstep.events.readers import read_prophesee_dat

    with contextlib.suppress(DataFormatError):
        read_prophesee_dat(path, sensor_size=(120, 100))
    return read_prophesee_dat(path)


def read_events_call(path: Path) -> Any:
    from fewstep.events.readers import read_events

    return read_events(path)


# ---------------------------------------------------------------------------- recipes (TOML, `--config`)


def config_seeds() -> list[Seed]:
    """Every shipped recipe, as the TOML file ``fewstep train --config FILE`` reads."""
    from fewstep.config import builtin_recipes

    recipes = builtin_recipes()
    return [Seed(f"recipe-{name}", [View(recipes[name].read_bytes())], ".toml") for name in sorted(recipes)]


_TOML_VALUES = ['"x"', "0", "-1", "1e400", "-inf", "nan", "9" * 5000, "true", "[]", "{}", "1979-05-27T07:32:00Z",
                '"\\u0000"', '"""\n"""', "0x7fffffffffffffff", "-9223372036854775808", "[1, 'a']", "{a = {b = 1}}",
                "[" * 2000 + "]" * 2000, "{a=" * 2000 + "1" + "}" * 2000, '"' + "a" * 100_000 + '"']


def config_generated(draw: Callable) -> bytes:
    """A shipped recipe with one value replaced by a hostile one (deep nesting, huge numbers, NaN,
    dates, wrong types), or one table or key added."""
    from fewstep.config import builtin_recipes

    recipes = builtin_recipes()
    text = recipes[draw(st.sampled_from(sorted(recipes)))].read_text(encoding="utf-8")
    lines = text.splitlines()
    keyed = [i for i, ln in enumerate(lines) if "=" in ln and not ln.lstrip().startswith("#")]
    value = draw(st.sampled_from(_TOML_VALUES))
    how = draw(st.sampled_from(["replace", "replace", "add-key", "add-table"]))
    if how == "replace" and keyed:
        i = keyed[draw(st.integers(0, len(keyed) - 1))]
        lines[i] = lines[i].split("=", 1)[0] + "= " + value
    elif how == "add-key":
        lines.insert(draw(st.integers(0, len(lines))), f"{draw(st.sampled_from(['x', 'epochs', 'name', 'reg_options']))}"
                                                      f" = {value}")
    else:
        lines.append(f"[{draw(st.sampled_from(['train', 'bogus', 'data.x', 'model']))}]\nname = {value}")
    return "\n".join(lines).encode("utf-8")


def config_call(path: Path) -> Any:
    from fewstep.config import load_recipe

    return load_recipe(str(path))


def config_check(result: Any, size: int, compressed: bool) -> str | None:
    from fewstep.config import Recipe

    return None if isinstance(result, Recipe) else f"load_recipe returned {type(result).__name__}"


# ---------------------------------------------------------------------------- checkpoints (`fewstep eval` / `convert`)


def checkpoint_seeds() -> list[Seed]:
    """Checkpoints as ``fewstep train`` writes them (``save_checkpoint``: a zip of tensors with the
    recipe inside), in both of ``torch.save``'s formats, and a bare state dict."""
    import dataclasses as dc
    import io

    import torch

    from fewstep.config import load_recipe
    from fewstep.train.checkpoint import save_checkpoint

    recipe = dc.asdict(load_recipe("digits-dnn"))
    g = torch.Generator().manual_seed(0)
    model = {"fc.weight": torch.randn(4, 6, generator=g), "fc.bias": torch.zeros(4), "bn.num_batches_tracked":
             torch.tensor(3)}
    states = [{"recipe": recipe, "model": model, "epoch": 1, "history": [{"epoch": 1, "acc": 0.5}]},
              {"recipe": recipe, "model": {}}, {"model": model}]
    blobs = [_tmp_bytes(lambda p, s=s: save_checkpoint(s, p), ".pt") for s in states]
    legacy = io.BytesIO()
    torch.save(states[0], legacy, _use_new_zipfile_serialization=False)
    blobs.append(legacy.getvalue())
    return [Seed(f"ckpt{i}", [View(b, [(k, 4, "<") for k in _zip_offsets(b)][:64])], ".pt") for i, b in enumerate(blobs)]


def _zip_offsets(data: bytes) -> list[int]:
    """Offsets of the zip records (local headers, central directory, end record) and their fields."""
    out = []
    for sig in (b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06"):
        at = data.find(sig)
        while at >= 0:
            out += [at, at + 4, at + 14, at + 18, at + 22, at + 26]
            at = data.find(sig, at + 1)
    return sorted(o for o in set(out) if o < len(data))


def checkpoint_call(path: Path) -> Any:
    from fewstep.config import recipe_from_dict
    from fewstep.evaluate import check_model_checkpoint
    from fewstep.train.checkpoint import load_checkpoint

    state = load_checkpoint(path)
    check_model_checkpoint(state, path)  # what `fewstep eval` and `fewstep convert` do next
    recipe_from_dict(state["recipe"], f"the recipe stored in {path}")
    return state


def checkpoint_check(result: Any, size: int, compressed: bool) -> str | None:
    if not (isinstance(result, dict) and isinstance(result.get("model"), dict)):
        return f"load_checkpoint returned {type(result).__name__}"
    return None


# ---------------------------------------------------------------------------- images (image-folder datasets)


def _image_dir() -> Path | None:
    return _data_dir("cifar10-jpeg", lambda c: (c / "test").is_dir())


def image_seeds() -> list[Seed]:
    """Real CIFAR-10 JPEGs (``$FEWSTEP_DATA/cifar10-jpeg``) where present, and PNG / GIF / BMP / JPEG
    files written by Pillow."""
    import io

    from PIL import Image

    blobs = []
    d = _image_dir()
    if d is not None:
        for cls in ("airplane", "cat", "truck"):
            blobs += [p.read_bytes() for p in sorted((d / "test" / cls).glob("*.jpg"))[:2]]
    rng = np.random.default_rng(6)
    for fmt, mode in (("PNG", "RGB"), ("PNG", "L"), ("GIF", "P"), ("BMP", "RGB"), ("JPEG", "RGB"), ("PNG", "RGBA")):
        im = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).convert(mode)
        buf = io.BytesIO()
        im.save(buf, format=fmt)
        blobs.append(buf.getvalue())
    return [Seed(f"img{i}", [View(b, [(k, 4, ">") for k in _image_offsets(b)][:64])], ".jpg")
            for i, b in enumerate(blobs)]


def _image_offsets(data: bytes) -> list[int]:
    """JPEG markers (FF xx) before the scan data, PNG chunk starts: where the structure is."""
    if data.startswith(b"\x89PNG"):
        out, pos = [8], 8
        while pos + 8 <= len(data):
            n = struct.unpack_from(">I", data, pos)[0]
            pos += 12 + n
            out.append(pos)
        return [o for o in out if o < len(data)]
    if data.startswith(b"\xff\xd8"):
        out, sos = [], data.find(b"\xff\xda")
        end = sos if sos > 0 else len(data)
        at = 0
        while 0 <= at < end:
            out += [at, at + 2]
            at = data.find(b"\xff", at + 2)
        return out + ([sos, sos + 2, len(data) - 2] if sos > 0 else [])
    return list(range(0, min(len(data), 64), 2))


def image_call(path: Path) -> Any:
    from fewstep.data.imagefolder import decode_images

    return decode_images([path], "RGB", None), decode_images([path], "L", (16, 16))


def image_check(result: Any, size: int, compressed: bool) -> str | None:
    rgb, gray = result
    if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 4 and rgb.shape[:2] == (1, 3)):
        return f"RGB images are {getattr(rgb, 'dtype', type(rgb))} {getattr(rgb, 'shape', '')}"
    if not (isinstance(gray, np.ndarray) and gray.shape == (1, 1, 16, 16) and gray.dtype == np.uint8):
        return f"resized grey images are {getattr(gray, 'dtype', type(gray))} {getattr(gray, 'shape', '')}"
    return None


# ---------------------------------------------------------------------------- region boundaries


def _line_ends(data: bytes, limit: int | None = None) -> list[int]:
    out, at = [], data.find(b"\n")
    while at >= 0 and (limit is None or at < limit):
        out.append(at + 1)
        at = data.find(b"\n", at + 1)
    return out


def _hash_header_end(data: bytes) -> int:
    pos = 0
    while pos < len(data) and data[pos:pos + 1] == b"#":
        nl = data.find(b"\n", pos)
        if nl < 0:
            return len(data)
        pos = nl + 1
        if data[:pos].endswith(b"#!END-HEADER\r\n") or data[:pos].endswith(b"#!END-HEADER\n"):
            break
    return pos


def region_boundaries(data: bytes, fmt: str) -> list[int]:
    """Byte offsets where one region of a ``fmt`` file ends and the next begins: header fields and
    the header's end, every record / packet / opcode / line / chunk boundary. Truncating a valid
    file there (and one byte either side) must give a clean error or a valid shorter result."""
    n = len(data)
    cuts = [0, 1]
    if fmt == "idx" and n >= 4:
        hdr = 4 + 4 * data[3]
        cuts += [2, 3, 4] + [4 + 4 * k for k in range(data[3] + 1)]
        item = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}.get(data[2], 1)
        cuts += list(range(hdr, n, item))
    elif fmt == "gz":
        cuts += [2, 3, 4, 8, 10, n - 8, n - 4]
        at = data.find(b"\x1f\x8b", 1)
        while at > 0:
            cuts += [at, at + 10]
            at = data.find(b"\x1f\x8b", at + 1)
    elif fmt == "pickle":
        try:
            cuts += [pos for _op, _arg, pos in pickletools.genops(data)]
        except Exception:
            pass
    elif fmt == "nmnist":
        cuts += list(range(0, n, 5))
    elif fmt == "aedat2":
        start = _hash_header_end(data)
        cuts += _line_ends(data, start) + list(range(start, n, 4))
    elif fmt == "aedat31":
        from fewstep.events.readers.aedat31 import PACKET_HEADER

        pos = _hash_header_end(data)
        cuts += _line_ends(data, pos)
        while pos + PACKET_HEADER.size <= n:
            _, _, esize, _, _, cap, _, _ = PACKET_HEADER.unpack_from(data, pos)
            cuts += [pos, pos + 4, pos + PACKET_HEADER.size] + [pos + PACKET_HEADER.size + esize * k
                                                                 for k in range(min(cap, 64))]
            if esize <= 0 or cap < 0:
                break
            pos += PACKET_HEADER.size + cap * esize
        cuts.append(pos)
    elif fmt == "aedat4":
        m = len(AEDAT4_MAGIC)
        cuts += [m - 2, m, m + 4]
        if n >= m + 4:
            size = struct.unpack_from("<i", data, m)[0]
            pos = m + 4 + max(size, 0)
            cuts += [m + 4 + k for k in (4, 8, 20, 24, 28, 36, 40, 44)] + [pos]
            while 0 < pos and pos + 8 <= n:
                sid, k = struct.unpack_from("<ii", data, pos)
                cuts += [pos, pos + 4, pos + 8, pos + 8 + 4, pos + 8 + 8]
                if k <= 0:
                    break
                pos += 8 + k
                cuts.append(pos)
    elif fmt == "dat":
        pos = 0
        while pos < n and data[pos] == 0x25:
            nl = data.find(b"\n", pos)
            if nl < 0:
                break
            pos = nl + 1
            cuts.append(pos)
        cuts += [pos, pos + 1, pos + 2] + list(range(pos + 2, n, 4))
    elif fmt in ("csv", "toml"):
        cuts += _line_ends(data) + [i for i, b in enumerate(data) if b in b",=[]\"'"]
    elif fmt == "zip":
        cuts += _zip_offsets(data)
        if not data.startswith(b"PK"):  # legacy torch.save: a sequence of pickles
            cuts += region_boundaries(data, "pickle")
    elif fmt == "image":
        cuts += _image_offsets(data)
    else:
        cuts += list(range(n))
    return sorted({c + d for c in cuts for d in (-1, 0, 1) if 0 <= c + d < n})


def _format_of(data: bytes, target: str) -> str:
    fixed = {"idx-raw": "idx", "idx-gz": "gz", "cifar-pickle": "pickle", "nmnist-bin": "nmnist", "aedat2": "aedat2",
             "aedat31": "aedat31", "gesture-labels": "csv", "aedat4": "aedat4", "prophesee-dat": "dat",
             "config-toml": "toml", "checkpoint": "zip", "image-file": "image"}
    if target != "read_events":
        return fixed[target]
    for magic, fmt in ((b"#!AER-DAT4", "aedat4"), (b"#!AER-DAT3", "aedat31"), (b"#!AER-DAT2", "aedat2"),
                       (b"%", "dat")):
        if data.startswith(magic):
            return fmt
    return "nmnist"


def _spread(values: list[int], limit: int) -> list[int]:
    """At most ``limit`` of ``values``, evenly spread (the first and last kept)."""
    if len(values) <= limit:
        return values
    idx = np.unique(np.linspace(0, len(values) - 1, limit).round().astype(int))
    return [values[i] for i in idx]


def boundary_cases(target: str, seeds: list[Seed], per_seed: int) -> list[tuple[str, bytes]]:
    """``(description, bytes)``: each seed cut at each region boundary (``per_seed`` at most per seed;
    for IDX in gzip also the inner IDX cut and re-compressed)."""
    out = []
    for s in seeds:
        whole = s.views[0]
        data = whole.wrap(whole.data) if whole.wrap else whole.data
        for c in _spread(region_boundaries(data, _format_of(data, target)), per_seed):
            out.append((f"{s.name} cut at {c} of {len(data)}", data[:c]))
        inner = next((v for v in s.views if v.name == "inner"), None)
        if inner is not None and inner.wrap is not None:
            for c in _spread(region_boundaries(inner.data, "idx"), per_seed):
                out.append((f"{s.name} inner IDX cut at {c} of {len(inner.data)}", inner.wrap(inner.data[:c])))
    return out


# ---------------------------------------------------------------------------- path-level cases

#: What each path case is: a missing file, an empty one, a directory, symlinks, names that are not
#: UTF-8 (valid and truncated contents), a file without read permission (root reads it anyway).
PATH_CASES = ["missing", "empty", "directory", "symlink-loop", "dangling-symlink", "self-symlink",
              "non-utf8-name (valid file)", "non-utf8-name (truncated file)", "non-utf8-directory",
              "no-read-permission", "parent-is-a-file"]


def path_case(kind: str, workdir: Path, suffix: str, valid: bytes) -> tuple[Path, bytes]:
    """Create path case ``kind`` under ``workdir`` (a fresh folder); returns ``(path, its bytes)``."""
    base = os.fsencode(workdir)
    name = b"case" + os.fsencode(suffix)
    if kind == "missing":
        return workdir / f"missing{suffix}", b""
    if kind == "empty":
        (workdir / f"empty{suffix}").write_bytes(b"")
        return workdir / f"empty{suffix}", b""
    if kind == "directory":
        (workdir / f"dir{suffix}").mkdir()
        return workdir / f"dir{suffix}", b""
    if kind == "symlink-loop":
        a, b = workdir / f"a{suffix}", workdir / f"b{suffix}"
        os.symlink(b, a)
        os.symlink(a, b)
        return a, b""
    if kind == "dangling-symlink":
        os.symlink(workdir / "nowhere", workdir / f"dangling{suffix}")
        return workdir / f"dangling{suffix}", b""
    if kind == "self-symlink":
        os.symlink(workdir / f"self{suffix}", workdir / f"self{suffix}")
        return workdir / f"self{suffix}", b""
    if kind.startswith("non-utf8-name"):
        data = valid if "valid" in kind else valid[: max(1, len(valid) // 2 - 1)]
        raw = base + b"/\xff\xfe-" + name
        with open(raw, "wb") as f:
            f.write(data)
        return Path(os.fsdecode(raw)), data
    if kind == "non-utf8-directory":
        os.mkdir(base + b"/\xe9t\xe9")
        raw = base + b"/\xe9t\xe9/" + name
        with open(raw, "wb") as f:
            f.write(valid[: max(1, len(valid) // 2 - 1)])
        return Path(os.fsdecode(raw)), valid[: max(1, len(valid) // 2 - 1)]
    if kind == "no-read-permission":
        p = workdir / f"locked{suffix}"
        p.write_bytes(valid)
        p.chmod(0)
        return p, valid
    if kind == "parent-is-a-file":
        (workdir / "plain").write_bytes(b"x")
        return workdir / "plain" / f"case{suffix}", b""
    raise ValueError(kind)



# ============================================================================ STC

INT64_EXTREMES = [-(2**63), -(2**63) + 1, -(2**31), -1, 0, 1, 2**31 - 1, 2**32, 2**53, 2**53 + 1, 2**62,
                  2**63 - 2, 2**63 - 1]


@st.composite
def stc_case(draw: Callable) -> dict[str, Any]:
    """Adversarial events and parameters for :func:`fewstep.events.compression.stc`."""
    from fewstep.events.types import EVENT_DTYPE

    n = draw(st.sampled_from([0, 1, 2, 3, draw(st.integers(0, 40))]))
    w, h = draw(st.sampled_from([1, 2, 3, 5, 34])), draw(st.sampled_from([1, 2, 4, 34]))
    coord_bad = draw(st.integers(0, 5)) == 0
    coord = (lambda lim: st.one_of(st.integers(0, lim - 1), st.sampled_from([-1, lim, 32767, -32768]))) \
        if coord_bad else (lambda lim: st.integers(0, lim - 1))
    t_kind = draw(st.sampled_from(["small", "extreme", "any", "const", "wide"]))
    t_strat = {"small": st.integers(0, 1000), "extreme": st.sampled_from(INT64_EXTREMES),
               "any": st.integers(-(2**63), 2**63 - 1), "const": st.just(draw(st.sampled_from(INT64_EXTREMES))),
               "wide": st.one_of(st.sampled_from([-(2**63), 2**63 - 1]), st.integers(-5, 5))}[t_kind]
    xs = [draw(coord(w)) for _ in range(n)]
    ys = [draw(coord(h)) for _ in range(n)]
    ts = [draw(t_strat) for _ in range(n)]
    ps = [draw(st.sampled_from([0, 1, 0, 1, -1, 2, 127, -128])) for _ in range(n)]
    order = draw(st.sampled_from(["sorted", "sorted", "as drawn", "reversed"]))
    if order == "sorted":
        ts.sort()
    elif order == "reversed":
        ts.sort(reverse=True)
    if n and draw(st.booleans()):  # duplicate events
        k = draw(st.integers(1, 5))
        xs, ys, ts, ps = xs + xs[:1] * k, ys + ys[:1] * k, ts + ts[:1] * k, ps + ps[:1] * k
        if order == "sorted":
            idx = sorted(range(len(ts)), key=ts.__getitem__)
            xs, ys, ts, ps = ([a[i] for i in idx] for a in (xs, ys, ts, ps))
    layout = draw(st.sampled_from(["fewstep", "fewstep", "tonic-int", "float-t", "uint-xy", "missing-field",
                                   "2d", "plain"]))
    if layout in ("fewstep", "2d"):
        ev = np.empty(len(ts), EVENT_DTYPE)
        ev["x"], ev["y"], ev["t"], ev["p"] = xs, ys, ts, ps
        if layout == "2d":
            ev = ev.reshape(-1, 1)
    elif layout == "tonic-int":
        ev = np.empty(len(ts), [("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")])
        ev["x"], ev["y"], ev["t"], ev["p"] = xs, ys, ts, ps
    elif layout == "float-t":
        ev = np.empty(len(ts), [("x", "<i2"), ("y", "<i2"), ("t", "<f8"), ("p", "?")])
        ev["x"], ev["y"], ev["p"] = xs, ys, [p > 0 for p in ps]
        special = [math.nan, math.inf, -math.inf, 1e300, -1e300, 0.5, 2.0**63]
        ev["t"] = [draw(st.sampled_from(special)) if draw(st.integers(0, 3)) == 0 else float(t) for t in ts]
    elif layout == "uint-xy":
        ev = np.empty(len(ts), [("x", "<u2"), ("y", "<u2"), ("t", "<i8"), ("p", "<u1")])
        ev["x"], ev["y"], ev["t"], ev["p"] = [x % 65536 for x in xs], [y % 65536 for y in ys], ts, [p % 256 for p in ps]
    elif layout == "missing-field":
        ev = np.zeros(len(ts), [("x", "<i2"), ("y", "<i2"), ("ts", "<i8"), ("p", "i1")])
    else:
        ev = np.zeros((len(ts), 4), np.int64)
    sensor: Any = (w, h)
    sensor_kind = draw(st.integers(0, 9))
    if sensor_kind == 0:
        sensor = (w, h, 2)
    elif sensor_kind == 1:
        sensor = draw(st.sampled_from([(w, h, 3), (0, h), (-1, h), (w, 2.5), (math.nan, h), (math.inf, h), (w,),
                                       (2**40, 2**40), (w, h, 2, 1)]))
    kwargs: dict[str, Any] = {}
    bad = draw(st.integers(0, 4)) == 0
    timesteps: Any = draw(st.integers(1, 6))
    if bad:
        timesteps = draw(st.sampled_from([0, -1, 2.5, math.nan, math.inf, 2**40, 10**6, True]))
    kwargs["by"] = draw(st.sampled_from(["time", "time", "count", "bogus"] if bad else ["time", "count"]))
    kwargs["integration"] = draw(st.sampled_from(["sum", "exp", "exp", "EXP"] if bad else ["sum", "exp"]))
    kwargs["kappa"] = draw(st.sampled_from([0.9, 0.5, 1.0, 5e-324] + ([math.nan, math.inf, -0.0, 0.0, 1.0000001, -1.0]
                                                                       if bad else [])))
    kwargs["fine_bins_per_step"] = draw(st.sampled_from([1, 3, 10] + ([0, -2, 1.5, math.nan, 2**40] if bad else [])))
    kwargs["spatial_factor"] = draw(st.sampled_from([1, 1, 2, 3] + ([0, -1, 2.5, math.nan, 2**31] if bad else [])))
    return {"events": ev, "sensor_size": sensor, "timesteps": timesteps, "kwargs": kwargs, "batch": draw(st.integers(1, 3))}


def _expected_steps(case: dict[str, Any]) -> list[int] | None:
    """Events per step by the documented rule, in exact integer arithmetic; None if not applicable."""
    ev, T, kw = case["events"], case["timesteps"], case["kwargs"]
    t = [int(v) for v in np.asarray(ev["t"]).ravel().tolist()]
    n = len(t)
    counts = [0] * T
    if n == 0:
        return counts
    exp = kw["integration"] == "exp" and kw["kappa"] < 1.0
    r = int(kw["fine_bins_per_step"]) if exp else 1
    T0 = T * r
    if kw["by"] == "time":
        t0, t1 = min(t), max(t)
        D = max(t1 - t0, 1)
        for v in t:
            counts[min((v - t0) * T0 // D, T0 - 1) // r] += 1
    else:
        for i in range(n):
            counts[(i * T0 // n) // r] += 1
    return counts


def stc_check(case: dict[str, Any], out: Any, batch: bool) -> str | None:
    import torch

    ev, sensor, T, kw = case["events"], case["sensor_size"], case["timesteps"], case["kwargs"]
    f = int(kw["spatial_factor"])
    w, h = int(sensor[0]), int(sensor[1])
    B = case["batch"] if batch else None
    shape = (T, 2, -(-h // f), -(-w // f)) if B is None else (T, B, 2, -(-h // f), -(-w // f))
    if batch:
        if not isinstance(out, torch.Tensor):
            return f"stc_batch returned {type(out).__name__}"
        out = out.numpy()
    if not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != shape:
        return f"output {getattr(out, 'dtype', type(out))} {getattr(out, 'shape', '')}, expected float32 {shape}"
    if not np.isfinite(out).all() or (out < 0).any():
        return "output not finite or negative"
    if np.asarray(ev["t"]).dtype.kind == "f":
        return None  # float timestamps: how they are cast is not specified
    expected = _expected_steps(case)
    exp = kw["integration"] == "exp" and kw["kappa"] < 1.0
    per_step = out.reshape(T, -1).astype(np.float64).sum(axis=1) if B is None else \
        out.reshape(T, B, -1).astype(np.float64).sum(axis=2)
    n = len(np.asarray(ev).ravel())
    if exp:
        total = per_step.sum()
        if total > (n * (B or 1)) * (1 + 1e-6):
            return f"exp output sums to {total} > {n} events"
        return None
    got = per_step.round().astype(np.int64).tolist()
    want = expected if B is None else [[c] * B for c in expected]
    if got != want:
        return f"events per step {got}, the binning rule gives {want}"
    return None


def stc_call(case: dict[str, Any]) -> Any:
    from fewstep.events.compression import stc

    return stc(case["events"], case["sensor_size"], case["timesteps"], **case["kwargs"])


def stc_batch_call(case: dict[str, Any]) -> Any:
    from fewstep.events.compression import stc_batch

    return stc_batch([case["events"]] * case["batch"], case["sensor_size"], case["timesteps"], **case["kwargs"])


def stc_size_ok(case: dict[str, Any]) -> bool:
    """Skip checking outputs too large to inspect (the call itself still ran)."""
    try:
        w, h = int(case["sensor_size"][0]), int(case["sensor_size"][1])
        return int(case["timesteps"]) * w * h * 2 * case["batch"] <= 50_000_000
    except (TypeError, ValueError, OverflowError, IndexError):
        return False


# ============================================================================ the runner


class Hang(BaseException):
    """Raised by the CPU-time alarm (a BaseException, so `except Exception` in a reader cannot hide it)."""


@contextlib.contextmanager
def cpu_alarm(seconds: float) -> Iterator[None]:
    """Interrupt the case after ``seconds`` of CPU time (ITIMER_PROF), or after ``max(1, 5 *
    seconds)`` of wall time (ITIMER_REAL: a case blocked without using CPU), where available."""
    if not hasattr(signal, "setitimer") or seconds <= 0:
        yield
        return
    wall = max(1.0, 5 * seconds)

    def on_cpu(signum: int, frame: Any) -> None:
        raise Hang(f"still running after {seconds} s of CPU time")

    def on_wall(signum: int, frame: Any) -> None:
        raise Hang(f"still running after {wall} s of wall time")

    old_prof, old_alrm = signal.signal(signal.SIGPROF, on_cpu), signal.signal(signal.SIGALRM, on_wall)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    signal.setitimer(signal.ITIMER_REAL, wall)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGPROF, old_prof)
        signal.signal(signal.SIGALRM, old_alrm)


@contextlib.contextmanager
def memory_limit(extra_bytes: int | None) -> Iterator[None]:
    """Cap the address space at (current + ``extra_bytes``) so a reader that believes a huge size
    fails with MemoryError (a crash) instead of swapping the machine; restored afterwards."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    if not extra_bytes:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    try:
        with open("/proc/self/statm") as f:
            current = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        yield
        return
    limit = current + extra_bytes
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _origin(exc: BaseException) -> tuple[str, str, bool]:
    """``(innermost fewstep frame "file:line", innermost frame "file:line", raised by an explicit raise
    statement in fewstep)``."""
    frames = traceback.extract_tb(exc.__traceback__)
    inner = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
    ours = [fr for fr in frames if fr.filename.startswith(FEWSTEP_DIR)]
    where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else inner
    deliberate = False
    if frames and frames[-1].filename.startswith(FEWSTEP_DIR):
        fr = frames[-1]
        for ln in range(fr.lineno, max(0, fr.lineno - 4), -1):  # a multi-line raise reports a later line
            text = linecache.getline(fr.filename, ln).strip()
            if text.startswith("raise "):
                deliberate = True
                break
            if ln != fr.lineno and text.endswith(":"):
                break
    return where, inner, deliberate


@dataclasses.dataclass
class Crash:
    signature: str
    message: str
    count: int = 0
    example: bytes | None = None
    example_case: str = ""


@dataclasses.dataclass
class Stats:
    target: str
    cases: int = 0
    rejected: int = 0
    accepted: int = 0
    skipped: int = 0  # optional dependency missing
    boundary: int = 0  # of the cases: truncations at region boundaries
    paths: int = 0  # of the cases: path-level cases (missing, directory, symlink loop, ...)
    fixed_next: int = -1  # the fixed case running now (not counted; for a restart after a fatal crash)
    seconds: float = 0.0
    slowest: float = 0.0
    crashes: dict[str, Crash] = dataclasses.field(default_factory=dict)

    @property
    def crash_cases(self) -> int:
        return sum(c.count for c in self.crashes.values())

    def record(self, signature: str, message: str, example: bytes | None, case_desc: str) -> None:
        c = self.crashes.setdefault(signature, Crash(signature, message[:300], 0, example, case_desc))
        c.count += 1

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "cases": self.cases, "rejected": self.rejected, "accepted": self.accepted,
                "skipped": self.skipped, "boundary": self.boundary, "paths": self.paths,
                "seconds": round(self.seconds, 2), "slowest": round(self.slowest, 3),
                "crashes": [{"signature": c.signature, "message": c.message, "count": c.count,
                             "example_case": c.example_case,
                             "example": c.example.hex() if c.example is not None else None}
                            for c in self.crashes.values()]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Stats:
        s = cls(d["target"], d["cases"], d["rejected"], d["accepted"], d["skipped"], d.get("boundary", 0),
                d.get("paths", 0), d["seconds"], d["slowest"])
        for c in d["crashes"]:
            s.crashes[c["signature"]] = Crash(c["signature"], c["message"], c["count"],
                                              bytes.fromhex(c["example"]) if c["example"] else None,
                                              c["example_case"])
        return s

    def merge(self, other: Stats) -> None:
        for f in ("cases", "rejected", "accepted", "skipped", "boundary", "paths", "seconds"):
            setattr(self, f, getattr(self, f) + getattr(other, f))
        self.slowest = max(self.slowest, other.slowest)
        for sig, c in other.crashes.items():
            mine = self.crashes.setdefault(sig, Crash(sig, c.message, 0, c.example, c.example_case))
            mine.count += c.count


@dataclasses.dataclass
class FileTarget:
    name: str
    seeds: Callable[[], list[Seed]]
    call: Callable[[Path], Any]
    check: Callable[[Any, int, bool], str | None]
    compressed: bool = False  # output size is not bounded by the file size
    generated: Callable[[Callable], bytes] | None = None
    errors: tuple[str, ...] = ("DataFormatError",)  # the documented error(s), from fewstep.errors
    label: str = ""  # the reader, for the table


@dataclasses.dataclass
class StcTarget:
    name: str
    call: Callable[[dict[str, Any]], Any]
    batch: bool


def _events_all_seeds() -> list[Seed]:
    out = []
    for s in nmnist_seeds()[:3] + aedat2_seeds()[:3] + aedat31_seeds()[:3] + aedat4_seeds()[:2] + prophesee_seeds()[:2]:
        out.append(Seed(s.name, s.views[:1], s.suffix))
    return out


TARGETS: dict[str, FileTarget | StcTarget] = {
    "idx-raw": FileTarget("idx-raw", lambda: idx_seeds(False), idx_call,
                          lambda r, n, c: idx_check(r, n, False), generated=idx_generated(False),
                          label="IDX (`read_idx`, raw)"),
    "idx-gz": FileTarget("idx-gz", lambda: idx_seeds(True), idx_call, lambda r, n, c: idx_check(r, n, True),
                         compressed=True, generated=idx_generated(True), label="IDX (`read_idx`, gzip)"),
    "cifar-pickle": FileTarget("cifar-pickle", cifar_seeds, cifar_call, cifar_check, generated=cifar_generated,
                               label="CIFAR pickle (`safe_unpickle` + batch / names)"),
    "nmnist-bin": FileTarget("nmnist-bin", nmnist_seeds, nmnist_call, _event_check,
                             label="N-MNIST `.bin` (`read_nmnist_bin`)"),
    "aedat2": FileTarget("aedat2", aedat2_seeds, aedat2_call, _event_check, label="AEDAT 2.0 (`read_aedat2`)"),
    "aedat31": FileTarget("aedat31", aedat31_seeds, aedat31_call, _event_check, label="AEDAT 3.1 (`read_aedat31`)"),
    "gesture-labels": FileTarget("gesture-labels", gesture_seeds, gesture_call, gesture_check,
                                 generated=gesture_generated, label="gesture CSV (`read_gesture_labels`)"),
    "aedat4": FileTarget("aedat4", aedat4_seeds, aedat4_call, _event_check, compressed=True,
                         label="AEDAT 4 (`read_aedat4`, `read_aedat4_header`)"),
    "prophesee-dat": FileTarget("prophesee-dat", prophesee_seeds, prophesee_call, _event_check,
                                label="Prophesee DAT (`read_prophesee_dat`)"),
    "read_events": FileTarget("read_events", _events_all_seeds, read_events_call, _event_check, compressed=True,
                              label="any event file (`read_events`)"),
    "image-file": FileTarget("image-file", image_seeds, image_call, image_check, compressed=True,
                             label="image / JPEG (`decode_images`, image folders)"),
    "config-toml": FileTarget("config-toml", config_seeds, config_call, config_check, generated=config_generated,
                              errors=("ConfigError",), label="recipe TOML (`load_recipe`, `--config FILE`)"),
    "checkpoint": FileTarget("checkpoint", checkpoint_seeds, checkpoint_call, checkpoint_check, compressed=True,
                             errors=("CheckpointError", "ConfigError"),
                             label="checkpoint (`load_checkpoint`, as `fewstep eval` / `convert`)"),
    "stc": StcTarget("stc", stc_call, batch=False),
    "stc_batch": StcTarget("stc_batch", stc_batch_call, batch=True),
}


def _settings(cases: int) -> settings:
    return settings(max_examples=cases, database=None, deadline=None, phases=[Phase.generate], derandomize=False,
                    suppress_health_check=list(HealthCheck), report_multiple_bugs=False, print_blob=False)


Progress = Callable[[Stats, Path], None]


def _is_documented(exc: BaseException, target: FileTarget) -> bool:
    return any(c.__module__ == "fewstep.errors" and c.__name__ in target.errors for c in type(exc).__mro__)


def run_file_case(target: FileTarget, stats: Stats, path: Path, data: bytes, where_from: str, timeout: float) -> None:
    """Call the reader on ``path`` (holding ``data``) once and tally the outcome in ``stats``:
    a documented error whose message names the file (clean), a result that meets the reader's
    contract (accepted), or anything else (a crash signature)."""
    stats.cases += 1
    t0 = time.process_time()
    result = None
    try:
        with cpu_alarm(timeout):
            result = target.call(path)
    except Hang as e:
        stats.record(f"hang (> {timeout} s CPU)", str(e), data, where_from)
    except MemoryError as e:
        stats.record(f"memory blow-up (MemoryError at {_origin(e)[0]})", f"MemoryError: {e}", data, where_from)
    except ImportError as e:
        if "pip install" in str(e):
            stats.skipped += 1
        else:
            stats.record(f"ImportError at {_origin(e)[0]}", str(e), data, where_from)
    except Exception as e:
        text = str(e)
        if not _is_documented(e, target):
            stats.record(f"{type(e).__name__} at {_origin(e)[0]}", f"{type(e).__name__}: {text}", data, where_from)
        elif "MemoryError" in text:  # a reader that wraps every exception must not hide this one
            stats.record(f"memory blow-up (wrapped in {type(e).__name__})", text, data, where_from)
        elif str(path) not in text:
            stats.record(f"{type(e).__name__} does not name the file (at {_origin(e)[0]})", text, data, where_from)
        elif "\n" in text.strip():
            stats.record(f"{type(e).__name__} spans lines (at {_origin(e)[0]})", text, data, where_from)
        else:
            stats.rejected += 1
    else:
        problem = target.check(result, len(data), target.compressed)
        if problem:
            stats.record(f"bad result: {problem.split(':')[0][:60]}", problem, data, where_from)
        else:
            stats.accepted += 1
    if CANARY_CALLS:
        calls = list(CANARY_CALLS)
        CANARY_CALLS.clear()
        stats.record("a pickled global was called", repr(calls[:2]), data, where_from)
    spent = time.process_time() - t0
    stats.slowest = max(stats.slowest, spent)
    if spent > timeout * 1.5:  # ran over without the alarm firing (stuck in C code)
        stats.record(f"hang (> {timeout} s CPU)", f"case took {spent:.1f} s", data, where_from)


def fixed_cases(target: FileTarget, seeds: list[Seed], boundary_limit: int) -> list[tuple[str, str, bytes]]:
    """The deterministic cases run before the random ones: ``(kind, description, bytes)`` with kind
    ``"path"`` (bytes: a valid file of the format) or ``"cut"`` (bytes: the truncated file)."""
    valid = seeds[0].views[0].data if seeds else b""
    for s in seeds:  # the first seed with some content (seed 0 is often an empty recording)
        if len(s.views[0].data) > 64 and s.views[0].wrap is None:
            valid = s.views[0].data
            break
    out = [("path", kind, valid) for kind in PATH_CASES]
    if boundary_limit > 0:
        out += [("cut", desc, data) for desc, data in boundary_cases(target.name, seeds, boundary_limit)]
    return out


def fuzz_file_target(target: FileTarget, cases: int, seed: int, timeout: float, workdir: Path,
                     progress: Progress | None = None, fixed_from: int | None = None,
                     boundary_limit: int = 400) -> Stats:
    """``cases`` random cases; first, unless ``fixed_from`` is None, the :func:`fixed_cases` from
    index ``fixed_from`` on (path-level cases and truncations at region boundaries)."""
    stats = Stats(target.name)
    seeds = target.seeds()
    suffixes = sorted({s.suffix for s in seeds}) or [""]
    paths = {sfx: workdir / f"case{sfx}" for sfx in suffixes}
    suffix_of = {s.name: s.suffix for s in seeds}
    strategy = file_case(seeds, target.generated)
    if target.name == "cifar-pickle":
        _install_canary()

    t = time.perf_counter()
    if fixed_from is not None:
        suffix = seeds[0].suffix if seeds else ""
        for i, (kind, desc, data) in enumerate(fixed_cases(target, seeds, boundary_limit)):
            if i < fixed_from:
                continue
            stats.fixed_next = i
            if kind == "path":
                folder = workdir / f"path-{i}"
                folder.mkdir()
                path, data = path_case(desc, folder, suffix, data)
                stats.paths += 1
                record = current = folder / "record.bin"  # what a fatal crash leaves to look at
                current.write_bytes(data)
            else:
                path = paths[suffix]
                path.write_bytes(data)
                stats.boundary += 1
                record = path
            if progress is not None:
                progress(stats, record)
            run_file_case(target, stats, path, data, f"{kind}: {desc}", timeout)
            if kind == "path":
                with contextlib.suppress(OSError):
                    path.chmod(0o644)  # the no-permission case
        stats.fixed_next = -1

    @_settings(cases)
    @hypothesis_seed(seed)
    @given(strategy)
    def run(case: tuple[str, str, bytes]) -> None:
        seed_name, view, data = case
        path = paths[suffix_of.get(seed_name, suffixes[0])] if seed_name != "generated" else paths[suffixes[0]]
        path.write_bytes(data)
        if progress is not None:
            progress(stats, path)  # before the call: a fatal crash leaves this input on disk
        run_file_case(target, stats, path, data, f"{seed_name}/{view}", timeout)

    if cases > 0:
        run()
    stats.seconds = time.perf_counter() - t
    return stats


def fuzz_stc_target(target: StcTarget, cases: int, seed: int, timeout: float, workdir: Path,
                    progress: Progress | None = None) -> Stats:
    stats = Stats(target.name)
    current = workdir / "case.pkl"

    @_settings(cases)
    @hypothesis_seed(seed)
    @given(stc_case())
    def run(case: dict[str, Any]) -> None:
        example = pickle.dumps(case)
        if progress is not None:
            current.write_bytes(example)
            progress(stats, current)
        stats.cases += 1
        desc = (f"n={len(np.asarray(case['events']).ravel())} dtype={case['events'].dtype.descr} "
                f"shape={case['events'].shape} sensor={case['sensor_size']} T={case['timesteps']} {case['kwargs']}")
        t0 = time.process_time()
        try:
            with cpu_alarm(timeout):
                out = target.call(case)
        except Hang as e:
            stats.record(f"hang (> {timeout} s CPU)", str(e), example, desc)
        except ValueError as e:
            where, inner, deliberate = _origin(e)
            if deliberate and str(e):
                stats.rejected += 1
            else:
                stats.record(f"unclear ValueError at {where} ({inner})", f"{type(e).__name__}: {e}", example, desc)
        except Exception as e:
            where, inner, _ = _origin(e)
            stats.record(f"{type(e).__name__} at {where} ({inner})", f"{type(e).__name__}: {e}", example, desc)
        else:
            problem = stc_check(case, out, target.batch) if stc_size_ok(case) else None
            if problem:
                stats.record(f"bad result: {problem.split(',')[0][:50]}", problem, example, desc)
            else:
                stats.accepted += 1
        stats.slowest = max(stats.slowest, time.process_time() - t0)

    t = time.perf_counter()
    run()
    stats.seconds = time.perf_counter() - t
    return stats


def _fast_tmp() -> str | None:
    """A memory-backed folder for the case files when there is one (a write per case)."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def fuzz(name: str, cases: int, seed: int = 0, timeout: float = 2.0, workdir: Path | None = None,
         memory_bytes: int | None = 4 << 30, progress: Progress | None = None, fixed_from: int | None = None,
         boundary_limit: int = 400) -> Stats:
    """Fuzz one target in this process; returns its :class:`Stats`. ``fixed_from``: also run the
    path-level and boundary-truncation cases (from that index; ``None``: random cases only)."""
    import warnings

    target = TARGETS[name]
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fewstep-fuzz-", dir=_fast_tmp())))
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")  # numpy's RuntimeWarnings on NaN casts etc. are not crashes
        stack.enter_context(np.errstate(all="ignore"))
        stack.enter_context(memory_limit(memory_bytes))
        if isinstance(target, StcTarget):
            return fuzz_stc_target(target, cases, seed, timeout, workdir, progress)
        return fuzz_file_target(target, cases, seed, timeout, workdir, progress, fixed_from, boundary_limit)


def _random_cases(s: Stats) -> int:
    return s.cases - s.boundary - s.paths


def fuzz_isolated(name: str, cases: int, seed: int = 0, timeout: float = 2.0, memory_gb: float = 4.0,
                  max_restarts: int = 50, boundary_limit: int = 400) -> Stats:
    """Fuzz one target in child processes, so that a fatal crash (a segfault in C code, the OOM
    killer) is recorded with its input and the fuzzing goes on in a fresh child (with the next
    fixed case, or the next hypothesis seed)."""
    import subprocess

    total = Stats(name)
    restarts = 0
    fixed_from: int | None = 0
    with tempfile.TemporaryDirectory(prefix=f"fewstep-fuzz-{name}-", dir=_fast_tmp()) as d:
        workdir = Path(d)
        while restarts <= max_restarts:
            for f in ("counts.json", "crashes.json"):
                (workdir / f).unlink(missing_ok=True)
            child_dir = workdir / f"run{restarts}"
            child_dir.mkdir()
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name,
                   "--cases", str(cases - _random_cases(total)), "--seed", str(seed + restarts),
                   "--timeout", str(timeout), "--memory-gb", str(memory_gb), "--workdir", str(child_dir),
                   "--boundary-limit", str(boundary_limit), "--fixed-from", str(-1 if fixed_from is None else fixed_from)]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
            counts_file = child_dir / "counts.json"
            if not counts_file.exists():
                raise RuntimeError(f"fuzzing child for {name} wrote no progress (rc {proc.returncode}):\n"
                                   f"{proc.stderr[-2000:]}")
            info = json.loads(counts_file.read_text())
            crashes = child_dir / "crashes.json"
            part = Stats.from_json(json.loads(crashes.read_text())) if crashes.exists() else Stats(name)
            for k, v in info["counts"].items():
                setattr(part, k, v)
            part.seconds = time.perf_counter() - t0
            if not info["done"]:  # died in the middle of a case: that case is the crash
                try:
                    sig = signal.Signals(-proc.returncode).name if proc.returncode < 0 else f"exit {proc.returncode}"
                except ValueError:
                    sig = f"signal {-proc.returncode}"
                current = Path(info["current"])
                example = current.read_bytes() if current.exists() else None
                frames = [ln.strip() for ln in proc.stderr.splitlines() if "File " in ln and "/fewstep/" in ln]
                part.cases += 1
                fixed = info.get("fixed_next", -1)
                if fixed >= 0:  # a fixed case (already counted as one): go on with the next one
                    fixed_from = fixed + 1
                else:
                    fixed_from = None
                part.record(f"fatal {sig}", f"the process died ({sig}) in {frames[0] if frames else '?'}",
                            example, current.name)
                restarts += 1
            total.merge(part)
            if info["done"] or _random_cases(total) >= cases and fixed_from is None:
                break
    return total


def _child(args: argparse.Namespace) -> int:
    """One fuzzing child. Before every case it writes its counters and where the current input
    lies (``counts.json``, small), and its crash records whenever they change (``crashes.json``)."""
    import faulthandler

    faulthandler.enable()
    workdir = args.workdir
    written = [-1]

    def dump(path: Path, data: dict) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)

    def progress(stats: Stats, current: Path) -> None:
        if stats.crash_cases != written[0]:
            dump(workdir / "crashes.json", stats.to_json())
            written[0] = stats.crash_cases
        counts = {k: getattr(stats, k) for k in ("cases", "rejected", "accepted", "skipped", "boundary", "paths",
                                                 "slowest")}
        dump(workdir / "counts.json", {"counts": counts, "current": str(current), "done": False,
                                       "fixed_next": stats.fixed_next})

    stats = fuzz(args.child, args.cases, args.seed, args.timeout, workdir,
                 int(args.memory_gb * (1 << 30)) or None, progress,
                 None if args.fixed_from < 0 else args.fixed_from, args.boundary_limit)
    dump(workdir / "crashes.json", stats.to_json())
    dump(workdir / "counts.json", {"counts": {}, "current": "", "done": True})
    return 0


def _label(name: str) -> str:
    target = TARGETS[name]
    return target.label if isinstance(target, FileTarget) and target.label else f"`{name}`"


def format_table(results: list[Stats]) -> str:
    head = (f"{'target':<16} {'cases':>7} {'random':>7} {'cuts':>6} {'paths':>6} {'clean':>7} {'accepted':>9} "
            f"{'crashes':>8} {'crash cases':>12} {'seconds':>8}")
    lines = [head, "-" * len(head)]
    for s in results:
        lines.append(f"{s.target:<16} {s.cases:>7} {_random_cases(s):>7} {s.boundary:>6} {s.paths:>6} "
                     f"{s.rejected:>7} {s.accepted:>9} {len(s.crashes):>8} {s.crash_cases:>12} {s.seconds:>8.1f}")
    details = [f"  [{s.target}] {c.signature} x{c.count}: {c.message[:200]!a} (from {c.example_case[:160]!a})"
               for s in results for c in s.crashes.values()]
    if details:
        lines += ["", "crashes (signature x failing cases: message (input)):"] + details
    skipped = [f"  [{s.target}] {s.skipped} case(s) needed a missing optional package (not crashes)"
               for s in results if s.skipped]
    if skipped:
        lines += [""] + skipped
    return "\n".join(lines)


def format_markdown(results: list[Stats]) -> str:
    """One row per reader: cases (random mutations + boundary truncations + path cases), clean
    errors (the documented error, naming the file), accepted (a result meeting the contract),
    anything else (crashes, hangs, memory blow-ups, wrong results, unnamed files: the goal is 0)."""
    lines = ["| reader | target | cases (random + boundary cuts + path cases) | clean errors | accepted | "
             "anything else |", "|---|---|---|---|---|---|"]
    for s in results:
        split = f"{s.cases:,} ({_random_cases(s):,} + {s.boundary:,} + {s.paths})" if s.boundary or s.paths \
            else f"{s.cases:,}"
        lines.append(f"| {_label(s.target)} | `{s.target}` | {split} | {s.rejected:,} | {s.accepted:,} | "
                     f"{s.crash_cases + s.skipped:,} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10_000, help="random cases per target (default 10000)")
    parser.add_argument("--targets", default="all", help=f"comma-separated, from: {', '.join(TARGETS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=2.0, help="CPU seconds per case before it counts as a hang")
    parser.add_argument("--memory-gb", type=float, default=4.0,
                        help="address space allowed above the starting size (0 = unlimited)")
    parser.add_argument("--boundary-limit", type=int, default=400,
                        help="truncations at region boundaries per seed file (0 = none)")
    parser.add_argument("--in-process", action="store_true",
                        help="no child processes (faster start; a segfault ends the run)")
    parser.add_argument("--save-crashes", type=Path, default=None, help="write one example input per crash here")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the per-reader Markdown table here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--fixed-from", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args)
    names = list(TARGETS) if args.targets == "all" else [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        parser.error(f"unknown targets {unknown}; known: {', '.join(TARGETS)}")
    results = []
    for name in names:
        if args.in_process:
            stats = fuzz(name, args.cases, args.seed, args.timeout, memory_bytes=int(args.memory_gb * (1 << 30)) or None,
                         fixed_from=0, boundary_limit=args.boundary_limit)
        else:
            stats = fuzz_isolated(name, args.cases, args.seed, args.timeout, args.memory_gb,
                                  boundary_limit=args.boundary_limit)
        results.append(stats)
        print(f"{name}: {stats.cases} cases, {len(stats.crashes)} crash signature(s), {stats.seconds:.1f} s",
              file=sys.stderr, flush=True)
    print(format_table(results))
    print()
    print(format_markdown(results))
    if args.markdown:
        args.markdown.write_text(format_markdown(results) + "\n")
    if args.save_crashes:
        args.save_crashes.mkdir(parents=True, exist_ok=True)
        for s in results:
            for i, c in enumerate(s.crashes.values()):
                if c.example is not None:
                    (args.save_crashes / f"{s.target}-{i}.bin").write_bytes(c.example)
    if args.json:
        args.json.write_text(json.dumps([s.to_json() for s in results], indent=2))
    return 1 if any(s.crashes for s in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
