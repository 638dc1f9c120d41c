r"""``cifar_fast``: a small, fast CIFAR network family (airbench-style) in three forms from one
definition.

Layout (widths ``w0..w3``, default 32, 64, 128, 256; about 86 M multiply-accumulates per 32x32
image and step)::

    stem   conv3x3(3 -> w0) -> BN                                  (stateless: once per image)
    body   act
           3 x [ conv3x3 -> BN -> maxpool 2 -> act -> conv3x3 -> BN -> act ]   (w0->w1->w2->w3)
           flatten -> dropout -> linear(w3 x 4 x 4 -> classes) [-> x head_scale]

Pooling sits between BN and the activation, so the neurons of each block's first conv run at a
quarter of its resolution, and a BN folds into the conv before it across nothing.

* ``cifar_fast`` (SNN): ``act`` is the recipe's neuron (LIF, MT-LIF, ...), trained directly.
* ``cifar_fast_dnn`` (DNN for conversion): ``act`` is a :class:`~fewstep.models.dnn.ClippedReLU`
  (trainable ceiling ``mu``), BN kept for fast training.
* ``whiten = true`` (any form): the stem's 3x3 filters are set from the training images before
  training, airbench's patch whitening: the top ``w0 / 2`` eigenvectors of the covariance of the
  images' 3x3 patches, each scaled by ``1 / sqrt(eigenvalue + whiten_eps)`` and used with both
  signs, so the clipped ReLU or neuron after it passes each whitened direction once. The filters
  are then frozen in the DNN and the direct SNN (the BN after them still learns); the converted
  SNN receives them folded with that BN, as ordinary trainable weights. The engine calls
  :meth:`CifarFast.init_from_data` (see :func:`fewstep.train.engine.initialise_from_data`).
* ``dirac = true`` (any form): every body conv whose output is at least as wide as its input
  starts as an identity on its first ``c_in`` output channels (``torch.nn.init.dirac_``) and keeps
  its default random initialisation on the rest, airbench's implicit residual: the signal passes
  through a fresh network unchanged. An initialisation only; the converted SNN loads trained weights.
* ``head_scale`` (any form, default 1): a fixed factor on the logits, airbench's output scaling.
  The read-out sees ``w3 x 4 x 4`` flattened activations (4,096 at the default widths), so one SGD
  step on its weights moves the logits by ``lr x |a|^2`` times the gradient: at lr 0.1 the short
  warm-up blew the loss up above chance. Scaling the logits by ``s`` divides that step by ``s^2``
  (the same as a read-out learning rate ``s^2 x lr``) and leaves the rest of the network (BN,
  scale-free) as it was. :func:`fold_head_scale` multiplies it into the read-out's weights for the
  converted SNN, whose slot then holds ``nn.Identity``.
* ``cifar_fast_converted`` (its SNN): the same layers with each BN folded into the conv before it
  (the BN slots hold ``nn.Identity`` so parameter names line up) and every clipped ReLU a
  :class:`~fewstep.models.dnn.ConvertedIF`. :func:`fold_batchnorm` does the folding;
  ``fewstep convert`` calls it.

All three are :class:`~fewstep.models.base.SpikingModel` subclasses returning ``[T, B, classes]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import cast

import torch
from torch import nn

from ..errors import ConfigError
from ..layers import BatchNorm2d, Dropout, MaxPool2d, TimeFold
from ..neurons import NeuronSpec
from .base import SpikingModel
from .dnn import DEFAULT_SURROGATE_GAIN, ClippedReLU, _activation
from .registry import register_model
from .vgg import check_head_options, scale_channels

__all__ = ["CifarFast", "HeadScale", "cifar_fast_layers", "dirac_init", "fold_batchnorm", "fold_head_scale",
           "whitening_filters"]

DEFAULT_WIDTHS = (32, 64, 128, 256)
DEFAULT_WHITEN_EPS = 5e-4  # airbench's, for inputs normalised per channel


def _whitening_width_problem(out_channels: int, in_channels: int, kernel_size: int) -> str | None:
    """Why ``out_channels`` whitening filters cannot be made (``None`` if they can): two signs of at
    most ``in_channels * k * k`` patch directions."""
    dim = in_channels * kernel_size * kernel_size
    if out_channels % 2 or not 2 <= out_channels <= 2 * dim:
        return (f"whitening needs an even stem width between 2 and {2 * dim} (two signs of at most {dim} "
                f"directions of {in_channels}x{kernel_size}x{kernel_size} patches), got {out_channels}")
    return None


@torch.no_grad()
def whitening_filters(images: torch.Tensor, out_channels: int, kernel_size: int = 3,
                      eps: float = DEFAULT_WHITEN_EPS, chunk: int = 512) -> torch.Tensor:
    r"""Patch-whitening filters ``[out_channels, C, k, k]`` from ``images`` ``[N, C, H, W]``.

    With :math:`\Sigma = \frac{1}{P}\sum_p x_p x_p^\top` the second moment of all :math:`k \times k`
    patches :math:`x_p` and :math:`\Sigma = \sum_i \lambda_i e_i e_i^\top` its eigendecomposition
    (:math:`\lambda_1 \ge \lambda_2 \ge \dots`), the filters are

    .. math::

        w_i = \frac{e_i}{\sqrt{\lambda_i + \epsilon}}, \qquad
        W = [w_1, \dots, w_m, -w_1, \dots, -w_m], \qquad m = \text{out\_channels} / 2,

    so a convolution with them maps patches to unit-variance, decorrelated responses along the
    ``m`` leading directions (airbench's stem); both signs survive a rectifier. The moment is
    accumulated in float64 over chunks of ``chunk`` images; the eigenvector signs are made
    deterministic (largest-magnitude entry positive)."""
    if images.ndim != 4:
        raise ValueError(f"whitening_filters needs images [N, C, H, W], got shape {tuple(images.shape)}")
    n, c, h, w = images.shape
    dim = c * kernel_size * kernel_size
    problem = _whitening_width_problem(out_channels, c, kernel_size)
    if problem:
        raise ValueError(problem)
    if n == 0 or h < kernel_size or w < kernel_size:
        raise ValueError(f"whitening needs at least one image of at least {kernel_size}x{kernel_size}, "
                         f"got shape {tuple(images.shape)}")
    moment = torch.zeros(dim, dim, dtype=torch.float64)
    count = 0
    for start in range(0, n, chunk):
        x = images[start : start + chunk].detach().to("cpu", torch.float64)
        patches = torch.nn.functional.unfold(x, kernel_size).transpose(1, 2).reshape(-1, dim)  # [P, C*k*k]
        moment += patches.T @ patches
        count += patches.shape[0]
    eigenvalues, eigenvectors = torch.linalg.eigh(moment / count)  # ascending
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1).T  # rows: e_1, e_2, ...
    m = out_channels // 2
    top = eigenvectors[:m]
    signs = torch.sign(top.gather(1, top.abs().argmax(1, keepdim=True)))
    filters = top * signs / torch.sqrt(eigenvalues[:m].clamp_min(0) + eps)[:, None]
    filters = torch.cat([filters, -filters]).view(out_channels, c, kernel_size, kernel_size)
    return filters.to(images.dtype if images.is_floating_point() else torch.float32)


class HeadScale(nn.Module):
    """Multiply the logits by a fixed ``scale`` (kept as a buffer, so a checkpoint trained with one
    does not load silently into a model without it). A free operation: it folds into the linear
    read-out before it (:func:`fold_head_scale`)."""

    scale: torch.Tensor  # the buffer

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale

    def extra_repr(self) -> str:
        return f"scale={float(self.scale):g}"


def _check_head_scale(head_scale: object) -> float:
    if isinstance(head_scale, bool) or not isinstance(head_scale, (int, float)) or not (
            math.isfinite(head_scale) and head_scale > 0):
        raise ConfigError("model.options.head_scale", f"must be a finite number > 0, got {head_scale!r}")
    return float(head_scale)


def cifar_fast_layers(input_shape: tuple[int, ...], num_classes: int, act: Callable[[], nn.Module], *,
                      widths: Sequence[int] = DEFAULT_WIDTHS, width_mult: float = 1.0, bn: bool = True,
                      dropout: float = 0.0, head_scale: float = 1.0) -> tuple[nn.Module, nn.Module]:
    """``(stem, body)``; ``width_mult`` scales ``widths``; ``bn=False`` puts ``nn.Identity`` in every BN
    slot and biases in the convs, and (with ``head_scale != 1``) in the head-scale slot: the
    converted SNN, whose read-out carries the folded factor."""
    if len(input_shape) != 3:
        raise ConfigError("model.input_shape", f"needs (C, H, W), got {input_shape}")
    if isinstance(widths, (str, bytes)) or not hasattr(widths, "__len__"):
        raise ConfigError("model.options.widths", f"needs four positive channel counts, got {widths!r}")
    widths = [scale_channels(int(w), width_mult) if int(w) > 0 else int(w) for w in widths]
    if len(widths) != 4 or any(w < 1 for w in widths):
        raise ConfigError("model.options.widths", f"needs four positive channel counts, got {widths}")
    c, h, w = input_shape
    if h < 8 or w < 8:
        raise ConfigError("model.input_shape", f"{h}x{w} is too small for three 2x2 pools (needs >= 8x8)")
    check_head_options(dropout=dropout)
    head_scale = _check_head_scale(head_scale)

    def conv(c_in: int, c_out: int) -> nn.Conv2d:
        return nn.Conv2d(c_in, c_out, 3, padding=1, bias=not bn)

    def norm(ch: int) -> nn.Module:
        return BatchNorm2d(ch) if bn else nn.Identity()

    stem = nn.Sequential(conv(c, widths[0]), norm(widths[0]))
    layers: list[nn.Module] = [act()]
    for c_in, c_out in zip(widths[:-1], widths[1:]):
        layers += [TimeFold(conv(c_in, c_out), norm(c_out), MaxPool2d(2)), act(),
                   TimeFold(conv(c_out, c_out), norm(c_out)), act()]
    # Flatten (not global pooling): the read-out then takes spikes, so it accumulates (SOPs) in the
    # SNNs, and it is linear, so a conversion maps it exactly.
    head: list[nn.Module] = [nn.Flatten(), Dropout(dropout), nn.Linear(widths[-1] * (h // 8) * (w // 8), num_classes)]
    if head_scale != 1.0:  # no slot at 1: the state dicts of models without it are unchanged
        head.append(HeadScale(head_scale) if bn else nn.Identity())
    layers.append(TimeFold(*head))
    return stem, nn.Sequential(*layers)


class CifarFast(SpikingModel):
    """The ``cifar_fast`` family (see the module docstring); ``kind`` is ``snn``, ``dnn`` or
    ``converted``."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, timesteps: int, kind: str,
                 act: Callable[[], nn.Module], *, whiten: bool = False, whiten_eps: float = DEFAULT_WHITEN_EPS,
                 dirac: bool = False, **options) -> None:
        super().__init__(input_shape, num_classes, timesteps)
        self.kind = kind
        self.spiking = kind != "dnn"  # what fewstep.convert and the energy count read
        self.stem, self.body = cifar_fast_layers(input_shape, num_classes, act, bn=kind != "converted", **options)
        if not isinstance(whiten, bool):
            raise ConfigError("model.options.whiten", f"must be true or false, got {whiten!r}")
        if not (isinstance(whiten_eps, (int, float)) and math.isfinite(whiten_eps) and whiten_eps > 0):
            raise ConfigError("model.options.whiten_eps", f"must be a finite number > 0, got {whiten_eps!r}")
        self.whiten, self.whiten_eps = whiten, float(whiten_eps)
        if not isinstance(dirac, bool):
            raise ConfigError("model.options.dirac", f"must be true or false, got {dirac!r}")
        if dirac:
            dirac_init(self.body)
        stem_conv = cast(nn.Conv2d, cast(nn.Sequential, self.stem)[0])
        if whiten:
            problem = _whitening_width_problem(stem_conv.out_channels, stem_conv.in_channels,
                                               stem_conv.kernel_size[0])
            if problem:
                raise ConfigError("model.options.widths", f"whiten = true: {problem} (widths[0] is the stem width)")
            if kind != "converted":  # frozen, as in airbench; the converted SNN gets them folded with BN
                stem_conv.weight.requires_grad_(False)

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor) -> None:
        """Set the stem's filters to the patch whitening of ``images`` (normalised training images,
        ``[N, C, H, W]``) when the model was built with ``whiten = true``; otherwise nothing."""
        if not self.whiten or self.kind == "converted":
            return
        conv = cast(nn.Conv2d, cast(nn.Sequential, self.stem)[0])
        conv.weight.copy_(whitening_filters(images, conv.out_channels, conv.kernel_size[0], self.whiten_eps))


