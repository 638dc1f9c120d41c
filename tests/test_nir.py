"""NIR export/import: the mapping, exact round trips, refusals, and a peer library (snnTorch)."""

from __future__ import annotations

import nir_cases
import numpy as np
import pytest
import torch
from torch import nn

from fewstep.layers import TimeFold
from fewstep.models import build_model
from fewstep.neurons import IF, LIF, MTLIF, PLIF, NeuronSpec
from fewstep.nir_io import DEFAULT_DT, NIRError, NIRModel, Scale, export_nir, import_nir

nir = pytest.importorskip("nir", reason="NIR tests need the 'nir' package: pip install 'fewstep[nir]'")


def mlp(decay: float = 0.5, timesteps: int = 4, neuron=None) -> NIRModel:
    """Linear -> LIF -> Linear -> LIF (or ``neuron``), weights scaled so both layers fire often."""
    return nir_cases.mlp(neuron or (lambda: LIF(decay=decay)), timesteps)


def run_recorded(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Output, every neuron layer's spikes and membranes (h_t) for input ``x``."""
    out, neurons = nir_cases.run_recording(model, x)
    return out, [n.last_spikes for n in neurons], [n.last_membrane for n in neurons]


def min_margin(membranes: list[torch.Tensor], threshold: float = 1.0) -> float:
    """How close any membrane came to the threshold (0 would make '>=' and '>' disagree)."""
    return min(float((h - threshold).abs().min()) for h in membranes)


def test_lif_parameters_follow_the_euler_mapping():
    g = export_nir(mlp(decay=0.8), dt=1e-3)
    lif = g.nodes["body_0"]
    assert isinstance(lif, nir.LIF)
    np.testing.assert_allclose(lif.tau, 1e-3 / (1 - 0.8))  # 1 - dt/tau = lambda
    np.testing.assert_allclose(lif.r, 1 / (1 - 0.8))  # dt r / tau = 1: unit input gain
    np.testing.assert_array_equal(lif.v_leak, 0.0)
    np.testing.assert_array_equal(lif.v_threshold, 1.0)
    assert lif.tau.shape == (32,)
    assert g.metadata["dt"] == 1e-3 and g.metadata["timesteps"] == 4
    assert [e for e in g.edges] == [("input", "stem_0"), ("stem_0", "body_0"), ("body_0", "body_1_0"),
                                    ("body_1_0", "body_2"), ("body_2", "output")]
    assert g.check_types()


def test_if_exports_as_nir_if_with_unit_gain():
    g = export_nir(mlp(neuron=lambda: IF(v_threshold=0.7)), dt=0.5)
    node = g.nodes["body_0"]
    assert isinstance(node, nir.IF)
    np.testing.assert_allclose(node.r, 2.0)  # dt r = 1
    np.testing.assert_allclose(node.v_threshold, 0.7)


@pytest.mark.parametrize("neuron", [
    lambda: LIF(decay=0.5),
    lambda: LIF(decay=0.9, v_threshold=0.8),
    lambda: PLIF(decay=0.3),
    lambda: IF(),
    lambda: LIF(decay=0.6, v_reset=-0.2),
    lambda: LIF(decay=0.5, scale_output=True, v_threshold=0.5),
], ids=["lif", "lif-0.9", "plif", "if", "v_reset", "scale_output"])
def test_round_trip_gives_identical_spikes(neuron):
    model = mlp(neuron=neuron)
    back = import_nir(export_nir(model))
    assert isinstance(back, NIRModel) and back.timesteps == 4 and back.input_shape == (16,)
    torch.manual_seed(1)
    for x in (torch.randn(8, 16), torch.randn(4, 8, 16)):  # static (direct encoding) and sequence
        out_a, spikes_a, _ = run_recorded(model, x)
        out_b, spikes_b, _ = run_recorded(back, x)
        assert all(s.sum() > 0 for s in spikes_a)
        for a, b in zip(spikes_a, spikes_b):
            assert torch.equal(a, b)
        assert torch.equal(out_a, out_b)


def test_round_trip_of_a_conv_model_with_batchnorm_through_a_file(tmp_path):
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10, input_shape=(1, 8, 8), timesteps=2,
                        neuron=NeuronSpec(kind="lif"), channels=(4, 8), hidden=16)
    for m in model.modules():  # non-trivial BN statistics, so folding matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(1.0, 3.0)
            m.bias.data.uniform_(0.0, 0.5)
        if isinstance(m, nn.Linear):
            m.weight.data.mul_(4)
    model.eval()
    graph = export_nir(model)
    assert not any("BatchNorm" in type(n).__name__ for n in graph.nodes.values())
    assert isinstance(graph.nodes["stem_0"], nir.Conv2d)
    path = tmp_path / "small_cnn.nir"
    nir.write(str(path), graph)
    back = import_nir(path)
    x = torch.rand(16, 1, 8, 8) * 3
    out_a, spikes_a, membranes = run_recorded(model, x)
    out_b, spikes_b, _ = run_recorded(back, x)
    assert all(s.sum() > 0 for s in spikes_a)
    # BN folding changes float rounding (~1e-7); spikes are identical as long as no membrane is
    # that close to the threshold, which this input guarantees:
    assert min_margin(membranes) > 1e-4
    for a, b in zip(spikes_a, spikes_b):
        assert torch.equal(a, b)
    torch.testing.assert_close(out_a, out_b, rtol=1e-5, atol=1e-5)


