"""CPU speed of fewstep against SpikingJelly 2.0 and snnTorch 1.0, measured in one run.

Sections (all interleaved: every repetition runs each system once, in turn; the median of the
repetitions is reported):

1. **floors**: the compute floor (``torch.mm`` 2048^3 in GFLOP/s) and the bandwidth floor
   (a 256 MB tensor copy, read + write, in GB/s).
2. **neurons**: LIF and MT-LIF (K = 2, learnable decay, soft reset) forward and forward+backward
   at T = 2 and 4 on 1M and 4M neurons per step: fewstep (fused kernel), fewstep's reference
   loop, a ``torch.compile``'d reference loop, SpikingJelly ``LIFNode`` (multi-step, torch
   backend) and snnTorch ``Leaky`` in a loop (LIF only: neither has a multi-threshold neuron).
   Each time is also given as % of the five-pass floor: 5 x T x N x 4 bytes at the copy bandwidth.
3. **networks**: the training step (SGD with momentum, mean-over-steps cross-entropy) and the
   inference throughput of the ``mnist-lif-t2`` network (T = 2, batch 128 / 256) and of the
   CIFAR-10 network ``cifar_fast`` at T = 2 (batch 256 / 512), each built three times, with the
   same layers, in fewstep, SpikingJelly and snnTorch. The peers get the same static-image trick
   as fewstep (the first conv + BN run once and are repeated over time), so the ratios measure the
   frameworks, not that trick. % of the compute floor counts 3 x MACs per image (forward, input and
   weight gradients) for training and 1 x for inference, at 2 FLOP per MAC.

Usage::

    python benchmarks/bench_cpu.py                 # everything (about 10 minutes on 2 cores)
    python benchmarks/bench_cpu.py --quick         # fewer sizes and repetitions (< 2 minutes)
    python benchmarks/bench_cpu.py --sections networks --out runs/bench_cpu

Peers that are not installed are reported as missing (``pip install spikingjelly snntorch``;
``pip install spikingjelly --no-deps`` avoids pulling a CUDA torch). Prints a markdown table and
writes ``results.json`` / ``results.md`` under ``--out``. Run it on a quiet machine: the load
average is recorded beside the numbers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_common

import torch
from bench_common import cpu_name, snntorch_lif, spikingjelly_lif
from torch import nn

SIZES = {"1M": 1 << 20, "4M": 1 << 22}


# ------------------------------------------------------------------------------------- timing


def _clock(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def interleaved(fns: dict[str, Callable[[], object]], reps: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each function, timed in turn within every repetition."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            times[k].append(_clock(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def floors(reps: int) -> dict[str, float]:
    a = torch.randn(2048, 2048)
    b = torch.randn(2048, 2048)
    src = torch.empty(1 << 26).uniform_()  # 256 MB
    dst = torch.empty_like(src)
    t = interleaved({"mm": lambda: torch.mm(a, b), "copy": lambda: dst.copy_(src)}, reps)
    return {"gemm_gflops": 2 * 2048**3 / t["mm"] / 1e9, "copy_gbs": 2 * src.numel() * 4 / t["copy"] / 1e9}


# ------------------------------------------------------------------------------------ neurons


def _fewstep_neuron(kind: str):
    from fewstep.neurons import LIF, MTLIF

    return LIF(decay=0.5, surrogate="triangle") if kind == "LIF" else MTLIF(num_thresholds=2, decay=0.5)


def _reference_loop(kind: str):
    from fewstep.neurons.functional import neuron_multistep

    n = _fewstep_neuron(kind)
    return lambda x: neuron_multistep(x, n.params()).spikes


def _peer_neurons(kind: str) -> dict[str, Callable[[torch.Tensor], torch.Tensor] | str]:
    out: dict[str, Callable[[torch.Tensor], torch.Tensor] | str] = {}
    if kind != "LIF":
        return {"SpikingJelly": "no multi-threshold neuron", "snnTorch": "no multi-threshold neuron"}
    try:
        out["SpikingJelly"] = spikingjelly_lif()[0]
    except Exception as exc:  # noqa: BLE001 - an optional peer
        out["SpikingJelly"] = f"not available ({type(exc).__name__})"
    try:
        out["snnTorch"] = snntorch_lif()
    except Exception as exc:  # noqa: BLE001
        out["snnTorch"] = f"not available ({type(exc).__name__})"
    return out


def bench_neurons(args, fl: dict[str, float]) -> list[dict]:
    rows = []
    sizes = ["1M"] if args.quick else list(SIZES)
    steps = [2] if args.quick else [2, 4]
    compiled: dict[str, Callable] = {}
    for kind in ("LIF", "MT-LIF"):
        impls: dict[str, Callable | str] = {"fewstep": _fewstep_neuron(kind), "fewstep reference loop":
                                            _reference_loop(kind)}
        if not args.no_compile:
            try:
                compiled[kind] = torch.compile(_reference_loop(kind), dynamic=False)
                impls["torch.compile loop"] = compiled[kind]
            except Exception as exc:  # noqa: BLE001
                impls["torch.compile loop"] = f"not available ({type(exc).__name__})"
        impls.update(_peer_neurons(kind))
        for T in steps:
            for size in sizes:
                N = SIZES[size]
                x = (torch.randn(T, N) * 1.5).requires_grad_()
                g = torch.randn(T, N)
                runnable = {k: v for k, v in impls.items() if callable(v)}

                def fwd(f):
                    with torch.no_grad():
                        return f(x)

                def fwd_bwd(f):
                    x.grad = None
                    f(x).backward(g)

                fw = interleaved({k: (lambda f=f: fwd(f)) for k, f in runnable.items()}, args.reps)
                fb = interleaved({k: (lambda f=f: fwd_bwd(f)) for k, f in runnable.items()}, args.reps)
                floor = 5 * T * N * 4 / (fl["copy_gbs"] * 1e9)
                for k, v in impls.items():
                    row = {"neuron": kind, "T": T, "neurons": size, "system": k}
                    if callable(v):
                        row.update(fwd_ms=fw[k] * 1e3, fwd_bwd_ms=fb[k] * 1e3, pct_floor=100 * floor / fb[k])
                    else:
                        row["note"] = v
                    rows.append(row)
                print(f"[neurons] {kind} T={T} {size} done", file=sys.stderr, flush=True)
    return rows


# ----------------------------------------------------------------------------------- networks


def _macs(model: nn.Module, x: torch.Tensor, timesteps: int) -> int:
    """Multiply-accumulates of one image through every step (a stem run once counts T times)."""
    total = 0

    def hook(m, inp, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            total += out.numel() * m.in_features

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    stem = getattr(model, "stem", None)
    stem_total = 0
    if stem is not None:
        with torch.no_grad():
            model.eval()
            stem(x[:1])
            stem_total = total
            total = 0
            model(x[:1])
            model.train()
    for h in hs:
        h.remove()
    return total + stem_total * (timesteps - 1)


class _SJNet(nn.Module):
    """A fewstep SpikingModel rebuilt in SpikingJelly: ``layer.*`` modules and ``LIFNode`` (m)."""

    def __init__(self, spec: list, timesteps: int) -> None:
        super().__init__()
        from spikingjelly.activation_based import functional as sjf

        self.stem, self.body = _sj_layers(spec, timesteps)
        sjf.set_step_mode(self.body, "m")
        self.timesteps = timesteps
        self._reset = sjf.reset_net

    def forward(self, x):
        self._reset(self)
        y = self.stem(x)
        return self.body(y.unsqueeze(0).repeat(self.timesteps, *([1] * y.dim())))


def _sj_layers(spec, timesteps):
    from spikingjelly.activation_based import layer, neuron

    def build(item):
        kind, *a = item
        if kind == "conv":
            return layer.Conv2d(a[0], a[1], 3, padding=1, bias=False)
        if kind == "bn":
            return layer.BatchNorm2d(a[0])
        if kind == "lif":
            return neuron.LIFNode(tau=2.0, decay_input=False, v_threshold=1.0, v_reset=0.0)
        if kind == "pool":
            return layer.MaxPool2d(2)
        if kind == "flatten":
            return layer.Flatten()
        if kind == "dropout":
            return layer.Dropout(a[0])
        if kind == "linear":
            return layer.Linear(a[0], a[1], bias=a[2] if len(a) > 2 else True)
        if kind == "gap":
            return layer.AdaptiveAvgPool2d(1)
        raise KeyError(kind)

    stem = nn.Sequential(nn.Conv2d(spec[0][1], spec[0][2], 3, padding=1, bias=False), nn.BatchNorm2d(spec[1][1]))
    body = nn.Sequential(*[build(item) for item in spec[2:]])
    return stem, body


class _SnnTorchNet(nn.Module):
    """The same network in snnTorch's idiom: plain ``nn`` layers applied per step, ``Leaky`` neurons."""

    def __init__(self, spec: list, timesteps: int) -> None:
        super().__init__()
        import snntorch as snn

        self.stem = nn.Sequential(nn.Conv2d(spec[0][1], spec[0][2], 3, padding=1, bias=False),
                                  nn.BatchNorm2d(spec[1][1]))
        mods = []
        for kind, *a in spec[2:]:
            mods.append({"conv": lambda: nn.Conv2d(a[0], a[1], 3, padding=1, bias=False),
                         "bn": lambda: nn.BatchNorm2d(a[0]),
                         "lif": lambda: snn.Leaky(beta=0.5, threshold=1.0, reset_mechanism="zero"),
                         "pool": lambda: nn.MaxPool2d(2), "flatten": lambda: nn.Flatten(),
                         "dropout": lambda: nn.Dropout(a[0]),
                         "linear": lambda: nn.Linear(a[0], a[1], bias=a[2] if len(a) > 2 else True),
                         "gap": lambda: nn.AdaptiveAvgPool2d(1)}[kind]())
        self.layers = nn.ModuleList(mods)
        self.timesteps = timesteps

    def forward(self, x):
        import snntorch as snn

        cur0 = self.stem(x)
        mems = [m.init_leaky() if isinstance(m, snn.Leaky) else None for m in self.layers]
        outs = []
        for _ in range(self.timesteps):
            y = cur0
            for i, m in enumerate(self.layers):
                if isinstance(m, snn.Leaky):
                    y, mems[i] = m(y, mems[i])
                else:
                    y = m(y)
            outs.append(y)
        return torch.stack(outs)


