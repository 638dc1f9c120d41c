"""DNN-to-SNN conversion (fewstep.convert, fewstep.models.dnn): factors, histograms, the converted
neuron, checkpoints that evaluate and fine-tune, and an end-to-end conversion on digits."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch
from torch import nn

from fewstep.config import recipe_from_dict
from fewstep.convert import METHODS, clipped_relus, collect_histograms, convert, expected_error, fit_factors, staircase
from fewstep.convert.cli import register
from fewstep.convert.factors import FITTERS, fit_distribution_aware, fit_max
from fewstep.convert.histograms import histogram_of
from fewstep.energy import count_energy
from fewstep.evaluate import evaluate_checkpoint, load_trained
from fewstep.models import build_model
from fewstep.models.dnn import CONVERTED_NAMES, ClippedReLU, ConvertedIF
from fewstep.neurons import reset_net, set_step_mode, spiking_neurons
from fewstep.train.checkpoint import load_checkpoint
from fewstep.train.engine import train

MU = 4.0


pytestmark = pytest.mark.usefixtures("_one_thread")  # tests/conftest.py: one torch thread per module


def _skewed(n: int = 100_000) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.empty(n).exponential_(1.0, generator=g) * 0.5  # mean 0.5, far below mu = 4


# ---------------------------------------------------------------- factors


def test_staircase_formula() -> None:
    x = torch.tensor([-1.0, 0.0, 0.49, 0.5, 0.99, 1.0, 3.0])
    torch.testing.assert_close(staircase(x, 1.0, 2.0, 2), torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 2.0, 2.0]))


def test_uniform_large_T_gives_a_and_b_near_one() -> None:
    x = torch.rand(200_000, generator=torch.Generator().manual_seed(0)) * MU
    f = fit_distribution_aware(histogram_of(x, MU), 64)
    assert abs(f.a - 1) < 0.03 and abs(f.b - 1) < 0.03, f


@pytest.mark.parametrize("dist", ["exponential", "half-normal"])
def test_skewed_T2_gives_a_below_one(dist: str) -> None:
    g = torch.Generator().manual_seed(0)
    if dist == "exponential":
        x = torch.empty(100_000).exponential_(1.0, generator=g)
    else:
        x = torch.randn(100_000, generator=g).abs()
    f = fit_distribution_aware(histogram_of(x, MU), 2)
    assert f.a < 0.6 and f.b > 1, f


def test_distribution_aware_beats_max_balancing_on_skewed_data() -> None:
    x = _skewed()
    h = histogram_of(x, MU)
    dist, mx = fit_distribution_aware(h, 2), fit_max(h, 2)
    assert mx.a == 1.0 and mx.b == 1.0  # the max exceeds mu: balancing keeps V = mu
    # Monte-Carlo error on the raw samples (not the histogram) confirms the fitted objective.
    target = x.clamp(0, MU)
    err = {f.method: float(((target - staircase(x, f.v_threshold, f.amplitude, 2)) ** 2).mean()) for f in (dist, mx)}
    assert err["dist"] < 0.3 * err["max"]
    assert math.isclose(err["dist"], dist.error, rel_tol=0.02) and math.isclose(err["max"], mx.error, rel_tol=0.02)


def test_initial_membrane_half_rounds_instead_of_flooring() -> None:
    x = torch.tensor([0.2, 0.26, 0.5, 0.74, 0.76, 1.2])
    torch.testing.assert_close(staircase(x, 1.0, 1.0, 2, 0.5), torch.tensor([0.0, 0.5, 0.5, 0.5, 1.0, 1.0]))
    h = histogram_of(_skewed(), MU)
    half, zero = fit_distribution_aware(h, 2, 0.5), fit_distribution_aware(h, 2)
    assert half.initial_membrane == 0.5 and half.error < zero.error  # rounding is the better quantiser
    with pytest.raises(ValueError, match="initial_membrane"):
        fit_factors([h], 2, "dist", initial_membrane=1.0)


def test_refinement_finds_the_grid_minimum() -> None:
    h = histogram_of(_skewed(), MU)
    f = fit_distribution_aware(h, 2)
    a = torch.linspace(0.01, 1.5, 3000, dtype=torch.float64)
    errs = torch.stack([expected_error(h, ai, f.b, 2) for ai in a[::10]])  # b fixed at the optimum's b
    assert f.error <= float(errs.min()) + 1e-9


def test_baselines_and_unknown_method() -> None:
    h = histogram_of(torch.rand(10_000) * 2.0, MU)  # max 2 < mu: balancing lowers V to the max
    by = {m: fit_factors([h], 2, m)[0] for m in METHODS}
    assert by["max"].a == pytest.approx(h.x_max / MU) and by["clip"].a == 1.0
    assert by["p99.9"].a == pytest.approx(h.percentile(99.9) / MU) and by["p99.9"].a < by["max"].a
    assert all(by[m].b == 1.0 for m in ("max", "p99.9", "clip"))
    assert h.percentile(50) == pytest.approx(1.0, abs=0.03)
    with pytest.raises(ValueError, match="unknown conversion method"):
        fit_factors([h], 2, "nope")
    assert set(FITTERS) == set(METHODS)


# ---------------------------------------------------------------- histograms


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 32), ClippedReLU(1.5), nn.Linear(32, 16), ClippedReLU(), nn.Linear(16, 3))


def test_streamed_histogram_equals_direct_histogram() -> None:
    model = _mlp()
    batches = [torch.randn(50, 6) for _ in range(7)]
    seen: dict[int, list[torch.Tensor]] = {0: [], 1: []}
    handles = [m.register_forward_pre_hook(lambda mod, args, i=i: seen[i].append(args[0].detach()))
               for i, (_, m) in enumerate(clipped_relus(model))]
    with torch.no_grad():
        for x in batches:
            model(x)
    for h in handles:
        h.remove()
    hists = collect_histograms(model, batches, bins=300)
    assert [h.name for h in hists] == ["1", "3"] and [h.mu for h in hists] == [1.5, 4.0]
    for i, h in enumerate(hists):
        x = torch.cat(seen[i]).flatten()
        direct = histogram_of(x, h.mu, bins=300)
        assert h.hi == direct.hi == float(x.max()) and h.x_min == float(x.min())
        assert torch.equal(h.counts, direct.counts)
        assert h.below == float((x < 0).sum()) and h.total == x.numel() == h.below + float(h.counts.sum())
    # a callable source is replayed for the two passes and gives the same histograms
    again = collect_histograms(model, lambda: iter(batches), bins=300)
    assert all(torch.equal(a.counts, b.counts) for a, b in zip(hists, again))


# ---------------------------------------------------------------- the converted neuron and network


@pytest.mark.parametrize("theta", [0.0, 0.5])
@pytest.mark.parametrize("timesteps", [1, 2, 3, 5])
def test_one_layer_conversion_reproduces_the_staircase_exactly(timesteps: int, theta: float) -> None:
    torch.manual_seed(timesteps)
    dnn = nn.Sequential(nn.Linear(4, 64), ClippedReLU(2.0)).double()
    factors = fit_factors([histogram_of(torch.rand(1000) * 3, 2.0)], timesteps, "dist", initial_membrane=theta)
    factors = [type(factors[0])(**{**factors[0].__dict__, "a": 0.37, "b": 1.3})]  # arbitrary a, b
    snn = convert(dnn, factors)
    x = torch.randn(32, 4, dtype=torch.float64) * 2
    with torch.no_grad():
        out = snn(x.unsqueeze(0).expand(timesteps, -1, -1))  # constant input current at every step
        current = dnn[0](x)
    f = factors[0]
    counts = (out.sum(0) / f.amplitude).round()
    assert torch.equal(counts, torch.clamp(torch.floor(timesteps * current / f.v_threshold + theta), 0, timesteps))
    torch.testing.assert_close(out.mean(0), staircase(current, f.v_threshold, f.amplitude, timesteps, theta))
    assert set(out.unique().tolist()) <= {0.0, f.amplitude}


def test_converted_snn_approaches_the_dnn_at_large_T() -> None:
    dnn = _mlp().double().eval()
    data = [torch.rand(200, 6, dtype=torch.float64) * 2 for _ in range(3)]
    hists = collect_histograms(dnn, data)
    x = torch.rand(100, 6, dtype=torch.float64) * 2
    with torch.no_grad():
        ref = dnn(x)
        errors = {}
        for t in (4, 32, 256):
            out = convert(dnn, fit_factors(hists, t, "dist"))(x.unsqueeze(0).expand(t, -1, -1))
            errors[t] = float((out.mean(0) - ref).abs().mean() / ref.abs().mean())
    assert errors[256] < errors[32] < errors[4] and errors[256] < 0.03, errors


def test_converted_if_gradients_leak_and_streaming() -> None:
    n = ConvertedIF(0.5, 1.5, initial_membrane=0.25)
    assert n.spike_amplitude.item() == pytest.approx(0.75) and n.decay.item() == 1.0
    assert set(n.state_dict()) == {"threshold", "leak", "amplitude_ratio", "initial_membrane"}
    x = torch.rand(3, 4, 8, requires_grad=True)
    out = n(x)
    assert set(out.unique().tolist()) <= {0.0, 0.75}
    out.sum().backward()
    assert n.threshold.grad is not None and n.leak.grad is not None and x.grad.abs().sum() > 0
    with torch.no_grad():
        n.leak.fill_(1.7)  # out of range: used clamped to 1
    assert n.decay.item() == 1.0
    with torch.no_grad():
        n.leak.fill_(0.8)
        ref = n(x)
        set_step_mode(n, "s")
        got = torch.stack([n(x[t]) for t in range(3)])
    torch.testing.assert_close(got, ref)
    reset_net(n)
    assert n.v is None
    with pytest.raises(ValueError):
        ConvertedIF(1.0, 1.0, leak=1.5)


@pytest.mark.parametrize("dnn_name", sorted(CONVERTED_NAMES))
def test_dnn_and_converted_models(dnn_name: str) -> None:
    small = dnn_name.startswith("small")
    opts = {"channels": (4, 8), "hidden": 16} if small else {"width_mult": 1 / 16}
    shape = (1, 28, 28) if small else (3, 32, 32)
    dnn = build_model(dnn_name, num_classes=5, input_shape=shape, timesteps=1, **opts).eval()
    assert not spiking_neurons(dnn) and dnn(torch.rand(2, *shape)).shape == (1, 2, 5)
    hists = collect_histograms(dnn, [torch.rand(4, *shape)], bins=64)
    snn = convert(dnn, fit_factors(hists, 2), 2)
    registered = build_model(CONVERTED_NAMES[dnn_name], num_classes=5, input_shape=shape, timesteps=2, **opts)
    registered.load_state_dict(snn.state_dict())  # same layout: strict load
    assert len(spiking_neurons(registered)) == len(hists)
    x = torch.rand(3, *shape)
    with torch.no_grad():
        torch.testing.assert_close(registered.eval()(x), snn(x))
    rep = count_energy(snn, x)  # spikes of amplitude A are recognised: every non-stem layer is accumulates
    assert all(lo.kind == "sop" for lo in rep.layers if not lo.name.startswith("stem"))


def test_vgg_cfg_option_for_small_images() -> None:
    cfg = [8, "M", 16, "M", 16, "M"]
    m = build_model("vgg11_dnn", num_classes=3, input_shape=(1, 28, 28), timesteps=1, cfg=cfg)
    assert m(torch.rand(2, 1, 28, 28)).shape == (1, 2, 3)
    with pytest.raises(ValueError, match="too small"):
        build_model("vgg11_dnn", num_classes=3, input_shape=(1, 28, 28), timesteps=1)


def test_cli_parser() -> None:
    from fewstep.convert import cli

    parser = argparse.ArgumentParser(prog="fewstep")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["convert", "dnn.pt"])
    assert (args.timesteps, args.method, args.eval_timesteps, args.calib_batches, args.initial_membrane) == (
        2, "all", [1, 2, 4], 20, 0.0)
    assert args.handler is cli.run and cli.METHODS == METHODS
    for bad in (["--eval-timesteps", "0,2"], ["--method", "nope"], ["--timesteps", "0"], ["--initial-membrane", "1"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["convert", "dnn.pt", *bad])


# ---------------------------------------------------------------- end to end on digits


def _dnn_recipe(**train) -> dict:
    return {"name": "digits-dnn-test",
            "data": {"dataset": "digits", "batch_size": 32, "crop_padding": 1},
            "model": {"name": "small_cnn_dnn", "timesteps": 1,
                      "options": {"channels": [16, 32], "hidden": 64, "dropout": 0.1}},
            "train": {"epochs": 6, "optimizer": "adamw", "lr": 3e-3, "weight_decay": 1e-2, "loss": "ce", **train}}


@pytest.fixture(scope="module")
def digits_dnn(tmp_path_factory):
    out = tmp_path_factory.mktemp("dnn")
    report = train(recipe_from_dict(_dnn_recipe()), out, device="cpu", progress=False, log=lambda s: None)
    return out / "last.pt", report


@pytest.fixture(scope="module")
def converted(digits_dnn, tmp_path_factory):
    ckpt, _ = digits_dnn
    out = tmp_path_factory.mktemp("convert")
    parser = argparse.ArgumentParser(prog="fewstep")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["convert", str(ckpt), "--timesteps", "2", "--eval-timesteps", "1,2",
                              "--out", str(out), "--device", "cpu", "--calib-batches", "8"])
    assert args.handler(args) == 0
    return out, json.loads((out / "report.json").read_text())


def test_end_to_end_distribution_aware_beats_max_balancing(digits_dnn, converted) -> None:
    _, dnn_report = digits_dnn
    _, report = converted
    acc = report["converted_accuracy"]
    assert report["dnn_accuracy"] == pytest.approx(dnn_report["accuracy"]) and report["dnn_accuracy"] > 0.9
    # The paper's claim: a wide margin over a = b = 1 / max balancing before fine-tuning.
    assert acc["dist"]["2"] > acc["max"]["2"] + 0.2 and acc["dist"]["2"] > acc["clip"]["2"] + 0.2
    assert acc["dist"]["2"] > report["dnn_accuracy"] - 0.1
    for f in report["layers"]["dist"]:
        assert 0 < f["a"] < 1 and f["V"] == pytest.approx(f["a"] * f["mu"]) and f["A"] == pytest.approx(f["b"] * f["V"])
    e = report["energy"]["dist"]
    assert 1 < e["ratio"] <= e["first_layer_bound"] * (1 + 1e-9)
    assert {"2"} <= set(report["factors_per_timesteps"]["dist"]) and len(report["histograms"]) == 3


def test_converted_checkpoint_evaluates_and_fine_tunes(converted, tmp_path) -> None:
    out, report = converted
    path = out / "converted-dist-t2.pt"
    state = load_checkpoint(path)
    assert state["epoch"] == 0 and state["history"] == [] and state["recipe"]["model"]["name"] == "small_cnn_converted"
    recipe, model, _, _ = load_trained(path, device="cpu")
    assert model.timesteps == 2 and len(spiking_neurons(model)) == 3
    ev = evaluate_checkpoint(path, device="cpu", out_dir=tmp_path)
    assert ev["accuracy"] == pytest.approx(report["converted_accuracy"]["dist"]["2"])
    raw = recipe.to_dict()
    raw["data"].update(train_limit=64, test_limit=64)
    raw["train"].update(epochs=1, init_checkpoint=str(path))
    ft = train(recipe_from_dict(raw), tmp_path / "ft", device="cpu", progress=False, log=lambda s: None)
    assert ft["epochs"] == 1 and 0 <= ft["accuracy"] <= 1
    tuned = load_checkpoint(tmp_path / "ft" / "last.pt")["model"]
    assert not torch.equal(tuned["body.0.threshold"], state["model"]["body.0.threshold"])  # V is trained


def test_convert_refuses_a_checkpoint_that_is_not_a_dnn(tmp_path) -> None:
    from fewstep.convert import convert_checkpoint
    from fewstep.errors import CheckpointError
    from fewstep.train.checkpoint import save_checkpoint

    recipe = recipe_from_dict({"model": {"name": "small_cnn", "options": {"channels": [4, 8], "hidden": 16}}})
    model = build_model("small_cnn", num_classes=10, input_shape=(1, 8, 8), timesteps=2, channels=(4, 8), hidden=16)
    save_checkpoint({"recipe": recipe.to_dict(), "model": model.state_dict()}, tmp_path / "snn.pt")
    with pytest.raises(CheckpointError, match="not a convertible DNN"):
        convert_checkpoint(tmp_path / "snn.pt", device="cpu", out_dir=tmp_path / "out", log=lambda s: None)
    assert not (tmp_path / "out").exists()
