"""Atomic file writes: the one way fewstep puts a file in place.

Every writer (checkpoints, reports, caches, compiled kernels, converted models) goes through
:func:`atomic_path`: the content is written to a uniquely named temporary file in the target's
folder, flushed and fsynced, given the permissions a plain ``open`` would (umask applied; a
temporary file from ``mkstemp`` is 0600), renamed over the target with ``os.replace`` (atomic on
one file system) and the folder is fsynced so the rename survives a power cut. A reader therefore
sees the old file or the new one, never half of one; concurrent writers each have their own
temporary file, so the last rename wins and nothing is interleaved; a failed write (a full disk, a
crash, Ctrl-C) removes its temporary file and leaves the old target untouched.

A write that fails for want of room (``ENOSPC``: the disk is full; ``EDQUOT``: a quota;
``EFBIG``: a file-size limit) is raised as :class:`DiskFullError`, an ``OSError`` (the same
``errno``) and a :class:`~fewstep.errors.FewstepError` whose one-line message names the target,
so ``fewstep train`` can say what happened and how to resume instead of printing a traceback.
:func:`no_space_cause` finds such an error wherever it sits in an exception's chain: ``torch.save``
reports a failed write as a ``RuntimeError`` from its zip writer, with the ``OSError`` as context.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from .errors import FewstepError

__all__ = ["TEMP_MARK", "NO_SPACE_ERRNOS", "DiskFullError", "no_space_cause", "raise_if_no_space", "atomic_path", "write_atomic", "write_bytes_atomic", "write_json_atomic",
           "write_text_atomic", "write_npz_atomic", "fsync_dir"]

#: Part of every temporary file name, so stale ones left by a killed process can be recognised.
TEMP_MARK = ".tmp-"

#: The ``errno`` values of a write that found no room: a full disk, a full quota, a file larger
#: than the file system or ``ulimit -f`` allows.
NO_SPACE_ERRNOS = frozenset(
    code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EFBIG) if code is not None)


class DiskFullError(FewstepError, OSError):
    """Writing ``path`` failed for want of room (``errno`` of ``cause``: ENOSPC, EDQUOT or EFBIG).

    The temporary file is gone and the previous ``path``, if any, is untouched."""

    def __init__(self, path: str | Path, cause: OSError) -> None:
        OSError.__init__(self, cause.errno, cause.strerror or os.strerror(cause.errno or 0), str(path))
        self.path, self.cause = Path(path), cause

    def __str__(self) -> str:
        name = errno.errorcode.get(self.errno or 0, "")
        return f"{self.path}: no space left to write it ({self.strerror}{', ' + name if name else ''})"


def no_space_cause(exc: BaseException) -> OSError | None:
    """The ``OSError`` meaning "no room" (see :data:`NO_SPACE_ERRNOS`) that ``exc`` is or that
    caused it (followed through ``__cause__`` and ``__context__``), else ``None``."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in NO_SPACE_ERRNOS:
            return e
        todo += [e.__cause__, e.__context__]
    return None


def raise_if_no_space(exc: BaseException, path: str | Path) -> None:
    """Raise :class:`DiskFullError` for ``path`` (from ``exc``) if ``exc`` comes from a full disk."""
    if isinstance(exc, DiskFullError):
        return
    cause = no_space_cause(exc)
    if cause is not None:
        raise DiskFullError(path, cause) from exc


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
    keeps its old content. The block may write the path itself or let another program write it.
    A failure for want of room, in the block or while putting the file in place, is raised as
    :class:`DiskFullError` naming ``dest``."""
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}{TEMP_MARK}{os.getpid()}-")
    except OSError as exc:  # no room even for an empty file (no free inode)
        raise_if_no_space(exc, dest)
        raise
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())  # delayed allocation: a full disk may show only now
        os.chmod(tmp, mode & ~_umask())
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except Exception as exc:
        raise_if_no_space(exc, dest)
        raise
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
