"""Event augmentations (:mod:`fewstep.events.augment`) and the feed that applies them in training
(:mod:`fewstep.train.event_feed`), on real N-MNIST recordings (issue #15 item 7).

The recording tests skip without the real subset (``FEWSTEP_DATA`` holding ``nmnist-small/``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from fewstep.augment_spec import EventAugmentSpec
from fewstep.errors import ConfigError
from fewstep.events.augment import augment_events, drop_events, jitter_time, shift_events
from fewstep.events.compression import stc

SENSOR = (34, 34)


def _root() -> str:
    root = os.environ.get("FEWSTEP_DATA")
    if not root or not (Path(root) / "nmnist-small" / "Train").is_dir():
        pytest.skip("needs the real N-MNIST subset: set FEWSTEP_DATA to a folder holding nmnist-small/ "
                    "(e.g. FEWSTEP_DATA=../shared/data)")
    return root


@pytest.fixture(scope="module")
def recordings() -> list[np.ndarray]:
    """Twenty real N-MNIST training recordings, two of each digit."""
    from fewstep.data.event_datasets import NMNIST

    ds = NMNIST(_root(), train=True)
    picked: list[np.ndarray] = []
    seen: dict[int, int] = {}
    for i, (_path, label) in enumerate(ds.samples):
        if seen.get(label, 0) < 2:
            seen[label] = seen.get(label, 0) + 1
            picked.append(ds[i][0])
    assert len(picked) == 20
    return picked


def _rows(ev: np.ndarray) -> np.ndarray:
    """(x, y, t, p) per event as an int64 matrix, for set comparisons."""
    return np.stack([ev["x"].astype(np.int64), ev["y"], ev["t"], ev["p"]], axis=1)


def _sorted_rows(ev: np.ndarray) -> np.ndarray:
    r = _rows(ev)
    return r[np.lexsort(r.T[::-1])]


def _is_subsequence(small: np.ndarray, big: np.ndarray) -> bool:
    """Whether the rows of ``small`` appear in ``big`` in the same order."""
    j = 0
    for row in small:
        while j < len(big) and not np.array_equal(big[j], row):
            j += 1
        if j == len(big):
            return False
        j += 1
    return True


def _check_valid(ev: np.ndarray) -> None:
    assert ((ev["x"] >= 0) & (ev["x"] < SENSOR[0]) & (ev["y"] >= 0) & (ev["y"] < SENSOR[1])).all()
    assert (ev["t"] >= 0).all() and (np.diff(ev["t"]) >= 0).all()


# --------------------------------------------------------------------------- single augmentations


@pytest.mark.parametrize("dx,dy", [(3, 0), (0, -3), (-2, 3), (1, 1), (0, 0)])
def test_shift_moves_every_event_by_the_offset_and_drops_those_off_the_sensor(recordings, dx, dy) -> None:
    for ev in recordings:
        before = ev.copy()
        out = shift_events(ev, SENSOR, dx, dy)
        assert np.array_equal(ev, before)  # the input is never modified
        _check_valid(out)
        x, y = ev["x"].astype(int) + dx, ev["y"].astype(int) + dy
        inside = (x >= 0) & (x < 34) & (y >= 0) & (y < 34)
        # exactly the events that stay on the sensor, in order, each moved by (dx, dy): no flip,
        # no mirror, times and polarities untouched
        assert np.array_equal(out["x"], x[inside]) and np.array_equal(out["y"], y[inside])
        assert np.array_equal(out["t"], ev["t"][inside]) and np.array_equal(out["p"], ev["p"][inside])


def test_shift_of_the_events_is_the_zero_filled_translation_of_their_currents(recordings) -> None:
    """Shifting events before STC equals shifting the summed currents with zero fill (at T = 1: with
    more steps the events dropped at the border can move the time span the steps divide)."""
    for ev in recordings[:5]:
        base = torch.from_numpy(stc(ev, SENSOR, 1))
        shifted = torch.from_numpy(stc(shift_events(ev, SENSOR, 2, -3), SENSOR, 1))
        expect = torch.zeros_like(base)
        expect[..., 0:31, 2:34] = base[..., 3:34, 0:32]  # y - 3, x + 2
        assert torch.equal(shifted, expect)


def test_drop_keeps_an_ordered_subset_of_the_expected_size(recordings) -> None:
    rng = np.random.default_rng(0)
    kept = total = 0
    for ev in recordings:
        out = drop_events(ev, 0.25, rng)
        assert _is_subsequence(_rows(out), _rows(ev))
        _check_valid(out)
        kept, total = kept + len(out), total + len(ev)
    # about 80,000 events: a binomial of p = 0.75 stays within 1 point of its mean
    assert abs(kept / total - 0.75) < 0.01
    assert np.array_equal(drop_events(recordings[0], 0.0, rng), recordings[0])
    with pytest.raises(ValueError, match="fraction"):
        drop_events(recordings[0], 1.0, rng)


def test_jitter_keeps_every_event_sorted_non_negative_and_in_place(recordings) -> None:
    rng = np.random.default_rng(1)
    for ev in recordings:
        out = jitter_time(ev, 5000.0, rng)
        _check_valid(out)
        assert len(out) == len(ev)
        # the same pixels and polarities: only the timestamps moved
        key_in = np.lexsort((ev["p"], ev["y"], ev["x"]))
        key_out = np.lexsort((out["p"], out["y"], out["x"]))
        for f in ("x", "y", "p"):
            assert np.array_equal(ev[f][key_in], out[f][key_out])
        assert not np.array_equal(out["t"], ev["t"])
    assert np.array_equal(jitter_time(recordings[0], 0.0, rng), recordings[0])


def test_jitter_clamps_at_zero() -> None:
    from fewstep.events.types import make_events

    ev = make_events(np.arange(50) % 34, np.arange(50) % 34, np.arange(50), np.arange(50) % 2)
    out = jitter_time(ev, 1000.0, np.random.default_rng(0))
    assert (out["t"] >= 0).all() and (np.diff(out["t"]) >= 0).all()
    assert (out["t"] == 0).sum() > 10  # about half of them were pushed below 0 and clamped


# --------------------------------------------------------------------------- the combination


def test_augment_events_is_seeded_and_stays_a_valid_unflipped_recording(recordings) -> None:
    spec = EventAugmentSpec(shift=3, drop=0.2, jitter_us=1000.0)
    for ev in recordings:
        a = augment_events(ev, SENSOR, spec, np.random.default_rng(7))
        b = augment_events(ev, SENSOR, spec, np.random.default_rng(7))
        assert np.array_equal(a, b)  # same generator state, same result
        _check_valid(a)
        assert 0.75 * len(ev) <= len(a) <= len(ev)


def test_shift_and_drop_only_give_a_subset_of_one_translated_copy(recordings) -> None:
    """Without jitter every output event is an input event moved by one (dx, dy) per sample, with
    |dx|, |dy| <= shift: a mirror (x -> 33 - x) would fail this for any offset."""
    spec = EventAugmentSpec(shift=3, drop=0.3)
    rng = np.random.default_rng(3)
    offsets = set()
    for ev in recordings:
        out = augment_events(ev, SENSOR, spec, rng)
        found = None
        for dx in range(-3, 4):
            for dy in range(-3, 4):
                moved = shift_events(ev, SENSOR, dx, dy)
                if len(out) <= len(moved) and _is_subsequence(_rows(out), _rows(moved)):
                    found = (dx, dy)
                    break
            if found:
                break
        assert found is not None
        offsets.add(found)
    assert len(offsets) > 3  # the offset is drawn per sample


def test_spec_validation_names_the_key() -> None:
    assert not EventAugmentSpec().enabled
    assert EventAugmentSpec.from_dict({"shift": 3, "drop": 0.1, "jitter_us": 500}) == EventAugmentSpec(3, 0.1, 500.0)
    for bad, key in (({"flip": True}, "data.augment.flip"), ({"shift": -1}, "data.augment.shift"),
                     ({"shift": 1.5}, "data.augment.shift"), ({"drop": 1.0}, "data.augment.drop"),
                     ({"jitter_us": -1}, "data.augment.jitter_us"), ({"jitter_us": float("inf")},
                                                                      "data.augment.jitter_us")):
        with pytest.raises(ConfigError) as info:
            EventAugmentSpec.from_dict(bad)
        assert info.value.key == key


def test_recipe_rejects_a_bad_augment_table() -> None:
    from fewstep.config import load_recipe

    with pytest.raises(ConfigError, match="data.augment.drop"):
        load_recipe("nmnist-stc-t2", ["data.augment.drop=1.5"])


# --------------------------------------------------------------------------- the training feed


def _splits(tmp_path: Path, extra: list[str] = ()):
    from fewstep.config import load_recipe
    from fewstep.train.engine import prepare_data

    recipe = load_recipe("nmnist-stc-t2", ["data.options.train_limit=120", "data.options.test_limit=20",
                                           "data.val_size=20", f"data.options.cache_dir=\"{tmp_path / 'cache'}\"",
                                           *extra])
    return recipe, prepare_data(recipe, _root())


def test_feed_finds_each_rows_recording_and_augments_per_epoch(tmp_path) -> None:
    from fewstep.train.event_feed import event_augment_feed

    recipe, splits = _splits(tmp_path)
    assert len(splits.train) == 100 and len(splits.val) == 20
    plain = event_augment_feed("nmnist", recipe.data.options, EventAugmentSpec(), splits.train, _root(), 32,
                               torch.device("cpu"), seed=0)
    assert torch.equal(plain.epoch_inputs(0), splits.train.inputs)  # the recordings match the rows exactly
    feed = event_augment_feed("nmnist", recipe.data.options, EventAugmentSpec(3, 0.2, 1000.0), splits.train,
                              _root(), 32, torch.device("cpu"), seed=0)
    e0, e1 = feed.epoch_inputs(0), feed.epoch_inputs(1)
    assert torch.equal(e0, feed.epoch_inputs(0)) and not torch.equal(e0, e1)  # seeded by (seed, epoch)
    assert not torch.equal(e0, splits.train.inputs)
    assert 0.8 < e0.sum().item() / splits.train.inputs.sum().item() < 1.0  # about 10 % of the events dropped
    batches = list(feed.epoch(0))
    assert sum(len(y) for _, y in batches) == 100 and batches[0][0].shape[:2] == (2, 32)  # [T, B, ...]


def test_feed_refuses_rows_that_match_no_recording(tmp_path) -> None:
    from fewstep.data import ArrayDataset
    from fewstep.train.event_feed import event_augment_feed

    recipe, splits = _splits(tmp_path)
    fake = ArrayDataset(splits.train.inputs[:4] + 1, splits.train.labels[:4], splits.train.classes, True)
    with pytest.raises(ConfigError, match="4 of the 4 training samples match no nmnist"):
        event_augment_feed("nmnist", recipe.data.options, EventAugmentSpec(2), fake, _root(), 4, torch.device("cpu"))


def test_feed_refuses_datasets_without_recordings() -> None:
    from fewstep.data import ArrayDataset
    from fewstep.train.event_feed import event_augment_feed

    ds = ArrayDataset(torch.zeros(2, 2, 2, 34, 34), torch.zeros(2), ["0"], True)
    with pytest.raises(ConfigError, match="supports the datasets nmnist"):
        event_augment_feed("saccade-digits", {"timesteps": 2}, EventAugmentSpec(2), ds, None, 2, torch.device("cpu"))


def test_training_with_augmentation_runs_and_keeps_test_untouched(tmp_path, _one_thread) -> None:
    from fewstep.train import train

    recipe, _ = _splits(tmp_path, ["train.epochs=1", "model.options.channels=[4, 8]", "model.options.hidden=16",
                                   "data.augment={shift=3, drop=0.4, jitter_us=5000}", "data.crop_padding=0"])
    assert EventAugmentSpec.from_dict(recipe.data.augment).enabled
    report = train(recipe, tmp_path / "run", device="cpu", progress=False, log=lambda _m: None)
    assert report["train_samples"] == 100 and report["val_samples"] == 20 and report["test_samples"] == 20
    assert "val_accuracy_per_step" in report["history"][0] and len(report["accuracy_per_step"]) == 2
