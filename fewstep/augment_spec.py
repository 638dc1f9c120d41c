"""Event augmentation described as data (:class:`EventAugmentSpec`), the recipe's ``[data.augment]``.

This module imports no torch (and no NumPy): :mod:`fewstep.config` validates recipes with it, as
it does neurons with :mod:`fewstep.neuron_spec`. The augmentations themselves are in
:mod:`fewstep.events.augment`; the training engine applies them through
:class:`fewstep.train.event_feed.EventAugmentFeed`, to the training split only, per sample and per
epoch (seeded by ``train.seed`` and the epoch), so validation and test data are never augmented.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import ConfigError


@dataclass(frozen=True)
class EventAugmentSpec:
    """What the training split's events go through before STC, each epoch anew.

    * ``shift``: both coordinates move by independent random integers in ``[-shift, shift]``
      pixels (one draw per sample); events moved off the sensor are dropped. Never a flip: a
      mirrored digit is another digit (or none).
    * ``drop``: each sample loses a random fraction of its events, the fraction drawn uniformly
      from ``[0, drop]`` per sample, each event independently (``0 <= drop < 1``).
    * ``jitter_us``: every timestamp moves by a Gaussian of this standard deviation (microseconds,
      rounded to whole us), clamped at 0, and the stream is re-sorted by time (stable).

    All zero (the default) is no augmentation.
    """

    shift: int = 0
    drop: float = 0.0
    jitter_us: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.shift > 0 or self.drop > 0 or self.jitter_us > 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict, key: str = "data.augment", source: str | None = None) -> EventAugmentSpec:
        """Validate ``values`` (the recipe's table); a wrong key, type or range raises one
        :class:`~fewstep.errors.ConfigError` naming ``<key>.<name>``."""
        if not isinstance(values, dict):
            raise ConfigError(key, f"must be a table, got {type(values).__name__}", source)
        known = {f.name for f in fields(cls)}
        for name in values:
            if name not in known:
                raise ConfigError(f"{key}.{name}", f"unknown key; known keys: {', '.join(sorted(known))}", source)
        shift = values.get("shift", 0)
        if isinstance(shift, bool) or not isinstance(shift, int) or not 0 <= shift <= 64:
            raise ConfigError(f"{key}.shift", f"must be an integer number of pixels in 0..64, got {shift!r}", source)
        drop = values.get("drop", 0.0)
        if isinstance(drop, bool) or not isinstance(drop, (int, float)) or not 0 <= drop < 1:
            raise ConfigError(f"{key}.drop", f"must be a fraction in [0, 1), got {drop!r}", source)
        jitter = values.get("jitter_us", 0.0)
        if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not (
                math.isfinite(jitter) and jitter >= 0):
            raise ConfigError(f"{key}.jitter_us", f"must be a finite number of microseconds >= 0, got {jitter!r}",
                              source)
        return cls(shift=int(shift), drop=float(drop), jitter_us=float(jitter))


__all__ = ["EventAugmentSpec"]
