r"""Export fewstep models to NIR and import NIR graphs back (needs ``pip install 'fewstep[nir]'``).

`NIR <https://neuroir.org>`_ (the Neuromorphic Intermediate Representation) describes a spiking
network as a graph of continuous-time nodes; every simulator or chip that reads NIR picks its own
time step ``dt``. :func:`export_nir` writes a fewstep model as such a graph and
:func:`import_nir` builds a fewstep model (a :class:`NIRModel`) from one.

**What is supported.** Sequential models: a :class:`~fewstep.models.base.SpikingModel` whose
``stem`` and ``body`` are (nested) ``nn.Sequential`` / :class:`~fewstep.layers.TimeFold` /
:class:`~fewstep.layers.SCB` / :class:`~fewstep.layers.STCB` blocks, or a plain
``nn.Sequential``, made of

=============================== ==============================================================
fewstep / torch                 NIR
=============================== ==============================================================
``Conv2d``                      ``Conv2d`` (bias written as zeros when absent; zero padding only)
``Linear``                      ``Affine`` (``Linear`` when it has no bias)
``BatchNorm1d/2d``              folded into the ``Conv2d`` / ``Linear`` right before it
                                (running statistics, i.e. the model in eval mode)
``AvgPool2d``                   ``AvgPool2d`` (no ceil mode, padding counted in the mean)
``AdaptiveAvgPool2d``           ``AvgPool2d`` when the output size divides the input size
``Flatten``                     ``Flatten`` with negative dims (NIR counts dimensions without the
                                batch; ``-3 .. -1`` mean the same with or without it)
``Dropout``, ``Identity``,      nothing (inference)
``DirectEncoding``
LIF / PLIF, hard reset          ``LIF`` (a learnable decay is exported at its current value)
IF, hard reset                  ``IF``
soft reset (IF, LIF, MT-LIF,    a composite: an integrator (``LI``; ``I`` when there is no leak),
STCB ``ConversionIF``,          ``K`` ``Threshold`` nodes at ``k V_th`` (``k = 1..K``) reading
converted ``ConvertedIF``)      it, and from each a ``Scale(-lambda V_th)`` edge back into it
                                (the reset by subtraction, see below); the ``K`` binary trains
                                feed the next node, which sums them: the count ``0..K``
``scale_output`` / amplitude    ``Scale`` by ``V_th`` (``A = b V`` for converted neurons)
SCB ``exp`` synapse             ``LI`` with unit gain: :math:`I_t = \lambda_s I_{t-1} + y_t`
                                (one ``tau`` per channel for a per-channel synapse)
``MaxPool2d`` of spikes         per binary train: ``SumPool2d``, then a LIF that fires iff the
                                window's sum is >= 1 (an OR; a LIF rather than ``Threshold`` so
                                that snnTorch, Norse and SpikingJelly run it). On MT-LIF counts
                                ``sum_k b_k`` (nested, ``b_1 >= b_2 >= ...``) the max is
                                ``sum_k max(b_k)``, so each train is pooled so and summed.
=============================== ==============================================================

**Soft reset as a composite.** fewstep's soft reset (methods in :mod:`fewstep.neurons.functional`)
is :math:`h_t = \lambda v_{t-1} + x_t`, :math:`s_t = \sum_k H(h_t - k V_{th})`,
:math:`v_t = h_t - s_t V_{th}`. Substituting, :math:`h_t = \lambda h_{t-1} + x_t - \lambda V_{th}
s_{t-1}`: a leaky integrator of the input plus a feedback of the previous step's spikes. NIR
graphs may be recurrent; a discrete-time reader carries a recurrent edge's value from the
previous step (0 at the first), which is how nirtorch's interpreter runs them, so the
composite is exact. NIR's ``IF`` / ``LIF`` cannot express it (they reset to ``v_reset``).

**Refused, with the reason** (:class:`NIRError`): max pooling of real values (NIR 1.0 has no
max; fewstep writes it only for spikes, e.g. not ``cifar_fast``'s pool between BN and the
neuron); MT-LIF with hard reset and ``K > 1`` (its counts test the membrane before a reset no
NIR node exposes); STCB ``forward="count"`` (not causal); a converted neuron's initial membrane
``theta != 0`` (NIR fixes no initial state); the ``causal`` SCB synapse (would need ``Delay``
nodes, not written); ANN activations (DNNs: convert them first); residual blocks other than
:class:`~fewstep.models.stcb_models.STCBBasicBlock` (NIR can express them; not written yet).

**Residual blocks.** An ``STCBBasicBlock`` (``sn2(conv2(stcb1(x)) + shortcut(x))``, the
``stcb_resnet19`` recipes) is written as two paths from the block's input, the conv branch and
the shortcut (nothing for an identity, else its 1x1 conv with the BN folded), both feeding the
second conversion neuron, which sums them.

**Importing.** :func:`import_nir` reads chains of ``Affine`` / ``Linear`` / ``Conv2d`` /
``AvgPool2d`` / ``SumPool2d`` / ``Flatten`` / ``Scale`` / ``IF`` / ``LIF`` (so every hard-reset
export, max pooling included, round-trips); graphs with the soft-reset composite are refused
there. :func:`euler_reference` runs any graph fewstep writes the way a textbook NIR reader does,
to check an export.

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
* Soft reset is written as the composite above; none of snnTorch 1.0, Norse 1.1 and
  SpikingJelly 2.0 maps ``LI`` / ``I`` / ``Threshold`` / ``Scale``, so those graphs run in
  :func:`euler_reference` (and any reader with those nodes) but not in these three.
* snnTorch 1.0's importer maps ``nir.IF`` to a *leaky* neuron with :math:`\beta = 0.9` and
  requires :math:`R = 1` (hard-reset IF models do not run the same there). It hands NIR's
  ``Flatten`` dimensions to ``torch.nn.Flatten`` unshifted, as Norse does: fewstep therefore
  writes negative dims, which both read correctly.
* Norse 1.1's ``from_nir`` ignores ``r``: its LIF's input gain is :math:`dt/\tau` instead of
  :math:`dt R/\tau`. ``export_nir(model, gain="weights")`` writes :math:`R = 1` and folds
  :math:`\tau/dt` into the weights feeding each LIF: the same network for every reader, and
  the one Norse runs correctly (``tests/test_nir_peers.py``). Norse also maps no ``AvgPool2d``.
* ``tests/test_nir_peers.py`` and ``benchmarks/nir_matrix.py`` check the exported recipes in
  each peer, spike for spike.
* Per-neuron parameters: NIR stores one value per neuron; fewstep neurons have one value per
  layer, so :func:`import_nir` refuses graphs whose parameters vary within a layer.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from . import __version__
from .errors import FewstepError
from .layers import SCB, STCB, DirectEncoding, Synapse, TimeFold
from .models.base import SpikingModel
from .neurons import IF, LIF, SpikingNeuron

__all__ = ["DEFAULT_DT", "NIR_MIN_VERSION", "NIRError", "NIRModel", "Scale", "euler_reference", "export_nir", "import_nir"]

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

    scale: torch.Tensor  # a buffer

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


class _Residual:
    """A residual block in :func:`_chain`'s output: ``after(branch(x) + shortcut(x))`` (leaf lists)."""

    def __init__(self, branch: list, shortcut: list, after: list) -> None:
        self.branch, self.shortcut, self.after = branch, shortcut, after


