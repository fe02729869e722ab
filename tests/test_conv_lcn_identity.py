"""A CNN with a Flatten readout has the NNGP of the same network with unshared, locally connected weights (Novak et al.
2019, "Bayesian deep convolutional networks with many channels are Gaussian processes", sec. 5.1): at infinite width
the readout only sees same-position covariances, which weight sharing does not change.

Judge: the Monte Carlo of locally connected networks (LCN) written out in this test (a weight matrix and a bias per
output position, no sharing), at three channel counts, extrapolated in 1/channels by weighted least squares, against
the CNN-GP of the convolutional description from ``stax`` ``kernel_fn`` (4 standard errors).
"""

import math

import numpy as np
import pytest

from ntk_theory import stax
from ntk_theory.validation.fits import weighted_fit

W1, B1, W2, B2, WOUT, BOUT = 1.4, 0.2, 1.3, 0.1, 1.2, 0.3


def _patches(x, size):
    """(N, P_out, size * C) windows of a VALID stride-1 1-D convolution of x (N, P, C)."""
    N, P, C = x.shape
    return np.stack([x[:, p:p + size, :].reshape(N, size * C) for p in range(P - size + 1)], axis=1)


def _lcn_nngp(X, channels, networks, rng, batch=100):
    """Per network, the readout's conditional second moment C_b + C_W mean_(p, c) s(z2) s(z2') of an LCN."""
    values = []
    for start in range(0, networks, batch):
        S = min(batch, networks - start)
        p1 = _patches(X, 3)  # (N, 4, 6)
        w1 = rng.standard_normal((S, p1.shape[1], p1.shape[2], channels))
        b1 = rng.standard_normal((S, p1.shape[1], channels))
        z1 = W1 / math.sqrt(p1.shape[2]) * np.einsum("npk,spkc->snpc", p1, w1) + B1 * b1[:, None]
        h1 = np.maximum(z1, 0.0)  # (S, N, 4, C)
        p2 = np.stack([h1[:, :, p:p + 2, :].reshape(S, len(X), 2 * channels) for p in range(3)], axis=2)
        w2 = rng.standard_normal((S, 3, 2 * channels, channels))
        b2 = rng.standard_normal((S, 3, channels))
        z2 = W2 / math.sqrt(2 * channels) * np.einsum("snpk,spkc->snpc", p2, w2) + B2 * b2[:, None]
        h2 = np.maximum(z2, 0.0).reshape(S, len(X), -1)  # Flatten: (S, N, 3 C)
        values.append(BOUT**2 + WOUT**2 * np.einsum("sak,sbk->sab", h2, h2) / h2.shape[2])
    return np.concatenate(values)


@pytest.mark.slow
def test_flattened_cnn_has_the_nngp_of_its_locally_connected_network():
    rng = np.random.default_rng(11)
    X = rng.standard_normal((3, 6, 2))
    net = stax.serial(stax.Conv(64, (3,), W_std=W1, b_std=B1), stax.Relu(), stax.Conv(64, (2,), W_std=W2, b_std=B2),
                      stax.Relu(), stax.Flatten(), stax.Dense(1, W_std=WOUT, b_std=BOUT))
    K = net.kernel_fn(X, None, "nngp")
    widths, means, errors = (32, 64, 128), [], []
    for n in widths:
        v = _lcn_nngp(X, n, 4000, rng)
        means.append(v.mean(axis=0))
        errors.append(v.std(axis=0, ddof=1) / math.sqrt(len(v)))
    coef, se, chi2 = weighted_fit(widths, np.array(means), np.array(errors), powers=(0, 1))
    assert np.all(np.isfinite(se)) and np.all(se > 0)
    z = (coef[0] - K) / se[0]
    assert np.max(np.abs(z)) < 4, f"LCN Monte Carlo vs CNN-GP: z = {z}"
    # the check has power: a 3% change of the kernel is detected
    assert np.min(np.abs((coef[0] - 1.03 * K) / se[0])) > 4
