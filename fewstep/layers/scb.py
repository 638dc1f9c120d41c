r"""Synaptic current blocks (SCB): a convolution whose output drives a synapse before the neuron.

**Reconstruction.** Xu, Liu and Yang (arXiv 2203.10006; ``methods.md`` section 1) name the SCB
and say it "balances the sharp change between adjacent steps" of the few-step currents that
STC produces; the paper's body is not public. What follows is fewstep's reading of it,
implemented as documented, configurable choices.

An SCB is a stateless synaptic operation (conv + BatchNorm, or any folded modules such as
pool + conv + BN) computed for every step at once, ``y[t] = BN(conv(S_in[t]))``, followed by a
temporal filter, the *synapse*, whose output ``I[t]`` is the neuron's input current:

* ``kind="exp"`` (default): a first-order (exponential) synapse

  .. math::

      I[t] = \lambda_s I[t-1] + y[t], \qquad I[-1] = 0,

  with :math:`\lambda_s = \mathrm{sigmoid}(a)` learnable (per layer, or per output channel with
  ``per_channel=True``) or fixed (``learnable=False``, any :math:`\lambda_s \in [0, 1]`).
* ``kind="causal"``: a short learnable causal temporal kernel over adjacent steps

  .. math::

      I[t] = \sum_{k=0}^{K-1} w_k\, y[t-k], \qquad y[t<0] = 0,

  ``K = kernel_size`` (2 by default), initialised to the truncated exponential
  :math:`w_k = \lambda_s^k` (so with ``K >= T`` it starts equal to the ``exp`` synapse).
* ``kind="none"``: no synapse, ``I[t] = y[t]`` (the ablation: a plain conv + BN block).

Because the conv is linear and stateless, it runs once on all ``T * B`` frames (time folded into
batch, see :class:`~fewstep.layers.TimeFold`); the synapse is a cheap scan over ``T`` on its
output. Both filters are causal, so the block runs step by step too: in single-step mode
(``step_mode = "s"``, set by :func:`fewstep.neurons.set_step_mode`) the input is one step
``[B, ...]`` and the synapse's state (``I[t-1]``, or the last ``K - 1`` inputs) is carried
between calls until ``reset_state()`` (called by :func:`fewstep.neurons.reset_net`). In the
default multi-step mode each call starts from a zero state unless ``keep_state = True``.

Energy accounting (:mod:`fewstep.energy`): the conv is an ordinary ``nn.Conv2d`` and is counted
in SOPs when its input is spikes; the synapse update (one multiply-add per element and step, or
``K``) is treated like a membrane update, i.e. not counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from .timefold import TimeFold

__all__ = ["SCB", "SYNAPSE_KINDS", "Synapse", "SynapticConv", "causal_synapse", "exp_synapse"]

SYNAPSE_KINDS = ("exp", "causal", "none")


# --------------------------------------------------------------------------- functional core


def exp_synapse(y: torch.Tensor, decay: torch.Tensor | float,
                state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""First-order synapse over ``y [T, ...]``:

    .. math::

        I[t] = \lambda_s I[t-1] + y[t], \qquad t = 0, \dots, T - 1,

    with :math:`\lambda_s` = ``decay`` (a number or a tensor broadcastable to one step) and
    :math:`I[-1]` = ``state`` (zero when ``None``).

    Returns ``(I [T, ...], I[T-1])``."""
    out = []
    current = state
    for t in range(y.shape[0]):
        current = y[t] if current is None else decay * current + y[t]
        out.append(current)
    return torch.stack(out), cast(torch.Tensor, current)  # set: y has a step (stack raises on none)


