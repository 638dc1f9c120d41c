"""Anytime inference: cutoff rules, dropping stopped samples, oracle, margin calibration, the sweep
and the ``eval --cutoff`` options."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from eval_cli import eval_parser

from fewstep.infer import (
    MarginCalibration,
    MarginCutoff,
    NoCutoff,
    SoftmaxCutoff,
    anytime_batch,
    anytime_inference,
    cumulative_logits,
    cutoff_sweep,
    oracle_cutoff,
    plot_cutoff,
    simulate_cutoff,
)
from fewstep.infer.anytime import stays_correct
from fewstep.infer.cutoff import choose_operating_point
from fewstep.models import build_model
from fewstep.neurons import NeuronSpec, SpikingNeuron, reset_net

T = 4


@pytest.fixture(scope="module")
def trained():
    """A tiny small_cnn trained for a few seconds on digits (T = 4), and the test batch."""
    from fewstep.data import load_dataset
    from fewstep.train import tet_loss, train_step
    from fewstep.train.data_feed import DeviceFeed

    torch.manual_seed(0)
    splits = load_dataset("digits")
    model = build_model("small_cnn", num_classes=10, input_shape=(1, 8, 8), timesteps=T, neuron=NeuronSpec(),
                        channels=(8, 16), hidden=32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    feed = DeviceFeed(splits.train.subset(800), 64, torch.device("cpu"), train=True, seed=0)
    for epoch in range(2):
        for x, y in feed.epoch(epoch):
            train_step(model, opt, tet_loss, x, y)
    model.eval()
    test = DeviceFeed(splits.test, 512, torch.device("cpu"), train=False)
    x, y = next(iter(test.epoch(0)))
    return model, x, y, splits


@pytest.fixture(scope="module")
def trained64(trained):
    model, x, y, _ = trained
    return copy.deepcopy(model).double(), x[:160].double(), y[:160]


def lively(model: torch.nn.Module) -> torch.nn.Module:
    """Make an untrained model spike all the way to its output (varied per-sample logits): strong
    BatchNorm scales and Linear weights, non-trivial BatchNorm statistics (used in eval mode)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(10.0)
                if m.bias is not None:
                    m.bias.uniform_(0.0, 1.0)
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(1.5, 3.0)
                m.bias.uniform_(0.0, 0.5)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def eps_for_mixed_stops(cum: torch.Tensor, step: int = 2) -> float:
    """An eps whose threshold lies halfway between the smallest and the largest max-softmax at
    ``step``: some samples stop there, some go on."""
    conf = cum[step - 1].softmax(-1).amax(-1)
    return float(1.0 - (conf.min() + conf.max()) / 2)


# ---------------------------------------------------------------------------------------------
# the two extremes


def test_eps_zero_never_stops_early(trained, trained64):
    model, x, y = trained64
    r = anytime_batch(model, x, SoftmaxCutoff(0.0))
    cum, _ = cumulative_logits(model, [(x, y)])
    assert (r.steps == T).all() and r.mean_steps == T
    assert torch.equal(r.predictions, cum[-1].argmax(-1))
    r.targets = y
    assert r.accuracy == float((cum[-1].argmax(-1) == y).double().mean())
    # float32, against the training engine's own full-T evaluation
    from fewstep.train.engine import evaluate

    m32, x32, y32, _ = trained
    r32 = anytime_inference(m32, [(x32, y32)], SoftmaxCutoff(0.0))
    assert r32.accuracy == evaluate(m32, _Feed([(x32, y32)]))[-1]
    assert r32.mean_steps == T


class _Feed:
    def __init__(self, batches):
        self.batches, self.device = batches, torch.device("cpu")

    def epoch(self, _):
        return iter(self.batches)


def test_eps_near_one_stops_everything_at_step_one(trained64):
    model, x, _ = trained64
    r = anytime_batch(model, x, SoftmaxCutoff(0.999999))
    assert (r.steps == 1).all()
    with torch.no_grad():
        first = model(x)[0]
    reset_net(model)
    assert torch.equal(r.predictions, first.argmax(-1))


# ---------------------------------------------------------------------------------------------
# dropping stopped samples == the masked reference


