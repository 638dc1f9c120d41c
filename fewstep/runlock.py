"""One run at a time per output folder: an exclusive, non-blocking lock on ``<folder>/.lock``.

Two ``fewstep train`` runs started with the same ``--out`` would otherwise both pass the check for
an existing run, then interleave their epochs' ``last.pt``, ``report.json`` and plots (each file
whole, thanks to :mod:`fewstep.atomic`, but from different runs), and an ``--overwrite`` could
delete the other run's checkpoint. :func:`run_lock` makes the second run stop at once with a
:class:`RunLockedError` naming the folder and the PID of the run that holds it.

Where :mod:`fcntl` exists the lock is ``flock(LOCK_EX | LOCK_NB)`` on ``.lock``: the kernel drops
it when the holding process ends in any way (a crash, ``kill -9``), so a lock is never stale; the
file holds the holder's PID for the message and is removed on a clean release. Elsewhere (Windows),
or where the file system refuses ``flock``, ``.lock`` is created with ``O_CREAT | O_EXCL`` and
holds ``<pid> <token>``; a lock file whose process no longer runs is stale and taken over.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import FewstepError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "RunLock", "RunLockedError", "pid_alive", "run_lock"]

#: The lock file in a locked folder.
LOCK_NAME = ".lock"
#: An ``O_EXCL`` lock file still empty after this many seconds was left by a process that died
#: between creating it and writing its PID.
_EMPTY_GRACE_S = 5.0
_ATTEMPTS = 50


class RunLockedError(FewstepError):
    """Another running process holds the folder's lock (``pid`` is ``None`` when it cannot be read)."""

    def __init__(self, folder: str | Path, pid: int | None) -> None:
        self.folder, self.pid = Path(folder), pid
        holder = f"PID {pid}" if pid is not None else "PID unknown"
        super().__init__(f"{self.folder} is in use by another fewstep run ({holder}, lock file "
                         f"{self.folder / LOCK_NAME}); wait for it to finish, or choose another --out")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (when it cannot be told: yes)."""
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT there
        return _pid_alive_windows(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError, ValueError):
        return True  # exists but is not ours, or cannot tell: leave its file alone
    return True


def _pid_alive_windows(pid: int) -> bool:  # pragma: no cover - Windows only
    import ctypes

    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return kernel32.GetLastError() == 5  # ERROR_ACCESS_DENIED: it exists
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def _holder(text: str) -> int | None:
    first = text.split()[0] if text.split() else ""
    return int(first) if first.isascii() and first.isdigit() and len(first) <= 10 else None


class RunLock:
    """The lock on ``folder`` (created if missing, with its parents; on release those this lock
    created are removed again while empty, so a run refused before it wrote anything leaves no
    trace). ``use_flock=False`` forces the ``O_EXCL`` lock file."""

    def __init__(self, folder: str | Path, *, use_flock: bool | None = None) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.use_flock = fcntl is not None if use_flock is None else use_flock and fcntl is not None
        self._fd: int | None = None
        self._content = ""
        self._created: list[Path] = []  # folders this lock made, leaf first

    # ---------------------------------------------------------------- acquire / release
    def acquire(self) -> None:
        """Take the lock or raise :class:`RunLockedError` at once (never waits for the holder)."""
        if self._fd is not None or self._content:
            raise RuntimeError(f"{self.path}: already held by this RunLock")
        for _ in range(_ATTEMPTS):
            self._make_folder()
            done = self._try_flock() if self.use_flock else self._try_exclusive()
            if done:
                return
        raise FewstepError(f"{self.path}: could not take the lock (the file kept changing under it)")

    def release(self) -> None:
        """Remove the lock file (if still ours) and drop the lock; a no-op when not held."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()  # while still locked: a newcomer then finds no file, or a new one
            os.close(self._fd)  # drops the flock
            self._fd = None
        elif self._content:
            with contextlib.suppress(OSError):
                if self.path.read_text() == self._content:
                    self.path.unlink()
            self._content = ""
        for folder in self._created:  # leaf first; stops at the first that holds something
            try:
                folder.rmdir()
            except OSError:
                break
        self._created = []

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # ---------------------------------------------------------------- the two mechanisms
    def _make_folder(self) -> None:
        missing = [d for d in (self.folder, *self.folder.parents) if not d.exists()]
        try:
            self.folder.mkdir(parents=True)
            self._created += [d for d in missing if d not in self._created]  # leaf first
        except FileExistsError:
            if not self.folder.is_dir():
                raise FewstepError(f"{self.folder}: is a file, not a folder (--out names the folder a run "
                                   "writes into)") from None

    def _try_flock(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # the folder was removed meanwhile (a run that created it ended)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):  # no flock on this FS
                os.close(fd)
                self.use_flock = False
                return False
            pid = self._read_holder(fd)
            os.close(fd)
            raise RunLockedError(self.folder, pid) from None
        try:  # the holder may have removed the file (and a third run made a new one) before our flock
            same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    @staticmethod
    def _read_holder(fd: int) -> int | None:
        """The PID in a locked file; its holder writes it just after taking the lock, so wait a little."""
        for _ in range(20):
            try:
                text = os.pread(fd, 64, 0).decode("ascii", "replace")
            except OSError:
                return None
            pid = _holder(text)
            if pid is not None:
                return pid
            time.sleep(0.01)
        return None

    def _try_exclusive(self) -> bool:
        content = f"{os.getpid()} {secrets.token_hex(8)}\n"
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileNotFoundError:
            return False
        except FileExistsError:
            self._take_over_if_stale()
            return False
        try:
            os.write(fd, content.encode())
        finally:
            os.close(fd)
        self._content = content
        return True

    def _take_over_if_stale(self) -> None:
        """Remove a lock file whose process is gone; raise :class:`RunLockedError` if it runs."""
        try:
            text = self.path.read_text(encoding="ascii", errors="replace")
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return  # released meanwhile: try again
        pid = _holder(text)
        if pid is None:
            if not text and age < _EMPTY_GRACE_S:  # being created right now
                raise RunLockedError(self.folder, None)
        elif pid_alive(pid):
            raise RunLockedError(self.folder, pid)
        with contextlib.suppress(OSError):  # stale: remove it unless it changed meanwhile
            if self.path.read_text(encoding="ascii", errors="replace") == text:
                self.path.unlink()


@contextlib.contextmanager
def run_lock(folder: str | Path, *, use_flock: bool | None = None) -> Iterator[RunLock]:
    """Hold the lock on ``folder`` for the block (see :class:`RunLock`); raises
    :class:`RunLockedError` at once when another live process holds it."""
    lock = RunLock(folder, use_flock=use_flock)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()
