"""Two of fewstep's methods on the embedded scikit-learn digits, over several seeds.

* **conversion** (``docs/methods/conversion.md``): per seed, train ``digits-dnn``, convert it with
  every method (``dist``, ``max``, ``p99.9``, ``clip``) at T = 2 and evaluate the conversions at
  T = 1, 2 and 4 (:func:`fewstep.convert.converter.convert_checkpoint`), then fine-tune the
  ``dist`` T = 2 SNN with ``digits-dnn-finetune-t2`` (``train.init_checkpoint``). Recorded: DNN
  accuracy, converted accuracy per method and T, fine-tuned accuracy, and the ANN/SNN energy
  ratio (with its first-layer bound) of each T = 2 conversion and of the fine-tuned SNN.
* **anytime** (``docs/methods/anytime.md``): per seed, train ``digits-tet-t8`` and
  ``digits-tet-str-t8`` and sweep the softmax cutoff (:func:`fewstep.infer.cutoff.cutoff_sweep`,
  no wall-clock timing). The operating point's ``eps`` is **chosen on the validation split** the
  recipes hold out of the training data (``data.val_size = 300``; the fewest mean steps at
  <= 0.5 point drop there), then the test split is scored at that ``eps``: recorded are the test
  accuracy at T, at t = 1 and at every step, the test accuracy, mean steps and speed-up
  ``T / mean steps`` at the chosen ``eps`` (the test drop may exceed 0.5 points), and the
  validation numbers it was chosen on. Nothing is chosen on the test split: the recipes train
  for a fixed number of epochs and the last epoch is scored.
  ``--anytime-data events`` runs the same comparison on emulated event data instead
  (``saccade-digits-tet-t8`` and ``saccade-digits-tet-str-t8``: the digits through the saccade
  DVS emulator, STC to T = 8; 359 test recordings) and then runs only this benchmark unless
  ``--only`` says otherwise; its default ``--out`` is ``runs/anytime_events``. ``--timing`` also
  measures wall-clock time of the step-by-step engine at the operating point against the same
  engine running all T steps and against the multi-step forward (``cutoff_sweep(timing=True)``,
  best of ``--timing-repeats`` runs over the test set, batch ``data.eval_batch_size``) and reports
  those speed-ups; on a shared machine they are rough.

Every recipe runs with its own epochs (``--quick`` cuts them to a smoke test) and ``train.seed``
set to the seed. The digits test split (359 images) is fixed; the seed changes initialisation,
data order, augmentation and the calibration batches. Tables give mean ± sample std over seeds
(std 0 for one seed) and the per-seed values, in percent; every number, the per-step accuracies
and the sweep curves go to ``<out>/results.json`` (tables also to ``<out>/results.md``) and the
runs' checkpoints and reports under ``<out>/conversion`` and ``<out>/anytime``; library logs go to
``<out>/log.txt``.

Run: ``python benchmarks/digits_methods.py [--seeds 0 1 2] [--out runs/digits_methods]
[--only conversion|anytime] [--anytime-data digits|events] [--timing [--timing-repeats 5]] [--quick]
[--device cpu]`` (``FEWSTEP_THREADS`` sets torch's threads).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import mean_std

CONVERSION_RECIPE = "digits-dnn"
FINETUNE_RECIPE = "digits-dnn-finetune-t2"
# --conversion-data: (DNN recipe, fine-tuning recipe); fashion-mnist reads <data root>/fashion-mnist
CONVERSION_DATA = {"digits": (CONVERSION_RECIPE, FINETUNE_RECIPE),
                   "fashion-mnist": ("fmnist-vgg-dnn", "fmnist-convert-finetune-t2")}
ANYTIME_RECIPES = ("digits-tet-t8", "digits-tet-str-t8")
EVENT_ANYTIME_RECIPES = ("saccade-digits-tet-t8", "saccade-digits-tet-str-t8")
ANYTIME_DATA = {"digits": ANYTIME_RECIPES, "events": EVENT_ANYTIME_RECIPES}
DEFAULT_OUT = {"digits": Path("runs/digits_methods"), "events": Path("runs/anytime_events")}
ACCURACY_UNIT = {"digits": "fraction of the 360 digits test images",
                 "events": "fraction of the 359 saccade-digits test recordings (160 with --quick)"}
METHODS = ("dist", "max", "p99.9", "clip")
TIMESTEPS = 2
EVAL_TIMESTEPS = (1, 2, 4)
TARGET_DROP = 0.005  # 0.5 accuracy points
# --quick: epochs per recipe and conversion calibration batches (a smoke test, not a measurement)
QUICK_EPOCHS = {CONVERSION_RECIPE: 2, FINETUNE_RECIPE: 1, **{r: 2 for r in ANYTIME_RECIPES},
                **{r: 1 for r in EVENT_ANYTIME_RECIPES}}
QUICK_CALIB_BATCHES = 4
# --quick on event recipes: emulate and train on a prefix of each split only
QUICK_EVENT_LIMITS = ["data.options.train_limit=320", "data.options.test_limit=160", "data.val_size=64"]


# ---------------------------------------------------------------- statistics and formatting




def pct(stat: dict[str, Any] | float | None, digits: int = 2) -> str:
    """``mean ± std`` (or a single value) of fractions, in percent."""
    return num(stat, digits, scale=100)


def num(stat: dict[str, Any] | float | None, digits: int = 2, suffix: str = "", scale: float = 1) -> str:
    """``mean ± std`` (or a single value) times ``scale``, ``-`` when missing."""
    if stat is None:
        return "-"
    if isinstance(stat, dict):
        if stat["mean"] is None:
            return "-"
        return f"{scale * stat['mean']:.{digits}f} ± {scale * stat['std']:.{digits}f}{suffix}"
    return f"{scale * stat:.{digits}f}{suffix}"


def table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- runs


def _train(recipe_name: str, overrides: list[str], out: Path, device: str, log: Callable[[str], None],
           data_root: Path | None = None) -> dict:
    from fewstep.config import load_recipe
    from fewstep.train.engine import train

    recipe = load_recipe(recipe_name, overrides)
    # Every call of this benchmark trains its runs again into the same folders (it reuses none),
    # so replacing an earlier run there is the intent, not an accident.
    return train(recipe, out, device=device, data_root=data_root, progress=False, log=log, overwrite=True)


def _epochs(recipe: str, quick: bool) -> list[str]:
    if not quick:
        return []
    limits = QUICK_EVENT_LIMITS if recipe in EVENT_ANYTIME_RECIPES else []
    return [f"train.epochs={QUICK_EPOCHS.get(recipe, 1)}", *limits]


def run_conversion_seed(seed: int, out: Path, device: str, quick: bool, log: Callable[[str], None], *,
                        recipes: tuple[str, str] = (CONVERSION_RECIPE, FINETUNE_RECIPE), data_root: Path | None = None,
                        dnn_set: Sequence[str] = (), finetune_set: Sequence[str] = ()) -> dict[str, Any]:
    """Train the DNN recipe, convert it with every method, fine-tune the ``dist`` T = 2 SNN;
    ``dnn_set`` / ``finetune_set`` are extra recipe overrides (e.g. ``train.epochs=3``)."""
    from fewstep.convert.converter import convert_checkpoint

    dnn_recipe, ft_recipe = recipes
    dnn_dir, conv_dir, ft_dir = out / "dnn", out / f"convert-t{TIMESTEPS}", out / f"finetune-t{TIMESTEPS}"
    t0 = time.perf_counter()
    dnn = _train(dnn_recipe, [f"train.seed={seed}", *_epochs(dnn_recipe, quick), *dnn_set], dnn_dir, device, log,
                 data_root)
    t1 = time.perf_counter()
    report = convert_checkpoint(dnn_dir / "last.pt", timesteps=TIMESTEPS, methods=METHODS,
                                eval_timesteps=EVAL_TIMESTEPS, out_dir=conv_dir, device=device,
                                calib_batches=QUICK_CALIB_BATCHES if quick else 20, log=log, data_root=data_root)
    t2 = time.perf_counter()
    init = report["checkpoints"]["dist"]
    ft = _train(ft_recipe, [f"train.seed={seed}", f"train.init_checkpoint={json.dumps(str(init))}",
                            *_epochs(ft_recipe, quick), *finetune_set], ft_dir, device, log, data_root)
    t3 = time.perf_counter()
    energy = report["energy"]
    ft_energy = ft.get("energy") or {}
    return {
        "seed": seed,
        "dnn_accuracy": report["dnn_accuracy"],
        "dnn_train_report_accuracy": dnn["accuracy"],
        "converted_accuracy": {m: {str(t): report["converted_accuracy"][m][str(t)] for t in EVAL_TIMESTEPS}
                               for m in METHODS},
        "finetuned_accuracy": ft["accuracy"],
        "finetuned_accuracy_per_step": ft["accuracy_per_step"],
        "finetuned_epochs": ft["epochs"],
        "dnn_epochs": dnn["epochs"],
        # ANN/SNN energy (fewstep.energy, preset of the recipe) of each T=2 conversion before fine-tuning
        "energy_ratio": {m: energy[m].get("ratio") for m in METHODS},
        "first_layer_bound": energy["dist"].get("first_layer_bound"),
        "energy_preset": energy["dist"].get("preset"),
        "finetuned_energy_ratio": ft_energy.get("ratio"),
        "factors_t2": {m: [{k: f[k] for k in ("name", "mu", "a", "b", "V", "A", "error")} for f in report["layers"][m]]
                       for m in METHODS},
        "seconds": {"train_dnn": t1 - t0, "convert": t2 - t1, "finetune": t3 - t2},
        "paths": {"dnn": str(dnn_dir / "last.pt"), "convert_report": str(conv_dir / "report.json"),
                  "finetuned": str(ft_dir / "last.pt")},
    }


def run_anytime_seed(recipe: str, seed: int, out: Path, device: str, quick: bool,
                     log: Callable[[str], None], timing: bool = False, repeats: int = 3) -> dict[str, Any]:
    from fewstep.evaluate import load_trained
    from fewstep.infer.cutoff import cutoff_sweep
    from fewstep.train.data_feed import DeviceFeed

    t0 = time.perf_counter()
    rep = _train(recipe, [f"train.seed={seed}", *_epochs(recipe, quick)], out, device, log)
    t1 = time.perf_counter()
    rec, model, splits, dev = load_trained(out / "last.pt", device)
    if splits.val is None:
        raise SystemExit(f"{recipe}: holds out no validation split (data.val_size) to choose eps on")
    feed = DeviceFeed(splits.test, rec.data.eval_batch_size, dev, train=False)
    val = DeviceFeed(splits.val, rec.data.eval_batch_size, dev, train=False)
    sweep = cutoff_sweep(model, feed, target_drop=TARGET_DROP, choose_on=val, choose_on_name="val", timing=timing,
                         repeats=repeats)
    t2 = time.perf_counter()
    op = sweep["operating_point"]
    result = {
        "recipe": recipe,
        "seed": seed,
        "timesteps": sweep["timesteps"],
        "samples": sweep["samples"],
        "train_report_accuracy": rep["accuracy"],
        "full_accuracy": sweep["full_accuracy"],
        "accuracy_t1": sweep["accuracy_per_step"][0],
        "accuracy_per_step": sweep["accuracy_per_step"],
        # eps chosen on val (None: no val sweep point within the drop); accuracy, mean_steps, drop on test
        "operating_point": op,
        "val_samples": sweep["calibration"]["samples"],
        "val_sweep": sweep["calibration"],
        "mean_steps": op["mean_steps"],
        "speedup": sweep["speedup"],
        "oracle_accuracy": sweep["oracle_accuracy"],
        "oracle_mean_steps": sweep["oracle_mean_steps"],
        "sweep": {"eps": sweep["eps"], "accuracy": sweep["accuracy"], "mean_steps": sweep["mean_steps"]},
        "target_drop": sweep["target_drop"],
        "epochs": rep["epochs"],
        "seconds": {"train": t1 - t0, "sweep": t2 - t1},
        "path": str(out / "last.pt"),
    }
    if timing:
        # seconds over the test set (best of `repeats`): step-by-step engine with the cutoff at the
        # operating point, the same engine for all T steps, the multi-step forward; and the ratios
        result["wall_clock"] = sweep["wall_clock"]
    return result


# ---------------------------------------------------------------- summaries and tables


def summarise_conversion(per_seed: dict[str, dict]) -> dict[str, Any]:
    runs = list(per_seed.values())
    return {
        "dnn_accuracy": mean_std([r["dnn_accuracy"] for r in runs]),
        "converted_accuracy": {m: {str(t): mean_std([r["converted_accuracy"][m][str(t)] for r in runs])
                                   for t in EVAL_TIMESTEPS} for m in METHODS},
        "finetuned_accuracy": mean_std([r["finetuned_accuracy"] for r in runs]),
        "energy_ratio": {m: mean_std([r["energy_ratio"][m] for r in runs]) for m in METHODS},
        "first_layer_bound": mean_std([r["first_layer_bound"] for r in runs]),
        "finetuned_energy_ratio": mean_std([r["finetuned_energy_ratio"] for r in runs]),
    }


def summarise_anytime(per_seed: dict[str, dict]) -> dict[str, Any]:
    runs = list(per_seed.values())
    steps = len(runs[0]["accuracy_per_step"])
    out: dict[str, Any] = {
        "full_accuracy": mean_std([r["full_accuracy"] for r in runs]),
        "accuracy_t1": mean_std([r["accuracy_t1"] for r in runs]),
        "operating_accuracy": mean_std([r["operating_point"]["accuracy"] for r in runs]),
        "operating_drop": mean_std([r["operating_point"]["drop"] for r in runs]),
        "val_drop": mean_std([r["operating_point"]["val_drop"] for r in runs]),
        "mean_steps": mean_std([r["mean_steps"] for r in runs]),
        "speedup": mean_std([r["speedup"] for r in runs]),
        "oracle_accuracy": mean_std([r["oracle_accuracy"] for r in runs]),
        "oracle_mean_steps": mean_std([r["oracle_mean_steps"] for r in runs]),
        "accuracy_per_step": [mean_std([r["accuracy_per_step"][t] for r in runs]) for t in range(steps)],
        "operating_eps": [r["operating_point"]["eps"] for r in runs],
    }
    if all("wall_clock" in r for r in runs):
        out["wall_clock"] = {k: mean_std([r["wall_clock"][k] for r in runs])
                             for k in ("cutoff_seconds", "full_stepwise_seconds", "full_multistep_seconds",
                                       "speedup_vs_stepwise", "speedup_vs_multistep")}
    return out


def conversion_tables(res: dict[str, Any]) -> str:
    s, per = res["summary"], res["per_seed"]
    n = len(per)
    cols = [f"T={t}" for t in EVAL_TIMESTEPS]
    rows = [["DNN", pct(s["dnn_accuracy"]), "", "", ""]]
    for m in METHODS:
        rows.append([f"converted `{m}`", *(pct(s["converted_accuracy"][m][str(t)]) for t in EVAL_TIMESTEPS),
                     num(s["energy_ratio"][m], suffix="x")])
    rows.append([f"`dist` T={TIMESTEPS} fine-tuned", "", pct(s["finetuned_accuracy"]), "",
                 num(s["finetuned_energy_ratio"], suffix="x")])
    out = [f"### Conversion: accuracy (%) and ANN/SNN energy, mean ± std over {n} seed(s)", "",
           table(["", *cols, f"ANN/SNN energy (T={TIMESTEPS})"], rows), "",
           (f"DNN = one evaluation per sample; first-layer bound on the ANN/SNN energy ratio "
            f"{num(s['first_layer_bound'], 1, 'x')}."), "",
           "### Conversion: per seed (%)", ""]
    rows = []
    for seed, r in per.items():
        ca = r["converted_accuracy"]
        rows.append([seed, pct(r["dnn_accuracy"]),
                     *(" / ".join(pct(ca[m][str(t)]) for t in EVAL_TIMESTEPS) for m in METHODS),
                     pct(r["finetuned_accuracy"]), num(r["energy_ratio"]["dist"], suffix="x")])
    out.append(table(["seed", "DNN", *(f"`{m}` T=1 / 2 / 4" for m in METHODS), "fine-tuned T=2",
                      "energy ratio (`dist`, T=2)"], rows))
    return "\n".join(out)


def anytime_tables(res: dict[str, Any]) -> str:
    n = len(next(iter(res["per_seed"].values())))
    rows = []
    for recipe, s in res["summary"].items():
        rows.append([f"`{recipe}`", pct(s["full_accuracy"]), pct(s["accuracy_t1"]), pct(s["operating_accuracy"]),
                     num(s["mean_steps"], 2), num(s["speedup"], 2, "x"),
                     f"{pct(s['oracle_accuracy'])} at {num(s['oracle_mean_steps'], 2)}"])
    out = [(f"### Anytime inference (softmax cutoff; eps chosen on the validation split at <= "
            f"{100 * TARGET_DROP:.1f} point drop there, then the test split scored): mean ± std over {n} seed(s)"), "",
           table(["recipe", "accuracy at T (%)", "accuracy at t=1 (%)", "test accuracy at the val-chosen eps (%)",
                  "test mean steps", "speed-up", "oracle, keeps accuracy at T (%) at mean steps"], rows), ""]
    steps = max(len(s["accuracy_per_step"]) for s in res["summary"].values())
    rows = [[f"`{recipe}`", *(pct(a, 1) for a in s["accuracy_per_step"])] for recipe, s in res["summary"].items()]
    out += ["### Anytime: accuracy (%) when every sample stops at step t, mean ± std", "",
            table(["recipe", *(f"t={t}" for t in range(1, steps + 1))], rows), "",
            "### Anytime: per seed", ""]
    rows = []
    for recipe, per in res["per_seed"].items():
        for seed, r in per.items():
            op = r["operating_point"]
            rows.append([f"`{recipe}`", seed, pct(r["full_accuracy"]), pct(r["accuracy_t1"]),
                         "none" if op["eps"] is None else f"{op['eps']:g}", pct(op["accuracy"]),
                         num(r["mean_steps"], 3), num(r["speedup"], 2, "x"),
                         " ".join(f"{100 * a:.1f}" for a in r["accuracy_per_step"])])
    out.append(table(["recipe", "seed", "at T", "t=1", "eps (chosen on val)", "at that eps", "mean steps", "speed-up",
                      "per step t=1..T"], rows))
    timed = {r: s["wall_clock"] for r, s in res["summary"].items() if "wall_clock" in s}
    if timed:
        rows = [[f"`{recipe}`", num(w["cutoff_seconds"], 3), num(w["full_stepwise_seconds"], 3),
                 num(w["full_multistep_seconds"], 3), num(w["speedup_vs_stepwise"], 2, "x"),
                 num(w["speedup_vs_multistep"], 2, "x")] for recipe, w in timed.items()]
        out += ["", (f"### Anytime: wall-clock seconds over the test set (best of {res.get('timing_repeats')} runs), "
                     f"mean ± std over {n} seed(s)"), "",
                table(["recipe", "cutoff at op. point (s)", "step-by-step, all T (s)", "multi-step forward (s)",
                       "wall-clock speed-up vs step-by-step", "vs multi-step"], rows)]
    return "\n".join(out)


# ---------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="train.seed values (default 0 1 2)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default runs/digits_methods; runs/anytime_events with --anytime-data events)")
    p.add_argument("--only", choices=("conversion", "anytime"), default=None,
                   help="run one of the two benchmarks (default both; only anytime with --anytime-data events)")
    p.add_argument("--anytime-data", choices=tuple(ANYTIME_DATA), default="digits",
                   help="anytime recipes: digits-tet(-str)-t8 (default) or saccade-digits-tet(-str)-t8 (events)")
    p.add_argument("--timing", action="store_true",
                   help="also time cutoff inference against full-T inference (wall clock, this device)")
    p.add_argument("--timing-repeats", type=int, default=5, help="best of this many timed runs (default 5)")
    p.add_argument("--quick", action="store_true", help="a few epochs per recipe: a smoke test, not a measurement")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--conversion-data", choices=tuple(CONVERSION_DATA), default="digits",
                   help="conversion on the embedded digits (default) or Fashion-MNIST (fmnist-vgg-dnn; implies "
                        "--only conversion and --out runs/fmnist_conversion)")
    p.add_argument("--data-root", type=Path, default=None, help="dataset folder (default $FEWSTEP_DATA)")
    p.add_argument("--dnn-set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra override of the DNN recipe, e.g. --dnn-set data.train_limit=20000 (repeatable)")
    p.add_argument("--finetune-set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra override of the fine-tuning recipe, e.g. --finetune-set train.epochs=2 (repeatable)")
    args = p.parse_args(argv)
    if args.conversion_data != "digits":
        args.only = args.only or "conversion"
        if args.out is None:
            args.out = Path("runs/fmnist_conversion")
    if args.out is None:
        args.out = DEFAULT_OUT[args.anytime_data]
    if args.only is None and args.anytime_data != "digits":
        args.only = "anytime"
    if args.timing_repeats < 1:
        p.error("--timing-repeats must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmarks; prints the tables and returns (and writes) the results."""
    args = parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds):
        raise SystemExit(f"--seeds: repeated seed in {args.seeds}")

    import torch

    import fewstep
    from fewstep.atomic import write_json_atomic
    from fewstep.train.engine import threads_from_env

    threads_from_env()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    log_file = (out / "log.txt").open("a")

    def log(msg: str) -> None:
        log_file.write(msg + "\n")
        log_file.flush()

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)
        log(f"# {msg}")

    started = time.perf_counter()
    results: dict[str, Any] = {
        "meta": {"command": " ".join(["python", "benchmarks/digits_methods.py", *(argv if argv is not None
                                                                                    else sys.argv[1:])]),
                 "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                 "seeds": list(args.seeds), "quick": args.quick, "device": args.device,
                 "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                 "platform": platform.platform(), "python": platform.python_version(),
                 "torch_version": torch.__version__, "fewstep_version": fewstep.__version__,
                 "anytime_data": args.anytime_data, "only": args.only,
                 "accuracy_unit": (ACCURACY_UNIT["digits"] if args.anytime_data == "digits"
                                   else ACCURACY_UNIT[args.anytime_data] if args.only == "anytime"
                                   else f"{ACCURACY_UNIT['digits']} (anytime: {ACCURACY_UNIT[args.anytime_data]})"),
                 "std": "sample standard deviation over seeds (ddof 1; 0 for one seed)"},
    }
    texts = []
    if args.only in (None, "conversion"):
        per_seed = {}
        for seed in args.seeds:
            say(f"conversion: seed {seed}")
            per_seed[str(seed)] = run_conversion_seed(
                seed, out / "conversion" / f"seed{seed}", args.device, args.quick, log,
                recipes=CONVERSION_DATA[args.conversion_data], data_root=args.data_root, dnn_set=args.dnn_set,
                finetune_set=args.finetune_set)
        dnn_recipe, ft_recipe = CONVERSION_DATA[args.conversion_data]
        results["conversion"] = {"data": args.conversion_data, "recipes": {"dnn": dnn_recipe, "finetune": ft_recipe},
                                 "dnn_set": list(args.dnn_set), "finetune_set": list(args.finetune_set),
                                 "methods": list(METHODS), "timesteps": TIMESTEPS,
                                 "eval_timesteps": list(EVAL_TIMESTEPS),
                                 "per_seed": per_seed, "summary": summarise_conversion(per_seed)}
        texts.append(conversion_tables(results["conversion"]))
    if args.only in (None, "anytime"):
        recipes = ANYTIME_DATA[args.anytime_data]
        per_recipe: dict[str, dict[str, Any]] = {}
        for recipe in recipes:
            per_recipe[recipe] = {}
            for seed in args.seeds:
                say(f"anytime: {recipe} seed {seed}")
                per_recipe[recipe][str(seed)] = run_anytime_seed(recipe, seed, out / "anytime" / recipe / f"seed{seed}",
                                                                 args.device, args.quick, log, timing=args.timing,
                                                                 repeats=args.timing_repeats)
        results["anytime"] = {"data": args.anytime_data, "recipes": list(recipes), "target_drop": TARGET_DROP,
                              "timing": args.timing, "timing_repeats": args.timing_repeats if args.timing else None,
                              "per_seed": per_recipe,
                              "summary": {r: summarise_anytime(p) for r, p in per_recipe.items()}}
        texts.append(anytime_tables(results["anytime"]))
    results["meta"]["wall_seconds"] = time.perf_counter() - started
    log_file.close()

    text = "\n\n".join(texts) + f"\n\nwall time {results['meta']['wall_seconds']:.0f} s\n"
    write_json_atomic(results, out / "results.json")
    (out / "results.md").write_text(text)
    print(text)
    return results


if __name__ == "__main__":
    main()
