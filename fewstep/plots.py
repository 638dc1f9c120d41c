"""PNG plots of runs, spikes and event data (matplotlib, headless ``Agg`` backend).

All plotting lives here, and it draws plain data: numbers, arrays (NumPy or torch) and dicts (a
run's ``report``, a cutoff sweep). This module therefore imports nothing from training or
inference: :mod:`fewstep.report`, :mod:`fewstep.train` and :mod:`fewstep.infer.cli` call it, never
the other way round (an import circle ``train -> plots -> infer -> train`` used to run through it).

* :func:`plot_accuracy_per_step`: test accuracy at every step ``t`` of a run's report (every run
  writes it, through :func:`fewstep.report.write_report`);
* :func:`plot_cutoff`: accuracy against mean stopping step of anytime inference (the sweeps of
  :func:`fewstep.infer.cutoff.cutoff_sweep`);
* :func:`plot_spike_rates`: a bar per spiking layer (spikes per neuron per step), labelled
  ``layer k: LIF`` (see :func:`spike_rate_labels`);
* :func:`plot_event_frames`: STC output ``[T, 2, H, W]`` as a row of frames, ON events red,
  OFF events blue (both: magenta), with a legend naming the polarities;
* :func:`spike_raster`: which neuron fired at which step, ``[T, N]`` or ``[T, B, ...]``;
* :class:`PlotsCallback`: a training callback writing ``spike_rates.png``, ``spike_raster.png``
  and, for event data, ``event_preview.png`` into the run directory when training ends.

Every function takes the output ``path`` and returns it as a :class:`~pathlib.Path`. Figures use
matplotlib's constrained layout, and titles too wide for their figure are wrapped onto more lines
(long recipe and layer names used to be cut off at the figure's edge).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    from torch.utils.hooks import RemovableHandle

    from .neurons import SpikingNeuron

__all__ = ["PlotsCallback", "plot_accuracy_per_step", "plot_cutoff", "plot_event_frames", "plot_spike_rates",
           "spike_raster", "spike_rate_labels"]

ON_RGB = np.array([0.95, 0.25, 0.15])
OFF_RGB = np.array([0.15, 0.45, 0.95])


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _figure(figsize: tuple[float, float], **kw):
    """A new figure (and axes, as ``plt.subplots``) with constrained layout at 120 dpi."""
    return _pyplot().subplots(figsize=figsize, dpi=120, layout="constrained", **kw)


def _fit_text(fig, text, max_width: float) -> None:
    """Re-wrap ``text`` (a matplotlib ``Text``, e.g. a title) onto more lines until it is at most
    ``max_width`` pixels wide; a title is not clipped by the layout engine, so a long one would
    otherwise run past the figure's edge."""
    renderer = fig.canvas.get_renderer()
    words = " ".join(text.get_text().split())
    width = len(words)
    while text.get_window_extent(renderer).width > max_width and width > 8:
        width = max(8, int(width * 0.85))
        text.set_text(textwrap.fill(words, width))


def _fit_titles(fig, suptitle=None) -> None:
    """Wrap every axes title to its axes' width and ``suptitle`` (the ``Text`` that
    ``fig.suptitle`` returned) to the figure's width, after a first layout pass places the axes;
    saving lays the figure out again, making room for the extra lines."""
    fig.canvas.draw()
    for ax in fig.axes:
        if ax.get_title():
            _fit_text(fig, ax.title, ax.get_window_extent().width)
    if suptitle is not None:
        _fit_text(fig, suptitle, 0.96 * fig.bbox.width)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    _pyplot().close(fig)
    return path


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _accuracy_figure(report: Mapping[str, Any]):
    acc = [100 * a for a in report["accuracy_per_step"]]
    fig, ax = _figure((4.5, 3.2))
    ax.plot(range(1, len(acc) + 1), acc, marker="o")
    ax.set_xlabel("time step t")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xticks(range(1, len(acc) + 1))
    ax.set_title(f"{report['recipe']} ({report['dataset']})", fontsize=9)
    ax.grid(alpha=0.3)
    _fit_titles(fig)
    return fig


def plot_accuracy_per_step(report: Mapping[str, Any], path: str | Path) -> Path:
    """Test accuracy (%) at each step t = 1..T of a run's final model: ``report`` is a run report
    (``accuracy_per_step`` as fractions, ``recipe`` and ``dataset`` for the title)."""
    return _save(_accuracy_figure(report), path)


