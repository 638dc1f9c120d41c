"""Streaming deployment: classify as the input arrives, one time step at a time.

:class:`StreamingClassifier` holds a trained model in single-step mode (state carried between
calls) and the running logits ``Y_t = sum_{k<=t} o_k``. Each :meth:`~StreamingClassifier.feed`
advances every stream of the batch by one step and returns the current prediction
``argmax Y_t`` and its confidence ``max softmax(Y_t)``, exactly what the multi-step model predicts
from its first ``t`` outputs. :meth:`~StreamingClassifier.feed_events` first turns a slice of raw
events into one step of synaptic current with :func:`events_to_current`. Stop feeding a stream
(and read its prediction) when its confidence passes ``1 - eps``, as the softmax cutoff of
:mod:`fewstep.infer.anytime` does; call :meth:`~StreamingClassifier.reset` before a new stream.

**Streamed currents equal offline STC.** :class:`STCStream` reproduces
:func:`fewstep.events.compression.stc` exactly (bit for bit, every ``by``, ``integration`` and
``spatial_factor``) one step at a time, as events arrive in chunks of any size: each event's fine
bin is computed with the offline rule from the *stream's* geometry (its first and last timestamp
for ``by='time'``, its event count for ``by='count'``), which the stream must be told up front.
For a live sensor that is the recording window (or the event budget) the training sequences were
cut to. :func:`events_to_current` turns one window's events into one step of current; it is exact
only without fine bins (``integration='sum'``, or ``kappa = 1``), since the exponential weights
inside a window depend on where the window lies in the whole stream, and it refuses
``integration='exp'`` with ``kappa < 1`` (use :class:`STCStream`).

Example::

    clf = StreamingClassifier(model)
    stream = STCStream((34, 34), timesteps=4, t_first=0, t_last=300_000, integration="exp", kappa=0.8)
    for chunk in chunks:                       # events as they arrive, any chunk size
        for current in stream.push(chunk):     # every step whose window is complete
            pred, conf = clf.feed(current)
    for current in stream.flush():             # the steps left at the end of the recording
        pred, conf = clf.feed(current)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..neurons import reset_net, set_step_mode

__all__ = ["STCStream", "StreamingClassifier", "events_to_current"]


def _histogram(events: np.ndarray, sensor_size: Sequence[int]) -> np.ndarray:
    """Fallback without :mod:`fewstep.events.compression`: per-pixel event counts ``[2, H, W]`` (channel 0
    OFF, 1 ON; ``p > 0`` is ON), by ``np.add.at``."""
    width, height = int(sensor_size[0]), int(sensor_size[1])
    frame = np.zeros((2, height, width), np.float32)
    if len(events):
        p = (np.asarray(events["p"]) > 0).astype(np.intp)
        np.add.at(frame, (p, np.asarray(events["y"], np.intp), np.asarray(events["x"], np.intp)), 1.0)
    return frame


def events_to_current(events: np.ndarray, sensor_size: Sequence[int], **stc_options: Any) -> np.ndarray:
    """One step of synaptic current ``[2, H', W']`` (float32) from a slice of events.

    Uses :func:`fewstep.events.compression.stc` with ``timesteps=1`` (``stc_options`` such as
    ``spatial_factor`` pass through); where that module is unavailable, a plain per-pixel count
    (:func:`np.add.at`; no options allowed). When ``events`` are exactly the events of one
    offline step, the result is that step of offline STC, provided there are no fine bins: a
    plain sum (``integration='sum'`` or ``kappa = 1``). ``integration='exp'`` with ``kappa < 1``
    raises ``ValueError``: its weights depend on each event's fine bin in the whole stream, which
    one slice cannot know (binned over the slice's own first-to-last event, it would differ from
    the training currents); :class:`STCStream` computes it exactly.
    """
    try:
        from ..events.compression import stc
    except ImportError:  # pragma: no cover - the events package is part of fewstep
        if stc_options:
            raise ValueError(f"options {sorted(stc_options)} need fewstep.events.compression") from None
        return _histogram(events, sensor_size)
    if stc_options.get("integration", "sum") == "exp" and float(stc_options.get("kappa", 0.9)) < 1.0:
        raise ValueError("events_to_current cannot reproduce integration='exp' with kappa < 1 from one slice: "
                         "the fine bins depend on the whole stream; use fewstep.infer.STCStream")
    return stc(events, sensor_size, timesteps=1, **stc_options)[0]


class STCStream:
    """Offline STC (:func:`fewstep.events.compression.stc`) computed step by step as events arrive.

    Args:
        sensor_size: ``(width, height)`` (or Tonic's ``(width, height, 2)``).
        timesteps: ``T``.
        t_first, t_last: for ``by='time'``: the stream's first and last timestamps, whose span
            offline STC cuts into ``T * r`` equal fine bins. Events outside raise ``ValueError``.
        num_events: for ``by='count'``: the stream's number of events ``N``.
        by, integration, kappa, fine_bins_per_step, spatial_factor: as :func:`~fewstep.events.compression.stc`.

    :meth:`push` takes the next events (sorted by time, also across calls; a structured array
    of any length) and returns the currents ``[2, H', W']`` (float32) of every step that is now
    complete: under ``'time'`` a step is complete when a later step's event arrives, under
    ``'count'`` when its last event has. :meth:`flush` returns the remaining steps (empty steps
    are zeros). Over the whole stream the ``T`` currents equal ``stc(all_events, ...)`` exactly
    when ``t_first`` / ``t_last`` are the stream's own first and last timestamps (``'time'``) or
    ``num_events`` its length (``'count'``): each event gets the offline fine bin and weight,
    and every pixel sums them in the same order and precision (float64 for ``'exp'``).
    """

    def __init__(self, sensor_size: Sequence[int], timesteps: int, *, t_first: int | None = None,
                 t_last: int | None = None, num_events: int | None = None, by: str = "time",
                 integration: str = "sum", kappa: float = 0.9, fine_bins_per_step: int = 10,
                 spatial_factor: int = 1) -> None:
        from ..events import compression as _stc

        self._stc = _stc
        prm = _stc._check_params(timesteps, by, integration, kappa, fine_bins_per_step, spatial_factor)
        self.timesteps, self.by, self.fine, self.r = prm.timesteps, prm.by, prm.fine, prm.r
        self.width, self.height = _stc._sensor_wh(sensor_size)
        self.pool = _stc._pool_factor(prm.spatial_factor, self.width, self.height)
        self.shape = (2, _stc._ceil_div(self.height, self.pool), _stc._ceil_div(self.width, self.pool))
        self._weights = _stc._exp_weights(self.timesteps, self.fine, prm.kappa) if self.r > 1 else None
        self._check_geometry(t_first, t_last, num_events)
        self.reset()

    def _check_geometry(self, t_first: int | None, t_last: int | None, num_events: int | None) -> None:
        self.t_first: int | None  # by='time' only
        self.t_last: int | None
        self.num_events: int | None  # by='count' only
        if self.by == "time":
            if t_first is None or t_last is None or num_events is not None:
                raise ValueError("by='time' needs t_first and t_last (the stream's first and last timestamps), "
                                 "and no num_events")
            if int(t_last) < int(t_first):
                raise ValueError(f"t_last ({t_last}) must be >= t_first ({t_first})")
            self.t_first, self.t_last = int(t_first), int(t_last)
            self._span = max(self.t_last - self.t_first, 1)
            self._vectorised = self._span * self.fine < 2**62  # (t - t_first) * T0 fits in int64
            self.num_events = None
        else:
            if num_events is None or t_first is not None or t_last is not None:
                raise ValueError("by='count' needs num_events (the stream's number of events), and no t_first / t_last")
            if int(num_events) != num_events or num_events < 0:
                raise ValueError(f"num_events must be an integer >= 0, got {num_events!r}")
            self.num_events = int(num_events)
            self.t_first = self.t_last = None

    def reset(self) -> None:
        """Start a new stream with the same geometry."""
        self.step = 0  # the step being accumulated
        self.seen = 0  # events pushed so far
        self._last_t: int | None = None
        self._acc = np.zeros(int(np.prod(self.shape)), np.float32 if self._weights is None else np.float64)

    # -- binning -------------------------------------------------------------------------------
    def _fine_bins(self, t: np.ndarray) -> np.ndarray:
        """Offline fine bin of each event (see :mod:`fewstep.events.compression`)."""
        n = len(t)
        if self.by == "count":
            assert self.num_events is not None  # by='count' sets it
            return (np.arange(self.seen, self.seen + n, dtype=np.int64) * self.fine) // max(self.num_events, 1)
        assert self.t_first is not None  # by='time' sets it
        if self._vectorised:
            return np.minimum((t - self.t_first) * self.fine // self._span, self.fine - 1)
        return np.array([min((int(v) - self.t_first) * self.fine // self._span, self.fine - 1) for v in t.tolist()],
                        np.int64)

    def _check_times(self, t: np.ndarray) -> None:
        if len(t) == 0:
            return
        if np.any(t[1:] < t[:-1]) or (self._last_t is not None and int(t[0]) < self._last_t):
            raise ValueError("STCStream needs events sorted by time, also across push() calls")
        if self.by == "time":
            assert self.t_first is not None and self.t_last is not None  # by='time' sets them
            if int(t[0]) < self.t_first or int(t[-1]) > self.t_last:
                raise ValueError(f"events at t in [{int(t[0])}, {int(t[-1])}] lie outside the stream's "
                                 f"[t_first, t_last] = [{self.t_first}, {self.t_last}]")
        if self.by == "count":
            assert self.num_events is not None  # by='count' sets it
            if self.seen + len(t) > self.num_events:
                raise ValueError(f"more events than num_events = {self.num_events}")

    def _pixels(self, ev: np.ndarray) -> np.ndarray:
        """Flat index ``(channel * H' + y') * W' + x'`` of each event in one step's current."""
        x, y = self._stc._coordinates(ev, self.width, self.height)
        if self.pool > 1:
            x, y = x // self.pool, y // self.pool
        ch = self._stc._channels(ev).astype(np.int64)
        return (ch * self.shape[1] + y) * self.shape[2] + x

    # -- the stream ----------------------------------------------------------------------------
    def _emit(self) -> np.ndarray:
        out = self._acc.astype(np.float32).reshape(self.shape)
        self._acc[:] = 0
        self.step += 1
        return out

    def _count_complete(self) -> bool:
        """``by='count'``: every event of the current step has arrived."""
        assert self.num_events is not None  # by='count' sets it
        end = self._stc._ceil_div((self.step + 1) * self.num_events, self.timesteps)
        return self.seen >= end and (self.step < self.timesteps - 1 or self.seen == self.num_events)

    def push(self, events: np.ndarray) -> list[np.ndarray]:
        """Add the next events; return the currents of the steps completed by them."""
        ev = self._stc.as_events(events)
        t = ev["t"].astype(np.int64)
        self._check_times(t)
        done: list[np.ndarray] = []
        if len(ev):
            fine = self._fine_bins(t)
            steps = fine // self.r
            idx = self._pixels(ev)
            cuts = np.flatnonzero(np.diff(steps)) + 1
            for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(ev)]):
                while self.step < steps[lo]:
                    done.append(self._emit())
                values = (torch.ones(hi - lo, dtype=torch.float32) if self._weights is None
                          else torch.from_numpy(self._weights[fine[lo:hi]]))
                torch.from_numpy(self._acc).index_add_(0, torch.from_numpy(idx[lo:hi]), values)
            self._last_t = int(t[-1])
        self.seen += len(ev)
        while self.by == "count" and self.step < self.timesteps and self._count_complete():
            done.append(self._emit())
        return done

    def flush(self) -> list[np.ndarray]:
        """The currents of every step not yet returned (the stream has ended)."""
        if self.by == "count" and self.seen != self.num_events:
            raise ValueError(f"the stream ended after {self.seen} of num_events = {self.num_events} events")
        done = []
        while self.step < self.timesteps:
            done.append(self._emit())
        return done


