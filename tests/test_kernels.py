"""Fused Triton neuron kernels against the PyTorch reference, run by the Triton CPU interpreter.

The whole module is skipped when Triton is not installed (it is the optional ``gpu`` extra).
Sizes are small: the interpreter executes every program in Python.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from neuron_cases import MODULES_VS_REFERENCE

if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip(
        "triton was imported before TRITON_INTERPRET=1 could be set, so its kernels cannot run on CPU here; "
        "run tests/test_kernels.py in its own process",
        allow_module_level=True,
    )
os.environ["TRITON_INTERPRET"] = "1"  # before triton (and the kernels) are imported

triton = pytest.importorskip("triton", reason="triton is not installed (optional 'gpu' extra): fused kernels untested")

import torch  # noqa: E402  (after TRITON_INTERPRET is set)

from fewstep.neurons import (  # noqa: E402
    LIF,
    NeuronParams,
    Surrogate,
    dispatch,
    neuron_multistep,
)

tn = importlib.import_module("fewstep.kernels.triton_neuron")
assert tn.INTERPRET, "the kernels should have been built for the Triton interpreter"
triton_multistep = tn.triton_multistep

REPO = Path(__file__).resolve().parents[1]
SURROGATES = ("rectangle", "triangle", "sigmoid", "arctan")


@pytest.fixture
def kernels_on(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("FEWSTEP_KERNELS", "triton")
    monkeypatch.delenv("FEWSTEP_REFERENCE", raising=False)


# ------------------------------------------------------------------------------------- helpers


def _params(kind: str, surrogate: str = "triangle", **over):
    """NeuronParams for a named kind; tensor-valued decay/threshold are fresh leaves."""
    sg = Surrogate(surrogate)
    if kind == "lif_hard":
        kw = dict(decay=0.5, v_threshold=1.0, reset="hard")
    elif kind == "lif_soft":
        kw = dict(decay=0.7, v_threshold=0.8, reset="soft")
    elif kind == "plif":
        kw = dict(decay=torch.tensor(0.6, requires_grad=True), v_threshold=1.0, reset="hard")
    elif kind == "mtlif3":
        kw = dict(decay=torch.tensor(0.75, requires_grad=True), v_threshold=0.5, reset="soft", num_thresholds=3)
    elif kind == "if_soft_thr":
        kw = dict(decay=1.0, v_threshold=torch.tensor(0.9, requires_grad=True), reset="soft")
    else:
        raise KeyError(kind)
    kw.update(over)
    return NeuronParams(surrogate=sg, **kw)


def _clone_params(p: NeuronParams) -> NeuronParams:
    def c(v):
        return v.detach().clone().requires_grad_(v.requires_grad) if isinstance(v, torch.Tensor) else v

    return p._replace(decay=c(p.decay), v_threshold=c(p.v_threshold))


def _leaf(t: torch.Tensor | None, requires_grad: bool = True):
    return None if t is None else t.detach().clone().requires_grad_(requires_grad)


def _grads(out, leaves, ws):
    loss = sum((o.float() * w).sum() for o, w in zip(out, ws) if o is not None and w is not None)
    leaves = [t if isinstance(t, torch.Tensor) and t.requires_grad else None for t in leaves]
    gs = iter(torch.autograd.grad(loss, [t for t in leaves if t is not None], allow_unused=True))
    return [None if t is None else next(gs) for t in leaves]


def _compare(
    x, p, v0=None, *, need_membrane=True, w_membrane=True, w_v=True, w_spikes=True,
    ref_dtype=torch.float32, rtol=1e-4, atol=1e-5, out_atol=1e-6,
):
    """Run kernel and reference on the same values; check forward and all gradients.

    The reference runs in ``ref_dtype`` (fp32) on the same input values (for a bf16/fp16 input:
    on the cast-up input), so fp32 math inside the kernel must match it closely."""
    pk, pr = _clone_params(p), _clone_params(p)
    xk = _leaf(x)
    xr = _leaf(x.to(ref_dtype))
    v0k, v0r = _leaf(v0), _leaf(None if v0 is None else v0.to(ref_dtype))
    ok = triton_multistep(xk, pk, v0k, need_membrane=need_membrane)
    orf = neuron_multistep(xr, pr, v0r)
    out_dtype = x.dtype if v0 is None else torch.promote_types(x.dtype, v0.dtype)
    assert ok.spikes.dtype == out_dtype and ok.v.dtype == out_dtype
    assert ok.spikes.shape == x.shape and ok.v.shape == x.shape[1:]
    # spikes exactly equal (in the output dtype)
    assert torch.equal(ok.spikes, orf.spikes.to(out_dtype)), "spikes differ"
    torch.testing.assert_close(ok.v.to(ref_dtype), orf.v, rtol=rtol, atol=out_atol)
    if need_membrane:
        torch.testing.assert_close(ok.membrane.to(ref_dtype), orf.membrane, rtol=rtol, atol=out_atol)
    else:
        assert ok.membrane is None

    # upstream gradients representable in the output dtype, so both sides see the same values
    def w(like, on):
        return torch.randn(like.shape).to(out_dtype).to(ref_dtype) if on else None

    ws = [w(orf.spikes, w_spikes), w(orf.v, w_v), w(orf.membrane, w_membrane and need_membrane)]
    leaves_k = [xk, v0k, pk.decay, pk.v_threshold]
    leaves_r = [xr, v0r, pr.decay, pr.v_threshold]
    gk = _grads([ok.spikes, ok.v, ok.membrane], leaves_k, ws)
    gr = _grads([orf.spikes, orf.v, orf.membrane], leaves_r, ws)
    for name, a, b in zip(("x", "v0", "decay", "threshold"), gk, gr):
        if b is None:
            assert a is None, name
            continue
        assert a is not None, name
        scale = 1.0 if a.dim() else max(1.0, float(b.abs()))
        torch.testing.assert_close(a.to(ref_dtype), b, rtol=rtol, atol=atol * scale, msg=lambda m: f"grad_{name}: {m}")
    return ok, orf


def _x(shape, dtype=torch.float32):
    return (torch.randn(shape) * 1.2 + 0.4).to(dtype)


# --------------------------------------------------------------------------------- correctness

KINDS = ("lif_hard", "lif_soft", "plif", "mtlif3", "if_soft_thr")


@pytest.mark.parametrize("surrogate", SURROGATES)
@pytest.mark.parametrize("kind", KINDS)
def test_kinds_and_surrogates(kind, surrogate):
    p = _params(kind, surrogate)
    _compare(_x((4, 3, 7)), p, v0=torch.randn(3, 7) * 0.5)


@pytest.mark.parametrize("T", [1, 2, 4])
@pytest.mark.parametrize("shape", [(1,), (7,), (17, 59), (2100,)], ids=["N1", "N7", "N1003", "N2100"])
def test_sizes_and_steps(T, shape):
    kind = "plif" if T != 2 else "mtlif3"
    _compare(_x((T, *shape)), _params(kind, "sigmoid"), v0=None)


@pytest.mark.parametrize("kind", ["plif", "mtlif3", "if_soft_thr"])
def test_long_sequence_saves_membrane(kind):
    """T > MAX_RECOMPUTE_T takes the saved-h backward path."""
    T = tn.MAX_RECOMPUTE_T + 2
    _compare(_x((T, 5, 11)) * 0.6, _params(kind, "arctan"), v0=torch.randn(5, 11))
    _compare(_x((T, 37)), _params(kind, "triangle"), need_membrane=False)


@pytest.mark.parametrize(
    "over",
    [
        dict(v_reset=-0.3),
        dict(v_reset=0.2, detach_reset=True),
        dict(scale_output=True),
        dict(scale_output=True, detach_reset=True, num_thresholds=2),
        dict(reset="soft", detach_reset=True),
        dict(num_thresholds=4, reset="soft", scale_output=True),
        dict(num_thresholds=2, reset="hard", v_reset=-0.1),
    ],
    ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()),
)
@pytest.mark.parametrize("kind", ["plif", "if_soft_thr"])
def test_options(kind, over):
    p = _params(kind, "triangle", **over)
    if kind == "if_soft_thr" and "v_reset" in over and "reset" not in over:
        p = p._replace(reset="hard")  # v_reset only matters under hard reset
    _compare(_x((3, 4, 9)), p, v0=torch.randn(4, 9) * 0.3)


def test_both_learnable_and_partial_upstream_grads():
    p = _params("mtlif3", "sigmoid", v_threshold=torch.tensor(0.6, requires_grad=True))
    x, v0 = _x((4, 6, 5)), torch.randn(6, 5)
    _compare(x, p, v0)
    _compare(x, p, v0, need_membrane=False)
    _compare(x, p, v0, w_spikes=False, w_membrane=False)  # only the final state carries gradient
    _compare(x, p, v0, w_v=False, w_membrane=False)


def test_noncontiguous_inputs():
    p = _params("plif", "triangle")
    base = _x((4, 9, 7))
    _compare(base.transpose(1, 2), p)  # [T, 7, 9], inner dims swapped
    _compare(base[:, ::2, 1:], p, v0=torch.randn(6, 5).t())  # strided slice, transposed v0
    _compare(_x((5, 4, 3)).transpose(0, 1), _params("lif_soft", "rectangle"))  # time not outermost
    assert not base.transpose(1, 2).is_contiguous()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", ["lif_hard", "mtlif3", "if_soft_thr"])
def test_half_precision_io(dtype, kind):
    # Same input values: fp32 math inside the kernel equals the fp32 reference up to the
    # final rounding of outputs / grad_x to the half dtype.
    eps = torch.finfo(dtype).eps
    x = _x((4, 5, 13), dtype)
    ok, _ = _compare(x, _params(kind, "triangle"), rtol=2 * eps, atol=2 * eps, out_atol=2 * eps)
    assert ok.membrane.dtype == dtype
    _compare(x, _params(kind, "sigmoid"), v0=(torch.randn(5, 13) * 0.5).to(dtype), rtol=2 * eps, atol=2 * eps,
             out_atol=2 * eps)


def test_fp32_state_promotes_half_input():
    x = _x((2, 3, 4), torch.bfloat16)
    ok, _ = _compare(x, _params("lif_hard"), v0=torch.randn(3, 4), rtol=1e-2, atol=1e-2, out_atol=1e-2)
    assert ok.spikes.dtype == torch.float32


def test_no_grad_and_inference():
    p = _params("plif", "arctan")
    x = _x((tn.MAX_RECOMPUTE_T + 1, 3, 5))
    with torch.no_grad():
        ok = triton_multistep(x, p, need_membrane=False)
        orf = neuron_multistep(x, p)
    assert ok.membrane is None and ok.spikes.grad_fn is None
    assert torch.equal(ok.spikes, orf.spikes)
    torch.testing.assert_close(ok.v, orf.v)


def test_unsupported_calls_raise_or_fall_back(kernels_on):
    p = _params("lif_hard")
    x64 = torch.randn(2, 3, dtype=torch.float64)
    assert tn.supports(x64, p) is not None
    with pytest.raises(ValueError):
        triton_multistep(x64, p)
    assert tn.dispatch_kernel(x64, p) is None  # falls back ...
    out = dispatch.multistep(x64, p)  # ... to the reference, which handles float64
    assert out.spikes.dtype == torch.float64
    assert tn.supports(torch.randn(2, 3), p._replace(decay=torch.full((3,), 0.5))) is not None
    assert tn.supports(torch.randn(2, 3), p, v0=torch.zeros(4)) is not None


# ------------------------------------------------------------------------------------ dispatch


def _is_kernel(t: torch.Tensor) -> bool:
    """Whether ``t`` came out of the Triton autograd function (through reshapes)."""
    fn = t.grad_fn
    while fn is not None and "TritonNeuron" not in fn.name():
        if fn.name() not in ("ViewBackward0", "ReshapeAliasBackward0"):
            return False
        fn = fn.next_functions[0][0]
    return fn is not None


def test_dispatch_picks_kernel_under_flags(kernels_on, monkeypatch):
    p = _params("plif")
    x = _x((4, 2, 3)).requires_grad_()
    out = dispatch.multistep(x, p, need_membrane=False)
    assert _is_kernel(out.spikes) and out.membrane is None
    out = dispatch.multistep(x, p)  # default: membrane wanted
    assert _is_kernel(out.spikes) and out.membrane is not None
    assert tn.dispatch_kernel in dispatch.registered_kernels()

    monkeypatch.setenv("FEWSTEP_REFERENCE", "1")
    assert not _is_kernel(dispatch.multistep(x, p).spikes)
    monkeypatch.delenv("FEWSTEP_REFERENCE")
    monkeypatch.setenv("FEWSTEP_KERNELS", "reference")
    assert not _is_kernel(dispatch.multistep(x, p).spikes)
    monkeypatch.delenv("FEWSTEP_KERNELS")  # auto: Triton for CUDA only; CPU tensors go to the CPU kernel
    out = dispatch.multistep(x, p, need_membrane=False)
    assert not _is_kernel(out.spikes)
    fn = out.spikes.grad_fn
    while fn is not None and fn.name() in ("ViewBackward0", "ReshapeAliasBackward0"):
        fn = fn.next_functions[0][0]
    from fewstep.kernels import cpu_neuron
    assert (fn is not None and "CpuNeuron" in fn.name()) == cpu_neuron.available()


@MODULES_VS_REFERENCE
def test_module_matches_reference(kernels_on, monkeypatch, make):
    x = _x((4, 3, 2, 5))
    mk = make()
    mr = make()
    mr.load_state_dict(mk.state_dict())
    results = []
    for m, ref in ((mk, False), (mr, True)):
        if ref:
            monkeypatch.setenv("FEWSTEP_REFERENCE", "1")
        xi = x.clone().requires_grad_()
        m.keep_state = True
        m.record = True
        y1 = m(xi)
        m.record = False
        y2 = m(xi * 0.5)  # second call starts from the carried state (v0 path, grad through it)
        assert _is_kernel(y1) != ref
        w1, w2 = torch.linspace(-1, 1, y1.numel()).view_as(y1), torch.linspace(1, -2, y2.numel()).view_as(y2)
        loss = (y1 * w1).sum() + (y2 * w2).sum() + (m.v ** 2).sum()
        loss.backward()
        results.append((y1, y2, m.v.detach(), m.last_membrane, xi.grad, {n: q.grad for n, q in m.named_parameters()}))
        monkeypatch.delenv("FEWSTEP_REFERENCE", raising=False)
    (a1, a2, av, amem, agx, agp), (b1, b2, bv, bmem, bgx, bgp) = results
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert amem is not None
    torch.testing.assert_close(amem, bmem)
    torch.testing.assert_close(av, bv)
    torch.testing.assert_close(agx, bgx, rtol=1e-4, atol=1e-5)
    assert agp.keys() == bgp.keys()
    for n in agp:
        torch.testing.assert_close(agp[n], bgp[n], rtol=1e-4, atol=1e-4)


def test_module_skips_membrane_when_not_recording(kernels_on):
    m = LIF()
    y = m(_x((2, 4, 4)).requires_grad_())
    assert _is_kernel(y) and m.last_membrane is None
    y.sum().backward()


# ------------------------------------------------------------------------- packaging / GPU code


def _run_py(code: str, env_extra: dict | None = None, timeout: int = 120):
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "FEWSTEP_KERNELS")}
    env.update(env_extra or {})
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout)


def test_import_without_triton():
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch, fewstep, fewstep.kernels as k\n"
        "from fewstep.neurons import LIF\n"
        "assert not k.HAS_TRITON and k.triton_multistep is None\n"
        "y = LIF()(torch.randn(2, 3) + 1); assert y.shape == (2, 3)\n"
        "print('ok')\n"
    )
    r = _run_py(code)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


def test_compiles_for_h100():
    """Lower a few kernel variants to sm_90 machine code (no GPU needed): catches constructs the
    interpreter accepts but the compiler rejects, register spills included."""
    r = _run_py("import runpy, sys; sys.argv = ['bench', '--compile-check', '--quick']; "
                "runpy.run_path('benchmarks/bench_neuron.py', run_name='__main__')", timeout=300)
    if r.returncode == 3:
        pytest.skip(f"no CUDA compiler backend in this triton: {r.stdout.strip()[-300:]}")
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert "spills: none" in r.stdout
