"""MNIST and Fashion-MNIST from their official IDX files.

Files are looked for in ``<root>/mnist/`` and ``<root>/fashion-mnist/`` (also in
torchvision's ``<root>/MNIST/raw/`` and ``<root>/FashionMNIST/raw/``), gzipped or not.
Local files are not checked against the official ``.gz`` md5s, because redistributed
copies (Debian's, or the ones in a shared data folder) are often re-gzipped with the
same content; the IDX reader validates their structure instead. Downloads *are*
verified against the official md5s before they are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataFormatError, DatasetNotFoundError, DownloadError
from .base import ArrayDataset, DatasetSplits, register_dataset
from .download import MIRROR_ENV, download_file
from .idx import read_idx

__all__ = ["MNIST_FILES", "SPECS", "MnistSpec", "load_idx_dataset"]

#: The four standard file names, in the order (train images, train labels, test images, test labels).
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclass(frozen=True)
class MnistSpec:
    """Where an MNIST-format dataset lives, where to fetch it, and what it contains."""

    name: str
    folder: str  # under the data root
    alt_folders: tuple[str, ...]  # other layouts accepted when reading (torchvision's)
    mirrors: tuple[str, ...]  # base URLs, tried in order after $FEWSTEP_MIRROR
    md5: dict[str, str]  # official md5 of each .gz
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]


SPECS: dict[str, MnistSpec] = {
    "mnist": MnistSpec(
        name="mnist", folder="mnist", alt_folders=("MNIST/raw",),
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        md5={"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
             "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
             "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
             "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
        classes=tuple(str(i) for i in range(10)), mean=(0.1307,), std=(0.3081,)),
    "fashion-mnist": MnistSpec(
        name="fashion-mnist", folder="fashion-mnist", alt_folders=("FashionMNIST/raw",),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        md5={"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
             "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
             "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
             "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        mean=(0.2860,), std=(0.3530,)),
}


def _find(root: Path, spec: MnistSpec, stem: str) -> Path | None:
    """The first existing ``<stem>.gz`` or ``<stem>`` in the dataset's folders."""
    for folder in (spec.folder, *spec.alt_folders):
        for name in (stem + ".gz", stem):
            p = root / folder / name
            if p.is_file():
                return p
    return None


def _locate(root: Path, spec: MnistSpec, download: bool, timeout: float | None) -> dict[str, Path]:
    """Paths of the four files, downloading missing ones if allowed; one error listing all that are missing."""
    found = {stem: _find(root, spec, stem) for stem in MNIST_FILES}
    missing = [s for s, p in found.items() if p is None]
    reasons: list[str] = []
    if missing and download:
        target = root / spec.folder
        for stem in list(missing):
            gz = stem + ".gz"
            try:
                kw: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
                found[stem] = download_file([m + gz for m in spec.mirrors], target / gz, md5=spec.md5[gz], **kw)
                missing.remove(stem)
            except DownloadError as e:
                reasons.append(str(e))
            except OSError as e:  # e.g. the data root is read-only
                reasons.append(f"could not write {target / gz}: {e}")
    if missing:
        target = root / spec.folder
        names = ", ".join(s + ".gz" for s in missing)
        msg = (f"{spec.name}: missing {len(missing)} of 4 files: {names}\n"
               f"Put them (gzipped or not) in {target}/ -- or point fewstep at another data folder "
               f"with $FEWSTEP_DATA or --data-root.")
        if download:
            msg += (f"\nDownloading them failed (set ${MIRROR_ENV} to a base URL serving these files "
                    "to use your own mirror):\n" + "\n".join(reasons))
        else:
            msg += f"\nDownloading is disabled; with download=True they are fetched from {spec.mirrors[0]}"
        raise DatasetNotFoundError(msg)
    return {s: p for s, p in found.items() if p is not None}


def _split(spec: MnistSpec, images_path: Path, labels_path: Path) -> ArrayDataset:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataFormatError(images_path, f"expected uint8 images [N, H, W], got {images.dtype} {list(images.shape)}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataFormatError(labels_path, f"expected uint8 labels [N], got {labels.dtype} {list(labels.shape)}")
    if len(images) != len(labels):
        raise DataFormatError(labels_path, f"{len(labels)} labels but {images_path.name} holds {len(images)} images")
    if labels.size and int(labels.max()) >= len(spec.classes):
        bad = int(np.argmax(labels >= len(spec.classes)))
        raise DataFormatError(labels_path, f"label {int(labels[bad])} at index {bad} is not one of the "
                                           f"{len(spec.classes)} classes", None)
    return ArrayDataset(torch.from_numpy(images[:, None]), torch.from_numpy(labels.astype(np.int64)),
                        list(spec.classes), mean=spec.mean, std=spec.std)


def load_idx_dataset(spec: MnistSpec, root: Path, download: bool = True, timeout: float | None = None) -> DatasetSplits:
    """Load an MNIST-format dataset described by ``spec`` from ``root``."""
    paths = _locate(Path(root), spec, download, timeout)
    train = _split(spec, paths[MNIST_FILES[0]], paths[MNIST_FILES[1]])
    test = _split(spec, paths[MNIST_FILES[2]], paths[MNIST_FILES[3]])
    return DatasetSplits(spec.name, train, test, info={"files": {k: str(v) for k, v in paths.items()}})


@register_dataset("mnist")
def load_mnist(root: Path, download: bool = True, timeout: float | None = None) -> DatasetSplits:
    """MNIST handwritten digits: 60,000 + 10,000 uint8 images [N, 1, 28, 28]."""
    return load_idx_dataset(SPECS["mnist"], root, download, timeout)


@register_dataset("fashion-mnist")
def load_fashion_mnist(root: Path, download: bool = True, timeout: float | None = None) -> DatasetSplits:
    """Zalando's Fashion-MNIST: 60,000 + 10,000 uint8 images [N, 1, 28, 28] of 10 clothing classes."""
    return load_idx_dataset(SPECS["fashion-mnist"], root, download, timeout)
