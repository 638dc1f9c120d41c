"""The DNN side of a conversion: load a trained ``*_dnn`` checkpoint, feed calibration batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import islice
from pathlib import Path

import torch
from torch import nn

from ..config import Recipe
from ..data import ArrayDataset, DatasetSplits
from ..errors import CheckpointError
from ..models.dnn import CONVERTED_NAMES
from ..train.data_feed import DeviceFeed


def load_dnn(checkpoint: str | Path, device: str | None = "auto", data_root: str | Path | None = None,
             ) -> tuple[Recipe, nn.Module, DatasetSplits, torch.device]:
    """``(recipe, dnn, splits, device)`` of a trained ``*_dnn`` checkpoint, the DNN in eval mode."""
    from ..evaluate import load_trained

    recipe, model, splits, dev = load_trained(checkpoint, device, data_root)
    if recipe.model.name not in CONVERTED_NAMES or getattr(model, "spiking", True):
        raise CheckpointError(f"{checkpoint}: model {recipe.model.name!r} is not a convertible DNN; "
                              f"train one of {', '.join(sorted(CONVERTED_NAMES))} first")
    return recipe, model, splits, dev


def calibration_batches(ds: ArrayDataset, batch_size: int, num_batches: int, device: torch.device,
                        seed: int = 0) -> Callable[[], Iterable[torch.Tensor]]:
    """A replayable source of ``num_batches`` training inputs (a fixed random sample, normalised
    as in training, no augmentation): each call returns the same batches again."""
    if num_batches < 1 or batch_size < 1:
        raise ValueError(f"need num_batches >= 1 and batch_size >= 1, got {num_batches}, {batch_size}")
    feed = DeviceFeed(ds, batch_size, device, train=True, seed=seed)
    return lambda: (x for x, _ in islice(feed.epoch(0), num_batches))


def dnn_layer_names(model: nn.Module) -> list[str]:
    """Qualified names of the clipped-ReLU layers (the layers a conversion replaces)."""
    from .histograms import clipped_relus

    return [n for n, _ in clipped_relus(model)]