def _cutoff_figure(curves: Mapping[str, Mapping[str, Any]], title: str | None = None):
    fig, ax = _figure((5.0, 3.6))
    t_max = 1
    for label, sweep in curves.items():
        pts = sorted(zip(sweep["mean_steps"], sweep["accuracy"]))
        line, = ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker=".", label=label)
        color = line.get_color()
        ax.plot(sweep["oracle_mean_steps"], 100 * sweep["oracle_accuracy"], marker="*", markersize=11, color=color,
                linestyle="none")
        op = sweep.get("operating_point")
        if op:
            ax.plot(op["mean_steps"], 100 * op["accuracy"], marker="o", markersize=8, markerfacecolor="none",
                    color=color, linestyle="none")
        t_max = max(t_max, int(sweep["timesteps"]))
    ax.set_xlabel("mean stopping step")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xlim(0.8, t_max + 0.2)
    ax.grid(alpha=0.3)
    ax.set_title(title or "softmax cutoff (star: oracle, circle: operating point)", fontsize=9)
    ax.legend(fontsize=8)
    _fit_titles(fig)
    return fig


def plot_cutoff(curves: Mapping[str, Mapping[str, Any]], path: str | Path, title: str | None = None) -> Path:
    """Accuracy (%) against mean stopping step, one line per sweep (e.g. with and without STR),
    with each curve's oracle (star) and operating point (circle).

    ``curves`` is ``{label: sweep}`` where a sweep is the dict of
    :func:`fewstep.infer.cutoff.cutoff_sweep` (``mean_steps``, ``accuracy``, ``oracle_mean_steps``,
    ``oracle_accuracy``, ``timesteps`` and, when chosen, ``operating_point``)."""
    return _save(_cutoff_figure(curves, title), path)


def _rates_of(rates: Any) -> dict[str, float]:
    """``{layer: rate}`` from a dict, an :class:`~fewstep.energy.EnergyReport`, a run report or
    its ``energy`` section."""
    if hasattr(rates, "spike_rate_per_layer"):
        return dict(rates.spike_rate_per_layer)
    if isinstance(rates, Mapping):
        if "energy" in rates and isinstance(rates["energy"], Mapping):
            rates = rates["energy"]
        if "spike_rate_per_layer" in rates:
            rates = rates["spike_rate_per_layer"]
        return {str(k): float(v) for k, v in rates.items()}
    raise TypeError(f"expected a dict of spike rates or an energy report, got {type(rates).__name__}")


def _kinds_of(rates: Any) -> dict[str, str]:
    """``{layer: neuron type}`` where ``rates`` carries them (an energy report's ``neurons``)."""
    neurons = getattr(rates, "neurons", None)
    if neurons is None and isinstance(rates, Mapping):
        energy = rates.get("energy", rates)
        neurons = energy.get("neurons") if isinstance(energy, Mapping) else None
    out = {}
    for n in neurons if isinstance(neurons, Sequence) else ():
        name, kind = (n.get("name"), n.get("type")) if isinstance(n, Mapping) else (
            getattr(n, "name", None), getattr(n, "type", None))
        if name is not None and kind:
            out[str(name)] = str(kind)
    return out


def spike_rate_labels(names: Sequence[str], kinds: Mapping[str, str] | None = None) -> list[str]:
    """Readable labels for spiking layers given in forward order by their module names.

    The ``k``-th layer (from 1) is ``layer k: TYPE`` when ``kinds`` gives its neuron type (e.g.
    ``"features.3.neuron"`` of an MT-LIF is ``layer 2: MTLIF``), else ``layer k``; a name that is
    no dotted module path (a label chosen by the caller, like ``"conv1"``) is kept as it is."""
    kinds = kinds or {}
    out = []
    for k, name in enumerate(names, 1):
        if name in kinds:
            out.append(f"layer {k}: {kinds[name]}")
        else:
            out.append(f"layer {k}" if "." in name else name)
    return out


