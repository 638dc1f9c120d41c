"""Anytime numbers only for causal models: an STCB model with ``forward="count"`` (early outputs
depend on later inputs) is refused, with one clear error, by every path that computes them."""

from __future__ import annotations

import argparse

import pytest
import torch

from fewstep.errors import FewstepError
from fewstep.models import build_model
from fewstep.neurons import NeuronSpec


def stcb(forward: str, timesteps: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("stcb_small", num_classes=4, input_shape=(1, 12, 12), timesteps=timesteps,
                        neuron=NeuronSpec(kind="if", reset="soft"), forward=forward, cfg=(4, "M"), hidden=8).eval()
    with torch.no_grad():  # lively: every layer spikes
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(4.0)
    return model


def sequence_feed(n: int = 6, timesteps: int = 3):
    torch.manual_seed(1)
    return [(torch.rand(timesteps, n, 1, 12, 12) * 3, torch.randint(0, 4, (n,)))]


def test_count_forward_is_not_causal_and_if_is():
    from fewstep.infer.anytime import is_causal

    x = torch.rand(3, 5, 1, 12, 12) * 3
    later = x.clone()
    later[-1] += 2.0  # change only the last step's input
    outs = {}
    for forward in ("if", "count"):
        m = stcb(forward)
        with torch.no_grad():
            outs[forward] = (m(x)[0], m(later)[0])  # step-1 outputs
    assert torch.equal(*outs["if"])
    assert not torch.equal(*outs["count"])  # step 1 saw step 3's input
    assert is_causal(stcb("if")) and not is_causal(stcb("count"))


@pytest.mark.parametrize("path", ["cumulative_logits", "sweep_no_timing", "sweep_timing", "margin", "engine",
                                  "streaming"])
def test_every_anytime_path_refuses_a_non_causal_model(path):
    from fewstep.infer import (
        MarginCalibration,
        NoCutoff,
        StreamingClassifier,
        anytime_inference,
        cumulative_logits,
        cutoff_sweep,
    )

    model, feed = stcb("count"), sequence_feed()
    calls = {
        "cumulative_logits": lambda: cumulative_logits(model, feed),
        "sweep_no_timing": lambda: cutoff_sweep(model, feed, [0.1], timing=False),
        "sweep_timing": lambda: cutoff_sweep(model, feed, [0.1], timing=True, repeats=1),
        "margin": lambda: MarginCalibration.from_model(model, feed),
        "engine": lambda: anytime_inference(model, feed, NoCutoff()),
        "streaming": lambda: StreamingClassifier(model),
    }
    with pytest.raises(FewstepError, match="causal"):
        calls[path]()


def test_causal_stcb_still_sweeps():
    from fewstep.infer import cutoff_sweep

    sweep = cutoff_sweep(stcb("if"), sequence_feed(), [0.0, 0.5], timing=False)
    assert len(sweep["accuracy_per_step"]) == 3


def test_eval_cutoff_no_timing_refuses(tmp_path):
    """``fewstep eval --cutoff --no-timing`` on a forward='count' checkpoint: one clear error."""
    from fewstep.config import load_recipe
    from fewstep.infer.cli import run_cutoff
    from fewstep.train.engine import train

    recipe = load_recipe("fmnist-stcb-t2", ["data.dataset='digits'", "model.name='stcb_small'",
                                            "model.options={forward='count', cfg=[4, 'M'], hidden=8}",
                                            "train.epochs=1", "data.train_limit=64", "data.test_limit=32",
                                            "data.val_size=16"])
    report = train(recipe, tmp_path, device="cpu", progress=False, log=lambda s: None)
    assert report["causal"] is False
    from fewstep.report import summary_table

    assert "not causal" in summary_table(report)
    args = argparse.Namespace(checkpoint=str(tmp_path / "last.pt"), cutoff=True, eps=[0.1], target_drop=0.5,
                              margin=False, no_timing=True, out=str(tmp_path / "eval"), device="cpu", data_root=None,
                              calibrate_on="val")
    with pytest.raises(FewstepError, match="causal"):
        run_cutoff(args, {})
