r"""Anytime inference: run a trained SNN step by step and stop each sample when it is confident.

At step ``t`` the model's output ``o_t`` is added to the running logits
:math:`Y_t = \sum_{k \le t} o_k` and a *cutoff rule* decides, per sample, whether to stop there
and predict :math:`\arg\max Y_t`. Every sample stops at ``T`` at the latest. Rules:

* :class:`SoftmaxCutoff` ``(eps)``: stop when :math:`\max \mathrm{softmax}(Y_t) > 1 - \varepsilon`
  (methods.md section 3). ``eps = 0`` never stops early (a float32 softmax never exceeds 1);
  ``eps`` close to 1 stops every sample at ``t = 1`` (the largest probability is at least
  ``1 / classes``).
* :class:`MarginCutoff` ``(thresholds)``: stop when the gap between the largest and the second
  largest entry of :math:`Y_t` exceeds :math:`\beta_t` (one threshold per step, or one for all).
  :class:`MarginCalibration` picks :math:`\beta_t` on training data (SNNCutoff's top-k rule):
  with :math:`g(X)` the oracle step below, the *confidence* of a threshold at step ``t`` is the
  fraction of training samples with gap :math:`> \beta` at ``t`` for which
  :math:`g(X) \le t` (the prediction is right at ``t`` and stays right up to ``T``);
  :math:`\beta_t` is the smallest threshold whose confidence is at least the target ``1 - eps``.
  The search is exact over the observed gaps (not binned); if no non-empty set reaches the
  target, :math:`\beta_t` is the largest observed gap (no training sample would stop at ``t``).
* :class:`NoCutoff`: run all ``T`` steps (the full-latency baseline).
* The oracle (:func:`oracle_cutoff`), an upper bound that needs the labels: the optimal cutoff
  step :math:`g(X)` is the smallest ``t`` such that :math:`\arg\max Y_s = y` for every
  ``s >= t``. Samples wrong at ``T`` run to ``T`` (as in SNNCutoff's ``aoi_evaluation``), so the
  oracle's accuracy equals the full-``T`` accuracy.

The engine (:func:`anytime_batch`) switches the model to single-step mode (state carried across
calls, see :func:`fewstep.neurons.set_step_mode`) and BatchNorm to eval mode. **Stopped samples
cost nothing afterwards**: their rows are dropped from the batch, from the running logits,
from every neuron's membrane state ``v`` (and ``last_spikes`` / ``last_membrane`` when
recording) and from every SCB synapse's carried current (:func:`select_state`), so later steps
run on the remaining samples only. Static input ``[B, C, H, W]``
(direct encoding) feeds the same image at every step, and for a :class:`SpikingModel` the
stateless ``stem`` runs once per batch, as in the multi-step forward; sequence input
``[T, B, C, H, W]`` feeds step ``t`` of the remaining samples. ``drop=False`` is the masked
reference: the whole batch runs for all ``T`` steps and stopped samples are frozen; both give the
same predictions and stopping steps.

Functions on precomputed logits (:func:`cumulative_logits`, :func:`simulate_cutoff`,
:func:`oracle_cutoff`) evaluate any rule without re-running the model; the sweep in
:mod:`fewstep.infer.cutoff` uses them.

**Only causal models.** Anytime numbers exist only when the output at step ``t`` depends on the
inputs up to ``t``. A module that declares ``causal = False`` breaks that: an STCB conversion
neuron with ``forward="count"`` (:class:`fewstep.layers.stcb.ConversionIF`) emits the count of
the whole spike train spread over the steps, so its step-1 output already depends on the last
step's input. :func:`cumulative_logits` (hence the sweep, the margin calibration and every
benchmark built on them) and the step-by-step engine refuse such a model with one
:class:`~fewstep.errors.FewstepError` (:func:`require_causal`); its full-``T`` accuracy is still
what :func:`fewstep.train.evaluate` reports.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, cast

import torch
from torch import nn

from ..causal import is_causal, non_causal_modules
from ..errors import FewstepError
from ..neurons import SpikingNeuron, reset_net, set_step_mode

__all__ = [
    "AnytimeResult", "CutoffRule", "MarginCalibration", "MarginCutoff", "NoCutoff", "SoftmaxCutoff",
    "anytime_batch", "anytime_inference", "calibrate_margin", "cumulative_logits", "is_causal", "non_causal_modules",
    "oracle_cutoff", "require_causal", "select_state", "simulate_cutoff", "single_step",
]


# ----------------------------------------------------------------------------------------------
# cutoff rules


class CutoffRule(Protocol):
    def __call__(self, logits: torch.Tensor, step: int) -> torch.Tensor:
        """``logits`` are the running sums ``Y_t`` ``[B, classes]`` at 1-based ``step``; returns a
        bool ``[B]``: stop these samples now."""


def _wide(t: torch.Tensor) -> torch.Tensor:
    """At least float32 (bf16/fp16 outputs are accumulated in float32; float64 stays)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def top2_margin(logits: torch.Tensor) -> torch.Tensor:
    """Largest minus second largest entry over the last dim (0 with a single class)."""
    if logits.shape[-1] < 2:
        return torch.zeros(logits.shape[:-1], dtype=logits.dtype, device=logits.device)
    top = logits.topk(2, dim=-1).values
    return top[..., 0] - top[..., 1]


