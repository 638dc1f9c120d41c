"""data.val_size: a validation split held out from the training data; the test split is scored once."""

from __future__ import annotations

import json

import pytest
import torch

from fewstep.config import load_recipe
from fewstep.data import ArrayDataset, DatasetSplits
from fewstep.errors import ConfigError
from fewstep.train import engine, train


def _splits(n: int = 50) -> DatasetSplits:
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1)
    return DatasetSplits("t", ArrayDataset(x, torch.arange(n) % 3, ["a", "b", "c"]),
                         ArrayDataset(x[:5].clone(), torch.zeros(5, dtype=torch.long), ["a", "b", "c"]))


def test_hold_out_is_a_seeded_partition_of_the_training_data():
    s = _splits()
    s.hold_out_validation(12, seed=3)
    val, tr = s.val.inputs.flatten().tolist(), s.train.inputs.flatten().tolist()
    assert len(val) == 12 and len(tr) == 38 and sorted(val + tr) == list(range(50))
    assert s.val.labels.tolist() == [int(v) % 3 for v in val]  # labels travel with their inputs
    again = _splits()
    again.hold_out_validation(12, seed=3)
    assert again.val.inputs.flatten().tolist() == val
    other = _splits()
    other.hold_out_validation(12, seed=4)
    assert other.val.inputs.flatten().tolist() != val
    assert s.test.inputs.flatten().tolist() == [0, 1, 2, 3, 4]  # the test split is untouched
    for bad in (0, 50, 60):
        with pytest.raises(ConfigError, match="data.val_size"):
            _splits().hold_out_validation(bad)


def test_negative_val_size_is_a_config_error():
    with pytest.raises(ConfigError, match="data.val_size"):
        load_recipe("quickstart", ["data.val_size=-1"])


def test_training_evaluates_on_val_each_epoch_and_on_test_once(tmp_path, monkeypatch):
    scored = []
    real = engine.evaluate

    def spy(model, feed, *args, **kwargs):
        scored.append(len(feed.ds))
        return real(model, feed, *args, **kwargs)

    monkeypatch.setattr(engine, "evaluate", spy)
    recipe = load_recipe("quickstart", ["train.epochs=3", "data.val_size=200", "data.test_limit=100",
                                        "model.options={channels=[4, 8], hidden=16}"])
    report = train(recipe, tmp_path, device="cpu", progress=False, log=lambda s: None)
    assert scored == [200, 200, 200, 100]  # three epochs on val, then the test split once
    assert report["val_samples"] == 200 and report["train_samples"] + 200 == 1438  # digits: 1438 train, 359 test
    assert all("val_accuracy_per_step" in h and "test_accuracy_per_step" not in h for h in report["history"])
    assert report["val_accuracy_per_step"] == report["history"][-1]["val_accuracy_per_step"]
    assert len(report["accuracy_per_step"]) == 2
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["accuracy_per_step"] == report["accuracy_per_step"]


def test_without_val_the_test_split_is_scored_each_epoch(tmp_path):
    recipe = load_recipe("quickstart", ["train.epochs=2", "data.test_limit=50", "model.options={channels=[4, 8], hidden=16}"])
    report = train(recipe, tmp_path, device="cpu", progress=False, log=lambda s: None)
    assert report["val_samples"] == 0 and report["val_accuracy_per_step"] is None
    assert report["accuracy_per_step"] == report["history"][-1]["test_accuracy_per_step"]


def test_eval_flip_scores_the_mean_of_image_and_mirror():
    from fewstep.models import build_model
    from fewstep.neurons import NeuronSpec
    from fewstep.train.data_feed import DeviceFeed

    torch.manual_seed(0)
    model = build_model("small_cnn_dnn", num_classes=3, input_shape=(1, 8, 8), timesteps=1, neuron=NeuronSpec(),
                        channels=[4, 8], hidden=16).eval()  # a DNN: graded outputs that a mirror changes
    x = torch.rand(40, 1, 8, 8) * 8
    y = torch.arange(40) % 3
    feed = DeviceFeed(ArrayDataset(x, y, ["a", "b", "c"]), 16, torch.device("cpu"), train=False)
    def acc(out):
        return (out.cumsum(0).argmax(-1) == y).double().mean(1).tolist()

    with torch.no_grad():
        plain, mirrored = model(x), model(x.flip(-1))
    assert not torch.equal(plain.cumsum(0).argmax(-1), ((plain + mirrored) / 2).cumsum(0).argmax(-1))
    assert engine.evaluate(model, feed, flip=True) == pytest.approx(acc((plain + mirrored) / 2))
    assert engine.evaluate(model, feed, flip=False) == pytest.approx(acc(plain))