def causal_synapse(y: torch.Tensor, weights: torch.Tensor,
                   history: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Causal temporal kernel over ``y [T, ...]``:

    .. math::

        I[t] = \sum_{k=0}^{K-1} w_k\, y[t-k], \qquad w_k = \text{weights}[k],

    ``weights`` is ``[K, ...]`` (each ``weights[k]`` broadcastable to one step); ``history`` holds
    the ``K - 1`` inputs :math:`y[-K+1], \dots, y[-1]` before ``y[0]``, oldest first (zeros when
    ``None``).
    Returns ``(I [T, ...], the last K - 1 inputs)`` (the history for the next call)."""
    k = weights.shape[0]
    if history is None:
        history = y.new_zeros((k - 1, *y.shape[1:]))
    padded = torch.cat([history, y]) if k > 1 else y
    steps = y.shape[0]
    out = weights[0] * y
    for j in range(1, k):
        out = out + weights[j] * padded[k - 1 - j:k - 1 - j + steps]
    return out, padded[padded.shape[0] - (k - 1):]


# --------------------------------------------------------------------------- modules


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


class Synapse(nn.Module):
    r"""The SCB's temporal filter on currents ``[T, B, C, ...]`` (or one step ``[B, C, ...]``):

    .. math::

        I[t] = \begin{cases} \lambda_s I[t-1] + y[t], \quad I[-1] = 0 & \text{kind="exp"}\\
                             \sum_{k=0}^{K-1} w_k\, y[t-k], \quad y[t<0] = 0 & \text{kind="causal"}\\
                             y[t] & \text{kind="none"}\end{cases}

    (:func:`exp_synapse`, :func:`causal_synapse`), with :math:`\lambda_s = \mathrm{sigmoid}(a)`
    when learnable and :math:`w_k` starting at :math:`\lambda_s^k`.

    Args:
        kind: ``"exp"``, ``"causal"`` or ``"none"`` (see the module docstring).
        channels: number of channels ``C``; needed when ``per_channel=True``.
        decay: initial (or fixed) :math:`\lambda_s`; for ``"causal"`` the kernel starts at
            ``decay ** k``.
        learnable: learn :math:`\lambda_s` (stored as ``sigmoid(decay_logit)``, so it stays in
            (0, 1)) or the causal weights.
        per_channel: one :math:`\lambda_s` (or kernel) per channel instead of one per layer.
        kernel_size: ``K`` of the causal kernel.
        channel_dim: axis of ``C`` within one step ``[B, C, ...]`` (1 for conv maps and for
            ``[B, features]``).
    """

    _decay: torch.Tensor  # a buffer (kind "exp", not learnable), typed past nn.Module.__getattr__

    def __init__(self, kind: str = "exp", channels: int | None = None, *, decay: float = 0.5,
                 learnable: bool = True, per_channel: bool = False, kernel_size: int = 2,
                 channel_dim: int = 1, step_mode: str = "m") -> None:
        super().__init__()
        if kind not in SYNAPSE_KINDS:
            raise ValueError(f"synapse kind must be one of {', '.join(SYNAPSE_KINDS)}, got {kind!r}")
        if per_channel and (channels is None or channels < 1):
            raise ValueError("per_channel=True needs the number of channels")
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"synapse decay must lie in [0, 1], got {decay}")
        if kind == "exp" and learnable and not 0.0 < decay < 1.0:
            raise ValueError("a learnable synapse decay is stored as sigmoid(a): it needs 0 < decay < 1")
        if int(kernel_size) != kernel_size or kernel_size < 1:
            raise ValueError(f"kernel_size must be an integer >= 1, got {kernel_size}")
        if step_mode not in ("m", "s"):
            raise ValueError(f"step_mode must be 'm' or 's', got {step_mode!r}")
        self.kind = kind
        self.channels = channels
        self.per_channel = per_channel
        self.learnable = learnable
        self.kernel_size = int(kernel_size) if kind == "causal" else 1
        self.channel_dim = channel_dim
        self.step_mode = step_mode
        self.keep_state = False
        self.state: torch.Tensor | None = None  # exp: I[t-1]; causal: the last K - 1 inputs
        shape: tuple[int, ...] = (cast(int, channels),) if per_channel else ()  # channels checked above
        if kind == "exp":
            if learnable:
                self.decay_logit = nn.Parameter(torch.full(shape, _logit(decay)))
            else:
                self.register_buffer("_decay", torch.full(shape, float(decay)))
        elif kind == "causal":
            init = torch.tensor([decay ** k for k in range(self.kernel_size)]).view(-1, *([1] * len(shape)))
            init = init.expand(self.kernel_size, *shape).clone()
            if learnable:
                self.weight = nn.Parameter(init)
            else:
                self.register_buffer("weight", init)

    @property
    def decay(self) -> torch.Tensor:
        """:math:`\\lambda_s` (``exp`` only): a scalar or one value per channel."""
        if self.kind != "exp":
            raise AttributeError(f"a {self.kind!r} synapse has no decay")
        return torch.sigmoid(self.decay_logit) if self.learnable else self._decay

    def _per_step(self, p: torch.Tensor, step_dim: int, lead: int = 0) -> torch.Tensor:
        """Reshape a per-channel parameter ``[lead..., C]`` to broadcast over one step of
        ``step_dim`` dimensions (channel axis ``self.channel_dim``)."""
        if not self.per_channel:
            return p
        trailing = step_dim - self.channel_dim - 1
        return p.reshape(*p.shape[:lead], -1, *([1] * trailing))

    def reset_state(self) -> None:
        """Forget the carried synapse state (between independent samples)."""
        self.state = None

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if self.kind == "none":
            return y
        single = self.step_mode == "s"
        seq = y.unsqueeze(0) if single else y
        step_dim = seq.dim() - 1
        carry = single or self.keep_state
        state = self.state if carry else None
        if state is not None and state.shape[-step_dim:] != seq.shape[1:]:
            raise ValueError(f"synapse state of shape {tuple(state.shape)} does not fit input steps of shape "
                             f"{tuple(seq.shape[1:])}; call reset_net(model) between batches")
        if self.kind == "exp":
            out, new_state = exp_synapse(seq, self._per_step(self.decay, step_dim), state)
        else:
            out, new_state = causal_synapse(seq, self._per_step(self.weight, step_dim, lead=1), state)
        if carry:
            self.state = new_state
        return out[0] if single else out

    def extra_repr(self) -> str:
        text = f"kind={self.kind}"
        if self.kind == "exp":
            d = self.decay.detach()
            text += f", decay={float(d.mean()):.3g}" + (" (mean)" if d.numel() > 1 else "")
        elif self.kind == "causal":
            text += f", kernel_size={self.kernel_size}"
        if self.kind != "none":
            text += f", learnable={self.learnable}, per_channel={self.per_channel}"
        return text + f", step_mode={self.step_mode}"


class SCB(nn.Module):
    r"""Synaptic current block: stateless ``modules`` over ``[T, B, ...]`` (folded over time),
    then a :class:`Synapse`. ``SCB(nn.MaxPool2d(2), nn.Conv2d(...), nn.BatchNorm2d(c),
    synapse="exp", channels=c)``. With ``synapse="exp"`` (the default) it computes

    .. math::

        y[t] = \mathrm{modules}(S_{in}[t]), \qquad I[t] = \lambda_s I[t-1] + y[t], \quad I[-1] = 0,

    and with ``"causal"`` :math:`I[t] = \sum_{k=0}^{K-1} w_k\, y[t-k]` (see :class:`Synapse`).

    ``synapse_kw`` go to :class:`Synapse` (``decay``, ``learnable``, ``per_channel``,
    ``kernel_size``). With ``synapse="none"`` it computes exactly ``TimeFold(*modules)``.
    """

    def __init__(self, *modules: nn.Module, synapse: str = "exp", channels: int | None = None,
                 **synapse_kw) -> None:
        super().__init__()
        self.op = TimeFold(*modules)
        self.synapse = Synapse(synapse, channels, **synapse_kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.synapse(self.op(x))


class SynapticConv(SCB):
    r"""``conv (+ BN)`` driving a synapse: the SCB of ``methods.md`` section 1,

    .. math::

        y[t] = \mathrm{BN}(\mathrm{conv}(S_{in}[t])), \qquad I[t] = \lambda_s I[t-1] + y[t], \quad I[-1] = 0

    for the default ``synapse="exp"`` (:class:`Synapse` for the others).

    Args:
        in_channels, out_channels, kernel_size, stride, padding: of the ``nn.Conv2d`` (padding
            defaults to ``kernel_size // 2``, "same" for odd kernels and stride 1).
        norm: follow the conv by ``BatchNorm2d`` (statistics shared over steps).
        pre: stateless modules run before the conv (e.g. ``[nn.MaxPool2d(2)]``).
        synapse: ``"exp"``, ``"causal"`` or ``"none"``; ``synapse_kw`` as in :class:`Synapse`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int | None = None, *, norm: bool = True, bias: bool | None = None,
                 pre: Sequence[nn.Module] = (), synapse: str = "exp", **synapse_kw) -> None:
        padding = kernel_size // 2 if padding is None else padding
        bias = not norm if bias is None else bias
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=bias)
        modules = [*pre, conv] + ([nn.BatchNorm2d(out_channels)] if norm else [])
        super().__init__(*modules, synapse=synapse, channels=out_channels, **synapse_kw)
