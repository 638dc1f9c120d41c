r"""Event streams as trainable fewstep datasets: STC currents ``[N, T, 2, H', W']``.

The datasets registered in :mod:`fewstep.data.events_catalog` (``nmnist``, ``dvsgesture``,
``cifar10dvs``, ``saccade-*``) are built here: every event stream (a recording from
:mod:`fewstep.data.event_datasets`, or an image through :mod:`fewstep.events.emulator`) becomes
``T`` steps of synaptic current with :func:`fewstep.events.compression.stc` (spatio-temporal compression,
``methods.md`` section 1), returned as :class:`~fewstep.data.base.ArrayDataset` sequences
(``is_sequence = True``, float inputs ``[N, T, 2, H', W']``, channel 0 OFF, channel 1 ON). ``T``
comes from the data, so the recipe's ``model.timesteps`` must equal ``data.options.timesteps``
(the training engine checks).

Options (recipe ``[data.options]``):

* ``timesteps`` (required), ``by`` (``'time'`` | ``'count'``), ``integration`` (``'sum'`` |
  ``'exp'``), ``kappa``, ``fine_bins_per_step``, ``spatial_factor``: :func:`~fewstep.events.compression.stc`'s.
* ``size``: resample the (pooled) currents to ``size x size`` (or ``[H, W]``) pixels, e.g. the
  48x48 of TET / STR for 128x128 DVS data, by area: ``adaptive_avg_pool2d`` times the area ratio,
  so each output pixel holds the events of its area. For an integer ratio that is exactly
  ``spatial_factor``'s sum-pooling; otherwise the windows overlap by a fraction of a pixel and the
  total is kept only approximately. Default 0: no resampling. Applied on load (the cache keeps
  the pooled counts).
* ``scale``: how the currents (event counts) are scaled for the network: ``'none'`` (default:
  raw counts; the stem's BatchNorm normalises them anyway, and the sum of a sample's tensor is
  its number of events under ``integration='sum'``), ``'log1p'`` (``log(1 + I)``, tames the hot
  pixels of long DVS recordings) or a number ``c > 0`` (``I / c``).
* ``dtype``: ``'float32'`` (default) or ``'float16'`` (halves memory for the full datasets;
  counts up to 2048 are exact).
* ``limit`` (both splits), ``train_limit``, ``test_limit``: use only that many samples (0 = all),
  *before* anything is read or emulated, so quick runs and CI stay fast. Recorded datasets are
  kept in a fixed shuffled order (seed 0), so their first ``n`` are a random subset covering all
  classes; emulated MNIST keeps the IDX order (already shuffled).
* ``cache`` (default ``true``) and ``cache_dir``: the currents are cached on disk (see below).
* Emulated datasets only: ``seed`` (default 0) and the emulator's parameters
  (:func:`fewstep.events.emulator.saccade_events`: ``contrast_threshold``,
  ``threshold_noise_std``, ``refractory_us``, ``sample_rate_hz``, ``duration_us``, ``log_eps``,
  ``saccade_vertices``, ``sensor_size``), and ``workers`` (processes for the emulator, default 1).
  ``saccade-digits`` also takes ``digit_size``, ``test_fraction`` and ``split_seed``.
* ``cifar10dvs`` takes ``test_fraction`` and ``orientation``.

**Emulation seeds.** Image ``i`` of a split is emulated with the seed
``(seed, split, c, i - c)``, ``c`` the start of its block of :data:`EMULATION_BLOCK` images (split
0 = train, 1 = test): a stream depends only on the image, its index and ``seed``, never on
``limit``, so a limited set is a prefix of the full one.

**Cache.** One ``.npz`` per split in ``cache_dir`` (default ``<data root>/fewstep-cache/events``
when the data root is writable, else ``~/.cache/fewstep/events``), named by a SHA-256 of the
dataset name, the split, every STC parameter, the sample selection and the sources: for recorded
data the file list (relative paths and sizes, plus each DVS128 Gesture sample's time window), for
emulated data the images, labels, seeds and emulator parameters. It holds the raw (unscaled)
currents, integer counts as ``uint8`` / ``uint16``, uncompressed (saccade-mnist at T = 2: about 330 MB
for the 70,000 samples); ``scale`` and ``dtype`` are applied on load, so changing them reuses the
cache. Written atomically (temporary file in the same folder, then ``os.replace``), so an
interrupted run never leaves a half-written cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..events.compression import STC
from .base import ArrayDataset, DatasetSplits

__all__ = ["EMULATION_BLOCK", "EventOptions", "EventSource", "build_event_splits", "digit_images", "emulated_splits",
           "emulator_keys", "event_cache_dir", "recorded_source", "resample_currents"]

CACHE_FORMAT = 1  # bump when the stored currents for the same key change
EMULATION_BLOCK = 2048  # images per emulator call (part of every emulated stream's seed)
_SCALES = ("none", "log1p")
_DTYPES = {"float32": torch.float32, "float16": torch.float16}


# --------------------------------------------------------------------------- options


def _stc_default(name: str) -> Any:
    """The :class:`~fewstep.events.compression.STC` transform's default for ``name``: the dataset
    options default to the transform's, from one place."""
    return next(f.default for f in fields(STC) if f.name == name)