class StreamingClassifier:
    """Step-by-step classification with a trained model (see the module docstring).

    Args:
        model: a trained fewstep model (any :class:`~fewstep.models.SpikingModel`). It is put in
            eval and single-step mode until :meth:`close` (or the end of a ``with`` block).
        mean, std: per-channel normalisation applied to every step, e.g. the dataset's for raw
            static frames in ``[0, 1]``; ``None`` feeds the input as given.
        device: where the model runs (default: the device of its parameters).
    """

    def __init__(self, model: nn.Module, *, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 device: torch.device | str | None = None) -> None:
        from .anytime import require_causal

        require_causal(model, "streaming classification")
        self.model = model
        param = next(model.parameters(), None)
        self.device = torch.device(device) if device is not None else (param.device if param is not None
                                                                        else torch.device("cpu"))
        self.dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        self.input_shape = tuple(getattr(model, "input_shape", ()))
        self._mean = self._std = None
        if mean is not None or std is not None:
            if mean is None or std is None:
                raise ValueError("give both mean and std, or neither")
            self._mean = torch.tensor(mean, dtype=self.dtype, device=self.device).view(-1, 1, 1)
            self._std = torch.tensor(std, dtype=self.dtype, device=self.device).view(-1, 1, 1)
        self._modes = {m: m.step_mode for m in model.modules() if hasattr(m, "step_mode")}
        self._was_training = model.training
        model.eval()
        set_step_mode(model, "s")
        self.logits: torch.Tensor | None = None
        self.steps = 0
        self.reset()

    # -- state ---------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the current streams: membrane state and running logits."""
        reset_net(self.model)
        self.logits = None
        self.steps = 0

    def close(self) -> None:
        """Give the model back in the step mode and train/eval mode it had."""
        reset_net(self.model)
        for m, mode in self._modes.items():
            m.step_mode = mode
        self.model.train(self._was_training)

    def __enter__(self) -> StreamingClassifier:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def probabilities(self) -> torch.Tensor | None:
        """``softmax(Y_t)`` ``[B, classes]`` after the last step (None before the first)."""
        return None if self.logits is None else self.logits.softmax(-1)

    def confident(self, eps: float) -> torch.Tensor:
        """Bool ``[B]``: the softmax cutoff ``max softmax(Y_t) > 1 - eps`` holds now."""
        if self.logits is None:
            raise RuntimeError("feed at least one step first")
        return self.logits.softmax(-1).amax(-1) > 1.0 - eps

    # -- feeding -------------------------------------------------------------------------------
    @torch.no_grad()
    def feed(self, x_t: torch.Tensor | np.ndarray):
        """Advance by one step. ``x_t`` is ``[B, C, H, W]`` (or one sample ``[C, H, W]``): a static
        frame (direct encoding: feed the same frame every step) or one step of synaptic current.

        Returns ``(prediction, confidence)``: tensors ``[B]`` for a batch, an ``int`` and a
        ``float`` for a single sample.
        """
        x = torch.as_tensor(x_t, device=self.device)
        x = x.to(self.dtype) / 255.0 if x.dtype == torch.uint8 else x.to(self.dtype)  # uint8 images as the feed does
        single = bool(self.input_shape) and x.dim() == len(self.input_shape)
        if single:
            x = x.unsqueeze(0)
        if self._mean is not None:
            assert self._std is not None  # set together with _mean
            x = (x - self._mean) / self._std
        if self.logits is not None and x.shape[0] != self.logits.shape[0]:
            raise ValueError(f"this stream has batch size {self.logits.shape[0]}, got a step of {x.shape[0]}; "
                             "call reset() to start new streams")
        o = self.model(x)
        o = o.to(torch.promote_types(o.dtype, torch.float32))
        self.logits = o if self.logits is None else self.logits + o
        self.steps += 1
        conf, pred = self.logits.softmax(-1).max(-1)
        if single:
            return int(pred[0]), float(conf[0])
        return pred, conf

    def feed_stream(self, stream: STCStream, events: np.ndarray | None = None) -> list:
        """Push ``events`` into ``stream`` (``None``: the stream has ended, flush it) and feed every
        step it completes; returns what :meth:`feed` returned for each, in order (possibly none).
        The currents are exactly offline STC's (see :class:`STCStream`)."""
        currents = stream.flush() if events is None else stream.push(events)
        return [self.feed(c) for c in currents]

    def feed_events(self, events: np.ndarray | Sequence[np.ndarray], sensor_size: Sequence[int], **stc_options: Any):
        """Advance by one step from raw events: one structured array (one stream) or a list of
        them (a batch of streams), each accumulated into ``[2, H', W']`` of current by
        :func:`events_to_current`. Returns what :meth:`feed` returns."""
        if isinstance(events, np.ndarray) and events.dtype.names:
            return self.feed(events_to_current(events, sensor_size, **stc_options))
        frames = np.stack([events_to_current(ev, sensor_size, **stc_options) for ev in events])
        return self.feed(frames)
