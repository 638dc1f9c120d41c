r"""Export fewstep models to NIR and import NIR graphs back (needs ``pip install 'fewstep[nir]'``).

`NIR <https://neuroir.org>`_ (the Neuromorphic Intermediate Representation) describes a spiking
network as a graph of continuous-time nodes; every simulator or chip that reads NIR picks its own
time step ``dt``. :func:`export_nir` writes a fewstep model as such a graph and
:func:`import_nir` builds a fewstep model (a :class:`NIRModel`) from one.

**What is supported.** Sequential models: a :class:`~fewstep.models.base.SpikingModel` whose
``stem`` and ``body`` are (nested) ``nn.Sequential`` / :class:`~fewstep.layers.TimeFold`
blocks, or a plain ``nn.Sequential``, made of

=============================== ==============================================================
fewstep / torch                 NIR
=============================== ==============================================================
``Conv2d``                      ``Conv2d`` (bias written as zeros when absent; zero padding only)
``Linear``                      ``Affine`` (``Linear`` when it has no bias)
``BatchNorm1d/2d``              folded into the ``Conv2d`` / ``Linear`` right before it
                                (running statistics, i.e. the model in eval mode)
``AvgPool2d``                   ``AvgPool2d`` (no ceil mode, padding counted in the mean)
``AdaptiveAvgPool2d``           ``AvgPool2d`` when the output size divides the input size
``Flatten``                     ``Flatten`` (NIR counts dimensions without the batch: torch's
                                ``start_dim=1`` is NIR's ``0``)
``Dropout``, ``Identity``,      nothing (inference)
``DirectEncoding``
LIF / PLIF, hard reset          ``LIF`` (a learnable decay is exported at its current value)
IF, hard reset                  ``IF``
``scale_output=True``           the neuron, then ``Scale`` by ``V_th``
``MaxPool2d``                   unsupported: NIR 1.0 has no max pooling (on spikes it is an OR).
                                Use ``pool="avg"`` (the VGG models take it as an option).
MT-LIF (``num_thresholds > 1``) unsupported: NIR neurons emit one binary spike per step; an
                                MT-LIF step emits a count 0..K.
soft reset (subtraction)        unsupported: NIR's ``IF`` / ``LIF`` reset to ``v_reset``.
=============================== ==============================================================

Unsupported modules raise :class:`NIRError` naming the module and what to do instead. Residual
models, STCB and SCB blocks are not sequential chains of the nodes above and are refused too.

**Direct encoding.** The graph's ``Input`` receives the model's input at every step. For a static
image that is the image itself, fed again at each of the ``T`` steps: the ``stem`` (first conv
and its BN) becomes ordinary NIR nodes right after ``Input``, which is exactly what fewstep's
direct encoding computes (it runs the stem once and repeats its output, the same numbers).

**Discretisation.** fewstep's neurons are discrete (methods in :mod:`fewstep.neurons.functional`):
with decay :math:`\lambda` and hard reset to :math:`v_{reset}`,

.. math::

    h_t = v_{reset} + \lambda (v_{t-1} - v_{reset}) + x_t,\quad
    s_t = H(h_t - V_{th}),\quad v_t = s_t ? v_{reset} : h_t .

NIR's LIF is :math:`\tau \dot v = (v_{leak} - v) + R\,I`. One forward-Euler step of length
``dt`` (the way every NIR simulator we know of, snnTorch and Norse included, steps it) gives

.. math::

    v_t = \Bigl(1 - \frac{dt}{\tau}\Bigr) v_{t-1} + \frac{dt}{\tau} v_{leak}
          + \frac{dt\,R}{\tau} I_t .

Matching the two term by term: :math:`1 - dt/\tau = \lambda`, so :math:`\tau = dt / (1 -
\lambda)`; the input gain :math:`dt\,R/\tau = 1`, so :math:`R = \tau / dt = 1 / (1 - \lambda)`;
and :math:`(dt/\tau) v_{leak} = (1 - \lambda) v_{reset}`, so :math:`v_{leak} = v_{reset}`. For
IF (:math:`\lambda = 1`, NIR :math:`\dot v = R I`): :math:`v_t = v_{t-1} + dt\,R\,I_t`, so
:math:`R = 1 / dt`. The numbers in the graph therefore depend on the ``dt`` the *reader* will
use; NIR does not store it. ``export_nir`` defaults to ``dt = 1e-4``, the fixed step
snnTorch's ``import_from_nir`` uses (it reads :math:`\beta = 1 - dt/\tau` and divides the
threshold by :math:`dt R/\tau`); pass ``dt=1.0`` for tools that step in units of one step and
``dt=1e-3`` for Norse's ``from_nir`` default. The graph's ``metadata`` records ``dt`` and
``timesteps``; :func:`import_nir` reads them back (its ``dt=`` overrides). ``import_nir``
inverts the mapping: :math:`\lambda = 1 - dt/\tau`, input gain :math:`g = dt R / \tau` (``dt R``
for IF); a gain other than 1 becomes a :class:`Scale` module before the neuron (a gain within a few ulps of 1 in the
dtype of the node's parameters, e.g. float32 round-off of ``tau / dt``, counts as exactly 1).

**Versions.** fewstep needs ``nir >= 1.0.6`` (:data:`NIR_MIN_VERSION`; older releases have no
``v_reset`` on ``IF`` / ``LIF``); export and import raise one ``ImportError`` saying so otherwise.

**Where the semantics differ** (documented, not hidden):

* fewstep fires at :math:`h \ge V_{th}`, NIR (and snnTorch) at :math:`v > V_{th}`: the spikes
  differ only when a membrane lands exactly on the threshold.
* fewstep's membrane starts at :math:`v_{reset}`; NIR does not fix the initial state and
  snnTorch starts at 0. With ``v_reset = 0`` (the default) they agree.
* Soft reset: fewstep subtracts :math:`s_t V_{th}`. NIR 1.0 has no such reset, so export refuses
  it. (snnTorch's own ``Leaky`` can subtract, but its NIR importer always builds reset-to-zero
  neurons; Norse's LIF resets to ``v_reset`` as NIR says.)
* snnTorch 1.0's importer maps ``nir.IF`` to a *leaky* neuron with :math:`\beta = 0.9` and
  requires :math:`R = 1`; it also hands NIR's ``Flatten`` dimensions to ``torch.nn.Flatten``
  unshifted. IF models and models with ``Flatten`` therefore do not run the same in snnTorch;
  LIF models of ``Linear`` / ``Conv2d`` / ``AvgPool2d`` layers do (``tests/test_nir.py`` checks
  ``Linear -> LIF -> Linear -> LIF`` spike for spike).
* Per-neuron parameters: NIR stores one value per neuron; fewstep neurons have one value per
  layer, so :func:`import_nir` refuses graphs whose parameters vary within a layer.
"""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import __version__
from .errors import FewstepError
from .layers import DirectEncoding, TimeFold
from .models.base import SpikingModel
from .neurons import IF, LIF, SpikingNeuron

