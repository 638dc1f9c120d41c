"""The saccade DVS emulator: determinism, the pixel model's physics, the event-array contract,
batch/worker independence and the on-disk cache."""

from __future__ import annotations

import gzip
import inspect
import os
from pathlib import Path

import numpy as np
import pytest

import fewstep.events.emulator as emulator
from fewstep.events import EVENT_DTYPE
from fewstep.events.emulator import EmulatorParams, emulate_dataset, saccade_events, to_luminance

pytestmark = pytest.mark.filterwarnings("error")  # a NaN or overflow in the pixel model is a bug


def digit_like(seed: int = 0, size: int = 28) -> np.ndarray:
    """A uint8 image with a few bright strokes on black, MNIST-like."""
    rng = np.random.default_rng(seed)
    img = np.zeros((size, size), np.uint8)
    for _ in range(4):
        r, c = rng.integers(6, size - 10, 2)
        img[r:r + rng.integers(2, 8), c:c + rng.integers(2, 8)] = rng.integers(150, 256)
    return img


def per_pixel_gaps(ev: np.ndarray) -> np.ndarray:
    pix = ev["y"].astype(np.int64) * 1000 + ev["x"]
    order = np.lexsort((ev["t"], pix))
    same = np.diff(pix[order]) == 0
    return np.diff(ev["t"][order])[same]


def test_event_array_contract():
    ev = saccade_events(digit_like())
    assert ev.dtype == EVENT_DTYPE and len(ev) > 100
    assert (np.diff(ev["t"]) >= 0).all()
    assert ev["t"].min() >= 0 and ev["t"].max() <= 300_000
    assert ev["x"].min() >= 0 and ev["x"].max() < 34 and ev["y"].min() >= 0 and ev["y"].max() < 34
    assert set(np.unique(ev["p"])) == {0, 1}


def test_deterministic_for_a_seed_and_different_across_seeds():
    img = digit_like(1)
    a, b, c = saccade_events(img, seed=5), saccade_events(img, seed=5), saccade_events(img, seed=6)
    np.testing.assert_array_equal(a, b)
    assert len(a) != len(c) or not np.array_equal(a, c)
    # Without threshold noise the seed has nothing to change.
    np.testing.assert_array_equal(saccade_events(img, seed=1, threshold_noise_std=0.0),
                                  saccade_events(img, seed=2, threshold_noise_std=0.0))


@pytest.mark.parametrize("value", [0, 128, 255])
def test_uniform_image_emits_nothing(value):
    # Black surround included: a uniform black image never changes; a uniform bright one only
    # changes at its border, and with the border outside the view (sensor = image) not at all.
    img = np.full((28, 28), value, np.uint8)
    ev = saccade_events(img, sensor_size=(22, 22)) if value else saccade_events(img)
    assert len(ev) == 0 and ev.dtype == EVENT_DTYPE


def test_moving_bright_square_leading_edge_on_trailing_edge_off():
    img = np.zeros((28, 28))
    img[10:18, 10:18] = 1.0  # sensor columns and rows 13..20 when centred
    # One saccade right (dx -3 -> +3), one back left.
    ev = saccade_events(img, saccade_vertices=((-3.0, 0.0), (3.0, 0.0)), duration_us=200_000, threshold_noise_std=0.0)
    right, left = ev[ev["t"] < 100_000], ev[ev["t"] > 100_000]
    for part, leading_is_right in ((right, True), (left, False)):
        on_x, off_x = part["x"][part["p"] == 1], part["x"][part["p"] == 0]
        assert len(on_x) > 20 and len(off_x) > 20
        assert (on_x.mean() > off_x.mean()) == leading_is_right
    # Moving right from columns 10..17 to 16..23, the pixels the right edge sweeps (18..23)
    # brighten and those the left edge sweeps (10..15) darken.
    on_x, off_x = right["x"][right["p"] == 1], right["x"][right["p"] == 0]
    assert set(np.unique(on_x)) == set(range(18, 24)) and set(np.unique(off_x)) == set(range(10, 16))
    # Horizontal edges slide along themselves: nothing happens above or below the square.
    assert set(np.unique(ev["y"])) == set(range(13, 21))


@pytest.mark.parametrize("refractory_us", [500, 3_000])
def test_refractory_period_respected(refractory_us):
    ev = saccade_events(digit_like(2), contrast_threshold=0.05, refractory_us=refractory_us)
    gaps = per_pixel_gaps(ev)
    assert len(gaps) > 100 and gaps.min() >= refractory_us


