"""Numerical guards for training: find non-finite weights *and* buffers, and describe them.

The engine's end-of-epoch check looked at the parameters only. A BatchNorm layer fed huge
activations overflows its ``running_var`` to ``inf`` while the loss and every parameter stay
finite; that model is saved as "good" and evaluates at chance. :func:`non_finite_tensors`
checks every floating-point parameter and buffer, and :func:`divergence_problem` turns the
loss and the model state into the message :class:`~fewstep.train.engine.TrainingDiverged`
carries (or ``None`` when all is finite).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

__all__ = ["divergence_problem", "non_finite_tensors"]


@torch.no_grad()
def non_finite_tensors(model: nn.Module, limit: int = 3) -> list[str]:
    """Names of (at most ``limit``) floating-point parameters and buffers holding NaN or inf."""
    bad: list[str] = []
    for kind, named in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, t in named:
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                bad.append(f"{kind} {name}")
                if len(bad) >= limit:
                    return bad
    return bad


def divergence_problem(epoch: int, loss: float, model: nn.Module, checkpoint: str | Path) -> str | None:
    """The message for a diverged epoch, or ``None`` when the loss and the whole model state are finite.

    The message names the first non-finite tensors, says whether a good checkpoint exists (and
    that it was kept), and what to change.
    """
    bad = non_finite_tensors(model)
    if math.isfinite(loss) and not bad:
        return None
    what = [] if math.isfinite(loss) else [f"the loss is {loss}"]
    if bad:
        what.append("non-finite values in " + ", ".join(bad))
    checkpoint = Path(checkpoint)
    kept = (f"the last good checkpoint {checkpoint} was kept" if checkpoint.exists()
            else "no checkpoint was written (no epoch finished with finite values)")
    return (f"epoch {epoch}: training diverged ({'; '.join(what)}); {kept}. Lower train.lr or set "
            "train.grad_clip (and check the inputs for NaN/inf or huge values).")
