"""CIFAR-10 and CIFAR-100 from the official "python version" pickles (or their tar.gz).

Layout (as extracted from the official archives):

* ``<root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``
* ``<root>/cifar-100-python/{train, test, meta}``

If only ``<root>/cifar-10-python.tar.gz`` / ``<root>/cifar-100-python.tar.gz`` is present
(or ``download=True`` fetched it, md5-verified), it is extracted safely and atomically:
members that would escape the target, links and device files are refused, and the tree
is extracted into a temporary folder that is renamed into place only once complete.

The pickles are read with :class:`RestrictedUnpickler`, never plain ``pickle.load``: a
pickle can run arbitrary code through the globals it references, so only the few
globals a numpy array needs are allowed and anything else is refused with a
:class:`~fewstep.errors.DataFormatError`. Two more guards make a hostile file fail cleanly
instead of taking the process down: the opcodes are first walked without building anything
(:func:`check_pickle_structure`) and nesting deeper than :data:`MAX_NESTING` is refused (a deep
tuple used as a dict key overflows the C stack when hashed: a segfault), and the allowed
callables may not allocate more than the file's own size (``bytes(10**10)`` or a
``_reconstruct`` of a 10 GB array from a 40-byte pickle).
"""

from __future__ import annotations

import builtins
import io
import math
import os
import pickle
import pickletools
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from ..errors import DataFormatError, DatasetNotFoundError, reading
from .base import ArrayDataset, DatasetSplits, register_dataset
from .download import extract_archive, fetch_archive

__all__ = ["SPECS", "CifarSpec", "RestrictedUnpickler", "load_cifar", "safe_extract_tar", "safe_unpickle"]


#: The deepest container nesting a CIFAR pickle may have (the official ones nest about 6 levels).
MAX_NESTING = 100
#: Encodings the allowed ``_codecs.encode`` / ``str`` may name (a codec name is a module to import).
_SAFE_ENCODINGS = frozenset({"latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1", "ascii", "utf-8", "utf8",
                             "utf_8"})


class _NdarrayType:
    """Stands for ``numpy.ndarray`` in a pickle: only :func:`_reconstruct` may use it (as numpy's
    own pickles do), so ``numpy.ndarray(shape)`` cannot allocate an arbitrary array."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        raise pickle.UnpicklingError("numpy.ndarray may only be used through numpy's _reconstruct")


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The only globals CIFAR pickles (and numpy arrays in general) need, under every module path numpy used.

    Callables that can allocate are mapped to the names ``"_reconstruct"``, ``"bytes"``,
    ``"bytearray"``, ``"str"``, ``"encode"``; :class:`RestrictedUnpickler` binds them to a
    size budget per file. Every builtin is wrapped in a plain function, so the ``NEWOBJ``
    opcodes (which call ``cls.__new__`` directly) cannot reach them.
    """
    try:
        from numpy._core import multiarray as ma  # numpy >= 2
        from numpy._core import numeric as nu
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray as ma  # type: ignore[no-redef]
        from numpy.core import numeric as nu  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {}
    for mod in ("numpy.core", "numpy._core"):
        allowed[(f"{mod}.multiarray", "_reconstruct")] = "_reconstruct"
        allowed[(f"{mod}.multiarray", "scalar")] = ma.scalar
        if hasattr(nu, "_frombuffer"):
            allowed[(f"{mod}.numeric", "_frombuffer")] = nu._frombuffer
    allowed[("numpy", "ndarray")] = _NdarrayType
    allowed[("numpy", "dtype")] = np.dtype
    # Python 3 pickles protocol <= 2 store bytes as _codecs.encode(str, "latin1"): a pure function.
    allowed[("_codecs", "encode")] = "encode"
    for name in ("dict", "list", "tuple", "set", "frozenset", "bytes", "bytearray", "str", "int", "float", "complex"):
        obj = name if name in ("bytes", "bytearray", "str") else _plain_function(getattr(builtins, name))
        allowed[("builtins", name)] = obj
        allowed[("__builtin__", name)] = obj  # Python 2 name, if fix_imports is off
    return allowed


