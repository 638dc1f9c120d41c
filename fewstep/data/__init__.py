"""Datasets: one interface (:class:`ArrayDataset`) for the embedded digits, IDX, CIFAR and events."""

from .base import DATASETS, ArrayDataset, DatasetSplits, register_dataset, resolve_data_root
from .load import load_dataset

__all__ = ["DATASETS", "ArrayDataset", "DatasetSplits", "load_dataset", "register_dataset", "resolve_data_root"]