def _residual(model: nn.Module) -> _Residual | None:
    """The parts of an :class:`~fewstep.models.stcb_models.STCBBasicBlock` (``sn2(conv2(stcb1(x)) +
    shortcut(x))``), or ``None`` for any other module."""
    from .models.stcb_models import STCBBasicBlock

    if isinstance(model, STCBBasicBlock) and type(model).forward is STCBBasicBlock.forward:
        return _Residual(_chain(model.stcb1) + _chain(model.conv2), _chain(model.shortcut), _chain(model.sn2))
    return None


def _chain(model: nn.Module) -> list:
    """The leaf modules of a sequential model, in forward order.

    An :class:`~fewstep.layers.SCB` is its stateless modules, then its :class:`Synapse`; an
    :class:`~fewstep.layers.STCB` its synapse modules, then its conversion neuron (both compute
    exactly that composition)."""
    if isinstance(model, SpikingModel):
        if type(model).forward is not SpikingModel.forward:
            raise NIRError(f"{type(model).__name__} overrides SpikingModel.forward; only sequential "
                           "stem + body models can be exported")
        return _chain(model.stem) + _chain(model.body)
    if isinstance(model, (SpikingNeuron, Synapse)):
        return [model]
    if isinstance(model, SCB) and type(model).forward is SCB.forward:
        return _chain(model.op) + [model.synapse]
    if isinstance(model, STCB) and type(model).forward is STCB.forward:
        return _chain(model.synapse) + [model.conversion]
    if _is_plain_sequential(model):
        return [leaf for child in model.children() for leaf in _chain(child)]
    if isinstance(model, (DirectEncoding, nn.Dropout, nn.Identity)):
        return []
    block = _residual(model)
    return [block] if block is not None else [model]


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


