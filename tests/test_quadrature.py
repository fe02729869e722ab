"""numerics.quadrature (float64, batch, mpmath) against closed forms, Wick's theorem, mpmath and Monte Carlo.

References are computed independently of the code under test: closed forms (Cho & Saul 2009
arc-cosine kernel, the arcsine kernel of the step function, Williams 1997 for erf, sin, Isserlis /
Wick for polynomials) evaluated in mpmath at 50 digits from the *exact* values of the float
inputs (the determinant k11 k22 - k12^2 in rational arithmetic), so that near rho = +-1 the
reference is the exact answer for the inputs, not one perturbed by rounding rho.
"""

import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest
from scipy import special

from ntk_theory.numerics.quadrature import QuadratureResult, expect1, expect2, expectn
from ntk_theory.numerics.quadrature_batch import expect2_vectorized
from ntk_theory.numerics.quadrature_mp import expect2_mp
from wick import wick

REL, ABS = 1e-13, 1e-15

relu = lambda z: np.maximum(z, 0.0)  # noqa: E731
step = lambda z: np.heaviside(z, 0.5)  # noqa: E731
mp_relu = lambda z: max(z, 0)  # noqa: E731
mp_step = lambda z: mpmath.mpf(1) if z > 0 else (mpmath.mpf(0) if z < 0 else mpmath.mpf(0.5))  # noqa: E731


# ---------------------------------------------------------------------------------------------
# Exact references (mpmath, 50 digits)
# ---------------------------------------------------------------------------------------------

mpmath.mp.dps = 50


def _mp(x):
    return mpmath.mpf(x)  # floats convert exactly


def exact_det(k11, k22, k12):
    d = Fraction(k11) * Fraction(k22) - Fraction(k12) ** 2
    return max(mpmath.mpf(d.numerator) / d.denominator, mpmath.mpf(0))


def angle(k11, k22, k12):
    """t = arccos(rho), computed as atan2(sqrt(det), k12) from the exact determinant."""
    return mpmath.atan2(mpmath.sqrt(exact_det(k11, k22, k12)), _mp(k12))


def relu_exact(k11, k22, k12):
    t = angle(k11, k22, k12)
    return mpmath.sqrt(_mp(k11) * _mp(k22)) / (2 * mpmath.pi) * (mpmath.sin(t) + (mpmath.pi - t) * mpmath.cos(t))


def step_exact(k11, k22, k12):
    return mpmath.mpf(1) / 4 + (mpmath.pi / 2 - angle(k11, k22, k12)) / (2 * mpmath.pi)


def erf_exact(k11, k22, k12):
    arg = 2 * _mp(k12) / mpmath.sqrt((1 + 2 * _mp(k11)) * (1 + 2 * _mp(k22)))
    return 2 / mpmath.pi * mpmath.asin(arg)


def sin_exact(k11, k22, k12):
    return mpmath.exp(-(_mp(k11) + _mp(k22)) / 2) * mpmath.sinh(_mp(k12))


def relu_step_exact(k11, k22, k12):
    """E[relu(u) step(v)] = sqrt(k11) (1 + rho) / (2 sqrt(2 pi)): u = sqrt(k11) x, v ~ rho x + ...,
    E[x 1(x > 0) 1(v > 0)] = (1 + rho) / (2 sqrt(2 pi)) (Stein: E[x 1(A)] over the wedge)."""
    t = angle(k11, k22, k12)
    return mpmath.sqrt(_mp(k11)) * (1 + mpmath.cos(t)) / (2 * mpmath.sqrt(2 * mpmath.pi))


def isserlis_u2v2(k11, k22, k12):
    return _mp(k11) * _mp(k22) + 2 * _mp(k12) ** 2


def isserlis_u3v(k11, k22, k12):
    return 3 * _mp(k11) * _mp(k12)


FUNCTIONS = {  # name: (numpy f, kinks, exact)
    "relu": (relu, (0.0,), relu_exact),
    "step": (step, (0.0,), step_exact),
    "erf": (special.erf, (), erf_exact),
    "sin": (np.sin, (), sin_exact),
}

RHOS = [0.0, 1.0, -1.0, 1 - 1e-12, -(1 - 1e-12), 0.3, -0.8, 0.999]
VARIANCES = [(1.0, 1.0), (0.5, 2.0), (1e-8, 1e-8), (1e3, 1e3), (1e-8, 1e3)]


