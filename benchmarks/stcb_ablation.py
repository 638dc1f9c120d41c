"""STCB with the spike-train-level equivalent gradient vs. per-step surrogate BPTT vs. the ANN
(``shared/methods.md`` section 2, ``docs/methods/stcb.md``).

Variants (``--gradients``), each trained at every ``T`` in ``--timesteps`` and every seed in
``--seeds``:

* ``equivalent``: the shipped recipe as it is (``model.options.gradient = "equivalent"``: the
  spike-train-level equivalent gradient of :mod:`fewstep.layers.stcb`).
* ``surrogate``: the same recipe with ``model.options.gradient=surrogate`` (per-step BPTT through
  the same IF conversions, the recipe's ``neuron.surrogate`` / ``neuron.width``). The forward pass
  is identical (``forward="if"``), so only the gradient differs.
* ``ann``: the same network with every STCB conversion replaced by a ReLU, one evaluation per
  sample (the ``T = 1`` recipe, model ``stcb_ablation_ann``, registered by this script: it builds
  the recipe's STCB model and swaps its :class:`~fewstep.layers.stcb.ConversionIF` modules for
  ``nn.ReLU``). Trained once per seed whatever ``--timesteps`` is; its table row is ``T = ANN``.

Recipes per dataset (``--dataset``):

* ``fashion-mnist`` (default): ``fmnist-stcb-t1``, ``-t2``, ``-t4`` (``stcb_small``) on
  ``<data root>/fashion-mnist``.
* ``cifar10``: ``cifar10-stcb-t1``, ``-t2``, ``-t4`` (``stcb_resnet19``) with
  ``data.dataset=cifar10-jpeg``, i.e. ``<data root>/cifar10-jpeg``: a **lossy JPEG copy** (about
  quality 75) of CIFAR-10, so its accuracies are close to, not exactly comparable with, published
  CIFAR-10 numbers (the table says so). Its decoded-image cache goes to ``<out>/cache``.
* ``digits``: the ``fmnist-stcb`` recipes with ``data.dataset=digits`` (the embedded 8x8
  scikit-learn digits; ``stcb_small``'s two 2x2 pools leave 2x2 maps): an offline smoke test.

Any other ``T`` uses the ``-t2`` recipe with ``model.timesteps=T``.

Every run uses the Python API (:func:`fewstep.config.load_recipe` + :func:`fewstep.train.train`)
with ``train.epochs`` = ``--epochs`` (default: the recipe's, 100 for Fashion-MNIST and 200 for
CIFAR-10), ``train.seed`` = the seed and ``data.train_limit`` = ``--train-limit`` (the first N
training images; 0 = all). The test set is always complete (``--test-limit`` to cut it). The
cosine schedule runs over the epochs given, so a reduced ``--epochs`` is a shorter schedule, not
a truncated one.

Recorded per run: accuracy at T (``report["accuracy"]``), accuracy at every step t = 1..T,
``train_seconds`` (training + per-epoch evaluation, as the engine reports it) and the energy
section of the report (:mod:`fewstep.energy`, preset ``train.energy_preset``, measured on the
first 256 test images): ``ratio`` = energy of the ANN equivalent / energy of the SNN (> 1: the
SNN is cheaper), with MACs, SOPs and picojoules. Printed: a markdown table (rows variant x T;
per-seed accuracies, mean ± sample std, mean per step, mean energy ratio, mean train seconds),
also written to ``<out>/results.md``; every number goes to ``<out>/results.json``. Run
directories (reports, plots) are under ``<out>/runs/``; checkpoints are deleted after each run
unless ``--keep-checkpoints``. Library logs go to ``<out>/log.txt``.

Run: ``python benchmarks/stcb_ablation.py --data-root ../shared/data [--dataset fashion-mnist]
[--timesteps 1 2 4] [--seeds 0 1 2] [--epochs 3] [--train-limit 20000]
[--gradients equivalent surrogate ann] [--out runs/stcb_ablation]`` (``FEWSTEP_THREADS`` or
``--threads`` sets torch's threads; ``--reuse`` keeps finished runs whose report matches). While the sweep runs, the runs finished so
far are in ``<out>/results.partial.json`` (removed when the tables are written).
``--dataset digits --epochs 1`` is an offline smoke test (no real data needed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import (
    mean_std,
    pct,
    pct_stat,
    report_fields,
    run_meta,
    run_sweep,
    summarise_runs,
    toml_str,
    train_recipe,
    write_results,
)

GRADIENTS = ("equivalent", "surrogate", "ann")
GRADIENT_LABELS = {"equivalent": "STCB, spike-train-level equivalent gradient",
                   "surrogate": "STCB, per-step surrogate BPTT",
                   "ann": "ANN: the same network with ReLU, 1 evaluation per sample"}
ANN_MODEL = "stcb_ablation_ann"
DATASETS: dict[str, dict[str, Any]] = {
    "fashion-mnist": {"prefix": "fmnist-stcb", "dataset": None,
                      "label": "Fashion-MNIST"},
    "cifar10": {"prefix": "cifar10-stcb", "dataset": "cifar10-jpeg",
                "label": "CIFAR-10, cifar10-jpeg: a lossy JPEG (about q75) copy, close to but not exactly "
                         "comparable with published CIFAR-10 numbers"},
    "digits": {"prefix": "fmnist-stcb", "dataset": "digits",
               "label": "scikit-learn 8x8 digits (embedded), smoke test"},
}
SHIPPED_T = (1, 2, 4)


# ---------------------------------------------------------------- statistics and formatting








def ratio_str(stat: dict[str, Any]) -> str:
    return "-" if stat["mean"] is None else f"{stat['mean']:.2f}x"


# ---------------------------------------------------------------- recipes and the ANN model




def variant_recipe(dataset: str, gradient: str, timesteps: int) -> tuple[str, list[str]]:
    """The recipe name and the model overrides of one variant at ``timesteps`` steps (ANN: T = 1)."""
    if gradient not in GRADIENTS:
        raise ValueError(f"unknown gradient {gradient!r}; known: {', '.join(GRADIENTS)}")
    prefix = DATASETS[dataset]["prefix"]
    if gradient == "ann":
        return f"{prefix}-t1", [f"model.name={toml_str(ANN_MODEL)}"]
    if timesteps in SHIPPED_T:
        name, over = f"{prefix}-t{timesteps}", []
    else:
        name, over = f"{prefix}-t2", [f"model.timesteps={timesteps}"]
    if gradient == "surrogate":
        over.append('model.options.gradient="surrogate"')
    return name, over


def register_ann_model() -> None:
    """Register ``stcb_ablation_ann`` (once per process): a recipe's STCB net with ReLU conversions.

    Takes the STCB factory's options plus ``base`` (the STCB model name, default ``stcb_small``,
    or the one the recipe named; the benchmark sets it). Built at the recipe's ``timesteps``
    (1 for the ANN rows), every :class:`ConversionIF` replaced by ``nn.ReLU``."""
    from torch import nn

    from fewstep.layers.stcb import ConversionIF
    from fewstep.models import build_model
    from fewstep.models.registry import MODELS, register_model

    if ANN_MODEL in MODELS:
        return

    def stcb_ablation_ann(*, base: str = "stcb_small", **kwargs) -> nn.Module:
        model = build_model(base, **kwargs)
        parents = [(p, n, c) for p in model.modules() for n, c in p.named_children() if isinstance(c, ConversionIF)]
        if not parents:
            raise ValueError(f"model {base!r} has no STCB conversions to replace")
        for parent, name, _ in parents:
            setattr(parent, name, nn.ReLU())
        return model

    register_model(ANN_MODEL)(stcb_ablation_ann)


def data_overrides(args: argparse.Namespace, cache_dir: Path) -> list[str]:
    spec = DATASETS[args.dataset]
    out = []
    if spec["dataset"]:
        out.append(f"data.dataset={toml_str(spec['dataset'])}")
    if spec["dataset"] == "cifar10-jpeg":
        out.append(f"data.options.cache_dir={toml_str(cache_dir)}")  # never write into the data root
    if args.train_limit:
        out.append(f"data.train_limit={args.train_limit}")
    if args.test_limit:
        out.append(f"data.test_limit={args.test_limit}")
    return out


# ---------------------------------------------------------------- one run


def energy_summary(energy: dict[str, Any] | None, timesteps: int, snn: bool = True) -> dict[str, Any]:
    """The scalar part of ``report["energy"]`` plus the first-layer bound on the ratio (SNNs only)."""
    if not energy:
        return {"ratio": None}
    out = {k: energy.get(k) for k in ("ratio", "macs", "sops", "energy_pj", "ann_macs", "ann_energy_pj", "preset",
                                      "e_mac_pj", "e_ac_pj", "direct_encoding_repeats")}
    stem = sum(layer["ann_macs"] for layer in energy.get("layers", []) if layer["name"].startswith("stem"))
    repeats = timesteps if energy.get("direct_encoding_repeats", True) else 1
    out["first_layer_bound"] = energy["ann_macs"] / (stem * repeats) if stem and snn else None
    return out


def _run_summary(report: dict[str, Any], gradient: str, recipe_name: str, overrides: list[str],
                 run_dir: Path) -> dict[str, Any]:
    return ({"gradient": gradient, "recipe": recipe_name, "overrides": overrides, "accuracy": report["accuracy"],
             "accuracy_per_step": report["accuracy_per_step"], "train_seconds": report["train_seconds"],
             "energy": energy_summary(report.get("energy"), report["timesteps"], snn=gradient != "ann")}
            | report_fields(report, run_dir, "model"))


def run_variant(gradient: str, timesteps: int, seed: int, args: argparse.Namespace, out: Path, cache_dir: Path,
                log) -> dict[str, Any]:
    recipe_name, model_over = variant_recipe(args.dataset, gradient, timesteps)
    if gradient == "ann":
        from fewstep.config import load_recipe

        base_model = load_recipe(recipe_name).model.name  # the STCB net the ANN copies
        model_over = model_over + [f"model.options.base={toml_str(base_model)}"]
    base = model_over + data_overrides(args, cache_dir) + [f"train.seed={seed}"]
    if args.epochs:
        base.append(f"train.epochs={args.epochs}")
    t_dir = "ANN" if gradient == "ann" else f"T{timesteps}"
    run_dir = out / "runs" / gradient / t_dir / f"seed{seed}"
    report = train_recipe(recipe_name, base, run_dir, args, log)
    return _run_summary(report, gradient, recipe_name, base, run_dir)


# ---------------------------------------------------------------- tables


def _energy_fields(runs: list[dict]) -> dict[str, Any]:
    """The ANN/SNN energy ratio and its first-layer bound."""
    return {"energy_ratio": mean_std([r["energy"]["ratio"] for r in runs]),
            "first_layer_bound": mean_std([r["energy"].get("first_layer_bound") for r in runs])}


def summarise(results: dict[str, dict[str, dict[str, dict]]]) -> dict[str, dict[str, dict]]:
    return summarise_runs(results, _energy_fields)


def markdown_table(results: dict, summary: dict, seeds: Sequence[int], meta: dict[str, Any]) -> str:
    epochs = f"{meta['epochs']} epoch{'s' if meta['epochs'] != 1 else ''}" if meta["epochs"] else "recipe epochs"
    preset = meta.get("energy_preset") or "the recipe's preset"
    note = (f"Accuracy (%) at T on {meta['test_samples']} test images, trained on {meta['train_samples']} "
            f"({epochs}); device {meta['device']}, {meta['threads']} torch thread(s); mean ± sample std over "
            "seeds. Energy ratio = ANN-equivalent energy / SNN energy (`fewstep.energy`, "
            f"{preset}, first 256 test images; > 1: the SNN is cheaper), mean over seeds; the ANN row is "
            "1.00x by construction. Train s = training + per-epoch evaluation, mean over seeds.")
    lines = [f"### STCB: equivalent gradient vs. surrogate BPTT vs. ANN ({meta['dataset_label']})", "", note, ""]
    head = ["gradient", "T", *[f"seed {s}" for s in seeds], "mean ± std", "mean per step t = 1..T",
            "ANN/SNN energy", "mean train s"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for gradient, per_t in results.items():
        for t, per_seed in per_t.items():
            s = summary[gradient][t]
            cells = [pct(per_seed[str(seed)]["accuracy"]) if str(seed) in per_seed else "-" for seed in seeds]
            steps = " / ".join(pct(st["mean"]) for st in s["accuracy_per_step"])
            lines.append("| " + " | ".join([f"`{gradient}`", t, *cells, pct_stat(s["accuracy"]), steps,
                                            ratio_str(s["energy_ratio"]), f"{s['train_seconds']['mean']:.1f}"])
                         + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=sorted(DATASETS), default="fashion-mnist",
                   help="fashion-mnist (default), cifar10 (the cifar10-jpeg lossy copy) or digits (offline smoke test)")
    p.add_argument("--timesteps", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=0, help="overrides train.epochs (default 0: the recipe's)")
    p.add_argument("--train-limit", type=int, default=0, help="data.train_limit: first N training images (0 = all)")
    p.add_argument("--test-limit", type=int, default=0, help="data.test_limit (0 = all)")
    p.add_argument("--gradients", nargs="+", choices=GRADIENTS, default=list(GRADIENTS),
                   help="variants to train (default: all three; ann is trained once per seed)")
    p.add_argument("--data-root", default=os.environ.get("FEWSTEP_DATA"),
                   help="folder holding fashion-mnist/ or cifar10-jpeg/ (default $FEWSTEP_DATA)")
    p.add_argument("--out", type=Path, default=Path("runs/stcb_ablation"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default $FEWSTEP_THREADS or torch's)")
    p.add_argument("--reuse", action="store_true", help="keep finished runs whose report has the same config")
    p.add_argument("--keep-checkpoints", action="store_true")
    args = p.parse_args(argv)
    if args.dataset != "digits" and not args.data_root:
        p.error("no data root: pass --data-root (the folder holding fashion-mnist/ or cifar10-jpeg/) "
                "or set FEWSTEP_DATA")
    if args.epochs < 0 or args.train_limit < 0 or args.test_limit < 0:
        p.error("--epochs, --train-limit and --test-limit must be >= 0")
    if any(t < 1 for t in args.timesteps):
        p.error("--timesteps must be >= 1")
    args.gradients = list(dict.fromkeys(args.gradients))
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    register_ann_model()
    out: Path = args.out
    cache_dir = (out / "cache").resolve()

    def done(gradient: str, t_key: str, seed: int, r: dict[str, Any], results: dict) -> None:
        # finished runs so far, in case the sweep is stopped (rerun with --reuse to go on)
        (out / "results.partial.json").write_text(json.dumps({"results": results}, indent=2) + "\n")
        print(f"[done] {gradient} T={t_key} seed {seed}: accuracy {pct(r['accuracy'])} %, energy ratio "
              f"{r['energy']['ratio'] if r['energy']['ratio'] is None else round(r['energy']['ratio'], 2)}"
              f" ({r['train_seconds']:.1f} s)", file=sys.stderr, flush=True)

    cells = [(gradient, "ANN" if gradient == "ann" else str(t), t, seed) for gradient in args.gradients
             for t in ([1] if gradient == "ann" else args.timesteps) for seed in args.seeds]
    results, first, started, wall, threads = run_sweep(
        args, out, cells, lambda gradient, t, seed, log: run_variant(gradient, t, seed, args, out, cache_dir, log),
        done)
    spec = DATASETS[args.dataset]
    meta = run_meta("stcb_ablation.py", argv, started, wall, threads, args) | {
        "dataset_choice": args.dataset, "dataset": first["dataset"],
        "dataset_label": spec["label"], "lossy_jpeg_copy": first["dataset"] == "cifar10-jpeg",
        "timesteps": list(args.timesteps), "gradients": list(args.gradients),
        "epochs": args.epochs or first["epochs"], "epochs_overridden": bool(args.epochs),
        "train_limit": args.train_limit, "test_limit": args.test_limit,
        "train_samples": first["train_samples"], "test_samples": first["test_samples"],
        "energy_preset": first["energy"].get("preset"),
        "recipes": {g: {("ANN" if g == "ann" else str(t)): variant_recipe(args.dataset, g, t)[0]
                        for t in ([1] if g == "ann" else args.timesteps)} for g in args.gradients},
        "labels": {g: GRADIENT_LABELS[g] for g in args.gradients}}
    summary = summarise(results)
    payload = write_results(out, meta, results, summary, markdown_table(results, summary, args.seeds, meta), wall)
    (out / "results.partial.json").unlink(missing_ok=True)
    return payload


if __name__ == "__main__":
    main()
