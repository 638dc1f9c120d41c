"""The training engine end to end on the embedded digits (small and fast)."""

import json
import math

import pytest
import torch

from fewstep.config import recipe_from_dict
from fewstep.data import load_dataset
from fewstep.errors import FewstepError
from fewstep.train import train
from fewstep.train.data_feed import DeviceFeed, random_crop_flip
from fewstep.train.losses import cumulative_accuracy, mean_output_ce, tet_loss

TINY = {
    "name": "tiny",
    "data": {"dataset": "digits", "batch_size": 32, "train_limit": 256, "test_limit": 128, "crop_padding": 1},
    "model": {"name": "small_cnn", "timesteps": 2, "options": {"channels": [8, 16], "hidden": 32, "dropout": 0.1}},
    "train": {"epochs": 3, "optimizer": "sgd", "lr": 0.05, "loss": "tet", "seed": 3},
}


def _state(out):
    return torch.load(out / "last.pt", weights_only=True)


def test_report_fields_and_plot(tmp_path):
    report = train(recipe_from_dict(TINY), tmp_path, device="cpu", progress=False, log=lambda s: None)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved == json.loads(json.dumps(report))
    for key in ("recipe", "dataset", "timesteps", "accuracy_per_step", "accuracy", "train_seconds", "epochs", "seed"):
        assert key in saved
    assert saved["timesteps"] == 2 and len(saved["accuracy_per_step"]) == 2
    assert saved["accuracy"] == saved["accuracy_per_step"][-1]
    assert saved["epochs"] == 3 and saved["seed"] == 3
    assert (tmp_path / "accuracy_per_step.png").stat().st_size > 1000
    e = saved["energy"]
    assert e["sops"] > 0 and e["macs"] > 0 and e["ratio"] > 1
    assert saved["history"][-1]["train_loss"] < saved["history"][0]["train_loss"]


def test_learns_digits_well_above_chance(tmp_path):
    raw = {**TINY, "data": {**TINY["data"], "train_limit": 0, "test_limit": 0}, "train": {**TINY["train"], "epochs": 4}}
    report = train(recipe_from_dict(raw), tmp_path, device="cpu", progress=False, log=lambda s: None)
    assert report["accuracy"] > 0.85


def test_resume_is_bit_identical_to_uninterrupted_run(tmp_path):
    recipe = recipe_from_dict(TINY)
    full = tmp_path / "full"
    train(recipe, full, device="cpu", progress=False, log=lambda s: None)
    part = tmp_path / "part"
    train(recipe, part, device="cpu", progress=False, stop_after_epoch=1, log=lambda s: None)
    assert _state(part)["epoch"] == 1
    train(recipe, part, device="cpu", progress=False, resume=True, stop_after_epoch=2, log=lambda s: None)
    assert _state(part)["epoch"] == 2
    train(recipe, part, device="cpu", progress=False, resume=True, log=lambda s: None)
    a, b = _state(full), _state(part)
    assert a["epoch"] == b["epoch"] == 3
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    def strip(h):
        return [{k: v for k, v in e.items() if k != "seconds"} for e in h]

    assert strip(a["history"]) == strip(b["history"])


def test_resume_with_another_recipe_is_refused(tmp_path):
    from fewstep.errors import CheckpointError

    train(recipe_from_dict(TINY), tmp_path, device="cpu", progress=False, stop_after_epoch=1, log=lambda s: None)
    other = recipe_from_dict({**TINY, "train": {**TINY["train"], "lr": 0.01}})
    with pytest.raises(CheckpointError, match="different recipe"):
        train(other, tmp_path, device="cpu", progress=False, resume=True, log=lambda s: None)


def test_losses():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 5)
    y = torch.tensor([0, 1, 2, 3])
    ce_steps = sum(torch.nn.functional.cross_entropy(logits[t], y) for t in range(3)) / 3
    mse = ((logits - 1.0) ** 2).mean()
    assert torch.allclose(tet_loss(logits, y, lam=0.2, phi=1.0), 0.8 * ce_steps + 0.2 * mse)
    assert torch.allclose(mean_output_ce(logits, y), torch.nn.functional.cross_entropy(logits.mean(0), y))
    # cumulative accuracy: step 1 uses o_1; step 2 uses o_1 + o_2
    o = torch.tensor([[[2.0, 0.0]], [[-5.0, 0.0]]])  # [T=2, B=1, C=2]
    assert cumulative_accuracy(o, torch.tensor([0])).tolist() == [1, 0]