@dataclass(frozen=True)
class SoftmaxCutoff:
    """Stop when ``max softmax(Y_t) > 1 - eps``."""

    eps: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.eps <= 1.0:
            raise ValueError(f"eps must be in [0, 1], got {self.eps}")

    def __call__(self, logits: torch.Tensor, step: int) -> torch.Tensor:
        return _wide(logits).softmax(-1).amax(-1) > 1.0 - self.eps


@dataclass(frozen=True)
class MarginCutoff:
    """Stop when ``top1(Y_t) - top2(Y_t) > thresholds[t - 1]`` (or ``> thresholds`` if a float)."""

    thresholds: float | tuple[float, ...]

    def __call__(self, logits: torch.Tensor, step: int) -> torch.Tensor:
        th = self.thresholds
        if not isinstance(th, (int, float)):
            th = th[min(step, len(th)) - 1]
        return top2_margin(_wide(logits)) > th


@dataclass(frozen=True)
class NoCutoff:
    """Never stop early: every sample runs ``T`` steps."""

    def __call__(self, logits: torch.Tensor, step: int) -> torch.Tensor:
        return torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)


# ----------------------------------------------------------------------------------------------
# results


@dataclass
class AnytimeResult:
    """Per-sample outcome of anytime inference: predictions, 1-based stopping steps, the max
    softmax of ``Y_t`` at the stopping step, and the labels when known."""

    predictions: torch.Tensor
    steps: torch.Tensor
    confidence: torch.Tensor
    timesteps: int
    targets: torch.Tensor | None = None

    @property
    def accuracy(self) -> float:
        if self.targets is None:
            raise FewstepError("accuracy needs the labels (targets)")
        return float((self.predictions == self.targets).double().mean())

    @property
    def mean_steps(self) -> float:
        return float(self.steps.double().mean())

    def summary(self) -> dict:
        out = {"mean_steps": self.mean_steps, "timesteps": self.timesteps, "samples": len(self.steps),
               "speedup": self.timesteps / self.mean_steps}
        if self.targets is not None:
            out["accuracy"] = self.accuracy
        return out


# ----------------------------------------------------------------------------------------------
# causality (is_causal and non_causal_modules are fewstep.causal's, re-exported here)


