"""Numerical guards of the training engine: NaN/inf stops training with TrainingDiverged and keeps the
last good checkpoint untouched; train.grad_clip really bounds the gradient norm and the update.

All runs are tiny (digits-sized random data, a few batches per epoch, one CPU thread) and
deterministic: the divergence is injected at a known epoch rather than hoped for.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from fewstep.cli import main
from fewstep.config import recipe_from_dict
from fewstep.data import DATASETS, ArrayDataset, DatasetSplits, register_dataset
from fewstep.errors import ConfigError, FewstepError
from fewstep.train import train
from fewstep.train.checkpoint import load_checkpoint
from fewstep.train.engine import TrainingDiverged
from fewstep.train.guard import divergence_problem

CLASSES = [str(i) for i in range(10)]
#: The inputs of the "guard-poisonable" dataset: tests overwrite them in place (the training feed
#: holds the same storage on CPU) to make the data turn NaN at a chosen moment.
POISONABLE: dict[str, torch.Tensor] = {}


def _register(name: str, make) -> str:
    if name not in DATASETS:
        register_dataset(name)(make)
    return name


def _random_digits(scale: float = 1.0, n: int = 96) -> DatasetSplits:
    g = torch.Generator().manual_seed(1234)
    x = torch.rand(n, 1, 8, 8, generator=g) * scale
    y = torch.arange(n) % 10
    return DatasetSplits("random", ArrayDataset(x, y, CLASSES), ArrayDataset(x[:32].clone(), y[:32].clone(), CLASSES))


def _poisonable(root: Path, download: bool = True) -> DatasetSplits:
    splits = _random_digits()
    POISONABLE["train"] = splits.train.inputs
    return splits


_register("guard-poisonable", _poisonable)
_register("guard-huge-inputs", lambda root, download=True: _random_digits(scale=1e25))
_register("guard-plain", lambda root, download=True: _random_digits())


def _recipe(dataset: str, **train: object) -> dict:
    return {"name": "guard", "data": {"dataset": dataset, "batch_size": 32},
            "model": {"name": "small_cnn", "timesteps": 2, "options": {"channels": [4, 8], "hidden": 16}},
            "train": {"epochs": 3, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "seed": 5, **train}}


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------- divergence


def test_nan_in_the_second_epoch_stops_training_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    recipe = recipe_from_dict(_recipe("guard-poisonable"))
    reference = tmp_path / "one-epoch"
    train(recipe, reference, device="cpu", progress=False, stop_after_epoch=1, log=lambda s: None)

    out = tmp_path / "poisoned"
    lines: list[str] = []

    def log(line: str) -> None:  # called after each epoch, before its checkpoint is written
        lines.append(line)
        if line.startswith("epoch 1/"):
            POISONABLE["train"][5, 0, 3, 3] = float("nan")  # one pixel of one sample turns NaN

    with pytest.raises(TrainingDiverged) as info:
        train(recipe, out, device="cpu", progress=False, log=log)
    msg = str(info.value)
    assert isinstance(info.value, FewstepError) and isinstance(info.value, FloatingPointError)
    assert msg.startswith("epoch 2:") and ("NaN/inf" in msg or "diverged" in msg), msg
    assert str(out / "last.pt") in msg and "kept" in msg, msg
    assert len([ln for ln in lines if ln.startswith("epoch ")]) == 1  # epoch 2 was never logged

    # the checkpoint on disk is epoch 1's, bit for bit that of a clean run stopped after epoch 1
    state, clean = load_checkpoint(out / "last.pt"), load_checkpoint(reference / "last.pt")
    assert state["epoch"] == clean["epoch"] == 1
    for k, v in clean["model"].items():
        assert torch.equal(state["model"][k], v), k
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (out / "last.pt.prev").exists()  # nothing was saved after epoch 1
    assert not (out / "report.json").exists()
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]


def test_absurd_learning_rate_is_one_clear_error_on_the_command_line(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    code = main(["train", "quickstart", "--out", str(out), "--device", "cpu", "--no-progress",
                 "--set", "train.optimizer='sgd'", "--set", "train.lr=1e38", "--set", "train.epochs=2",
                 "--set", "data.train_limit=64", "--set", "data.test_limit=32",
                 "--set", "model.options.channels=[4, 4]", "--set", "model.options.hidden=8"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "epoch 1" in err and "train.lr" in err, err
    assert not (out / "last.pt").exists()  # a diverged epoch is never checkpointed


def test_divergence_message_helper(tmp_path: Path) -> None:
    model = torch.nn.BatchNorm1d(3)
    assert divergence_problem(1, 0.5, model, tmp_path / "last.pt") is None
    model.running_var[1] = float("inf")
    msg = divergence_problem(2, 0.5, model, tmp_path / "last.pt")
    assert msg is not None and "buffer running_var" in msg and "no checkpoint was written" in msg
    (tmp_path / "last.pt").write_bytes(b"x")
    msg = divergence_problem(2, math.nan, torch.nn.Linear(2, 2), tmp_path / "last.pt")
    assert msg is not None and "loss is nan" in msg and "was kept" in msg


def test_non_finite_buffers_stop_training(tmp_path: Path) -> None:
    """Inputs of 1e25 overflow BatchNorm's running_var to inf (their variance, ~1e50, exceeds float32 even
    when summed in double as fewstep's BatchNorm2d does); loss and weights stay finite."""
    with pytest.raises(TrainingDiverged, match="running_var"):
        train(recipe_from_dict(_recipe("guard-huge-inputs", epochs=1, lr=0.01)), tmp_path, device="cpu",
              progress=False, log=lambda s: None)


