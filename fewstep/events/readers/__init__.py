"""Readers (and small writers) for the event-camera file formats of the common datasets.

Every reader returns ``(events, sensor_size)``: a :data:`~fewstep.events.types.EVENT_DTYPE`
array sorted by ``t`` and ``(width, height)``, and raises :class:`~fewstep.errors.DataFormatError`
naming the file and byte offset when a file is truncated or malformed, and naming the file when it
cannot be read at all (missing, a directory, a symlink loop: then the error is also the ``OSError``,
e.g. ``FileNotFoundError``).

=====================  ===========================  =====================================
format                 reader                       datasets
=====================  ===========================  =====================================
N-MNIST ``.bin``       :func:`read_nmnist_bin`      N-MNIST, N-Caltech101
AEDAT 2.0 (jAER)       :func:`read_aedat2`          CIFAR10-DVS (DVS128)
AEDAT 3.1 (cAER)       :func:`read_aedat31`         DVS128 Gesture
AEDAT 4.0 (DV)         :func:`read_aedat4`          DVXplorer/DAVIS recordings, Tonic's
                                                    CIFAR10-DVS conversion
Prophesee ``.dat``     :func:`read_prophesee_dat`   N-CARS, Gen1 Automotive
=====================  ===========================  =====================================

:func:`read_events` picks the reader from the file's magic line, then its extension.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import DataFormatError, reading
from .aedat2 import read_aedat2, write_aedat2
from .aedat4 import read_aedat4, read_aedat4_header
from .aedat31 import (
    GESTURE_CLASSES,
    read_aedat31,
    read_gesture_labels,
    split_gesture_recording,
    write_aedat31,
)
from .nmnist import NMNIST_SENSOR_SIZE, read_nmnist_bin, write_nmnist_bin
from .prophesee_dat import read_prophesee_dat, write_prophesee_dat

__all__ = [
    "GESTURE_CLASSES",
    "read_aedat2",
    "read_aedat4",
    "read_aedat4_header",
    "read_aedat31",
    "read_events",
    "read_gesture_labels",
    "read_nmnist_bin",
    "read_prophesee_dat",
    "split_gesture_recording",
    "write_aedat2",
    "write_aedat31",
    "write_nmnist_bin",
    "write_prophesee_dat",
]


def read_events(path: str | Path) -> tuple[np.ndarray, tuple[int, int]]:
    """Read any supported event file with its format's default options.

    The format comes from the first bytes (``#!AER-DAT2.0``, ``#!AER-DAT3.x``,
    ``#!AER-DAT4.0``, a ``%`` header for Prophesee ``.dat``); headerless files go by extension
    (``.bin`` = N-MNIST records, sensor 34x34 unless the coordinates need more). Raises
    :class:`DataFormatError` when neither identifies it.
    """
    path = Path(path)
    with reading(path), open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"#!AER-DAT4."):
        return read_aedat4(path)
    if head.startswith(b"#!AER-DAT3."):
        return read_aedat31(path)
    if head.startswith(b"#!AER-DAT2."):
        return read_aedat2(path)
    if head.startswith(b"#!AER-DAT"):
        version = head.split(b"\n")[0].decode("latin-1", "replace").strip()
        raise DataFormatError(path, f"unsupported AEDAT version ({version!r}); supported: 2.0, 3.1, 4.0", 0)
    if head.startswith(b"%"):
        return read_prophesee_dat(path)
    if path.suffix.lower() == ".bin":
        events, size = read_nmnist_bin(path, sensor_size=None)
        # N-MNIST's 34x34 unless the coordinates need more (N-Caltech101 samples vary in size)
        if size[0] <= NMNIST_SENSOR_SIZE[0] and size[1] <= NMNIST_SENSOR_SIZE[1]:
            size = NMNIST_SENSOR_SIZE
        return events, size
    raise DataFormatError(
        path,
        "unknown event file format: no AEDAT magic line or '%' header, and not a .bin (N-MNIST) file",
        0,
    )
