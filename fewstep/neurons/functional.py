r"""Pure-PyTorch reference dynamics of every fewstep neuron.

This is the oracle: fused kernels are checked against it, and it is the CPU path.
All neurons (IF, LIF, PLIF, MT-LIF, soft-reset IF) are one model with parameters:

.. math::

    h_t &= v_{rest} + \lambda (v_{t-1} - v_{rest}) + x_t        &\text{(charge)}\\
    s_t &= \sum_{k=1}^{K} H(h_t - k\,V_{th})                     &\text{(fire, } s_t\in\{0..K\})\\
    v_t &= \begin{cases} h_t (1 - H(h_t - V_{th})) + v_{reset} H(h_t - V_{th}) & \text{hard reset}\\
                         h_t - s_t V_{th} & \text{soft reset (subtraction)}\end{cases}

with decay :math:`\lambda` (1 for IF; a constant or ``sigmoid(w)`` for LIF/PLIF),
:math:`v_{rest} = v_{reset}` under hard reset and 0 under soft reset. With ``K = 1`` the
multi-threshold neuron is exactly the single-threshold one with the same reset, decay,
threshold and surrogate (``K`` only adds the terms ``k >= 2``); it is not the default LIF unless
those match too (MT-LIF defaults to soft reset and a learnable decay, LIF to hard reset and 0.5). ``H`` is the Heaviside step whose backward pass is a surrogate derivative.
The output is :math:`s_t` or, with ``scale_output``, :math:`s_t V_{th}` (spike amplitude).
"""

from __future__ import annotations

import torch

from ..neuron_params import NeuronParams, Scalar, StepOutput  # noqa: F401  (Scalar: re-exported)


def initial_state(x: torch.Tensor, p: NeuronParams) -> torch.Tensor:
    """The resting state matching one step of input ``x``."""
    rest = p.v_reset if p.reset == "hard" else 0.0
    return torch.full_like(x, rest)


def neuron_step(x: torch.Tensor, v: torch.Tensor, p: NeuronParams) -> StepOutput:
    r"""Advance one time step: charge, fire, reset (the module docstring's equations).

    .. math::

        h_t &= v_{rest} + \lambda (v_{t-1} - v_{rest}) + x_t &\text{(charge)}\\
        s_t &= \sum_{k=1}^{K} H(h_t - k\,V_{th}) &\text{(fire)}\\
        v_t &= \begin{cases} h_t (1 - H(h_t - V_{th})) + v_{reset} H(h_t - V_{th}) & \text{hard reset}\\
                             h_t - s_t V_{th} & \text{soft reset}\end{cases} &\text{(reset)}

    with :math:`\lambda` = ``p.decay``, :math:`V_{th}` = ``p.v_threshold``, ``K`` =
    ``p.num_thresholds`` and :math:`v_{rest} = v_{reset}` (hard) or 0 (soft). Returns
    ``(s_t, h_t, v_t)``, the first as :math:`s_t V_{th}` with ``p.scale_output``."""
    if p.reset == "hard":
        h = p.v_reset + p.decay * (v - p.v_reset) + x
    elif p.reset == "soft":
        h = p.decay * v + x
    else:
        raise ValueError(f"reset must be 'hard' or 'soft', got {p.reset!r}")
    first = p.surrogate(h - p.v_threshold)
    s = first
    for k in range(2, p.num_thresholds + 1):
        s = s + p.surrogate(h - k * p.v_threshold)
    if p.reset == "hard":
        r = first.detach() if p.detach_reset else first
        v_new = h * (1.0 - r) + p.v_reset * r
    else:
        r = s.detach() if p.detach_reset else s
        v_new = h - r * p.v_threshold
    out = s * p.v_threshold if p.scale_output else s
    return StepOutput(out, h, v_new)


def neuron_multistep(
    x_seq: torch.Tensor, p: NeuronParams, v0: torch.Tensor | None = None
) -> StepOutput:
    """Run ``x_seq`` of shape ``[T, B, ...]``; returns spikes and membranes ``[T, B, ...]``
    and the final state ``[B, ...]``."""
    if x_seq.dim() < 2 or x_seq.shape[0] == 0:
        raise ValueError(
            f"expected a time-major tensor [T, B, ...] with T >= 1, got shape {tuple(x_seq.shape)}"
        )
    v = initial_state(x_seq[0], p) if v0 is None else v0
    spikes, membranes = [], []
    for t in range(x_seq.shape[0]):
        s, h, v = neuron_step(x_seq[t], v, p)
        assert h is not None  # neuron_step always returns the membrane
        spikes.append(s)
        membranes.append(h)
    return StepOutput(torch.stack(spikes), torch.stack(membranes), v)
