"""Streaming deployment: classify as the input arrives, one time step at a time.

:class:`StreamingClassifier` holds a trained model in single-step mode (state carried between
calls) and the running logits ``Y_t = sum_{k<=t} o_k``. Each :meth:`~StreamingClassifier.feed`
advances every stream of the batch by one step and returns the current prediction
``argmax Y_t`` and its confidence ``max softmax(Y_t)``, exactly what the multi-step model predicts
from its first ``t`` outputs. :meth:`~StreamingClassifier.feed_events` first turns a slice of raw
events into one step of synaptic current with :func:`events_to_current`. Stop feeding a stream
(and read its prediction) when its confidence passes ``1 - eps``, as the softmax cutoff of
:mod:`fewstep.infer.anytime` does; call :meth:`~StreamingClassifier.reset` before a new stream.

Example::

    clf = StreamingClassifier(model)
    for events in slices:                      # e.g. 10 ms of events each
        pred, conf = clf.feed_events(events, sensor_size=(34, 34))
        if conf > 0.99:
            break
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..neurons import reset_net, set_step_mode

__all__ = ["StreamingClassifier", "events_to_current"]


def _histogram(events: np.ndarray, sensor_size: Sequence[int]) -> np.ndarray:
    """Fallback without :mod:`fewstep.events.stc`: per-pixel event counts ``[2, H, W]`` (channel 0
    OFF, 1 ON; ``p > 0`` is ON), by ``np.add.at``."""
    width, height = int(sensor_size[0]), int(sensor_size[1])
    frame = np.zeros((2, height, width), np.float32)
    if len(events):
        p = (np.asarray(events["p"]) > 0).astype(np.intp)
        np.add.at(frame, (p, np.asarray(events["y"], np.intp), np.asarray(events["x"], np.intp)), 1.0)
    return frame


def events_to_current(events: np.ndarray, sensor_size: Sequence[int], **stc_options: Any) -> np.ndarray:
    """One step of synaptic current ``[2, H', W']`` (float32) from a slice of events.

    Uses :func:`fewstep.events.stc.stc` with ``timesteps=1`` (``stc_options`` such as
    ``spatial_factor`` or ``integration`` pass through, so the current matches how the training
    sequences were built); where that module is unavailable, a plain per-pixel count
    (:func:`np.add.at`; no options allowed).
    """
    try:
        from ..events.stc import stc
    except ImportError:  # pragma: no cover - the events package is part of fewstep
        if stc_options:
            raise ValueError(f"options {sorted(stc_options)} need fewstep.events.stc") from None
        return _histogram(events, sensor_size)
    return stc(events, sensor_size, timesteps=1, **stc_options)[0]


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

    def feed_events(self, events: np.ndarray | Sequence[np.ndarray], sensor_size: Sequence[int], **stc_options: Any):
        """Advance by one step from raw events: one structured array (one stream) or a list of
        them (a batch of streams), each accumulated into ``[2, H', W']`` of current by
        :func:`events_to_current`. Returns what :meth:`feed` returns."""
        if isinstance(events, np.ndarray) and events.dtype.names:
            return self.feed(events_to_current(events, sensor_size, **stc_options))
        frames = np.stack([events_to_current(ev, sensor_size, **stc_options) for ev in events])
        return self.feed(frames)
