"""Training batches of freshly augmented event recordings (the recipe's ``[data.augment]``).

Event datasets reach the engine as STC currents (:mod:`fewstep.data.events_catalog`), computed
once and cached; event-level augmentation must happen before STC. :class:`EventAugmentFeed` keeps
the training split's recordings in memory and, at the start of every epoch, draws one
augmentation per recording (:func:`fewstep.events.augment.augment_events`, a NumPy generator
seeded by ``(train.seed, epoch)``) and recomputes the currents with the split's own STC options.
Epoch ``e``'s inputs therefore depend only on the seed and ``e``, as the plain feed's crops do, and
a resumed run sees the same batches. Validation and test splits keep the plain
:class:`~fewstep.train.data_feed.DeviceFeed`: they are never augmented.

Which recording belongs to which training row is found by content, not by index: every recording
of the training folder is compressed once without augmentation and matched (currents and label)
to the rows of the split the engine holds. That holds whatever sample selection, limit or
validation hold-out produced the rows, and a row that matches no recording is an error.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from ..augment_spec import EventAugmentSpec
from ..data import ArrayDataset
from ..errors import ConfigError
from .data_feed import DeviceFeed

#: The datasets whose recordings the feed can re-read (emulated datasets would need the emulator
#: every epoch and are not among them).
SUPPORTED = ("nmnist",)

_STC_KEYS = ("timesteps", "by", "integration", "kappa", "fine_bins_per_step", "spatial_factor")
_STC_DEFAULTS = {"by": "time", "integration": "sum", "kappa": 0.9, "fine_bins_per_step": 10, "spatial_factor": 1}


def _recordings(dataset: str, root: str | Path | None) -> tuple[list[np.ndarray], np.ndarray, tuple[int, int]]:
    """Every training recording of ``dataset`` (events, labels, sensor size)."""
    if dataset == "nmnist":
        from ..data.event_datasets import NMNIST

        ds = NMNIST(root, train=True, download=False)
    else:
        raise ConfigError("data.augment", f"event augmentation re-reads the recordings and supports the datasets "
                          f"{', '.join(SUPPORTED)}; dataset {dataset!r} has none (remove [data.augment])")
    events, labels = [], []
    for ev, label in ds:  # Tonic's protocol: (events, target)
        events.append(ev)
        labels.append(label)
    width, height = ds.sensor_size[:2]  # Tonic's (W, H, P)
    return events, np.asarray(labels, np.int64), (width, height)


def _scaled(currents: np.ndarray, scale: str | float, dtype: torch.dtype) -> torch.Tensor:
    """The currents as the event catalog hands them to the engine (``scale`` and ``dtype``)."""
    x = torch.from_numpy(currents)
    if scale == "log1p":
        x = torch.log1p(x)
    elif not isinstance(scale, str):
        x = x / float(scale)
    return x.to(dtype)


class EventAugmentFeed(DeviceFeed):
    """A training :class:`DeviceFeed` whose inputs are recomputed from augmented recordings each epoch.

    ``events[i]`` is the recording of row ``i`` of ``ds``; ``stc_options`` are the
    :func:`~fewstep.events.compression.stc` keyword arguments that made ``ds`` (``timesteps`` included).
    """

    def __init__(self, ds: ArrayDataset, events: Sequence[np.ndarray], sensor_size: tuple[int, int],
                 stc_options: dict, spec: EventAugmentSpec, batch_size: int, device: torch.device, *,
                 scale: str | float = "none", seed: int = 0, crop_padding: int = 0, flip: bool = False,
                 rank: int = 0, world: int = 1) -> None:
        if len(events) != len(ds):
            raise ValueError(f"{len(events)} recordings for {len(ds)} training samples")
        super().__init__(ds, batch_size, device, train=True, seed=seed, crop_padding=crop_padding, flip=flip,
                         rank=rank, world=world)
        self.events = list(events)
        self.sensor_size = sensor_size
        self.stc_options = dict(stc_options)
        self.spec = spec
        self.scale = scale

    def epoch_inputs(self, epoch: int) -> torch.Tensor:
        """Epoch ``epoch``'s training inputs ``[N, T, C, H, W]``: one augmentation per recording."""
        from ..events.augment import augment_events
        from ..events.compression import stc

        rng = np.random.default_rng([int(self.seed), int(epoch), 0x6576])  # 0x6576: "ev", this feed's stream
        opts = dict(self.stc_options)
        timesteps = opts.pop("timesteps")
        out = np.empty(tuple(self.ds.inputs.shape), np.float32)
        for i, ev in enumerate(self.events):
            out[i] = stc(augment_events(ev, self.sensor_size, self.spec, rng), self.sensor_size, timesteps, **opts)
        return _scaled(out, self.scale, self.ds.inputs.dtype)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.inputs = self.epoch_inputs(epoch).to(self.device)
        yield from super().epoch(epoch)


def event_augment_feed(dataset: str, options: dict, spec: EventAugmentSpec, train: ArrayDataset,
                       root: str | Path | None, batch_size: int, device: torch.device, *, seed: int = 0,
                       crop_padding: int = 0, flip: bool = False, rank: int = 0,
                       world: int = 1) -> EventAugmentFeed:
    """The :class:`EventAugmentFeed` for the training split ``train`` of ``dataset`` loaded with
    ``options`` (the recipe's ``data.options``): its recordings found by content (module docstring)."""
    from ..data.base import resolve_data_root
    from ..events.compression import stc

    if options.get("size"):
        raise ConfigError("data.augment", "event augmentation does not support data.options.size (resampled "
                          "currents); use spatial_factor or remove [data.augment]")
    stc_options = {k: options.get(k, _STC_DEFAULTS.get(k)) for k in _STC_KEYS}
    scale = options.get("scale", "none")
    events, labels, sensor = _recordings(dataset, resolve_data_root(root))
    timesteps = stc_options["timesteps"]
    rest = {k: v for k, v in stc_options.items() if k != "timesteps"}
    dtype = train.inputs.dtype
    by_content: dict[tuple[int, bytes], list[int]] = {}
    for j, ev in enumerate(events):
        key = (int(labels[j]), _scaled(stc(ev, sensor, timesteps, **rest), scale, dtype).numpy().tobytes())
        by_content.setdefault(key, []).append(j)
    chosen: list[np.ndarray] = []
    unmatched = 0
    for row, label in zip(train.inputs, train.labels.tolist()):
        hits = by_content.get((int(label), row.contiguous().numpy().tobytes()))
        if hits:
            chosen.append(events[hits.pop(0) if len(hits) > 1 else hits[0]])
        else:
            unmatched += 1
    if unmatched:
        raise ConfigError("data.augment", f"{unmatched} of the {len(train)} training samples match no {dataset} "
                          f"training recording under {resolve_data_root(root)} (a stale cache, or options the "
                          "augmenting feed does not reproduce); remove [data.augment] or rebuild the cache")
    return EventAugmentFeed(train, chosen, sensor, stc_options, spec, batch_size, device, scale=scale, seed=seed,
                            crop_padding=crop_padding, flip=flip, rank=rank, world=world)


__all__ = ["SUPPORTED", "EventAugmentFeed", "event_augment_feed"]
