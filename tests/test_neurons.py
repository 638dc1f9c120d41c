"""Neuron dynamics, gradients, state handling and construction from specs."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from fewstep.neurons import (
    IF,
    LIF,
    MTLIF,
    NEURON_KINDS,
    PLIF,
    NeuronParams,
    NeuronSpec,
    SpikingNeuron,
    Surrogate,
    make_neuron,
    neuron_multistep,
    neuron_step,
    reset_net,
    set_step_mode,
    spiking_neurons,
)

F64 = torch.float64


def _run(neuron: SpikingNeuron, xs: list[float]):
    """Run a neuron on a scalar sequence (T = len(xs), B = 1) in float64; return
    (spikes, membranes h_t) as lists."""
    neuron.record = True
    x = torch.tensor(xs, dtype=F64).reshape(-1, 1)
    out = neuron(x)
    assert out.shape == (len(xs), 1)
    return out[:, 0].tolist(), neuron.last_membrane[:, 0].tolist()


def _assert_seq(got, expected, exact=False):
    assert len(got) == len(expected)
    if exact:
        assert got == expected
    else:
        assert got == pytest.approx(expected, abs=1e-12)


def _check_by_hand(n: SpikingNeuron, xs: list[float], spikes: list[float], membranes: list[float],
                   v_last: float | None = None) -> None:
    """Run ``n`` on ``xs`` and compare with the hand-computed spikes (exactly) and membranes h_t;
    with ``v_last``, the neuron keeps its state and its final membrane v is compared too."""
    if v_last is not None:
        n.keep_state = True
    s, h = _run(n, xs)
    _assert_seq(s, spikes, exact=True)
    _assert_seq(h, membranes)
    if v_last is not None:
        assert n.v[0].item() == pytest.approx(v_last, abs=1e-12)


# =========================================================================== hand-computed dynamics

X = [0.6, 0.6, 0.6, 2.5, 0.1]


def test_if_soft_reset_by_hand():
    # decay 1, V_th 1, v0 = 0, v_t = h_t - s_t
    # t0: h = 0   + 0.6 = 0.6  s=0  v=0.6
    # t1: h = 0.6 + 0.6 = 1.2  s=1  v=0.2
    # t2: h = 0.2 + 0.6 = 0.8  s=0  v=0.8
    # t3: h = 0.8 + 2.5 = 3.3  s=1  v=2.3   (K=1: one spike even though h >= 3)
    # t4: h = 2.3 + 0.1 = 2.4  s=1  v=1.4
    n = IF(reset="soft")
    _check_by_hand(n, X, [0.0, 1.0, 0.0, 1.0, 1.0], [0.6, 1.2, 0.8, 3.3, 2.4], v_last=1.4)


def test_if_hard_reset_by_hand():
    # t0: h = 0.6 s=0 v=0.6 | t1: h = 1.2 s=1 v=0 | t2: h = 0.6 s=0 v=0.6
    # t3: h = 3.1 s=1 v=0  | t4: h = 0.1 s=0 v=0.1
    n = IF()
    _check_by_hand(n, X, [0.0, 1.0, 0.0, 1.0, 0.0], [0.6, 1.2, 0.6, 3.1, 0.1], v_last=0.1)


def test_lif_hard_reset_decay_half_by_hand():
    # h_t = 0.5 v_{t-1} + x_t
    # t0: h = 0.6                s=0 v=0.6
    # t1: h = 0.3   + 0.6 = 0.9  s=0 v=0.9
    # t2: h = 0.45  + 0.6 = 1.05 s=1 v=0
    # t3: h = 0     + 2.5 = 2.5  s=1 v=0
    # t4: h = 0     + 0.1 = 0.1  s=0 v=0.1
    n = LIF(decay=0.5, reset="hard")
    _check_by_hand(n, X, [0.0, 0.0, 1.0, 1.0, 0.0], [0.6, 0.9, 1.05, 2.5, 0.1], v_last=0.1)


def test_lif_soft_reset_by_hand():
    # t0: h = 0.6                   s=0 v=0.6
    # t1: h = 0.3    + 0.6 = 0.9    s=0 v=0.9
    # t2: h = 0.45   + 0.6 = 1.05   s=1 v=0.05
    # t3: h = 0.025  + 2.5 = 2.525  s=1 v=1.525
    # t4: h = 0.7625 + 0.1 = 0.8625 s=0 v=0.8625
    n = LIF(decay=0.5, reset="soft")
    _check_by_hand(n, X, [0.0, 0.0, 1.0, 1.0, 0.0], [0.6, 0.9, 1.05, 2.525, 0.8625], v_last=0.8625)


def test_lif_hard_reset_nonzero_v_reset_by_hand():
    # v_reset = v_rest = -0.5, decay 0.5: h_t = -0.5 + 0.5 (v_{t-1} + 0.5) + x_t, v0 = -0.5
    # t0: h = -0.5 + 0.5*0    + 0.6 = 0.1    s=0 v=0.1
    # t1: h = -0.5 + 0.5*0.6  + 0.6 = 0.4    s=0 v=0.4
    # t2: h = -0.5 + 0.5*0.9  + 0.6 = 0.55   s=0 v=0.55
    # t3: h = -0.5 + 0.5*1.05 + 2.5 = 2.525  s=1 v=-0.5
    # t4: h = -0.5 + 0.5*0    + 0.1 = -0.4   s=0 v=-0.4
    n = LIF(decay=0.5, reset="hard", v_reset=-0.5)
    _check_by_hand(n, X, [0.0, 0.0, 0.0, 1.0, 0.0], [0.1, 0.4, 0.55, 2.525, -0.4], v_last=-0.4)


def test_mtlif_k3_soft_reset_by_hand():
    # K = 3, V_th = 1, decay sigmoid(logit(0.5)) = 0.5, v_t = h_t - s_t
    # x = [0.6, 0.6, 2.5, 3.2, 0.1, 6.0, 0.0]
    # t0: h = 0.6                        s=0 v=0.6
    # t1: h = 0.3     + 0.6 = 0.9        s=0 v=0.9
    # t2: h = 0.45    + 2.5 = 2.95       s=2 v=0.95
    # t3: h = 0.475   + 3.2 = 3.675      s=3 v=0.675
    # t4: h = 0.3375  + 0.1 = 0.4375     s=0 v=0.4375
    # t5: h = 0.21875 + 6.0 = 6.21875    s=3 (capped at K) v=3.21875
    # t6: h = 1.609375 + 0  = 1.609375   s=1 v=0.609375
    n = MTLIF(num_thresholds=3)
    assert n.learnable_decay and n.reset_mode == "soft"
    _check_by_hand(n, [0.6, 0.6, 2.5, 3.2, 0.1, 6.0, 0.0], [0.0, 0.0, 2.0, 3.0, 0.0, 3.0, 1.0],
                   [0.6, 0.9, 2.95, 3.675, 0.4375, 6.21875, 1.609375], v_last=0.609375)


def test_mtlif_hard_reset_by_hand():
    # K = 2, hard reset to 0, decay 0.5: t0 h=2.2 s=2 v=0 | t1 h=1.5 s=1 v=0 | t2 h=0.9 s=0 v=0.9
    _check_by_hand(MTLIF(num_thresholds=2, reset="hard", learnable_decay=False), [2.2, 1.5, 0.9], [2.0, 1.0, 0.0],
                   [2.2, 1.5, 0.9])


def test_scale_output_lif_by_hand():
    # LIF hard, V_th = 2: h = 0.6, 0.9, 1.05, 0.525 + 2.5 = 3.025 (spike, v=0), 0.1
    # output = s * V_th = [0, 0, 0, 2, 0]
    _check_by_hand(LIF(v_threshold=2.0, scale_output=True), X, [0.0, 0.0, 0.0, 2.0, 0.0], [0.6, 0.9, 1.05, 3.025, 0.1])


def test_scale_output_mtlif_by_hand():
    # MT-LIF K=2, V_th=0.5, soft, decay 0.5; x = [0.3, 0.3, 1.2, 0.0]
    # t0: h = 0.3                 s=0 v=0.3
    # t1: h = 0.15  + 0.3 = 0.45  s=0 v=0.45
    # t2: h = 0.225 + 1.2 = 1.425 s=2 (>=0.5, >=1.0) v = 1.425 - 1.0 = 0.425
    # t3: h = 0.2125              s=0
    # output = s * 0.5 = [0, 0, 1.0, 0]
    _check_by_hand(MTLIF(num_thresholds=2, v_threshold=0.5, scale_output=True), [0.3, 0.3, 1.2, 0.0],
                   [0.0, 0.0, 1.0, 0.0], [0.3, 0.45, 1.425, 0.2125])


def test_threshold_is_inclusive():
    # dyadic inputs, exact in binary: h = 0.5, 1.0 (exactly V_th -> spike), 0.25
    s, h = _run(IF(), [0.5, 0.5, 0.25])
    _assert_seq(s, [0.0, 1.0, 0.0], exact=True)
    _assert_seq(h, [0.5, 1.0, 0.25], exact=True)
    # just below the threshold: no spike
    s, _ = _run(IF(), [0.5, 0.5 - 2**-40])
    assert s == [0.0, 0.0]


def test_batch_elements_are_independent():
    x = torch.tensor([[0.6, 2.0, -1.0], [0.6, 0.0, 3.0]], dtype=F64)  # [T=2, B=3]
    out = LIF()(x)
    # column 0: 0.6, 0.9 -> no spikes; column 1: 2.0 spike, then 0 -> 0; column 2: -1, -0.5 + 3 spike
    assert out.tolist() == [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]


def test_functional_matches_module_and_returns_final_state():
    x = torch.randn(6, 4, 3, dtype=F64) * 1.5
    # 0.75 and 0.625 are exact in float32, see test_fixed_decay_and_threshold_keep_full_precision
    p = NeuronParams(decay=0.75, v_threshold=0.625, num_thresholds=2, reset="soft")
    out = neuron_multistep(x, p)
    assert out.spikes.shape == out.membrane.shape == x.shape and out.v.shape == x.shape[1:]
    n = MTLIF(num_thresholds=2, decay=0.75, v_threshold=0.625, learnable_decay=False)
    n.record = True
    assert torch.equal(n(x), out.spikes)
    assert torch.equal(n.last_membrane, out.membrane)
    # final state: v_T = h_T - s_T V_th
    torch.testing.assert_close(out.v, out.membrane[-1] - out.spikes[-1] * 0.625)


def test_fixed_decay_and_threshold_keep_full_precision():
    n = LIF(decay=0.7, v_threshold=0.8)
    assert n.params().decay == 0.7 and n.params().v_threshold == 0.8
    n = n.to(torch.bfloat16)
    assert n.params().decay == 0.7 and n.params().v_threshold == 0.8
    with pytest.raises(ValueError):
        LIF(v_threshold=float("nan"))


def test_functional_rejects_bad_shapes_and_reset():
    with pytest.raises(ValueError):
        neuron_multistep(torch.zeros(5), NeuronParams())
    with pytest.raises(ValueError):
        neuron_multistep(torch.zeros(0, 3), NeuronParams())
    with pytest.raises(ValueError):
        neuron_step(torch.zeros(3), torch.zeros(3), NeuronParams(reset="medium"))


def test_functional_v0_is_used():
    x = torch.tensor([[0.6]], dtype=F64)
    # v0 = 0.9, decay 0.5 soft: h = 0.45 + 0.6 = 1.05 -> spike
    out = neuron_multistep(x, NeuronParams(reset="soft"), v0=torch.tensor([0.9], dtype=F64))
    assert out.spikes.item() == 1.0 and out.membrane.item() == pytest.approx(1.05, abs=1e-12)


# =========================================================================== MT-LIF K=1 == LIF


@pytest.mark.parametrize("reset", ["hard", "soft"])
@pytest.mark.parametrize("detach_reset", [False, True])
def test_mtlif_k1_equals_lif(reset, detach_reset):
    x = (torch.randn(8, 5, 7, dtype=F64) * 1.2 + 0.4)
    kw = dict(decay=0.7, reset=reset, v_threshold=0.9, detach_reset=detach_reset)
    lif = LIF(learnable_decay=True, **kw).double()
    mt = MTLIF(num_thresholds=1, **kw).double()
    assert mt.learnable_decay
    grads, outs = [], []
    for n in (lif, mt):
        n.record = True
        xi = x.clone().requires_grad_(True)
        out = n(xi)
        w = torch.linspace(-1, 1, out.numel(), dtype=F64).reshape(out.shape)
        ((out * w).sum() + (n.last_membrane**2 * w).sum()).backward()
        outs.append((out, n.last_membrane))
        grads.append((xi.grad, n.decay_logit.grad))
    assert outs[0][0].sum() > 0  # spikes happened, the comparison is not vacuous
    assert torch.equal(outs[0][0], outs[1][0])
    assert torch.equal(outs[0][1], outs[1][1])
    assert torch.equal(grads[0][0], grads[1][0])
    assert torch.equal(grads[0][1], grads[1][1])
    assert grads[0][1].abs() > 0


# =========================================================================== gradients


def _g_triangle(x, w):
    return torch.clamp(w - x.abs(), min=0.0) / w**2


def _g_sigmoid(x, w):
    s = 1.0 / (1.0 + torch.exp(-x / w))
    return s * (1 - s) / w


_G = {"triangle": _g_triangle, "sigmoid": _g_sigmoid}


def _manual_bptt(x, a, b, *, lam, theta, K, reset, v_reset, detach, scale, sg, width):
    """Forward + hand-derived backward (BPTT) of L = sum_t a_t o_t + b_t h_t.

    Returns spikes, membranes, dL/dx, dL/dlambda, dL/dtheta (the last two summed over the batch).
    Written independently of fewstep.neurons.functional, with the derivative formulas:
      dh_t/dv_{t-1} = lambda, dh_t/dlambda = v_{t-1} - v_rest, dh_t/dx_t = 1
      ds/dh = sum_k g(h - k th), ds/dth = -sum_k k g(h - k th)
      hard: v = h (1 - H1) + v_r H1 -> dv/dh = 1 - H1 + (v_r - h) g1, dv/dth = -(v_r - h) g1
      soft: v = h - s th           -> dv/dh = 1 - th ds/dh,          dv/dth = -s - th ds/dth
    (with detach the surrogate terms of dv vanish).
    """
    g = _G[sg]
    T = x.shape[0]
    rest = v_reset if reset == "hard" else 0.0
    v = torch.full_like(x[0], rest)
    cache = []
    spikes, mems = [], []
    for t in range(T):
        h = rest + lam * (v - rest) + x[t]
        Hs = [(h - k * theta >= 0).to(x.dtype) for k in range(1, K + 1)]
        gs = [g(h - k * theta, width) for k in range(1, K + 1)]
        s = sum(Hs)
        v_prev = v
        v = h * (1 - Hs[0]) + v_reset * Hs[0] if reset == "hard" else h - s * theta
        cache.append((h, Hs, gs, s, v_prev))
        spikes.append(s * theta if scale else s)
        mems.append(h)
    dx = torch.zeros_like(x)
    dlam = torch.zeros((), dtype=x.dtype)
    dth = torch.zeros((), dtype=x.dtype)
    dv = torch.zeros_like(x[0])
    for t in reversed(range(T)):
        h, Hs, gs, s, v_prev = cache[t]
        ds_dh = sum(gs)
        ds_dth = -sum(k * gk for k, gk in enumerate(gs, start=1))
        do_dh = theta * ds_dh if scale else ds_dh
        do_dth = s + theta * ds_dth if scale else ds_dth
        if reset == "hard":
            dv_dh = 1 - Hs[0] + (0.0 if detach else (v_reset - h) * gs[0])
            dv_dth = 0.0 if detach else -(v_reset - h) * gs[0]
        else:
            dv_dh = 1 - (0.0 if detach else theta * ds_dh)
            dv_dth = -s - (0.0 if detach else theta * ds_dth)
        dh = a[t] * do_dh + b[t] + dv * dv_dh
        dth = dth + (a[t] * do_dth + dv * dv_dth).sum()
        dx[t] = dh
        dlam = dlam + (dh * (v_prev - rest)).sum()
        dv = dh * lam
    return torch.stack(spikes), torch.stack(mems), dx, dlam, dth


BPTT_CASES = [
    # reset, K, v_reset, detach, scale, surrogate, width
    ("hard", 1, 0.0, False, False, "triangle", 1.0),
    ("hard", 1, -0.3, False, False, "sigmoid", 0.4),
    ("hard", 1, 0.0, True, False, "triangle", 0.5),
    ("soft", 1, 0.0, False, False, "triangle", 1.0),
    ("soft", 1, 0.0, True, True, "sigmoid", 0.3),
    ("soft", 3, 0.0, False, False, "triangle", 0.7),
    ("soft", 3, 0.0, False, True, "sigmoid", 0.5),
    ("soft", 2, 0.0, True, False, "triangle", 1.0),
    ("hard", 2, 0.2, False, False, "triangle", 0.8),
]


@pytest.mark.parametrize("reset,K,v_reset,detach,scale,sg,width", BPTT_CASES)
def test_autograd_matches_hand_derived_bptt(reset, K, v_reset, detach, scale, sg, width):
    T, B = 6, 16
    x = (torch.randn(T, B, dtype=F64) * 0.9 + 0.5)
    a = torch.randn(T, B, dtype=F64)
    b = torch.randn(T, B, dtype=F64)
    n = MTLIF(
        num_thresholds=K, decay=0.65, v_threshold=0.7, reset=reset, v_reset=v_reset, detach_reset=detach,
        scale_output=scale, surrogate=sg, width=width, learnable_threshold=True,
    ).double()
    n.record = True
    xi = x.clone().requires_grad_(True)
    out = n(xi)
    ((a * out).sum() + (b * n.last_membrane).sum()).backward()

    # the module stores its parameters in float32 before .double(): use the values it really holds
    lam = torch.sigmoid(n.decay_logit.detach()).item()
    theta = n.threshold.item()
    assert lam == pytest.approx(0.65) and theta == pytest.approx(0.7)
    s, h, dx, dlam, dth = _manual_bptt(
        x, a, b, lam=lam, theta=theta, K=K, reset=reset, v_reset=v_reset, detach=detach, scale=scale, sg=sg, width=width
    )
    assert (s > 0).any()  # spikes and resets actually occur
    torch.testing.assert_close(out.detach(), s, rtol=0, atol=1e-12)
    torch.testing.assert_close(n.last_membrane.detach(), h, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(xi.grad, dx, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(n.decay_logit.grad, dlam * lam * (1 - lam), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(n.threshold.grad, dth, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("reset", ["hard", "soft"])
def test_gradcheck_membrane_subthreshold_plif(reset):
    # Inputs in [-1, 0.1] with decay 0.7 keep h <= 0.1 / 0.3 < 0.5 = V_th - width: no spike and a
    # zero triangle surrogate, so the membrane is exactly linear in x and smooth in decay_logit and
    # finite differences must match autograd (including the sigmoid parameterisation of the decay).
    n = PLIF(decay=0.7, reset=reset, v_reset=-0.2 if reset == "hard" else 0.0, surrogate="triangle", width=0.5)
    n = n.double()
    n.record = True
    x = (torch.rand(5, 3, dtype=F64) * 1.1 - 1.0).requires_grad_(True)
    w = n.decay_logit.detach().clone().requires_grad_(True)

    def membrane(x, w):
        torch.func.functional_call(n, {"decay_logit": w}, (x,))
        assert n.last_spikes.sum() == 0
        return n.last_membrane

    assert torch.autograd.gradcheck(membrane, (x, w), eps=1e-6, atol=1e-8)
    assert torch.autograd.gradgradcheck(membrane, (x, w), eps=1e-6, atol=1e-6)


def test_plif_decay_gradient_closed_form():
    # constant input c below threshold, soft reset, T = 3: h_2 = c (1 + lam + lam^2)
    # dh_2/dw = c (1 + 2 lam) lam (1 - lam) with lam = sigmoid(w); lam = 0.5, c = 0.2 ->
    # dh_2/dw = 0.2 * 2 * 0.25 = 0.1 and h_2 = 0.2 * 1.75 = 0.35.
    # Triangle width 0.5: g(h - 1) = 0 for h < 0.5, so the reset path adds no surrogate term.
    n = PLIF(decay=0.5, reset="soft", width=0.5).double()
    n.record = True
    n(torch.full((3, 1), 0.2, dtype=F64))
    assert n.last_membrane[2, 0].item() == pytest.approx(0.35, abs=1e-12)
    n.last_membrane[2, 0].backward()
    assert n.decay_logit.grad.item() == pytest.approx(0.1, abs=1e-12)


def test_detach_reset_changes_gradient_only():
    x = torch.randn(6, 8, dtype=F64) + 0.8
    res = []
    for detach in (False, True):
        n = LIF(detach_reset=detach).double()
        xi = x.clone().requires_grad_(True)
        out = n(xi)
        out.sum().backward()
        res.append((out.detach(), xi.grad))
    assert torch.equal(res[0][0], res[1][0])
    assert not torch.allclose(res[0][1], res[1][1])


def test_fixed_decay_has_no_parameters():
    assert list(LIF().parameters()) == []
    assert list(IF().parameters()) == []
    assert [n for n, _ in PLIF().named_parameters()] == ["decay_logit"]
    assert {n for n, _ in LIF(learnable_threshold=True).named_parameters()} == {"threshold"}
    assert PLIF(decay=0.8).decay.item() == pytest.approx(0.8)


# =========================================================================== modes and state


def _neurons_for_mode_tests():
    return [
        IF(reset="soft"),
        LIF(),
        LIF(reset="soft", decay=0.8, v_reset=0.1),
        LIF(v_reset=-0.3, surrogate="arctan"),
        PLIF(decay=0.6),
        MTLIF(num_thresholds=3, v_threshold=0.7),
        MTLIF(num_thresholds=2, reset="hard", scale_output=True),
    ]


@pytest.mark.parametrize("idx", range(7))
def test_single_step_equals_multistep(idx):
    x = torch.randn(7, 4, 3) * 1.5 + 0.3
    m = _neurons_for_mode_tests()[idx]
    s = _neurons_for_mode_tests()[idx]
    s.load_state_dict(m.state_dict())
    m.record = True
    xm = x.clone().requires_grad_(True)
    out_m = m(xm)
    mem_m = m.last_membrane
    out_m.sum().backward()

    s.step_mode = "s"
    s.record = True
    xs = x.clone().requires_grad_(True)
    outs, mems = [], []
    for t in range(x.shape[0]):
        outs.append(s(xs[t]))
        assert s.last_spikes.shape == x.shape[1:]
        mems.append(s.last_membrane)
    out_s = torch.stack(outs)
    out_s.sum().backward()
    assert out_m.sum() > 0
    assert torch.equal(out_s, out_m)
    assert torch.equal(torch.stack(mems), mem_m)
    assert torch.equal(xs.grad, xm.grad)


def _model():
    model = nn.Sequential(
        nn.Linear(3, 8), LIF(), nn.Linear(8, 8), PLIF(), nn.Linear(8, 4), MTLIF(num_thresholds=2)
    ).double()
    with torch.no_grad():  # large weights so that every layer spikes
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.normal_(0.0, 1.0)
                m.bias.fill_(0.3)
    return model


@pytest.mark.parametrize("mode", ["s", "m_keep_state"])
def test_reset_net_makes_samples_independent(mode):
    torch.manual_seed(1)
    model = _model()
    fresh = copy.deepcopy(model)  # before any forward: no state with a graph yet
    for m in (model, fresh):
        if mode == "s":
            set_step_mode(m, "s")
        else:
            for _, n in spiking_neurons(m):
                n.keep_state = True
    a = torch.randn(5, 2, 3, dtype=F64) * 2
    b = torch.randn(5, 2, 3, dtype=F64) * 2

    def run(m, seq):
        if mode == "s":
            return torch.stack([m(seq[t]) for t in range(seq.shape[0])])
        return m(seq)

    out_a = run(model, a)
    assert all(n.v is not None for _, n in spiking_neurons(model))
    stale = run(model, b)  # no reset: the state left by sample a leaks into b
    reset_net(model)
    assert all(n.v is None for _, n in spiking_neurons(model))
    out_b = run(model, b)
    ref_b = run(fresh, b)
    assert ref_b.sum() > 0
    assert torch.equal(out_b, ref_b)
    assert not torch.equal(stale, ref_b)
    reset_net(model)
    assert torch.equal(run(model, a), out_a)


def test_reset_net_calls_reset_state_of_other_modules():
    class Stateful(nn.Module):
        def __init__(self):
            super().__init__()
            self.calls = 0

        def reset_state(self):
            self.calls += 1

    model = nn.Sequential(Stateful(), LIF(step_mode="s"), nn.Sequential(Stateful()))
    model[1](torch.ones(2))
    reset_net(model)
    assert model[0].calls == 1 and model[2][0].calls == 1 and model[1].v is None


def test_multistep_resets_each_call_without_keep_state():
    n = LIF()
    x = torch.randn(5, 3, 4) + 0.7
    first = n(x)
    assert n.v is None
    assert torch.equal(n(x), first)


def test_keep_state_continues_across_calls():
    x = torch.randn(8, 3, 4, dtype=F64) + 0.6
    full = MTLIF(num_thresholds=2).double()
    split = copy.deepcopy(full)
    ref = full(x)
    split.keep_state = True
    out = torch.cat([split(x[:3]), split(x[3:])])
    assert torch.equal(out, ref)
    # without keep_state the second chunk starts from rest and differs
    fresh_tail = copy.deepcopy(full)(x[3:])
    assert torch.equal(fresh_tail, neuron_multistep(x[3:], full.params()).spikes)
    assert not torch.equal(fresh_tail, ref[3:])
    # reset_net clears the kept state
    reset_net(split)
    assert split.v is None
    assert torch.equal(split(x), ref)


def test_record_stores_time_major_tensors():
    n = LIF()
    x = torch.randn(4, 2, 3, 5)
    n(x)
    assert n.last_spikes is None and n.last_membrane is None
    n.record = True
    out = n(x)
    assert n.last_spikes.shape == (4, 2, 3, 5) and n.last_membrane.shape == (4, 2, 3, 5)
    assert torch.equal(n.last_spikes, out)
    assert torch.equal(n.last_membrane, neuron_multistep(x, n.params()).membrane)
    n.reset()
    assert n.last_spikes is None and n.last_membrane is None


def test_set_step_mode_and_spiking_neurons():
    model = _model()
    names = [name for name, _ in spiking_neurons(model)]
    assert names == ["1", "3", "5"]
    assert [type(m) for _, m in spiking_neurons(model)] == [LIF, PLIF, MTLIF]
    set_step_mode(model, "s")
    assert all(m.step_mode == "s" for _, m in spiking_neurons(model))
    out = model(torch.randn(2, 3, dtype=F64))
    assert out.shape == (2, 4)
    set_step_mode(model, "m")
    assert all(m.step_mode == "m" for _, m in spiking_neurons(model))
    with pytest.raises(ValueError):
        set_step_mode(model, "x")
    assert spiking_neurons(nn.Linear(2, 2)) == []


# =========================================================================== construction and specs


def test_module_defaults():
    i, lif, p, m = IF(), LIF(), PLIF(), MTLIF()
    assert float(i.decay) == 1.0 and i.reset_mode == "hard" and not i.learnable_decay
    assert float(lif.decay) == 0.5 and lif.reset_mode == "hard" and not lif.learnable_decay
    assert p.learnable_decay and p.reset_mode == "hard"
    assert m.learnable_decay and m.reset_mode == "soft" and m.num_thresholds == 2
    for n in (i, lif, p, m):
        assert n.step_mode == "m" and float(n.threshold) == 1.0
        assert n.surrogate == Surrogate("triangle", 1.0)
    assert LIF(surrogate="sigmoid").surrogate == Surrogate("sigmoid", 0.25)
    assert LIF(surrogate="sigmoid", width=0.1).surrogate == Surrogate("sigmoid", 0.1)


@pytest.mark.parametrize(
    "cls,kwargs",
    [
        (LIF, dict(decay=0.0)),
        (LIF, dict(decay=-0.1)),
        (LIF, dict(decay=1.5)),
        (LIF, dict(decay=float("nan"))),
        (LIF, dict(decay=1.0, learnable_decay=True)),
        (PLIF, dict(decay=1.0)),
        (IF, dict(decay=0.5)),
        (LIF, dict(v_threshold=0.0)),
        (LIF, dict(v_threshold=-1.0)),
        (LIF, dict(reset="medium")),
        (LIF, dict(step_mode="x")),
        (LIF, dict(surrogate="relu")),
        (LIF, dict(width=0.0)),
        (MTLIF, dict(num_thresholds=0)),
        (MTLIF, dict(num_thresholds=1.5)),
    ],
)
def test_module_invalid_arguments(cls, kwargs):
    with pytest.raises(ValueError):
        cls(**kwargs)


@pytest.mark.parametrize("kind", sorted(NEURON_KINDS))
def test_make_neuron_kinds(kind):
    n = make_neuron(kind=kind)
    assert type(n) is NEURON_KINDS[kind]
    assert float(n.threshold) == 1.0 and n.surrogate.name == "triangle"


def test_make_neuron_defaults_per_kind():
    lif = make_neuron()
    assert type(lif) is LIF and not lif.learnable_decay and lif.reset_mode == "hard"
    assert float(lif.decay) == 0.5
    if_ = make_neuron(kind="if")
    assert type(if_) is IF and float(if_.decay) == 1.0 and if_.reset_mode == "hard"
    plif = make_neuron(kind="plif")
    assert type(plif) is PLIF and plif.learnable_decay and isinstance(plif.decay_logit, nn.Parameter)
    assert plif.decay.item() == pytest.approx(0.5)
    mt = make_neuron(kind="mtlif", num_thresholds=4)
    assert type(mt) is MTLIF and mt.learnable_decay and mt.reset_mode == "soft" and mt.num_thresholds == 4


def test_make_neuron_from_spec_dict_and_overrides():
    spec = NeuronSpec(kind="lif", decay=0.8, reset="soft", surrogate="arctan", width=0.3, v_threshold=0.5)
    n = make_neuron(spec)
    assert type(n) is LIF and float(n.decay) == pytest.approx(0.8) and n.reset_mode == "soft"
    assert n.surrogate == Surrogate("arctan", 0.3) and float(n.threshold) == 0.5
    n2 = make_neuron({"kind": "plif", "decay": 0.9, "learnable_threshold": True})
    assert type(n2) is PLIF and n2.decay.item() == pytest.approx(0.9)
    assert isinstance(n2.threshold, nn.Parameter)
    n3 = make_neuron(spec, kind="mtlif", num_thresholds=3)
    assert type(n3) is MTLIF and n3.num_thresholds == 3 and n3.decay.item() == pytest.approx(0.8)
    assert spec.kind == "lif"  # overrides do not mutate the given spec
    n4 = make_neuron(kind="lif", learnable_decay=True, detach_reset=True, scale_output=True, v_reset=-0.1)
    assert n4.learnable_decay and n4.detach_reset and n4.scale_output and n4.v_reset == -0.1
    n5 = make_neuron(kind="mtlif", reset="hard", learnable_decay=False, num_thresholds=2)
    assert n5.reset_mode == "hard" and not n5.learnable_decay


def test_make_neuron_builds_fresh_modules():
    spec = NeuronSpec(kind="plif")
    a, b = spec.build(), spec.build()
    assert a is not b and a.decay_logit is not b.decay_logit


@pytest.mark.parametrize("kind", ["LIF", "izhikevich", "", None, ["lif"]])
def test_bad_kind_raises(kind):
    with pytest.raises(ValueError, match="kind"):
        NeuronSpec(kind=kind)
    with pytest.raises(ValueError):
        make_neuron(kind=kind)


@pytest.mark.parametrize("kind", ["lif", "plif", "if"])
def test_multi_threshold_needs_mtlif(kind):
    with pytest.raises(ValueError, match="mtlif"):
        make_neuron(kind=kind, num_thresholds=2)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(decay=0.0),
        dict(decay=1.2),
        dict(kind="plif", decay=1.0),
        dict(kind="mtlif", decay=1.0),
        dict(v_threshold=0.0),
        dict(v_threshold=-0.5),
        dict(reset="medium"),
        dict(kind="mtlif", reset="none"),
        dict(surrogate="relu"),
        dict(width=0.0),
        dict(width=-1.0),
        dict(kind="mtlif", num_thresholds=0),
    ],
)
def test_make_neuron_invalid_values(overrides):
    with pytest.raises(ValueError):
        make_neuron(**overrides)


# =========================================================================== layout and dtype


@pytest.mark.parametrize("idx", range(7))
def test_non_contiguous_input(idx):
    base = torch.randn(3, 6, 5) * 1.5 + 0.3  # [B, T, C]
    x = base.transpose(0, 1)  # [T, B, C], not contiguous
    assert not x.is_contiguous()
    n = _neurons_for_mode_tests()[idx]
    out = n(x)
    assert out.shape == (6, 3, 5) and out.dtype == torch.float32
    assert torch.equal(out, copy.deepcopy(n)(x.contiguous()))
    # strided slices too
    y = torch.randn(8, 4, 10)[::2, :, ::3]
    assert torch.equal(n(y), n(y.contiguous()))


@pytest.mark.parametrize("idx", range(7))
def test_bfloat16_input(idx):
    n = _neurons_for_mode_tests()[idx]
    x = (torch.randn(5, 2, 3) * 1.5).to(torch.bfloat16).requires_grad_(True)
    n.record = True
    out = n(x)
    assert out.dtype == torch.bfloat16 and out.shape == (5, 2, 3)
    assert n.last_membrane.dtype == torch.bfloat16
    out.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and x.grad.shape == x.shape
    assert torch.isfinite(x.grad).all()
    for p in n.parameters():
        assert p.dtype == torch.float32 and p.grad is not None and torch.isfinite(p.grad).all()


def test_bfloat16_exact_on_representable_inputs():
    # IF soft reset on multiples of 1/8 with |h| < 16: every value is exact in bfloat16,
    # so bfloat16 must give the very same spikes and membranes as float64
    x = torch.randint(-16, 17, (10, 4, 3)).double() / 8
    n64 = IF(reset="soft")
    n64.record = True
    s64 = n64(x)
    nbf = IF(reset="soft")
    nbf.record = True
    sbf = nbf(x.to(torch.bfloat16))
    assert sbf.dtype == torch.bfloat16
    assert s64.sum() > 0
    assert torch.equal(sbf.double(), s64)
    assert torch.equal(nbf.last_membrane.double(), n64.last_membrane)


def test_float64_input_keeps_float64():
    x = torch.randn(3, 2, dtype=F64)
    for n in _neurons_for_mode_tests():
        assert n(x).dtype == F64