class _Graph:
    """A NIR graph under construction, written in forward order.

    ``heads`` are the nodes whose outputs, summed, are the tensor computed so far (NIR sums the
    inputs of a node): one node, or the ``K`` threshold nodes of an MT-LIF. ``spikes`` is set
    while the heads are a neuron's nested binary spike trains (``b_1 >= b_2 >= ... >= b_K``),
    with the spike amplitude not yet written (a ``Scale`` node emitted before the next node
    that needs the values, so that max pooling can still act on the binary trains)."""

    def __init__(self, nir, dt: float, shape_in: tuple[int, ...], gain: str = "r") -> None:
        self.nir, self.dt, self.gain = nir, dt, gain
        self.nodes: dict[str, Any] = {"input": nir.Input(input_type={"input": np.array(shape_in)})}
        self.shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {"input": (shape_in, shape_in)}
        self.edges: list[tuple[str, str]] = []
        self.heads: list[str] = ["input"]
        self.spikes: dict | None = None  # {"amplitude": float, "neuron": name} while heads are spike trains
        self.pending: dict | None = None  # the last Conv2d/Linear, still open for a BatchNorm to fold in
        self.shape = shape_in

    def add(self, name: str, node, shape_in: tuple[int, ...], shape_out: tuple[int, ...],
            inputs: list[str]) -> str:
        if name in self.nodes:
            raise NIRError(f"two modules map to the NIR node name {name!r}")
        self.nodes[name] = node
        self.shapes[name] = (shape_in, shape_out)
        self.edges += [(h, name) for h in inputs]
        return name

    def settle(self, one_head: bool = False) -> None:
        """Write the pending spike amplitude (a ``Scale`` node) if it is not 1, or, with
        ``one_head``, whenever there are several heads (the graph's ``Output`` takes one input)."""
        spikes, self.spikes = self.spikes, None
        if spikes is None or (spikes["amplitude"] == 1.0 and not (one_head and len(self.heads) > 1)):
            return
        name = f"{spikes['neuron']}_amplitude"
        if name in self.nodes:  # already written from these heads (the other path of a residual block)
            self.heads = [name]
            return
        node = self.nir.Scale(scale=_full(self.shape, spikes["amplitude"]))
        self.heads = [self.add(name, node, self.shape, self.shape, self.heads)]

    def feed(self, name: str, node, shape_out: tuple[int, ...]) -> str:
        """Append ``node`` taking the (summed) heads as input; it becomes the only head."""
        self.settle()
        self.heads = [self.add(name, node, self.shape, shape_out, self.heads)]
        self.shape = shape_out
        return name


def _decay_of(n: SpikingNeuron) -> float:
    return float(n.decay.detach()) if isinstance(n.decay, torch.Tensor) else float(n.decay)


def _add_neuron(g: _Graph, n: SpikingNeuron, name: str, where: str) -> None:
    """Write neuron ``n`` (see the module docstring: ``IF`` / ``LIF`` for hard reset, an
    integrator + ``Threshold`` + reset feedback for soft reset and MT-LIF)."""
    nir, dt, shape = g.nir, g.dt, g.shape
    if getattr(n, "forward_mode", "if") != "if":
        raise NIRError(f"{where}: forward={n.forward_mode!r} spreads the whole train's spike count over the steps "
                       "(step 0 depends on later inputs); NIR graphs are causal, so it has no NIR equivalent. "
                       "Export the model with the STCB conversion forward='if'")
    if float(getattr(n, "initial_membrane", 0.0)) != 0.0:
        raise NIRError(f"{where}: an initial membrane theta*V != 0 cannot be written: NIR fixes no initial state "
                       "(readers start at 0)")
    lam, thr, k_max = _decay_of(n), float(n.threshold.detach()), int(n.num_thresholds)
    if not 0.0 <= lam <= 1.0:
        raise NIRError(f"{where}: decay {lam} outside [0, 1]")
    amp = getattr(n, "spike_amplitude", None)
    amplitude = float(torch.as_tensor(amp).detach().float()) if amp is not None else (thr if n.scale_output else 1.0)
    v_reset = _full(shape, n.v_reset)
    if n.reset_mode == "hard":
        if k_max > 1:
            raise NIRError(f"{where}: MT-LIF with hard reset and K={k_max}: its counts 2..K test the membrane before "
                           "a reset that zeroes it, which no NIR node exposes next to IF/LIF; export it with "
                           "reset='soft' (the MT-LIF default, written exactly) or K = 1")
        if lam >= 1.0:
            node = nir.IF(r=_full(shape, 1.0 / dt), v_threshold=_full(shape, thr), v_reset=v_reset)
        else:
            tau = dt / (1.0 - lam)
            r = tau / dt
            if g.gain == "weights":  # r = 1; the input gain tau / dt goes into the layer feeding the LIF
                spec = g.nodes[g.heads[0]] if len(g.heads) == 1 else None
                if isinstance(spec, dict) and g.spikes is None:
                    spec["gain"] = spec.get("gain", 1.0) * r
                else:
                    g.feed(f"{name}_gain", nir.Scale(scale=_full(shape, r)), shape)
                r = 1.0
            node = nir.LIF(tau=np.full(shape, tau), r=np.full(shape, r), v_leak=v_reset.copy(),
                           v_threshold=_full(shape, thr), v_reset=v_reset)
        g.feed(name, node, shape)
    else:
        # Soft reset: h_t = lam (h_{t-1} - V s_{t-1}) + x_t is a leaky integrator of x_t plus the
        # feedback -lam V s_{t-1} (a recurrent edge carries the previous step's output).
        if lam >= 1.0:
            integ = nir.I(r=np.full(shape, 1.0 / dt))
        else:
            tau = dt / (1.0 - lam)
            integ = nir.LI(tau=np.full(shape, tau), r=np.full(shape, tau / dt), v_leak=np.zeros(shape))
        g.feed(name, integ, shape)
        heads = []
        for k in range(1, k_max + 1):
            suffix = "" if k_max == 1 else str(k)
            spike = g.add(f"{name}_spike{suffix}", nir.Threshold(threshold=_full(shape, k * thr)), shape, shape, [name])
            g.add(f"{name}_reset{suffix}", nir.Scale(scale=_full(shape, -lam * thr)), shape, shape, [spike])
            g.edges.append((f"{name}_reset{suffix}", name))
            heads.append(spike)
        g.heads = heads
    g.spikes = {"amplitude": amplitude, "neuron": name}


