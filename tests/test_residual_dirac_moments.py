r"""Gaussian averages with the Dirac terms of piecewise-linear activations (ntk_theory.numerics.dirac), the
averages behind the residual Theta1_(ab) self terms of relu, leaky_relu and abs.

Judges, independent of the integration-by-parts route under test:

* Gaussian conditioning written out here: E[delta(z_1) G] = phi_(K11)(0) E[G | z_1 = 0] and
  E[delta'(z_1) g(z_2)] = -phi_(K11)(0) d/dz_1 E[g(z_2) | z_1] at 0, with the conditional ReLU averages in closed
  form (E[relu(u) relu(v)] of Cho & Saul's arc-cosine kernel, E[relu(u)] = sd / sqrt(2 pi), P(u > 0) = 1/2);
* a smooth family converging to ReLU, s_beta(x) = x (1 + erf(beta x)) / 2, whose derivative of the product
  s_beta'^2 (the coincident factors s''' s' + s''^2 of Leibniz' rule, each divergent as beta grows) is integrated
  by scipy quadrature at increasing beta and extrapolated in 1/beta;
* exact identities: for abs, s'^2 = 1, so every derivative of s'^2 averages to 0; one variable, E[(s^2)''] = 2 P(z > 0)
  for relu; E[delta(z)] = phi_K(0);
* Price's theorem, E[f''(z_1) h] = 2 dE[f h]/dS_11 and E[f_1'(z_1) f_2'(z_2) h] = dE[f_1 f_2 h]/dS_12, the right sides
  by central differences of the exact orthant moments (no Dirac term, no integration by parts): every shape of total
  order 2 of the residual self term, relu, leaky ReLU and abs (measured agreement ~4e-9 relative, the differences'
  own error).
"""

import math

import numpy as np
import pytest
from scipy import integrate, special

from ntk_theory.numerics.dirac import derivative_product_moments


def _phi0(v):
    return 1.0 / math.sqrt(2 * math.pi * v)


def _arccos(S):
    """E[relu(u) relu(v)] for (u, v) ~ N(0, S) (Cho & Saul)."""
    a, b, c = S[0, 0], S[1, 1], S[0, 1]
    r = max(-1.0, min(1.0, c / math.sqrt(a * b)))
    th = math.acos(r)
    return math.sqrt(a * b) / (2 * math.pi) * (math.sin(th) + (math.pi - th) * r)


def _conditional(S, given):
    rest = [i for i in range(S.shape[0]) if i not in given]
    A, B, C = S[np.ix_(rest, rest)], S[np.ix_(rest, given)], S[np.ix_(given, given)]
    return A - B @ np.linalg.solve(C, B.T)


S4 = np.array([[1.3, 0.5, 0.4, -0.2], [0.5, 0.9, 0.3, 0.25], [0.4, 0.3, 1.1, 0.35], [-0.2, 0.25, 0.35, 0.8]])


def test_one_variable_identities():
    K = np.array([[[1.7]]])
    assert derivative_product_moments(K, ((0, 1, 1),), 0.0, 1.0).values[0] == pytest.approx(_phi0(1.7), rel=1e-14)
    assert derivative_product_moments(K, ((2, 0, 2),), 0.0, 1.0).values[0] == pytest.approx(1.0, rel=1e-14)
    # leaky ReLU: s'' = (b - a) delta
    assert derivative_product_moments(K, ((0, 1, 1),), 0.2, 1.0).values[0] == pytest.approx(0.8 * _phi0(1.7),
                                                                                              rel=1e-14)


