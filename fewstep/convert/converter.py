"""Build the SNN of a DNN and run a whole conversion (histograms, factors, SNNs, evaluation).

:func:`convert` replaces every clipped ReLU of a DNN by a :class:`~fewstep.models.dnn.ConvertedIF`
with ``V = a * mu`` and ``A = b * V``; every other weight is shared unchanged (no weight
normalisation: the spike amplitude carries the activation scale), except that the batch norms
of a DNN trained with them (``cifar_fast_dnn``) are first folded into their convolutions (and its
fixed logit factor, ``head_scale``, into the read-out). :func:`convert_checkpoint` is
``fewstep convert``: it writes one normal fewstep checkpoint per method, whose recipe names the
registered ``*_converted`` model, so ``fewstep eval`` evaluates it and ``fewstep train <recipe>
--set train.init_checkpoint=PATH`` fine-tunes it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from .. import __version__
from ..config import Recipe, TrainConfig
from ..models import SpikingModel, build_model
from ..models.dnn import CONVERTED_NAMES, ConvertedIF, ConvertibleNet
from ..neurons import NeuronSpec
from ..train.checkpoint import save_checkpoint
from ..train.data_feed import DeviceFeed
from .factors import METHODS, LayerFactors, fit_factors
from .histograms import LayerHistogram, clipped_relus, collect_histograms

# The neuron a converted checkpoint's recipe names. Informational: *_converted models always use
# ConvertedIF (IF, soft reset, rectangle surrogate on |U/V - 1| < 1, trainable V and leak).
CONVERTED_NEURON = NeuronSpec(kind="if", decay=1.0, reset="soft", surrogate="rectangle", width=1.0,
                              learnable_threshold=True)


def _replace_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def convert(dnn: nn.Module, factors: Sequence[LayerFactors], timesteps: int | None = None) -> nn.Module:
    """A copy of ``dnn`` with its ``i``-th clipped ReLU replaced by a :class:`ConvertedIF` with
    ``V = factors[i].a * mu``, ``b = factors[i].b``, the factors' initial membrane and leak 1; ``timesteps`` sets a
    :class:`~fewstep.models.SpikingModel`'s steps of direct encoding. Returned in eval mode."""
    snn = copy.deepcopy(dnn).eval()
    from ..models.cifar_fast import fold_batchnorm, fold_head_scale

    fold_batchnorm(snn)  # a DNN trained with BN: its SNN has the BN folded into the convs (else nothing)
    fold_head_scale(snn)  # and a fixed logit factor folded into the read-out (else nothing)
    layers = clipped_relus(snn)
    if len(layers) != len(factors):
        raise ValueError(f"{len(factors)} factors for {len(layers)} clipped-ReLU layers")
    for (name, relu), f in zip(layers, factors):
        neuron = ConvertedIF().to(device=relu.mu.device, dtype=relu.mu.dtype)
        neuron.set_factors(f.v_threshold, f.b, initial_membrane=f.initial_membrane)  # after the dtype change
        _replace_module(snn, name, neuron)
    if isinstance(snn, ConvertibleNet) or hasattr(snn, "spiking"):
        setattr(snn, "spiking", True)  # a ConvertibleNet, or any model with a spiking switch
    if timesteps is not None:
        if not isinstance(snn, SpikingModel):
            raise ValueError("timesteps applies to a SpikingModel; a plain module takes [T, B, ...] input")
        if timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {timesteps}")
        snn.timesteps = int(timesteps)
    return snn.eval()


def converted_recipe(dnn_recipe: Recipe, timesteps: int, method: str) -> Recipe:
    """The recipe stored in a converted checkpoint: the DNN's data and model options, the
    registered ``*_converted`` model at ``timesteps``, and fine-tuning defaults in ``[train]``
    (AdamW lr 1e-4 without weight decay for the paper's Adam lr 1e-4)."""
    name = dnn_recipe.model.name
    if name not in CONVERTED_NAMES:
        raise ValueError(f"model {name!r} has no converted counterpart; known: {', '.join(sorted(CONVERTED_NAMES))}")
    t = dnn_recipe.train
    return replace(
        copy.deepcopy(dnn_recipe),
        name=f"{dnn_recipe.name}-converted-{method}-t{timesteps}",
        description=f"{dnn_recipe.name} converted to a {timesteps}-step SNN ({method} factors)",
        model=replace(copy.deepcopy(dnn_recipe.model), name=CONVERTED_NAMES[name], timesteps=int(timesteps)),
        neuron=copy.deepcopy(CONVERTED_NEURON),
        train=TrainConfig(epochs=10, optimizer="adamw", lr=1e-4, weight_decay=0.0, schedule="cosine", loss="ce",
                          seed=t.seed, amp=t.amp, energy_preset=t.energy_preset),
    )


