"""Accuracy against latency for anytime inference: the eps sweep, the speed-up, wall-clock time.

:func:`cutoff_sweep` runs the model once over the data (multi-step forward, every sample ``T``
steps), then evaluates the softmax cutoff for every ``eps`` on the running logits (see
:func:`fewstep.infer.anytime.simulate_cutoff`; this equals running the step-by-step engine for each
``eps``, which the tests check). It reports:

* ``eps``, ``accuracy``, ``mean_steps``: the trade-off curve (accuracies are fractions);
* ``accuracy_per_step``: accuracy when every sample stops at ``t = 1..T``; ``full_accuracy`` is
  its last entry;
* ``oracle_accuracy`` / ``oracle_mean_steps``: the optimal cutoff step (needs labels; an upper
  bound, see :func:`~fewstep.infer.anytime.oracle_cutoff`);
* ``operating_point`` and ``speedup = T / mean_steps`` there. **Choice of the operating point**:
  among the sweep points whose accuracy drop ``full_accuracy - accuracy`` does not exceed
  ``target_drop`` (default 0.005, i.e. 0.5 points), the one with the fewest mean steps (ties: the
  higher accuracy). Accuracy falls as the mean step count falls, so on a monotone curve this is
  the admissible point closest to the target drop; on a noisy curve (small test sets) it is the
  fastest point that still keeps the drop within the target. If no sweep point qualifies, the
  full-``T`` run is the operating point (``eps = None``, speed-up 1);
* ``margin`` (when ``calibration_feed`` is given): the top-1/top-2 margin cutoff with thresholds
  calibrated on that feed to confidence ``1 - eps``, for the same ``eps`` values;
* ``wall_clock`` (when ``timing=True``): seconds for the whole feed with the step-by-step engine
  at the operating point (stopped samples dropped), with the same engine running all ``T`` steps
  (:class:`~fewstep.infer.anytime.NoCutoff`) and with the ordinary multi-step forward; the best of
  ``repeats`` runs each, and the speed-ups of the cutoff run over both baselines.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .anytime import (
    MarginCalibration,
    NoCutoff,
    SoftmaxCutoff,
    _batches,
    anytime_inference,
    cumulative_logits,
    oracle_cutoff,
    simulate_cutoff,
)

DEFAULT_EPS: tuple[float, ...] = (0.0, 1e-5, 1e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)

__all__ = ["DEFAULT_EPS", "choose_operating_point", "cutoff_sweep", "plot_cutoff", "time_inference"]


def _finite_or_none(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _feed_device(feed) -> torch.device:
    dev = getattr(feed, "device", None)
    return torch.device(dev) if dev is not None else torch.device("cpu")


@torch.no_grad()
def time_inference(model: nn.Module, feed, eps: float | None, repeats: int = 3) -> dict[str, Any]:
    """Wall-clock seconds over ``feed``: the engine with the softmax cutoff at ``eps`` (stopped
    samples dropped), the engine running all steps, and the multi-step forward (best of
    ``repeats``). ``eps = None`` times the engine with no cutoff in place of the cutoff run."""
    from ..neurons import reset_net

    device = _feed_device(feed)
    batches = list(_batches(feed))  # already on the device: time the model, not the feed
    rule = NoCutoff() if eps is None else SoftmaxCutoff(eps)

    def best(fn) -> float:
        times = []
        for _ in range(max(1, repeats)):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - t0)
        return min(times)

    def multistep() -> None:
        was = model.training
        model.eval()
        for x, _ in batches:
            model(x)
            reset_net(model)
        model.train(was)

    cutoff_s = best(lambda: anytime_inference(model, batches, rule))
    stepwise_s = best(lambda: anytime_inference(model, batches, NoCutoff()))
    multistep_s = best(multistep)
    run = anytime_inference(model, batches, rule)
    return {"eps": eps, "cutoff_seconds": cutoff_s, "full_stepwise_seconds": stepwise_s,
            "full_multistep_seconds": multistep_s, "speedup_vs_stepwise": stepwise_s / cutoff_s,
            "speedup_vs_multistep": multistep_s / cutoff_s, "engine_accuracy": run.accuracy,
            "engine_mean_steps": run.mean_steps, "samples": len(run.steps), "repeats": max(1, repeats),
            "device": str(device)}


def choose_operating_point(eps: Sequence[float], accuracy: Sequence[float], mean_steps: Sequence[float],
                           full_accuracy: float, timesteps: int, target_drop: float) -> dict[str, Any]:
    """The sweep point with the fewest mean steps among those whose drop from ``full_accuracy``
    is at most ``target_drop`` (ties: higher accuracy, then the earlier point); the full-``T`` run
    (``eps = None``) when none qualifies. See the module docstring."""
    admissible = [i for i, a in enumerate(accuracy) if full_accuracy - a <= target_drop + 1e-12]
    if not admissible:
        return {"eps": None, "accuracy": full_accuracy, "mean_steps": float(timesteps), "drop": 0.0}
    i = min(admissible, key=lambda j: (mean_steps[j], -accuracy[j], j))
    return {"eps": eps[i], "accuracy": accuracy[i], "mean_steps": mean_steps[i], "drop": full_accuracy - accuracy[i]}


def cutoff_sweep(model: nn.Module, feed, eps_list: Sequence[float] | None = None, *, target_drop: float = 0.005,
                 calibration_feed=None, timing: bool = True, repeats: int = 3) -> dict[str, Any]:
    """The softmax-cutoff trade-off curve over ``eps_list`` on ``feed`` (see the module docstring).

    ``target_drop`` is a fraction of accuracy (0.005 = 0.5 percentage points).
    """
    eps_values = [float(e) for e in (DEFAULT_EPS if eps_list is None else eps_list)]
    for e in eps_values:
        if not 0.0 <= e <= 1.0:
            raise ValueError(f"every eps must be in [0, 1], got {e}")
    if target_drop < 0:
        raise ValueError(f"target_drop must be >= 0, got {target_drop}")
    cum, targets = cumulative_logits(model, feed)
    t_max = cum.shape[0]
    per_step = (cum.argmax(-1) == targets.unsqueeze(0)).double().mean(1).tolist()
    full = per_step[-1]

    accuracy, mean_steps = [], []
    for e in eps_values:
        pred, steps, _ = simulate_cutoff(cum, SoftmaxCutoff(e))
        accuracy.append(float((pred == targets).double().mean()))
        mean_steps.append(float(steps.double().mean()))
    o_pred, o_steps = oracle_cutoff(cum, targets)

    op = choose_operating_point(eps_values, accuracy, mean_steps, full, t_max, target_drop)

    result: dict[str, Any] = {
        "timesteps": t_max,
        "samples": int(targets.numel()),
        "eps": eps_values,
        "accuracy": accuracy,
        "mean_steps": mean_steps,
        "accuracy_per_step": per_step,
        "full_accuracy": full,
        "oracle_accuracy": float((o_pred == targets).double().mean()),
        "oracle_mean_steps": float(o_steps.double().mean()),
        "target_drop": float(target_drop),
        "operating_point": op,
        "speedup": t_max / op["mean_steps"],
    }

    if calibration_feed is not None:
        cal = MarginCalibration.from_model(model, calibration_feed)
        m_acc, m_steps, m_th = [], [], []
        for e in eps_values:
            rule = cal.rule(1.0 - e)
            pred, steps, _ = simulate_cutoff(cum, rule)
            m_acc.append(float((pred == targets).double().mean()))
            m_steps.append(float(steps.double().mean()))
            m_th.append([_finite_or_none(v) for v in rule.thresholds])
        result["margin"] = {"target_confidence": [1.0 - e for e in eps_values], "accuracy": m_acc,
                            "mean_steps": m_steps, "thresholds": m_th}

    if timing:
        result["wall_clock"] = time_inference(model, feed, op["eps"], repeats)
    return result


def plot_cutoff(curves: dict[str, dict[str, Any]], path: str | Path, title: str | None = None) -> Path:
    """PNG of accuracy (%) against mean stopping step, one line per sweep (e.g. with and without
    STR), with each curve's oracle (star) and operating point (circle)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(5.0, 3.6), dpi=120)
    t_max = 1
    for label, sweep in curves.items():
        pts = sorted(zip(sweep["mean_steps"], sweep["accuracy"]))
        line, = ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker=".", label=label)
        color = line.get_color()
        ax.plot(sweep["oracle_mean_steps"], 100 * sweep["oracle_accuracy"], marker="*", markersize=11, color=color,
                linestyle="none")
        op = sweep.get("operating_point")
        if op:
            ax.plot(op["mean_steps"], 100 * op["accuracy"], marker="o", markersize=8, markerfacecolor="none",
                    color=color, linestyle="none")
        t_max = max(t_max, int(sweep["timesteps"]))
    ax.set_xlabel("mean stopping step")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xlim(0.8, t_max + 0.2)
    ax.grid(alpha=0.3)
    ax.set_title(title or "softmax cutoff (star: oracle, circle: operating point)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
