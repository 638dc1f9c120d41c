"""Progress bars (tqdm), and the one switch that turns them all off (``--no-progress``).

Training draws a bar per epoch; slow data preparation (emulating event recordings, building STC
currents) draws one too. Code that draws a bar asks :func:`progress_bar` for it, which gives
``None`` while bars are off; ``fewstep train --no-progress`` (``train(progress=False)``) runs inside
:func:`progress_bars` ``(False)``, so a dataset loader deep below needs no ``progress`` argument of
its own. Bars go to stderr and leave nothing behind when they close. This module imports no
torch (and tqdm only when a bar is drawn)."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

_ENABLED: contextvars.ContextVar[bool] = contextvars.ContextVar("fewstep_progress", default=True)


def progress_enabled() -> bool:
    """Whether bars are drawn here (true unless inside ``progress_bars(False)``)."""
    return _ENABLED.get()


@contextlib.contextmanager
def progress_bars(enabled: bool) -> Iterator[None]:
    """Draw bars inside this block only if ``enabled`` (and not already turned off outside it)."""
    token = _ENABLED.set(bool(enabled) and _ENABLED.get())
    try:
        yield
    finally:
        _ENABLED.reset(token)


def progress_bar(total: int, desc: str, unit: str = "it") -> Any | None:
    """A tqdm bar of ``total`` steps on stderr (``.update(n)``, ``.close()``), or ``None`` while bars are off."""
    if not progress_enabled():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)


__all__ = ["progress_bar", "progress_bars", "progress_enabled"]
