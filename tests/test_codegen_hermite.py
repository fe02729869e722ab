"""Numba back end of the Hermite tables (ntk_theory.numerics.hermite_numba), Mehler's series and its
truncation order (numerics.mehler, numerics.hermite.truncation_orders) and the compiled direct quadrature
(numerics.gauss_legendre).

Every check is against something independent of the code under test: closed forms evaluated in
mpmath (50 digits) from the exact float inputs (Hermite coefficients of exp, of a polynomial and of
ReLU; the arcsine kernel of erf, E[sin u sin v], the arc-cosine kernel of ReLU, the step kernel),
or ntk_theory.numerics.quadrature.expect1/expect2 (an independent tanh-sinh quadrature in NumPy).
"""

import math

import mpmath
import numba
import numpy as np
import pytest

from ntk_theory.numerics.gauss_legendre import expect1_direct, expect2_direct
from ntk_theory.numerics.hermite import HermiteTable, truncation_orders
from ntk_theory.numerics.hermite_numba import coefficients
from ntk_theory.numerics.mehler import order_from_log_tails, series
from ntk_theory.numerics.quadrature import expect1, expect2

mpmath.mp.dps = 50
EPS = np.finfo(float).eps
NO_KINKS = np.empty(0)
KINK0 = np.zeros(1)


# ----------------------------------------------------------------------------------------------
# Test functions (numba) and their NumPy twins for expect2
# ----------------------------------------------------------------------------------------------

exp_ = numba.njit(lambda x: math.exp(x))
exp_m = numba.njit(lambda x: math.exp(-0.7 * x))
poly = numba.njit(lambda x: x * x * x - 2.0 * x + 0.5)
erf_ = numba.njit(lambda x: math.erf(x))
sin_ = numba.njit(lambda x: math.sin(x))
tanh_ = numba.njit(lambda x: math.tanh(x))
softplus_ = numba.njit(lambda x: max(x, 0.0) + math.log1p(math.exp(-abs(x))))
relu_ = numba.njit(lambda x: x if x > 0.0 else 0.0)
step_ = numba.njit(lambda x: 1.0 if x > 0.0 else (0.5 if x == 0.0 else 0.0))
elu_ = numba.njit(lambda x: x if x > 0.0 else math.expm1(x))

np_softplus = lambda z: np.logaddexp(z, 0.0)  # noqa: E731
np_elu = lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0.0)))  # noqa: E731


def mp_det(k11, k22, k12):
    """k11 k22 - k12^2 of the float inputs, exactly (50 digits hold the 106-bit products)."""
    return mpmath.mpf(k11) * mpmath.mpf(k22) - mpmath.mpf(k12) ** 2


def relu_kernel(k11, k22, k12):
    """Arc-cosine kernel sqrt(k11 k22)/(2 pi) (sin t + (pi - t) cos t), t = arccos rho (Cho & Saul)."""
    s = mpmath.sqrt(mpmath.mpf(k11) * mpmath.mpf(k22))
    rho = mpmath.mpf(k12) / s
    sin_t = mpmath.sqrt(max(mp_det(k11, k22, k12), 0)) / s
    t = mpmath.acos(max(min(rho, 1), -1))
    return s / (2 * mpmath.pi) * (sin_t + (mpmath.pi - t) * rho)


def step_kernel(k11, k22, k12):
    rho = mpmath.mpf(k12) / mpmath.sqrt(mpmath.mpf(k11) * mpmath.mpf(k22))
    return mpmath.mpf(1) / 4 + mpmath.asin(max(min(rho, 1), -1)) / (2 * mpmath.pi)


def erf_kernel(k11, k22, k12):
    """(2/pi) asin(2 k12 / sqrt((1 + 2 k11)(1 + 2 k22))) (Williams 1997)."""
    k11, k22, k12 = mpmath.mpf(k11), mpmath.mpf(k22), mpmath.mpf(k12)
    return 2 / mpmath.pi * mpmath.asin(2 * k12 / mpmath.sqrt((1 + 2 * k11) * (1 + 2 * k22)))


def sin_kernel(k11, k22, k12):
    return mpmath.exp(-(mpmath.mpf(k11) + mpmath.mpf(k22)) / 2) * mpmath.sinh(mpmath.mpf(k12))


def erf_norm2(k):
    """E[erf(u)^2], u ~ N(0, k): the erf kernel at rho = 1."""
    return float(erf_kernel(k, k, k))


def sin_norm2(k):
    return float(sin_kernel(k, k, k))


