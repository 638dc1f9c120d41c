"""fewstep's STC inside a Tonic pipeline, on a synthetic event stream (no dataset needed).

    python examples/tonic_interop.py

fewstep's events use Tonic's field names (x, y, t, p) and ``fewstep.events.STC`` is a
Tonic-style transform, so it composes with ``tonic.transforms.Compose``. Without Tonic installed
the script says so and exits 0.
"""

from __future__ import annotations

import sys

import numpy as np


def synthetic_stream(n: int = 20_000, size: int = 34, seed: int = 0) -> np.ndarray:
    """A bar sweeping left to right for 0.3 s: ON events at its leading edge, OFF at its trailing edge."""
    from fewstep.events import EVENT_DTYPE

    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, 300_000, n))
    pos = t / 300_000 * (size - 4)
    p = rng.integers(0, 2, n)
    x = np.clip(np.round(pos + np.where(p == 1, 3, 0) + rng.normal(0, 0.7, n)), 0, size - 1)
    ev = np.zeros(n, EVENT_DTYPE)
    ev["x"], ev["y"], ev["t"], ev["p"] = x, rng.integers(0, size, n), t, p
    noise = rng.random(n) < 0.02  # isolated noise events for Denoise to remove
    ev["x"][noise], ev["y"][noise] = rng.integers(0, size, noise.sum()), rng.integers(0, size, noise.sum())
    return ev


def main() -> int:
    try:
        import tonic
    except ImportError:
        print("tonic is not installed (pip install tonic); skipping the Tonic pipeline example.")
        return 0
    from fewstep.events import STC

    sensor = (34, 34, 2)  # Tonic's (W, H, P), the same as tonic.datasets.NMNIST.sensor_size
    events = synthetic_stream()
    transform = tonic.transforms.Compose([
        tonic.transforms.Denoise(filter_time=10_000),
        STC(sensor_size=sensor, timesteps=4),  # plain-sum STC: every event lands in one of 4 steps
    ])
    frames = transform(events)
    denoised = tonic.transforms.Denoise(filter_time=10_000)(events)
    print(f"{len(events)} events -> Denoise kept {len(denoised)} -> STC frames {frames.shape} {frames.dtype}")
    print(f"sum of the frames = {frames.sum():.0f} (every denoised event counted once)")
    assert frames.shape == (4, 2, 34, 34) and int(frames.sum()) == len(denoised)
    print("ON / OFF events per step:", [(int(f[1].sum()), int(f[0].sum())) for f in frames])

    # Tonic's own frames for comparison (ToFrame drops the events at the last timestamp)
    tonic_frames = tonic.transforms.ToFrame(sensor_size=sensor, n_time_bins=4)(denoised)
    print(f"Tonic ToFrame: {tonic_frames.shape}, sum {tonic_frames.sum()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