def require_causal(model: nn.Module, what: str = "anytime inference") -> None:
    """Raise :class:`~fewstep.errors.FewstepError` when ``model`` is not causal: ``what`` (an
    accuracy at an early step, a cutoff, a stopping step) would not exist for it."""
    bad = non_causal_modules(model)
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise FewstepError(f"{what} needs a causal model, but {shown} {'is' if len(bad) == 1 else 'are'} not causal "
                           "(e.g. an STCB conversion with forward='count' spreads the whole train's spike count "
                           "over the steps, so early outputs depend on later inputs). Use forward='if' "
                           "(model.options.forward), which has the same gradient, or report the full-T accuracy only")


# ----------------------------------------------------------------------------------------------
# the step-by-step engine


@contextlib.contextmanager
def single_step(model: nn.Module) -> Iterator[nn.Module]:
    """Model in eval and single-step mode with fresh state; restores modes and clears state after."""
    modes = {m: m.step_mode for m in model.modules() if hasattr(m, "step_mode")}
    was_training = model.training
    model.eval()
    set_step_mode(model, "s")
    reset_net(model)
    try:
        yield model
    finally:
        reset_net(model)
        for m, mode in modes.items():
            m.step_mode = mode
        model.train(was_training)


def _synapse_batch_axis(m: nn.Module) -> int | None:
    """Batch axis of a :class:`fewstep.layers.scb.Synapse` state: ``I[t-1]`` is ``[B, ...]`` (exp),
    the last ``K - 1`` inputs are ``[K - 1, B, ...]`` (causal). ``None`` for other modules."""
    try:
        from ..layers.scb import Synapse
    except ImportError:  # pragma: no cover - the layer ships with fewstep
        return None
    if not isinstance(m, Synapse):
        return None
    return 1 if m.kind == "causal" else 0


def select_state(model: nn.Module, index: torch.Tensor) -> None:
    """Keep only the batch rows ``index`` of every neuron's state (``v``, and the recorded
    ``last_spikes`` / ``last_membrane``) and of every SCB synapse's carried ``state``. Other
    modules with state must offer ``select_state(index)`` (used first when present); a module with
    ``reset_state`` but neither is an error, since its rows cannot be dropped."""
    for name, m in model.named_modules():
        if callable(getattr(m, "select_state", None)):
            m.select_state(index)
        elif isinstance(m, SpikingNeuron):
            for attr in ("v", "last_spikes", "last_membrane"):
                value = getattr(m, attr)
                if isinstance(value, torch.Tensor) and value.dim() > 0:
                    setattr(m, attr, value[index])
        elif (axis := _synapse_batch_axis(m)) is not None:
            if isinstance(m.state, torch.Tensor):
                m.state = m.state.index_select(axis, index)
        elif callable(getattr(m, "reset_state", None)):
            raise FewstepError(f"module {name!r} ({type(m).__name__}) keeps state but has no select_state(index); "
                               "anytime inference cannot drop stopped samples from it (use drop=False)")


def _is_sequence(model: nn.Module, x: torch.Tensor, sequence: bool | None) -> bool:
    if sequence is not None:
        return sequence
    shape = getattr(model, "input_shape", None)
    if shape is not None:
        n = len(shape)
        if x.dim() == n + 2:
            return True
        if x.dim() == n + 1:
            return False
        raise ValueError(f"expected [B, {', '.join(map(str, shape))}] or [T, B, ...], got shape {tuple(x.shape)}")
    return x.dim() == 5