def exp_coef(c, k, n):
    """a_n of exp(c u), u = sqrt(k) x: exp(c^2 k / 2) (c sqrt(k))^n / sqrt(n!)."""
    c, k = mpmath.mpf(c), mpmath.mpf(k)
    return mpmath.exp(c * c * k / 2) * (c * mpmath.sqrt(k)) ** n / mpmath.sqrt(mpmath.factorial(n))


def sin_coef(k, n):
    """a_n of sin(u): the imaginary part of those of exp(i u): exp(-k/2) Im(i^n) k^(n/2) / sqrt(n!)."""
    if n % 2 == 0:
        return mpmath.mpf(0)
    k = mpmath.mpf(k)
    sign = 1 if n % 4 == 1 else -1
    return sign * mpmath.exp(-k / 2) * mpmath.sqrt(k) ** n / mpmath.sqrt(mpmath.factorial(n))


def relu_coef(k, n):
    """a_n of relu(sqrt(k) x): sqrt(k) phi(0), sqrt(k)/2, then (n even >= 2)
    sqrt(k) phi(0) (-1)^(n/2+1) (n-3)!! / sqrt(n!)  (from x He_n = He_(n+1) + n He_(n-1) and
    int_0^inf He_m phi = phi(0) He_(m-1)(0)); odd n >= 3 vanish."""
    sk = mpmath.sqrt(mpmath.mpf(k))
    phi0 = 1 / mpmath.sqrt(2 * mpmath.pi)
    if n == 0:
        return sk * phi0
    if n == 1:
        return sk / 2
    if n % 2:
        return mpmath.mpf(0)
    return sk * phi0 * (-1) ** (n // 2 + 1) * mpmath.fac2(n - 3) / mpmath.sqrt(mpmath.factorial(n))


def h_n(x, n):
    """Normalized probabilists' Hermite polynomials by their recurrence (NumPy, for expect1)."""
    h_prev, h = np.zeros_like(x), np.ones_like(x)
    for m in range(n):
        h_prev, h = h, (x * h - math.sqrt(m) * h_prev) / math.sqrt(m + 1)
    return h


# ----------------------------------------------------------------------------------------------
# Coefficients
# ----------------------------------------------------------------------------------------------


def test_sampled_error_estimate_is_honest_across_many_variances():
    """Only every 16th variance gets the two-rule Gauss-Hermite check; tanh at 50 variances from
    1e-2 to 1e4 (Gauss-Hermite fails somewhere in between) must still have every coefficient within
    its reported error of the quadrature of tanh(sqrt(k) x) h_n(x)."""
    ks = np.geomspace(1e-2, 1e4, 50)
    tab = coefficients(tanh_, ks, max_order=64)
    for i, k in enumerate(ks):
        for n in (1, 3, 9, 33):
            ref = expect1(lambda x: np.tanh(math.sqrt(k) * x) * h_n(x, n), 1.0, kinks=(0.0,))
            assert abs(tab.coef[i, n] - ref.value) <= tab.error[i] + ref.error + 1e-15, (k, n)


@pytest.mark.parametrize("f, c", [(exp_, 1.0), (exp_m, -0.7)])
def test_coefficients_of_exp_match_closed_form(f, c):
    ks = np.array([0.0, 0.01, 0.3, 1.0, 2.5, 6.0, 16.0])
    N = 128
    tab = coefficients(f, ks, max_order=N)
    assert isinstance(tab, HermiteTable) and tab.coef.shape == (ks.size, N + 1)
    assert tab.order.dtype == np.int64
    for i, k in enumerate(ks):
        exact = np.array([float(exp_coef(c, k, n)) if k > 0 else float(n == 0) for n in range(N + 1)])
        scale = math.exp(c * c * k)  # sqrt(E f^2)
        err = tab.coef[i] - exact
        assert np.max(np.abs(err)) <= 1e-13 * scale, (k, np.max(np.abs(err)) / scale)
        assert np.sqrt(np.sum(err**2)) <= 3 * tab.error[i] + 1e-15 * scale  # the estimate is honest
        assert tab.error[i] <= 1e-13 * scale
        assert abs(tab.norm2[i] - scale**2) <= 1e-14 * scale**2
        # order: the first m whose exact tail is below tol^2 E f^2 (the rule may be conservative by
        # the estimate of the unseen tail, never optimistic)
        tails = np.cumsum((exact**2)[::-1])[::-1]
        m_exact = int(np.argmax(np.append(tails[1:], 0.0) <= 1e-26 * scale**2))
        assert tab.order[i] == -1 or tab.order[i] >= m_exact
        if k <= 6.0:
            assert 0 <= tab.order[i] <= m_exact + 2


def test_coefficients_of_polynomial_are_finite():
    """u^3 - 2u + 1/2 at u = sqrt(k) x: x^3 = He_3 + 3 He_1 = sqrt(6) h_3 + 3 h_1."""
    ks = np.array([0.0, 0.2, 1.0, 3.7])
    tab = coefficients(poly, ks, max_order=64)
    for i, k in enumerate(ks):
        s = math.sqrt(k)
        exact = np.zeros(65)
        exact[0] = 0.5
        exact[1] = 3 * s**3 - 2 * s
        exact[3] = math.sqrt(6) * s**3
        scale = math.sqrt(np.sum(exact**2))
        assert np.max(np.abs(tab.coef[i] - exact)) <= 1e-13 * scale
        assert abs(tab.norm2[i] - scale**2) <= 1e-14 * scale**2
        assert tab.order[i] == (3 if k > 0 else 0)


def test_coefficients_with_kink_relu():
    ks = np.array([0.05, 1.0, 7.0, 150.0])
    N = 128
    tab = coefficients(relu_, ks, kinks=(0.0,), max_order=N)
    for i, k in enumerate(ks):
        exact = np.array([float(relu_coef(k, n)) for n in range(N + 1)])
        scale = math.sqrt(k / 2)
        err = np.abs(tab.coef[i] - exact)
        assert np.max(err) <= 1e-13 * scale, np.max(err) / scale
        assert np.sqrt(np.sum(err**2)) <= 3 * tab.error[i]
        assert abs(tab.norm2[i] - k / 2) <= 1e-14 * k
    # a_n ~ n^(-5/4): the tail after 128 terms is ~1e-4 of E f^2, reported honestly
    assert np.all(tab.order == -1)
    # cross-check two coefficients against the independent NumPy quadrature
    for n in (2, 7, 10):
        ref = expect1(lambda x: np.maximum(math.sqrt(7.0) * x, 0.0) * h_n(x, n), 1.0, kinks=(0.0,))
        assert abs(tab.coef[2, n] - ref.value) <= 1e-14 + ref.error


def test_order_is_honest_when_convergence_is_slow():
    """tanh at large variance and erf at k = 5 need far more than max_order terms: order -1;
    where an order is reported, the tail after it (summed from a 3x longer table) is below tol^2."""
    ks = np.array([0.05, 0.2, 0.5, 5.0, 25.0])
    short = coefficients(tanh_, ks, max_order=64)
    long = coefficients(tanh_, ks, max_order=192)
    assert short.order[-1] == -1 and short.order[-2] == -1 and long.order[-1] == -1
    assert short.order[0] >= 0
    for tab in (short, long):
        for i in np.flatnonzero(tab.order >= 0):
            tail = np.sum(long.coef[i, tab.order[i] + 1 :] ** 2)
            assert tail <= 1e-26 * tab.norm2[i] * 1.01
    erf_tab = coefficients(erf_, np.array([5.0]), max_order=128)
    assert erf_tab.order[0] == -1  # a_n ~ (10/11)^(n/2): 1e-13 needs ~600 terms


def test_coefficients_bad_input():
    with pytest.raises(ValueError):
        coefficients(tanh_, [1.0, -0.5])
    with pytest.raises(ValueError):
        coefficients(np.tanh, [1.0])
    with pytest.raises(ValueError):
        coefficients(tanh_, [1.0], max_order=-1)


# ----------------------------------------------------------------------------------------------
# Series and its order
# ----------------------------------------------------------------------------------------------


def _half_logs(tail):
    with np.errstate(divide="ignore"):
        return 0.5 * np.log(tail)


def _order(tail_a, tail_b, rho, tol=1e-13):
    """The truncation order of one entry by the Numba back end, as the compiled kernels call it."""
    lr = math.log(min(abs(rho), 1.0)) if rho != 0 else -math.inf
    return order_from_log_tails(_half_logs(tail_a), _half_logs(tail_b), lr, math.log(tol))


def _series_value(A, B, a, b, rho):
    """(M, the series of entry (a, b) truncated after degree M), the value None where M < 0."""
    M = _order(A.tail[a], B.tail[b], rho)
    return M, (series(A.coef[a], B.coef[b], rho, M) if M >= 0 else None)


def _order_by_definition(tail_a, tail_b, rho, tol):
    """The smallest M with |rho|^(M+1) sqrt(A_M B_M) <= tol, by a plain scan in 40-digit mpmath; None
    where the bound at the answer or just before it is within 1e-10 of tol (rounding decides)."""
    with mpmath.workdps(40):
        r = min(abs(mpmath.mpf(rho)), 1)
        bound = [r ** (m + 1) * mpmath.sqrt(mpmath.mpf(tail_a[m]) * mpmath.mpf(tail_b[m])) for m in range(len(tail_a))]
        M = next((m for m, b in enumerate(bound) if b <= tol), -1)
        near = [b for b in bound[max(M - 1, 0):M + 1] if b > 0] if M >= 0 else bound[-1:]
        if any(abs(b / tol - 1) < 1e-10 for b in near):
            return None
        return M


def test_truncation_order_rule_both_back_ends():
    """order_from_log_tails (Numba, one entry, logarithms) and truncation_orders (NumPy, vectorised)
    against the definition: power-law, geometric and flat tails, real tables, rho = 0 and +-1."""
    rng = np.random.default_rng(11)
    m = np.arange(129)
    tails = [np.minimum(1.0, (m + 1.0) ** -1.5), np.minimum(1.0, 0.7 ** m), np.ones(129), np.zeros(129),
             coefficients(tanh_, np.array([1.0]), max_order=128).tail[0],
             coefficients(relu_, np.array([2.0]), kinks=(0.0,), max_order=128).tail[0]]
    rhos = [0.0, 1.0, -1.0, 1e-14, 0.3, -0.77, 0.99, -0.999999] + list(rng.uniform(-1, 1, 12))
    checked = 0
    for ta in tails:
        for tb in tails:
            vec = truncation_orders(np.tile(ta, (len(rhos), 1)), np.tile(tb, (len(rhos), 1)), np.array(rhos), 1e-13)
            for rho, M_np in zip(rhos, vec):
                M_numba = _order(ta, tb, rho)
                ref = _order_by_definition(ta, tb, rho, 1e-13)
                if ref is None:
                    continue
                assert M_numba == ref and M_np == ref, (rho, M_numba, M_np, ref)
                checked += 1
    assert checked >= 600
    assert _order(np.ones(129), np.ones(129), 0.0) == 0
    assert _order(np.ones(129), np.ones(129), 1.0) == -1


def _table_pair(f, rows, cols, N=128):
    return coefficients(f, rows, max_order=N), coefficients(f, cols, max_order=N)


def _random_triples(rng, rows, cols, n, rho_max):
    i = rng.integers(0, rows.size, n)
    j = rng.integers(0, cols.size, n)
    rho = rng.uniform(-rho_max, rho_max, n)
    return i, j, rho


@pytest.mark.parametrize("name", ["erf", "sin"])
def test_series_against_closed_forms(name):
    f, kernel = (erf_, erf_kernel) if name == "erf" else (sin_, sin_kernel)
    rng = np.random.default_rng(1 if name == "erf" else 2)
    rows = np.array([0.05, 0.3, 0.8, 1.5])
    cols = np.array([0.1, 0.5, 1.0, 1.5, 2.0])
    A, B = _table_pair(f, rows, cols)
    i, j, rho = _random_triples(rng, rows, cols, 150, 0.99)
    # rho = +-1 exactly: equal variances (k12 = +-k)
    i = np.concatenate([i, [1, 2, 3, 3]])
    j = np.concatenate([j, [0, 2, 3, 3]])
    rho = np.concatenate([rho, [1.0, -1.0, 1.0, -1.0]])
    used = worst = 0
    for a, b, r in zip(i, j, rho):
        k11, k22 = rows[a], cols[b]
        k12 = r * math.sqrt(k11 * k22) if abs(r) < 1 else math.copysign(k11, r)
        if abs(r) == 1 and k11 != k22:
            continue
        M, value = _series_value(A, B, a, b, k12 / math.sqrt(k11 * k22))
        if value is None:
            continue
        used += 1
        exact = float(kernel(k11, k22, k12))
        scale = math.sqrt(A.norm2[a] * B.norm2[b])
        err = abs(value - exact)
        worst = max(worst, err / scale)
        assert err <= 1e-12 * scale
        # the budget: truncation (tol) + coefficient errors + rounding
        budget = (1e-13 * scale + A.error[a] * math.sqrt(B.norm2[b]) + B.error[b] * math.sqrt(A.norm2[a])
                  + 4 * EPS * np.sum(np.abs(A.coef[a, : M + 1] * B.coef[b, : M + 1])))
        assert err <= budget
    print(f"\n{name}: {used} of {i.size} entries by the series, worst error {worst:.1e} sqrt(Ef^2 Eg^2)")
    assert used >= 100


def test_truncation_bound_holds_for_sin():
    """|sum_(n>M) a_n b_n rho^n| <= |rho|^(M+1) sqrt(A_M B_M) with the exact coefficients of sin."""
    rng = np.random.default_rng(3)
    with mpmath.workdps(200):  # A_M = E f^2 - sum_(n<=M) a_n^2 cancels ~100 digits
        _sin_bound_checks(rng)


def _sin_bound_checks(rng):
    for _ in range(40):
        k11, k22 = rng.uniform(0.05, 3.0, 2)
        r = rng.uniform(-1, 1)
        M = int(rng.integers(1, 30))
        a = [sin_coef(k11, n) for n in range(200)]
        b = [sin_coef(k22, n) for n in range(200)]
        k12 = r * math.sqrt(k11 * k22)
        rho = mpmath.mpf(k12) / mpmath.sqrt(mpmath.mpf(k11) * mpmath.mpf(k22))
        truncated = mpmath.fsum(a[n] * b[n] * rho**n for n in range(M + 1))
        actual = abs(sin_kernel(k11, k22, k12) - truncated)
        A_M = sin_kernel(k11, k11, k11) - mpmath.fsum(x * x for x in a[: M + 1])
        B_M = sin_kernel(k22, k22, k22) - mpmath.fsum(x * x for x in b[: M + 1])
        assert actual <= abs(rho) ** (M + 1) * mpmath.sqrt(A_M * B_M) * (1 + mpmath.mpf(10) ** -30)


def test_tails_are_conservative():
    """The estimated tails A_m / E f^2 (including the extrapolated part beyond max_order) are not
    below the exact ones: exp (superexponential decay), relu (a_n^2 ~ n^-2.5, mostly beyond)."""
    N = 96
    tab = coefficients(exp_, np.array([2.0]), max_order=N)
    exact = np.array([float(exp_coef(1.0, 2.0, n) ** 2) for n in range(400)]) / math.exp(4.0)
    exact_tail = np.cumsum(exact[::-1])[::-1][1 : N + 2]
    visible = exact_tail > 1e-28  # below that the coefficients' rounding decides
    assert np.all(tab.tail[0][visible] >= exact_tail[visible] * (1 - 1e-6))
    tab = coefficients(relu_, np.array([1.0]), kinks=(0.0,), max_order=N)
    with mpmath.workdps(60):
        a2 = [relu_coef(1.0, n) ** 2 for n in range(N + 1)]
        exact_tail = [float(1 - 2 * mpmath.fsum(a2[: m + 1])) for m in range(N + 1)]
    assert np.all(tab.tail[0] >= np.array(exact_tail) * (1 - 1e-6))
    assert np.all(tab.tail[0] <= np.array(exact_tail) * 1.1)


@pytest.mark.parametrize("name", ["erf", "sin", "tanh"])
def test_truncated_series_within_tolerance_near_rho_one(name):
    """The tail-based order keeps the series within tolerance up to |rho| -> 1."""
    f = {"erf": erf_, "sin": sin_, "tanh": tanh_}[name]
    rng = np.random.default_rng(7)
    rows = np.array([0.05, 0.7, 2.0])
    cols = np.array([0.3, 1.0, 4.0])
    A, B = _table_pair(f, rows, cols)
    n_used = 0
    for t in range(12 if name == "tanh" else 60):
        a, b = rng.integers(0, 3, 2)
        r = rng.choice([-1, 1]) * (1 - 10 ** rng.uniform(-4, 0)) if t % 2 else rng.uniform(-1, 1)
        k11, k22 = rows[a], cols[b]
        k12 = r * math.sqrt(k11 * k22)
        rho = k12 / math.sqrt(k11 * k22)
        M, value = _series_value(A, B, a, b, rho)
        if value is None:
            continue
        n_used += 1
        if name == "tanh":
            ref = expect2(np.tanh, np.tanh, k11, k22, k12)
            exact, slack = ref.value, ref.error
        else:
            exact, slack = float((erf_kernel if name == "erf" else sin_kernel)(k11, k22, k12)), 0.0
        scale = math.sqrt(A.norm2[a] * B.norm2[b])
        assert abs(value - exact) <= 1e-12 * scale + slack, (k11, k22, rho, M)
    assert n_used >= 6


@pytest.mark.parametrize("name", ["tanh", "softplus"])
def test_series_and_fallback_against_expect2(name):
    f, npf = (tanh_, np.tanh) if name == "tanh" else (softplus_, np_softplus)
    rng = np.random.default_rng(4 if name == "tanh" else 5)
    rows = np.sort(rng.uniform(0.05, 5.0, 4))
    cols = np.sort(rng.uniform(0.05, 5.0, 4))
    A, B = _table_pair(f, rows, cols)
    i, j, rho = _random_triples(rng, rows, cols, 14, 1.0)
    rho[:3] = [0.2, -0.6, 0.75]
    n_series = 0
    for a, b, r in zip(i, j, rho):
        k11, k22 = rows[a], cols[b]
        k12 = r * math.sqrt(k11 * k22)
        ref = expect2(npf, npf, k11, k22, k12)
        scale = math.sqrt(A.norm2[a] * B.norm2[b])
        M = _order(A.tail[a], B.tail[b], k12 / math.sqrt(k11 * k22))
        if M >= 0:
            value = series(A.coef[a], B.coef[b], k12 / math.sqrt(k11 * k22), M)
            n_series += 1
            assert abs(value - ref.value) <= 1e-12 * scale + ref.error, (k11, k22, k12, M)
        # the fallback the kernels use where the series is too long, checked at every entry
        value, error = expect2_direct(f, f, k11, k22, k12, NO_KINKS, NO_KINKS)
        assert abs(value - ref.value) <= 1e-12 * scale + ref.error, (k11, k22, k12)
    assert n_series >= 3


# ----------------------------------------------------------------------------------------------
# Direct quadrature
# ----------------------------------------------------------------------------------------------

RHOS = (0.0, 0.5, -0.9, 0.999999, 1.0, -1.0)
VARIANCES = ((1.0, 1.0), (0.3, 2.2), (40.0, 0.02))


def _triple(k11, k22, rho):
    if abs(rho) == 1.0:  # exactly singular: k12^2 = k11 k22 in floating point
        k = math.sqrt(k11 * k22)
        return k, k, math.copysign(k, rho)
    return k11, k22, rho * math.sqrt(k11 * k22)


@pytest.mark.parametrize("name", ["relu", "step", "erf"])
def test_expect2_direct_against_closed_forms(name):
    f, kinks, kernel = {
        "relu": (relu_, KINK0, relu_kernel),
        "step": (step_, KINK0, step_kernel),
        "erf": (erf_, NO_KINKS, erf_kernel),
    }[name]
    worst = 0.0
    for k11, k22 in VARIANCES:
        for rho in RHOS:
            k11_, k22_, k12 = _triple(k11, k22, rho)
            value, error = expect2_direct(f, f, k11_, k22_, k12, kinks, kinks)
            exact = float(kernel(k11_, k22_, k12))
            scale = math.sqrt(float(kernel(k11_, k11_, k11_)) * float(kernel(k22_, k22_, k22_)))
            err = abs(value - exact)
            worst = max(worst, err / scale)
            assert err <= 1e-12 * scale, (k11_, k22_, k12, err / scale)
            assert error <= 1e-12 * scale
            assert err <= error + 4 * EPS * scale  # the estimate is an upper bound in practice
    print(f"\n{name}: worst error {worst:.1e} sqrt(Ef^2 Eg^2)")


def test_expect2_direct_elu_against_expect2():
    kinks = KINK0
    for k11, k22 in VARIANCES:
        for rho in RHOS:
            k11_, k22_, k12 = _triple(k11, k22, rho)
            value, error = expect2_direct(elu_, elu_, k11_, k22_, k12, kinks, kinks)
            ref = expect2(np_elu, np_elu, k11_, k22_, k12, kinks_f=(0.0,), kinks_g=(0.0,))
            scale = math.sqrt(
                expect1(lambda z: np_elu(z) ** 2, k11_, kinks=(0.0,)).value
                * expect1(lambda z: np_elu(z) ** 2, k22_, kinks=(0.0,)).value
            )
            assert abs(value - ref.value) <= 1e-12 * scale + ref.error, (k11_, k22_, k12)


def test_expect2_direct_mixed_functions_and_zero_variance():
    # relu x step at rho: E[relu(u) step(v)] = sqrt(k11)/(2 sqrt(2 pi)) (1 + rho)
    for k11, k22, rho in [(1.0, 1.0, 0.3), (2.0, 0.5, -0.97), (0.7, 0.7, 1.0), (0.7, 0.7, -1.0)]:
        k11_, k22_, k12 = _triple(k11, k22, rho)
        rho_ = k12 / math.sqrt(k11_ * k22_)
        value, _ = expect2_direct(relu_, step_, k11_, k22_, k12, KINK0, KINK0)
        exact = math.sqrt(k11_) / (2 * math.sqrt(2 * math.pi)) * (1 + rho_)
        assert abs(value - exact) <= 1e-13 * math.sqrt(k11_)
    # zero variances: the variable is 0
    v, e = expect2_direct(erf_, exp_, 0.0, 2.0, 0.0, NO_KINKS, NO_KINKS)
    assert v == 0.0 and e == 0.0
    v, e = expect2_direct(exp_, relu_, 0.0, 2.0, 0.0, NO_KINKS, KINK0)
    assert abs(v - math.sqrt(2.0 / (2 * math.pi))) <= 1e-15
    v, e = expect2_direct(exp_, exp_, 0.0, 0.0, 0.0, NO_KINKS, NO_KINKS)
    assert v == 1.0
    v, e = expect2_direct(exp_, exp_, 1.5, 0.0, 0.0, NO_KINKS, NO_KINKS)
    assert abs(v - math.exp(0.75)) <= 1e-14 * math.exp(0.75)
    # kinks away from 0: relu(u - 0.7) relu(v + 0.4), against the NumPy quadrature
    f = numba.njit(lambda x: max(x - 0.7, 0.0))
    g = numba.njit(lambda x: max(x + 0.4, 0.0))
    for rho in (0.3, 0.999999, -0.999):
        k12 = rho * math.sqrt(1.3 * 0.8)
        v, e = expect2_direct(f, g, 1.3, 0.8, k12, np.array([0.7]), np.array([-0.4]))
        ref = expect2(lambda z: np.maximum(z - 0.7, 0), lambda z: np.maximum(z + 0.4, 0), 1.3, 0.8, k12,
                      kinks_f=(0.7,), kinks_g=(-0.4,))
        assert abs(v - ref.value) <= 1e-13 + ref.error


def test_expect1_direct():
    for k in (0.0, 1e-6, 0.5, 3.0, 100.0):
        v, e = expect1_direct(relu_, k, KINK0)
        assert abs(v - math.sqrt(k / (2 * math.pi))) <= 1e-14 * max(math.sqrt(k), 1e-300) + 1e-300
        v, e = expect1_direct(exp_, k, NO_KINKS)
        assert abs(v - math.exp(k / 2)) <= 1e-14 * math.exp(k / 2), (k, v, math.exp(k / 2))
        v, e = expect1_direct(step_, k, KINK0)
        assert abs(v - 0.5) <= 1e-15
        assert e <= 1e-13 * max(1.0, math.exp(k / 2))


def test_direct_bad_input():
    with pytest.raises(ValueError):
        expect2_direct(erf_, erf_, 1.0, 1.0, 1.5, NO_KINKS, NO_KINKS)
    with pytest.raises(ValueError):
        expect2_direct(erf_, erf_, -1.0, 1.0, 0.0, NO_KINKS, NO_KINKS)
    with pytest.raises(ValueError):
        expect2_direct(erf_, erf_, 0.0, 1.0, 0.5, NO_KINKS, NO_KINKS)
    with pytest.raises(ValueError):
        expect1_direct(erf_, -1.0, NO_KINKS)


def test_callable_from_njit_code():
    """The code generator calls these from its own numba.njit functions (global kinks arrays are
    read-only there)."""
    kinks = np.zeros(1)
    kinks.setflags(write=False)

    @numba.njit
    def kernel_entry(a, b, k11, k22, k12, la, lb):
        rho = k12 / math.sqrt(k11 * k22)
        M = order_from_log_tails(la, lb, math.log(min(abs(rho), 1.0)), math.log(1e-13))
        if M >= 0:
            return series(a, b, rho, M), True
        return expect2_direct(relu_, relu_, k11, k22, k12, kinks, kinks)[0], False

    tab = coefficients(relu_, np.array([1.0, 2.0]), kinks=(0.0,), max_order=128)
    la, lb = _half_logs(tab.tail[0]), _half_logs(tab.tail[1])
    for k12, by_series in ((0.3, True), (1.2, True), (1.41, False)):
        value, used = kernel_entry(tab.coef[0], tab.coef[1], 1.0, 2.0, k12, la, lb)
        exact = float(relu_kernel(1.0, 2.0, k12))
        assert used == by_series
        assert abs(value - exact) <= 1e-12 * math.sqrt(2.0 / 4)


# Timings of these kernels are benchmarks (benchmarks/bench_kernels.py), not tests.


# ----------------------------------------------------------------------------------------------
# Long randomized checks
# ----------------------------------------------------------------------------------------------


def _extreme_triple(rng, lo, top, p_near, p_equal, digits):
    """(k11, k22, k12, rho): variances 10^U(lo, top); with probability p_near rho within
    10^-digits..1e-1 of +-1, with p_equal exactly +-1 at equal variances, else rho uniform."""
    k11, k22 = 10 ** rng.uniform(lo, top, 2)
    u = rng.uniform()
    if u < p_near:
        rho = rng.choice([-1, 1]) * (1 - 10 ** rng.uniform(-digits, -1))
    elif u < p_near + p_equal:
        rho, k22 = rng.choice([-1.0, 1.0]), k11
    else:
        rho = rng.uniform(-1, 1)
    k12 = rho * math.sqrt(k11 * k22) if abs(rho) < 1 else rho * k11
    return k11, k22, k12, rho


@pytest.mark.slow
def test_expect2_direct_random_extremes_closed_forms():
    """Variances 1e-6..1e4, rho within 1e-15..1e-1 of +-1, exactly +-1, or uniform."""
    rng = np.random.default_rng(12)
    cases = {
        "relu": (relu_, KINK0, relu_kernel, 4),
        "step": (step_, KINK0, step_kernel, 4),
        "erf": (erf_, NO_KINKS, erf_kernel, 4),
        "sin": (sin_, NO_KINKS, sin_kernel, 1),
    }
    for name, (f, kinks, kernel, top) in cases.items():
        for _ in range(150):
            k11, k22, k12, rho = _extreme_triple(rng, -6, top, 0.3, 0.1, 15)
            if mp_det(k11, k22, k12) < 0:
                continue
            value, error = expect2_direct(f, f, k11, k22, k12, kinks, kinks)
            exact = float(kernel(k11, k22, k12))
            scale = math.sqrt(float(kernel(k11, k11, k11)) * float(kernel(k22, k22, k22)))
            assert abs(value - exact) <= 1e-12 * scale, (name, k11, k22, rho)
            assert abs(value - exact) <= error + 4 * EPS * scale, (name, k11, k22, rho)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tanh", "softplus", "elu"])
def test_expect2_direct_random_extremes_against_expect2(name):
    f, npf, kinks = {
        "tanh": (tanh_, np.tanh, ()),
        "softplus": (softplus_, np_softplus, ()),
        "elu": (elu_, np_elu, (0.0,)),
    }[name]
    rng = np.random.default_rng(13)
    karr = np.array(kinks, dtype=float)
    for _ in range(40):
        k11, k22, k12, rho = _extreme_triple(rng, -4, 3, 0.4, 0.1, 14)
        value, error = expect2_direct(f, f, k11, k22, k12, karr, karr)
        ref = expect2(npf, npf, k11, k22, k12, kinks_f=kinks, kinks_g=kinks)
        scale = math.sqrt(
            expect1(lambda z: npf(z) ** 2, k11, kinks=(0.0,)).value
            * expect1(lambda z: npf(z) ** 2, k22, kinks=(0.0,)).value
        )
        assert abs(value - ref.value) <= 1e-12 * scale + ref.error, (k11, k22, rho)
        assert error <= 1e-12 * scale


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tanh", "softplus", "gelu", "elu", "relu", "step"])
def test_coefficients_against_expect1(name):
    """Coefficients at extreme variances (1e-6..1e4, max_order 64 and 256) against the NumPy
    quadrature of f(sqrt(k) x) h_n(x)."""
    from scipy.special import erf as sp_erf

    gelu_ = numba.njit(lambda x: 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0))))
    f, npf, kinks = {
        "tanh": (tanh_, np.tanh, ()),
        "softplus": (softplus_, np_softplus, ()),
        "gelu": (gelu_, lambda z: 0.5 * z * (1 + sp_erf(z / np.sqrt(2))), ()),
        "elu": (elu_, np_elu, (0.0,)),
        "relu": (relu_, lambda z: np.maximum(z, 0.0), (0.0,)),
        "step": (step_, lambda z: np.heaviside(z, 0.5), (0.0,)),
    }[name]
    ks = np.array([1e-6, 0.05, 1.0, 30.0, 1e4])
    for N in (64, 256):
        tab = coefficients(f, ks, kinks=kinks, max_order=N)
        for i, k in enumerate(ks):
            scale = math.sqrt(tab.norm2[i])
            assert tab.error[i] <= 1e-14 * scale
            for n in (0, 1, 2, 5, 17, N // 2, N - 1, N):
                ref = expect1(lambda x: npf(math.sqrt(k) * x) * h_n(x, n), 1.0, kinks=(0.0,))
                assert abs(tab.coef[i, n] - ref.value) <= 1e-14 * scale + ref.error, (k, n)
