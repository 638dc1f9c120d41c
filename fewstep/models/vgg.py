"""Spiking VGG family: vgg11/13/16 (CIFAR-style), vggsnn (TET/STR DVS net) and vgg_bench.

Every conv is ``Conv2d(3x3, bias=False) -> BatchNorm2d -> neuron``. The first conv+BN is the
stateless ``stem`` (run once per static image under direct encoding); everything after it,
starting with the first neuron, is the ``body`` on ``[T, B, ...]``. Consecutive stateless
layers (pool, conv, BN) are grouped into one :class:`~fewstep.layers.TimeFold` so time is
folded into batch once per group.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from ..errors import ConfigError
from ..layers import BatchNorm2d, Dropout, MaxPool2d, TimeFold
from ..neurons import NeuronSpec
from .base import SpikingModel
from .registry import register_model

LayerCfg = Sequence[int | str]

VGG_CONFIGS: dict[str, tuple[int | str, ...]] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    # VGGSNN of TET (Deng et al. 2022) / STR for 48x48 DVS frames: 4 pools leave 3x3.
    "vggsnn": (64, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    # The speed-benchmark network: 6 conv-BN-LIF, a pool after every two convs.
    "vgg_bench": (64, 64, "M", 128, 128, "M", 256, 256, "M"),
}

POOLS = {"max": MaxPool2d, "avg": nn.AvgPool2d}
CLASSIFIERS = ("gap", "flatten")

_UNSET = object()


def check_head_options(*, pool: object = _UNSET, classifier: object = _UNSET, dropout: object = _UNSET) -> None:
    """Raise :class:`ConfigError` naming the option if a given pool, classifier or dropout value
    is not one every fewstep VGG/ResNet-style model accepts."""
    if pool is not _UNSET and pool not in POOLS:
        raise ConfigError("model.options.pool", f"must be one of {sorted(POOLS)}, got {pool!r}")
    if classifier is not _UNSET and classifier not in CLASSIFIERS:
        raise ConfigError("model.options.classifier", f"must be one of {list(CLASSIFIERS)}, got {classifier!r}")
    if dropout is not _UNSET and not 0.0 <= dropout < 1.0:  # type: ignore[operator]
        raise ConfigError("model.options.dropout", f"must be in [0, 1), got {dropout}")


def scale_channels(channels: int, width_mult: float) -> int:
    """``channels * width_mult`` rounded, at least 1 (``width_mult < 1`` gives tiny test nets)."""
    if width_mult <= 0:
        raise ConfigError("model.options.width_mult", f"must be > 0, got {width_mult}")
    return max(1, int(round(channels * width_mult)))


def check_vgg_input(model: str, input_shape: tuple[int, ...], cfg: LayerCfg) -> int:
    """The stem's conv width, ``cfg[0]``; :class:`ConfigError` unless ``input_shape`` is
    ``(C, H, W)`` and ``cfg`` starts with a width (``model`` names the class in the message)."""
    if len(input_shape) != 3:
        raise ConfigError("model.input_shape", f"{model} needs (C, H, W), got {input_shape}")
    stem = cfg[0] if cfg else None
    if not isinstance(stem, int):
        raise ConfigError("model.cfg", f"must start with a conv width (the stem), got {list(cfg)[:1]}")
    return stem


def count_pools(input_shape: tuple[int, ...], cfg: LayerCfg) -> int:
    """The number of 2x2 pools in ``cfg``; :class:`ConfigError` if they leave less than 1x1 of
    the ``(C, H, W)`` input."""
    _, h, w = input_shape
    n_pools = sum(1 for v in cfg if v == "M")
    if h >> n_pools < 1 or w >> n_pools < 1:
        raise ConfigError("model.input_shape", f"{h}x{w} is too small for {n_pools} 2x2 pools "
                                               f"(needs at least {2 ** n_pools}x{2 ** n_pools})")
    return n_pools


def flatten_head(pending: list[nn.Module], width: int, input_shape: tuple[int, ...], n_pools: int,
                 classifier: str) -> tuple[list[nn.Module], int]:
    """The layers from the last conv's ``width`` channels to a flat vector (after the ``pending``
    pools), and that vector's size: global average pool (``"gap"``) or the whole map
    (``"flatten"``, ``n_pools`` 2x2 pools below the ``(C, H, W)`` input)."""
    if classifier == "gap":
        return [*pending, nn.AdaptiveAvgPool2d(1), nn.Flatten()], width
    _, h, w = input_shape
    return [*pending, nn.Flatten()], width * (h >> n_pools) * (w >> n_pools)


def _conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), BatchNorm2d(c_out)]


class SpikingVGG(SpikingModel):
    """A spiking VGG built from ``cfg``: ints are 3x3 conv output channels, ``"M"`` a 2x2 pool.

    Args:
        input_shape: one step's ``(C, H, W)``.
        num_classes: logits per step.
        timesteps: steps of direct encoding for static input.
        neuron: the neuron after every conv (a fresh module each).
        cfg: layer list; must start with a conv (it becomes the ``stem``).
        pool: ``"max"`` (the classic benchmark choice) or ``"avg"`` (keeps graded values, kinder
            to spikes and to surrogate gradients).
        classifier: ``"gap"`` = global average pool + Linear (any input size), or
            ``"flatten"`` = flatten + Linear (size fixed by ``input_shape``, as in TET's VGGSNN).
        dropout: dropout probability before the final Linear.
        width_mult: scales every conv width (0.125 etc. for CPU tests).
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, timesteps: int, neuron: NeuronSpec,
                 cfg: LayerCfg, *, pool: str = "max", classifier: str = "gap", dropout: float = 0.0,
                 width_mult: float = 1.0) -> None:
        super().__init__(input_shape, num_classes, timesteps)
        stem = check_vgg_input("SpikingVGG", self.input_shape, cfg)
        check_head_options(pool=pool, classifier=classifier, dropout=dropout)
        n_pools = count_pools(self.input_shape, cfg)

        width = scale_channels(stem, width_mult)
        self.stem = nn.Sequential(*_conv_bn(self.input_shape[0], width))

        features: list[nn.Module] = [neuron.build()]
        pending: list[nn.Module] = []  # stateless layers waiting to be folded together
        for v in cfg[1:]:
            if v == "M":
                pending.append(POOLS[pool](2))
            elif isinstance(v, int):
                out = scale_channels(v, width_mult)
                features += [TimeFold(*pending, *_conv_bn(width, out)), neuron.build()]
                pending, width = [], out
            else:
                raise ConfigError("model.cfg", f"entries must be ints or 'M', got {v!r}")

        head, in_features = flatten_head(pending, width, self.input_shape, n_pools, classifier)
        head += [Dropout(dropout), nn.Linear(in_features, num_classes)]
        self.body = nn.Sequential(OrderedDict(features=nn.Sequential(*features), classifier=TimeFold(*head)))