@torch.no_grad()
def anytime_batch(model: nn.Module, x: torch.Tensor, rule: CutoffRule, *, timesteps: int | None = None,
                  sequence: bool | None = None, drop: bool = True) -> AnytimeResult:
    """Anytime inference on one batch: static ``[B, C, H, W]`` or sequence ``[T, B, C, H, W]``.

    ``timesteps`` defaults to ``model.timesteps`` for static input and to ``x.shape[0]`` for
    sequences. With ``drop=True`` stopped samples leave the batch (and the neuron state); with
    ``drop=False`` the whole batch runs ``T`` steps and stopped samples are masked (reference).
    """
    seq = _is_sequence(model, x, sequence)
    if seq:
        t_max = x.shape[0] if timesteps is None else min(int(timesteps), x.shape[0])
        b = x.shape[1]
    else:
        t_max = int(timesteps if timesteps is not None else getattr(model, "timesteps", 0))
        b = x.shape[0]
    if t_max < 1:
        raise ValueError(f"need at least one time step, got timesteps={t_max}")
    require_causal(model, "anytime inference")
    device = x.device
    preds = torch.zeros(b, dtype=torch.long, device=device)
    steps = torch.full((b,), t_max, dtype=torch.long, device=device)
    conf = torch.zeros(b, dtype=torch.float32, device=device)
    if b == 0:
        return AnytimeResult(preds, steps, conf, t_max)

    with single_step(model):
        split = not seq and hasattr(model, "stem") and hasattr(model, "body")
        net = cast(Any, model)  # its stem and body, when split
        static_in = net.stem(x) if split else x  # stateless stem: once per batch
        alive = torch.arange(b, device=device)  # original indices of the rows still running
        active = torch.ones(b, dtype=torch.bool, device=device)  # masked reference only
        y: torch.Tensor | None = None
        for t in range(t_max):
            if seq:
                inp = x[t] if (not drop or len(alive) == b) else x[t][alive]
                o = model(inp)
            else:
                o = net.body(static_in) if split else model(static_in)
            o = _wide(o)
            if drop:
                y = o if y is None else y + o
                stop = rule(y, t + 1) | (t + 1 == t_max)
                if stop.any():
                    done = alive[stop]
                    ys = y[stop]
                    preds[done] = ys.argmax(-1)
                    steps[done] = t + 1
                    conf[done] = ys.softmax(-1).amax(-1).float()
                    keep = (~stop).nonzero().squeeze(1)
                    if len(keep) == 0:
                        break
                    alive, y = alive[keep], y[keep]
                    if not seq:
                        static_in = static_in[keep]
                    select_state(model, keep)
            else:
                y = o if y is None else torch.where(active[:, None], y + o, y)
                stop = active & (rule(y, t + 1) | (t + 1 == t_max))
                if stop.any():
                    preds[stop] = y[stop].argmax(-1)
                    steps[stop] = t + 1
                    conf[stop] = y[stop].softmax(-1).amax(-1).float()
                    active = active & ~stop
                    if not active.any():
                        break
    return AnytimeResult(preds, steps, conf, t_max)


def _batches(feed) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    return feed.epoch(0) if hasattr(feed, "epoch") else feed


def anytime_inference(model: nn.Module, feed, rule: CutoffRule, *, drop: bool = True,
                      timesteps: int | None = None) -> AnytimeResult:
    """:func:`anytime_batch` over every batch of ``feed`` (a :class:`DeviceFeed` or an iterable of
    ``(inputs, labels)``), concatenated, with the labels."""
    parts, labels, t_max = [], [], None
    for x, y in _batches(feed):
        r = anytime_batch(model, x, rule, timesteps=timesteps, drop=drop)
        parts.append(r)
        labels.append(y)
        t_max = r.timesteps
    if not parts:
        raise FewstepError("the evaluation set is empty")
    return AnytimeResult(torch.cat([p.predictions for p in parts]), torch.cat([p.steps for p in parts]),
                         torch.cat([p.confidence for p in parts]), int(cast(int, t_max)), torch.cat(labels))  # set: parts


# ----------------------------------------------------------------------------------------------
# rules evaluated on precomputed logits


