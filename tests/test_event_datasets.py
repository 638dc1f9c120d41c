"""Event datasets over their official layouts: the real N-MNIST subset in $FEWSTEP_DATA, and
small DVS128 Gesture / CIFAR10-DVS / N-MNIST trees (folders, zips, tar.gz) written here in
the real file formats."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from format_writers import gesture_labels_csv

from fewstep.data import event_datasets as datasets
from fewstep.data.event_datasets import CIFAR10DVS, NMNIST, DVSGesture
from fewstep.errors import DatasetNotFoundError
from fewstep.events.readers import write_aedat2, write_aedat31, write_nmnist_bin
from fewstep.events.types import EVENT_DTYPE, make_events


def _events(seed: int, n: int, size: int, t0: int = 0, t1: int = 100_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(t0, t1, n))
    return make_events(rng.integers(0, size, n), rng.integers(0, size, n), t, rng.integers(0, 2, n))


def _no_leftovers(folder: Path) -> None:
    assert not [p for p in folder.iterdir() if ".extract-" in p.name], "temporary extraction folder left behind"


# ----------------------------------------------------------------------------- N-MNIST


def test_nmnist_small_real_layout():
    root = os.environ.get("FEWSTEP_DATA")
    if not root or not (Path(root) / "nmnist-small" / "Train").is_dir():
        pytest.skip("$FEWSTEP_DATA/nmnist-small (real N-MNIST subset) is absent")
    train, test = NMNIST(root, train=True), NMNIST(root, train=False)
    assert len(train) == 900 and len(test) == 100
    for ds in (train, test):
        assert all(label == int(path.parent.name) for path, label in ds.samples)
    assert set(train.targets) == set(range(10))
    assert Counter(test.targets)[8] == 2  # the README's uneven test classes
    events, label = train[0]  # Tonic's (events, target)
    assert events.dtype == EVENT_DTYPE and train.sensor_size == (34, 34, 2) and label == 0
    assert 1000 < len(events) < 10_000 and events["x"].max() < 34 and np.all(np.diff(events["t"]) >= 0)
    events, label = test[-1]
    assert label == int(test.samples[-1][0].parent.name)


def _nmnist_zip(tmp_path: Path, split: str, top_folder: bool = True) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for digit in (3, 7):
            for k in range(2):
                f = tmp_path / "tmp.bin"
                write_nmnist_bin(f, _events(digit * 10 + k, 20, 34))
                prefix = f"{split}/" if top_folder else ""
                z.write(f, f"{prefix}{digit}/{k + 1:05d}.bin")
    return buf.getvalue()


@pytest.mark.parametrize("top_folder", [True, False])
def test_nmnist_from_official_zip(tmp_path, top_folder):
    root = tmp_path / "data"
    (root / "nmnist").mkdir(parents=True)
    (root / "nmnist" / "Test.zip").write_bytes(_nmnist_zip(tmp_path, "Test", top_folder))
    ds = NMNIST(root, train=False)
    assert len(ds) == 4 and ds.targets == [3, 3, 7, 7]
    assert (root / "nmnist" / "Test" / "7" / "00002.bin").is_file()
    _no_leftovers(root / "nmnist")
    (root / "nmnist" / "Test.zip").unlink()  # now served from the extracted folder
    events, label = NMNIST(root, train=False)[2]
    assert len(events) == 20 and label == 7


def test_nmnist_missing_names_the_place_and_source(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        NMNIST(tmp_path, train=True)
    msg = str(info.value)
    assert str(tmp_path / "nmnist") in msg and "Train.zip" in msg and "garrickorchard.com" in msg


def test_nmnist_download_hook(tmp_path, monkeypatch):
    # the hook goes through fewstep.data.download.download_file (md5-checked); a file:// URL
    # stands in for the official Mendeley archive
    archive = tmp_path / "served" / "Train.zip"
    archive.parent.mkdir()
    archive.write_bytes(_nmnist_zip(tmp_path, "Train"))
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.delenv("FEWSTEP_MIRROR", raising=False)
    monkeypatch.setitem(datasets.NMNIST_RESOURCES, "Train", (archive.as_uri(), md5))
    ds = NMNIST(tmp_path / "root", train=True, download=True)
    assert len(ds) == 4
    assert (tmp_path / "root" / "nmnist" / "Train.zip").is_file()


# ----------------------------------------------------------------------------- DVS128 Gesture


def _gesture_tree(folder: Path) -> dict[str, list[tuple[int, int, int]]]:
    """Three recordings (two train, one test), each with labelled gestures."""
    folder.mkdir(parents=True)
    labels = {
        "user01_fluorescent": [(1, 1_000, 21_000), (11, 30_000, 50_000)],
        "user02_led": [(5, 0, 10_000), (6, 10_000, 40_000), (2, 60_000, 90_000)],
        "user24_natural": [(10, 5_000, 15_000)],
    }
    for i, (name, rows) in enumerate(labels.items()):
        write_aedat31(folder / f"{name}.aedat", _events(i, 2000, 128), events_per_packet=300)
        (folder / f"{name}_labels.csv").write_text(gesture_labels_csv(rows))
    (folder / "trials_to_train.txt").write_text("user01_fluorescent.aedat\nuser02_led.aedat\n")
    (folder / "trials_to_test.txt").write_text("user24_natural.aedat\n")
    return labels


def test_dvsgesture_layout(tmp_path):
    labels = _gesture_tree(tmp_path / "DvsGesture")
    train, test = DVSGesture(tmp_path, train=True), DVSGesture(tmp_path, train=False)
    assert len(train) == 5 and len(test) == 1
    assert train.targets == [0, 10, 4, 5, 1] and test.targets == [9]
    events, label = train[3]  # user02 class 6: 10,000 <= t < 40,000
    assert train.sensor_size == (128, 128, 2) and label == 5
    assert len(events) > 0 and events["t"].min() >= 10_000 and events["t"].max() < 40_000
    whole = _events(1, 2000, 128)
    expected = whole[(whole["t"] >= 10_000) & (whole["t"] < 40_000)]
    assert events.tolist() == expected.tolist()
    assert [len(e) for e, _ in train] == [
        int(((r["t"] >= s) & (r["t"] < e)).sum())
        for i, rows in enumerate(list(labels.values())[:2])
        for r in [_events(i, 2000, 128)]
        for _, s, e in rows
    ]


def test_dvsgesture_from_tar_gz(tmp_path):
    _gesture_tree(tmp_path / "src" / "DvsGesture")
    root = tmp_path / "root"
    root.mkdir()
    with tarfile.open(root / "DvsGesture.tar.gz", "w:gz") as tf:
        tf.add(tmp_path / "src" / "DvsGesture", arcname="DvsGesture")
    assert len(DVSGesture(root, train=True)) == 5
    assert (root / "DvsGesture" / "trials_to_test.txt").is_file()
    _no_leftovers(root)


def test_dvsgesture_missing(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="research.ibm.com/interactive/dvsgesture"):
        DVSGesture(tmp_path)
    _gesture_tree(tmp_path / "DvsGesture")
    (tmp_path / "DvsGesture" / "user02_led_labels.csv").unlink()
    with pytest.raises(DatasetNotFoundError, match="user02_led_labels.csv"):
        DVSGesture(tmp_path, train=True)


# ----------------------------------------------------------------------------- CIFAR10-DVS


def _cifar_tree(folder: Path, per_class: int = 10) -> None:
    for c, cls in enumerate(datasets.CIFAR10DVS_CLASSES):
        (folder / cls).mkdir(parents=True)
        for n in range(per_class):
            write_aedat2(folder / cls / f"cifar10_{cls}_{n}.aedat", _events(c * 100 + n, 30, 128))


def test_cifar10dvs_layout_and_split(tmp_path):
    _cifar_tree(tmp_path / "CIFAR10DVS")
    full = CIFAR10DVS(tmp_path)
    train, test = CIFAR10DVS(tmp_path, split="train"), CIFAR10DVS(tmp_path, split="test")
    assert len(full) == 100 and len(train) == 90 and len(test) == 10
    assert Counter(test.targets) == {c: 1 for c in range(10)}
    assert all(p.name.endswith("_0.aedat") for p, _ in test.samples)  # n = 0 of each class
    assert not {p for p, _ in train.samples} & {p for p, _ in test.samples}
    # numeric (not lexicographic) order of n: 2 comes before 10
    idx = [int(p.stem.rsplit("_", 1)[1]) for p, label in full.samples if label == 0]
    assert idx == list(range(10))
    events, label = test[3]
    assert test.sensor_size == (128, 128, 2) and label == 3 and len(events) == 30
    assert events.tolist() == _events(300, 30, 128).tolist()
    sj = CIFAR10DVS(tmp_path, split="test", orientation="spikingjelly")[3][0]
    assert sj["x"].tolist() == (127 - events["y"]).tolist()  # transposed layout, same events
    with pytest.raises(ValueError):
        CIFAR10DVS(tmp_path, split="val")


def test_cifar10dvs_from_class_zips(tmp_path):
    _cifar_tree(tmp_path / "src", per_class=2)
    root = tmp_path / "root" / "CIFAR10DVS"
    root.mkdir(parents=True)
    for cls in datasets.CIFAR10DVS_CLASSES:
        with zipfile.ZipFile(root / f"{cls}.zip", "w") as z:
            for f in sorted((tmp_path / "src" / cls).iterdir()):
                z.write(f, f"{cls}/{f.name}")
    ds = CIFAR10DVS(tmp_path / "root")
    assert len(ds) == 20 and ds.targets == [c for c in range(10) for _ in range(2)]
    assert (root / "truck" / "cifar10_truck_1.aedat").is_file()
    _no_leftovers(root)


def test_cifar10dvs_missing(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="figshare.com"):
        CIFAR10DVS(tmp_path)
    (tmp_path / "CIFAR10DVS").mkdir()
    (tmp_path / "CIFAR10DVS" / "airplane.zip").write_bytes(b"")
    with pytest.raises(DatasetNotFoundError, match="automobile"):
        CIFAR10DVS(tmp_path)
