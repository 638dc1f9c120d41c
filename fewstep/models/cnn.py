"""A small spiking CNN for 8x8 and 28x28 digits."""

from __future__ import annotations

from torch import nn

from ..layers import BatchNorm2d, Dropout, MaxPool2d, TimeFold
from ..neurons import NeuronSpec
from .base import SpikingModel
from .registry import register_model


class SmallCNN(SpikingModel):
    """conv-BN-neuron x2 (pool after each when the image is >= 16 px), then FC-neuron-FC."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, timesteps: int, neuron: NeuronSpec,
                 channels: tuple[int, int] = (32, 64), hidden: int = 128, dropout: float = 0.0) -> None:
        super().__init__(input_shape, num_classes, timesteps)
        c, h, w = input_shape
        c1, c2 = channels
        pool = h >= 16
        self.stem = nn.Sequential(nn.Conv2d(c, c1, 3, padding=1, bias=False), BatchNorm2d(c1))
        side = h // 4 if pool else h
        side_w = w // 4 if pool else w
        self.body = nn.Sequential(
            neuron.build(),
            TimeFold(*( [MaxPool2d(2)] if pool else [] ), nn.Conv2d(c1, c2, 3, padding=1, bias=False), BatchNorm2d(c2)),
            neuron.build(),
            TimeFold(*( [MaxPool2d(2)] if pool else [] ), nn.Flatten(), Dropout(dropout), nn.Linear(c2 * side * side_w, hidden)),
            neuron.build(),
            TimeFold(nn.Linear(hidden, num_classes)),
        )


@register_model("small_cnn")
def small_cnn(*, num_classes: int, input_shape: tuple[int, ...], timesteps: int, neuron: NeuronSpec, **kw) -> SmallCNN:
    return SmallCNN(input_shape, num_classes, timesteps, neuron, **kw)