__all__ = ["DEFAULT_DT", "NIR_MIN_VERSION", "NIRError", "NIRModel", "Scale", "export_nir", "import_nir"]

DEFAULT_DT = 1e-4
"""The ``dt`` export and import assume when none is given: snnTorch's fixed NIR time step."""

NIR_MIN_VERSION = (1, 0, 6)
"""The oldest ``nir`` release fewstep reads and writes: 1.0.6 gave ``IF`` / ``LIF`` their ``v_reset``
(older releases fail on ``v_reset=`` with ``unexpected keyword argument``)."""

_GAIN_ULPS = 8
"""A NIR input gain within this many float ulps of 1 is taken as exactly 1 (see :func:`_gain_tol`)."""


class NIRError(FewstepError, ValueError):
    """A model cannot be written as NIR, or a NIR graph cannot be built as a fewstep model."""


def _nir_version() -> str | None:
    """The installed ``nir`` distribution's version string (``None`` when its metadata is missing)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nir")
    except PackageNotFoundError:
        return None


def _version_tuple(text: str) -> tuple[int, ...]:
    """``"1.0.8"`` -> ``(1, 0, 8)``; ``"1.0.6rc1"`` -> ``(1, 0, 6)`` (leading integers only)."""
    parts = []
    for piece in text.split(".")[:3]:
        digits = re.match(r"\d+", piece)
        if digits is None:
            break
        parts.append(int(digits.group()))
    return tuple(parts)


def _nir():
    """The ``nir`` module, after checking it is installed and at least :data:`NIR_MIN_VERSION`."""
    try:
        import nir
    except ImportError:
        raise ImportError("NIR export/import needs the 'nir' package: pip install 'fewstep[nir]'") from None
    found = _nir_version()
    floor = ".".join(map(str, NIR_MIN_VERSION))
    if found is not None and _version_tuple(found) < NIR_MIN_VERSION:
        raise ImportError(f"fewstep's NIR export/import needs nir >= {floor} (IF/LIF with v_reset), found nir {found}: "
                          f"pip install 'nir>={floor}'")
    return nir


def _gain_tol(dtype: torch.dtype | np.dtype = torch.float32) -> float:
    """How far from 1 an input gain ``dt r / tau`` may be and still count as exactly 1.

    The parameters of a NIR graph are usually float32 arrays, so ``tau / dt`` and back lose a
    few float32 ulps (about 1e-7); anything within :data:`_GAIN_ULPS` ulps of the parameters'
    dtype is round-off, not a gain, and must not become a ``Scale`` module."""
    if isinstance(dtype, torch.dtype):
        eps = torch.finfo(dtype).eps if dtype.is_floating_point else torch.finfo(torch.float64).eps
    else:
        dt = np.dtype(dtype)
        eps = float(np.finfo(dt).eps) if np.issubdtype(dt, np.floating) else float(np.finfo(np.float64).eps)
    return _GAIN_ULPS * float(eps)


class Scale(nn.Module):
    """Multiply the input elementwise by a constant (NIR's ``Scale`` node)."""

    def __init__(self, scale: torch.Tensor | float) -> None:
        super().__init__()
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale

    def extra_repr(self) -> str:
        return f"shape={tuple(self.scale.shape)}"


class NIRModel(SpikingModel):
    """A fewstep model built from a NIR graph: ``stem`` holds the nodes before the first neuron
    (run once on a static input, direct encoding), ``body`` the rest (over ``[T, B, ...]``)."""

    def __init__(self, stem: nn.Module, body: nn.Module, input_shape: tuple[int, ...], num_classes: int,
                 timesteps: int) -> None:
        super().__init__(input_shape, num_classes, timesteps)
        self.stem = stem
        self.body = body


# ----------------------------------------------------------------------------------------------
# export


def _is_plain_sequential(m: nn.Module) -> bool:
    return isinstance(m, nn.Sequential) and type(m).forward in (nn.Sequential.forward, TimeFold.forward)


def _chain(model: nn.Module) -> list[nn.Module]:
    """The leaf modules of a sequential model, in forward order."""
    if isinstance(model, SpikingModel):
        if type(model).forward is not SpikingModel.forward:
            raise NIRError(f"{type(model).__name__} overrides SpikingModel.forward; only sequential "
                           "stem + body models can be exported")
        return _chain(model.stem) + _chain(model.body)
    if isinstance(model, SpikingNeuron):
        return [model]
    if _is_plain_sequential(model):
        return [leaf for child in model.children() for leaf in _chain(child)]
    if isinstance(model, (DirectEncoding, nn.Dropout, nn.Identity)):
        return []
    return [model]


def _full(shape: tuple[int, ...], value: float) -> np.ndarray:
    return np.full(shape, value, dtype=np.float32)


def _f32(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float32).numpy().copy()


def _fold_bn(w: torch.Tensor, b: torch.Tensor | None, bn: nn.modules.batchnorm._BatchNorm
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and bias of ``bn(layer(x))`` as one layer (computed in float64)."""
    if bn.running_mean is None or bn.running_var is None:
        raise NIRError(f"{type(bn).__name__} without running statistics cannot be folded into the layer before it")
    mean, var = bn.running_mean.double(), bn.running_var.double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)
    w64 = w.detach().double() * scale.reshape(-1, *([1] * (w.dim() - 1)))
    b64 = (b.detach().double() if b is not None else torch.zeros_like(mean)) - mean
    return w64.float(), (b64 * scale + beta).float()


def _neuron_node(nir, n: SpikingNeuron, shape: tuple[int, ...], dt: float, where: str):
    if n.num_thresholds > 1:
        raise NIRError(f"{where}: MT-LIF with num_thresholds={n.num_thresholds} emits spike counts 0..K per step; "
                       "NIR 1.0 neurons emit binary spikes, so it has no NIR equivalent (K = 1 exports as LIF)")
    if n.reset_mode != "hard":
        raise NIRError(f"{where}: soft reset (subtract V_th) has no NIR 1.0 equivalent; NIR's IF/LIF reset to v_reset. "
                       "Export a model with reset='hard'")
    amp = getattr(n, "spike_amplitude", None)
    if amp is not None and float(torch.as_tensor(amp).detach().float().mean()) != 1.0:
        raise NIRError(f"{where}: {type(n).__name__} has a spike amplitude other than 1, which NIR cannot express")
    lam = float(n.decay.detach()) if isinstance(n.decay, torch.Tensor) else float(n.decay)
    thr = float(n.threshold.detach())
    v_reset = _full(shape, n.v_reset)
    if lam >= 1.0:
        return nir.IF(r=_full(shape, 1.0 / dt), v_threshold=_full(shape, thr), v_reset=v_reset)
    tau = dt / (1.0 - lam)
    return nir.LIF(tau=np.full(shape, tau), r=np.full(shape, tau / dt), v_leak=v_reset.copy(),
                   v_threshold=_full(shape, thr), v_reset=v_reset)


def export_nir(model: nn.Module, input_shape: tuple[int, ...] | None = None, *, dt: float = DEFAULT_DT):
    """Write ``model`` as a ``nir.NIRGraph`` (see the module docstring for the mapping).

    ``input_shape`` is one step's input without the batch, ``(C, H, W)`` or ``(features,)``;
    default ``model.input_shape``. ``dt`` is the time step the graph's reader will use (it sets
    NIR's ``tau`` and ``r``; default :data:`DEFAULT_DT`, snnTorch's). BatchNorm is folded with its
    running statistics, i.e. the graph computes ``model.eval()``. Node names are the modules'
    qualified names with ``.`` replaced by ``_``; the chain starts at ``input`` and ends at
    ``output``. ``graph.metadata`` holds ``dt``, ``timesteps`` and the fewstep version.
    """
    nir = _nir()
    if not (dt > 0 and math.isfinite(dt)):
        raise NIRError(f"dt must be a positive number, got {dt!r}")
    shape_in = input_shape if input_shape is not None else getattr(model, "input_shape", None)
    if shape_in is None:
        raise NIRError("pass input_shape (one step's input without the batch, e.g. (1, 28, 28))")
    shape_in = tuple(int(s) for s in shape_in)
    names = {id(m): name.replace(".", "_") or "model" for name, m in model.named_modules()}
    leaves = _chain(model)

    nodes: dict[str, Any] = {"input": nir.Input(input_type={"input": np.array(shape_in)})}
    order: list[str] = ["input"]
    pending: dict[str, Any] | None = None  # the last Conv2d/Linear, still open for a BatchNorm to fold in
    x = torch.zeros(1, *shape_in)
    modes = {m: m.training for m in model.modules()}  # restored one by one afterwards
    model.eval()
    try:
        with torch.no_grad():
            for m in leaves:
                name = names.get(id(m), f"node{len(order)}")
                where = f"{name} ({type(m).__name__})"
                shape = tuple(x.shape[1:])
                if isinstance(m, SpikingNeuron):
                    pending = None
                    node = _neuron_node(nir, m, shape, dt, where)
                    nodes[name], order = node, order + [name]
                    if m.scale_output:
                        sname = f"{name}_amplitude"
                        nodes[sname], order = nir.Scale(scale=_full(shape, float(m.threshold.detach()))), order + [sname]
                    continue
                if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                    if pending is None:
                        raise NIRError(f"{where}: a BatchNorm is folded into the Conv2d/Linear right before it; "
                                       "this one follows no such layer")
                    w, b = _fold_bn(pending["weight"], pending["bias"], m)
                    pending.update(weight=w, bias=b)
                    x = m(x)
                    continue
                y = m(x)
                out_shape = tuple(y.shape[1:])
                if isinstance(m, nn.Conv2d):
                    if m.padding_mode != "zeros":
                        raise NIRError(f"{where}: padding_mode={m.padding_mode!r}; NIR Conv2d pads with zeros")
                    pending = {"kind": "conv", "module": m, "weight": m.weight.detach().float(),
                               "bias": None if m.bias is None else m.bias.detach().float(), "in": shape}
                    nodes[name], order = pending, order + [name]
                elif isinstance(m, nn.Linear):
                    if len(shape) != 1:
                        raise NIRError(f"{where}: Linear on input of shape {shape}; NIR's Affine takes vectors "
                                       "(put a Flatten before it)")
                    pending = {"kind": "linear", "module": m, "weight": m.weight.detach().float(),
                               "bias": None if m.bias is None else m.bias.detach().float()}
                    nodes[name], order = pending, order + [name]
                elif isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
                    pending = None
                    nodes[name], order = _pool_node(nir, m, shape, out_shape, where), order + [name]
                elif isinstance(m, nn.Flatten):
                    pending = None
                    start, end = m.start_dim, m.end_dim
                    if start == 0 or end == 0:
                        raise NIRError(f"{where}: flattening the batch dimension has no NIR equivalent")
                    node = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=start - 1 if start > 0 else start,
                                       end_dim=end - 1 if end > 0 else end)
                    nodes[name], order = node, order + [name]
                elif isinstance(m, nn.MaxPool2d):
                    raise NIRError(f"{where}: NIR 1.0 has no max pooling (on binary spikes it is an OR of the window); "
                                   "build the model with average pooling (e.g. model option pool='avg')")
                else:
                    raise NIRError(f"{where}: no NIR mapping for {type(m).__name__}; supported: Conv2d, Linear, "
                                   "BatchNorm1d/2d (folded), AvgPool2d, AdaptiveAvgPool2d, Flatten, Dropout, IF/LIF/PLIF")
                x = y
    finally:
        for m, mode in modes.items():
            m.training = mode

    for name in order:  # close the open Conv2d/Linear entries now that their BatchNorms are folded
        spec = nodes[name]
        if isinstance(spec, dict):
            nodes[name] = _synapse_node(nir, spec)
    out_shape = tuple(x.shape[1:])
    nodes["output"] = nir.Output(output_type={"output": np.array(out_shape)})
    order.append("output")
    edges = list(itertools.pairwise(order))
    timesteps = int(getattr(model, "timesteps", 1))
    graph = nir.NIRGraph(nodes=nodes, edges=edges,
                         metadata={"source": "fewstep", "fewstep_version": __version__, "dt": float(dt),
                                   "timesteps": timesteps})
    _fill_types(graph, order)
    return graph


def _pool_node(nir, m: nn.Module, shape: tuple[int, ...], out_shape: tuple[int, ...], where: str):
    if isinstance(m, nn.AdaptiveAvgPool2d):
        h, w = shape[-2:]
        oh, ow = out_shape[-2:]
        if h % oh or w % ow:
            raise NIRError(f"{where}: output size {oh}x{ow} does not divide the input {h}x{w}")
        k = s = (h // oh, w // ow)
        p = (0, 0)
    else:
        if m.ceil_mode or m.divisor_override is not None:
            raise NIRError(f"{where}: ceil_mode / divisor_override have no NIR equivalent")
        k, s, p = (tuple(v) if isinstance(v, (tuple, list)) else (v, v) for v in (m.kernel_size, m.stride, m.padding))
        if p != (0, 0) and not m.count_include_pad:
            raise NIRError(f"{where}: count_include_pad=False with padding has no NIR equivalent")
    node = nir.AvgPool2d(kernel_size=np.array(k), stride=np.array(s), padding=np.array(p))
    node.input_type = {"input": np.array(shape)}
    node.output_type = {"output": np.array(out_shape)}
    return node


def _synapse_node(nir, spec: dict):
    w, b = _f32(spec["weight"]), None if spec["bias"] is None else _f32(spec["bias"])
    if spec["kind"] == "linear":
        return nir.Linear(weight=w) if b is None else nir.Affine(weight=w, bias=b)
    m: nn.Conv2d = spec["module"]
    padding = m.padding if isinstance(m.padding, str) else tuple(int(p) for p in m.padding)
    return nir.Conv2d(input_shape=tuple(spec["in"][-2:]), weight=w, stride=tuple(m.stride), padding=padding,
                      dilation=tuple(m.dilation), groups=m.groups,
                      bias=b if b is not None else np.zeros(w.shape[0], dtype=np.float32))


def _fill_types(graph, order: list[str]) -> None:
    """Give every node explicit input/output types (NIR leaves some, e.g. pooling, undefined)."""
    prev = None
    for name in order:
        node = graph.nodes[name]
        if prev is not None and any(v is None for v in node.input_type.values()):
            node.input_type = {"input": np.array(prev)}
        out = next(iter(node.output_type.values()))
        if out is None:
            node.output_type = {"output": np.array(prev)}
            out = prev
        prev = out


# ----------------------------------------------------------------------------------------------
# import


def _uniform(values: np.ndarray, what: str, where: str) -> float:
    a = np.asarray(values, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise NIRError(f"{where}: {what} is empty")
    if not np.all(a == a[0]):
        raise NIRError(f"{where}: {what} varies across neurons (from {a.min()} to {a.max()}); fewstep neurons "
                       "have one value per layer")
    return float(a[0])


def _chain_order(graph) -> list[str]:
    """Node names from the single Input to the single Output, refusing anything but a chain."""
    nir = _nir()
    inputs = [k for k, v in graph.nodes.items() if isinstance(v, nir.Input)]
    outputs = [k for k, v in graph.nodes.items() if isinstance(v, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise NIRError(f"fewstep imports graphs with one Input and one Output, got inputs {inputs}, outputs {outputs}")
    succ: dict[str, list[str]] = {}
    for a, b in graph.edges:
        succ.setdefault(a, []).append(b)
    order, node = [inputs[0]], inputs[0]
    while node != outputs[0]:
        nxt = succ.get(node, [])
        if len(nxt) != 1:
            raise NIRError(f"node {node!r} has {len(nxt)} successors; fewstep imports sequential graphs only")
        node = nxt[0]
        if node in order:
            raise NIRError(f"the graph has a cycle through {node!r} (recurrent graphs are not supported)")
        order.append(node)
    if len(order) != len(graph.nodes):
        extra = sorted(set(graph.nodes) - set(order))
        raise NIRError(f"nodes {extra} are not on the path from Input to Output")
    return order


def _neuron_from_node(nir, node, dt: float, where: str) -> list[nn.Module]:
    """A fewstep neuron (with a :class:`Scale` before it when NIR's input gain is not 1)."""
    thr = _uniform(node.v_threshold, "v_threshold", where)
    v_reset = _uniform(node.v_reset, "v_reset", where) if node.v_reset is not None else 0.0
    r = _uniform(node.r, "r", where)
    if isinstance(node, nir.IF):
        neuron: SpikingNeuron = IF(v_threshold=thr, v_reset=v_reset)
        gain = dt * r
    else:
        tau = _uniform(node.tau, "tau", where)
        v_leak = _uniform(node.v_leak, "v_leak", where)
        if v_leak != v_reset:
            raise NIRError(f"{where}: v_leak={v_leak} differs from v_reset={v_reset}; fewstep's hard-reset neurons leak "
                           "towards v_reset")
        lam = 1.0 - dt / tau
        if not 0.0 < lam < 1.0:
            raise NIRError(f"{where}: tau={tau} with dt={dt} gives decay {lam}, outside (0, 1); pass the dt the graph "
                           "was written for (import_nir(..., dt=...))")
        neuron = LIF(decay=lam, v_threshold=thr, v_reset=v_reset)
        gain = dt * r / tau
    mods: list[nn.Module] = [neuron]
    dtypes = [np.asarray(a).dtype for a in (node.r, getattr(node, "tau", node.r))]
    coarsest = max(dtypes, key=lambda d: _gain_tol(d))
    if abs(gain - 1.0) > _gain_tol(coarsest):
        mods.insert(0, Scale(float(gain)))
    return mods


def _module_from_node(nir, node, where: str) -> nn.Module | None:
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = torch.from_numpy(np.asarray(node.weight, dtype=np.float32).copy())
        has_bias = isinstance(node, nir.Affine)
        lin = nn.Linear(w.shape[1], w.shape[0], bias=has_bias)
        lin.weight.data.copy_(w)
        if has_bias:
            lin.bias.data.copy_(torch.from_numpy(np.asarray(node.bias, dtype=np.float32).copy()))
        return lin
    if isinstance(node, nir.Conv2d):
        w = torch.from_numpy(np.asarray(node.weight, dtype=np.float32).copy())
        padding = node.padding if isinstance(node.padding, str) else tuple(int(p) for p in np.atleast_1d(node.padding))
        conv = nn.Conv2d(w.shape[1] * int(node.groups), w.shape[0], tuple(w.shape[2:]),
                         stride=tuple(int(s) for s in np.atleast_1d(node.stride)), padding=padding,
                         dilation=tuple(int(d) for d in np.atleast_1d(node.dilation)), groups=int(node.groups), bias=True)
        conv.weight.data.copy_(w)
        bias = np.zeros(w.shape[0], np.float32) if node.bias is None else np.asarray(node.bias, dtype=np.float32)
        conv.bias.data.copy_(torch.from_numpy(bias.copy()))
        return conv
    if isinstance(node, nir.AvgPool2d):
        def pair(v) -> tuple[int, int]:
            a = np.atleast_1d(np.asarray(v)).astype(int)
            return (int(a[0]), int(a[-1]))
        return nn.AvgPool2d(pair(node.kernel_size), pair(node.stride), pair(node.padding))
    if isinstance(node, nir.Flatten):
        start, end = int(node.start_dim), int(node.end_dim)
        return nn.Flatten(start + 1 if start >= 0 else start, end + 1 if end >= 0 else end)
    if isinstance(node, nir.Scale):
        return Scale(torch.from_numpy(np.asarray(node.scale, dtype=np.float32).copy()))
    raise NIRError(f"{where}: no fewstep equivalent for NIR node {type(node).__name__}; supported: Affine, Linear, "
                   "Conv2d, AvgPool2d, Flatten, Scale, IF, LIF")


def import_nir(graph, *, dt: float | None = None, timesteps: int | None = None) -> NIRModel:
    """Build a fewstep model from a NIR graph (or the path of a ``.nir`` file).

    ``dt`` is the time step to run the graph at (default: the graph's ``metadata["dt"]``, else
    :data:`DEFAULT_DT`); ``timesteps`` the ``T`` for static inputs (default:
    ``metadata["timesteps"]``, else 1). Returns a :class:`NIRModel`, whose ``forward`` takes a
    static batch ``[B, ...]`` (fed at every step) or a sequence ``[T, B, ...]`` and returns
    ``[T, B, ...]``, like every fewstep model. LIF nodes become :class:`~fewstep.neurons.LIF`
    (fixed decay, hard reset), IF nodes :class:`~fewstep.neurons.IF`.
    """
    nir = _nir()
    if isinstance(graph, (str, Path)):
        graph = nir.read(str(graph))
    meta = dict(getattr(graph, "metadata", None) or {})
    dt = float(dt if dt is not None else meta.get("dt", DEFAULT_DT))
    if not (dt > 0 and math.isfinite(dt)):
        raise NIRError(f"dt must be a positive number, got {dt!r}")
    timesteps = int(timesteps if timesteps is not None else meta.get("timesteps", 1))
    order = _chain_order(graph)

    stem: list[nn.Module] = []
    body: list[nn.Module] = []
    stateless: list[nn.Module] = []
    seen_neuron = False
    for name in order:
        node = graph.nodes[name]
        where = f"node {name!r}"
        if isinstance(node, (nir.Input, nir.Output)):
            continue
        if isinstance(node, nir.NIRGraph):
            raise NIRError(f"{where}: nested graphs (e.g. recurrent subgraphs) are not supported")
        if isinstance(node, (nir.IF, nir.LIF)):
            mods = _neuron_from_node(nir, node, dt, where)
            stateless += mods[:-1]
            if seen_neuron:
                if stateless:
                    body.append(TimeFold(*stateless))
            else:
                stem = stateless
            stateless = []
            body.append(mods[-1])
            seen_neuron = True
            continue
        if isinstance(node, nir.Scale) and not stateless and body and isinstance(body[-1], SpikingNeuron):
            scale = np.asarray(node.scale, dtype=np.float64).reshape(-1)
            neuron = body[-1]
            if scale.size and np.all(scale == scale[0]) and scale[0] == float(neuron.threshold) \
                    and not neuron.scale_output:
                neuron.scale_output = True  # spikes of amplitude V_th, as fewstep exports them
                continue
        stateless.append(_module_from_node(nir, node, where))
    if stateless or not body:
        body.append(TimeFold(*stateless) if stateless else TimeFold(nn.Identity()))

    in_type = next(iter(graph.nodes[order[0]].input_type.values()))
    out_type = next(iter(graph.nodes[order[-1]].output_type.values()))
    if in_type is None:
        raise NIRError("the graph's Input node has no shape")
    num_classes = int(np.prod(out_type)) if out_type is not None else 0
    return NIRModel(nn.Sequential(*stem), nn.Sequential(*body), tuple(int(s) for s in np.atleast_1d(in_type)),
                    num_classes, timesteps)
