"""Distribution-aware DNN-to-SNN conversion for few time steps (Datta and Beerel; methods.md section 4).

Train a ``*_dnn`` model (no BN, clipped ReLUs with trainable ceilings ``mu_l``), then
``fewstep convert CHECKPOINT --timesteps 2``:

1. :func:`collect_histograms`: each clipped-ReLU layer's pre-activation histogram on training data;
2. :func:`fit_factors`: per-layer ``(a_l, b_l)`` (threshold ``V = a mu``, amplitude ``A = b V``)
   minimising the expected squared error of the ``T``-step IF staircase, or the threshold-balancing
   baselines ``max`` / ``p99.9`` / ``clip``;
3. :func:`convert`: the SNN with the same weights and :class:`~fewstep.models.dnn.ConvertedIF`
   neurons, saved by :func:`convert_checkpoint` as a normal fewstep checkpoint of the registered
   ``*_converted`` model (evaluate with ``fewstep eval``, fine-tune with ``fewstep train
   <recipe> --set train.init_checkpoint=PATH``).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# Lazy exports: ``fewstep convert``'s parser (fewstep.convert.cli) imports this package, and the
# command line must not pay for torch until a command runs.
_EXPORTS = {
    "convert": "converter", "convert_checkpoint": "converter", "converted_checkpoint": "converter",
    "converted_recipe": "converter",
    "METHODS": "factors", "LayerFactors": "factors", "expected_error": "factors", "fit_distribution_aware": "factors",
    "fit_factors": "factors", "fit_max": "factors", "fit_percentile": "factors", "staircase": "factors",
    "LayerHistogram": "histograms", "clipped_relus": "histograms", "collect_histograms": "histograms",
    "histogram_of": "histograms",
}

__all__ = [
    "METHODS", "LayerFactors", "LayerHistogram", "clipped_relus", "collect_histograms", "convert", "convert_checkpoint",
    "converted_checkpoint", "converted_recipe", "expected_error", "fit_distribution_aware", "fit_factors", "fit_max",
    "fit_percentile", "histogram_of", "staircase",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
