"""Evaluate a saved checkpoint: rebuild its model and data from the recipe stored inside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import recipe_from_dict
from .report import write_json_atomic
from .train.checkpoint import load_checkpoint
from .train.data_feed import DeviceFeed
from .train.engine import autocast_for, evaluate, make_model, prepare_data, resolve_device


def load_trained(checkpoint: str | Path, device: str | None = "auto", data_root: str | Path | None = None):
    """``(recipe, model, splits, device)`` from a training checkpoint, model in eval mode."""
    state = load_checkpoint(checkpoint)
    recipe = recipe_from_dict(state["recipe"], str(checkpoint))
    dev = resolve_device(device)
    splits = prepare_data(recipe, data_root)
    model = make_model(recipe, splits).to(dev)
    model.load_state_dict(state["model"])
    model.eval()
    return recipe, model, splits, dev


def evaluate_checkpoint(checkpoint: str | Path, device: str | None = "auto", data_root: str | Path | None = None,
                        out_dir: str | Path | None = None) -> dict[str, Any]:
    """Per-step test accuracy of a checkpoint; writes ``eval_report.json``."""
    recipe, model, splits, dev = load_trained(checkpoint, device, data_root)
    feed = DeviceFeed(splits.test, recipe.data.eval_batch_size, dev, train=False)
    acc = evaluate(model, feed, autocast_for(recipe, dev))
    report = {"checkpoint": str(checkpoint), "recipe": recipe.name, "dataset": recipe.data.dataset,
              "timesteps": len(acc), "accuracy_per_step": acc, "accuracy": acc[-1], "test_samples": len(splits.test)}
    out = Path(out_dir) if out_dir else Path(checkpoint).parent
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(report, out / "eval_report.json")
    return report
