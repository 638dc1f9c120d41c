"""torch.compile, torch.export and ONNX (legacy exporter, run in onnxruntime) of LIF and MT-LIF models.

Each format must give the eager model's output on a time-major input ``[T, B, C, H, W]``: the
spikes of every neuron exactly (they are 0/1 for LIF and counts 0..K for MT-LIF), the logits
exactly for the PyTorch formats and within float32 rounding in onnxruntime. The model pools
(16 x 16 input), so fewstep's CPU kernels for the neurons and for max pooling run in eager mode
and the traced graphs must hold PyTorch ops instead (docs/guides/export.md).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from fewstep.models import build_model
from fewstep.neurons import SpikingNeuron

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guides" / "export.md"
T, B = 2, 3
# A low threshold, so that every layer of the untrained model (BatchNorm with its initial running
# statistics) fires.
NEURONS = {
    "lif": {"kind": "lif", "v_threshold": 0.3},
    "mtlif": {"kind": "mtlif", "num_thresholds": 3, "v_threshold": 0.3},
}


class SpikesAndLogits(nn.Module):
    """A fewstep model whose forward also returns every neuron's spikes (as graph outputs, so
    each format computes them)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        t, b = x.shape[:2]
        y = self.model.stem(x.flatten(0, 1)).unflatten(0, (t, b))
        spikes = []
        for layer in self.model.body:
            y = layer(y)
            if isinstance(layer, SpikingNeuron):
                spikes.append(y)
        return (y, *spikes)


def _model(kind: str) -> nn.Module:
    torch.manual_seed(0)
    m = build_model("small_cnn", num_classes=10, input_shape=(1, 16, 16), timesteps=T, neuron=NEURONS[kind],
                    channels=(4, 8), hidden=16)
    return SpikesAndLogits(m).eval()


def _input(batch: int = B, seed: int = 1) -> torch.Tensor:
    return torch.rand(T, batch, 1, 16, 16, generator=torch.Generator().manual_seed(seed)) * 3.0


def _assert_same(got, expected, *, exact_logits: bool = True) -> None:
    assert len(got) == len(expected)
    logits, *spikes = got
    if exact_logits:
        assert torch.equal(logits, expected[0])
    else:
        torch.testing.assert_close(logits, expected[0], rtol=1e-5, atol=1e-5)
    for s, e in zip(spikes, expected[1:]):
        assert torch.equal(s, e)


@pytest.fixture(scope="module", params=sorted(NEURONS))
def case(request):
    model = _model(request.param)
    x = _input()
    with torch.no_grad():
        expected = model(x)
    for s in expected[1:]:  # the comparison means something: the neurons fire, and (MT-LIF) more than once
        assert 0 < s.count_nonzero() < s.numel()
    if request.param == "mtlif":
        assert any(s.max() > 1 for s in expected[1:])
    return request.param, model, x, expected


def test_torch_compile_aot_eager(case):
    """AOTAutograd's graph without a code generator: no C compiler, seconds rather than the half
    minute inductor's C++ build takes on a busy CPU (tests/test_runtime.py compiles a LIF model
    with inductor)."""
    _, model, x, expected = case
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        _assert_same(compiled(x), expected)


def test_torch_export_round_trip(case):
    """export -> save -> load -> run, with a dynamic batch dimension."""
    _, model, x, expected = case
    ep = torch.export.export(model, (x,), dynamic_shapes={"x": {1: torch.export.Dim("batch")}})
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    buf.seek(0)
    loaded = torch.export.load(buf).module()
    _assert_same(loaded(x), expected)
    x5 = _input(batch=5, seed=2)
    with torch.no_grad():
        _assert_same(loaded(x5), model(x5))


def test_onnx_legacy_exporter_in_onnxruntime(case):
    pytest.importorskip("onnx", reason="ONNX export needs the onnx package (pip install onnx)")
    ort = pytest.importorskip("onnxruntime", reason="running the ONNX graph needs onnxruntime (pip install onnxruntime)")
    _, model, x, expected = case
    buf = io.BytesIO()
    names = ["logits"] + [f"spikes{i}" for i in range(len(expected) - 1)]
    torch.onnx.export(model, (x,), buf, dynamo=False, input_names=["x"], output_names=names)
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x"]  # the graph computes from its input
    got = [torch.from_numpy(a) for a in session.run(names, {"x": x.numpy()})]
    _assert_same(got, expected, exact_logits=False)
    # a second input through the same graph: nothing of the first input was baked in as a constant
    x2 = _input(seed=3)
    with torch.no_grad():
        _assert_same([torch.from_numpy(a) for a in session.run(names, {"x": x2.numpy()})], model(x2),
                     exact_logits=False)


def test_the_export_guide_runs(tmp_path, monkeypatch):
    """docs/guides/export.md: its Python blocks, in order, run as one script (their asserts hold)."""
    pytest.importorskip("onnx", reason="the guide's ONNX section needs the onnx package (pip install onnx)")
    pytest.importorskip("onnxruntime", reason="the guide's ONNX section needs onnxruntime (pip install onnxruntime)")
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)
    assert len(blocks) == 4, "a model, torch.compile, torch.export, ONNX"
    monkeypatch.chdir(tmp_path)  # the guide writes model.pt2 and model.onnx
    torch._dynamo.reset()
    exec(compile("\n".join(blocks), str(GUIDE), "exec"), {"__name__": "export_guide"})
    assert (tmp_path / "model.pt2").is_file() and (tmp_path / "model.onnx").is_file()