def _plain_function(cls: type) -> Any:
    def call(*args: Any) -> Any:
        return cls(*args)

    call.__name__ = call.__qualname__ = cls.__name__
    return call


_ALLOWED = _numpy_globals()


def _bounded_callables(path: Path, budget: int) -> dict[str, Any]:
    """The allocating callables, refusing to allocate more than ``budget`` bytes (the file size:
    a genuine pickle carries its arrays' bytes inline, so it is never smaller than them)."""
    try:
        from numpy._core import multiarray as ma
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray as ma  # type: ignore[no-redef]

    def need(nbytes: int, what: str) -> None:
        if nbytes > budget:
            raise DataFormatError(path, f"the pickle asks for {what} of {nbytes} bytes, more than the whole "
                                        f"{budget}-byte file holds (corrupt or malicious file?)", None)

    def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> Any:
        if subtype is not _NdarrayType:
            raise pickle.UnpicklingError("numpy's _reconstruct may only rebuild a numpy.ndarray")
        dims = (shape,) if isinstance(shape, int) else tuple(shape)
        if not all(isinstance(d, int) and d >= 0 for d in dims):
            raise pickle.UnpicklingError(f"bad array shape {shape!r}")
        need(math.prod(dims) * np.dtype(dtype).itemsize, "an array")
        return ma._reconstruct(np.ndarray, shape, dtype)

    def _sized(cls: type) -> Any:
        def call(*args: Any) -> Any:
            if args and isinstance(args[0], int):
                need(args[0], f"{cls.__name__}(n)")
            if len(args) > 1 and str(args[1]).lower() not in _SAFE_ENCODINGS:
                raise pickle.UnpicklingError(f"{cls.__name__}() with encoding {args[1]!r}")
            return cls(*args)

        call.__name__ = call.__qualname__ = cls.__name__
        return call

    def encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        if str(encoding).lower() not in _SAFE_ENCODINGS:
            raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
        if not isinstance(obj, str):
            raise pickle.UnpicklingError(f"_codecs.encode of a {type(obj).__name__}")
        return obj.encode(encoding, errors)

    return {"_reconstruct": _reconstruct, "bytes": _sized(bytes), "bytearray": _sized(bytearray),
            "str": _sized(str), "encode": encode}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only numpy-array and plain-container globals.

    ``find_class`` is the single place where a pickle can reach code (``os.system``,
    ``builtins.eval``, ...): everything outside :data:`_ALLOWED` raises
    :class:`DataFormatError` naming the file and the global, before anything is called.
    ``budget`` (bytes; default: unlimited) caps what the allowed callables may allocate.
    """

    def __init__(self, file: io.BufferedIOBase, path: Path, budget: int | None = None, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self.path = path
        self._bounded = _bounded_callables(path, budget if budget is not None else 1 << 62)

    def find_class(self, module: str, name: str) -> Any:
        try:
            obj = _ALLOWED[(module, name)]
        except KeyError:
            raise DataFormatError(self.path, f"refusing to unpickle the global {module}.{name}: CIFAR pickles only "
                                             "contain numpy arrays, lists and dicts (corrupt or malicious file?)",
                                  None) from None
        return self._bounded[obj] if isinstance(obj, str) else obj

    def persistent_load(self, pid: Any) -> Any:
        raise DataFormatError(self.path, "refusing a pickle with persistent ids", None)


class _Cell:
    """The nesting depth of one object on the simulated pickle stack (shared by its aliases)."""

    __slots__ = ("depth",)

    def __init__(self, depth: int = 0) -> None:
        self.depth = depth


def _opcode_table() -> dict[int, tuple]:
    """Per opcode byte: ``(name, argument layout, objects taken below a MARK or from the stack, whether
    it takes a MARK, objects pushed, kind)``, from pickletools' descriptions of every protocol."""
    table = {}
    for op in pickletools.opcodes:
        a = op.arg
        if a is None:
            layout: tuple = ("none", 0)
        elif a.n >= 0:
            layout = ("fixed", a.n)
        elif a.n == pickletools.UP_TO_NEWLINE:
            layout = ("lines", 2 if a.name == "stringnl_noescape_pair" else 1)
        else:
            width, signed = {pickletools.TAKEN_FROM_ARGUMENT1: (1, False), pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
                             pickletools.TAKEN_FROM_ARGUMENT4U: (4, False),
                             pickletools.TAKEN_FROM_ARGUMENT8U: (8, False)}[a.n]
            layout = ("counted", width, signed)
        before = op.stack_before
        marked = pickletools.markobject in before
        below = before.index(pickletools.markobject) if marked else len(before)
        if op.name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            kind = "put"
        elif op.name in ("GET", "BINGET", "LONG_BINGET"):
            kind = "get"
        elif op.name in ("PROTO", "FRAME", "STOP", "MARK", "DUP"):
            kind = op.name
        elif op.name in ("APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"):
            kind = "mutate"
        elif below == 0 and not marked:
            kind = "scalar"  # pushes a new object made from the argument alone
        else:
            kind = "make"
        table[ord(op.code)] = (op.name, layout, below, marked, len(op.stack_after), kind)
    return table