def converted_checkpoint(snn: nn.Module, recipe: Recipe, factors: Sequence[LayerFactors],
                         extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A fewstep checkpoint of a converted SNN. The weights go through the registered model the
    recipe names (a strict load), so the checkpoint is known to load where it will be used."""
    m = recipe.model
    net = cast(Any, snn)  # a registered model: it carries num_classes and input_shape
    registered = build_model(m.name, num_classes=net.num_classes, input_shape=net.input_shape,
                             timesteps=m.timesteps, neuron=recipe.neuron, **m.options)
    registered.load_state_dict(snn.state_dict())
    return {"recipe": recipe.to_dict(), "model": {k: v.detach().cpu() for k, v in registered.state_dict().items()},
            "epoch": 0, "history": [], "fewstep_version": __version__,
            "conversion": {"factors": [f.to_dict() for f in factors], **(extra or {})}}


@torch.no_grad()
def accuracy(model: nn.Module, feed: DeviceFeed) -> list[float]:
    """Test accuracy at every step (fp32; see :func:`fewstep.train.engine.evaluate`)."""
    from ..train.engine import evaluate

    return evaluate(model, feed)


def energy_summary(model: nn.Module, x: torch.Tensor, preset: str) -> dict[str, Any]:
    """Energy per sample (:func:`fewstep.energy.count_energy`) plus the first-layer bound
    ``ann_macs / (stem MACs * T)`` that the ratio can never exceed under direct encoding."""
    from ..energy import count_energy

    rep = count_energy(model, x, preset=preset)
    stem = sum(lo.dense_macs for lo in rep.layers if lo.name.startswith("stem."))
    out = rep.to_dict()
    out["first_layer_bound"] = rep.ann_macs / stem if stem > 0 else None
    return out


def default_out_dir(checkpoint: str | Path, timesteps: int) -> Path:
    """Where ``fewstep convert`` writes without ``--out``: ``convert-t<T>/`` beside the checkpoint."""
    return Path(checkpoint).parent / f"convert-t{timesteps}"


def convert_checkpoint(checkpoint: str | Path, timesteps: int = 2, methods: Sequence[str] = METHODS,
                       eval_timesteps: Sequence[int] = (1, 2, 4), out_dir: str | Path | None = None,
                       device: str | None = "auto", data_root: str | Path | None = None, calib_batches: int = 20,
                       calib_batch_size: int | None = None, bins: int = 2048, energy_samples: int = 256,
                       initial_membrane: float = 0.0, log: Callable[[str], None] = print) -> dict[str, Any]:
    """``fewstep convert``: convert a trained ``*_dnn`` checkpoint; returns (and writes) the report.

    For every T in ``eval_timesteps`` and ``timesteps`` and every method, the factors are fitted
    for that T and the converted SNN is evaluated at that T (before any fine-tuning). For
    ``timesteps`` every method's SNN is saved as ``converted-<method>-t<T>.pt`` and its energy
    counted. ``initial_membrane`` (0 in the reconstruction) starts every neuron's membrane at that
    fraction of its threshold and fits the factors for it. ``report.json`` goes to ``out_dir``
    (default: ``convert-t<T>/`` beside the checkpoint).
    """
    from .dnn import calibration_batches, load_dnn
    from .report import build_report, format_table, write_report

    methods = list(dict.fromkeys(methods))
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown conversion method {m!r}; choose from {', '.join(METHODS)}")
    if timesteps < 1 or any(t < 1 for t in eval_timesteps):
        raise ValueError("time steps must be >= 1")
    if not 0.0 <= initial_membrane < 1.0:
        raise ValueError(f"initial_membrane must be in [0, 1), got {initial_membrane}")
    checkpoint = Path(checkpoint)
    out = Path(out_dir) if out_dir else default_out_dir(checkpoint, timesteps)
    recipe, dnn, splits, dev = load_dnn(checkpoint, device, data_root)
    out.mkdir(parents=True, exist_ok=True)
    test_feed = DeviceFeed(splits.test, recipe.data.eval_batch_size, dev, train=False)
    dnn_acc = accuracy(dnn, test_feed)[-1]
    log(f"DNN {recipe.model.name}: test accuracy {100 * dnn_acc:.2f} %")

    batches = calibration_batches(splits.train, calib_batch_size or recipe.data.batch_size, calib_batches, dev,
                                  seed=recipe.train.seed)
    hists: list[LayerHistogram] = collect_histograms(dnn, batches, bins=bins)
    log(f"histograms of {len(hists)} layers from {calib_batches} calibration batches")

    steps = sorted({*map(int, eval_timesteps), int(timesteps)})
    accuracies: dict[str, dict[str, float]] = {m: {} for m in methods}
    factors_at: dict[str, dict[int, list[LayerFactors]]] = {m: {} for m in methods}
    saved: dict[str, str] = {}
    energy: dict[str, Any] = {}
    x_energy, _ = next(iter(DeviceFeed(splits.test.subset(energy_samples), energy_samples, dev, train=False).epoch(0)))
    for t in steps:
        for m in methods:
            factors = fit_factors(hists, t, m, initial_membrane)
            factors_at[m][t] = factors
            snn = convert(dnn, factors, t)
            acc = accuracy(snn, test_feed)
            accuracies[m][str(t)] = acc[-1]
            log(f"T={t} {m:>6}: converted accuracy {100 * acc[-1]:.2f} %")
            if t == timesteps:
                rec = converted_recipe(recipe, t, m)
                path = out / f"converted-{m}-t{t}.pt"
                save_checkpoint(converted_checkpoint(snn, rec, factors, {
                    "dnn_checkpoint": str(checkpoint), "method": m, "dnn_accuracy": dnn_acc,
                    "accuracy_per_step": acc}), path)
                saved[m] = str(path)
                energy[m] = energy_summary(snn, x_energy, recipe.train.energy_preset)

    report = build_report(recipe=recipe, checkpoint=checkpoint, timesteps=timesteps, dnn_accuracy=dnn_acc,
                          accuracies=accuracies, factors=factors_at, hists=hists, energy=energy, saved=saved,
                          calib_batches=calib_batches, bins=bins, initial_membrane=initial_membrane)
    write_report(report, out)
    log(format_table(report))
    log(f"report and converted checkpoints in {out}/")
    return report
