"""Causality of a model: whether its output at step ``t`` depends only on the inputs up to ``t``.

A module declares ``causal = False`` when it is not (e.g. an STCB conversion with
``forward="count"``, :class:`fewstep.layers.stcb.ConversionIF`). Training records this in every
run report (the per-step accuracies before ``T`` of a non-causal model are no anytime accuracies)
and inference refuses such a model (:func:`fewstep.infer.anytime.require_causal`). Both need the
answer, so it lives in neither: :mod:`fewstep.train` importing :mod:`fewstep.infer` for it closed
an import circle with :mod:`fewstep.infer.cli`, which trains and evaluates.
"""

from __future__ import annotations

from torch import nn

__all__ = ["is_causal", "non_causal_modules"]


def non_causal_modules(model: nn.Module) -> list[str]:
    """Qualified names of the modules of ``model`` that declare ``causal = False`` (their output
    at step ``t`` depends on later inputs)."""
    return [name or type(m).__name__ for name, m in model.named_modules() if getattr(m, "causal", True) is False]


def is_causal(model: nn.Module) -> bool:
    """Whether every step's output of ``model`` depends only on the inputs up to that step."""
    return not non_causal_modules(model)