NETWORK_SIZES = {"mnist-lif-t2": {"train_batch": 128, "eval_batch": 256},
                 "cifar_fast T=2": {"train_batch": 256, "eval_batch": 512}}


def network_specs() -> dict[str, dict]:
    """The layer lists of the benchmarked networks (what fewstep's registry builds)."""
    mnist = [("conv", 1, 32), ("bn", 32), ("lif",), ("pool",), ("conv", 32, 64), ("bn", 64), ("lif",), ("pool",),
             ("flatten",), ("dropout", 0.2), ("linear", 3136, 256), ("lif",), ("linear", 256, 10)]
    return {
        "mnist-lif-t2": {"spec": mnist, "input": (1, 28, 28), "T": 2, "fewstep": _fewstep_mnist,
                         **NETWORK_SIZES["mnist-lif-t2"]},
        "cifar_fast T=2": {"spec": None, "input": (3, 32, 32), "T": 2, "fewstep": _fewstep_cifar,
                           **NETWORK_SIZES["cifar_fast T=2"]},
    }


def _fewstep_mnist():
    from fewstep.models import build_model
    from fewstep.neurons import NeuronSpec

    return build_model("small_cnn", num_classes=10, input_shape=(1, 28, 28), timesteps=2,
                       neuron=NeuronSpec(kind="lif", decay=0.5, surrogate="triangle"), channels=[32, 64], hidden=256,
                       dropout=0.2)


