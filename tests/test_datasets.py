"""The shipped digits data against its published description, and the split's properties."""

import numpy as np
import pytest

from ntk_theory.datasets import digits, load_digits


def test_digits_match_the_published_description():
    # UCI optdigits.tes (E. Alpaydin, C. Kaynak 1998): 1797 instances, 64 attributes in 0..16, and the class
    # distribution of its description file
    images, labels = load_digits()
    assert images.shape == (1797, 8, 8) and labels.shape == (1797,)
    assert images.min() == 0 and images.max() == 16
    assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def test_digits_equal_scikit_learns_copy():
    datasets = pytest.importorskip("sklearn.datasets")
    theirs = datasets.load_digits()
    images, labels = load_digits()
    np.testing.assert_array_equal(images.reshape(len(images), -1), theirs.data)
    np.testing.assert_array_equal(labels, theirs.target)


def test_split_is_fixed_disjoint_and_standardised():
    a, b = digits(300, 200, seed=1), digits(300, 200, seed=1)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert a.x_train.shape == (300, 8, 8, 1) and a.y_test.shape == (200, 10)
    np.testing.assert_allclose(a.y_train.sum(axis=1), 0.0, atol=1e-12)
    assert np.all(np.argmax(a.y_train, axis=1) == a.labels_train)
    flat_train, flat_test = a.flat()
    rows = {r.tobytes() for r in load_digits()[0].reshape(1797, -1)}
    assert len(rows) > 1700  # nearly all images distinct, so disjointness below is meaningful
    full = digits(1000)
    assert len(full.x_train) + len(full.x_test) == 1797
    with pytest.raises(ValueError, match="n_train"):
        digits(1797)
    with pytest.raises(ValueError, match="exceeds"):
        digits(1000, 900)
