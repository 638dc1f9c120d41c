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
:class:`~fewstep.errors.DataFormatError`.
"""

from __future__ import annotations

import builtins
import io
import os
import pickle
import shutil
import struct
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataFormatError, DatasetNotFoundError, DownloadError
from .base import ArrayDataset, DatasetSplits, register_dataset
from .download import MIRROR_ENV, download_file

__all__ = ["CifarSpec", "SPECS", "RestrictedUnpickler", "safe_unpickle", "safe_extract_tar", "load_cifar"]


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The only globals CIFAR pickles (and numpy arrays in general) need, under every module path numpy used."""
    try:
        from numpy._core import multiarray as ma, numeric as nu  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray as ma, numeric as nu  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {}
    for mod in ("numpy.core", "numpy._core"):
        allowed[(f"{mod}.multiarray", "_reconstruct")] = ma._reconstruct
        allowed[(f"{mod}.multiarray", "scalar")] = ma.scalar
        if hasattr(nu, "_frombuffer"):
            allowed[(f"{mod}.numeric", "_frombuffer")] = nu._frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    # Python 3 pickles protocol <= 2 store bytes as _codecs.encode(str, "latin1"): a pure function.
    import _codecs
    allowed[("_codecs", "encode")] = _codecs.encode
    for name in ("dict", "list", "tuple", "set", "frozenset", "bytes", "bytearray", "str", "int", "float", "complex"):
        obj = getattr(builtins, name)
        allowed[("builtins", name)] = obj
        allowed[("__builtin__", name)] = obj  # Python 2 name, if fix_imports is off
    return allowed


_ALLOWED = _numpy_globals()


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only numpy-array and plain-container globals.

    ``find_class`` is the single place where a pickle can reach code (``os.system``,
    ``builtins.eval``, ...): everything outside :data:`_ALLOWED` raises
    :class:`DataFormatError` naming the file and the global, before anything is called.
    """

    def __init__(self, file: io.BufferedIOBase, path: Path, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise DataFormatError(self.path, f"refusing to unpickle the global {module}.{name}: CIFAR pickles only "
                                             "contain numpy arrays, lists and dicts (corrupt or malicious file?)",
                                  None) from None

    def persistent_load(self, pid: Any) -> Any:
        raise DataFormatError(self.path, "refusing a pickle with persistent ids", None)


def safe_unpickle(path: str | Path) -> dict[str, Any]:
    """Load one CIFAR pickle with :class:`RestrictedUnpickler`; return a dict with ``str`` keys.

    Official files were written by Python 2; they are read with ``encoding='bytes'`` (as
    the CIFAR page recommends), which gives ``bytes`` keys, while pickles re-written by
    Python 3 have ``str`` keys: both are normalised to ``str`` here.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            obj = RestrictedUnpickler(f, path, encoding="bytes").load()
    except DataFormatError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, UnicodeDecodeError, MemoryError, struct.error) as e:
        raise DataFormatError(path, f"not a valid CIFAR pickle: {type(e).__name__}: {e}", None) from None
    if not isinstance(obj, dict):
        raise DataFormatError(path, f"expected a pickled dict, found {type(obj).__name__}", None)
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def _names(path: Path, meta: dict[str, Any], key: str) -> list[str]:
    if key not in meta or not isinstance(meta[key], (list, tuple)):
        raise DataFormatError(path, f"meta file has no list {key!r} (keys: {sorted(meta)})", None)
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in meta[key]]


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
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise DataFormatError(path, f"{label_key!r} is not a list of integers: {e}", None) from None
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
        except (tarfile.TarError, EOFError, OSError, ValueError) as e:
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
    reason = ""
    if folder.exists():
        raise DatasetNotFoundError(
            f"{spec.name}: {folder}/ exists but lacks {', '.join(missing)}. It was not made by fewstep (whose "
            f"extraction is atomic): delete it, or complete it, or put {spec.archive} in {root}/ instead.")
    if not archive.is_file() and download:
        try:
            kw = {} if timeout is None else {"timeout": timeout}
            download_file([URL_BASE + spec.archive], archive, md5=spec.md5, **kw)
        except (DownloadError, OSError) as e:
            reason = f"\nDownloading it failed (set ${MIRROR_ENV} to a base URL serving {spec.archive} to use " \
                     f"your own mirror):\n{e}"
    if archive.is_file():
        try:
            return safe_extract_tar(archive, root, spec.folder, spec.required)
        except PermissionError as e:
            raise DatasetNotFoundError(f"{spec.name}: cannot extract {archive} into {root}/ ({e}); extract it "
                                       "yourself or use a writable --data-root") from None
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
