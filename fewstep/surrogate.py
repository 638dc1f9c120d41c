"""Surrogate gradients for the Heaviside spike function.

Forward: ``H(x) = 1 if x >= 0 else 0`` where ``x = v - v_threshold``.
Backward: a smooth stand-in derivative ``g(x)``. Every surrogate here integrates to 1
over the real line, and ``width`` sets its scale (larger = wider, flatter):

=========  ==========================================  ===================
name       g(x)                                        primitive G(x)
=========  ==========================================  ===================
rectangle  1[|x| < w] / (2w)                           clip(x/(2w)+1/2,0,1)
triangle   max(0, w - |x|) / w^2                       piecewise quadratic
sigmoid    sig(x/w) (1 - sig(x/w)) / w                 sig(x/w)
arctan     1 / (2w (1 + (pi x / (2w))^2))              atan(pi x/(2w))/pi + 1/2
=========  ==========================================  ===================

``G`` is the smooth function whose derivative is ``g``; tests check the backward pass
against finite differences of ``G``.

The neurons (:mod:`fewstep.neurons`, which re-exports this module as
:mod:`fewstep.neurons.surrogate`) and the fused kernels (:mod:`fewstep.kernels`) both use it, so it
is neither's: it imports no other fewstep module but the torch-free names.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import cast

import torch

from .neuron_names import SURROGATE_NAMES

#: The surrogate names (defined torch-free in :mod:`fewstep.neuron_names` for recipe validation).
SURROGATES: tuple[str, ...] = SURROGATE_NAMES

DEFAULT_WIDTH = {"rectangle": 0.5, "triangle": 1.0, "sigmoid": 0.25, "arctan": 0.5}


def _rectangle(x: torch.Tensor, w: float) -> torch.Tensor:
    return (x.abs() < w).to(x.dtype) / (2.0 * w)


def _triangle(x: torch.Tensor, w: float) -> torch.Tensor:
    return (w - x.abs()).clamp(min=0.0) / (w * w)


def _sigmoid(x: torch.Tensor, w: float) -> torch.Tensor:
    s = torch.sigmoid(x / w)
    return s * (1.0 - s) / w


def _arctan(x: torch.Tensor, w: float) -> torch.Tensor:
    return 1.0 / (2.0 * w * (1.0 + (math.pi * x / (2.0 * w)) ** 2))


_DERIVATIVES: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "rectangle": _rectangle,
    "triangle": _triangle,
    "sigmoid": _sigmoid,
    "arctan": _arctan,
}


def surrogate_primitive(name: str, x: torch.Tensor, width: float) -> torch.Tensor:
    """The smooth function ``G`` whose derivative is the surrogate ``g`` (for tests and plots)."""
    w = width
    if name == "rectangle":
        return (x / (2 * w) + 0.5).clamp(0.0, 1.0)
    if name == "triangle":
        y = x.clamp(-w, w) / w
        return torch.where(y < 0, 0.5 * (1 + y) ** 2, 1 - 0.5 * (1 - y) ** 2)
    if name == "sigmoid":
        return torch.sigmoid(x / w)
    if name == "arctan":
        return torch.atan(math.pi * x / (2 * w)) / math.pi + 0.5
    raise ValueError(f"unknown surrogate {name!r}; choose one of {SURROGATES}")


class _SpikeFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, name: str, width: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.name = name
        ctx.width = width
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad_out * _DERIVATIVES[ctx.name](x, ctx.width), None, None


@dataclass(frozen=True)
class Surrogate:
    """A Heaviside step with a surrogate derivative, selected by name and width."""

    name: str = "triangle"
    width: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or self.name not in _DERIVATIVES:
            raise ValueError(f"unknown surrogate {self.name!r}; choose one of {SURROGATES}")
        if self.width is None:
            object.__setattr__(self, "width", DEFAULT_WIDTH[self.name])
        w = self.width
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not (math.isfinite(w) and w > 0):
            raise ValueError(f"surrogate width must be a positive finite number, got {w!r}")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Spike ``H(x)`` with the surrogate gradient in backward."""
        return _SpikeFn.apply(x, self.name, float(cast(float, self.width)))  # width: set in __post_init__

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        """The surrogate derivative ``g(x)`` itself."""
        return _DERIVATIVES[self.name](x, float(cast(float, self.width)))


def as_surrogate(value: Surrogate | str | None, width: float | None = None) -> Surrogate:
    """Accept a :class:`Surrogate`, a name, or ``None`` (triangle) and return a Surrogate.

    An explicit ``width`` always applies, also to a :class:`Surrogate` instance (which is
    returned unchanged when ``width`` is ``None``)."""
    if isinstance(value, Surrogate):
        return value if width is None else replace(value, width=width)
    return Surrogate("triangle" if value is None else value, width)
