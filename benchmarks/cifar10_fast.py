"""CIFAR-10 at T <= 4 on the CPU: every method of fewstep on the cifar_fast family, from one command.

Rows (each one seed per ``--seeds`` value; training runs are ordinary ``fewstep train`` runs in
``<out>/<row>-s<seed>/`` and are skipped when their ``report.json`` exists, so an interrupted
sweep resumes where it stopped):

* ``conversion``: train ``cifar10-fast-dnn``; ``fewstep convert`` it at T = 1, 2, 4 with every
  factor method (distribution-aware ``dist``, ``max``, ``p99.9``, ``clip``: accuracy before
  fine-tuning); fine-tune the ``dist`` T = 2 SNN with ``cifar10-fast-convert-finetune-t2``.
* ``mtlif`` / ``lif``: ``cifar10-fast-mtlif-t2`` and its LIF ablation ``cifar10-fast-lif-t2``.
* ``stcb`` / ``stcb-surrogate``: the STCB VGG with the equivalent gradient, and with surrogate BPTT.
* ``anytime``: ``cifar10-fast-tet-t4`` and ``cifar10-fast-tet-str-t4``, then the softmax cutoff:
  eps is chosen on the validation split (the fewest mean steps within ``--target-drop`` of the
  full-T validation accuracy) and only then applied to the test split.

Every training recipe holds out 5,000 training images for validation: epochs are fixed in the
recipes, nothing is chosen on the test split, which each run scores once at the end. The data is
``cifar10-jpeg``, a lossy JPEG copy of CIFAR-10 (accuracies close to, not exactly comparable with,
published CIFAR-10 numbers). Writes ``<out>/results.json`` and ``<out>/results.md`` (per row:
accuracy at every step, energy and the ANN/SNN ratio, wall time, seed, the command).

Usage::

    python benchmarks/cifar10_fast.py --data-root ../shared/data --out runs/cifar10-fast
    python benchmarks/cifar10_fast.py --rows conversion --seeds 0 1 --data-root ../shared/data
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_common

from bench_common import cpu_name  # noqa: E402

ROWS = ("conversion", "mtlif", "lif", "stcb", "stcb-surrogate", "anytime")
ANYTIME = ("tet", "tet-str")
RECIPES = {"mtlif": "cifar10-fast-mtlif-t2", "lif": "cifar10-fast-lif-t2", "stcb": "cifar10-fast-stcb-t2",
           "stcb-surrogate": "cifar10-fast-stcb-surrogate-t2", "tet": "cifar10-fast-tet-t4",
           "tet-str": "cifar10-fast-tet-str-t4", "dnn": "cifar10-fast-dnn",
           "finetune": "cifar10-fast-convert-finetune-t2"}


def _run(cmd: list[str], log: Path) -> float:
    """Run a fewstep command, appending its output to ``log``; returns the wall seconds."""
    t0 = time.perf_counter()
    with log.open("a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        r = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise SystemExit(f"command failed ({r.returncode}): {' '.join(cmd)}\n{_last_line(log)}\n(full output: {log})")
    return time.perf_counter() - t0


def _last_line(log: Path) -> str:
    """The last non-empty line of ``log``: the failed command's own one-line error (``fewstep`` prints
    ``fewstep: error: ...`` last), so the sweep's message says why without opening the log."""
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "(the command printed nothing)"


