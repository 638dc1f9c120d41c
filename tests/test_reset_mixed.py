"""reset_net on networks that mix fewstep neurons with SpikingJelly and snnTorch ones (issue #16).

Each test runs one sample through a mixed network, calls :func:`fewstep.neurons.reset_net`, runs
a second sample and compares it with a copy of the network taken before any forward: every
neuron's state must be back to its initial value, so the outputs are identical.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from fewstep.neurons import LIF, MTLIF, reset_net

T, B = 6, 3


def _sj():
    return pytest.importorskip("spikingjelly.activation_based.neuron",
                               reason="SpikingJelly is not installed or does not import (2.0 needs loguru)")


def _snn():
    return pytest.importorskip("snntorch", reason="snnTorch is not installed")


# One stateful peer neuron each, as built inside a network (single-step: [B, ...] per call), with
# the input gain at which its spikes depend on the membrane it carries: an input of about 1.6 a
# step for SpikingJelly's LIF nodes (their membrane relaxes towards the input, so they need more
# than the threshold of 1 to fire), about 0.5 for the integrating ones (else they fire every step).
PEERS = {
    "spikingjelly-LIFNode": (lambda: _sj().LIFNode(tau=2.0, step_mode="s"), 1.0),
    "spikingjelly-IFNode": (lambda: _sj().IFNode(step_mode="s"), 0.3),
    "spikingjelly-ParametricLIFNode": (lambda: _sj().ParametricLIFNode(step_mode="s"), 1.0),
    "snntorch-Leaky": (lambda: _snn().Leaky(beta=0.9, init_hidden=True), 0.3),
    "snntorch-Synaptic": (lambda: _snn().Synaptic(alpha=0.9, beta=0.8, init_hidden=True), 0.3),
}


def _inputs(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(T, B, 5, generator=g) * 2.0 + 0.5  # positive drive: membranes build up over the steps


def _excitatory(n_in: int, n_out: int, gain: float = 1.0) -> nn.Linear:
    """A layer with non-negative weights, so that every neuron behind it fires and keeps state
    (with a small ``gain`` only after several steps of integration)."""
    lin = nn.Linear(n_in, n_out)
    with torch.no_grad():
        lin.weight.abs_().mul_(gain)
        lin.bias.zero_()
    return lin


def _streaming_net() -> nn.Sequential:
    """One step per call ([B, ...]); state persists across calls until reset_net."""
    sj_neuron, snn = _sj(), _snn()
    torch.manual_seed(0)
    return nn.Sequential(
        _excitatory(5, 16),
        LIF(step_mode="s", decay=0.9),
        _excitatory(16, 16),
        sj_neuron.LIFNode(tau=2.0, step_mode="s"),
        _excitatory(16, 16),
        snn.Leaky(beta=0.9, init_hidden=True),
        nn.Linear(16, 4),
    )


def _run_steps(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.stack([net(x[t]) for t in range(x.shape[0])])


def test_reset_net_resets_fewstep_spikingjelly_and_snntorch_neurons():
    net = _streaming_net()
    fresh = copy.deepcopy(net)  # the same weights, never run
    reset_net(fresh)  # harmless before the first forward
    fewstep_lif, sj_lif, snn_leaky = net[1], net[3], net[5]
    first = _run_steps(net, _inputs(1))
    assert first.abs().sum() > 0
    # the first sample left state behind in all three neurons
    assert fewstep_lif.v is not None
    assert isinstance(sj_lif.v, torch.Tensor) and sj_lif.v.abs().sum() > 0
    assert snn_leaky.mem.abs().sum() > 0

    reset_net(net)
    assert fewstep_lif.v is None
    assert torch.count_nonzero(torch.as_tensor(sj_lif.v)) == 0  # back to v_reset = 0
    assert torch.count_nonzero(snn_leaky.mem) == 0

    x = _inputs(2)
    assert torch.equal(_run_steps(net, x), _run_steps(fresh, x))


@pytest.mark.parametrize("peer", sorted(PEERS))
def test_each_peer_alone_is_reset(peer):
    """Without the reset the peer's leftover state changes the second sample's output."""
    make, gain = PEERS[peer]
    neuron = make()
    torch.manual_seed(0)
    net = nn.Sequential(_excitatory(5, 8, gain), neuron, nn.Linear(8, 4))
    fresh = copy.deepcopy(net)
    stale = copy.deepcopy(net)
    x = _inputs(2)
    _run_steps(net, _inputs(1))
    _run_steps(stale, _inputs(1))
    reset_net(net)
    expected = _run_steps(fresh, x)
    assert not torch.equal(_run_steps(stale, x), expected)  # the test can see a missed reset
    assert torch.equal(_run_steps(net, x), expected)


def test_reset_net_multistep_fewstep_and_spikingjelly():
    """Time-major [T, B, ...] calls: fewstep neurons keeping state and SpikingJelly's multi-step nodes."""
    sj_neuron = _sj()
    torch.manual_seed(0)
    net = nn.Sequential(
        _excitatory(5, 16),
        MTLIF(num_thresholds=2),
        _excitatory(16, 16),
        sj_neuron.LIFNode(tau=2.0, step_mode="m"),
        nn.Linear(16, 4),
    )
    net[1].keep_state = True
    fresh, stale = copy.deepcopy(net), copy.deepcopy(net)
    x = _inputs(2)
    with torch.no_grad():
        net(_inputs(1))
        stale(_inputs(1))
        reset_net(net)
        expected = fresh(x)
        assert not torch.equal(stale(x), expected)
        assert torch.equal(net(x), expected)


def test_reset_net_leaves_norse_modules_alone():
    """Norse passes its state in and out, so reset_net must neither fail nor change anything."""
    norse = pytest.importorskip("norse.torch", reason="Norse is not installed")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 8), LIF(step_mode="s"), norse.LIFCell())
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        z, state = net(_inputs(1)[0])
    reset_net(net)
    assert net[1].v is None
    after = net.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_reset_net_imports_no_peer():
    """The peers are recognised through sys.modules: resetting a pure fewstep model imports none."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from fewstep.neurons import LIF, reset_net\n"
        "net = torch.nn.Sequential(torch.nn.Linear(2, 2), LIF(step_mode='s'))\n"
        "net(torch.ones(1, 2)); reset_net(net)\n"
        "assert net[1].v is None\n"
        "print(sorted(m for m in ('spikingjelly', 'snntorch', 'norse') if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"
