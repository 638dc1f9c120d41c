"""Event-camera datasets read from their official archive layouts.

The datasets follow Tonic's dataset protocol (``tonic.datasets.NMNIST`` and the others), so
Tonic's transforms, ``tonic.DiskCachedDataset`` and a PyTorch ``DataLoader`` take them as they
take Tonic's own:

* ``ds[i]`` is ``(events, target)``: an :data:`~fewstep.events.types.EVENT_DTYPE` structured
  array (fields ``x``, ``y``, ``t`` in microseconds, ``p``; sorted by ``t``) and an ``int``
  class;
* ``sensor_size`` is Tonic's ``(width, height, polarities)``: ``(34, 34, 2)`` for N-MNIST,
  ``(128, 128, 2)`` for DVS128 Gesture and CIFAR10-DVS;
* ``transform(events) -> data``, ``target_transform(target) -> target`` and
  ``transforms(data, target) -> (data, target)`` are applied in that order when given (e.g.
  ``tonic.transforms.Compose([...])`` or :class:`fewstep.events.compression.STC`, which binds the sensor
  size when it is made: ``STC(ds.sensor_size, timesteps=4)``).

Files are read lazily, one sample per ``__getitem__``; only the file list (and, for DVS128
Gesture, the small label CSVs) is read at construction. :func:`collate_events` batches raw
event streams for a ``DataLoader`` in the packed form :func:`fewstep.events.compression.stc_batch`
takes.

Where the files go (``root`` defaults to ``$FEWSTEP_DATA``, see
:func:`fewstep.data.base.resolve_data_root`):

==============  ==========================================================================
NMNIST          ``<root>/nmnist/Train/<digit>/<id>.bin`` and ``Test/...`` (also found:
                ``<root>/nmnist-small/``, ``<root>/NMNIST/``); or the official ``Train.zip`` /
                ``Test.zip`` in ``<root>/nmnist/``, extracted on first use
DVSGesture      ``<root>/DvsGesture/`` with ``trials_to_train.txt``, ``trials_to_test.txt``,
                ``userXX_<lighting>.aedat`` and ``userXX_<lighting>_labels.csv``; or the
                official ``DvsGesture.tar.gz`` in ``<root>``, extracted on first use
CIFAR10DVS      ``<root>/CIFAR10DVS/<class>/cifar10_<class>_<n>.aedat`` for the ten classes
                airplane..truck (also ``<root>/cifar10-dvs/``); or the official per-class
                ``<class>.zip`` files there, extracted on first use
==============  ==========================================================================

Extraction is atomic: an archive is unpacked into a temporary folder next to the target
and renamed into place, so an interrupted run never leaves a half-filled dataset folder.
With ``download=True``, N-MNIST and CIFAR10-DVS archives are fetched from their official
sources with md5 checks (:func:`fewstep.data.download.download_file`); DVS128 Gesture is
served through an IBM Box page that needs a browser, so it must be downloaded by hand.
"""

from __future__ import annotations

import functools
import gzip
import lzma
import os
import re
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from ..errors import DataFormatError, DatasetNotFoundError
from ..events.compression import PackedEvents, pack_events
from ..events.readers.aedat2 import read_aedat2
from ..events.readers.aedat4 import read_aedat4
from ..events.readers.aedat31 import GESTURE_CLASSES, read_aedat31, read_gesture_labels
from ..events.readers.nmnist import read_nmnist_bin
from ..events.types import EVENT_DTYPE
from .base import resolve_data_root
from .download import download_file

Transform = Callable[[np.ndarray], Any]
TargetTransform = Callable[[int], Any]
JointTransform = Callable[[Any, Any], tuple[Any, Any]]

