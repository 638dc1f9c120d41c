"""channel_stats: the one normalisation helper of the image datasets (imagefolder, tinyimagenet)."""

import numpy as np

from fewstep.data.channel_stats import channel_stats


def test_matches_a_float64_reference():
    x = np.random.default_rng(0).integers(0, 256, (40, 3, 6, 5), dtype=np.uint8)
    mean, std = channel_stats(x)
    f = x.astype(np.float64) / 255.0
    np.testing.assert_allclose(mean, f.mean(axis=(0, 2, 3)), atol=6e-5)
    np.testing.assert_allclose(std, f.std(axis=(0, 2, 3)), atol=6e-5)


def test_constant_channel_and_empty_set_never_give_std_zero():
    mean, std = channel_stats(np.full((2, 2, 3, 3), 51, np.uint8))
    assert mean == (0.2, 0.2) and std == (1.0, 1.0)
    assert channel_stats(np.zeros((0, 3, 4, 4), np.uint8)) == ((0.0,) * 3, (1.0,) * 3)


def test_non_contiguous_input():
    x = np.random.default_rng(1).integers(0, 256, (8, 6, 4, 4), dtype=np.uint8)[:, ::2]
    assert channel_stats(x) == channel_stats(np.ascontiguousarray(x))
