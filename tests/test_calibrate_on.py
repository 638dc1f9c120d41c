"""The cutoff's operating point is chosen on a validation split, never on the test split it
reports: ``cutoff_sweep(choose_on=...)``, ``fewstep eval --cutoff --calibrate-on``, and
``benchmarks/digits_methods.py``."""

from __future__ import annotations

import pytest
import torch
from eval_cli import eval_parser
from torch import nn

from fewstep.errors import ConfigError
from fewstep.infer.anytime import SoftmaxCutoff, simulate_cutoff
from fewstep.infer.cutoff import choose_operating_point

EPS = [0.0, 0.01, 0.1, 0.5, 0.9]


class Logits(nn.Module):
    """A 'model' whose per-step outputs are its input ``[T, B, classes]``."""

    input_shape = (3,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def split(n: int, seed: int, noise: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(4, n, 3, generator=g) * noise
    x[:, torch.arange(n), y] += torch.linspace(0.5, 2.0, 4).unsqueeze(1)
    return [(x, y)]


def test_eps_is_chosen_on_the_validation_feed_and_test_is_scored_there():
    from fewstep.infer import cumulative_logits, cutoff_sweep

    model, val, test = Logits(), split(400, 0, 2.5), split(300, 1, 1.0)
    sw = cutoff_sweep(model, test, EPS, choose_on=val, timing=False)

    def sweep(feed):
        cum, y = cumulative_logits(model, feed)
        acc, steps = [], []
        for e in EPS:
            p, s, _ = simulate_cutoff(cum, SoftmaxCutoff(e))
            acc.append(float((p == y).double().mean()))
            steps.append(float(s.double().mean()))
        return acc, steps, float((cum[-1].argmax(-1) == y).double().mean())

    v_acc, v_steps, v_full = sweep(val)
    on_val = choose_operating_point(EPS, v_acc, v_steps, v_full, 4, 0.005)
    t_acc, t_steps, t_full = sweep(test)
    on_test = choose_operating_point(EPS, t_acc, t_steps, t_full, 4, 0.005)
    assert on_val["eps"] != on_test["eps"]  # the two choices differ here: the test must tell them apart
    op = sw["operating_point"]
    assert op["eps"] == on_val["eps"] and op["chosen_on"] == "val"
    i = EPS.index(op["eps"])
    assert op["accuracy"] == t_acc[i] and op["mean_steps"] == t_steps[i]  # test numbers at the val eps
    assert op["drop"] == pytest.approx(t_full - t_acc[i]) and op["val_drop"] == pytest.approx(on_val["drop"])
    assert sw["speedup"] == pytest.approx(4 / t_steps[i]) and sw["calibration"]["accuracy"] == v_acc


def test_without_a_validation_feed_there_is_no_operating_point():
    from fewstep.infer import cutoff_sweep

    sw = cutoff_sweep(Logits(), split(100, 2, 1.0), EPS, timing=True)
    assert sw["operating_point"] is None and sw["speedup"] is None and "wall_clock" not in sw
    feed = split(50, 3, 1.0)
    with pytest.raises(ValueError, match="choose_on"):
        cutoff_sweep(Logits(), feed, EPS, choose_on=feed)


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """digits-tet-t8 cut to seconds, with (its default) and without a validation split."""
    from fewstep.config import load_recipe
    from fewstep.train.engine import train

    small = ["train.epochs=1", "data.train_limit=400", "data.test_limit=120", "model.options.channels=[8, 8]",
             "model.options.hidden=16"]
    out = tmp_path_factory.mktemp("calibrate")
    paths = {}
    for name, extra in (("val", []), ("noval", ["data.val_size=0"])):
        recipe = load_recipe("digits-tet-t8", small + ["data.val_size=100"] + extra)
        train(recipe, out / name, device="cpu", progress=False, log=lambda s: None)
        paths[name] = out / name / "last.pt"
    return paths


def _eval_args(checkpoint, out, **kw):
    p = eval_parser()
    argv = [str(checkpoint), "--cutoff", "--no-timing", "--out", str(out)]
    for key, value in kw.items():
        argv += [f"--{key.replace('_', '-')}", value]
    return p.parse_args(argv)


def test_anytime_recipes_hold_out_a_validation_split():
    from fewstep.config import load_recipe

    for name in ("digits-tet-t8", "digits-tet-str-t8", "saccade-digits-tet-t8", "saccade-digits-tet-str-t8"):
        assert load_recipe(name).data.val_size > 0, name


def test_eval_cutoff_chooses_on_val_by_default(tiny_runs, tmp_path):
    from fewstep.infer.cli import run_cutoff

    args = _eval_args(tiny_runs["val"], tmp_path / "ev")
    assert args.calibrate_on == "val"
    report = run_cutoff(args, {}, log=lambda s: None)
    op = report["cutoff"]["operating_point"]
    assert op["chosen_on"] == "val" and report["cutoff"]["calibration"]["samples"] == 100
    assert report["cutoff"]["samples"] == 120
    train = run_cutoff(_eval_args(tiny_runs["val"], tmp_path / "ev2", calibrate_on="train"), {}, log=lambda s: None)
    assert train["cutoff"]["operating_point"]["chosen_on"] == "train"
    assert train["cutoff"]["calibration"]["samples"] == 300


def test_eval_cutoff_refuses_without_a_validation_split(tiny_runs, tmp_path):
    from fewstep.infer.cli import run_cutoff

    with pytest.raises(ConfigError, match="--calibrate-on"):
        run_cutoff(_eval_args(tiny_runs["noval"], tmp_path / "ev"), {}, log=lambda s: None)
    with pytest.raises(SystemExit):  # there is no way to choose on the test split
        _eval_args(tiny_runs["noval"], tmp_path / "ev", calibrate_on="test")


def test_digits_benchmark_chooses_eps_on_val(tmp_path, monkeypatch):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from benchmark_scripts import load_benchmark

    bench = load_benchmark("digits_methods")
    monkeypatch.setattr(bench, "_epochs", lambda recipe, quick: ["train.epochs=1", "data.train_limit=400",
                                                                 "data.val_size=100", "model.options.channels=[8, 8]",
                                                                 "model.options.hidden=16"])
    r = bench.run_anytime_seed("digits-tet-t8", 0, tmp_path / "run", "cpu", True, lambda s: None)
    op = r["operating_point"]
    assert op["chosen_on"] == "val" and r["val_samples"] == 100
    sweep = r["sweep"]
    if op["eps"] is not None:
        i = sweep["eps"].index(op["eps"])
        assert op["accuracy"] == sweep["accuracy"][i] and op["mean_steps"] == sweep["mean_steps"][i]
    chosen = choose_operating_point(sweep["eps"], r["val_sweep"]["accuracy"], r["val_sweep"]["mean_steps"],
                                    r["val_sweep"]["full_accuracy"], 8, 0.005)
    assert chosen["eps"] == op["eps"]
