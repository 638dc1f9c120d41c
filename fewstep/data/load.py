"""Load a registered dataset by name, after :mod:`fewstep.data.catalog` has filled the registry."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .base import DATASETS, DatasetSplits, resolve_data_root


def load_dataset(name: str, root: str | Path | None = None, download: bool = True, **options) -> DatasetSplits:
    """Load a registered dataset by name (see :data:`DATASETS`)."""
    from . import catalog  # noqa: F401  (registers the built-in datasets)

    if name not in DATASETS:
        raise ConfigError("data.dataset", f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](resolve_data_root(root), download, **options)