def _add_synapse(g: _Graph, s: Synapse, name: str, where: str) -> None:
    """An ``exp`` synapse ``I[t] = lam_s I[t-1] + y[t]`` is NIR's ``LI`` with unit gain."""
    if s.kind == "none":
        return
    if s.kind != "exp":
        raise NIRError(f"{where}: the {s.kind!r} synapse (a kernel over the last {s.kernel_size} steps) would need "
                       "NIR Delay nodes, which fewstep does not write; use synapse='exp' (NIR LI) or 'none'")
    lam = s.decay.detach().double().reshape(-1)
    shape = g.shape
    if s.per_channel:
        view = [1] * len(shape)
        view[s.channel_dim - 1] = -1
        lam_full = lam.reshape(view).expand(shape).numpy()
    else:
        lam_full = np.full(shape, float(lam[0]))
    if np.all(lam_full == 0.0):
        return  # I[t] = y[t]
    if np.all(lam_full >= 1.0):
        g.feed(name, g.nir.I(r=np.full(shape, 1.0 / g.dt)), shape)
        return
    if np.any(lam_full >= 1.0) or np.any(lam_full <= 0.0):
        raise NIRError(f"{where}: per-channel synapse decays mix 0 or 1 with values in (0, 1); NIR's LI needs a "
                       "finite positive tau for every neuron")
    tau = g.dt / (1.0 - lam_full)
    g.feed(name, g.nir.LI(tau=tau, r=tau / g.dt, v_leak=np.zeros(shape)), shape)


_OR_DECAY = 0.5
"""Decay of the LIF that writes the OR of a pooling window (see :func:`_add_max_pool`)."""


def _or_gate(nir, dt: float, shape: tuple[int, ...]):
    """A LIF that fires iff its input (a window's spike count, an integer >= 0) is >= 1.

    ``tau = dt / (1 - 0.5)``, ``r = 1`` (input gain ``dt r / tau = 0.5``), threshold 0.25, reset
    to 0: an input ``n`` gives ``v = 0.5 n``, above 0.25 iff ``n >= 1``, and the membrane is 0
    again before every step (reset after a spike, ``v = 0`` after ``n = 0``), so the decay never
    matters. With ``r = 1`` a reader that ignores ``r`` (Norse 1.1) computes the same."""
    tau = dt / (1.0 - _OR_DECAY)
    gain = 1.0 - _OR_DECAY
    return nir.LIF(tau=np.full(shape, tau), r=np.ones(shape), v_leak=np.zeros(shape),
                   v_threshold=_full(shape, gain / 2), v_reset=np.zeros(shape, np.float32))


def _add_max_pool(g: _Graph, m: nn.MaxPool2d, name: str, out_shape: tuple[int, ...], where: str) -> None:
    """Max pooling of binary spikes is an OR of the window: ``SumPool2d``, then a LIF that fires
    iff the sum is >= 1 (:func:`_or_gate`; a LIF rather than a ``Threshold`` node so that NIR
    readers without ``Threshold`` run it too).

    On an MT-LIF's nested trains ``b_1 >= ... >= b_K`` the max of the count ``sum_k b_k`` is
    ``sum_k max(b_k)``, so each train is pooled that way and the results summed."""
    if g.spikes is None:
        raise NIRError(f"{where}: NIR 1.0 has no max pooling. fewstep writes max pooling of a neuron's binary "
                       "spikes exactly (SumPool2d + a LIF that fires on any spike in the window), but this one "
                       "pools real values (it is not right after a neuron); build the model with average pooling "
                       "(e.g. pool='avg') or pool after the neuron")
    k, s, p, d = (tuple(v) if isinstance(v, (tuple, list)) else (v, v)
                  for v in (m.kernel_size, m.stride if m.stride is not None else m.kernel_size, m.padding, m.dilation))
    if d != (1, 1) or m.ceil_mode:
        raise NIRError(f"{where}: dilation / ceil_mode have no NIR SumPool2d equivalent")
    if p != (0, 0):
        raise NIRError(f"{where}: padded max pooling: NIR readers' SumPool2d ignore padding (nirtorch, Norse); "
                       "use padding=0")
    heads = []
    for i, head in enumerate(g.heads):
        suffix = "" if len(g.heads) == 1 else str(i + 1)
        pool = g.nir.SumPool2d(kernel_size=np.array(k), stride=np.array(s), padding=np.array(p))
        summed = g.add(f"{name}{suffix}", pool, g.shape, out_shape, [head])
        heads.append(g.add(f"{name}{suffix}_any", _or_gate(g.nir, g.dt, out_shape), out_shape, out_shape, [summed]))
    g.heads, g.shape = heads, out_shape