def test_dropping_equals_masked_reference(trained64):
    model, x, y = trained64
    cum, _ = cumulative_logits(model, [(x, y)])
    eps_mid = eps_for_mixed_stops(cum)
    cal = MarginCalibration(cum, y)
    rules = [SoftmaxCutoff(e) for e in (1e-4, 1e-3, 1e-2, 0.1, eps_mid)] + [cal.rule(1.0), MarginCutoff(1.5)]
    mixed = 0
    for rule in rules:
        dropped = anytime_batch(model, x, rule, drop=True)
        masked = anytime_batch(model, x, rule, drop=False)
        assert torch.equal(dropped.predictions, masked.predictions), rule
        assert torch.equal(dropped.steps, masked.steps), rule
        torch.testing.assert_close(dropped.confidence, masked.confidence, rtol=0, atol=0)
        pred, steps, _ = simulate_cutoff(cum, rule)  # the multi-step forward agrees too
        assert torch.equal(pred, dropped.predictions) and torch.equal(steps, dropped.steps), rule
        mixed += len(dropped.steps.unique()) > 1
    assert mixed >= 2  # the comparison exercised partial batches


def test_stopped_samples_cost_no_compute(trained64):
    model, x, y = trained64
    cum, _ = cumulative_logits(model, [(x, y)])
    rule = SoftmaxCutoff(eps_for_mixed_stops(cum))
    sizes = []
    neurons = [m for m in model.modules() if isinstance(m, SpikingNeuron)]
    hook = neurons[-1].register_forward_pre_hook(lambda mod, args: sizes.append(args[0].shape[0]))
    try:
        r = anytime_batch(model, x, rule)
    finally:
        hook.remove()
    alive = [(r.steps > t).sum().item() for t in range(T)]  # samples still running at step t + 1
    assert sizes == [a for a in alive if a > 0]
    assert sum(sizes) == r.steps.sum().item()  # one row per sample and step actually run
    assert sizes[-1] < len(x)


def test_engine_restores_the_model(trained):
    model, x, _, _ = trained
    model.train()
    anytime_batch(model, x[:8], SoftmaxCutoff(0.1))
    assert model.training and model.step_mode == "m"
    assert all(m.step_mode == "m" and m.v is None for m in model.modules() if isinstance(m, SpikingNeuron))
    model.eval()


def test_sequence_input_dropping_equals_masked():
    torch.manual_seed(3)
    model = lively(build_model("small_cnn", num_classes=5, input_shape=(2, 8, 8), timesteps=6, neuron=NeuronSpec(),
                               channels=(4, 8), hidden=16).double())
    x = torch.rand(6, 16, 2, 8, 8, dtype=torch.float64) * 3
    cum, _ = cumulative_logits(model, [(x, torch.zeros(16, dtype=torch.long))])
    eps = eps_for_mixed_stops(cum, step=2)
    dropped = anytime_batch(model, x, SoftmaxCutoff(eps))
    masked = anytime_batch(model, x, SoftmaxCutoff(eps), drop=False)
    assert len(dropped.steps.unique()) > 1
    assert torch.equal(dropped.steps, masked.steps) and torch.equal(dropped.predictions, masked.predictions)
    pred, steps, _ = simulate_cutoff(cum, SoftmaxCutoff(eps))
    assert torch.equal(steps, dropped.steps) and torch.equal(pred, dropped.predictions)
    assert dropped.timesteps == 6
    assert anytime_batch(model, x, NoCutoff(), timesteps=3).steps.eq(3).all()


