"""``benchmarks/digits_methods.py --quick``: both benchmarks run end to end and write every number."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from benchmark_scripts import load_benchmark

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    return load_benchmark("digits_methods")



def _fraction(v) -> bool:
    return isinstance(v, float) and math.isfinite(v) and 0.0 <= v <= 1.0


@pytest.mark.slow
def test_quick_run_writes_every_number(tmp_path: Path, _one_thread, capsys) -> None:
    bench = _bench()
    returned = bench.main(["--quick", "--seeds", "0", "--out", str(tmp_path)])
    res = json.loads((tmp_path / "results.json").read_text())
    assert res == json.loads(json.dumps(returned))
    assert res["meta"]["seeds"] == [0] and res["meta"]["quick"] is True and res["meta"]["wall_seconds"] > 0
    printed = capsys.readouterr().out
    assert "### Conversion" in printed and "### Anytime" in printed
    assert (tmp_path / "results.md").read_text().strip() == printed.strip()

    conv = res["conversion"]
    run = conv["per_seed"]["0"]
    assert set(run["converted_accuracy"]) == set(bench.METHODS) == {"dist", "max", "p99.9", "clip"}
    accs = [run["dnn_accuracy"], run["finetuned_accuracy"], *run["finetuned_accuracy_per_step"]]
    accs += [run["converted_accuracy"][m][t] for m in bench.METHODS for t in ("1", "2", "4")]
    assert all(_fraction(a) for a in accs), accs
    assert run["dnn_accuracy"] > 0.5  # even two epochs learn the digits
    assert len(run["finetuned_accuracy_per_step"]) == 2
    for m in bench.METHODS:
        r = run["energy_ratio"][m]
        assert isinstance(r, float) and math.isfinite(r) and 0 < r <= run["first_layer_bound"] * (1 + 1e-9)
    assert run["dnn_epochs"] == 2 and run["finetuned_epochs"] == 1
    summary = conv["summary"]
    assert summary["dnn_accuracy"]["mean"] == run["dnn_accuracy"] and summary["dnn_accuracy"]["std"] == 0.0
    assert summary["converted_accuracy"]["dist"]["2"]["mean"] == run["converted_accuracy"]["dist"]["2"]
    assert Path(run["paths"]["finetuned"]).exists()

    anytime = res["anytime"]
    assert set(anytime["per_seed"]) == set(anytime["summary"]) == {"digits-tet-t8", "digits-tet-str-t8"}
    for recipe, per in anytime["per_seed"].items():
        r = per["0"]
        assert r["timesteps"] == 8 and len(r["accuracy_per_step"]) == 8
        op = r["operating_point"]
        accs = [r["full_accuracy"], r["accuracy_t1"], op["accuracy"], r["oracle_accuracy"], *r["accuracy_per_step"],
                *r["sweep"]["accuracy"]]
        assert all(_fraction(a) for a in accs), (recipe, accs)
        assert r["full_accuracy"] == r["accuracy_per_step"][-1] and r["accuracy_t1"] == r["accuracy_per_step"][0]
        assert r["full_accuracy"] == pytest.approx(r["train_report_accuracy"])
        # eps is chosen on the validation split: the drop bound holds there, not on test
        assert op["chosen_on"] == "val" and op["val_drop"] <= 0.005 + 1e-12 and 1.0 <= r["mean_steps"] <= 8.0
        assert r["val_samples"] == 300
        assert r["speedup"] == pytest.approx(8 / r["mean_steps"])
        assert "wall_clock" not in r
        s = anytime["summary"][recipe]
        assert s["speedup"]["mean"] == r["speedup"] and len(s["accuracy_per_step"]) == 8


@pytest.mark.slow
def test_quick_event_anytime_with_timing(tmp_path: Path, _one_thread, capsys) -> None:
    """``--anytime-data events --timing``: the saccade-digits recipes, anytime only, wall-clock timing."""
    bench = _bench()
    res = bench.main(["--quick", "--seeds", "0", "--anytime-data", "events", "--timing", "--timing-repeats", "1",
                      "--out", str(tmp_path)])
    assert res == json.loads((tmp_path / "results.json").read_text())
    assert "conversion" not in res and res["meta"]["anytime_data"] == "events"
    printed = capsys.readouterr().out
    assert "### Anytime" in printed and "wall-clock" in printed and "### Conversion" not in printed
    anytime = res["anytime"]
    assert anytime["data"] == "events" and anytime["timing"] is True
    assert set(anytime["per_seed"]) == set(bench.EVENT_ANYTIME_RECIPES)
    assert set(bench.EVENT_ANYTIME_RECIPES) == {"saccade-digits-tet-t8", "saccade-digits-tet-str-t8"}
    for recipe, per in anytime["per_seed"].items():
        r = per["0"]
        assert r["timesteps"] == 8 and len(r["accuracy_per_step"]) == 8 and r["samples"] == 160
        assert r["epochs"] == 1 and r["full_accuracy"] == pytest.approx(r["train_report_accuracy"])
        assert all(_fraction(a) for a in [r["full_accuracy"], r["operating_point"]["accuracy"], *r["accuracy_per_step"]])
        assert r["operating_point"]["val_drop"] <= 0.005 + 1e-12 and r["speedup"] == pytest.approx(8 / r["mean_steps"])
        assert r["operating_point"]["chosen_on"] == "val" and r["val_samples"] == 64
        w = r["wall_clock"]
        assert w["engine_mean_steps"] == pytest.approx(r["mean_steps"]) and w["samples"] == 160
        for key in ("cutoff_seconds", "full_stepwise_seconds", "full_multistep_seconds", "speedup_vs_stepwise",
                    "speedup_vs_multistep"):
            assert math.isfinite(w[key]) and w[key] > 0, (recipe, key)
        s = anytime["summary"][recipe]["wall_clock"]
        assert s["speedup_vs_stepwise"]["mean"] == w["speedup_vs_stepwise"]


def test_event_option_defaults() -> None:
    bench = _bench()
    args = bench.parse_args(["--anytime-data", "events"])
    assert args.only == "anytime" and args.out == Path("runs/anytime_events") and args.timing is False
    args = bench.parse_args([])
    assert args.only is None and args.out == Path("runs/digits_methods") and args.anytime_data == "digits"


def test_conversion_data_option_defaults() -> None:
    bench = _bench()
    args = bench.parse_args(["--conversion-data", "fashion-mnist", "--dnn-set", "train.epochs=3"])
    assert args.only == "conversion" and args.out == Path("runs/fmnist_conversion")
    assert args.dnn_set == ["train.epochs=3"] and args.finetune_set == []
    from fewstep.config import load_recipe

    dnn, ft = bench.CONVERSION_DATA["fashion-mnist"]
    assert load_recipe(dnn).model.name.endswith("_dnn") and load_recipe(ft).model.name.endswith("_converted")
    assert load_recipe(dnn).data.dataset == load_recipe(ft).data.dataset == "fashion-mnist"


@pytest.mark.slow
def test_quick_fashion_mnist_conversion(tmp_path: Path, _one_thread) -> None:
    root = os.environ.get("FEWSTEP_DATA")
    if not root or not (Path(root) / "fashion-mnist").is_dir():
        pytest.skip("needs $FEWSTEP_DATA/fashion-mnist (e.g. FEWSTEP_DATA=../shared/data)")
    bench = _bench()
    limits = ["data.train_limit=512", "data.test_limit=256"]
    res = bench.main(["--conversion-data", "fashion-mnist", "--data-root", root, "--quick", "--seeds", "0",
                      "--out", str(tmp_path), *[a for x in limits for a in ("--dnn-set", x)],
                      *[a for x in limits for a in ("--finetune-set", x)]])
    conv = res["conversion"]
    assert conv["data"] == "fashion-mnist" and "anytime" not in res
    seed = conv["per_seed"]["0"]
    assert _fraction(seed["dnn_accuracy"]) and _fraction(seed["finetuned_accuracy"])
    assert all(_fraction(a) for m in seed["converted_accuracy"].values() for a in m.values())
