"""fewstep's event datasets follow Tonic's dataset protocol (#16 item 2): ``ds[i]`` is
``(events, target)``, ``transform(events)`` / ``target_transform(target)`` / ``transforms(data,
target)``, ``sensor_size = (W, H, P)``; so ``tonic.transforms.Compose``, ``tonic.DiskCachedDataset``
and a multi-worker ``DataLoader`` take them as they take Tonic's own datasets.

Checked on the real N-MNIST subset in ``$FEWSTEP_DATA/nmnist-small`` (skipped when absent) and on
small DVS128 Gesture / CIFAR10-DVS trees written here in the real formats (AEDAT 3.1 with label
CSVs, jAER AEDAT 2.0), with the writers of ``test_event_datasets.py``. Tonic is a test extra;
without it the Tonic tests skip and the protocol tests still run.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from test_event_datasets import _cifar_tree, _gesture_tree

from fewstep.data.event_datasets import CIFAR10DVS, NMNIST, DVSGesture, EventDataset, collate_events
from fewstep.errors import ConfigError
from fewstep.events.compression import STC, stc, stc_batch
from fewstep.events.types import EVENT_DTYPE

KINDS = ["nmnist", "dvsgesture", "cifar10dvs"]
# Tonic's own sensor sizes (tonic.datasets.NMNIST.sensor_size and so on)
TONIC_SENSOR = {"nmnist": (34, 34, 2), "dvsgesture": (128, 128, 2), "cifar10dvs": (128, 128, 2)}


def _nmnist_root() -> Path:
    root = os.environ.get("FEWSTEP_DATA")
    if not root or not (Path(root) / "nmnist-small" / "Test").is_dir():
        pytest.skip("needs the real N-MNIST subset: set FEWSTEP_DATA to a folder holding nmnist-small/ "
                    "(e.g. FEWSTEP_DATA=/work/shared/data)")
    return Path(root)


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> Path:
    """A data root holding small DVS128 Gesture and CIFAR10-DVS trees in the real formats."""
    root = tmp_path_factory.mktemp("event-trees")
    _gesture_tree(root / "DvsGesture")
    _cifar_tree(root / "CIFAR10DVS", per_class=3)
    return root


def make(kind: str, trees: Path, **kw) -> EventDataset:
    """The dataset ``kind``: the real N-MNIST test split, Gesture's training split (5 gestures)
    or CIFAR10-DVS's test split (one recording per class)."""
    if kind == "nmnist":
        return NMNIST(_nmnist_root(), train=False, **kw)
    if kind == "dvsgesture":
        return DVSGesture(trees, train=True, **kw)
    return CIFAR10DVS(trees, split="test", test_fraction=1 / 3, **kw)


def _some(ds: EventDataset, n: int = 6) -> list[int]:
    """Up to ``n`` indices spread over the dataset (all its classes for the small trees)."""
    return sorted({int(i) for i in np.linspace(0, len(ds) - 1, min(n, len(ds)))})


# ----------------------------------------------------------------------------- the protocol


@pytest.mark.parametrize("kind", KINDS)
def test_item_is_events_and_target(kind, trees):
    ds = make(kind, trees)
    assert ds.sensor_size == TONIC_SENSOR[kind]
    assert ds.ordering == ("x", "y", "t", "p") and ds.dtype == EVENT_DTYPE
    w, h, _ = ds.sensor_size
    for i in _some(ds):
        item = ds[i]
        assert isinstance(item, tuple) and len(item) == 2
        events, target = item
        assert isinstance(events, np.ndarray) and events.dtype.names == ("x", "y", "t", "p")
        assert isinstance(target, int) and target == ds.targets[i]
        assert len(events) > 0 and np.all(np.diff(events["t"]) >= 0)
        assert 0 <= events["x"].min() and events["x"].max() < w and 0 <= events["y"].min() and events["y"].max() < h
        assert set(np.unique(events["p"]).tolist()) <= {0, 1}
    events, target = ds[-1]  # negative indices as for any sequence
    assert target == ds.targets[-1]
    with pytest.raises(IndexError):
        ds[len(ds)]


