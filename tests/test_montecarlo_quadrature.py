"""The control variates' means (ntk_theory/montecarlo/controls.py, quadrature.py) against scipy's adaptive quadrature
written here, split at the kinks; the Gauss rules against the closed-form moments of their weights; the Monte
Carlo package free of the symbolic layer it judges."""

import subprocess
import sys

import numpy as np
import pytest
from scipy import integrate, special

from ntk_theory.architecture import MLPSpec
from ntk_theory.montecarlo import layer_statistics
from ntk_theory.montecarlo.controls import ControlVariates
from ntk_theory.montecarlo.quadrature import (
    half_range_gauss,
    pair_expectations,
    single_expectations,
)
from ntk_theory.reference import numpy_activation

X3 = np.array([[0.8, -0.5, 1.1], [0.3, 0.9, -0.4], [-1.0, 0.2, 0.5]])
PHI = lambda x: np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)


def scipy_pair(f, g, k11, k22, k12):
    """E[f(u) g(v)], (u, v) ~ N(0, [[k11, k12], [k12, k22]]): u = A x, v = B (rho x + s y) with x, y iid N(0, 1);
    nested scipy quad split at the kinks x = 0 (u = 0) and y = -rho x / s (v = 0)."""
    A, B = np.sqrt(k11), np.sqrt(k22)
    rho = k12 / (A * B)
    s = np.sqrt(1 - rho * rho)
    opts = {"epsabs": 1e-14, "epsrel": 1e-12, "limit": 200}

    def inner(x):
        y0 = float(np.clip(-rho * x / s, -14, 14))
        h = lambda y: g(B * (rho * x + s * y)) * PHI(y)
        return integrate.quad(h, -14, y0, **opts)[0] + integrate.quad(h, y0, 14, **opts)[0]

    outer = lambda x: f(A * x) * PHI(x) * inner(x)
    return integrate.quad(outer, -14, 0, **opts)[0] + integrate.quad(outer, 0, 14, **opts)[0]


def scipy_single(f, k):
    opts = {"epsabs": 1e-15, "epsrel": 1e-13, "limit": 200}
    h = lambda x: f(np.sqrt(k) * x) ** 2 * PHI(x)
    return integrate.quad(h, -14, 0, **opts)[0] + integrate.quad(h, 0, 14, **opts)[0]


def scalar(f):
    return lambda x: float(f(np.asarray(x, dtype=float)))


@pytest.mark.parametrize("m, power", [(8, 0), (20, 0), (8, 1), (24, 1)])
def test_half_range_gauss_integrates_monomials(m, power):
    """int_0^inf x^(k+p) exp(-x^2/2) dx = 2^((k+p-1)/2) Gamma((k+p+1)/2), exact for k < 2m."""
    x, w = half_range_gauss(m, power)
    for k in range(2 * m):
        exact = 2 ** ((k + power - 1) / 2) * special.gamma((k + power + 1) / 2)
        assert np.sum(w * x**k) == pytest.approx(exact, rel=1e-12), k


@pytest.mark.parametrize("name, C_W, C_b", [("relu", 2.0, 0.0), ("tanh", 1.5, 0.1), ("gelu", 1.8, 0.1),
                                            ("elu(1/2)", 1.5, 0.1)])
def test_control_variate_means_against_scipy(name, C_W, C_b):
    """Layer 1: T(K(1)), Tdot(K(1)) at every entry; deeper layers: the per-network rules at covariances around
    the layer's kernel (diagonals x e^(+-1/2), a turned angle) against nested scipy quad, to 1e-9 of the
    Cauchy-Schwarz scale sqrt(E[s(u)^2] E[s(v)^2])."""
    act = numpy_activation(name)
    spec = MLPSpec.build(3, 3, 64, 2, C_W=C_W, C_b=C_b, param="ntk")
    cv = ControlVariates(act, spec, X3)
    assert cv.T1 is not None and set(cv.rules) == {1, 2}, cv.status
    f, g = scalar(act.value), scalar(act.derivative)
    K1 = C_b + C_W * X3 @ X3.T / 3
    ia, ib = np.triu_indices(3)
    for j, (a, b) in enumerate(zip(ia, ib)):
        scale = np.sqrt(scipy_single(f, K1[a, a]) * scipy_single(f, K1[b, b]))
        dscale = np.sqrt(scipy_single(g, K1[a, a]) * scipy_single(g, K1[b, b]))
        if a == b:
            ss, dd = scipy_single(f, K1[a, a]), scipy_single(g, K1[a, a])
        else:
            ss, dd = scipy_pair(f, f, K1[a, a], K1[b, b], K1[a, b]), scipy_pair(g, g, K1[a, a], K1[b, b], K1[a, b])
        assert abs(cv.T1[0][j] - ss) <= 1e-9 * scale
        assert abs(cv.T1[1][j] - dd) <= 1e-9 * dscale
    # per-network rules of hidden layer 3, at covariances a network might have
    pair, line = cv.rules[2]
    rng = np.random.default_rng(0)
    for k11, k22, rho in [(0.7, 1.9, 0.35), (2.6, 1.1, -0.6), (1.3, 1.3, 0.97)]:
        k11, k22 = k11 * np.exp(0.5 * rng.standard_normal(2))
        k12 = rho * np.sqrt(k11 * k22)
        ss, dd = pair_expectations(act, k11, k22, k12, pair)
        s11, d11 = single_expectations(act, k11, line)
        scale = np.sqrt(scipy_single(f, k11) * scipy_single(f, k22))
        dscale = np.sqrt(scipy_single(g, k11) * scipy_single(g, k22))
        assert abs(ss - scipy_pair(f, f, k11, k22, k12)) <= 1e-9 * scale
        assert abs(dd - scipy_pair(g, g, k11, k22, k12)) <= 1e-9 * dscale
        assert abs(s11 - scipy_single(f, k11)) <= 1e-9 * scipy_single(f, k11)
        assert abs(d11 - scipy_single(g, k11)) <= 1e-9 * scipy_single(g, k11)