# ---------------------------------------------------------------------------- gradient clipping


def _norms_during_training(tmp_path: Path, clip: float, lr: float = 0.05) -> tuple[list[float], list[float], list[float]]:
    """Train with plain SGD (no momentum, no weight decay, so an update is exactly -lr * grad) and
    record, at every optimizer step, the total gradient norm, the update norm and the lr."""
    grads: list[float] = []
    updates: list[float] = []
    lrs: list[float] = []
    before: list[torch.Tensor] = []

    def pre(opt: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
        grads.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))))
        lrs.append(opt.param_groups[0]["lr"])
        before[:] = [p.detach().clone() for g in opt.param_groups for p in g["params"]]

    def post(opt: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        after = [p.detach() for g in opt.param_groups for p in g["params"]]
        updates.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(a - b)
                                                                       for a, b in zip(after, before)]))))

    recipe = recipe_from_dict(_recipe("guard-plain", epochs=2, momentum=0.0, weight_decay=0.0, grad_clip=clip, lr=lr))
    h1, h2 = register_optimizer_step_pre_hook(pre), register_optimizer_step_post_hook(post)
    try:
        train(recipe, tmp_path, device="cpu", progress=False, log=lambda s: None)
    finally:
        h1.remove()
        h2.remove()
    return grads, updates, lrs


def test_grad_clip_bounds_the_gradient_norm_and_the_update(tmp_path: Path) -> None:
    free, _, _ = _norms_during_training(tmp_path / "free", clip=0.0)
    clip = min(free) / 4  # well below every unclipped norm, so every step is clipped
    assert clip > 0
    grads, updates, lrs = _norms_during_training(tmp_path / "clipped", clip=clip)
    assert len(grads) == len(free) == 6  # 96 samples / 32 per batch x 2 epochs
    for g, u, lr in zip(grads, updates, lrs):
        assert g <= clip * (1 + 1e-5), (g, clip)  # the optimizer saw clipped gradients
        assert g >= clip * (1 - 1e-3), (g, clip)  # ...clipped to the bound, not zeroed
        assert u <= lr * clip * (1 + 1e-4), (u, lr, clip)  # so the step moved the weights at most lr * clip
    assert max(free) > 4 * clip  # without the option the same steps were much larger


@pytest.mark.parametrize("value", [-1.0, "big", True])
def test_grad_clip_rejects_bad_values(value: object) -> None:
    with pytest.raises(ConfigError, match="train.grad_clip"):
        recipe_from_dict(_recipe("guard-plain", grad_clip=value))


@pytest.mark.parametrize("override", ["train.lr=nan", "train.lr=inf", "train.grad_clip=nan",
                                      "train.weight_decay=inf", "neuron.v_threshold=nan"])
def test_non_finite_config_floats_are_refused(override: str) -> None:
    from fewstep.config import load_recipe

    with pytest.raises(ConfigError, match=override.split("=")[0]):
        load_recipe("quickstart", [override])
