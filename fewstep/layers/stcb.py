r"""Spatio-temporal conversion blocks (STCB) with the spike-train-level equivalent gradient.

Reconstruction of SLSSNN / STCSNN (Xu et al., arXiv 2307.07136; methods.md section 2). The
paper gives the idea; the equations, the forward dynamics and the way the gradient is
spread over the steps below are this module's reading of it.

An STCB is a synaptic operation (conv or linear, optionally followed by BatchNorm) applied to
the input spike train ``[T, B, ...]`` at every step, giving currents ``I[t]``, followed by an
integrate-and-fire *conversion* back into a ``T``-step spike train:

.. math::

    h_t = v_{t-1} + I_t, \qquad s_t = H(h_t - V_{th}), \qquad v_t = h_t - s_t V_{th},
    \qquad v_0 = 0

(threshold :math:`V_{th}`, no leak, soft reset by subtraction, at most one spike per step).

**Spike-train level.** The layer is described by how its output spike count depends on the
total input current :math:`S = v_0 + \sum_t I_t`:

.. math::

    N_{out} = \mathrm{clip}(\lfloor S / V_{th} \rfloor, 0, T).

*When the per-step IF count equals this formula.* With :math:`P_t = v_0 + \sum_{u \le t} I_u`
and :math:`n_t` the spikes up to step ``t``, soft reset gives :math:`v_t = P_t - n_t V_{th}`,
so :math:`n_T = \lfloor S / V_{th} \rfloor` exactly when the final residual
:math:`v_T = S - n_T V_{th}` lies in :math:`[0, V_{th})`. In particular the count equals the
formula

* for a constant current (any sign), and
* for currents with :math:`0 \le I_t \le V_{th}` at every step (then :math:`0 \le v_t < V_{th}`
  throughout: every crossing is answered in the step it happens).

It can differ in two ways:

* *fewer* spikes (**backlog**): at most one spike per step, so charge arriving late in large
  amounts cannot all be emitted, e.g. ``I = [0, 0, 3 V_th]`` gives 1 spike, the formula 3
  (:func:`if_conversion` leaves :math:`v_T \ge V_{th}`);
* *more* spikes (**late negative currents**): a spike, once emitted, is not taken back, e.g.
  ``I = [2 V_th, -2 V_th]`` gives 1 spike while :math:`S = 0` gives 0 (:math:`v_T < 0`).
  Negative currents *early* in the train are harmless: the membrane integrates them (no floor
  at 0) and later positive charge must first cancel them.

**Forward.** ``forward="if"`` (default) runs these exact per-step dynamics: causal, so the
block can run step by step (streaming, ``step_mode="s"``), and identical between the two
gradient modes, so ``gradient="equivalent"`` vs ``"surrogate"`` compares gradients only.
``forward="count"`` instead emits exactly :math:`N_{out}` spikes, spread as an IF neuron fed the
mean current :math:`S/T` at every step would emit them (spike at step ``t`` (0-based) iff
:math:`\lfloor (t+1)N/T \rfloor - \lfloor tN/T \rfloor = 1`, i.e. evenly, the first one as late
as possible). It is not causal (step 0 needs the whole train's current), so it has no
single-step mode and only the equivalent gradient.

**Equivalent gradient** (``gradient="equivalent"``). The relaxed count
:math:`\tilde N = \mathrm{clip}(S / V_{th}, 0, T)` has :math:`d\tilde N / dS = 1/V_{th}` inside
:math:`(0, T V_{th})` and 0 outside (a rectangle over the total current; the boundaries belong
to the outside). The output train is modelled at spike-train level as that count spread
uniformly, :math:`\tilde s_{t'} = \tilde N / T` at every step ``t'``, so the backward pass is
the exact vector-Jacobian product of this model:

.. math::

    \frac{\partial L}{\partial I_t} = \frac{\mathbb 1[0 < S < T V_{th}]}{V_{th}} \cdot
    \frac{1}{T}\sum_{t'} \frac{\partial L}{\partial s_{t'}}
    \qquad\text{for every step } t,

every input step receiving the same gradient: the *mean* over output steps of the incoming
gradient times :math:`dN/dS`. The mean (not the sum) is what makes the rule the chain rule of
the count: if the loss depends on the train only through its count (``L = f(sum_t s_t)``,
so every :math:`\partial L/\partial s_{t'} = f'(N)`), it gives
:math:`\partial L / \partial I_t = f'(N) / V_{th} = f'(N)\, dN/dI_t`, independent of ``T``;
the sum would be ``T`` times that. No gradient flows into the carried state ``v_0``.

``gradient="surrogate"`` is fewstep's per-step BPTT through the same IF neuron (soft reset,
``surrogate`` / ``width`` of :mod:`fewstep.neurons.surrogate`), for comparison.

The conversion module :class:`ConversionIF` subclasses :class:`~fewstep.neurons.IF`, so
:func:`~fewstep.neurons.reset_net`, :func:`~fewstep.neurons.spiking_neurons` and
:func:`fewstep.energy.count_energy` treat it as a spiking neuron: its outputs are 0/1 spikes
of amplitude 1 and layers fed by them are counted in SOPs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..neurons import IF
from ..neurons.functional import StepOutput
from .fast import BatchNorm2d
from .timefold import TimeFold

__all__ = [
    "FORWARDS",
    "GRADIENTS",
    "STCB",
    "ConversionIF",
    "ConversionSpec",
    "equivalent_gradient",
    "if_conversion",
    "spike_train_count",
    "spread_count",
]

GRADIENTS = ("equivalent", "surrogate")
FORWARDS = ("if", "count")


# --------------------------------------------------------------------------- functional core

def _total(current: torch.Tensor, v0: torch.Tensor | None) -> torch.Tensor:
    s = current.sum(0)
    return s if v0 is None else s + v0


def spike_train_count(current: torch.Tensor, v_threshold: float = 1.0,
                      v0: torch.Tensor | None = None) -> torch.Tensor:
    """``N_out = clip(floor(S / V_th), 0, T)`` with ``S = v0 + sum_t current[t]``, for ``current [T, ...]``.

    Returned as a float tensor of shape ``current.shape[1:]`` (integer values)."""
    if current.dim() < 1 or current.shape[0] < 1:
        raise ValueError(f"expected a time-major current [T, ...] with T >= 1, got shape {tuple(current.shape)}")
    t = current.shape[0]
    return torch.floor(_total(current, v0) / v_threshold).clamp(0, t)


def spread_count(count: torch.Tensor, timesteps: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Spread integer counts ``N in 0..T`` over ``T`` steps: ``s_t = floor((t+1)N/T) - floor(tN/T)``.

    The spikes an IF neuron fed the constant current ``N V_th / T`` emits (evenly spaced, the
    first as late as possible). Exact integer arithmetic; returns ``[T, *count.shape]``."""
    n = count.detach().round().long()
    if n.numel() and (int(n.min()) < 0 or int(n.max()) > timesteps):
        raise ValueError(f"counts must lie in 0..{timesteps}")
    t = torch.arange(timesteps, device=n.device).view(-1, *([1] * n.dim()))
    s = ((t + 1) * n) // timesteps - (t * n) // timesteps
    return s.to(dtype or (count.dtype if count.is_floating_point() else torch.float32))


