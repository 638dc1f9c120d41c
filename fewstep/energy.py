r"""Operation and energy accounting for spiking networks (and their ANN equivalent).

One forward pass with hooks counts, per synaptic layer (``Conv1d/2d/3d``, ``Linear``), either

* **SOPs** (synaptic operations, accumulates) when the layer's actual input is spike-driven: every
  input value lies in ``{0, a, 2a, ..., K a}`` for the amplitude ``a`` and threshold count ``K``
  of a spiking neuron that has already fired in this pass. The count is exact: the number of
  multiply-accumulates the layer performs with non-zero inputs, each weighted by the spike count
  ``s / a`` (an MT-LIF count of 2 is 2 accumulates). For a convolution this is the sum of the
  same convolution run with all-ones weights and no bias on the spike counts, so padding borders
  and strides are accounted exactly; for ``Linear`` it is ``sum(s / a) * out_features``.
* **MACs** otherwise: the full dense cost, ``out elements * in_channels / groups * prod(kernel)``
  for a convolution and ``in_features * out_features`` per input row for ``Linear``.

Energy is ``MACs * E_MAC + SOPs * E_AC`` (methods.md, "Shared ground"), per sample.

Conventions (chosen to be conservative, i.e. to never flatter the SNN):

* **Direct encoding.** A :class:`~fewstep.models.base.SpikingModel` runs its stateless ``stem``
  once on a static batch and repeats the output over ``T`` steps. The equivalent SNN feeds the
  analog image at every step, so with ``direct_encoding_repeats=True`` (default, as in the
  literature) the stem's MACs are counted ``T`` times. ``False`` counts them once, which is what a
  device that caches the first layer's output (the input is constant) would pay. With sequence
  input ``[T, B, ...]`` the stem really runs on all ``T * B`` frames and is counted from its
  actual calls; its input (event frames / synaptic currents) comes from no neuron, so it is MACs.
* **Inputs not produced by a spiking neuron** (the model's ``stem`` and any layer that runs
  before the first neuron fires) are MACs even when they happen to be binary or
  integer (an image, an event-count frame): nothing guarantees a device sees them as spikes.
  ``input_as_spikes=True`` instead treats non-negative integer inputs of such layers as spike
  counts with amplitude 1 (some DVS papers count the first layer this way).
* **Sums of spike trains** (e.g. a residual add of two spike tensors giving 2 where ``K = 1``) or
  averaged spikes (average pooling) fail the value test and count as MACs.
* **Free operations** (0 ops): bias adds, batch-norm (folded into the preceding convolution at
  inference), pooling, dropout, flatten, neuron membrane updates and resets. Layers other than
  the synaptic types above (e.g. ``ConvTranspose``, or ``F.linear`` called inside
  ``MultiheadAttention``) are not seen by the hooks and count 0; a model relying on them needs
  this module extended.
* **ANN equivalent.** The same network with every synaptic layer a dense layer evaluated once per
  sample (``T = 1``, no spikes): each non-stem layer's dense MACs divided by ``T`` (every model
  evaluates its body once per step), the stem's dense MACs once. ``ratio = ann_energy /
  energy``; with direct encoding (stem repeated) it can never exceed ``ann_macs / (stem_macs * T)``
  (methods.md section 4, the first-layer bound), which holds exactly when later layers are silent.

A neuron's spike amplitude is its ``spike_amplitude`` attribute if it has one, else ``V_th``
when ``scale_output`` is set, else 1. Neuron spike rates are spikes (counts, so up to ``K``)
per neuron per time step.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from .neurons import SpikingNeuron, reset_net

__all__ = [
    "PRESETS",
    "EnergyConstants",
    "EnergyReport",
    "LayerOps",
    "NeuronActivity",
    "count_energy",
    "format_energy_table",
    "neuron_amplitude",
]

SYNAPTIC_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_CONV_FNS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_SPIKE_TOL = 1e-4  # |x / a - round(x / a)| allowed for a value to count as a spike count


@dataclass(frozen=True)
class EnergyConstants:
    """Energy per operation in picojoules: one multiply-accumulate and one accumulate."""

    e_mac_pj: float
    e_ac_pj: float

    def __post_init__(self) -> None:
        if self.e_mac_pj < 0 or self.e_ac_pj < 0:
            raise ValueError(f"energy constants must be non-negative, got {self}")


PRESETS: dict[str, EnergyConstants] = {
    # 45 nm CMOS (Horowitz, ISSCC 2014), 32-bit float and 32-bit integer.
    "45nm-float": EnergyConstants(e_mac_pj=4.6, e_ac_pj=0.9),
    "45nm-int": EnergyConstants(e_mac_pj=3.2, e_ac_pj=0.1),
}


@dataclass
class LayerOps:
    """Operations of one synaptic layer, per sample, summed over all its calls and time steps.

    ``kind`` is ``'sop'`` when every call was spike-driven, else ``'mac'`` (a layer with mixed
    calls carries both counts). ``dense_macs`` is what the
    layer would cost as dense MACs in this run (with the direct-encoding repeat), ``ann_macs``
    its cost in the ANN equivalent. ``input_spike_rate`` is the mean spike count per input
    element per step (spike-driven layers only). ``fan_out`` is the mean number of output
    neurons one input element reaches, i.e. the accumulates one unit spike causes on average over
    input positions (exact, fewer at padded borders; ``out_features`` for ``Linear``). Dense MACs
    count every output's full receptive field, padded zeros included (the usual MAC convention).
    ``repeats`` is ``T`` for a direct-encoded stem layer, else 1.
    """

    name: str
    type: str
    kind: str
    macs: float
    sops: float
    dense_macs: float
    ann_macs: float
    input_spike_rate: float | None
    fan_out: float
    calls: int
    repeats: int = 1


@dataclass
class NeuronActivity:
    """Output activity of one spiking-neuron layer: ``spike_rate`` is spikes per neuron per step."""

    name: str
    type: str
    spike_rate: float
    spikes_per_sample: float
    amplitude: float
    num_thresholds: int


@dataclass
class EnergyReport:
    """Totals per sample (MACs, SOPs, energy, ANN equivalent) with the per-layer breakdown."""

    macs: float
    sops: float
    energy_pj: float
    ann_macs: float
    ann_energy_pj: float
    ratio: float
    layers: list[LayerOps]
    neurons: list[NeuronActivity]
    preset: str
    e_mac_pj: float
    e_ac_pj: float
    timesteps: int
    batch_size: int
    direct_encoding_repeats: bool
    spike_rate_per_layer: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (an infinite ratio, i.e. zero SNN energy, becomes ``None``)."""
        return {
            "macs": self.macs,
            "sops": self.sops,
            "energy_pj": self.energy_pj,
            "ann_macs": self.ann_macs,
            "ann_energy_pj": self.ann_energy_pj,
            "ratio": self.ratio if math.isfinite(self.ratio) else None,
            "spike_rate_per_layer": dict(self.spike_rate_per_layer),
            "layers": [asdict(layer) for layer in self.layers],
            "neurons": [asdict(n) for n in self.neurons],
            "preset": self.preset,
            "e_mac_pj": self.e_mac_pj,
            "e_ac_pj": self.e_ac_pj,
            "timesteps": self.timesteps,
            "batch_size": self.batch_size,
            "direct_encoding_repeats": self.direct_encoding_repeats,
        }


