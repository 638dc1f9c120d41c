"""The cifar_fast family (SNN, DNN, converted SNN) and the cifar10-fast recipes on a tiny slice."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fewstep.config import load_recipe
from fewstep.convert.converter import convert, convert_checkpoint
from fewstep.convert.factors import LayerFactors
from fewstep.errors import ConfigError
from fewstep.layers import BatchNorm2d
from fewstep.models import build_model
from fewstep.models.cifar_fast import HeadScale, fold_batchnorm, whitening_filters
from fewstep.models.dnn import ClippedReLU, ConvertedIF
from fewstep.neurons import MTLIF, NeuronSpec
from fewstep.train import train
from fewstep.train.checkpoint import load_checkpoint
from fewstep.train.data_feed import DeviceFeed
from fewstep.train.engine import prepare_data, set_up_run, start_run

CIFAR_RECIPES = ["cifar10-fast-dnn", "cifar10-fast-mtlif-t2", "cifar10-fast-lif-t2", "cifar10-fast-stcb-t2",
                 "cifar10-fast-stcb-surrogate-t2", "cifar10-fast-tet-t4", "cifar10-fast-tet-str-t4"]
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def jpeg_root(tmp_path_factory) -> Path:
    """A cifar10-jpeg folder in the real layout: 32x32 JPEGs, 24 train and 6 test per class, each
    class a distinct colour so a tiny run can learn something."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("test", 6)):
        for c, name in enumerate(CLASSES):
            d = root / "cifar10-jpeg" / split / name
            d.mkdir(parents=True)
            base = np.array([(c * 25) % 256, (c * 70) % 256, (255 - c * 25) % 256], np.float64)
            for i in range(n):
                img = np.clip(base + rng.normal(0, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i:04d}.jpg", quality=75)
    return root


@pytest.mark.parametrize("name,T", [("cifar_fast", 2), ("cifar_fast_dnn", 1), ("cifar_fast_converted", 2)])
def test_models_build_and_return_per_step_logits(name, T):
    m = build_model(name, num_classes=10, input_shape=(3, 32, 32), timesteps=T,
                    neuron=NeuronSpec(kind="mtlif", num_thresholds=2), widths=[8, 8, 16, 16])
    assert m(torch.randn(3, 3, 32, 32)).shape == (T, 3, 10)
    kinds = {type(x) for x in m.modules()}
    if name == "cifar_fast":
        assert MTLIF in kinds and BatchNorm2d in kinds
    elif name == "cifar_fast_dnn":
        assert ClippedReLU in kinds and BatchNorm2d in kinds
    else:
        assert ConvertedIF in kinds and BatchNorm2d not in kinds


def test_bad_options_are_config_errors():
    for kw in ({"widths": [8, 8, 8]}, {"widths": [8, 0, 8, 8]}, {"pool": "max"}, {"dropout": 1.5}):
        with pytest.raises(ConfigError):
            build_model("cifar_fast", num_classes=10, input_shape=(3, 32, 32), timesteps=2, **kw)
    with pytest.raises(ConfigError, match="too small"):
        build_model("cifar_fast", num_classes=10, input_shape=(3, 4, 4), timesteps=2)


def test_fold_batchnorm_keeps_the_function_and_the_parameter_names():
    torch.manual_seed(0)
    dnn = build_model("cifar_fast_dnn", num_classes=10, input_shape=(3, 32, 32), timesteps=1, widths=[8, 8, 16, 16])
    dnn.train()
    with torch.no_grad():
        for _ in range(3):
            dnn(torch.randn(32, 3, 32, 32) * 2 + 0.5)
        for m in dnn.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(-1.5, 1.5)  # negative scales too
                m.bias.uniform_(-0.5, 0.5)
    dnn.eval()
    folded = fold_batchnorm(copy.deepcopy(dnn))
    x = torch.randn(8, 3, 32, 32)
    torch.testing.assert_close(folded(x), dnn(x), rtol=1e-4, atol=1e-5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    snn = build_model("cifar_fast_converted", num_classes=10, input_shape=(3, 32, 32), timesteps=2,
                      widths=[8, 8, 16, 16])
    conv_keys = {k for k in snn.state_dict() if ".weight" in k or ".bias" in k}
    assert conv_keys <= set(folded.state_dict())


def test_convert_folds_the_batch_norms_into_a_loadable_snn():
    torch.manual_seed(1)
    dnn = build_model("cifar_fast_dnn", num_classes=10, input_shape=(3, 32, 32), timesteps=1,
                      widths=[8, 8, 16, 16]).eval()
    n_layers = sum(isinstance(m, ClippedReLU) for m in dnn.modules())
    factors = [LayerFactors(f"layer{i}", "max", 2, mu=4.0, a=1.0, b=1.0, error=0.0) for i in range(n_layers)]
    snn = convert(dnn, factors, timesteps=2)
    assert snn.spiking and not any(isinstance(m, torch.nn.BatchNorm2d) for m in snn.modules())
    registered = build_model("cifar_fast_converted", num_classes=10, input_shape=(3, 32, 32), timesteps=2,
                             widths=[8, 8, 16, 16])
    registered.load_state_dict(snn.state_dict())  # strict
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in dnn.modules())  # the DNN itself is untouched


def test_head_scale_multiplies_the_logits_and_is_checked():
    torch.manual_seed(2)
    plain = build_model("cifar_fast_dnn", num_classes=10, input_shape=(3, 32, 32), timesteps=1, widths=[8, 8, 16, 16])
    scaled = build_model("cifar_fast_dnn", num_classes=10, input_shape=(3, 32, 32), timesteps=1, widths=[8, 8, 16, 16],
                         head_scale=0.125)
    missing, unexpected = scaled.load_state_dict(plain.state_dict(), strict=False)
    assert missing == [f"body.{len(scaled.body) - 1}.3.scale"] and not unexpected  # the factor is part of the state
    plain.eval(), scaled.eval()
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(scaled(x), plain(x) * 0.125)
    with pytest.raises(RuntimeError, match="scale"):  # a scaled checkpoint never loads silently without it
        plain.load_state_dict(scaled.state_dict())
    for bad in (0.0, -1.0, float("inf"), True, "0.1"):
        with pytest.raises(ConfigError, match="head_scale"):
            build_model("cifar_fast", num_classes=10, input_shape=(3, 32, 32), timesteps=2, head_scale=bad)


def test_convert_folds_the_head_scale_into_the_read_out():
    torch.manual_seed(3)
    dnn = build_model("cifar_fast_dnn", num_classes=10, input_shape=(3, 32, 32), timesteps=1, widths=[8, 8, 16, 16],
                      head_scale=1 / 9).eval()
    n_layers = sum(isinstance(m, ClippedReLU) for m in dnn.modules())
    factors = [LayerFactors(f"layer{i}", "max", 2, mu=4.0, a=1.0, b=1.0, error=0.0) for i in range(n_layers)]
    snn = convert(dnn, factors, timesteps=2)
    assert not any(isinstance(m, HeadScale) for m in snn.modules())
    torch.testing.assert_close(snn.body[-1][2].weight, dnn.body[-1][2].weight / 9)
    torch.testing.assert_close(snn.body[-1][2].bias, dnn.body[-1][2].bias / 9)
    x = torch.rand(4, 3, 32, 32)
    unfolded = copy.deepcopy(dnn)
    unfolded.body[-1][3] = torch.nn.Identity()
    reference = convert(unfolded, factors, timesteps=2)
    torch.testing.assert_close(snn(x), reference(x) / 9, rtol=1e-4, atol=1e-6)  # same spikes, logits / 9
    for opts in ({}, {"head_scale": 1 / 9}):  # the fine-tuning recipe needs no head_scale; the DNN's options load too
        registered = build_model("cifar_fast_converted", num_classes=10, input_shape=(3, 32, 32), timesteps=2,
                                 widths=[8, 8, 16, 16], **opts)
        registered.load_state_dict(snn.state_dict())  # strict


TINY = ["data.val_size=40", "data.batch_size=32", "data.eval_batch_size=64", "train.epochs=1", "train.warmup_epochs=0"]


def _tiny(name: str) -> list[str]:
    """TINY plus narrow layers (each family names its widths differently)."""
    if "stcb" in name:
        return [*TINY, "model.options.width_mult=0.25"]
    return [*TINY, "model.options.widths=[8, 8, 16, 16]"]


@pytest.mark.parametrize("name", CIFAR_RECIPES)
def test_recipe_runs_on_a_tiny_slice(name, jpeg_root, tmp_path):
    shipped = load_recipe(name)
    assert shipped.data.dataset == "cifar10-jpeg" and shipped.data.val_size == 5000  # 45k train / 5k val
    recipe = load_recipe(name, _tiny(name))
    report = train(recipe, tmp_path, device="cpu", data_root=jpeg_root, progress=False, log=lambda s: None)
    assert report["val_samples"] == 40 and report["train_samples"] == 200 and report["test_samples"] == 60
    assert len(report["accuracy_per_step"]) == recipe.model.timesteps
    assert all(0.0 <= a <= 1.0 for a in report["accuracy_per_step"])
    assert report["energy"]["energy_pj"] > 0


def test_conversion_pipeline_on_a_tiny_slice(jpeg_root, tmp_path):
    dnn_recipe = load_recipe("cifar10-fast-dnn", _tiny("dnn"))
    train(dnn_recipe, tmp_path / "dnn", device="cpu", data_root=jpeg_root, progress=False, log=lambda s: None)
    report = convert_checkpoint(tmp_path / "dnn" / "last.pt", timesteps=2, eval_timesteps=(1, 2),
                                out_dir=tmp_path / "conv", data_root=jpeg_root, calib_batches=2, log=lambda s: None)
    assert set(report["converted_accuracy"]) >= {"dist", "max"}
    ckpt = tmp_path / "conv" / "converted-dist-t2.pt"
    ft = load_recipe("cifar10-fast-convert-finetune-t2", [*_tiny("ft"), f"train.init_checkpoint={str(ckpt)!r}"])
    out = train(ft, tmp_path / "ft", device="cpu", data_root=jpeg_root, progress=False, log=lambda s: None)
    assert len(out["accuracy_per_step"]) == 2


@pytest.mark.skipif(not (Path(os.environ.get("FEWSTEP_DATA", "/nonexistent")) / "cifar10-jpeg").is_dir(),
                    reason="$FEWSTEP_DATA/cifar10-jpeg (the shared JPEG copy of CIFAR-10) is absent")
def test_real_cifar10_jpeg_slice(tmp_path):
    recipe = load_recipe("cifar10-fast-mtlif-t2", ["data.options={limit=300, cache_dir=" + repr(str(tmp_path)) + "}",
                                                   *_tiny("mtlif")])
    report = train(recipe, tmp_path / "run", device="cpu", data_root=os.environ["FEWSTEP_DATA"], progress=False,
                   log=lambda s: None)
    assert report["train_samples"] == 260 and report["test_samples"] == 300


def test_benchmark_runs_every_row_and_resumes(jpeg_root, tmp_path):
    """benchmarks/cifar10_fast.py end to end on the tiny slice: conversion pipeline, a direct row and
    the anytime row (eps chosen on val, applied to test); a second call reuses the finished runs."""
    from benchmark_scripts import load_benchmark

    bench = load_benchmark("cifar10_fast")
    argv = ["--rows", "conversion", "lif", "anytime", "--data-root", str(jpeg_root), "--out", str(tmp_path),
            *[a for s in [*TINY, "model.options.widths=[8, 8, 16, 16]"] for a in ("--set", s)]]
    payload = bench.main(argv)
    rows = {r["row"]: r for r in payload["results"]}
    conv = rows["conversion"]
    assert set(conv["converted_accuracy"]["dist"]) == {"1", "2", "4"}
    assert len(conv["finetuned"]["accuracy_per_step"]) == 2 and conv["pipeline_wall_seconds"] > 0
    cut = rows["anytime"]["tet-str"]["cutoff"]
    assert 1.0 <= cut["test_mean_steps"] <= 4.0 and cut["speedup"] >= 1.0
    assert cut["eps_chosen_on_val"] == cut["val_operating_point"]["eps"]
    md = (tmp_path / "results.md").read_text()
    assert "cifar10-fast-lif-t2" in md and "Softmax cutoff" in md
    assert "every run with --set" in md and "model.options.widths=[8, 8, 16, 16]" in md.splitlines()[0]
    mtime = (tmp_path / "lif-s0" / "report.json").stat().st_mtime_ns
    again = bench.main(argv)
    assert (tmp_path / "lif-s0" / "report.json").stat().st_mtime_ns == mtime  # finished runs are reused
    assert again["results"][1]["run"]["accuracy_per_step"] == rows["lif"]["run"]["accuracy_per_step"]
    table = bench.main(["--table-from", str(tmp_path / "results.json")])  # re-renders, trains nothing
    assert table["results"] == again["results"]
    assert (tmp_path / "lif-s0" / "report.json").stat().st_mtime_ns == mtime


def test_benchmark_names_why_a_run_failed(jpeg_root, tmp_path):
    """A run the recipe check refuses stops the sweep with that run's own error line, not only a
    pointer to the log."""
    from benchmark_scripts import load_benchmark

    bench = load_benchmark("cifar10_fast")
    argv = ["--rows", "lif", "--data-root", str(jpeg_root), "--out", str(tmp_path),
            *[a for s in [*TINY, "train.warmup_epochs=1"] for a in ("--set", s)]]  # the last --set wins: 1 warm-up epoch of 1
    with pytest.raises(SystemExit) as err:
        bench.main(argv)
    message = str(err.value)
    assert "command failed" in message and "train.warmup_epochs" in message and "must be < train.epochs" in message
    assert str(tmp_path / "log.txt") in message


def test_converted_surrogate_gain_option():
    """Datta and Beerel's surrogate (gain 2, derivative 1) by default; gain 1 stays selectable; bad gains are
    config errors naming the option."""

    def gains(**opts):
        m = build_model("cifar_fast_converted", num_classes=10, input_shape=(3, 32, 32), timesteps=2,
                        neuron=None, widths=[4, 4, 8, 8], **opts)
        return {n.surrogate_gain for n in m.modules() if isinstance(n, ConvertedIF)}

    assert gains() == {2.0}
    assert gains(surrogate_gain=1.0) == {1.0}
    with pytest.raises(ConfigError, match="surrogate_gain"):
        gains(surrogate_gain=-1.0)
    with pytest.raises(ConfigError, match="surrogate_gain"):
        build_model("cifar_fast_dnn", num_classes=10, input_shape=(3, 32, 32), timesteps=1, neuron=None,
                    surrogate_gain=1.0)


def test_table_from_rejects_a_missing_or_foreign_file(tmp_path):
    from benchmark_scripts import load_benchmark

    bench = load_benchmark("cifar10_fast")
    with pytest.raises(SystemExit, match="cannot read a results.json"):
        bench.main(["--table-from", str(tmp_path / "absent.json")])
    (tmp_path / "other.json").write_text("[1, 2]")
    with pytest.raises(SystemExit, match="needs 'meta' and 'results'"):
        bench.main(["--table-from", str(tmp_path / "other.json")])


def test_table_from_gives_each_file_its_own_header(tmp_path, capsys):
    """Sweeps of different settings keep their own CPU, date and overrides when rendered together."""
    import json

    from benchmark_scripts import load_benchmark

    bench = load_benchmark("cifar10_fast")
    metas = [{"cpu": "cpu A", "threads": 2, "torch": "t", "date_utc": "2026-12-03", "overrides": []},
             {"cpu": "cpu B", "threads": 1, "torch": "t", "date_utc": "2026-12-07", "overrides": ["train.epochs=3"]}]
    paths = []
    for i, meta in enumerate(metas):
        paths.append(tmp_path / f"r{i}.json")
        paths[-1].write_text(json.dumps({"meta": meta, "results": []}))
    out = bench.main(["--table-from", *map(str, paths)])
    printed = capsys.readouterr().out
    assert out["metas"] == metas
    headers = [line for line in printed.splitlines() if line.startswith("cifar10-jpeg")]
    assert len(headers) == 2
    assert "45,000 train" in headers[0] and "cpu A, 2 threads" in headers[0] and "2026-12-03" in headers[0]
    assert "every run with --set train.epochs=3" in headers[1] and "cpu B, 1 threads" in headers[1]


def test_whitening_filters_decorrelate_the_leading_patch_directions():
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.avg_pool2d(torch.randn(200, 3, 16, 16, generator=g), 3, 1, 1) * 3  # correlated pixels
    w = whitening_filters(x, 32)
    assert w.shape == (32, 3, 3, 3) and torch.equal(w[16:], -w[:16])
    y = torch.nn.functional.conv2d(x.double(), w.double())[:, :16].permute(0, 2, 3, 1).reshape(-1, 16)
    second_moment = y.T @ y / len(y)  # the filters whiten the uncentred second moment, as airbench's do
    torch.testing.assert_close(second_moment, torch.eye(16, dtype=torch.float64), atol=2e-3, rtol=0)
    torch.testing.assert_close(whitening_filters(x.flip(0), 32), w, atol=1e-5, rtol=1e-4)  # order-free, signs fixed
    for bad in (31, 0, 56):
        with pytest.raises(ValueError, match="even stem width"):
            whitening_filters(x, bad)


def test_whiten_option_is_checked():
    with pytest.raises(ConfigError, match="even stem width"):
        build_model("cifar_fast_dnn", num_classes=10, input_shape=(3, 32, 32), timesteps=1, widths=[7, 8, 16, 16],
                    whiten=True)
    for kw in ({"whiten": "yes"}, {"whiten": True, "whiten_eps": 0.0}):
        with pytest.raises(ConfigError):
            build_model("cifar_fast", num_classes=10, input_shape=(3, 32, 32), timesteps=2, **kw)


def test_whitened_stem_comes_from_the_training_images_and_stays_frozen(jpeg_root, tmp_path):
    opts = ["model.options.widths=[8, 8, 16, 16]", "model.options.whiten=true"]
    recipe = load_recipe("cifar10-fast-dnn", [*TINY, *opts])
    train(recipe, tmp_path / "dnn", device="cpu", data_root=jpeg_root, progress=False, log=lambda s: None)
    stem = load_checkpoint(tmp_path / "dnn" / "last.pt")["model"]["stem.0.weight"]
    splits = prepare_data(recipe, jpeg_root)
    feed = DeviceFeed(splits.train, 32, torch.device("cpu"), train=True)
    expected = whitening_filters(feed.prepare_eval(feed.inputs[:5000]), 8)
    torch.testing.assert_close(stem, expected)  # set from the (normalised) training images, then frozen
    model = build_model("cifar_fast_dnn", num_classes=10, input_shape=(3, 32, 32), timesteps=1, widths=[8, 8, 16, 16],
                        whiten=True)
    assert not model.stem[0].weight.requires_grad
    # the converted SNN takes the same options, gets the folded stem and fine-tunes it
    convert_checkpoint(tmp_path / "dnn" / "last.pt", timesteps=2, eval_timesteps=(2,), out_dir=tmp_path / "conv",
                       data_root=jpeg_root, calib_batches=2, log=lambda s: None)
    ckpt = tmp_path / "conv" / "converted-dist-t2.pt"
    ft = load_recipe("cifar10-fast-convert-finetune-t2", [*_tiny("ft"), f"train.init_checkpoint={str(ckpt)!r}"])
    train(ft, tmp_path / "ft", device="cpu", data_root=jpeg_root, progress=False, log=lambda s: None)
    converted = load_checkpoint(ckpt)["model"]["stem.0.weight"]
    tuned = load_checkpoint(tmp_path / "ft" / "last.pt")["model"]["stem.0.weight"]
    assert converted.shape == tuned.shape == (8, 3, 3, 3) and not torch.equal(converted, tuned)


def test_head_scale_probe_runs_any_cifar_fast_recipe(jpeg_root, tmp_path, capsys):
    """The warm-up probe on a direct SNN recipe: every first-epoch step's loss (the engine's
    ``on_step``), the validation accuracy after each epoch, and the factor reaches the model."""
    from benchmark_scripts import is_fraction, load_benchmark

    probe = load_benchmark("cifar10_head_scale_probe")
    rows = probe.main(["--data-root", str(jpeg_root), "--recipe", "cifar10-fast-lif-t2", "--head-scales", "1", "0.25",
                       "--train-limit", "240", "--val-size", "40", "--epochs", "2", "--out", str(tmp_path),
                       "--set", "data.batch_size=16", "--set", "model.options.widths=[8, 8, 16, 16]"])
    assert [r["head_scale"] for r in rows] == [1.0, 0.25]
    for r in rows:
        assert len(r["warmup_losses"]) == 2  # 200 training images / 16 = 13 steps: chunks of 10 and 3
        assert all(0.0 < v < 20.0 for v in r["warmup_losses"])
        assert len(r["val"]) == 2 and all(is_fraction(v) for v in r["val"])
    assert rows[0]["warmup_losses"][0] != rows[1]["warmup_losses"][0]  # same seed and data: only the factor differs
    out = capsys.readouterr().out
    assert "cifar10-fast-lif-t2, 200 training / 40 validation images, 2 epochs" in out and "| 0.25 |" in out


def test_dirac_option_starts_each_widening_conv_as_an_identity():
    torch.manual_seed(0)
    model = build_model("cifar_fast_dnn", num_classes=10, input_shape=(3, 32, 32), timesteps=1, widths=[8, 8, 16, 16],
                        dirac=True)
    convs = [m for m in model.body.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 6
    for conv in convs:
        x = torch.randn(2, conv.in_channels, 6, 6)
        torch.testing.assert_close(conv(x)[:, : conv.in_channels], x)  # the implicit residual
        if conv.out_channels > conv.in_channels:  # the rest keep their random start
            assert conv.weight[conv.in_channels :].abs().sum() > 0
            assert not torch.equal(conv(x)[:, conv.in_channels :], torch.zeros_like(conv(x)[:, conv.in_channels :]))
    torch.manual_seed(0)
    plain = build_model("cifar_fast_dnn", num_classes=10, input_shape=(3, 32, 32), timesteps=1, widths=[8, 8, 16, 16])
    x = torch.randn(2, 8, 6, 6)
    conv = [m for m in plain.body.modules() if isinstance(m, torch.nn.Conv2d)][0]
    assert not torch.allclose(conv(x), x)
    torch.testing.assert_close(plain.stem[0].weight, model.stem[0].weight)  # the stem is not touched
    with pytest.raises(ConfigError, match="dirac"):
        build_model("cifar_fast", num_classes=10, input_shape=(3, 32, 32), timesteps=2, dirac="yes")


def test_airbench_batch_norm_options_train_end_to_end(jpeg_root, tmp_path):
    """``train.freeze_bn_weights`` keeps every BN scale at 1 through training, ``bn_bias_lr_scale``
    trains the shifts, ``bn_momentum`` reaches every BN; ``model.options.dirac`` travels through the
    recipe."""
    opts = ["model.options.dirac=true", "train.freeze_bn_weights=true", "train.bn_bias_lr_scale=64",
            "train.bn_momentum=0.4", "train.epochs=2"]
    recipe = load_recipe("cifar10-fast-dnn", [*_tiny("dnn"), *opts])
    ctx, _ = start_run(tmp_path / "setup", "cpu", lambda s: None)
    run = set_up_run(recipe, tmp_path / "setup", ctx, jpeg_root, progress=False)
    norms = [m for m in run.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 7 and {m.momentum for m in norms} == {0.4}
    assert not any(m.weight.requires_grad for m in norms) and len(run.optimizer.param_groups) == 3
    train(recipe, tmp_path / "dnn", device="cpu", data_root=jpeg_root, progress=False, log=lambda s: None)
    state = load_checkpoint(tmp_path / "dnn" / "last.pt")
    scales = {k: v for k, v in state["model"].items() if k.endswith(".weight") and v.ndim == 1}
    shifts = {k[: -len("weight")] + "bias": state["model"][k[: -len("weight")] + "bias"] for k in scales}
    assert len(scales) == 7 and all(torch.equal(v, torch.ones_like(v)) for v in scales.values())
    assert all(v.abs().sum() > 0 for v in shifts.values())
    assert [g["lr_scale"] for g in state["optimizer"]["param_groups"]] == [1.0, 1.0, 64.0]


def test_bn_recalibration_check_reestimates_only_the_statistics(jpeg_root, tmp_path, capsys):
    from benchmark_scripts import is_fraction, load_benchmark

    check = load_benchmark("bn_recalibration_check")
    recipe = load_recipe("cifar10-fast-dnn", _tiny("dnn"))
    train(recipe, tmp_path / "dnn", device="cpu", data_root=jpeg_root, progress=False, log=lambda s: None)
    result = check.main([str(tmp_path / "dnn" / "last.pt"), "--data-root", str(jpeg_root), "--batches", "2",
                         "--batch-size", "32"])
    assert result["epoch"] == 1 and is_fraction(result["saved"]) and is_fraction(result["reestimated"])
    assert "40 validation images" in capsys.readouterr().out
    # the re-estimate replaces the running statistics and touches nothing else
    model = build_model("cifar_fast_dnn", num_classes=10, input_shape=(3, 32, 32), timesteps=1, widths=[8, 8, 16, 16],
                        head_scale=0.25)
    model.load_state_dict(load_checkpoint(tmp_path / "dnn" / "last.pt")["model"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    feed = DeviceFeed(prepare_data(recipe, jpeg_root).train, 32, torch.device("cpu"), train=True)
    assert check.reestimate_batchnorm(model, feed, 2) == 7
    after = model.state_dict()
    for key, value in before.items():
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert not torch.equal(after[key], value), key
        else:
            assert torch.equal(after[key], value), key
    assert {m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {0.1}
    assert model.training  # as it was
