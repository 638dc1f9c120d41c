"""Event stream to T frames: fewstep's STC against Tonic's ``ToFrame``, on one CPU core.

Cases, all plain sums over equal time windows:

* N-MNIST-sized: the real sample ``$FEWSTEP_DATA/event-samples/sample_nmnist.bin`` (4,325 events,
  34x34) when present, else 4,000 random events over 0.3 s;
* Gesture-sized: 300,000 random events, 128x128, 6 s;
* a batch of 256 N-MNIST-sized streams: Tonic and ``stc`` one stream at a time against
  ``stc_batch`` on the whole batch on the CPU (and on CUDA when available).

fewstep is timed with each backend it has here: ``numba`` (the compiled pass of
:mod:`fewstep.events.compression_compiled`, when Numba is installed) and ``numpy``.

Each time is the best of several repeats after a warm-up, in process CPU time (see
:func:`best_of`). Both tools see the same events; the
table also reports the events each put into its frames (Tonic's ``n_time_bins`` windows are
``D // T`` us long and half-open, so it drops the events at the very end, the last one always).

Run: ``python benchmarks/bench_stc.py`` (``pip install tonic`` for the comparison).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # one core, before NumPy and torch start their thread pools

import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fewstep.events import compression_compiled, make_events
from fewstep.events.compression import pack_events, stc, stc_batch

try:
    import tonic
except ImportError:  # the comparison is optional
    tonic = None


def best_of(fn: Callable[[], object], budget_s: float = 1.0, min_repeats: int = 5, cuda: bool = False,
            min_sample_s: float = 0.005) -> float:
    """Best time of one call of ``fn`` over repeats filling about ``budget_s`` seconds, after a warm-up.

    Each sample times a loop of calls lasting at least ``min_sample_s`` and divides by the number
    of calls, so that calls of a few microseconds are not lost in the clock's granularity. CPU work
    is timed in this process's CPU time, so that time the scheduler gives to other processes on a
    shared machine does not count (wall time would favour short calls, which often run between
    two preemptions, over long ones, which never do); CUDA work in wall time, synchronised."""
    clock = time.perf_counter if cuda else time.process_time

    def sample(calls: int) -> float:
        start = clock()
        for _ in range(calls):
            fn()
        if cuda:
            torch.cuda.synchronize()
        return (clock() - start) / calls

    sample(1)
    calls = 1
    while (first := sample(calls)) * calls < min_sample_s:
        calls *= 2
    repeats = max(min_repeats, int(budget_s / max(first * calls, 1e-6)))
    return min([first] + [sample(calls) for _ in range(repeats)])


def random_stream(rng: np.random.Generator, n: int, width: int, height: int, duration_us: int) -> np.ndarray:
    return make_events(rng.integers(0, width, n), rng.integers(0, height, n),
                       np.sort(rng.integers(0, duration_us + 1, n)), rng.integers(0, 2, n))


def nmnist_stream(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    root = os.environ.get("FEWSTEP_DATA")
    candidates = ([Path(root)] if root else []) + [Path(__file__).resolve().parents[2] / "shared" / "data"]
    for base in candidates:
        path = base / "event-samples" / "sample_nmnist.bin"
        if path.exists():
            from fewstep.events.readers.nmnist import read_nmnist_bin

            return read_nmnist_bin(path)[0], "real sample"
    return random_stream(rng, 4_000, 34, 34, 300_000), "random"


def main() -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    nmnist, nmnist_kind = nmnist_stream(rng)
    gesture = random_stream(rng, 300_000, 128, 128, 6_000_000)
    backends = ["numba", "numpy"] if compression_compiled.available() else ["numpy"]
    print(f"CPU: {platform.processor() or platform.machine()}, NumPy {np.__version__}, torch {torch.__version__}, "
          f"Tonic {tonic.__version__ if tonic else 'not installed (comparison skipped)'}, "
          f"Numba {numba_version()}; one thread")
    print(f"N-MNIST-sized stream: {nmnist_kind}, {len(nmnist):,} events\n")

    header = (f"{'case':<40} {'events':>9} {'tonic ev/s':>12} "
              + " ".join(f"{'fewstep ' + b + ' ev/s':>18} {'ratio':>7}" for b in backends)
              + "   events in frames (fewstep / tonic)")
    print(header)
    print("-" * len(header))

    def row(case: str, n: int, t_tonic: float | None, t_ours: list[float], ours_total: float,
            tonic_total: float | None) -> None:
        tonic_rate = f"{n / t_tonic / 1e6:10.1f} M" if t_tonic else f"{'-':>12}"
        cells = []
        for t in t_ours:
            ratio = f"{t_tonic / t:6.1f}x" if t_tonic else f"{'-':>7}"
            cells.append(f"{n / t / 1e6:16.1f} M {ratio}")
        totals = f"{ours_total:,.0f} / {tonic_total:,.0f}" if tonic_total is not None else f"{ours_total:,.0f} / -"
        print(f"{case:<40} {n:>9,} {tonic_rate} {' '.join(cells)}   {totals}")

    for name, events, size in (("N-MNIST 34x34", nmnist, (34, 34)), ("Gesture 128x128, 6 s", gesture, (128, 128))):
        for T in (4, 2):
            ours = stc(events, size, T)
            t_ours = [best_of(lambda b=b: stc(events, size, T, backend=b)) for b in backends]
            t_tonic = tonic_total = None
            if tonic is not None:
                to_frame = tonic.transforms.ToFrame(sensor_size=(*size, 2), n_time_bins=T)
                tonic_total = float(to_frame(events).sum())
                t_tonic = best_of(lambda: to_frame(events))
            row(f"{name}, T={T}", len(events), t_tonic, t_ours, float(ours.sum()), tonic_total)

    # A batch of 256 random N-MNIST-sized streams.
    streams = [random_stream(rng, 4_000, 34, 34, 300_000) for _ in range(256)]
    n = sum(len(s) for s in streams)
    packed = pack_events(streams)
    t_tonic = tonic_total = None
    if tonic is not None:
        to_frame = tonic.transforms.ToFrame(sensor_size=(34, 34, 2), n_time_bins=4)
        tonic_total = float(sum(to_frame(s).sum() for s in streams))
        t_tonic = best_of(lambda: [to_frame(s) for s in streams])
    t_loop = [best_of(lambda b=b: [stc(s, (34, 34), 4, backend=b) for s in streams]) for b in backends]
    loop_total = float(sum(stc(s, (34, 34), 4).sum() for s in streams))
    row("256 x N-MNIST, T=4, stc per stream", n, t_tonic, t_loop, loop_total, tonic_total)
    t_batch = [best_of(lambda b=b: stc_batch(packed, (34, 34), 4, device="cpu", backend=b)) for b in backends]
    batch_total = float(stc_batch(packed, (34, 34), 4, device="cpu").sum())
    row("256 x N-MNIST, T=4, stc_batch cpu", n, t_tonic, t_batch, batch_total, tonic_total)
    if torch.cuda.is_available():
        t_cuda = best_of(lambda: stc_batch(packed, (34, 34), 4, device="cuda"), cuda=True)
        cuda_total = float(stc_batch(packed, (34, 34), 4, device="cuda").sum())
        row("256 x N-MNIST, T=4, stc_batch cuda", n, t_tonic, [t_cuda], cuda_total, tonic_total)
        print("(stc_batch on cuda is timed from a packed batch on the host to frames on the GPU, transfers included.)")
    print("\n(stc_batch on cpu with 'numpy' is the torch-ops path; 'numba' the compiled pass.)")


def numba_version() -> str:
    try:
        import numba
    except ImportError:
        return "not installed (NumPy path only)"
    return numba.__version__


if __name__ == "__main__":
    main()
