"""Inference beyond fixed-T evaluation: anytime (cutoff) inference and streaming deployment.

* :mod:`~fewstep.infer.anytime`: the step-by-step engine with per-sample stopping (softmax and
  top-1/top-2 margin cutoffs, the oracle optimal cutoff step); stopped samples are dropped.
* :mod:`~fewstep.infer.cutoff`: the accuracy/latency sweep, speed-up, wall-clock timing (the
  curve's plot, :func:`plot_cutoff`, is :func:`fewstep.plots.plot_cutoff`, re-exported here).
* :mod:`~fewstep.infer.streaming`: :class:`StreamingClassifier` for frames or event slices,
  :class:`STCStream` for offline-exact STC currents as events arrive.
* :mod:`~fewstep.infer.cli`: the ``fewstep eval --cutoff`` options.

The names below are imported lazily, so ``import fewstep.infer.cli`` (done when the command line
parser is built) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the lazy imports below provide (for type checkers and the API docs)
    from ..plots import plot_cutoff
    from .anytime import (
        AnytimeResult,
        MarginCalibration,
        MarginCutoff,
        NoCutoff,
        SoftmaxCutoff,
        anytime_batch,
        anytime_inference,
        calibrate_margin,
        cumulative_logits,
        oracle_cutoff,
        select_state,
        simulate_cutoff,
    )
    from .cutoff import DEFAULT_EPS, cutoff_sweep, time_inference
    from .streaming import STCStream, StreamingClassifier, events_to_current

__all__ = [
    "DEFAULT_EPS",
    "AnytimeResult",
    "MarginCalibration",
    "MarginCutoff",
    "NoCutoff",
    "STCStream",
    "SoftmaxCutoff",
    "StreamingClassifier",
    "anytime_batch",
    "anytime_inference",
    "calibrate_margin",
    "cumulative_logits",
    "cutoff_sweep",
    "events_to_current",
    "oracle_cutoff",
    "plot_cutoff",
    "select_state",
    "simulate_cutoff",
    "time_inference",
]

_WHERE = {
    **dict.fromkeys(("AnytimeResult", "MarginCalibration", "MarginCutoff", "NoCutoff", "SoftmaxCutoff", "anytime_batch",
                     "anytime_inference", "calibrate_margin", "cumulative_logits", "oracle_cutoff", "select_state",
                     "simulate_cutoff"), ".anytime"),
    **dict.fromkeys(("DEFAULT_EPS", "cutoff_sweep", "time_inference"), ".cutoff"),
    **dict.fromkeys(("STCStream", "StreamingClassifier", "events_to_current"), ".streaming"),
    "plot_cutoff": "fewstep.plots",  # plotting has one home; plots import no inference
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'fewstep.infer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
