r"""Small real data sets shipped with the package (no download).

``digits``: the optical recognition of handwritten digits data (E. Alpaydin, C. Kaynak, UCI Machine Learning
Repository, 1998, CC BY 4.0; the test part, optdigits.tes, as scikit-learn's ``load_digits`` ships it):
1797 images of 8 x 8 pixels with integer values 0..16 (counts of set pixels in 4 x 4 blocks of 32 x 32
bitmaps), labels 0..9 (class counts 178, 182, 177, 183, 181, 182, 181, 179, 174, 180).

>>> data = digits()                                   # doctest: +SKIP
>>> data.x_train.shape, data.y_train.shape            # (1000, 8, 8, 1), (1000, 10)
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np

from .. import _checks

N_DIGITS = 1797


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The raw data: images (1797, 8, 8) uint8 with values 0..16 and labels (1797,) uint8."""
    with resources.files(__name__).joinpath("digits.npz").open("rb") as f, np.load(f) as data:
        return data["images"], data["labels"]


@dataclass(frozen=True)
class Split:
    """A train/test split: inputs ``x_*`` (N, 8, 8, 1) (channels last, as ``stax.Conv`` reads them), one-hot
    targets ``y_*`` (N, 10) centred to mean zero (``e_k - 1/10``), integer ``labels_*``."""

    x_train: np.ndarray
    y_train: np.ndarray
    labels_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    labels_test: np.ndarray

    def flat(self) -> tuple[np.ndarray, np.ndarray]:
        """The inputs as vectors (N, 64), for dense networks."""
        return self.x_train.reshape(len(self.x_train), -1), self.x_test.reshape(len(self.x_test), -1)

    def __repr__(self) -> str:
        return f"Split({len(self.x_train)} train, {len(self.x_test)} test, inputs {self.x_train.shape[1:]})"


def digits(n_train: int = 1000, n_test: int | None = None, seed: int = 0) -> Split:
    r"""A fixed split of the digits: a permutation drawn with ``numpy.random.default_rng(seed)``, the first
    ``n_train`` images for training and the next ``n_test`` (None: all the others) for testing.  Pixels are
    scaled to zero mean and unit variance over the whole data set, so that ``x . x' / d`` is O(1) as the
    kernels' input convention (:math:`K^{(0)} = x \cdot x' / d`) expects."""
    n_train = _checks.positive_int("n_train", n_train)
    if n_train >= N_DIGITS:
        raise ValueError(f"n_train must leave test images: at most {N_DIGITS - 1} of {N_DIGITS}; got {n_train}")
    n_test = N_DIGITS - n_train if n_test is None else _checks.positive_int("n_test", n_test)
    if n_train + n_test > N_DIGITS:
        raise ValueError(f"n_train + n_test = {n_train + n_test} exceeds the {N_DIGITS} images")
    images, labels = load_digits()
    x = images.astype(np.float64)
    x = ((x - x.mean()) / x.std())[..., None]
    order = np.random.default_rng(seed).permutation(N_DIGITS)
    train, test = order[:n_train], order[n_train:n_train + n_test]
    y = np.eye(10)[labels] - 0.1
    lab = labels.astype(np.int64)
    return Split(x[train], y[train], lab[train], x[test], y[test], lab[test])