def _train(recipe: str, out: Path, args, extra: list[str] = ()) -> dict[str, Any]:
    """``fewstep train`` (skipped when ``out/report.json`` exists; resumed when ``last.pt`` does)."""
    report = out / "report.json"
    cmd = [sys.executable, "-m", "fewstep", "train", recipe, "--out", str(out), "--no-progress"]
    if args.data_root:
        cmd += ["--data-root", str(args.data_root)]
    for s in [*args.set, *extra]:
        cmd += ["--set", s]
    if not report.exists():
        out.mkdir(parents=True, exist_ok=True)
        wall = _run(cmd + (["--resume"] if (out / "last.pt").exists() else []), out.parent / "log.txt")
        (out / "wall_seconds.json").write_text(json.dumps({"wall_seconds": wall, "command": " ".join(cmd)}))
    rep = json.loads(report.read_text())
    meta = json.loads((out / "wall_seconds.json").read_text()) if (out / "wall_seconds.json").exists() else {}
    return {"recipe": recipe, "seed": rep["seed"], "accuracy_per_step": rep["accuracy_per_step"],
            "val_accuracy_per_step": rep.get("val_accuracy_per_step"), "epochs": rep["epochs"],
            "train_seconds": rep["train_seconds"], "wall_seconds": meta.get("wall_seconds"),
            "command": meta.get("command", " ".join(cmd)), "energy": _energy(rep.get("energy") or {}),
            "out": str(out)}


def _energy(e: dict) -> dict[str, Any]:
    """The energy fields the table shows, plus the first-layer bound: under direct encoding the stem's
    MACs are paid at every step, so the ANN/SNN ratio can never exceed ANN MACs / (stem MACs x T)."""
    out = {k: e.get(k) for k in ("energy_pj", "ann_energy_pj", "ratio", "macs", "sops")}
    stem = sum(lo.get("dense_macs", 0.0) for lo in e.get("layers", []) if str(lo.get("name", "")).startswith("stem."))
    out["first_layer_bound"] = e["ann_macs"] / stem if stem and e.get("ann_macs") else None
    return out


def conversion_row(seed: int, args) -> dict[str, Any]:
    base = args.out / f"conversion-s{seed}"
    dnn = _train(RECIPES["dnn"], base / "dnn", args, [f"train.seed={seed}"])
    conv_dir = base / "convert-t2"
    if not (conv_dir / "report.json").exists():
        cmd = [sys.executable, "-m", "fewstep", "convert", str(base / "dnn" / "last.pt"), "--timesteps", "2",
               "--eval-timesteps", "1,2,4", "--out", str(conv_dir)]
        if args.data_root:
            cmd += ["--data-root", str(args.data_root)]
        wall = _run(cmd, base / "log.txt")
        (conv_dir / "wall_seconds.json").write_text(json.dumps({"wall_seconds": wall, "command": " ".join(cmd)}))
    conv = json.loads((conv_dir / "report.json").read_text())
    ft = _train(RECIPES["finetune"], base / "finetune-t2", args,
                [f"train.seed={seed}", f"train.init_checkpoint={json.dumps(str(conv_dir / 'converted-dist-t2.pt'))}"])
    conv_meta = json.loads((conv_dir / "wall_seconds.json").read_text())
    return {"row": "conversion", "seed": seed, "dnn": dnn, "converted_accuracy": conv["converted_accuracy"],
            "converted_energy": {m: _energy(e) for m, e in (conv.get("energy") or {}).items()},
            "convert_wall_seconds": conv_meta["wall_seconds"], "convert_command": conv_meta["command"],
            "finetuned": ft,
            "pipeline_wall_seconds": sum(v for v in (dnn["wall_seconds"], conv_meta["wall_seconds"],
                                                     ft["wall_seconds"]) if v)}


