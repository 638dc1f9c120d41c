"""The fused CPU neuron kernel (fewstep.kernels.cpu_neuron) against the PyTorch reference.

Forward outputs and input gradients must equal the reference bit for bit (the kernel follows the
reference's operation order and autograd's summation order), except input gradients with the
sigmoid surrogate (a different exp); parameter gradients are equal up to rounding. gradcheck runs
on the kernel itself in float64 where the dynamics are smooth (no membrane near a threshold).
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from neuron_cases import MODULES_VS_REFERENCE

from fewstep.kernels import cpu_neuron as cn
from fewstep.neurons import NeuronParams, dispatch, neuron_multistep
from fewstep.neurons.surrogate import Surrogate

REPO = Path(__file__).resolve().parents[1]
HAS_CXX = any(shutil.which(c) for c in ("c++", "g++", "clang++"))

if HAS_CXX and sys.platform.startswith("linux"):
    assert cn.available(), f"a C++ compiler is here but the kernel did not build: {cn.build_error()}"
    assert cn.available(torch.float64), cn.build_error(torch.float64)
pytestmark = pytest.mark.skipif(not cn.available(), reason=f"CPU kernel unavailable: {cn.build_error()}")


def _params(sg="triangle", width=None, reset="hard", K=1, scale=False, detach=False, v_reset=0.0, learn=False,
            dtype=torch.float32, decay=0.6, thr=0.7):
    d = torch.tensor(decay, dtype=dtype, requires_grad=True) if learn else decay
    th = torch.tensor(thr, dtype=dtype, requires_grad=True) if learn else thr
    return NeuronParams(decay=d, v_threshold=th, num_thresholds=K, reset=reset, v_reset=v_reset,
                        surrogate=Surrogate(sg, width), scale_output=scale, detach_reset=detach)


def _run(impl, x, p, v0, weights):
    """Outputs and gradients (x, v0, decay, threshold) of ``impl`` under a weighted loss."""
    xi = x.clone().requires_grad_()
    v0i = None if v0 is None else v0.clone().requires_grad_()
    out = impl(xi, p, v0i)
    ws, wm, wv = weights
    loss = (out.spikes * ws).sum()
    if wm is not None:
        loss = loss + (out.membrane * wm).sum()
    if wv is not None:
        loss = loss + (out.v * wv).sum()
    leaves = [xi] + ([v0i] if v0i is not None else []) + [t for t in (p.decay, p.v_threshold)
                                                          if isinstance(t, torch.Tensor)]
    grads = torch.autograd.grad(loss, leaves)
    return out, grads


def _kernel(x, p, v0):
    return cn.cpu_multistep(x, p, v0, need_membrane=True)


CASES = list(itertools.product(
    ["rectangle", "triangle", "sigmoid", "arctan"], ["hard", "soft"], [1, 3], [False, True], [False, True],
    [False, True]))


@pytest.mark.parametrize("sg,reset,K,scale,detach,learn", CASES)
def test_matches_reference_float32(sg, reset, K, scale, detach, learn):
    torch.manual_seed(hash((sg, reset, K, scale, detach, learn)) % 2**31)
    T, N = 4, 700  # N not a multiple of the kernel's block
    x = torch.randn(T, N) * 1.5 + 0.4
    v0 = torch.randn(N) * 0.5
    p = _params(sg, 0.8 if sg == "triangle" else None, reset, K, scale, detach, -0.3 if reset == "hard" else 0.0,
                learn)
    weights = (torch.randn(T, N), torch.randn(T, N), torch.randn(N))
    (ro, rg), (ko, kg) = _run(neuron_multistep, x, p, v0, weights), _run(_kernel, x, p, v0, weights)
    assert ro.spikes.sum() > 0
    assert torch.equal(ro.spikes, ko.spikes) and torch.equal(ro.membrane, ko.membrane) and torch.equal(ro.v, ko.v)
    n_inputs = 2
    for a, b in zip(rg[:n_inputs], kg[:n_inputs]):
        if sg == "sigmoid":
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
        else:
            assert torch.equal(a, b), (a - b).abs().max()
    for a, b in zip(rg[n_inputs:], kg[n_inputs:]):  # decay and threshold: summed in another order
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("which", ["spikes only", "no v grad", "membrane only"])
def test_partial_upstream_gradients(which):
    torch.manual_seed(1)
    x = torch.randn(3, 257) * 1.5
    p = _params("triangle", reset="soft", K=2, learn=True)
    ws = torch.randn(3, 257) if which != "membrane only" else torch.zeros(3, 257)
    wm = torch.randn(3, 257) if which == "membrane only" else None
    weights = (ws, wm, None if which != "spikes only" else torch.randn(257))
    (_, rg), (_, kg) = _run(neuron_multistep, x, p, None, weights), _run(_kernel, x, p, None, weights)
    assert torch.equal(rg[0], kg[0])
    for a, b in zip(rg[1:], kg[1:]):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def _smooth_inputs(p, T, N, margin, dtype=torch.float64, seed=0):
    """Inputs whose membranes stay ``margin`` away from every threshold k V_th: spikes are locally
    constant there, so the true derivative exists and equals the surrogate-free one."""
    g = torch.Generator().manual_seed(seed)
    thr = float(torch.as_tensor(p.v_threshold).detach())
    while True:
        x = (torch.rand(T, N, generator=g, dtype=dtype) * 3 - 0.8).to(dtype)
        h = neuron_multistep(x, p).membrane
        dist = torch.stack([(h - k * thr).abs() for k in range(1, p.num_thresholds + 1)]).amin(0)
        ok = (dist > margin).all(0)
        if ok.sum() >= N // 2:
            return x[:, ok].contiguous()


@pytest.mark.parametrize("reset,K,scale", [("hard", 1, False), ("soft", 1, True), ("soft", 3, False),
                                           ("hard", 2, True)])
def test_gradcheck_float64_where_smooth(reset, K, scale):
    # A narrow rectangle surrogate is exactly zero away from the thresholds, so these inputs make
    # the kernel's backward the true Jacobian of its forward, resets and all.
    p = _params("rectangle", 0.05, reset, K, scale, detach=False, v_reset=-0.2 if reset == "hard" else 0.0,
                learn=True, dtype=torch.float64)
    x = _smooth_inputs(p, 4, 24, margin=0.1).requires_grad_()
    assert neuron_multistep(x, p).spikes.sum() > 0  # the reset paths are exercised
    rest = p.v_reset if reset == "hard" else 0.0  # the state _smooth_inputs assumed
    v0 = torch.full((x.shape[1],), rest, dtype=torch.float64, requires_grad=True)

    def f(x, v0, decay, thr):
        o = cn.cpu_multistep(x, p._replace(decay=decay, v_threshold=thr), v0, need_membrane=True)
        return o.spikes, o.membrane, o.v

    assert torch.autograd.gradcheck(f, (x, v0, p.decay, p.v_threshold), eps=1e-7, atol=1e-6)


def test_gradcheck_float64_surrogate_against_smoothed_reference():
    # With spikes present near thresholds the backward is the surrogate's: in float64 it equals
    # the reference's autograd to 1e-12 (which tests/test_neurons.py derives by hand).
    torch.manual_seed(3)
    p = _params("arctan", reset="soft", K=2, learn=True, dtype=torch.float64)
    x = torch.randn(5, 64, dtype=torch.float64) * 1.2 + 0.5
    w = (torch.randn(5, 64, dtype=torch.float64), torch.randn(5, 64, dtype=torch.float64),
         torch.randn(64, dtype=torch.float64))
    (_, rg), (_, kg) = _run(neuron_multistep, x, p, None, w), _run(_kernel, x, p, None, w)
    for a, b in zip(rg, kg):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)


def test_repeated_step_input_reads_one_step():
    torch.manual_seed(4)
    y = torch.randn(8, 3, 5, 5) + 0.6
    p = _params("triangle", learn=True)
    results = []
    for repeated in (True, False):
        yi = y.clone().requires_grad_()
        x = yi.unsqueeze(0).expand(3, *yi.shape)
        if not repeated:
            x = x.contiguous()
        assert (cn._repeated_step(x) is not None) == repeated
        out = cn.cpu_multistep(x, p)
        (out.spikes * torch.linspace(-1, 1, out.spikes.numel()).view_as(out.spikes)).sum().backward()
        results.append((out.spikes, yi.grad, p.decay.grad.clone(), p.v_threshold.grad.clone()))
        p.decay.grad = p.v_threshold.grad = None
    (s1, g1, d1, t1), (s2, g2, d2, t2) = results
    assert torch.equal(s1, s2) and torch.equal(g1, g2)
    torch.testing.assert_close(d1, d2) and torch.testing.assert_close(t1, t2)
    # a stride-0 view that is not a plain repeat of its base is copied, not misread
    base = torch.randn(2, 8)
    odd = base[0].unsqueeze(0).expand(3, 8)
    assert cn._repeated_step(odd) is None
    assert torch.equal(cn.cpu_multistep(odd, p).spikes, neuron_multistep(odd, p).spikes)


def test_threads_do_not_change_results():
    torch.manual_seed(5)
    x = torch.randn(2, 1 << 16) * 1.5
    p = _params("triangle", reset="soft", K=2, learn=True)
    before = torch.get_num_threads()
    outs = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            outs.append(_run(_kernel, x, p, None, (torch.ones_like(x), None, None)))
    finally:
        torch.set_num_threads(before)
    (o1, g1), (o2, g2) = outs
    assert torch.equal(o1.spikes, o2.spikes)
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))  # per-block partial sums: any thread count


def test_non_contiguous_and_shapes():
    x = (torch.randn(6, 4, 3) * 2).transpose(1, 2)  # [6, 3, 4], non-contiguous
    p = _params()
    k, r = cn.cpu_multistep(x, p), neuron_multistep(x, p)
    assert k.spikes.shape == x.shape and k.v.shape == x.shape[1:] and k.membrane is None
    assert torch.equal(k.spikes, r.spikes) and torch.equal(k.v, r.v)


def test_supports_and_dispatch_fall_back():
    p = _params()
    assert cn.supports(torch.randn(2, 3), p) is None
    assert "dtype" in cn.supports(torch.randn(2, 3, dtype=torch.bfloat16), p)
    assert "custom surrogate" in cn.supports(torch.randn(2, 3), p._replace(surrogate=object()))
    assert "v_reset" in cn.supports(torch.randn(2, 3), p._replace(v_reset=torch.tensor(0.0)))
    assert "decay" in cn.supports(torch.randn(2, 3), p._replace(decay=torch.full((3,), 0.5)))
    assert "v0" in cn.supports(torch.randn(2, 3), p, v0=torch.zeros(4))
    assert "num_thresholds" in cn.supports(torch.randn(2, 3), p._replace(num_thresholds=40))
    with pytest.raises(ValueError, match="does not support"):
        cn.cpu_multistep(torch.randn(2, 3, dtype=torch.float16), p)
    # float64 stays on the reference through the dispatcher (it has double backward) ...
    x64 = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert cn.dispatch_kernel(x64, p) is None
    assert dispatch.multistep(x64, p).membrane is not None
    # ... float32 goes to the kernel, which skips the membrane unless asked
    x32 = torch.randn(3, 4, requires_grad=True)
    out = dispatch.multistep(x32, p, need_membrane=False)
    assert out.membrane is None and "CpuNeuron" in out.spikes.grad_fn.next_functions[0][0].name()


@MODULES_VS_REFERENCE
def test_modules_match_reference(monkeypatch, make):
    torch.manual_seed(6)
    x = torch.randn(4, 3, 2, 5) * 1.5
    results = []
    for ref in (False, True):
        m = make()
        if ref:
            monkeypatch.setenv("FEWSTEP_KERNELS", "reference")
        xi = x.clone().requires_grad_()
        m.keep_state, m.record = True, True
        y1 = m(xi)
        m.record = False
        y2 = m(xi * 0.5)  # starts from the carried state: the v0 path, with gradient through it
        loss = (y1 * torch.linspace(-1, 1, y1.numel()).view_as(y1)).sum() + y2.sum() + (m.v ** 2).sum()
        loss.backward()
        results.append((y1, y2, m.last_membrane, xi.grad, {n: q.grad for n, q in m.named_parameters()}))
        monkeypatch.delenv("FEWSTEP_KERNELS", raising=False)
    (a1, a2, am, ag, ap), (b1, b2, bm, bg, bp) = results
    assert torch.equal(a1, b1) and torch.equal(a2, b2) and torch.equal(am, bm)
    torch.testing.assert_close(ag, bg, rtol=1e-5, atol=1e-6)
    for n in ap:
        torch.testing.assert_close(ap[n], bp[n], rtol=1e-4, atol=1e-4)


def _child(code: str, env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("FEWSTEP_KERNELS", "FEWSTEP_REFERENCE")}
    env.update(env_extra)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=300)


def test_without_a_compiler_warns_once_and_uses_the_reference(tmp_path):
    code = """
        import warnings, torch
        from fewstep.neurons import LIF
        from fewstep.kernels import cpu_neuron as cn
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            m = LIF()
            x = torch.randn(2, 5, 7, requires_grad=True)
            for _ in range(3):
                m(x).sum().backward()
        msgs = [str(i.message) for i in w if "CPU neuron kernel" in str(i.message)]
        assert len(msgs) == 1, msgs
        assert not cn.available() and "compiler" in cn.build_error(), cn.build_error()
        print("ok")
    """
    empty = tmp_path / "bin"
    empty.mkdir()
    r = _child(code, {"CXX": "", "PATH": str(empty), "FEWSTEP_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


def test_builds_into_the_cache_dir_and_reuses_it(tmp_path):
    code = """
        from fewstep.kernels import cpu_neuron as cn
        assert cn.available(), cn.build_error()
        print(cn.library_path())
    """
    env = {"FEWSTEP_CACHE_DIR": str(tmp_path)}
    r1 = _child(code, env)
    assert r1.returncode == 0, r1.stderr[-2000:]
    path = Path(r1.stdout.strip().splitlines()[-1])
    assert path.parent == tmp_path / "kernels" and path.exists()
    mtime = path.stat().st_mtime_ns
    r2 = _child(code, env)
    assert r2.returncode == 0 and Path(r2.stdout.strip().splitlines()[-1]) == path
    assert path.stat().st_mtime_ns == mtime  # loaded, not rebuilt
    leftovers = list(tmp_path.glob("kernels/*.tmp")) + list(tmp_path.glob("kernels/.*.tmp-*"))
    assert not leftovers  # no temporary files left behind


def test_unusable_cache_dir_falls_back_to_temp(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    r = _child("from fewstep.kernels import cpu_neuron as cn; assert cn.available(), cn.build_error(); "
               "print(cn.library_path())", {"FEWSTEP_CACHE_DIR": str(blocker / "cache")})
    assert r.returncode == 0, r.stderr[-2000:]
    assert not r.stdout.strip().startswith(str(blocker))