def _vgg(name: str, num_classes: int, input_shape: tuple[int, ...], timesteps: int, neuron: NeuronSpec,
         **kwargs) -> SpikingVGG:
    return SpikingVGG(input_shape, num_classes, timesteps, neuron, VGG_CONFIGS[name], **kwargs)


@register_model("vgg11")
def vgg11(*, num_classes: int, input_shape: tuple[int, ...], timesteps: int, neuron: NeuronSpec,
          **kwargs) -> SpikingVGG:
    """VGG-11 (8 convs, 5 pools): CIFAR 32x32 or larger. Options: see :class:`SpikingVGG`."""
    return _vgg("vgg11", num_classes, input_shape, timesteps, neuron, **kwargs)


@register_model("vgg13")
def vgg13(*, num_classes: int, input_shape: tuple[int, ...], timesteps: int, neuron: NeuronSpec,
          **kwargs) -> SpikingVGG:
    """VGG-13 (10 convs, 5 pools): CIFAR 32x32 or larger."""
    return _vgg("vgg13", num_classes, input_shape, timesteps, neuron, **kwargs)


@register_model("vgg16")
def vgg16(*, num_classes: int, input_shape: tuple[int, ...], timesteps: int, neuron: NeuronSpec,
          **kwargs) -> SpikingVGG:
    """VGG-16 (13 convs, 5 pools, ~14.7M conv parameters): CIFAR 32x32 or larger."""
    return _vgg("vgg16", num_classes, input_shape, timesteps, neuron, **kwargs)


@register_model("vggsnn")
def vggsnn(*, num_classes: int, input_shape: tuple[int, ...], timesteps: int, neuron: NeuronSpec,
           **kwargs) -> SpikingVGG:
    """VGGSNN of TET/STR for 48x48 DVS frames (8 convs, 4 pools).

    Defaults follow TET's code: average pooling and a flatten + Linear classifier
    (512*3*3 inputs at 48x48). Pass ``pool="max"`` or ``classifier="gap"`` to change them.
    """
    kwargs.setdefault("pool", "avg")
    kwargs.setdefault("classifier", "flatten")
    return _vgg("vggsnn", num_classes, input_shape, timesteps, neuron, **kwargs)


@register_model("vgg_bench")
def vgg_bench(*, num_classes: int, input_shape: tuple[int, ...], timesteps: int, neuron: NeuronSpec,
              **kwargs) -> SpikingVGG:
    """The speed-benchmark net: 6 conv3x3-BN-neuron (64,64,M,128,128,M,256,256,M), max pool, GAP + Linear."""
    return _vgg("vgg_bench", num_classes, input_shape, timesteps, neuron, **kwargs)
