"""STCB networks (SLSSNN / STCSNN, methods.md section 2): VGG and ResNet built from
spatio-temporal conversion blocks (:mod:`fewstep.layers.stcb`).

Every conv (or hidden linear) + BN is the synaptic operation of an STCB and is followed by
its IF conversion (no leak, soft reset), trained with the spike-train-level equivalent
gradient (``gradient="equivalent"``, default) or per-step surrogate BPTT
(``gradient="surrogate"``). As in the other fewstep models, the first block is split: its
synaptic op is the stateless ``stem`` (the analog image, direct encoding) and its conversion
opens the ``body``. Layer lists come from :mod:`fewstep.models.vgg` (``VGG_CONFIGS``).

The conversions ignore ``neuron.kind``, ``decay`` and ``reset``: an STCB conversion is IF with
soft reset by definition. From ``neuron`` they take ``surrogate``, ``width`` and
``detach_reset`` (used by ``gradient="surrogate"``) and ``v_threshold`` unless the
``v_threshold`` option is given.

Pooling defaults to max pooling, which keeps spike trains binary, so every conv / linear
after a conversion is spike-driven (SOPs in :func:`fewstep.energy.count_energy`); average
pooling or a global-average-pool classifier feed graded values to the next layer (MACs).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ..layers import BatchNorm2d, Dropout, TimeFold
from ..layers.stcb import FORWARDS, GRADIENTS, STCB, ConversionSpec
from ..neurons import NeuronSpec
from .base import SpikingModel
from .registry import register_model
from .resnet import _conv_bn as _resnet_conv_bn
from .resnet import check_resnet_input, resnet_stages, resnet_stem
from .vgg import POOLS, VGG_CONFIGS, check_head_options, check_vgg_input, count_pools, flatten_head, scale_channels

LayerCfg = Sequence[int | str]

#: The small net for 28x28 (Fashion-)MNIST: 2 conv STCBs with a pool after each, then a hidden FC STCB.
SMALL_CFG: tuple[int | str, ...] = (32, "M", 64, "M")


def conversion_spec(neuron: NeuronSpec | None, gradient: str = "equivalent", v_threshold: float | None = None,
                    forward: str = "if") -> ConversionSpec:
    """The :class:`ConversionSpec` of a model from its factory options (errors name the option)."""
    neuron = neuron or NeuronSpec()
    if gradient not in GRADIENTS:
        raise ConfigError("model.options.gradient", f"must be one of {', '.join(GRADIENTS)}, got {gradient!r}")
    if forward not in FORWARDS:
        raise ConfigError("model.options.forward", f"must be one of {', '.join(FORWARDS)}, got {forward!r}")
    if forward == "count" and gradient != "equivalent":
        raise ConfigError("model.options.forward", "forward='count' needs gradient='equivalent'")
    v_th = neuron.v_threshold if v_threshold is None else v_threshold
    if isinstance(v_th, bool) or not isinstance(v_th, (int, float)) or not v_th > 0:
        raise ConfigError("model.options.v_threshold", f"must be a positive number, got {v_th!r}")
    return ConversionSpec(v_threshold=float(v_th), gradient=gradient, forward=forward, surrogate=neuron.surrogate,
                          width=neuron.width, detach_reset=neuron.detach_reset)


class STCBVGG(SpikingModel):
    """A VGG of conv STCBs built from ``cfg`` (ints: 3x3 conv widths, ``"M"``: 2x2 pool).

    Args:
        input_shape, num_classes, timesteps: as for every :class:`SpikingModel`.
        conversion: how each STCB's conversion is built.
        cfg: layer list; starts with a conv (the stem).
        pool: ``"max"`` (default; keeps spikes binary) or ``"avg"``.
        classifier: ``"gap"`` (global average pool, any input size) or ``"flatten"``.
        hidden: if set, a linear STCB (Linear + BN + conversion) of that width before the output Linear.
        dropout: before the output Linear.
        width_mult: scales every conv width.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, timesteps: int, conversion: ConversionSpec,
                 cfg: LayerCfg, *, pool: str = "max", classifier: str = "gap", hidden: int | None = None,
                 dropout: float = 0.0, width_mult: float = 1.0) -> None:
        super().__init__(input_shape, num_classes, timesteps)
        stem = check_vgg_input("STCBVGG", self.input_shape, cfg)
        check_head_options(pool=pool, classifier=classifier, dropout=dropout)
        if hidden is not None and (isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1):
            raise ConfigError("model.options.hidden", f"must be a positive int or None, got {hidden!r}")
        n_pools = count_pools(self.input_shape, cfg)

        width = scale_channels(stem, width_mult)
        self.stem = nn.Sequential(nn.Conv2d(self.input_shape[0], width, 3, padding=1, bias=False), BatchNorm2d(width))
        features: list[nn.Module] = [conversion.build()]  # the conversion of the stem's STCB
        pending: list[nn.Module] = []
        for v in cfg[1:]:
            if v == "M":
                pending.append(POOLS[pool](2))
            elif isinstance(v, int) and not isinstance(v, bool):
                out = scale_channels(v, width_mult)
                features.append(STCB.conv2d(width, out, pre=tuple(pending), conversion=conversion.build()))
                pending, width = [], out
            else:
                raise ConfigError("model.cfg", f"entries must be ints or 'M', got {v!r}")

        head, in_features = flatten_head(pending, width, self.input_shape, n_pools, classifier)
        layers: OrderedDict[str, nn.Module] = OrderedDict(features=nn.Sequential(*features))
        if hidden is not None:
            layers["hidden"] = STCB.linear(in_features, hidden, bn=True, pre=tuple(head), conversion=conversion.build())
            head, in_features = [], hidden
        layers["classifier"] = TimeFold(*head, Dropout(dropout), nn.Linear(in_features, num_classes))
        self.body = nn.Sequential(layers)


