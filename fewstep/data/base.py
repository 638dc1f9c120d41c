"""One interface for every dataset: tensors in memory, split into train and test.

Images are kept as ``uint8 [N, C, H, W]`` and normalised on the device by the training
engine (no host round trips); event data is kept as ``float [N, T, C, H, W]`` sequences
after spatio-temporal compression (``is_sequence = True``).

The dataset registry (:data:`DATASETS`, :func:`register_dataset`) lives here, and never imports
the dataset modules that register with it: :func:`fewstep.data.load_dataset` (in
:mod:`fewstep.data.load`) fills it from :mod:`fewstep.data.catalog` and loads a dataset by name.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import ConfigError
from ..registry import registrar


@dataclass
class ArrayDataset:
    """Samples as one tensor. ``inputs[i]`` is one sample, ``labels[i]`` its class."""

    inputs: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    is_sequence: bool = False
    mean: tuple[float, ...] | None = None  # per-channel, on the [0, 1] scale
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.inputs) != len(self.labels):
            raise ValueError(f"{len(self.inputs)} inputs but {len(self.labels)} labels")
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample without the time axis: ``(C, H, W)``."""
        shape = tuple(self.inputs.shape[1:])
        return shape[1:] if self.is_sequence else shape

    @property
    def timesteps(self) -> int | None:
        return int(self.inputs.shape[1]) if self.is_sequence else None

    def subset(self, n: int) -> ArrayDataset:
        """The first ``n`` samples (for smoke runs)."""
        return ArrayDataset(self.inputs[:n], self.labels[:n], self.classes, self.is_sequence, self.mean, self.std)


@dataclass
class DatasetSplits:
    name: str
    train: ArrayDataset
    test: ArrayDataset
    info: dict = field(default_factory=dict)
    val: ArrayDataset | None = None  # held out from the training data (see hold_out_validation)

    def hold_out_validation(self, size: int, seed: int = 0) -> None:
        """Move ``size`` training samples, chosen by a permutation seeded with ``seed``, into
        ``val``. The test split is untouched, so nothing chosen on ``val`` has seen it."""
        n = len(self.train)
        if not 0 < size < n:
            raise ConfigError("data.val_size", f"must be between 1 and {n - 1} (the training split has {n} "
                                               f"samples), got {size}")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
        val_idx, train_idx = order[:size].sort().values, order[size:].sort().values
        t = self.train
        self.val = ArrayDataset(t.inputs[val_idx], t.labels[val_idx], t.classes, t.is_sequence, t.mean, t.std)
        self.train = ArrayDataset(t.inputs[train_idx], t.labels[train_idx], t.classes, t.is_sequence, t.mean, t.std)

    @property
    def num_classes(self) -> int:
        return len(self.train.classes)


Loader = Callable[..., DatasetSplits]
DATASETS: dict[str, Loader] = {}


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    """Register ``fn(root: Path, download: bool, **options) -> DatasetSplits`` under ``name``."""
    return registrar(DATASETS, "dataset", name)


def resolve_data_root(root: str | Path | None = None) -> Path:
    """``root`` if given, else ``$FEWSTEP_DATA``, else ``~/.cache/fewstep/data``."""
    if root:
        return Path(root).expanduser()
    env = os.environ.get("FEWSTEP_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "fewstep" / "data"
