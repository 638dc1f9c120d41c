"""``benchmarks/stcb_ablation.py`` end to end on a tiny offline setting (embedded digits, no real data)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from benchmark_scripts import check_sweep_payload, check_sweep_run, load_benchmark


def _bench():
    return load_benchmark("stcb_ablation")


def test_variant_recipes() -> None:
    bench = _bench()
    assert bench.variant_recipe("fashion-mnist", "equivalent", 2) == ("fmnist-stcb-t2", [])
    assert bench.variant_recipe("fashion-mnist", "surrogate", 4) == (
        "fmnist-stcb-t4", ['model.options.gradient="surrogate"'])
    assert bench.variant_recipe("cifar10", "equivalent", 8) == ("cifar10-stcb-t2", ["model.timesteps=8"])
    assert bench.variant_recipe("digits", "ann", 4) == ("fmnist-stcb-t1", ['model.name="stcb_ablation_ann"'])
    assert bench.mean_std([0.5, 0.7])["std"] == pytest.approx(math.sqrt(0.02))
    # the surrogate override really reaches the conversions; the ANN has none left
    from fewstep.config import load_recipe
    from fewstep.layers.stcb import ConversionIF
    from fewstep.models import build_model

    bench.register_ann_model()
    recipe = load_recipe("fmnist-stcb-t2", bench.variant_recipe("digits", "surrogate", 2)[1])
    assert recipe.model.options["gradient"] == "surrogate"
    kw = {"num_classes": 10, "input_shape": (1, 8, 8), "timesteps": 1, "neuron": recipe.neuron}
    snn = build_model("stcb_small", **kw, gradient="surrogate")
    convs = [m for m in snn.modules() if isinstance(m, ConversionIF)]
    assert len(convs) == 3 and all(m.gradient == "surrogate" for m in convs)
    ann = build_model(bench.ANN_MODEL, **kw, base="stcb_small")
    assert not any(isinstance(m, ConversionIF) for m in ann.modules())
    assert sum(isinstance(m, torch.nn.ReLU) for m in ann.modules()) == 3


@pytest.mark.slow
def test_tiny_run_writes_every_number(tmp_path: Path, _one_thread, capsys) -> None:
    bench = _bench()
    out = tmp_path / "out"
    returned = bench.main(["--dataset", "digits", "--train-limit", "256", "--test-limit", "128", "--epochs", "1",
                           "--timesteps", "1", "2", "--seeds", "0", "--out", str(out)])
    res = check_sweep_payload(out, returned, train_samples=256, test_samples=128)
    meta = res["meta"]
    assert meta["dataset"] == "digits" and not meta["lossy_jpeg_copy"]
    assert meta["recipes"]["equivalent"] == {"1": "fmnist-stcb-t1", "2": "fmnist-stcb-t2"}
    assert set(res["results"]) == set(res["summary"]) == {"equivalent", "surrogate", "ann"}
    for gradient, per_t in res["results"].items():
        assert set(per_t) == ({"ANN"} if gradient == "ann" else {"1", "2"})
        for t, per_seed in per_t.items():
            run = per_seed["0"]
            steps = 1 if t == "ANN" else int(t)
            s = res["summary"][gradient][t]
            check_sweep_run(run, s, "digits", steps)
            ratio = run["energy"]["ratio"]
            assert isinstance(ratio, float) and math.isfinite(ratio) and ratio > 0
            if gradient == "ann":
                assert run["model"] == bench.ANN_MODEL and ratio == pytest.approx(1.0)
            else:
                assert run["model"] == "stcb_small" and run["energy"]["sops"] > 0
                assert ('model.options.gradient="surrogate"' in run["overrides"]) == (gradient == "surrogate")
            assert s["energy_ratio"]["mean"] == ratio
    printed = capsys.readouterr().out
    assert "| `surrogate` | 2 |" in printed and "| `ann` | ANN |" in printed and "ANN/SNN energy" in printed
    assert (out / "results.md").read_text().strip() == printed.strip()
