"""Tiny-ImageNet (200 classes, 64x64 RGB) from the official ``tiny-imagenet-200`` layout.

Layout (as extracted from the official ``tiny-imagenet-200.zip``, under ``<root>/``)::

    tiny-imagenet-200/wnids.txt                      one WordNet id per line (200 classes)
    tiny-imagenet-200/words.txt                      wnid<TAB>names (optional, for class names)
    tiny-imagenet-200/train/<wnid>/images/*.JPEG     500 per class
    tiny-imagenet-200/val/images/*.JPEG              10,000 images
    tiny-imagenet-200/val/val_annotations.txt        file<TAB>wnid<TAB>x0<TAB>y0<TAB>x1<TAB>y1

The labelled validation set is the test split (the official test set has no labels and is
ignored). Class indices follow the sorted wnids (the order ``torchvision.datasets.ImageFolder``
gives the training folders); ``info["names"]`` holds the words of each class when
``words.txt`` is present. Images are decoded with Pillow to ``uint8 [N, 3, 64, 64]`` (the few
grayscale JPEGs are converted to RGB) and cached in one ``.npz`` file (in ``cache_dir``, else
``tiny-imagenet-200/.fewstep-cache/`` when writable, else ``$XDG_CACHE_HOME/fewstep/tinyimagenet``),
written atomically and keyed by the relative path, size and mtime of every image used, so
later loads read one array and any change to the files rebuilds it.

If the folder is missing, ``<root>/tiny-imagenet-200.zip`` is extracted (safely: no paths
outside the target, no links; into a temporary folder renamed into place). With
``download=True`` the zip is first fetched from the official URL (md5-checked; ``$FEWSTEP_MIRROR``
is tried first).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataFormatError, DatasetNotFoundError
from .base import ArrayDataset, DatasetSplits, register_dataset
from .channel_stats import channel_stats
from .download import extract_archive, fetch_archive
from .imagefolder import decode_images
from .npz_cache import read_npz_cache, write_npz_cache

__all__ = ["FOLDER", "MD5", "URL", "load_tinyimagenet", "safe_extract_zip"]

FOLDER = "tiny-imagenet-200"
ARCHIVE = "tiny-imagenet-200.zip"
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
REQUIRED = ("wnids.txt", "val/val_annotations.txt")
SIZE = (64, 64)
_CACHE_VERSION = 1


# --------------------------------------------------------------------------- archive

def safe_extract_zip(archive: str | Path, dest_parent: str | Path, top: str, required: tuple[str, ...] = (),
                     skip: tuple[str, ...] = ()) -> Path:
    """Extract the ``top/`` folder of a zip into ``dest_parent/top`` safely and atomically.

    Members with absolute paths, ``..`` components or symlink modes are refused before anything
    is written; members under ``top/<s>`` for ``s`` in ``skip`` are left out. The files go to a
    temporary folder that is renamed into place once every ``required`` file is there.
    """
    archive, dest_parent = Path(archive), Path(dest_parent)
    final = dest_parent / top
    tmp = Path(tempfile.mkdtemp(prefix=f".{top}.extract-", dir=dest_parent))
    try:
        try:
            with zipfile.ZipFile(archive) as zf:
                members = zf.infolist()
                for m in members:
                    parts = m.filename.replace("\\", "/").split("/")
                    if m.filename.startswith(("/", "\\")) or ".." in parts or (len(parts[0]) > 1 and parts[0][1] == ":"):
                        raise DataFormatError(archive, f"refusing member {m.filename!r}: its path escapes the target")
                    if stat.S_ISLNK(m.external_attr >> 16):
                        raise DataFormatError(archive, f"refusing member {m.filename!r}: links are not allowed")
                skipped = tuple(f"{top}/{s.strip('/')}/" for s in skip)
                wanted = [m for m in members if m.filename.startswith(top + "/") and not m.filename.startswith(skipped)]
                if not wanted:
                    raise DataFormatError(archive, f"archive holds no folder {top!r}")
                for m in wanted:
                    zf.extract(m, tmp)
        except DataFormatError:
            raise
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise DataFormatError(archive, f"cannot extract the archive: {type(e).__name__}: {e}") from None
        missing = [r for r in required if not (tmp / top / r).is_file()]
        if missing:
            raise DataFormatError(archive, f"archive lacks {', '.join(top + '/' + r for r in missing)}")
        try:
            os.rename(tmp / top, final)
        except OSError:
            if not all((final / r).is_file() for r in required):  # another process finished first?
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _locate(root: Path, download: bool, timeout: float | None) -> Path:
    folder = root / FOLDER
    if all((folder / r).is_file() for r in REQUIRED) and (folder / "train").is_dir():
        return folder
    if folder.exists():
        raise DatasetNotFoundError(
            f"tinyimagenet: {folder}/ exists but lacks wnids.txt, train/ or val/val_annotations.txt; complete or "
            f"delete it, or put the official {ARCHIVE} in {root}/ instead.")
    archive = root / ARCHIVE
    reason = fetch_archive(URL, archive, MD5, download, timeout)
    if archive.is_file():
        return extract_archive("tinyimagenet", archive, root,
                               lambda: safe_extract_zip(archive, root, FOLDER, REQUIRED, skip=("test",)))
    raise DatasetNotFoundError(
        f"tinyimagenet: no {FOLDER}/ under {root}/. Put the extracted folder {FOLDER}/ (wnids.txt, "
        f"train/<wnid>/images/*.JPEG, val/images/*.JPEG, val/val_annotations.txt) or the official archive "
        f"{ARCHIVE} (from {URL}, md5 {MD5}) in {root}/ -- or point fewstep at another data folder with "
        f"$FEWSTEP_DATA or --data-root." + (reason if download else "\nDownloading is disabled."))


# --------------------------------------------------------------------------- index

def _read_lines(path: Path) -> list[str]:
    try:
        return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise DataFormatError(path, f"cannot read: {type(e).__name__}: {e}") from None


@dataclass(frozen=True)
class _Image:
    rel: str  # relative to tiny-imagenet-200/
    label: int
    size: int
    mtime_ns: int


def _stat(path: Path, rel: str, label: int) -> _Image:
    st = path.stat()
    return _Image(rel, label, st.st_size, st.st_mtime_ns)


def _index(folder: Path) -> tuple[list[str], list[_Image], list[_Image]]:
    """Sorted wnids and the train / val image files (paths relative to ``folder``)."""
    wnids_path = folder / "wnids.txt"
    wnids = _read_lines(wnids_path)
    if not wnids or len(set(wnids)) != len(wnids):
        raise DataFormatError(wnids_path, f"expected distinct WordNet ids, one per line; found {len(wnids)} "
                                          f"lines, {len(set(wnids))} distinct")
    classes = sorted(wnids)
    index = {w: i for i, w in enumerate(classes)}

    train: list[_Image] = []
    for w in classes:
        img_dir = folder / "train" / w / "images"
        if not img_dir.is_dir():
            raise DataFormatError(folder / "train", f"class {w} of wnids.txt has no folder train/{w}/images/")
        for name in sorted(os.listdir(img_dir)):
            if name.lower().endswith((".jpeg", ".jpg")) and not name.startswith("."):
                train.append(_stat(img_dir / name, f"train/{w}/images/{name}", index[w]))

    ann_path = folder / "val" / "val_annotations.txt"
    val: list[_Image] = []
    for i, line in enumerate(_read_lines(ann_path)):
        fields = line.split("\t")
        if len(fields) < 2:
            raise DataFormatError(ann_path, f"line {i + 1}: expected file<TAB>wnid<TAB>box, got {line!r}")
        name, w = fields[0], fields[1]
        if w not in index:
            raise DataFormatError(ann_path, f"line {i + 1}: wnid {w!r} is not in wnids.txt")
        if "/" in name or "\\" in name or name.startswith("."):
            raise DataFormatError(ann_path, f"line {i + 1}: bad file name {name!r}")
        path = folder / "val" / "images" / name
        if not path.is_file():
            raise DataFormatError(ann_path, f"line {i + 1}: {path} does not exist")
        val.append(_stat(path, f"val/images/{name}", index[w]))
    val.sort(key=lambda f: (f.label, f.rel))
    return classes, train, val


def _class_names(folder: Path, classes: list[str]) -> list[str]:
    words = folder / "words.txt"
    names: dict[str, str] = {}
    if words.is_file():
        for line in _read_lines(words):
            w, _, text = line.partition("\t")
            names[w] = text.strip()
    return [names.get(w, w) for w in classes]


# --------------------------------------------------------------------------- selection, statistics, cache

def _select(files: list[_Image], limit: int | None) -> list[_Image]:
    """At most ``limit`` files, taken round-robin over classes (class-sorted order kept)."""
    if limit is None or limit >= len(files):
        return files
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    by_class: dict[int, list[int]] = {}
    for i, f in enumerate(files):
        by_class.setdefault(f.label, []).append(i)
    picked: list[int] = []
    rank = 0
    while len(picked) < limit:
        for idx in by_class.values():
            if rank < len(idx) and len(picked) < limit:
                picked.append(idx[rank])
        rank += 1
    return [files[i] for i in sorted(picked)]


def _cache_dirs(folder: Path, cache_dir: str | Path | None) -> list[Path]:
    if cache_dir is not None:
        return [Path(cache_dir)]
    dirs = []
    beside = folder / ".fewstep-cache"
    if os.access(beside if beside.is_dir() else folder, os.W_OK):
        dirs.append(beside)
    dirs.append(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fewstep" / "tinyimagenet")
    return dirs


def _cache_prefix(folder: Path) -> str:
    """Cache files of one dataset folder share this prefix (so a shared cache folder keeps one per folder)."""
    return f"tinyimagenet-{hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:12]}-"


def _cache_name(folder: Path, limit: int | None, splits: dict[str, list[_Image]]) -> str:
    h = hashlib.sha256(repr((_CACHE_VERSION, str(folder.resolve()), SIZE, limit)).encode())
    for split, files in sorted(splits.items()):
        h.update(f"\0{split}:{len(files)}".encode())
        for f in files:
            h.update(f"\0{f.rel}\0{f.label}\0{f.size}\0{f.mtime_ns}".encode())
    return f"{_cache_prefix(folder)}{h.hexdigest()[:20]}.npz"


_KEYS = {"train_x", "train_y", "test_x", "test_y", "mean", "std"}


# --------------------------------------------------------------------------- loader

@register_dataset("tinyimagenet")
def load_tinyimagenet(root: Path, download: bool = True, limit: int | None = None, cache: bool = True,
                      cache_dir: str | Path | None = None, timeout: float | None = None) -> DatasetSplits:
    """Tiny-ImageNet: 100,000 train + 10,000 val (the test split) RGB images uint8 [N, 3, 64, 64], 200 classes.

    ``limit`` keeps at most that many images per split, round-robin over classes (smoke runs).
    ``mean``/``std`` are the training split's own per-channel statistics (exact, cached).
    """
    folder = _locate(Path(root), download, timeout)
    t0 = time.perf_counter()
    classes, train_files, val_files = _index(folder)
    if not train_files:
        raise DatasetNotFoundError(f"tinyimagenet: no training images under {folder}/train/<wnid>/images/")
    splits = {"train": _select(train_files, limit), "test": _select(val_files, limit)}
    cache_name = _cache_name(folder, limit, splits)
    candidates = _cache_dirs(folder, cache_dir) if cache else []
    arrays: dict[str, np.ndarray] | None = None
    cache_file: Path | None = None
    for d in candidates:
        if (d / cache_name).is_file():
            arrays = read_npz_cache(d / cache_name, _KEYS)
            if arrays is not None:
                cache_file = d / cache_name
                break
    from_cache = arrays is not None
    if arrays is None:
        arrays = {}
        for split, files in splits.items():
            arrays[f"{split}_x"] = decode_images([folder / f.rel for f in files], "RGB", SIZE)
            arrays[f"{split}_y"] = np.array([f.label for f in files], dtype=np.int64)
        m, s = channel_stats(arrays["train_x"])
        arrays["mean"], arrays["std"] = np.array(m), np.array(s)
        for d in candidates:
            cache_file = write_npz_cache(d, cache_name, arrays, _cache_prefix(folder))
            if cache_file is not None:
                break
    mean = tuple(float(v) for v in arrays["mean"])
    std = tuple(float(v) for v in arrays["std"])

    def make(split: str) -> ArrayDataset:
        return ArrayDataset(torch.from_numpy(arrays[f"{split}_x"]), torch.from_numpy(arrays[f"{split}_y"]),
                            list(classes), mean=mean, std=std)

    info = {"folder": str(folder), "test_split": "val", "names": _class_names(folder, classes),
            "cache": str(cache_file) if cache_file else None, "from_cache": from_cache,
            "load_seconds": round(time.perf_counter() - t0, 3)}
    return DatasetSplits("tinyimagenet", make("train"), make("test"), info=info)
