"""Helpers the accuracy benchmarks share: the CPU's name, statistics over seeds, percent formatting, recipe
override strings, an append-only log file, and the set-up, run loop and write-out of a sweep of runs.

The scripts run as ``python benchmarks/<name>.py`` (this folder is then on ``sys.path``) or are
loaded by file path in the tests; each puts this folder on ``sys.path`` before importing.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple


def cpu_name() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (else what :mod:`platform` knows), for table headers."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def mean_std(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value) of the non-None values."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return {"mean": None, "std": None, "n": 0, "values": list(values)}
    m = sum(xs) / len(xs)
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return {"mean": m, "std": s, "n": len(xs), "values": list(values)}


def summarise_runs(results: dict[str, dict[str, dict[str, dict]]],
                   extra: Callable[[list[dict]], dict[str, Any]] = lambda runs: {}) -> dict[str, dict[str, dict]]:
    """``results[group][T][seed]`` (one run's fields) to ``summary[group][T]``: mean and sample std
    over the seeds of the accuracy, the accuracy at every step (the steps every run has) and the
    training seconds, the seeds, and whatever ``extra(runs)`` adds."""
    out: dict[str, dict[str, dict]] = {}
    for group, per_t in results.items():
        out[group] = {}
        for t, per_seed in per_t.items():
            runs = list(per_seed.values())
            steps = min(len(r["accuracy_per_step"]) for r in runs)
            out[group][t] = {
                "accuracy": mean_std([r["accuracy"] for r in runs]),
                "accuracy_per_step": [mean_std([r["accuracy_per_step"][i] for r in runs]) for i in range(steps)],
                **extra(runs),
                "train_seconds": mean_std([r["train_seconds"] for r in runs]),
                "seeds": [int(s) for s in per_seed],
            }
    return out


def pct(value: float | None, digits: int = 2) -> str:
    """A fraction in percent, ``-`` for None."""
    return "-" if value is None else f"{100 * value:.{digits}f}"


def pct_stat(stat: dict[str, Any], digits: int = 2) -> str:
    """A :func:`mean_std` of fractions as ``mean ± std`` in percent, ``-`` when empty."""
    if stat["mean"] is None:
        return "-"
    return f"{100 * stat['mean']:.{digits}f} ± {100 * stat['std']:.{digits}f}"


def toml_str(text: str | Path) -> str:
    """``text`` as a TOML string for a ``--set`` style override (a JSON string is valid TOML)."""
    return json.dumps(str(text))


def file_logger(path: Path) -> Callable[[str], None]:
    """A ``log`` callable that appends each message as a line to ``path``."""
    def log(msg: str) -> None:
        with path.open("a") as fh:
            fh.write(msg + "\n")

    return log


def set_threads(requested: int | None) -> int:
    """Set torch's threads to ``requested`` (or from ``$FEWSTEP_THREADS`` when None or 0) and
    return the count before, for the caller to restore."""
    import torch

    from fewstep.train.engine import threads_from_env

    before = torch.get_num_threads()
    if requested:
        torch.set_num_threads(requested)
    else:
        threads_from_env()
    return before


def sweep_logger(out: Path) -> Callable[[str], None]:
    """A ``log`` for a sweep: every message to ``<out>/log.txt``, progress lines (those starting
    with ``[``) to stderr too."""
    log_file = file_logger(out / "log.txt")

    def log(msg: str) -> None:
        log_file(msg)
        if msg.startswith("["):
            print(msg, file=sys.stderr, flush=True)

    return log


class Sweep(NamedTuple):
    """A finished sweep: ``results[group][key][seed]``, the first run's summary (its data fields
    describe the sweep), when it started, its wall time and the torch threads it ran with."""

    results: dict[str, dict[str, dict[str, dict]]]
    first: dict[str, Any]
    started: _dt.datetime
    wall: float
    threads: int


def run_sweep(args: Any, out: Path, cells: Iterable[tuple[str, str, int, int]],
              run_cell: Callable[[str, int, int, Callable[[str], None]], dict[str, Any]],
              done: Callable[[str, str, int, dict[str, Any], dict], None]) -> Sweep:
    """Run every cell ``(group, key, timesteps, seed)`` in order as ``run_cell(group, timesteps,
    seed, log)``, filing each summary under ``results[group][key][str(seed)]`` and then calling
    ``done(group, key, seed, summary, results)``. Sets torch's threads from ``args.threads`` for the
    sweep (restored after it), creates ``out`` and logs to ``<out>/log.txt`` (:func:`sweep_logger`)."""
    import torch

    threads_before = set_threads(args.threads)
    out.mkdir(parents=True, exist_ok=True)
    log = sweep_logger(out)

    started = _dt.datetime.now(_dt.timezone.utc)
    t0 = time.perf_counter()
    results: dict[str, dict[str, dict[str, dict]]] = {}
    try:
        for group, key, t, seed in cells:
            r = run_cell(group, t, seed, log)
            results.setdefault(group, {}).setdefault(key, {})[str(seed)] = r
            done(group, key, seed, r, results)
    finally:
        threads = torch.get_num_threads()
        torch.set_num_threads(threads_before)
    wall = time.perf_counter() - t0
    first = next(iter(next(iter(next(iter(results.values())).values())).values()))
    return Sweep(results, first, started, wall, threads)


def run_meta(script: str, argv: Sequence[str] | None, started: _dt.datetime, wall: float, threads: int,
             args: Any) -> dict[str, Any]:
    """The fields every sweep's ``meta`` records: when, how long, the command, seeds, device,
    threads and the software versions (``args`` needs ``seeds``, ``device`` and ``data_root``)."""
    import torch

    from fewstep import __version__

    return {"date_utc": started.isoformat(timespec="seconds"), "wall_seconds": round(wall, 1),
            "command": " ".join([Path(sys.argv[0]).name if argv is None else script,
                                 *(sys.argv[1:] if argv is None else argv)]),
            "seeds": list(args.seeds), "device": args.device, "threads": threads, "cpu_count": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "data_root": args.data_root, "fewstep_version": __version__}


def write_results(out: Path, meta: dict[str, Any], results: dict, summary: dict, table: str,
                  wall: float) -> dict[str, Any]:
    """Write ``<out>/results.json`` (meta, results, summary) and ``<out>/results.md`` (the
    table), print the table, and return the JSON payload."""
    payload = {"meta": meta, "results": results, "summary": summary}
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / "results.md").write_text(table + "\n")
    print(table, flush=True)
    print(f"\nwall time {wall:.0f} s; results in {out / 'results.json'}", file=sys.stderr, flush=True)
    return payload


def train_recipe(recipe_name: str, overrides: list[str], run_dir: Path, args: Any, log: Callable[[str], None],
                 keep_checkpoint: bool = False) -> dict[str, Any]:
    """Train one recipe into ``run_dir`` and return its report, or, under ``args.reuse``, the
    report of a finished run there with the same config (and, with ``keep_checkpoint``, its
    ``last.pt``). A fresh run starts from an empty folder; its checkpoints are deleted afterwards
    unless ``keep_checkpoint`` or ``args.keep_checkpoints``. ``args`` needs ``reuse``,
    ``keep_checkpoints``, ``device`` and ``data_root``."""
    import shutil

    from fewstep.config import load_recipe
    from fewstep.train import train

    recipe = load_recipe(recipe_name, overrides)
    report_path = run_dir / "report.json"
    if args.reuse and report_path.exists():
        try:
            old = json.loads(report_path.read_text())
        except (OSError, ValueError):
            old = None
        ckpt_ok = not keep_checkpoint or (run_dir / "last.pt").exists()
        if old and old.get("config") == json.loads(json.dumps(recipe.to_dict())) and ckpt_ok:
            log(f"[reuse] {run_dir}")
            return old
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a fresh run: no stale checkpoint to resume from by accident
    log(f"[train] {recipe_name} {' '.join(overrides)} -> {run_dir}")
    report = train(recipe, run_dir, device=args.device, data_root=args.data_root, progress=False, log=log)
    if not keep_checkpoint and not args.keep_checkpoints:
        for name in ("last.pt", "last.pt.prev"):
            (run_dir / name).unlink(missing_ok=True)
    return report


def report_fields(report: dict[str, Any], run_dir: Path, net_key: str) -> dict[str, Any]:
    """The fields of a training report every sweep keeps per run (``net_key``: ``"neuron"`` or
    ``"model"``, the one that tells the runs apart), with the run's folder."""
    return {"epochs": report["epochs"], "seed": report["seed"], "timesteps": report["timesteps"],
            "dataset": report["dataset"], net_key: report[net_key], "train_samples": report["train_samples"],
            "test_samples": report["test_samples"], "parameters": report["parameters"],
            "final_train_loss": report["history"][-1]["train_loss"] if report.get("history") else None,
            "device": report["device"], "run_dir": str(run_dir)}


def spikingjelly_lif(device: Any = "cpu", backend: str | None = None) -> tuple[Callable[[Any], Any], Any]:
    """SpikingJelly's multi-step ``LIFNode`` with fewstep's LIF dynamics (decay 0.5 without input
    decay, threshold 1, hard reset to 0, sigmoid surrogate, reset not detached), as ``(run, node)``:
    ``run(x)`` resets the node and steps it over ``x [T, ...]``. The neuron peer of the speed
    benchmarks; raises ImportError when SpikingJelly is not installed."""
    from spikingjelly.activation_based import functional as sjf
    from spikingjelly.activation_based import neuron as sjn
    from spikingjelly.activation_based import surrogate as sjs

    kw = {} if backend is None else {"backend": backend}
    node = sjn.LIFNode(tau=2.0, decay_input=False, v_threshold=1.0, v_reset=0.0,
                       surrogate_function=sjs.Sigmoid(), detach_reset=False, step_mode="m", **kw).to(device)

    def run(x: Any) -> Any:
        sjf.reset_net(node)
        return node(x)

    return run, node


def snntorch_lif(device: Any = "cpu") -> Callable[[Any], Any]:
    """snnTorch's ``Leaky`` with fewstep's LIF dynamics (beta 0.5, threshold 1, reset to zero),
    stepped in a Python loop over ``x [T, ...]`` from a zero membrane: the other neuron peer of the
    speed benchmarks; raises ImportError when snnTorch is not installed."""
    import snntorch as snn
    import torch

    leaky = snn.Leaky(beta=0.5, threshold=1.0, reset_mechanism="zero").to(device)

    def run(x: Any) -> Any:
        mem = torch.zeros_like(x[0])
        out = []
        for t in range(x.shape[0]):
            spk, mem = leaky(x[t], mem)
            out.append(spk)
        return torch.stack(out)

    return run