@torch.no_grad()
def dirac_init(module: nn.Module) -> int:
    """Set the first ``in_channels`` output filters of every 2-d convolution in ``module`` that is at
    least as wide out as in to the identity (the rest keep their values); returns how many convs."""
    count = 0
    for conv in module.modules():
        if isinstance(conv, nn.Conv2d) and conv.out_channels >= conv.in_channels and conv.groups == 1:
            nn.init.dirac_(conv.weight[: conv.in_channels])
            count += 1
    return count


def _fold_pairs(model: nn.Module, first: type[nn.Module], second: type[nn.Module],
                fold: Callable[[nn.Module, nn.Module, str], None]) -> nn.Module:
    """Call ``fold(a, b, name_of_b)`` for every ``first`` module directly followed by a ``second``
    module in a ``Sequential`` of ``model``, then put ``nn.Identity`` in ``b``'s place. In place."""
    for seq in model.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            mod_a, mod_b = seq._modules[a], seq._modules[b]
            if isinstance(mod_a, first) and isinstance(mod_b, second):
                fold(mod_a, mod_b, b)
                seq._modules[b] = nn.Identity()
    return model


def _fold_scale_into_linear(linear: nn.Module, head: nn.Module, _name: str) -> None:
    linear, head = cast(nn.Linear, linear), cast(HeadScale, head)
    linear.weight.mul_(head.scale)
    if linear.bias is not None:
        linear.bias.mul_(head.scale)


