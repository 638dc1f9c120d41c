"""Atomic file writes: the one way fewstep puts a file in place.

Every writer (checkpoints, reports, caches, compiled kernels, converted models) goes through
:func:`atomic_path`: the content is written to a uniquely named temporary file in the target's
folder, flushed and fsynced, given the permissions a plain ``open`` would (umask applied; a
temporary file from ``mkstemp`` is 0600), renamed over the target with ``os.replace`` (atomic on
one file system) and the folder is fsynced so the rename survives a power cut. A reader therefore
sees the old file or the new one, never half of one; concurrent writers each have their own
temporary file, so the last rename wins and nothing is interleaved; a failed write (a full disk, a
crash, Ctrl-C) removes its temporary file and leaves the old target untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["TEMP_MARK", "atomic_path", "write_atomic", "write_bytes_atomic", "write_json_atomic",
           "write_text_atomic", "write_npz_atomic", "fsync_dir"]

#: Part of every temporary file name, so stale ones left by a killed process can be recognised.
TEMP_MARK = ".tmp-"


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(dest: str | Path, *, mode: int = 0o666) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; when the block ends without an exception, put it in
    place as ``dest`` (fsynced, ``mode`` less the umask). On an exception it is removed and ``dest``
    keeps its old content. The block may write the path itself or let another program write it."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}{TEMP_MARK}{os.getpid()}-")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, mode & ~_umask())
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(dest: str | Path, write: Callable[[IO[bytes]], Any], *, mode: int = 0o666) -> Path:
    """Atomically write ``dest`` with ``write(binary_file)``; returns ``dest`` as a Path."""
    dest = Path(dest)
    with atomic_path(dest, mode=mode) as tmp, open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
    return dest


def write_bytes_atomic(dest: str | Path, data: bytes) -> Path:
    """Atomically write ``data`` to ``dest``."""
    return write_atomic(dest, lambda fh: fh.write(data))


def write_text_atomic(dest: str | Path, text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``dest``."""
    return write_bytes_atomic(dest, text.encode("utf-8"))


def write_json_atomic(data: Any, dest: str | Path) -> Path:
    """Atomically write ``data`` as indented JSON (with a final newline) to ``dest``."""
    return write_text_atomic(dest, json.dumps(data, indent=2) + "\n")


def write_npz_atomic(dest: str | Path, **arrays: Any) -> Path:
    """Atomically write NumPy ``arrays`` as an uncompressed ``.npz`` to ``dest``."""
    import numpy as np

    return write_atomic(dest, lambda fh: np.savez(fh, **arrays))