def _fewstep_cifar():
    from fewstep.models import build_model
    from fewstep.neurons import NeuronSpec

    return build_model("cifar_fast", num_classes=10, input_shape=(3, 32, 32), timesteps=2,
                       neuron=NeuronSpec(kind="lif", decay=0.5, surrogate="triangle"))


def _spec_of(model: nn.Module) -> list:
    """The layer list of a fewstep SpikingModel (conv, bn, lif, pool, flatten, dropout, linear, gap)."""
    from fewstep.neurons import SpikingNeuron

    spec = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            spec.append(("conv", m.in_channels, m.out_channels))
        elif isinstance(m, nn.BatchNorm2d):
            spec.append(("bn", m.num_features))
        elif isinstance(m, SpikingNeuron):
            spec.append(("lif",))
        elif isinstance(m, nn.MaxPool2d):
            spec.append(("pool",))
        elif isinstance(m, nn.Flatten):
            spec.append(("flatten",))
        elif isinstance(m, nn.Dropout):
            spec.append(("dropout", m.p))
        elif isinstance(m, nn.Linear):
            spec.append(("linear", m.in_features, m.out_features, m.bias is not None))
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            spec.append(("gap",))
    return spec


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    out = model(x)
    loss = sum(nn.functional.cross_entropy(o, y) for o in out) / out.shape[0]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def bench_networks(args, fl: dict[str, float]) -> list[dict]:
    rows = []
    for name, cfg in network_specs().items():
        if args.quick and not args.smoke and name != "mnist-lif-t2":
            continue
        try:
            fs_model = cfg["fewstep"]()
        except Exception as exc:  # noqa: BLE001 - the CIFAR network may not exist in an older checkout
            rows.append({"network": name, "system": "fewstep", "note": f"not available: {exc}"})
            continue
        spec = cfg["spec"] or _spec_of(fs_model)
        T = cfg["T"]
        models: dict[str, nn.Module | str] = {"fewstep": fs_model}
        for peer, cls in (("SpikingJelly", _SJNet), ("snnTorch", _SnnTorchNet)):
            try:
                models[peer] = cls(spec, T)
            except Exception as exc:  # noqa: BLE001 - optional peers
                models[peer] = f"not available ({type(exc).__name__}: {exc})"
        x = torch.randn(cfg["train_batch"], *cfg["input"])
        y = torch.randint(0, 10, (cfg["train_batch"],))
        xe = torch.randn(cfg["eval_batch"], *cfg["input"])
        macs = _macs(fs_model, x, T)
        live = {k: m for k, m in models.items() if isinstance(m, nn.Module)}
        opts = {k: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for k, m in live.items()}
        for m in live.values():
            m.train()
        train = interleaved({k: (lambda k=k, m=m: _train_step(m, opts[k], x, y)) for k, m in live.items()},
                            args.reps)

        def infer(m):
            with torch.inference_mode():
                return m(xe)

        for m in live.values():
            m.eval()
        evals = interleaved({k: (lambda m=m: infer(m)) for k, m in live.items()}, args.reps)
        for k, m in models.items():
            row = {"network": name, "system": k, "macs_per_image": macs}
            if isinstance(m, nn.Module):
                tr = cfg["train_batch"] / train[k]
                ev = cfg["eval_batch"] / evals[k]
                row.update(train_img_s=tr, infer_img_s=ev,
                           train_pct_compute=100 * tr * 3 * macs * 2 / (fl["gemm_gflops"] * 1e9),
                           infer_pct_compute=100 * ev * macs * 2 / (fl["gemm_gflops"] * 1e9))
            else:
                row["note"] = m
            rows.append(row)
        print(f"[networks] {name} done", file=sys.stderr, flush=True)
    return rows