def test_feed_is_deterministic_per_epoch_and_normalises():
    ds = load_dataset("digits").train.subset(64)
    feed = DeviceFeed(ds, 16, torch.device("cpu"), train=True, seed=1, crop_padding=2, flip=True)
    a = [x for x, _ in feed.epoch(5)]
    b = [x for x, _ in feed.epoch(5)]
    c = [x for x, _ in feed.epoch(6)]
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not all(torch.equal(u, v) for u, v in zip(a, c))
    assert a[0].shape == (16, 1, 8, 8) and a[0].dtype == torch.float32
    plain = DeviceFeed(ds, 64, torch.device("cpu"), train=False)
    x, _ = next(plain.epoch(0))
    assert math.isclose(x.mean().item(), ((ds.inputs.float() / 255 - 0.3) / 0.4).mean().item(), rel_tol=1e-5)


def test_random_crop_is_a_translation_with_zero_fill():
    x = torch.arange(16.0).view(1, 1, 4, 4) + 1
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(30):
        y = random_crop_flip(x, 1, False, g)
        nz = y[y != 0]
        assert set(nz.tolist()) <= set(x.flatten().tolist())
        assert (y == 0).sum() in (0, 3, 4, 7)  # shifted by 0/1 px in each direction
        seen.add(tuple(y.flatten().tolist()))
    assert len(seen) > 3


def test_a_run_folder_is_never_overwritten_silently(tmp_path):
    """Issue 19, item 1, in the Python API: a finished or an interrupted run in ``out_dir`` is refused
    unless ``resume`` or ``overwrite``; ``overwrite`` removes the old run's files before its first epoch."""
    from fewstep.errors import RunExistsError

    recipe = recipe_from_dict({**TINY, "train": {**TINY["train"], "epochs": 2}})
    quiet = {"device": "cpu", "progress": False, "log": lambda s: None}
    unfinished, finished = tmp_path / "unfinished", tmp_path / "finished"
    train(recipe, unfinished, stop_after_epoch=1, **quiet)
    before = (unfinished / "last.pt").read_bytes()
    with pytest.raises(RunExistsError, match="unfinished run") as info:
        train(recipe, unfinished, **quiet)
    assert str(unfinished) in str(info.value) and "--resume" in str(info.value)
    assert (unfinished / "last.pt").read_bytes() == before and not (unfinished / "report.json").exists()

    train(recipe, finished, **quiet)
    report = (finished / "report.json").read_bytes()
    with pytest.raises(RunExistsError, match="finished run"):
        train(recipe, finished, **quiet)
    assert (finished / "report.json").read_bytes() == report
    with pytest.raises(FewstepError, match="exclude each other"):
        train(recipe, finished, resume=True, overwrite=True, **quiet)
    # overwrite, stopped before its first epoch: the old run's files are gone, none describes it any more
    assert train(recipe, finished, overwrite=True, stop_after_epoch=0, **quiet) == {}
    assert not [n for n in ("last.pt", "last.pt.prev", "report.json") if (finished / n).exists()]
    assert train(recipe, finished, **quiet)["epochs"] == 2  # an emptied folder is a fresh start


def test_converted_models_require_their_init_checkpoint(tmp_path):
    """Issue 19, item 2: the fine-tune recipes (``*_converted`` models) stop at once without
    ``train.init_checkpoint``; ``train.requires_init_checkpoint`` overrides the inference."""
    from fewstep.config import builtin_recipes, load_recipe
    from fewstep.errors import ConfigError
    from fewstep.train.engine import requires_init_checkpoint

    finetunes = {n for n in builtin_recipes() if load_recipe(n).model.name.endswith("_converted")}
    assert {"digits-dnn-finetune-t2", "fmnist-convert-finetune-t2", "cifar10-convert-finetune-t2",
            "cifar10-fast-convert-finetune-t2"} <= finetunes
    assert all(requires_init_checkpoint(load_recipe(n)) for n in finetunes)
    assert not requires_init_checkpoint(load_recipe("quickstart"))
    assert requires_init_checkpoint(load_recipe("quickstart", ["train.requires_init_checkpoint=true"]))
    recipe = load_recipe("digits-dnn-finetune-t2", ["train.epochs=1"])
    with pytest.raises(ConfigError, match="digits-dnn-finetune-t2"):
        train(recipe, tmp_path / "ft", device="cpu", progress=False, log=lambda s: None)
    assert not (tmp_path / "ft").exists()
    scratch = load_recipe("digits-dnn-finetune-t2", ["train.epochs=1", "data.train_limit=64", "data.test_limit=32",
                                                      "train.requires_init_checkpoint=false"])
    assert train(scratch, tmp_path / "scratch", device="cpu", progress=False, log=lambda s: None)["epochs"] == 1
