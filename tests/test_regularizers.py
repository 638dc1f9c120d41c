"""STR and RCS regularizers: known answers, gradients, zero at a constant representation, options,
and a short training run through the engine."""

from __future__ import annotations

import math

import pytest
import torch
from regularizer_checks import assert_refused

from fewstep.regularizers import make_regularizer, spike_ratio


def one_layer(spikes, membrane, thr=1.0):
    """One record from nested lists [T][B][N]."""
    return [("layer", torch.tensor(spikes, dtype=torch.float32), torch.tensor(membrane, dtype=torch.float32),
             torch.tensor(thr))]


def logits_for(targets, t, correct):
    """Per-step logits [T, B, 3] predicting ``targets`` where ``correct`` else the next class."""
    out = torch.zeros(t, len(targets), 3)
    for b, (y, ok) in enumerate(zip(targets, correct)):
        out[:, b, y if ok else (y + 1) % 3] = 5.0
    return out


# Step 0: s = [1, 0], h = [1.5, 0.5] -> r = [2.5, 0.5]; STF = 1 / sqrt(6.5)
# Step 1: s = [1, 1], h = [1, 1]     -> r = [2, 2];     STF = sqrt(2) / sqrt(8) = 0.5
SPIKES = [[[1.0, 0.0]], [[1.0, 1.0]]]
MEMBRANE = [[[1.5, 0.5]], [[1.0, 1.0]]]


def test_spike_ratio_known_values():
    stf = spike_ratio(torch.tensor(SPIKES), torch.tensor(MEMBRANE), torch.tensor(1.0))
    assert stf.shape == (2, 1)
    assert stf[0, 0].item() == pytest.approx(1 / math.sqrt(6.5), abs=1e-6)
    assert stf[1, 0].item() == pytest.approx(0.5, abs=1e-6)
    # threshold 2: r0 = [1 + 0.75, 0.25]
    stf2 = spike_ratio(torch.tensor(SPIKES), torch.tensor(MEMBRANE), torch.tensor(2.0))
    assert stf2[0, 0].item() == pytest.approx(1 / math.sqrt(1.75 ** 2 + 0.25 ** 2), abs=1e-6)


@pytest.mark.parametrize("distance, expected", [("l2", (1 / math.sqrt(6.5) - 0.5) ** 2),
                                                ("l1", abs(1 / math.sqrt(6.5) - 0.5))])
def test_str_known_answer(distance, expected):
    reg = make_regularizer("str", late_fraction=0.5, distance=distance)  # T = 2: late = {step 2}
    value = reg(one_layer(SPIKES, MEMBRANE), logits_for([0], 2, [True]), torch.tensor([0]))
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_str_averages_layers_and_late_window():
    # T = 4, late_fraction 0.5 -> late steps 3, 4 (reference = mean of their STF), early steps 1, 2
    s = torch.tensor([[[1.0, 0.0]], [[0.0, 0.0]], [[1.0, 1.0]], [[1.0, 0.0]]])
    h = torch.tensor([[[0.0, 0.0]], [[1.0, 0.0]], [[1.0, 1.0]], [[0.0, 0.0]]])
    stf = [1.0, 0.0, 0.5, 1.0]  # silent-spike step 2: ||s|| = eps -> ~0
    ref = (stf[2] + stf[3]) / 2
    expected = ((stf[0] - ref) ** 2 + (stf[1] - ref) ** 2) / 2
    reg = make_regularizer("str", late_fraction=0.5)
    rec = [("a", s, h, torch.tensor(1.0)), ("b", s.clone(), h.clone(), torch.tensor(1.0))]
    assert reg(rec, torch.zeros(4, 1, 3), torch.tensor([0])).item() == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("form", ["inverse", "one_minus"])
def test_rcs_known_answer_over_correct_samples(form):
    # sample 0: r0 = [1, 0], r1 = [1, 1] (reference = r1): mean cos = (1/sqrt2 + 1) / 2
    # sample 1: misclassified, contributes nothing
    s = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]]])
    h = torch.tensor([[[0.0, 0.0], [3.0, 0.0]], [[0.0, 0.0], [0.0, 3.0]]])
    cos = (1 / math.sqrt(2) + 1) / 2
    expected = 1 / (cos + 1e-5) - 1 / (1 + 1e-5) if form == "inverse" else 1 - cos
    reg = make_regularizer("rcs", late_fraction=0.5, form=form)
    logits = logits_for([0, 1], 2, [True, False])
    value = reg([("l", s, h, torch.tensor(1.0))], logits, torch.tensor([0, 1]))
    assert value.item() == pytest.approx(expected, rel=1e-5)
    # all samples counted when correct_only=False: sample 1 has cos(r0=[3,0], r1=[0,3]) = 0 at step 1;
    # the authors' reduction takes the max over samples, reduce='mean' the mean
    cos1 = (0 + 1) / 2
    e1 = 1 / (cos1 + 1e-5) - 1 / (1 + 1e-5) if form == "inverse" else 1 - cos1
    reg_all = make_regularizer("rcs", late_fraction=0.5, form=form, correct_only=False)
    assert reg_all([("l", s, h, torch.tensor(1.0))], logits, torch.tensor([0, 1])).item() == \
        pytest.approx(max(expected, e1), rel=1e-5)
    reg_mean = make_regularizer("rcs", late_fraction=0.5, form=form, correct_only=False, reduce="mean")
    assert reg_mean([("l", s, h, torch.tensor(1.0))], logits, torch.tensor([0, 1])).item() == \
        pytest.approx((expected + e1) / 2, rel=1e-5)