def test_avg_pool_vgg_exports_and_gap_becomes_avgpool():
    model = build_model("vgg11", num_classes=10, input_shape=(3, 32, 32), timesteps=1, neuron=NeuronSpec(),
                        pool="avg", width_mult=0.0625)
    graph = export_nir(model)
    assert graph.check_types()
    pools = [n for n in graph.nodes.values() if isinstance(n, nir.AvgPool2d)]
    assert len(pools) == 6  # 5 "M" pools and the global average pool (2x2 -> 1x1 after 4 pools, then one more)
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(import_nir(graph)(x), model.eval()(x), rtol=1e-5, atol=1e-5)


# MT-LIF (soft reset), soft reset and max pooling of spikes export since #16 (tests/test_nir_export.py);
# what NIR cannot express is still refused, each with its reason:
@pytest.mark.parametrize("make, message", [
    (lambda: mlp(neuron=lambda: MTLIF(num_thresholds=2, reset="hard")), "MT-LIF with hard reset"),
    (lambda: build_model("cifar_fast", num_classes=10, input_shape=(3, 16, 16), timesteps=1, neuron=NeuronSpec(),
                         widths=(4, 4, 4, 4)),
     "max pooling.*pools real values"),
    (lambda: nn.Sequential(nn.Linear(4, 4), LIF(), nn.BatchNorm1d(4)), "BatchNorm"),
    (lambda: nn.Sequential(nn.Linear(4, 4), nn.ReLU()), "ReLU"),
], ids=["mtlif-hard", "maxpool-of-currents", "bn-alone", "relu"])
def test_unsupported_models_raise_a_clear_error(make, message):
    with pytest.raises(NIRError, match=message):
        export_nir(make(), input_shape=(4,) if message in ("BatchNorm", "ReLU") else None)


def test_export_leaves_every_module_training_flag_as_it_was():
    model = mlp()
    model.train()
    model.body[1].eval()  # a mix of modes, e.g. a frozen part
    before = {name: m.training for name, m in model.named_modules()}
    export_nir(model)
    assert {name: m.training for name, m in model.named_modules()} == before


def test_mtlif_with_one_threshold_and_hard_reset_exports_as_lif():
    g = export_nir(mlp(neuron=lambda: MTLIF(num_thresholds=1, reset="hard", decay=0.5)))
    assert isinstance(g.nodes["body_0"], nir.LIF)


def test_plain_sequential_needs_input_shape():
    model = nn.Sequential(nn.Linear(4, 3), LIF())
    with pytest.raises(NIRError, match="input_shape"):
        export_nir(model)
    assert isinstance(export_nir(model, input_shape=(4,)).nodes["1"], nir.LIF)


