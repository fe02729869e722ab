"""Mehler's formula in NumPy (ntk_theory.numerics.hermite) against nested adaptive quadrature (scipy),
within the errors it reports."""

import math

import numpy as np
import pytest
import sympy as sp
from scipy import integrate

from ntk_theory.numerics import hermite
from ntk_theory.gaussian.stable import lambdify

x = sp.Symbol("x")
TANH = [sp.diff(sp.tanh(x), x, n) for n in range(5)]


def _phi(a):
    return math.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)


def _reference(f, g, k11, k22, rho):
    """E[f(u) g(v)] by nested scipy.integrate.quad in (a, b) ~ N(0, I):
    u = sqrt(k11) a, v = sqrt(k22) (rho a + sqrt(1 - rho^2) b)."""
    s = math.sqrt(1 - rho * rho)

    def inner(a):
        return integrate.quad(lambda b: g(math.sqrt(k22) * (rho * a + s * b)) * _phi(b), -12, 12,
                              epsabs=1e-15, epsrel=1e-14, limit=400, points=[0])[0]

    return integrate.quad(lambda a: f(math.sqrt(k11) * a) * _phi(a) * inner(a), -12, 12,
                          epsabs=1e-15, epsrel=1e-14, limit=400, points=[0])[0]


@pytest.fixture(scope="module")
def tables():
    var = np.array([0.5, 4.0, 9.0])
    fs = [lambdify((x,), f) for f in TANH]
    return var, {order: [hermite.coefficients(f, var, max_order=order, tol=1e-14) for f in fs]
                 for order in (256, 1024)}


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
@pytest.mark.parametrize("m, n", [(0, 0), (4, 0), (1, 3)])
def test_expect2_tanh_derivatives(tables, m, n):
    var, tabs = tables
    fm, fn = (sp.lambdify(x, TANH[i], "math") for i in (m, n))
    ia, ib = np.array([0, 1, 0, 1, 2]), np.array([1, 2, 0, 1, 2])
    rho = np.array([-0.6, 0.3, 0.9, 0.99, 0.995])
    v256, e256 = hermite.expect2(tabs[256][m], tabs[256][n], ia, ib, rho, tol=1e-14)
    v1024, e1024 = hermite.expect2(tabs[1024][m], tabs[1024][n], ia, ib, rho, tol=1e-14)
    # degree 256 resolves the moderate entries and refuses (NaN, inf error) the long series
    assert np.isfinite(v256[:3]).all() and not np.isfinite(v256[3])
    assert np.isnan(v256[~np.isfinite(e256)]).all()
    for i in range(ia.size):
        ref = _reference(fm, fn, var[ia[i]], var[ib[i]], rho[i])
        for v, e in ((v256, e256), (v1024, e1024)):
            if np.isfinite(v[i]):
                assert e[i] < 1e-12
                assert abs(v[i] - ref) <= e[i] + 1e-14 * max(1.0, abs(ref)), (m, n, i, v[i], ref, e[i])
    assert np.isfinite(v1024[3])  # k = 4, rho = 0.99 needs more than 256 terms, fewer than 1024


def test_coefficients_of_a_polynomial_are_exact():
    """f(u) = u^3 at variance k: sqrt(k)^3 x^3 = sqrt(k)^3 (He_3 + 3 He_1), so a_1 = 3 k^(3/2),
    a_3 = sqrt(6) k^(3/2) (h_n = He_n / sqrt(n!)), all others 0; and E[u^3 v^3] = 9 k11 k22 k12 + 6 k12^3."""
    k = np.array([0.0, 0.7, 2.5])
    tab = hermite.coefficients(lambda u: u**3, k, max_order=32)
    expected = np.zeros((3, 33))
    expected[:, 1] = 3 * k**1.5
    expected[:, 3] = math.sqrt(6) * k**1.5
    assert np.allclose(tab.coef, expected, rtol=0, atol=1e-13 * (1 + k.max() ** 1.5))
    assert tab.order.tolist() == [0, 3, 3]
    k11, k22, k12 = 0.7, 2.5, -0.9
    val, err = hermite.expect2(tab, tab, np.array([1]), np.array([2]), np.array([k12 / math.sqrt(k11 * k22)]))
    exact = 9 * k11 * k22 * k12 + 6 * k12**3
    assert abs(val[0] - exact) <= err[0] + 1e-14 * abs(exact)


def test_bad_variances():
    with pytest.raises(ValueError, match="variances"):
        hermite.coefficients(np.tanh, [1.0, -0.5])
    with pytest.raises(ValueError, match="does not converge"):
        hermite.coefficients(lambda u: np.exp(u * u), [1.0])