def test_rcs_no_correct_sample_is_zero():
    s = torch.rand(3, 2, 5)
    reg = make_regularizer("rcs")
    assert reg([("l", s, torch.rand(3, 2, 5), torch.tensor(1.0))], logits_for([0, 1], 3, [False, False]),
               torch.tensor([0, 1])).item() == 0.0


@pytest.mark.parametrize("name", ["str", "rcs"])
def test_gradients_reach_spikes_and_membrane(name):
    torch.manual_seed(1)
    t, b = 5, 3
    s = (torch.rand(t, b, 4, 3, 3) > 0.6).float().requires_grad_()
    h = (torch.randn(t, b, 4, 3, 3) + 0.5).requires_grad_()
    reg = make_regularizer(name)
    loss = reg([("l", s, h, torch.tensor(1.0))], logits_for([0, 1, 2], t, [True] * b), torch.tensor([0, 1, 2]))
    assert loss.item() > 0
    loss.backward()
    for g in (s.grad, h.grad):
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    # the late reference is detached: STR puts no gradient on the late window (steps 5 of 5 here)
    if name == "str":
        assert s.grad[-1].abs().sum() == 0


@pytest.mark.parametrize("name", ["str", "rcs"])
def test_zero_when_every_step_is_the_same(name):
    torch.manual_seed(2)
    s1 = (torch.rand(1, 2, 6) > 0.5).float()
    h1 = torch.randn(1, 2, 6)
    s, h = s1.expand(6, -1, -1).clone(), h1.expand(6, -1, -1).clone()
    reg = make_regularizer(name)
    v = reg([("l", s, h, torch.tensor(1.0))], logits_for([0, 1], 6, [True, True]), torch.tensor([0, 1]))
    assert abs(v.item()) < 1e-6
    silent = reg([("l", torch.zeros(6, 2, 6), -torch.ones(6, 2, 6), torch.tensor(1.0))],
                 logits_for([0, 1], 6, [True, True]), torch.tensor([0, 1]))
    assert abs(silent.item()) < 1e-6


def test_options_are_checked():
    assert_refused("train.reg_options.foo", "str", foo=1)
    assert_refused("train.reg_options.late_fraction", "rcs", late_fraction=0.0)
    assert_refused("train.reg_options.late_fraction", "str", late_fraction="0.3")
    assert_refused("train.reg_options.distance", "str", distance="l3")
    assert_refused("train.reg_options.form", "rcs", form="log")
    assert_refused("train.regularizer", "xyz")
    assert callable(make_regularizer("rcs", late_fraction=1, correct_only=False))  # int accepted for float


def test_missing_membrane_is_reported():
    from fewstep.errors import FewstepError

    with pytest.raises(FewstepError, match="record"):
        make_regularizer("str")([("l", torch.zeros(2, 1, 3), None, torch.tensor(1.0))], torch.zeros(2, 1, 3),
                                torch.tensor([0]))


def test_trains_through_the_engine(tmp_path):
    from fewstep.config import load_recipe
    from fewstep.train.engine import train

    recipe = load_recipe("quickstart", ["train.regularizer='str'", "train.reg_alpha=0.5", "train.epochs=1",
                                        "data.train_limit=200", "data.test_limit=50"])
    report = train(recipe, tmp_path, device="cpu", progress=False, log=lambda s: None)
    assert math.isfinite(report["history"][0]["train_loss"])
    assert report["config"]["train"]["regularizer"] == "str"
    assert len(report["accuracy_per_step"]) == 2


@pytest.mark.parametrize("name", ["str", "rcs"])
def test_regularizer_adds_to_the_loss(name):
    from fewstep.config import load_recipe
    from fewstep.models import build_model
    from fewstep.neurons import NeuronSpec
    from fewstep.train.engine import make_loss

    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10, input_shape=(1, 8, 8), timesteps=3, neuron=NeuronSpec(),
                        channels=(4, 8), hidden=16)
    x, y = torch.randn(4, 1, 8, 8) * 3, torch.tensor([0, 1, 2, 3])
    plain = make_loss(load_recipe("quickstart", ["train.loss='tet'"]), model)
    with_reg = make_loss(load_recipe("quickstart", [f"train.regularizer='{name}'", "train.reg_alpha=0.5",
                                                    "train.reg_options={correct_only=false}" if name == "rcs"
                                                    else "train.reg_options={distance='l1'}"]), model)
    out = model(x)
    total = with_reg(out, y)
    assert total.item() > plain(out, y).item()
    total.backward()  # through the recorded spikes and membranes into the weights
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