def anytime_row(seed: int, args) -> dict[str, Any]:
    """TET and TET + STR at T = 4, then the softmax cutoff with eps chosen on the validation split."""
    import torch

    from fewstep.evaluate import load_trained
    from fewstep.infer.anytime import cumulative_logits
    from fewstep.infer.cutoff import DEFAULT_EPS, choose_operating_point, full_accuracy, sweep_softmax_cutoff
    from fewstep.train.data_feed import DeviceFeed

    out: dict[str, Any] = {"row": "anytime", "seed": seed, "target_drop": args.target_drop}
    for key in args.anytime:
        run = _train(RECIPES[key], args.out / f"{key}-s{seed}", args, [f"train.seed={seed}"])
        recipe, model, splits, dev = load_trained(Path(run["out"]) / "last.pt", "cpu", args.data_root)
        if splits.val is None:
            raise SystemExit(f"{run['out']}: the recipe has no validation split to choose eps on")
        with torch.inference_mode():
            cum_val, y_val = cumulative_logits(model, DeviceFeed(splits.val, 500, dev, train=False))
            cum_test, y_test = cumulative_logits(model, DeviceFeed(splits.test, 500, dev, train=False))
        t_max = cum_val.shape[0]
        eps = [float(e) for e in DEFAULT_EPS]

        val_full = full_accuracy(cum_val, y_val)
        val_acc, val_steps = sweep_softmax_cutoff(cum_val, y_val, eps)
        op = choose_operating_point(eps, val_acc, val_steps, val_full, t_max, args.target_drop)
        test_full = full_accuracy(cum_test, y_test)
        if op["eps"] is None:
            test_cut, test_steps = test_full, float(t_max)
        else:
            ([test_cut], [test_steps]) = sweep_softmax_cutoff(cum_test, y_test, [op["eps"]])
        run["cutoff"] = {"eps_chosen_on_val": op["eps"], "val_full_accuracy": val_full, "val_operating_point": op,
                         "test_full_accuracy_no_flip": test_full, "test_cutoff_accuracy": test_cut,
                         "test_mean_steps": test_steps, "speedup": t_max / test_steps,
                         "test_drop": test_full - test_cut, "val_sweep": {"eps": eps, "accuracy": val_acc,
                                                                          "mean_steps": val_steps}}
        out[key] = run
    return out


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def _steps(accs: list[float] | None) -> str:
    return "-" if not accs else " / ".join(_pct(a) for a in accs)


def _ratio(e: dict) -> str:
    if not e or e.get("ratio") is None:
        return "-"
    bound = e.get("first_layer_bound")
    return f"{e['ratio']:.1f}x" + ("" if bound is None else f" (bound {bound:.0f}x)")


def _mins(s: float | None) -> str:
    return "-" if not s else f"{s / 60:.1f}"


