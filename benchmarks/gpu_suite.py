"""fewstep's prepared GPU suite: one command measures every GPU goal and writes gpu_suite.json / .md.

Made for a lent GPU (one H100 / H200, a fresh machine with no internet, a few minutes): the
sections run one after another, each in its own process with its own time budget, so a CUDA
fault, a hang or a missing package costs one section, never the suite, and the results are
rewritten after every section (a run stopped from outside still leaves them):

1. ``env``          device, driver, versions, which peers import, the data pack.
2. ``correctness``  every Triton neuron variant (IF / LIF / PLIF / MT-LIF, hard and soft reset, each
                    surrogate, fp32 / bf16 / fp16, learnable decay / threshold, plus T = 1, 8, 10,
                    detach, scale, v_reset, strided input, no v0 / membrane) forward and backward
                    against the float64 reference (``neuron_multistep`` on the CPU); the largest
                    error of each variant; a deliberately wrong reference that must be flagged.
                    Runs in parallel processes (Triton compiles on the CPU).
3. ``neurons``      LIF and MT-LIF, T = 4, 16M neurons, forward and forward + backward, fp32 and bf16:
                    fewstep fused, fewstep's eager loop, a torch.compile'd loop, SpikingJelly 2.0 (its
                    automatic CUDA / Triton choice), snnTorch 1.0; interleaved, CUDA events, median; each
                    row as % of the floor (2 passes forward, 5 passes forward + backward at the measured
                    copy bandwidth).
4. ``training``     the spiking VGG ``vgg_bench`` (6 conv + BN + LIF, T = 4, batch 128, 32x32), SGD
                    step, in fewstep, SpikingJelly and snnTorch, fp32 and bf16 autocast: img/s, % of
                    the measured GEMM rate, peak memory of one step.
5. ``stc``          ``stc_batch`` events/s on 256 N-MNIST-sized and 32 Gesture-sized streams.
6. ``accuracy``     ``cifar10-fast-mtlif-t2`` on the carried ``gpu_data/cifar10-jpeg.npz`` for as many
                    epochs as fit what is left of the budget (at most the recipe's).

Usage::

    python benchmarks/gpu_suite.py --dry-run --out /tmp/gs     # CPU, tiny sizes, Triton interpreted
    python benchmarks/gpu_suite.py --out "$OUT"                 # on the GPU (or benchmarks/gpu_suite.sh)
    python benchmarks/gpu_suite.py --sections env,correctness --budget 120

Preparing a GPU run (the machine has no package index and cannot see ../shared):

* data: ``python benchmarks/gpu_suite_data.py --prepare`` writes ``gpu_data/cifar10-jpeg.npz`` (all
  60,000 JPEGs, byte-exact, about 18 MB; ``gpu_data/`` is git-ignored and travels with ``carry``);
* peers: ``python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
  -d .whl spikingjelly==2.0.0 snntorch==1.0.0 loguru==0.7.3`` (``.whl/`` is git-ignored; loguru is
  the one import SpikingJelly needs that the GPU image lacks). ``benchmarks/gpu_suite.sh`` installs
  them there with ``pip install --no-index --no-deps --target /tmp/site .whl/*.whl``; a peer that is
  missing makes its rows "skipped: not installed".

benchmarks/README.md has the exact device-tool call (command, carry list, timeout).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(ROOT), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

SECTIONS = ("env", "correctness", "neurons", "training", "stc", "accuracy")
# Seconds per section on the GPU (the accuracy run gets what is left) and in the dry run.
BUDGETS = {"env": 30, "correctness": 100, "neurons": 100, "training": 80, "stc": 25, "accuracy": 0}
DRY_BUDGETS = {"env": 60, "correctness": 120, "neurons": 90, "training": 90, "stc": 60, "accuracy": 120}
MIN_START = {"env": 5, "correctness": 15, "neurons": 15, "training": 15, "stc": 8, "accuracy": 30}
GRACE_S = 25  # a section's process is killed this long after its budget (start-up and teardown)
RESERVE_S = 8  # kept back at the end for writing the results
STATUS_OK, STATUS_PARTIAL, STATUS_SKIPPED, STATUS_FAILED, STATUS_TIMEOUT = "ok", "partial", "skipped", "failed", \
    "timeout"

DTYPE_NAMES = ("fp32", "bf16", "fp16")
# Pass limits against float64: relative norm error of every tensor, relative error of the
# scalar gradients (learnable decay / threshold). Half-precision outputs and input gradients are
# rounded once to their dtype (half an ulp: 2^-9 bf16, 2^-12 fp16); everything inside is fp32.
TENSOR_TOL = {"fp32": 1e-5, "bf16": 8e-3, "fp16": 2e-3}
SCALAR_TOL = {"fp32": 1e-4, "bf16": 1e-3, "fp16": 1e-3}
SELF_TEST_DECAY_ERROR = 1e-3  # the wrong reference: its decay 0.1 % off


def _now() -> float:
    return time.perf_counter()


def _clean(obj: Any) -> Any:
    """JSON-safe: non-finite floats as strings ('nan', 'inf'), tuples as lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _write_json(path: Path, payload: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_clean(payload), indent=1) + "\n")
    os.replace(tmp, path)


