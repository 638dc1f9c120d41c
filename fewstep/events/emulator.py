r"""A DVS emulator that turns static images into N-MNIST-style event streams.

N-MNIST (Orchard et al., 2015) was recorded by showing each MNIST digit on a monitor to an ATIS
event camera that a pan-tilt unit moved through three quick saccades, about 100 ms each, whose
path closes a triangle; the 28x28 digit lands in a 34x34 sensor window. This module does the
same in software:

1. **Motion.** The image sits centred in the sensor (zero, i.e. black, around it) and is
   translated along a closed path through ``saccade_vertices``, one straight saccade per side,
   each taking an equal share of ``duration_us`` with a minimum-jerk profile (at rest at the
   turning points, fastest midway, as the real recordings' event rate shows). The default
   triangle, offsets ``(dx, dy)`` in pixels (x right, y down) from the centred position,
   ``(-2, -1.5) -> (-0.5, 3) -> (2.5, -1.5) -> back``, i.e. down, up-right, then left, was read
   off the real N-MNIST recordings (the mean event centroid over time of 900 samples); the
   paper describes the saccades, not these numbers.
2. **Rendering.** At ``sample_rate_hz`` sample times the sensor's view is rendered at the
   sub-pixel position by bilinear interpolation.
3. **Pixels.** Each pixel keeps the log intensity ``log(I + log_eps)`` at which it last fired
   (its reference level, initialised from the first frame). Each time the log intensity has
   risen by the ON threshold (fallen by the OFF threshold) above (below) the reference, the pixel
   emits an ON (OFF) event and moves its reference by one threshold; several crossings between
   two frames give several events, timestamped by linear interpolation of the log intensity
   between the frames (floored to whole microseconds). Thresholds vary from pixel to pixel:
   ``N(C, threshold_noise_std)``, clipped at 0.01, drawn once per recording. An event closer
   than ``refractory_us`` to the previous *emitted* event of the same pixel is dropped (the
   reference still moves: the change is lost, as in a pixel held in reset).

Everything is vectorised over pixels and over a batch of images (they all follow the same path);
the only Python loop is over sample times. Pixels whose view never changes along the path (the
black surround of an MNIST digit) are found up front and skipped. The emulator has no noise
events (no shot noise, no leak events) and no optical blur: emulated streams are cleaner than
real N-MNIST recordings.

The defaults (``contrast_threshold=0.35``, ``log_eps=0.1``, 1 ms refractory period) were tuned
on the 900 MNIST training digits whose real recordings are in ``shared/data/nmnist-small``:
emulated, 4,088 events per digit on average (10th to 90th percentile 2,669 to 5,149); real,
4,125 (2,628 to 5,621); the per-digit counts correlate at 0.82, and the event rate over time
follows the real one's three bumps.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from ..atomic import write_npz_atomic
from ..errors import ConfigError
from .compression import concat_events, unpack_events
from .types import EVENT_DTYPE

Seed = int | Sequence[int]

__all__ = ["EmulatorParams", "emulate_dataset", "saccade_events", "to_luminance"]

_CACHE_FORMAT = 1  # bump when the emulator's output for the same parameters changes
# Image offsets (dx, dy) in pixels at the saccades' turning points, read off real N-MNIST: the mean
# event centroid, per 10 ms, of the 900 training recordings in shared/data/nmnist-small.
N_MNIST_SACCADES: tuple[tuple[float, float], ...] = ((-2.0, -1.5), (-0.5, 3.0), (2.5, -1.5))
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601


@dataclass(frozen=True)
class EmulatorParams:
    """Everything that shapes an emulated recording (see the module docstring)."""

    sensor_size: tuple[int, int] | None = None  # (width, height); None: image + 6 px (28 -> 34)
    saccade_vertices: tuple[tuple[float, float], ...] = N_MNIST_SACCADES
    duration_us: int = 300_000
    sample_rate_hz: float = 1000.0
    contrast_threshold: float | tuple[float, float] = 0.35  # log units; a pair is (ON, OFF)
    threshold_noise_std: float = 0.03
    refractory_us: int = 1000
    log_eps: float = 0.1

    def __post_init__(self) -> None:
        # Normalise sequences to tuples: the parameters are hashed into cache keys.
        object.__setattr__(self, "saccade_vertices", tuple(tuple(float(c) for c in v) for v in self.saccade_vertices))
        if self.sensor_size is not None:
            object.__setattr__(self, "sensor_size", tuple(int(s) for s in self.sensor_size))
        if not np.isscalar(self.contrast_threshold):
            object.__setattr__(self, "contrast_threshold",
                               tuple(float(c) for c in cast("Sequence[float]", self.contrast_threshold)))
        on, off = self.thresholds
        if min(on, off) <= 0:
            raise ConfigError("contrast_threshold", f"must be > 0, got {self.contrast_threshold!r}")
        if self.duration_us < len(self.saccade_vertices):
            raise ConfigError("duration_us", f"must give each saccade >= 1 us, got {self.duration_us!r}")
        if self.sample_rate_hz <= 0:
            raise ConfigError("sample_rate_hz", f"must be > 0, got {self.sample_rate_hz!r}")
        if self.threshold_noise_std < 0 or self.refractory_us < 0:
            raise ConfigError("threshold_noise_std/refractory_us", "must be >= 0")
        if len(self.saccade_vertices) < 2 or any(len(v) != 2 for v in self.saccade_vertices):
            raise ConfigError("saccade_vertices", f"expected >= 2 (dx, dy) pairs, got {self.saccade_vertices!r}")
        if self.log_eps <= 0:
            raise ConfigError("log_eps", f"must be > 0, got {self.log_eps!r}")
        if self.sensor_size is not None and (len(self.sensor_size) != 2 or min(self.sensor_size) < 1):
            raise ConfigError("sensor_size", f"expected (width, height), got {self.sensor_size!r}")

    @property
    def thresholds(self) -> tuple[float, float]:
        c: Any = self.contrast_threshold  # a number (Python or NumPy scalar) or an (ON, OFF) pair
        on, off = (c, c) if np.isscalar(c) else tuple(c)
        return float(on), float(off)

    def sensor_for(self, height: int, width: int) -> tuple[int, int]:
        """``(width, height)`` of the sensor for an image of ``height x width``."""
        # __post_init__ checked that sensor_size holds two ints
        return cast("tuple[int, int]", tuple(self.sensor_size)) if self.sensor_size is not None else (width + 6, height + 6)

    def num_samples(self) -> int:
        """Frames rendered after the first one: a multiple of the number of saccades, so the
        turning points are sample times."""
        legs = len(self.saccade_vertices)
        return legs * max(1, int(round(self.duration_us * 1e-6 * self.sample_rate_hz / legs)))


def to_luminance(images: np.ndarray) -> np.ndarray:
    """``[N, H, W]`` or ``[N, C, H, W]`` (C = 1 or 3), uint8 or float in [0, 1] -> float64
    ``[N, H, W]`` in [0, 1]; RGB becomes BT.601 luma."""
    a = np.asarray(images)
    scale = 255.0 if a.dtype == np.uint8 else 1.0
    if a.ndim == 4:
        if a.shape[1] == 3:
            a = np.tensordot(_LUMA, a.astype(np.float64), axes=([0], [1]))
        elif a.shape[1] == 1:
            a = a[:, 0]
        else:
            raise ValueError(f"expected 1 or 3 channels, got shape {a.shape}")
    if a.ndim != 3:
        raise ValueError(f"expected images [N, H, W] or [N, C, H, W], got shape {a.shape}")
    lum = a.astype(np.float64) / scale
    if lum.size and (lum.min() < 0.0 or lum.max() > 1.0):
        raise ValueError(f"float images must lie in [0, 1]; these span [{lum.min()}, {lum.max()}]")
    return lum


def _path(params: EmulatorParams, times_us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Offsets ``(dx, dy)`` in pixels of the image from its centred position at ``times_us``:
    straight saccades between the vertices, each with a minimum-jerk profile."""
    v = np.asarray(params.saccade_vertices, np.float64)
    v = np.concatenate([v, v[:1]])  # close the triangle
    legs = len(v) - 1
    phase = np.clip(np.asarray(times_us, np.float64) / params.duration_us * legs, 0.0, legs)
    leg = np.minimum(phase.astype(np.int64), legs - 1)
    tau = phase - leg
    progress = tau ** 3 * (10.0 - 15.0 * tau + 6.0 * tau ** 2)  # minimum jerk: at rest at both ends
    start, end = v[leg], v[leg + 1]
    offset = start + (end - start) * progress[:, None]
    return offset[:, 0], offset[:, 1]


