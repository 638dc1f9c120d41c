"""The readers on the real datasets under ``$FEWSTEP_DATA`` (skipped when that folder is not there).

Run with ``FEWSTEP_DATA=/path/to/shared/data``. The expected raw md5s are those of the
official uncompressed IDX files (the ``.gz`` wrappers of shared copies may be re-made).
"""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from fewstep.data import load_dataset

DATA = Path(os.environ["FEWSTEP_DATA"]).expanduser() if os.environ.get("FEWSTEP_DATA") else None

RAW_MD5 = {
    "mnist": {"train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
              "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
              "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
              "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637"},
    "fashion-mnist": {"train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
                      "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
                      "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
                      "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965"},
}


def need(folder: str) -> Path:
    if DATA is None:
        pytest.skip("FEWSTEP_DATA is not set: real-data tests need the shared data folder")
    path = DATA / folder
    if not path.is_dir():
        pytest.skip(f"{path} is absent: real-data test skipped")
    return path


def _raw(path_no_gz: Path) -> bytes:
    gz = path_no_gz.with_name(path_no_gz.name + ".gz")
    return gzip.decompress(gz.read_bytes()) if gz.exists() else path_no_gz.read_bytes()


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_datasets(name: str) -> None:
    folder = need(name)
    ds = load_dataset(name, DATA, download=False)
    assert ds.train.inputs.shape == (60000, 1, 28, 28) and ds.test.inputs.shape == (10000, 1, 28, 28)
    assert str(ds.train.inputs.dtype) == "torch.uint8" and str(ds.train.labels.dtype) == "torch.int64"
    assert ds.num_classes == 10
    assert np.bincount(ds.test.labels.numpy(), minlength=10).min() >= 800
    if name == "fashion-mnist":
        assert ds.train.classes[:2] == ["T-shirt/top", "Trouser"] and ds.train.classes[-1] == "Ankle boot"
    # the decompressed bytes are the official files, and the loader returns exactly their contents
    for stem, md5 in RAW_MD5[name].items():
        raw = _raw(folder / stem)
        assert hashlib.md5(raw).hexdigest() == md5, stem
        split = ds.train if stem.startswith("train") else ds.test
        header = 16 if "images" in stem else 8
        loaded = split.inputs.numpy() if "images" in stem else split.labels.numpy().astype(np.uint8)
        assert loaded.tobytes() == raw[header:], stem
    hist = np.bincount(ds.train.inputs.numpy().reshape(-1), minlength=256)  # exact stats, no float copy
    v = np.arange(256) / 255.0
    mean = (hist * v).sum() / hist.sum()
    std = np.sqrt((hist * (v - mean) ** 2).sum() / hist.sum())
    assert abs(mean - ds.train.mean[0]) < 1e-3 and abs(std - ds.train.std[0]) < 1e-3


def test_cifar10_jpeg_subset(tmp_path: Path) -> None:
    from PIL import Image

    folder = need("cifar10-jpeg")
    ds = load_dataset("cifar10-jpeg", DATA, download=False, limit=20, cache_dir=tmp_path)
    classes = sorted(p.name for p in (folder / "train").iterdir() if p.is_dir())
    assert ds.train.classes == classes and len(classes) == 10
    assert ds.train.inputs.shape == (20, 3, 32, 32) and ds.test.inputs.shape == (20, 3, 32, 32)
    assert str(ds.train.inputs.dtype) == "torch.uint8"
    assert ds.train.labels.tolist() == list(range(10)) * 2  # round-robin over classes
    assert ds.info["from_cache"] is False and ds.info["lossy_jpeg_copy"] is True
    # pixel-exact against a direct Pillow decode of the first training image of class 0
    first = sorted((folder / "train" / classes[0]).iterdir())[0]
    with Image.open(first) as im:
        ref = np.asarray(im.convert("RGB")).transpose(2, 0, 1)
    np.testing.assert_array_equal(ds.train.inputs[0].numpy(), ref)
    again = load_dataset("cifar10-jpeg", DATA, download=False, limit=20, cache_dir=tmp_path)
    assert again.info["from_cache"] is True
    np.testing.assert_array_equal(again.train.inputs.numpy(), ds.train.inputs.numpy())
    assert again.test.labels.tolist() == ds.test.labels.tolist()