def _err(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"


# =============================================================================================
# A section's process: budget, incremental results
# =============================================================================================


class Section:
    """The running section: its budget, rows and notes, saved to ``path`` after every change."""

    def __init__(self, name: str, path: Path, budget_s: float) -> None:
        self.t0 = _now()
        self.deadline = self.t0 + budget_s
        self.path = path
        self.data: dict[str, Any] = {"name": name, "status": "running", "budget_s": round(budget_s, 1), "rows": [],
                                     "info": {}, "skipped_items": [], "notes": []}
        self.save()

    def left(self) -> float:
        return self.deadline - _now()

    @property
    def info(self) -> dict[str, Any]:
        return self.data["info"]

    def add(self, row: dict[str, Any]) -> None:
        self.data["rows"].append(row)
        self.save()

    def skip(self, item: str, reason: str) -> None:
        self.data["skipped_items"].append({"item": item, "reason": reason})
        self.save()

    def note(self, text: str) -> None:
        self.data["notes"].append(text)
        self.save()

    def log(self, msg: str) -> None:
        print(f"[{self.data['name']} {(_now() - self.t0):6.1f}s] {msg}", flush=True)

    def save(self) -> None:
        self.data["seconds"] = round(_now() - self.t0, 2)
        _write_json(self.path, self.data)

    def finish(self, status: str, reason: str | None = None) -> None:
        if status == STATUS_OK and self.data["skipped_items"]:
            status = STATUS_PARTIAL
        self.data["status"] = status
        if reason:
            self.data["reason"] = reason
        self.save()


def _device(args) -> Any:
    import torch

    return torch.device("cpu" if args.dry_run else "cuda")


def _skip_without_cuda(sec: Section, args) -> bool:
    """True (the section marked skipped) when there is no CUDA device and this is no dry run."""
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        sec.finish(STATUS_SKIPPED, "no CUDA device")
        return True
    return False


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def interleaved_ms(fns: dict[str, Callable[[], object]], dev, reps: int, warmup: int) -> dict[str, float]:
    """Median milliseconds of each function, each repetition running every function once in turn.
    CUDA: device events around each call (one synchronisation per repetition); CPU: a host clock."""
    import torch

    for _ in range(warmup):
        for fn in fns.values():
            fn()
    _sync(dev)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        if dev.type == "cuda":
            marks = []
            for k, fn in fns.items():
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                marks.append((k, a, b))
            torch.cuda.synchronize(dev)
            for k, a, b in marks:
                times[k].append(a.elapsed_time(b))
        else:
            for k, fn in fns.items():
                t = _now()
                fn()
                times[k].append((_now() - t) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def copy_bandwidth_gbs(dev, nbytes: int, reps: int) -> float:
    """A device-to-device copy of ``nbytes``, read plus write counted, in GB/s."""
    import torch

    src = torch.empty(nbytes // 4, dtype=torch.float32, device=dev).uniform_()
    dst = torch.empty_like(src)
    ms = interleaved_ms({"copy": lambda: dst.copy_(src)}, dev, reps, warmup=3)["copy"]
    return 2 * nbytes / (ms * 1e-3) / 1e9


def gemm_tflops(dev, dtype, n: int, reps: int, tf32: bool = False) -> float:
    """A square matrix product of random operands (never zeros) in TFLOP/s."""
    import torch

    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        a = torch.randn(n, n, device=dev, dtype=dtype)
        b = torch.randn(n, n, device=dev, dtype=dtype)
        ms = interleaved_ms({"mm": lambda: torch.mm(a, b)}, dev, reps, warmup=3)["mm"]
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    return 2 * n ** 3 / (ms * 1e-3) / 1e12


def _dtype(name: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


# =============================================================================================
# 1. env
# =============================================================================================


def _version(module: str) -> str:
    """The installed version of ``module`` if it imports, else why not."""
    from importlib import metadata

    try:
        mod = __import__(module)
    except Exception as exc:  # noqa: BLE001 - any import failure is the answer
        return f"not installed ({_err(exc)})"
    with contextlib.suppress(metadata.PackageNotFoundError):
        return metadata.version(module)
    return str(getattr(mod, "__version__", "installed"))


def section_env(sec: Section, args) -> str:
    import torch

    info = sec.info
    info.update(python=platform.python_version(), platform=platform.platform(), cpu_count=os.cpu_count(),
                torch=torch.__version__, torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available(),
                triton=_version("triton"), spikingjelly=_version("spikingjelly"), snntorch=_version("snntorch"),
                numba=_version("numba"), tonic=_version("tonic"),
                env={k: os.environ.get(k) for k in ("TRITON_INTERPRET", "FEWSTEP_KERNELS", "FEWSTEP_REFERENCE",
                                                    "PYTHONPATH", "CUDA_VISIBLE_DEVICES")})
    from fewstep import __version__

    info["fewstep"] = __version__
    try:
        from fewstep.kernels import load_triton

        info["fewstep_triton_kernels"] = bool(load_triton())
    except Exception as exc:  # noqa: BLE001
        info["fewstep_triton_kernels"] = _err(exc)
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(device=p.name, capability=f"{p.major}.{p.minor}", sm_count=p.multi_processor_count,
                    memory_gib=round(p.total_memory / 2 ** 30, 1), cudnn=torch.backends.cudnn.version(),
                    allow_tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                    allow_tf32_cudnn=torch.backends.cudnn.allow_tf32)
        try:
            from spikingjelly._ops.lif import _selection

            info["spikingjelly_lif_implementation"] = _selection.diagnostics(torch.device("cuda", 0))
        except Exception as exc:  # noqa: BLE001
            info["spikingjelly_lif_implementation"] = _err(exc)
    else:
        info["device"] = "cpu (dry run)" if args.dry_run else "no CUDA device"
    if shutil.which("nvidia-smi"):
        q = "name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw,memory.used,utilization.gpu"
        r = subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"], capture_output=True,
                           text=True, timeout=20)
        info["nvidia_smi"] = (r.stdout or r.stderr).strip()
    pack = Path(args.data)
    info["data_pack"] = {"path": str(pack), "bytes": pack.stat().st_size} if pack.is_file() else f"absent: {pack}"
    whl = ROOT / ".whl"
    info["carried_wheels"] = sorted(p.name for p in whl.glob("*.whl")) if whl.is_dir() else []
    if not args.dry_run and not torch.cuda.is_available():
        sec.finish(STATUS_FAILED, "no CUDA device: every GPU section is skipped (--dry-run runs the suite on the CPU)")
        return STATUS_FAILED
    return STATUS_OK


# =============================================================================================
# 2. correctness: every Triton variant against float64
# =============================================================================================

# (label, neuron, learnable decay, learnable threshold)
NEURON_CONFIGS = (
    ("IF", "IF", False, False), ("IF learn-thr", "IF", False, True),
    ("LIF", "LIF", False, False), ("LIF learn-thr", "LIF", False, True),
    ("PLIF", "PLIF", True, False), ("PLIF learn-thr", "PLIF", True, True),
    ("MT-LIF", "MT-LIF", False, False), ("MT-LIF learn-decay", "MT-LIF", True, False),
    ("MT-LIF learn-both", "MT-LIF", True, True),
)
RESETS = ("hard", "soft")


def _variant(config: str, reset: str, surrogate: str, dtype: str, **over) -> dict[str, Any]:
    label, neuron, ld, lt = next(c for c in NEURON_CONFIGS if c[0] == config)
    v = {"config": label, "neuron": neuron, "learn_decay": ld, "learn_thr": lt, "reset": reset,
         "surrogate": surrogate, "dtype": dtype, "T": 4, "v0": True, "membrane": True, "detach": False,
         "scale": False, "v_reset": 0.0, "layout": "contiguous"}
    v.update(over)
    extra = [f"{k}={v[k]}" for k in ("T", "v0", "membrane", "detach", "scale", "v_reset", "layout")
             if k in over]
    v["id"] = " ".join([label, reset, surrogate, dtype, *extra])
    return v


def variant_grid(full: bool) -> list[dict[str, Any]]:
    """Every neuron config x reset x surrogate x dtype (full), or one of each config x reset with
    the surrogates and dtypes cycling (the dry run's subset: every value still appears), then the
    option variants (both)."""
    from fewstep.neurons.surrogate import SURROGATES

    out = []
    pairs = [(c[0], r) for c in NEURON_CONFIGS for r in RESETS]
    for i, (config, reset) in enumerate(pairs):
        if full:
            out += [_variant(config, reset, s, d) for s in SURROGATES for d in DTYPE_NAMES]
        else:
            out.append(_variant(config, reset, SURROGATES[i % 4], DTYPE_NAMES[i % 3]))
    out += [
        _variant("PLIF", "soft", "arctan", "fp32", T=10),  # T > 8: the saved-membrane backward
        _variant("MT-LIF learn-both", "hard", "triangle", "bf16", T=10),
        _variant("IF learn-thr", "soft", "sigmoid", "fp16", T=10),
        _variant("LIF", "hard", "sigmoid", "fp32", T=8),  # the largest unrolled T, half-size blocks
        _variant("MT-LIF learn-decay", "soft", "rectangle", "bf16", T=8),
        _variant("PLIF", "hard", "triangle", "fp32", T=1),
        _variant("LIF", "hard", "triangle", "fp32", v0=False, membrane=False),  # the training call
        _variant("MT-LIF learn-decay", "soft", "triangle", "bf16", v0=False, membrane=False),
        _variant("PLIF", "hard", "sigmoid", "fp32", detach=True),
        _variant("MT-LIF", "soft", "arctan", "fp16", detach=True),
        _variant("MT-LIF learn-both", "soft", "triangle", "fp32", scale=True),
        _variant("LIF", "hard", "rectangle", "bf16", scale=True, detach=True),
        _variant("PLIF learn-thr", "hard", "arctan", "fp32", v_reset=-0.3),
        _variant("LIF", "soft", "rectangle", "fp32", layout="transposed"),
        _variant("PLIF", "hard", "triangle", "bf16", layout="sliced"),
    ]
    return out


def _neuron_values(v: dict[str, Any]) -> tuple[float, float, int]:
    decay = {"IF": 1.0, "LIF": 0.5 if v["reset"] == "hard" else 0.7, "PLIF": 0.6, "MT-LIF": 0.75}[v["neuron"]]
    thr = 0.5 if v["neuron"] == "MT-LIF" else (0.9 if v["learn_thr"] else 1.0)
    return decay, thr, 3 if v["neuron"] == "MT-LIF" else 1


def _rel_norm(a, b) -> float:
    """||a - b|| / ||b|| in float64 (||a - b|| when b is all zeros); NaN when either is not finite."""
    import torch

    a, b = a.double(), b.double()
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return float("nan")
    den = float(b.norm())
    num = float((a - b).norm())
    return num / den if den > 0 else num


def _max_abs(a, b) -> float:
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def check_variant(v: dict[str, Any], dev, shape: tuple[int, int], seed: int,
                  reference_decay_error: float = 0.0) -> dict[str, Any]:
    """Run one variant through the Triton kernel on ``dev`` and through the float64 reference on
    the CPU, on the same input values; return every error and whether it passes.

    Neurons whose spike trains differ (a value within rounding of a threshold can fire in one and
    not the other) are counted and left out: their upstream gradients are zero in both runs, so
    every other number is comparable to rounding. Outputs and gradients are allocated over
    poisoned (NaN) memory on CUDA and must come back finite everywhere."""
    import torch

    from fewstep.kernels import triton_multistep
    from fewstep.neurons import NeuronParams, Surrogate, neuron_multistep

    gen = torch.Generator().manual_seed(seed)
    dtype = _dtype(v["dtype"])
    T = v["T"]
    B, F = shape
    decay, thr, K = _neuron_values(v)

    def randn(*s):
        return torch.randn(*s, generator=gen)

    # The input in its layout: a contiguous base leaf and the (maybe strided) view the kernel gets.
    if v["layout"] == "transposed":
        base = (randn(T, F, B) * 1.2 + 0.4).to(dtype)

        def view(t):
            return t.transpose(1, 2)
    elif v["layout"] == "sliced":
        base = (randn(T, 2 * B, F + 1) * 1.2 + 0.4).to(dtype)

        def view(t):
            return t[:, ::2, 1:]
    else:
        base = (randn(T, B, F) * 1.2 + 0.4).to(dtype)

        def view(t):
            return t
    v0 = (randn(B, F) * 0.5).to(dtype) if v["v0"] else None

    def params(device, fdtype, decay_scale=1.0):
        d = torch.tensor(decay, dtype=torch.float32).to(device=device, dtype=fdtype) * decay_scale \
            if v["learn_decay"] else decay * decay_scale
        t = torch.tensor(thr, dtype=torch.float32).to(device=device, dtype=fdtype) if v["learn_thr"] else thr
        if isinstance(d, torch.Tensor):
            d = d.detach().requires_grad_()
        if isinstance(t, torch.Tensor):
            t = t.detach().requires_grad_()
        return NeuronParams(decay=d, v_threshold=t, num_thresholds=K, reset=v["reset"], v_reset=v["v_reset"],
                            surrogate=Surrogate(v["surrogate"]), detach_reset=v["detach"],
                            scale_output=v["scale"])

    pk = params(dev, torch.float32)
    pr = params("cpu", torch.float64, 1.0 + reference_decay_error)
    xk_base = base.to(dev).requires_grad_()
    xr = view(base).double().contiguous().requires_grad_()
    v0k = v0.to(dev).requires_grad_() if v0 is not None else None
    v0r = v0.double().requires_grad_() if v0 is not None else None
    N = B * F

    def poison(*shapes_dtypes):
        """Fill the allocator's free blocks of these sizes with NaN (CUDA reuses them at once)."""
        if dev.type == "cuda":
            blocks = [torch.full(s, float("nan"), dtype=d, device=dev) for s, d in shapes_dtypes]
            del blocks

    poison(((T, N), dtype), ((N,), dtype), ((T, N), dtype))
    ok = triton_multistep(view(xk_base), pk, v0k, need_membrane=v["membrane"])
    orf = neuron_multistep(xr, pr, v0r)
    res: dict[str, Any] = {"id": v["id"], "variant": v, "neurons": N}

    sk = ok.spikes.detach().double().cpu().reshape(T, N)
    sr = orf.spikes.detach().reshape(T, N)
    res["out_dtype_ok"] = ok.spikes.dtype == dtype and ok.v.dtype == dtype
    spike_tol = 2 * torch.finfo(dtype).eps * thr if v["scale"] else 0.0
    finite = bool(torch.isfinite(sk).all()) and bool(torch.isfinite(ok.v.detach()).all())
    flipped = ((sk - sr).abs() > spike_tol).any(0) if finite else torch.ones(N, dtype=torch.bool)
    keep = ~flipped
    res["flipped_neurons"] = int(flipped.sum())
    res["allowed_flips"] = max(1, int(1e-4 * N))
    errs: dict[str, dict[str, float]] = {}

    def compare(name, a, b, cols_last: bool = True):
        a = a.detach().double().cpu()
        b = b.detach().double()
        a = a.reshape(-1, N)[:, keep] if cols_last else a
        b = b.reshape(-1, N)[:, keep] if cols_last else b
        errs[name] = {"rel": _rel_norm(a, b), "max_abs": _max_abs(a, b) if torch.isfinite(a).all() else
                      float("nan")}

    compare("spikes", ok.spikes, orf.spikes)
    compare("v_T", ok.v, orf.v)
    if v["membrane"]:
        if ok.membrane is None:
            res["error"] = "need_membrane=True returned no membrane"
        else:
            finite = finite and bool(torch.isfinite(ok.membrane.detach()).all())
            compare("membrane", ok.membrane, orf.membrane)
    elif ok.membrane is not None:
        res["error"] = "need_membrane=False returned a membrane"

    # Upstream gradients: representable in the output dtype, zero on flipped neurons.
    mask_tn = keep.to(torch.float64)

    def upstream(*s):
        return (randn(*s).to(dtype).double() * mask_tn).contiguous()

    gs = upstream(T, N)
    gv = upstream(N)
    gm = upstream(T, N) if v["membrane"] else None
    outs_k = [ok.spikes, ok.v] + ([ok.membrane] if gm is not None else [])
    outs_r = [orf.spikes, orf.v] + ([orf.membrane] if gm is not None else [])
    ups = [gs.reshape(orf.spikes.shape), gv.reshape(orf.v.shape)] + (
        [gm.reshape(orf.spikes.shape)] if gm is not None else [])
    leaves_k = {"x": xk_base, "v0": v0k, "decay": pk.decay, "threshold": pk.v_threshold}
    leaves_r = {"x": xr, "v0": v0r, "decay": pr.decay, "threshold": pr.v_threshold}
    names = [k for k, t in leaves_k.items() if isinstance(t, torch.Tensor) and t.requires_grad]
    poison(((T, N), dtype), ((N,), dtype))
    gk = torch.autograd.grad(outs_k, [leaves_k[k] for k in names],
                             [u.to(device=dev, dtype=o.dtype) for u, o in zip(ups, outs_k)], allow_unused=True)
    gr = torch.autograd.grad(outs_r, [leaves_r[k] for k in names], ups, allow_unused=True)
    for name, a, b in zip(names, gk, gr):
        if a is None or b is None:
            res.setdefault("missing_grads", []).append(name)
            continue
        if name == "x":
            a = view(a)
        if name in ("decay", "threshold"):
            a64, b64 = float(a.double().cpu()), float(b)
            errs[f"grad_{name}"] = {"rel": abs(a64 - b64) / max(abs(b64), 1.0), "max_abs": abs(a64 - b64),
                                    "scalar": True}
            finite = finite and math.isfinite(a64)
        else:
            finite = finite and bool(torch.isfinite(a).all())
            compare(f"grad_{name}", a, b)
    res["finite"] = finite
    res["errors"] = errs
    tol, stol = TENSOR_TOL[v["dtype"]], SCALAR_TOL[v["dtype"]]
    bad = [k for k, e in errs.items() if not (e["rel"] <= (stol if e.get("scalar") else tol))]
    if res["flipped_neurons"] > res["allowed_flips"]:
        bad.append("flipped_neurons")
    if not finite:
        bad.append("not finite (unwritten outputs?)")
    if not res["out_dtype_ok"]:
        bad.append("output dtype")
    if res.get("missing_grads") or res.get("error"):
        bad.append("missing outputs")
    res["max_rel"] = max((e["rel"] for e in errs.values()), key=lambda r: r if math.isfinite(r) else math.inf)
    res["max_abs"] = max((e["max_abs"] for e in errs.values()), key=lambda r: r if math.isfinite(r) else math.inf)
    res["tolerance"] = {"tensor_rel": tol, "scalar_rel": stol}
    res["failed_checks"] = bad
    res["passed"] = not bad
    return res


def section_correctness(sec: Section, args) -> str:
    import torch

    from fewstep.kernels import load_triton

    if _skip_without_cuda(sec, args):
        return STATUS_SKIPPED
    if not load_triton():
        from fewstep import kernels

        sec.finish(STATUS_SKIPPED, f"Triton kernels unavailable: {kernels.IMPORT_ERROR!r}")
        return STATUS_SKIPPED
    from fewstep.kernels import triton_neuron

    dev = _device(args)
    sec.info.update(interpreted=bool(triton_neuron.INTERPRET), device=str(dev), shard=args.shard,
                    shards=args.shards)
    shape = (7, 131) if args.dry_run else (129, 509)  # N not a multiple of any block size
    grid = variant_grid(full=not args.dry_run)
    mine = [(i, v) for i, v in enumerate(grid) if i % args.shards == args.shard]
    sec.info.update(variants_total=len(grid), variants_here=len(mine), neurons_per_step=shape[0] * shape[1])
    if args.shard == 0:  # the checker itself: a 0.1 %-wrong reference must fail
        v = _variant("LIF", "soft", "triangle", "fp32")
        try:
            r = check_variant(v, dev, shape, seed=12345, reference_decay_error=SELF_TEST_DECAY_ERROR)
            sec.info["self_test"] = {"reference_decay_error": SELF_TEST_DECAY_ERROR, "flagged": not r["passed"],
                                     "failed_checks": r["failed_checks"], "max_rel": r["max_rel"]}
        except Exception as exc:  # noqa: BLE001
            sec.info["self_test"] = {"flagged": False, "error": _err(exc)}
        sec.save()
    t_start = _now()
    for n_done, (i, v) in enumerate(mine):
        if n_done:  # keep room for one more at the mean pace so far
            pace = (_now() - t_start) / n_done
            if sec.left() < 1.5 * pace + 2:
                for _, rest in mine[n_done:]:
                    sec.skip(rest["id"], "section budget spent")
                break
        try:
            r = check_variant(v, dev, shape, seed=1000 + i)
        except Exception as exc:  # noqa: BLE001 - reported, the next variant runs
            r = {"id": v["id"], "variant": v, "passed": False, "failed_checks": ["exception"], "error": _err(exc),
                 "traceback": traceback.format_exc()[-1500:]}
            if dev.type == "cuda":
                try:
                    torch.cuda.synchronize()
                except Exception as exc2:  # noqa: BLE001 - a sticky CUDA error: later variants cannot run
                    sec.add({**r, "index": i})
                    for _, rest in mine[n_done + 1:]:
                        sec.skip(rest["id"], f"CUDA context lost: {_err(exc2)}")
                    return STATUS_FAILED
        r["index"] = i
        sec.add(r)
        if not r["passed"]:
            sec.log(f"FAIL {v['id']}: {r.get('failed_checks')} {r.get('error', '')}")
    failed = [r for r in sec.data["rows"] if not r.get("passed")]
    if failed or (args.shard == 0 and not sec.info.get("self_test", {}).get("flagged")):
        return STATUS_FAILED
    return STATUS_OK


def merge_correctness(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One section from the shards: rows by variant index, the shard infos, a summary."""
    rows = sorted((r for p in parts for r in p.get("rows", [])), key=lambda r: r.get("index", 0))
    merged = dict(parts[0])
    merged["rows"] = rows
    merged["skipped_items"] = [s for p in parts for s in p.get("skipped_items", [])]
    merged["notes"] = [n for p in parts for n in p.get("notes", [])]
    merged["info"] = dict(parts[0].get("info", {}))
    merged["info"]["shard_seconds"] = [p.get("seconds") for p in parts]
    merged["info"]["shard_status"] = [p.get("status") for p in parts]
    summary: dict[str, Any] = {}
    for d in DTYPE_NAMES:
        rs = [r for r in rows if r.get("variant", {}).get("dtype") == d]
        fin = [r["max_rel"] for r in rs if isinstance(r.get("max_rel"), float)]
        summary[d] = {"variants": len(rs), "passed": sum(bool(r.get("passed")) for r in rs),
                      "max_rel": max(fin) if fin else None,
                      "max_abs": max((r["max_abs"] for r in rs if isinstance(r.get("max_abs"), float)), default=None),
                      "flipped_neurons": sum(r.get("flipped_neurons", 0) for r in rs)}
    merged["info"]["summary"] = summary
    merged["info"]["failures"] = [r["id"] for r in rows if not r.get("passed")]
    statuses = [p.get("status") for p in parts]
    for s in (STATUS_FAILED, STATUS_TIMEOUT, STATUS_PARTIAL):
        if s in statuses:
            merged["status"] = s
            break
    else:
        merged["status"] = STATUS_OK if all(s == STATUS_OK for s in statuses) else statuses[0]
    if merged["info"]["failures"] and merged["status"] != STATUS_TIMEOUT:
        merged["status"] = STATUS_FAILED
    merged["seconds"] = max((p.get("seconds") or 0) for p in parts)
    return merged


# =============================================================================================
# 3. neurons: fewstep fused vs the peers
# =============================================================================================


def _dynamo_limits() -> None:
    import torch._dynamo

    for knob in ("cache_size_limit", "recompile_limit"):  # one compile per (kind, dtype)
        if hasattr(torch._dynamo.config, knob):
            setattr(torch._dynamo.config, knob, 64)


def neuron_impls(kind: str, dev, use_compile: bool) -> dict[str, Callable | str]:
    """name -> callable(x [T, N]) -> spikes, or the reason it is skipped."""
    import torch
    from bench_common import snntorch_lif, spikingjelly_lif
    from bench_cpu import _fewstep_neuron

    from fewstep.neurons.functional import neuron_multistep

    impls: dict[str, Callable | str] = {}
    fused = _fewstep_neuron(kind).to(dev)
    impls["fewstep fused"] = fused
    eager = _fewstep_neuron(kind).to(dev)
    impls["fewstep eager loop"] = lambda x: neuron_multistep(x, eager.params()).spikes
    if use_compile:
        try:
            _dynamo_limits()
            comp = _fewstep_neuron(kind).to(dev)
            impls["torch.compile loop"] = torch.compile(
                lambda x: neuron_multistep(x, comp.params()).spikes, dynamic=False)
        except Exception as exc:  # noqa: BLE001
            impls["torch.compile loop"] = f"skipped: {_err(exc)}"
    else:
        impls["torch.compile loop"] = "skipped: not compiled in --dry-run (minutes on the CPU); the GPU run has it"
    if kind != "LIF":
        impls["SpikingJelly"] = impls["snnTorch"] = "skipped: no multi-threshold neuron"
        return impls
    try:
        impls["SpikingJelly"] = spikingjelly_lif(dev)[0]
    except ImportError as exc:
        impls["SpikingJelly"] = f"skipped: not installed ({exc})"
    except Exception as exc:  # noqa: BLE001
        impls["SpikingJelly"] = f"skipped: {_err(exc)}"
    try:
        impls["snnTorch"] = snntorch_lif(dev)
    except ImportError as exc:
        impls["snnTorch"] = f"skipped: not installed ({exc})"
    except Exception as exc:  # noqa: BLE001
        impls["snnTorch"] = f"skipped: {_err(exc)}"
    return impls


def section_neurons(sec: Section, args) -> str:
    import torch

    if _skip_without_cuda(sec, args):
        return STATUS_SKIPPED
    dev = _device(args)
    T = 4
    N = 1024 if args.dry_run else 1 << 24
    reps, warmup = (1, 0) if args.dry_run else (args.reps, 3)
    bw = copy_bandwidth_gbs(dev, (1 << 22) if args.dry_run else (1 << 30), reps=max(reps, 5))
    sec.info.update(T=T, neurons_per_step=N, reps=reps, copy_gbs=bw, device=str(dev),
                    floor="forward: 2 passes (read x, write s); forward + backward: 5 (and read x, grad_s, "
                          "write grad_x) of T x N elements at the copy bandwidth")
    sec.save()
    sec.log(f"copy bandwidth {bw:.0f} GB/s")
    groups = [(k, d) for k in ("LIF", "MT-LIF") for d in ("fp32", "bf16")]
    t_start = _now()
    for gi, (kind, dname) in enumerate(groups):
        if gi and sec.left() < 1.2 * (_now() - t_start) / gi:
            for k, d in groups[gi:]:
                sec.skip(f"{k} {d}", "section budget spent")
            break
        dtype = _dtype(dname)
        esize = torch.empty((), dtype=dtype).element_size()
        impls = neuron_impls(kind, dev, use_compile=not args.dry_run)
        x = (torch.randn(T, N, device=dev, dtype=dtype) * 1.5).requires_grad_()
        g = torch.randn(T, N, device=dev, dtype=dtype)

        def fwd(f):
            return f(x)

        def fwd_bwd(f):
            x.grad = None
            f(x).backward(g)

        live: dict[str, Callable] = {}
        notes: dict[str, str] = {}
        for name, f in impls.items():
            if isinstance(f, str):
                notes[name] = f
                continue
            try:  # warm up alone (compiles happen here), so a failure drops only this system
                fwd_bwd(f)
                fwd(f)
                _sync(dev)
                live[name] = f
            except Exception as exc:  # noqa: BLE001
                notes[name] = f"failed: {_err(exc)}"
                sec.log(f"{kind} {dname} {name}: {notes[name]}")
        check = None
        if "fewstep fused" in live and "fewstep eager loop" in live:
            # The kernel computes in fp32 whatever its I/O dtype: the same spikes as the eager loop
            # on the input cast up to fp32 (the eager loop in bf16 rounds every step instead).
            with torch.no_grad():
                xs = x[:, : min(N, 1 << 16)]
                check = bool(torch.equal(live["fewstep fused"](xs),
                                         live["fewstep eager loop"](xs.float()).to(dtype)))
        try:
            fw = interleaved_ms({k: (lambda f=f: fwd(f)) for k, f in live.items()}, dev, reps, warmup)
            fb = interleaved_ms({k: (lambda f=f: fwd_bwd(f)) for k, f in live.items()}, dev, reps, warmup)
        except Exception as exc:  # noqa: BLE001
            sec.add({"neuron": kind, "dtype": dname, "system": "(all)", "note": f"timing failed: {_err(exc)}"})
            continue
        floor_f = 2 * T * N * esize / (bw * 1e9) * 1e3
        floor_fb = 5 * T * N * esize / (bw * 1e9) * 1e3
        base = fb.get("fewstep fused")
        for name in impls:
            row: dict[str, Any] = {"neuron": kind, "dtype": dname, "T": T, "neurons": N, "system": name}
            if name in live:
                row.update(fwd_ms=fw[name], fwd_bwd_ms=fb[name], fwd_pct_floor=100 * floor_f / fw[name],
                           fwd_bwd_pct_floor=100 * floor_fb / fb[name],
                           vs_fewstep=(fb[name] / base) if base and name != "fewstep fused" else None)
                if name == "fewstep fused":
                    row["spikes_equal_fp32_eager_loop"] = check
            else:
                row["note"] = notes[name]
            sec.add(row)
        sec.info.setdefault("floor_ms", {})[f"{kind} {dname}"] = {"fwd": floor_f, "fwd_bwd": floor_fb}
        sec.log(f"{kind} {dname}: " + ", ".join(f"{k} {fb[k]:.3f} ms" for k in fb))
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    if dev.type == "cuda" and "spikingjelly" in sys.modules:
        with contextlib.suppress(Exception):
            from spikingjelly._ops.lif import _selection

            sec.info["spikingjelly_lif_implementation"] = _selection.diagnostics(dev)
    return STATUS_OK


# =============================================================================================
# 4. training: vgg_bench in three frameworks
# =============================================================================================


def section_training(sec: Section, args) -> str:
    import torch
    from bench_cpu import _macs, _SJNet, _SnnTorchNet, _spec_of
    from torch import nn

    from fewstep.models import build_model
    from fewstep.neurons import NeuronSpec

    if _skip_without_cuda(sec, args):
        return STATUS_SKIPPED
    dev = _device(args)
    T, B = 4, (2 if args.dry_run else 128)
    hw = 8 if args.dry_run else 32
    wm = 0.125 if args.dry_run else 1.0
    reps, warmup = (1, 0) if args.dry_run else (args.reps, 3)
    torch.backends.cudnn.benchmark = True
    fs = build_model("vgg_bench", num_classes=10, input_shape=(3, hw, hw), timesteps=T,
                     neuron=NeuronSpec(kind="lif", decay=0.5, surrogate="triangle"), width_mult=wm)
    spec = _spec_of(fs)
    x_cpu = torch.randn(B, 3, hw, hw)
    fs = fs.to(dev)  # counted on the device: a CPU forward would build the CPU kernel first (a compiler run)
    macs = _macs(fs, x_cpu.to(dev), T)
    fl = {"tf32": gemm_tflops(dev, torch.float32, 256 if args.dry_run else 8192, reps=max(reps, 5), tf32=True),
          "bf16": gemm_tflops(dev, torch.bfloat16, 256 if args.dry_run else 8192, reps=max(reps, 5))}
    if not args.dry_run:
        fl["fp32"] = gemm_tflops(dev, torch.float32, 4096, reps=max(reps, 5))
    sec.info.update(model="vgg_bench (64,64,M,128,128,M,256,256,M; GAP + Linear)", T=T, batch=B, input=f"3x{hw}x{hw}",
                    width_mult=wm, macs_per_image=macs, gemm_tflops=fl, optimizer="SGD lr 1e-3 momentum 0.9",
                    memory_format="each system channels-last and contiguous (dry run: channels-last)",
                    cudnn_benchmark=True, allow_tf32_cudnn=torch.backends.cudnn.allow_tf32,
                    loss="mean over steps of cross-entropy, computed in fp32",
                    static_input="every system runs the stem conv + BN once and repeats it over T")
    sec.save()
    builders: dict[str, Callable[[], nn.Module]] = {"fewstep": lambda: copy.deepcopy(fs)}
    notes: dict[str, str] = {}
    for peer, cls, mod in (("SpikingJelly", _SJNet, "spikingjelly"), ("snnTorch", _SnnTorchNet, "snntorch")):
        try:
            __import__(mod)
            builders[peer] = lambda cls=cls: cls(spec, T)
        except ImportError as exc:
            notes[peer] = f"skipped: not installed ({exc})"
    # Every system in both layouts on the GPU (cuDNN's fastest convs want channels-last; the peers'
    # own default is contiguous); the dry run takes the channels-last path only.
    layouts = {"channels_last": torch.channels_last}
    if not args.dry_run:
        layouts["contiguous"] = torch.contiguous_format
    y = torch.randint(0, 10, (B,), device=dev)
    t_start = _now()
    for mi, mode in enumerate(("fp32", "bf16")):
        if mi and sec.left() < 1.2 * (_now() - t_start) / mi:
            sec.skip(mode, "section budget spent")
            break
        amp = mode == "bf16"

        def step(model, opt, x, amp=amp):
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                out = model(x)
            loss = sum(nn.functional.cross_entropy(o.float(), y) for o in out) / out.shape[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        live: dict[tuple[str, str], tuple] = {}
        row_notes = {(name, lname): note for name, note in notes.items() for lname in layouts}
        for name, build in builders.items():
            for lname, fmt in layouts.items():
                try:  # a fresh model per layout; the first step alone (a failure drops only this row)
                    torch.manual_seed(0)
                    m = build().to(dev).to(memory_format=fmt).train()
                    opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
                    xin = x_cpu.to(dev).contiguous(memory_format=fmt)
                    step(m, opt, xin)
                    _sync(dev)
                    live[(name, lname)] = (m, opt, xin)
                except Exception as exc:  # noqa: BLE001
                    row_notes[(name, lname)] = f"failed: {_err(exc)}"
                    sec.log(f"{mode} {name} {lname}: {row_notes[(name, lname)]}")
        mem: dict[tuple[str, str], dict[str, float]] = {}
        for key, (m, opt, xin) in live.items():
            if dev.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
                step(m, opt, xin)
                torch.cuda.synchronize()
                peak = torch.cuda.max_memory_allocated()
                mem[key] = {"peak_step_mib": (peak - before) / 2 ** 20, "peak_total_mib": peak / 2 ** 20}
        try:
            ms = interleaved_ms({key: (lambda key=key: step(*live[key])) for key in live}, dev, reps, warmup)
        except Exception as exc:  # noqa: BLE001
            sec.add({"precision": mode, "system": "(all)", "layout": "-", "note": f"timing failed: {_err(exc)}"})
            continue
        own = [ms[k] for k in ms if k[0] == "fewstep"]
        base = min(own) if own else None
        rate = fl["bf16" if amp else "tf32"]
        for name in ("fewstep", "SpikingJelly", "snnTorch"):
            for lname in layouts:
                key = (name, lname)
                row: dict[str, Any] = {"precision": mode, "system": name, "layout": lname}
                if key in ms:
                    img_s = B / (ms[key] * 1e-3)
                    row.update(step_ms=ms[key], img_s=img_s, pct_gemm=100 * img_s * 3 * macs * 2 / (rate * 1e12),
                               vs_fewstep_best=(ms[key] / base) if base else None, **mem.get(key, {}))
                else:
                    row["note"] = row_notes.get(key, "not run")
                sec.add(row)
        sec.log(f"{mode}: " + ", ".join(f"{k[0]} {k[1]} {B / (v * 1e-3):.0f} img/s" for k, v in ms.items()))
        live.clear()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return STATUS_OK


# =============================================================================================
# 5. stc
# =============================================================================================


def section_stc(sec: Section, args) -> str:
    import numpy as np
    import torch
    from bench_stc import best_of, random_stream

    from fewstep.events.compression import pack_events, stc_batch

    if _skip_without_cuda(sec, args):
        return STATUS_SKIPPED
    dev = _device(args)
    rng = np.random.default_rng(0)
    cases = [("N-MNIST-sized", 8 if args.dry_run else 256, 4_000, (34, 34), 300_000),
             ("Gesture-sized", 2 if args.dry_run else 32, 20_000 if args.dry_run else 300_000, (128, 128),
              6_000_000)]
    budget = 0.05 if args.dry_run else 1.0
    sec.info.update(T=4, integration="sum", by="time",
                    timing="best of repeats, synchronised wall time on CUDA; packed batch on the host to frames "
                           "on the device, transfers included; CPU rows in process CPU time")
    for name, b, n, size, dur in cases:
        if sec.left() < 3:
            sec.skip(name, "section budget spent")
            continue
        streams = [random_stream(rng, n, size[0], size[1], dur) for _ in range(b)]
        packed = pack_events(streams)
        events = int(packed[1][-1])
        ref = stc_batch(packed, size, 4, device="cpu")
        for where in ([dev.type] if dev.type == "cpu" else ["cuda", "cpu"]):
            try:
                def fn(w=where):
                    return stc_batch(packed, size, 4, device=w)

                s = best_of(fn, budget_s=budget, min_repeats=1 if args.dry_run else 5, cuda=where == "cuda")
                out = fn()
                same = bool(torch.equal(out.cpu(), ref))
                sec.add({"case": name, "streams": b, "events": events, "sensor": f"{size[0]}x{size[1]}",
                         "device": where, "ms": s * 1e3, "events_per_s": events / s, "matches_cpu": same})
            except Exception as exc:  # noqa: BLE001
                sec.add({"case": name, "streams": b, "events": events, "device": where, "note": f"failed: {_err(exc)}"})
    return STATUS_OK


# =============================================================================================
# 6. accuracy: the CIFAR-10 fast recipe on the carried data
# =============================================================================================


class _EpochTimes:
    def __init__(self) -> None:
        self.records: list[dict] = []

    def on_epoch_end(self, record, model, out_dir) -> None:
        self.records.append(dict(record))


def section_accuracy(sec: Section, args) -> str:
    from gpu_suite_data import synthetic_pack, unpack

    from fewstep.config import load_recipe
    from fewstep.train import train

    if _skip_without_cuda(sec, args):
        return STATUS_SKIPPED
    work = Path(tempfile.mkdtemp(prefix="fewstep_gpu_acc_"))
    pack = Path(args.data)
    synthetic = False
    if not pack.is_file():
        if not args.dry_run:
            sec.finish(STATUS_SKIPPED, f"no data pack at {pack}: run `python benchmarks/gpu_suite_data.py "
                                       "--prepare` here and carry gpu_data")
            return STATUS_SKIPPED
        pack = work / "synthetic.npz"
        synthetic_pack(pack)
        synthetic = True
    per_class = {"train": 20, "test": 10} if args.dry_run else None
    info = unpack(pack, work / "data", per_class)
    sec.info.update(pack=str(pack), synthetic=synthetic, unpacked=info, recipe=args.acc_recipe,
                    data_note="cifar10-jpeg, a lossy JPEG copy of CIFAR-10: accuracies close to, not exactly "
                              "comparable with, published CIFAR-10 numbers" if not synthetic else
                              "synthetic random JPEGs: exercises the code path only")
    sec.save()
    over = list(args.acc_set)
    if args.dry_run:
        over += ["data.val_size=40", "data.batch_size=32", "data.eval_batch_size=50",
                 "model.options.widths=[8, 16, 16, 32]", "train.amp=off"]
    base = load_recipe(args.acc_recipe, over)
    e_max = args.acc_max_epochs or (min(2, base.train.epochs) if args.dry_run else base.train.epochs)
    device = str(_device(args))

    def recipe_for(epochs: int):
        extra = [f"train.epochs={epochs}"]
        if base.train.warmup_epochs >= epochs:
            extra.append("train.warmup_epochs=0")
        return load_recipe(args.acc_recipe, over + extra)

    def log(msg: str) -> None:
        sec.log(msg)

    # Probe: the first epochs of the full-length run, timed (the second one is free of the one-time
    # compiles and autotuning); then finish that run if the rest fits, else start again with as
    # many epochs as fit (the same recipe with fewer epochs: a shorter cosine schedule).
    r_full = recipe_for(e_max)
    probe_epochs = 2 if e_max >= 3 else 1
    t0 = _now()
    times = _EpochTimes()
    report = train(r_full, work / "run", device=device, data_root=work / "data", progress=False, log=log,
                   stop_after_epoch=probe_epochs, callbacks=[times])
    probe_s = _now() - t0
    epoch_s = times.records[-1]["seconds"] if times.records else probe_s
    left = sec.left() - max(10.0, 0.5 * epoch_s)  # the final test pass, energy, report
    fit = int(left // max(epoch_s, 1e-3))
    sec.info.update(probe_epochs=probe_epochs, probe_epoch_seconds=[r["seconds"] for r in times.records],
                    probe_wall_seconds=probe_s, epochs_recipe=base.train.epochs, epochs_cap=e_max)
    sec.save()
    if report:  # a one-epoch recipe: the probe was the whole run
        plan = "the probe was the whole run"
    elif fit >= e_max - probe_epochs:
        report = train(r_full, work / "run", device=device, data_root=work / "data", progress=False, log=log,
                       resume=True, callbacks=[times])
        plan = f"the recipe's {e_max} epochs fit: the probe run was continued from its checkpoint"
    elif fit >= 1:
        report = train(recipe_for(fit), work / "run2", device=device, data_root=work / "data", progress=False,
                       log=log, callbacks=[times])
        plan = (f"only {fit} of {e_max} epochs fit after the {probe_epochs}-epoch probe ({epoch_s:.1f} s an epoch): "
                f"started again with {fit}")
    else:
        sec.info.update(plan="no epoch fits after the probe", probe_records=times.records)
        sec.skip("accuracy run", "section budget spent after the probe epochs")
        return STATUS_OK
    sec.info["plan"] = plan
    n_train = report.get("train_samples", 0)
    sec.add({"recipe": report.get("recipe"), "epochs": report.get("epochs"),
             "test_accuracy_per_step": report.get("accuracy_per_step"),
             "val_accuracy_per_step": report.get("val_accuracy_per_step"), "train_seconds": report.get("train_seconds"),
             "train_samples": n_train, "val_samples": report.get("val_samples"),
             "test_samples": report.get("test_samples"),
             "img_s_incl_eval": n_train * (report.get("epochs") or 0) / max(report.get("train_seconds") or 1e-9, 1e-9),
             "device": report.get("device"), "energy_ratio": (report.get("energy") or {}).get("ratio"),
             "history": [{k: h.get(k) for k in ("epoch", "train_loss", "train_accuracy", "val_accuracy_per_step",
                                                  "seconds")} for h in report.get("history", [])]})
    shutil.rmtree(work, ignore_errors=True)
    return STATUS_OK


SECTION_FUNCS: dict[str, Callable[[Section, Any], str]] = {
    "env": section_env, "correctness": section_correctness, "neurons": section_neurons,
    "training": section_training, "stc": section_stc, "accuracy": section_accuracy}


def run_child(args) -> int:
    """Inside a section's process: run it, record the outcome, exit 0 unless it crashed."""
    sec = Section(args.child, Path(args.child_out), args.child_budget)
    try:
        status = SECTION_FUNCS[args.child](sec, args)
        if sec.data["status"] == "running":
            sec.finish(status)
    except Exception as exc:  # noqa: BLE001 - the parent reports it; other sections run on
        sec.data["traceback"] = traceback.format_exc()[-3000:]
        sec.finish(STATUS_FAILED, _err(exc))
        print(sec.data["traceback"], file=sys.stderr, flush=True)
    return 0


# =============================================================================================
# The parent: budgets, processes, the report
# =============================================================================================


def _child_env(name: str, dry: bool, shards: int = 1) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    for k in ("TRITON_INTERPRET", "FEWSTEP_KERNELS", "FEWSTEP_REFERENCE"):
        env.pop(k, None)
    if name == "correctness" and shards > 1:  # the float64 references share the cores
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 2) // shards))
    if dry:
        env["TRITON_INTERPRET"] = "1"  # the Triton kernels run on the CPU, interpreted
        env["FEWSTEP_KERNELS"] = "triton" if name in ("correctness", "neurons", "training") else "reference"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def run_section(name: str, budget: float, args, work: Path, log_path: Path) -> dict[str, Any]:
    shards = args.shards if name == "correctness" else 1
    procs = []
    for i in range(shards):
        part = work / f"{name}.{i}.json"
        log = work / f"{name}.{i}.log"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--child-out", str(part),
               "--child-budget", f"{budget:.1f}", "--shard", str(i), "--shards", str(shards), "--data", args.data,
               "--acc-recipe", args.acc_recipe, "--reps", str(args.reps)]
        if args.acc_max_epochs:
            cmd += ["--acc-max-epochs", str(args.acc_max_epochs)]
        for s in args.acc_set:
            cmd += ["--acc-set", s]
        if args.dry_run:
            cmd.append("--dry-run")
        fh = log.open("w")
        procs.append((subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_child_env(name, args.dry_run, shards),
                                       cwd=str(ROOT), start_new_session=True), part, log, fh))
    t0 = _now()
    deadline = t0 + budget + GRACE_S
    parts = []
    for shard, (p, part, log, fh) in enumerate(procs):
        timed_out = False
        try:
            p.wait(timeout=max(1.0, deadline - _now()))
        except subprocess.TimeoutExpired:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, 9)  # the section's own process group, nothing else
            p.wait()
        fh.close()
        text = log.read_text(errors="replace")
        with log_path.open("a") as out:
            out.write(f"\n===== {name} (shard {shard}) rc={p.returncode} =====\n{text}")
        try:
            data = json.loads(part.read_text())
        except (OSError, ValueError):
            data = {"name": name, "status": STATUS_FAILED, "rows": [], "info": {}, "skipped_items": [], "notes": [],
                    "reason": "the section's process wrote no results"}
        if timed_out:
            data["status"] = STATUS_TIMEOUT
            data["reason"] = f"killed {GRACE_S} s after its {budget:.0f} s budget; the rows so far are kept"
        elif p.returncode != 0 and data.get("status") in ("running", None):
            data["status"] = STATUS_FAILED
            data["reason"] = f"process exited with {p.returncode}"
        if data.get("status") in (STATUS_FAILED, STATUS_TIMEOUT):
            data["log_tail"] = text[-2500:]
        data["returncode"] = p.returncode
        parts.append(data)
    merged = merge_correctness(parts) if name == "correctness" else parts[0]
    merged["wall_seconds"] = round(_now() - t0, 1)
    merged["budget_s"] = round(budget, 1)
    return merged