_OPCODES = _opcode_table()


def _memo_slot(arg: memoryview, text: bool) -> int | None:
    """The memo slot a ``PUT`` (decimal text) or ``BINPUT`` / ``LONG_BINPUT`` (little-endian) names."""
    if not text:
        return int.from_bytes(arg, "little")
    digits = bytes(arg).strip()
    return int(digits) if digits.isdigit() and len(digits) <= 19 else None


def check_pickle_structure(path: str | Path, data: bytes, max_nesting: int = MAX_NESTING) -> None:
    """Walk the opcodes of ``data`` without building anything; refuse unknown opcodes, arguments
    running past the end, a stack the opcodes do not fit, containers nested deeper than
    ``max_nesting``, and memo slots beyond the file's size (``LONG_BINPUT 2**31``: the
    unpickler would allocate a 16 GiB memo table for a 12-byte file).

    A few bytes of ``TUPLE1`` opcodes make a tuple nested 100,000 deep; used as a dict key or set
    element it is hashed recursively in C, which overflows the stack and kills the interpreter
    (no exception to catch). Each stack item's depth is tracked (a container: one more than its
    deepest item; shared by memo aliases and raised when items are added to it), so the check
    holds for every opcode sequence, not only the ones Python's pickler writes. Arguments are
    skipped, not decoded: about a microsecond per opcode.
    """
    path = Path(path)
    stack: list[_Cell | None] = []  # None stands for a MARK
    memo: dict[Any, _Cell] = {}
    n, pos = len(data), 0
    view = memoryview(data)
    while True:
        if pos >= n:
            raise DataFormatError(path, "not a valid CIFAR pickle: the data ends before the STOP opcode", pos)
        start = pos
        entry = _OPCODES.get(data[pos])
        if entry is None:
            raise DataFormatError(path, f"not a valid CIFAR pickle: unknown opcode 0x{data[pos]:02x}", pos)
        name, layout, below, marked, pushed, kind = entry
        pos += 1
        arg: Any = None
        if layout[0] == "fixed":
            arg = view[pos:pos + layout[1]]
            pos += layout[1]
        elif layout[0] == "lines":
            for _ in range(layout[1]):
                end = data.find(b"\n", pos)
                if end < 0:
                    pos = n + 1
                    break
                arg, pos = view[pos:end], end + 1
        elif layout[0] == "counted":
            size = int.from_bytes(view[pos:pos + layout[1]], "little", signed=layout[2])
            if size < 0:
                raise DataFormatError(path, f"not a valid CIFAR pickle: {name} with a negative length", start)
            pos += layout[1] + size
        if pos > n:
            raise DataFormatError(path, f"not a valid CIFAR pickle: the argument of {name} runs past the end", start)
        if kind == "scalar":
            stack.extend([_Cell()] * pushed)
            continue
        if kind == "STOP":
            return
        if kind in ("PROTO", "FRAME"):
            continue
        if kind == "MARK":
            stack.append(None)
            continue
        if kind == "put":
            slot = len(memo) if arg is None else _memo_slot(arg, layout[0] == "lines")
            if slot is None:
                raise DataFormatError(path, f"not a valid CIFAR pickle: {name} names no memo slot number", start)
            if slot > n:  # the unpickler sizes its memo table to the slot number
                raise DataFormatError(path, f"not a valid CIFAR pickle: {name} to memo slot {slot}, more than the "
                                            f"{n}-byte file can fill (it would allocate a table that large)", start)
            if stack and stack[-1] is not None:
                memo[len(memo) if arg is None else bytes(arg)] = stack[-1]
            continue
        if kind == "get":
            stack.append(memo.get(bytes(arg)) or _Cell())
            continue
        if kind == "DUP":
            stack.append(stack[-1] if stack and stack[-1] is not None else _Cell())
            continue
        consumed: list[_Cell | None] = []
        if marked:
            try:
                top = len(stack) - 1 - stack[::-1].index(None)
            except ValueError:
                raise DataFormatError(path, f"not a valid CIFAR pickle: {name} without a MARK before it",
                                      start) from None
            consumed = stack[top + 1:]
            del stack[top:]
        if below:
            base = stack[-below:]
            if len(base) < below or None in base:
                raise DataFormatError(path, f"not a valid CIFAR pickle: {name} on too short a stack", start)
            del stack[-below:]
            consumed = base + consumed
        # (no MARK, the None cells, left in `consumed`)
        deepest = max((c.depth for c in cast("list[_Cell]", consumed)), default=-1)
        if kind == "mutate":
            cell = consumed[0]
            assert cell is not None
            cell.depth = max(cell.depth, 1 + max((c.depth for c in cast("list[_Cell]", consumed[1:])), default=-1))
        else:
            cell = _Cell(1 + deepest)
        if cell.depth > max_nesting:
            raise DataFormatError(path, f"refusing a pickle nested more than {max_nesting} levels deep (CIFAR "
                                        "pickles nest a few levels; corrupt or malicious file?)", start)
        if pushed:
            stack.append(cell)


