"""StreamingClassifier: step-by-step predictions equal the multi-step model's; events to current;
the example script runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fewstep.events.types import make_events
from fewstep.infer import StreamingClassifier, events_to_current
from fewstep.infer.streaming import _histogram
from fewstep.models import build_model
from fewstep.neurons import NeuronSpec, SpikingNeuron, reset_net

ROOT = Path(__file__).resolve().parents[1]


def lively_model(input_shape, timesteps, classes=4):
    torch.manual_seed(5)
    model = build_model("small_cnn", num_classes=classes, input_shape=input_shape, timesteps=timesteps,
                        neuron=NeuronSpec(), channels=(4, 8), hidden=16)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(10.0)
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(1.5, 3.0)
                m.running_mean.uniform_(-0.2, 0.2)
    return model.eval()


def test_static_stream_equals_multistep_cumulative_prediction():
    model = lively_model((1, 8, 8), 5)
    x = torch.randn(6, 1, 8, 8) * 2
    with torch.no_grad():
        cum = model(x).cumsum(0)
    reset_net(model)
    with StreamingClassifier(model) as clf:
        for t in range(5):
            pred, conf = clf.feed(x)  # direct encoding: the same frame every step
            assert torch.equal(pred, cum[t].argmax(-1))
            torch.testing.assert_close(conf, cum[t].softmax(-1).amax(-1), rtol=1e-5, atol=1e-6)
        assert clf.steps == 5
        assert clf.confident(1.0).all() and not clf.confident(0.0).any()
    assert model.step_mode == "m"  # given back in multi-step mode
    assert all(m.v is None for m in model.modules() if isinstance(m, SpikingNeuron))


def test_sequence_stream_equals_multistep_and_reset():
    model = lively_model((2, 8, 8), 4)
    x = torch.rand(4, 3, 2, 8, 8) * 3
    with torch.no_grad():
        cum = model(x).cumsum(0)
    reset_net(model)
    clf = StreamingClassifier(model)
    for round_ in range(2):  # reset gives a fresh stream
        clf.reset()
        for t in range(4):
            pred, conf = clf.feed(x[t])
            assert torch.equal(pred, cum[t].argmax(-1)), (round_, t)
            torch.testing.assert_close(conf, cum[t].softmax(-1).amax(-1), rtol=1e-5, atol=1e-6)
    # one sample, unbatched: plain numbers
    clf.reset()
    p, c = clf.feed(x[0, 1].numpy())
    assert isinstance(p, int) and isinstance(c, float) and p == int(cum[0, 1].argmax())
    with pytest.raises(ValueError, match="reset"):
        clf.feed(x[1])  # batch of 3 into a stream of 1
    clf.close()


def test_normalisation_and_uint8_frames():
    model = lively_model((1, 8, 8), 3)
    img = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    ref = (img.float() / 255.0 - 0.3) / 0.4
    with torch.no_grad():
        cum = model(ref).cumsum(0)
    reset_net(model)
    with StreamingClassifier(model, mean=(0.3,), std=(0.4,)) as clf:
        for t in range(3):
            pred, _ = clf.feed(img)
            assert torch.equal(pred, cum[t].argmax(-1))


def events(n=400, w=12, h=10, seed=0):
    rng = np.random.default_rng(seed)
    return make_events(rng.integers(0, w, n), rng.integers(0, h, n), np.sort(rng.integers(0, 10_000, n)),
                       rng.integers(0, 2, n))


def test_events_to_current_counts_events():
    ev = events()
    cur = events_to_current(ev, (12, 10))
    assert cur.shape == (2, 10, 12) and cur.dtype == np.float32 and cur.sum() == len(ev)
    np.testing.assert_array_equal(cur, _histogram(ev, (12, 10)))  # the fallback agrees
    pooled = events_to_current(ev, (12, 10), spatial_factor=2)
    assert pooled.shape == (2, 5, 6) and pooled.sum() == len(ev)
    assert events_to_current(ev[:0], (12, 10)).sum() == 0


def test_feed_events_equals_feeding_the_current():
    model = lively_model((2, 10, 12), 3)
    slices = [[events(seed=10 * k + b) for b in range(2)] for k in range(3)]
    a, b = StreamingClassifier(model), None
    outs = [a.feed_events(s, (12, 10)) for s in slices]
    a.close()
    b = StreamingClassifier(model)
    for (pred, conf), s in zip(outs, slices):
        cur = torch.from_numpy(np.stack([events_to_current(e, (12, 10)) for e in s]))
        p2, c2 = b.feed(cur)
        assert torch.equal(pred, p2) and torch.equal(conf, c2)
    b.reset()
    p, c = b.feed_events(slices[0][0], (12, 10))  # one stream: plain numbers
    assert p == int(outs[0][0][0]) and c == pytest.approx(float(outs[0][1][0]))
    b.close()


def test_example_script_runs():
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "stream_events.py"), "--slices", "3", "--train-iters", "2"],
                          capture_output=True, text=True, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "slice 1:" in proc.stdout and "confidence" in proc.stdout
