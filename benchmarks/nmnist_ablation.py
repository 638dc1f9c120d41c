"""Ablation of STC + SCB + MT-LIF on real N-MNIST (``shared/methods.md`` section 1).

Variants, each trained at every ``T`` in ``--timesteps`` and every seed in ``--seeds``:

* ``stc``: STC + SCB (exp synapse, learnable) + MT-LIF: the shipped recipes ``nmnist-stc-t1``,
  ``nmnist-stc-t2``, ``nmnist-stc-t4`` (MT-LIF K = 3 at T = 1, else K = 2). Any other T uses
  ``nmnist-stc-t2`` with ``model.timesteps`` / ``data.options.timesteps`` overridden.
* ``lif``: the same network and STC input, no synapse (plain conv + BN) and plain LIF:
  ``nmnist-lif-t2``, with ``model.timesteps=T`` and ``data.options.timesteps=T`` for T != 2.
* ``stc+pretrain`` (opt-in): per seed, pretrain ``saccade-mnist-stc-t{T}`` on the first
  ``--pretrain-train-limit`` MNIST images shown to fewstep's saccade DVS emulator
  (``--pretrain-epochs``), then fine-tune the ``stc`` recipe from those weights
  (``train.init_checkpoint``) for ``--epochs`` on the real data.

Every run uses the Python API (:func:`fewstep.config.load_recipe` + :func:`fewstep.train.train`,
``train.epochs`` = ``--epochs``, ``train.seed`` = the seed) on ``<data root>/nmnist-small`` (900
train / 100 test recordings; ``--data-root``, default ``$FEWSTEP_DATA``). The test set is fixed:
the seed changes initialisation, data order and augmentation. **With 100 test samples one sample
is one accuracy point**: differences of a few points are within the noise (the binomial standard
error of one run at 97 % is 1.7 points).

Protocols (``--protocol``):

* ``val`` (default): the recipes as shipped. 100 of the 900 training recordings are held out as a
  validation split (``data.val_size``); the augmentation was chosen on the validation split only
  (the 2-px shift of ``data.crop_padding`` won over the event-level shift, drop and jitter of
  ``[data.augment]``, :mod:`fewstep.events.augment`, which stays available); the model is the one
  after the last of ``--epochs`` epochs and the test split is scored once, with it. The table shows
  the validation accuracy of that model next to its test accuracy.
* ``earlier``: the protocol of the 2026-11-27 table (``data.val_size=0``, no event augmentation,
  ``data.crop_padding=2``): trained on all 900, per-epoch accuracy on the test split, the last
  epoch's reported. Kept to reproduce that table.

``--dataset`` substitutes emulated data, which has no recordings to augment: ``[data.augment]`` is
cleared and ``--val-size`` defaults to 0 there (pass it to hold out a validation split).

Recorded per run: accuracy at T (``report["accuracy"]``), accuracy at every step t = 1..T,
``train_seconds`` (training + per-epoch evaluation, as the engine reports it), sample counts and
the overrides used. Printed: a markdown table (rows variant x T; per-seed accuracies, mean ± sample
std, mean train seconds), also written to ``<out>/results.md``; every number goes to
``<out>/results.json``. Run directories (reports, plots) are under ``<out>/runs/``; checkpoints are
deleted after each run unless ``--keep-checkpoints``. Library logs go to ``<out>/log.txt``. The
event currents are cached in ``--cache-dir`` (default ``<out>/cache``), never in the data root.

Run: ``python benchmarks/nmnist_ablation.py --data-root ../shared/data [--seeds 0 1 2]
[--timesteps 1 2 4] [--epochs 30] [--variants stc lif] [--protocol val] [--out runs/nmnist_ablation]``
(``FEWSTEP_THREADS`` or ``--threads`` sets torch's threads; ``--reuse`` keeps finished runs whose
report matches). ``--dataset saccade-digits --train-limit 64 --test-limit 32`` is an offline smoke
test (no real data needed).
"""

from __future__ import annotations

import argparse
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

