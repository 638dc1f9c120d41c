"""Run reports: ``report.json`` (written atomically), a PNG of accuracy against time step (drawn
by :func:`fewstep.plots.plot_accuracy_per_step`) and the text summary."""

from __future__ import annotations

from pathlib import Path

from .atomic import write_json_atomic
from .plots import plot_accuracy_per_step


def write_report(report: dict, out_dir: Path) -> None:
    """``report.json`` and, when the run has per-step accuracies, ``accuracy_per_step.png`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(report, out_dir / "report.json")
    if report.get("accuracy_per_step"):
        plot_accuracy_per_step(report, out_dir / "accuracy_per_step.png")


def energy_comparison(energy: dict) -> str:
    """How a run's energy per sample compares with its ANN equivalent, in words.

    A network without spiking neurons (a ``*_dnn``) is the ANN itself, so it gets no ratio
    (it would read "1.0x below the ANN"); an SNN costing more than the ANN is "above" it."""
    if not energy.get("neurons") and not energy.get("sops"):
        return "a non-spiking network: the ANN reference itself"
    ratio = energy.get("ratio")
    if ratio is None:
        return "no ANN/SNN ratio: the SNN energy counted is zero"
    if ratio >= 1.0:
        return f"{ratio:.1f}x below the ANN"
    return f"{1.0 / ratio:.1f}x above the ANN" if ratio > 0 else "the ANN equivalent costs nothing"


def summary_table(report: dict) -> str:
    """A short text table of a finished run."""
    rows = [("recipe", report["recipe"]), ("dataset", report["dataset"]), ("model", report.get("model", "")),
            ("timesteps", report["timesteps"]), ("epochs", report["epochs"]),
            ("train time", f"{report['train_seconds']:.1f} s on {report.get('device', '?')}")]
    acc = report["accuracy_per_step"]
    late = "" if report.get("causal", True) else " (not causal: sees all T steps' inputs)"
    rows += [(f"accuracy @ t={t}", f"{100 * a:.2f} %" + (late if t < len(acc) else ""))
             for t, a in enumerate(acc, 1)]
    if "energy" in report:
        e = report["energy"]
        rows.append(("energy / sample", f"{e['energy_pj'] / 1e6:.3f} uJ ({energy_comparison(e)})"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)