TINY = {
    "small_cnn": {"channels": (4, 8), "hidden": 16},
    "vgg_bench": {"width_mult": 1 / 16},
    "vggsnn": {"width_mult": 1 / 16},
    "resnet18": {"width_mult": 1 / 16},
    "resnet19": {"width_mult": 1 / 16, "hidden": 8},
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_every_model_family(name):
    torch.manual_seed(4)
    model = lively(build_model(name, num_classes=6, input_shape=(3, 16, 16), timesteps=3, neuron=NeuronSpec(),
                               **TINY[name]).double())
    x = torch.randn(8, 3, 16, 16, dtype=torch.float64) * 2
    cum, _ = cumulative_logits(model, [(x, torch.zeros(8, dtype=torch.long))])
    rule = SoftmaxCutoff(eps_for_mixed_stops(cum, step=1))
    dropped = anytime_batch(model, x, rule)
    masked = anytime_batch(model, x, rule, drop=False)
    assert len(dropped.steps.unique()) > 1
    assert torch.equal(dropped.steps, masked.steps) and torch.equal(dropped.predictions, masked.predictions)
    pred, steps, _ = simulate_cutoff(cum, rule)
    assert torch.equal(steps, dropped.steps) and torch.equal(pred, dropped.predictions)


# ---------------------------------------------------------------------------------------------
# oracle and margin calibration


def make_cum(correct_pattern: list[list[bool]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Running logits [T, N, 3] that predict class 0 (the target) where the pattern says True."""
    n, t = len(correct_pattern), len(correct_pattern[0])
    cum = torch.zeros(t, n, 3)
    for i, row in enumerate(correct_pattern):
        for s, ok in enumerate(row):
            cum[s, i, 0 if ok else 1] = 2.0
    return cum, torch.zeros(n, dtype=torch.long)


def test_oracle_known_steps():
    cum, y = make_cum([[False, True, True], [True, False, True], [True, True, False], [True, True, True]])
    pred, steps = oracle_cutoff(cum, y)
    assert steps.tolist() == [2, 3, 3, 1]  # wrong at T -> runs to T
    assert (pred == y).tolist() == [True, True, False, True]


def test_oracle_bounds_every_cutoff(trained):
    model, x, y, _ = trained
    cum, _ = cumulative_logits(model, [(x, y)])
    o_pred, o_steps = oracle_cutoff(cum, y)
    full = float((cum[-1].argmax(-1) == y).double().mean())
    o_acc = float((o_pred == y).double().mean())
    assert o_acc == full and o_steps.double().mean() <= T
    good = stays_correct(cum, y)
    for eps in (0.0, 1e-3, 1e-2, 0.05, 0.2, 0.5, 0.9):
        pred, steps, _ = simulate_cutoff(cum, SoftmaxCutoff(eps))
        acc = float((pred == y).double().mean())
        if acc >= o_acc:
            assert o_steps.double().mean() <= steps.double().mean()
        # per sample: a cutoff stopping where the prediction then stays right is never before the oracle
        ok = good[steps - 1, torch.arange(len(y))]
        assert (o_steps[ok] <= steps[ok]).all()


def test_margin_calibration_known_thresholds():
    # step 1 margins 5, 4, 3, 2, 1; "stays correct" 1, 1, 0, 1, 0 (decided by step 2)
    margins, good = [5.0, 4.0, 3.0, 2.0, 1.0], [True, True, False, True, False]
    cum = torch.zeros(2, 5, 3)
    for i, (m, g) in enumerate(zip(margins, good)):
        cum[0, i, 0] = m
        cum[1, i, 0 if g else 1] = 10.0
    cal = MarginCalibration(cum, torch.zeros(5, dtype=torch.long))
    assert cal.thresholds(1.0)[0] == 3.0  # {5, 4} all correct
    assert cal.thresholds(0.7)[0] == 1.0  # {5, 4, 3, 2}: 3/4
    assert cal.thresholds(0.5)[0] == -math.inf  # everything: 3/5
    assert cal.thresholds(1.01)[0] == 5.0  # unreachable: nothing stops
    rule = cal.rule(1.0)
    assert rule(cum[0], 1).tolist() == [True, True, False, False, False]


def test_margin_calibration_ties_are_kept_together():
    cum = torch.zeros(2, 4, 3)
    for i, (m, g) in enumerate(zip([4.0, 2.0, 2.0, 1.0], [True, True, False, True])):
        cum[0, i, 0] = m
        cum[1, i, 0 if g else 1] = 10.0
    cal = MarginCalibration(cum, torch.zeros(4, dtype=torch.long))
    assert cal.thresholds(1.0)[0] == 2.0  # cannot split the tie at 2: only {4}


def test_calibrated_margin_is_safe_on_its_training_data(trained):
    model, _, _, splits = trained
    from fewstep.train.data_feed import DeviceFeed

    feed = DeviceFeed(splits.train.subset(400), 400, torch.device("cpu"), train=False)
    cum, y = cumulative_logits(model, feed)
    rule = MarginCalibration(cum, y).rule(1.0)
    _, steps, _ = simulate_cutoff(cum, rule)
    good = stays_correct(cum, y)
    early = steps < T
    assert good[steps[early] - 1, torch.arange(len(y))[early]].all()


# ---------------------------------------------------------------------------------------------
# sweep, operating point, plot, CLI


def test_choose_operating_point():
    eps, acc, steps = [0.0, 0.01, 0.1, 0.5], [0.99, 0.99, 0.986, 0.95], [8.0, 3.0, 2.0, 1.0]
    op = choose_operating_point(eps, acc, steps, 0.99, 8, 0.005)
    assert op["eps"] == 0.1 and op["mean_steps"] == 2.0 and op["drop"] == pytest.approx(0.004)
    assert choose_operating_point(eps, acc, steps, 0.99, 8, 0.0)["eps"] == 0.01
    none = choose_operating_point([0.5], [0.5], [1.0], 0.99, 8, 0.005)
    assert none["eps"] is None and none["mean_steps"] == 8


def test_cutoff_sweep_and_plot(trained, tmp_path):
    from fewstep.train.data_feed import DeviceFeed

    model, x, y, splits = trained
    held_out = _Feed([(x[160:], y[160:])])  # test images the scored feed does not hold: a stand-in validation split
    x, y = x[:160], y[:160]
    feed = _Feed([(x[:100], y[:100]), (x[100:], y[100:])])
    cal = DeviceFeed(splits.train.subset(200), 200, torch.device("cpu"), train=False)
    sw = cutoff_sweep(model, feed, [0.0, 1e-3, 0.05, 0.5, 0.999999], calibration_feed=cal, choose_on=held_out,
                      repeats=1)
    assert sw["mean_steps"][0] == T and sw["accuracy"][0] == sw["full_accuracy"]
    assert sw["mean_steps"][-1] == 1.0 and sw["accuracy"][-1] == sw["accuracy_per_step"][0]
    assert sw["full_accuracy"] == sw["accuracy_per_step"][-1] > 0.8
    assert sw["oracle_accuracy"] == sw["full_accuracy"]
    op = sw["operating_point"]
    assert op["chosen_on"] == "val" and op["val_drop"] <= sw["target_drop"] + 1e-12
    assert sw["speedup"] == pytest.approx(T / op["mean_steps"]) and sw["calibration"]["samples"] == len(held_out.batches[0][1])
    assert len(sw["margin"]["accuracy"]) == 5
    wc = sw["wall_clock"]
    assert wc["cutoff_seconds"] > 0 and wc["samples"] == len(y)
    assert abs(wc["engine_accuracy"] - op["accuracy"]) <= 1.0 / len(y) + 1e-12
    path = plot_cutoff({"tiny": sw, "tiny again": sw}, tmp_path / "c.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_eval_cli_options(trained, tmp_path):
    import json

    from fewstep.config import recipe_from_dict
    from fewstep.evaluate import evaluate_checkpoint
    from fewstep.infer.cli import run_cutoff
    from fewstep.train.checkpoint import save_checkpoint

    model = trained[0]
    recipe = recipe_from_dict({"name": "tiny", "data": {"dataset": "digits", "test_limit": 120, "val_size": 200},
                               "model": {"name": "small_cnn", "timesteps": T,
                                         "options": {"channels": [8, 16], "hidden": 32}}})
    ckpt = save_checkpoint({"recipe": recipe.to_dict(), "model": model.state_dict()}, tmp_path / "last.pt")
    parser = eval_parser()
    args = parser.parse_args([str(ckpt), "--cutoff", "--eps", "0", "0.01", "0.5", "--target-drop", "1",
                              "--no-timing", "--out", str(tmp_path / "ev")])
    assert args.cutoff and args.eps == [0.0, 0.01, 0.5] and args.target_drop == 1.0
    report = evaluate_checkpoint(ckpt, device="cpu", out_dir=args.out)
    run_cutoff(args, report, log=lambda s: None)
    saved = json.loads((tmp_path / "ev" / "eval_report.json").read_text())
    assert saved["cutoff"]["eps"] == [0.0, 0.01, 0.5] and saved["cutoff"]["target_drop"] == 0.01
    assert saved["cutoff"]["full_accuracy"] == pytest.approx(saved["accuracy"])
    assert (tmp_path / "ev" / "cutoff.png").exists()
    defaults = parser.parse_args([str(ckpt)])
    assert not defaults.cutoff and defaults.eps is None and defaults.target_drop == 0.5


@pytest.mark.parametrize("synapse", ["exp", "causal"])
def test_scb_synapse_state_is_dropped_too(synapse):
    torch.manual_seed(6)
    model = lively(build_model("scb_cnn", num_classes=5, input_shape=(2, 16, 16), timesteps=4,
                               neuron=NeuronSpec(kind="mtlif", num_thresholds=2), synapse=synapse, synapse_kernel=3,
                               channels=(4, 8), hidden=16).double())
    x = torch.rand(4, 10, 2, 16, 16, dtype=torch.float64) * 3
    cum, _ = cumulative_logits(model, [(x, torch.zeros(10, dtype=torch.long))])
    rule = SoftmaxCutoff(eps_for_mixed_stops(cum, step=1))
    dropped = anytime_batch(model, x, rule)
    assert len(dropped.steps.unique()) > 1
    masked = anytime_batch(model, x, rule, drop=False)
    assert torch.equal(dropped.steps, masked.steps) and torch.equal(dropped.predictions, masked.predictions)
    pred, steps, _ = simulate_cutoff(cum, rule)
    assert torch.equal(steps, dropped.steps) and torch.equal(pred, dropped.predictions)


def test_unknown_stateful_module_is_refused():
    from fewstep.errors import FewstepError
    from fewstep.infer import select_state

    class Memory(torch.nn.Module):
        def reset_state(self):
            pass

    with pytest.raises(FewstepError, match="select_state"):
        select_state(torch.nn.Sequential(Memory()), torch.tensor([0]))
