"""The embedded digits ship inside the package (no scikit-learn at run time) and are scikit-learn's."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from fewstep.data.digits import embedded_digits, load_digits


def test_embedded_digits_shape_range_and_content():
    images, labels = embedded_digits()
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8
    assert labels.shape == (1797,) and labels.dtype == np.uint8
    assert images.max() == 16 and images.min() == 0
    assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    # a fingerprint of the exact bytes, so a re-encoded or truncated file fails here
    digest = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
    assert digest == EXPECTED_SHA256


def test_embedded_digits_are_read_only():
    images, _ = embedded_digits()
    with pytest.raises(ValueError):
        images[0, 0, 0] = 1


def test_embedded_digits_equal_scikit_learn():
    datasets = pytest.importorskip("sklearn.datasets", reason="scikit-learn not installed: nothing to compare with")
    d = datasets.load_digits()
    images, labels = embedded_digits()
    np.testing.assert_array_equal(images, d.images)
    np.testing.assert_array_equal(labels, d.target)


def test_load_digits_does_not_import_scikit_learn():
    import subprocess
    import sys

    code = ("import sys; from fewstep.data.digits import load_digits; s = load_digits(); "
            "print(len(s.train), len(s.test), 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1438", "359", "False"]


def test_split_sizes_are_stable():
    s = load_digits()
    assert (len(s.train), len(s.test)) == (1438, 359)


EXPECTED_SHA256 = "87ff0c9e40dc7e2c0e34e7257799c2e3f3aec1a016363bb11cad869ec428a826"
