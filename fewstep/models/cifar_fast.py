r"""``cifar_fast``: a small, fast CIFAR network family (airbench-style) in three forms from one
definition.

Layout (widths ``w0..w3``, default 32, 64, 128, 256; about 86 M multiply-accumulates per 32x32
image and step)::

    stem   conv3x3(3 -> w0) -> BN                                  (stateless: once per image)
    body   act
           3 x [ conv3x3 -> BN -> maxpool 2 -> act -> conv3x3 -> BN -> act ]   (w0->w1->w2->w3)
           flatten -> dropout -> linear(w3 x 4 x 4 -> classes)

Pooling sits between BN and the activation, so the neurons of each block's first conv run at a
quarter of its resolution, and a BN folds into the conv before it across nothing.

* ``cifar_fast`` (SNN): ``act`` is the recipe's neuron (LIF, MT-LIF, ...), trained directly.
* ``cifar_fast_dnn`` (DNN for conversion): ``act`` is a :class:`~fewstep.models.dnn.ClippedReLU`
  (trainable ceiling ``mu``), BN kept for fast training.
* ``cifar_fast_converted`` (its SNN): the same layers with each BN folded into the conv before it
  (the BN slots hold ``nn.Identity`` so parameter names line up) and every clipped ReLU a
  :class:`~fewstep.models.dnn.ConvertedIF`. :func:`fold_batchnorm` does the folding;
  ``fewstep convert`` calls it.

All three are :class:`~fewstep.models.base.SpikingModel` subclasses returning ``[T, B, classes]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import torch
from torch import nn

from ..errors import ConfigError
from ..layers import BatchNorm2d, Dropout, MaxPool2d, TimeFold
from ..neurons import NeuronSpec
from .base import SpikingModel
from .dnn import DEFAULT_SURROGATE_GAIN, ClippedReLU, _activation
from .registry import register_model
from .vgg import check_head_options, scale_channels

__all__ = ["CifarFast", "cifar_fast_layers", "fold_batchnorm"]

DEFAULT_WIDTHS = (32, 64, 128, 256)


def cifar_fast_layers(input_shape: tuple[int, ...], num_classes: int, act: Callable[[], nn.Module], *,
                      widths: Sequence[int] = DEFAULT_WIDTHS, width_mult: float = 1.0, bn: bool = True,
                      dropout: float = 0.0) -> tuple[nn.Module, nn.Module]:
    """``(stem, body)``; ``width_mult`` scales ``widths``; ``bn=False`` puts ``nn.Identity`` in every BN
    slot and biases in the convs."""
    if len(input_shape) != 3:
        raise ConfigError("model.input_shape", f"needs (C, H, W), got {input_shape}")
    if isinstance(widths, (str, bytes)) or not hasattr(widths, "__len__"):
        raise ConfigError("model.options.widths", f"needs four positive channel counts, got {widths!r}")
    widths = [scale_channels(int(w), width_mult) if int(w) > 0 else int(w) for w in widths]
    if len(widths) != 4 or any(w < 1 for w in widths):
        raise ConfigError("model.options.widths", f"needs four positive channel counts, got {widths}")
    c, h, w = input_shape
    if h < 8 or w < 8:
        raise ConfigError("model.input_shape", f"{h}x{w} is too small for three 2x2 pools (needs >= 8x8)")
    check_head_options(dropout=dropout)

    def conv(c_in: int, c_out: int) -> nn.Conv2d:
        return nn.Conv2d(c_in, c_out, 3, padding=1, bias=not bn)

    def norm(ch: int) -> nn.Module:
        return BatchNorm2d(ch) if bn else nn.Identity()

    stem = nn.Sequential(conv(c, widths[0]), norm(widths[0]))
    layers: list[nn.Module] = [act()]
    for c_in, c_out in zip(widths[:-1], widths[1:]):
        layers += [TimeFold(conv(c_in, c_out), norm(c_out), MaxPool2d(2)), act(),
                   TimeFold(conv(c_out, c_out), norm(c_out)), act()]
    # Flatten (not global pooling): the read-out then takes spikes, so it accumulates (SOPs) in the
    # SNNs, and it is linear, so a conversion maps it exactly.
    layers.append(TimeFold(nn.Flatten(), Dropout(dropout), nn.Linear(widths[-1] * (h // 8) * (w // 8), num_classes)))
    return stem, nn.Sequential(*layers)


class CifarFast(SpikingModel):
    """The ``cifar_fast`` family (see the module docstring); ``kind`` is ``snn``, ``dnn`` or
    ``converted``."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, timesteps: int, kind: str,
                 act: Callable[[], nn.Module], **options) -> None:
        super().__init__(input_shape, num_classes, timesteps)
        self.kind = kind
        self.spiking = kind != "dnn"  # what fewstep.convert and the energy count read
        self.stem, self.body = cifar_fast_layers(input_shape, num_classes, act, bn=kind != "converted", **options)


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every eval-mode ``BatchNorm2d`` that directly follows a ``Conv2d`` in a ``Sequential``
    into that conv (weight scaled by ``gamma / sigma``, bias ``beta - mean gamma / sigma``), and put
    ``nn.Identity`` in its place. In place; returns ``model``. The folded model computes the same
    function as the original in eval mode."""
    for seq in model.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
                continue
            if bn.running_mean is None:
                raise ValueError(f"cannot fold {b}: a BatchNorm2d without running statistics")
            scale = (cast(torch.Tensor, bn.running_var) + bn.eps).rsqrt()  # tracked with running_mean
            if bn.affine:
                scale = scale * bn.weight
            shift = -bn.running_mean * scale
            if bn.affine:
                shift = shift + bn.bias
            weight = conv.weight * scale.view(-1, 1, 1, 1)
            bias = shift if conv.bias is None else conv.bias * scale + shift
            conv.weight.copy_(weight)
            if conv.bias is None:
                conv.bias = nn.Parameter(bias.clone())
            else:
                conv.bias.copy_(bias)
            seq._modules[b] = nn.Identity()
    return model


def _opts(kw: dict, extra: frozenset[str] = frozenset()) -> dict:
    unknown = set(kw) - {"widths", "width_mult", "dropout", "mu_init"} - extra
    if unknown:
        raise ConfigError("model.options", f"cifar_fast models take widths, width_mult, dropout (mu_init for "
                                           f"the DNN and its SNN, surrogate_gain for the converted SNN); "
                                           f"got {sorted(unknown)}")
    return {k: v for k, v in kw.items() if k not in ("mu_init", *extra)}


@register_model("cifar_fast")
def cifar_fast(*, num_classes: int, input_shape: tuple[int, ...], timesteps: int, neuron: NeuronSpec,
               **kw) -> CifarFast:
    """The directly trained SNN. Options: ``widths`` (four channel counts), ``width_mult``, ``dropout``."""
    return CifarFast(input_shape, num_classes, timesteps, "snn", neuron.build, **_opts(kw))


@register_model("cifar_fast_dnn")
def cifar_fast_dnn(*, num_classes: int, input_shape: tuple[int, ...], timesteps: int, neuron=None,
                   **kw) -> CifarFast:
    """The DNN for conversion (clipped ReLUs, BN). Options: ``widths``, ``width_mult``, ``dropout``, ``mu_init``."""
    mu = float(kw.get("mu_init", 4.0))
    if not mu > 0:
        raise ConfigError("model.options.mu_init", f"must be > 0, got {mu}")
    return CifarFast(input_shape, num_classes, timesteps, "dnn", lambda: ClippedReLU(mu), **_opts(kw))


@register_model("cifar_fast_converted")
def cifar_fast_converted(*, num_classes: int, input_shape: tuple[int, ...], timesteps: int, neuron=None,
                         **kw) -> CifarFast:
    """The SNN of ``cifar_fast_dnn``: BN folded into the convs, ConvertedIF neurons (same options, plus
    ``surrogate_gain``: 2, the default, is Datta and Beerel's derivative 1; 1 is the unit-area rectangle)."""
    act = _activation(True, 1.0, kw.get("surrogate_gain", DEFAULT_SURROGATE_GAIN))  # checks the gain
    return CifarFast(input_shape, num_classes, timesteps, "converted", act, **_opts(kw, frozenset({"surrogate_gain"})))