# Official sources. N-MNIST: Orchard et al.'s Mendeley Data record 468j46mzdv (the archives
# linked from https://www.garrickorchard.com/datasets/n-mnist; md5 as listed by Tonic and
# SpikingJelly). CIFAR10-DVS: figshare article 4724671, one zip per class (md5 as listed by
# SpikingJelly).
NMNIST_PAGE = "https://www.garrickorchard.com/datasets/n-mnist"
_MENDELEY = "https://data.mendeley.com/public-files/datasets/468j46mzdv/files/"
NMNIST_RESOURCES = {
    "Train": (_MENDELEY + "39c25547-014b-4137-a934-9d29fa53c7a0/file_downloaded", "20959b8e626244a1b502305a9e6e2031"),
    "Test": (_MENDELEY + "05a4d654-7e03-4c15-bdfa-9bb2bcbea494/file_downloaded", "69ca8762b2fe404d9b9bad1103e97832"),
}
DVSGESTURE_PAGE = "https://research.ibm.com/interactive/dvsgesture/"
DVSGESTURE_BOX = "https://ibm.ent.box.com/s/3hiq58ww1pbbjrinh367ykfdf60xsfm8/folder/50167556794"
CIFAR10DVS_PAGE = "https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671"
CIFAR10DVS_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10DVS_RESOURCES = {
    "airplane": ("https://ndownloader.figshare.com/files/7712788", "0afd5c4bf9ae06af762a77b180354fdd"),
    "automobile": ("https://ndownloader.figshare.com/files/7712791", "8438dfeba3bc970c94962d995b1b9bdd"),
    "bird": ("https://ndownloader.figshare.com/files/7712794", "a9c207c91c55b9dc2002dc21c684d785"),
    "cat": ("https://ndownloader.figshare.com/files/7712812", "52c63c677c2b15fa5146a8daf4d56687"),
    "deer": ("https://ndownloader.figshare.com/files/7712815", "b6bf21f6c04d21ba4e23fc3e36c8a4a3"),
    "dog": ("https://ndownloader.figshare.com/files/7712818", "f379ebdf6703d16e0a690782e62639c3"),
    "frog": ("https://ndownloader.figshare.com/files/7712842", "cad6ed91214b1c7388a5f6ee56d08803"),
    "horse": ("https://ndownloader.figshare.com/files/7712851", "e7cbbf77bec584ffbf913f00e682782a"),
    "ship": ("https://ndownloader.figshare.com/files/7712836", "41c7bd7d6b251be82557c6cce9a7d5c9"),
    "truck": ("https://ndownloader.figshare.com/files/7712839", "89f3922fd147d9aeff89e76a2b0b70a7"),
}


# --------------------------------------------------------------------------- archives


