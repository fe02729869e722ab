"""Overflow-safe float64 forms of sharp exponential activations (softplus(beta x) / beta and its derivatives).

log(1 + exp(beta x)) overflows in float64 once beta x > 709.78 (x > 11.1 at beta = 64), and its derivatives
exp(a) / (1 + exp(a))^k are inf / inf = NaN there.  Every float64 form the toolkit makes of an expression (the
NumPy callables of an activation, the stable forms of the Gaussian layer, the Numba-printed source) must be
finite and accurate wherever the value is.  References: the same SymPy expression evaluated in mpmath at 40
digits (no overflow in mpmath), mpmath quadrature for the one-point averages, SciPy's nested adaptive quadrature
of an independently written NumPy softplus (np.logaddexp, scipy.special.expit) for the two-point averages.
"""

from __future__ import annotations

import itertools
import math

import mpmath
import numpy as np
import pytest
import sympy as sp
from scipy import integrate, special

from ntk_theory.activations import lambdify_numpy, x
from ntk_theory.gaussian.stable import lambdify as stable_lambdify
from ntk_theory.jit import numba_code
from ntk_theory.numerics import onepoint

BETAS = (16, 64, 256)
GRID = np.concatenate([np.linspace(-40.0, 40.0, 161), [-1e-3, 1e-3, 0.0, 2.0**-9, 11.2, 12.0, 30.0]])


def softplus(beta):
    return sp.log(1 + sp.exp(beta * x)) / beta


def mp_values(expr, points):
    f = sp.lambdify(x, expr, modules="mpmath")
    with mpmath.workdps(40):
        return np.array([float(f(mpmath.mpf(float(p)))) for p in points])


def numba_printed(expr):
    """The Numba-printed source of expr, run as plain Python (math functions)."""
    z = sp.Symbol("z", real=True)
    code = numba_code(expr.subs(x, z))
    return lambda points: np.array([eval(code, {"math": math, "z": float(p)}) for p in points])


@pytest.mark.parametrize("beta", BETAS)
def test_float64_forms_are_finite_and_match_mpmath(beta):
    s = softplus(beta)
    for n in range(5):
        d = sp.diff(s, x, n)
        ref = mp_values(d, GRID)
        scale = np.max(np.abs(ref))
        for name, f in (("lambdify_numpy", lambdify_numpy(d)), ("stable", stable_lambdify((x,), d)),
                        ("numba", numba_printed(d))):
            v = np.asarray(f(GRID), dtype=float)
            assert np.all(np.isfinite(v)), (name, n)
            assert np.max(np.abs(v - ref)) <= 1e-13 * scale, (name, n, np.max(np.abs(v - ref)) / scale)


@pytest.mark.parametrize("beta", BETAS)
def test_one_point_averages_of_the_stable_forms_match_mpmath(beta):
    """<s^(n)(z)^2>, z ~ N(0, K) (the averages the Hermite tables of the finite-width route are made from), by
    the float64 one-point quadrature on the stable forms, against mpmath quadrature split on the 1/beta scale.
    K = 150 puts quadrature nodes beyond beta x = 710, where the unsafe forms overflow."""
    K = 150.0
    s = softplus(beta)
    b = mpmath.mpf(beta)
    splits = sorted({float(sg * 2**j) / beta for j in range(14) for sg in (1, -1)} | {0.0})
    for n in (0, 1, 2):
        d = sp.diff(s, x, n)
        f64 = stable_lambdify((x,), d)
        r = onepoint.average(lambda z, f64=f64: f64(z) ** 2, K, kinks=splits)
        fmp = sp.lambdify(x, d, modules="mpmath")
        with mpmath.workdps(30):
            sd = mpmath.sqrt(K)
            ref = mpmath.quad(lambda t, fmp=fmp, sd=sd: fmp(sd * t) ** 2 * mpmath.npdf(t),
                              [-mpmath.inf] + [mpmath.mpf(p) / sd for p in splits] + [mpmath.inf])
        scale = float(ref) if n == 0 else float(b ** (2 * n - 2))
        assert np.isfinite(r.value) and abs(r.value - float(ref)) <= max(2 * r.error, 1e-12 * scale), (n, r, ref)


def _two_point_reference(f, g, k11, k22, k12, beta):
    """E[f(u) g(v)] by nested scipy.integrate.quad: u = sqrt(k11) z, v | u Gaussian, split at the sharp point."""
    c, sdc, sd1 = k12 / k11, math.sqrt(k22 - k12**2 / k11), math.sqrt(k11)

    def pieces(h, centre, width, eps):
        pts = [centre - 20 * width, centre - width, centre, centre + width, centre + 20 * width]
        tot = integrate.quad(h, -np.inf, pts[0], epsabs=eps, epsrel=1e-11, limit=200)[0]
        tot += sum(integrate.quad(h, a, b, epsabs=eps, epsrel=1e-11, limit=200)[0] for a, b in itertools.pairwise(pts))
        return tot + integrate.quad(h, pts[-1], np.inf, epsabs=eps, epsrel=1e-11, limit=200)[0]

    def inner(u):
        return pieces(lambda t: g(c * u + sdc * t) * np.exp(-t * t / 2) / math.sqrt(2 * math.pi),
                      -c * u / sdc, 1 / (beta * sdc), 1e-15)

    return pieces(lambda z: f(sd1 * z) * inner(sd1 * z) * np.exp(-z * z / 2) / math.sqrt(2 * math.pi),
                  0.0, 1 / (beta * sd1), 1e-14)


@pytest.mark.parametrize("beta", BETAS)
def test_two_point_averages_of_the_numba_forms_match_scipy(beta):
    """E[s^(m)(u) s^(n)(v)] by the compiled nested Gauss-Legendre rule on the Numba-printed forms (split at the
    sharp point and at +- 2^j / beta), at variances large enough that the unsafe forms overflow, against SciPy."""
    from ntk_theory.jit import build_functions
    from ntk_theory.numerics import gauss_legendre

    z = sp.Symbol("z", real=True)
    s = softplus(beta)
    mod = build_functions({f"d{n}": sp.diff(s, x, n).subs(x, z) for n in range(3)}, (z,), "test_overflow")
    ref_f = [lambda t: np.logaddexp(0.0, beta * t) / beta, lambda t: special.expit(beta * t),
             lambda t: beta * special.expit(beta * t) * special.expit(-beta * t)]
    splits = np.array(sorted({sg * 2.0**j / beta for j in range(14) for sg in (1, -1)} | {0.0}))
    k11, k22, k12 = 90.0, 60.0, 30.0
    for m, n in ((0, 0), (2, 2)):
        v, e = gauss_legendre.expect2_direct(getattr(mod, f"d{m}"), getattr(mod, f"d{n}"), k11, k22, k12,
                                             splits, splits)
        ref = _two_point_reference(ref_f[m], ref_f[n], k11, k22, k12, beta)
        assert np.isfinite(v) and abs(v - ref) <= max(2 * e, 1e-9 * max(1.0, abs(ref))), (m, n, v, ref, e)