def neuron_amplitude(neuron: nn.Module) -> float | None:
    """The value one spike takes at a neuron's output (``None`` if it is not a single scalar)."""
    amp = getattr(neuron, "spike_amplitude", None)
    if amp is None:
        # a neuron's threshold is a number or a one-element tensor (a buffer or parameter)
        amp = cast("float | torch.Tensor", neuron.threshold) if getattr(neuron, "scale_output", False) else 1.0
    if isinstance(amp, torch.Tensor):
        if amp.numel() != 1:
            return None
        amp = amp.detach().item()
    amp = float(amp)
    return amp if amp > 0 and math.isfinite(amp) else None


def _spike_counts(x: torch.Tensor, amp: float, k_max: int) -> torch.Tensor | None:
    """``x / amp`` as float64 counts if every value is a count in ``0..k_max``, else ``None``."""
    q = x.detach().to(torch.float64) / amp
    r = torch.round(q)
    if q.numel() and not bool(((r >= 0) & (r <= k_max) & ((q - r).abs() <= _SPIKE_TOL)).all()):
        return None
    return r


def _conv_accumulates(m: nn.modules.conv._ConvNd, q: torch.Tensor) -> float:
    """Exact accumulate count of conv ``m`` on spike counts ``q`` (batched, channels first).

    Equals ``conv(q, ones_weight, bias=None).sum()``; computed on the channel sum of each group
    with one all-ones filter per group (convolution is linear), then times the output channels
    per group, which is the same number at a fraction of the cost.
    """
    g = m.groups
    n, c = q.shape[:2]
    qg = q.reshape(n, g, c // g, *q.shape[2:]).sum(2)
    padding: Any = m.padding
    if m.padding_mode != "zeros":
        qg = F.pad(qg, m._reversed_padding_repeated_twice, mode=m.padding_mode)
        padding = 0
    w = torch.ones(g, 1, *m.kernel_size, dtype=qg.dtype, device=qg.device)
    y = _CONV_FNS[len(m.kernel_size)](qg, w, None, m.stride, padding, m.dilation, g)
    return float(y.sum().item()) * (m.out_channels // g)


@dataclass(eq=False)
class _LayerAcc:
    module: nn.Module
    calls: int = 0
    sop_calls: int = 0
    macs: float = 0.0
    sops: float = 0.0
    dense: float = 0.0  # dense MACs with the direct-encoding repeat
    ann: float = 0.0  # dense MACs of one evaluation per sample (ANN equivalent)
    spikes: float = 0.0
    spike_elements: int = 0
    repeats: int = 1
    fan_out: float | None = None


@dataclass(eq=False)
class _NeuronAcc:
    module: nn.Module
    amp: float | None
    k: int
    spikes: float = 0.0
    elements: int = 0


def _resolve_constants(preset: str | None, constants: EnergyConstants | None) -> tuple[str, EnergyConstants]:
    if constants is not None:
        return "custom", constants
    if preset is None or preset not in PRESETS:
        raise ValueError(f"unknown energy preset {preset!r}; known: {', '.join(PRESETS)} (or pass constants=)")
    return preset, PRESETS[preset]


def _resolve_layout(
    model: nn.Module, inputs: torch.Tensor, layout: str, timesteps: int | None
) -> tuple[str, int, int]:
    """``(layout, T, B)`` of ``inputs``: a static batch ``[B, ...]`` or a sequence ``[T, B, ...]``."""
    if layout == "auto":
        shape = getattr(model, "input_shape", None)
        layout = "sequence" if shape is not None and inputs.dim() == len(shape) + 2 else "static"
    if layout == "sequence":
        t_steps, batch = int(inputs.shape[0]), int(inputs.shape[1])
    elif layout == "static":
        if timesteps is None:  # the model's own T, else that of a DirectEncoding-like submodule
            found = (t for t in (getattr(m, "timesteps", None) for m in model.modules()) if isinstance(t, int))
            timesteps = next(found, 1)
        t_steps = int(timesteps)
        batch = int(inputs.shape[0])
    else:
        raise ValueError(f"layout must be 'auto', 'static' or 'sequence', got {layout!r}")
    if t_steps < 1 or batch < 1:
        raise ValueError(f"need T >= 1 and B >= 1, got T={t_steps}, B={batch}")
    return layout, t_steps, batch


class _EnergyCounter:
    """Forward hooks that tally, per synaptic layer and per neuron, what one pass costs.

    A synaptic layer whose input is a spike count of the neuron that ran last (``fired``) costs
    accumulates (SOPs), anything else costs MACs; stem layers run once on a static batch stand
    for ``T`` evaluations (direct encoding).
    """

    def __init__(self, model: nn.Module, *, t_steps: int, batch: int, static: bool,
                 direct_encoding_repeats: bool, input_as_spikes: bool) -> None:
        stem = getattr(model, "stem", None)
        self.input_ids = {id(m) for m in stem.modules()} if isinstance(stem, nn.Module) else set()
        self.stem_ids = self.input_ids if static else set()  # run once per sample: direct encoding
        self.t_steps, self.batch = t_steps, batch
        self.direct_encoding_repeats, self.input_as_spikes = direct_encoding_repeats, input_as_spikes
        self.layers: dict[str, _LayerAcc] = {}
        self.neurons: dict[str, _NeuronAcc] = {}
        self.fired: list[_NeuronAcc] = []  # neurons that have run in this pass, most recent last
        self.handles: list[Any] = []
        for name, m in model.named_modules():
            if isinstance(m, SYNAPTIC_TYPES):
                self.layers[name] = _LayerAcc(m)
                self.handles.append(m.register_forward_hook(self._layer_hook(self.layers[name])))
            elif isinstance(m, SpikingNeuron):
                self.neurons[name] = _NeuronAcc(m, neuron_amplitude(m), int(m.num_thresholds))
                self.handles.append(m.register_forward_hook(self._neuron_hook(self.neurons[name])))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()

    def _input_counts(self, m: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
        """``x`` as spike counts of the latest neuron that explains it (or of the input), else ``None``."""
        fed_by_input = id(m) in self.input_ids or not self.fired
        for cand in [] if fed_by_input else reversed(self.fired):
            if cand.amp is not None:
                q = _spike_counts(x, cand.amp, cand.k)
                if q is not None:
                    return q
        if self.input_as_spikes and fed_by_input:
            return _spike_counts(x, 1.0, torch.iinfo(torch.int64).max)
        return None

    def _layer_hook(self, acc: _LayerAcc):
        def hook(m: nn.Linear | nn.modules.conv._ConvNd, args: tuple, out: torch.Tensor) -> None:  # on SYNAPTIC_TYPES
            x = args[0]
            acc.calls += 1
            if isinstance(m, nn.Linear):
                dense = float(x.numel() // m.in_features) * m.in_features * m.out_features
                lead = x.shape[0] if x.dim() > 1 else 1
            else:
                dense = float(out.numel()) * (m.in_channels // m.groups) * math.prod(m.kernel_size)
                if x.dim() == len(m.kernel_size) + 1:  # unbatched conv input
                    x = x.unsqueeze(0)
                lead = x.shape[0]
            # A stem layer run once on the static batch stands for T evaluations (direct encoding).
            direct = id(m) in self.stem_ids and lead == self.batch
            repeats = self.t_steps if direct and self.direct_encoding_repeats else 1
            acc.repeats = max(acc.repeats, repeats)
            acc.dense += dense * repeats
            acc.ann += dense if direct else dense / self.t_steps
            if acc.fan_out is None:  # accumulates per element of an all-ones sample: exact mean fan-out
                if isinstance(m, nn.Linear):
                    acc.fan_out = float(m.out_features)
                else:
                    ones = torch.ones_like(x[:1], dtype=torch.float64)
                    acc.fan_out = _conv_accumulates(m, ones) / ones.numel()
            q = self._input_counts(m, x)
            if q is None:
                acc.macs += dense * repeats
                return
            sops = q.sum().item() * m.out_features if isinstance(m, nn.Linear) else _conv_accumulates(m, q)
            acc.sop_calls += 1
            acc.sops += sops * repeats
            acc.spikes += float(q.sum().item()) * repeats
            acc.spike_elements += x.numel() * repeats

        return hook

    def _neuron_hook(self, acc: _NeuronAcc):
        def hook(m: nn.Module, args: tuple, out: torch.Tensor) -> None:
            if acc in self.fired:
                self.fired.remove(acc)
            self.fired.append(acc)
            amp = acc.amp if acc.amp is not None else 1.0
            acc.spikes += float(out.detach().to(torch.float64).sum().item()) / amp
            acc.elements += out.numel()

        return hook

    def layer_ops(self) -> list[LayerOps]:
        """Per-sample operations of every synaptic layer that ran."""
        b = self.batch
        return [
            LayerOps(
                name=name, type=type(acc.module).__name__,
                kind="sop" if acc.sop_calls == acc.calls else "mac",
                macs=acc.macs / b, sops=acc.sops / b, dense_macs=acc.dense / b, ann_macs=acc.ann / b,
                input_spike_rate=acc.spikes / acc.spike_elements if acc.spike_elements else None,
                fan_out=acc.fan_out or 0.0, calls=acc.calls, repeats=acc.repeats,
            )
            for name, acc in self.layers.items()
            if acc.calls
        ]

    def activity(self) -> list[NeuronActivity]:
        """Spike rate and spikes per sample of every neuron that ran."""
        return [
            NeuronActivity(
                name=name, type=type(acc.module).__name__,
                spike_rate=acc.spikes / acc.elements if acc.elements else 0.0,
                spikes_per_sample=acc.spikes / self.batch,
                amplitude=acc.amp if acc.amp is not None else float("nan"),
                num_thresholds=acc.k,
            )
            for name, acc in self.neurons.items()
            if acc.elements
        ]


def _forward_once(model: nn.Module, inputs: torch.Tensor) -> None:
    """One eval-mode pass without gradients, neurons reset before and after, flags restored."""
    training = {m: m.training for m in model.modules()}
    try:
        model.eval()
        reset_net(model)
        with torch.no_grad():
            model(inputs)
    finally:
        for m, flag in training.items():
            m.training = flag
        reset_net(model)


def count_energy(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    preset: str | None = "45nm-float",
    constants: EnergyConstants | None = None,
    direct_encoding_repeats: bool = True,
    layout: Literal["auto", "static", "sequence"] = "auto",
    timesteps: int | None = None,
    input_as_spikes: bool = False,
) -> EnergyReport:
    """Count per-sample MACs, SOPs and energy of ``model`` on ``inputs`` (see module docstring).

    Runs one forward pass without gradients in eval mode (training flags restored afterwards),
    with every spiking neuron reset before and after. ``inputs`` is a static batch ``[B, ...]``
    (direct encoding, ``T = model.timesteps``) or a sequence ``[T, B, ...]``; ``layout='auto'``
    decides from ``model.input_shape`` when the model has one, otherwise assumes static input.
    ``constants`` overrides ``preset`` (the report then names the preset ``'custom'``);
    ``timesteps`` overrides ``T`` of static input (default: the first ``timesteps`` attribute found
    on the model or a submodule such as :class:`~fewstep.layers.DirectEncoding`, else 1).
    ``input_as_spikes`` counts integer inputs that no neuron produced as spikes (see above).
    """
    preset_name, const = _resolve_constants(preset, constants)
    resolved, t_steps, batch = _resolve_layout(model, inputs, layout, timesteps)
    counter = _EnergyCounter(model, t_steps=t_steps, batch=batch, static=resolved == "static",
                             direct_encoding_repeats=direct_encoding_repeats, input_as_spikes=input_as_spikes)
    try:
        _forward_once(model, inputs)
    finally:
        counter.remove()
    layer_ops, activity = counter.layer_ops(), counter.activity()
    macs = sum(lo.macs for lo in layer_ops)
    sops = sum(lo.sops for lo in layer_ops)
    ann_macs = sum(lo.ann_macs for lo in layer_ops)
    energy = macs * const.e_mac_pj + sops * const.e_ac_pj
    ann_energy = ann_macs * const.e_mac_pj
    ratio = ann_energy / energy if energy > 0 else (math.inf if ann_energy > 0 else math.nan)
    return EnergyReport(
        macs=macs, sops=sops, energy_pj=energy, ann_macs=ann_macs, ann_energy_pj=ann_energy, ratio=ratio,
        layers=layer_ops, neurons=activity, preset=preset_name, e_mac_pj=const.e_mac_pj,
        e_ac_pj=const.e_ac_pj, timesteps=t_steps, batch_size=batch,
        direct_encoding_repeats=direct_encoding_repeats,
        spike_rate_per_layer={n.name: n.spike_rate for n in activity},
    )


def _si(v: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.3f}{unit}"
    return f"{v:.4g}"


def format_energy_table(report: EnergyReport) -> str:
    """A plain-text table of the report: one row per synaptic layer, then neurons and totals."""
    rows = [("layer", "type", "kind", "MACs", "SOPs", "in rate", "fan-out", "energy pJ")]
    for lo in report.layers:
        rows.append((
            lo.name or "(model)", lo.type + (f" x{lo.repeats}" if lo.repeats > 1 else ""), lo.kind,
            _si(lo.macs), _si(lo.sops),
            "-" if lo.input_spike_rate is None else f"{lo.input_spike_rate:.4f}",
            f"{lo.fan_out:.4g}", _si(lo.macs * report.e_mac_pj + lo.sops * report.e_ac_pj),
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]

    def line(r: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    out = [line(rows[0]), "  ".join("-" * w for w in widths), *map(line, rows[1:])]
    if report.neurons:
        out.append("")
        nw = max(len("neuron"), *(len(n.name) for n in report.neurons))
        out.append(f"{'neuron'.ljust(nw)}  spike rate (spikes / neuron / step)")
        out.extend(f"{n.name.ljust(nw)}  {n.spike_rate:.4f}" for n in report.neurons)
    ratio = f"{report.ratio:.2f}x" if math.isfinite(report.ratio) else str(report.ratio)
    out += [
        "",
        f"per sample, T={report.timesteps}, preset {report.preset} "
        f"(E_MAC {report.e_mac_pj} pJ, E_AC {report.e_ac_pj} pJ)"
        + ("" if report.direct_encoding_repeats else ", stem counted once"),
        f"SNN: {_si(report.macs)} MACs + {_si(report.sops)} SOPs = {_si(report.energy_pj)} pJ",
        f"ANN: {_si(report.ann_macs)} MACs = {_si(report.ann_energy_pj)} pJ; ANN / SNN energy = {ratio}",
    ]
    return "\n".join(out)
