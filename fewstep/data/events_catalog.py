r"""The event datasets fewstep trains on, registered by name: each loader below reads its
recordings (:mod:`fewstep.data.event_datasets`) or emulates them from images, and hands them to
:mod:`fewstep.data.event_currents`, which turns them into cached STC currents
``[N, T, 2, H', W']`` (the options, the emulation seeds and the cache are described there).

==========================  ===================================================================
``nmnist``                  real N-MNIST recordings (``<root>/nmnist/``, ``nmnist-small/``, ...;
                            see :class:`fewstep.data.event_datasets.NMNIST`), 34x34
``dvsgesture``              DVS128 Gesture (:class:`~fewstep.data.event_datasets.DVSGesture`), 128x128
``cifar10dvs``              CIFAR10-DVS (:class:`~fewstep.data.event_datasets.CIFAR10DVS`), 128x128,
                            its deterministic per-class split (``test_fraction``, default 0.1)
``saccade-digits``          the embedded scikit-learn 8x8 digits, upscaled (bilinear) to a
                            ``digit_size`` box (20 px, MNIST's) centred in a ``digit_size + 8``
                            canvas (28 px), emulated with N-MNIST's saccades on a 34x34 sensor;
                            works offline with no data; the ``digits`` train/test split
``saccade-mnist``           MNIST's IDX files (``<root>/mnist/``) through the same emulator
``saccade-fashion-mnist``   Fashion-MNIST's IDX files (``<root>/fashion-mnist/``) likewise
==========================  ===================================================================

"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .base import DatasetSplits, register_dataset
from .event_currents import (
    EventOptions,
    EventSource,
    build_event_splits,
    digit_images,
    emulated_splits,
    emulator_keys,
    recorded_source,
)
from .event_datasets import CIFAR10DVS, NMNIST, DVSGesture

__all__ = ["load_cifar10dvs_events", "load_dvsgesture_events", "load_nmnist_events", "load_saccade_digits",
           "load_saccade_fashion_mnist", "load_saccade_mnist"]

# --------------------------------------------------------------------------- recorded datasets


def _segments_of(ds: DVSGesture, i: int) -> list[Any]:
    """Recording ``i``'s segments (the cache key's extra part)."""
    return list(ds.segments[i])


def _recorded_splits(name: str, opts: EventOptions, root: Path, classes: list[str],
                     open_split: Callable[[str, bool], tuple[str, EventSource]]) -> DatasetSplits:
    """Both splits of a recorded dataset as STC currents: ``open_split(split, train)`` opens one
    split and gives its folder (reported as ``info["folder"]``, the train split's) and its source."""
    info: dict = {}
    sources = {}
    for split, train in (("train", True), ("test", False)):
        folder, sources[split] = open_split(split, train)
        info.setdefault("folder", folder)
    return build_event_splits(name, sources["train"], sources["test"], classes, opts, root, info)


@register_dataset("nmnist")
def load_nmnist_events(root: Path, download: bool = True, **options) -> DatasetSplits:
    """Real N-MNIST (34x34 ATIS recordings) as STC currents ``[N, T, 2, 34 / f, 34 / f]``."""
    opts, _ = EventOptions.parse("nmnist", options)

    def open_split(split: str, train: bool) -> tuple[str, EventSource]:
        ds = NMNIST(root, train=train, download=download)
        return str(ds.root.parent), recorded_source(ds, opts.split_limit(train), ds.root.parent)

    return _recorded_splits("nmnist", opts, root, list(NMNIST.classes), open_split)


@register_dataset("dvsgesture")
def load_dvsgesture_events(root: Path, download: bool = True, **options) -> DatasetSplits:
    """DVS128 Gesture (11 classes, 128x128) as STC currents; use ``spatial_factor`` 2 or 4."""
    opts, _ = EventOptions.parse("dvsgesture", options)

    def open_split(split: str, train: bool) -> tuple[str, EventSource]:
        ds = DVSGesture(root, train=train, download=download)
        segments = functools.partial(_segments_of, ds)
        return str(ds.root), recorded_source(ds, opts.split_limit(train), ds.root, segments)

    return _recorded_splits("dvsgesture", opts, root, list(DVSGesture.classes), open_split)


@register_dataset("cifar10dvs")
def load_cifar10dvs_events(root: Path, download: bool = True, **options) -> DatasetSplits:
    """CIFAR10-DVS (10 classes, 128x128) as STC currents, split per class by ``test_fraction``."""
    opts, extra = EventOptions.parse("cifar10dvs", options, ("test_fraction", "orientation"))
    kw = {"test_fraction": float(extra.get("test_fraction", 0.1)), "orientation": extra.get("orientation", "jaer")}

    def open_split(split: str, train: bool) -> tuple[str, EventSource]:
        try:
            ds = CIFAR10DVS(root, split=split, download=download, **kw)
        except ValueError as exc:
            raise ConfigError("data.options", str(exc)) from None
        src = recorded_source(ds, opts.split_limit(train), ds.root)
        src.key["split"] = kw  # the split and the pixel layout change the samples
        return str(ds.root), src

    return _recorded_splits("cifar10dvs", opts, root, list(CIFAR10DVS.classes), open_split)


# --------------------------------------------------------------------------- emulated datasets


@register_dataset("saccade-digits")
def load_saccade_digits(root: Path, download: bool = True, **options) -> DatasetSplits:
    """The embedded digits (1,797 images) as emulated N-MNIST-style recordings (34x34 by
    default), then STC currents. Offline; about ten seconds of emulation on one CPU core."""
    opts, extra = EventOptions.parse("saccade-digits", options,
                                     (*emulator_keys(), "seed", "workers", "digit_size", "test_fraction",
                                      "split_seed"))
    digit_size = extra.pop("digit_size", 20)
    if isinstance(digit_size, bool) or not isinstance(digit_size, int) or digit_size < 8:
        raise ConfigError("data.options.digit_size", f"must be an integer >= 8, got {digit_size!r}")
    train, test = digit_images(digit_size, float(extra.pop("test_fraction", 0.2)), int(extra.pop("split_seed", 0)))
    info = {"digit_size": digit_size}
    return emulated_splits("saccade-digits", train, test, [str(c) for c in range(10)], opts, extra, root, info)


def _saccade_idx(name: str, root: Path, download: bool, options: dict) -> DatasetSplits:
    from .mnist import SPECS, load_idx_dataset

    dataset = f"saccade-{name}"
    opts, extra = EventOptions.parse(dataset, options, (*emulator_keys(), "seed", "workers"))
    splits = load_idx_dataset(SPECS[name], root, download)
    pairs = [(s.inputs[:, 0].numpy(), s.labels.numpy()) for s in (splits.train, splits.test)]
    info = {"files": splits.info.get("files", {})}
    return emulated_splits(dataset, pairs[0], pairs[1], list(SPECS[name].classes), opts, extra, root, info)


@register_dataset("saccade-mnist")
def load_saccade_mnist(root: Path, download: bool = True, **options) -> DatasetSplits:
    """MNIST (IDX files) as emulated N-MNIST-style recordings, then STC currents. The full
    70,000 images take minutes to emulate (cached afterwards); ``limit`` for quick runs."""
    return _saccade_idx("mnist", root, download, options)


@register_dataset("saccade-fashion-mnist")
def load_saccade_fashion_mnist(root: Path, download: bool = True, **options) -> DatasetSplits:
    """Fashion-MNIST (IDX files) as emulated saccade recordings, then STC currents."""
    return _saccade_idx("fashion-mnist", root, download, options)
