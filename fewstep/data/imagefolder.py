"""Image-folder datasets: ``<folder>/{train,test}/<class>/<image>``, decoded with Pillow.

``cifar10-jpeg`` is the JPEG copy of CIFAR-10 under ``<root>/cifar10-jpeg/``;
``image-folder`` reads any folder given by its ``path`` option.

Decoding tens of thousands of small JPEGs takes seconds (about 0.1 ms each), far longer
than reading the same pixels back from one array, so the decoded uint8 arrays are cached
in an ``.npz`` file: inside the dataset folder (``.fewstep-cache/``) if that folder is
writable, else under ``$XDG_CACHE_HOME/fewstep/imagefolder`` (``~/.cache/...``). The cache
key covers the folder's absolute path, the decoding options and the relative path, size
and mtime of every image, so adding, removing or touching a file invalidates it. The
cache is written to a temporary file and renamed into place, so a reader never sees a
half-written cache; a cache that cannot be read is ignored and rebuilt.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch

from ..errors import ConfigError, DataFormatError, DatasetNotFoundError
from .base import ArrayDataset, DatasetSplits, register_dataset
from .channel_stats import channel_stats
from .npz_cache import read_npz_cache, write_npz_cache

__all__ = ["IMAGE_EXTENSIONS", "ImageFile", "decode_images", "load_image_folder", "scan_class_folders"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".pbm", ".gif", ".webp",
                              ".tif", ".tiff"})
_CACHE_VERSION = 2  # bump when the cached arrays change meaning (2: interleaved order)
_CACHE_SUBDIR = ".fewstep-cache"
_TEST_DIR_NAMES = ("test", "val", "valid", "validation")


@dataclass(frozen=True)
class ImageFile:
    """One image: path relative to the split folder, class index, and the stat fields the cache key uses."""

    rel: str
    label: int
    size: int
    mtime_ns: int


def _walk_files(folder: str, rel: str) -> Iterator[tuple[str, os.DirEntry]]:
    """``(relative path, entry)`` of image files under ``folder`` (recursive, hidden entries skipped), sorted."""
    with os.scandir(folder) as it:
        entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    for e in entries:
        if e.is_dir(follow_symlinks=True):
            yield from _walk_files(e.path, rel + e.name + "/")
        elif e.is_file(follow_symlinks=True) and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS:
            yield rel + e.name, e


def _class_dirs(split_dir: Path) -> list[str]:
    with os.scandir(split_dir) as it:
        return sorted(e.name for e in it if e.is_dir(follow_symlinks=True) and not e.name.startswith("."))


def scan_class_folders(split_dir: Path, classes: list[str] | None = None) -> tuple[list[str], list[ImageFile]]:
    """Class names (sorted folder names, or ``classes`` if given) and every image under ``split_dir/<class>/``.

    With ``classes`` given (the training split's), a class folder not among them is an error.
    """
    names = _class_dirs(split_dir)
    if classes is None:
        classes = names
    else:
        unknown = sorted(set(names) - set(classes))
        if unknown:
            raise DataFormatError(split_dir, f"class folder(s) {unknown} are not among the training classes", None)
    index = {c: i for i, c in enumerate(classes)}
    files: list[ImageFile] = []
    for name in names:
        label = index[name]
        for rel, e in _walk_files(str(split_dir / name), name + "/"):
            st = e.stat(follow_symlinks=True)
            files.append(ImageFile(rel, label, st.st_size, st.st_mtime_ns))
    return classes, files


def _interleave(files: list[ImageFile]) -> list[ImageFile]:
    """Round-robin over classes (class 0's first image, class 1's first, ..., class 0's second, ...).

    Folders list images class by class; interleaving makes any prefix class-balanced, so
    ``limit`` here and ``ArrayDataset.subset(n)`` (the recipes' train/test limits) never
    yield a one-class dataset. Deterministic: the same files give the same order.
    """
    by_class: dict[int, list[ImageFile]] = {}
    for f in files:
        by_class.setdefault(f.label, []).append(f)
    queues = [v for _, v in sorted(by_class.items())]
    longest = max((len(q) for q in queues), default=0)
    return [q[i] for i in range(longest) for q in queues if i < len(q)]


def _select(files: list[ImageFile], limit: int | None) -> list[ImageFile]:
    """The first ``limit`` of the (interleaved) files: a class-balanced subset for smoke runs."""
    if limit is None:
        return files
    if limit < 0:
        raise ConfigError("data.limit", f"must be >= 0, got {limit}")
    return files[:limit]


def _decode_one(path: Path, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image

    try:
        with open(path, "rb") as fh:
            blob = fh.read()
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(blob)) as im:
                im.load()
                if im.mode != mode:
                    im = im.convert(mode)
                if size is not None and im.size != (size[1], size[0]):
                    im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                arr = np.asarray(im, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataFormatError(path, f"cannot decode image: {type(e).__name__}: {e}", None) from None
    return arr[:, :, None] if arr.ndim == 2 else arr


def decode_images(paths: list[Path], mode: str = "RGB", size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode images into one ``uint8 [N, C, H, W]`` array (all must share a size unless ``size`` is given)."""
    if not paths:
        return np.zeros((0, len(mode), *(size or (0, 0))), np.uint8)
    first = _decode_one(paths[0], mode, size)
    h, w, c = first.shape
    out = np.empty((len(paths), c, h, w), np.uint8)
    out[0] = first.transpose(2, 0, 1)
    for i in range(1, len(paths)):
        a = _decode_one(paths[i], mode, size)
        if a.shape != first.shape:
            raise DataFormatError(paths[i], f"image is {a.shape[1]}x{a.shape[0]}x{a.shape[2]} but {paths[0].name} "
                                            f"is {w}x{h}x{c}; pass size=(H, W) to resize all images", None)
        out[i] = a.transpose(2, 0, 1)
    return out


# --------------------------------------------------------------------------- cache

def _user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fewstep" / "imagefolder"


def _dir_writable(d: Path) -> bool:
    """Writable, and not marked read-only by its mode bits (root could write anyway; we respect the intent)."""
    try:
        st = d.stat()
    except OSError:
        return False
    return os.access(d, os.W_OK) and bool(st.st_mode & 0o222)


def _cache_candidates(folder: Path, cache_dir: Path | None) -> list[Path]:
    if cache_dir is not None:
        return [Path(cache_dir)]
    beside = folder / _CACHE_SUBDIR
    cands = []
    if (beside.is_dir() and _dir_writable(beside)) or (not beside.exists() and _dir_writable(folder)):
        cands.append(beside)
    cands.append(_user_cache_dir())
    return cands


def _cache_key(folder: Path, options: dict, splits: dict[str, list[ImageFile]]) -> str:
    h = hashlib.sha256()
    h.update(repr((_CACHE_VERSION, str(folder.resolve()), sorted(options.items()))).encode())
    for name, files in sorted(splits.items()):
        h.update(f"\0{name}:{len(files)}".encode())
        for f in files:
            h.update(f"\0{f.rel}\0{f.label}\0{f.size}\0{f.mtime_ns}".encode())
    return h.hexdigest()


def _cache_prefix(folder: Path, options: dict) -> str:
    """File-name prefix shared by every cache of this folder *with these options*.

    Only caches with the same prefix are stale versions of each other: a ``limit=20``
    smoke run must not evict the cache of the full dataset.
    """
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", folder.name)[:40] or "folder"
    ident = repr((str(folder.resolve()), sorted(options.items())))
    return f"{slug}-{hashlib.sha256(ident.encode()).hexdigest()[:12]}-"


# --------------------------------------------------------------------------- loader

def _find_layout(folder: Path, train_dir: str, test_dir: str | None) -> tuple[Path | None, Path | None]:
    train = folder / train_dir
    if not train.is_dir():
        return None, None
    names = [test_dir] if test_dir else list(_TEST_DIR_NAMES)
    for n in names:
        if (folder / n).is_dir():
            return train, folder / n
    raise DatasetNotFoundError(f"{folder}: found {train_dir}/ but no test folder ({' or '.join(names)}/)")


def _stratified_split(files: list[ImageFile], test_fraction: float,
                      seed: int) -> tuple[list[ImageFile], list[ImageFile]]:
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError("data.test_fraction", f"must lie strictly between 0 and 1, got {test_fraction}")
    rng = np.random.default_rng(seed)
    test_ids: set[int] = set()
    labels = np.array([f.label for f in files])
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        test_ids.update(idx[: int(round(len(idx) * test_fraction))].tolist())
    train = [f for i, f in enumerate(files) if i not in test_ids]
    test = [f for i, f in enumerate(files) if i in test_ids]
    return train, test


def load_image_folder(path: str | Path, name: str = "image-folder", mode: str = "RGB",
                      size: int | tuple[int, int] | None = None, limit: int | None = None, cache: bool = True,
                      cache_dir: str | Path | None = None, train_dir: str = "train", test_dir: str | None = None,
                      test_fraction: float = 0.2, split_seed: int = 0,
                      mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                      info: dict | None = None) -> DatasetSplits:
    """Load ``path/{train,test}/<class>/*`` (or ``path/<class>/*``, split by ``test_fraction``) as uint8 [N, C, H, W].

    ``mode``: Pillow mode, 'RGB' (3 channels) or 'L' (1). ``size``: resize every image to
    (H, W) (an int means square); without it all images must share one size. ``limit``:
    keep at most that many images per split, taken round-robin over classes (for smoke
    tests). ``mean``/``std`` default to the training split's own per-channel statistics.
    Classes are the sorted training-split folder names; samples are ordered round-robin
    over classes (see :func:`_interleave`), so every prefix of a split is class-balanced.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DatasetNotFoundError(f"{name}: image folder {folder} does not exist; expected {folder}/train/<class>/"
                                   "<image> and test/<class>/<image>, or <class>/<image> folders")
    if mode not in ("RGB", "L"):
        raise ConfigError("data.mode", f"must be 'RGB' or 'L', got {mode!r}")
    # size is one side or (height, width)
    hw = (size, size) if isinstance(size, int) else (cast("tuple[int, int]", tuple(size)) if size is not None else None)
    train_path, test_path = _find_layout(folder, train_dir, test_dir)
    t0 = time.perf_counter()
    if train_path is not None:
        assert test_path is not None  # _find_layout finds both split folders or neither
        classes, train_files = scan_class_folders(train_path)
        _, test_files = scan_class_folders(test_path, classes)
        roots = {"train": train_path, "test": test_path}
    else:
        classes, all_files = scan_class_folders(folder)
        train_files, test_files = _stratified_split(all_files, test_fraction, split_seed)
        roots = {"train": folder, "test": folder}
    if not classes or not train_files:
        raise DatasetNotFoundError(f"{name}: no images under {folder} (expected <class>/<image> folders with "
                                   f"extensions {', '.join(sorted(IMAGE_EXTENSIONS))})")
    splits = {"train": _select(_interleave(train_files), limit), "test": _select(_interleave(test_files), limit)}
    scan_s = time.perf_counter() - t0
    options = {"mode": mode, "size": hw, "limit": limit, "train_dir": train_dir, "test_dir": str(test_path),
               "split": None if train_path is not None else (test_fraction, split_seed), "classes": classes}
    key = _cache_key(folder, options, splits)
    prefix = _cache_prefix(folder, options)
    cache_name = f"{prefix}{key[:20]}.npz"
    arrays: dict[str, np.ndarray] | None = None
    cache_file: Path | None = None
    if cache:
        for d in _cache_candidates(folder, Path(cache_dir) if cache_dir else None):
            if (d / cache_name).is_file():
                arrays = read_npz_cache(d / cache_name)
                if (arrays is not None and {"train_x", "train_y", "test_x", "test_y", "mean", "std"} <= set(arrays)
                        and all(len(arrays[f"{k}_x"]) == len(arrays[f"{k}_y"]) == len(v) for k, v in splits.items())):
                    cache_file = d / cache_name
                    break
                arrays = None
    cached = arrays is not None
    if arrays is None:
        arrays = {}
        for split, files in splits.items():
            arrays[f"{split}_x"] = decode_images([roots[split] / f.rel for f in files], mode, hw)
            arrays[f"{split}_y"] = np.array([f.label for f in files], dtype=np.int64)
        m, s = channel_stats(arrays["train_x"])
        arrays["mean"], arrays["std"] = np.array(m), np.array(s)
        if cache:
            for d in _cache_candidates(folder, Path(cache_dir) if cache_dir else None):
                cache_file = write_npz_cache(d, cache_name, arrays, prefix)
                if cache_file is not None:
                    break
    mean = tuple(mean) if mean is not None else tuple(float(v) for v in arrays["mean"])
    std = tuple(std) if std is not None else tuple(float(v) for v in arrays["std"])

    def make(split: str) -> ArrayDataset:
        return ArrayDataset(torch.from_numpy(arrays[f"{split}_x"]), torch.from_numpy(arrays[f"{split}_y"]),
                            list(classes), mean=mean, std=std)

    meta = {"folder": str(folder), "cache": str(cache_file) if cache_file else None, "from_cache": cached,
            "scan_seconds": round(scan_s, 3), "load_seconds": round(time.perf_counter() - t0, 3)}
    meta.update(info or {})
    return DatasetSplits(name, make("train"), make("test"), info=meta)


@register_dataset("image-folder")
def load_generic_image_folder(root: Path, download: bool = True, path: str | Path | None = None,
                              **options) -> DatasetSplits:
    """Any ``<path>/{train,test}/<class>/<image>`` folder; a relative ``path`` is looked up in the data root too."""
    if path is None:
        raise ConfigError("data.path", "the image-folder dataset needs a path option (the folder holding "
                                       "train/<class>/ and test/<class>/)")
    p = Path(path).expanduser()
    if not p.is_absolute() and not p.exists() and (Path(root) / p).exists():
        p = Path(root) / p
    return load_image_folder(p, name=options.pop("name", "image-folder"), **options)


@register_dataset("cifar10-jpeg")
def load_cifar10_jpeg(root: Path, download: bool = True, limit: int | None = None, cache: bool = True,
                      cache_dir: str | Path | None = None) -> DatasetSplits:
    """CIFAR-10 as JPEG files (a lossy copy, about quality 75): 50,000 + 10,000 uint8 [N, 3, 32, 32].

    Accuracies on it are close to, not exactly comparable with, published CIFAR-10 numbers.
    There is no official download of this copy: use ``cifar10`` for the official pickles.
    """
    folder = Path(root) / "cifar10-jpeg"
    if not (folder / "train").is_dir() or not (folder / "test").is_dir():
        raise DatasetNotFoundError(
            f"cifar10-jpeg: expected {folder}/train/<class>/*.jpg and {folder}/test/<class>/*.jpg; "
            "point fewstep at the folder holding cifar10-jpeg/ with $FEWSTEP_DATA or --data-root. "
            "(This JPEG copy has no download; the 'cifar10' dataset downloads the official pickles.)")
    return load_image_folder(folder, name="cifar10-jpeg", mode="RGB", limit=limit, cache=cache,
                             cache_dir=cache_dir, train_dir="train", test_dir="test",
                             info={"lossy_jpeg_copy": True,
                                   "note": "JPEG (about q75) copy of CIFAR-10: accuracy close to, not exactly "
                                           "comparable with, published CIFAR-10 numbers"})
