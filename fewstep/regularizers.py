r"""Temporal regularizers for anytime (cutoff) inference: STR and RCS.

Both make the network's internal representation settle early, so a softmax or margin cutoff
(:mod:`fewstep.infer`) can stop most samples after a few steps at little loss of accuracy. The
training engine calls ``reg(records, logits, targets)`` after each forward pass, with one record
``(layer_name, spikes, membrane, v_threshold)`` per spiking layer: ``spikes`` and ``membrane``
(the pre-reset potential :math:`h_t`) are ``[T, B, ...]`` and ``v_threshold`` a scalar tensor;
``logits`` are the per-step outputs ``[T, B, classes]``. Everything is computed in float32.

Common definitions, per layer, step ``t`` and sample ``b`` (norms over all neurons of the layer):

.. math::

    r_t = s_t + \mathrm{relu}(h_t / V_{th}), \qquad
    L = \max(1, \lfloor T \cdot \text{late\_fraction} \rfloor), \qquad
    \text{late steps} = \{T - L + 1, \dots, T\}.

**STR** (spike-timing regularizer of Wu et al., arXiv 2405.00699). *Reconstruction*: the paper
says STR "regulates the ratio between the strength of spikes and membrane potential at each
timestep"; its code is not public. We define the spatial-temporal factor

.. math::

    \mathrm{STF}_t = \frac{\lVert s_t \rVert_2}{\lVert r_t \rVert_2}
    \quad\text{with}\quad \lVert x \rVert_2 := \sqrt{\textstyle\sum x^2 + \varepsilon^2}

(so ``STF`` is in ``[0, 1]`` for non-negative spikes and is finite and differentiable
everywhere; a silent layer, ``s = 0`` and ``h <= 0``, has ``STF = 1``), the late reference
:math:`\overline{\mathrm{STF}} = \mathrm{mean}_{t \in \text{late}} \mathrm{STF}_t` (detached),
and the loss

.. math::

    \mathcal{L}_{STR} = \mathrm{mean}_{\text{layers}}\ \mathrm{mean}_{b}\
        \mathrm{mean}_{t \in \text{early}}\ d(\mathrm{STF}_t, \overline{\mathrm{STF}})

with ``early`` the steps before the late window (all steps when the window covers all of them,
i.e. ``T = 1``) and ``d`` the squared difference (``distance='l2'``, default) or the absolute
difference (``'l1'``). It is zero when every step of every layer is the same.

**RCS** (representation consistency, from the authors' public code, SNNCutoff
``regularizer/rcs_snn.py``): per layer and sample the cosine similarity of every step's
:math:`r_t` with the detached mean of the late steps' :math:`r_t`, averaged over all ``T``
steps: :math:`\bar c = \mathrm{mean}_t \cos(r_t, \bar r_{late})`. The loss is the inverse
similarity, shifted so that perfect consistency costs zero (the shift is a constant, so the
gradients are the authors'):

* ``form='inverse'`` (default): :math:`1 / (\bar c + \delta) - 1 / (1 + \delta)`, ``delta = 1e-5``
  (the authors use :math:`1 / (\bar c + \delta)`);
* ``form='one_minus'``: :math:`1 - \bar c`.

It is averaged over layers and over the *correctly classified* samples only: those whose
per-step prediction ``argmax o_t`` is right at every late step (as in the authors' code). A
batch with none costs zero. (The authors multiply by the correctness mask and then average over
the whole batch, which scales the loss by the fraction correct; we divide by the number of
correct samples instead.) Cosines use the exact norms, ``dot / max(|a| |b|, eps)``; two all-zero
vectors count as identical (cosine 1).

Options are keyword arguments of :func:`make_regularizer` (``train.reg_options`` in a recipe);
an unknown option raises :class:`~fewstep.errors.ConfigError` naming
``train.reg_options.<key>``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch

from .errors import ConfigError, FewstepError

Record = tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]
Regularizer = Callable[[Sequence[Record], torch.Tensor, torch.Tensor], torch.Tensor]

__all__ = ["REGULARIZERS", "make_regularizer", "rcs_regularizer", "residual", "spike_ratio", "str_regularizer"]


def _late_count(timesteps: int, late_fraction: float) -> int:
    return max(1, int(timesteps * late_fraction))


def residual(spikes: torch.Tensor, membrane: torch.Tensor, v_threshold: torch.Tensor | float) -> torch.Tensor:
    """``r_t = s_t + relu(h_t / V_th)`` in float32, same shape as the inputs."""
    return spikes.float() + torch.relu(membrane.float() / v_threshold)


def spike_ratio(spikes: torch.Tensor, membrane: torch.Tensor, v_threshold: torch.Tensor | float,
                eps: float = 1e-6) -> torch.Tensor:
    """STF ``[T, B]``: ``||s_t|| / ||s_t + relu(h_t / V_th)||`` per step and sample (norms over
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


def str_regularizer(late_fraction: float = 0.3, distance: str = "l2", eps: float = 1e-6) -> Regularizer:
    """STR (reconstruction, see the module docstring): early-step STF pulled towards the late STF."""
    if not 0.0 < late_fraction <= 1.0:
        raise ConfigError("train.reg_options.late_fraction", f"must be in (0, 1], got {late_fraction}")
    if distance not in ("l1", "l2"):
        raise ConfigError("train.reg_options.distance", f"must be 'l1' or 'l2', got {distance!r}")
    if not eps > 0:
        raise ConfigError("train.reg_options.eps", f"must be > 0, got {eps}")

    def reg(records: Sequence[Record], logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        terms = []
        for record in records:
            _, spikes, membrane, thr = _check_record(record)
            stf = spike_ratio(spikes, membrane, thr, eps)  # [T, B]
            t = stf.shape[0]
            late = _late_count(t, late_fraction)
            ref = stf[t - late:].mean(0, keepdim=True).detach()
            early = stf[: t - late] if t > late else stf
            diff = early - ref
            terms.append((diff.pow(2) if distance == "l2" else diff.abs()).mean())
        if not terms:
            return logits.new_zeros((), dtype=torch.float32)
        return torch.stack(terms).mean()

    return reg


def _cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Cosine similarity over the last dim; 1 where both vectors are zero."""
    dot = (a * b).sum(-1)
    na, nb = a.pow(2).sum(-1).sqrt(), b.pow(2).sum(-1).sqrt()
    cos = dot / (na * nb).clamp_min(eps)
    both_zero = (na <= eps) & (nb <= eps)
    return torch.where(both_zero, torch.ones_like(cos), cos)


def rcs_regularizer(late_fraction: float = 0.3, form: str = "inverse", delta: float = 1e-5,
                    correct_only: bool = True) -> Regularizer:
    """RCS (authors' code, see the module docstring): cosine of each step's ``r_t`` with the
    detached late mean; inverse mean similarity over correctly classified samples."""
    if not 0.0 < late_fraction <= 1.0:
        raise ConfigError("train.reg_options.late_fraction", f"must be in (0, 1], got {late_fraction}")
    if form not in ("inverse", "one_minus"):
        raise ConfigError("train.reg_options.form", f"must be 'inverse' or 'one_minus', got {form!r}")
    if not delta > 0:
        raise ConfigError("train.reg_options.delta", f"must be > 0, got {delta}")

    def reg(records: Sequence[Record], logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        t_out = logits.shape[0]
        if correct_only:
            late = _late_count(t_out, late_fraction)
            mask = (logits[t_out - late:].detach().argmax(-1) == targets.unsqueeze(0)).all(0).float()  # [B]
        else:
            mask = torch.ones(logits.shape[1], device=logits.device)
        per_layer = []
        for record in records:
            _, spikes, membrane, thr = _check_record(record)
            r = residual(spikes, membrane, thr).flatten(2)  # [T, B, N]
            t = r.shape[0]
            late = _late_count(t, late_fraction)
            ref = r[t - late:].mean(0, keepdim=True).detach()
            cos = _cosine(r, ref.expand_as(r)).mean(0)  # [B]
            if form == "inverse":
                value = 1.0 / (cos + delta) - 1.0 / (1.0 + delta)
            else:
                value = 1.0 - cos
            per_layer.append(value)
        if not per_layer:
            return logits.new_zeros((), dtype=torch.float32)
        per_sample = torch.stack(per_layer).mean(0)  # [B]
        return (per_sample * mask).sum() / mask.sum().clamp_min(1.0)

    return reg


REGULARIZERS: dict[str, Callable[..., Regularizer]] = {"str": str_regularizer, "rcs": rcs_regularizer}


def make_regularizer(name: str, **options) -> Regularizer:
    """A regularizer ``(records, logits, targets) -> scalar`` by name (``'str'`` or ``'rcs'``).

    ``options`` are the factory's named parameters (``train.reg_options``): STR takes
    ``late_fraction=0.3, distance='l2', eps=1e-6``; RCS ``late_fraction=0.3, form='inverse',
    delta=1e-5, correct_only=True``.
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