VARIANTS = ("stc", "lif", "stc+pretrain")
DEFAULT_VARIANTS = ("stc", "lif")
STC_RECIPES = {1: "nmnist-stc-t1", 2: "nmnist-stc-t2", 4: "nmnist-stc-t4"}
LIF_RECIPE = "nmnist-lif-t2"
PRETRAIN_RECIPES = {1: "saccade-mnist-stc-t1", 2: "saccade-mnist-stc-t2", 4: "saccade-mnist-stc-t4"}
VARIANT_LABELS = {"stc": "STC + SCB + MT-LIF", "lif": "STC + plain conv + LIF (no SCB)",
                  "stc+pretrain": "STC + SCB + MT-LIF, saccade-MNIST pretrained"}


# ---------------------------------------------------------------- statistics and formatting








# ---------------------------------------------------------------- recipes




def timestep_overrides(timesteps: int) -> list[str]:
    return [f"model.timesteps={timesteps}", f"data.options.timesteps={timesteps}"]


def variant_recipe(variant: str, timesteps: int) -> tuple[str, list[str]]:
    """The recipe name and the T overrides (if any) of one variant at ``timesteps`` steps."""
    if variant in ("stc", "stc+pretrain"):
        if timesteps in STC_RECIPES:
            return STC_RECIPES[timesteps], []
        return STC_RECIPES[2], timestep_overrides(timesteps)
    if variant == "lif":
        return LIF_RECIPE, ([] if timesteps == 2 else timestep_overrides(timesteps))
    raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")


def protocol_overrides(args: argparse.Namespace) -> list[str]:
    """The overrides of ``--protocol`` / ``--val-size`` / ``--dataset`` (see the module docstring)."""
    if args.protocol == "earlier":
        return ["data.val_size=0", "data.augment={}", "data.crop_padding=2"]
    out = []
    if args.dataset:  # emulated stand-in data: no recordings to augment
        out.append("data.augment={}")
    val = args.val_size if args.val_size is not None else (0 if args.dataset else None)
    if val is not None:
        out.append(f"data.val_size={val}")
    return out


def data_overrides(args: argparse.Namespace, cache_dir: Path, pretrain: bool = False) -> list[str]:
    """Dataset switch, sample limits (applied before any event is read or emulated) and the cache."""
    out = [f"data.options.cache_dir={toml_str(cache_dir)}"]
    if pretrain:
        if args.pretrain_dataset:
            out.append(f"data.dataset={toml_str(args.pretrain_dataset)}")
        out += [f"data.options.train_limit={args.pretrain_train_limit}",
                f"data.options.test_limit={args.pretrain_test_limit}"]
        return out
    if args.dataset:
        out.append(f"data.dataset={toml_str(args.dataset)}")
    out += protocol_overrides(args)
    if args.train_limit:
        out.append(f"data.options.train_limit={args.train_limit}")
    if args.test_limit:
        out.append(f"data.options.test_limit={args.test_limit}")
    return out


# ---------------------------------------------------------------- one run


def _run_summary(report: dict[str, Any], recipe_name: str, overrides: list[str], run_dir: Path) -> dict[str, Any]:
    val = report.get("val_accuracy_per_step")
    return ({"recipe": recipe_name, "overrides": overrides, "accuracy": report["accuracy"],
             "val_accuracy": val[-1] if val else None, "val_accuracy_per_step": val,
             "val_samples": report.get("val_samples", 0),
             "accuracy_per_step": report["accuracy_per_step"], "train_seconds": report["train_seconds"]}
            | report_fields(report, run_dir, "neuron"))


def run_variant(variant: str, timesteps: int, seed: int, args: argparse.Namespace, out: Path, cache_dir: Path,
                log) -> dict[str, Any]:
    recipe_name, t_over = variant_recipe(variant, timesteps)
    base = t_over + data_overrides(args, cache_dir) + [f"train.epochs={args.epochs}", f"train.seed={seed}"]
    run_dir = out / "runs" / variant.replace("+", "_") / f"T{timesteps}" / f"seed{seed}"
    extra: dict[str, Any] = {}
    if variant == "stc+pretrain":
        pre_name = PRETRAIN_RECIPES.get(timesteps, PRETRAIN_RECIPES[2])
        pre_over = ([] if timesteps in PRETRAIN_RECIPES else timestep_overrides(timesteps))
        pre_over += data_overrides(args, cache_dir, pretrain=True)
        pre_over += [f"train.epochs={args.pretrain_epochs}", f"train.seed={seed}"]
        pre_dir = run_dir.parent / f"seed{seed}-pretrain"
        pre_report = train_recipe(pre_name, pre_over, pre_dir, args, log, keep_checkpoint=True)
        extra["pretrain"] = _run_summary(pre_report, pre_name, pre_over, pre_dir)
        base = base + [f"train.init_checkpoint={toml_str(pre_dir / 'last.pt')}"]
        report = train_recipe(recipe_name, base, run_dir, args, log)
        if not args.keep_checkpoints:
            for name in ("last.pt", "last.pt.prev"):
                (pre_dir / name).unlink(missing_ok=True)
    else:
        report = train_recipe(recipe_name, base, run_dir, args, log)
    summary = _run_summary(report, recipe_name, base, run_dir)
    summary.update(extra)
    return summary


