"""Classify an event stream slice by slice with fewstep's StreamingClassifier.

With no arguments it needs no data: it makes a synthetic event camera recording (a bar moving
down, right, or along the diagonal on a 16x16 sensor, plus noise), trains a tiny spiking CNN on
such recordings for a couple of seconds, then streams a fresh recording of each class in 1 ms
slices and prints the prediction and confidence as every slice arrives, stopping when the
softmax cutoff ``max softmax > 1 - eps`` fires.

    python examples/stream_events.py                     # synthetic data, tiny model (seconds)
    python examples/stream_events.py --no-train          # untrained model: just the mechanics
    python examples/stream_events.py --checkpoint runs/<event recipe>/last.pt   # a trained model;
                                                         # its input must be [2, 8, 8] (16x16 sensor, 2x2 pooled)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from fewstep.events.types import make_events
from fewstep.infer import StreamingClassifier, events_to_current
from fewstep.models import build_model
from fewstep.neurons import NeuronSpec

SENSOR = (16, 16)  # (width, height)
POOL = 2  # STC sum-pools 2x2 pixel blocks: the model sees [2, 8, 8] per step
INPUT_SHAPE = (2, SENSOR[1] // POOL, SENSOR[0] // POOL)
CLASSES = ("down", "right", "diagonal")
SLICE_US = 1000


def bar_pixels(kind: int, pos: int, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (x, y) of a bar of class ``kind`` at position ``pos``."""
    r = np.arange(size)
    if kind == 0:  # horizontal bar moving down
        return r, np.full(size, pos % size)
    if kind == 1:  # vertical bar moving right
        return np.full(size, pos % size), r
    return (r + pos) % size, r  # diagonal moving right


def recording(kind: int, slices: int, rng: np.random.Generator, noise: int = 12) -> np.ndarray:
    """A synthetic event stream: the bar moves one pixel per slice; ON events where it arrives,
    OFF events where it left, plus uniform noise. Timestamps in microseconds, sorted."""
    start = int(rng.integers(0, 16))
    xs, ys, ts, ps = [], [], [], []
    for k in range(slices):
        for pos, pol in ((start + k + 1, 1), (start + k, 0)):
            x, y = bar_pixels(kind, pos)
            keep = rng.random(len(x)) < 0.8
            xs.append(x[keep])
            ys.append(y[keep])
            ps.append(np.full(keep.sum(), pol))
            ts.append(k * SLICE_US + rng.integers(0, SLICE_US, keep.sum()))
        xs.append(rng.integers(0, SENSOR[0], noise))
        ys.append(rng.integers(0, SENSOR[1], noise))
        ps.append(rng.integers(0, 2, noise))
        ts.append(k * SLICE_US + rng.integers(0, SLICE_US, noise))
    x, y, t, p = (np.concatenate(a) for a in (xs, ys, ts, ps))
    order = np.argsort(t, kind="stable")
    return make_events(x[order], y[order], t[order], p[order])


def slices_of(events: np.ndarray, slices: int) -> list[np.ndarray]:
    """Cut a recording into consecutive ``SLICE_US`` windows."""
    bounds = np.searchsorted(events["t"], np.arange(slices + 1) * SLICE_US)
    return [events[bounds[k]:bounds[k + 1]] for k in range(slices)]


def batch(n: int, steps: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``[T, B, 2, 16, 16]`` currents (one slice per step) and labels."""
    labels = rng.integers(0, len(CLASSES), n)
    seqs = [np.stack([events_to_current(s, SENSOR, spatial_factor=POOL) for s in slices_of(recording(int(c), steps, rng), steps)])
            for c in labels]
    return torch.from_numpy(np.stack(seqs, 1)), torch.from_numpy(labels)


def train_tiny(model: torch.nn.Module, rng: np.random.Generator, iters: int = 30, steps: int = 4) -> None:
    """A few AdamW steps with the TET loss on ``steps``-slice recordings (any later slice count
    works when streaming: the model runs one step at a time)."""
    from fewstep.train import tet_loss, train_step

    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(iters):
        train_step(model, opt, tet_loss, *batch(32, steps, rng))
    model.eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None, help="a fewstep checkpoint of an event model (2x16x16 input)")
    parser.add_argument("--no-train", action="store_true", help="skip the short training of the tiny model")
    parser.add_argument("--train-iters", type=int, default=30, help="training iterations of the tiny model (default 30)")
    parser.add_argument("--slices", type=int, default=8, help="slices per recording (default 8)")
    parser.add_argument("--eps", type=float, default=0.01, help="stop when max softmax > 1 - eps (default 0.01)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    torch.set_num_threads(1)  # a tiny model: one thread is fastest (no sync overhead)

    if args.checkpoint:
        from fewstep.evaluate import load_trained

        _, model, _, _ = load_trained(args.checkpoint, device="cpu")
        if tuple(model.input_shape) != INPUT_SHAPE:
            parser.error(f"the checkpoint's model takes {list(model.input_shape)}, this demo makes {list(INPUT_SHAPE)}")
        classes = [str(c) for c in range(model.num_classes)]
    else:
        model = build_model("small_cnn", num_classes=len(CLASSES), input_shape=INPUT_SHAPE,
                            timesteps=args.slices, neuron=NeuronSpec(), channels=(8, 16), hidden=32)
        classes = list(CLASSES)
        if not args.no_train:
            t0 = time.perf_counter()
            train_tiny(model, rng, iters=args.train_iters)
            print(f"trained a tiny spiking CNN on synthetic recordings in {time.perf_counter() - t0:.1f} s")
    model.eval()

    with StreamingClassifier(model) as clf:
        for kind, name in enumerate(CLASSES):
            clf.reset()
            stream = recording(kind, args.slices, rng)
            print(f"\nrecording of a bar moving {name} ({len(stream)} events), {SLICE_US} us slices:")
            for k, chunk in enumerate(slices_of(stream, args.slices), 1):
                pred, conf = clf.feed_events(chunk, SENSOR, spatial_factor=POOL)
                stop = conf > 1 - args.eps
                print(f"  slice {k}: {len(chunk):3d} events -> prediction {classes[pred]:<8} confidence {conf:.3f}"
                      + ("  (cutoff: stop)" if stop else ""))
                if stop:
                    break
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
