"""Neuron modules: thin stateful wrappers around :mod:`fewstep.neurons.functional`.

Every neuron runs in one of two modes:

* ``step_mode="m"`` (default): input ``[T, B, ...]``, output ``[T, B, ...]``; the state is
  reset at the start of each call unless ``keep_state=True``.
* ``step_mode="s"``: input ``[B, ...]`` for one step; state persists across calls until
  :func:`reset_net` (streaming inference).

Set ``record = True`` to keep the last call's spikes and membrane (``last_spikes``,
``last_membrane``, both ``[T, B, ...]`` in multi-step mode) for regularisers and monitors.
``last_membrane`` is the potential ``h_t`` after charging and before the reset;
:meth:`SpikingNeuron.membrane_after_reset` gives the potential ``u_t`` after the reset (the state
carried to the next step) from the two records.
"""

from __future__ import annotations

import math
import sys
from typing import Any, cast

import torch
from torch import nn

from .functional import NeuronParams, StepOutput, initial_state, neuron_step
from .surrogate import Surrogate, as_surrogate


class SpikingNeuron(nn.Module):
    """Base class of all fewstep neurons (one population, elementwise)."""

    # a Parameter or a buffer (registered in __init__), typed for mypy past nn.Module.__getattr__
    threshold: torch.Tensor
    _decay: torch.Tensor

    def __init__(
        self,
        *,
        decay: float = 0.5,
        learnable_decay: bool = False,
        v_threshold: float = 1.0,
        learnable_threshold: bool = False,
        num_thresholds: int = 1,
        reset: str = "hard",
        v_reset: float = 0.0,
        surrogate: Surrogate | str | None = None,
        width: float | None = None,
        detach_reset: bool = False,
        scale_output: bool = False,
        step_mode: str = "m",
    ) -> None:
        super().__init__()
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"decay must be in (0, 1], got {decay}")
        if learnable_decay and decay >= 1.0:
            raise ValueError("learnable_decay needs decay < 1 (it is stored as sigmoid(w))")
        if not (math.isfinite(v_threshold) and v_threshold > 0):
            raise ValueError(f"v_threshold must be a finite positive number, got {v_threshold}")
        if int(num_thresholds) != num_thresholds or num_thresholds < 1:
            raise ValueError(f"num_thresholds must be an integer >= 1, got {num_thresholds}")
        if reset not in ("hard", "soft"):
            raise ValueError(f"reset must be 'hard' or 'soft', got {reset!r}")
        if step_mode not in ("m", "s"):
            raise ValueError(f"step_mode must be 'm' or 's', got {step_mode!r}")
        self.learnable_decay = learnable_decay
        # Fixed values stay Python floats in the dynamics: no float32 rounding, no GPU sync.
        self._decay_value = float(decay)
        self._threshold_value = float(v_threshold)
        if learnable_decay:
            self.decay_logit = nn.Parameter(torch.tensor(math.log(decay / (1.0 - decay))))
        else:
            self.register_buffer("_decay", torch.tensor(float(decay)), persistent=False)
        if learnable_threshold:
            self.threshold = nn.Parameter(torch.tensor(float(v_threshold)))
        else:
            self.register_buffer("threshold", torch.tensor(float(v_threshold)), persistent=False)
        self.num_thresholds = int(num_thresholds)
        self.reset_mode = reset
        self.v_reset = float(v_reset)
        self.surrogate = as_surrogate(surrogate, width)
        self.detach_reset = detach_reset
        self.scale_output = scale_output
        self.step_mode = step_mode
        self.keep_state = False
        self.record = False
        self.v: torch.Tensor | None = None
        self.last_spikes: torch.Tensor | None = None
        self.last_membrane: torch.Tensor | None = None

    @property
    def decay(self) -> torch.Tensor:
        return torch.sigmoid(self.decay_logit) if self.learnable_decay else self._decay

    def params(self) -> NeuronParams:
        """Current parameters as the functional core sees them."""
        decay: float | torch.Tensor = self.decay if self.learnable_decay else self._decay_value
        thr: float | torch.Tensor = (
            self.threshold if isinstance(self.threshold, nn.Parameter) else self._threshold_value
        )
        return NeuronParams(
            decay=decay,
            v_threshold=thr,
            num_thresholds=self.num_thresholds,
            reset=self.reset_mode,
            v_reset=self.v_reset,
            surrogate=self.surrogate,
            detach_reset=self.detach_reset,
            scale_output=self.scale_output,
        )

    def reset(self) -> None:
        """Forget the membrane state (call between independent samples)."""
        self.v = None
        self.last_spikes = None
        self.last_membrane = None

    def membrane_after_reset(self) -> torch.Tensor | None:
        """The recorded membrane after each step's reset, ``u_t`` (``[T, B, ...]``), or ``None``
        when nothing (or no membrane) was recorded.

        Computed from ``last_spikes`` and ``last_membrane`` (``h_t``) with the neuron's reset rule,
        so it is the same on every kernel (they record ``h_t`` only): soft reset
        ``u = h - n V_th`` with ``n`` the number of thresholds crossed, hard reset
        ``u = h (1 - z) + v_reset z`` with ``z = min(n, 1)``. The gradient flows through the
        spikes as in the dynamics (not at all with ``detach_reset``); under hard reset with
        ``K > 1`` it flows only where a single threshold was crossed."""
        s, h = self.last_spikes, self.last_membrane
        if s is None or h is None:
            return None
        p = self.params()
        n = s / p.v_threshold if p.scale_output else s
        if p.detach_reset:
            n = n.detach()
        if p.reset == "soft":
            return h - n * p.v_threshold
        z = n.clamp(max=1.0)
        return h * (1.0 - z) + p.v_reset * z

    def _run_multistep(
        self, x_seq: torch.Tensor, p: NeuronParams, v0: torch.Tensor | None, need_membrane: bool = True
    ) -> StepOutput:
        from .dispatch import multistep  # late import: kernels are optional

        # need_membrane=False lets a fused kernel skip the membrane (out.membrane may be None).
        return multistep(x_seq, p, v0, need_membrane=need_membrane)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.params()
        if self.step_mode == "s":
            v = initial_state(x, p) if self.v is None else self.v
            out = neuron_step(x, v, p)
            self.v = out.v
            if self.record:
                self.last_spikes, self.last_membrane = out.spikes, out.membrane
            return out.spikes
        v0 = self.v if self.keep_state else None
        out = self._run_multistep(x, p, v0, need_membrane=bool(self.record))
        if self.keep_state:
            self.v = out.v
        if self.record:
            self.last_spikes, self.last_membrane = out.spikes, out.membrane
        return out.spikes

    def extra_repr(self) -> str:
        d = f"{float(self.decay.detach()):.3g}" + (" (learnable)" if self.learnable_decay else "")
        return (
            f"decay={d}, v_threshold={float(self.threshold.detach()):.3g}, K={self.num_thresholds}, "
            f"reset={self.reset_mode}, surrogate={self.surrogate.name}({self.surrogate.width}), "
            f"step_mode={self.step_mode}"
        )


