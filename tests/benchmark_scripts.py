"""Load a ``benchmarks/<name>.py`` script as a module (they are scripts, not a package), once per
test session, so tests can call its functions and ``main``."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark(script: str) -> ModuleType:
    """The module of ``benchmarks/<script>.py``, imported on first use."""
    name = f"fewstep_benchmark_{script}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{script}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def is_fraction(v: object) -> bool:
    """``v`` is a finite float in [0, 1] (an accuracy)."""
    return isinstance(v, float) and math.isfinite(v) and 0.0 <= v <= 1.0


def check_sweep_payload(out: Path, returned: dict, train_samples: int, test_samples: int) -> dict:
    """The checks every accuracy sweep's tiny run shares (one seed, 0; timesteps 1 and 2; one
    epoch): ``<out>/results.json`` is what ``main`` returned and its meta says so. Returns it."""
    res = json.loads((out / "results.json").read_text())
    assert res == json.loads(json.dumps(returned))
    assert set(res) == {"meta", "results", "summary"}
    meta = res["meta"]
    assert meta["seeds"] == [0] and meta["timesteps"] == [1, 2] and meta["epochs"] == 1
    assert meta["train_samples"] == train_samples and meta["test_samples"] == test_samples
    assert meta["wall_seconds"] > 0
    return res


def check_sweep_run(run: dict, summary: dict, dataset: str, steps: int) -> None:
    """One run of such a sweep (seed 0, one epoch, ``steps`` time steps) and its summary entry."""
    assert run["dataset"] == dataset and run["timesteps"] == steps and run["epochs"] == 1
    assert len(run["accuracy_per_step"]) == steps
    assert all(is_fraction(a) for a in [run["accuracy"], *run["accuracy_per_step"]]), run
    assert run["accuracy"] == run["accuracy_per_step"][-1]
    assert run["train_seconds"] > 0 and "train.seed=0" in run["overrides"]
    assert not (Path(run["run_dir"]) / "last.pt").exists()  # checkpoints removed by default
    assert summary["accuracy"]["mean"] == run["accuracy"] and summary["accuracy"]["std"] == 0.0
    assert len(summary["accuracy_per_step"]) == steps
