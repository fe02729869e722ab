"""The one-input Gaussian moments d^n<g(z)>/dK^n, z ~ N(0, K), n = 0, 1, 2 (numerics.onepoint and the
gaussian one-input forms that recursions, finite_width and criticality share), against references
independent of the code under test: Gaussian integrals known in closed form (written here by hand),
mpmath's own tanh-sinh quadrature (``mpmath.quad``) of the density-differentiated integrand, and
Taylor coefficients at K -> 0."""

import math

import mpmath
import numpy as np
import pytest

from ntk_theory.activations import activation
from ntk_theory.criticality import Moments
from ntk_theory.finite_width.moments import one_input_averages
from ntk_theory.numerics import onepoint
from ntk_theory.recursions.layer import activation_kernels

# <g(z)>, z ~ N(0, K), and its K-derivatives, by hand
KNOWN = {
    "cos": (np.cos, mpmath.cos, (), lambda K: [math.exp(-K / 2), -math.exp(-K / 2) / 2, math.exp(-K / 2) / 4]),
    "z^4": (lambda z: z**4, lambda z: z**4, (), lambda K: [3 * K * K, 6 * K, 6.0]),
    "relu^2": (lambda z: np.maximum(z, 0) ** 2, lambda z: max(z, 0) ** 2, (0.0,), lambda K: [K / 2, 0.5, 0.0]),
    "|z|": (np.abs, abs, (0.0,), lambda K: [math.sqrt(2 * K / math.pi), math.sqrt(1 / (2 * math.pi * K)),
                                           -math.sqrt(1 / (2 * math.pi)) / (2 * K**1.5)]),
}


@pytest.mark.parametrize("name", sorted(KNOWN))
@pytest.mark.parametrize("K", [0.01, 1.3, 40.0])
def test_onepoint_against_closed_gaussian_integrals(name, K):
    g, g_mp, kinks, exact = KNOWN[name]
    for order, want in enumerate(exact(K)):
        scale = max(abs(want), exact(K)[0] / K**order)
        r = onepoint.average(g, K, order, kinks=kinks)
        assert abs(r.value - want) <= 1e-13 * scale + r.error, (name, K, order)
        with mpmath.workdps(30):
            v, _ = onepoint.average_mp(g_mp, K, order, kinks=kinks, dps=30)
            assert abs(v - mpmath.mpf(want)) <= mpmath.mpf("1e-14") * scale, (name, K, order)  # want is a float


def test_stein_form_equals_density_form_and_keeps_digits_at_small_variance():
    """d<sigmoid^2>/dK -> s'(0)^2 + s(0) s''(0) = 1/16 as K -> 0 (slope O(K)).  The density form's
    integrand is ~ <s^2> / K = 2.5e11 there and cancels; Stein's form <z g'(z)> / (2K) does not."""
    s = lambda z: 1 / (1 + np.exp(-z))
    ds = lambda z: s(z) * (1 - s(z))
    g, dg = (lambda z: s(z) ** 2), (lambda z: 2 * s(z) * ds(z))
    stein = onepoint.average(g, 1e-12, 1, dg=dg).value
    assert abs(stein - 1 / 16) < 1e-9
    for K in (0.5, 3.0):
        a, b = onepoint.average(g, K, 1, dg=dg), onepoint.average(g, K, 1)
        assert abs(a.value - b.value) <= 1e-13 + a.error + b.error
    # the shared form: finite_width's d<s^2>/dK and criticality's d<s^2>/dK at K = 1e-12
    assert abs(one_input_averages("sigmoid")["ss"].evaluate(1e-12, 1)[0] - 1 / 16) < 1e-9
    assert abs(Moments("sigmoid").f64(1e-12)[2] - 1 / 16) < 1e-9


def _reference(act, which, K, order, dps=30):
    """d^order <g>/dK^order by mpmath.quad of g (z^2 - K) / (2 K^2) etc., split at 0 and the kinks."""
    s, ds = act.mpmath, act.mpmath_derivative
    with mpmath.workdps(dps + 10):
        K = mpmath.mpf(K)
        r = mpmath.sqrt(K)
        weight = [lambda z: 1, lambda z: (z * z - K) / (2 * K * K),
                  lambda z: (z**4 - 6 * K * z * z + 3 * K * K) / (4 * K**4)][order]
        g = {"ss": lambda z: s(z) ** 2, "dd": lambda z: ds(z) ** 2, "ssdd": lambda z: (s(z) * ds(z)) ** 2}[which]
        pts = sorted({mpmath.mpf(0), *(mpmath.mpf(c) / r for c in act.kinks)})
        return mpmath.quad(lambda u: mpmath.npdf(u) * g(r * u) * weight(r * u), [-mpmath.inf, *pts, mpmath.inf])


@pytest.mark.parametrize("name", ["relu", "leaky_relu(1/5)", "abs", "erf", "elu", "sin", "relu_power(2)", "tanh",
                                  pytest.param("gelu", marks=pytest.mark.slow),
                                  pytest.param("x*erf(x)", marks=pytest.mark.slow)])
