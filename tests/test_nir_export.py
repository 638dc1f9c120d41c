"""NIR export of what used to be refused (#16): soft reset, MT-LIF, the SCB synapse, max pooling of
spikes, converted and STCB neurons; each checked spike for spike against a textbook NIR reader
(:func:`fewstep.nir_io.euler_reference`) and, where the graph is a chain, against import_nir."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from benchmark_scripts import load_benchmark
from nir_cases import mlp, run_recording
from torch import nn

from fewstep.layers import STCB, ConversionIF, TimeFold
from fewstep.models import build_model
from fewstep.models.dnn import ConvertedIF
from fewstep.neurons import IF, LIF, MTLIF, NeuronSpec, spiking_neurons
from fewstep.nir_io import NIRError, NIRModel, euler_reference, export_nir, import_nir

nir = pytest.importorskip("nir", reason="NIR tests need the 'nir' package: pip install 'fewstep[nir]'")
pytest.importorskip("nirtorch", reason="the reference NIR reader runs on nirtorch (pip install nirtorch)")


#: BN statistics and Linear weights that make every layer of an untrained net fire: the NIR
#: matrix's (every model here has BN, so its conv weights are left as they are).
stimulate = load_benchmark("nir_matrix").stimulate


def fewstep_run(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    out, neurons = run_recording(model, x)
    return out, [n.last_spikes for n in neurons]


def assert_reference_runs_it_exactly(model: nn.Module, x: torch.Tensor, graph=None) -> None:
    graph = export_nir(model) if graph is None else graph
    ours, spikes = fewstep_run(model, x)
    assert all(float((s != 0).float().mean()) > 0.002 for s in spikes), [float((s != 0).float().mean()) for s in spikes]
    theirs = euler_reference(graph)(x)
    assert torch.equal(theirs, ours)


@pytest.mark.parametrize("neuron", [
    lambda: LIF(decay=0.5, reset="soft"),
    lambda: IF(reset="soft", v_threshold=0.7),
    lambda: MTLIF(num_thresholds=2),  # the MT-LIF of the recipes: soft reset, learnable decay
    lambda: MTLIF(num_thresholds=3, decay=0.8, v_threshold=0.6),
    lambda: MTLIF(num_thresholds=2, scale_output=True, v_threshold=0.5),
], ids=["lif-soft", "if-soft", "mtlif2", "mtlif3", "mtlif-amplitude"])
def test_soft_reset_and_mtlif_run_exactly_in_a_nir_reader(neuron):
    model = mlp(neuron)
    torch.manual_seed(1)
    for x in (torch.randn(8, 16), torch.randn(4, 8, 16)):
        assert_reference_runs_it_exactly(model, x)


def test_mtlif_is_an_integrator_k_thresholds_and_reset_feedback(tmp_path):
    model = mlp(lambda: MTLIF(num_thresholds=2, decay=0.75, v_threshold=0.5, learnable_decay=False))
    graph = export_nir(model, dt=1e-3)
    li = graph.nodes["body_0"]
    assert isinstance(li, nir.LI)
    np.testing.assert_allclose(li.tau, 1e-3 / 0.25)  # 1 - dt / tau = lambda
    np.testing.assert_allclose(li.r * 1e-3 / li.tau, 1.0)  # unit input gain
    for k in (1, 2):
        spike, reset = graph.nodes[f"body_0_spike{k}"], graph.nodes[f"body_0_reset{k}"]
        np.testing.assert_allclose(spike.threshold, 0.5 * k)
        np.testing.assert_allclose(reset.scale, -0.75 * 0.5)  # h_t = lam (h_{t-1} - V s_{t-1}) + x_t
        assert ("body_0", f"body_0_spike{k}") in graph.edges and (f"body_0_reset{k}", "body_0") in graph.edges
        assert (f"body_0_spike{k}", "body_1_0") in graph.edges  # both count trains feed the next layer (summed)
    nir.write(str(tmp_path / "mtlif.nir"), graph)
    x = torch.randn(3, 4, 16)
    assert torch.equal(euler_reference(tmp_path / "mtlif.nir")(x), fewstep_run(model, x)[0])


def test_the_quickstart_events_net_scb_synapse_mtlif_and_max_pool_exports_exactly():
    # quickstart-events' layout (scb_cnn, exp synapse, MT-LIF K = 2, max pooling), smaller
    model = stimulate(build_model("scb_cnn", num_classes=10, input_shape=(2, 12, 12), timesteps=2,
                                  neuron=NeuronSpec(kind="mtlif", num_thresholds=2, learnable_decay=True),
                                  channels=(4, 8), hidden=16, synapse="exp", learnable_synapse=True))
    graph = export_nir(model)
    synapses = [graph.nodes[n] for n in ("body_features_0", "body_features_2_synapse")]
    assert all(isinstance(s, nir.LI) for s in synapses)  # I[t] = lam_s I[t-1] + y[t]
    assert sum(isinstance(n, nir.SumPool2d) for n in graph.nodes.values()) == 4  # 2 pools x 2 count trains
    torch.manual_seed(0)
    assert_reference_runs_it_exactly(model, torch.rand(2, 3, 2, 12, 12) * 2, graph)


def test_a_per_channel_synapse_writes_one_tau_per_channel():
    model = stimulate(build_model("scb_cnn", num_classes=4, input_shape=(2, 8, 8), timesteps=2,
                                  neuron=NeuronSpec(kind="lif"), channels=(3,), hidden=0, synapse="exp",
                                  per_channel_synapse=True))
    with torch.no_grad():
        model.body.features[0].decay_logit.copy_(torch.tensor([-1.0, 0.0, 2.0]))
    graph = export_nir(model)
    tau = graph.nodes["body_features_0"].tau
    assert tau.shape == (3, 8, 8) and len(np.unique(tau[:, 0, 0])) == 3 and np.all(tau[1] == tau[1, 0, 0])
    assert_reference_runs_it_exactly(model, torch.rand(2, 2, 2, 8, 8) * 2, graph)


def test_max_pool_of_lif_spikes_is_a_chain_that_imports_back_exactly():
    # mnist-lif-t2's layout (small_cnn: LIF, max pool after each conv block), smaller
    model = stimulate(build_model("small_cnn", num_classes=10, input_shape=(1, 16, 16), timesteps=2,
                                  neuron=NeuronSpec(kind="lif"), channels=(4, 8), hidden=16))
    graph = export_nir(model)
    gates = [graph.nodes[n] for n in graph.nodes if n.endswith("_any")]
    assert len(gates) == 2 and all(isinstance(n, nir.LIF) for n in gates)
    x = torch.rand(3, 1, 16, 16) * 3
    assert_reference_runs_it_exactly(model, x, graph)
    back = import_nir(graph)
    assert torch.equal(back(x), fewstep_run(model, x)[0])


def test_the_or_gate_fires_on_any_spike_of_the_window():
    model = NIRModel(nn.Sequential(nn.Identity()), nn.Sequential(IF(v_threshold=0.5), TimeFold(nn.MaxPool2d(2))),
                     (1, 4, 4), 4, 3).eval()
    x = (torch.rand(3, 5, 1, 4, 4) > 0.7).float()  # spikes, and windows with 0..4 of them
    expected = nn.functional.max_pool2d(x.flatten(0, 1), 2).unflatten(0, (3, 5))
    ours = fewstep_run(model, x)[0]
    assert torch.equal(ours, expected)
    assert torch.equal(euler_reference(export_nir(model))(x), expected)


def test_converted_snn_with_amplitude_and_leak_exports_exactly():
    # digits-dnn-finetune-t2's model (small_cnn_converted), smaller, with factors a conversion sets
    torch.manual_seed(0)
    model = build_model("small_cnn_converted", num_classes=10, input_shape=(1, 8, 8), timesteps=2,
                        channels=(4, 8), hidden=16).eval()
    factors = iter([(0.8, 1.5, 0.9), (1.2, 0.7, 1.0), (0.5, 2.0, 0.95)])
    for _, n in spiking_neurons(model):
        assert isinstance(n, ConvertedIF)
        v, b, leak = next(factors)
        n.set_factors(v, b, leak)
    graph = export_nir(model)
    assert isinstance(graph.nodes["body_0"], nir.LI) and isinstance(graph.nodes["body_2"], nir.I)  # leak 1: IF
    np.testing.assert_allclose(graph.nodes["body_0_amplitude"].scale, 0.8 * 1.5, rtol=1e-6)  # A = b V
    assert_reference_runs_it_exactly(model, torch.rand(4, 1, 8, 8) * 3, graph)


def test_stcb_vgg_exports_exactly():
    # fmnist-stcb-t2's model (stcb_small), smaller
    model = stimulate(build_model("stcb_small", num_classes=10, input_shape=(1, 12, 12), timesteps=2,
                                  neuron=NeuronSpec(kind="if", reset="soft"), cfg=[4, "M", 8, "M"], hidden=16))
    assert any(isinstance(m, STCB) for m in model.modules())
    assert_reference_runs_it_exactly(model, torch.rand(3, 1, 12, 12) * 3)


def test_stcb_resnet_residual_blocks_export_exactly():
    # cifar10-stcb-t2's model (stcb_resnet19: identity and conv shortcuts), at 1/32 width on 8x8
    model = stimulate(build_model("stcb_resnet19", num_classes=10, input_shape=(3, 8, 8), timesteps=2,
                                  neuron=NeuronSpec(kind="if", reset="soft"), width_mult=1 / 32, hidden=8))
    graph = export_nir(model)
    into = {}
    for a, b in graph.edges:
        into.setdefault(b, []).append(a)
    block = "body_layer1_0_sn2"  # identity shortcut: the conv branch and the block's input spikes
    assert set(into[block]) == {"body_layer1_0_conv2_0", "body_sn0_spike", "body_layer1_0_sn2_reset"}
    conv_shortcut = "body_layer2_0_sn2"  # a 1x1 conv + BN shortcut
    assert "body_layer2_0_shortcut_0" in into[conv_shortcut]
    assert_reference_runs_it_exactly(model, torch.rand(2, 3, 8, 8) * 2, graph)


def test_import_of_a_composite_says_what_it_cannot_read():
    with pytest.raises(NIRError, match="successors|cycle"):
        import_nir(export_nir(mlp(lambda: LIF(reset="soft"))))


@pytest.mark.parametrize("make, message", [
    (lambda: nn.Sequential(nn.Linear(4, 4), ConversionIF(forward="count")), "causal"),
    (lambda: nn.Sequential(nn.Linear(4, 4), ConvertedIF(initial_membrane=0.5)), "initial membrane"),
    (lambda: build_model("scb_cnn", num_classes=4, input_shape=(2, 8, 8), timesteps=2, neuron=NeuronSpec(kind="lif"),
                         channels=(3,), hidden=0, synapse="causal"), "Delay"),
    (lambda: build_model("small_cnn_dnn", num_classes=4, input_shape=(1, 8, 8), timesteps=1, channels=(2, 2),
                         hidden=4), "convert"),
    (lambda: NIRModel(nn.Sequential(nn.Conv2d(1, 2, 3)), nn.Sequential(TimeFold(nn.MaxPool2d(2)), LIF()), (1, 8, 8),
                      2, 1), "pools real values"),
], ids=["stcb-count", "initial-membrane", "causal-synapse", "dnn", "maxpool-of-currents"])
def test_what_nir_cannot_express_is_refused_with_the_reason(make, message):
    model = make()
    with pytest.raises(NIRError, match=message):
        export_nir(model, input_shape=(4,) if isinstance(model, nn.Sequential) else None)