# ---------------------------------------------------------------- tables


def _extra_fields(runs: list[dict]) -> dict[str, Any]:
    """The validation accuracy, and the pre-training's accuracy and time where a variant has one."""
    extra = {"val_accuracy": mean_std([r.get("val_accuracy") for r in runs])}
    if runs and "pretrain" in runs[0]:
        extra["pretrain_accuracy"] = mean_std([r["pretrain"]["accuracy"] for r in runs])
        extra["pretrain_seconds"] = mean_std([r["pretrain"]["train_seconds"] for r in runs])
    return extra


def summarise(results: dict[str, dict[str, dict[str, dict]]]) -> dict[str, dict[str, dict]]:
    return summarise_runs(results, _extra_fields)


def markdown_table(results: dict, summary: dict, seeds: Sequence[int], meta: dict[str, Any]) -> str:
    n_train, n_test, n_val = meta.get("train_samples"), meta.get("test_samples"), meta.get("val_samples", 0)
    epochs = f"{meta['epochs']} epoch{'s' if meta['epochs'] != 1 else ''}"
    digits = 1 if n_test <= 1000 else 2  # enough to show one test sample
    if n_val:
        how = (f"trained on {n_train}, {n_val} more held out for validation; the augmentation was chosen on "
               "validation only, the model is the last epoch's and the test set is scored once")
    else:
        how = f"trained on {n_train}; no validation split, the last epoch's test accuracy"
    note = (f"Accuracy (%) at T on the test set of {n_test} samples ({how}): "
            f"**with {n_test} test samples, 1 sample = {100 / n_test:.2g} accuracy point"
            f"{'' if n_test == 100 else 's'}**; the binomial standard error of one run at 97 % is "
            f"{100 * (0.97 * 0.03 / n_test) ** 0.5:.1f} points. {epochs}, device {meta['device']}, {meta['threads']} "
            "torch thread(s); mean ± sample std over seeds; train s = training + per-epoch evaluation, mean over "
            "seeds.")
    lines = [f"### N-MNIST ablation: STC + SCB + MT-LIF vs. plain LIF without SCB ({meta['dataset_label']})", "",
             note, ""]
    head = ["variant", "T", *[f"seed {s}" for s in seeds], "mean ± std", "mean per step t = 1..T"]
    if n_val:
        head.append(f"val T ({n_val} samples), mean")
    head.append("mean train s")
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for variant, per_t in results.items():
        for t, per_seed in per_t.items():
            s = summary[variant][t]
            cells = [pct(per_seed[str(seed)]["accuracy"], digits) if str(seed) in per_seed else "-" for seed in seeds]
            steps = " / ".join(pct(st["mean"], digits) for st in s["accuracy_per_step"])
            row = [f"`{variant}`", t, *cells, pct_stat(s["accuracy"], digits), steps]
            if n_val:
                row.append(pct_stat(s["val_accuracy"], digits))
            lines.append("| " + " | ".join([*row, f"{s['train_seconds']['mean']:.1f}"]) + " |")
    if any("pretrain_accuracy" in s for per_t in summary.values() for s in per_t.values()):
        lines += ["", (f"`stc+pretrain`: pretrained for {meta['pretrain_epochs']} epoch(s) on "
                       f"{meta['pretrain_train_limit']} emulated images ({meta['pretrain_dataset']}), then fine-tuned "
                       "as above; pretraining accuracy on its own test images and time (not in `mean train s`):")]
        for variant, per_t in summary.items():
            for t, s in per_t.items():
                if "pretrain_accuracy" in s:
                    lines.append(f"T = {t}: pretrain accuracy {pct_stat(s['pretrain_accuracy'], 1)} %, "
                                 f"{s['pretrain_seconds']['mean']:.1f} s per seed")
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--timesteps", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--epochs", type=int, default=30, help="overrides train.epochs (default 30, the recipes')")
    p.add_argument("--protocol", choices=("val", "earlier"), default="val",
                   help="val: the recipes' validation split and event augmentation (default); earlier: the "
                        "2026-11-27 protocol (no validation split, no event augmentation, crop_padding 2)")
    p.add_argument("--val-size", type=int, default=None,
                   help="data.val_size (default: the recipe's, 100; 0 with --dataset)")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(DEFAULT_VARIANTS))
    p.add_argument("--data-root", default=os.environ.get("FEWSTEP_DATA"),
                   help="folder holding nmnist-small/ (default $FEWSTEP_DATA)")
    p.add_argument("--out", type=Path, default=Path("runs/nmnist_ablation"))
    p.add_argument("--cache-dir", type=Path, default=None, help="event-current cache (default <out>/cache)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default $FEWSTEP_THREADS or torch's)")
    p.add_argument("--dataset", default="", help="replace data.dataset (e.g. saccade-digits for an offline smoke test)")
    p.add_argument("--train-limit", type=int, default=0, help="data.options.train_limit (0 = all)")
    p.add_argument("--test-limit", type=int, default=0, help="data.options.test_limit (0 = all)")
    p.add_argument("--pretrain-dataset", default="", help="replace the pretraining dataset (default saccade-mnist)")
    p.add_argument("--pretrain-train-limit", type=int, default=10000)
    p.add_argument("--pretrain-test-limit", type=int, default=1000)
    p.add_argument("--pretrain-epochs", type=int, default=2)
    p.add_argument("--reuse", action="store_true", help="keep finished runs whose report has the same config")
    p.add_argument("--keep-checkpoints", action="store_true")
    args = p.parse_args(argv)
    if not args.dataset and not args.data_root:
        p.error("no data root: pass --data-root (the folder holding nmnist-small/) or set FEWSTEP_DATA")
    if args.epochs < 1 or args.pretrain_epochs < 1:
        p.error("--epochs and --pretrain-epochs must be >= 1")
    if any(t < 1 for t in args.timesteps):
        p.error("--timesteps must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out: Path = args.out
    cache_dir = (args.cache_dir or out / "cache").resolve()

    def done(variant: str, t: str, seed: int, r: dict[str, Any], results: dict) -> None:
        print(f"[done] {variant} T={t} seed {seed}: accuracy {pct(r['accuracy'], 1)} % "
              f"({r['train_seconds']:.1f} s)", file=sys.stderr, flush=True)

    cells = [(variant, str(t), t, seed) for variant in args.variants for t in args.timesteps for seed in args.seeds]
    results, first, started, wall, threads = run_sweep(
        args, out, cells, lambda variant, t, seed, log: run_variant(variant, t, seed, args, out, cache_dir, log), done)
    meta = run_meta("nmnist_ablation.py", argv, started, wall, threads, args) | {
        "timesteps": list(args.timesteps), "variants": list(args.variants), "epochs": args.epochs,
        "dataset": first["dataset"],
        "dataset_label": ("real N-MNIST subset, nmnist-small" if first["dataset"] == "nmnist"
                          else f"dataset {first['dataset']} with the N-MNIST recipes"),
        "train_samples": first["train_samples"], "test_samples": first["test_samples"],
        "val_samples": first.get("val_samples", 0), "protocol": args.protocol,
        "recipes": {v: {str(t): variant_recipe(v, t)[0] for t in args.timesteps} for v in args.variants},
        "pretrain_dataset": args.pretrain_dataset or "saccade-mnist", "pretrain_epochs": args.pretrain_epochs,
        "pretrain_train_limit": args.pretrain_train_limit, "pretrain_test_limit": args.pretrain_test_limit}
    summary = summarise(results)
    return write_results(out, meta, results, summary, markdown_table(results, summary, args.seeds, meta), wall)


if __name__ == "__main__":
    main()