def _seed_of(seed: Seed) -> np.random.Generator:
    return np.random.default_rng(list(seed) if isinstance(seed, (tuple, list)) else seed)


def _pixel_thresholds(seeds: Sequence[Seed], params: EmulatorParams, pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """ON and OFF thresholds ``[B, pixels]`` (float32), ``N(C, threshold_noise_std)`` clipped at
    0.01, drawn for the whole sensor from each image's own seed, so that a stream does not depend
    on the batch it was computed in."""
    on_c, off_c = params.thresholds
    c_on = np.empty((len(seeds), pixels), np.float32)
    c_off = np.empty((len(seeds), pixels), np.float32)
    for i, seed in enumerate(seeds):
        rng = _seed_of(seed)
        c_on[i] = np.maximum(rng.normal(on_c, params.threshold_noise_std, pixels), 0.01)
        c_off[i] = np.maximum(rng.normal(off_c, params.threshold_noise_std, pixels), 0.01)
    return c_on, c_off


def _emulate_batch(images: np.ndarray, seeds: Sequence[Seed], params: EmulatorParams) -> tuple[np.ndarray, np.ndarray]:
    """The emulator proper: float images ``[B, H, W]`` in [0, 1], one seed each -> packed
    events ``(events, offsets)``. Each image's stream depends only on it and its seed."""
    B, H, W = images.shape
    Ws, Hs = params.sensor_for(H, W)
    K = params.num_samples()
    times = np.linspace(0.0, params.duration_us, K + 1)
    dx, dy = _path(params, times)
    sx, sy = dx + (Ws - W) / 2.0, dy + (Hs - H) / 2.0  # shift of image pixel (0, 0) on the sensor
    fx, fy = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
    ax, ay = sx - fx, sy - fy

    # Canvas: the image inside a zero border wide enough for every corner any pixel reads.
    q = int(max(fy.max() + 1, fx.max() + 1, Hs - H - fy.min(), Ws - W - fx.min(), 0))
    Hp, Wp = H + 2 * q, W + 2 * q
    canvas = np.zeros((B, Hp, Wp))
    canvas[:, q:q + H, q:q + W] = images

    # Skip the pixels whose view is constant along the path: all values they ever mix are equal.
    lo = hi = None
    for oy in range(int(fy.min()), int(fy.max()) + 2):
        for ox in range(int(fx.min()), int(fx.max()) + 2):
            view = canvas[:, q - oy:q - oy + Hs, q - ox:q - ox + Ws]
            lo = view.copy() if lo is None else np.minimum(lo, view, out=lo)
            hi = view.copy() if hi is None else np.maximum(hi, view, out=hi)
    assert lo is not None and hi is not None  # both ranges above hold at least two offsets
    active = np.flatnonzero(hi > lo)  # into [B, Hs, Ws]
    b_act, pix_act = np.divmod(active, Hs * Ws)
    r_act, c_act = np.divmod(pix_act, Ws)
    c_on, c_off = (c.reshape(-1)[active] for c in _pixel_thresholds(seeds, params, Hs * Ws))

    # Bilinear rendering of the active pixels: the four corner values change only when the
    # integer part of the shift does, so they are gathered then and mixed at every sample.
    flat_canvas = (canvas + params.log_eps).astype(np.float32).reshape(-1)  # eps folded in: weights sum to 1
    base = b_act * (Hp * Wp) + (r_act + q) * Wp + (c_act + q)
    corners: dict[tuple[int, int], list[np.ndarray]] = {}
    scratch = np.empty(len(active), np.float32)

    def log_frame(k: int) -> np.ndarray:
        key = (int(fy[k]), int(fx[k]))
        if key not in corners:
            corners.clear()
            i = base - key[0] * Wp - key[1]
            corners[key] = [flat_canvas[i], flat_canvas[i - 1], flat_canvas[i - Wp], flat_canvas[i - Wp - 1]]
        wy, wx = ay[k], ax[k]
        weights = ((1 - wy) * (1 - wx), (1 - wy) * wx, wy * (1 - wx), wy * wx)
        frame = np.multiply(corners[key][0], np.float32(weights[0]))
        for corner, w in zip(corners[key][1:], weights[1:]):
            frame += np.multiply(corner, np.float32(w), out=scratch)
        return np.log(frame, out=frame)

    # Each pixel fires when its log intensity leaves [ref - c_off, ref + c_on].
    prev = log_frame(0)
    ref = prev.copy()
    upper, lower = ref + c_on, ref - c_off
    last_emit = np.full(len(active), np.iinfo(np.int64).min // 2, np.int64)
    refractory = int(params.refractory_us)
    out_idx, out_t, out_p = [], [], []
    short_interval = times[1] - times[0] < np.iinfo(np.int16).max
    for k in range(1, K + 1):
        cur = log_frame(k)
        hit = np.flatnonzero((cur >= upper) | (cur <= lower))
        if hit.size:
            level, now, before, up, down = ref[hit], cur[hit], prev[hit], c_on[hit], c_off[hit]
            on = now > level
            step = np.where(on, up, -down)
            count = np.maximum(np.floor((now - level) / step), 1).astype(np.int64)
            new_level = level + count.astype(np.float32) * step
            # Rounding can leave `now` just outside the new band: one more crossing then. Computed
            # as the stored bounds are, so every pixel ends inside its band, and a pixel that
            # fires next time has moved (slope != 0 below).
            short = np.where(on, now >= new_level + up, now <= new_level - down)
            count += short
            new_level = level + count.astype(np.float32) * step
            ref[hit], upper[hit], lower[hit] = new_level, new_level + up, new_level - down
            slope = now - before
            pieces = []
            for j in range(1, int(count.max()) + 1):  # the j-th crossing of every pixel with >= j
                sel = np.flatnonzero(count >= j) if j > 1 else np.arange(len(hit))
                frac = np.clip((level[sel] + j * step[sel] - before[sel]) / slope[sel], 0.0, 1.0)
                t = np.floor(times[k - 1] + frac * (times[k] - times[k - 1])).astype(np.int64)
                pix = hit[sel]
                keep = t - last_emit[pix] >= refractory
                last_emit[pix[keep]] = t[keep]
                pieces.append((pix[keep], t[keep], on[sel[keep]]))
            pix, t, p = (np.concatenate(z) for z in zip(*pieces))
            rel = t - int(times[k - 1])  # small offsets: int16 makes the stable sort a radix sort
            order = np.argsort(rel.astype(np.int16) if short_interval else rel, kind="stable")
            out_idx.append(pix[order])
            out_t.append(t[order])
            out_p.append(p[order])
        prev = cur

    idx = np.concatenate(out_idx) if out_idx else np.empty(0, np.int64)
    t = np.concatenate(out_t) if out_t else np.empty(0, np.int64)
    p = np.concatenate(out_p) if out_p else np.empty(0, bool)
    # Time-sorted now; a stable (radix) sort by image keeps that order within each image.
    sample = b_act[idx].astype(np.int16 if B <= np.iinfo(np.int16).max else np.int64)
    order = np.argsort(sample, kind="stable")
    idx = idx[order]
    events = np.empty(len(idx), EVENT_DTYPE)
    events["x"], events["y"], events["t"], events["p"] = c_act[idx], r_act[idx], t[order], p[order]
    offsets = np.zeros(B + 1, np.int64)
    np.cumsum(np.bincount(sample, minlength=B), out=offsets[1:])
    return events, offsets


def saccade_events(
    image: np.ndarray,
    *,
    sensor_size: tuple[int, int] | None = None,
    saccade_vertices: Sequence[tuple[float, float]] = N_MNIST_SACCADES,
    duration_us: int = 300_000,
    sample_rate_hz: float = 1000.0,
    contrast_threshold: float | tuple[float, float] = 0.35,
    threshold_noise_std: float = 0.03,
    refractory_us: int = 1000,
    log_eps: float = 0.1,
    seed: Seed = 0,
) -> np.ndarray:
    """Emulate an N-MNIST-style recording of one static image (see the module docstring).

    Args:
        image: ``(H, W)`` grey image, float in [0, 1] or uint8 (``(C, H, W)`` RGB also works).
        sensor_size: ``(width, height)``; default the image plus 6 pixels (34 x 34 for MNIST).
        saccade_vertices: the turning points ``(dx, dy)`` (pixels, from the centred position)
            of the closed saccade path; one saccade per side.
        duration_us: length of the recording (three saccades).
        sample_rate_hz: how often the moving image is rendered.
        contrast_threshold: log-intensity change per event; a pair sets ``(ON, OFF)``.
        threshold_noise_std: per-pixel spread of the thresholds, fixed per recording.
        refractory_us: minimum spacing of two events of one pixel.
        log_eps: the pixel sees ``log(intensity + log_eps)`` (the monitor's black level).
        seed: seeds the per-pixel thresholds; same seed, same stream.

    Returns:
        :data:`~fewstep.events.types.EVENT_DTYPE` array sorted by ``t``, ``0 <= t <= duration_us``.
    """
    # EmulatorParams normalises saccade_vertices (any sequence of pairs) to a tuple of tuples
    params = EmulatorParams(sensor_size=sensor_size, saccade_vertices=cast("tuple[tuple[float, float], ...]",
                                                                           saccade_vertices), duration_us=duration_us,
                            sample_rate_hz=sample_rate_hz, contrast_threshold=contrast_threshold,
                            threshold_noise_std=threshold_noise_std, refractory_us=refractory_us, log_eps=log_eps)
    img = np.asarray(image)
    lum = to_luminance(img[None] if img.ndim in (2, 3) else img)
    if len(lum) != 1:
        raise ValueError(f"expected one image, got shape {img.shape}")
    events, _ = _emulate_batch(lum, [seed], params)
    return events


def _cache_path(cache_dir: Path, images: np.ndarray, labels: np.ndarray | None, params: EmulatorParams,
                seed: Seed) -> Path:
    h = hashlib.sha256()
    h.update(json.dumps({"format": _CACHE_FORMAT, "params": asdict(params), "seed": seed,
                         "shape": images.shape, "dtype": str(images.dtype)}, sort_keys=True, default=str).encode())
    h.update(np.ascontiguousarray(images).tobytes())
    if labels is not None:
        h.update(np.ascontiguousarray(labels).tobytes())
    return cache_dir / f"emulated-{h.hexdigest()[:20]}.npz"


def _seq(seed: Seed) -> tuple[int, ...]:
    # anything but a tuple or list is one integer seed (int() rejects the rest)
    return tuple(int(s) for s in seed) if isinstance(seed, (tuple, list)) else (int(cast(int, seed)),)


def _concat_packed(parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Join packed batches ``(events, offsets)`` into one, without unpacking them."""
    events = concat_events([e for e, _ in parts])
    counts = np.concatenate([np.diff(o) for _, o in parts]) if parts else np.empty(0, np.int64)
    offsets = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    return events, offsets


def _emulate_chunk(args: tuple) -> list[tuple[np.ndarray, np.ndarray]]:
    """Worker: images ``[start, start + len(images))``, packed batch by batch; image ``i`` is
    seeded ``(seed, i)``."""
    images, start, seed, params, batch_size = args
    images = to_luminance(images)
    parts = []
    for a in range(0, len(images), batch_size):
        batch = images[a:a + batch_size]
        seeds = [(*_seq(seed), start + a + j) for j in range(len(batch))]
        parts.append(_emulate_batch(batch, seeds, params))
    return parts


def emulate_dataset(
    images: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    seed: Seed = 0,
    cache_dir: str | Path | None = None,
    workers: int = 1,
    batch_size: int = 128,
    progress: Callable[[int], None] | None = None,
    **params,
) -> list[np.ndarray]:
    """Emulate a recording of every image: a list of event arrays, one per image.

    ``images`` is uint8 (or float in [0, 1]) ``[N, H, W]`` or ``[N, C, H, W]``; RGB is converted
    to luminance. ``params`` are :func:`saccade_events`'s keyword arguments. Image ``i`` is
    seeded with ``(seed, i)``, so ``result[i] == saccade_events(images[i], seed=(seed, i))``
    whatever ``batch_size`` and ``workers`` are.

    With ``cache_dir`` the result is stored there as one ``.npz`` (``events`` concatenated,
    ``offsets``, and ``labels`` if given), named by a hash of the images, labels, seed and
    parameters, and loaded from there the next time. ``workers > 1`` spreads the images over
    processes. ``progress(n)``, if given, is told each time ``n`` more images are done (after every
    batch, or every worker's share with ``workers > 1``): emulating thousands of images takes seconds
    to minutes, and a progress bar says so."""
    config = EmulatorParams(**params)
    images = np.asarray(images)
    label_array = None if labels is None else np.asarray(labels)
    path = None
    if cache_dir is not None:
        path = _cache_path(Path(cache_dir), images, label_array, config, _seq(seed))
        if path.exists():
            with np.load(path) as data:
                return unpack_events(data["events"], data["offsets"])

    n = len(images)
    workers = max(1, min(int(workers), n))
    bounds = np.linspace(0, n, workers + 1).astype(int)
    chunks = [(images[a:b], int(a), seed, config, int(batch_size)) for a, b in zip(bounds[:-1], bounds[1:])]
    results = []
    if workers == 1:  # batch by batch here, each image seeded by its index as in a worker
        size = int(batch_size)
        for a in range(0, n, size):
            results.append(_emulate_chunk((images[a:a + size], a, seed, config, size)))
            if progress is not None:
                progress(min(size, n - a))
    else:
        with ProcessPoolExecutor(workers) as pool:
            for chunk, parts in zip(chunks, pool.map(_emulate_chunk, chunks)):
                results.append(parts)
                if progress is not None:
                    progress(len(chunk[0]))
    events, offsets = _concat_packed([part for parts in results for part in parts])  # one copy
    if path is not None:
        extra = {} if label_array is None else {"labels": label_array}
        write_npz_atomic(path, events=events, offsets=offsets, **extra)
    return unpack_events(events, offsets)