def _walk(g: _Graph, leaves: list, x: torch.Tensor, names: dict[int, str]) -> torch.Tensor:
    """Write ``leaves`` (from :func:`_chain`) into ``g``; ``x`` is a zero input of the current
    shape (run through the stateless modules to follow the shapes). Returns the output's ``x``."""
    nir = g.nir
    for m in leaves:
        if isinstance(m, _Residual):
            x = _walk_residual(g, m, x, names)
            continue
        name = names.get(id(m), f"node{len(g.nodes)}")
        where = f"{name} ({type(m).__name__})"
        shape = tuple(x.shape[1:])
        if isinstance(m, SpikingNeuron):
            g.pending = None
            _add_neuron(g, m, name, where)
            continue
        if isinstance(m, Synapse):
            g.pending = None
            _add_synapse(g, m, name, where)
            continue
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if g.pending is None:
                raise NIRError(f"{where}: a BatchNorm is folded into the Conv2d/Linear right before it; "
                               "this one follows no such layer")
            w, b = _fold_bn(g.pending["weight"], g.pending["bias"], m)
            g.pending.update(weight=w, bias=b)
            x = m(x)
            continue
        if not isinstance(m, _STATELESS):
            raise _unsupported(m, where)
        y = m(x)
        out_shape = tuple(y.shape[1:])
        g.pending = None
        if isinstance(m, nn.Conv2d):
            if m.padding_mode != "zeros":
                raise NIRError(f"{where}: padding_mode={m.padding_mode!r}; NIR Conv2d pads with zeros")
            g.pending = {"kind": "conv", "module": m, "weight": m.weight.detach().float(),
                         "bias": None if m.bias is None else m.bias.detach().float(), "in": shape}
            g.feed(name, g.pending, out_shape)
        elif isinstance(m, nn.Linear):
            if len(shape) != 1:
                raise NIRError(f"{where}: Linear on input of shape {shape}; NIR's Affine takes vectors "
                               "(put a Flatten before it)")
            g.pending = {"kind": "linear", "module": m, "weight": m.weight.detach().float(),
                         "bias": None if m.bias is None else m.bias.detach().float()}
            g.feed(name, g.pending, out_shape)
        elif isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            g.feed(name, _pool_node(nir, m, shape, out_shape, where), out_shape)
        elif isinstance(m, nn.Flatten):
            g.feed(name, _flatten_node(nir, m, shape, where), out_shape)
        else:  # nn.MaxPool2d
            _add_max_pool(g, m, name, out_shape, where)
        x = y
    return x


def _walk_residual(g: _Graph, block: _Residual, x: torch.Tensor, names: dict[int, str]) -> torch.Tensor:
    """``after(branch(x) + shortcut(x))``: both paths start from the block's input heads; the
    node after the sum receives the heads of both (NIR sums a node's inputs)."""
    start = (list(g.heads), g.spikes, g.shape)
    outputs = []
    for path in (block.branch, block.shortcut):
        g.heads, g.spikes, g.shape = list(start[0]), start[1], start[2]
        g.pending = None
        y = _walk(g, path, x, names)
        g.settle(one_head=False)  # a pending spike amplitude is written on its own path
        outputs.append((list(g.heads), y))
    (heads_a, y_a), (heads_b, y_b) = outputs
    if tuple(y_a.shape) != tuple(y_b.shape):
        raise NIRError(f"residual block: branch output {tuple(y_a.shape[1:])} and shortcut output "
                       f"{tuple(y_b.shape[1:])} differ")
    g.heads, g.spikes, g.pending, g.shape = heads_a + heads_b, None, None, tuple(y_a.shape[1:])
    return _walk(g, block.after, y_a + y_b, names)


_STATELESS = (nn.Conv2d, nn.Linear, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.MaxPool2d)