class STCBBasicBlock(nn.Module):
    """Residual block of two STCBs: ``x -> STCB(conv-BN)`` gives ``h``; the second STCB's synaptic
    op has two inputs, ``BN(conv(h)) + shortcut(x)``, and its conversion fires after the add."""

    def __init__(self, c_in: int, c_out: int, stride: int, conversion: ConversionSpec) -> None:
        super().__init__()
        self.stcb1 = STCB(_resnet_conv_bn(c_in, c_out, 3, stride), conversion.build())
        self.conv2 = _resnet_conv_bn(c_out, c_out, 3)
        self.shortcut: nn.Module = (
            _resnet_conv_bn(c_in, c_out, 1, stride) if stride != 1 or c_in != c_out else nn.Identity()
        )
        self.sn2 = conversion.build()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sn2(self.conv2(self.stcb1(x)) + self.shortcut(x))


class STCBResNet(SpikingModel):
    """ResNet of STCB blocks: stem conv3x3+BN, stages of :class:`STCBBasicBlock`, GAP, classifier.

    Same options as :class:`~fewstep.models.resnet.SpikingResNet` (``widths``, ``depths``,
    ``width_mult``, ``hidden``: a linear STCB head of that width, ``dropout``).
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, timesteps: int, conversion: ConversionSpec,
                 widths: Sequence[int], depths: Sequence[int], *, width_mult: float = 1.0,
                 hidden: int | None = None, dropout: float = 0.0) -> None:
        super().__init__(input_shape, num_classes, timesteps)
        check_resnet_input("STCBResNet", self.input_shape, widths, depths, dropout)
        if hidden is not None and (isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1):
            raise ConfigError("model.options.hidden", f"must be a positive int or None, got {hidden!r}")
        chans = [scale_channels(w, width_mult) for w in widths]
        self.stem = resnet_stem(self.input_shape[0], chans[0])
        layers: OrderedDict[str, nn.Module] = OrderedDict(sn0=conversion.build())
        layers.update(resnet_stages(chans, depths,
                                    lambda c_in, c_out, stride: STCBBasicBlock(c_in, c_out, stride, conversion)))
        c_in = chans[-1]
        pool = (nn.AdaptiveAvgPool2d(1), nn.Flatten(), Dropout(dropout))
        if hidden is None:
            layers["classifier"] = TimeFold(*pool, nn.Linear(c_in, num_classes))
        else:
            layers["classifier"] = nn.Sequential(STCB.linear(c_in, hidden, pre=pool, conversion=conversion.build()),
                                                 TimeFold(nn.Linear(hidden, num_classes)))
        self.body = nn.Sequential(layers)


# --------------------------------------------------------------------------- registry

def _vgg(cfg: LayerCfg, num_classes: int, input_shape: tuple[int, ...], timesteps: int, neuron: NeuronSpec,
         gradient: str, v_threshold: float | None, forward: str, **kwargs) -> STCBVGG:
    conv = conversion_spec(neuron, gradient, v_threshold, forward)
    return STCBVGG(input_shape, num_classes, timesteps, conv, cfg, **kwargs)


@register_model("stcb_small")
def stcb_small(*, num_classes: int, input_shape: tuple[int, ...], timesteps: int, neuron: NeuronSpec,
               gradient: str = "equivalent", v_threshold: float | None = None, width_mult: float = 1.0,
               forward: str = "if", cfg: Sequence[int | str] = SMALL_CFG, **kwargs) -> STCBVGG:
    """Small STCB net for 28x28 Fashion-MNIST: conv32-M-conv64-M, flatten, FC-128 STCB, Linear.

    Options: ``gradient``, ``v_threshold``, ``width_mult``, ``forward``, ``cfg`` and those of
    :class:`STCBVGG` (defaults here: ``classifier="flatten"``, ``hidden=128``; ``hidden=0`` means no
    hidden layer, which TOML cannot say with ``None``)."""
    kwargs.setdefault("classifier", "flatten")
    kwargs.setdefault("hidden", 128)
    if kwargs["hidden"] == 0 and not isinstance(kwargs["hidden"], bool):
        kwargs["hidden"] = None
    return _vgg(tuple(cfg), num_classes, input_shape, timesteps, neuron, gradient, v_threshold, forward,
                width_mult=width_mult, **kwargs)


def _register_vgg(name: str, cfg_name: str, doc: str) -> None:
    def factory(*, num_classes: int, input_shape: tuple[int, ...], timesteps: int, neuron: NeuronSpec,
                gradient: str = "equivalent", v_threshold: float | None = None, width_mult: float = 1.0,
                forward: str = "if", **kwargs) -> STCBVGG:
        return _vgg(VGG_CONFIGS[cfg_name], num_classes, input_shape, timesteps, neuron, gradient, v_threshold,
                    forward, width_mult=width_mult, **kwargs)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = doc
    register_model(name)(factory)


_register_vgg("stcb_vgg11", "vgg11", "STCB VGG-11 (8 conv STCBs, 5 max pools, GAP + Linear): CIFAR 32x32 or larger.")
_register_vgg("stcb_vgg16", "vgg16", "STCB VGG-16 (13 conv STCBs, 5 max pools, GAP + Linear): CIFAR 32x32, "
                                     "Tiny-ImageNet 64x64.")
_register_vgg("stcb_vggsnn", "vggsnn", "STCB version of TET's VGGSNN (8 conv STCBs, 4 pools) for 48x48 DVS frames; "
                                       "max pool and GAP by default (binary spikes into every conv).")


def _resnet(widths: Sequence[int], depths: Sequence[int], num_classes: int, input_shape: tuple[int, ...],
            timesteps: int, neuron: NeuronSpec, gradient: str, v_threshold: float | None, width_mult: float,
            forward: str, **kwargs) -> STCBResNet:
    conv = conversion_spec(neuron, gradient, v_threshold, forward)
    return STCBResNet(input_shape, num_classes, timesteps, conv, widths, depths, width_mult=width_mult, **kwargs)


@register_model("stcb_resnet18")
def stcb_resnet18(*, num_classes: int, input_shape: tuple[int, ...], timesteps: int, neuron: NeuronSpec,
                  gradient: str = "equivalent", v_threshold: float | None = None, width_mult: float = 1.0,
                  forward: str = "if", **kwargs) -> STCBResNet:
    """STCB ResNet-18, CIFAR-style: 64,128,256,512 x 2,2,2,2 blocks."""
    return _resnet((64, 128, 256, 512), (2, 2, 2, 2), num_classes, input_shape, timesteps, neuron, gradient,
                   v_threshold, width_mult, forward, **kwargs)


@register_model("stcb_resnet19")
def stcb_resnet19(*, num_classes: int, input_shape: tuple[int, ...], timesteps: int, neuron: NeuronSpec,
                  gradient: str = "equivalent", v_threshold: float | None = None, width_mult: float = 1.0,
                  forward: str = "if", **kwargs) -> STCBResNet:
    """STCB ResNet-19 (TDBN/TET layout): 128,256,512 x 3,3,2 blocks, FC-256 STCB head (``hidden=None``: one Linear)."""
    kwargs.setdefault("hidden", 256)
    return _resnet((128, 256, 512), (3, 3, 2), num_classes, input_shape, timesteps, neuron, gradient,
                   v_threshold, width_mult, forward, **kwargs)
