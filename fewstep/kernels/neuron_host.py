"""Host-side pieces that the fused neuron kernels (:mod:`.cpu_neuron`, :mod:`.triton_neuron`)
share: the options both kernels take from :class:`~fewstep.neurons.functional.NeuronParams`, the
reduction of per-block parameter gradients, and the reshaping of their ``[T, N]`` outputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import torch

from ..neuron_params import NeuronParams, StepOutput
from ..surrogate import SURROGATES

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
        # the surrogate's width: a float once Surrogate.__post_init__ has run
        return dict(T=T, N=N, K=int(p.num_thresholds), hard=p.reset == "hard", v_reset=float(p.v_reset),
                    sg=SURROGATE_ID[p.surrogate.name], width=float(cast(float, p.surrogate.width)), detach=bool(p.detach_reset),
                    scale=bool(p.scale_output), need_membrane=bool(need_membrane))


class BackwardCall(NamedTuple):
    """What a kernel's backward launch gets (see :func:`fused_neuron_function`)."""

    cfg: Any  # the kernel's config (a NeuronConfig)
    saved: torch.Tensor  # what its forward launch chose to save: the input x, or the membranes
    v0: torch.Tensor | None
    decay_t: torch.Tensor | None  # the decay / threshold when they are tensors
    thr_t: torch.Tensor | None
    x_dtype: torch.dtype  # the input's dtype (that of dL/dx)
    g_spikes: torch.Tensor | None  # the incoming gradients (None: no gradient flows there)
    g_v: torch.Tensor | None
    g_membrane: torch.Tensor | None
    need_v0: bool
    need_decay: bool
    need_thr: bool


#: ``(x, v0, decay_t, thr_t, cfg) -> (spikes, v_T, membrane or None, tensor saved for backward)``
KernelForward = Callable[..., tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None", torch.Tensor]]
#: ``BackwardCall -> (dL/dx, dL/dv0 or None, decay partial sums or None, threshold partial sums or None)``
KernelBackward = Callable[[BackwardCall], tuple[torch.Tensor, "torch.Tensor | None", "torch.Tensor | None",
                                                "torch.Tensor | None"]]


def fused_neuron_function(name: str, run_forward: KernelForward,
                          run_backward: KernelBackward) -> type[torch.autograd.Function]:
    """The autograd function ``name`` (``apply(x, v0, decay_t, thr_t, cfg) -> (spikes, v_T,
    membrane)``) around one kernel's forward and backward launches.

    The part both kernels share lives here: what is saved for backward, no materialised zero
    gradients, no gradient at all when none arrives, the parameter gradients reduced from the
    kernel's per-block partial sums (:func:`param_grads`); not twice differentiable."""

    def forward(ctx: Any, x: torch.Tensor, v0: torch.Tensor | None, decay_t: torch.Tensor | None,
                thr_t: torch.Tensor | None, cfg: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        spikes, v_T, membrane, saved = run_forward(x, v0, decay_t, thr_t, cfg)
        ctx.cfg = cfg
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(saved, v0, decay_t, thr_t)
        ctx.x_dtype = x.dtype
        return spikes, v_T, membrane

    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g_spikes: torch.Tensor | None, g_v: torch.Tensor | None,
                 g_membrane: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        cfg = ctx.cfg
        saved, v0, decay_t, thr_t = ctx.saved_tensors
        need_x, need_v0, need_decay, need_thr = ctx.needs_input_grad[:4]
        if g_spikes is None and g_v is None and g_membrane is None:
            return None, None, None, None, None
        gx, gv0, pdecay, pthr = run_backward(BackwardCall(cfg, saved, v0, decay_t, thr_t, ctx.x_dtype, g_spikes, g_v,
                                                          g_membrane, need_v0, need_decay, need_thr))
        gdecay, gthr = param_grads(pdecay, decay_t, pthr, thr_t)
        return (gx if need_x else None), gv0, gdecay, gthr, None

    return type(name, (torch.autograd.Function,), {"forward": staticmethod(forward), "backward": staticmethod(backward)})


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