def if_conversion(current: torch.Tensor, v_threshold: float = 1.0,
                  v0: torch.Tensor | None = None) -> StepOutput:
    """The exact per-step IF conversion (no leak, soft reset, one spike per step at most), no gradient.

    A plain loop over ``T`` (the reference the module's ``forward="if"`` must match); returns
    spikes and membranes (after charging) ``[T, ...]`` and the final state ``v_T``."""
    v = torch.zeros_like(current[0]) if v0 is None else v0
    spikes, membranes = [], []
    for i in range(current.shape[0]):
        h = v + current[i]
        s = (h >= v_threshold).to(current.dtype)
        v = h - s * v_threshold
        spikes.append(s)
        membranes.append(h)
    return StepOutput(torch.stack(spikes), torch.stack(membranes), v)


class _EquivalentGradient(torch.autograd.Function):
    """Identity on the given forward ``spikes``; backward is the spike-train-level equivalent gradient."""

    @staticmethod
    def forward(ctx, current: torch.Tensor, spikes: torch.Tensor, v_threshold: float,
                v0: torch.Tensor | None) -> torch.Tensor:
        t = current.shape[0]
        total = _total(current.detach(), None if v0 is None else v0.detach())
        inside = (total > 0) & (total < t * v_threshold)
        ctx.save_for_backward(inside)
        ctx.scale = 1.0 / (t * v_threshold)
        ctx.shape = current.shape
        return spikes

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (inside,) = ctx.saved_tensors
        # mean over output steps of dL/ds, times dN/dS = 1/V_th inside (0, T V_th): sum * 1/(T V_th)
        g = grad_out.sum(0) * inside.to(grad_out.dtype) * ctx.scale
        return g.unsqueeze(0).expand(ctx.shape).contiguous(), None, None, None