def _unsupported(m: nn.Module, where: str) -> NIRError:
    """The error for a module :func:`export_nir` has no mapping for, with the reason."""
    kind = type(m).__name__
    if isinstance(m, nn.ReLU) or kind == "ClippedReLU":
        return NIRError(f"{where}: a {kind} (an ANN activation) has no NIR equivalent; NIR describes spiking and "
                        "continuous-time nodes. Convert the DNN first (fewstep convert), then export the SNN")
    if hasattr(m, "shortcut") or "Block" in kind:
        return NIRError(f"{where}: a residual block (output = branch + shortcut). NIR can express the sum of two "
                        "paths, but fewstep writes only STCBBasicBlock's; this block is not exported yet")
    return NIRError(f"{where}: no NIR mapping for {kind}; supported: Conv2d, Linear, BatchNorm1d/2d (folded), "
                    "AvgPool2d, AdaptiveAvgPool2d, MaxPool2d (of spikes), Flatten, Dropout, SCB exp synapses, "
                    "IF/LIF/PLIF/MT-LIF/STCB/converted IF neurons")


def export_nir(model: nn.Module, input_shape: tuple[int, ...] | None = None, *, dt: float = DEFAULT_DT,
               gain: str = "r"):
    """Write ``model`` as a ``nir.NIRGraph`` (see the module docstring for the mapping).

    ``input_shape`` is one step's input without the batch, ``(C, H, W)`` or ``(features,)``;
    default ``model.input_shape``. ``dt`` is the time step the graph's reader will use (it sets
    NIR's ``tau`` and ``r``; default :data:`DEFAULT_DT`, snnTorch's). BatchNorm is folded with its
    running statistics, i.e. the graph computes ``model.eval()``. Node names are the modules'
    qualified names with ``.`` replaced by ``_`` (composites add suffixes such as ``_spike``,
    ``_reset``, ``_amplitude``); the graph starts at ``input`` and ends at ``output``.
    ``graph.metadata`` holds ``dt``, ``timesteps`` and the fewstep version (and ``gain``).

    ``gain`` says where NIR's input gain of each hard-reset ``LIF`` goes: ``"r"`` (default) writes
    ``r = tau / dt`` (input gain ``dt r / tau = 1``); ``"weights"`` writes ``r = 1`` and multiplies
    the weights and bias of the ``Conv2d`` / ``Affine`` feeding the LIF by ``tau / dt`` (a ``Scale``
    node when no such layer feeds it). Both are the same network for any NIR reader (up to float
    rounding); ``"weights"`` is the form that readers which ignore ``r`` run correctly (Norse 1.1's
    ``from_nir``, see the module docstring).
    """
    nir = _nir()
    if not (dt > 0 and math.isfinite(dt)):
        raise NIRError(f"dt must be a positive number, got {dt!r}")
    if gain not in ("r", "weights"):
        raise NIRError(f"gain must be 'r' or 'weights', got {gain!r}")
    shape_in = input_shape if input_shape is not None else getattr(model, "input_shape", None)
    if shape_in is None:
        raise NIRError("pass input_shape (one step's input without the batch, e.g. (1, 28, 28))")
    shape_in = tuple(int(s) for s in shape_in)
    names = {id(m): name.replace(".", "_") or "model" for name, m in model.named_modules()}
    leaves = _chain(model)

    g = _Graph(nir, float(dt), shape_in, gain)
    modes = {m: m.training for m in model.modules()}  # restored one by one afterwards
    model.eval()
    try:
        with torch.no_grad():
            _walk(g, leaves, torch.zeros(1, *shape_in), names)
    finally:
        for m, mode in modes.items():
            m.training = mode

    g.settle(one_head=True)
    for name, spec in g.nodes.items():  # close the open Conv2d/Linear entries now that their BatchNorms are folded
        if isinstance(spec, dict):
            g.nodes[name] = _synapse_node(nir, spec)
    g.add("output", nir.Output(output_type={"output": np.array(g.shape)}), g.shape, g.shape, g.heads)
    timesteps = int(getattr(model, "timesteps", 1))
    graph = nir.NIRGraph(nodes=g.nodes, edges=g.edges,
                         metadata={"source": "fewstep", "fewstep_version": __version__, "dt": float(dt),
                                   "timesteps": timesteps, "gain": gain})
    _fill_types(graph, g.shapes)
    return graph


def _flatten_node(nir, m: nn.Flatten, shape: tuple[int, ...], where: str):
    """NIR's Flatten counts dimensions without the batch; fewstep writes them as negative indices
    (``-len(shape)`` .. ``-1``), which mean the same with or without a batch dimension, so readers
    that hand NIR's dims to ``torch.nn.Flatten`` unshifted (snnTorch, Norse) flatten correctly too."""
    full = len(shape) + 1  # dims of the batched tensor
    start, end = (d if d < 0 else d - full for d in (m.start_dim, m.end_dim))
    if start <= -full or end <= -full:
        raise NIRError(f"{where}: flattening the batch dimension has no NIR equivalent")
    return nir.Flatten(input_type={"input": np.array(shape)}, start_dim=start, end_dim=end)


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
    return nir.AvgPool2d(kernel_size=np.array(k), stride=np.array(s), padding=np.array(p))


