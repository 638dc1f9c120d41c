"""Process-wide CPU settings for training runs: threads and the C allocator.

Why the allocator: PyTorch's CPU tensors come from ``malloc``. glibc hands blocks above a
threshold to ``mmap`` and returns freed memory at the top of the heap to the system, so the large
activations of a training step are faulted in page by page again at every step. On the virtual
machines this project measures, that cost 20-30 % of a spiking CNN's training step
(``benchmarks/bench_cpu.py`` applies the same setting to every system it compares). Keeping freed
memory in the process removes it; the price is that the process's resident memory stays at its
peak, which a training run reaches anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["tune_allocator"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_KEEP = 1 << 30  # 1 GiB: larger blocks still go to mmap
_tuned: bool | None = None


def tune_allocator() -> bool:
    """Tell glibc's malloc to keep freed memory for reuse (no mmap or trim below 1 GiB).

    Does nothing (returns False) off Linux/glibc or when ``FEWSTEP_MALLOC=default``; safe to call
    more than once. Returns whether the setting is in effect."""
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    if os.environ.get("FEWSTEP_MALLOC", "").strip().lower() == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _tuned = bool(mallopt(_M_MMAP_THRESHOLD, _KEEP)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP))
    return _tuned
