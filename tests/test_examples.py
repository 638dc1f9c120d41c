"""Every example script runs to completion (``--tiny``) and prints what it promises."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

# script -> a line fragment its output must contain
EXPECTED = {
    "train_quickstart_api.py": "accuracy @ t=2",
    "custom_neuron_model.py": "test accuracy per step",
    "tonic_interop.py": "",  # prints a skip note without tonic
    "energy_report.py": "ANN / SNN energy",
    "export_nir.py": "",  # prints a skip note without nir
}
OWNED_ELSEWHERE = {"stream_events.py"}  # tested by its own owner's tests


def test_every_example_is_covered():
    scripts = {p.name for p in EXAMPLES.glob("*.py")}
    assert set(EXPECTED) <= scripts
    assert scripts - OWNED_ELSEWHERE <= set(EXPECTED), f"untested examples: {sorted(scripts - OWNED_ELSEWHERE - set(EXPECTED))}"


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs(script, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg", PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), "--tiny"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, check=False, timeout=240)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, f"{script} failed after {seconds:.1f}s:\n{proc.stdout}\n{proc.stderr}"
    assert EXPECTED[script] in proc.stdout, proc.stdout
    print(f"{script}: {seconds:.1f} s")
