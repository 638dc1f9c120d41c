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
* ``operating_point`` and ``speedup = T / mean_steps`` there, **only when** ``choose_on`` (a
  validation feed, held out from the training data) is given: ``eps`` is chosen on that feed
  and never on the feed that is scored, so the reported accuracy and mean steps at that ``eps``
  are honest test numbers (the test drop may then exceed the target). **Choice of the operating
  point** (:func:`choose_operating_point`, on the ``choose_on`` sweep): among the sweep points
  whose accuracy drop ``full_accuracy - accuracy`` does not exceed ``target_drop`` (default
  0.005, i.e. 0.5 points), the one with the fewest mean steps (ties: the higher accuracy).
  Accuracy falls as the mean step count falls, so on a monotone curve this is the admissible
  point closest to the target drop. If no sweep point qualifies, the full-``T`` run is the
  operating point (``eps = None``, speed-up 1). The ``choose_on`` sweep itself is reported as
  ``calibration``. Without ``choose_on`` the result has the curve only (``operating_point`` and
  ``speedup`` are ``None``, and there is no wall-clock timing, which runs at the operating point);
* ``margin`` (when ``calibration_feed`` is given): the top-1/top-2 margin cutoff with thresholds
  calibrated on that feed (training or validation data, never the scored feed) to confidence
  ``1 - eps``, for the same ``eps`` values;
* ``wall_clock`` (when ``timing=True``): seconds for the whole feed with the step-by-step engine
  at the operating point (stopped samples dropped), with the same engine running all ``T`` steps
  (:class:`~fewstep.infer.anytime.NoCutoff`) and with the ordinary multi-step forward; the best of
  ``repeats`` runs each, and the speed-ups of the cutoff run over both baselines.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any, cast

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

__all__ = ["DEFAULT_EPS", "choose_operating_point", "cutoff_sweep", "full_accuracy", "sweep_softmax_cutoff",
           "time_inference"]


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
    (``eps = None``) when none qualifies. See the module docstring.

    The inputs must come from a validation sweep, not from the split whose numbers are reported:
    the choice fits the data it sees (:func:`cutoff_sweep` does this with ``choose_on``)."""
    admissible = [i for i, a in enumerate(accuracy) if full_accuracy - a <= target_drop + 1e-12]
    if not admissible:
        return {"eps": None, "accuracy": full_accuracy, "mean_steps": float(timesteps), "drop": 0.0}
    i = min(admissible, key=lambda j: (mean_steps[j], -accuracy[j], j))
    return {"eps": eps[i], "accuracy": accuracy[i], "mean_steps": mean_steps[i], "drop": full_accuracy - accuracy[i]}


def sweep_softmax_cutoff(cum: torch.Tensor, targets: torch.Tensor, eps_values: Sequence[float]) -> tuple[list[float], list[float]]:
    """Accuracy and mean stopping step of the softmax cutoff at every ``eps``."""
    accuracy, mean_steps = [], []
    for e in eps_values:
        pred, steps, _ = simulate_cutoff(cum, SoftmaxCutoff(e))
        accuracy.append(float((pred == targets).double().mean()))
        mean_steps.append(float(steps.double().mean()))
    return accuracy, mean_steps


def full_accuracy(cum: torch.Tensor, targets: torch.Tensor) -> float:
    """Accuracy of the full-``T`` prediction (the last cumulative step)."""
    return float((cum[-1].argmax(-1) == targets).double().mean())


def _operating_point(model: nn.Module, choose_on, choose_on_name: str, eps_values: list[float], target_drop: float,
                     accuracy: list[float], mean_steps: list[float], full: float, t_max: int
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
    """``eps`` chosen on ``choose_on``; the scored feed's accuracy and mean steps there."""
    cum_c, y_c = cumulative_logits(model, choose_on)
    if cum_c.shape[0] != t_max:
        raise ValueError(f"choose_on gives {cum_c.shape[0]} steps, the scored feed {t_max}")
    c_acc, c_steps = sweep_softmax_cutoff(cum_c, y_c, eps_values)
    c_full = full_accuracy(cum_c, y_c)
    chosen = choose_operating_point(eps_values, c_acc, c_steps, c_full, t_max, target_drop)
    if chosen["eps"] is None:
        acc, steps = full, float(t_max)
    else:
        i = eps_values.index(chosen["eps"])
        acc, steps = accuracy[i], mean_steps[i]
    op = {"eps": chosen["eps"], "chosen_on": choose_on_name, "accuracy": acc, "mean_steps": steps,
          "drop": full - acc, f"{choose_on_name}_accuracy": chosen["accuracy"],
          f"{choose_on_name}_mean_steps": chosen["mean_steps"], f"{choose_on_name}_drop": chosen["drop"]}
    calibration = {"split": choose_on_name, "samples": int(y_c.numel()), "full_accuracy": c_full,
                   "accuracy": c_acc, "mean_steps": c_steps}
    return op, calibration


