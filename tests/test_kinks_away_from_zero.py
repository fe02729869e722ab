"""Activations with kinks or jumps away from 0: Abs(x-1), Max(x-1,0), Heaviside(x-1/2), hard tanh.

Every value is checked against quadratures written here with scipy (nested adaptive Gauss-Kronrod,
split at the kinks) or mpmath, and against scipy.stats densities: nothing here comes from the
package's own symbolic or numerical layers.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import mpmath
import numpy as np
import pytest
import sympy as sp
from scipy import integrate, stats

from ntk_theory.activations.activation import x as X_SYM
from ntk_theory.gaussian import NoRule, expectation
from ntk_theory.gaussian.atoms import Half, Smooth, decompose
from ntk_theory.recursions import KernelRecursion

# name -> (s, s' almost everywhere, kinks), written out by hand with NumPy
ACTS = {
    "Abs(x-1)": (lambda z: abs(z - 1.0), lambda z: 1.0 if z > 1 else -1.0, (1.0,)),
    "Max(x-1,0)": (lambda z: max(z - 1.0, 0.0), lambda z: 1.0 if z > 1 else 0.0, (1.0,)),
    "Heaviside(x-1/2)": (lambda z: 1.0 if z > 0.5 else 0.0, lambda z: 0.0, (0.5,)),
    "Min(Max(x,-1),1)": (lambda z: min(max(z, -1.0), 1.0), lambda z: 1.0 if -1 < z < 1 else 0.0, (-1.0, 1.0)),
}
TRIPLES = [(1.0, 1.0, 0.3), (2.0, 0.7, -0.5), (1.5, 1.5, 0.95), (0.8, 2.5, 0.0), (3.0, 1.2, -0.99)]
TOL = {"epsabs": 1e-13, "epsrel": 1e-12, "limit": 200}


def _pieces(edges):
    """Intervals between 0 and the edges (those within |t| < 40: phi underflows beyond)."""
    pts = sorted({0.0, *(e for e in edges if abs(e) < 40)})
    return list(zip([-np.inf, *pts], [*pts, np.inf]))


def quad1(h, var, kinks):
    """E[h(u)], u ~ N(0, var), by scipy.quad on the pieces between the kinks."""
    sd = math.sqrt(var)
    total, err = 0.0, 0.0
    for lo, hi in _pieces([c / sd for c in kinks]):
        v, e = integrate.quad(lambda t: h(sd * t) * math.exp(-t * t / 2) / math.sqrt(2 * math.pi), lo, hi, **TOL)
        total, err = total + v, err + e
    return total, err


def quad2(f, g, k11, k22, k12, kf, kg):
    """E[f(u) g(v)]: u = sqrt(k11) s, v = a s + b t, s, t iid N(0, 1); nested scipy.quad, the inner
    integral split at 0 and t = (c - a s) / b, the outer at 0, the kinks of f and at s = c / a (where
    the inner integral has a near-kink when b is small)."""
    s1 = math.sqrt(k11)
    a = k12 / s1
    b = math.sqrt(k22 - k12 * k12 / k11)
    norm = 1 / math.sqrt(2 * math.pi)

    def inner(s):
        pts = [(c - a * s) / b for c in kg]
        total = 0.0
        for lo, hi in _pieces(pts):
            v, _ = integrate.quad(lambda t: g(a * s + b * t) * math.exp(-t * t / 2) * norm, lo, hi, **TOL)
            total += v
        return total

    outer_pts = [c / s1 for c in kf] + ([c / a for c in kg] if a != 0 else [])
    total, err = 0.0, 0.0
    for lo, hi in _pieces(outer_pts):
        v, e = integrate.quad(lambda s: f(s1 * s) * inner(s) * math.exp(-s * s / 2) * norm, lo, hi, **TOL)
        total, err = total + v, err + e
    return total


# --------------------------------------------------------------------------- errors and atoms
def test_no_rule_is_a_value_error():
    assert issubclass(NoRule, ValueError)


def _atoms_value(comb, z):
    total = 0.0
    for c, atom in comb:
        assert isinstance(atom, (Smooth, Half)), atom
        if isinstance(atom, Smooth) or atom.side * (z - float(atom.at)) > 0:
            total += float(c) * float(atom.h.subs(X_SYM, z))
    return total


@pytest.mark.parametrize("text, points, by_hand", [
    ("Abs(x-1)", [1.0], lambda z: abs(z - 1)),
    ("Max(x-1,0)", [1.0], lambda z: max(z - 1, 0)),
    ("Heaviside(x-1/2)", [0.5], lambda z: float(z > 0.5)),
    ("Heaviside(x-0.5)", [0.5], lambda z: float(z > 0.5)),
    ("Min(Max(x,-1),1)", [-1.0, 1.0], lambda z: min(max(z, -1), 1)),
    ("sign(2*x+3)*x", [-1.5], lambda z: math.copysign(1, 2 * z + 3) * z),
    ("Abs(x**2-2)", [-math.sqrt(2), math.sqrt(2)], lambda z: abs(z * z - 2)),
    ("Max(x, x**3)", [-1.0, 0.0, 1.0], lambda z: max(z, z**3)),
    ("Piecewise((x - 1, x > 1), (0, True)) + Abs(x)", [0.0, 1.0], lambda z: (z - 1 if z > 1 else 0) + abs(z)),
])
def test_decomposition_into_steps_at_the_kinks(text, points, by_hand):
    """f = p_0 + sum (p_i - p_(i-1)) theta(x - c_i) equals f (written by hand) between the kinks."""
    ns = {"x": X_SYM, "Max": sp.Max, "Min": sp.Min, "Abs": sp.Abs, "Heaviside": sp.Heaviside,
          "sign": sp.sign, "Piecewise": sp.Piecewise}
    comb = decompose(sp.sympify(text, locals=ns))
    found = sorted({float(a.at) for _, a in comb if isinstance(a, Half)})
    assert found == pytest.approx(points, abs=1e-15)
    for z in np.random.default_rng(0).uniform(-4, 4, 40):
        assert _atoms_value(comb, float(z)) == pytest.approx(by_hand(float(z)), abs=1e-12)


def test_no_decomposition_goes_to_quadrature():
    """Infinitely many kinks (no finite set of switch points): quadrature, with an error estimate."""
    with pytest.raises(NoRule):
        decompose(sp.Max(sp.sin(X_SYM), 0))
    e = expectation("Max(sin(x),0)")
    assert not e.is_closed_form
    value, err = e.evaluate(1.0, 1.0, 0.3, with_error=True)
    assert np.isfinite(value) and np.isfinite(err)


# --------------------------------------------------------------------------- expectations
@pytest.mark.parametrize("name", list(ACTS))
def test_diagonal_closed_forms(name):
    """E[s(u)^2] and E[s'(u)^2] in closed form (truncated Gaussian moments) vs scipy quadrature."""
    s, ds, kinks = ACTS[name]
    for derivative, fn in ((0, s), (1, ds)):
        diag = expectation(name, derivative=derivative, deltas=False).diagonal
        assert diag.is_closed_form, (name, derivative, diag)
        for var in (0.05, 0.6, 1.0, 2.5, 40.0):
            ref, err = quad1(lambda z, fn=fn: fn(z) ** 2, var, kinks)
            assert float(diag.evaluate(var)) == pytest.approx(ref, rel=1e-11, abs=1e-13 + err), (name, derivative, var)
    if name != "Abs(x-1)":  # Abs(x-1)^2 = (x-1)^2 is a polynomial: no step survives
        assert "truncated_moments" in expectation(name).diagonal.rules


@pytest.mark.parametrize("name", list(ACTS))
def test_off_diagonal_numerical_with_error(name):
    """E[s(u) s(v)], E[s'(u) s'(v)] off the diagonal: numerical (two steps away from 0 give the
    bivariate normal CDF), and within the reported error of an independent nested quadrature."""
    s, ds, kinks = ACTS[name]
    for derivative, fn in ((0, s), (1, ds)):
        e = expectation(name, derivative=derivative, deltas=False)
        if name == "Heaviside(x-1/2)" and derivative == 1:
            assert e.is_closed_form and e.expr == 0  # no gradient almost everywhere
            continue
        assert not e.is_closed_form and "Owen's T" in e.reason
        for k11, k22, rho in TRIPLES:
            k12 = rho * math.sqrt(k11 * k22)
            value, err = e.evaluate(k11, k22, k12, with_error=True)
            ref = quad2(fn, fn, k11, k22, k12, kinks, kinks)
            sq = lambda z, fn=fn: fn(z) ** 2
            scale = math.sqrt(quad1(sq, k11, kinks)[0] * quad1(sq, k22, kinks)[0])
            assert abs(float(value) - ref) <= float(err) + 1e-10 * scale, (name, derivative, k11, k22, rho)


def test_two_variable_closed_forms_with_shifted_steps():
    """Polynomials against shifted steps (Price's theorem ends in E[p(u) delta(v - c)]), and Dirac
    deltas at c != 0 (conditional Gaussian), vs scipy quadrature and scipy.stats densities."""
    relu1, step_half = ACTS["Max(x-1,0)"][0], ACTS["Heaviside(x-1/2)"][0]
    cases = [("x**2", "Max(x-1,0)", lambda z: z * z, relu1, (), (1.0,)),
             ("x**3 - x", "Heaviside(x-1/2)", lambda z: z**3 - z, step_half, (), (0.5,)),
             ("x", "Abs(x-1)", lambda z: z, ACTS["Abs(x-1)"][0], (), (1.0,))]
    for f, g, fn, gn, kf, kg in cases:
        e = expectation(f, g)
        assert e.is_closed_form and "truncated_moments" in e.rules, (f, g, e)
        for k11, k22, rho in TRIPLES:
            k12 = rho * math.sqrt(k11 * k22)
            ref = quad2(fn, gn, k11, k22, k12, kf, kg)
            assert float(e.evaluate(k11, k22, k12)) == pytest.approx(ref, rel=1e-10, abs=1e-12), (f, g, rho)
    # E[delta(u - 1/2) delta(v - 1/2)]: the bivariate normal density at (1/2, 1/2)
    dd = expectation("Heaviside(x-1/2)", derivative=1)
    # E[theta(u - 1) delta(v - 1/2)] = phi_k22(1/2) P(u > 1 | v = 1/2)
    td = expectation("Max(x-1,0)", "Heaviside(x-1/2)", derivative=1)
    assert dd.is_closed_form and td.is_closed_form
    for k11, k22, rho in TRIPLES[:4]:
        k12 = rho * math.sqrt(k11 * k22)
        pdf = stats.multivariate_normal(mean=[0, 0], cov=[[k11, k12], [k12, k22]]).pdf([0.5, 0.5])
        assert float(dd.evaluate(k11, k22, k12)) == pytest.approx(pdf, rel=1e-12)
        cond_mean, cond_sd = k12 / k22 * 0.5, math.sqrt(k11 - k12 * k12 / k22)
        ref = stats.norm(0, math.sqrt(k22)).pdf(0.5) * stats.norm(cond_mean, cond_sd).sf(1.0)
        assert float(td.evaluate(k11, k22, k12)) == pytest.approx(ref, rel=1e-12)


# --------------------------------------------------------------------------- kernel recursion
def _hand_recursion(name, X, depth, C_W, C_b):
    """NNGP and NTK (param ntk: lambda_b = C_b, lambda_W = C_W) by nested scipy quadratures."""
    s, ds, kinks = ACTS[name]
    G = X @ X.T / X.shape[1]
    K = C_b + C_W * G
    T = C_b + C_W * G
    n = len(X)
    for _ in range(depth):
        EK, ED = np.empty((n, n)), np.empty((n, n))
        for a in range(n):
            for b in range(a, n):
                if a == b:
                    EK[a, a] = quad1(lambda z: s(z) ** 2, K[a, a], kinks)[0]
                    ED[a, a] = quad1(lambda z: ds(z) ** 2, K[a, a], kinks)[0]
                else:
                    EK[a, b] = EK[b, a] = quad2(s, s, K[a, a], K[b, b], K[a, b], kinks, kinks)
                    ED[a, b] = ED[b, a] = quad2(ds, ds, K[a, a], K[b, b], K[a, b], kinks, kinks)
        K, T = C_b + C_W * EK, C_b + C_W * EK + C_W * ED * T
    return K, T


XS = np.array([[1.5, 0.5, -0.3], [0.3, -1.8, 0.9], [-1.1, 0.7, 1.4]])


@pytest.mark.parametrize("name", list(ACTS))
def test_kernel_recursion_depth_two(name):
    X = XS[:2]
    K_ref, T_ref = _hand_recursion(name, X, 2, 2.0, 0.2)
    res = KernelRecursion(name, 2, C_W=2.0, C_b=0.2)(X)
    err = res.info.get("quadrature_error") or 0.0
    for got, ref in ((res.nngp, K_ref), (res.ntk, T_ref)):
        assert np.all(np.isfinite(got))
        assert np.max(np.abs(got - ref)) <= 1e-9 * np.max(np.abs(ref)) + 10 * err, (name, got - ref)


@pytest.mark.slow
def test_compiled_kernel_equals_recursion():
    """One compiled kernel with the four activations as its layers (one compile) against the
    recursion, within the reported quadrature errors."""
    from ntk_theory.codegen import CompiledKernel

    acts = list(ACTS)
    X = np.random.default_rng(3).standard_normal((6, 3)) * 1.3
    res = CompiledKernel(acts, len(acts), C_W=2.0, C_b=0.2)(X)
    ref = KernelRecursion(acts, len(acts), C_W=2.0, C_b=0.2)(X)
    err = (res.info.get("quadrature_error") or 0.0) + (ref.info.get("quadrature_error") or 0.0)
    for got, want in ((res.nngp, ref.nngp), (res.ntk, ref.ntk)):
        assert np.all(np.isfinite(got))
        assert np.max(np.abs(got - want)) <= 10 * err + 1e-13 * np.max(np.abs(want))


# --------------------------------------------------------------------------- finite width
def _depth_two_k1(s, kinks, G0, C_W, C_b):
    """K1 of the output of two hidden layers for one input (PDLT eq. (4.118) with V, K1 = 0 after
    layer 1): K1 = (C_W / 2) M''(K2) V2, M(K) = <s^2>_K, V2 = C_W^2 (<s^4> - <s^2>^2)_K1,
    K2 = C_b + C_W <s^2>_K1, K1 = C_b + C_W G0; mpmath quadratures, M'' by central differences."""
    def avg(h, K):
        sd = mpmath.sqrt(K)
        pts = sorted({0, *(mpmath.mpf(c) / sd for c in kinks)})
        return mpmath.quad(lambda t: h(sd * t) * mpmath.npdf(t), [-mpmath.inf, *pts, mpmath.inf])

    with mpmath.workdps(40):
        K1 = C_b + C_W * mpmath.mpf(G0)
        ss = avg(lambda z: s(z) ** 2, K1)
        V2 = C_W**2 * (avg(lambda z: s(z) ** 4, K1) - ss**2)
        K2 = C_b + C_W * ss
        h = mpmath.mpf("1e-6")
        M = [avg(lambda z: s(z) ** 2, K2 + j * h) for j in (-1, 0, 1)]
        return float(C_W / 2 * (M[0] - 2 * M[1] + M[2]) / h**2 * V2)


def _mp_act(name):
    return {"Max(x-1,0)": lambda z: max(z - 1, 0), "Heaviside(x-1/2)": lambda z: mpmath.mpf(z > mpmath.mpf(1) / 2)}[name]


def _check_finite_width(name):
    from ntk_theory.finite_width import finite_width

    X = np.array([[1.5, 0.5], [0.3, -1.8]])
    C_W, C_b = 2.0, 0.1
    p = finite_width(name, X, depth=2, C_W=C_W, C_b=C_b)
    for arr in (p.nngp, p.ntk, p.nngp_correction, p.ntk_correction, p.V, p.A, p.B, p.D, p.F, p.ntk_covariance):
        assert np.all(np.isfinite(arr))
    assert np.isfinite(p.quadrature_error) and p.quadrature_error < 1e-6
    for a in range(2):
        ref = _depth_two_k1(_mp_act(name), ACTS[name][2], X[a] @ X[a] / 2, C_W, C_b)
        assert p.nngp_correction[a, a] == pytest.approx(ref, rel=1e-7, abs=1e-9), (name, a)
    K_ref, _ = _hand_recursion(name, X, 2, C_W, C_b)
    assert np.max(np.abs(p.nngp - K_ref)) <= 1e-9


def test_finite_width_step_at_one_half():
    _check_finite_width("Heaviside(x-1/2)")


@pytest.mark.slow
def test_finite_width_shifted_relu():
    _check_finite_width("Max(x-1,0)")


# --------------------------------------------------------------------------- command line
def _cli(*args, cwd):
    cmd = [sys.executable, "-m", "ntk_theory.cli", *args]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=cwd, timeout=600)