def equivalent_gradient(current: torch.Tensor, spikes: torch.Tensor, v_threshold: float = 1.0,
                        v0: torch.Tensor | None = None) -> torch.Tensor:
    """Return ``spikes`` (values unchanged) with the equivalent gradient w.r.t. ``current`` attached.

    ``spikes`` is any forward output computed from ``current`` without gradient (per-step IF or
    the spread count); see the module docstring for the backward rule."""
    if current.shape != spikes.shape:
        raise ValueError(f"current {tuple(current.shape)} and spikes {tuple(spikes.shape)} differ in shape")
    return _EquivalentGradient.apply(current, spikes.detach(), float(v_threshold), v0)


# --------------------------------------------------------------------------- modules

class ConversionIF(IF):
    """The STCB conversion neuron: IF, no leak, soft reset, ``K = 1``, with a selectable gradient.

    Args:
        v_threshold: ``V_th`` (fixed, not learnable).
        gradient: ``"equivalent"`` (spike-train-level, default) or ``"surrogate"`` (per-step BPTT).
        forward: ``"if"`` (exact per-step dynamics, default) or ``"count"`` (exactly
            ``N_out`` spikes, spread evenly; needs the equivalent gradient, no single-step mode).
        surrogate, width: the per-step surrogate for ``gradient="surrogate"``.
        detach_reset: for ``gradient="surrogate"``: no gradient through the reset.

    In single-step mode (``step_mode="s"``) the spike train is not available, so a step is
    the per-step IF update with the surrogate gradient (inference is unaffected: the
    forward values equal multi-step ``forward="if"``). With ``record = True``,
    ``forward="count"`` records the spikes but no membrane (``last_membrane = None``); its
    carried state (``keep_state``) is the residual ``S - N_out V_th``.
    """

    def __init__(self, v_threshold: float = 1.0, *, gradient: str = "equivalent", forward: str = "if",
                 surrogate=None, width: float | None = None, detach_reset: bool = False,
                 step_mode: str = "m") -> None:
        if gradient not in GRADIENTS:
            raise ValueError(f"gradient must be one of {GRADIENTS}, got {gradient!r}")
        if forward not in FORWARDS:
            raise ValueError(f"forward must be one of {FORWARDS}, got {forward!r}")
        if forward == "count" and gradient != "equivalent":
            raise ValueError("forward='count' emits the spike-train-level count and has no per-step "
                             "dynamics to back-propagate through: use gradient='equivalent'")
        super().__init__(v_threshold=v_threshold, reset="soft", num_thresholds=1, surrogate=surrogate,
                         width=width, detach_reset=detach_reset, scale_output=False, step_mode=step_mode)
        self.gradient = gradient
        self.forward_mode = forward

    @property
    def causal(self) -> bool:
        """``False`` for ``forward="count"``: every step's output depends on the whole input train
        (anytime inference refuses such a model, :func:`fewstep.infer.anytime.require_causal`)."""
        return self.forward_mode != "count"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.step_mode == "s" and self.forward_mode == "count":
            raise RuntimeError("ConversionIF(forward='count') is not causal and has no single-step mode")
        if self.step_mode == "s" or self.gradient == "surrogate":
            return super().forward(x)
        if x.dim() < 2 or x.shape[0] < 1:
            raise ValueError(f"expected a time-major tensor [T, B, ...] with T >= 1, got shape {tuple(x.shape)}")
        v_th = float(self.threshold)
        v0 = self.v if self.keep_state else None
        v0 = None if v0 is None else v0.detach()
        with torch.no_grad():
            if self.forward_mode == "if":
                out = self._run_multistep(x.detach(), self.params(), v0, need_membrane=bool(self.record))
                spikes, membrane, v_last = out.spikes, out.membrane, out.v
            else:
                n = spike_train_count(x.detach(), v_th, v0)
                spikes = spread_count(n, x.shape[0], x.dtype)
                membrane, v_last = None, _total(x.detach(), v0) - n * v_th
        y = _EquivalentGradient.apply(x, spikes, v_th, v0)
        if self.keep_state:
            self.v = v_last
        if self.record:
            self.last_spikes, self.last_membrane = y, membrane
        return y

    def extra_repr(self) -> str:
        return (f"v_threshold={float(self.threshold):.3g}, gradient={self.gradient}, forward={self.forward_mode}, "
                f"surrogate={self.surrogate.name}({self.surrogate.width}), step_mode={self.step_mode}")