@pytest.mark.parametrize("kind", KINDS)
def test_transforms_use_tonics_calling_convention(kind, trees):
    seen = []

    def transform(events):  # Tonic's transform(events): one argument
        seen.append(len(events))
        return events[: len(events) // 2]

    def joint(data, target):
        return (len(data), target), -target

    plain = make(kind, trees)
    ds = make(kind, trees, transform=transform, target_transform=lambda t: t + 100, transforms=joint)
    for i in _some(ds, 3):
        events, target = plain[i]
        assert ds[i] == ((len(events) // 2, target + 100), -(target + 100))  # transform, target_, then joint
    assert seen == [len(plain[i][0]) for i in _some(ds, 3)]
    assert ds.targets == plain.targets  # the targets list is untransformed, as Tonic's


@pytest.mark.parametrize("kind", KINDS)
def test_stc_as_the_dataset_transform(kind, trees):
    """fewstep's STC transform binds the sensor size and takes ``transform(events)``; it also
    still takes the older ``(events, sensor_size)`` call, checking the size."""
    ds = make(kind, trees, transform=STC(make(kind, trees).sensor_size, 4))
    plain = make(kind, trees)
    w, h, _ = ds.sensor_size
    for i in _some(ds, 3):
        frames, target = ds[i]
        events, _ = plain[i]
        assert frames.shape == (4, 2, h, w) and frames.dtype == np.float32 and target == plain.targets[i]
        assert frames.sum() == len(events)
        np.testing.assert_array_equal(frames, stc(events, (w, h), 4))
        np.testing.assert_array_equal(ds.transform(events, (w, h)), frames)
        np.testing.assert_array_equal(ds.transform(events, (w, h, 2)), frames)
    with pytest.raises(ConfigError, match="sensor size"):
        ds.transform(events, (w + 1, h))


def test_sensor_sizes_and_classes_match_tonics():
    tonic = pytest.importorskip("tonic")
    theirs = {"nmnist": tonic.datasets.NMNIST, "dvsgesture": tonic.datasets.DVSGesture,
              "cifar10dvs": tonic.datasets.CIFAR10DVS}
    ours = {"nmnist": NMNIST, "dvsgesture": DVSGesture, "cifar10dvs": CIFAR10DVS}
    for kind, cls in ours.items():
        assert cls.sensor_size == tuple(theirs[kind].sensor_size) == TONIC_SENSOR[kind]
        assert len(cls.classes) == len(theirs[kind].classes)


def test_nmnist_events_equal_tonics_reader():
    """The events of a real N-MNIST file are Tonic's: ``tonic.io.read_mnist_file`` with
    ``tonic.datasets.NMNIST.dtype`` gives the same x, y, t and p."""
    tonic = pytest.importorskip("tonic")
    ds = NMNIST(_nmnist_root(), train=False)
    for i in _some(ds, 4):
        ours, _ = ds[i]
        theirs = tonic.io.read_mnist_file(str(ds.samples[i][0]), dtype=tonic.datasets.NMNIST.dtype)
        assert len(ours) == len(theirs) > 1000
        for f in ("x", "y", "t", "p"):
            np.testing.assert_array_equal(ours[f].astype(np.int64), theirs[f].astype(np.int64))


# ----------------------------------------------------------------------------- Tonic's transforms


def _check_tonic_frames_equal_stc(events: np.ndarray, theirs: np.ndarray, ours: np.ndarray, steps: int) -> bool:
    """``ToFrame(n_time_bins=T)`` cuts ``[t_first, t_first + T * (D // T))`` (``D`` the span) into
    ``T`` half-open windows of ``D // T`` us and drops the rest; STC's ``by='time'`` steps are
    ``min((t - t_first) * T // D, T - 1)``. Where ``T`` divides ``D`` the windows are the same and
    only the events stamped ``t_last`` differ (STC keeps them in its last step): then check that
    exactly, and return True. Always: STC counts every event once."""
    assert ours.sum() == len(events)
    t = events["t"].astype(np.int64)
    span = int(t[-1] - t[0])
    if span == 0 or span % steps:
        return False
    w, h = ours.shape[-1], ours.shape[-2]
    at_end = stc(events[t == t[-1]], (w, h), 1)[0]
    np.testing.assert_array_equal(ours[:-1], theirs[:-1])
    np.testing.assert_array_equal(ours[-1], theirs[-1] + at_end)
    return True


@pytest.mark.parametrize("kind", KINDS)
def test_tonic_compose_denoise_to_frame(kind, trees):
    tonic = pytest.importorskip("tonic")
    plain = make(kind, trees)
    denoise = tonic.transforms.Denoise(filter_time=10_000)
    theirs_ds = make(kind, trees, transform=tonic.transforms.Compose([
        denoise, tonic.transforms.ToFrame(sensor_size=plain.sensor_size, n_time_bins=2)]))
    ours_ds = make(kind, trees, transform=tonic.transforms.Compose([denoise, STC(plain.sensor_size, 2)]))
    w, h, p = plain.sensor_size
    indices = range(len(plain)) if kind != "nmnist" else range(40)
    compared = 0
    for i in indices:
        (theirs, t1), (ours, t2) = theirs_ds[i], ours_ds[i]
        assert t1 == t2 == plain.targets[i]
        kept = denoise(plain[i][0])
        assert theirs.shape == ours.shape == (2, p, h, w)
        compared += _check_tonic_frames_equal_stc(kept, theirs, ours, 2)
    assert compared >= 2, "no sample's span was a multiple of the two bins"


@pytest.mark.parametrize("kind", KINDS)
def test_tonic_event_transforms_take_fewstep_events(kind, trees):
    """A few of Tonic's event-to-event transforms on fewstep's arrays, then fewstep's STC."""
    tonic = pytest.importorskip("tonic")
    T = tonic.transforms
    plain = make(kind, trees)
    size = plain.sensor_size
    chain = T.Compose([T.RandomFlipLR(sensor_size=size, p=1.0), T.RefractoryPeriod(delta=1_000),
                       T.CenterCrop(sensor_size=size, size=size[:2]), STC(size, 3)])
    ds = make(kind, trees, transform=chain)
    for i in _some(ds, 3):
        frames, _ = ds[i]
        events = T.RefractoryPeriod(delta=1_000)(T.RandomFlipLR(sensor_size=size, p=1.0)(plain[i][0]))
        np.testing.assert_array_equal(frames, stc(events, size, 3))


# ----------------------------------------------------------------------------- caching and loading


@pytest.mark.parametrize("kind", KINDS)
def test_disk_cached_dataset_round_trip(kind, trees, tmp_path):
    tonic = pytest.importorskip("tonic")
    ds = make(kind, trees)
    cached = tonic.DiskCachedDataset(ds, cache_path=str(tmp_path / "cache"))
    assert len(cached) == len(ds)
    indices = _some(ds, 4)
    for i in indices:
        first = cached[i]  # written to <cache>/<i>_0.hdf5, then read back
        assert (tmp_path / "cache" / f"{i}_0.hdf5").is_file()
        again = cached[i]  # served from the file
        events, target = ds[i]
        for got, label in (first, again):
            assert got.dtype.names == ("x", "y", "t", "p") and label == target
            assert got.tolist() == events.tolist()
    # a transform on top of the cache, Tonic's usual pattern: cache the raw events, bin on load
    binned = tonic.DiskCachedDataset(ds, cache_path=str(tmp_path / "cache"), transform=STC(ds.sensor_size, 2))
    frames, target = binned[indices[0]]
    np.testing.assert_array_equal(frames, stc(ds[indices[0]][0], ds.sensor_size, 2))
    # and a transformed dataset cached: the frames come back as they went in
    framed = make(kind, trees, transform=STC(ds.sensor_size, 2))
    frames_cache = tonic.DiskCachedDataset(framed, cache_path=str(tmp_path / "frames"))
    for i in indices:
        np.testing.assert_array_equal(frames_cache[i][0], framed[i][0])
        np.testing.assert_array_equal(frames_cache[i][0], framed[i][0])


@pytest.mark.parametrize("kind", KINDS)
def test_datasets_pickle_with_their_transforms(kind, trees):
    """What a ``DataLoader`` worker started by ``spawn`` / ``forkserver`` needs."""
    ds = make(kind, trees, transform=STC(make(kind, trees).sensor_size, 2))
    ds[0]  # a Gesture dataset pickles with its cached recording too
    clone = pickle.loads(pickle.dumps(ds))
    for i in _some(ds, 3):
        np.testing.assert_array_equal(clone[i][0], ds[i][0])
        assert clone[i][1] == ds[i][1]


@pytest.mark.parametrize("kind", KINDS)
def test_multi_worker_dataloader(kind, trees):
    plain = make(kind, trees)
    n = min(len(plain), 24)
    subset = torch.utils.data.Subset(plain, range(n))
    w, h, _ = plain.sensor_size
    expected = np.stack([stc(plain[i][0], (w, h), 2) for i in range(n)])
    targets = torch.tensor(plain.targets[:n])

    # raw events in the workers, packed by collate_events, STC of the whole batch in the main process
    loader = torch.utils.data.DataLoader(subset, batch_size=4, num_workers=2, collate_fn=collate_events)
    got, labels = [], []
    for (events, offsets), y in loader:
        assert events.dtype == EVENT_DTYPE and offsets[0] == 0 and offsets[-1] == len(events)
        currents = stc_batch((events, offsets), plain.sensor_size, 2)  # time-major [T, B, 2, H, W]
        assert currents.shape[:2] == (2, len(y))
        got.append(currents.transpose(0, 1).numpy())
        labels.append(y)
    np.testing.assert_array_equal(np.concatenate(got), expected)
    assert torch.equal(torch.cat(labels), targets)

    # STC in the workers: fixed-size frames batch with the default collate ([B, T, 2, H, W])
    framed = torch.utils.data.Subset(make(kind, trees, transform=STC(plain.sensor_size, 2)), range(n))
    loader = torch.utils.data.DataLoader(framed, batch_size=4, num_workers=2)
    batches = list(loader)
    np.testing.assert_array_equal(torch.cat([x for x, _ in batches]).numpy(), expected)
    assert torch.equal(torch.cat([y for _, y in batches]), targets)


def test_tonic_pad_tensors_collate(trees):
    """Tonic's own collate (``PadTensors``, time-major with ``batch_first=False``) over frames of
    different lengths from ``ToFrame(time_window=...)``, in two workers."""
    tonic = pytest.importorskip("tonic")
    plain = make("dvsgesture", trees)
    to_frame = tonic.transforms.ToFrame(sensor_size=plain.sensor_size, time_window=5_000)
    ds = make("dvsgesture", trees, transform=to_frame)
    lengths = [len(ds[i][0]) for i in range(len(ds))]
    assert len(set(lengths)) > 1
    loader = torch.utils.data.DataLoader(ds, batch_size=len(ds), num_workers=2,
                                         collate_fn=tonic.collation.PadTensors(batch_first=False))
    (frames, targets), = list(loader)
    assert frames.shape == (max(lengths), len(ds), 2, 128, 128)  # [T, B, P, H, W]
    for b in range(len(ds)):
        np.testing.assert_array_equal(frames[: lengths[b], b].numpy(), ds[b][0])
        assert frames[lengths[b]:, b].sum() == 0
    assert targets.tolist() == plain.targets