def triples(rhos, variances, seed, n_random):
    out = [(k11, k22, rho * math.sqrt(k11 * k22)) for rho in rhos for k11, k22 in variances]
    rng = np.random.default_rng(seed)
    for _ in range(n_random):
        k11, k22 = 10.0 ** rng.uniform(-2, 1, size=2)
        out.append((k11, k22, rng.uniform(-1, 1) * math.sqrt(k11 * k22)))
    return out


def check(result: QuadratureResult, exact, label=""):
    exact = float(exact)
    err = abs(result.value - exact)
    assert err <= max(REL * abs(exact), ABS), f"{label}: {result!r} vs exact {exact!r}"
    assert err <= max(result.error, ABS), f"{label}: error estimate not honest: {result!r} vs {exact!r}"


# ---------------------------------------------------------------------------------------------
# expect1, expect2 against closed forms
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1e-8, 0.37, 1.0, 2.5, 1e3])
def test_expect1_closed_forms(k):
    sk = mpmath.sqrt(_mp(k))
    check(expect1(relu, k, kinks=(0.0,)), sk / mpmath.sqrt(2 * mpmath.pi), "E relu")
    check(expect1(lambda z: z * z, k), _mp(k), "E u^2")
    check(expect1(lambda z: z**4, k), 3 * _mp(k) ** 2, "E u^4")
    check(expect1(step, k, kinks=(0.0,)), 0.5, "E step")
    check(expect1(lambda z: np.abs(z), k, kinks=(0.0,)), sk * mpmath.sqrt(2 / mpmath.pi), "E |u|")
    check(expect1(special.erf, k), 0.0, "E erf")
    check(expect1(lambda z: special.erf(z) ** 2, k), erf_exact(k, k, k), "E erf^2")
    if k < 10:
        check(expect1(np.cos, k), mpmath.exp(-_mp(k) / 2), "E cos")


def test_expect1_zero_variance_is_exact():
    r = expect1(lambda z: np.cos(z) + 2.0, 0.0)
    assert r.value == 3.0 and r.error == 0.0 and r.evaluations == 1


def test_expect1_growing_integrand():
    # E[exp(u^2)] = 1 / sqrt(1 - 2k) for k < 1/2: the integrand decays only like exp(-x^2 / 10)
    check(expect1(lambda z: np.exp(z * z), 0.4), 1 / mpmath.sqrt(1 - 2 * _mp(0.4)), "E exp(u^2)")


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_expect2_closed_forms(name):
    f, kinks, exact = FUNCTIONS[name]
    for k11, k22, k12 in triples(RHOS, VARIANCES, seed=1, n_random=6):
        if name == "sin" and max(k11, k22) > 10:
            continue  # sin(31 x) under a Gaussian: an oscillatory integral, not this rule's job
        r = expect2(f, f, k11, k22, k12, kinks_f=kinks, kinks_g=kinks)
        check(r, exact(k11, k22, k12), f"{name} {(k11, k22, k12)}")


def test_expect2_polynomial_moments():
    for k11, k22, k12 in triples(RHOS, VARIANCES[:3], seed=2, n_random=4):
        check(expect2(lambda z: z * z, lambda z: z * z, k11, k22, k12), isserlis_u2v2(k11, k22, k12), "u2v2")
        check(expect2(lambda z: z**3, lambda z: z, k11, k22, k12), isserlis_u3v(k11, k22, k12), "u3v")
        check(expect2(lambda z: z, lambda z: z, k11, k22, k12), _mp(k12), "uv")


def test_expect2_unequal_variances_both_orders():
    for k11, k22, k12 in [(0.3, 4.0, 0.9), (4.0, 0.3, -1.0), (2.0, 1e-8, 1e-4)]:
        check(expect2(relu, relu, k11, k22, k12, kinks_f=(0.0,), kinks_g=(0.0,)), relu_exact(k11, k22, k12))
        check(expect2(relu, relu, k22, k11, k12, kinks_f=(0.0,), kinks_g=(0.0,)), relu_exact(k22, k11, k12))
        check(expect2(relu, step, k11, k22, k12, kinks_f=(0.0,), kinks_g=(0.0,)), relu_step_exact(k11, k22, k12))


