r"""Temporal regularizers for anytime (cutoff) inference: STR and RCS.

Both make the network's internal representation settle early, so a softmax or margin cutoff
(:mod:`fewstep.infer`) can stop most samples after a few steps at little loss of accuracy. The
training engine calls ``reg(records, logits, targets)`` after each forward pass, with one record
``(layer_name, spikes, membrane, v_threshold)`` per spiking layer: ``spikes`` and ``membrane``
are ``[T, B, ...]`` and ``v_threshold`` a scalar tensor; ``logits`` are the per-step outputs
``[T, B, classes]``. Everything is computed in float32.

**Which membrane.** Each regularizer says which membrane it wants in its ``membrane`` attribute
(option ``membrane``): ``'post_reset'``, the potential :math:`u_t` after the spike's reset (the
state carried to step ``t + 1``, what the authors' code reads), or ``'pre_reset'``, the potential
:math:`h_t` after charging and before the reset. The engine builds the records accordingly
(:meth:`fewstep.neurons.SpikingNeuron.membrane_after_reset`). Below :math:`u_t` is whichever
was chosen.

Common definitions, per layer, step ``t`` and sample ``b`` (norms over all neurons of the layer):

.. math::

    r_t = s_t + \mathrm{relu}(u_t / V_{th}), \qquad \text{late steps} = \{T - L + 1, \dots, T\}

with ``L`` steps of late reference chosen by ``late_rule``:

* ``'slice'``: the authors' Python slice ``[-int(late_fraction * T):]``, so
  :math:`L = \lfloor T \cdot \text{late\_fraction} \rfloor`, and *all* ``T`` steps when that is 0
  (with the default 0.3: ``T = 1, 2, 3``);
* ``'at_least_one'``: :math:`L = \max(1, \lfloor T \cdot \text{late\_fraction} \rfloor)` (the
  last step alone at ``T = 2, 3``).

**STR** (spike-timing regularizer of Wu et al., arXiv 2405.00699). *Reconstruction*: the paper
says STR "regulates the ratio between the strength of spikes and membrane potential at each
timestep"; its code is not public. We define the spatial-temporal factor

.. math::

    \mathrm{STF}_t = \frac{\lVert s_t \rVert_2}{\lVert r_t \rVert_2}
    \quad\text{with}\quad \lVert x \rVert_2 := \sqrt{\textstyle\sum x^2 + \varepsilon^2}

(so ``STF`` is in ``[0, 1]`` for non-negative spikes and is finite and differentiable
everywhere; a silent layer, ``s = 0`` and ``u <= 0``, has ``STF = 1``), the late reference
:math:`\overline{\mathrm{STF}} = \mathrm{mean}_{t \in \text{late}} \mathrm{STF}_t` (detached),
and the loss

.. math::

    \mathcal{L}_{STR} = \mathrm{mean}_{\text{layers}}\ \mathrm{mean}_{b}\
        \mathrm{mean}_{t \in \text{early}}\ d(\mathrm{STF}_t, \overline{\mathrm{STF}})

with ``early`` the steps before the late window (all steps when the window covers all of them)
and ``d`` the squared difference (``distance='l2'``, default) or the absolute difference
(``'l1'``). It is zero when every step of every layer is the same. STR's defaults are
``membrane='pre_reset'`` and ``late_rule='at_least_one'`` (what fewstep's STR has always used;
being a reconstruction, it has no authors' choice to follow).

**RCS** (representation consistency, from the authors' public code, SNNCutoff
``regularizer/rcs_snn.py`` and its loss ``RCSSNNLoss``); the defaults are the authors' choices.
Per layer and sample the cosine similarity of every step's :math:`r_t` with the detached mean of
the late steps' :math:`r_t`, averaged over all ``T`` steps:
:math:`\bar c = \mathrm{mean}_t \cos(r_t, \bar r_{late})`, with ``membrane='post_reset'`` and
``late_rule='slice'`` (the authors'). The per-sample value is the inverse similarity, shifted so
that perfect consistency costs zero (the shift is a constant, so the gradients are the
authors'):

* ``form='inverse'`` (default): :math:`1 / (\bar c + \delta) - 1 / (1 + \delta)`, ``delta = 1e-5``
  (the authors use :math:`1 / (\bar c + \delta)`);
* ``form='one_minus'``: :math:`1 - \bar c`.

Only *correctly classified* samples count (``correct_only=True``, the authors'): those whose
per-step prediction ``argmax o_t`` is right at every step of the late window (the same
``late_rule``). Both forms are non-negative. The reduction over samples and layers (``reduce``):

* ``'max'`` (default, the authors'): per layer the largest value over the correctly classified
  samples (the authors multiply by the correctness mask and take the max over the batch), then
  the mean over layers; a batch with none costs zero;
* ``'mean'``: per sample the mean over layers, then the mean over the correctly classified
  samples (zero when there are none).

Cosines use the exact norms, ``dot / max(|a| |b|, eps)`` (the authors add ``1e-5`` under each
square root); two all-zero vectors count as identical (cosine 1).

Options are keyword arguments of :func:`make_regularizer` (``train.reg_options`` in a recipe);
an unknown option raises :class:`~fewstep.errors.ConfigError` naming
``train.reg_options.<key>``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch

from .errors import ConfigError, FewstepError

# (layer_name, spikes, membrane, v_threshold); spikes or membrane None (a neuron that recorded
# nothing) raises FewstepError with the fix
Record = tuple[str, torch.Tensor | None, torch.Tensor | None, torch.Tensor]
Regularizer = Callable[[Sequence[Record], torch.Tensor, torch.Tensor], torch.Tensor]

__all__ = ["LATE_RULES", "MEMBRANES", "REGULARIZERS", "late_count", "make_regularizer", "rcs_regularizer", "residual",
           "spike_ratio", "str_regularizer"]

LATE_RULES = ("slice", "at_least_one")
MEMBRANES = ("post_reset", "pre_reset")
RCS_REDUCTIONS = ("max", "mean")


def late_count(timesteps: int, late_fraction: float, rule: str = "slice") -> int:
    """How many final steps form the late reference (see the module docstring).

    ``'slice'`` is the authors' ``x[-int(late_fraction * T):]``: ``int(late_fraction * T)`` steps,
    or all ``T`` when that is 0 (``x[-0:]`` is the whole sequence). ``'at_least_one'`` is
    ``max(1, int(late_fraction * T))``."""
    k = int(timesteps * late_fraction)
    if rule == "slice":
        return k if k > 0 else timesteps
    if rule == "at_least_one":
        return max(1, k)
    raise ValueError(f"late_rule must be one of {LATE_RULES}, got {rule!r}")


def residual(spikes: torch.Tensor, membrane: torch.Tensor, v_threshold: torch.Tensor | float) -> torch.Tensor:
    """``r_t = s_t + relu(u_t / V_th)`` in float32, same shape as the inputs."""
    return spikes.float() + torch.relu(membrane.float() / v_threshold)


def spike_ratio(spikes: torch.Tensor, membrane: torch.Tensor, v_threshold: torch.Tensor | float,
                eps: float = 1e-6) -> torch.Tensor:
    """STF ``[T, B]``: ``||s_t|| / ||s_t + relu(u_t / V_th)||`` per step and sample (norms over
    all neurons, each ``sqrt(sum x^2 + eps^2)``)."""
    s = spikes.float().flatten(2)
    r = residual(spikes, membrane, v_threshold).flatten(2)
    e2 = eps * eps
    return (s.pow(2).sum(-1) + e2).sqrt() / (r.pow(2).sum(-1) + e2).sqrt()


def _check_record(record: Record) -> tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]:
    try:
        name, spikes, membrane, thr = record
    except (TypeError, ValueError):
        raise FewstepError(f"a regularizer record must be (name, spikes, membrane, v_threshold), got {record!r}") from None
    if spikes is None or membrane is None:
        raise FewstepError(f"layer {name!r} recorded no {'spikes' if spikes is None else 'membrane'}: set "
                           "neuron.record = True before the forward pass (the training engine does this)")
    if spikes.shape != membrane.shape or spikes.dim() < 3:
        raise FewstepError(f"layer {name!r}: spikes {tuple(spikes.shape)} and membrane {tuple(membrane.shape)} "
                           "must both be [T, B, ...] (multi-step mode)")
    return name, spikes, membrane, thr


def _check_common(late_fraction: float, late_rule: str, membrane: str) -> None:
    if not 0.0 < late_fraction <= 1.0:
        raise ConfigError("train.reg_options.late_fraction", f"must be in (0, 1], got {late_fraction}")
    if late_rule not in LATE_RULES:
        raise ConfigError("train.reg_options.late_rule", f"must be one of {', '.join(LATE_RULES)}, got {late_rule!r}")
    if membrane not in MEMBRANES:
        raise ConfigError("train.reg_options.membrane", f"must be one of {', '.join(MEMBRANES)}, got {membrane!r}")


def _wants(reg: Regularizer, membrane: str) -> Regularizer:
    """Tag ``reg`` with the membrane its records must carry (read by the training engine)."""
    reg.membrane = membrane  # type: ignore[attr-defined]
    return reg


def str_regularizer(late_fraction: float = 0.3, distance: str = "l2", eps: float = 1e-6,
                    late_rule: str = "at_least_one", membrane: str = "pre_reset") -> Regularizer:
    """STR (reconstruction, see the module docstring): early-step STF pulled towards the late STF."""
    _check_common(late_fraction, late_rule, membrane)
    if distance not in ("l1", "l2"):
        raise ConfigError("train.reg_options.distance", f"must be 'l1' or 'l2', got {distance!r}")
    if not eps > 0:
        raise ConfigError("train.reg_options.eps", f"must be > 0, got {eps}")

    def reg(records: Sequence[Record], logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        terms = []
        for record in records:
            _, spikes, u, thr = _check_record(record)
            stf = spike_ratio(spikes, u, thr, eps)  # [T, B]
            t = stf.shape[0]
            late = late_count(t, late_fraction, late_rule)
            ref = stf[t - late:].mean(0, keepdim=True).detach()
            early = stf[: t - late] if t > late else stf
            diff = early - ref
            terms.append((diff.pow(2) if distance == "l2" else diff.abs()).mean())
        if not terms:
            return logits.new_zeros((), dtype=torch.float32)
        return torch.stack(terms).mean()

    return _wants(reg, membrane)


def _cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Cosine similarity over the last dim; 1 where both vectors are zero."""
    dot = (a * b).sum(-1)
    na, nb = a.pow(2).sum(-1).sqrt(), b.pow(2).sum(-1).sqrt()
    cos = dot / (na * nb).clamp_min(eps)
    both_zero = (na <= eps) & (nb <= eps)
    return torch.where(both_zero, torch.ones_like(cos), cos)


