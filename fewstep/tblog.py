"""TensorBoard logging for training runs (``train.tensorboard = true``, or pass the callback).

:class:`TensorBoardCallback` writes, per epoch (the x axis is the epoch number):

* ``train/loss``, ``train/accuracy``, ``lr``, ``time/epoch_seconds``;
* ``test/accuracy_t{t}`` for every step ``t = 1..T`` (prediction from the mean of the first ``t``
  outputs) and ``test/accuracy`` (at ``T``);
* ``spike_rate/<layer>``: spikes per neuron per step of every spiking layer, measured on the
  epoch's evaluation pass over the test set (forward hooks count the neurons' outputs while the
  model is in eval mode; training passes are not counted). The hooks are put on in
  :meth:`~TensorBoardCallback.on_train_start` when the engine calls it, otherwise at the first
  :meth:`~TensorBoardCallback.on_epoch_end`, so the rates start at epoch 2 in that case.

and at the end of training the report's energy section: ``energy/energy_pj``, ``energy/ratio``,
``energy/sops``, ``energy/macs`` and ``spike_rate_final/<layer>`` (from
:func:`fewstep.energy.count_energy`), plus the final accuracy per step as text.

TensorBoard itself is imported only when a callback is made; without it the callback raises
:class:`TensorBoardUnavailable` (install with ``pip install 'fewstep[tensorboard]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import FewstepError

__all__ = ["SpikeRateMonitor", "TensorBoardCallback", "TensorBoardUnavailable"]


class TensorBoardUnavailable(FewstepError, ImportError):
    """The ``tensorboard`` package is not installed."""


def _summary_writer(log_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise TensorBoardUnavailable("TensorBoard logging (train.tensorboard = true) needs the tensorboard package: "
                                     "pip install 'fewstep[tensorboard]'") from None
    return SummaryWriter(log_dir=str(log_dir))


class SpikeRateMonitor:
    """Counts every spiking layer's output while the model is in eval mode.

    ``attach(model)`` registers forward hooks on its :class:`~fewstep.neurons.SpikingNeuron`
    modules; ``rates()`` returns ``{layer name: spikes per neuron per step}`` accumulated since the
    last ``clear()`` (layers that did not run are left out); ``detach()`` removes the hooks.
    A spike of amplitude ``a`` (``scale_output``) counts as one spike, a count ``k`` of an MT-LIF
    as ``k``, as in :mod:`fewstep.energy`.
    """

    def __init__(self, eval_only: bool = True) -> None:
        self.eval_only = eval_only
        self._handles: list = []
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, float] = {}  # elements, times amp

    def attach(self, model: nn.Module) -> SpikeRateMonitor:
        from .energy import neuron_amplitude
        from .neurons import spiking_neurons

        self.detach()
        for name, neuron in spiking_neurons(model):
            amp = neuron_amplitude(neuron) or 1.0
            self._handles.append(neuron.register_forward_hook(self._hook(name or "neuron", amp)))
        return self

    def _hook(self, name: str, amp: float):
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            if self.eval_only and module.training:
                return
            s = out.detach().float().sum()
            self._sums[name] = self._sums[name] + s if name in self._sums else s
            self._counts[name] = self._counts.get(name, 0) + out.numel() * amp

        return hook

    def rates(self) -> dict[str, float]:
        return {k: float(v) / self._counts[k] for k, v in self._sums.items() if self._counts.get(k)}

    def clear(self) -> None:
        self._sums.clear()
        self._counts.clear()

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    @property
    def attached(self) -> bool:
        return bool(self._handles)


class TensorBoardCallback:
    """Writes a run's scalars to ``log_dir`` (see the module docstring for the tags).

    A training callback: :func:`fewstep.train.engine.train` calls ``on_epoch_end(epoch_record,
    model, out_dir)`` after every epoch and ``on_train_end(report, model, out_dir)`` at the end.
    View with ``tensorboard --logdir <out_dir>/tb``.
    """

    def __init__(self, log_dir: str | Path, spike_rates: bool = True) -> None:
        self.log_dir = Path(log_dir)
        self.writer = _summary_writer(self.log_dir)  # fails now, before training, when tensorboard is missing
        self.monitor = SpikeRateMonitor() if spike_rates else None

    def on_train_start(self, model: nn.Module, out_dir: Path | None = None) -> None:
        if self.monitor is not None:
            self.monitor.attach(model)

    def on_epoch_end(self, epoch_record: dict[str, Any], model: nn.Module, out_dir: Path | None = None) -> None:
        step = int(epoch_record.get("epoch", 0))
        w = self.writer
        for key, tag in (("train_loss", "train/loss"), ("train_accuracy", "train/accuracy"), ("lr", "lr"),
                         ("seconds", "time/epoch_seconds")):
            if epoch_record.get(key) is not None:
                w.add_scalar(tag, float(epoch_record[key]), step)
        split = "val" if epoch_record.get("val_accuracy_per_step") is not None else "test"
        acc = list(epoch_record.get(f"{split}_accuracy_per_step") or [])
        for t, a in enumerate(acc, 1):
            w.add_scalar(f"{split}/accuracy_t{t}", float(a), step)
        if acc:
            w.add_scalar(f"{split}/accuracy", float(acc[-1]), step)
        if self.monitor is not None:
            if self.monitor.attached:
                for name, rate in self.monitor.rates().items():
                    w.add_scalar(f"spike_rate/{name}", rate, step)
                self.monitor.clear()
            else:  # the engine did not call on_train_start: count from the next evaluation on
                self.monitor.attach(model)
        w.flush()

    def on_train_end(self, report: dict[str, Any], model: nn.Module, out_dir: Path | None = None) -> None:
        if self.monitor is not None:
            self.monitor.detach()
        step = int(report.get("epochs") or 0)
        w = self.writer
        energy = report.get("energy") or {}
        for key in ("energy_pj", "ratio", "sops", "macs"):
            if energy.get(key) is not None:
                w.add_scalar(f"energy/{key}", float(energy[key]), step)
        for name, rate in (energy.get("spike_rate_per_layer") or {}).items():
            w.add_scalar(f"spike_rate_final/{name}", float(rate), step)
        acc = report.get("accuracy_per_step") or []
        if acc:
            table = "| step | accuracy |\n|---|---|\n" + "\n".join(f"| {t} | {100 * a:.2f} % |" for t, a in enumerate(acc, 1))
            w.add_text("final/accuracy_per_step", table, step)
        self.close()

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