def test_delta_by_conditioning():
    """E[delta(z_1) relu(z_3) relu(z_4)] = phi(0) E[relu relu | z_1 = 0]; E[delta(z_1) delta(z_2) relu(z_3)
    relu(z_4)] = phi_2(0, 0) E[relu relu | z_1 = z_2 = 0]; E[delta(z_1) leaky(z_2)] = 0.8 phi(0) sd (b - a) /
    sqrt(2 pi) given z_1 = 0."""
    S = S4[np.ix_([0, 2, 3], [0, 2, 3])]
    got = derivative_product_moments(S[None], ((0, 1, 1), (1, 0, 0), (1, 0, 0)), 0.0, 1.0).values[0]
    assert got == pytest.approx(_phi0(S[0, 0]) * _arccos(_conditional(S, [0])), rel=1e-13)
    p00 = 1.0 / (2 * math.pi * math.sqrt(np.linalg.det(S4[:2, :2])))
    got = derivative_product_moments(S4[None], ((0, 1, 1), (0, 1, 1), (1, 0, 0), (1, 0, 0)), 0.0, 1.0).values[0]
    assert got == pytest.approx(p00 * _arccos(_conditional(S4, [0, 1])), rel=1e-12)
    S = S4[:2, :2]
    sd = math.sqrt(_conditional(S, [0])[0, 0])
    got = derivative_product_moments(S[None], ((0, 1, 1), (1, 0, 0)), 0.2, 1.0).values[0]
    assert got == pytest.approx(0.8 * _phi0(S[0, 0]) * sd * 0.8 / math.sqrt(2 * math.pi), rel=1e-13)


@pytest.mark.parametrize("factor", [(0, 1, 2), (0, 2, 2)])
def test_delta_prime_by_conditioning(factor):
    """E[delta'(z_1) relu(z_2)] = -phi(0) (K12 / K11) P(z_2 > 0 | z_1 = 0) = -phi(0) K12 / (2 K11): s''' of relu and
    the second derivative of the product s'^2 = H (the same function for relu)."""
    S = S4[:2, :2]
    got = derivative_product_moments(S[None], (factor, (1, 0, 0)), 0.0, 1.0).values[0]
    assert got == pytest.approx(-_phi0(S[0, 0]) * S[0, 1] / (2 * S[0, 0]), rel=1e-13)


def test_abs_coincident_factors_cancel():
    """abs: s'^2 = 1, so (s'^2)' and (s'^2)'' average to 0 against anything (Leibniz' split 2 s'' s' and
    2 s''' s' + 2 s''^2 into Dirac products at one point would not)."""
    S = S4[:3, :3]
    for k in (1, 2):
        got = derivative_product_moments(S[None], ((0, 2, k), (1, 0, 0), (1, 1, 0)), -1.0, 1.0)
        assert abs(got.values[0]) < 1e-14 and got.errors[0] < 1e-12


def _smooth_family_average(beta, S, k):
    """E[(s_beta'^2)^(k)(z_1) relu(z_2)] for s_beta(x) = x (1 + erf(beta x)) / 2, by scipy quadrature of the
    derivative (written out) against the conditional average of relu(z_2) given z_1 (closed form)."""
    a, c, b = S[0, 0], S[0, 1], S[1, 1]
    v = b - c * c / a

    def cond(x):  # E[relu(mu + sd t)], mu = (c / a) x
        mu, sd = c / a * x, math.sqrt(v)
        return mu * special.ndtr(mu / sd) + sd * math.exp(-mu * mu / (2 * v)) / math.sqrt(2 * math.pi)

    def ds(x):
        return 0.5 * (1 + math.erf(beta * x)) + beta * x * math.exp(-beta * beta * x * x) / math.sqrt(math.pi)

    def d2s(x):
        return (2 * beta - 2 * beta ** 3 * x * x) * math.exp(-beta * beta * x * x) / math.sqrt(math.pi)

    def d3s(x):
        return (4 * beta ** 5 * x ** 3 - 8 * beta ** 3 * x) * math.exp(-beta * beta * x * x) / math.sqrt(math.pi)

    def integrand(x):  # the Leibniz sum of (s'^2)^(k), the density of z_1 and the conditional average
        f = 2 * ds(x) * d2s(x) if k == 1 else 2 * d2s(x) ** 2 + 2 * ds(x) * d3s(x)
        return f * math.exp(-x * x / (2 * a)) / math.sqrt(2 * math.pi * a) * cond(x)

    w = 12.0 / beta  # the derivatives of s_beta' vanish beyond (exp(-144))
    val, _ = integrate.quad(integrand, -w, w, points=[0.0], limit=400, epsabs=1e-12, epsrel=1e-12)
    return val


