r"""DNNs built for DNN-to-SNN conversion, and the SNNs they convert into (methods.md section 4).

Two families share one layer layout, so a DNN's weights load into its SNN unchanged:

* ``*_dnn`` (``small_cnn_dnn``, ``vgg11_dnn``, ``vgg16_dnn``): no batch-norm, every activation a
  :class:`ClippedReLU` ``min(max(x, 0), mu_l)`` with a trainable per-layer ceiling ``mu_l``
  (init 4.0), dropout, biases 0; He initialisation (see :func:`init_weights`: without BN the
  forward signal must keep its scale through 13 layers).
* ``*_converted`` (``small_cnn_converted``, ``vgg11_converted``, ``vgg16_converted``): the same
  layers with every clipped ReLU replaced by a :class:`ConvertedIF` neuron,

  .. math::

      u_0 = \theta V,\qquad u_t = \lambda\,u_{t-1} + x_t,\qquad s_t = H(u_t / V - 1),\qquad
      u_t \leftarrow u_t - s_t V,\qquad \text{out}_t = A\,s_t,\quad A = b\,V,

  with a trainable threshold ``V`` (``= a * mu`` after conversion), a trainable leak ``lambda``
  (init 1, kept in ``(0, 1]``), a fixed amplitude ratio ``b`` and initial membrane fraction
  ``theta`` (buffers; ``theta = 0`` in the reconstruction, ``fewstep convert --initial-membrane``
  sets it). The last layer is a plain linear layer: its per-step outputs are the membrane
  increments of a non-spiking read-out, so the mean of the first ``t`` outputs (what
  :func:`fewstep.train.engine.evaluate` scores) is its accumulated membrane divided by ``t``.

Both are :class:`~fewstep.models.base.SpikingModel`\ s: the first convolution (and its pooling)
is the stateless ``stem``, so the first layer of the SNN receives the analog image at every step
(direct encoding). A DNN is a ``T = 1`` network: recipes set ``model.timesteps = 1`` and it
returns ``[1, B, classes]``; a larger ``timesteps`` only repeats the same evaluation (identical
outputs in eval mode), it is accepted so that generic model code works unchanged.

Layout differences from the BN counterparts (``small_cnn``, ``vgg11``, ``vgg16``): no BN,
biases in every conv/linear, and the 2x2 pooling sits *before* the activation
(``conv -> pool -> act``). For max pooling that is the same DNN function (ReLU and clipping are
monotone); average pooling (the default, ``pool="avg"``) is linear, so in the SNN it acts on
membrane currents exactly, and every spiking layer's output feeds the next synaptic layer as
spikes (counted as accumulates by :mod:`fewstep.energy`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ..layers import Dropout, MaxPool2d, TimeFold
from ..neurons import NeuronParams, SpikingNeuron
from .base import SpikingModel
from .registry import register_model
from .vgg import VGG_CONFIGS, check_head_options, scale_channels

#: ConvertedIF's surrogate gain: derivative 1 on ``|u / V - 1| < 1``, Datta and Beerel's.
DEFAULT_SURROGATE_GAIN = 2.0
LEAK_MIN = 1e-3  # the smallest leak a ConvertedIF uses (the parameter may wander below; its value is clamped)

POOLS = {"max": MaxPool2d, "avg": nn.AvgPool2d}
CLASSIFIERS = ("gap", "flatten")

# DNN model name -> the registered SNN it converts into.
CONVERTED_NAMES = {
    "cifar_fast_dnn": "cifar_fast_converted",  # BN folded into the convs by fewstep.convert (cifar_fast.py)
    "small_cnn_dnn": "small_cnn_converted",
    "vgg11_dnn": "vgg11_converted",
    "vgg16_dnn": "vgg16_converted",
}


class ClippedReLU(nn.Module):
    """``min(max(x, 0), mu)`` with a trainable ceiling ``mu`` (one scalar per layer).

    ``mu`` receives the gradient of the inputs above it (as in PACT); it is a 0-d parameter, so
    the training engine puts it in the no-weight-decay group.
    """

    def __init__(self, mu: float = 4.0) -> None:
        super().__init__()
        if not mu > 0:
            raise ValueError(f"the clipping ceiling mu must be positive, got {mu}")
        self.mu = nn.Parameter(torch.tensor(float(mu)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.minimum(x.clamp(min=0), self.mu)

    def extra_repr(self) -> str:
        return f"mu={float(self.mu.detach()):.4g}"


def _clamp_straight_through(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """``x`` clamped to ``[lo, hi]`` in the forward pass, identity gradient in the backward pass
    (a clamped parameter can come back into range)."""
    return x + (x.clamp(lo, hi) - x).detach()


class ConvertedIF(SpikingNeuron):
    r"""The IF neuron of a converted SNN (see the module docstring for the equations).

    * ``threshold`` (parameter): ``V``; the spike test is ``H(u / V - 1)`` whose backward pass is
      a rectangle on ``u / V - 1``: derivative ``surrogate_gain / 2`` where ``|u / V - 1| < 1``,
      0 elsewhere. The default ``surrogate_gain = 2`` gives derivative 1 there, the authors'
      (Datta and Beerel's code); ``surrogate_gain = 1`` is fewstep's unit-area rectangle of
      width 1 (derivative ``1/2``), what fewstep used before.
    * ``leak`` (parameter, init 1): the membrane decay ``lambda``, used clamped to
      ``[LEAK_MIN, 1]`` with a straight-through gradient (``decay`` returns the used value).
      :class:`~fewstep.neurons.SpikingNeuron`'s own learnable decay is ``sigmoid(w) < 1`` and
      cannot start at 1, hence this parameter.
    * ``amplitude_ratio`` (buffer): ``b``; a spike's value is ``spike_amplitude = b * V``, which
      :mod:`fewstep.energy` reads to recognise the spikes.
    * ``initial_membrane`` (buffer): ``theta`` in ``[0, 1)``; the membrane starts each sample at
      ``theta * V`` (0 by default).

    Soft reset by subtraction of ``V``; the reset uses the detached spike (the threshold still
    gets the gradient of the subtraction), as in Rathi et al.'s hybrid-SNN code.
    """

    # buffers registered in __init__, typed for mypy past nn.Module.__getattr__
    amplitude_ratio: torch.Tensor
    initial_membrane: torch.Tensor

    def __init__(self, v_threshold: float = 1.0, amplitude_ratio: float = 1.0, leak: float = 1.0,
                 initial_membrane: float = 0.0, *, learnable_leak: bool = True,
                 surrogate_gain: float = DEFAULT_SURROGATE_GAIN, step_mode: str = "m") -> None:
        super().__init__(decay=1.0, v_threshold=v_threshold, learnable_threshold=True, reset="soft",
                         surrogate="rectangle", width=1.0, detach_reset=True, step_mode=step_mode)
        if not (isinstance(surrogate_gain, (int, float)) and not isinstance(surrogate_gain, bool)
                and surrogate_gain > 0):
            raise ValueError(f"surrogate_gain must be a positive number, got {surrogate_gain!r}")
        self.surrogate_gain = float(surrogate_gain)
        if not 0.0 < leak <= 1.0:
            raise ValueError(f"leak must be in (0, 1], got {leak}")
        if not amplitude_ratio > 0:
            raise ValueError(f"amplitude_ratio must be positive, got {amplitude_ratio}")
        if not 0.0 <= initial_membrane < 1.0:
            raise ValueError(f"initial_membrane must be in [0, 1), got {initial_membrane}")
        self.leak = nn.Parameter(torch.tensor(float(leak)), requires_grad=learnable_leak)
        self.register_buffer("amplitude_ratio", torch.tensor(float(amplitude_ratio)))
        self.register_buffer("initial_membrane", torch.tensor(float(initial_membrane)))

    @property
    def decay(self) -> torch.Tensor:
        return _clamp_straight_through(self.leak, LEAK_MIN, 1.0)

    @property
    def spike_amplitude(self) -> torch.Tensor:
        """``A = b * V``: the value one spike takes at this neuron's output."""
        return self.amplitude_ratio * self.threshold

    def set_factors(self, v_threshold: float, amplitude_ratio: float, leak: float = 1.0,
                    initial_membrane: float = 0.0) -> None:
        """Set ``V``, ``b``, the leak and ``theta`` (e.g. to the factors a conversion chose)."""
        if not (v_threshold > 0 and amplitude_ratio > 0 and 0 < leak <= 1 and 0 <= initial_membrane < 1):
            raise ValueError(f"need V > 0, b > 0, leak in (0, 1] and initial_membrane in [0, 1); got "
                             f"{v_threshold}, {amplitude_ratio}, {leak}, {initial_membrane}")
        with torch.no_grad():
            self.threshold.fill_(float(v_threshold))
            self.amplitude_ratio.fill_(float(amplitude_ratio))
            self.leak.fill_(float(leak))
            self.initial_membrane.fill_(float(initial_membrane))

    def params(self) -> NeuronParams:
        """The spike dynamics as the functional core would see them (output scaling by ``A`` and
        the initial membrane excluded)."""
        return NeuronParams(decay=self.decay, v_threshold=self.threshold, reset="soft", surrogate=self.surrogate,
                            detach_reset=True, scale_output=False)

    def _spike(self, x: torch.Tensor) -> torch.Tensor:
        """``H(x)`` with the rectangle surrogate scaled by ``surrogate_gain`` (forward unchanged:
        ``s - s.detach()`` is exactly 0)."""
        s = self.surrogate(x)
        if self.surrogate_gain != 1.0:
            s = s + (self.surrogate_gain - 1.0) * (s - s.detach())
        return s

    def _step(self, x: torch.Tensor, v: torch.Tensor, lam: torch.Tensor, vth: torch.Tensor):
        h = lam * v + x
        s = self._spike(h / vth - 1.0)
        return s, h, h - s.detach() * vth

    def membrane_after_reset(self) -> torch.Tensor | None:
        """``u_t = h_t - s_t V`` from the records (the output is ``A s_t``; the reset uses the
        detached spike, as the dynamics do)."""
        out, h = self.last_spikes, self.last_membrane
        if out is None or h is None:
            return None
        vth = self.threshold.clamp(min=1e-6)
        return h - (out / (self.amplitude_ratio * vth)).detach() * vth

    def _v0(self, x: torch.Tensor, vth: torch.Tensor) -> torch.Tensor:
        if float(self.initial_membrane) == 0.0:
            return torch.zeros_like(x)
        return (self.initial_membrane * vth).to(x.dtype).expand_as(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lam = self.decay
        vth = self.threshold.clamp(min=1e-6)
        amp = self.amplitude_ratio * vth
        if self.step_mode == "s":
            v = self._v0(x, vth) if self.v is None else self.v
            s, h, self.v = self._step(x, v, lam, vth)
            out = s * amp
            if self.record:
                self.last_spikes, self.last_membrane = out, h
            return out
        if x.dim() < 2 or x.shape[0] == 0:
            raise ValueError(f"expected a time-major tensor [T, B, ...] with T >= 1, got shape {tuple(x.shape)}")
        v = self.v if (self.keep_state and self.v is not None) else self._v0(x[0], vth)
        spikes, membranes = [], []
        for t in range(x.shape[0]):
            s, h, v = self._step(x[t], v, lam, vth)
            spikes.append(s)
            membranes.append(h)
        out = torch.stack(spikes) * amp
        if self.keep_state:
            self.v = v
        if self.record:
            self.last_spikes, self.last_membrane = out, torch.stack(membranes)
        return out

    def extra_repr(self) -> str:
        return (f"V={float(self.threshold.detach()):.4g}, b={float(self.amplitude_ratio):.4g}, "
                f"leak={float(self.decay.detach()):.4g}, initial_membrane={float(self.initial_membrane):.3g}, "
                f"step_mode={self.step_mode}")


Activation = Callable[[], nn.Module]
LayerCfg = Sequence[int | str]


def _conv(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1, bias=True)


def init_weights(model: nn.Module) -> None:
    """Zero biases; He-normal convolutions (fan-in, ReLU gain), which keep the pre-activation scale
    from layer to layer without BN; a convolution whose output is ``k x k`` average-pooled before
    its activation starts with ``k`` times that std (pooling ``k^2`` roughly independent values
    divides the std by ``k``; measured on vgg16_dnn at init, the last pre-activation std is 0.4
    with the correction and 0.01 without). Linear layers: the hidden ones He-normal (fan-in), the
    classifier ``N(0, 0.01)``."""
    for seq in model.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        mods = list(seq)
        for m, nxt in zip(mods, mods[1:] + [None]):
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if isinstance(nxt, nn.AvgPool2d):
                    k = nxt.kernel_size if isinstance(nxt.kernel_size, int) else nxt.kernel_size[0]
                    with torch.no_grad():
                        m.weight.mul_(float(k))
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    for i, m in enumerate(linears):
        if i == len(linears) - 1:
            nn.init.normal_(m.weight, 0.0, 0.01)
        else:
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
            nn.init.zeros_(m.bias)


class ConvertibleNet(SpikingModel):
    """A stem and a body of alternating stateless groups and activations (clipped ReLUs for a
    DNN, :class:`ConvertedIF` neurons for its SNN). ``spiking`` says which."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, timesteps: int, stem: nn.Module,
                 body: nn.Module, spiking: bool) -> None:
        super().__init__(input_shape, num_classes, timesteps)
        self.stem = stem
        self.body = body
        self.spiking = spiking
        init_weights(self)


def _check_common(input_shape: tuple[int, ...], pool: str, dropout: float, mu_init: float) -> None:
    if len(input_shape) != 3:
        raise ConfigError("model.input_shape", f"needs (C, H, W), got {input_shape}")
    check_head_options(pool=pool, dropout=dropout)
    if not mu_init > 0:
        raise ConfigError("model.options.mu_init", f"must be > 0, got {mu_init}")


def small_cnn_layers(input_shape: tuple[int, ...], num_classes: int, act: Activation, *,
                     channels: Sequence[int] = (32, 64), hidden: int = 128, dropout: float = 0.0,
                     pool: str = "avg", mu_init: float = 4.0) -> tuple[nn.Module, nn.Module]:
    """``(stem, body)`` of the small CNN: conv[-pool]-act x2, FC-act, FC (pools when >= 16 px)."""
    _check_common(tuple(input_shape), pool, dropout, mu_init)
    c, h, w = input_shape
    c1, c2 = (int(v) for v in channels)
    pools = h >= 16
    p = [POOLS[pool](2)] if pools else []
    side_h, side_w = (h // 4, w // 4) if pools else (h, w)
    stem = nn.Sequential(_conv(c, c1), *p)
    p = [POOLS[pool](2)] if pools else []
    body = nn.Sequential(
        act(),
        TimeFold(_conv(c1, c2), *p),
        act(),
        TimeFold(nn.Flatten(), Dropout(dropout), nn.Linear(c2 * side_h * side_w, hidden)),
        act(),
        TimeFold(nn.Linear(hidden, num_classes)),
    )
    return stem, body


def vgg_layers(input_shape: tuple[int, ...], num_classes: int, act: Activation, cfg: LayerCfg, *,
               pool: str = "avg", classifier: str = "gap", dropout: float = 0.0, width_mult: float = 1.0,
               mu_init: float = 4.0) -> tuple[nn.Module, nn.Module]:
    """``(stem, body)`` of a VGG: every conv (with the 2x2 pool that follows it in ``cfg``) then an
    activation; then global average pooling (or flatten), dropout and a linear classifier."""
    _check_common(tuple(input_shape), pool, dropout, mu_init)
    check_head_options(classifier=classifier)
    cfg = list(cfg)
    if not cfg or not isinstance(cfg[0], int):
        raise ConfigError("model.options.cfg", f"must start with a conv width, got {cfg[:1]}")
    c, h, w = input_shape
    n_pools = sum(1 for v in cfg if v == "M")
    if h >> n_pools < 1 or w >> n_pools < 1:
        raise ConfigError("model.input_shape", f"{h}x{w} is too small for {n_pools} 2x2 pools "
                                               f"(needs at least {2 ** n_pools}x{2 ** n_pools}); pass a shorter "
                                               "model.options.cfg")
    groups: list[list[nn.Module]] = []
    width = c
    for v in cfg:
        if v == "M":
            groups[-1].append(POOLS[pool](2))
        elif isinstance(v, int) and not isinstance(v, bool) and v > 0:
            out = scale_channels(v, width_mult)
            groups.append([_conv(width, out)])
            width = out
        else:
            raise ConfigError("model.options.cfg", f"entries must be positive ints or 'M', got {v!r}")
    stem = nn.Sequential(*groups[0])
    features: list[nn.Module] = [act()]
    for g in groups[1:]:
        features += [TimeFold(*g), act()]
    if classifier == "gap":
        head: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        in_features = width
    else:
        head = [nn.Flatten()]
        in_features = width * (h >> n_pools) * (w >> n_pools)
    head += [Dropout(dropout), nn.Linear(in_features, num_classes)]
    body = nn.Sequential(OrderedDict(features=nn.Sequential(*features), classifier=TimeFold(*head)))
    return stem, body


def _activation(spiking: bool, mu_init: float, surrogate_gain: float = DEFAULT_SURROGATE_GAIN) -> Activation:
    """Factory of the activations: :class:`ConvertedIF` (SNN) or :class:`ClippedReLU` (DNN)."""
    if not spiking:
        return lambda: ClippedReLU(mu_init)
    try:
        ConvertedIF(surrogate_gain=surrogate_gain)
    except ValueError as exc:
        raise ConfigError("model.options.surrogate_gain", str(exc)) from None
    return lambda: ConvertedIF(surrogate_gain=surrogate_gain)


def _small_cnn(spiking: bool, num_classes: int, input_shape: tuple[int, ...], timesteps: int,
               surrogate_gain: float = DEFAULT_SURROGATE_GAIN, **kw) -> ConvertibleNet:
    act = _activation(spiking, kw.get("mu_init", 4.0), surrogate_gain)
    stem, body = small_cnn_layers(input_shape, num_classes, act, **kw)
    return ConvertibleNet(input_shape, num_classes, timesteps, stem, body, spiking)


def _vgg(name: str, spiking: bool, num_classes: int, input_shape: tuple[int, ...], timesteps: int,
         cfg: LayerCfg | None = None, surrogate_gain: float = DEFAULT_SURROGATE_GAIN, **kw) -> ConvertibleNet:
    layers = VGG_CONFIGS[name] if cfg is None else cfg
    act = _activation(spiking, kw.get("mu_init", 4.0), surrogate_gain)
    stem, body = vgg_layers(input_shape, num_classes, act, layers, **kw)
    return ConvertibleNet(input_shape, num_classes, timesteps, stem, body, spiking)


# The factories accept ``neuron`` (the registry always passes one) and ignore it: a DNN has no
# neurons and a converted SNN always uses ConvertedIF.

@register_model("small_cnn_dnn")
def small_cnn_dnn(*, num_classes: int, input_shape: tuple[int, ...], timesteps: int, neuron=None,
                  **kw) -> ConvertibleNet:
    """Small CNN DNN for conversion. Options: ``channels``, ``hidden``, ``dropout``, ``pool``
    (``avg``/``max``), ``mu_init``."""
    return _small_cnn(False, num_classes, input_shape, timesteps, **kw)


@register_model("vgg11_dnn")
def vgg11_dnn(*, num_classes: int, input_shape: tuple[int, ...], timesteps: int, neuron=None,
              **kw) -> ConvertibleNet:
    """VGG-11 DNN for conversion. Options: ``pool``, ``classifier``, ``dropout``, ``width_mult``,
    ``mu_init``, ``cfg`` (replaces the layer list, e.g. for 28x28 inputs)."""
    return _vgg("vgg11", False, num_classes, input_shape, timesteps, **kw)


@register_model("vgg16_dnn")
def vgg16_dnn(*, num_classes: int, input_shape: tuple[int, ...], timesteps: int, neuron=None,
              **kw) -> ConvertibleNet:
    """VGG-16 DNN for conversion (options as ``vgg11_dnn``)."""
    return _vgg("vgg16", False, num_classes, input_shape, timesteps, **kw)


@register_model("small_cnn_converted")
def small_cnn_converted(*, num_classes: int, input_shape: tuple[int, ...], timesteps: int, neuron=None,
                        **kw) -> ConvertibleNet:
    """The SNN of ``small_cnn_dnn`` (same options; ``mu_init`` is ignored; ``surrogate_gain``, default
    2, scales the neurons' surrogate, see :class:`ConvertedIF`)."""
    return _small_cnn(True, num_classes, input_shape, timesteps, **kw)


@register_model("vgg11_converted")
def vgg11_converted(*, num_classes: int, input_shape: tuple[int, ...], timesteps: int, neuron=None,
                    **kw) -> ConvertibleNet:
    """The SNN of ``vgg11_dnn`` (same options, and ``surrogate_gain``)."""
    return _vgg("vgg11", True, num_classes, input_shape, timesteps, **kw)


@register_model("vgg16_converted")
def vgg16_converted(*, num_classes: int, input_shape: tuple[int, ...], timesteps: int, neuron=None,
                    **kw) -> ConvertibleNet:
    """The SNN of ``vgg16_dnn`` (same options, and ``surrogate_gain``)."""
    return _vgg("vgg16", True, num_classes, input_shape, timesteps, **kw)