def _f(v: Any, fmt: str = ".3g") -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return format(v, fmt)


def _md_rows(rows: list[dict[str, Any]], lead: Callable[[dict[str, Any]], list[Any]],
             measured: Callable[[dict[str, Any]], list[Any]], columns: int) -> list[str]:
    """A markdown table row per result row: its ``lead`` cells, then its ``columns`` ``measured``
    cells, or, for a row that has a ``note`` (skipped or failed), a dash in each of those columns
    but the last, which holds the note."""
    lines = []
    for r in rows:
        cells = [*lead(r), *(["-"] * (columns - 1) + [r["note"]] if "note" in r else measured(r))]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


def render_md(result: dict[str, Any]) -> str:
    meta = result["meta"]
    secs = result["sections"]
    env = secs.get("env", {}).get("info", {})
    lines = [f"# fewstep GPU suite{' (dry run on the CPU: tiny sizes, Triton interpreted)' if meta['dry_run'] else ''}",
             "", f"{meta['date_utc']}; device {env.get('device', '?')}; torch {env.get('torch', '?')}, triton "
             f"{env.get('triton', '?')}, SpikingJelly {env.get('spikingjelly', '?')}, snnTorch "
             f"{env.get('snntorch', '?')}; wall {meta.get('wall_seconds', '?')} s of a {meta['budget_s']} s budget.",
             f"Command: `{meta['command']}`", "",
             "| section | status | seconds | budget s | note |", "|---|---|---|---|---|"]
    for name in SECTIONS:
        s = secs.get(name)
        if s is None:
            continue
        note = s.get("reason") or (f"{len(s.get('skipped_items', []))} items skipped" if s.get("skipped_items") else "")
        lines.append(f"| {name} | {s.get('status')} | {_f(s.get('wall_seconds'), '.1f')} | {_f(s.get('budget_s'), '.0f')} "
                     f"| {note} |")
    if env.get("nvidia_smi"):
        lines += ["", f"nvidia-smi: `{env['nvidia_smi']}`"]
    c = secs.get("correctness", {})
    if c.get("rows") or c.get("info", {}).get("self_test"):
        info = c.get("info", {})
        st = info.get("self_test", {})
        lines += ["", "## Kernel correctness (Triton vs float64 reference)", "",
                  f"{info.get('variants_total', '?')} variants, {info.get('neurons_per_step', '?')} neurons per step "
                  f"(fresh random inputs each); interpreted: {info.get('interpreted')}. Errors are relative norms "
                  "(||kernel - ref|| / ||ref||) over every output and gradient; scalar gradients relative to "
                  "max(|ref|, 1). Limits: " + ", ".join(f"{d} {TENSOR_TOL[d]:g} / {SCALAR_TOL[d]:g}"
                                                        for d in DTYPE_NAMES) + ".",
                  f"Self-test (reference decay {100 * SELF_TEST_DECAY_ERROR:g} % off): "
                  f"{'flagged, as it must be' if st.get('flagged') else 'NOT FLAGGED'} "
                  f"(max rel {_f(st.get('max_rel'))}).", "",
                  "| dtype | variants | passed | max rel error | max abs error | flipped neurons |",
                  "|---|---|---|---|---|---|"]
        for d, s in info.get("summary", {}).items():
            lines.append(f"| {d} | {s['variants']} | {s['passed']} | {_f(s['max_rel'])} | {_f(s['max_abs'])} | "
                         f"{s['flipped_neurons']} |")
        if info.get("failures"):
            lines += ["", "Failures: " + "; ".join(info["failures"])]
    n = secs.get("neurons", {})
    if n.get("rows"):
        i = n["info"]
        lines += ["", "## Neuron speed", "",
                  f"T = {i['T']}, {i['neurons_per_step']:,} neurons per step, median of {i['reps']} interleaved "
                  f"repetitions; copy bandwidth {i['copy_gbs']:.0f} GB/s; floor: {i['floor']}.", "",
                  "| neuron | dtype | system | fwd ms | fwd % floor | fwd+bwd ms | fwd+bwd % floor | time / fewstep |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += _md_rows(n["rows"], lambda r: [r["neuron"], r["dtype"], r["system"]], lambda r: [
            f"{r['fwd_ms']:.3f}", f"{r['fwd_pct_floor']:.0f} %", f"{r['fwd_bwd_ms']:.3f}",
            f"{r['fwd_bwd_pct_floor']:.0f} %", _f(r.get("vs_fewstep"), ".2f")], 5)
    t = secs.get("training", {})
    if t.get("rows"):
        i = t["info"]
        lines += ["", "## Training throughput", "",
                  f"{i['model']}, T = {i['T']}, batch {i['batch']}, {i['input']}; {i['optimizer']}; "
                  f"layouts: {i['memory_format']}; GEMM TFLOP/s {', '.join(f'{k} {v:.0f}' for k, v in i['gemm_tflops'].items())} "
                  "(% GEMM: 3 x MACs x 2 FLOP per image against tf32 for fp32 rows, bf16 for bf16 rows).", "",
                  "| precision | system | layout | img/s | step ms | % GEMM | peak step MiB | time / fewstep's best |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += _md_rows(t["rows"], lambda r: [r["precision"], r["system"], r.get("layout", "-")], lambda r: [
            f"{r['img_s']:.0f}", f"{r['step_ms']:.2f}", f"{r['pct_gemm']:.1f} %", _f(r.get("peak_step_mib"), ".0f"),
            _f(r.get("vs_fewstep_best"), ".2f")], 5)
    s = secs.get("stc", {})
    if s.get("rows"):
        lines += ["", "## STC (stc_batch, T = 4)", "", "| case | streams | events | device | ms | events/s | equals CPU |",
                  "|---|---|---|---|---|---|---|"]
        lines += _md_rows(s["rows"], lambda r: [r["case"], r["streams"], f"{r['events']:,}", r["device"]], lambda r: [
            f"{r['ms']:.2f}", f"{r['events_per_s'] / 1e6:.0f} M", r["matches_cpu"]], 3)
    a = secs.get("accuracy", {})
    if a.get("rows"):
        i, r = a["info"], a["rows"][0]
        acc = r.get("test_accuracy_per_step") or []
        lines += ["", "## Accuracy run", "", f"`{i.get('recipe')}` on {i.get('data_note')}; {i.get('plan')}.", "",
                  f"Test accuracy per step: {' / '.join(f'{100 * v:.2f} %' for v in acc)} after {r.get('epochs')} "
                  f"epochs ({r.get('train_samples')} train / {r.get('val_samples')} val / {r.get('test_samples')} "
                  f"test images), {r.get('train_seconds')} s of training ({r.get('img_s_incl_eval', 0):.0f} img/s "
                  "with the per-epoch validation)."]
    if c.get("rows"):
        lines += ["", "## Appendix: every correctness variant", "",
                  "| variant | passed | max rel | max abs | flipped | failed checks |", "|---|---|---|---|---|---|"]
        for r in c["rows"]:
            lines.append(f"| {r['id']} | {r.get('passed')} | {_f(r.get('max_rel'))} | {_f(r.get('max_abs'))} | "
                         f"{r.get('flipped_neurons', '-')} | {', '.join(r.get('failed_checks', [])) or r.get('error', '')} |")
    return "\n".join(lines) + "\n"