@dataclass(frozen=True)
class ConversionSpec:
    """How every conversion of an STCB model is built (so models can make fresh ones)."""

    v_threshold: float = 1.0
    gradient: str = "equivalent"
    forward: str = "if"
    surrogate: str = "triangle"
    width: float | None = None
    detach_reset: bool = False

    def __post_init__(self) -> None:
        if self.gradient not in GRADIENTS:
            raise ValueError(f"gradient must be one of {GRADIENTS}, got {self.gradient!r}")
        if self.forward not in FORWARDS:
            raise ValueError(f"forward must be one of {FORWARDS}, got {self.forward!r}")
        if not (isinstance(self.v_threshold, (int, float)) and self.v_threshold > 0):
            raise ValueError(f"v_threshold must be a positive number, got {self.v_threshold!r}")

    def build(self) -> ConversionIF:
        return ConversionIF(self.v_threshold, gradient=self.gradient, forward=self.forward,
                            surrogate=self.surrogate, width=self.width, detach_reset=self.detach_reset)


class STCB(nn.Module):
    """Spatio-temporal conversion block: ``conversion(synapse(x))`` on ``[T, B, ...]`` spike trains.

    ``synapse`` must accept ``[T, B, ...]`` (e.g. a :class:`~fewstep.layers.TimeFold` of
    conv/linear + BN, optionally preceded by pooling); :meth:`conv2d` and :meth:`linear` build
    the usual ones. ``conversion`` defaults to ``ConversionSpec(**conversion_kw).build()``.
    """

    def __init__(self, synapse: nn.Module, conversion: ConversionIF | None = None, **conversion_kw) -> None:
        super().__init__()
        if conversion is not None and conversion_kw:
            raise TypeError("pass either a conversion module or its keyword options, not both")
        self.synapse = synapse
        self.conversion = conversion if conversion is not None else ConversionSpec(**conversion_kw).build()

    @classmethod
    def conv2d(cls, c_in: int, c_out: int, kernel_size: int = 3, stride: int = 1, padding: int | None = None, *,
               bn: bool = True, pre: tuple[nn.Module, ...] = (), conversion: ConversionIF | None = None,
               **conversion_kw) -> STCB:
        """``[*pre, Conv2d(bias=not bn), BatchNorm2d?]`` folded over time, then the conversion."""
        pad = kernel_size // 2 if padding is None else padding
        layers = [*pre, nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=pad, bias=not bn)]
        if bn:
            layers.append(BatchNorm2d(c_out))
        return cls(TimeFold(*layers), conversion, **conversion_kw)

    @classmethod
    def linear(cls, in_features: int, out_features: int, *, bn: bool = False, pre: tuple[nn.Module, ...] = (),
               conversion: ConversionIF | None = None, **conversion_kw) -> STCB:
        """``[*pre, Linear(bias=not bn), BatchNorm1d?]`` folded over time, then the conversion."""
        layers = [*pre, nn.Linear(in_features, out_features, bias=not bn)]
        if bn:
            layers.append(nn.BatchNorm1d(out_features))
        return cls(TimeFold(*layers), conversion, **conversion_kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conversion(self.synapse(x))
