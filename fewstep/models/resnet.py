"""Spiking ResNets with BasicBlocks: resnet18 (CIFAR-style) and resnet19 (TET/TDBN).

A block is ``conv-BN-neuron-conv-BN``, plus the shortcut (identity, or 1x1 conv + BN when the
shape changes), then a neuron: the spike comes *after* the add, as in TDBN/TET ResNet-19, so
every block outputs spikes. Convs and BNs run through :class:`~fewstep.layers.TimeFold`; the
``stem`` is the stateless first conv3x3 + BN and the first neuron opens the ``body``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ..layers import BatchNorm2d, Dropout, TimeFold
from ..neurons import NeuronSpec
from .base import SpikingModel
from .registry import register_model
from .vgg import check_head_options, scale_channels


def check_resnet_input(model: str, input_shape: tuple[int, ...], widths: Sequence[int], depths: Sequence[int],
                       dropout: float) -> None:
    """Raise :class:`ConfigError` unless ``input_shape`` is ``(C, H, W)``, there is one depth >= 1
    per stage width, and ``dropout`` is valid (``model`` names the class in the message)."""
    if len(input_shape) != 3:
        raise ConfigError("model.input_shape", f"{model} needs (C, H, W), got {input_shape}")
    if len(widths) != len(depths) or not widths or min(depths) < 1:
        raise ConfigError("model.depths", f"need one depth >= 1 per stage, got widths={widths} depths={depths}")
    check_head_options(dropout=dropout)


def resnet_stem(c_in: int, c_out: int) -> nn.Sequential:
    """The CIFAR-style stem: conv3x3 (no bias) + BN, no max pool."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), BatchNorm2d(c_out))


def resnet_stages(chans: Sequence[int], depths: Sequence[int],
                  block: Callable[[int, int, int], nn.Module]) -> OrderedDict[str, nn.Module]:
    """``layer1``, ``layer2``, ...: ``depths[i]`` blocks ``block(c_in, c_out, stride)`` of width
    ``chans[i]`` each, input ``chans[0]``; the first block of every stage but the first has stride 2."""
    stages: OrderedDict[str, nn.Module] = OrderedDict()
    c_in = chans[0]
    for i, (c_out, depth) in enumerate(zip(chans, depths)):
        stages[f"layer{i + 1}"] = nn.Sequential(
            *[block(c_in if j == 0 else c_out, c_out, (1 if i == 0 else 2) if j == 0 else 1) for j in range(depth)])
        c_in = c_out
    return stages


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> TimeFold:
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False)
    return TimeFold(conv, BatchNorm2d(c_out))


class BasicBlock(nn.Module):
    """``neuron(BN(conv(neuron(BN(conv(x))))) + shortcut(x))`` on ``[T, B, C, H, W]`` spikes."""

    def __init__(self, c_in: int, c_out: int, stride: int, neuron: NeuronSpec) -> None:
        super().__init__()
        self.conv1 = _conv_bn(c_in, c_out, 3, stride)
        self.sn1 = neuron.build()
        self.conv2 = _conv_bn(c_out, c_out, 3)
        self.shortcut: nn.Module = (
            _conv_bn(c_in, c_out, 1, stride) if stride != 1 or c_in != c_out else nn.Identity()
        )
        self.sn2 = neuron.build()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.sn1(self.conv1(x)))
        return self.sn2(out + self.shortcut(x))


class SpikingResNet(SpikingModel):
    """Spiking ResNet: stem conv3x3+BN, stages of BasicBlocks, global average pool, classifier.

    Args:
        input_shape: one step's ``(C, H, W)``; any size (CIFAR-style stem, no max pool).
        num_classes: logits per step.
        timesteps: steps of direct encoding for static input.
        neuron: the neuron used everywhere (a fresh module each).
        widths: channels of each stage; the stem has ``widths[0]``.
        depths: blocks per stage. The first stage has stride 1, later ones stride 2.
        width_mult: scales every width (small values for CPU tests).
        hidden: if set, the classifier is ``Linear(width, hidden) -> neuron -> Linear`` (TET's
            ResNet-19 head, ``hidden=256``); otherwise a single Linear.
        dropout: dropout probability before the classifier.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, timesteps: int, neuron: NeuronSpec,
                 widths: Sequence[int], depths: Sequence[int], *, width_mult: float = 1.0,
                 hidden: int | None = None, dropout: float = 0.0) -> None:
        super().__init__(input_shape, num_classes, timesteps)
        check_resnet_input("SpikingResNet", self.input_shape, widths, depths, dropout)
        if hidden is not None and hidden < 1:
            raise ConfigError("model.options.hidden", f"must be a positive int or None, got {hidden}")
        chans = [scale_channels(w, width_mult) for w in widths]

        self.stem = resnet_stem(self.input_shape[0], chans[0])
        layers: OrderedDict[str, nn.Module] = OrderedDict(sn0=neuron.build())
        layers.update(resnet_stages(chans, depths, lambda c_in, c_out, stride: BasicBlock(c_in, c_out, stride, neuron)))
        c_in = chans[-1]
        pool = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), Dropout(dropout)]
        if hidden is None:
            layers["classifier"] = TimeFold(*pool, nn.Linear(c_in, num_classes))
        else:
            layers["classifier"] = nn.Sequential(TimeFold(*pool, nn.Linear(c_in, hidden)), neuron.build(),
                                                 TimeFold(nn.Linear(hidden, num_classes)))
        self.body = nn.Sequential(layers)


@register_model("resnet18")
def resnet18(*, num_classes: int, input_shape: tuple[int, ...], timesteps: int, neuron: NeuronSpec,
             **kwargs) -> SpikingResNet:
    """ResNet-18, CIFAR-style (3x3 stem, no max pool): 64,128,256,512 x 2,2,2,2 blocks, ~11.2M params."""
    return SpikingResNet(input_shape, num_classes, timesteps, neuron, (64, 128, 256, 512), (2, 2, 2, 2), **kwargs)


@register_model("resnet19")
def resnet19(*, num_classes: int, input_shape: tuple[int, ...], timesteps: int, neuron: NeuronSpec,
             **kwargs) -> SpikingResNet:
    """ResNet-19 of TDBN/TET: 128,256,512 x 3,3,2 blocks, then GAP and the FC-256-neuron-FC head
    of TET's code (``hidden=None`` for a single Linear). ~12.7M params (12.57M without it)."""
    kwargs.setdefault("hidden", 256)
    return SpikingResNet(input_shape, num_classes, timesteps, neuron, (128, 256, 512), (3, 3, 2), **kwargs)
