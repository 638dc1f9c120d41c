"""``fewstep eval --cutoff``: the anytime-inference sweep as part of evaluating a checkpoint.

:func:`register_eval_options` adds the options to the ``eval`` sub-parser; :func:`run_cutoff`
runs :func:`fewstep.infer.cutoff.cutoff_sweep` on the checkpoint's test split, adds the result
as ``report["cutoff"]``, rewrites ``eval_report.json`` and writes ``cutoff.png`` beside it.

**Nothing is chosen on the test split.** The operating point's ``eps`` (and the margin
thresholds of ``--margin``) are chosen on the split named by ``--calibrate-on``:

* ``val`` (default): the validation split the recipe held out of the training data
  (``data.val_size``). A recipe without one is refused with a clear error, because a split carved
  out now would be data the model was trained on: retrain with ``--set data.val_size=N``, or
  choose ``train`` knowingly.
* ``train``: the training split (without augmentation). Never the test data, but the model has
  fit it, so its confidences are optimistic: the chosen ``eps`` tends to stop too early.

The test split is then scored at that ``eps``: its accuracy, mean steps and speed-up are what
the sweep reports.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

# No torch import here: this module is imported when the command line parser is built.
__all__ = ["CALIBRATION_SPLITS", "calibration_split", "format_cutoff", "register_eval_options", "run_cutoff"]

CALIBRATION_SPLITS = ("val", "train")
CUTOFF_PLOT_NAME = "cutoff.png"  # written by run_cutoff beside eval_report.json


def eps_option(text: str) -> float:
    """One ``--eps`` value, checked when the command line is parsed (the sweep would reject it
    only after the whole evaluation): a number in [0, 1] (0 never stops early, 1 always stops at t = 1)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= v <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be in [0, 1] (stop when max softmax > 1 - eps), got {text}")
    return v


def target_drop_option(text: str) -> float:
    """``--target-drop``: percentage points in [0, 100], checked when the command line is parsed."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected percentage points in [0, 100], got {text!r}") from None
    if not (math.isfinite(v) and 0.0 <= v <= 100.0):
        raise argparse.ArgumentTypeError(f"must be in [0, 100] percentage points, got {text}")
    return v


def register_eval_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--cutoff``, ``--eps``, ``--target-drop``, ``--calibrate-on``, ``--margin`` and ``--no-timing``."""
    g = parser.add_argument_group("anytime inference (softmax cutoff)")
    g.add_argument("--cutoff", action="store_true",
                   help="also sweep the softmax cutoff: accuracy against mean stopping step, speed-up")
    g.add_argument("--eps", type=eps_option, nargs="+", default=None, metavar="EPS",
                   help="cutoff eps values: stop a sample when max softmax > 1 - eps (default: 13 values "
                        "from 0 to 0.9, fewstep.infer.cutoff.DEFAULT_EPS)")
    g.add_argument("--target-drop", type=target_drop_option, default=0.5, metavar="POINTS",
                   help="accuracy drop allowed at the reported speed-up, in percentage points (default 0.5)")
    g.add_argument("--calibrate-on", choices=CALIBRATION_SPLITS, default="val",
                   help="split on which eps (and the --margin thresholds) are chosen, never the test split: val "
                        "(default; the recipe's data.val_size hold-out, refused if it has none) or train")
    g.add_argument("--margin", action="store_true",
                   help="also the top-1/top-2 margin cutoff at confidence 1 - eps, thresholds calibrated on the "
                        "--calibrate-on split (implies --cutoff; printed beside the softmax columns)")
    g.add_argument("--no-timing", action="store_true", help="skip the wall-clock comparison")


