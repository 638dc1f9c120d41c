"""Evaluate a saved checkpoint: rebuild its model and data from the recipe stored inside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .atomic import write_json_atomic
from .config import recipe_from_dict
from .errors import CheckpointError
from .train.checkpoint import load_checkpoint
from .train.data_feed import DeviceFeed
from .train.engine import autocast_for, evaluate, make_model, prepare_data, resolve_device


def check_model_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Raise a one-line :class:`CheckpointError` unless ``state`` holds the ``recipe`` and ``model``
    that ``fewstep eval`` and ``fewstep convert`` rebuild a network from."""
    for key in ("recipe", "model"):
        if key not in state:
            what = ("a bare state dict, or a file from another program" if key == "recipe"
                    else "a recipe without weights")
            raise CheckpointError(f"{path}: not a fewstep checkpoint (no {key!r}: {what}); use the last.pt of "
                                  "fewstep train or a checkpoint fewstep convert wrote")
        if not isinstance(state[key], dict):
            raise CheckpointError(f"{path}: not a fewstep checkpoint ({key!r} is a {type(state[key]).__name__}, "
                                  "expected a dict)")


def load_trained(checkpoint: str | Path, device: str | None = "auto", data_root: str | Path | None = None):
    """``(recipe, model, splits, device)`` from a training checkpoint, model in eval mode."""
    state = load_checkpoint(checkpoint)
    check_model_checkpoint(state, checkpoint)
    recipe = recipe_from_dict(state["recipe"], f"the recipe stored in {checkpoint}")
    dev = resolve_device(device)
    splits = prepare_data(recipe, data_root)
    model = make_model(recipe, splits).to(dev)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as exc:
        detail = " ".join(str(exc).split())  # torch's messages span lines; the CLI prints one
        detail = detail if len(detail) <= 400 else detail[:400] + "..."
        raise CheckpointError(f"{checkpoint}: its weights do not fit its recipe's model {recipe.model.name!r} "
                              f"({type(exc).__name__}: {detail})") from None
    model.eval()
    return recipe, model, splits, dev


EVAL_REPORT_NAME = "eval_report.json"


def eval_output_dir(checkpoint: str | Path, out_dir: str | Path | None = None) -> Path:
    """Where ``fewstep eval`` writes ``eval_report.json`` (and ``cutoff.png``): ``out_dir``, else
    the checkpoint's folder."""
    return Path(out_dir) if out_dir else Path(checkpoint).parent


def evaluate_checkpoint(checkpoint: str | Path, device: str | None = "auto", data_root: str | Path | None = None,
                        out_dir: str | Path | None = None) -> dict[str, Any]:
    """Per-step test accuracy of a checkpoint; writes ``eval_report.json``."""
    recipe, model, splits, dev = load_trained(checkpoint, device, data_root)
    feed = DeviceFeed(splits.test, recipe.data.eval_batch_size, dev, train=False)
    acc = evaluate(model, feed, autocast_for(recipe, dev))
    report = {"checkpoint": str(checkpoint), "recipe": recipe.name, "dataset": recipe.data.dataset,
              "timesteps": len(acc), "accuracy_per_step": acc, "accuracy": acc[-1], "test_samples": len(splits.test)}
    out = eval_output_dir(checkpoint, out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(report, out / EVAL_REPORT_NAME)
    return report
