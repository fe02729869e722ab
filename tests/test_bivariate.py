"""Covariance derivatives of kinked activations by Gaussian integration by parts
(ntk_theory.gaussian.bivariate) against independent references, within the reported errors:
the SymPy derivatives of the closed-form arc-cosine kernels (relu, leaky_relu: deltas included)
and, for ELU, scipy quadratures of the derivative products written out by hand (the delta of
s'' as its Gaussian conditional expectation)."""

import math

import numpy as np
import pytest
from scipy import integrate

from ntk_theory.activations import activation
from ntk_theory.finite_width.twopoint import TwoPoint
from ntk_theory.gaussian import bivariate

K11 = np.array([1.3, 2.0, 0.5, 4.0])
K22 = np.array([0.8, 2.1, 3.0, 0.2])
K12 = np.array([-0.35, 1.9, 0.1, 0.85])


def _closed_form_orders(tp):
    """The (m, n) expectations of bivariate.ORDERS from the closed-form pair derivatives."""
    pd = tp.pairs(K11, K22, K12)
    return np.stack([pd.value, 2 * pd.grad[:, 0], 2 * pd.grad[:, 1], pd.grad[:, 2], 4 * pd.hess[:, 0, 0],
                     pd.hess[:, 2, 2], 2 * pd.hess[:, 0, 2], 2 * pd.hess[:, 1, 2], 4 * pd.hess[:, 1, 1]], axis=1)


@pytest.mark.parametrize("name, a", [("relu", 0.0), ("leaky_relu(1/5)", 0.2)])
def test_against_closed_forms(name, a):
    act = activation(name)
    assert act.kinks == (0.0,)
    for which, f in (("ss", lambda z: np.where(z > 0, z, a * z)), ("dd", lambda z: np.where(z > 0, 1.0, a))):
        tp = TwoPoint(act, which)
        assert tp.closed_form
        ref = _closed_form_orders(tp)
        val, err = bivariate.expect_derivatives(f, (0.0,), K11, K22, K12)
        assert np.all(err < 1e-7)
        assert np.all(np.abs(val - ref) <= err + 1e-13 * (1 + np.abs(ref))), (which, np.abs(val - ref) / err)


def _elu(a):
    s = lambda z: z if z > 0 else a * math.expm1(z)  # noqa: E731
    ds = lambda z: 1.0 if z > 0 else a * math.exp(z)  # noqa: E731
    d2_smooth = lambda z: 0.0 if z > 0 else a * math.exp(z)  # noqa: E731
    return s, ds, d2_smooth


def _gauss2(g, k11, k22, k12):
    """E[g(u, v)] by nested scipy quad, split at u = 0 and v = 0."""
    s1 = math.sqrt(k11)
    rho = k12 / math.sqrt(k11 * k22)
    c = math.sqrt(1 - rho * rho)
    phi = lambda t: math.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)  # noqa: E731

    def inner(x):
        y0 = (-rho * x) / c  # v = 0
        h = lambda y: g(s1 * x, math.sqrt(k22) * (rho * x + c * y)) * phi(y)  # noqa: E731
        return sum(integrate.quad(h, lo, hi, epsabs=1e-14, epsrel=1e-13, limit=200)[0]
                   for lo, hi in ((-10, min(y0, 10)), (max(y0, -10), 10)) if hi > lo)

    return sum(integrate.quad(lambda x: inner(x) * phi(x), lo, hi, epsabs=1e-14, epsrel=1e-13, limit=200)[0]
               for lo, hi in ((-10, 0), (0, 10)))


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
def test_elu_against_hand_written_quadrature():
    """ELU(a): E[s s], E[s' s'] (order (1, 1)) and E[s'' s] (order (2, 0)), where s'' = a e^u 1(u < 0)
    + (1 - a) delta(u): E[s''(u) s(v)] = E[a e^u 1(u<0) s(v)] + (1 - a) p_u(0) E[s(v) | u = 0],
    E[s(v) | u = 0] a 1-D Gaussian expectation (mean 0, variance k22 - k12^2 / k11)."""
    a = 0.5
    s, ds, d2 = _elu(a)
    fs = activation("elu(1/2)")
    f = TwoPoint(fs, "ss")._numpy_derivatives[0]
    k11, k22, k12 = 1.3, 0.8, -0.35
    val, err = bivariate.expect_derivatives(f, (0.0,), [k11], [k22], [k12])
    order = {mn: i for i, mn in enumerate(bivariate.ORDERS)}
    ref00 = _gauss2(lambda u, v: s(u) * s(v), k11, k22, k12)
    ref11 = _gauss2(lambda u, v: ds(u) * ds(v), k11, k22, k12)
    cvar = k22 - k12 * k12 / k11
    cond = sum(integrate.quad(lambda t: s(t) * math.exp(-0.5 * t * t / cvar) / math.sqrt(2 * math.pi * cvar),
                              lo, hi, epsabs=1e-15, epsrel=1e-14)[0] for lo, hi in ((-30, 0), (0, 30)))
    ref20 = _gauss2(lambda u, v: d2(u) * s(v), k11, k22, k12) + (1 - a) * cond / math.sqrt(2 * math.pi * k11)
    for mn, ref in (((0, 0), ref00), ((1, 1), ref11), ((2, 0), ref20)):
        i = order[mn]
        assert abs(val[0, i] - ref) <= err[0, i] + 1e-12, (mn, val[0, i], ref, err[0, i])


def test_parallel_inputs_refused():
    with pytest.raises(ValueError, match="singular"):
        bivariate.expect_derivatives(np.abs, (0.0,), [1.0], [1.0], [1.0])
