"""``mypy fewstep`` is clean under pyproject's ``[tool.mypy]`` (#16 item 6).

mypy runs in a subprocess (``sys.executable -m mypy``, from the repository root, with the
repository's ``pyproject.toml``), the same check as ``mypy fewstep`` by hand; its cache is the
usual ``.mypy_cache`` there, so a second run takes seconds (the first about half a minute). mypy
is in the ``dev`` extra, which the README's test command installs; the test skips only where mypy
cannot be imported.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_clean():
    """No mypy error in the package; on failure the message lists every error."""
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (it is in the 'dev' extra: pip install -e \".[dev]\")")
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "fewstep"],
        capture_output=True, text=True, cwd=ROOT,
    )
    errors = [line for line in run.stdout.splitlines() if ": error:" in line]
    clean = run.returncode == 0 and not errors
    assert clean, (
        f"mypy fewstep found {len(errors)} error(s) (exit status {run.returncode}):\n"
        + "\n".join(errors or run.stdout.splitlines()[-40:]) + "\n" + run.stderr[-2000:]
    )
