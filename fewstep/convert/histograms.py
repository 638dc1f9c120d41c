"""Pre-activation histograms of every clipped-ReLU layer, streamed over calibration batches.

Forward pre-hooks on the :class:`~fewstep.models.dnn.ClippedReLU` modules see each layer's input
(the pre-activation ``x`` whose ``clip(x, 0, mu)`` the DNN computes). Memory is bounded by
``layers x bins`` whatever the number of batches, in **two passes** over the batches:

1. the minimum and maximum of every layer's pre-activation;
2. a fixed-bin histogram of the non-negative part over ``[0, max]`` (``bins`` equal bins,
   :func:`torch.histc` semantics: the maximum falls in the last bin) plus the count of negative
   values, ``below``.

Only ``x >= 0`` needs resolving: for ``x < 0`` both the DNN activation and the SNN output are 0,
whatever the conversion factors, so that mass enters the expectations as zero error and only as
a count. The batches must therefore be replayable: pass a sequence of tensors, or a callable that
returns a fresh iterable of batches each time it is called (same batches both times).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..models.dnn import ClippedReLU

Batches = Sequence[torch.Tensor] | Callable[[], Iterable[torch.Tensor]]


@dataclass
class LayerHistogram:
    """Histogram of one layer's pre-activations: ``counts[i]`` values in bin ``i`` of ``bins``
    equal bins over ``[0, hi]``, ``below`` values under 0, ``total`` values in all."""

    name: str
    mu: float
    hi: float
    counts: torch.Tensor  # float64 [bins]
    below: float
    total: float
    x_min: float
    x_max: float

    @property
    def bins(self) -> int:
        return int(self.counts.numel())

    @property
    def width(self) -> float:
        return self.hi / self.bins

    def centers(self) -> torch.Tensor:
        """Bin centres, float64 ``[bins]``."""
        return (torch.arange(self.bins, dtype=torch.float64) + 0.5) * self.width

    def probabilities(self) -> torch.Tensor:
        """Probability mass of every bin (the ``below`` mass is the rest)."""
        return self.counts / max(self.total, 1.0)

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0..100) of the *positive* pre-activations, interpolated
        linearly inside the bin (0 when no value is positive)."""
        pos = float(self.counts.sum())
        if pos <= 0:
            return 0.0
        cum = torch.cumsum(self.counts, 0)
        target = pos * q / 100.0
        i = int(torch.searchsorted(cum, torch.tensor(target, dtype=torch.float64)).clamp(max=self.bins - 1))
        before = float(cum[i - 1]) if i > 0 else 0.0
        inside = float(self.counts[i])
        frac = (target - before) / inside if inside > 0 else 1.0
        return min(self.hi, (i + min(max(frac, 0.0), 1.0)) * self.width)

    def to_dict(self) -> dict:
        return {"name": self.name, "mu": self.mu, "hi": self.hi, "bins": self.bins, "below": self.below,
                "total": self.total, "x_min": self.x_min, "x_max": self.x_max,
                "positive_fraction": float(self.counts.sum()) / max(self.total, 1.0),
                "p99.9": self.percentile(99.9)}


def clipped_relus(model: nn.Module) -> list[tuple[str, ClippedReLU]]:
    """Every :class:`ClippedReLU` of ``model`` with its qualified name, in module order
    (the forward order for the built-in ``*_dnn`` models)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, ClippedReLU)]


def _iterate(batches: Batches) -> Iterable[torch.Tensor]:
    return batches() if callable(batches) else batches


@torch.no_grad()
def _run(model: nn.Module, batches: Batches, layers: list[tuple[str, ClippedReLU]],
         fn: Callable[[int, torch.Tensor], None]) -> int:
    handles = []
    for i, (_, m) in enumerate(layers):
        handles.append(m.register_forward_pre_hook(lambda mod, args, i=i: fn(i, args[0].detach().float())))
    n = 0
    was_training = model.training
    model.eval()
    try:
        for x in _iterate(batches):
            model(x)
            n += 1
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return n


def collect_histograms(model: nn.Module, batches: Batches, bins: int = 2048) -> list[LayerHistogram]:
    """Histograms of every clipped-ReLU layer's pre-activations over ``batches`` (model in eval
    mode, no gradients; two passes, see the module docstring)."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    layers = clipped_relus(model)
    if not layers:
        raise ValueError("the model has no ClippedReLU layer to calibrate")
    k = len(layers)
    lo = [float("inf")] * k
    hi = [float("-inf")] * k

    def extremes(i: int, x: torch.Tensor) -> None:
        if x.numel():
            lo[i] = min(lo[i], float(x.min()))
            hi[i] = max(hi[i], float(x.max()))

    if _run(model, batches, layers, extremes) == 0:
        raise ValueError("no calibration batches")
    ranges = [h if h > 0 else float(m.mu.detach()) for h, (_, m) in zip(hi, layers)]  # all-negative: any range
    counts = [torch.zeros(bins, dtype=torch.float64) for _ in range(k)]
    below = [0.0] * k
    total = [0.0] * k

    def accumulate(i: int, x: torch.Tensor) -> None:
        x = x.flatten()
        neg = int((x < 0).sum())
        below[i] += neg
        total[i] += x.numel()
        if neg < x.numel():
            counts[i] += torch.histc(x, bins=bins, min=0.0, max=ranges[i]).to("cpu", torch.float64)

    _run(model, batches, layers, accumulate)
    return [LayerHistogram(name, float(m.mu.detach()), ranges[i], counts[i], below[i], total[i], lo[i], hi[i])
            for i, (name, m) in enumerate(layers)]


def histogram_of(x: torch.Tensor, mu: float, bins: int = 2048, name: str = "x") -> LayerHistogram:
    """The :class:`LayerHistogram` of the values ``x`` (in one go; for tests and analyses)."""
    x = x.detach().float().flatten()
    hi = float(x.max()) if x.numel() else 0.0
    rng = hi if hi > 0 else float(mu)
    pos = x[x >= 0]
    counts = torch.zeros(bins, dtype=torch.float64)
    if pos.numel():
        counts = torch.histc(pos, bins=bins, min=0.0, max=rng).double()
    return LayerHistogram(name, float(mu), rng, counts, float((x < 0).sum()), float(x.numel()),
                          float(x.min()) if x.numel() else 0.0, hi)
