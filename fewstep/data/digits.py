"""The embedded default dataset: scikit-learn's 8x8 handwritten digits (offline, 1,797 images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .base import ArrayDataset, DatasetSplits, register_dataset


@register_dataset("digits")
def load_digits(root: Path | None = None, download: bool = True, test_fraction: float = 0.2, split_seed: int = 0) -> DatasetSplits:
    """8x8 digits scaled to uint8 [0, 255], split by a fixed stratified shuffle."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    images = np.round(d.images / 16.0 * 255.0).astype(np.uint8)[:, None]  # [N, 1, 8, 8]
    labels = d.target.astype(np.int64)
    rng = np.random.default_rng(split_seed)
    test_idx = []
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
