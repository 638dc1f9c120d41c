"""Per-channel mean and std of uint8 images, the normalisation every image dataset reports."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["channel_stats"]


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact mean and std of each channel of ``images`` (uint8, ``[N, C, H, W]``) on the [0, 1]
    scale, rounded to 4 digits, from 256-bin histograms (no float copy of the images).

    A channel with no spread (or an empty set) gets std 1.0, so normalising by it never divides by
    zero; an empty set gets mean 0.0.
    """
    values = np.arange(256, dtype=np.float64) / 255.0
    pixels = torch.from_numpy(np.ascontiguousarray(images))
    means, stds = [], []
    for ch in range(images.shape[1]):
        hist = torch.bincount(pixels[:, ch].reshape(-1), minlength=256).numpy().astype(np.float64)
        n = max(hist.sum(), 1.0)
        mean = float((hist * values).sum() / n)
        means.append(round(mean, 4))
        stds.append(round(float(np.sqrt((hist * (values - mean) ** 2).sum() / n)), 4) or 1.0)
    return tuple(means), tuple(stds)
