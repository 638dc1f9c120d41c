"""What MT-LIF with ``K = 1`` equals, and that the docs say exactly that (not "K = 1 equals LIF")."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fewstep.neurons import LIF, MTLIF, PLIF

ROOT = Path(__file__).resolve().parents[1]


def _run(n, x):
    n.record = True
    return n(x), n.last_membrane


def test_k1_with_the_same_reset_and_decay_equals_lif():
    x = torch.randn(6, 4, 5, dtype=torch.float64) * 1.5 + 0.5
    s_lif, h_lif = _run(LIF().double(), x)
    s_mt, h_mt = _run(MTLIF(num_thresholds=1, reset="hard", learnable_decay=False).double(), x)
    assert s_lif.sum() > 0 and torch.equal(s_lif, s_mt) and torch.equal(h_lif, h_mt)
    s_plif, _ = _run(PLIF(reset="soft").double(), x)
    assert torch.equal(_run(MTLIF(num_thresholds=1).double(), x)[0], s_plif)


def test_k1_with_its_own_defaults_is_not_the_default_lif():
    x = torch.full((4, 1, 1), 1.5, dtype=torch.float64)  # hard reset -> 0, soft reset -> 0.5 left over
    s_lif, h_lif = _run(LIF().double(), x)
    s_mt, h_mt = _run(MTLIF(num_thresholds=1).double(), x)
    assert not torch.equal(h_lif, h_mt)


@pytest.mark.parametrize("text", [
    MTLIF.__doc__,
    (ROOT / "docs/guides/neurons.md").read_text(),
    (ROOT / "docs/methods/stc-scb-mtlif.md").read_text(),
])
def test_docs_say_what_is_equal(text):
    flat = " ".join(text.split())
    assert "K = 1` is LIF |" not in flat and "K = 1 equals LIF." not in flat and "K = 1` is LIF exactly" not in flat
    assert "same reset" in flat and "decay" in flat