def _synapse_node(nir, spec: dict):
    gain = float(spec.get("gain", 1.0))  # export_nir(gain="weights"): the next LIF's input gain, folded in
    weight, bias = spec["weight"], spec["bias"]
    if gain != 1.0:
        weight = (weight.double() * gain).float()
        bias = None if bias is None else (bias.double() * gain).float()
    w, b = _f32(weight), None if bias is None else _f32(bias)
    if spec["kind"] == "linear":
        return nir.Linear(weight=w) if b is None else nir.Affine(weight=w, bias=b)
    m: nn.Conv2d = spec["module"]
    padding = m.padding if isinstance(m.padding, str) else tuple(int(p) for p in m.padding)
    return nir.Conv2d(input_shape=tuple(spec["in"][-2:]), weight=w, stride=tuple(m.stride), padding=padding,
                      dilation=tuple(m.dilation), groups=m.groups,
                      bias=b if b is not None else np.zeros(w.shape[0], dtype=np.float32))


def _fill_types(graph, shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]) -> None:
    """Give every node explicit input/output types (NIR leaves some, e.g. pooling, undefined)."""
    for name, (shape_in, shape_out) in shapes.items():
        node = graph.nodes[name]
        if any(v is None for v in node.input_type.values()):
            node.input_type = {"input": np.array(shape_in)}
        if any(v is None for v in node.output_type.values()):
            node.output_type = {"output": np.array(shape_out)}


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


def _conv_pair(v) -> tuple[int, int]:
    """A NIR ``Conv2d`` field (kernel size, stride, padding, dilation: a pair) as a tuple of ints."""
    return cast("tuple[int, int]", tuple(int(i) for i in np.atleast_1d(v)))


def _module_from_node(nir, node, where: str) -> nn.Module:
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
        padding = node.padding if isinstance(node.padding, str) else _conv_pair(node.padding)
        conv = nn.Conv2d(w.shape[1] * int(node.groups), w.shape[0], _conv_pair(w.shape[2:]),
                         stride=_conv_pair(node.stride), padding=padding,
                         dilation=_conv_pair(node.dilation), groups=int(node.groups), bias=True)
        conv.weight.data.copy_(w)
        assert conv.bias is not None  # bias=True
        bias = np.zeros(w.shape[0], np.float32) if node.bias is None else np.asarray(node.bias, dtype=np.float32)
        conv.bias.data.copy_(torch.from_numpy(bias.copy()))
        return conv
    if isinstance(node, nir.AvgPool2d):
        def pair(v) -> tuple[int, int]:
            a = np.atleast_1d(np.asarray(v)).astype(int)
            return (int(a[0]), int(a[-1]))
        return nn.AvgPool2d(pair(node.kernel_size), pair(node.stride), pair(node.padding))
    if isinstance(node, nir.SumPool2d):
        k = tuple(int(v) for v in np.atleast_1d(node.kernel_size))
        s = tuple(int(v) for v in np.atleast_1d(node.stride))
        p = tuple(int(v) for v in np.atleast_1d(node.padding))
        return nn.AvgPool2d((k[0], k[-1]), (s[0], s[-1]), (p[0], p[-1]), divisor_override=1)  # a window sum
    if isinstance(node, nir.Flatten):
        start, end = int(node.start_dim), int(node.end_dim)
        return nn.Flatten(start + 1 if start >= 0 else start, end + 1 if end >= 0 else end)
    if isinstance(node, nir.Scale):
        return Scale(torch.from_numpy(np.asarray(node.scale, dtype=np.float32).copy()))
    raise NIRError(f"{where}: no fewstep equivalent for NIR node {type(node).__name__}; supported: Affine, Linear, "
                   "Conv2d, AvgPool2d, SumPool2d, Flatten, Scale, IF, LIF")


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


# ----------------------------------------------------------------------------------------------
# a reference reader


class _EulerNode(nn.Module):
    """One stateful NIR neuron/integrator node stepped with forward Euler (see :func:`euler_reference`)."""

    # buffers (v_threshold and v_reset only for the nodes that fire)
    decay: torch.Tensor
    leak: torch.Tensor
    gain: torch.Tensor
    v_threshold: torch.Tensor
    v_reset: torch.Tensor

    def __init__(self, nir, node, dt: float) -> None:
        super().__init__()

        def t(a) -> torch.Tensor:
            return torch.as_tensor(np.asarray(a, dtype=np.float64)).float()

        self.kind = type(node).__name__
        if isinstance(node, (nir.IF, nir.I)):
            self.register_buffer("decay", torch.ones(()))
            self.register_buffer("leak", torch.zeros(()))
            self.register_buffer("gain", t(dt * np.asarray(node.r, np.float64)))
        else:
            tau = np.asarray(node.tau, np.float64)
            self.register_buffer("decay", t(1.0 - dt / tau))
            self.register_buffer("leak", t(dt / tau * np.asarray(node.v_leak, np.float64)))
            self.register_buffer("gain", t(dt * np.asarray(node.r, np.float64) / tau))
        self.fires = isinstance(node, (nir.IF, nir.LIF))
        if self.fires:
            self.register_buffer("v_threshold", t(node.v_threshold))
            self.register_buffer("v_reset", t(node.v_reset))

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        v = torch.zeros_like(x) if state is None else state
        v = self.decay * v + self.leak + self.gain * x
        if not self.fires:
            return v, v
        z = (v > self.v_threshold).to(x.dtype)
        return z, torch.where(z > 0, self.v_reset.expand_as(v), v)


