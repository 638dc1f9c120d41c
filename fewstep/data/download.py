"""Checksummed, resumable downloads with mirror fallback, using only the standard library.

Design:

* no "am I online?" probe: each URL is simply tried with a short socket timeout, so an
  air-gapped machine fails in milliseconds (DNS error) or ``timeout`` seconds at worst;
* bytes stream into ``<dest>.partial``; if a partial file exists the next attempt asks
  for the rest with an HTTP ``Range`` request and appends when the server answers
  ``206`` with a matching ``Content-Range``, otherwise it starts over;
* the file is renamed into place (``os.replace``, atomic on one file system) only after
  its md5 / sha256 match, so a file at ``dest`` is always complete and verified;
* mirrors are tried in order; ``$FEWSTEP_MIRROR`` (one or more base URLs, separated by
  spaces or commas) is tried first, so tests and air-gapped users can serve the files
  from their own HTTP server or a ``file://`` folder;
* when every URL fails, one :class:`~fewstep.errors.DownloadError` lists every reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import DatasetNotFoundError, DownloadError

__all__ = ["DEFAULT_TIMEOUT", "MIRROR_ENV", "download_file", "file_digest", "with_env_mirrors"]

log = logging.getLogger("fewstep.data")

MIRROR_ENV = "FEWSTEP_MIRROR"
DEFAULT_TIMEOUT = 10.0  # seconds per connect / per read: short, so offline machines fail fast
_CHUNK = 1 << 16
_USER_AGENT = "fewstep-downloader/0.1 (+urllib)"
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def file_digest(path: str | Path, algorithm: str = "md5") -> str:
    """Hex digest of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def with_env_mirrors(urls: Iterable[str], filename: str | None = None) -> list[str]:
    """``urls`` with ``$FEWSTEP_MIRROR/<filename>`` prepended for each base URL in the variable.

    ``filename`` defaults to the last path component of the first URL. Duplicates are dropped.
    """
    urls = list(urls)
    if filename is None and urls:
        filename = urllib.parse.unquote(urllib.parse.urlsplit(urls[0]).path.rsplit("/", 1)[-1])
    mirrors = [m for m in re.split(r"[\s,]+", os.environ.get(MIRROR_ENV, "")) if m]
    out: list[str] = []
    for base in mirrors:
        if filename:
            out.append(base.rstrip("/") + "/" + urllib.parse.quote(filename))
    for u in urls:
        if u not in out:
            out.append(u)
    return out


def _verify(path: Path, md5: str | None, sha256: str | None) -> str | None:
    """``None`` if the checksums match (or none are given), else the reason they do not."""
    for algo, want in (("md5", md5), ("sha256", sha256)):
        if want:
            got = file_digest(path, algo)
            if got.lower() != want.lower():
                return f"{algo} mismatch: expected {want.lower()}, got {got}"
    return None


class _Incomplete(Exception):
    """The transfer did not deliver the whole file; ``partial`` is kept for a resume unless ``restart``.

    ``complete``: the server answered 416 to our Range request, so the partial file may
    already hold every byte (verified by the caller).
    """

    def __init__(self, message: str, restart: bool = False, complete: bool = False) -> None:
        super().__init__(message)
        self.restart, self.complete = restart, complete


def _fetch_once(url: str, partial: Path, timeout: float,
                progress: Callable[[int, int | None], None] | None) -> None:
    """One request: append to ``partial`` (HTTP Range resume) or rewrite it from byte zero."""
    have = partial.stat().st_size if partial.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"})
    if have and urllib.parse.urlsplit(url).scheme in ("http", "https"):
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            e.close()
            raise _Incomplete("HTTP 416: the partial file may already be complete", complete=True) from None
        raise
    with resp:
        status = getattr(resp, "status", None) or 200
        total: int | None
        append = False
        if status == 206:
            m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if not (m and int(m.group(1)) == have):  # not the range we asked for: start over
                partial.unlink(missing_ok=True)
                raise _Incomplete(f"unexpected Content-Range {resp.headers.get('Content-Range')!r}", restart=True)
            append = True
            total = None if m.group(3) == "*" else int(m.group(3))
            log.info("resuming %s at byte %d", url, have)
        else:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if have:
                log.info("%s does not support Range requests; downloading from the start", url)
        done = have if append else 0
        with open(partial, "ab" if append else "wb") as out:
            while True:
                try:
                    block = resp.read(_CHUNK)
                except http.client.IncompleteRead as e:
                    out.write(e.partial)
                    done += len(e.partial)
                    raise _Incomplete(f"connection closed after {done} of {total} bytes") from None
                if not block:
                    break
                out.write(block)
                done += len(block)
                if progress:
                    progress(done, total)
        if total is not None and done < total:
            raise _Incomplete(f"connection closed after {done} of {total} bytes")


