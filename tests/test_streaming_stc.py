"""Streaming reproduces offline STC exactly, for every integration and binning mode: STCStream, fed
events in chunks of any size, gives the T currents of ``stc(all_events)`` bit for bit;
``events_to_current`` refuses the one case it cannot reproduce from a slice (exp with kappa < 1)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fewstep.events.compression import stc
from fewstep.events.types import make_events

SENSOR = (13, 9)


def random_stream(rng: np.random.Generator, n: int, span: int = 100_000, ties: bool = False) -> np.ndarray:
    t = np.sort(rng.integers(0, span, n)) + 1_000
    if ties:
        t = (t // 5_000) * 5_000
    return make_events(rng.integers(0, SENSOR[0], n), rng.integers(0, SENSOR[1], n), t, rng.integers(0, 2, n))


def chunks(ev: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    cuts = np.sort(rng.integers(0, len(ev) + 1, rng.integers(0, 8)))
    return np.split(ev, cuts)


def streamed(ev: np.ndarray, rng: np.random.Generator, timesteps: int, by: str, **options) -> np.ndarray:
    from fewstep.infer import STCStream

    geometry = ({"t_first": int(ev["t"][0]), "t_last": int(ev["t"][-1])} if by == "time"
                else {"num_events": len(ev)})
    stream = STCStream(SENSOR, timesteps, by=by, **geometry, **options)
    out = []
    for c in chunks(ev, rng):
        out += stream.push(c)
    out += stream.flush()
    assert len(out) == timesteps
    return np.stack(out)


MODES = [
    {"integration": "sum"},
    {"integration": "exp", "kappa": 0.8, "fine_bins_per_step": 3},
    {"integration": "exp", "kappa": 0.55, "fine_bins_per_step": 10},
    {"integration": "exp", "kappa": 1.0},
    {"integration": "exp", "kappa": 0.7, "fine_bins_per_step": 4, "spatial_factor": 2},
    {"integration": "sum", "spatial_factor": 3},
]


@pytest.mark.parametrize(("by", "options"), list(itertools.product(["time", "count"], MODES)))
@pytest.mark.parametrize("timesteps", [1, 2, 4, 7])
def test_stream_equals_offline_stc(by, options, timesteps):
    rng = np.random.default_rng(timesteps * 31 + len(options))
    for trial in range(6):
        n = int(rng.choice([0, 1, 5, 60, 700]))
        ev = random_stream(rng, max(n, 1) if by == "time" else n, ties=trial % 2 == 1)
        offline = stc(ev, SENSOR, timesteps, by=by, backend="numpy", **options)
        assert np.array_equal(streamed(ev, rng, timesteps, by, **options), offline), (by, options, n, trial)
        assert np.array_equal(offline, stc(ev, SENSOR, timesteps, by=by, **options))  # every backend agrees


def test_steps_come_out_as_soon_as_their_window_closes():
    from fewstep.infer import STCStream

    ev = make_events([0, 1, 2, 3], [0, 0, 0, 0], [0, 10, 60, 100], [1, 1, 1, 1])
    stream = STCStream(SENSOR, 2, t_first=0, t_last=100, integration="exp", kappa=0.5, fine_bins_per_step=2)
    assert stream.push(ev[:2]) == []
    first = stream.push(ev[2:3])  # t = 60 is in step 2: step 1 is complete
    assert len(first) == 1
    assert stream.push(ev[3:]) == []  # the last step closes only when the stream ends
    rest = stream.flush()
    assert np.array_equal(np.stack(first + rest), stc(ev, SENSOR, 2, integration="exp", kappa=0.5,
                                                     fine_bins_per_step=2))
    count = STCStream(SENSOR, 2, num_events=4, by="count")
    assert len(count.push(ev[:2])) == 1 and len(count.push(ev[2:])) == 1 and count.flush() == []


def test_stream_refuses_what_offline_stc_would_bin_differently():
    from fewstep.infer import STCStream

    stream = STCStream(SENSOR, 2, t_first=0, t_last=100)
    with pytest.raises(ValueError, match="outside"):
        stream.push(make_events([0], [0], [101], [1]))
    stream.push(make_events([0], [0], [50], [1]))
    with pytest.raises(ValueError, match="sorted"):
        stream.push(make_events([0], [0], [40], [1]))
    with pytest.raises(ValueError, match="num_events"):
        STCStream(SENSOR, 2, by="count")
    with pytest.raises(ValueError, match="t_first"):
        STCStream(SENSOR, 2)
    short = STCStream(SENSOR, 2, by="count", num_events=3)
    short.push(make_events([0], [0], [1], [1]))
    with pytest.raises(ValueError, match="ended"):
        short.flush()


def test_events_to_current_refuses_exp_with_fine_bins():
    from fewstep.infer import events_to_current

    rng = np.random.default_rng(0)
    ev = random_stream(rng, 200)
    offline = stc(ev, SENSOR, 2, integration="exp", kappa=0.8, fine_bins_per_step=5)
    half = ev[ev["t"] < ev["t"][0] + (int(ev["t"][-1]) - int(ev["t"][0])) / 2]  # ~ step 1's events
    with pytest.raises(ValueError, match="STCStream"):
        events_to_current(half, SENSOR, integration="exp", kappa=0.8, fine_bins_per_step=5)
    # a plain sum over a window's events is exact (what events_to_current still does)
    sums = stc(ev, SENSOR, 2)
    k = np.minimum((ev["t"] - ev["t"][0]) * 2 // max(int(ev["t"][-1] - ev["t"][0]), 1), 1)
    assert np.array_equal(events_to_current(ev[k == 0], SENSOR), sums[0])
    assert offline.shape == sums.shape


def test_classifier_feeds_a_stream():
    import torch

    from fewstep.infer import STCStream, StreamingClassifier
    from fewstep.models import build_model
    from fewstep.neurons import NeuronSpec

    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=3, input_shape=(2, SENSOR[1], SENSOR[0]), timesteps=3,
                        neuron=NeuronSpec(), channels=(4, 8), hidden=16).eval()
    rng = np.random.default_rng(1)
    ev = random_stream(rng, 300)
    options = {"integration": "exp", "kappa": 0.8, "fine_bins_per_step": 4}
    offline = torch.from_numpy(stc(ev, SENSOR, 3, **options))
    with torch.no_grad():
        expected = model(offline.unsqueeze(1)).cumsum(0).argmax(-1)[:, 0]
    stream = STCStream(SENSOR, 3, t_first=int(ev["t"][0]), t_last=int(ev["t"][-1]), **options)
    with StreamingClassifier(model) as clf:
        results = []
        for c in chunks(ev, rng):
            results += clf.feed_stream(stream, c)
        results += clf.feed_stream(stream, None)
    assert [r[0] for r in results] == expected.tolist()