class IF(SpikingNeuron):
    r"""Integrate-and-fire: no leak (decay = 1). Soft reset is the conversion neuron.

    With input :math:`x_t`, threshold :math:`V_{th}` and :math:`H` the Heaviside step (a
    surrogate derivative in the backward pass), one step is

    .. math::

        h_t &= v_{t-1} + x_t &\text{(charge)}\\
        s_t &= H(h_t - V_{th}) &\text{(fire)}\\
        v_t &= \begin{cases} h_t (1 - s_t) + v_{reset}\, s_t & \text{hard reset (default)}\\
                             h_t - s_t V_{th} & \text{soft reset}\end{cases}

    from :math:`v_{-1} = v_{reset}` (hard) or 0 (soft); the output is :math:`s_t`
    (:math:`s_t V_{th}` with ``scale_output``). ``num_thresholds=K`` fires as :class:`MTLIF`."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("decay", 1.0)
        if kwargs["decay"] != 1.0:
            raise ValueError("IF has no leak; use LIF for decay < 1")
        super().__init__(**kwargs)


class LIF(SpikingNeuron):
    r"""Leaky integrate-and-fire, decay fixed (default 0.5) or learnable as in PLIF.

    With decay :math:`\lambda` (``decay``, or :math:`\mathrm{sigmoid}(w)` with
    ``learnable_decay``), input :math:`x_t`, threshold :math:`V_{th}` and :math:`H` the Heaviside
    step (a surrogate derivative in the backward pass), one step is

    .. math::

        h_t &= \begin{cases} v_{reset} + \lambda (v_{t-1} - v_{reset}) + x_t & \text{hard reset (default)}\\
                             \lambda v_{t-1} + x_t & \text{soft reset}\end{cases} &\text{(charge)}\\
        s_t &= H(h_t - V_{th}) &\text{(fire)}\\
        v_t &= \begin{cases} h_t (1 - s_t) + v_{reset}\, s_t & \text{hard reset}\\
                             h_t - s_t V_{th} & \text{soft reset}\end{cases} &\text{(reset)}

    from :math:`v_{-1} = v_{reset}` (hard) or 0 (soft); the output is :math:`s_t`
    (:math:`s_t V_{th}` with ``scale_output``). ``num_thresholds=K`` fires as :class:`MTLIF`."""


class PLIF(SpikingNeuron):
    r"""Parametric LIF: the decay ``sigmoid(w)`` is learned per layer.

    :class:`LIF`'s dynamics with :math:`\lambda = \mathrm{sigmoid}(w)`, :math:`w` a learned scalar
    that starts at :math:`\mathrm{logit}(\text{decay})`:

    .. math::

        h_t &= \begin{cases} v_{reset} + \lambda (v_{t-1} - v_{reset}) + x_t & \text{hard reset (default)}\\
                             \lambda v_{t-1} + x_t & \text{soft reset}\end{cases} &\text{(charge)}\\
        s_t &= H(h_t - V_{th}) &\text{(fire)}\\
        v_t &= \begin{cases} h_t (1 - s_t) + v_{reset}\, s_t & \text{hard reset}\\
                             h_t - s_t V_{th} & \text{soft reset}\end{cases} &\text{(reset)}"""

    def __init__(self, **kwargs) -> None:
        kwargs["learnable_decay"] = True
        super().__init__(**kwargs)


class MTLIF(SpikingNeuron):
    r"""Multi-threshold LIF: emits 0..K spikes per step (thresholds V_th, 2V_th, ..., K V_th),
    soft reset by ``s * V_th``, learnable decay by default.

    With decay :math:`\lambda = \mathrm{sigmoid}(w)` (learned; fixed ``decay`` with
    ``learnable_decay=False``), input :math:`x_t`, threshold :math:`V_{th}`, ``K = num_thresholds``
    and :math:`H` the Heaviside step (a surrogate derivative in the backward pass), one step is

    .. math::

        h_t &= \lambda v_{t-1} + x_t &\text{(charge; soft reset, the default)}\\
        s_t &= \sum_{k=1}^{K} H(h_t - k\,V_{th}) \in \{0, \dots, K\} &\text{(fire)}\\
        v_t &= h_t - s_t V_{th} &\text{(reset by subtraction)}

    from :math:`v_{-1} = 0`. With ``reset="hard"`` the charge is
    :math:`h_t = v_{reset} + \lambda (v_{t-1} - v_{reset}) + x_t` and the reset
    :math:`v_t = h_t (1 - H(h_t - V_{th})) + v_{reset} H(h_t - V_{th})`, from
    :math:`v_{-1} = v_{reset}`. The output is :math:`s_t` (:math:`s_t V_{th}` with
    ``scale_output``).

    What ``K = 1`` equals: ``MTLIF(num_thresholds=1, **kw)`` and ``LIF(**kw)`` give identical
    spikes, membranes and gradients **when they have the same reset, the same decay (its value and whether
    it is learnable), the threshold and the surrogate**. With their own defaults they differ:
    ``MTLIF(num_thresholds=1)`` is a soft-reset neuron with a learnable decay (a soft-reset PLIF),
    whereas ``LIF()`` resets hard with a fixed decay of 0.5. So ``MTLIF(num_thresholds=1,
    reset="hard", learnable_decay=False)`` equals ``LIF()``, and ``MTLIF(num_thresholds=1)``
    equals ``PLIF(reset="soft")``."""

    def __init__(self, num_thresholds: int = 2, **kwargs) -> None:
        kwargs.setdefault("learnable_decay", True)
        kwargs.setdefault("reset", "soft")
        super().__init__(num_thresholds=num_thresholds, **kwargs)


# Where a peer library defines the base class of its stateful modules. reset_net looks them up in
# sys.modules instead of importing them: a model holding such a module has imported its library.
_SPIKINGJELLY_BASES = ("spikingjelly.activation_based.base", "spikingjelly.clock_driven.base")


def _is_spikingjelly_memory(m: nn.Module) -> bool:
    for name in _SPIKINGJELLY_BASES:
        base = getattr(sys.modules.get(name), "MemoryModule", None)
        if isinstance(base, type) and isinstance(m, base):
            return True
    return False


def _method(m: nn.Module, name: str):
    f = getattr(m, name, None)
    return f if callable(f) else None


def reset_net(model: nn.Module) -> None:
    """Reset the state of every stateful module in ``model``, fewstep's and its peers', so that the
    next sample starts as on a freshly built model.

    * fewstep neurons (:meth:`SpikingNeuron.reset`) and any module with a ``reset_state()``
      method (fewstep's stateful layers);
    * SpikingJelly modules derived from ``MemoryModule`` (neurons, stateful layers): their
      ``reset()``, as ``spikingjelly.activation_based.functional.reset_net`` does;
    * snnTorch neurons (``Leaky``, ``Synaptic``, ``Alpha``, ...): their ``reset_mem()``, which
      zeroes this neuron's hidden state (``snntorch.utils.reset`` would reset every instance of
      the class, in all models).

    Norse modules carry no hidden state (it is passed in and returned), so there is nothing to
    reset. The peers are recognised without importing them."""
    for m in model.modules():
        if isinstance(m, SpikingNeuron):
            m.reset()
        elif (f := _method(m, "reset_state")) is not None:
            f()
        elif _is_spikingjelly_memory(m):
            cast(Any, m).reset()  # a SpikingJelly MemoryModule's own reset()
        elif (f := _method(m, "reset_mem")) is not None:
            f()


def set_step_mode(model: nn.Module, step_mode: str) -> None:
    """Switch every neuron (and step-aware layer) of ``model`` to ``"m"`` or ``"s"`` mode."""
    if step_mode not in ("m", "s"):
        raise ValueError(f"step_mode must be 'm' or 's', got {step_mode!r}")
    for m in model.modules():
        if hasattr(m, "step_mode"):
            setattr(m, "step_mode", step_mode)  # any module with a step_mode, not only ours


def spiking_neurons(model: nn.Module) -> list[tuple[str, SpikingNeuron]]:
    """All spiking neurons of ``model`` with their qualified names, in forward order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, SpikingNeuron)]


#: ``neuron.kind`` -> neuron class; its keys are :data:`fewstep.neuron_names.NEURON_KIND_NAMES`.
NEURON_KINDS: dict[str, type[SpikingNeuron]] = {"if": IF, "lif": LIF, "plif": PLIF, "mtlif": MTLIF}