def test_import_inserts_the_input_gain_and_reads_dt():
    w = np.eye(3, dtype=np.float32)
    graph = nir.NIRGraph(
        nodes={"input": nir.Input({"input": np.array([3])}), "fc": nir.Linear(weight=w),
               "lif": nir.LIF(tau=np.full(3, 0.02), r=np.full(3, 4.0), v_leak=np.zeros(3), v_threshold=np.ones(3)),
               "output": nir.Output({"output": np.array([3])})},
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")])
    model = import_nir(graph, dt=0.01, timesteps=3)
    lif = model.body[-1]
    assert isinstance(lif, LIF) and lif.decay.item() == pytest.approx(0.5)
    scale = [m for m in model.stem if isinstance(m, Scale)]
    assert scale and scale[0].scale.item() == pytest.approx(2.0)  # dt r / tau = 0.01 * 4 / 0.02
    # constant input 0.3 -> current 0.6: h = 0.6, 0.9, 1.05 -> spike at t = 3 only
    out = model(torch.full((1, 3), 0.3))
    assert out[:, 0, 0].tolist() == [0.0, 0.0, 1.0]
    with pytest.raises(NIRError, match="decay"):
        import_nir(graph, dt=1.0)  # 1 - dt/tau < 0: written for another dt


def test_import_refuses_branches_and_non_uniform_parameters():
    a = nir.Affine(weight=np.eye(2, dtype=np.float32), bias=np.zeros(2, np.float32))
    b = nir.Affine(weight=np.eye(2, dtype=np.float32), bias=np.zeros(2, np.float32))
    branching = nir.NIRGraph(nodes={"input": nir.Input({"input": np.array([2])}), "a": a, "b": b,
                                    "output": nir.Output({"output": np.array([2])})},
                             edges=[("input", "a"), ("input", "b"), ("a", "output"), ("b", "output")])
    with pytest.raises(NIRError, match="sequential"):
        import_nir(branching)
    lif = nir.LIF(tau=np.array([1e-3, 2e-3]), r=np.ones(2), v_leak=np.zeros(2), v_threshold=np.ones(2))
    uneven = nir.NIRGraph(nodes={"input": nir.Input({"input": np.array([2])}), "lif": lif,
                                 "output": nir.Output({"output": np.array([2])})},
                          edges=[("input", "lif"), ("lif", "output")])
    with pytest.raises(NIRError, match="varies"):
        import_nir(uneven)


def test_default_dt_is_snntorch_step():
    assert DEFAULT_DT == 1e-4


# ----------------------------------------------------------------------------------------------
# a peer library reads fewstep's graph


def _snntorch_import():
    pytest.importorskip("snntorch", reason="peer check needs snnTorch (pip install snntorch nirtorch)")
    pytest.importorskip("nirtorch", reason="snnTorch's NIR importer needs nirtorch (pip install nirtorch)")
    from snntorch.import_nir import import_from_nir

    return import_from_nir


def _run_peer(net: nn.Module, x_seq: torch.Tensor) -> torch.Tensor:
    """Step a snnTorch/nirtorch graph module over ``[T, B, ...]`` (its neurons keep their state)."""
    outs = []
    with torch.no_grad():
        for t in range(x_seq.shape[0]):
            out = net(x_seq[t])
            outs.append(out[0] if isinstance(out, tuple) else out)
    return torch.stack(outs)


@pytest.mark.parametrize("decay", [0.5, 0.75])
def test_snntorch_runs_the_exported_mlp_spike_for_spike(decay):
    import_from_nir = _snntorch_import()
    model = mlp(decay=decay, timesteps=6)
    torch.manual_seed(2)
    x = torch.randn(6, 8, 16)
    ours, spikes, membranes = run_recorded(model, x)
    assert all(s.sum() > 0 for s in spikes) and (ours.sum() > 0)
    assert min_margin(membranes) > 1e-4  # no ties, where fewstep's '>=' and NIR's '>' would differ
    peer = import_from_nir(export_nir(model))  # default dt = snnTorch's 1e-4
    theirs = _run_peer(peer, x)
    assert torch.equal(theirs, ours)  # exact: the same float32 operations in the same order


def test_snntorch_runs_an_exported_conv_model_spike_for_spike():
    import_from_nir = _snntorch_import()
    torch.manual_seed(0)
    model = NIRModel(nn.Sequential(nn.Conv2d(2, 4, 3, padding=1)),
                     nn.Sequential(LIF(), TimeFold(nn.AvgPool2d(2), nn.Conv2d(4, 6, 3)), LIF()), (2, 8, 8), 6, 3).eval()
    with torch.no_grad():
        model.body[1][1].weight.mul_(6)
    x = torch.rand(3, 4, 2, 8, 8) * 4
    ours, spikes, membranes = run_recorded(model, x)
    assert all(s.sum() > 0 for s in spikes)
    assert min_margin(membranes) > 1e-5
    theirs = _run_peer(import_from_nir(export_nir(model)), x)
    assert torch.equal(theirs, ours)
