"""TensorBoard callback: event files with the per-epoch scalars and per-layer spike rates."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from fewstep.config import recipe_from_dict
from fewstep.layers import TimeFold
from fewstep.neurons import LIF, MTLIF
from fewstep.tblog import SpikeRateMonitor, TensorBoardCallback, TensorBoardUnavailable

TINY = {
    "name": "tiny-tb",
    "data": {"dataset": "digits", "batch_size": 64, "train_limit": 128, "test_limit": 64},
    "model": {"name": "small_cnn", "timesteps": 2, "options": {"channels": [4, 8], "hidden": 16}},
    "train": {"epochs": 2, "lr": 0.05, "tensorboard": True},
}


def _net() -> nn.Sequential:
    return nn.Sequential(TimeFold(nn.Linear(4, 6)), LIF(), TimeFold(nn.Linear(6, 3)), MTLIF(num_thresholds=2))


def _scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_missing_tensorboard_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now fails
    with pytest.raises(TensorBoardUnavailable, match=r"pip install 'fewstep\[tensorboard\]'"):
        TensorBoardCallback(tmp_path / "tb")


def test_spike_rate_monitor_counts_eval_passes_only():
    net = _net()
    mon = SpikeRateMonitor().attach(net)
    x = torch.rand(3, 5, 4) * 4
    net.train()
    net(x)
    assert mon.rates() == {}
    net.eval()
    with torch.no_grad():
        out = net(x)
        hidden = net[1](net[0](x))
    rates = mon.rates()
    assert set(rates) == {"1", "3"}
    assert rates["1"] == pytest.approx(hidden.mean().item())
    assert rates["3"] == pytest.approx(out.mean().item())  # MT-LIF counts 0..2 per step
    mon.detach()
    net(x)
    assert mon.rates() == rates


def test_callback_writes_epoch_scalars_and_spike_rates(tmp_path):
    pytest.importorskip("tensorboard", reason="needs tensorboard: pip install 'fewstep[tensorboard]'")
    net = _net().eval()
    cb = TensorBoardCallback(tmp_path / "tb")
    cb.on_train_start(net, tmp_path)
    for epoch in (1, 2):
        with torch.no_grad():
            net(torch.rand(2, 4, 4) * 3)
        cb.on_epoch_end({"epoch": epoch, "train_loss": 1.0 / epoch, "train_accuracy": 0.5, "lr": 0.1,
                         "seconds": 0.2, "test_accuracy_per_step": [0.6, 0.7]}, net, tmp_path)
    cb.on_train_end({"epochs": 2, "accuracy_per_step": [0.6, 0.7],
                     "energy": {"energy_pj": 10.0, "ratio": 3.0, "spike_rate_per_layer": {"1": 0.2}}}, net, tmp_path)
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    s = _scalars(tmp_path / "tb")
    assert s["train/loss"] == [(1, 1.0), (2, 0.5)]
    assert [v for _, v in s["test/accuracy_t2"]] == pytest.approx([0.7, 0.7])
    assert {"train/accuracy", "lr", "test/accuracy_t1", "test/accuracy", "spike_rate/1", "spike_rate/3",
            "energy/energy_pj", "energy/ratio", "spike_rate_final/1"} <= set(s)
    assert len(s["spike_rate/1"]) == 2


def test_training_with_tensorboard_option_writes_event_files(tmp_path):
    pytest.importorskip("tensorboard", reason="needs tensorboard: pip install 'fewstep[tensorboard]'")
    from fewstep.train import train

    train(recipe_from_dict(TINY), tmp_path, device="cpu", progress=False, log=lambda s: None)
    s = _scalars(tmp_path / "tb")
    assert len(s["test/accuracy_t2"]) == 2 and len(s["train/loss"]) == 2
    # without on_train_start from the engine, the rates start with the second epoch
    assert any(tag.startswith("spike_rate/") for tag in s)
    assert any(tag.startswith("spike_rate_final/") for tag in s)
