"""The one way fewstep's name registries (models, datasets) take an entry: a decorator that
files a function under a name, refusing a name given twice."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])


def registrar(table: dict[str, F], kind: str, name: str) -> Callable[[F], F]:
    """A decorator that stores its function in ``table`` under ``name`` and returns it unchanged;
    ``ValueError`` ("<kind> '<name>' registered twice") when ``name`` is already taken."""

    def deco(fn: F) -> F:
        if name in table:
            raise ValueError(f"{kind} {name!r} registered twice")
        table[name] = fn
        return fn

    return deco