@pytest.mark.parametrize("k", [1, 2])
def test_coincident_factors_are_the_smooth_limit(k):
    """The product s'^2 differentiated k = 1, 2 times (relu: delta, delta') equals the limit of the smooth family's
    Leibniz sums (2 s' s'', 2 s''^2 + 2 s' s''') against relu(z_2): quadrature at beta = 40, 80, 160, extrapolated
    in 1/beta (Richardson, powers 1 and 2), to 1e-5 relative."""
    S = S4[:2, :2]
    exact = derivative_product_moments(S[None], ((0, 2, k), (1, 0, 0)), 0.0, 1.0).values[0]
    betas = np.array([40.0, 80.0, 160.0])
    vals = np.array([_smooth_family_average(b, S, k) for b in betas])
    A = np.stack([np.ones(3), 1 / betas, 1 / betas ** 2], axis=1)
    limit = np.linalg.solve(A, vals)[0]
    assert limit == pytest.approx(exact, rel=1e-5)
    assert abs(vals[0] - exact) > 1e-4 * abs(exact)  # the family itself is still away from the limit


def test_parallel_dirac_variables_refused():
    S = np.array([[[1.0, 2.0], [2.0, 4.0]]])
    with pytest.raises(ValueError, match="linear function of the other variables"):
        derivative_product_moments(S, ((0, 1, 1), (0, 1, 1)), 0.0, 1.0)


def _price(S, powers, a, b, i, j, h=1e-4):
    """d E[prod s^p s'^q] / dS_ij (S_ij and S_ji moved together) by central differences of the exact orthant
    moments (:func:`ntk_theory.numerics.orthant.set_moments`, no Dirac term anywhere)."""
    from ntk_theory.numerics.orthant import set_moments

    E = np.zeros_like(S)
    E[i, j] = E[j, i] = h
    vals = [set_moments((S + sgn * E)[None], (powers,), a, b).values[0, 0] for sgn in (1, -1)]
    return (vals[0] - vals[1]) / (2 * h)


@pytest.mark.parametrize("a,b", [(0.0, 1.0), (0.2, 1.0), (-1.0, 1.0)])
@pytest.mark.parametrize("shape", [
    ((0, 2, 2), (1, 0, 0), (1, 0, 0), (0, 1, 0)),     # (s'^2)'' at z_1: delta' (relu), 0 (abs)
    ((1, 1, 2), (1, 0, 0), (0, 1, 0), (1, 0, 0)),     # (s s')''
    ((2, 0, 2), (0, 2, 0), (1, 0, 0)),                # (s^2)'' = 2 s'^2
    ((0, 1, 1), (0, 1, 1), (1, 0, 0), (1, 0, 0)),     # delta(z_1) delta(z_2) s s
    ((0, 2, 1), (0, 1, 1), (1, 1, 0), (1, 0, 0)),     # (s'^2)' s'' ...
    ((0, 1, 2), (0, 1, 0), (1, 0, 0)),                # s''' s' s
])
def test_second_derivatives_are_price_derivatives(shape, a, b):
    """Price's theorem, a route without integration by parts: E[f_1''(z_1) h] = 2 d E[f_1 h] / dS_11 and
    E[f_1'(z_1) f_2'(z_2) h] = d E[f_1 f_2 h] / dS_12, the right sides by central differences of exact orthant
    moments, for every shape of total order 2 the residual self term uses (coincident factors s'^2, s s', s^2 as
    one function), relu, leaky ReLU (0.2) and abs, to 1e-6 relative."""
    m = len(shape)
    S = S4[:m, :m]
    powers = tuple((p, q) for p, q, _ in shape)
    D = [i for i, f in enumerate(shape) if f[2]]
    i, j = (D[0], D[0]) if len(D) == 1 else D
    want = (2.0 if i == j else 1.0) * _price(S, powers, a, b, i, j)  # dE/dS_ii = E[f''] / 2 on the diagonal
    got = derivative_product_moments(S[None], shape, a, b).values[0]
    assert got == pytest.approx(want, rel=1e-6, abs=1e-9)
