"""The conversion report: ``report.json`` and a text table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..atomic import write_json_atomic
from ..config import Recipe
from ..models.dnn import CONVERTED_NAMES
from .factors import LayerFactors
from .histograms import LayerHistogram

_ENERGY_KEYS = ("ratio", "first_layer_bound", "energy_pj", "ann_energy_pj", "macs", "sops", "ann_macs", "preset",
                "timesteps", "batch_size", "spike_rate_per_layer")


def build_report(*, recipe: Recipe, checkpoint: str | Path, timesteps: int, dnn_accuracy: float,
                 accuracies: dict[str, dict[str, float]], factors: dict[str, dict[int, list[LayerFactors]]],
                 hists: list[LayerHistogram], energy: dict[str, dict[str, Any]], saved: dict[str, str],
                 calib_batches: int, bins: int, initial_membrane: float = 0.0) -> dict[str, Any]:
    """A JSON-serialisable dict: accuracies per method and T, per-layer factors at every T (and
    at ``timesteps`` under ``layers``), calibration histograms, energy per method at ``timesteps``."""
    return {
        "dnn_checkpoint": str(checkpoint),
        "recipe": recipe.name,
        "dataset": recipe.data.dataset,
        "dnn_model": recipe.model.name,
        "converted_model": CONVERTED_NAMES.get(recipe.model.name),
        "timesteps": timesteps,
        "initial_membrane": initial_membrane,
        "dnn_accuracy": dnn_accuracy,
        "converted_accuracy": accuracies,
        "layers": {m: [f.to_dict() for f in per_t[timesteps]] for m, per_t in factors.items() if timesteps in per_t},
        "factors_per_timesteps": {m: {str(t): [f.to_dict() for f in fs] for t, fs in per_t.items()}
                                  for m, per_t in factors.items()},
        "histograms": [h.to_dict() for h in hists],
        "energy": {m: {k: e.get(k) for k in _ENERGY_KEYS} | {"layers": e.get("layers")} for m, e in energy.items()},
        "checkpoints": saved,
        "calibration": {"batches": calib_batches, "bins": bins},
    }


def write_report(report: dict[str, Any], out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.json"
    write_json_atomic(report, path)
    return path


def format_table(report: dict[str, Any]) -> str:
    """Accuracy per method and T (with the energy ratio at the target T), then the per-layer
    factors of the distribution-aware conversion (or of the first method) at the target T."""
    acc = report["converted_accuracy"]
    steps = sorted({int(t) for per in acc.values() for t in per})
    target = report["timesteps"]
    head = ["method", *(f"T={t}" for t in steps), f"ANN/SNN energy (T={target})"]
    rows = [head, ["DNN", *(f"{100 * report['dnn_accuracy']:.2f}" if i == 0 else "" for i in range(len(steps))), ""]]
    for m, per in acc.items():
        e = report["energy"].get(m, {})
        ratio = e.get("ratio")
        bound = e.get("first_layer_bound")
        rows.append([m, *(f"{100 * per[str(t)]:.2f}" if str(t) in per else "-" for t in steps),
                     "-" if ratio is None else f"{ratio:.2f}x" + ("" if bound is None else f" (bound {bound:.1f}x)")])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    method = "dist" if "dist" in report["layers"] else next(iter(report["layers"]), None)
    if method is not None:
        theta = report.get("initial_membrane", 0.0)
        lines += ["", f"per-layer factors ({method}, T={target}): V = a * mu, A = b * V"
                  + (f", membrane starts at {theta:g} V" if theta else ""),
                  f"{'layer':<28} {'mu':>8} {'a':>7} {'b':>7} {'V':>8} {'A':>8} {'E[err^2]':>10}"]
        for f in report["layers"][method]:
            lines.append(f"{f['name']:<28} {f['mu']:8.4f} {f['a']:7.4f} {f['b']:7.4f} {f['V']:8.4f} {f['A']:8.4f} "
                         f"{f['error']:10.3e}")
    return "\n".join(lines)