def _safe_members(names: Sequence[str], archive: Path) -> None:
    """Refuse archives whose member paths would land outside the extraction folder."""
    for name in names:
        parts = Path(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
            raise DataFormatError(archive, f"archive member {name!r} points outside the extraction folder")


def _unpack(archive: Path, into: Path) -> None:
    """Extract a .zip or .tar(.gz) archive into ``into``."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                _safe_members(z.namelist(), archive)
                z.extractall(into)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                _safe_members([m.name for m in members], archive)
                regular = [m for m in members if m.isfile() or m.isdir()]
                if hasattr(tarfile, "data_filter"):  # Python >= 3.12 (and patched 3.8-3.11)
                    tf.extractall(into, members=regular, filter="data")
                else:
                    tf.extractall(into, members=regular)
                # Read the compressed stream to its end: gzip checks its CRC only there, and tar
                # stops before it, so a corrupt .tar.gz could otherwise extract garbage silently.
                while tf.fileobj is not None and tf.fileobj.read(1 << 20):
                    pass
        else:
            raise DataFormatError(archive, "neither a zip nor a tar archive")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, NotImplementedError) as e:
        # zlib.error: a corrupt deflate stream in a zip member or a .tar.gz; LZMAError: .tar.xz;
        # NotImplementedError: a zip member packed with a compression method Python lacks
        raise DataFormatError(archive, f"corrupt archive: {type(e).__name__}: {e}") from None
    except OSError as e:
        # gzip.BadGzipFile and bz2's "Invalid data stream" are OSErrors without an errno; an errno
        # (disk full, permission denied) is a problem of the file system, not of the archive
        if isinstance(e, gzip.BadGzipFile) or e.errno is None:
            raise DataFormatError(archive, f"corrupt archive: {type(e).__name__}: {e}") from None
        raise


def _extract_atomically(archive: Path, target: Path, is_payload: Callable[[Path], bool]) -> Path:
    """Extract ``archive`` and move the folder it holds onto ``target`` in one rename.

    ``is_payload(folder)`` recognises the folder to keep: the archive's top-level folder or,
    for archives without one, the extraction folder itself. If another process finished
    first, its result is kept.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.extract-", dir=target.parent))
    try:
        _unpack(archive, tmp)
        candidates = [tmp] + sorted(p for p in tmp.rglob("*") if p.is_dir() and "__MACOSX" not in p.parts)
        payload = next((p for p in candidates if is_payload(p)), None)
        if payload is None:
            raise DataFormatError(archive, f"archive does not contain the expected layout for {target.name}")
        try:
            os.rename(payload, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _download(url: str, dest: Path, md5: str) -> Path:
    return download_file([url], dest, md5=md5)


# --------------------------------------------------------------------------- base class


class EventDataset(Sequence):
    """A list of samples ``(path, label)`` read on demand, in Tonic's dataset protocol.

    ``ds[i]`` is ``(events, target)``; ``transform(events)``, ``target_transform(target)`` and
    ``transforms(events, target)`` are applied in that order when given, as Tonic's datasets
    do (see the module docstring). ``sensor_size`` is ``(width, height, 2)``.
    """

    classes: tuple[str, ...] = ()
    sensor_size: tuple[int, int, int] = (0, 0, 2)
    #: the events' dtype and field order, the class attributes Tonic's datasets carry
    dtype: np.dtype = EVENT_DTYPE
    ordering: tuple[str, ...] = cast("tuple[str, ...]", EVENT_DTYPE.names)  # ("x", "y", "t", "p")

    def __init__(
        self,
        samples: list[tuple[Path, int]],
        transform: Transform | None = None,
        target_transform: TargetTransform | None = None,
        transforms: JointTransform | None = None,
    ) -> None:
        self.samples = samples
        self.transform = transform
        self.target_transform = target_transform
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def targets(self) -> list[int]:
        """The label of every sample, in order (without reading any event file)."""
        return [label for _, label in self.samples]

    def _read(self, index: int) -> np.ndarray:
        """The events of sample ``index`` (``0 <= index < len(self)``), untransformed."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[Any, Any]:  # type: ignore[override]
        """``(events, target)``, both through the transforms given (plain: an
        :data:`~fewstep.events.types.EVENT_DTYPE` array and an ``int``)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        index %= len(self)
        events: Any = self._read(index)
        target: Any = self.samples[index][1]
        if self.transform is not None:
            events = self.transform(events)
        if self.target_transform is not None:
            target = self.target_transform(target)
        if self.transforms is not None:
            events, target = self.transforms(events, target)
        return events, target

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} samples, sensor_size={self.sensor_size})"


def collate_events(batch: Sequence[tuple[np.ndarray, Any]]) -> tuple[PackedEvents, torch.Tensor]:
    """``collate_fn`` for a ``DataLoader`` over raw event samples ``(events, target)``: the
    streams packed as ``(events, offsets)`` (:func:`fewstep.events.compression.pack_events`; stream ``b``
    is ``events[offsets[b]:offsets[b + 1]]``), which :func:`~fewstep.events.compression.stc_batch` turns
    into time-major currents ``[T, B, 2, H', W']`` in one call, and the targets as a tensor.
    Streams of any lengths batch together; a module-level function, so worker processes started
    by ``spawn`` can unpickle it."""
    streams = [events for events, _ in batch]
    targets = torch.as_tensor(np.asarray([target for _, target in batch]))
    return pack_events(streams), targets


# --------------------------------------------------------------------------- N-MNIST


def _is_digit_folder(p: Path) -> bool:
    return p.is_dir() and any(c.is_dir() and c.name.isdigit() and len(c.name) == 1 for c in p.iterdir())


