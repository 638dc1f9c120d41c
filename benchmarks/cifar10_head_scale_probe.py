"""Why the short cifar10-fast-dnn schedules started above chance, and which logit scale fixes it.

The ``cifar_fast`` read-out is a linear layer on 4,096 flattened activations, so one SGD step on
its weights moves the logits by about ``lr x |a|^2`` times the gradient; the ``head_scale`` model
option multiplies the logits by a fixed factor ``s`` and divides that step by ``s^2``. This probe
trains ``cifar10-fast-dnn`` (or ``--recipe``, any ``cifar_fast`` recipe) on a reduced split (by default 10,000 training images, 2,000 held out
for validation, 4 epochs: the recipe's lr 0.1 with its 1-epoch warm-up) once per ``--head-scales``
value and prints, per value, the mean training loss of every 10 optimizer steps of the first epoch
(the warm-up: chance is ln 10 = 2.30, plus label smoothing) and the validation accuracy (test-time
flip) after every epoch. Only the validation split is scored: it is what chooses the recipe's
``head_scale``.

Usage::

    python benchmarks/cifar10_head_scale_probe.py --data-root ../shared/data --head-scales 1 0.25 0.111 0.0278
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_common

import torch  # noqa: E402
from bench_common import cpu_name  # noqa: E402

from fewstep.config import load_recipe  # noqa: E402
from fewstep.train import engine  # noqa: E402


def probe(recipe_name: str, head_scale: float, data_root: str, train_limit: int, val_size: int, epochs: int, seed: int,
          out: Path, extra: list[str]) -> dict:
    """Train once; returns the first epoch's per-10-step mean losses and the val accuracy per epoch."""
    overrides = [f"data.train_limit={train_limit}", f"data.val_size={val_size}", "data.test_limit=500",
                 f"train.epochs={epochs}", f"train.seed={seed}", f"model.options.head_scale={head_scale}", *extra]
    recipe = load_recipe(recipe_name, overrides)
    torch.manual_seed(seed)
    run = engine.set_up_run(recipe, out, engine.RunContext(torch.device("cpu")), data_root, False)
    first_epoch_losses: list[float] = []
    val: list[float] = []
    t0 = time.perf_counter()
    for epoch in range(epochs):
        engine.train_one_epoch(run, run.model, epoch, contextlib.nullcontext(), lambda **_: None,
                               on_step=(lambda _i, loss: first_epoch_losses.append(loss)) if epoch == 0 else None)
        val.append(engine.evaluate(run.model, run.val_feed, flip=recipe.data.eval_flip)[-1])
        print(f"{recipe.name} head_scale {head_scale:g} epoch {epoch + 1}: val {val[-1]:.4f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    chunks = [first_epoch_losses[j:j + 10] for j in range(0, len(first_epoch_losses), 10)]
    return {"head_scale": head_scale, "warmup_losses": [sum(c) / len(c) for c in chunks], "val": val,
            "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the probe; returns one row per head scale (see :func:`probe`) after printing the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", required=True, help="folder holding cifar10-jpeg/")
    ap.add_argument("--recipe", default="cifar10-fast-dnn",
                    help="a recipe of the cifar_fast family (the DNN, or a direct SNN such as cifar10-fast-mtlif-t2)")
    ap.add_argument("--head-scales", type=float, nargs="+", default=[1.0, 0.25, 1 / 9, 1 / 36])
    ap.add_argument("--train-limit", type=int, default=12000, help="training images before the validation hold-out")
    ap.add_argument("--val-size", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/cifar10-head-scale-probe", help="scratch folder (nothing is kept)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="further recipe overrides, e.g. model.options.whiten=true")
    args = ap.parse_args(argv)
    engine.threads_from_env()
    rows = [probe(args.recipe, s, args.data_root, args.train_limit, args.val_size, args.epochs, args.seed, Path(args.out),
                  args.overrides) for s in args.head_scales]
    print(f"\n{args.recipe}, {args.train_limit - args.val_size} training / {args.val_size} validation images, "
          f"{args.epochs} epochs, seed {args.seed}{', ' + ' '.join(args.overrides) if args.overrides else ''}; "
          f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"{dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}\n")
    print("| head_scale | first-epoch loss, mean of each 10 steps | val % per epoch | seconds |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['head_scale']:.4g} | {' '.join(f'{v:.2f}' for v in r['warmup_losses'])} | "
              f"{' / '.join(f'{100 * v:.2f}' for v in r['val'])} | {r['seconds']:.0f} |")
    return rows


if __name__ == "__main__":
    main()
