"""Event datasets as trainable fewstep datasets (fewstep.data.events_catalog) and a tiny
end-to-end run of the quickstart-events recipe."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from fewstep.config import load_recipe
from fewstep.data import load_dataset
from fewstep.data.event_currents import EMULATION_BLOCK, digit_images, event_cache_dir
from fewstep.errors import ConfigError
from fewstep.events.emulator import emulate_dataset
from fewstep.events.readers import write_aedat2, write_aedat31, write_nmnist_bin
from fewstep.events.types import make_events

SMALL = {"timesteps": 2, "train_limit": 12, "test_limit": 6}


# Small nets gain nothing from intra-op threads (conftest._one_thread).
pytestmark = pytest.mark.usefixtures("_one_thread")


def _digits(tmp_path: Path, **options):
    return load_dataset("saccade-digits", tmp_path / "root", download=False,
                        **{**SMALL, "cache_dir": str(tmp_path / "cache"), **options})


def test_saccade_digits_shapes_and_event_conservation(tmp_path):
    splits = _digits(tmp_path)
    for ds, n in ((splits.train, 12), (splits.test, 6)):
        assert ds.is_sequence and ds.timesteps == 2
        assert ds.inputs.shape == (n, 2, 2, 34, 34) and ds.inputs.dtype == torch.float32
        assert ds.sample_shape == (2, 34, 34) and len(ds.labels) == n
    # the same streams, emulated directly: block 0 of split 0 (train) is seeded (seed, 0, 0, i)
    (train_images, train_labels), _ = digit_images()
    assert train_images.shape[1:] == (28, 28) and train_images.dtype == np.uint8
    events = emulate_dataset(train_images[:12], seed=(0, 0, 0))
    counts = splits.train.inputs.double().sum(dim=(1, 2, 3, 4))
    assert counts.tolist() == [len(e) for e in events]  # scale 'none' + integration 'sum': counts kept
    assert splits.train.labels.tolist() == train_labels[:12].tolist()
    assert all(1000 < len(e) < 10_000 for e in events)  # N-MNIST-like density


def test_cache_hit_returns_identical_tensors_and_scaling_reuses_it(tmp_path):
    first = _digits(tmp_path)
    assert first.info["train"]["cache_hit"] is False
    files = sorted((tmp_path / "cache").glob("*.npz"))
    assert [f.name.split("-")[2] for f in files] == ["test", "train"]  # saccade-digits-<split>-<hash>
    assert not list((tmp_path / "cache").glob("*.tmp"))
    again = _digits(tmp_path)
    assert again.info["train"]["cache_hit"] and again.info["test"]["cache_hit"]
    assert torch.equal(first.train.inputs, again.train.inputs)
    assert torch.equal(first.test.inputs, again.test.inputs)
    assert torch.equal(first.train.labels, again.train.labels)
    scaled = _digits(tmp_path, scale="log1p", dtype="float16")
    assert scaled.info["train"]["cache_hit"]
    assert scaled.train.inputs.dtype == torch.float16
    assert torch.allclose(scaled.train.inputs.float(), torch.log1p(first.train.inputs), atol=2e-3)
    divided = _digits(tmp_path, scale=4)
    assert torch.allclose(divided.train.inputs * 4, first.train.inputs)
    # resampling by area, on load: an integer ratio is sum-pooling, other ratios keep the total roughly
    half = _digits(tmp_path, size=17)
    assert half.info["train"]["cache_hit"] and half.train.inputs.shape == (12, 2, 2, 17, 17)
    pooled = first.train.inputs.flatten(0, 1).unflatten(-1, (17, 2)).unflatten(-3, (17, 2)).sum(dim=(-1, -3))
    assert torch.allclose(half.train.inputs.flatten(0, 1), pooled)
    odd = _digits(tmp_path, size=[24, 20])
    assert odd.train.inputs.shape == (12, 2, 2, 24, 20)
    totals = odd.train.inputs.sum(dim=(1, 2, 3, 4)) / first.train.inputs.sum(dim=(1, 2, 3, 4))
    assert ((totals > 0.9) & (totals < 1.1)).all()
    # any STC parameter is part of the key
    other = _digits(tmp_path, by="count")
    assert not other.info["train"]["cache_hit"]
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 4
    # a limited set is a prefix of a larger one (per-image seeds), and pooling keeps the counts
    bigger = _digits(tmp_path, train_limit=16, spatial_factor=2)
    assert bigger.train.inputs.shape == (16, 2, 2, 17, 17)
    assert torch.equal(bigger.train.inputs[:12].sum(dim=(3, 4)), first.train.inputs.sum(dim=(3, 4)))


def test_emulation_block_size_fixes_seeds():
    assert EMULATION_BLOCK >= 1024  # every full set depends on it: changing it changes the data


def test_options_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="timesteps"):
        load_dataset("saccade-digits", tmp_path, download=False, limit=4)
    with pytest.raises(ConfigError, match="data.options.bogus"):
        _digits(tmp_path, bogus=1)
    with pytest.raises(ConfigError, match="data.options.by"):
        _digits(tmp_path, by="space")
    with pytest.raises(ConfigError, match="data.options.scale"):
        _digits(tmp_path, scale=-1)
    with pytest.raises(ConfigError, match="data.options.size"):
        _digits(tmp_path, size=[48])


def test_cache_dir_default_falls_back_when_root_is_not_writable(tmp_path, monkeypatch):
    root = tmp_path / "data"
    root.mkdir()
    assert event_cache_dir(root) == root / "fewstep-cache" / "events"
    assert event_cache_dir(root, str(tmp_path / "x")) == tmp_path / "x"
    monkeypatch.setattr("fewstep.data.event_currents._writable_dir", lambda p: False)
    assert event_cache_dir(root) == Path.home() / ".cache" / "fewstep" / "events"


# --------------------------------------------------------------------------- recorded data


def _fake_nmnist(root: Path) -> dict[str, int]:
    sizes = {}
    rng = np.random.default_rng(0)
    for split, per in (("Train", 3), ("Test", 1)):
        for digit in range(10):
            folder = root / "nmnist" / split / str(digit)
            folder.mkdir(parents=True)
            for k in range(per):
                n = int(rng.integers(50, 200))
                ev = make_events(rng.integers(0, 34, n), rng.integers(0, 34, n),
                                 np.sort(rng.integers(0, 300_000, n)), rng.integers(0, 2, n))
                write_nmnist_bin(folder / f"{digit * 10 + k}.bin", ev)
                sizes[f"{split}/{digit}/{digit * 10 + k}"] = n
    return sizes


def test_nmnist_loader_on_a_written_tree(tmp_path):
    sizes = _fake_nmnist(tmp_path)
    opts = {"timesteps": 3, "cache_dir": str(tmp_path / "cache")}
    splits = load_dataset("nmnist", tmp_path, download=False, **opts)
    assert splits.train.inputs.shape == (30, 3, 2, 34, 34) and splits.test.inputs.shape == (10, 3, 2, 34, 34)
    assert sorted(splits.train.labels.tolist()) == sorted(list(range(10)) * 3)
    assert splits.train.labels[:10].tolist() != sorted(splits.train.labels[:10].tolist())  # shuffled order
    total = splits.train.inputs.sum().item() + splits.test.inputs.sum().item()
    assert total == sum(sizes.values())
    limited = load_dataset("nmnist", tmp_path, download=False, **opts, train_limit=8)
    assert torch.equal(limited.train.inputs, splits.train.inputs[:8])  # the first 8 of the fixed order
    # a changed source file changes the cache key
    victim = tmp_path / "nmnist" / "Test" / "0" / "0.bin"
    victim.write_bytes(victim.read_bytes()[:-5])
    changed = load_dataset("nmnist", tmp_path, download=False, **opts)
    assert changed.info["train"]["cache_hit"] and not changed.info["test"]["cache_hit"]


def test_dvsgesture_and_cifar10dvs_loaders_on_written_trees(tmp_path):
    rng = np.random.default_rng(1)

    def events(n, t1):
        return make_events(rng.integers(0, 128, n), rng.integers(0, 128, n), np.sort(rng.integers(0, t1, n)),
                           rng.integers(0, 2, n))

    g = tmp_path / "DvsGesture"
    g.mkdir()
    for name, rows in (("user01_led", [(1, 0, 40_000), (3, 50_000, 90_000)]), ("user24_led", [(11, 0, 90_000)])):
        write_aedat31(g / f"{name}.aedat", events(500, 100_000))
        (g / f"{name}_labels.csv").write_text("class,startTime_usec,endTime_usec\n"
                                              + "".join(f"{c},{s},{e}\n" for c, s, e in rows))
    (g / "trials_to_train.txt").write_text("user01_led.aedat\n")
    (g / "trials_to_test.txt").write_text("user24_led.aedat\n")
    opts = {"timesteps": 4, "spatial_factor": 4, "scale": "log1p", "cache_dir": str(tmp_path / "cache")}
    gesture = load_dataset("dvsgesture", tmp_path, download=False, **opts)
    assert gesture.train.inputs.shape == (2, 4, 2, 32, 32) and gesture.num_classes == 11
    assert sorted(gesture.train.labels.tolist()) == [0, 2] and gesture.test.labels.tolist() == [10]

    for c, cls in enumerate(("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                             "truck")):
        (tmp_path / "CIFAR10DVS" / cls).mkdir(parents=True)
        for n in range(2):
            write_aedat2(tmp_path / "CIFAR10DVS" / cls / f"cifar10_{cls}_{n}.aedat", events(40, 10_000))
    cifar = load_dataset("cifar10dvs", tmp_path, download=False, **opts, test_fraction=0.5)
    assert cifar.train.inputs.shape == (10, 4, 2, 32, 32) and cifar.test.inputs.shape == (10, 4, 2, 32, 32)
    assert torch.allclose(torch.expm1(cifar.train.inputs).sum(), torch.tensor(400.0))


def test_nmnist_real_subset(tmp_path):
    root = os.environ.get("FEWSTEP_DATA")
    if not root or not (Path(root) / "nmnist-small" / "Train").is_dir():
        pytest.skip("needs the real N-MNIST subset: set FEWSTEP_DATA to a folder holding nmnist-small/ "
                    "(e.g. FEWSTEP_DATA=../shared/data)")
    from fewstep.data.event_datasets import NMNIST

    splits = load_dataset("nmnist", root, download=False, timesteps=2, cache_dir=str(tmp_path))
    assert splits.train.inputs.shape == (900, 2, 2, 34, 34) and splits.test.inputs.shape == (100, 2, 2, 34, 34)
    assert set(splits.train.labels.tolist()) == set(range(10))
    raw = NMNIST(root, train=False)
    total = sum(len(raw[i][0]) for i in range(len(raw)))
    assert splits.test.inputs.double().sum().item() == total


# --------------------------------------------------------------------------- end to end


def test_quickstart_events_trains_end_to_end(tmp_path):
    from fewstep.train import train

    overrides = ["train.epochs=1", "data.batch_size=16", "data.options.train_limit=48",
                 "data.options.test_limit=16", f"data.options.cache_dir=\"{tmp_path / 'cache'}\"",
                 "model.options.channels=[4, 8]", "model.options.hidden=16"]
    recipe = load_recipe("quickstart-events", overrides)
    assert recipe.model.name == "scb_cnn" and recipe.neuron.kind == "mtlif"
    report = train(recipe, tmp_path / "run", device="cpu", progress=False, log=lambda _m: None)
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert saved["timesteps"] == 2 and len(saved["accuracy_per_step"]) == 2
    assert report["train_samples"] == 48 and report["test_samples"] == 16
    # the engine refuses a model whose T differs from the data's
    from fewstep.train.engine import make_model, prepare_data

    bad = load_recipe("quickstart-events", overrides + ["model.timesteps=3"])
    with pytest.raises(ConfigError, match="model.timesteps"):
        make_model(bad, prepare_data(bad, None))