def _correct_mask(logits: torch.Tensor, targets: torch.Tensor, late_fraction: float, late_rule: str) -> torch.Tensor:
    """Float ``[B]``: 1 where ``argmax o_t`` is right at every step of the late window."""
    t_out = logits.shape[0]
    late = late_count(t_out, late_fraction, late_rule)
    return (logits[t_out - late:].detach().argmax(-1) == targets.unsqueeze(0)).all(0).float()


def _rcs_layer_value(record: Record, late_fraction: float, late_rule: str, form: str, delta: float) -> torch.Tensor:
    """The per-sample RCS value ``[B]`` of one layer (non-negative; 0 at perfect consistency)."""
    _, spikes, u, thr = _check_record(record)
    r = residual(spikes, u, thr).flatten(2)  # [T, B, N]
    t = r.shape[0]
    late = late_count(t, late_fraction, late_rule)
    ref = r[t - late:].mean(0, keepdim=True).detach()
    cos = _cosine(r, ref.expand_as(r)).mean(0)  # [B]
    if form == "inverse":
        return 1.0 / (cos + delta) - 1.0 / (1.0 + delta)
    return 1.0 - cos


def rcs_regularizer(late_fraction: float = 0.3, form: str = "inverse", delta: float = 1e-5,
                    correct_only: bool = True, late_rule: str = "slice", reduce: str = "max",
                    membrane: str = "post_reset") -> Regularizer:
    """RCS (authors' code, see the module docstring): cosine of each step's ``r_t`` with the
    detached late mean; inverse mean similarity, max over the correctly classified samples per
    layer, mean over layers (``reduce='mean'``: mean over layers, then over correct samples)."""
    _check_common(late_fraction, late_rule, membrane)
    if form not in ("inverse", "one_minus"):
        raise ConfigError("train.reg_options.form", f"must be 'inverse' or 'one_minus', got {form!r}")
    if not delta > 0:
        raise ConfigError("train.reg_options.delta", f"must be > 0, got {delta}")
    if reduce not in RCS_REDUCTIONS:
        raise ConfigError("train.reg_options.reduce", f"must be one of {', '.join(RCS_REDUCTIONS)}, got {reduce!r}")

    def reg(records: Sequence[Record], logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if correct_only:
            mask = _correct_mask(logits, targets, late_fraction, late_rule)
        else:
            mask = torch.ones(logits.shape[1], device=logits.device)
        per_layer = [_rcs_layer_value(rec, late_fraction, late_rule, form, delta) for rec in records]
        if not per_layer:
            return logits.new_zeros((), dtype=torch.float32)
        values = torch.stack(per_layer)  # [layers, B]
        if reduce == "max":  # the authors': (value * mask).max over samples, per layer
            return (values * mask).amax(1).mean()
        return (values.mean(0) * mask).sum() / mask.sum().clamp_min(1.0)

    return _wants(reg, membrane)


REGULARIZERS: dict[str, Callable[..., Regularizer]] = {"str": str_regularizer, "rcs": rcs_regularizer}


def make_regularizer(name: str, **options) -> Regularizer:
    """A regularizer ``(records, logits, targets) -> scalar`` by name (``'str'`` or ``'rcs'``).

    ``options`` are the factory's named parameters (``train.reg_options``): STR takes
    ``late_fraction=0.3, distance='l2', eps=1e-6, late_rule='at_least_one', membrane='pre_reset'``;
    RCS ``late_fraction=0.3, form='inverse', delta=1e-5, correct_only=True, late_rule='slice',
    reduce='max', membrane='post_reset'``. The returned callable's ``membrane`` attribute says
    which membrane its records must carry.
    """
    if name not in REGULARIZERS:
        raise ConfigError("train.regularizer", f"must be one of {', '.join(REGULARIZERS)}, got {name!r}")
    factory = REGULARIZERS[name]
    params = inspect.signature(factory).parameters
    for key, value in options.items():
        if key not in params:
            raise ConfigError(f"train.reg_options.{key}", f"unknown option of regularizer {name!r}; known: "
                              f"{', '.join(params)}")
        default = params[key].default
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, type(default))
        if not ok:
            raise ConfigError(f"train.reg_options.{key}", f"expected {type(default).__name__}, got "
                              f"{type(value).__name__} {value!r}")
    return factory(**options)
