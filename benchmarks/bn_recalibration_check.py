"""Is a checkpoint's validation accuracy held back by stale batch-norm running statistics?

At a high learning rate the weights move so fast that the running averages a batch norm keeps for
evaluation (PyTorch's momentum 0.1) describe an older network, and the validation accuracy of a run
can sit far below its training accuracy although the weights are fine. This check scores a
``fewstep train`` checkpoint (``last.pt``) on the first ``--val-images`` images of the run's own
validation split twice: as saved, and after re-estimating every BN's statistics from scratch on
``--batches`` batches of (augmented) training images with the weights untouched. A large gain
means the statistics, not the weights, were behind. Only the validation split is read: this is a
diagnostic for choosing settings (e.g. ``train.bn_momentum``), never a step of a recipe.

Usage::

    python benchmarks/bn_recalibration_check.py runs/x/dnn/last.pt --data-root ../shared/data
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from fewstep.config import recipe_from_dict  # noqa: E402
from fewstep.errors import FewstepError  # noqa: E402
from fewstep.neurons import reset_net  # noqa: E402
from fewstep.train.checkpoint import load_checkpoint  # noqa: E402
from fewstep.train.data_feed import DeviceFeed  # noqa: E402
from fewstep.train.engine import batchnorms, evaluate, make_model, prepare_data  # noqa: E402


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, feed: DeviceFeed, batches: int) -> int:
    """Replace every BN's running statistics by their plain average over ``batches`` training
    batches (training-mode forward passes, no parameter changes); returns how many BNs."""
    norms = batchnorms(model)
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    was_training = model.training
    model.train()
    seen = 0
    for x, _ in feed.epoch(0):
        model(x)
        reset_net(model)
        seen += 1
        if seen == batches:
            break
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    model.train(was_training)
    return len(norms)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a fewstep train checkpoint (last.pt)")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--batches", type=int, default=8, help="training batches for the re-estimate")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--val-images", type=int, default=2000)
    args = parser.parse_args(argv)
    state = load_checkpoint(args.checkpoint)
    recipe = recipe_from_dict(state["recipe"], str(args.checkpoint))
    splits = prepare_data(recipe, args.data_root)
    if splits.val is None:
        raise SystemExit(f"{args.checkpoint}: its recipe holds out no validation split (data.val_size = 0); "
                         "this check reads only a validation split")
    model = make_model(recipe, splits)
    model.load_state_dict(state["model"])
    device = torch.device("cpu")
    images = min(args.val_images, len(splits.val))
    val = DeviceFeed(splits.val.subset(images), args.batch_size, device, train=False)
    flip = recipe.data.eval_flip
    saved = evaluate(model, val, flip=flip)[-1]
    if not reestimate_batchnorm(model, DeviceFeed(splits.train, args.batch_size, device, train=True), args.batches):
        raise FewstepError(f"{args.checkpoint}: the model has no batch norm to re-estimate")
    fresh = evaluate(model, val, flip=flip)[-1]
    print(f"{args.checkpoint} (epoch {state['epoch']}), {images} validation images: "
          f"{100 * saved:.2f} % as saved, {100 * fresh:.2f} % with BN statistics re-estimated on "
          f"{args.batches} x {args.batch_size} training images")
    return {"saved": saved, "reestimated": fresh, "epoch": state["epoch"]}


if __name__ == "__main__":
    main()
