"""PNG plots: spike rates, event frames, spike rasters, the re-exported plots and PlotsCallback."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fewstep import plots
from fewstep.config import recipe_from_dict
from fewstep.energy import count_energy
from fewstep.events.compression import stc
from fewstep.events.types import EVENT_DTYPE
from fewstep.layers import TimeFold
from fewstep.models.base import SpikingModel
from fewstep.neurons import LIF


def _png(path) -> np.ndarray:
    assert path.stat().st_size > 1000
    return np.asarray(Image.open(path).convert("RGB"))


def test_spike_rates_from_dict_energy_report_and_run_report(tmp_path):
    net = nn.Sequential(TimeFold(nn.Linear(4, 8)), LIF(), TimeFold(nn.Linear(8, 3)), LIF())
    energy = count_energy(net, torch.rand(2, 5, 4) * 3, layout="sequence")
    for i, rates in enumerate([{"a": 0.1, "b": 0.3}, energy, {"energy": energy.to_dict()}]):
        out = plots.plot_spike_rates(rates, tmp_path / f"r{i}.png")
        assert out == tmp_path / f"r{i}.png"
        _png(out)
    with pytest.raises(ValueError, match="no spike rates"):
        plots.plot_spike_rates({}, tmp_path / "empty.png")


def test_event_frames_colour_on_red_and_off_blue(tmp_path):
    frames = np.zeros((3, 2, 8, 8), np.float32)
    frames[:, 1, :, :4] = 5.0  # ON on the left half
    frames[:, 0, :, 4:] = 5.0  # OFF on the right half
    rgb = plots._event_rgb(frames)
    assert rgb.shape == (3, 8, 8, 3)
    left, right = rgb[0, 4, 1], rgb[0, 4, 6]
    assert left[0] > 0.8 and left[2] < 0.3  # red
    assert right[2] > 0.8 and right[0] < 0.3  # blue
    img = _png(plots.plot_event_frames(frames, tmp_path / "ev.png"))
    assert (img[..., 0].astype(int) - img[..., 2] > 150).any() and (img[..., 2].astype(int) - img[..., 0] > 150).any()
    with pytest.raises(ValueError, match=r"\[T, 2, H, W\]"):
        plots.plot_event_frames(np.zeros((3, 3, 8, 8)), tmp_path / "bad.png")


def test_event_frames_of_real_stc_output(tmp_path):
    rng = np.random.default_rng(0)
    ev = np.zeros(2000, EVENT_DTYPE)
    ev["x"], ev["y"] = rng.integers(0, 34, 2000), rng.integers(0, 34, 2000)
    ev["t"], ev["p"] = np.sort(rng.integers(0, 100_000, 2000)), rng.integers(0, 2, 2000)
    _png(plots.plot_event_frames(stc(ev, (34, 34), 4), tmp_path / "stc.png"))


@pytest.mark.parametrize("shape", [(4, 30), (4, 3, 2, 5, 5)])
def test_spike_raster_of_flat_and_batched_spikes(tmp_path, shape):
    spikes = (torch.rand(shape) < 0.3).float()
    if len(shape) > 2:
        spikes[:, 1] = 2.0  # an MT-LIF count
    _png(plots.spike_raster(spikes, tmp_path / "raster.png", max_neurons=40))
    with pytest.raises(ValueError):
        plots.spike_raster(torch.zeros(5), tmp_path / "bad.png")


def test_reexported_plots_are_the_originals(tmp_path):
    from fewstep.report import plot_accuracy_per_step

    assert plots.plot_accuracy_per_step is plot_accuracy_per_step
    sweep = {"mean_steps": [1.0, 1.5, 2.0], "accuracy": [0.8, 0.85, 0.9], "oracle_mean_steps": 1.2,
             "oracle_accuracy": 0.93, "timesteps": 2, "operating_point": {"mean_steps": 1.5, "accuracy": 0.85}}
    _png(plots.plot_cutoff({"softmax": sweep}, tmp_path / "cutoff.png"))


class _EventNet(SpikingModel):
    def __init__(self) -> None:
        super().__init__((2, 6, 6), 3, 2)
        self.stem = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1))
        self.body = nn.Sequential(LIF(), TimeFold(nn.Flatten(), nn.Linear(108, 3)))


def test_plots_callback_writes_rates_raster_and_event_preview(tmp_path):
    net = _EventNet()
    cb = plots.PlotsCallback()
    cb.on_epoch_end({"epoch": 1}, net, tmp_path)
    net.train()
    net(torch.rand(2, 4, 2, 6, 6))  # training passes are not captured
    net.eval()
    with torch.no_grad():
        net(torch.rand(2, 4, 2, 6, 6) * 3)
    cb.on_train_end({"recipe": "t", "dataset": "events", "energy": {"spike_rate_per_layer": {"body.0": 0.2}}},
                    net, tmp_path)
    for name in ("spike_rates.png", "spike_raster.png", "event_preview.png"):
        _png(tmp_path / name)
    assert not net._forward_pre_hooks


def test_plots_callback_in_a_training_run(tmp_path):
    from fewstep.train import train

    tiny = {"name": "tiny-plots", "data": {"dataset": "digits", "batch_size": 64, "train_limit": 64, "test_limit": 32},
            "model": {"name": "small_cnn", "timesteps": 2, "options": {"channels": [4, 8], "hidden": 16}},
            "train": {"epochs": 1}}
    train(recipe_from_dict(tiny), tmp_path, device="cpu", progress=False, log=lambda s: None,
          callbacks=[plots.PlotsCallback()])
    _png(tmp_path / "spike_rates.png")
    _png(tmp_path / "spike_raster.png")
    assert not (tmp_path / "event_preview.png").exists()  # static images


# ---------------------------------------------------------------------------------------------
# readable plots (#19 item 12): titles inside the figure, a polarity legend, layer names

DOTTED = re.compile(r"\w\.\w")  # a module path such as features.3.neuron


def _inside(fig, artist) -> bool:
    """Whether ``artist`` (a title, a legend) is drawn within the figure's bounds."""
    fig.canvas.draw()
    box, page = artist.get_window_extent(fig.canvas.get_renderer()), fig.bbox
    return page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1