def cutoff_sweep(model: nn.Module, feed, eps_list: Sequence[float] | None = None, *, target_drop: float = 0.005,
                 choose_on=None, choose_on_name: str = "val", calibration_feed=None, timing: bool = True,
                 repeats: int = 3) -> dict[str, Any]:
    """The softmax-cutoff trade-off curve over ``eps_list`` on ``feed`` (see the module docstring).

    ``target_drop`` is a fraction of accuracy (0.005 = 0.5 percentage points). ``choose_on`` is
    the feed (a validation split, named ``choose_on_name`` in the result) on which the operating
    point's ``eps`` is chosen; ``feed`` (the test split) is only scored. Without it there is no
    operating point, no speed-up and no timing.
    """
    eps_values = [float(e) for e in (DEFAULT_EPS if eps_list is None else eps_list)]
    for e in eps_values:
        if not 0.0 <= e <= 1.0:
            raise ValueError(f"every eps must be in [0, 1], got {e}")
    if target_drop < 0:
        raise ValueError(f"target_drop must be >= 0, got {target_drop}")
    if choose_on is not None and choose_on is feed:
        raise ValueError("choose_on must not be the scored feed: choose eps on held-out validation data")
    cum, targets = cumulative_logits(model, feed)
    t_max = cum.shape[0]
    per_step = (cum.argmax(-1) == targets.unsqueeze(0)).double().mean(1).tolist()
    full = per_step[-1]
    accuracy, mean_steps = sweep_softmax_cutoff(cum, targets, eps_values)
    o_pred, o_steps = oracle_cutoff(cum, targets)

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
        "operating_point": None,
        "speedup": None,
    }
    if choose_on is not None:
        op, calibration = _operating_point(model, choose_on, choose_on_name, eps_values, target_drop, accuracy,
                                           mean_steps, full, t_max)
        result.update(operating_point=op, speedup=t_max / op["mean_steps"], calibration=calibration)

    if calibration_feed is not None:
        cal = MarginCalibration.from_model(model, calibration_feed)
        m_acc, m_steps, m_th = [], [], []
        for e in eps_values:
            rule = cal.rule(1.0 - e)
            pred, steps, _ = simulate_cutoff(cum, rule)
            m_acc.append(float((pred == targets).double().mean()))
            m_steps.append(float(steps.double().mean()))
            th = cast("tuple[float, ...]", rule.thresholds)  # MarginCalibration.rule: one per step
            m_th.append([_finite_or_none(v) for v in th])
        result["margin"] = {"target_confidence": [1.0 - e for e in eps_values], "accuracy": m_acc,
                            "mean_steps": m_steps, "thresholds": m_th}

    if timing and result["operating_point"] is not None:
        result["wall_clock"] = time_inference(model, feed, result["operating_point"]["eps"], repeats)
    return result