def safe_unpickle(path: str | Path) -> dict[str, Any]:
    """Load one CIFAR pickle with :class:`RestrictedUnpickler`; return a dict with ``str`` keys.

    Official files were written by Python 2; they are read with ``encoding='bytes'`` (as
    the CIFAR page recommends), which gives ``bytes`` keys, while pickles re-written by
    Python 3 have ``str`` keys: both are normalised to ``str`` here. The opcodes are checked
    first (:func:`check_pickle_structure`) and nothing may allocate more than the file's size.
    """
    path = Path(path)
    with reading(path):
        data = path.read_bytes()
    check_pickle_structure(path, data)
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), path, budget=len(data), encoding="bytes").load()
    except DataFormatError:
        raise
    except Exception as e:
        raise DataFormatError(path, f"not a valid CIFAR pickle: {type(e).__name__}: {e}", None) from None
    if not isinstance(obj, dict):
        raise DataFormatError(path, f"expected a pickled dict, found {type(obj).__name__}", None)
    bad = [type(k).__name__ for k in obj if not isinstance(k, (str, bytes))]
    if bad:
        raise DataFormatError(path, f"the pickled dict has a {bad[0]} key; CIFAR pickles have string keys", None)
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _names(path: Path, meta: dict[str, Any], key: str) -> list[str]:
    if key not in meta or not isinstance(meta[key], (list, tuple)):
        raise DataFormatError(path, f"meta file has no list {key!r} (keys: {sorted(meta)})", None)
    names = []
    for i, n in enumerate(meta[key]):
        if isinstance(n, bytes):
            try:
                n = n.decode("utf-8")
            except UnicodeDecodeError:
                raise DataFormatError(path, f"{key!r}[{i}] is not UTF-8 text: {n[:40]!r}", None) from None
        if not isinstance(n, str):
            raise DataFormatError(path, f"{key!r}[{i}] is a {type(n).__name__}, not a class name", None)
        names.append(n)
    return names