def test_cli_failures_are_one_line(tmp_path):
    np.save(tmp_path / "x.npy", XS)
    for args in (["kernel", "Max(x-1,0)*exp(x**2)", "--depth", "2", "--x1", "x.npy", "--out", "k.npz"],
                 ["criticality", "Heaviside(x-1/2)"]):
        out = _cli(*args, cwd=tmp_path)
        assert out.returncode != 0
        text = (out.stdout + out.stderr).strip()
        assert "Traceback" not in text and len(text.splitlines()) == 1, text
        assert "NoRule" not in text and "internal error" not in text, text


@pytest.mark.slow
def test_cli_kernel_shifted_relu(tmp_path):
    X = XS[:2]
    np.save(tmp_path / "x.npy", X)
    out = _cli("kernel", "Max(x-1,0)", "--depth", "2", "--C-W", "2", "--C-b", "0.2", "--x1", "x.npy",
               "--out", "k.npz", "--quiet", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    data = np.load(tmp_path / "k.npz")
    info = json.loads(str(data["info"]))
    K_ref, T_ref = _hand_recursion("Max(x-1,0)", X, 2, 2.0, 0.2)
    tol = 10 * (info.get("quadrature_error") or 0.0) + 1e-9
    assert np.max(np.abs(data["nngp"] - K_ref)) <= tol and np.max(np.abs(data["ntk"] - T_ref)) <= tol


def test_symbolic_finite_width_iterates_of_a_shifted_relu():
    """FiniteWidthRecursion.symbolic() for Max(x-1, 0) returns (large expressions are left unsimplified
    instead of running sp.simplify for minutes); its layer-2 K equals E[max(u-1, 0)^2], u ~ N(0, G0),
    by scipy quadrature."""
    from ntk_theory.finite_width import FiniteWidthRecursion

    states = FiniteWidthRecursion("Max(x-1,0)", 2, C_W=1.0, C_b=0.0, param="ntk").symbolic()
    G0 = sp.Symbol("G_0", positive=True)
    g0 = 0.7
    want = integrate.quad(lambda u: (u - 1) ** 2 * np.exp(-u * u / (2 * g0)) / np.sqrt(2 * np.pi * g0), 1, np.inf,
                          epsabs=0, epsrel=1e-13)[0]
    got = float(states[1].K.subs(G0, g0))
    assert abs(got - want) < 1e-12 * want