@dataclass(frozen=True)
class EventOptions:
    """The options every event dataset takes (see the module docstring)."""

    timesteps: int
    by: str = _stc_default("by")
    integration: str = _stc_default("integration")
    kappa: float = _stc_default("kappa")
    fine_bins_per_step: int = _stc_default("fine_bins_per_step")
    spatial_factor: int = _stc_default("spatial_factor")
    scale: str | float = "none"
    size: int | list = 0
    dtype: str = "float32"
    limit: int = 0
    train_limit: int = 0
    test_limit: int = 0
    cache: bool = True
    cache_dir: str = ""

    @classmethod
    def parse(cls, dataset: str, options: dict, extra: Sequence[str] = ()) -> tuple[EventOptions, dict]:
        """Split ``options`` into the common options and the dataset's ``extra`` ones; unknown keys
        and bad values raise :class:`~fewstep.errors.ConfigError` naming ``data.options.<key>``."""
        common = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - common - set(extra))
        if unknown:
            raise ConfigError(f"data.options.{unknown[0]}", f"unknown option for dataset {dataset!r}; known: "
                              f"{', '.join(sorted(common | set(extra)))}")
        if "timesteps" not in options:
            raise ConfigError("data.options.timesteps", f"dataset {dataset!r} needs the number of STC steps; set it "
                              "equal to model.timesteps")
        opts = cls(**{k: v for k, v in options.items() if k in common})
        opts._validate()
        return opts, {k: v for k, v in options.items() if k not in common}

    def _validate(self) -> None:
        def bad(key: str, problem: str) -> ConfigError:
            return ConfigError(f"data.options.{key}", problem)

        for key in ("timesteps", "fine_bins_per_step", "spatial_factor"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise bad(key, f"must be an integer >= 1, got {v!r}")
        for key in ("limit", "train_limit", "test_limit"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise bad(key, f"must be an integer >= 0 (0 = all), got {v!r}")
        if self.by not in ("time", "count"):
            raise bad("by", f"must be 'time' or 'count', got {self.by!r}")
        if self.integration not in ("sum", "exp"):
            raise bad("integration", f"must be 'sum' or 'exp', got {self.integration!r}")
        if isinstance(self.kappa, bool) or not isinstance(self.kappa, (int, float)) or not 0 < self.kappa <= 1:
            raise bad("kappa", f"must lie in (0, 1], got {self.kappa!r}")
        if isinstance(self.scale, str):
            if self.scale not in _SCALES:
                raise bad("scale", f"must be 'none', 'log1p' or a positive number, got {self.scale!r}")
        elif isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or not self.scale > 0:
            raise bad("scale", f"must be 'none', 'log1p' or a positive number, got {self.scale!r}")
        size = self.size
        if not (isinstance(size, int) and not isinstance(size, bool) and size >= 0) and not (
                isinstance(size, (list, tuple)) and len(size) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size)):
            raise bad("size", f"must be 0 (no resampling), an integer >= 1 or [height, width], got {size!r}")
        if self.dtype not in _DTYPES:
            raise bad("dtype", f"must be one of {', '.join(_DTYPES)}, got {self.dtype!r}")
        if not isinstance(self.cache, bool):
            raise bad("cache", f"must be true or false, got {self.cache!r}")
        if not isinstance(self.cache_dir, str):
            raise bad("cache_dir", f"must be a path (string), got {self.cache_dir!r}")

    def stc_params(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~fewstep.events.compression.stc` (all of them, for the cache key)."""
        return {"timesteps": self.timesteps, "by": self.by, "integration": self.integration,
                "kappa": float(self.kappa), "fine_bins_per_step": self.fine_bins_per_step,
                "spatial_factor": self.spatial_factor}

    def split_limit(self, train: bool) -> int:
        specific = self.train_limit if train else self.test_limit
        if specific and self.limit:
            return min(specific, self.limit)
        return specific or self.limit


# --------------------------------------------------------------------------- cache


def _writable_dir(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".probe-")
        os.close(fd)
        os.unlink(probe)
        return True
    except OSError:
        return False


def event_cache_dir(root: Path | None, cache_dir: str = "") -> Path:
    """Where the currents are cached: ``cache_dir`` if given, else ``<root>/fewstep-cache/events``
    when that can be written, else ``~/.cache/fewstep/events``."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if root is not None and Path(root).is_dir():
        candidate = Path(root) / "fewstep-cache" / "events"
        if _writable_dir(candidate):
            return candidate
    return Path.home() / ".cache" / "fewstep" / "events"


def _cache_path(folder: Path, dataset: str, split: str, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]
    return folder / f"{dataset}-{split}-{digest}.npz"


def _load(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with np.load(path) as data:
            return data["currents"], data["labels"]
    except (OSError, KeyError, ValueError):  # unreadable cache: rebuild it
        return None


def _compact(currents: np.ndarray, integral: bool) -> np.ndarray:
    """Integer counts (``integral``) as ``uint8`` or ``uint16`` when they fit (a quarter or half
    of the disk; stored uncompressed, which loads several times faster than ``savez_compressed``),
    anything else as it is."""
    if integral and currents.size:
        top = currents.max()
        for dtype in (np.uint8, np.uint16):
            if top <= np.iinfo(dtype).max:
                return currents.astype(dtype)
    return currents


# --------------------------------------------------------------------------- building


@dataclass
class EventSource:
    """One split to build: ``count`` samples, their ``labels``, and how to get their events.

    Exactly one of ``read(i) -> events`` (recorded data, sample ``i`` of the selection, read in
    increasing ``read_order``) and ``blocks(progress) -> iterable of lists of event arrays``
    (emulated data, in sample order; ``progress(n)``, if not None, is told as each ``n`` more
    samples are emulated) is given. ``key`` describes the sources for the cache."""

    count: int
    labels: np.ndarray
    sensor_size: tuple[int, int]
    key: dict
    read: Callable[[int], np.ndarray] | None = None
    read_order: np.ndarray | None = None
    blocks: Callable[[Callable[[int], None] | None], Iterable[list[np.ndarray]]] | None = None


def _compute(source: EventSource, opts: EventOptions, what: str = "events") -> np.ndarray:
    """The STC currents of every sample of ``source``, with a progress bar named after ``what``
    (``"<dataset> <split>"``): emulating the 1,797 digits takes about ten seconds, MNIST minutes."""
    from ..events.compression import stc
    from ..progress import progress_bar

    params = opts.stc_params()
    timesteps = params.pop("timesteps")
    w, h = source.sensor_size
    f = opts.spatial_factor
    out = np.zeros((source.count, timesteps, 2, -(-h // f), -(-w // f)), np.float32)
    bar = progress_bar(source.count, f"{'reading' if source.read is not None else 'emulating'} {what}",
                       unit="sample")
    try:
        if source.read is not None:
            order = source.read_order if source.read_order is not None else range(source.count)
            for i in order:
                out[i] = stc(source.read(int(i)), source.sensor_size, timesteps, **params)
                if bar is not None:
                    bar.update(1)
        else:
            i = 0
            assert source.blocks is not None  # a source has read or blocks
            for block in source.blocks(None if bar is None else bar.update):
                for events in block:
                    out[i] = stc(events, source.sensor_size, timesteps, **params)
                    i += 1
            if i != source.count:
                raise RuntimeError(f"the emulator returned {i} streams for {source.count} images")
    finally:
        if bar is not None:
            bar.close()
    return out


def resample_currents(x: torch.Tensor, size: tuple[int, int], chunk: int = 1024) -> torch.Tensor:
    """Resample currents ``[N, T, C, H, W]`` to ``size = (h, w)`` by area: ``adaptive_avg_pool2d``
    times ``(H * W) / (h * w)`` (sum-pooling for integer ratios), in chunks of samples."""
    n, t, c, height, width = x.shape
    if (height, width) == tuple(size):
        return x
    ratio = height * width / (size[0] * size[1])
    out = x.new_empty((n, t, c, *size))
    for a in range(0, n, chunk):
        part = x[a:a + chunk].flatten(0, 1)
        out[a:a + chunk] = (torch.nn.functional.adaptive_avg_pool2d(part, size) * ratio).unflatten(0, (-1, t))
    return out


def _finish(currents: np.ndarray, labels: np.ndarray, classes: list[str], opts: EventOptions) -> ArrayDataset:
    x = torch.from_numpy(currents.astype(np.float32, copy=False))
    if opts.size:
        size = (opts.size, opts.size) if isinstance(opts.size, int) else tuple(opts.size)
        x = resample_currents(x, size)
    if opts.scale == "log1p":
        x = torch.log1p(x)
    elif not isinstance(opts.scale, str):
        x = x / float(opts.scale)
    return ArrayDataset(x.to(_DTYPES[opts.dtype]).contiguous(), torch.from_numpy(np.asarray(labels, np.int64)),
                        classes, is_sequence=True)


def _build_split(dataset: str, split: str, source: EventSource, classes: list[str], opts: EventOptions,
                 root: Path | None, info: dict) -> ArrayDataset:
    key = {"format": CACHE_FORMAT, "dataset": dataset, "split": split, "stc": opts.stc_params(),
           "count": source.count, "source": source.key}
    path = None
    if opts.cache:
        path = _cache_path(event_cache_dir(root, opts.cache_dir), dataset, split, key)
        if path.is_file():
            loaded = _load(path)
            if loaded is not None and len(loaded[0]) == source.count:
                info[split] = {"cache": str(path), "cache_hit": True, "build_seconds": 0.0}
                return _finish(loaded[0], loaded[1], classes, opts)
    t0 = time.perf_counter()
    if source.count >= 5000:
        print(f"fewstep: building {dataset} {split} ({source.count} samples, STC T={opts.timesteps})"
              + (f"; cached in {path.parent}" if path else ""), file=sys.stderr, flush=True)
    currents = _compute(source, opts, f"{dataset} {split}")
    seconds = time.perf_counter() - t0
    info[split] = {"cache": str(path) if path else None, "cache_hit": False, "build_seconds": round(seconds, 3)}
    if path is not None:
        try:
            integral = opts.integration == "sum" or opts.kappa == 1
            from ..atomic import write_npz_atomic

            write_npz_atomic(path, currents=_compact(currents, integral), labels=np.asarray(source.labels, np.int64),
                         key=np.array(json.dumps(key, sort_keys=True, default=str)))
        except OSError as exc:  # a read-only cache is not fatal
            info[split]["cache_error"] = str(exc)
    return _finish(currents, source.labels, classes, opts)


def build_event_splits(dataset: str, train: EventSource, test: EventSource, classes: list[str],
                       opts: EventOptions, root: Path | None, info: dict | None = None) -> DatasetSplits:
    """Compute (or load from the cache) both splits' currents as :class:`DatasetSplits`."""
    info = {} if info is None else info
    info.setdefault("stc", opts.stc_params())
    info.setdefault("scale", opts.scale)
    tr = _build_split(dataset, "train", train, classes, opts, root, info)
    te = _build_split(dataset, "test", test, classes, opts, root, info)
    return DatasetSplits(dataset, tr, te, info=info)


# --------------------------------------------------------------------------- recorded datasets


def _selection(n: int, limit: int) -> np.ndarray:
    """Sample indices in a fixed shuffled order (seed 0), the first ``limit`` of them."""
    order = np.random.default_rng(0).permutation(n)
    return order[:limit] if limit else order


def recorded_source(ds, limit: int, base: Path, extra_key: Callable[[int], Any] | None = None) -> EventSource:
    """An :class:`EventSource` over the first ``limit`` samples (0 = all) of an
    :class:`~fewstep.data.event_datasets.EventDataset` in a fixed shuffled order; the cache key
    holds each file's path relative to ``base``, its size and ``extra_key(i)`` if given."""
    chosen = _selection(len(ds), limit)
    files = []
    for i in chosen:
        p = Path(ds.samples[i][0])
        try:
            rel = str(p.relative_to(base))
        except ValueError:
            rel = str(p)
        entry = [rel, p.stat().st_size]
        if extra_key is not None:
            entry.append(extra_key(int(i)))
        files.append(entry)
    labels = np.array([ds.samples[i][1] for i in chosen], np.int64)
    return EventSource(count=len(chosen), labels=labels, sensor_size=tuple(ds.sensor_size[:2]),
                       key={"files": files}, read=lambda j: ds[int(chosen[j])][0],
                       read_order=np.argsort(chosen, kind="stable"))


# --------------------------------------------------------------------------- emulated datasets


def emulator_keys() -> tuple[str, ...]:
    """The emulator parameters an emulated dataset takes as ``data.options``."""
    from ..events.emulator import EmulatorParams

    return tuple(f.name for f in fields(EmulatorParams))


def _emulated_source(images: np.ndarray, labels: np.ndarray, split_id: int, limit: int, seed: Any, workers: int,
                     emulator: dict) -> EventSource:
    """An :class:`EventSource` emulating a saccade recording of each of the first ``limit`` images."""
    from ..events.emulator import EmulatorParams, emulate_dataset

    if limit:
        images, labels = images[:limit], labels[:limit]
    images = np.ascontiguousarray(images)
    try:
        params = EmulatorParams(**emulator)
    except (TypeError, ValueError) as exc:
        raise ConfigError("data.options", f"bad emulator parameters: {exc}") from None
    h, w = images.shape[-2:]
    sensor = params.sensor_for(h, w)
    labels = np.asarray(labels, np.int64)
    digest = hashlib.sha256(images.tobytes()).hexdigest()
    key = {"images": [list(images.shape), str(images.dtype), digest],
           "labels": hashlib.sha256(labels.tobytes()).hexdigest(), "seed": seed, "split": split_id,
           "emulator": asdict(params), "block": EMULATION_BLOCK}

    def blocks(progress: Callable[[int], None] | None = None) -> Iterable[list[np.ndarray]]:
        for start in range(0, len(images), EMULATION_BLOCK):
            yield emulate_dataset(images[start:start + EMULATION_BLOCK], seed=(*_seed_tuple(seed), split_id, start),
                                  workers=workers, progress=progress, **emulator)

    return EventSource(count=len(images), labels=np.asarray(labels, np.int64), sensor_size=sensor, key=key,
                       blocks=blocks)


def _seed_tuple(seed: Any) -> tuple[int, ...]:
    if isinstance(seed, (list, tuple)):
        return tuple(int(s) for s in seed)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError("data.options.seed", f"must be an integer >= 0, got {seed!r}")
    return (int(seed),)


def emulated_splits(dataset: str, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                    classes: list[str], opts: EventOptions, extra: dict, root: Path | None,
                    info: dict) -> DatasetSplits:
    """Both splits of emulated images ``(images, labels)``: ``extra`` holds ``seed``, ``workers``
    and the emulator's parameters (see the module docstring)."""
    seed = extra.pop("seed", 0)
    _seed_tuple(seed)
    workers = extra.pop("workers", 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError("data.options.workers", f"must be an integer >= 1, got {workers!r}")
    emulator = {k: (tuple(map(tuple, v)) if k == "saccade_vertices" else tuple(v) if isinstance(v, list) else v)
                for k, v in extra.items()}
    info["emulator"] = {"seed": seed, **emulator}
    t0 = time.perf_counter()
    src_train = _emulated_source(*train, 0, opts.split_limit(True), seed, workers, emulator)
    src_test = _emulated_source(*test, 1, opts.split_limit(False), seed, workers, emulator)
    splits = build_event_splits(dataset, src_train, src_test, classes, opts, root, info)
    info["seconds"] = round(time.perf_counter() - t0, 3)
    return splits


def digit_images(digit_size: int = 20, test_fraction: float = 0.2,
                 split_seed: int = 0) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The embedded 8x8 digits as MNIST-like uint8 images: each upscaled (bilinear) to
    ``digit_size`` px and centred in a ``digit_size + 8`` px black canvas (20 in 28, as MNIST
    digits sit). ``((train_images, train_labels), (test_images, test_labels))`` with the split of
    the ``digits`` dataset."""
    from .digits import load_digits

    splits = load_digits(test_fraction=test_fraction, split_seed=split_seed)

    def convert(ds: ArrayDataset) -> tuple[np.ndarray, np.ndarray]:
        x = ds.inputs.float() / 255.0
        if digit_size != x.shape[-1]:
            x = torch.nn.functional.interpolate(x, size=(digit_size, digit_size), mode="bilinear",
                                                align_corners=False)
        x = torch.nn.functional.pad(x.clamp(0, 1), (4, 4, 4, 4))
        return (x[:, 0] * 255.0).round().to(torch.uint8).numpy(), ds.labels.numpy()

    return convert(splits.train), convert(splits.test)
