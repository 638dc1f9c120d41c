"""STCB (fewstep.layers.stcb), the STCB models, the Tiny-ImageNet loader and the STCB recipes."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fewstep.config import load_recipe
from fewstep.energy import count_energy
from fewstep.errors import ConfigError, DataFormatError, DatasetNotFoundError
from fewstep.layers import STCB, ConversionIF
from fewstep.layers.stcb import equivalent_gradient, if_conversion, spike_train_count, spread_count
from fewstep.models import MODELS, SpikingModel, build_model
from fewstep.neurons import IF, NeuronSpec, reset_net, set_step_mode, spiking_neurons

pytestmark = pytest.mark.usefixtures("_one_thread")  # tests/conftest.py: one torch thread per module


def count_of(current: torch.Tensor, v_th: float) -> torch.Tensor:
    """The spike-train-level count written out independently: clip(floor(sum I / V_th), 0, T)."""
    t = current.shape[0]
    return torch.clamp(torch.floor(current.sum(0) / v_th), 0, t)


# --------------------------------------------------------------------------- forward counts

@pytest.mark.parametrize("v_th", [1.0, 0.5, 2.0])
@pytest.mark.parametrize("t", [1, 2, 3, 4, 7])
def test_constant_current_count_equals_formula(t: int, v_th: float) -> None:
    c = torch.linspace(-2.0, 3.0, 501, dtype=torch.float64) * v_th  # negative, sub- and supra-threshold
    current = c.expand(t, -1).clone()
    want = count_of(current, v_th)
    for gradient in ("equivalent", "surrogate"):
        got = ConversionIF(v_th, gradient=gradient)(current).sum(0)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(ConversionIF(v_th, forward="count")(current).sum(0), want, rtol=0, atol=0)


def test_random_nonnegative_currents() -> None:
    g = torch.Generator().manual_seed(1)
    v_th, t = 1.0, 4
    # at most V_th per step: every crossing is answered in its step, the IF count IS the formula
    small = torch.rand(t, 4000, generator=g, dtype=torch.float64) * v_th
    torch.testing.assert_close(ConversionIF(v_th)(small).sum(0), count_of(small, v_th), rtol=0, atol=0)
    # any non-negative currents: IF never exceeds the formula; it falls short exactly when charge
    # is left over (v_T >= V_th: backlog, at most one spike per step) and the formula is not
    # already capped at T by the IF's own T spikes; forward="count" is exact
    big = torch.rand(t, 4000, generator=g, dtype=torch.float64) * 3 * v_th
    ref = if_conversion(big, v_th)
    n_if, n = ref.spikes.sum(0), count_of(big, v_th)
    assert (n_if <= n).all() and (n_if < n).any()
    torch.testing.assert_close(n_if < n, (ref.v >= v_th) & (n_if < t), rtol=0, atol=0)
    torch.testing.assert_close(n_if, torch.round((big.sum(0) - ref.v) / v_th), rtol=0, atol=0)  # v_T = S - n V_th
    torch.testing.assert_close(ConversionIF(v_th, forward="count")(big).sum(0), n, rtol=0, atol=0)


def test_when_if_count_equals_formula_signed_currents() -> None:
    """Exact characterisation: the IF count equals the formula iff v_T in [0, V_th), or the
    formula saturates (S < 0 with no spike, S >= T V_th with a spike every step)."""
    g = torch.Generator().manual_seed(2)
    v_th, t = 1.0, 3
    x = torch.randn(t, 20000, generator=g, dtype=torch.float64) * 1.5
    ref = if_conversion(x, v_th)
    n_if, n, s = ref.spikes.sum(0), count_of(x, v_th), x.sum(0)
    ok = ((ref.v >= 0) & (ref.v < v_th)) | ((s < 0) & (n_if == 0)) | ((s >= t * v_th) & (n_if == t))
    torch.testing.assert_close(n_if == n, ok, rtol=0, atol=0)
    assert (n_if > n).any() and (n_if < n).any()  # both failure modes occur


def test_documented_counterexamples() -> None:
    backlog = torch.tensor([[0.0], [0.0], [3.0]])  # charge arrives late and all at once
    assert if_conversion(backlog).spikes.sum() == 1 and spike_train_count(backlog).item() == 3
    late_negative = torch.tensor([[2.0], [-2.0]])  # the spike at step 1 is not taken back
    assert if_conversion(late_negative).spikes.sum() == 1 and spike_train_count(late_negative).item() == 0
    early_negative = torch.tensor([[-1.0], [2.0]])  # integrated, harmless
    assert if_conversion(early_negative).spikes.sum() == 1 == spike_train_count(early_negative).item()


def test_if_forward_is_the_fewstep_if_neuron() -> None:
    x = torch.randn(5, 3, 7)
    ref = IF(reset="soft")(x)
    torch.testing.assert_close(ConversionIF()(x), ref, rtol=0, atol=0)
    torch.testing.assert_close(if_conversion(x).spikes, ref, rtol=0, atol=0)


@pytest.mark.parametrize("t", [1, 2, 4, 8])
def test_spread_count_is_if_on_the_mean_current(t: int) -> None:
    n = torch.arange(t + 1, dtype=torch.float64)
    spikes = spread_count(n, t)
    torch.testing.assert_close(spikes.sum(0), n, rtol=0, atol=0)
    assert set(spikes.unique().tolist()) <= {0.0, 1.0}
    # an IF neuron driven by N V_th / T at every step (exact in binary for T a power of 2)
    torch.testing.assert_close(spikes, if_conversion((n / t).expand(t, -1).clone()).spikes, rtol=0, atol=0)
    with pytest.raises(ValueError):
        spread_count(torch.tensor([t + 1.0]), t)


# --------------------------------------------------------------------------- equivalent gradient

def grad_of_count(current: torch.Tensor, v_th: float, forward: str = "count",
                  v0: torch.Tensor | None = None) -> torch.Tensor:
    """d(sum_t s_t) / dI through the module (the loss is the output count)."""
    x = current.clone().requires_grad_(True)
    m = ConversionIF(v_th, forward=forward)
    if v0 is not None:
        m.keep_state, m.v = True, v0
    m(x).sum().backward()
    return x.grad


@pytest.mark.parametrize("forward", ["count", "if"])
@pytest.mark.parametrize("v_th", [1.0, 0.75])  # exact in float32 (the module stores V_th as float32)
def test_equivalent_gradient_matches_finite_differences_of_the_count(v_th: float, forward: str) -> None:
    """Central differences of N(S) = clip(floor(S / V_th), 0, T) with step h = V_th / 2 each way are
    exactly 1 / V_th when S is more than h inside (0, T V_th) and exactly 0 when more than h outside
    (floor rises by exactly one over any interval of length V_th)."""
    t, h = 4, v_th / 2
    g = torch.Generator().manual_seed(3)
    x = (torch.rand(t, 3000, generator=g, dtype=torch.float64) * 1.6 - 0.4) * v_th * 1.5  # S over ~[-2.4, 7.2] V_th
    s = x.sum(0)
    far = ((s > h) & (s < t * v_th - h)) | (s < -h) | (s > t * v_th + h)
    grad = grad_of_count(x, v_th, forward)
    for step in range(t):  # perturb one step's current: S moves by the same amount
        e = torch.zeros_like(x)
        e[step] = h
        fd = (spike_train_count(x + e, v_th) - spike_train_count(x - e, v_th)) / (2 * h)
        torch.testing.assert_close(grad[step][far], fd[far], rtol=0, atol=1e-12)
    assert far.sum() > 2000 and (fd[far] == 0).any() and (fd[far] > 0).any()


def test_equivalent_gradient_is_a_rectangle_over_the_total() -> None:
    v_th, t = 0.5, 3
    totals = torch.tensor([-3.0, -0.5, 0.0, 1e-9, 0.2, 0.75, 1.49, 1.5, 1.5 + 1e-9, 4.0], dtype=torch.float64)
    x = (totals / t).expand(t, -1).clone()
    grad = grad_of_count(x, v_th)
    inside = (totals > 0) & (totals < t * v_th)  # open interval: both boundaries are outside
    want = torch.where(inside, 1 / v_th, 0.0).to(torch.float64)
    torch.testing.assert_close(grad, want.expand(t, -1), rtol=0, atol=1e-12)
    assert inside.tolist() == [False, False, False, True, True, True, True, False, False, False]


def test_equivalent_gradient_counts_the_carried_state() -> None:
    x = torch.full((2, 4), 0.25, dtype=torch.float64)  # sum 0.5
    v0 = torch.tensor([-1.0, 0.0, 1.4, 2.0], dtype=torch.float64)  # S = -0.5, 0.5, 1.9, 2.5 for T V_th = 2
    grad = grad_of_count(x, 1.0, "if", v0)
    torch.testing.assert_close(grad, torch.tensor([[0.0, 1.0, 1.0, 0.0]] * 2, dtype=torch.float64))


def relaxed_train(current: torch.Tensor, v_th: float) -> torch.Tensor:
    """The spike-train-level model the backward differentiates: clip(S / V_th, 0, T) / T at every step."""
    t = current.shape[0]
    return (current.sum(0) / v_th).clamp(0, t).div(t).expand_as(current)


def test_distributed_gradient_gradcheck() -> None:
    """The custom backward's full Jacobian equals (a) the analytic expression, (b) central finite
    differences of the relaxed spike-train model, away from the clip boundaries."""
    t, b, v_th = 3, 5, 0.8
    g = torch.Generator().manual_seed(4)
    x = torch.randn(t, b, generator=g, dtype=torch.float64)
    x[:, 0] = torch.tensor([1.0, 0.5, 0.2])  # S = 1.7 inside
    x[:, 1] = torch.tensor([-1.0, -0.5, 0.2])  # S < 0
    x[:, 2] = torch.tensor([1.0, 1.0, 1.0])  # S > T V_th
    s = x.sum(0)
    assert ((s - 0).abs() > 1e-3).all() and ((s - t * v_th).abs() > 1e-3).all()
    y = equivalent_gradient(x.requires_grad_(True), if_conversion(x.detach(), v_th).spikes, v_th)
    n = x.numel()
    jac = torch.stack([torch.autograd.grad(y.reshape(-1)[i], x, retain_graph=True)[0].reshape(-1)
                       for i in range(n)])  # jac[i, j] = d y_i / d x_j
    inside = ((s > 0) & (s < t * v_th)).to(torch.float64)
    # (a) analytic: dy[t', b'] / dx[t, b] = [b == b'] * inside[b] / (T V_th)
    same_b = torch.eye(b, dtype=torch.float64).repeat(t, t)
    analytic = same_b * inside.repeat(t)[None, :] / (t * v_th)
    torch.testing.assert_close(jac, analytic, rtol=0, atol=1e-12)
    # (b) numerical Jacobian of the relaxed model
    eps = 1e-6
    num = torch.zeros(n, n, dtype=torch.float64)
    flat = x.detach().reshape(-1)
    for j in range(n):
        e = torch.zeros(n, dtype=torch.float64)
        e[j] = eps
        num[:, j] = (relaxed_train((flat + e).reshape(t, b), v_th) - relaxed_train((flat - e).reshape(t, b), v_th)
                     ).reshape(-1) / (2 * eps)
    torch.testing.assert_close(jac, num, rtol=1e-6, atol=1e-8)
    # and for an arbitrary incoming gradient: every step gets mean_t'(grad_out) * inside / V_th
    go = torch.randn(t, b, generator=g, dtype=torch.float64)
    (gx,) = torch.autograd.grad(y, x, go)
    torch.testing.assert_close(gx, (go.mean(0) * inside / v_th).expand(t, -1), rtol=0, atol=1e-12)


def test_surrogate_mode_is_per_step_bptt() -> None:
    x = torch.randn(4, 6, dtype=torch.float64)
    xs, xr = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ConversionIF(gradient="surrogate", surrogate="sigmoid", width=0.3)(xs).sum().backward()
    IF(reset="soft", surrogate="sigmoid", width=0.3)(xr).sum().backward()
    torch.testing.assert_close(xs.grad, xr.grad)
    xe = x.clone().requires_grad_(True)
    ConversionIF()(xe).sum().backward()
    assert not torch.allclose(xe.grad, xs.grad)


def test_conversion_options_and_state() -> None:
    with pytest.raises(ValueError, match="gradient"):
        ConversionIF(gradient="bptt")
    with pytest.raises(ValueError, match="forward"):
        ConversionIF(forward="rate")
    with pytest.raises(ValueError, match="gradient='equivalent'"):
        ConversionIF(forward="count", gradient="surrogate")
    m = ConversionIF(forward="count", step_mode="s")
    with pytest.raises(RuntimeError, match="single-step"):
        m(torch.rand(3))
    # keep_state: two calls of T steps == one call of 2T steps; reset_net clears it
    x = torch.rand(6, 10) * 0.9
    whole = ConversionIF()(x)
    m = ConversionIF()
    m.keep_state = m.record = True
    halves = torch.cat([m(x[:3]), m(x[3:])])
    torch.testing.assert_close(halves, whole)
    assert m.last_membrane is not None and m.v is not None
    reset_net(nn.Sequential(m))
    assert m.v is None and m.last_spikes is None


# --------------------------------------------------------------------------- models

CIFAR = (3, 32, 32)
T, B, CLASSES = 2, 2, 5
TINY: dict[str, tuple[tuple[int, ...], dict]] = {
    "stcb_small": ((1, 28, 28), dict(width_mult=1 / 8, hidden=8)),
    "stcb_vgg11": (CIFAR, dict(width_mult=1 / 16)),
    "stcb_vgg16": (CIFAR, dict(width_mult=1 / 16)),
    "stcb_vggsnn": ((2, 48, 48), dict(width_mult=1 / 16)),
    "stcb_resnet18": (CIFAR, dict(width_mult=1 / 16)),
    "stcb_resnet19": (CIFAR, dict(width_mult=1 / 16, hidden=8)),
}


def make(name: str, **kwargs) -> SpikingModel:
    torch.manual_seed(0)
    shape, opts = TINY[name]
    return build_model(name, num_classes=CLASSES, input_shape=shape, timesteps=T,
                       neuron=NeuronSpec(kind="if", reset="soft"), **{**opts, **kwargs})


def test_every_stcb_model_is_tested() -> None:
    assert {n for n in MODELS if n.startswith("stcb_")} == set(TINY)


@pytest.mark.parametrize("name", sorted(TINY))
def test_models_shapes_gradients_streaming(name: str) -> None:
    model = make(name)
    shape = TINY[name][0]
    assert not spiking_neurons(model.stem)
    convs = [n for _, n in spiking_neurons(model)]
    assert convs and all(isinstance(n, ConversionIF) and n.gradient == "equivalent" for n in convs)
    out = model(torch.rand(B, *shape))
    assert out.shape == (T, B, CLASSES)
    assert model(torch.rand(T + 1, B, *shape)).shape == (T + 1, B, CLASSES)  # sequence input
    nn.functional.cross_entropy(out.mean(0), torch.arange(B) % CLASSES).backward()
    w = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).weight.grad
    assert w is not None and torch.isfinite(w).all() and w.abs().sum() > 0
    # streaming (per-step IF) gives the same outputs as the multi-step equivalent-gradient forward
    model.eval()
    x = torch.rand(B, *shape)
    with torch.no_grad():
        want = model(x)
        set_step_mode(model, "s")
        stem = model.stem(x)
        got = torch.stack([model.body(stem) for _ in range(T)])
    torch.testing.assert_close(got, want)


def test_model_options() -> None:
    m = make("stcb_small", gradient="surrogate", v_threshold=0.5)
    assert all(n.gradient == "surrogate" and float(n.threshold) == 0.5 for _, n in spiking_neurons(m))
    m = make("stcb_vgg11", forward="count")
    assert all(n.forward_mode == "count" for _, n in spiking_neurons(m))
    assert sum(isinstance(x, STCB) for x in m.modules()) == 7  # 8 convs; the stem's STCB is split
    for bad in (dict(gradient="exact"), dict(forward="count", gradient="surrogate"), dict(v_threshold=0.0),
                dict(pool="sum")):
        with pytest.raises(ConfigError):
            make("stcb_vgg11", **bad)
    big = build_model("stcb_resnet19", num_classes=10, input_shape=CIFAR, timesteps=T)
    assert 12_000_000 < sum(p.numel() for p in big.parameters()) < 13_500_000


@pytest.mark.parametrize("gradient", ["equivalent", "surrogate"])
def test_both_gradients_train(gradient: str) -> None:
    torch.manual_seed(0)
    model = build_model("stcb_small", num_classes=4, input_shape=(1, 8, 8), timesteps=2, gradient=gradient,
                        width_mult=0.25, hidden=32, neuron=NeuronSpec(kind="if", reset="soft"))
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(16, 1, 8, 8, generator=g), torch.arange(16) % 4
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        loss = nn.functional.cross_entropy(model(x).mean(0), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert min(losses[-5:]) < 0.6 * losses[0], losses


def test_same_forward_different_gradients() -> None:
    a, b = make("stcb_small"), make("stcb_small", gradient="surrogate")
    b.load_state_dict(a.state_dict())
    x = torch.rand(3, *TINY["stcb_small"][0])
    oa, ob = a(x), b(x)
    torch.testing.assert_close(oa, ob)
    oa.sum().backward()
    ob.sum().backward()
    ga, gb = a.stem[0].weight.grad, b.stem[0].weight.grad
    assert not torch.allclose(ga, gb)


def test_energy_counts_sops_after_stcb_spikes() -> None:
    model = make("stcb_small", hidden=16)
    r = count_energy(model, torch.rand(4, *TINY["stcb_small"][0]))
    kinds = {lo.name: lo.kind for lo in r.layers}
    assert kinds == {"stem.0": "mac", "body.features.1.synapse.1": "sop", "body.hidden.synapse.2": "sop",
                     "body.classifier.1": "sop"}
    assert r.sops > 0 and all(lo.macs == 0 for lo in r.layers if lo.kind == "sop")
    assert {n.type for n in r.neurons} == {"ConversionIF"}
    res = count_energy(make("stcb_resnet19"), torch.rand(2, *CIFAR))
    convs = [lo for lo in res.layers if lo.type == "Conv2d" and not lo.name.startswith("stem")]
    assert convs and all(lo.kind == "sop" for lo in convs)  # incl. 1x1 shortcut convs fed by spikes


# --------------------------------------------------------------------------- recipes

STCB_RECIPES = ["fmnist-stcb-t1", "fmnist-stcb-t2", "fmnist-stcb-t4", "cifar10-stcb-t1", "cifar10-stcb-t2",
                "cifar10-stcb-t4", "cifar100-stcb-t2", "tinyimagenet-stcb-t2", "dvscifar10-stcb-t2"]


@pytest.mark.parametrize("name", STCB_RECIPES)
def test_recipes_parse(name: str) -> None:
    r = load_recipe(name)
    assert r.name == name and r.model.name in MODELS and r.model.options["gradient"] == "equivalent"
    assert (r.train.optimizer, r.train.lr, r.train.momentum, r.train.weight_decay, r.train.schedule) == \
        ("sgd", 0.1, 0.9, 5e-4, "cosine")
    assert r.model.timesteps == int(name.rsplit("-t", 1)[1])
    if name.startswith(("cifar", "tinyimagenet")):
        assert r.data.crop_padding > 0 and r.data.flip


# --------------------------------------------------------------------------- Tiny-ImageNet

WNIDS = ["n02", "n01", "n03"]  # unsorted on purpose: labels follow the sorted wnids


def write_tree(root: Path, gray: bool = False) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    top = root / "tiny-imagenet-200"
    (top / "val" / "images").mkdir(parents=True)
    (top / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    (top / "words.txt").write_text("n01\tgoldfish\nn02\tcat, tabby\nn03\tcar\nn99\tunused\n")

    def jpeg(path: Path) -> None:
        arr = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        im = Image.fromarray(arr[:, :, 0], "L") if gray else Image.fromarray(arr, "RGB")
        im.save(path, "JPEG")

    for w in WNIDS:
        d = top / "train" / w / "images"
        d.mkdir(parents=True)
        for i in range(2):
            jpeg(d / f"{w}_{i}.JPEG")
        (top / "train" / w / f"{w}_boxes.txt").write_text("")
    ann = [("val_0.JPEG", "n03"), ("val_1.JPEG", "n01"), ("val_2.JPEG", "n02"), ("val_3.JPEG", "n01")]
    for name, _ in ann:
        jpeg(top / "val" / "images" / name)
    (top / "val" / "val_annotations.txt").write_text("".join(f"{n}\t{w}\t0\t0\t63\t63\n" for n, w in ann))
    (top / "test" / "images").mkdir(parents=True)
    jpeg(top / "test" / "images" / "test_0.JPEG")
    return top


def test_tinyimagenet_official_layout(tmp_path: Path) -> None:
    from PIL import Image

    from fewstep.data import load_dataset

    top = write_tree(tmp_path / "data")
    s = load_dataset("tinyimagenet", tmp_path / "data", download=False, cache_dir=tmp_path / "cache")
    assert s.name == "tinyimagenet" and s.num_classes == 3 and s.train.classes == ["n01", "n02", "n03"]
    assert s.train.inputs.shape == (6, 3, 64, 64) and s.train.inputs.dtype == torch.uint8
    assert s.train.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert s.test.inputs.shape == (4, 3, 64, 64) and sorted(s.test.labels.tolist()) == [0, 0, 1, 2]
    assert s.info["names"] == ["goldfish", "cat, tabby", "car"]
    want = np.asarray(Image.open(top / "train" / "n02" / "images" / "n02_0.JPEG").convert("RGB"))
    np.testing.assert_array_equal(s.train.inputs[2].permute(1, 2, 0).numpy(), want)
    # val image of class n03 (val_0) is the last test sample (sorted by label)
    want = np.asarray(Image.open(top / "val" / "images" / "val_0.JPEG").convert("RGB"))
    np.testing.assert_array_equal(s.test.inputs[-1].permute(1, 2, 0).numpy(), want)
    assert len(s.train.mean) == 3 and not s.info["from_cache"]
    again = load_dataset("tinyimagenet", tmp_path / "data", download=False, cache_dir=tmp_path / "cache")
    assert again.info["from_cache"] and torch.equal(again.train.inputs, s.train.inputs)
    img = top / "val" / "images" / "val_1.JPEG"
    os.utime(img, ns=(img.stat().st_atime_ns, img.stat().st_mtime_ns + 10**9))  # a changed file rebuilds it
    assert not load_dataset("tinyimagenet", tmp_path / "data", download=False, cache_dir=tmp_path / "cache"
                            ).info["from_cache"]
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1  # the stale cache was replaced
    small = load_dataset("tinyimagenet", tmp_path / "data", download=False, limit=3, cache=False)
    assert sorted(small.train.labels.tolist()) == [0, 1, 2]


def test_tinyimagenet_grayscale_and_bad_annotations(tmp_path: Path) -> None:
    from fewstep.data.tinyimagenet import load_tinyimagenet

    top = write_tree(tmp_path, gray=True)
    s = load_tinyimagenet(tmp_path, download=False, cache=False)
    assert s.train.inputs.shape[1] == 3
    assert torch.equal(s.train.inputs[:, 0], s.train.inputs[:, 1])  # gray -> RGB
    (top / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn77\t0\t0\t1\t1\n")
    with pytest.raises(DataFormatError, match="n77"):
        load_tinyimagenet(tmp_path, download=False, cache=False)


def test_tinyimagenet_from_zip_and_missing(tmp_path: Path) -> None:
    from fewstep.data.tinyimagenet import URL, load_tinyimagenet

    with pytest.raises(DatasetNotFoundError, match="tiny-imagenet-200.zip"):
        load_tinyimagenet(tmp_path / "empty", download=False)
    src = write_tree(tmp_path / "src")
    root = tmp_path / "root"
    root.mkdir()
    with zipfile.ZipFile(root / "tiny-imagenet-200.zip", "w") as zf:
        for p in sorted(src.rglob("*")):
            zf.write(p, p.relative_to(src.parent).as_posix())
    s = load_tinyimagenet(root, download=False, cache=False)
    assert len(s.train) == 6 and len(s.test) == 4
    assert not (root / "tiny-imagenet-200" / "test").exists()  # the unlabelled test set is skipped
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temporary folder left
    evil = tmp_path / "evil"
    evil.mkdir()
    with zipfile.ZipFile(evil / "tiny-imagenet-200.zip", "w") as zf:
        zf.writestr("tiny-imagenet-200/../../escape.txt", "x")
    with pytest.raises(DataFormatError, match="escapes"):
        load_tinyimagenet(evil, download=False)
    assert URL == "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