@torch.no_grad()
def fold_head_scale(model: nn.Module) -> nn.Module:
    """Multiply every :class:`HeadScale` that directly follows an ``nn.Linear`` in a ``Sequential``
    into that linear's weight and bias, and put ``nn.Identity`` in its place. In place; returns
    ``model``, which computes the same function."""
    return _fold_pairs(model, nn.Linear, HeadScale, _fold_scale_into_linear)


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every eval-mode ``BatchNorm2d`` that directly follows a ``Conv2d`` in a ``Sequential``
    into that conv (weight scaled by ``gamma / sigma``, bias ``beta - mean gamma / sigma``), and put
    ``nn.Identity`` in its place. In place; returns ``model``. The folded model computes the same
    function as the original in eval mode."""
    return _fold_pairs(model, nn.Conv2d, nn.BatchNorm2d, _fold_bn_into_conv)


def _fold_bn_into_conv(conv: nn.Module, bn: nn.Module, name: str) -> None:
    conv, bn = cast(nn.Conv2d, conv), cast(nn.BatchNorm2d, bn)
    if bn.running_mean is None:
        raise ValueError(f"cannot fold {name}: a BatchNorm2d without running statistics")
    scale = (cast(torch.Tensor, bn.running_var) + bn.eps).rsqrt()  # tracked with running_mean
    if bn.affine:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.affine:
        shift = shift + bn.bias
    weight = conv.weight * scale.view(-1, 1, 1, 1)
    bias = shift if conv.bias is None else conv.bias * scale + shift
    conv.weight.copy_(weight)
    if conv.bias is None:
        conv.bias = nn.Parameter(bias.clone())
    else:
        conv.bias.copy_(bias)


def _opts(kw: dict, extra: frozenset[str] = frozenset()) -> dict:
    unknown = set(kw) - {"widths", "width_mult", "dropout", "mu_init", "whiten", "whiten_eps", "head_scale",
                         "dirac"} - extra
    if unknown:
        raise ConfigError("model.options", f"cifar_fast models take widths, width_mult, dropout, whiten, whiten_eps, "
                                           f"head_scale, dirac "
                                           f"(mu_init for the DNN and its SNN, surrogate_gain for the converted "
                                           f"SNN); got {sorted(unknown)}")
    return {k: v for k, v in kw.items() if k not in ("mu_init", *extra)}


@register_model("cifar_fast")
def cifar_fast(*, num_classes: int, input_shape: tuple[int, ...], timesteps: int, neuron: NeuronSpec,
               **kw) -> CifarFast:
    """The directly trained SNN. Options: ``widths`` (four channel counts), ``width_mult``, ``dropout``,
    ``whiten`` (patch-whitening stem), ``whiten_eps``, ``head_scale`` (fixed logit factor)."""
    return CifarFast(input_shape, num_classes, timesteps, "snn", neuron.build, **_opts(kw))


@register_model("cifar_fast_dnn")
def cifar_fast_dnn(*, num_classes: int, input_shape: tuple[int, ...], timesteps: int, neuron=None,
                   **kw) -> CifarFast:
    """The DNN for conversion (clipped ReLUs, BN). Options: ``widths``, ``width_mult``, ``dropout``, ``mu_init``,
    ``whiten``, ``whiten_eps``, ``head_scale``."""
    mu = float(kw.get("mu_init", 4.0))
    if not mu > 0:
        raise ConfigError("model.options.mu_init", f"must be > 0, got {mu}")
    return CifarFast(input_shape, num_classes, timesteps, "dnn", lambda: ClippedReLU(mu), **_opts(kw))


@register_model("cifar_fast_converted")
def cifar_fast_converted(*, num_classes: int, input_shape: tuple[int, ...], timesteps: int, neuron=None,
                         **kw) -> CifarFast:
    """The SNN of ``cifar_fast_dnn``: BN folded into the convs, ``head_scale`` into the read-out,
    ConvertedIF neurons (same options, plus ``surrogate_gain``: 2, the default, is Datta and Beerel's
    derivative 1; 1 is the unit-area rectangle)."""
    act = _activation(True, 1.0, kw.get("surrogate_gain", DEFAULT_SURROGATE_GAIN))  # checks the gain
    return CifarFast(input_shape, num_classes, timesteps, "converted", act, **_opts(kw, frozenset({"surrogate_gain"})))