def format_cutoff(sweep: dict[str, Any]) -> str:
    """A short text table of a sweep: accuracy and mean steps of the softmax cutoff per ``eps``
    and, when the sweep has a ``margin`` part (``--margin``), those of the margin cutoff at
    confidence ``1 - eps`` in two more columns; then the full-T, oracle, operating-point and
    wall-clock lines."""
    margin = sweep.get("margin")
    head = f"  {'eps':>8}  {'accuracy':>9}  {'mean steps':>10}"
    if margin:
        head += f"  {'margin acc':>10}  {'margin steps':>12}"
    lines = [head]
    for i, (e, a, s) in enumerate(zip(sweep["eps"], sweep["accuracy"], sweep["mean_steps"])):
        row = f"  {e:>8.3g}  {100 * a:>8.2f}%  {s:>10.3f}"
        if margin:
            row += f"  {100 * margin['accuracy'][i]:>9.2f}%  {margin['mean_steps'][i]:>12.3f}"
        lines.append(row)
    if margin:
        on = margin.get("calibrated_on")
        lines.append("  margin: stop when the top-1/top-2 logit margin passes the step's threshold for confidence "
                     f"1 - eps{f', calibrated on {on}' if on else ''}")
    op = sweep["operating_point"]
    lines.append(f"  full T={sweep['timesteps']}: {100 * sweep['full_accuracy']:.2f} %; oracle: "
                 f"{100 * sweep['oracle_accuracy']:.2f} % at {sweep['oracle_mean_steps']:.3f} steps")
    if op is not None:
        split = op["chosen_on"]
        lines.append(f"  eps={op['eps']} chosen on {split} (drop {100 * op[f'{split}_drop']:.2f} <= "
                     f"{100 * sweep['target_drop']:.2f} points there); on this split: speed-up "
                     f"{sweep['speedup']:.2f}x, {100 * op['accuracy']:.2f} %, {op['mean_steps']:.3f} steps, "
                     f"drop {100 * op['drop']:.2f} points")
    wc = sweep.get("wall_clock")
    if wc:
        lines.append(f"  wall clock: cutoff {wc['cutoff_seconds']:.4f} s, all steps {wc['full_stepwise_seconds']:.4f} s "
                     f"(step by step) / {wc['full_multistep_seconds']:.4f} s (multi-step): "
                     f"{wc['speedup_vs_stepwise']:.2f}x / {wc['speedup_vs_multistep']:.2f}x")
    return "\n".join(lines)


def calibration_split(splits, name: str, recipe_name: str = "the recipe"):
    """The split ``--calibrate-on NAME`` chooses on: ``splits.val`` or ``splits.train`` (never
    the test split); :class:`~fewstep.errors.ConfigError` for ``val`` when the recipe holds out none."""
    from ..errors import ConfigError

    if name == "val":
        if splits.val is None:
            raise ConfigError("--calibrate-on", f"{recipe_name} holds out no validation split (data.val_size = 0), "
                              "and eps must not be chosen on the test split: retrain with --set data.val_size=N, "
                              "or pass --calibrate-on train (the training data: never the test, but optimistic)")
        return splits.val
    if name == "train":
        return splits.train
    raise ConfigError("--calibrate-on", f"must be one of {', '.join(CALIBRATION_SPLITS)}, got {name!r}")


def run_cutoff(args: argparse.Namespace, report: dict[str, Any], log=print, trained: tuple | None = None) -> dict[str, Any]:
    """Run the sweep for ``args.checkpoint`` and add it to ``report`` (returned, also rewritten
    to ``eval_report.json`` in ``args.out`` or beside the checkpoint, with ``cutoff.png``).

    ``trained`` is an already loaded ``(recipe, model, splits, device)`` from
    :func:`fewstep.evaluate.load_trained`; by default the checkpoint is loaded again."""
    from ..evaluate import EVAL_REPORT_NAME, eval_output_dir, load_trained
    from ..plots import plot_cutoff
    from ..report import write_json_atomic
    from ..train.data_feed import DeviceFeed
    from .cutoff import cutoff_sweep

    if getattr(args, "target_drop", 0.5) < 0:
        from ..errors import ConfigError

        raise ConfigError("--target-drop", f"must be >= 0 percentage points, got {args.target_drop}")
    recipe, model, splits, dev = trained or load_trained(args.checkpoint, getattr(args, "device", "auto"),
                                                         getattr(args, "data_root", None))
    name = getattr(args, "calibrate_on", "val")
    feed = DeviceFeed(splits.test, recipe.data.eval_batch_size, dev, train=False)
    choose_on = DeviceFeed(calibration_split(splits, name, recipe.name), recipe.data.eval_batch_size, dev, train=False)
    sweep = cutoff_sweep(model, feed, getattr(args, "eps", None), target_drop=getattr(args, "target_drop", 0.5) / 100.0,
                         choose_on=choose_on, choose_on_name=name,
                         calibration_feed=choose_on if getattr(args, "margin", False) else None,
                         timing=not getattr(args, "no_timing", False))
    if "margin" in sweep:
        sweep["margin"]["calibrated_on"] = name
    report["cutoff"] = sweep
    out = eval_output_dir(args.checkpoint, getattr(args, "out", None))
    out.mkdir(parents=True, exist_ok=True)
    plot_cutoff({recipe.name: sweep}, out / CUTOFF_PLOT_NAME)
    write_json_atomic(report, out / EVAL_REPORT_NAME)
    log(format_cutoff(sweep))
    return report
