"""The embedded default dataset: the 1,797 8x8 handwritten digits that scikit-learn ships as
``load_digits`` (offline, no scikit-learn needed).

The images are the UCI "Optical Recognition of Handwritten Digits" test set (Alpaydin and Kaynak,
1998; CC BY 4.0), stored here byte for byte as scikit-learn distributes them: ``digits.npz`` holds
``images`` (uint8 [1797, 8, 8], values 0..16) and ``labels`` (uint8 [1797]). ``tests/test_digits_data.py``
checks it against scikit-learn's copy when scikit-learn is installed.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .base import ArrayDataset, DatasetSplits, register_dataset

DIGITS_FILE = "digits.npz"


@lru_cache(maxsize=1)
def embedded_digits() -> tuple[np.ndarray, np.ndarray]:
    """The packaged digits as ``(images uint8 [1797, 8, 8] in 0..16, labels uint8 [1797])``,
    read-only (cached: every caller shares the arrays)."""
    with resources.files(__package__).joinpath(DIGITS_FILE).open("rb") as f, np.load(f, allow_pickle=False) as z:
        images, labels = z["images"], z["labels"]
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


@register_dataset("digits")
def load_digits(root: Path | None = None, download: bool = True, test_fraction: float = 0.2, split_seed: int = 0) -> DatasetSplits:
    """8x8 digits scaled to uint8 [0, 255], split by a fixed stratified shuffle."""
    raw, target = embedded_digits()
    images = np.round(raw / 16.0 * 255.0).astype(np.uint8)[:, None]  # [N, 1, 8, 8]
    labels = target.astype(np.int64)
    rng = np.random.default_rng(split_seed)
    test_idx: list[int] = []
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        test_idx.extend(idx[: int(round(len(idx) * test_fraction))])
    test_mask = np.zeros(len(labels), bool)
    test_mask[test_idx] = True
    classes = [str(c) for c in range(10)]

    def make(mask: np.ndarray) -> ArrayDataset:
        return ArrayDataset(torch.from_numpy(images[mask]), torch.from_numpy(labels[mask]), classes,
                            mean=(0.3,), std=(0.4,))

    return DatasetSplits("digits", make(~test_mask), make(test_mask))