# -------------------------------------------------------------------------------- end to end


def bench_end_to_end(args) -> dict | None:
    """``fewstep train mnist-lif-t2`` for one epoch on ``--e2e-samples`` training images (data feed,
    the per-epoch test evaluation, the checkpoint and report) against the raw training step of the
    same model, optimizer, loss and batch, measured just before and after in this process."""
    if args.data_root is None:
        return None
    import statistics
    import tempfile

    from fewstep.config import load_recipe
    from fewstep.neurons import reset_net
    from fewstep.train import train
    from fewstep.train.data_feed import DeviceFeed
    from fewstep.train.engine import make_loss, make_model, make_optimizer, prepare_data, seed_everything

    n = args.e2e_samples
    recipe = load_recipe("mnist-lif-t2", ["train.epochs=1", f"data.train_limit={n}"])
    seed_everything(0)
    splits = prepare_data(recipe, args.data_root)
    model = make_model(recipe, splits)
    opt, loss_fn = make_optimizer(recipe, model), make_loss(recipe, model)
    feed = DeviceFeed(splits.train, recipe.data.batch_size, torch.device("cpu"), train=True,
                      crop_padding=recipe.data.crop_padding)
    batches = [b for _, b in zip(range(12), feed.epoch(0))]

    def raw() -> float:
        times = []
        for x, y in batches:
            t = time.perf_counter()
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            reset_net(model)
            times.append(time.perf_counter() - t)
        return recipe.data.batch_size / statistics.median(times[2:])

    before = raw()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        report = train(recipe, tmp, device="cpu", data_root=args.data_root, progress=False, log=lambda s: None)
        wall = time.perf_counter() - t0
    after = raw()
    step = statistics.mean([before, after])
    e2e = n / report["train_seconds"]
    return {"samples": n, "raw_step_img_s": step, "raw_before": before, "raw_after": after,
            "train_seconds": report["train_seconds"], "end_to_end_img_s": e2e, "fraction_of_raw": e2e / step,
            "wall_seconds_incl_setup": wall, "test_samples": report["test_samples"]}


