"""Decoded-dataset caches as ``.npz`` files: read one back, write one in place of its older versions.

A cache is an optimisation, never a requirement: a cache that cannot be read (truncated, from
another version, not an npz) reads as ``None`` and is rebuilt, and one that cannot be written
(a read-only or full disk) is skipped. Files are written with :func:`fewstep.atomic.write_npz_atomic`,
so concurrent runs decoding the same folder never see half a cache.
"""

from __future__ import annotations

import zipfile
from collections.abc import Collection
from pathlib import Path

import numpy as np

from ..atomic import write_npz_atomic


def read_npz_cache(path: Path, required: Collection[str] = ()) -> dict[str, np.ndarray] | None:
    """The arrays of the cache at ``path`` (no pickles), or ``None`` if it is unreadable or lacks a
    ``required`` array."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError):
        return None
    return arrays if set(required) <= set(arrays) else None


def write_npz_cache(cache_dir: Path, name: str, arrays: dict[str, np.ndarray], prefix: str) -> Path | None:
    """Write ``arrays`` to ``cache_dir/name`` and drop the older caches sharing ``prefix`` (the
    same folder with the same options); ``None`` when the folder is not writable."""
    try:
        write_npz_atomic(cache_dir / name, **arrays)
    except OSError:
        return None
    for old in cache_dir.glob(prefix + "*.npz"):
        if old.name != name:
            old.unlink(missing_ok=True)
    return cache_dir / name
