r"""Per-layer conversion factors ``(a_l, b_l)``: threshold ``V = a * mu``, spike amplitude ``A = b * V``.

**Reconstruction** (methods.md section 4; the paper's exact objective and search are not public
in this form). An IF neuron with soft reset, threshold ``V``, membrane starting at 0 and a
constant input current ``x`` fires ``clip(floor(T x / V), 0, T)`` spikes in ``T`` steps, so with
spike amplitude ``A`` its average output is the staircase

.. math::

    s_T(x; a, b) = \frac{A}{T}\,\mathrm{clip}\!\left(\left\lfloor \frac{T x}{V} \right\rfloor, 0, T\right),
    \qquad V = a\,\mu,\ A = b\,V .

(exact for the first layer, which receives the constant analog image; for later layers, whose
input is a spike train, it is the usual rate approximation.)

**Extension, off by default** (not part of methods.md's reconstruction): a membrane starting at
``theta * V`` (``initial_membrane = theta``; ``theta = 1/2`` as in Bu et al., ICLR 2022) turns the
floor into ``floor(T x / V + theta)``; every function here takes ``initial_membrane`` and the
converted neuron starts from ``theta * V``. At ``theta = 1/2`` each layer fires up to half a step
earlier, which matters in deep networks at ``T = 2`` (see the conversion docs for numbers).

The distribution-aware factors
minimise the expected squared error to the DNN activation over the layer's pre-activation
histogram ``p`` (bin centres ``x_i``, masses ``p_i``):

.. math::

    E(a, b) = \sum_i p_i \big(\mathrm{clip}(x_i, 0, \mu) - s_T(x_i; a, b)\big)^2 .

For fixed ``a`` the error is quadratic in ``b``, so ``b`` is solved in closed form,
``b^*(a) = \sum p\,y\,q / \sum p\,q^2`` with ``y = clip(x, 0, mu)`` and ``q = s_T(x; a, 1)``;
``a`` is searched on a grid over ``(0, max(1, 1.05 x_max / mu)]`` (all grid points at once, one
``[grid, bins]`` tensor) and refined by repeated finer grids around the best point.

**Baselines** (threshold balancing, Diehl et al. 2015 / Rueckauer et al. 2017): the threshold
is the largest activation, or its 99.9th percentile, and one spike carries the threshold
(``A = V``, ``b = 1``). The DNN's activations are ``clip(x, 0, mu)``, so the largest activation
is ``min(max x, mu)``; the percentile is taken over the positive pre-activations and likewise
capped at ``mu``. In the ``(a, b)`` notation these are ``a = theta / mu, b = 1``; ``clip`` is
``a = b = 1`` (``V = A = mu``), the plain "assume uniform on [0, mu]" conversion.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from .histograms import LayerHistogram

METHODS = ("dist", "max", "p99.9", "clip")


@dataclass(frozen=True)
class LayerFactors:
    """The conversion of one layer: ``V = a * mu``, ``A = b * V``; ``error`` is the expected
    squared error ``E(a, b)`` on the layer's histogram at ``timesteps``."""

    name: str
    method: str
    timesteps: int
    mu: float
    a: float
    b: float
    error: float
    initial_membrane: float = 0.0

    @property
    def v_threshold(self) -> float:
        return self.a * self.mu

    @property
    def amplitude(self) -> float:
        return self.b * self.a * self.mu

    def to_dict(self) -> dict:
        return {**asdict(self), "V": self.v_threshold, "A": self.amplitude}


def staircase(x: torch.Tensor, v_threshold: float | torch.Tensor, amplitude: float | torch.Tensor,
              timesteps: int, initial_membrane: float = 0.0) -> torch.Tensor:
    """``s_T(x) = (A / T) * clip(floor(T x / V + theta), 0, T)``: the average output of a soft-reset
    IF neuron over ``T`` steps of constant input ``x``, membrane starting at ``theta * V``
    (``theta = initial_membrane``, 0 in the reconstruction)."""
    count = torch.floor(timesteps * x / v_threshold + initial_membrane)
    return amplitude / timesteps * torch.clamp(count, 0, timesteps)


def _check_theta(initial_membrane: float) -> None:
    if not 0.0 <= initial_membrane < 1.0:
        raise ValueError(f"initial_membrane must be in [0, 1), got {initial_membrane}")


def _moments(hist: LayerHistogram, a: torch.Tensor, timesteps: int, initial_membrane: float = 0.0):
    """For every ``a`` (``[G]``): ``sum p y q``, ``sum p q^2`` with ``q = s_T(x; a, 1)``, and ``sum p y^2``."""
    x = hist.centers()
    p = hist.probabilities()
    y = x.clamp(max=hist.mu)
    v = (a * hist.mu)[:, None]  # [G, 1]
    q = staircase(x[None, :], v, v, timesteps, initial_membrane)  # [G, bins]
    pq = p * q
    return (pq * y).sum(1), (pq * q).sum(1), float((p * y * y).sum())