def _rates_figure(rates: Any, title: str | None = None, kinds: Mapping[str, str] | None = None):
    values = _rates_of(rates)
    if not values:
        raise ValueError("no spike rates to plot (the model has no spiking layer?)")
    names = list(values)
    labels = spike_rate_labels(names, {**_kinds_of(rates), **(kinds or {})})
    fig, ax = _figure((max(4.0, 0.45 * len(names) + 1.5), 3.4))
    ax.bar(range(len(names)), [values[n] for n in names], color="#3a6ea5")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(labels, rotation=60, ha="right", rotation_mode="anchor", fontsize=7)
    ax.set_xlabel("spiking layer (forward order)", fontsize=8)
    ax.set_ylabel("spikes / neuron / step")
    ax.set_title(title or f"spike rate per layer (mean {np.mean(list(values.values())):.3f})", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    _fit_titles(fig)
    return fig


def plot_spike_rates(rates: Any, path: str | Path, title: str | None = None,
                     kinds: Mapping[str, str] | None = None) -> Path:
    """Bar chart of spikes per neuron per step for every spiking layer, in forward order.

    ``rates`` is ``{layer name: rate}``, an :class:`~fewstep.energy.EnergyReport`, or a run's
    ``report`` (its ``energy.spike_rate_per_layer``). The bars are labelled by
    :func:`spike_rate_labels` with the neuron types from the energy report's ``neurons`` or from
    ``kinds`` (``{layer name: type}``), not by internal module paths."""
    return _save(_rates_figure(rates, title, kinds), path)


def _event_rgb(frames: np.ndarray) -> np.ndarray:
    """``[T, 2, H, W]`` (channel 0 OFF, 1 ON) to ``[T, H, W, 3]`` in [0, 1] on black."""
    f = frames - np.minimum(frames.min(axis=(0, 2, 3), keepdims=True), 0)  # normalised inputs: zero back at 0
    nz = f[f > 0]
    scale = float(np.percentile(nz, 99)) if nz.size else 1.0
    f = np.clip(f / (scale or 1.0), 0, 1)
    off, on = f[:, 0, ..., None], f[:, 1, ..., None]
    return np.clip(on * ON_RGB + off * OFF_RGB, 0, 1)


def _events_figure(frames: Any, title: str | None = None, max_steps: int = 16):
    from matplotlib.patches import Patch

    f = _numpy(frames)
    if f.ndim == 3:
        f = f[None]
    if f.ndim != 4 or f.shape[1] != 2:
        raise ValueError(f"expected event frames [T, 2, H, W] (or [2, H, W]), got shape {tuple(f.shape)}")
    f = f[:max_steps]
    rgb = _event_rgb(f)
    t = len(rgb)
    cols = min(t, 8)
    rows = math.ceil(t / cols)
    h, w = rgb.shape[1:3]
    panel = 1.6 * max(1.0, w / h)
    width = max(panel * cols + 0.2, 2.4)
    legend_rows = 1 if width >= 4.0 else 3
    fig, axes = _figure((width, 1.6 * rows + 0.5 + 0.18 * legend_rows), nrows=rows, ncols=cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < t:
            ax.imshow(rgb[i], interpolation="nearest")
            ax.set_title(f"t={i + 1}", fontsize=8)
    handles = [Patch(color=tuple(ON_RGB), label="ON events (polarity 1)"),
               Patch(color=tuple(OFF_RGB), label="OFF events (polarity 0)"),
               Patch(color=tuple(np.clip(ON_RGB + OFF_RGB, 0, 1)), label="both")]
    fig.legend(handles=handles, loc="outside lower center", ncols=3 if legend_rows == 1 else 1, fontsize=7,
               frameon=False, handlelength=1.2)
    sup = fig.suptitle(title or "events per step", fontsize=9)
    _fit_titles(fig, sup)
    return fig


def plot_event_frames(frames: Any, path: str | Path, title: str | None = None, max_steps: int = 16) -> Path:
    """A row (wrapping after 8) of the ``T`` frames of one event sample, ``[T, 2, H, W]`` as
    :class:`fewstep.events.STC` makes them (or ``[2, H, W]`` for one frame). Channel 1 (ON,
    polarity 1) is drawn red, channel 0 (OFF, polarity 0) blue, brightness by count up to the
    99th percentile; a legend below the frames names the colours."""
    return _save(_events_figure(frames, title, max_steps), path)


def _raster_figure(spikes: Any, *, sample: int = 0, max_neurons: int = 512, title: str | None = None):
    s = _numpy(spikes)
    if s.ndim < 2:
        raise ValueError(f"expected spikes [T, N] or [T, B, ...], got shape {tuple(s.shape)}")
    if s.ndim > 2:
        if not 0 <= sample < s.shape[1]:
            raise ValueError(f"sample {sample} out of range for batch of {s.shape[1]}")
        s = s[:, sample].reshape(s.shape[0], -1)
    t_steps, n = s.shape
    s = s[:, :max_neurons]
    t_idx, n_idx = np.nonzero(s)
    counts = s[t_idx, n_idx]
    fig, ax = _figure((max(3.5, 0.5 * t_steps + 2.0), 3.6))
    ax.scatter(t_idx + 1, n_idx, s=6 * np.clip(counts, 1, None), marker="|" if t_steps > 16 else "s",
               color="black", linewidths=0.6)
    ax.set_xlim(0.5, t_steps + 0.5)
    ax.set_ylim(-0.5, s.shape[1] - 0.5)
    ax.set_xticks(range(1, t_steps + 1) if t_steps <= 16 else ax.get_xticks())
    ax.set_xlabel("time step t")
    ax.set_ylabel("neuron" + (f" (first {s.shape[1]} of {n})" if n > s.shape[1] else ""))
    rate = float(s.mean()) if s.size else 0.0
    ax.set_title(title or f"spikes ({rate:.3f} per neuron per step)", fontsize=9)
    _fit_titles(fig)
    return fig


def spike_raster(spikes: Any, path: str | Path, *, sample: int = 0, max_neurons: int = 512,
                 title: str | None = None) -> Path:
    """Raster of ``spikes``: ``[T, N]``, or ``[T, B, ...]`` (sample ``sample`` is drawn, its
    neurons flattened). A dot per (step, neuron) that fired; bigger dots for counts above 1
    (MT-LIF). At most ``max_neurons`` neurons (the first ones) are drawn."""
    return _save(_raster_figure(spikes, sample=sample, max_neurons=max_neurons, title=title), path)


class PlotsCallback:
    """Training callback: when training ends, writes into the run directory

    * ``spike_rates.png`` from the report's ``energy.spike_rate_per_layer``;
    * ``spike_raster.png``: the last spiking layer's spikes for one test sample;
    * ``event_preview.png`` when the inputs are event sequences ``[T, B, 2, H, W]``.

    The sample is the first one the model sees in eval mode after the first epoch (the engine
    evaluates on the test set after every epoch and measures energy on test inputs before calling
    ``on_train_end``); a forward pre-hook keeps it, and it is removed at the end. Layers are named
    as :func:`spike_rate_labels` names them (``layer k: LIF``), with the types from the model.
    """

    def __init__(self, raster: bool = True, events: bool = True) -> None:
        self.raster = raster
        self.events = events
        self._handle: RemovableHandle | None = None
        self._sample: torch.Tensor | None = None

    def _capture(self, model: nn.Module, args: tuple) -> None:
        if model.training or self._sample is not None or not args or not isinstance(args[0], torch.Tensor):
            return
        x = args[0]
        shape = getattr(model, "input_shape", None)
        seq = shape is not None and x.dim() == len(shape) + 2
        self._sample = (x[:, :1] if seq else x[:1]).detach().cpu().clone()

    def _attach(self, model: nn.Module) -> None:
        if self._handle is None:
            self._handle = model.register_forward_pre_hook(self._capture)

    def on_train_start(self, model: nn.Module, out_dir: Path | None = None) -> None:
        self._attach(model)

    def on_epoch_end(self, epoch_record: dict, model: nn.Module, out_dir: Path | None = None) -> None:
        self._attach(model)

    def on_train_end(self, report: dict, model: nn.Module, out_dir: Path) -> None:
        from .neurons import spiking_neurons

        out = Path(out_dir)
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        try:
            rates = _rates_of(report)
        except TypeError:
            rates = {}
        neurons = spiking_neurons(model)
        kinds = {**{n: type(m).__name__ for n, m in neurons}, **_kinds_of(report)}
        name = f"{report.get('recipe', '')} ({report.get('dataset', '')})".strip()
        if rates:
            plot_spike_rates(rates, out / "spike_rates.png", title=f"spike rate per layer: {name}", kinds=kinds)
        x, self._sample = self._sample, None
        if x is None:
            return
        shape = getattr(model, "input_shape", None)
        is_seq = shape is not None and x.dim() == len(shape) + 2
        if self.events and is_seq and x.dim() == 5 and x.shape[2] == 2:
            plot_event_frames(x[:, 0], out / "event_preview.png", title=f"input events: {name}")
        if self.raster and neurons:
            label = spike_rate_labels([n for n, _ in neurons], kinds)[-1]
            self._raster(model, neurons[-1][1], x, out / "spike_raster.png", f"spikes of {label}: {name}")

    @torch.no_grad()
    def _raster(self, model: nn.Module, neuron: SpikingNeuron, x: torch.Tensor, path: Path, title: str) -> None:
        from .neurons import reset_net

        was_training, was_record = model.training, neuron.record
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        model.eval()
        neuron.record = True
        try:
            reset_net(model)
            model(x.to(device))
            spikes = neuron.last_spikes
        finally:
            neuron.record = was_record
            reset_net(model)
            model.train(was_training)
        if spikes is not None and spikes.dim() >= 2:
            spike_raster(spikes.float().cpu(), path, title=title)