class _Lambda(nn.Module):
    def __init__(self, fn, **buffers: torch.Tensor) -> None:
        super().__init__()
        self.fn = fn
        for k, v in buffers.items():
            self.register_buffer(k, v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self, x)


def _reference_map(nir, dt: float) -> dict:
    def f32(a) -> torch.Tensor:
        return torch.from_numpy(np.asarray(a, dtype=np.float32).copy())

    def ints(v) -> tuple[int, ...]:
        return tuple(int(i) for i in np.atleast_1d(np.asarray(v)))

    def pair(v) -> tuple[int, int]:
        a = ints(v)
        return (a[0], a[-1])

    def affine(node) -> nn.Module:
        w = f32(node.weight)
        lin = nn.Linear(w.shape[1], w.shape[0], bias=isinstance(node, nir.Affine))
        lin.weight.data.copy_(w)
        if isinstance(node, nir.Affine):
            lin.bias.data.copy_(f32(node.bias))
        return lin

    def conv(node) -> nn.Module:
        return _module_from_node(nir, node, "reference")

    def flatten(node) -> nn.Module:
        start, end = int(node.start_dim), int(node.end_dim)
        return nn.Flatten(start + 1 if start >= 0 else start, end + 1 if end >= 0 else end)

    def sum_pool(node) -> nn.Module:
        k, s, p = pair(node.kernel_size), pair(node.stride), pair(node.padding)
        return nn.AvgPool2d(k, s, p, divisor_override=1)

    return {
        nir.Affine: affine, nir.Linear: affine, nir.Conv2d: conv, nir.Flatten: flatten,
        nir.AvgPool2d: lambda node: _module_from_node(nir, node, "reference"), nir.SumPool2d: sum_pool,
        nir.Scale: lambda node: _Lambda(lambda m, x: x * m.scale, scale=f32(node.scale)),
        nir.Threshold: lambda node: _Lambda(lambda m, x: (x > m.threshold).to(x.dtype), threshold=f32(node.threshold)),
        nir.IF: lambda node: _EulerNode(nir, node, dt), nir.LIF: lambda node: _EulerNode(nir, node, dt),
        nir.LI: lambda node: _EulerNode(nir, node, dt), nir.I: lambda node: _EulerNode(nir, node, dt),
    }


def euler_reference(graph, *, dt: float | None = None):
    """A textbook reader of a NIR graph, to check what any correct simulator computes from it.

    Every node is stepped with forward Euler at step ``dt`` (default ``graph.metadata["dt"]``):
    ``LI``: :math:`v_t = (1 - dt/\\tau) v_{t-1} + (dt/\\tau) v_{leak} + (dt R/\\tau) I_t`, ``I``:
    :math:`v_t = v_{t-1} + dt R I_t`, ``IF`` / ``LIF`` the same then :math:`z = v > v_{th}` and
    reset to ``v_reset``; ``Threshold`` is :math:`z = x > \\theta`, ``SumPool2d`` a window sum,
    and a node's inputs are summed. Graph wiring, including recurrent edges (which carry the
    previous step's output, 0 at the first step), is nirtorch's generic interpreter
    (``nirtorch.nir_to_torch``; needs ``pip install nirtorch``). Returns ``run(x)``: ``x`` is a
    sequence ``[T, B, ...]`` or a static batch ``[B, ...]`` (fed ``metadata["timesteps"]`` times);
    the output is ``[T, B, ...]``.
    """
    nir = _nir()
    try:
        import nirtorch
    except ImportError:
        raise ImportError("euler_reference needs nirtorch: pip install nirtorch") from None
    if isinstance(graph, (str, Path)):
        graph = nir.read(str(graph))
    meta = dict(getattr(graph, "metadata", None) or {})
    step = float(dt if dt is not None else meta.get("dt", DEFAULT_DT))
    timesteps = int(meta.get("timesteps", 1))
    in_shape = tuple(int(s) for s in np.atleast_1d(next(iter(
        next(v for v in graph.nodes.values() if isinstance(v, nir.Input)).input_type.values()))))
    module = nirtorch.nir_to_torch(graph, _reference_map(nir, step))

    def run(x: torch.Tensor) -> torch.Tensor:
        seq = x.unsqueeze(0).expand(timesteps, *x.shape) if x.dim() == len(in_shape) + 1 else x
        state, outs = None, []
        with torch.no_grad():
            for t in range(seq.shape[0]):
                out, state = module(seq[t], state)
                outs.append(out)
        return torch.stack(outs)

    return run
