"""Helpers the accuracy benchmarks share: statistics over seeds, percent formatting, recipe
override strings and an append-only log file.

The scripts run as ``python benchmarks/<name>.py`` (this folder is then on ``sys.path``) or are
loaded by file path in the tests; each puts this folder on ``sys.path`` before importing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def mean_std(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value) of the non-None values."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return {"mean": None, "std": None, "n": 0, "values": list(values)}
    m = sum(xs) / len(xs)
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return {"mean": m, "std": s, "n": len(xs), "values": list(values)}


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