def test_diagonal_forms_and_their_derivatives_against_quadrature(name):
    """T_diag = <s^2>, Tdot_diag = <s'^2> (closed forms where derived, quadrature for tanh) and their
    first two K-derivatives, float64 and mpmath, against mpmath.quad of the density-weighted integrand:
    the independent check of the one-variable forms that the float64-vs-mpmath tests evaluate twice."""
    act = activation(name)
    kern = activation_kernels(act)
    for which, form in (("ss", kern.T_diag), ("dd", kern.Tdot_diag)):
        for K in (0.7,):
            for order in (0, 1, 2):
                ref = _reference(act, which, K, order)
                scale = abs(_reference(act, which, K, 0)) / K**order
                v, e = form.evaluate(np.array(K), with_error=True, order=order)
                assert abs(float(v) - ref) <= 1e-12 * scale + (float(e) if e is not None else 0), (name, which, K, order)
                with mpmath.workdps(30):
                    got = form.evaluate_mp(K, 30, order=order)
                    assert abs(got - ref) <= mpmath.mpf("1e-25") * scale, (name, which, K, order)


CLOSED = ["linear", "relu", "leaky_relu(1/5)", "abrelu(1/2,2)", "abs", "step", "sign", "relu_power(2)", "relu_power(3)",
          "monomial(3)", "polynomial(1,-2,3)", "hermite(3)", "hermite(4)", "erf", "gelu", "sin", "cos", "exp", "gaussian",
          "rbf(1/3)", "x*erf(x)", "erf(2*x)+x/3"]


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "x*erf(x)" else n for n in CLOSED])
def test_every_diagonal_closed_form_against_float64_quadrature(name):
    """<s^2>, <s'^2> (a.e. s') of every closed-form activation the kernel tests use (x*erf(x), whose
    two-variable derivation takes ~15 s without the disk cache, in the slow set), against tanh-sinh
    quadrature of the integrand (numerics.quadrature.expect1, itself checked against hand-written
    Gaussian integrals in test_quadrature.py), 1e-13 of the scale."""
    from ntk_theory.numerics.quadrature import expect1

    act = activation(name)
    kern = activation_kernels(act)
    for form, f in ((kern.T_diag, act.numpy), (kern.Tdot_diag, act.numpy_derivative)):
        assert form.is_closed_form, name
        for K in (0.2, 1.7):
            q = expect1(lambda z, f=f: f(z) ** 2, K, kinks=act.kinks)
            assert abs(float(form.evaluate(np.array(K))) - q.value) <= 1e-13 * abs(q.value) + q.error, (name, K)


def test_finite_width_averages_against_quadrature():
    """<s^2 s'^2> and its derivatives (closed form for erf, quadrature for tanh)."""
    for name in ("erf", "tanh"):
        act = activation(name)
        avg = one_input_averages(act)["ssdd"]
        for order in (0, 1, 2):
            ref = _reference(act, "ssdd", 1.7, order)
            v, e = avg.evaluate(1.7, order)
            assert abs(v - ref) <= 1e-12 * abs(_reference(act, "ssdd", 1.7, 0)) + e, (name, order)


def test_overflowing_activation_tails_are_recomputed_not_nan():
    """swish'(z)^2 = (z e^-z / (1 + e^-z)^2 + ...)^2 is inf / inf in float64 for z < -355: the moments at
    K = 1e3 are finite and equal mpmath.quad (scipy's quadrature returned NaN there)."""
    act = activation("swish")
    m = Moments(act)
    s2, ds2, d = m.f64(1e3)
    assert abs(s2 - _reference(act, "ss", 1e3, 0)) <= 1e-12 * s2
    assert abs(ds2 - _reference(act, "dd", 1e3, 0)) <= 1e-12 * ds2
    assert abs(d - _reference(act, "ss", 1e3, 1)) <= 1e-12 * abs(d)


def test_bad_order_and_variance_are_refused():
    with pytest.raises(ValueError, match="order"):
        onepoint.average(np.cos, 1.0, 3)
    with pytest.raises(ValueError, match="K > 0"):
        onepoint.average(np.cos, 0.0, 1)
    with pytest.raises(ValueError, match="order"):
        activation_kernels("erf").T_diag.evaluate(np.array(1.0), order=5)


def test_erf_derivative_keeps_its_digits_at_large_variance():
    """<erf(z)^2> = (2/pi) asin(2K / (1 + 2K)) (Williams 1997); its K-derivative 4 / (pi (1 + 2K) sqrt(1 + 4K))
    written by hand.  The unsimplified derivative carries sqrt(1 - (2K / (1 + 2K))^2) and lost ~K eps."""
    form = activation_kernels("erf").T_diag
    for K in (1e3, 1e6):
        want = 4 / (math.pi * (1 + 2 * K) * math.sqrt(1 + 4 * K))
        assert abs(float(form.evaluate(np.array(K), order=1)) / want - 1) < 1e-14
        assert abs(Moments("erf").f64(K)[2] / want - 1) < 1e-14
