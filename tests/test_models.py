"""Every registered model: shapes, direct encoding, gradients, state, neurons, errors, sizes.

Models are built tiny (``TINY``) so the file runs in seconds on CPU. ``TINY`` must name every
registered model: a new model without an entry here fails ``test_every_model_is_tested``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fewstep.errors import ConfigError
from fewstep.models import (
    MODELS,
    SpikingModel,
    build_model,
    catalog,  # noqa: F401  (registers every built-in model)
)
from fewstep.neurons import NeuronSpec, SpikingNeuron, reset_net, set_step_mode, spiking_neurons

CIFAR = (3, 32, 32)
DVS = (2, 48, 48)
T, B, CLASSES = 2, 2, 5

# Per-model options that make a tiny network (few channels) for CPU tests: a sixteenth of the
# widths for the VGG / ResNet-style nets, two small convs and a small hidden layer for the CNNs.
TINY: dict[str, dict] = {
    **{name: dict(width_mult=1 / 16) for name in (
        "vgg11", "vgg13", "vgg16", "vggsnn", "vgg_bench", "resnet18",
        "stcb_vgg11", "stcb_vgg16", "stcb_vggsnn", "stcb_resnet18", "scb_vgg",
        "vgg11_dnn", "vgg16_dnn", "vgg11_converted", "vgg16_converted",
        "cifar_fast", "cifar_fast_dnn", "cifar_fast_converted")},
    **{name: dict(width_mult=1 / 16, hidden=8) for name in ("resnet19", "stcb_resnet19")},
    **{name: dict(channels=(4, 8), hidden=16) for name in (
        "small_cnn", "scb_cnn", "small_cnn_dnn", "small_cnn_converted")},
    "stcb_small": dict(width_mult=1 / 8, hidden=8),
}
NAMES = sorted(TINY)

NEURONS = {
    "lif": NeuronSpec(kind="lif"),
    "plif": NeuronSpec(kind="plif"),
    "mtlif": NeuronSpec(kind="mtlif", num_thresholds=2),
    "if": NeuronSpec(kind="if"),
}


def make(name: str, input_shape: tuple[int, ...] = CIFAR, neuron: NeuronSpec | None = None,
         **kwargs) -> SpikingModel:
    torch.manual_seed(0)
    model = build_model(name, num_classes=CLASSES, input_shape=input_shape, timesteps=T, neuron=neuron,
                        **{**TINY[name], **kwargs})
    assert isinstance(model, SpikingModel)
    return model


pytestmark = pytest.mark.usefixtures("_one_thread")  # tests/conftest.py: one torch thread per module


def first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_every_model_is_tested() -> None:
    assert set(MODELS) == set(TINY), (
        f"untested models: {sorted(set(MODELS) - set(TINY))}; stale entries: {sorted(set(TINY) - set(MODELS))}"
    )


@pytest.mark.parametrize("shape", [CIFAR, DVS], ids=["cifar", "dvs"])
@pytest.mark.parametrize("name", NAMES)
def test_output_shape(name: str, shape: tuple[int, ...]) -> None:
    model = make(name, shape)
    assert not spiking_neurons(model.stem), "the stem must be stateless (it runs once per static image)"
    assert model(torch.rand(B, *shape)).shape == (T, B, CLASSES)
    assert model(torch.rand(T + 1, B, *shape)).shape == (T + 1, B, CLASSES)  # T taken from the sequence


@pytest.mark.parametrize("name", NAMES)
def test_direct_encoding_equals_repeated_sequence(name: str) -> None:
    # float64 so rounding differences between batch sizes cannot flip a spike
    model = make(name).double()
    x = torch.rand(B, *CIFAR, dtype=torch.float64)
    for train in (False, True):  # train: BN batch statistics of B copies == of T*B copies
        model.train(train)
        torch.testing.assert_close(model(x), model(x.unsqueeze(0).expand(T, *x.shape)))


@pytest.mark.parametrize("kind", sorted(NEURONS))
@pytest.mark.parametrize("name", NAMES)
def test_neuron_kinds_train(name: str, kind: str) -> None:
    model = make(name, neuron=NEURONS[kind])
    # STCB models convert with their own soft-reset IF by design, whatever the neuron spec says;
    # so do converted DNNs (their IF neurons carry fitted thresholds and spike amplitudes).
    from fewstep.layers.stcb import ConversionIF as StcbIF
    from fewstep.models.dnn import ConvertedIF

    def ok(n: nn.Module) -> bool:
        if name.startswith("stcb_"):
            return isinstance(n, StcbIF)
        if name.endswith("_converted"):
            return isinstance(n, ConvertedIF)
        return type(n).__name__.lower() == kind

    neurons = [n for _, n in spiking_neurons(model)]
    if name.endswith("_dnn"):
        assert not neurons  # the ANN that conversion starts from: ReLUs, no neurons
    else:
        assert neurons and all(ok(n) for n in neurons)
    if name.endswith("_converted"):
        for n in neurons:  # tiny random weights: lower the fitted thresholds so that spikes occur
            n.set_factors(v_threshold=0.1, amplitude_ratio=10.0)
    out = model(torch.rand(B, *CIFAR))
    assert out.shape == (T, B, CLASSES)
    nn.functional.cross_entropy(out.mean(0), torch.arange(B) % CLASSES).backward()
    grad = first_conv(model).weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_streaming_matches_multistep_and_reset_clears_state(name: str) -> None:
    model = make(name).eval()
    x = torch.rand(B, *CIFAR)
    with torch.no_grad():
        expected = model(x)
        set_step_mode(model, "s")
        for _, n in spiking_neurons(model):
            n.record = True
        stem = model.stem(x)
        got = torch.stack([model.body(stem) for _ in range(T)])
        torch.testing.assert_close(got, expected)
        assert all(n.v is not None for _, n in spiking_neurons(model))

        reset_net(model)
        assert all(n.v is None and n.last_spikes is None and n.last_membrane is None
                   for _, n in spiking_neurons(model))
        torch.testing.assert_close(torch.stack([model.body(stem) for _ in range(T)]), expected)


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_rank(name: str) -> None:
    model = make(name)
    for shape in [CIFAR, (T, B, 1, *CIFAR)]:
        with pytest.raises(ValueError, match=r"expects \[B, 3, 32, 32\] or \[T, B, \.\.\.\]"):
            model(torch.rand(shape))


def test_unknown_model() -> None:
    with pytest.raises(ConfigError, match="unknown model 'vgg99'.*resnet18"):
        build_model("vgg99", num_classes=10, input_shape=CIFAR, timesteps=T)


def _full_size(name: str, input_shape: tuple[int, ...] = CIFAR, **kwargs) -> nn.Module:
    with torch.device("meta"):  # no memory, no init: only the parameter shapes
        return build_model(name, num_classes=10, input_shape=input_shape, timesteps=T, **kwargs)


def test_parameter_counts() -> None:
    # CIFAR ResNet-18 (3x3 stem, bias-free convs, BN) has the well-known 11,173,962 parameters.
    assert n_params(_full_size("resnet18")) == 11_173_962
    # VGG-16: 13 bias-free convs (14,710,464) + their BNs (8,448) + GAP Linear(512, 10) (5,130).
    assert n_params(_full_size("vgg16")) == 14_710_464 + 8_448 + 5_130
    # ResNet-19 (TDBN/TET): 12,564,096 in convs + BNs, then FC 512->256 -> neuron -> FC 256->10.
    assert n_params(_full_size("resnet19", hidden=None)) == 12_564_096 + 5_130
    assert n_params(_full_size("resnet19")) == 12_564_096 + 131_328 + 2_570
    # width_mult scales channels, hence conv parameters by about width_mult**2.
    assert 0.24 < n_params(_full_size("resnet18", width_mult=0.5)) / 11_173_962 < 0.26


def test_vgg_architectures() -> None:
    def count(model: nn.Module, kind: type) -> int:
        return sum(isinstance(m, kind) for m in model.modules())

    bench = _full_size("vgg_bench")
    assert count(bench, nn.Conv2d) == 6 and count(bench, SpikingNeuron) == 6 and count(bench, nn.MaxPool2d) == 3
    assert [m.out_channels for m in bench.modules() if isinstance(m, nn.Conv2d)] == [64, 64, 128, 128, 256, 256]
    assert count(_full_size("vgg11"), nn.Conv2d) == 8
    assert count(_full_size("vgg13"), nn.Conv2d) == 10
    assert count(_full_size("vgg16"), nn.Conv2d) == 13

    # TET's VGGSNN: 8 convs, average pooling, flatten + Linear(512 * 3 * 3) at 48x48
    snn = _full_size("vggsnn", DVS)
    assert count(snn, nn.Conv2d) == 8 and count(snn, nn.AvgPool2d) == 4 and count(snn, nn.MaxPool2d) == 0
    assert snn.body.classifier[-1].in_features == 512 * 3 * 3


def test_vgg_options() -> None:
    x = torch.rand(B, *CIFAR)
    for kwargs in [dict(pool="avg"), dict(classifier="flatten"), dict(dropout=0.5)]:
        assert make("vgg11", **kwargs).train()(x).shape == (T, B, CLASSES)
    assert make("vggsnn", CIFAR, classifier="gap", pool="max")(x).shape == (T, B, CLASSES)
    with pytest.raises(ConfigError, match="model.options.pool"):
        make("vgg11", pool="median")
    with pytest.raises(ConfigError, match="model.options.classifier"):
        make("vgg11", classifier="mlp")
    with pytest.raises(ConfigError, match="too small"):
        make("vgg16", (3, 16, 16))
    with pytest.raises(ConfigError, match="width_mult"):
        make("vgg11", width_mult=0)


def test_resnet_structure() -> None:
    from fewstep.models.resnet import BasicBlock

    for name, blocks, projections in [("resnet18", 8, 3), ("resnet19", 8, 2)]:
        model = _full_size(name)
        assert sum(isinstance(m, BasicBlock) for m in model.modules()) == blocks
        assert sum(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in model.modules()) == projections
        assert isinstance(model.body[0], SpikingNeuron)  # the first neuron opens the body
    # any input size works: GAP head, strided convs only
    assert make("resnet18", (2, 20, 28))(torch.rand(B, 2, 20, 28)).shape == (T, B, CLASSES)
