"""Process settings (threads, allocator), train.compile, and the CPU benchmark script."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from benchmark_scripts import load_benchmark

from fewstep import runtime
from fewstep.config import load_recipe
from fewstep.errors import FewstepError
from fewstep.train import train
from fewstep.train.engine import configure_threads


def test_configure_threads_from_argument_env_and_cores(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert configure_threads(1) == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("FEWSTEP_THREADS", "1")
        assert configure_threads() == 1
        monkeypatch.delenv("FEWSTEP_THREADS")
        import os

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        assert configure_threads() == cores
        for bad in ("zero", "0", "-2", "1.5"):
            monkeypatch.setenv("FEWSTEP_THREADS", bad)
            with pytest.raises(FewstepError, match="FEWSTEP_THREADS"):
                configure_threads()
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tune_allocator_is_idempotent_and_can_be_declined(monkeypatch):
    monkeypatch.setattr(runtime, "_tuned", None)
    monkeypatch.setenv("FEWSTEP_MALLOC", "default")
    assert runtime.tune_allocator() is False
    monkeypatch.setattr(runtime, "_tuned", None)
    monkeypatch.delenv("FEWSTEP_MALLOC")
    assert runtime.tune_allocator() is True and runtime.tune_allocator() is True


def test_report_records_threads(tmp_path):
    recipe = load_recipe("quickstart", ["train.epochs=1", "data.train_limit=128", "data.test_limit=64"])
    report = train(recipe, tmp_path, device="cpu", progress=False, log=lambda s: None)
    assert report["threads"] == torch.get_num_threads()
    assert json.loads((tmp_path / "report.json").read_text())["threads"] == report["threads"]


@pytest.mark.slow
def test_train_compile_equals_eager(tmp_path):
    """``train.compile = true``: the compiled model computes what the eager one does (outputs and
    gradients equal up to float rounding), and a run with it trains and checkpoints the plain model."""
    pytest.importorskip("torch._inductor")
    from fewstep.models import build_model
    from fewstep.neurons import NeuronSpec

    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10, input_shape=(1, 8, 8), timesteps=2, neuron=NeuronSpec(),
                        channels=[4, 8], hidden=16)
    x, y = torch.rand(16, 1, 8, 8), torch.arange(16) % 10
    compiled = torch.compile(model)
    outs, grads = [], []
    for m in (model, compiled):
        model.zero_grad()
        out = m(x)
        torch.nn.functional.cross_entropy(out.mean(0), y).backward()
        outs.append(out.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-5)
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-3, atol=1e-5, msg=n)

    recipe = load_recipe("quickstart", ["train.epochs=1", "data.train_limit=96", "data.test_limit=32",
                                        "model.options={channels=[4, 8], hidden=16}", "train.compile=true"])
    report = train(recipe, tmp_path, device="cpu", progress=False, log=lambda s: None)
    assert report["config"]["train"]["compile"] is True and report["accuracy"] is not None
    state = torch.load(tmp_path / "last.pt", weights_only=True)["model"]
    assert set(state) == set(model.state_dict())  # the plain model's names, not the compiled wrapper's


def test_bench_cpu_smoke(tmp_path):
    bench = load_benchmark("bench_cpu")
    payload = bench.main(["--smoke", "--out", str(tmp_path)])
    systems = {r["system"] for r in payload["neurons"]}
    assert {"fewstep", "fewstep reference loop"} <= systems
    fs = [r for r in payload["neurons"] if r["system"] == "fewstep"]
    assert fs and all(r["fwd_bwd_ms"] > 0 and r["pct_floor"] > 0 for r in fs)
    nets = {(r["network"], r["system"]): r for r in payload["networks"]}
    assert nets[("mnist-lif-t2", "fewstep")]["train_img_s"] > 0
    assert nets[("mnist-lif-t2", "fewstep")]["macs_per_image"] > 0
    assert (tmp_path / "results.md").read_text().startswith("CPU:")
    assert payload["floors"]["gemm_gflops"] > 0 and payload["floors"]["copy_gbs"] > 0