def run_parent(args) -> int:
    t_start = _now()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown:
        print(f"gpu_suite: unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    names = [s for s in SECTIONS if s in names]
    budgets = dict(DRY_BUDGETS if args.dry_run else BUDGETS)
    for item in args.section_budget:
        k, _, v = item.partition("=")
        budgets[k] = float(v)
    log_path = out / "gpu_suite.log"
    log_path.write_text("")
    result: dict[str, Any] = {"meta": {
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "dry_run": args.dry_run,
        "budget_s": args.budget, "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "host": platform.node(), "python": platform.python_version(), "sections": names, "shards": args.shards},
        "sections": {}}
    work = Path(tempfile.mkdtemp(prefix="fewstep_gpu_suite_"))

    def save() -> None:
        result["meta"]["wall_seconds"] = round(_now() - t_start, 1)
        _write_json(out / "gpu_suite.json", result)
        (out / "gpu_suite.md").write_text(render_md(result))

    try:
        for name in names:
            left = args.budget - (_now() - t_start) - RESERVE_S
            budget = left - GRACE_S if name == "accuracy" and not args.dry_run else min(budgets[name], left - GRACE_S)
            if budget < MIN_START[name]:
                result["sections"][name] = {"name": name, "status": STATUS_SKIPPED, "rows": [], "info": {},
                                            "reason": f"suite budget spent ({left:.0f} s left)", "budget_s": 0}
                save()
                continue
            print(f"[suite {(_now() - t_start):6.1f}s] {name}: budget {budget:.0f} s", flush=True)
            sec = run_section(name, budget, args, work, log_path)
            result["sections"][name] = sec
            print(f"[suite {(_now() - t_start):6.1f}s] {name}: {sec.get('status')} in {sec.get('wall_seconds')} s"
                  + (f" ({sec.get('reason')})" if sec.get("reason") else ""), flush=True)
            save()
    finally:
        save()
        shutil.rmtree(work, ignore_errors=True)
    print(render_md(result).split("## Appendix")[0])
    bad = [n for n, s in result["sections"].items() if s.get("status") in (STATUS_FAILED, STATUS_TIMEOUT)]
    print(f"gpu_suite: {out / 'gpu_suite.json'}, {out / 'gpu_suite.md'}, {log_path}; wall "
          f"{_now() - t_start:.0f} s" + (f"; NOT OK: {', '.join(bad)}" if bad else "; every section ok or skipped"),
          flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="the whole suite on the CPU at tiny sizes (Triton "
                    "interpreted); what the tests run")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "runs" / "gpu_suite"),
                    help="folder for gpu_suite.json / .md / .log (default $OUT, else runs/gpu_suite)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds for the whole suite (default 450 on the GPU, 600 in the dry run)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {', '.join(SECTIONS)}")
    ap.add_argument("--section-budget", action="append", default=[], metavar="NAME=SECONDS",
                    help="override one section's budget (defaults: " + ", ".join(
                        f"{k} {v}" for k, v in BUDGETS.items() if v) + "; accuracy: the rest)")
    ap.add_argument("--shards", type=int, default=None,
                    help="parallel processes for the correctness section: Triton compiles on the CPU "
                         "(default min(12, cores - 4); 1 in the dry run)")
    ap.add_argument("--reps", type=int, default=20, help="timed repetitions per measurement on the GPU")
    ap.add_argument("--data", default=str(ROOT / "gpu_data" / "cifar10-jpeg.npz"),
                    help="the CIFAR-10 pack (benchmarks/gpu_suite_data.py --prepare)")
    ap.add_argument("--acc-recipe", default="cifar10-fast-mtlif-t2", help="recipe of the accuracy run")
    ap.add_argument("--acc-max-epochs", type=int, default=None, help="epoch cap (default: the recipe's)")
    ap.add_argument("--acc-set", action="append", default=[], metavar="KEY=VALUE", help="recipe override")
    ap.add_argument("--child", choices=SECTIONS, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    ap.add_argument("--child-budget", type=float, default=60.0, help=argparse.SUPPRESS)
    ap.add_argument("--shard", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        args.shards = args.shards or 1
        return run_child(args)
    if args.budget is None:
        args.budget = 600.0 if args.dry_run else 450.0
    if args.shards is None:
        args.shards = 1 if args.dry_run else max(1, min(12, (os.cpu_count() or 2) - 4))
    return run_parent(args)


if __name__ == "__main__":
    sys.exit(main())
