"""Energy / operation accounting checked against hand-counted networks (fewstep.energy)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from fewstep.energy import PRESETS, EnergyConstants, count_energy, format_energy_table
from fewstep.layers import DirectEncoding, TimeFold
from fewstep.models import SpikingModel, build_model
from fewstep.neurons import IF, LIF, MTLIF


class Tiny(SpikingModel):
    """stem -> body, built from given modules (SpikingModel gives direct encoding)."""

    def __init__(self, input_shape, timesteps, stem, *body):
        super().__init__(input_shape, num_classes=1, timesteps=timesteps)
        self.stem = stem
        self.body = nn.Sequential(*body)


def linear(weight, bias=None):
    w = torch.tensor(weight, dtype=torch.float32)
    lin = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
    with torch.no_grad():
        lin.weight.copy_(w)
        if bias is not None:
            lin.bias.copy_(torch.tensor(bias))
    return lin


def layer(report, name):
    return next(lo for lo in report.layers if lo.name == name)


# (a) Linear(4,3) stem + LIF + Linear(3,2), T = 2 ---------------------------------------------

def linear_net(neuron=None):
    stem = linear([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]])  # picks x0, x1, x2; x3 unused
    return Tiny((4,), 2, stem, neuron or LIF(decay=0.5, v_threshold=1.0), TimeFold(linear([[1, 1, 1], [1, -1, 0]])))


# Sample 0 currents [2.0, 0.7, 0.0] every step (LIF decay 0.5, V_th 1, hard reset):
#   n0: h = 2 -> spike, reset 0; h = 2 -> spike                      2 spikes
#   n1: h = 0.7 -> no; h = 0.35 + 0.7 = 1.05 -> spike                1 spike
#   n2: never                                                        0
# Sample 1 is all zeros: no spikes. 3 spikes in total over B = 2 samples.
X_LIN = torch.tensor([[2.0, 0.7, 0.0, 5.0], [0.0, 0.0, 0.0, 0.0]])


def test_linear_network_hand_count():
    r = count_energy(linear_net(), X_LIN)
    # stem: 4*3 = 12 MACs per evaluation, evaluated at each of T = 2 steps -> 24 per sample
    assert r.macs == 24
    # body Linear(3,2): 3 spikes * 2 outputs = 6 accumulates over the batch -> 3 per sample
    assert r.sops == 3
    assert r.energy_pj == pytest.approx(24 * 4.6 + 3 * 0.9)  # 113.1
    # ANN: 12 + 3*2 = 18 MACs once per sample
    assert r.ann_macs == 18
    assert r.ann_energy_pj == pytest.approx(18 * 4.6)  # 82.8
    assert r.ratio == pytest.approx(82.8 / 113.1)
    stem, fc = layer(r, "stem"), layer(r, "body.1.0")
    assert (stem.kind, stem.macs, stem.sops, stem.repeats, stem.input_spike_rate) == ("mac", 24, 0, 2, None)
    assert (fc.kind, fc.macs, fc.sops, fc.fan_out) == ("sop", 0, 3, 2)
    # 3 spikes / (T=2 * B=2 * 3 inputs) = 0.25 per element per step
    assert fc.input_spike_rate == pytest.approx(0.25)
    assert r.spike_rate_per_layer == {"body.0": pytest.approx(0.25)}
    assert r.timesteps == 2 and r.batch_size == 2 and r.preset == "45nm-float"


def test_direct_encoding_counted_once_when_asked():
    r = count_energy(linear_net(), X_LIN, direct_encoding_repeats=False)
    assert r.macs == 12 and r.sops == 3 and r.ann_macs == 18
    assert r.energy_pj == pytest.approx(12 * 4.6 + 3 * 0.9)


def test_generic_module_with_direct_encoding_layer():
    # Same network but the image is repeated before the first layer: it really runs T times.
    stem = linear([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]])
    net = nn.Sequential(DirectEncoding(2), TimeFold(stem), LIF(), TimeFold(linear([[1, 1, 1], [1, -1, 0]])))
    r = count_energy(net, X_LIN)  # T found on DirectEncoding
    assert (r.timesteps, r.macs, r.sops, r.ann_macs) == (2, 24, 3, 18)


# (b) conv net with padding borders ------------------------------------------------------------

def reach(i, j, h, w, k=3, pad=1):
    """Output positions (stride 1) whose k x k window, padded by pad, contains input (i, j)."""
    rows = min(i + pad, h - 1) - max(i - (k - 1 - pad), 0) + 1
    cols = min(j + pad, w - 1) - max(j - (k - 1 - pad), 0) + 1
    return rows * cols


def test_conv_network_exact_sops_with_borders():
    stem = nn.Conv2d(1, 2, 3, padding=1, bias=False)
    conv2 = nn.Conv2d(2, 3, 3, stride=1, padding=1, bias=False)
    with torch.no_grad():
        stem.weight.zero_()
        stem.weight[0, 0, 1, 1] = 1.0  # channel 0 current = image
        stem.weight[1, 0, 1, 1] = 0.5  # channel 1 current = image / 2
        conv2.weight.normal_()
    net = Tiny((1, 4, 4), 2, stem, IF(v_threshold=1.0), TimeFold(conv2))
    img = torch.zeros(1, 1, 4, 4)
    img[0, 0, 0, 0] = 1.0  # corner
    img[0, 0, 1, 2] = 1.0  # interior
    img[0, 0, 0, 2] = 2.0  # top edge
    # IF, V_th 1, hard reset, T = 2: current >= 1 spikes at both steps; 0.5 spikes at step 2 only.
    # ch0 currents 1, 1, 2 -> 2 + 2 + 2 spikes; ch1 currents 0.5, 0.5, 1 -> 1 + 1 + 2 spikes.
    counts = {  # (channel, i, j): spikes over T
        (0, 0, 0): 2, (0, 1, 2): 2, (0, 0, 2): 2,
        (1, 0, 0): 1, (1, 1, 2): 1, (1, 0, 2): 2,
    }
    # Outputs reached by one input spike, per out channel: corner 2*2 = 4, edge 2*3 = 6, interior 9.
    assert (reach(0, 0, 4, 4), reach(0, 2, 4, 4), reach(1, 2, 4, 4)) == (4, 6, 9)
    expected = 3 * sum(n * reach(i, j, 4, 4) for (_, i, j), n in counts.items())
    assert expected == 3 * (2 * 4 + 2 * 9 + 2 * 6 + 1 * 4 + 1 * 9 + 2 * 6) == 189
    r = count_energy(net, img)
    c2 = layer(r, "body.1.0")
    assert c2.kind == "sop" and c2.sops == 189 and c2.macs == 0
    assert c2.input_spike_rate == pytest.approx(10 / (2 * 2 * 16))  # 10 spikes / (T * 2 ch * 16 px)
    # mean fan-out over the 4x4 map: 3 * (4 corners*4 + 8 edges*6 + 4 inner*9) / 16 = 3 * 100 / 16
    assert c2.fan_out == pytest.approx(3 * 100 / 16)
    # stem: 2 ch * 16 px * 1 * 9 = 288 MACs per evaluation, times T = 2
    assert r.macs == 576 and r.sops == 189
    # ANN: 288 + conv2 3 ch * 16 px * 2 * 9 = 864 -> 1152
    assert r.ann_macs == 1152
    assert r.energy_pj == pytest.approx(576 * 4.6 + 189 * 0.9)  # 2819.7
    assert r.ratio == pytest.approx(1152 * 4.6 / 2819.7)
    assert r.spike_rate_per_layer["body.0"] == pytest.approx(10 / 64)


@pytest.mark.parametrize("stride,groups,dilation,padding_mode", [(2, 1, 1, "zeros"), (1, 2, 2, "zeros"),
                                                                 (2, 2, 1, "circular")])
def test_conv_sops_match_brute_force(stride, groups, dilation, padding_mode):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride=stride, padding=2, dilation=dilation, groups=groups,
                     padding_mode=padding_mode, bias=False)
    spikes = (torch.rand(2, 3, 4, 5, 5) < 0.3).float()  # [T, B, C, H, W]
    net = nn.Sequential(TimeFold(nn.Identity()), IF(v_threshold=0.5), TimeFold(conv))
    r = count_energy(net, spikes, layout="sequence")
    # brute force: every output position, every input tap it reads (wrapping for circular padding)
    s = spikes.flatten(0, 1)
    h = w = 5
    oh = (h + 2 * 2 - dilation * 2 - 1) // stride + 1
    cin_g, cout_g = 4 // groups, 6 // groups
    total = 0.0
    for oc in range(6):
        g = oc // cout_g
        for y in range(oh):
            for x in range(oh):
                for ky in range(3):
                    for kx in range(3):
                        iy, ix = y * stride - 2 + ky * dilation, x * stride - 2 + kx * dilation
                        if padding_mode == "circular":
                            iy, ix = iy % h, ix % w
                        elif not (0 <= iy < h and 0 <= ix < w):
                            continue
                        total += float(s[:, g * cin_g:(g + 1) * cin_g, iy, ix].sum())
    assert layer(r, "2.0").sops == pytest.approx(total / 3)  # per sample, B = 3


# (c) MT-LIF counts --------------------------------------------------------------------------

def test_mtlif_count_of_two_is_two_accumulates():
    # MT-LIF K = 3, V_th 1, decay 0.5, soft reset. Current 2.5 on n0 only:
    #   t0: h = 2.5 -> s = H(1.5) + H(0.5) + H(-0.5) = 2, v = 0.5
    #   t1: h = 0.25 + 2.5 = 2.75 -> s = 2                     -> 4 spikes over T = 2
    neuron = MTLIF(num_thresholds=3, decay=0.5, learnable_decay=False)
    r = count_energy(linear_net(neuron), torch.tensor([[2.5, 0.0, 0.0, 0.0]]))
    assert r.sops == 4 * 2  # 4 spike counts * 2 outputs
    assert r.spike_rate_per_layer["body.0"] == pytest.approx(4 / (2 * 3))
    # same counts with outputs scaled by V_th = 0.5 (spike value 1.0 = a count of 2):
    #   t0: h = 1.25 -> s = 2 (thresholds 0.5, 1.0, 1.5), v = 0.25; t1: h = 1.375 -> s = 2
    scaled = MTLIF(num_thresholds=3, decay=0.5, learnable_decay=False, v_threshold=0.5, scale_output=True)
    r2 = count_energy(linear_net(scaled), torch.tensor([[1.25, 0.0, 0.0, 0.0]]))
    assert r2.sops == 8 and layer(r2, "body.1.0").kind == "sop"
    assert r2.spike_rate_per_layer["body.0"] == pytest.approx(4 / 6)


# (d) spike rates per layer -------------------------------------------------------------------

def test_spike_rates_per_layer():
    # stem Linear(2,2) = I; IF; Linear(2,2) keeps only n0; IF; Linear(2,1). Input [1.0, 0.5], T = 2.
    #   IF1: n0 current 1 -> spikes at both steps; n1 0.5 -> spikes at step 2 -> 3 / 4 = 0.75
    #   IF2: current [s0, 0] = [1, 1] and 0 -> n0 spikes twice, n1 never -> 2 / 4 = 0.5
    net = Tiny((2,), 2, linear([[1, 0], [0, 1]]), IF(), TimeFold(linear([[1, 0], [0, 0]])), IF(),
               TimeFold(linear([[1, 1]])))
    r = count_energy(net, torch.tensor([[1.0, 0.5]]))
    assert r.spike_rate_per_layer == {"body.0": pytest.approx(0.75), "body.2": pytest.approx(0.5)}
    assert layer(r, "body.1.0").input_spike_rate == pytest.approx(0.75)
    assert layer(r, "body.3.0").input_spike_rate == pytest.approx(0.5)
    assert r.sops == 3 * 2 + 2 * 1
    assert [n.spikes_per_sample for n in r.neurons] == [3, 2]


# (e) the first-layer energy bound of methods.md section 4 -------------------------------------

def test_silent_network_hits_first_layer_bound_exactly():
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10, input_shape=(1, 8, 8), timesteps=4,
                        neuron={"v_threshold": 1e9})
    for const in (EnergyConstants(1.0, 0.5), PRESETS["45nm-float"]):
        r = count_energy(model, torch.randn(2, 1, 8, 8), constants=const)
        stem_macs = 32 * 64 * 1 * 9  # 32 ch * 8*8 px * 1 in ch * 3*3 = 18432 per evaluation
        # ANN: stem 18432 + conv 64*64*32*9 + fc 64*64*128 + fc 128*10
        assert r.ann_macs == 18432 + 1179648 + 524288 + 1280 == 1723648
        assert r.sops == 0 and r.macs == stem_macs * 4
        assert all(rate == 0 for rate in r.spike_rate_per_layer.values())
        assert r.ratio == pytest.approx(r.ann_macs / (stem_macs * 4), rel=1e-12)
    assert r.ratio == 1723648 / (18432 * 4)  # E_MAC cancels exactly for the preset too


def test_spiking_network_respects_first_layer_bound():
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10, input_shape=(1, 8, 8), timesteps=2,
                        neuron={"v_threshold": 0.2})
    r = count_energy(model, torch.randn(2, 1, 8, 8))
    assert r.sops > 0 and 0 < r.ratio < r.ann_macs / (18432 * 2)


# (f) presets and custom constants ------------------------------------------------------------

def test_presets_and_custom_constants():
    assert PRESETS["45nm-float"] == EnergyConstants(4.6, 0.9)
    assert PRESETS["45nm-int"] == EnergyConstants(3.2, 0.1)
    r = count_energy(linear_net(), X_LIN, preset="45nm-int")  # 24 MACs, 3 SOPs, 18 ANN MACs
    assert (r.preset, r.e_mac_pj, r.e_ac_pj) == ("45nm-int", 3.2, 0.1)
    assert r.energy_pj == pytest.approx(24 * 3.2 + 3 * 0.1)  # 77.1
    assert r.ann_energy_pj == pytest.approx(18 * 3.2)  # 57.6
    c = count_energy(linear_net(), X_LIN, constants=EnergyConstants(e_mac_pj=1.0, e_ac_pj=0.5))
    assert (c.preset, c.energy_pj, c.ann_energy_pj) == ("custom", 24 + 1.5, 18)
    with pytest.raises(ValueError, match="preset"):
        count_energy(linear_net(), X_LIN, preset="7nm")
    with pytest.raises(ValueError):
        EnergyConstants(-1.0, 0.1)


# (g) registered model, static and sequence input, JSON ----------------------------------------

def test_registered_model_static_and_sequence():
    torch.manual_seed(0)
    # 16 px: max-pool sits between each neuron and the next synaptic layer; still spike-driven.
    model = build_model("small_cnn", num_classes=5, input_shape=(2, 16, 16), timesteps=3,
                        neuron={"kind": "mtlif", "num_thresholds": 2, "v_threshold": 0.3},
                        channels=(4, 8), hidden=16)
    model.train()
    stem_macs = 4 * 16 * 16 * 2 * 9  # 18432 per evaluation
    s = count_energy(model, torch.randn(2, 2, 16, 16))
    assert model.training and all(m.training for m in model.modules())  # flags restored
    assert all(len(m._forward_hooks) == 0 for m in model.modules())
    assert (s.timesteps, s.batch_size) == (3, 2)
    assert [lo.kind for lo in s.layers] == ["mac", "sop", "sop", "sop"]
    assert s.macs == stem_macs * 3 and layer(s, "stem.0").repeats == 3
    # ANN: stem + conv after pool 8 ch * 8*8 px * 4 * 9 + fc after pool (8*4*4) * 16 + fc 16 * 5
    assert s.ann_macs == stem_macs + 8 * 64 * 4 * 9 + 128 * 16 + 16 * 5 == 38992
    assert s.sops > 0 and set(s.spike_rate_per_layer) == {"body.0", "body.2", "body.4"}

    frames = torch.rand(4, 2, 2, 16, 16)  # event currents [T=4, B=2, ...], T taken from the input
    q = count_energy(model, frames)
    assert (q.timesteps, q.batch_size) == (4, 2)
    stem = layer(q, "stem.0")
    assert (stem.kind, stem.repeats, stem.macs, stem.ann_macs) == ("mac", 1, stem_macs * 4, stem_macs)
    assert q.ann_macs == s.ann_macs
    d = json.loads(json.dumps(q.to_dict()))
    assert {"macs", "sops", "energy_pj", "ann_macs", "ann_energy_pj", "ratio", "spike_rate_per_layer",
            "layers", "preset", "e_mac_pj", "e_ac_pj", "timesteps"} <= set(d)
    assert d["ratio"] == pytest.approx(q.ratio) and d["layers"][0]["name"] == "stem.0"
    table = format_energy_table(q)
    assert "stem.0" in table and "body.0" in table and "ANN" in table


def test_binary_event_frames_count_as_macs_unless_asked():
    model = build_model("small_cnn", num_classes=3, input_shape=(2, 8, 8), timesteps=2, channels=(4, 4), hidden=8)
    frames = (torch.rand(2, 1, 2, 8, 8) < 0.2).float()
    dense = count_energy(model, frames)
    assert layer(dense, "stem.0").kind == "mac"
    sparse = count_energy(model, frames, input_as_spikes=True)
    stem = layer(sparse, "stem.0")
    assert stem.kind == "sop" and stem.macs == 0
    assert stem.input_spike_rate == pytest.approx(float(frames.mean()))


def test_summed_spike_trains_are_not_spikes():
    # A residual-style sum of two K = 1 spike trains takes the value 2: counted as dense MACs.
    class Twice(nn.Module):
        def forward(self, x):
            return x + x

    net = Tiny((2,), 2, linear([[1, 0], [0, 1]]), IF(), Twice(), TimeFold(linear([[1, 1]])))
    r = count_energy(net, torch.tensor([[1.0, 1.0]]))
    fc = layer(r, "body.2.0")
    assert fc.kind == "mac" and fc.macs == 2 * 2 and fc.sops == 0
    assert math.isfinite(r.ratio)


def test_neurons_reset_after_counting():
    net = linear_net()
    net.body[0].keep_state = True
    count_energy(net, X_LIN)
    assert net.body[0].v is None
