"""NIR peers (snnTorch, Norse, SpikingJelly) run fewstep's exports spike for spike (#16).

Each peer test skips when its package is not installed. Where a peer has a bug, the test pins
what fewstep writes so that it still runs exactly (negative ``Flatten`` dims for snnTorch and
Norse; ``gain="weights"`` for Norse, which ignores ``r``), or documents the bug."""

from __future__ import annotations

import importlib.util
import logging

import numpy as np
import pytest
import torch
from benchmark_scripts import load_benchmark

from fewstep.models import build_model
from fewstep.neurons import NeuronSpec
from fewstep.nir_io import euler_reference, export_nir, import_nir

nir = pytest.importorskip("nir", reason="NIR tests need the 'nir' package: pip install 'fewstep[nir]'")
pytest.importorskip("nirtorch", reason="the NIR peers' importers run on nirtorch (pip install nirtorch)")
matrix = load_benchmark("nir_matrix")

PEER_MODULE = {"snntorch": "snntorch", "norse": "norse", "spikingjelly": "spikingjelly"}


def needs(peer: str) -> None:
    if importlib.util.find_spec(PEER_MODULE[peer]) is None:
        pytest.skip(f"peer check needs {peer} (pip install {peer})")
    logging.disable(logging.WARNING)  # the importers log a warning per node


def lif_conv_net():
    """mnist-lif-t2's layout, smaller: conv-BN-LIF, max pool, conv-BN-LIF, max pool, Flatten, FC-LIF, FC."""
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10, input_shape=(1, 16, 16), timesteps=2,
                        neuron=NeuronSpec(kind="lif"), channels=(4, 8), hidden=16)
    return matrix.stimulate(model)


def scb_lif_net():
    """nmnist-lif-t2's layout (scb_cnn, no synapse, LIF, max pool inside the blocks), smaller."""
    torch.manual_seed(0)
    model = build_model("scb_cnn", num_classes=10, input_shape=(2, 12, 12), timesteps=2,
                        neuron=NeuronSpec(kind="lif"), channels=(4, 8), hidden=16, synapse="none")
    return matrix.stimulate(model)


def ours_and_input(model, static: bool = True):
    torch.manual_seed(3)
    shape = model.input_shape
    if static:
        x = torch.rand(2, *shape) * 2
        seq = x.unsqueeze(0).expand(2, *x.shape)
    else:
        x = seq = torch.rand(2, 2, *shape) * 2
    with torch.no_grad():
        return model(x), seq


def test_flatten_is_written_with_negative_dims_that_mean_the_same_with_a_batch():
    graph = export_nir(lif_conv_net())
    flat = [n for n in graph.nodes.values() if isinstance(n, nir.Flatten)]
    assert len(flat) == 1 and (flat[0].start_dim, flat[0].end_dim) == (-3, -1)
    np.testing.assert_array_equal(flat[0].output_type["output"], [8 * 4 * 4])
    assert graph.check_types()
    x = torch.rand(2, 1, 16, 16)
    assert torch.equal(import_nir(graph)(x), lif_conv_net()(x))  # fewstep reads its own dims back


@pytest.mark.parametrize("peer", ["snntorch", "spikingjelly"])
@pytest.mark.parametrize("make, static", [(lif_conv_net, True), (scb_lif_net, False)], ids=["small_cnn", "scb_cnn"])
def test_snntorch_and_spikingjelly_run_conv_lif_nets_with_max_pool_and_flatten_exactly(peer, make, static):
    needs(peer)
    model = make()
    ours, seq = ours_and_input(model, static)
    graph = export_nir(model)
    assert torch.equal(euler_reference(graph)(seq), ours)
    theirs = matrix.RUNNERS[peer](graph, seq)
    assert torch.equal(theirs, ours)


def test_norse_ignores_r_and_runs_the_gain_in_weights_form_exactly():
    needs("norse")
    model = lif_conv_net()
    ours, seq = ours_and_input(model)
    # Norse 1.1's from_nir builds its LIF from tau alone: input gain dt / tau = 1 - lambda, not
    # dt r / tau = 1. On the default graph (r = tau / dt) it therefore sees half the current:
    default = export_nir(model)
    assert not torch.equal(matrix.run_norse(default, seq), ours)
    # The workaround: r = 1 with tau / dt folded into the weights feeding each LIF. A valid graph,
    # the same network for every reader (the reference and the other peers run it exactly too):
    weights = export_nir(model, gain="weights")
    lifs = [n for k, n in weights.nodes.items() if isinstance(n, nir.LIF) and not k.endswith("_any")]
    assert len(lifs) == 3 and all(np.all(n.r == 1.0) for n in lifs)  # (the max pools' OR gates have r = 1 anyway)
    assert torch.equal(matrix.run_norse(weights, seq), ours)
    assert torch.equal(euler_reference(weights)(seq), ours)


@pytest.mark.parametrize("peer", ["snntorch", "spikingjelly"])
def test_the_gain_in_weights_form_is_exact_in_the_other_peers_too(peer):
    needs(peer)
    model = scb_lif_net()
    ours, seq = ours_and_input(model, static=False)
    assert torch.equal(matrix.RUNNERS[peer](export_nir(model, gain="weights"), seq), ours)


def test_gain_in_weights_round_trips_through_import_nir():
    model = lif_conv_net()
    x = torch.rand(3, 1, 16, 16) * 2
    back = import_nir(export_nir(model, gain="weights"))
    out, theirs = model(x), back(x)
    torch.testing.assert_close(theirs, out, rtol=1e-5, atol=1e-5)  # same network; the folded gain rounds


def test_the_matrix_row_of_quickstart_and_of_a_composite_and_a_refused_recipe():
    row = matrix.check_recipe("quickstart")
    assert row["exports"] and row["reference"] == "exact" and row["min_rate"] > 0.01
    expected = {"snntorch": "exact", "spikingjelly": "exact", "norse": 'exact with `gain="weights"`'}
    for peer, verdict in expected.items():
        assert row[peer] == (verdict if matrix.peer_installed(peer) else "not installed")
    events = matrix.check_recipe("quickstart-events")
    assert events["exports"] and events["reference"] == "exact"
    for peer in matrix.PEERS:  # no peer maps NIR's LI (the SCB synapse) or Threshold (soft reset)
        assert events[peer].startswith("no: no ") or events[peer] == "not installed"
    refused = matrix.check_recipe("cifar10-fast-lif-t2")
    assert not refused["exports"] and "max pooling of real values" in refused["reason"]
    table = matrix.markdown([row, events, refused])
    assert table.count("\n") == 5 and "| quickstart | small_cnn | yes" in table