class NMNIST(EventDataset):
    """N-MNIST (Orchard et al. 2015): 60,000 + 10,000 saccade recordings of MNIST digits,
    34x34 ATIS events, labels from the ``<digit>`` folder names.

    Args:
        root: data root (default ``$FEWSTEP_DATA``).
        train: the ``Train`` split, else ``Test``.
        download: fetch the official ``Train.zip`` / ``Test.zip`` (md5-checked) when absent.
        transform: optional ``f(events) -> data`` (Tonic's convention, e.g.
            ``tonic.transforms.Compose([...])`` or ``STC(NMNIST.sensor_size, timesteps)``).
        target_transform: optional ``f(target) -> target``.
        transforms: optional ``f(data, target) -> (data, target)``, applied last.
    """

    classes = tuple(str(d) for d in range(10))
    sensor_size = (34, 34, 2)
    FOLDERS = ("nmnist", "nmnist-small", "NMNIST", "N-MNIST")

    def __init__(
        self,
        root: str | Path | None = None,
        train: bool = True,
        download: bool = False,
        transform: Transform | None = None,
        target_transform: TargetTransform | None = None,
        transforms: JointTransform | None = None,
    ) -> None:
        base = resolve_data_root(root)
        split = "Train" if train else "Test"
        folder = self._locate(base, split, download)
        samples = [
            (f, int(d.name))
            for d in sorted(folder.iterdir())
            if d.is_dir() and d.name.isdigit() and len(d.name) == 1
            for f in sorted(d.glob("*.bin"))
        ]
        if not samples:
            raise DatasetNotFoundError(f"N-MNIST {split} folder {folder} has no <digit>/*.bin files")
        super().__init__(samples, transform, target_transform, transforms)
        self.root = folder

    @classmethod
    def _locate(cls, base: Path, split: str, download: bool) -> Path:
        dirs = [base / name for name in cls.FOLDERS] + [base]
        for d in dirs:
            for name in (split, split.lower()):
                if (d / name).is_dir():
                    return d / name
        for d in dirs:
            for name in (f"{split}.zip", f"{split.lower()}.zip", f"nmnist_{split.lower()}.zip"):
                if (d / name).is_file():
                    return _extract_atomically(d / name, d / split, _is_digit_folder)
        if download:
            url, md5 = NMNIST_RESOURCES[split]
            archive = _download(url, base / "nmnist" / f"{split}.zip", md5)
            return _extract_atomically(archive, base / "nmnist" / split, _is_digit_folder)
        raise DatasetNotFoundError(
            f"N-MNIST {split} split not found under {base}. Put the official {split}.zip in {base / 'nmnist'} "
            f"(or extract it to {base / 'nmnist' / split}/<digit>/*.bin), or pass download=True. "
            f"Source: {NMNIST_PAGE} ({NMNIST_RESOURCES[split][0]}, md5 {NMNIST_RESOURCES[split][1]})"
        )

    def _read(self, index: int) -> np.ndarray:
        return read_nmnist_bin(self.samples[index][0], self.sensor_size[:2])[0]


# --------------------------------------------------------------------------- DVS128 Gesture


def _is_gesture_folder(p: Path) -> bool:
    return (p / "trials_to_train.txt").is_file() and (p / "trials_to_test.txt").is_file()


