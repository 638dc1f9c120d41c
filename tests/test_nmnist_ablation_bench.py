"""``benchmarks/nmnist_ablation.py`` end to end on a tiny offline setting (saccade-digits, no real data)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from benchmark_scripts import check_sweep_payload, check_sweep_run, is_fraction, load_benchmark


def _bench():
    return load_benchmark("nmnist_ablation")


def test_variant_recipes() -> None:
    bench = _bench()
    assert bench.variant_recipe("stc", 2) == ("nmnist-stc-t2", [])
    assert bench.variant_recipe("stc", 4) == ("nmnist-stc-t4", [])
    assert bench.variant_recipe("lif", 2) == ("nmnist-lif-t2", [])
    assert bench.variant_recipe("lif", 4) == ("nmnist-lif-t2", ["model.timesteps=4", "data.options.timesteps=4"])
    assert bench.mean_std([0.5, 0.7])["std"] == pytest.approx(math.sqrt(0.02))


@pytest.mark.slow
def test_tiny_run_writes_every_number(tmp_path: Path, _one_thread, capsys) -> None:
    bench = _bench()
    out = tmp_path / "out"
    returned = bench.main(["--dataset", "saccade-digits", "--train-limit", "64", "--test-limit", "32",
                           "--epochs", "1", "--timesteps", "1", "2", "--seeds", "0",
                           "--variants", "stc", "lif", "stc+pretrain", "--pretrain-dataset", "saccade-digits",
                           "--pretrain-train-limit", "64", "--pretrain-test-limit", "32", "--pretrain-epochs", "1",
                           "--out", str(out)])
    res = check_sweep_payload(out, returned, train_samples=64, test_samples=32)
    meta = res["meta"]
    assert meta["recipes"]["stc"] == {"1": "nmnist-stc-t1", "2": "nmnist-stc-t2"}
    assert set(res["results"]) == set(res["summary"]) == {"stc", "lif", "stc+pretrain"}
    for variant, per_t in res["results"].items():
        assert set(per_t) == {"1", "2"}
        for t, per_seed in per_t.items():
            run = per_seed["0"]
            check_sweep_run(run, res["summary"][variant][t], "saccade-digits", int(t))
            if variant == "stc+pretrain":
                assert is_fraction(run["pretrain"]["accuracy"])
                assert any(o.startswith("train.init_checkpoint=") for o in run["overrides"])
            if variant == "lif":
                assert run["neuron"] == "lif"
            else:
                assert run["neuron"] == "mtlif"
    printed = capsys.readouterr().out
    assert "1 sample = 3.1 accuracy points" in printed and "| `lif` | 2 |" in printed  # 32 test samples
    assert (out / "results.md").read_text().strip() == printed.strip()


def test_protocol_overrides() -> None:
    """``val`` keeps the recipes' validation split and augmentation; ``earlier`` restores the
    2026-11-27 protocol; substitute (emulated) data has no recordings to augment."""
    bench = _bench()
    args = bench.parse_args(["--data-root", "somewhere"])
    assert args.protocol == "val" and args.epochs == 30 and bench.protocol_overrides(args) == []
    args = bench.parse_args(["--data-root", "somewhere", "--val-size", "50"])
    assert bench.protocol_overrides(args) == ["data.val_size=50"]
    args = bench.parse_args(["--data-root", "somewhere", "--protocol", "earlier", "--epochs", "10"])
    assert bench.protocol_overrides(args) == ["data.val_size=0", "data.augment={}", "data.crop_padding=2"]
    args = bench.parse_args(["--dataset", "saccade-digits"])
    assert bench.protocol_overrides(args) == ["data.augment={}", "data.val_size=0"]
    from fewstep.config import load_recipe

    recipe = load_recipe("nmnist-stc-t2", bench.protocol_overrides(args))
    assert recipe.data.augment == {} and recipe.data.val_size == 0


def test_table_shows_the_validation_accuracy_under_the_val_protocol() -> None:
    bench = _bench()
    run = {"accuracy": 0.97, "accuracy_per_step": [0.96, 0.97], "val_accuracy": 0.95, "train_seconds": 10.0}
    results = {"stc": {"2": {"0": run}}}
    meta = {"train_samples": 800, "test_samples": 100, "val_samples": 100, "epochs": 30, "device": "cpu",
            "threads": 1, "dataset_label": "real N-MNIST subset, nmnist-small"}
    table = bench.markdown_table(results, bench.summarise(results), [0], meta)
    assert "100 more held out for validation" in table and "scored once" in table
    assert "val T (100 samples), mean" in table and "| 95.0 ± 0.0 |" in table
    assert "standard error of one run at 97 % is 1.7 points" in table
