"""Host-side pieces that the fused neuron kernels (:mod:`.cpu_neuron`, :mod:`.triton_neuron`)
share: the options both kernels take from :class:`~fewstep.neurons.functional.NeuronParams`, the
reduction of per-block parameter gradients, and the reshaping of their ``[T, N]`` outputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..neurons.functional import NeuronParams, StepOutput
from ..neurons.surrogate import SURROGATES

#: Surrogate ids as the kernels number them: rectangle, triangle, sigmoid, arctan.
SURROGATE_ID = {name: i for i, name in enumerate(SURROGATES)}


@dataclass(frozen=True)
class NeuronConfig:
    """The options of one fused call that both kernels take (each kernel's config adds its own)."""

    T: int
    N: int
    K: int
    hard: bool
    v_reset: float
    sg: int
    width: float
    detach: bool
    scale: bool
    need_membrane: bool

    @staticmethod
    def fields(p: NeuronParams, T: int, N: int, need_membrane: bool) -> dict[str, Any]:
        """These fields for ``T`` steps of ``N`` neurons with the (supported) parameters ``p``."""
        return dict(T=T, N=N, K=int(p.num_thresholds), hard=p.reset == "hard", v_reset=float(p.v_reset),
                    sg=SURROGATE_ID[p.surrogate.name], width=float(p.surrogate.width), detach=bool(p.detach_reset),
                    scale=bool(p.scale_output), need_membrane=bool(need_membrane))


def param_grads(pdecay: torch.Tensor | None, decay_t: torch.Tensor | None, pthr: torch.Tensor | None,
                thr_t: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The decay and threshold gradients from the kernel's per-block partial sums (``None`` where
    not asked for), summed and shaped like the tensor parameters they belong to."""
    return _summed(pdecay, decay_t), _summed(pthr, thr_t)


def _summed(partial: torch.Tensor | None, param: torch.Tensor | None) -> torch.Tensor | None:
    if partial is None:
        return None
    assert param is not None  # partial sums are asked for only for a tensor parameter
    return partial.sum().to(param.dtype).reshape(param.shape)


def step_output(spikes: torch.Tensor, v_T: torch.Tensor, membrane: torch.Tensor | None,
                shape: torch.Size) -> StepOutput:
    """The kernel's flat ``[T, N]`` outputs viewed as ``StepOutput`` of the input's ``shape``
    (``membrane`` None when it was not computed)."""
    return StepOutput(
        spikes.view(shape), membrane.view(shape) if membrane is not None else None, v_T.view(shape[1:])
    )
