"""Surrogate spike functions: exact Heaviside forward, surrogate backward."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fewstep.neurons import SURROGATES, Surrogate, as_surrogate
from fewstep.neurons.surrogate import DEFAULT_WIDTH, surrogate_primitive

WIDTHS = (0.1, 0.5, 1.0, 2.5)
CASES = [(name, w) for name in SURROGATES for w in WIDTHS]


def _kinks(name: str, w: float) -> list[float]:
    """Points where g is discontinuous or non-differentiable (finite differences are off there)."""
    return {"rectangle": [-w, w], "triangle": [-w, 0.0, w]}.get(name, [])


def test_all_four_surrogates_are_registered():
    assert set(SURROGATES) == {"rectangle", "triangle", "sigmoid", "arctan"}
    assert set(DEFAULT_WIDTH) == set(SURROGATES)


# --------------------------------------------------------------------------- forward


@pytest.mark.parametrize("name,width", CASES)
def test_forward_is_exact_heaviside(name, width):
    x = torch.tensor([-1e30, -3.0, -width, -1e-7, -1e-45, -0.0, 0.0, 1e-45, 1e-7, width, 3.0, 1e30])
    expected = torch.tensor([0.0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1])
    out = Surrogate(name, width)(x)
    assert out.dtype == x.dtype
    assert torch.equal(out, expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_forward_keeps_dtype_and_shape(dtype):
    x = torch.randn(3, 4, 5).to(dtype)
    out = Surrogate()(x)
    assert out.dtype == dtype and out.shape == x.shape
    assert torch.equal(out, (x >= 0).to(dtype))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(allow_nan=False, allow_infinity=True, width=32), min_size=1, max_size=16),
    st.sampled_from(SURROGATES),
)
def test_forward_heaviside_property(values, name):
    x = torch.tensor(values, dtype=torch.float32)
    out = Surrogate(name)(x)
    assert out.tolist() == [1.0 if v >= 0 else 0.0 for v in values]


# --------------------------------------------------------------------------- backward


@pytest.mark.parametrize("name,width", CASES)
def test_backward_matches_finite_differences_of_primitive(name, width):
    x = torch.linspace(-3 * width, 3 * width, 601, dtype=torch.float64) + 1e-3 * width
    eps = 1e-6 * width
    keep = torch.ones_like(x, dtype=torch.bool)
    for k in _kinks(name, width):
        keep &= (x - k).abs() > 10 * eps
    x = x[keep].requires_grad_(True)
    grad_out = torch.rand_like(x) + 0.5
    Surrogate(name, width)(x).backward(grad_out)
    with torch.no_grad():
        fd = (surrogate_primitive(name, x + eps, width) - surrogate_primitive(name, x - eps, width)) / (2 * eps)
    torch.testing.assert_close(x.grad, grad_out * fd, rtol=1e-6, atol=1e-6 / width)
    # the explicit derivative agrees with what backward uses
    torch.testing.assert_close(x.grad, grad_out * Surrogate(name, width).derivative(x.detach()))


@pytest.mark.parametrize("name,width", CASES)
def test_surrogate_derivative_integrates_to_one(name, width):
    # non-uniform grid x = w sinh(u) reaches +-2e8 w, so even the heavy arctan tail is covered
    u = torch.linspace(-20.0, 20.0, 200_001, dtype=torch.float64)
    x = width * torch.sinh(u)
    g = Surrogate(name, width).derivative(x)
    assert torch.all(g >= 0)
    assert torch.trapezoid(g, x).item() == pytest.approx(1.0, abs=2e-4)


# g(x) at hand-picked points, written out from the formulas in the module docstring
LITERAL = [
    ("rectangle", 0.5, [0.0, 0.49, -0.49, 0.5, -0.5, 0.7], [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]),
    ("rectangle", 2.0, [0.0, 1.9, 2.1], [0.25, 0.25, 0.0]),
    ("triangle", 1.0, [0.0, 0.25, -0.5, 1.0, -1.5], [1.0, 0.75, 0.5, 0.0, 0.0]),
    ("triangle", 0.5, [0.0, 0.25, -0.25, 0.6], [2.0, 1.0, 1.0, 0.0]),
    ("sigmoid", 0.25, [0.0], [1.0]),  # sig(0)(1 - sig(0)) / w = 0.25 / 0.25
    ("sigmoid", 1.0, [0.0, math.log(3.0)], [0.25, 0.1875]),  # sig(ln 3) = 3/4 -> 3/16
    ("arctan", 0.5, [0.0, 1 / math.pi, -1 / math.pi], [1.0, 0.5, 0.5]),  # pi x/(2w) = +-1
    ("arctan", 2.0, [0.0, 4 / math.pi], [0.25, 0.125]),
]


@pytest.mark.parametrize("name,width,xs,gs", LITERAL)
def test_derivative_literal_values(name, width, xs, gs):
    x = torch.tensor(xs, dtype=torch.float64, requires_grad=True)
    Surrogate(name, width)(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor(gs, dtype=torch.float64), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", SURROGATES)
def test_backward_low_precision_dtype(name, dtype):
    x = torch.linspace(-2, 2, 41).to(dtype).requires_grad_(True)
    Surrogate(name, 0.5)(x).sum().backward()
    assert x.grad.dtype == dtype
    ref = Surrogate(name, 0.5).derivative(x.detach().double())
    torch.testing.assert_close(x.grad.double(), ref, rtol=2e-2, atol=2e-2)


def test_wider_surrogate_is_flatter():
    for name in SURROGATES:
        narrow, wide = Surrogate(name, 0.25), Surrogate(name, 1.0)
        zero = torch.zeros(1, dtype=torch.float64)
        assert narrow.derivative(zero).item() == pytest.approx(4 * wide.derivative(zero).item())


# --------------------------------------------------------------------------- construction


def test_defaults():
    s = Surrogate()
    assert (s.name, s.width) == ("triangle", 1.0)
    for name, w in DEFAULT_WIDTH.items():
        assert Surrogate(name).width == w
    assert Surrogate("sigmoid", 2).width == 2


@pytest.mark.parametrize("name", ["", "relu", "Triangle", "gaussian", None, 3, ["triangle"]])
def test_unknown_name_raises(name):
    with pytest.raises(ValueError, match="unknown surrogate"):
        Surrogate(name)


@pytest.mark.parametrize("width", [0, 0.0, -0.5, -1, float("nan"), float("inf"), "1.0", True, torch.tensor(1.0)])
def test_invalid_width_raises(width):
    with pytest.raises(ValueError, match="width"):
        Surrogate("triangle", width)


def test_primitive_unknown_name_raises():
    with pytest.raises(ValueError):
        surrogate_primitive("relu", torch.zeros(3), 1.0)


@pytest.mark.parametrize("name", SURROGATES)
def test_primitive_limits(name):
    x = torch.tensor([-1e12, 0.0, 1e12], dtype=torch.float64)
    G = surrogate_primitive(name, x, 0.7)
    torch.testing.assert_close(G, torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64), atol=1e-9, rtol=0)


def test_surrogate_is_frozen_and_hashable():
    s = Surrogate("arctan", 0.3)
    with pytest.raises(Exception):
        s.width = 1.0  # type: ignore[misc]
    assert s == Surrogate("arctan", 0.3) and hash(s) == hash(Surrogate("arctan", 0.3))
    assert s != Surrogate("arctan", 0.4)


# --------------------------------------------------------------------------- as_surrogate


def test_as_surrogate_none_is_default_triangle():
    assert as_surrogate(None) == Surrogate("triangle", 1.0)
    assert as_surrogate(None, 0.3) == Surrogate("triangle", 0.3)


def test_as_surrogate_from_name():
    assert as_surrogate("sigmoid") == Surrogate("sigmoid", DEFAULT_WIDTH["sigmoid"])
    assert as_surrogate("arctan", 0.2) == Surrogate("arctan", 0.2)
    with pytest.raises(ValueError):
        as_surrogate("relu")
    with pytest.raises(ValueError):
        as_surrogate("")  # an empty name is an error, not a silent triangle
    with pytest.raises(ValueError):
        as_surrogate("sigmoid", -1.0)


def test_as_surrogate_instance_passthrough_and_width_override():
    s = Surrogate("sigmoid", 0.4)
    assert as_surrogate(s) is s
    t = as_surrogate(s, 0.1)  # an explicit width is not silently dropped
    assert t == Surrogate("sigmoid", 0.1) and s.width == 0.4
    with pytest.raises(ValueError):
        as_surrogate(s, 0.0)