class DVSGesture(EventDataset):
    """DVS128 Gesture (Amir et al. 2017): 11 gestures by 29 subjects under 5 lightings, 128x128.

    Each labelled gesture of each recording listed in ``trials_to_train.txt`` /
    ``trials_to_test.txt`` is one sample: the recording's events with
    ``startTime_usec <= t < endTime_usec`` (timestamps as recorded), label 0..10
    (:data:`~fewstep.events.readers.aedat31.GESTURE_CLASSES`). The last recording read is
    cached, as consecutive samples come from the same file.

    Args:
        root: data root (default ``$FEWSTEP_DATA``).
        train: the recordings of ``trials_to_train.txt``, else ``trials_to_test.txt``.
        download: refused with a hint (the official archive sits behind a browser-only page).
        transform, target_transform, transforms: as for :class:`NMNIST` (Tonic's convention).
    """

    classes = GESTURE_CLASSES
    sensor_size = (128, 128, 2)
    FOLDERS = ("DvsGesture", "dvsgesture/DvsGesture", "DVSGesture/DvsGesture", "dvs-gesture/DvsGesture")

    def __init__(
        self,
        root: str | Path | None = None,
        train: bool = True,
        download: bool = False,
        transform: Transform | None = None,
        target_transform: TargetTransform | None = None,
        transforms: JointTransform | None = None,
    ) -> None:
        base = resolve_data_root(root)
        folder = self._locate(base, download)
        trials_file = folder / ("trials_to_train.txt" if train else "trials_to_test.txt")
        names = [line.strip() for line in trials_file.read_text().splitlines() if line.strip()]
        samples: list[tuple[Path, int]] = []
        self.segments: list[tuple[int, int]] = []
        for name in names:
            aedat = folder / name
            labels_csv = folder / (Path(name).stem + "_labels.csv")
            missing = [p for p in (aedat, labels_csv) if not p.is_file()]
            if missing:
                raise DatasetNotFoundError(
                    f"DVS128 Gesture: {missing[0]} (listed in {trials_file.name}) is missing; "
                    f"re-extract DvsGesture.tar.gz from {DVSGESTURE_PAGE}"
                )
            for row in read_gesture_labels(labels_csv):
                samples.append((aedat, int(row["label"])))
                self.segments.append((int(row["start"]), int(row["end"])))
        super().__init__(samples, transform, target_transform, transforms)
        self.root = folder
        self._cache: tuple[Path, np.ndarray] | None = None

    @classmethod
    def _locate(cls, base: Path, download: bool) -> Path:
        for name in cls.FOLDERS:
            if _is_gesture_folder(base / name):
                return base / name
        if _is_gesture_folder(base):
            return base
        for archive in (base / "DvsGesture.tar.gz", base / "DvsGesture.tgz", base / "DvsGesture.tar"):
            if archive.is_file():
                return _extract_atomically(archive, base / "DvsGesture", _is_gesture_folder)
        hint = " (download=True cannot fetch it: the IBM Box page needs a browser)" if download else ""
        raise DatasetNotFoundError(
            f"DVS128 Gesture not found under {base}{hint}. Download DvsGesture.tar.gz from {DVSGESTURE_PAGE} "
            f"({DVSGESTURE_BOX}) and put it in {base} (extracted on first use), or extract it so that "
            f"{base / 'DvsGesture'} holds trials_to_train.txt, trials_to_test.txt and the userXX_*.aedat files"
        )

    def _read(self, index: int) -> np.ndarray:
        path = self.samples[index][0]
        if self._cache is None or self._cache[0] != path:
            events, _ = read_aedat31(path, self.sensor_size[:2])
            order = np.argsort(events["t"], kind="stable")
            self._cache = (path, events[order])
        events = self._cache[1]
        start, end = self.segments[index]
        lo, hi = np.searchsorted(events["t"], [start, end], side="left")
        return events[lo:hi].copy()


# --------------------------------------------------------------------------- CIFAR10-DVS


_CIFAR_INDEX = re.compile(r"_(\d+)\.aedat4?$")


def _cifar_index(p: Path) -> tuple[int, str]:
    m = _CIFAR_INDEX.search(p.name)
    return (int(m.group(1)) if m else 1 << 62, p.name)


