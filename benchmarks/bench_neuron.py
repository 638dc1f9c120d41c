"""Multi-step LIF neuron speed: fewstep's fused Triton kernel against its peers.

Times LIF (decay 0.5, V_th 1, hard reset to 0) forward and forward+backward on CUDA for
T in {1, 2, 4, 8} and several sizes (16M neurons per step included), fp32 and bf16:

* fewstep Triton kernel (``fewstep.kernels.triton_multistep``)
* plain PyTorch reference loop (``fewstep.neurons.functional.neuron_multistep``)
* ``torch.compile`` of that loop
* SpikingJelly ``LIFNode(step_mode='m')`` (if installed)
* snnTorch ``Leaky`` loop (if installed)

It also measures the copy bandwidth (one large tensor copy) and reports every time as a
percentage of the *five-pass floor*: the time to move the ``T x N`` tensor five times at that
bandwidth (forward reads x and writes s, backward reads x and grad_s and writes grad_x),
as in ``/work/shared/anchors.md`` (T = 4 x 16M fp32 on an H100: 0.457 ms).

Usage::

    python benchmarks/bench_neuron.py                       # full table (a CUDA GPU is needed)
    python benchmarks/bench_neuron.py --steps 4 --sizes 16M --dtypes fp32
    python benchmarks/bench_neuron.py --compile-check       # no GPU: lower kernels to sm_90 code

Without CUDA it prints a note and exits 0 (``--compile-check`` needs no GPU; it exits 3 when
this Triton has no CUDA backend).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_common

import torch
from bench_common import snntorch_lif, spikingjelly_lif

DEVICE = "cuda"
SIZES = {"1M": 1 << 20, "4M": 1 << 22, "16M": 1 << 24}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _fmt_n(n: int) -> str:
    for unit, div in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= div:
            return f"{n / div:g}{unit}"
    return str(n)


def _parse_size(s: str) -> int:
    s = s.strip().upper()
    if s in SIZES:
        return SIZES[s]
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(s[:-1]) * mult[s[-1]]) if s[-1] in mult else int(s)


# ---------------------------------------------------------------------------------- timing


def _bench(fn, reps: int, warmup: int = 3) -> float:
    """Median milliseconds of ``fn`` on the current CUDA stream."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def copy_bandwidth(nbytes: int = 1 << 30) -> float:
    """Bytes per second of a device-to-device tensor copy (read + write counted)."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device="cuda").uniform_()
    dst = torch.empty_like(src)
    ms = _bench(lambda: dst.copy_(src), reps=20)
    return 2 * nbytes / (ms * 1e-3)


def time_impl(fn, T: int, N: int, dtype: torch.dtype, reps: int) -> tuple[float, float]:
    """(forward ms, forward+backward ms) of ``fn`` on a fresh ``[T, N]`` input."""
    x = torch.randn(T, N, device=DEVICE, dtype=dtype).mul_(1.5).requires_grad_()
    g = torch.randn(T, N, device=DEVICE, dtype=dtype)

    def fwd_bwd():
        x.grad = None
        fn(x).backward(g)

    return _bench(lambda: fn(x), reps), _bench(fwd_bwd, reps)


# --------------------------------------------------------------------------- implementations


def _lif_params():
    from fewstep.neurons.functional import NeuronParams
    from fewstep.neurons.surrogate import Surrogate

    return NeuronParams(decay=0.5, v_threshold=1.0, reset="hard", v_reset=0.0, surrogate=Surrogate("sigmoid"))


def make_impls(use_compile: bool):
    """name -> callable(x [T, N]) -> spikes [T, N] (differentiable), or a reason string."""
    from fewstep.neurons.functional import neuron_multistep

    p = _lif_params()
    impls: dict[str, object] = {}
    try:
        from fewstep.kernels import HAS_TRITON, triton_multistep

        impls["fewstep triton"] = (lambda x: triton_multistep(x, p).spikes) if HAS_TRITON else "triton not installed"
    except Exception as exc:  # pragma: no cover
        impls["fewstep triton"] = f"unavailable: {exc!r}"
    impls["pytorch loop"] = lambda x: neuron_multistep(x, p).spikes
    if use_compile:
        try:
            import torch._dynamo

            for knob in ("cache_size_limit", "recompile_limit"):  # one compile per (T, N, dtype)
                if hasattr(torch._dynamo.config, knob):
                    setattr(torch._dynamo.config, knob, 256)
            compiled = torch.compile(lambda x: neuron_multistep(x, p).spikes, dynamic=False)
            impls["torch.compile loop"] = compiled
        except Exception as exc:  # pragma: no cover
            impls["torch.compile loop"] = f"unavailable: {exc!r}"
    try:
        import spikingjelly  # noqa: F401 - not installed: ImportError below

        node = None
        for backend in (None, "triton", "cupy", "torch"):
            try:
                sj, node = spikingjelly_lif(DEVICE, backend)
                sj(torch.zeros(2, 8, device=DEVICE))
                break
            except Exception:
                node = None
        if node is None:
            raise RuntimeError("no working LIFNode backend")

        impls[f"spikingjelly ({getattr(node, 'backend', '?')})"] = sj
    except ImportError:
        impls["spikingjelly"] = "not installed"
    except Exception as exc:
        impls["spikingjelly"] = f"unavailable: {exc!r}"
    try:
        impls["snntorch Leaky loop"] = snntorch_lif()
    except ImportError:
        impls["snntorch"] = "not installed"
    except Exception as exc:
        impls["snntorch"] = f"unavailable: {exc!r}"
    return impls


def run(args) -> int:
    if not torch.cuda.is_available():
        print("bench_neuron: no CUDA device here, nothing to time (the kernels need a GPU; on CPU they run\n"
              "only under the Triton interpreter, for tests). Run this on a CUDA machine, or use\n"
              "--compile-check to lower the kernels to sm_90 code without a GPU.")
        return 0
    dev = torch.cuda.get_device_name()
    bw = copy_bandwidth()
    print(f"device: {dev}   torch {torch.__version__}   copy bandwidth: {bw / 1e12:.2f} TB/s")
    impls = make_impls(not args.no_compile)
    for name, fn in impls.items():
        if isinstance(fn, str):
            print(f"  (skipping {name}: {fn})")
    if not isinstance(impls.get("fewstep triton"), str):  # sanity: same spikes as the reference
        xs = torch.randn(4, 1 << 16, device=DEVICE) * 1.5
        same = torch.equal(impls["fewstep triton"](xs), impls["pytorch loop"](xs))
        print(f"check: fewstep spikes == reference spikes: {same}")
    steps = [int(s) for s in args.steps.split(",")]
    sizes = [_parse_size(s) for s in args.sizes.split(",")]
    dtypes = [DTYPES[d] for d in args.dtypes.split(",")]
    hdr = (f"{'impl':28s} {'dtype':5s} {'T':>2s} {'N':>6s} {'fwd ms':>8s} {'f+b ms':>8s} {'floor':>7s} "
           f"{'%floor':>7s} {'vs fewstep':>10s}")
    for dname, dtype in zip(args.dtypes.split(","), dtypes):
        esize = torch.empty((), dtype=dtype).element_size()
        for T in steps:
            for N in sizes:
                print("\n" + hdr)
                floor_ms = 5 * T * N * esize / bw * 1e3
                base = None
                for name, fn in impls.items():
                    if isinstance(fn, str):
                        continue
                    try:
                        fms, fbms = time_impl(fn, T, N, dtype, args.reps)
                    except Exception as exc:
                        print(f"{name:28s} failed: {type(exc).__name__}: {str(exc)[:100]}")
                        continue
                    finally:
                        torch.cuda.empty_cache()
                    if base is None and name.startswith("fewstep"):
                        base = fbms
                    ratio = f"{fbms / base:9.2f}x" if base else " " * 10
                    print(f"{name:28s} {dname:5s} {T:2d} {_fmt_n(N):>6s} {fms:8.3f} {fbms:8.3f} "
                          f"{floor_ms:7.3f} {100 * floor_ms / fbms:6.0f}% {ratio}")
    print("\nfwd is timed with an input that requires grad (as in training). %floor = five-pass floor /\n"
          "measured fwd+bwd time; 'vs fewstep' = fwd+bwd time / fewstep's fwd+bwd time.")
    return 0


# ------------------------------------------------------------------------------ compile check


def compile_check(quick: bool) -> int:
    """Lower the kernels to sm_90 (H100) cubin without a GPU; report registers and spills."""
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("compile-check: unset TRITON_INTERPRET (interpreted kernels cannot be compiled)")
        return 2
    try:
        import triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
    except Exception as exc:
        print(f"compile-check: triton unavailable: {exc!r}")
        return 3
    from fewstep.kernels import triton_neuron as tn

    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    target = GPUTarget("cuda", 90, 32)
    aligned = [["tt.divisibility", 16]]

    def source(fn, io: str, consts: dict):
        sig, attrs = {}, {}
        for i, name in enumerate(fn.arg_names):
            if name in consts:
                sig[name] = "constexpr"
            elif name.endswith("_ptr"):
                io_ptr = (name in ("x_ptr", "s_ptr", "m_ptr", "vT_ptr", "gs_ptr", "gx_ptr", "gm_ptr")
                          or (name == "in_ptr" and not consts["SAVED_H"]))  # the backward's x (else fp32 h)
                sig[name] = "*" + (io if io_ptr else "fp32")
                attrs[(i,)] = aligned
            elif name == "N":
                sig[name] = "i32"
                attrs[(i,)] = aligned
            else:
                sig[name] = "fp32"
        return ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)

    def usage(cubin: bytes) -> tuple[int, int] | None:
        if not cuobjdump.exists():
            return None
        with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
            f.write(cubin)
        try:
            out = subprocess.run([str(cuobjdump), "-res-usage", f.name], capture_output=True, text=True).stdout
        finally:
            os.unlink(f.name)
        m = re.search(r"REG:(\d+).*?LOCAL:(\d+)", out, re.S)
        return (int(m.group(1)), int(m.group(2))) if m else None

    bwd_common = dict(K=1, SG=1, HARD=True, DETACH=False, SCALE=False, HAS_V0=False, HAS_GS=True, HAS_GM=False,
                      HAS_GVT=False, V0_GRAD=False, DECAY_GRAD=False, THR_GRAD=False, DECAY_FROM_PTR=False,
                      THR_FROM_PTR=False)
    cases = []
    for io in (("fp32",) if quick else ("fp32", "bf16")):
        for T in ((4, 10) if quick else (1, 4, 8, 16)):
            cases.append(("fwd", tn._neuron_fwd_kernel, io, dict(
                T=T, K=1, HARD=True, SCALE=False, HAS_V0=False, DECAY_FROM_PTR=False, THR_FROM_PTR=False,
                STORE_M=False, SAVE_H=T > tn.MAX_RECOMPUTE_T, UNROLL=T <= tn.MAX_RECOMPUTE_T, BLOCK=tn._BLOCK_FWD)))
            bwd, saved_h = tn._neuron_bwd_kernel, T > tn.MAX_RECOMPUTE_T
            cases.append(("bwd LIF", bwd, io, dict(bwd_common, T=T, SAVED_H=saved_h, BLOCK=tn._block_bwd(T))))
            if not quick or T == 4:
                cases.append(("bwd MT-LIF K=4 learnable, all grads", bwd, io, dict(
                    bwd_common, T=T, SAVED_H=saved_h, BLOCK=tn._block_bwd(T), K=4, SG=2, HARD=False, HAS_V0=True, HAS_GM=True,
                    HAS_GVT=True, V0_GRAD=True, DECAY_GRAD=True, THR_GRAD=True, DECAY_FROM_PTR=True,
                    THR_FROM_PTR=True)))
    # every option once (all four surrogates, both resets, detach, scale, v0, membrane, learnables)
    cases.append(("fwd all options", tn._neuron_fwd_kernel, "fp32", dict(
        T=4, K=3, HARD=False, SCALE=True, HAS_V0=True, DECAY_FROM_PTR=True, THR_FROM_PTR=True,
        STORE_M=True, SAVE_H=False, UNROLL=True, BLOCK=tn._BLOCK_FWD)))
    cases.append(("fwd all options, saving h", tn._neuron_fwd_kernel, "bf16", dict(
        T=10, K=2, HARD=True, SCALE=True, HAS_V0=True, DECAY_FROM_PTR=True, THR_FROM_PTR=True,
        STORE_M=True, SAVE_H=True, UNROLL=False, BLOCK=tn._BLOCK_FWD)))
    all_grads = dict(HAS_V0=True, HAS_GM=True, HAS_GVT=True, V0_GRAD=True, DECAY_GRAD=True, THR_GRAD=True,
                     DECAY_FROM_PTR=True, THR_FROM_PTR=True)
    for sg, hard, T in ((0, True, 2), (3, False, 2), (0, False, 10), (3, True, 10)):
        cases.append((f"bwd surrogate {sg} {'hard' if hard else 'soft'} detach scale", tn._neuron_bwd_kernel, "fp16",
                      dict(bwd_common, **all_grads, T=T, SAVED_H=T > tn.MAX_RECOMPUTE_T, BLOCK=tn._block_bwd(T), K=2,
                           SG=sg, HARD=hard, DETACH=True, SCALE=True)))
    try:
        spills = 0
        for label, fn, io, consts in cases:
            t0 = time.time()
            try:
                c = triton.compile(source(fn, io, consts), target=target,
                                   options={"num_warps": tn._NUM_WARPS, "enable_fp_fusion": False})
            except Exception as exc:
                if "backend" in repr(exc).lower() or isinstance(exc, (ImportError, FileNotFoundError)):
                    print(f"compile-check: no CUDA backend: {exc!r}")
                    return 3
                raise
            ptx = c.asm.get("ptx", "")
            res = usage(c.asm["cubin"])
            spills += res[1] if res else 0
            regs = f"regs {res[0]:3d} local {res[1]:3d}" if res else "regs ?"
            print(f"sm_90 {label:42s} {io:4s} T={consts['T']:<2d} {regs}  "
                  f"128-bit ld {ptx.count('ld.global.v4')} st {ptx.count('st.global.v4')}  {time.time() - t0:.1f}s")
    except Exception as exc:
        print(f"compile-check FAILED: {type(exc).__name__}: {exc}")
        return 1
    print("spills: none" if spills == 0 else f"spills: {spills} bytes of local memory")
    return 0 if spills == 0 else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", default="1,2,4,8", help="comma-separated T values")
    ap.add_argument("--sizes", default="1M,4M,16M", help="neurons per step, e.g. 1M,16M or 1000000")
    ap.add_argument("--dtypes", default="fp32,bf16", help="fp32,bf16")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile (slow to warm up)")
    ap.add_argument("--compile-check", action="store_true", help="lower kernels to sm_90 code (no GPU needed)")
    ap.add_argument("--quick", action="store_true", help="with --compile-check: fewer variants")
    args = ap.parse_args(argv)
    if args.compile_check:
        return compile_check(args.quick)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
