"""Finite-width predictions against the reference network's Monte Carlo (slow, statistical).

The n-scaled covariances n Cov(Theta, Theta) and n kappa_4(f) are measured at widths 32, 64, 128
and extrapolated as a + b/n by weighted least squares (the O(1/n^2) terms are visible at n = 32);
the intercept must agree with the prediction within 4 standard errors."""

import numpy as np
import pytest

from ntk_theory.finite_width import finite_width
from ntk_theory.montecarlo import sample_statistics

X2 = np.array([[0.8, -0.5, 1.1], [0.3, 0.9, -0.4]])
WIDTHS = (32, 64, 128)
ENTRIES = [(0, 0, 0, 0), (0, 0, 1, 1), (0, 1, 0, 1), (0, 0, 0, 1), (0, 1, 1, 1), (1, 1, 1, 1)]


def _fit_intercept(ws, y, e):
    x = 1.0 / np.asarray(ws, dtype=float)
    A = np.stack([np.ones_like(x), x], 1) / e[:, None]
    coef, *_ = np.linalg.lstsq(A, y / e, rcond=None)
    return coef[0], float(np.sqrt(np.linalg.inv(A.T @ A)[0, 0]))


@pytest.mark.slow
@pytest.mark.parametrize("act, C_W, C_b, param", [
    ("relu", 2.0, 0.0, "unit"), ("tanh", 1.5, 0.1, "ntk"), ("erf", 1.0, 0.05, "ntk")])
def test_ntk_covariance_and_output_cumulant(act, C_W, C_b, param):
    pred = finite_width(act, X2, 3, C_W=C_W, C_b=C_b, param=param)
    runs = [sample_statistics(X2, act, 3, n, C_W=C_W, C_b=C_b, param=param, samples=40_000, seed=7 + n, progress=False) for n in WIDTHS]
    for name, P in (("ntk_covariance", pred.ntk_covariance), ("output_cumulant", pred.output_cumulant)):
        for idx in ENTRIES:
            y = np.array([n * r[name].value[idx] for n, r in zip(WIDTHS, runs)])
            e = np.array([n * r[name].stderr[idx] for n, r in zip(WIDTHS, runs)])
            a, se = _fit_intercept(WIDTHS, y, e)
            assert abs(a - P[idx]) <= 4 * se, (name, idx, a, se, P[idx])
