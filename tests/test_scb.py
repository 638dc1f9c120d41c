"""Synaptic current blocks (fewstep.layers.scb) and the SCB + MT-LIF models (scb_cnn, scb_vgg)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fewstep.errors import ConfigError
from fewstep.layers import SCB, Synapse, SynapticConv, TimeFold
from fewstep.layers.scb import causal_synapse, exp_synapse
from fewstep.models import build_model
from fewstep.neurons import NeuronSpec, reset_net, set_step_mode

MTLIF = NeuronSpec(kind="mtlif", num_thresholds=2)


# Small nets gain nothing from intra-op threads (conftest._one_thread).
pytestmark = pytest.mark.usefixtures("_one_thread")


# --------------------------------------------------------------------------- the synapse


def test_exp_synapse_matches_hand_computed_sequence():
    y = torch.tensor([1.0, 2.0, 0.0, -1.0])
    out, last = exp_synapse(y, 0.5)
    # I0 = 1; I1 = 0.5 + 2 = 2.5; I2 = 1.25 + 0 = 1.25; I3 = 0.625 - 1 = -0.375
    assert torch.allclose(out, torch.tensor([1.0, 2.5, 1.25, -0.375]))
    assert last.item() == pytest.approx(-0.375)
    out, _ = exp_synapse(y[:2], 0.5, state=torch.tensor(4.0))  # carried state I[-1] = 4
    assert torch.allclose(out, torch.tensor([3.0, 3.5]))


def test_synapse_module_recurrence_per_channel():
    syn = Synapse("exp", channels=2, decay=0.25, learnable=False, per_channel=True)
    syn._decay.copy_(torch.tensor([0.25, 0.75]))
    y = torch.ones(3, 1, 2, 1, 1)  # [T, B, C, H, W]
    out = syn(y)[:, 0, :, 0, 0]
    expect = torch.tensor([[1.0, 1.0], [1.25, 1.75], [1.3125, 2.3125]])
    assert torch.allclose(out, expect)


def test_learnable_decay_gets_gradients_and_stays_in_unit_interval():
    for per_channel in (False, True):
        syn = Synapse("exp", channels=3, decay=0.5, learnable=True, per_channel=per_channel)
        y = torch.randn(4, 2, 3, 5, 5)
        syn(y).pow(2).sum().backward()
        assert syn.decay_logit.grad is not None and torch.isfinite(syn.decay_logit.grad).all()
        assert syn.decay_logit.grad.abs().sum() > 0
        d = syn.decay.detach()
        assert 0 < float(d.min()) and float(d.max()) < 1


def test_causal_kernel_mode():
    y = torch.tensor([1.0, 2.0, 3.0, 4.0])
    w = torch.tensor([1.0, 0.5])
    out, history = causal_synapse(y, w)
    assert torch.allclose(out, torch.tensor([1.0, 2.5, 4.0, 5.5]))  # I[t] = y[t] + 0.5 y[t-1]
    assert torch.equal(history, torch.tensor([4.0]))
    out, _ = causal_synapse(y[:1], w, history=torch.tensor([10.0]))
    assert out.item() == pytest.approx(6.0)
    # module: K = 3, initialised to decay ** k, learnable
    syn = Synapse("causal", decay=0.5, kernel_size=3)
    assert torch.allclose(syn.weight.detach(), torch.tensor([1.0, 0.5, 0.25]))
    x = torch.randn(5, 2, 4)
    out = syn(x)
    assert torch.allclose(out[3], x[3] + 0.5 * x[2] + 0.25 * x[1], atol=1e-6)
    out.sum().backward()
    assert syn.weight.grad is not None and syn.weight.grad.abs().sum() > 0
    # K >= T: the causal kernel starts equal to the exponential synapse
    exp = Synapse("exp", decay=0.5, learnable=False)
    assert torch.allclose(Synapse("causal", decay=0.5, kernel_size=5)(x), exp(x), atol=1e-6)


@pytest.mark.parametrize("kind", ["exp", "causal"])
def test_synapse_single_step_equals_multi_step_and_reset(kind):
    syn = Synapse(kind, channels=3, decay=0.6, per_channel=True, kernel_size=3)
    x = torch.randn(5, 2, 3, 4, 4)
    multi = syn(x)
    syn.step_mode = "s"
    single = torch.stack([syn(x[t]) for t in range(5)])
    assert torch.allclose(multi, single, atol=1e-6)
    assert syn.state is not None
    syn.reset_state()
    assert syn.state is None
    assert torch.allclose(syn(x[0]), multi[0])


def test_scb_none_equals_plain_conv_bn():
    torch.manual_seed(1)
    scb = SynapticConv(4, 6, synapse="none")
    plain = TimeFold(nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6))
    plain.load_state_dict(scb.op.state_dict())
    assert not list(scb.synapse.parameters())
    x = torch.randn(3, 2, 4, 8, 8)
    assert torch.equal(scb(x), plain(x))
    # and "exp" is that output filtered by the synapse
    exp = SCB(*[m for m in plain], synapse="exp", channels=6, decay=0.5, learnable=False)
    ref, _ = exp_synapse(plain(x), 0.5)
    assert torch.allclose(exp(x), ref)


def test_synapse_rejects_bad_options():
    with pytest.raises(ValueError):
        Synapse("alpha")
    with pytest.raises(ValueError):
        Synapse("exp", decay=1.0, learnable=True)
    with pytest.raises(ValueError):
        Synapse("exp", per_channel=True)


# --------------------------------------------------------------------------- models


def _model(name: str, shape, t: int, neuron=MTLIF, **kw):
    return build_model(name, num_classes=10, input_shape=shape, timesteps=t, neuron=neuron, **kw)


@pytest.mark.parametrize("name,shape,kw", [
    ("scb_cnn", (2, 34, 34), {"channels": [8, 16], "hidden": 32}),
    ("scb_cnn", (2, 48, 48), {"channels": [8, 16], "hidden": 32, "synapse": "causal"}),
    ("scb_vgg", (2, 34, 34), {"width_mult": 0.0625, "synapse": "none"}),
    ("scb_vgg", (2, 48, 48), {"width_mult": 0.0625, "per_channel_synapse": True}),
])
def test_model_output_shapes(name, shape, kw):
    m = _model(name, shape, 3, **kw)
    out = m(torch.rand(3, 2, *shape))
    assert out.shape == (3, 2, 10)
    out.sum().backward()


@pytest.mark.parametrize("name,synapse,kw", [
    ("scb_cnn", "exp", {"channels": [8, 16], "hidden": 32}),
    ("scb_cnn", "causal", {"channels": [8, 16], "hidden": 32, "synapse_kernel": 3}),
    ("scb_vgg", "exp", {"width_mult": 0.0625}),
])
def test_scb_model_single_step_equals_multi_step(name, synapse, kw):
    m = _model(name, (2, 34, 34), 4, synapse=synapse, per_channel_synapse=True, **kw)
    m.eval()
    x = torch.rand(4, 2, 2, 34, 34) * 3
    with torch.no_grad():
        multi = m(x)
        reset_net(m)
        set_step_mode(m, "s")
        single = torch.stack([m(x[t]) for t in range(4)])
        # the state is carried between calls; reset_net clears every synapse
        synapses = [s for s in m.modules() if isinstance(s, Synapse)]
        assert synapses and all(s.state is not None for s in synapses)
        first = synapses[0]
        carried = first(torch.zeros_like(first.state[-1] if synapse == "causal" else first.state))
        assert carried.abs().sum() > 0  # zero input, yet a current: the carried state
        reset_net(m)
        assert all(s.state is None for s in synapses)
        fresh = m(x[0])
    assert torch.allclose(multi, single, atol=1e-5)
    assert torch.allclose(fresh, multi[0], atol=1e-5)


def test_ablation_synapse_none_has_no_synapse_parameters_and_runs_lif():
    lif = NeuronSpec(kind="lif")
    m = _model("scb_cnn", (2, 34, 34), 2, neuron=lif, channels=[8, 16], hidden=32, synapse="none")
    assert not any("decay_logit" in n or n.endswith("synapse.weight") for n, _ in m.named_parameters())
    with_syn = _model("scb_cnn", (2, 34, 34), 2, neuron=lif, channels=[8, 16], hidden=32)
    assert sum("decay_logit" in n for n, _ in with_syn.named_parameters()) == 3
    assert m(torch.rand(2, 4, 2, 34, 34)).shape == (2, 4, 10)


def test_model_options_are_checked():
    with pytest.raises(ConfigError, match="synapse"):
        _model("scb_cnn", (2, 34, 34), 2, synapse="alpha")
    with pytest.raises(ConfigError, match="channels"):
        _model("scb_vgg", (2, 48, 48), 2, channels="vgg99")
    with pytest.raises(ConfigError, match="synapse_decay"):
        _model("scb_cnn", (2, 34, 34), 2, synapse_decay=1.0)
