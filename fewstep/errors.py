"""The library's own error types: every bad input is reported as one of these, naming the
file (and offset) or the config key at fault."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path


class FewstepError(Exception):
    """Base of every error fewstep raises on purpose."""


class ConfigError(FewstepError, ValueError):
    """A recipe or option is wrong: unknown key, wrong type or value out of range.

    ``source`` is the file the value came from ("config key 'k' in FILE: ..."); ``origin``, when
    given, names where it came from instead (e.g. ``--set train.epochs=0``), so that a bad
    command-line override is not blamed on the recipe file."""

    def __init__(self, key: str, problem: str, source: str | Path | None = None, *, origin: str | None = None) -> None:
        self.key, self.problem, self.source, self.origin = key, problem, source, origin
        where = f" (from {origin})" if origin else f" in {source}" if source else ""
        super().__init__(f"config key {key!r}{where}: {problem}")


class RecipeNotFoundError(ConfigError):
    """No shipped recipe has this name and no such recipe file exists (a :class:`ConfigError`
    for callers that catch those, but its message names the recipe, not a "config key")."""

    def __init__(self, name: str, problem: str) -> None:
        self.key, self.problem, self.source, self.origin = "recipe", problem, None, None
        FewstepError.__init__(self, problem)
        self.name = name


class DataFormatError(FewstepError, ValueError):
    """A data file is truncated or malformed."""

    def __init__(self, path: str | Path, problem: str, offset: int | None = None) -> None:
        self.path, self.problem, self.offset = Path(path), problem, offset
        at = f" at byte offset {offset}" if offset is not None else ""
        super().__init__(f"{path}{at}: {problem}")


class UnreadableFileError(DataFormatError, OSError):
    """A data file cannot be opened or read at all (a directory, a symlink loop, ...): a
    :class:`DataFormatError` naming the file that is also an ``OSError`` (``errno`` kept), so
    callers that catch the operating system's error keep working. See :func:`unreadable_file`."""

    __str__ = BaseException.__str__  # DataFormatError's one line, not OSError's "[Errno 2] ..."


class MissingFileError(UnreadableFileError, FileNotFoundError):
    """The data file does not exist (or is a dangling symlink)."""


class IsADirectoryFileError(UnreadableFileError, IsADirectoryError):
    """A directory where a data file is expected."""


class NoPermissionFileError(UnreadableFileError, PermissionError):
    """The data file may not be read."""


class NotADirectoryFileError(UnreadableFileError, NotADirectoryError):
    """A folder on the data file's path is a file."""


_UNREADABLE: list[tuple[type[OSError], type[UnreadableFileError]]] = [
    (FileNotFoundError, MissingFileError),
    (IsADirectoryError, IsADirectoryFileError),
    (PermissionError, NoPermissionFileError),
    (NotADirectoryError, NotADirectoryFileError),
]


def unreadable_file(path: str | Path, exc: OSError) -> UnreadableFileError:
    """The error for a data file that cannot be opened or read (missing, a directory, a symlink
    loop, no permission): one line naming the file and the operating system's reason."""
    cls = next((c for kind, c in _UNREADABLE if isinstance(exc, kind)), UnreadableFileError)
    err = cls(path, f"cannot read the file: {exc.strerror or exc}")
    err.errno, err.strerror = exc.errno, exc.strerror
    return err


@contextlib.contextmanager
def reading(path: str | Path) -> Iterator[None]:
    """Turn an ``OSError`` raised while opening or reading ``path`` into :func:`unreadable_file`'s
    error. Wrap only the file access: a decoder's own ``OSError`` (``gzip.BadGzipFile``) is not meant."""
    try:
        yield
    except FewstepError:
        raise
    except OSError as exc:
        raise unreadable_file(path, exc) from None


class DatasetNotFoundError(FewstepError, FileNotFoundError):
    """The dataset files are absent and could not be downloaded."""


class DownloadError(FewstepError, OSError):
    """A download failed or its checksum did not match."""


class CheckpointError(FewstepError, ValueError):
    """A checkpoint is missing, corrupt, or unsafe to load."""


class RunExistsError(FewstepError, FileExistsError):
    """The output folder already holds a training run that a new run would overwrite; continue it
    (``--resume``) or replace it on purpose (``--overwrite``)."""
