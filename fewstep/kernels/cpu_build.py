"""Build, cache and load fewstep's small C++ CPU kernels (``cpu_neuron.cpp``, ``cpu_ops.cpp``).

Each source is compiled on first use with the system compiler (``$CXX``, else ``c++``, ``g++``,
``clang++``) into a per-user cache (``$FEWSTEP_CACHE_DIR/kernels``, else
``$XDG_CACHE_HOME/fewstep/kernels``, else ``~/.cache/fewstep/kernels``; a temporary folder when
that one cannot be written) and loaded with :mod:`ctypes`. The file name holds a hash of the
source, the flags, the compiler's version and the CPU (``-march=native``), so a changed source,
compiler or machine gets its own build, never a stale one. Builds are written to a temporary
file and renamed into place, so a crash or two processes building at once never leave a torn
library.

The libraries are built with OpenMP and, in a process where PyTorch's OpenMP runtime is the
only one mapped, share PyTorch's thread pool (``torch.set_num_threads`` applies).
``FEWSTEP_CPU_PORTABLE=1`` builds without ``-march=native``.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from ..atomic import atomic_path

__all__ = ["CpuLibrary", "shares_torch_openmp"]

# -O2 with loop unswitching: the speed of -O3 on these loops at a quarter of its build time.
_BASE_FLAGS = ["-O2", "-funswitch-loops", "-ffp-contract=off", "-fno-math-errno", "-fPIC", "-shared", "-std=c++17"]


def _cache_dirs() -> list[Path]:
    env = os.environ.get("FEWSTEP_CACHE_DIR")
    if env:
        first = Path(env) / "kernels"
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        first = Path(base) / "fewstep" / "kernels"
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return [first, Path(tempfile.gettempdir()) / f"fewstep-kernels-{uid}"]


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def _cpu_signature() -> str:
    """What ``-march=native`` depends on: the CPU model and its feature flags."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    keep = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags", "Features", "CPU part"))]
    return "\n".join(sorted(set(keep)))


def _flag_sets() -> list[tuple[list[str], bool]]:
    """Compiler flag sets to try, best first, each with whether it builds the threaded variant."""
    archs = [[]] if os.environ.get("FEWSTEP_CPU_PORTABLE") == "1" else [["-march=native"], []]
    return ([(_BASE_FLAGS + a + ["-fopenmp"], True) for a in archs]
            + [(_BASE_FLAGS + a + ["-Wno-unknown-pragmas"], False) for a in archs])


def _compile(cxx: str, flags: list[str], source: Path, out: Path) -> str | None:
    """Compile ``source`` to ``out`` atomically; the compiler's error text, or None on success.
    Raises OSError when ``out``'s folder cannot be made or written."""
    try:
        with atomic_path(out, mode=0o777) as tmp:  # as the compiler itself would make it
            r = subprocess.run([cxx, *flags, str(source), "-o", str(tmp)], capture_output=True, text=True, timeout=600)
            if r.returncode != 0:
                raise _CompileFailed((r.stderr or r.stdout).strip()[-800:] or f"{cxx} exited with {r.returncode}")
    except _CompileFailed as exc:
        return str(exc)
    except subprocess.SubprocessError as exc:
        return repr(exc)
    return None


class _CompileFailed(Exception):
    """The compiler ran and refused the source (its error text is the message)."""


def shares_torch_openmp() -> bool:
    """Whether exactly one OpenMP runtime is mapped into this process (PyTorch's): a library built
    with OpenMP then uses PyTorch's pool. Elsewhere (no /proc, a second runtime) run one thread."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return False
    runtimes = {ln.split()[-1] for ln in maps.splitlines() if "libgomp" in ln or "libomp" in ln or "libiomp" in ln}
    return len(runtimes) == 1


class CpuLibrary:
    """One C++ source built per variant (a set of ``-D`` defines), loaded lazily and once.

    ``declare(lib, variant)`` sets the ctypes signatures; ``abi`` must equal what the library's
    ``<abi_symbol>()`` returns."""

    def __init__(self, source: Path, abi: int, abi_symbol: str, declare: Callable[[ctypes.CDLL, str], None],
                 defines: Callable[[str], list[str]] = lambda variant: []) -> None:
        self.source, self.abi, self.abi_symbol = source, abi, abi_symbol
        self._declare, self._defines = declare, defines
        self._libs: dict[str, ctypes.CDLL | None] = {}
        self._errors: dict[str, str] = {}
        self._threaded: dict[str, bool] = {}
        self._lock = threading.Lock()

    def load(self, variant: str) -> ctypes.CDLL | None:
        """The library for ``variant``, built on first use; None (see :meth:`error`) if it cannot be."""
        if variant in self._libs:
            return self._libs[variant]
        with self._lock:
            if variant not in self._libs:
                try:
                    self._libs[variant], self._threaded[variant] = self._build(variant)
                except Exception as exc:  # noqa: BLE001 - any failure means "use the fallback", with the reason
                    self._libs[variant], self._errors[variant] = None, str(exc) or repr(exc)
        return self._libs[variant]

    def loaded(self, variant: str) -> ctypes.CDLL:
        lib = self._libs.get(variant)
        assert lib is not None, f"{self.source.name} ({variant}) used before it was loaded"
        return lib

    def error(self, variant: str) -> str | None:
        return self._errors.get(variant)

    def threaded(self, variant: str) -> bool:
        return self._threaded.get(variant, False)

    def _build(self, variant: str) -> tuple[ctypes.CDLL, bool]:
        cxx = _compiler()
        if cxx is None:
            raise RuntimeError("no C++ compiler found (set $CXX, or install g++)")
        try:
            version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            raise RuntimeError(f"{cxx} --version failed: {exc!r}") from exc
        text = self.source.read_text()
        errors: list[str] = []
        for flags, threaded in _flag_sets():
            flags = flags + self._defines(variant)
            key = hashlib.sha256("\0".join([text, " ".join(flags), version, _cpu_signature(), sys.platform,
                                            str(self.abi)]).encode()).hexdigest()[:20]
            for folder in _cache_dirs():
                path = folder / f"{self.source.stem}-{variant}-{key}.so"
                if not path.exists():
                    try:
                        err = _compile(cxx, flags, self.source, path)
                    except OSError as exc:  # this cache folder is unusable: try the next one
                        errors.append(f"{folder}: {exc}")
                        continue
                    if err is not None:
                        errors.append(err)
                        break  # the same flags fail in any folder
                lib = ctypes.CDLL(str(path))
                if getattr(lib, self.abi_symbol)() != self.abi:
                    errors.append(f"{path}: stale build")
                    continue
                self._declare(lib, variant)
                return lib, threaded and shares_torch_openmp()
        raise RuntimeError(f"could not build {self.source.name}: " + " | ".join(errors)[-1200:])