def test_refractory_drops_events():
    img = digit_like(3)
    assert len(saccade_events(img, contrast_threshold=0.05, refractory_us=5_000)) < \
        len(saccade_events(img, contrast_threshold=0.05, refractory_us=0))


def test_event_count_grows_as_the_threshold_drops():
    img = digit_like(4)
    counts = [len(saccade_events(img, contrast_threshold=c, threshold_noise_std=0.0)) for c in (0.8, 0.5, 0.3, 0.15)]
    assert counts == sorted(counts) and counts[0] < counts[-1] and len(set(counts)) == len(counts)


def test_on_and_off_thresholds_can_differ():
    ev = saccade_events(digit_like(5), contrast_threshold=(0.15, 0.6), threshold_noise_std=0.0)
    on, off = (ev["p"] == 1).sum(), (ev["p"] == 0).sum()
    assert on > 2 * off > 0  # the path is closed: equal total rise and fall, four times the steps


def test_rgb_and_float_inputs():
    gray = digit_like(6)
    np.testing.assert_array_equal(saccade_events(np.stack([gray] * 3)), saccade_events(gray))
    np.testing.assert_array_equal(saccade_events(gray / 255.0), saccade_events(gray))
    assert to_luminance(np.ones((2, 3, 4, 4), np.uint8) * 255).max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        saccade_events(gray * 2.0)


def test_saccade_events_defaults_match_the_params_dataclass():
    sig = inspect.signature(saccade_events).parameters
    for name, field in EmulatorParams.__dataclass_fields__.items():
        assert sig[name].default == field.default, name


def test_dataset_matches_single_images_whatever_the_batching():
    images = np.stack([digit_like(s) for s in range(5)])
    a = emulate_dataset(images, seed=3, batch_size=2)
    b = emulate_dataset(images, seed=3, batch_size=5)
    assert len(a) == len(b) == 5
    for i, (x, y) in enumerate(zip(a, b)):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, saccade_events(images[i], seed=(3, i)))


def test_dataset_with_workers_equals_serial():
    images = np.stack([digit_like(s) for s in range(4)])[:, None]  # [N, 1, H, W]
    serial, parallel = emulate_dataset(images), emulate_dataset(images, workers=2)
    for x, y in zip(serial, parallel):
        np.testing.assert_array_equal(x, y)


def test_cache_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    images = np.stack([digit_like(s) for s in range(3)])
    labels = np.array([7, 1, 4])
    first = emulate_dataset(images, labels, cache_dir=tmp_path)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"  # no temporary file left behind
    with np.load(files[0]) as data:
        np.testing.assert_array_equal(data["labels"], labels)
        assert data["offsets"].tolist() == [0, *np.cumsum([len(e) for e in first])]

    def no_work(*args, **kwargs):
        raise AssertionError("should have been served from the cache")

    monkeypatch.setattr(emulator, "_emulate_batch", no_work)
    again = emulate_dataset(images, labels, cache_dir=tmp_path)
    for x, y in zip(first, again):
        np.testing.assert_array_equal(x, y)
    monkeypatch.undo()
    emulate_dataset(images, labels, cache_dir=tmp_path, contrast_threshold=0.5)  # other parameters
    emulate_dataset(images[:2], labels[:2], cache_dir=tmp_path)  # other images
    assert len(list(tmp_path.iterdir())) == 3


def _mnist_images() -> Path | None:
    root = os.environ.get("FEWSTEP_DATA")
    for base in ([Path(root)] if root else []) + [Path(__file__).resolve().parents[2] / "shared" / "data"]:
        if (base / "mnist" / "train-images-idx3-ubyte.gz").exists():
            return base / "mnist" / "train-images-idx3-ubyte.gz"
    return None


@pytest.mark.skipif(_mnist_images() is None, reason="MNIST not available")
def test_mnist_digits_give_n_mnist_like_event_counts():
    """Real N-MNIST has about 4,100 events per sample (10th-90th percentile 2,600-5,600)."""
    with gzip.open(_mnist_images()) as f:
        images = np.frombuffer(f.read(16 + 40 * 784), np.uint8, offset=16).reshape(-1, 28, 28)
    counts = np.array([len(e) for e in emulate_dataset(images)])
    assert 3_000 < counts.mean() < 5_500
    assert counts.min() > 800