def table(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    # A sweep run with recipe overrides (a reduced slice, fewer epochs) says so in its header.
    overrides = meta.get("overrides") or []
    split = (f"every run with --set {'; '.join(overrides)}" if overrides
             else "45,000 train / 5,000 val / 10,000 test")
    lines = [f"cifar10-jpeg (lossy JPEG copy of CIFAR-10; {split}; test scored once); "
             f"{meta['cpu']}, {meta['threads']} threads, torch {meta['torch']}; {meta['date_utc']}", "",
             "| row | seed | test accuracy % at t = 1 / ... / T | val % at T | epochs | wall min | "
             "energy / sample (uJ) | ANN/SNN | command |", "|---|---|---|---|---|---|---|---|---|"]

    def add(name: str, seed: int, run: dict, ann: bool = False) -> None:
        e = run.get("energy") or {}
        uj = "-" if not e.get("energy_pj") else f"{e['energy_pj'] / 1e6:.2f}"
        # A run started outside this script has no wall clock; its report's training time stands in, marked.
        wall = _mins(run.get("wall_seconds")) if run.get("wall_seconds") else f"{_mins(run.get('train_seconds'))} (train)"
        val = run.get("val_accuracy_per_step")
        lines.append(f"| {name} | {seed} | {_steps(run['accuracy_per_step'])} | {_pct(val[-1]) if val else '-'} | "
                     f"{run['epochs']} | {wall} | {uj} | {'(the ANN)' if ann else _ratio(e)} | `{run['command']}` |")

    for r in results:
        if r["row"] == "conversion":
            add("cifar10-fast-dnn (clipped ReLU, BN)", r["seed"], r["dnn"], ann=True)
            for method, accs in r["converted_accuracy"].items():
                lines.append(f"| converted, {method}, no fine-tuning | {r['seed']} | T=1: {_pct(accs.get('1'))}, "
                             f"T=2: {_pct(accs.get('2'))}, T=4: {_pct(accs.get('4'))} | - | - | "
                             f"{_mins(r['convert_wall_seconds'])} | - | {_ratio(r['converted_energy'].get(method, {}))} "
                             f"| `{r['convert_command']}` |")
            add("converted dist T=2, fine-tuned", r["seed"], r["finetuned"])
        elif r["row"] == "anytime":
            for key in ANYTIME:
                if key in r:
                    add(RECIPES[key], r["seed"], r[key])
        else:
            add(RECIPES[r["row"]], r["seed"], r["run"])
    cut = [(r["seed"], k, r[k]["cutoff"]) for r in results if r["row"] == "anytime" for k in ANYTIME if k in r]
    if cut:
        lines += ["", "Softmax cutoff (eps chosen on the validation split, then applied to the test split; no "
                      "test-time flip here):", "",
                  "| recipe | seed | eps (from val) | test acc full T % | test acc with cutoff % | mean steps | "
                  "speed-up |", "|---|---|---|---|---|---|---|"]
        for seed, k, c in cut:
            lines.append(f"| {RECIPES[k]} | {seed} | {c['eps_chosen_on_val']} | {_pct(c['test_full_accuracy_no_flip'])} "
                         f"| {_pct(c['test_cutoff_accuracy'])} | {c['test_mean_steps']:.2f} | {c['speedup']:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--data-root", type=Path, default=None, help="folder holding cifar10-jpeg/ (or $FEWSTEP_DATA)")
    ap.add_argument("--out", type=Path, default=Path("runs/cifar10-fast"))
    ap.add_argument("--anytime", nargs="+", default=list(ANYTIME), choices=ANYTIME,
                    help="the anytime row's recipes: TET alone and/or TET + STR (default both)")
    ap.add_argument("--target-drop", type=float, default=0.005, help="cutoff: allowed validation accuracy drop")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="recipe override for every run (e.g. data.train_limit=500 for a smoke run)")
    ap.add_argument("--table-from", type=Path, nargs="+", default=None, metavar="RESULTS_JSON",
                    help="print the tables of earlier runs' results.json files (one per file, each with its own "
                         "header) and exit; trains nothing")
    args = ap.parse_args(argv)
    if args.table_from:
        payloads = []
        for p in args.table_from:
            try:
                payloads.append(json.loads(p.read_text()))
            except (OSError, ValueError) as exc:
                raise SystemExit(f"{p}: cannot read a results.json ({exc})") from None
            if not isinstance(payloads[-1], dict) or not {"meta", "results"} <= payloads[-1].keys():
                raise SystemExit(f"{p}: not a cifar10_fast.py results.json (needs 'meta' and 'results')")
        # One table per file, each under its own header: sweeps of different settings (CPU, date,
        # --set overrides) are never labelled with the first file's.
        print("\n\n".join(table(p["results"], p["meta"]) for p in payloads))
        return {"meta": payloads[0]["meta"], "metas": [p["meta"] for p in payloads],
                "results": [r for p in payloads for r in p["results"]]}
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    meta = {"date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "command": " ".join(sys.argv),
            "cpu": cpu_name(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "load_before": os.getloadavg(), "overrides": list(args.set)}
    results = []
    for seed in args.seeds:
        for row in args.rows:
            print(f"[cifar10-fast] {row} seed {seed}", file=sys.stderr, flush=True)
            if row == "conversion":
                results.append(conversion_row(seed, args))
            elif row == "anytime":
                results.append(anytime_row(seed, args))
            else:
                results.append({"row": row, "seed": seed,
                                "run": _train(RECIPES[row], args.out / f"{row}-s{seed}", args, [f"train.seed={seed}"])})
            payload = {"meta": meta, "results": results}
            (args.out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
            (args.out / "results.md").write_text(table(results, meta) + "\n")
    print(table(results, meta))
    return payload


if __name__ == "__main__":
    main()
