"""fewstep's fused CPU layers (fewstep.kernels.cpu_ops, fewstep.layers.fast) against PyTorch's."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fewstep.kernels import cpu_ops
from fewstep.layers import BatchNorm2d, Dropout, MaxPool2d

pytestmark = pytest.mark.skipif(not cpu_ops.available(), reason="the CPU ops library could not be built here")

INF, NAN = float("inf"), float("nan")


def _pool_pair(x: torch.Tensor):
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = cpu_ops.max_pool2x2(a), nn.functional.max_pool2d(b, 2)
    g = torch.randn_like(yb)
    ya.backward(g)
    yb.backward(g)
    return ya, yb, a.grad, b.grad


@pytest.mark.parametrize("shape", [(4, 3, 8, 8), (2, 5, 7, 9), (2, 3, 40, 38), (1, 1, 2, 2), (3, 66, 34),
                                   (2, 2, 28, 28), (1, 2, 3, 70)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_max_pool_equals_pytorch_bit_for_bit(shape, dtype):
    torch.manual_seed(sum(shape))
    for x in (torch.randn(shape, dtype=dtype), (torch.rand(shape) > 0.6).to(dtype)):  # ties everywhere
        ya, yb, ga, gb = _pool_pair(x)
        assert torch.equal(ya, yb) and torch.equal(ga, gb)


def test_max_pool_nan_and_inf_follow_pytorch():
    x = torch.tensor([[[[NAN, 1.0, -INF, -INF], [2.0, NAN, -INF, -INF]],
                       [[1.0, NAN, 5.0, 5.0], [NAN, 3.0, 5.0, 5.0]]]])
    ya, yb, ga, gb = _pool_pair(x)
    assert torch.equal(ya.isnan(), yb.isnan()) and torch.equal(ya.nan_to_num(), yb.nan_to_num())
    assert torch.equal(ga, gb)


def test_max_pool_module_falls_back_for_other_geometry():
    x = torch.randn(2, 3, 9, 9)
    for kw in (dict(kernel_size=3), dict(kernel_size=2, stride=1), dict(kernel_size=2, padding=1),
               dict(kernel_size=2, ceil_mode=True)):
        assert not MaxPool2d(**kw)._fused
        assert torch.equal(MaxPool2d(**kw)(x), nn.MaxPool2d(**kw)(x))
    assert MaxPool2d(2)._fused and MaxPool2d((2, 2), stride=2)._fused
    assert "MaxPool2x2" in MaxPool2d(2)(x.requires_grad_()).grad_fn.name()
    assert cpu_ops.try_max_pool2x2(x.transpose(2, 3)) is None  # non-contiguous: PyTorch's path
    assert cpu_ops.try_max_pool2x2(x.half()) is None


def test_kernels_off_uses_pytorch(monkeypatch):
    monkeypatch.setenv("FEWSTEP_KERNELS", "reference")
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    assert MaxPool2d(2)(x).grad_fn.name().startswith("MaxPool2DWithIndices")
    assert cpu_ops.try_dropout(x, 0.5) is None and cpu_ops.try_batch_norm_train(x, None, None, 1e-5) is None


def test_dropout_distribution_scale_and_backward():
    torch.manual_seed(0)
    x = torch.randn(400, 1000, requires_grad=True)
    y = cpu_ops.dropout(x, 0.2)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.8) < 0.003
    scale = torch.ones(()).div_(0.8)  # PyTorch's noise.div_(1 - p), in float32
    assert torch.equal(y[kept], x.detach()[kept] * scale)
    g = torch.randn_like(y)
    y.backward(g)
    assert torch.equal(x.grad, torch.where(kept, g * scale, torch.zeros(())))  # the same mask, recomputed


def test_dropout_follows_torch_seed_and_differs_per_call():
    x = torch.ones(10_000)
    torch.manual_seed(3)
    a, b = cpu_ops.dropout(x, 0.5), cpu_ops.dropout(x, 0.5)
    torch.manual_seed(3)
    c = cpu_ops.dropout(x, 0.5)
    assert torch.equal(a, c) and not torch.equal(a, b)
    # neighbouring elements are independent (no stripes from the counter-based generator)
    k = (a != 0).float()
    corr = torch.corrcoef(torch.stack([k[:-1], k[1:]]))[0, 1]
    assert abs(corr.item()) < 0.05


def test_dropout_module_train_and_eval():
    d = Dropout(0.3)
    x = torch.randn(64, 64)
    d.eval()
    assert torch.equal(d(x), x)
    d.train()
    assert "Dropout" in d(x.requires_grad_()).grad_fn.name()
    assert torch.equal(Dropout(0.0)(x), x)
    assert torch.equal(Dropout(1.0)(x), torch.zeros_like(x))  # PyTorch's own path for p = 1


@pytest.mark.parametrize("shape", [(8, 3, 5, 5), (64, 16, 14, 14), (4, 7, 1, 9), (2, 5, 3, 1)])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_batch_norm_matches_pytorch(shape, momentum):
    torch.manual_seed(1)
    a, b = BatchNorm2d(shape[1], momentum=momentum), nn.BatchNorm2d(shape[1], momentum=momentum)
    with torch.no_grad():
        a.weight.uniform_(0.5, 1.5)
        a.bias.uniform_(-1, 1)
    b.load_state_dict(a.state_dict())
    for step in range(3):
        x = torch.randn(shape) * 3 + step
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = a(xa), b(xb)
        assert "BatchNormTrain" in ya.grad_fn.name()
        g = torch.randn_like(ya)
        ya.backward(g)
        yb.backward(g)
        torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a.weight.grad, b.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(a.bias.grad, b.bias.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(a.running_mean, b.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.running_var, b.running_var, rtol=1e-5, atol=1e-6)
    assert a.num_batches_tracked.item() == b.num_batches_tracked.item() == 3
    a.eval()
    b.eval()
    x = torch.randn(shape)
    torch.testing.assert_close(a(x), b(x))


def test_batch_norm_gradcheck_float64():
    torch.manual_seed(2)
    x = torch.randn(3, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    w = torch.rand(2, dtype=torch.float64, requires_grad=True) + 0.5
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: cpu_ops.batch_norm_train(x, w, b, 1e-5), (x, w, b))


def test_batch_norm_without_affine_or_running_stats():
    torch.manual_seed(4)
    x = torch.randn(6, 3, 4, 4)
    for kw in (dict(affine=False), dict(track_running_stats=False)):
        a, b = BatchNorm2d(3, **kw), nn.BatchNorm2d(3, **kw)
        torch.testing.assert_close(a(x), b(x), rtol=1e-5, atol=1e-5)
        a.eval()
        b.eval()
        torch.testing.assert_close(a(x), b(x), rtol=1e-5, atol=1e-5)


def test_models_use_the_fused_layers():
    from fewstep.models import build_model
    from fewstep.neurons import NeuronSpec

    m = build_model("small_cnn", num_classes=10, input_shape=(1, 28, 28), timesteps=2, neuron=NeuronSpec(),
                    dropout=0.2)
    kinds = {type(x) for x in m.modules()}
    assert {BatchNorm2d, MaxPool2d, Dropout} <= kinds
    assert nn.BatchNorm2d not in kinds and nn.MaxPool2d not in kinds and nn.Dropout not in kinds
