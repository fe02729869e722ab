"""Every derived closed form against independent quadrature, including rho = 0 and |rho| -> 1.

Fast set: float64 double-exponential quadrature (``numerics.quadrature.expect2``, itself checked
against hand-written closed forms to ~1e-15) at many points, 1e-13 relative.  Slow set: 30-digit
mpmath quadrature at a random point, one activation per rule family, 1e-25 relative.
"""

import numpy as np
import pytest
import sympy as sp

from ntk_theory.activations import activation, x
from ntk_theory.gaussian import expectation
from ntk_theory.numerics import quadrature
from ntk_theory.numerics.quadrature_mp import expect2_mp
from ntk_theory.gaussian import k11, k12, k22
from ntk_theory.gaussian.stable import lambdify as stable_lambdify

CLOSED = ["linear", "relu", "leaky_relu(1/5)", "abrelu(1/2,2)", "abs", "step", "sign", "relu_power(2)", "relu_power(3)",
          "monomial(3)", "polynomial(1,-2,3)", "hermite(3)", "hermite(4)", "erf", "gelu", "sin", "cos", "exp", "gaussian", "rbf(1/3)",
          "x*erf(x)", "erf(2*x)+x/3"]


def _points():
    rng = np.random.default_rng(3)
    pts = []
    for rho in (0.0, 0.3, -0.7, 0.99, 1 - 1e-9, -(1 - 1e-9)):
        a, b = rng.uniform(0.2, 3.0, size=2)
        pts.append((a, b, rho * np.sqrt(a * b)))
    return pts


def _integrand(act, derivative):
    expr = sp.diff(act.expr, x, derivative) if derivative else act.expr
    expr = expr.replace(lambda e: isinstance(e, sp.DiracDelta), lambda e: sp.S.Zero)
    f = sp.lambdify(x, expr, modules=[{"Heaviside": lambda z, h0=0.5: np.heaviside(z, h0)}, "scipy", "numpy"])
    return lambda z: np.broadcast_to(np.asarray(f(z), dtype=float), np.shape(z))


@pytest.mark.parametrize("derivative", [0, 1], ids=["T", "Tdot"])
@pytest.mark.parametrize("name", CLOSED)
def test_closed_form_matches_quadrature(name, derivative):
    act = activation(name)
    e = expectation(act, derivative=derivative, deltas=False)
    assert e.is_closed_form, name
    raw = sp.lambdify((k11, k22, k12), e.expr, modules=["scipy", "numpy"])
    stable = stable_lambdify((k11, k22, k12), e.expr)
    f = _integrand(act, derivative)
    kinks = act.kinks
    for a, b, c in _points():
        q = quadrature.expect2(f, f, a, b, c, kinks_f=kinks, kinks_g=kinks)
        # the kernel's natural scale |E[f(u) f(v)]| <= sqrt(E[f(u)^2] E[f(v)^2])
        sq = lambda z: f(z) ** 2  # noqa: E731
        scale = np.sqrt(quadrature.expect1(sq, a, kinks=kinks).value * quadrature.expect1(sq, b, kinks=kinks).value)
        near_one = abs(c) > 0.999 * np.sqrt(a * b)
        # the stable form is what the recursions evaluate; the raw (displayed) form loses digits
        # as |rho| -> 1 through arcsin of a rounded argument, which is why the stable form exists
        for form, fn, tol in (("stable", stable, 1e-13), ("raw", raw, 1e-8 if near_one else 1e-13)):
            with np.errstate(all="ignore"):
                got = float(fn(a, b, c))
            assert abs(got - q.value) <= tol * scale + q.error, (name, form, (a, b, c), got, q.value)


FAMILIES = ["relu", "step", "relu_power(2)", "abs", "erf", "gelu", "x*erf(x)", "sin", "hermite(3)", "gaussian"]


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_closed_form_matches_30_digit_quadrature(name):
    import mpmath

    act = activation(name)
    e = expectation(act)
    a, b, c = 0.83, 1.71, -0.61 * np.sqrt(0.83 * 1.71)
    with mpmath.workdps(30):
        ref, err = expect2_mp(act.mpmath, act.mpmath, a, b, c, kinks_f=act.kinks or (0.0,), kinks_g=act.kinks or (0.0,), dps=30)
        got = e.evaluate_mp(a, b, c, dps=30)
        assert abs(got - ref) <= mpmath.mpf("1e-25") * abs(ref) + err, (name, got, ref, err)


@pytest.mark.parametrize("name", ["relu", "gelu", "elu", "sigmoid", "x*erf(x)", "exp", "abs", "softplus", "hermite(4)", "relu_power(3)"])
def test_one_variable_expectation(name):
    from ntk_theory.gaussian import expectation1

    act = activation(name)
    e = expectation1(act)
    for kk in (0.05, 0.9, 4.0):
        q = quadrature.expect1(act.numpy, kk, kinks=act.kinks)
        scale = np.sqrt(quadrature.expect1(lambda z: act.numpy(z) ** 2, kk, kinks=act.kinks).value)
        assert abs(float(e(np.array(kk))) - q.value) <= 1e-13 * scale + q.error, (name, kk)
    assert e.is_closed_form == (name != "softplus")
