"""RCS as in the authors' code (SNNCutoff ``regularizer/rcs_snn.py``, ``RCSSNNLoss``): the membrane
after reset, the max over correctly classified samples per layer then the mean over layers, and
the late window of the Python slice ``[-int(0.3 T):]``; the former choices stay as options."""

from __future__ import annotations

import math

import pytest
import torch
from regularizer_checks import assert_refused
from torch import nn

from fewstep.neurons import LIF, MTLIF
from fewstep.neurons.functional import initial_state, neuron_step
from fewstep.regularizers import make_regularizer


def _inverse(cos: float) -> float:
    return 1 / (cos + 1e-5) - 1 / (1 + 1e-5)


@pytest.mark.parametrize(("t", "expected"), [(1, 1), (2, 2), (3, 3), (4, 1), (6, 1), (7, 2), (10, 3)])
def test_late_window_is_the_authors_slice(t, expected):
    from fewstep.regularizers import late_count

    steps = list(range(t))
    assert late_count(t, 0.3) == len(steps[-int(t * 0.3):]) == expected
    assert late_count(t, 0.3, "at_least_one") == max(1, int(0.3 * t))


def test_rcs_at_t2_uses_both_steps_as_reference():
    # T = 2: int(0.6) = 0, so the reference is the mean of both steps (the last step alone before).
    s = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # r0 = [1, 0], r1 = [0, 1]; reference [0.5, 0.5]
    u = torch.zeros_like(s)
    logits = torch.zeros(2, 1, 3)
    logits[:, 0, 0] = 5.0
    value = make_regularizer("rcs")([("l", s, u, torch.tensor(1.0))], logits, torch.tensor([0]))
    assert value.item() == pytest.approx(_inverse(1 / math.sqrt(2)), rel=1e-5)
    old = make_regularizer("rcs", late_rule="at_least_one")([("l", s, u, torch.tensor(1.0))], logits,
                                                             torch.tensor([0]))
    assert old.item() == pytest.approx(_inverse(0.5), rel=1e-5)  # cos(r0, r1) = 0, cos(r1, r1) = 1


def test_rcs_reduces_by_max_over_samples_then_mean_over_layers():
    # T = 4 (late = step 4), two layers, three samples; sample 2 is misclassified.
    t = 4
    torch.manual_seed(3)
    layers = [((torch.rand(t, 3, 5) > 0.5).float(), torch.randn(t, 3, 5)) for _ in range(2)]
    targets = torch.tensor([0, 1, 2])
    logits = torch.zeros(t, 3, 3)
    logits[:, 0, 0] = logits[:, 1, 1] = logits[:, 2, 0] = 5.0
    records = [(f"l{i}", s, u, torch.tensor(1.0)) for i, (s, u) in enumerate(layers)]

    def per_sample(s, u):
        r = (s + torch.relu(u)).flatten(2)
        ref = r[-1:].mean(0)
        cos = torch.nn.functional.cosine_similarity(r, ref.expand_as(r), dim=-1).mean(0)
        return 1 / (cos + 1e-5) - 1 / (1 + 1e-5)

    values = torch.stack([per_sample(s, u) for s, u in layers])  # [layers, B]
    expected = values[:, :2].amax(1).mean()  # max over the correct samples, then mean over layers
    assert make_regularizer("rcs")(records, logits, targets).item() == pytest.approx(expected.item(), rel=1e-5)
    mean = values[:, :2].mean(0).mean()
    assert not math.isclose(expected.item(), mean.item(), rel_tol=1e-3)
    got_mean = make_regularizer("rcs", reduce="mean")(records, logits, targets)
    assert got_mean.item() == pytest.approx(mean.item(), rel=1e-5)


def _reference_post_reset(neuron: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``u_t`` step by step from the functional reference."""
    p = neuron.params()
    v = initial_state(x[0], p)
    out = []
    for t in range(x.shape[0]):
        v = neuron_step(x[t], v, p).v
        out.append(v)
    return torch.stack(out)


@pytest.mark.parametrize("neuron", [
    LIF(), LIF(reset="soft"), LIF(v_reset=-0.3, v_threshold=0.7), MTLIF(num_thresholds=3),
    MTLIF(num_thresholds=2, scale_output=True, v_threshold=0.5), MTLIF(num_thresholds=2, reset="hard"),
])
def test_membrane_after_reset_is_the_carried_state(neuron):
    x = torch.randn(6, 4, 9, dtype=torch.float64) * 1.5 + 0.6
    neuron = neuron.double()
    neuron.record = True
    neuron(x)
    assert neuron.last_spikes.sum() > 0
    got = neuron.membrane_after_reset()
    assert torch.allclose(got, _reference_post_reset(neuron, x), atol=1e-12)
    assert not torch.allclose(got, neuron.last_membrane)


def test_converted_if_membrane_after_reset():
    from fewstep.models.dnn import ConvertedIF

    n = ConvertedIF(v_threshold=0.8, amplitude_ratio=0.6).double()
    n.record = True
    x = torch.rand(5, 3, 7, dtype=torch.float64) * 1.2
    n(x)
    v, expected = torch.zeros_like(x[0]), []
    for t in range(x.shape[0]):
        h = v + x[t]
        s = (h / 0.8 - 1 >= 0).double()
        v = h - s * 0.8
        expected.append(v)
    assert torch.allclose(n.membrane_after_reset(), torch.stack(expected), atol=1e-12)


def test_engine_gives_rcs_the_membrane_after_reset():
    from fewstep.config import load_recipe
    from fewstep.train.engine import make_loss
    from fewstep.train.losses import mean_output_ce

    torch.manual_seed(0)
    neuron = LIF()
    model = nn.Sequential(neuron)
    x, y = torch.randn(4, 3, 5) * 2 + 1.0, torch.tensor([0, 1, 2])
    recipe = load_recipe("quickstart", ["train.loss='ce'", "train.regularizer='rcs'", "train.reg_alpha=1.0",
                                        "train.reg_options={correct_only=false}"])
    loss = make_loss(recipe, model)
    out = model(x)
    got = loss(out, y)
    u = _reference_post_reset(neuron, x)
    reg = make_regularizer("rcs", correct_only=False)
    expected = mean_output_ce(out, y, 0.0) + reg([("0", out, u, neuron.threshold)], out, y)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    pre = mean_output_ce(out, y, 0.0) + reg([("0", out, neuron.last_membrane, neuron.threshold)], out, y)
    assert not math.isclose(got.item(), pre.item(), rel_tol=1e-4)  # the pre-reset h_t would differ


def test_membrane_option():
    assert make_regularizer("rcs").membrane == "post_reset"
    assert make_regularizer("rcs", membrane="pre_reset").membrane == "pre_reset"
    assert make_regularizer("str").membrane == "pre_reset"
    assert_refused("train.reg_options.membrane", "rcs", membrane="after")
    assert_refused("train.reg_options.late_rule", "rcs", late_rule="python")
    assert_refused("train.reg_options.reduce", "rcs", reduce="sum")