class CIFAR10DVS(EventDataset):
    """CIFAR10-DVS (Li et al. 2017): 10,000 DVS128 recordings of moving CIFAR-10 images,
    1,000 per class, as jAER AEDAT 2.0 files (Tonic's AEDAT 4 conversion, ``.aedat4``, is read
    too).

    The dataset has no official split. ``split="train"`` / ``"test"`` makes a deterministic
    one per class: files sorted by their number ``n``, the first ``test_fraction`` of each
    class (``n`` = 0..99 for 10 %) are the test set, the rest the training set. That is the
    split SpikingJelly's ``CIFAR10DVSTEBNSplit`` uses (from the TEBN paper); note it gives
    higher accuracies than a random split.

    Args:
        root: data root (default ``$FEWSTEP_DATA``).
        split: ``"all"``, ``"train"`` or ``"test"``.
        test_fraction: share of each class held out for ``"test"``.
        orientation: pixel layout for the AEDAT 2.0 files, ``"jaer"`` or ``"spikingjelly"``
            (see :mod:`fewstep.events.readers.aedat2`).
        download: fetch the official per-class zips (md5-checked) when absent.
        transform, target_transform, transforms: as for :class:`NMNIST` (Tonic's convention).
    """

    classes = CIFAR10DVS_CLASSES
    sensor_size = (128, 128, 2)
    FOLDERS = ("CIFAR10DVS", "cifar10-dvs", "CIFAR10-DVS", "cifar10dvs")

    def __init__(
        self,
        root: str | Path | None = None,
        split: str = "all",
        test_fraction: float = 0.1,
        orientation: str = "jaer",
        download: bool = False,
        transform: Transform | None = None,
        target_transform: TargetTransform | None = None,
        transforms: JointTransform | None = None,
    ) -> None:
        if split not in ("all", "train", "test"):
            raise ValueError(f"split must be 'all', 'train' or 'test', not {split!r}")
        if not 0.0 <= test_fraction < 1.0:
            raise ValueError(f"test_fraction must lie in [0, 1), got {test_fraction}")
        if orientation not in ("jaer", "spikingjelly"):
            raise ValueError(f"orientation must be 'jaer' or 'spikingjelly', not {orientation!r}")
        base = resolve_data_root(root)
        folder = self._locate(base, download)
        samples: list[tuple[Path, int]] = []
        for label, cls in enumerate(self.classes):
            files = sorted(
                (p for p in (folder / cls).iterdir() if p.suffix in (".aedat", ".aedat4")), key=_cifar_index
            )
            n_test = int(round(len(files) * test_fraction))
            chosen = files if split == "all" else files[:n_test] if split == "test" else files[n_test:]
            samples += [(p, label) for p in chosen]
        super().__init__(samples, transform, target_transform, transforms)
        self.root, self.split, self.orientation = folder, split, orientation

    @classmethod
    def _locate(cls, base: Path, download: bool) -> Path:
        dirs = [base / name for name in cls.FOLDERS]
        for d in dirs:
            if all((d / c).is_dir() for c in cls.classes):
                return d
        # per-class zips: complete what is missing in the first folder that has any of them
        for d in dirs:
            zips = {c: d / f"{c}.zip" for c in cls.classes}
            if any(z.is_file() or (d / c).is_dir() for c, z in zips.items()):
                missing = [c for c in cls.classes if not (d / c).is_dir() and not zips[c].is_file()]
                if missing and not download:
                    raise DatasetNotFoundError(
                        f"CIFAR10-DVS in {d} lacks the classes {', '.join(missing)} (neither <class>/ nor "
                        f"<class>.zip); add their official zips from {CIFAR10DVS_PAGE} or pass download=True"
                    )
                for c in cls.classes:
                    if (d / c).is_dir():
                        continue
                    if not zips[c].is_file():
                        url, md5 = CIFAR10DVS_RESOURCES[c]
                        _download(url, zips[c], md5)
                    _extract_atomically(zips[c], d / c, functools.partial(_has_class_files, cls=c))
                return d
        if download:
            d = base / cls.FOLDERS[0]
            for c in cls.classes:
                url, md5 = CIFAR10DVS_RESOURCES[c]
                _extract_atomically(_download(url, d / f"{c}.zip", md5), d / c,
                                    functools.partial(_has_class_files, cls=c))
            return d
        raise DatasetNotFoundError(
            f"CIFAR10-DVS not found under {base}: expected {base / cls.FOLDERS[0]}/<class>/cifar10_<class>_<n>.aedat "
            f"for the classes {', '.join(cls.classes)}, or the official per-class zips (airplane.zip, ...) in "
            f"{base / cls.FOLDERS[0]}; pass download=True to fetch them. Source: {CIFAR10DVS_PAGE}"
        )

    def _read(self, index: int) -> np.ndarray:
        path = self.samples[index][0]
        if path.suffix == ".aedat4":
            return read_aedat4(path)[0]
        return read_aedat2(path, orientation=self.orientation)[0]  # type: ignore[arg-type]


def _has_class_files(p: Path, cls: str) -> bool:
    return any(p.glob(f"cifar10_{cls}_*.aedat")) or any(p.glob(f"cifar10_{cls}_*.aedat4"))


__all__ = ["CIFAR10DVS", "DVSGesture", "EventDataset", "NMNIST", "collate_events"]