# ------------------------------------------------------------------------------------- report


def _ratio(a: float | None, b: float | None, higher_is_better: bool) -> str:
    if not a or not b:
        return "-"
    return f"{(a / b) if higher_is_better else (b / a):.2f}x"


def table(meta: dict, fl: dict, neurons: list[dict], nets: list[dict], e2e: dict | None = None) -> str:
    lines = [f"CPU: {meta['cpu']}, {meta['threads']} threads, torch {meta['torch']}, allocator {meta['allocator']}, "
             f"load average before {meta['load_before']}, after {meta['load_after']}; {meta['date_utc']}",
             f"compute floor {fl['gemm_gflops']:.0f} GFLOP/s (torch.mm 2048^3), bandwidth floor "
             f"{fl['copy_gbs']:.1f} GB/s (256 MB copy)", ""]
    if neurons:
        lines += ["| neuron | T | neurons/step | system | fwd ms | fwd+bwd ms | % of bandwidth floor | fewstep is |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in neurons:
            base = next(q for q in neurons if q["neuron"] == r["neuron"] and q["T"] == r["T"]
                        and q["neurons"] == r["neurons"] and q["system"] == "fewstep")
            if "note" in r:
                lines.append(f"| {r['neuron']} | {r['T']} | {r['neurons']} | {r['system']} | - | - | - | {r['note']} |")
                continue
            vs = "" if r["system"] == "fewstep" else _ratio(base.get("fwd_bwd_ms"), r["fwd_bwd_ms"], False)
            lines.append(f"| {r['neuron']} | {r['T']} | {r['neurons']} | {r['system']} | {r['fwd_ms']:.2f} | "
                         f"{r['fwd_bwd_ms']:.2f} | {r['pct_floor']:.0f} % | {vs} |")
        lines.append("")
    if nets:
        lines += ["| network | system | train img/s | % compute floor | fewstep is | inference img/s | fewstep is |",
                  "|---|---|---|---|---|---|---|"]
        for r in nets:
            base = next((q for q in nets if q["network"] == r["network"] and q["system"] == "fewstep"), {})
            if "note" in r:
                lines.append(f"| {r['network']} | {r['system']} | - | - | - | - | {r['note']} |")
                continue
            own = r["system"] == "fewstep"
            lines.append(
                f"| {r['network']} | {r['system']} | {r['train_img_s']:.0f} | {r['train_pct_compute']:.0f} % | "
                f"{'' if own else _ratio(base.get('train_img_s'), r['train_img_s'], True)} | "
                f"{r['infer_img_s']:.0f} | {'' if own else _ratio(base.get('infer_img_s'), r['infer_img_s'], True)} |")
    if e2e:
        lines += ["", f"End to end: `fewstep train mnist-lif-t2`, one epoch on {e2e['samples']:,} images plus the "
                      f"{e2e['test_samples']:,}-image test evaluation and the checkpoint: {e2e['end_to_end_img_s']:.0f} "
                      f"img/s against {e2e['raw_step_img_s']:.0f} img/s for the raw step (same optimizer, loss and "
                      f"batch): {100 * e2e['fraction_of_raw']:.0f} % of it."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1M neurons, T = 2, the MNIST network only, 5 repetitions")
    ap.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # the tests: tiny sizes, 1 repetition
    ap.add_argument("--reps", type=int, default=None, help="repetitions per measurement (default 9, quick 5)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: $FEWSTEP_THREADS or all cores)")
    ap.add_argument("--sections", default="neurons,networks,e2e", help="comma-separated: neurons, networks, e2e")
    ap.add_argument("--data-root", default=os.environ.get("FEWSTEP_DATA"),
                    help="folder with mnist/ for the e2e section (default $FEWSTEP_DATA; skipped without)")
    ap.add_argument("--e2e-samples", type=int, default=30_000, help="training images in the e2e epoch")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    ap.add_argument("--out", type=Path, default=None, help="folder for results.json / results.md")
    ap.add_argument("--allocator", choices=("tuned", "default"), default="tuned",
                    help="tuned (default): glibc keeps freed memory, as fewstep's CLI sets it; applies to every "
                         "system alike (fewstep.runtime.tune_allocator)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.quick, args.no_compile = True, True
        SIZES.update({"1M": 4096})
        for cfg in NETWORK_SIZES.values():
            cfg.update(train_batch=4, eval_batch=4)
    args.reps = args.reps or (1 if args.smoke else 5 if args.quick else 9)
    if args.reps < 1:
        ap.error("--reps must be >= 1")
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    unknown = sections - {"neurons", "networks", "e2e"}
    if unknown:
        ap.error(f"unknown section(s) {sorted(unknown)}; choose from neurons, networks, e2e")
    from fewstep.train.engine import configure_threads

    threads = configure_threads(args.threads)
    from fewstep.runtime import tune_allocator

    tuned = tune_allocator() if args.allocator == "tuned" else False
    torch.manual_seed(0)
    meta = {"date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_name(),
            "cores": os.cpu_count(), "threads": threads, "torch": torch.__version__, "python": platform.python_version(),
            "load_before": " ".join(f"{v:.2f}" for v in os.getloadavg()), "command": " ".join(sys.argv),
            "allocator": "tuned (every system)" if tuned else "glibc default"}
    fl = floors(args.reps)
    neurons = bench_neurons(args, fl) if "neurons" in sections else []
    nets = bench_networks(args, fl) if "networks" in sections else []
    e2e = bench_end_to_end(args) if "e2e" in sections and not args.smoke else None
    meta["load_after"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    text = table(meta, fl, neurons, nets, e2e)
    print(text)
    payload = {"meta": meta, "floors": fl, "neurons": neurons, "networks": nets, "end_to_end": e2e}
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
        (args.out / "results.md").write_text(text + "\n")
    return payload


if __name__ == "__main__":
    main()
