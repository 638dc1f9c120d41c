"""The engine reads top to bottom: its two long-lived entry points stay short (#18 item 4).

``train()`` is a sequence of named steps (set-up, resume, one epoch, finish the epoch, finish
the run) and ``count_energy()`` one pass plus a sum; a function that grows past the limit should
be split into named steps rather than the limit raised.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import fewstep

ROOT = Path(fewstep.__file__).parent
LIMIT = 60  # lines, docstring included


def _length(path: Path, name: str) -> int:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node.end_lineno - node.lineno + 1
    raise AssertionError(f"{path}: no function {name}")


@pytest.mark.parametrize("module, name", [("train/engine.py", "train"), ("energy.py", "count_energy")])
def test_entry_point_is_short(module, name):
    assert _length(ROOT / module, name) < LIMIT


def test_train_steps_have_names():
    from fewstep.train import engine

    for step in ("set_up_run", "resume_run", "train_one_epoch", "finish_epoch", "finish_run"):
        assert callable(getattr(engine, step))