def download_file(urls: list[str] | str, dest: str | Path, md5: str | None = None, sha256: str | None = None,
                  timeout: float = DEFAULT_TIMEOUT, resume_attempts: int = 3,
                  progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Download ``dest`` from the first of ``urls`` that delivers it with the right checksum.

    ``$FEWSTEP_MIRROR`` base URLs are tried first (see :func:`with_env_mirrors`). An
    existing ``dest`` whose checksums match is returned as is (without a checksum, any
    existing ``dest`` is accepted). Each URL gets ``resume_attempts`` further tries while
    the server keeps closing the connection early and the partial file grows. Raises
    :class:`DownloadError` listing every URL and why it failed; a file that fails its
    checksum is deleted and never appears at ``dest``.
    """
    dest = Path(dest)
    if isinstance(urls, str):
        urls = [urls]
    if dest.exists():
        if _verify(dest, md5, sha256) is None:
            return dest
        log.warning("%s exists but fails its checksum; downloading it again", dest)
    urls = with_env_mirrors(urls, dest.name)
    if not urls:
        raise DownloadError(f"no URL to download {dest.name} from")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _dir_lock(dest.parent):
        if dest.exists() and _verify(dest, md5, sha256) is None:
            return dest  # another process (e.g. another DDP rank) finished it while we waited
        return _download_locked(urls, dest, md5, sha256, timeout, resume_attempts, progress)


def fetch_archive(url: str, archive: Path, md5: str, download: bool, timeout: float | None = None) -> str:
    """Download a dataset's missing ``archive`` from ``url`` when ``download`` is on.

    Returns ``""``, or why the download failed, worded as the tail of the dataset's "not found"
    message (it names ``$FEWSTEP_MIRROR``)."""
    if archive.is_file() or not download:
        return ""
    try:
        kw: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        download_file([url], archive, md5=md5, **kw)
    except (DownloadError, OSError) as e:
        return (f"\nDownloading it failed (set ${MIRROR_ENV} to a base URL serving {archive.name} to use your own "
                f"mirror):\n{e}")
    return ""


def extract_archive(dataset: str, archive: Path, root: Path, extract: Callable[[], Path]) -> Path:
    """``extract()`` (which unpacks ``archive`` under ``root`` and returns the folder), with a
    read-only ``root`` reported as :class:`~fewstep.errors.DatasetNotFoundError`."""
    try:
        return extract()
    except PermissionError as e:
        raise DatasetNotFoundError(f"{dataset}: cannot extract {archive} into {root}/ ({e}); extract it "
                                   "yourself or use a writable --data-root") from None


@contextlib.contextmanager
def _dir_lock(folder: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``folder`` (POSIX ``flock``), so that concurrent processes
    downloading into the same folder do not write the same ``.partial`` file at once.
    A no-op where ``flock`` is unavailable."""
    try:
        import fcntl
        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _download_locked(urls: list[str], dest: Path, md5: str | None, sha256: str | None, timeout: float,
                     resume_attempts: int, progress: Callable[[int, int | None], None] | None) -> Path:
    partial = dest.with_name(dest.name + ".partial")
    reasons: list[str] = []
    checksummed = bool(md5 or sha256)
    for url in urls:
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in ("http", "https", "file"):
            reasons.append(f"{url}: unsupported URL scheme {scheme!r}")
            continue
        if not checksummed:  # without a checksum, bytes from another source cannot be trusted
            partial.unlink(missing_ok=True)
        resumed_old = partial.exists() and partial.stat().st_size > 0
        attempts = 0
        while True:
            before = partial.stat().st_size if partial.exists() else 0
            try:
                _fetch_once(url, partial, timeout, progress)
            except _Incomplete as e:
                grew = (partial.stat().st_size if partial.exists() else 0) > before
                if not e.complete:
                    if attempts < resume_attempts and (grew or e.restart):
                        attempts += 1
                        log.info("%s: %s; retrying (%d/%d)", url, e, attempts, resume_attempts)
                        continue
                    reasons.append(f"{url}: {e}")
                    break
                # HTTP 416: fall through to the checksum test of what we have
            except urllib.error.HTTPError as e:
                reasons.append(f"{url}: HTTP {e.code} {e.reason}")
                e.close()
                break
            except urllib.error.URLError as e:
                reasons.append(f"{url}: {e.reason}")
                break
            except (OSError, http.client.HTTPException, ValueError) as e:
                # timeout, connection reset, malformed response: keep the partial file so a
                # later mirror (or a later run) can resume from it
                kind = "timed out" if isinstance(e, socket.timeout) else type(e).__name__
                reasons.append(f"{url}: {kind}: {e}")
                break
            problem = _verify(partial, md5, sha256)
            if problem is not None:
                partial.unlink(missing_ok=True)
                if resumed_old and attempts < resume_attempts:
                    # the stale partial file from an earlier run may be the culprit: retry cleanly
                    resumed_old = False
                    attempts += 1
                    continue
                reasons.append(f"{url}: {problem} (file discarded)")
                break
            os.replace(partial, dest)
            log.info("downloaded %s from %s", dest, url)
            return dest
    lines = "\n".join(f"  - {r}" for r in reasons)
    raise DownloadError(f"could not download {dest.name} to {dest.parent}; tried {len(urls)} URL(s):\n{lines}")