def test_expect2_zero_variance_cases():
    check(expect2(np.cos, relu, 0.0, 2.0, 0.0, kinks_g=(0.0,)), mpmath.sqrt(2 / (2 * mpmath.pi)))
    check(expect2(relu, lambda z: z + 3.0, 2.0, 0.0, 0.0, kinks_f=(0.0,)), 3 * mpmath.sqrt(1 / mpmath.pi))
    r = expect2(np.cos, np.cos, 0.0, 0.0, 0.0)
    assert r.value == 1.0 and r.error == 0.0


def test_expect2_smooth_errors_are_small():
    softplus = lambda z: np.logaddexp(0.0, z)  # noqa: E731
    swish = lambda z: z * special.expit(z)  # noqa: E731
    for f in (np.tanh, softplus, swish, special.expit):
        r = expect2(f, f, 1.3, 0.7, 0.5)
        assert r.error < 1e-12, r


# ---------------------------------------------------------------------------------------------
# Arbitrary precision
# ---------------------------------------------------------------------------------------------


def mp_check(value_error, exact, tol=1e-25):
    value, error = value_error
    err = abs(value - exact)
    assert err <= tol, (value, exact)
    assert err <= max(error, mpmath.mpf(10) ** -35), (value, error, exact)


@pytest.mark.parametrize("k11, k22, k12", [(1.0, 4.0, 2.0), (0.25, 4.0, -1.0), (0.5, 3.0, 0.0)])
def test_expect2_mp_one_variable_cases(k11, k22, k12):
    """rho = +-1 and rho = 0 reduce to one-dimensional integrals: fast at 30 digits."""
    mp_check(expect2_mp(mp_relu, mp_relu, k11, k22, k12, kinks_f=(0.0,), kinks_g=(0.0,)), relu_exact(k11, k22, k12))
    mp_check(expect2_mp(mpmath.erf, mpmath.erf, k11, k22, k12), erf_exact(k11, k22, k12))


def test_expect2_mp_tanh_agrees_with_expect2():
    value, error = expect2_mp(mpmath.tanh, mpmath.tanh, 1.2, 0.8, 0.6, dps=20)
    assert error < 1e-18
    r = expect2(np.tanh, np.tanh, 1.2, 0.8, 0.6)
    assert abs(r.value - float(value)) <= 1e-13 and abs(r.value - float(value)) <= max(r.error, ABS)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, f, kinks, exact",
    [("relu", mp_relu, (0.0,), relu_exact), ("step", mp_step, (0.0,), step_exact), ("erf", mpmath.erf, (), erf_exact),
     ("sin", mpmath.sin, (), sin_exact)],
)
@pytest.mark.parametrize("k11, k22, rho", [(1.0, 2.0, 0.45), (0.7, 0.7, -0.95), (2.0, 0.5, 1 - 1e-6)])
def test_expect2_mp_closed_forms(name, f, kinks, exact, k11, k22, rho):
    k12 = rho * math.sqrt(k11 * k22)
    mp_check(expect2_mp(f, f, k11, k22, k12, kinks_f=kinks, kinks_g=kinks, dps=30), exact(k11, k22, k12))


@pytest.mark.slow
@pytest.mark.parametrize(
    "f, f_mp",
    [
        (np.tanh, mpmath.tanh),
        (lambda z: np.logaddexp(0.0, z), lambda z: mpmath.log1p(mpmath.exp(z))),
        (lambda z: z * special.expit(z), lambda z: z / (1 + mpmath.exp(-z))),
    ],
)
@pytest.mark.parametrize("k11, k22, k12", [(1.0, 1.0, 0.5), (3.0, 0.4, -0.9), (0.2, 5.0, 0.99)])
def test_expect2_smooth_against_mp(f, f_mp, k11, k22, k12):
    value, error = expect2_mp(f_mp, f_mp, k11, k22, k12, dps=30)
    assert error < 1e-25
    r = expect2(f, f, k11, k22, k12)
    diff = abs(r.value - float(value))
    assert diff <= 1e-13 * max(1.0, abs(float(value))) and diff <= max(r.error, ABS), (r, value)


# ---------------------------------------------------------------------------------------------
# Vectorised
# ---------------------------------------------------------------------------------------------


def random_triples(n, seed):
    rng = np.random.default_rng(seed)
    k11, k22 = 10.0 ** rng.uniform(-1, 0.7, size=(2, n))
    rho = rng.uniform(-1, 1, size=n)
    rho[:6] = [0.0, 1.0, -1.0, 1 - 1e-12, -0.999, 0.5]
    return k11, k22, rho * np.sqrt(k11 * k22)


