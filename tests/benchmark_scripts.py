"""Load a ``benchmarks/<name>.py`` script as a module (they are scripts, not a package), once per
test session, so tests can call its functions and ``main``."""

from __future__ import annotations

import importlib.util
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