def expected_error(hist: LayerHistogram, a: float | torch.Tensor, b: float | torch.Tensor,
                   timesteps: int, initial_membrane: float = 0.0) -> torch.Tensor:
    """``E(a, b)`` on the histogram (broadcasts over tensors of ``a`` and ``b``)."""
    a_t = torch.as_tensor(a, dtype=torch.float64).reshape(-1)
    b_t = torch.as_tensor(b, dtype=torch.float64).reshape(-1)
    syq, sqq, syy = _moments(hist, a_t, timesteps, initial_membrane)
    err = syy - 2 * b_t * syq + b_t * b_t * sqq
    return err.clamp(min=0.0).reshape(torch.broadcast_shapes(torch.as_tensor(a).shape, torch.as_tensor(b).shape))


def _best_b(syq: torch.Tensor, sqq: torch.Tensor, syy: float) -> tuple[torch.Tensor, torch.Tensor]:
    ok = sqq > 0
    b = torch.where(ok, syq / sqq.clamp(min=1e-300), torch.ones_like(sqq))
    b = b.clamp(min=1e-6)  # an amplitude must stay positive (b* < 0 cannot happen with y, q >= 0)
    err = (syy - 2 * b * syq + b * b * sqq).clamp(min=0.0)
    return b, err


def fit_distribution_aware(hist: LayerHistogram, timesteps: int, initial_membrane: float = 0.0, *,
                           grid: int = 256, refine_rounds: int = 4, refine_points: int = 64) -> LayerFactors:
    """The ``(a, b)`` minimising ``E(a, b)`` for ``timesteps`` (grid search + local refinement)."""
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}")
    _check_theta(initial_membrane)
    mu, theta = hist.mu, initial_membrane
    if float(hist.counts.sum()) <= 0:  # a dead layer: any factors give zero error
        return LayerFactors(hist.name, "dist", timesteps, mu, 1.0, 1.0, 0.0, theta)
    a_hi = max(1.0, 1.05 * hist.x_max / mu)
    a = torch.linspace(a_hi / grid, a_hi, grid, dtype=torch.float64)
    b, err = _best_b(*_moments(hist, a, timesteps, theta))
    i = int(torch.argmin(err))
    best = (float(a[i]), float(b[i]), float(err[i]))
    step = float(a[1] - a[0]) if grid > 1 else a_hi
    for _ in range(refine_rounds):
        lo_a, hi_a = max(best[0] - step, 1e-6), best[0] + step
        a = torch.linspace(lo_a, hi_a, refine_points, dtype=torch.float64)
        b, err = _best_b(*_moments(hist, a, timesteps, theta))
        i = int(torch.argmin(err))
        if float(err[i]) <= best[2]:
            best = (float(a[i]), float(b[i]), float(err[i]))
        step = (hi_a - lo_a) / (refine_points - 1)
    return LayerFactors(hist.name, "dist", timesteps, mu, best[0], best[1], best[2], theta)


def _balanced(hist: LayerHistogram, timesteps: int, method: str, level: float,
              initial_membrane: float) -> LayerFactors:
    _check_theta(initial_membrane)
    level = min(level, hist.mu)
    if not level > 0 or not math.isfinite(level):
        level = hist.mu  # a layer that never fires: keep V = mu
    a = level / hist.mu
    err = float(expected_error(hist, a, 1.0, timesteps, initial_membrane))
    return LayerFactors(hist.name, method, timesteps, hist.mu, a, 1.0, err, initial_membrane)


def fit_max(hist: LayerHistogram, timesteps: int, initial_membrane: float = 0.0) -> LayerFactors:
    """Max-activation threshold balancing: ``V = A = min(max x, mu)``."""
    return _balanced(hist, timesteps, "max", hist.x_max, initial_membrane)


def fit_percentile(hist: LayerHistogram, timesteps: int, initial_membrane: float = 0.0,
                   q: float = 99.9) -> LayerFactors:
    """Robust threshold balancing: ``V = A = min(p_q(x > 0), mu)`` (Rueckauer et al.)."""
    return _balanced(hist, timesteps, f"p{q:g}", hist.percentile(q), initial_membrane)


def fit_clip(hist: LayerHistogram, timesteps: int, initial_membrane: float = 0.0) -> LayerFactors:
    """``a = b = 1``: ``V = A = mu``."""
    return _balanced(hist, timesteps, "clip", hist.mu, initial_membrane)


FITTERS: dict[str, Callable[[LayerHistogram, int, float], LayerFactors]] = {
    "dist": fit_distribution_aware,
    "max": fit_max,
    "p99.9": fit_percentile,
    "clip": fit_clip,
}


def fit_factors(hists: list[LayerHistogram], timesteps: int, method: str = "dist",
                initial_membrane: float = 0.0) -> list[LayerFactors]:
    """One :class:`LayerFactors` per histogram, by ``method`` (one of :data:`METHODS`), for neurons
    whose membrane starts at ``initial_membrane * V`` (0: the reconstruction)."""
    if method not in FITTERS:
        raise ValueError(f"unknown conversion method {method!r}; choose one of {', '.join(METHODS)}")
    return [FITTERS[method](h, timesteps, initial_membrane) for h in hists]
