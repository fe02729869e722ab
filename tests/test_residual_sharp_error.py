"""The residual one-input recursion's error estimate at a sharp smooth activation, x (1 + erf(beta x)) / 2.

Its two-layer averages E[s(u)^2 s(v)^2] and their covariance derivatives come from the Mehler series of s^2, which
does not converge when s varies on a scale 1/beta (the estimate was 2 .. 1e3 at beta = 16 .. 64 while the values
were right to ~1e-12); the unresolved entries now go to the graded nested quadrature, whose estimate is honest.
Reference: nested SciPy quadrature of s^2 and (s^2)'' = 2 s'^2 + 2 s s'' written by hand with scipy.special.erf.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import integrate, special

from ntk_theory.finite_width import ResidualRecursion

BETA = 16


def s(x):
    return x * (1 + special.erf(BETA * x)) / 2


def ds(x):
    return (1 + special.erf(BETA * x)) / 2 + x * BETA / np.sqrt(np.pi) * np.exp(-(BETA * x) ** 2)


def d2s(x):
    return 2 * BETA / np.sqrt(np.pi) * np.exp(-(BETA * x) ** 2) * (1 - (BETA * x) ** 2)


def pair_average(f, g, k11, k22, k12):
    """E[f(u) g(v)] by nested quad: u = sqrt(k11) z, v | u Gaussian; split on the 1/beta scale at 0."""
    c, sdc, sd1 = k12 / k11, np.sqrt(k22 - k12**2 / k11), np.sqrt(k11)

    def pieces(h, centre, w, eps):
        pts = [-14.0, centre - 8 * w, centre - w, centre, centre + w, centre + 8 * w, 14.0]
        return sum(integrate.quad(h, a, b, epsabs=eps, epsrel=1e-13, limit=200)[0] for a, b in itertools.pairwise(pts))

    def inner(u):
        return pieces(lambda t: g(c * u + sdc * t) * np.exp(-t * t / 2) / np.sqrt(2 * np.pi), -c * u / sdc,
                      1 / (BETA * sdc), 1e-15)

    return pieces(lambda z: f(sd1 * z) * inner(sd1 * z) * np.exp(-z * z / 2) / np.sqrt(2 * np.pi), 0.0,
                  1 / (BETA * sd1), 1e-14)


def test_pair_averages_of_s_squared_and_their_estimate_at_beta_16():
    rec = ResidualRecursion(f"x*(1+erf({BETA}*x))/2", 3, C_W=2.0, C_b=0.0, xi=0.8, gamma=0.6)
    k11, k22, k12 = 1.2, 1.0, 0.7
    pd = rec.squared.pairs(np.array([k11]), np.array([k22]), np.array([k12]))
    value = pair_average(lambda x: s(x) ** 2, lambda x: s(x) ** 2, k11, k22, k12)
    # dT/dk11 = E[(s^2)''(u) s(v)^2] / 2 (Price)
    d11 = pair_average(lambda x: 2 * ds(x) ** 2 + 2 * s(x) * d2s(x), lambda x: s(x) ** 2, k11, k22, k12) / 2
    assert pd.error < 1e-10
    assert abs(pd.value[0] - value) <= 1e-11 + pd.error
    assert abs(pd.grad[0, 0] - d11) <= 1e-11 + pd.error


def test_one_input_error_estimate_is_not_absurd_at_beta_16():
    """The readout's reported error (was 2.1 .. 4e2 at beta = 16) is now of the size of the actual errors of its
    averages (the test above: ~1e-12)."""
    states = ResidualRecursion(f"x*(1+erf({BETA}*x))/2", 3, C_W=2.0, C_b=0.0, xi=0.8, gamma=0.6).one_input(G0=1.0)
    assert states[-1].error < 1e-9
    assert np.isfinite(states[-1].Th1)
