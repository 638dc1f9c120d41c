"""``fewstep convert``: a trained ``*_dnn`` checkpoint to T-step SNN checkpoints and a report."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli_options import device_option

# The conversion methods of fewstep.convert.factors.METHODS, spelled out so that building the
# parser imports no torch (a test checks they agree).
METHODS = ("dist", "max", "p99.9", "clip")


def _timesteps_list(text: str) -> list[int]:
    try:
        steps = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not steps or any(t < 1 for t in steps):
        raise argparse.ArgumentTypeError(f"time steps must be integers >= 1, got {text!r}")
    return steps


def _positive(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _fraction(text: str) -> float:
    v = float(text)
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {v}")
    return v


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``convert`` sub-command to ``fewstep``'s parser (its handler is :func:`run`)."""
    p = subparsers.add_parser(
        "convert", help="convert a trained *_dnn checkpoint into T-step SNN checkpoints (distribution-aware)",
        description="Collect each clipped-ReLU layer's pre-activation histogram on training data, fit the "
                    "conversion factors for T steps, evaluate the converted SNNs at several T and write one "
                    "fewstep checkpoint per method plus report.json.")
    p.add_argument("checkpoint", type=Path, help="checkpoint of a trained small_cnn_dnn / vgg11_dnn / vgg16_dnn")
    p.add_argument("--timesteps", type=_positive, default=2, help="T of the saved SNNs (default 2)")
    p.add_argument("--method", default="all", choices=[*METHODS, "all"],
                   help="dist (distribution-aware), max / p99.9 (threshold balancing), clip (a = b = 1) or all")
    p.add_argument("--eval-timesteps", type=_timesteps_list, default=[1, 2, 4], metavar="T,T,...",
                   help="also evaluate conversions for these T (default 1,2,4)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: convert-t<T>/ beside the checkpoint)")
    p.add_argument("--data-root", type=Path, default=None, help="dataset folder (default: $FEWSTEP_DATA)")
    p.add_argument("--device", type=device_option, default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--calib-batches", type=_positive, default=20,
                   help="training batches for the histograms (default 20)")
    p.add_argument("--calib-batch-size", type=_positive, default=None, help="default: the recipe's data.batch_size")
    p.add_argument("--bins", type=_positive, default=2048, help="histogram bins per layer (default 2048)")
    p.add_argument("--energy-samples", type=_positive, default=256, help="test samples for the energy count")
    p.add_argument("--initial-membrane", type=_fraction, default=0.0, metavar="THETA",
                   help="start every membrane at THETA * V and fit the factors for it (default 0, the "
                        "reconstruction; 0.5 fires up to half a step earlier and helps deep nets at T = 2)")
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``fewstep convert`` with parsed ``args``; returns the exit status.

    Holds the lock on the output folder (:mod:`fewstep.runlock`) while it writes there: a second
    conversion into the same folder stops at once instead of mixing its checkpoints with this one's."""
    from ..runlock import run_lock
    from ..train.engine import threads_from_env
    from .converter import convert_checkpoint, default_out_dir

    threads_from_env()
    methods = list(METHODS) if args.method == "all" else [args.method]
    out = args.out or default_out_dir(args.checkpoint, args.timesteps)
    with run_lock(out):
        convert_checkpoint(args.checkpoint, timesteps=args.timesteps, methods=methods,
                           eval_timesteps=args.eval_timesteps, out_dir=out, device=args.device,
                           data_root=args.data_root, calib_batches=args.calib_batches,
                           calib_batch_size=args.calib_batch_size, bins=args.bins, energy_samples=args.energy_samples,
                           initial_membrane=args.initial_membrane)
    return 0