def compare_vectorized(n, seed):
    k11, k22, k12 = random_triples(n, seed)
    for f, kinks in ((np.tanh, ()), (relu, (0.0,))):
        values, errors = expect2_vectorized(f, f, k11, k22, k12, kinks_f=kinks, kinks_g=kinks)
        assert values.shape == errors.shape == k11.shape
        for i in range(n):
            r = expect2(f, f, k11[i], k22[i], k12[i], kinks_f=kinks, kinks_g=kinks)
            assert abs(values[i] - r.value) <= 1e-13 * max(1.0, abs(r.value)), (i, values[i], r)
            assert errors[i] < 1e-12
        if f is relu:
            exact = np.array([float(relu_exact(*t)) for t in zip(k11, k22, k12)])
            assert np.all(np.abs(values - exact) <= np.maximum(errors, ABS))


def test_expect2_vectorized_matches_expect2():
    compare_vectorized(30, seed=3)


@pytest.mark.slow
def test_expect2_vectorized_matches_expect2_200():
    compare_vectorized(200, seed=4)


def test_expect2_vectorized_shapes_and_special_cases():
    k11 = np.array([[1.0, 0.0], [2.0, 1e-8]])
    k22 = np.array([[1.0, 3.0], [0.0, 1e3]])
    k12 = np.array([[0.0, 0.0], [0.0, 1e-3]])
    values, errors = expect2_vectorized(relu, relu, k11, k22, k12, kinks_f=(0.0,), kinks_g=(0.0,))
    assert values.shape == (2, 2)
    exact = np.array([[float(relu_exact(a, b, c)) for a, b, c in zip(*rows)] for rows in zip(k11, k22, k12)])
    assert np.allclose(values, exact, rtol=1e-13, atol=1e-15)


# ---------------------------------------------------------------------------------------------
# n variables
# ---------------------------------------------------------------------------------------------

K4 = np.array(
    [[1.0, 0.5, 0.3, 0.2], [0.5, 1.2, 0.4, -0.1], [0.3, 0.4, 0.9, 0.3], [0.2, -0.1, 0.3, 1.1]]
)


def test_expectn_two_equals_expect2():
    K = np.array([[1.3, 0.4], [0.4, 0.6]])
    a = expectn([np.tanh, np.tanh], K)
    b = expect2(np.tanh, np.tanh, 1.3, 0.6, 0.4)
    assert abs(a.value - b.value) <= max(a.error, 1e-12)
    a = expectn([relu, relu], K, kinks=[(0.0,), (0.0,)])
    check(a, relu_exact(1.3, 0.6, 0.4))


def test_expectn_one_variable():
    check(expectn([lambda z: z**4], [[2.0]]), 12.0)


def test_expectn_isserlis_four():
    r = expectn([lambda z: z] * 4, K4, tol=1e-9)
    exact = K4[0, 1] * K4[2, 3] + K4[0, 2] * K4[1, 3] + K4[0, 3] * K4[1, 2]
    assert abs(r.value - exact) <= max(r.error, 1e-14) and r.error < 1e-9, r
    r = expectn([lambda z: z * z, lambda z: z * z, lambda z: z, lambda z: z], K4, tol=1e-9)
    exact = wick(K4, [0, 0, 1, 1, 2, 3])
    assert abs(r.value - exact) <= max(r.error, 1e-14) and r.error < 1e-9, r


def test_expectn_tanh_four_against_monte_carlo():
    r = expectn([np.tanh] * 4, K4)
    assert r.error < 1e-9
    rng = np.random.default_rng(5)
    L = np.linalg.cholesky(K4)
    samples = []
    for _ in range(8):
        z = rng.standard_normal((500_000, 4)) @ L.T
        samples.append(np.prod(np.tanh(z), axis=1))
    s = np.concatenate(samples)
    assert abs(r.value - s.mean()) <= 4 * s.std() / math.sqrt(s.size)


def test_expectn_singular_four_reduces_to_expect2():
    # z3 = z1, z4 = z2 (rank 2): E[relu(z1) relu(z2) z3 z4] = E[g(z1) g(z2)], g(z) = z relu(z)
    K = np.array([[1.0, 0.6], [0.6, 2.0]])
    Ks = K[np.ix_([0, 1, 0, 1], [0, 1, 0, 1])]
    g = lambda z: z * np.maximum(z, 0.0)  # noqa: E731
    r = expectn([relu, relu, lambda z: z, lambda z: z], Ks, kinks=[(0.0,), (0.0,), (), ()])
    ref = expect2(g, g, 1.0, 2.0, 0.6, kinks_f=(0.0,), kinks_g=(0.0,))
    assert abs(r.value - ref.value) <= max(r.error, 1e-12), (r, ref)
    assert "rank 2 of 4" in r.method


