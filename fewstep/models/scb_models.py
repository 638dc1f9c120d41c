"""SCB + MT-LIF networks for event data (STC currents), ``methods.md`` section 1.

Every conv (and the hidden linear layer, if any) is a synaptic current block
(:mod:`fewstep.layers.scb`): conv + BN folded over time, then a synapse, then the neuron from
the recipe's ``[neuron]`` table (``kind = "mtlif"`` with ``num_thresholds = 2..3`` and a learnable
decay for the method; ``kind = "lif"`` for plain LIF). As in the other fewstep models the first
block is split: its conv + BN is the stateless ``stem`` (it runs on the STC currents of every
step, or once on a static image under direct encoding) and its synapse opens the ``body``.

Models (registered):

* ``scb_cnn``: a small net for N-MNIST-like ``2 x 34 x 34`` currents (any size works):
  ``channels`` convs with a 2x2 pool after each, then a hidden FC SCB (``hidden`` units) and the
  classifier. Default ``channels = (32, 64)``, ``hidden = 128``.
* ``scb_vgg``: VGG layer lists (:data:`fewstep.models.vgg.VGG_CONFIGS`, default ``"vggsnn"``, or
  an explicit list of widths and ``"M"``) for 48x48 / 64x64 / 128x128 DVS currents (DVS128
  Gesture, CIFAR10-DVS).

Options (both): ``synapse`` (``"exp"`` | ``"causal"`` | ``"none"``; ``"none"`` is the ablation,
plain conv + BN), ``learnable_synapse``, ``synapse_decay`` (initial or fixed lambda_s, 0.5),
``per_channel_synapse``, ``synapse_kernel`` (K of the causal kernel, 2), ``width_mult``,
``channels``, ``dropout``, ``pool`` (``"max"`` keeps spikes binary, ``"avg"``), ``classifier``
(``"flatten"`` or ``"gap"``), ``hidden`` (0 = no hidden FC layer).
All return per-step logits ``[T, B, classes]``; the last Linear has no synapse.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from torch import nn

from ..errors import ConfigError
from ..layers import BatchNorm2d, Dropout, TimeFold
from ..layers.scb import SCB, SYNAPSE_KINDS, Synapse
from ..neurons import NeuronSpec
from .base import SpikingModel
from .registry import register_model
from .vgg import POOLS, VGG_CONFIGS, check_head_options, flatten_head, scale_channels

LayerCfg = Sequence[int | str]


class SCBNet(SpikingModel):
    """A spiking CNN of SCBs built from ``cfg`` (ints: 3x3 conv widths, ``"M"``: 2x2 pool).

    See the module docstring for the options; ``cfg[0]`` must be a conv (the ``stem``)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, timesteps: int, neuron: NeuronSpec,
                 cfg: LayerCfg, *, hidden: int = 0, synapse: str = "exp", learnable_synapse: bool = True,
                 synapse_decay: float = 0.5, per_channel_synapse: bool = False, synapse_kernel: int = 2,
                 pool: str = "max", classifier: str = "flatten", dropout: float = 0.0,
                 width_mult: float = 1.0) -> None:
        super().__init__(input_shape, num_classes, timesteps)
        if len(self.input_shape) != 3:
            raise ConfigError("model.input_shape", f"SCB nets need (C, H, W), got {self.input_shape}")
        cfg = list(cfg)
        if not cfg or not isinstance(cfg[0], int) or isinstance(cfg[0], bool):
            raise ConfigError("model.options.channels", f"must start with a conv width (the stem), got {cfg[:1]}")
        if synapse not in SYNAPSE_KINDS:
            raise ConfigError("model.options.synapse", f"must be one of {', '.join(SYNAPSE_KINDS)}, got {synapse!r}")
        if not isinstance(learnable_synapse, bool):
            raise ConfigError("model.options.learnable_synapse", f"must be true or false, got {learnable_synapse!r}")
        lo_ok = 0.0 < synapse_decay < 1.0 if (learnable_synapse and synapse == "exp") else 0.0 <= synapse_decay <= 1.0
        if isinstance(synapse_decay, bool) or not isinstance(synapse_decay, (int, float)) or not lo_ok:
            raise ConfigError("model.options.synapse_decay",
                              f"must lie in {'(0, 1)' if learnable_synapse else '[0, 1]'}, got {synapse_decay!r}")
        if isinstance(synapse_kernel, bool) or not isinstance(synapse_kernel, int) or synapse_kernel < 1:
            raise ConfigError("model.options.synapse_kernel", f"must be an integer >= 1, got {synapse_kernel!r}")
        check_head_options(pool=pool, classifier=classifier, dropout=dropout)
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 0:
            raise ConfigError("model.options.hidden", f"must be an integer >= 0, got {hidden!r}")
        c, h, w = self.input_shape
        n_pools = sum(1 for v in cfg if v == "M")
        if h >> n_pools < 1 or w >> n_pools < 1:
            raise ConfigError("model.input_shape", f"{h}x{w} is too small for {n_pools} 2x2 pools")

        syn: dict[str, Any] = {"decay": float(synapse_decay), "learnable": learnable_synapse,
                               "per_channel": per_channel_synapse, "kernel_size": synapse_kernel}
        width = scale_channels(cfg[0], width_mult)
        self.stem = nn.Sequential(nn.Conv2d(c, width, 3, padding=1, bias=False), BatchNorm2d(width))
        features: list[nn.Module] = [Synapse(synapse, width, **syn), neuron.build()]
        pending: list[nn.Module] = []  # pools waiting for the next conv
        for v in cfg[1:]:
            if v == "M":
                pending.append(POOLS[pool](2))
            elif isinstance(v, int) and not isinstance(v, bool):
                out = scale_channels(v, width_mult)
                conv = [nn.Conv2d(width, out, 3, padding=1, bias=False), BatchNorm2d(out)]
                features += [SCB(*pending, *conv, synapse=synapse, channels=out, **syn), neuron.build()]
                pending, width = [], out
            else:
                raise ConfigError("model.options.channels", f"entries must be ints or 'M', got {v!r}")

        flat, in_features = flatten_head(pending, width, self.input_shape, n_pools, classifier)
        if hidden:
            fc = [*flat, Dropout(dropout), nn.Linear(in_features, hidden, bias=False), nn.BatchNorm1d(hidden)]
            features += [SCB(*fc, synapse=synapse, channels=hidden, **syn), neuron.build()]
            head = TimeFold(Dropout(dropout), nn.Linear(hidden, num_classes))
        else:
            head = TimeFold(*flat, Dropout(dropout), nn.Linear(in_features, num_classes))
        self.body = nn.Sequential(OrderedDict(features=nn.Sequential(*features), classifier=head))