@torch.no_grad()
def cumulative_logits(model: nn.Module, feed) -> tuple[torch.Tensor, torch.Tensor]:
    """Running logits ``Y_t`` ``[T, N, classes]`` (at least float32) and labels ``[N]`` over a feed, from the
    ordinary multi-step forward (eval mode; every sample runs ``T`` steps). A model that is not
    causal is refused (:func:`require_causal`): its running logits before ``T`` are not anytime
    outputs."""
    require_causal(model, "running logits for anytime inference")
    was_training = model.training
    model.eval()
    outs, labels = [], []
    try:
        for x, y in _batches(feed):
            out = model(x)
            reset_net(model)
            outs.append(_wide(out).cumsum(0))
            labels.append(y)
    finally:
        model.train(was_training)
    if not outs:
        raise FewstepError("the evaluation set is empty")
    return torch.cat(outs, 1), torch.cat(labels)


def simulate_cutoff(cum: torch.Tensor, rule: CutoffRule) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Apply ``rule`` to running logits ``[T, N, classes]``: ``(predictions, steps, confidence)``,
    as :func:`anytime_batch` would give on the same logits."""
    t_max = cum.shape[0]
    fire = torch.stack([rule(cum[t], t + 1) for t in range(t_max)])
    fire[-1] = True
    idx = fire.int().argmax(0)  # first step that fires
    at = cum[idx, torch.arange(cum.shape[1], device=cum.device)]
    return at.argmax(-1), idx + 1, at.softmax(-1).amax(-1)


def stays_correct(cum: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Bool ``[T, N]``: the prediction is right at step t and at every later step."""
    correct = cum.argmax(-1) == targets.unsqueeze(0)
    return correct.flip(0).int().cumprod(0).flip(0).bool()


def oracle_cutoff(cum: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimal cutoff steps ``g(X)`` (1-based; ``T`` for samples wrong at ``T``) and the predictions
    there. An upper bound: it needs the labels."""
    good = stays_correct(cum, targets)
    good[-1] = True
    idx = good.int().argmax(0)
    pred = cum[idx, torch.arange(cum.shape[1], device=cum.device)].argmax(-1)
    return pred, idx + 1


# ----------------------------------------------------------------------------------------------
# margin calibration


class MarginCalibration:
    """Top-1/top-2 gaps of ``Y_t`` on training data and whether each sample's prediction stays
    right from ``t`` on; :meth:`thresholds` turns a target confidence into per-step thresholds."""

    def __init__(self, cum: torch.Tensor, targets: torch.Tensor) -> None:
        self.timesteps = cum.shape[0]
        self.margins = top2_margin(_wide(cum)).cpu()  # [T, N]
        self.good = stays_correct(cum, targets).cpu().double()  # [T, N]

    @classmethod
    def from_model(cls, model: nn.Module, feed) -> MarginCalibration:
        return cls(*cumulative_logits(model, feed))

    def thresholds(self, target_confidence: float) -> tuple[float, ...]:
        """Per step, the smallest threshold whose confidence on the training data is at least
        ``target_confidence`` (see the module docstring)."""
        out = []
        for t in range(self.timesteps):
            m, g = self.margins[t], self.good[t]
            order = m.argsort(descending=True, stable=True)
            ms, gs = m[order], g[order]
            n = len(ms)
            precision = gs.cumsum(0) / torch.arange(1, n + 1, dtype=torch.float64)
            group_end = torch.ones(n, dtype=torch.bool)
            group_end[:-1] = ms[:-1] > ms[1:]
            ok = (group_end & (precision >= target_confidence - 1e-12)).nonzero()
            if len(ok) == 0:
                out.append(float(ms[0]) if n else float("inf"))
                continue
            i = int(ok[-1])
            out.append(float(ms[i + 1]) if i + 1 < n else float("-inf"))
        return tuple(out)

    def rule(self, target_confidence: float) -> MarginCutoff:
        return MarginCutoff(self.thresholds(target_confidence))


def calibrate_margin(model: nn.Module, feed, target_confidence: float = 0.99) -> MarginCutoff:
    """A :class:`MarginCutoff` calibrated on ``feed`` (training data, without augmentation)."""
    return MarginCalibration.from_model(model, feed).rule(target_confidence)
