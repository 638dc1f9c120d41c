"""Checkpoints that survive crashes and load without executing code.

``save_checkpoint`` writes to a temporary file in the same directory, fsyncs it, keeps the
previous good checkpoint as ``<name>.prev`` and renames the new one into place, so a crash at
any moment leaves a complete checkpoint on disk; so does a full disk, which is raised as
:class:`~fewstep.atomic.DiskFullError` naming the checkpoint. ``load_checkpoint`` uses
``torch.load(weights_only=True)``: a file carrying pickled Python objects is refused.
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..atomic import fsync_dir, raise_if_no_space
from ..errors import CheckpointError
from ..runlock import pid_alive


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Delete ``.<name>.tmp-<pid>`` files next to ``path`` left by saves that crashed (killed mid-write).

    A temporary file of a process that still runs (another save in progress) is left alone; the
    current process's own leftovers are always stale (its saves run one at a time). Returns the
    files removed.
    """
    path = Path(path)
    prefix = f".{path.name}.tmp-"
    removed: list[Path] = []
    try:
        candidates = [p for p in path.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return removed
    for p in candidates:
        pid_text = p.name[len(prefix):]
        if not (pid_text.isascii() and pid_text.isdigit() and len(pid_text) <= 10):
            continue  # not a name save_checkpoint writes
        pid = int(pid_text)
        if pid != os.getpid() and pid_alive(pid):
            continue
        try:
            if p.is_file() and not p.is_symlink():
                p.unlink()
                removed.append(p)
        except OSError:  # gone meanwhile, or not ours to delete: never fail a save for it
            pass
    return removed


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Atomically write ``state`` (tensors, numbers, strings, lists and dicts only) to ``path``.

    Temporary files of earlier saves that were killed mid-write (``.<name>.tmp-<pid>``) are removed
    once the new checkpoint is in place.

    A full disk (or quota, or file-size limit) raises :class:`~fewstep.atomic.DiskFullError`
    naming ``path``; the temporary file is removed and ``path`` (and ``.prev``) are untouched, so
    the previous checkpoint can still be resumed from once there is room again.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())  # delayed allocation: a full disk may show only now
        if path.exists():
            os.replace(path, path.with_name(path.name + ".prev"))
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except Exception as exc:  # torch.save reports a failed write as a RuntimeError; find the OSError
        raise_if_no_space(exc, path)
        raise
    finally:
        if tmp.exists():
            tmp.unlink()
    remove_stale_temps(path)
    return path


#: How the files ``torch.load`` reads begin: a zip archive (``torch.save`` since PyTorch 1.6), a
#: pickle of protocol 2 or later (the legacy format, ``_use_new_zipfile_serialization=False``,
#: which fewstep refuses).
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = b"\x80"


def _head(path: Path, size: int = 512) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the checkpoint: {exc.strerror or exc}") from None


def _not_a_checkpoint(path: Path, head: bytes) -> str | None:
    """Why ``path`` (which begins with ``head``) is no PyTorch checkpoint, or ``None`` if it may be one.

    Checked before ``torch.load``, whose unpickler turns text and random bytes into ``KeyError``,
    ``IndexError`` or an "Unsupported operand" message that says the file would run code."""
    if not head:
        return "an empty file, not a PyTorch checkpoint"
    if head.startswith(_ZIP_MAGIC):
        return None
    if head.startswith(_PICKLE_PROTO) or head[257:262] == b"ustar":  # tar: PyTorch < 0.4
        # The legacy formats store each tensor's size in a field that torch.load trusts: a flipped
        # bit there asks for gigabytes before any check (found by benchmarks/fuzz_readers.py).
        return ("a legacy (pre-1.6) PyTorch file: fewstep reads only the zip format torch.save writes since "
                "PyTorch 1.6 (load it with torch.load and save it again with torch.save)")
    return _text_or_bytes(head)


def _text_or_bytes(head: bytes) -> str:
    """Why a file beginning with ``head``, neither zip nor pickle, is no checkpoint."""
    try:
        text: str | None = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = head[:exc.start].decode("utf-8") if exc.start >= len(head) - 3 else None  # a cut multi-byte char
    if text is not None and "\x00" not in text:
        first = text.strip().splitlines()[0] if text.strip() else ""
        first = first if len(first) <= 40 else first[:40] + "..."
        return f"a text file, not a PyTorch checkpoint (it begins {first!r})"
    return f"not a PyTorch checkpoint (neither a zip archive nor a pickle; it begins with bytes {head[:8].hex(' ')})"


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _unpickling_problem(path: Path, exc: pickle.UnpicklingError) -> str:
    """One line for a refused unpickling: PyTorch's message spans lines, suggests ``weights_only=False``
    and asks for an issue report; only its own diagnosis (``WeightsUnpickler error: ...``) is kept."""
    text = str(exc)
    detail = text.split("WeightsUnpickler error:", 1)[-1].split("Check the documentation of torch.load", 1)[0]
    detail = _one_line(detail)
    if "Unsupported global" in detail:  # a class or function the file would import and call
        detail = detail.split(". ", 1)[0]
        return (f"{path}: refused to load: it holds Python objects that would run code on loading ({detail}); "
                "only tensors, numbers, strings, lists and dicts are allowed")
    return f"{path}: corrupt or not a PyTorch checkpoint (unpickling failed: {detail or 'no detail'})"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely; falls back to ``<path>.prev`` only when asked via :func:`latest_good`.

    Every failure is a one-line :class:`CheckpointError` naming the file: missing, not a PyTorch
    file at all (text, random bytes), refused (pickled code), corrupt or truncated, or not a dict."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: a directory, not a checkpoint file (a run's checkpoint is <run>/last.pt)")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    problem = _not_a_checkpoint(path, _head(path))
    if problem is not None:
        raise CheckpointError(f"{path}: {problem}")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says it all
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(_unpickling_problem(path, exc)) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        detail = _one_line(str(exc)) or type(exc).__name__
        raise CheckpointError(f"{path}: corrupt, truncated or not a PyTorch checkpoint: {detail}") from None
    except Exception as exc:  # noqa: BLE001  (the unpickler fails on malformed bytes in many ways)
        raise CheckpointError(f"{path}: corrupt or not a PyTorch checkpoint ({type(exc).__name__}: "
                              f"{_one_line(str(exc))})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict of state, got {type(state).__name__}")
    return state


def latest_good(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], Path] | None:
    """Load ``path``, or its ``.prev`` copy if ``path`` is corrupt; ``None`` if neither exists."""
    path = Path(path)
    errors = []
    for candidate in (path, path.with_name(path.name + ".prev")):
        if candidate.exists():
            try:
                return load_checkpoint(candidate, map_location), candidate
            except CheckpointError as exc:
                errors.append(str(exc))
    if errors:
        raise CheckpointError("; ".join(errors))
    return None