def _cnn_cfg(channels: Sequence[int]) -> list[int | str]:
    if isinstance(channels, (str, int)) or not channels:
        raise ConfigError("model.options.channels", f"scb_cnn takes a list of conv widths, got {channels!r}")
    cfg: list[int | str] = []
    for c in channels:
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise ConfigError("model.options.channels", f"conv widths must be positive integers, got {c!r}")
        cfg += [c, "M"]
    return cfg


@register_model("scb_cnn")
def scb_cnn(*, num_classes: int, input_shape: tuple[int, ...], timesteps: int, neuron: NeuronSpec,
            channels: Sequence[int] = (32, 64), hidden: int = 128, **kwargs) -> SCBNet:
    """Small SCB net for N-MNIST-like ``2 x 34 x 34`` currents: ``channels`` conv SCBs, a 2x2 max
    pool after each, a hidden FC SCB of ``hidden`` units, then the classifier."""
    return SCBNet(input_shape, num_classes, timesteps, neuron, _cnn_cfg(channels), hidden=hidden, **kwargs)


@register_model("scb_vgg")
def scb_vgg(*, num_classes: int, input_shape: tuple[int, ...], timesteps: int, neuron: NeuronSpec,
            channels: str | LayerCfg = "vggsnn", **kwargs) -> SCBNet:
    """SCB VGG for DVS currents (48x48 to 128x128): ``channels`` is a
    :data:`~fewstep.models.vgg.VGG_CONFIGS` name (default ``"vggsnn"``: 8 convs, 4 pools) or a layer
    list of widths and ``"M"``. Max pooling and a flatten classifier by default."""
    if isinstance(channels, str):
        if channels not in VGG_CONFIGS:
            raise ConfigError("model.options.channels", f"unknown VGG config {channels!r}; known: "
                              f"{', '.join(VGG_CONFIGS)} (or give a list of widths and 'M')")
        cfg = list(VGG_CONFIGS[channels])
    else:
        cfg = list(channels)
    return SCBNet(input_shape, num_classes, timesteps, neuron, cfg, **kwargs)