def _batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8 [N, 3, 32, 32]`` and labels ``int64 [N]`` of one CIFAR batch file."""
    d = safe_unpickle(path)
    if "data" not in d or label_key not in d:
        raise DataFormatError(path, f"CIFAR batch needs keys 'data' and {label_key!r}; found {sorted(d)}", None)
    data, labels = d["data"], d[label_key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} {list(data.shape)}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataFormatError(path, f"'data' must be a uint8 array [N, 3072], found {desc}", None)
    try:
        raw = np.asarray(labels)
    except (TypeError, ValueError, OverflowError, RecursionError) as e:
        raise DataFormatError(path, f"{label_key!r} is not a list of integers: {e}", None) from None
    if raw.size and raw.dtype.kind not in "iu":  # floats, strings, objects (ints beyond 64 bits), ...
        raise DataFormatError(path, f"{label_key!r} is not a list of integers (found {raw.dtype} values)", None)
    if raw.dtype.kind == "u" and raw.size and raw.max() > np.iinfo(np.int64).max:
        raise DataFormatError(path, f"labels must lie in 0..{num_classes - 1}, found {raw.max()}", None)
    labels = raw.astype(np.int64)
    if labels.shape != (len(data),):
        raise DataFormatError(path, f"{len(data)} images but {label_key!r} has shape {list(labels.shape)}", None)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataFormatError(path, f"labels must lie in 0..{num_classes - 1}, found {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, 32, 32), labels


# --------------------------------------------------------------------------- tar extraction

def _check_member(archive: Path, m: tarfile.TarInfo) -> None:
    """Refuse absolute paths, ``..`` components, links and special files (before extracting anything)."""
    name = m.name
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
        raise DataFormatError(archive, f"refusing archive member {name!r}: its path escapes the target folder", None)
    if not (m.isfile() or m.isdir()):
        raise DataFormatError(archive, f"refusing archive member {name!r}: links and special files are not "
                                       "allowed in a dataset archive", None)


def safe_extract_tar(archive: str | Path, dest_parent: str | Path, top: str, required: list[str]) -> Path:
    """Extract the ``top`` folder of ``archive`` into ``dest_parent/top`` safely and atomically.

    Every member is checked first (:func:`_check_member`); extraction uses tarfile's
    ``'data'`` filter where available as a second line of defence. Files go to a temporary
    folder beside the target, which is renamed to ``dest_parent/top`` only after all
    ``required`` files (relative to ``top``) are there, so an interrupted extraction never
    leaves a folder that looks complete. Returns ``dest_parent/top``.
    """
    archive, dest_parent = Path(archive), Path(dest_parent)
    final = dest_parent / top
    tmp = Path(tempfile.mkdtemp(prefix=f".{top}.extract-", dir=dest_parent))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = tar.getmembers()
                for m in members:
                    _check_member(archive, m)
                wanted = [m for m in members if m.name == top or m.name.startswith(top + "/")]
                if not wanted:
                    raise DataFormatError(archive, f"archive holds no folder {top!r}", None)
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, members=wanted, filter="data")
                else:  # pragma: no cover - Python < 3.11.4; members were checked above
                    tar.extractall(tmp, members=wanted)
        except DataFormatError:
            raise
        except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as e:
            raise DataFormatError(archive, f"cannot extract the archive: {type(e).__name__}: {e}", None) from None
        missing = [r for r in required if not (tmp / top / r).is_file()]
        if missing:
            raise DataFormatError(archive, f"archive lacks {', '.join(top + '/' + r for r in missing)}", None)
        try:
            os.rename(tmp / top, final)
        except OSError:
            # another process finished first: accept its (complete) folder
            if not all((final / r).is_file() for r in required):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# --------------------------------------------------------------------------- datasets

@dataclass(frozen=True)
class CifarSpec:
    name: str
    folder: str
    archive: str
    md5: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def required(self) -> list[str]:
        return [*self.train_files, *self.test_files, self.meta_file]


URL_BASE = "https://www.cs.toronto.edu/~kriz/"

SPECS: dict[str, CifarSpec] = {
    "cifar10": CifarSpec("cifar10", "cifar-10-batches-py", "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
                         tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "batches.meta",
                         (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": CifarSpec("cifar100", "cifar-100-python", "cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
                          ("train",), ("test",), "meta",
                          (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def _ensure_extracted(spec: CifarSpec, root: Path, download: bool, timeout: float | None) -> Path:
    folder = root / spec.folder
    missing = [r for r in spec.required if not (folder / r).is_file()]
    if not missing:
        return folder
    archive = root / spec.archive
    if folder.exists():
        raise DatasetNotFoundError(
            f"{spec.name}: {folder}/ exists but lacks {', '.join(missing)}. It was not made by fewstep (whose "
            f"extraction is atomic): delete it, or complete it, or put {spec.archive} in {root}/ instead.")
    reason = fetch_archive(URL_BASE + spec.archive, archive, spec.md5, download, timeout)
    if archive.is_file():
        return extract_archive(spec.name, archive, root,
                               lambda: safe_extract_tar(archive, root, spec.folder, spec.required))
    raise DatasetNotFoundError(
        f"{spec.name}: missing {', '.join(spec.folder + '/' + m for m in missing)} under {root}/.\n"
        f"Put the extracted folder {spec.folder}/ or the official archive {spec.archive} "
        f"(from {URL_BASE}) in {root}/ -- or point fewstep at another data folder with $FEWSTEP_DATA "
        f"or --data-root." + (reason if download else "\nDownloading is disabled."))


def load_cifar(spec: CifarSpec, root: Path, download: bool = True, label_mode: str = "fine",
               timeout: float | None = None) -> DatasetSplits:
    """Load CIFAR-10 / CIFAR-100 (``label_mode`` 'fine' or 'coarse' for CIFAR-100) as uint8 [N, 3, 32, 32]."""
    folder = _ensure_extracted(spec, Path(root), download, timeout)
    meta_path = folder / spec.meta_file
    meta = safe_unpickle(meta_path)
    if spec.name == "cifar10":
        classes, label_key = _names(meta_path, meta, "label_names"), "labels"
    else:
        if label_mode not in ("fine", "coarse"):
            raise ValueError(f"label_mode must be 'fine' or 'coarse', not {label_mode!r}")
        classes = _names(meta_path, meta, f"{label_mode}_label_names")
        label_key = f"{label_mode}_labels"

    def split(files: tuple[str, ...]) -> ArrayDataset:
        parts = [_batch(folder / f, label_key, len(classes)) for f in files]
        x = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        y = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
        return ArrayDataset(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y), classes,
                            mean=spec.mean, std=spec.std)

    return DatasetSplits(spec.name, split(spec.train_files), split(spec.test_files),
                         info={"folder": str(folder), "label_mode": label_mode if spec.name == "cifar100" else "fine"})


@register_dataset("cifar10")
def load_cifar10(root: Path, download: bool = True, timeout: float | None = None) -> DatasetSplits:
    """CIFAR-10: 50,000 + 10,000 RGB images uint8 [N, 3, 32, 32], 10 classes."""
    return load_cifar(SPECS["cifar10"], root, download, timeout=timeout)


@register_dataset("cifar100")
def load_cifar100(root: Path, download: bool = True, label_mode: str = "fine",
                  timeout: float | None = None) -> DatasetSplits:
    """CIFAR-100: 50,000 + 10,000 RGB images uint8 [N, 3, 32, 32], 100 fine (or 20 coarse) classes."""
    return load_cifar(SPECS["cifar100"], root, download, label_mode, timeout=timeout)
