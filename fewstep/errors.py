"""The library's own error types: every bad input is reported as one of these, naming the
file (and offset) or the config key at fault."""

from __future__ import annotations

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


class DatasetNotFoundError(FewstepError, FileNotFoundError):
    """The dataset files are absent and could not be downloaded."""


class DownloadError(FewstepError, OSError):
    """A download failed or its checksum did not match."""


class CheckpointError(FewstepError, ValueError):
    """A checkpoint is missing, corrupt, or unsafe to load."""


class RunExistsError(FewstepError, FileExistsError):
    """The output folder already holds a training run that a new run would overwrite; continue it
    (``--resume``) or replace it on purpose (``--overwrite``)."""