def test_a_kink_away_from_zero_turns_the_T_controls_off_and_says_why():
    """relu(x - 1): the quadrature's rays are at u = 0, so it converges only algebraically; the controls that
    need it are off, the reason is reported, and the Monte Carlo still runs on the exact controls."""
    act = numpy_activation((lambda z: np.maximum(z - 1.0, 0.0), lambda z: (z > 1.0).astype(float)))
    cv = ControlVariates(act, MLPSpec.build(3, 3, 16, 2, C_W=2.0, C_b=0.1, param="ntk"), X3)
    assert cv.T1 is None and not cv.rules
    assert "kink away from 0" in cv.status["layer1_off"] and "kink away from 0" in cv.status["per_network_off"]
    r = layer_statistics(act, X3, 3, 16, C_W=2.0, C_b=0.1, samples=400, batches=4)
    assert r.info["control_variates"]["per_network_off"] == cv.status["per_network_off"]
    assert not r.info["per_network_T_controls"]


@pytest.mark.parametrize("tol", [1e-5, 1e-3])
def test_wrong_control_means_stay_within_the_standard_error(monkeypatch, tol):
    """Controls whose means are off by 0.9 of their bound b = tol x scale (every T control, one sign) move K by
    beta . (0.9 b) on the same networks (a constant shift leaves the fitted beta unchanged); the bound
    |beta| . b that the standard error carries covers it."""
    import ntk_theory.montecarlo.finite_width as fw

    def shifted_by(factor):
        class Shifted(ControlVariates):
            def __init__(self, act, spec, X, enabled=True):
                super().__init__(act, spec, X, enabled, tol=tol)
                M = len(self.iu[0])
                shift = factor * self.bounds
                self.T1 = (self.T1[0] + shift[:M], self.T1[1] + shift[M:2 * M])
                self.shift = {l: shift[2 * M * i:2 * M * (i + 1)] for i, l in enumerate(sorted(self.rules), 1)}

            def _T(self, K, layer):
                T, Td = super()._T(K, layer)
                M = T.shape[1]
                return T + self.shift[layer][:M], Td + self.shift[layer][M:]

        return Shifted

    kw = {"samples": 6000, "seed": 3, "batches": 20}
    runs = []
    for factor in (0.0, 0.9):
        monkeypatch.setattr(fw, "ControlVariates", shifted_by(factor))
        runs.append(layer_statistics("tanh", X3[:2], 3, 32, C_W=1.5, C_b=0.1, **kw))
    exact, shifted = runs
    assert shifted.info["control_variates"]["tolerance"] == tol
    for name in ("K", "ntk"):
        diff = np.abs(shifted[name].value - exact[name].value)
        assert np.all(diff <= shifted[name].stderr), (name, diff / shifted[name].stderr)
        assert np.allclose(shifted[name].stderr, exact[name].stderr, rtol=1e-2)  # the same bound in both
    assert np.max(np.abs(shifted["K"].value - exact["K"].value) / shifted["K"].stderr) > 0.05  # the shift shows


def test_montecarlo_imports_nothing_of_the_symbolic_layer():
    """A fresh interpreter: sampling and the finite-width statistics of library activations load no module of
    activations, gaussian, recursions, finite_width, codegen, jit or validation, and not SymPy."""
    code = """
import sys, numpy as np
from ntk_theory.montecarlo import layer_statistics, sample_statistics
X = np.array([[0.8, -0.5, 1.1], [0.3, 0.9, -0.4]])
layer_statistics("gelu", X, 3, 16, C_W=1.5, C_b=0.1, samples=200, batches=4)
sample_statistics(X, "tanh", 2, 8, samples=200, batches=4)
bad = [m for m in sys.modules if m.split(".")[:2] in [["ntk_theory", p] for p in
       ("activations", "gaussian", "recursions", "finite_width", "codegen", "jit", "validation")] or m == "sympy"]
print(bad)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