@pytest.mark.parametrize("steps", [1, 2, 4, 32])
def test_raster_title_fits_inside_the_figure(steps):
    long = "spikes of layer 12: MTLIF: cifar10-vgg11-mtlif-str-t2 (cifar10) on a rather long recipe name"
    fig = plots._raster_figure((torch.rand(steps, 3, 40) < 0.3).float(), title=long)
    title = fig.axes[0].title
    if steps <= 4:  # a narrow figure: too wide for one line (T = 32 makes an 18 inch figure)
        assert "\n" in title.get_text()
    assert "".join(title.get_text().split()) == "".join(long.split())  # and nothing lost
    assert _inside(fig, title)


def test_short_titles_stay_on_one_line():
    fig = plots._raster_figure(torch.ones(4, 10), title="spikes")
    assert fig.axes[0].get_title() == "spikes" and _inside(fig, fig.axes[0].title)


@pytest.mark.parametrize("steps", [1, 2, 4, 12])
def test_event_preview_has_a_polarity_legend_inside_the_figure(steps):
    frames = np.random.default_rng(0).poisson(1.0, (steps, 2, 8, 8)).astype(np.float32)
    fig = plots._events_figure(frames, title="input events: nmnist-small-lif-t4 (nmnist), a long title")
    assert len(fig.legends) == 1
    legend = fig.legends[0]
    texts = [t.get_text() for t in legend.get_texts()]
    assert any("ON" in t and "polarity 1" in t for t in texts), texts
    assert any("OFF" in t and "polarity 0" in t for t in texts), texts
    colours = [tuple(np.round(h.get_facecolor()[:3], 2)) for h in legend.legend_handles]
    assert tuple(np.round(plots.ON_RGB, 2)) in colours and tuple(np.round(plots.OFF_RGB, 2)) in colours
    assert _inside(fig, legend) and _inside(fig, fig._suptitle)


def test_spike_rate_labels_name_layers_not_module_paths():
    assert plots.spike_rate_labels(["features.0.neuron", "features.3.neuron", "head"],
                                   {"features.0.neuron": "LIF", "features.3.neuron": "MTLIF"}) == [
        "layer 1: LIF", "layer 2: MTLIF", "head"]
    assert plots.spike_rate_labels(["body.0", "conv1"]) == ["layer 1", "conv1"]  # no types: the position

    from fewstep.neurons import MTLIF

    net = nn.Sequential(TimeFold(nn.Linear(4, 8)), nn.Sequential(LIF()), TimeFold(nn.Linear(8, 3)), MTLIF())
    energy = count_energy(net, torch.rand(2, 5, 4) * 3, layout="sequence")
    assert any(DOTTED.search(n) for n in energy.spike_rate_per_layer)  # "1.0": a module path
    for rates in (energy, {"energy": energy.to_dict()}, energy.to_dict()):
        labels = [t.get_text() for t in plots._rates_figure(rates).axes[0].get_xticklabels()]
        assert labels == ["layer 1: LIF", "layer 2: MTLIF"]
        assert not any(DOTTED.search(s) for s in labels)


def test_plots_callback_pngs_are_readable(tmp_path, monkeypatch):
    """The callback's three PNGs: raster title inside, polarity legend, layer names."""
    figs = {}
    save = plots._save

    def keep(fig, path):
        figs[path.name] = fig
        fig.canvas.draw()  # check before saving closes it
        assert all(_inside(fig, ax.title) for ax in fig.axes if ax.get_title())
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    net = _EventNet()
    cb = plots.PlotsCallback()
    cb.on_epoch_end({"epoch": 1}, net, tmp_path)
    net.eval()
    with torch.no_grad():
        net(torch.rand(2, 4, 2, 6, 6) * 3)
    cb.on_train_end({"recipe": "a-rather-long-recipe-name-lif-t4", "dataset": "saccade-fashion-mnist",
                     "energy": {"spike_rate_per_layer": {"body.0": 0.2}}}, net, tmp_path)
    assert set(figs) == {"spike_rates.png", "spike_raster.png", "event_preview.png"}
    assert [t.get_text() for t in figs["spike_rates.png"].axes[0].get_xticklabels()] == ["layer 1: LIF"]
    raster_title = figs["spike_raster.png"].axes[0].get_title()
    assert "layer 1: LIF" in " ".join(raster_title.split()) and not DOTTED.search(raster_title.replace("\n", " "))
    texts = " ".join(t.get_text() for t in figs["event_preview.png"].legends[0].get_texts())
    assert "ON" in texts and "OFF" in texts