def test_expectn_singular_repeated_row():
    K = np.array([[1.0, 1.0, 0.3], [1.0, 1.0, 0.3], [0.3, 0.3, 0.8]])
    r = expectn([np.tanh, np.tanh, np.tanh], K)
    ref = expect2(lambda z: np.tanh(z) ** 2, np.tanh, 1.0, 0.8, 0.3)
    assert abs(r.value - ref.value) <= max(r.error, 1e-12)
    assert "rank 2 of 3" in r.method
    check(expectn([lambda z: z * z, lambda z: z * z], [[2.0, 2.0], [2.0, 2.0]]), 12.0)


def test_expectn_kinks_four():
    r = expectn([relu] * 4, K4, kinks=[(0.0,)] * 4, tol=1e-8)
    assert r.error < 1e-8
    rng = np.random.default_rng(6)
    z = rng.standard_normal((2_000_000, 4)) @ np.linalg.cholesky(K4).T
    s = np.prod(np.maximum(z, 0.0), axis=1)
    assert abs(r.value - s.mean()) <= 4 * s.std() / math.sqrt(s.size)


# ---------------------------------------------------------------------------------------------
# Result object and bad input
# ---------------------------------------------------------------------------------------------


def test_result_repr_and_float():
    r = expect1(relu, 2.0, kinks=(0.0,))
    assert float(r) == r.value
    text = repr(r)
    assert text.startswith(repr(r.value) + " ± ") and "evaluations" in text and "tanh-sinh" in text


NOT_PSD = "covariance is not positive semi-definite"
DIVERGES = "the Gaussian expectation diverges or the integrand is not finite"


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: expect1(np.tanh, -1.0), "variance"),
        (lambda: expect1(np.tanh, float("nan")), "finite"),
        (lambda: expect2(np.tanh, np.tanh, -1.0, 1.0, 0.0), "variance"),
        (lambda: expect2(np.tanh, np.tanh, 1.0, 1.0, float("inf")), "k12 must be a finite number"),
        (lambda: expect2(np.tanh, np.tanh, 1.0, 1.0, 1.0 + 1e-9), NOT_PSD),
        (lambda: expect2(np.tanh, np.tanh, 1.0, 4.0, -2.1), NOT_PSD),
        (lambda: expect2_mp(mpmath.tanh, mpmath.tanh, 1.0, 1.0, 1.5), NOT_PSD),
        (lambda: expect2_vectorized(np.tanh, np.tanh, [1.0, 1.0], [1.0, 1.0], [0.5, 1.5]), NOT_PSD),
        (lambda: expect2_vectorized(np.tanh, np.tanh, [1.0], [1.0, 2.0], [0.5]), "one shape"),
        (lambda: expect1(lambda z: np.exp(z * z), 10.0), DIVERGES),
        (lambda: expect1(lambda z: np.exp(z * z), 1.0), DIVERGES),
        (lambda: expect2(lambda z: np.exp(z * z), np.tanh, 3.0, 1.0, 0.5), DIVERGES),
        (lambda: expect1(lambda z: np.where(z > 1, np.nan, z), 1.0), DIVERGES),
        (lambda: expectn([np.tanh] * 2, np.eye(3)), "square"),
        (lambda: expectn([np.tanh] * 2, [[1.0, 0.5], [0.4, 1.0]]), "not symmetric"),
        (lambda: expectn([np.tanh] * 2, [[1.0, 2.0], [2.0, 1.0]]), NOT_PSD),
        (lambda: expectn([np.tanh] * 5, np.eye(5)), "n <= 4"),
        (lambda: expectn([np.tanh] * 2, [[1.0, np.nan], [np.nan, 1.0]]), "finite"),
        (lambda: expectn([np.tanh] * 2, np.eye(2), kinks=[(0.0,)]), "one tuple per function"),
        (lambda: expect1("tanh", 1.0), "callable"),
        (lambda: expect1(np.tanh, 1.0, kinks=(float("nan"),)), "finite"),
    ],
)
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()
