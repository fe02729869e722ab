r"""Finite-width (1/n) statistics of residual MLPs (ntk_theory.finite_width.residual), one input.

Judges, independent of the recursion:

* the deep linear residual network, exactly (derivation below), at every layer and at the readout;
* the gamma = 0 limit (z(l) = xi^(l-1) z(1) is Gaussian; the readout is a one-hidden-layer network), by
  scipy quadrature;
* Monte Carlo of finite residual networks (ntk_theory.montecarlo.residual), fitted in 1/n over several
  widths, within 4 standard errors (slow set).

Deep linear residual network, exactly.  s(z) = z, C_b = 0, z(1) = W(1) x, z(l+1) = (xi I + gamma W) z(l),
W ~ N(0, C_W / n).  Given z = z(l), W z ~ N(0, (C_W |z|^2 / n) I), so with g ~ N(0, I_n) and the unit vector
e = z / |z|,  |z(l+1)|^2 = |z|^2 Q,  Q = |xi e + gamma sqrt(C_W / n) g|^2 = (xi + sqrt(c) g_1)^2 + c chi^2_(n-1),
c = gamma^2 C_W / n, and Q does not depend on z: the Q of successive layers are independent.  With
G(l) = |z(l)|^2 / n, E[G(l)^k] = E[G(1)^k] E[Q^k]^(l-1), and G(1) = (C_W(1) |x|^2 / n_0) chi^2_n / n, so

    E[Q] = xi^2 + gamma^2 C_W,   Var(Q) = 4 xi^2 c + 2 n c^2 = (2 gamma^2 C_W / n) (2 xi^2 + gamma^2 C_W),
    E[G(l)^2] / E[G(l)]^2 = (1 + 2/n) (1 + Var(Q) / E[Q]^2)^(l-1)                      (exact, every n)

and at criticality xi^2 + gamma^2 C_W = 1: Var(Q) = 2 (1 - xi^2)(1 + xi^2) / n, which is the issue's
(1 + 2/n)(1 + 2 (1 - xi^4)/n)^(l-1): confirmed.  E[G(l)] = K(l) exactly, so K1 = 0.  The law of z(l) is
rotation invariant (z(1) is, and xi I + gamma W is invariant under conjugation), so with rho = E[G^2]/E[G]^2:
E[z_i^2] = E[G], E[z_i^2 z_j^2] = n E[G^2] / (n + 2), E[z_i^4] = 3 n E[G^2] / (n + 2), hence exactly

    V(l)  = n (E[z_i^2 z_j^2] - E[z_i^2]^2) = n K^2 (n rho / (n + 2) - 1)  ->  K^2 (a - 2),
    readout (f = W(L+1) z(L)): n Cov(f_i^2, f_j^2) = n C_W^2 Var(G(L)) = n C_W^2 K^2 (rho - 1)  ->  C_W^2 K^2 a,

with rho = 1 + a/n + O(1/n^2), a = 2 + (l - 1) 2 gamma^2 C_W (2 xi^2 + gamma^2 C_W) / (xi^2 + gamma^2 C_W)^2,
and the single-neuron fourth cumulant n (E[z^4] - 3 E[z^2]^2) = 3 V exactly.
"""

import numpy as np
import pytest
import sympy as sp
from scipy import integrate

from ntk_theory.finite_width import FiniteWidthRecursion
from ntk_theory.finite_width.residual import NotDerived, ResidualRecursion
from ntk_theory.montecarlo.residual import sample_residual
from ntk_theory.validation.fits import weighted_fit

n_sym = sp.Symbol("n", positive=True)


def exact_linear_rho(n, l, xi, gamma, C_W):
    """E[G(l)^2] / E[G(l)]^2 of the deep linear residual network (module docstring), SymPy or float."""
    q = 2 * gamma**2 * C_W * (2 * xi**2 + gamma**2 * C_W) / (n * (xi**2 + gamma**2 * C_W) ** 2)
    return (1 + 2 / n) * (1 + q) ** (l - 1)


def _gauss(f, K):
    """E[f(z)], z ~ N(0, K), by scipy quad (tight tolerance)."""
    return integrate.quad(lambda z: f(z) * np.exp(-z * z / (2 * K)) / np.sqrt(2 * np.pi * K), -np.inf, np.inf,
                          epsabs=1e-13, epsrel=1e-12, limit=200)[0]


ACTS = {"relu": lambda z: np.maximum(z, 0.0), "tanh": np.tanh, "linear": lambda z: z}


def infinite_width_K(act, G0, depth, C_W, C_b, xi, gamma):
    """K of layers 1..L and the readout by quadrature: K' = xi^2 K + gamma^2 (C_b + C_W E[s^2])."""
    s = ACTS[act]
    K = [C_b + C_W * G0]
    for _ in range(depth - 1):
        K.append(xi**2 * K[-1] + gamma**2 * (C_b + C_W * _gauss(lambda z: s(z) ** 2, K[-1])))
    K.append(C_b + C_W * _gauss(lambda z: s(z) ** 2, K[-1]))
    return np.array(K)


# ---------------------------------------------------------------------------------------------- exact
@pytest.mark.parametrize("xi,gamma,C_W", [(0.6, 0.8, 1.0), (0.9, np.sqrt(0.19 / 1.7), 1.7), (0.5, 1.1, 0.9),
                                          (-0.7, 0.4, 2.0)])
def test_deep_linear_exact(xi, gamma, C_W):
    """V(l)/K^2, the readout's V, K1 = 0 and T = 0 against the n -> infinity limits of the exact result."""
    L, G0 = 6, 1.3
    states = ResidualRecursion("linear", L, C_W=C_W, C_b=0.0, xi=xi, gamma=gamma).one_input(G0=G0)
    xs, gs, cs = (sp.nsimplify(v, rational=True) for v in (xi, gamma, C_W))
    for l in range(1, L + 1):
        rho = exact_linear_rho(n_sym, l, xs, gs, cs)
        lim = float(sp.limit(n_sym * (n_sym * rho / (n_sym + 2) - 1), n_sym, sp.oo))
        st = states[l - 1]
        assert st.V / st.K**2 == pytest.approx(lim, rel=1e-12, abs=1e-12)
        assert st.K1 == 0 and st.T == 0
    rho = exact_linear_rho(n_sym, L, xs, gs, cs)
    out = states[L]
    assert out.V / (C_W**2 * states[L - 1].K ** 2) == pytest.approx(float(sp.limit(n_sym * (rho - 1), n_sym, sp.oo)),
                                                                   rel=1e-12)
    assert out.K1 == 0


def test_deep_linear_issue_formula_at_criticality():
    """At xi^2 + gamma^2 C_W = 1 the exact ratio is (1+2/n)(1+2(1-xi^4)/n)^(l-1) (issue's form), symbolically."""
    xi = sp.Symbol("xi", positive=True)
    C = sp.Symbol("C_W", positive=True)
    gamma = sp.sqrt((1 - xi**2) / C)
    for l in (1, 2, 5):
        assert sp.simplify(exact_linear_rho(n_sym, l, xi, gamma, C)
                           - (1 + 2 / n_sym) * (1 + 2 * (1 - xi**4) / n_sym) ** (l - 1)) == 0


@pytest.mark.parametrize("sampler,n,samples", [("projected", 8, 60_000), ("dense", 6, 30_000)])
def test_monte_carlo_deep_linear_finite_n(sampler, n, samples):
    """The Monte Carlo against the exact finite-n moments (every layer, its width n): judges the sampler."""
    L, xi, gamma, C_W = 4, 0.7, 0.6, 1.2
    mc = sample_residual("linear", 1.0, L, n, C_W=C_W, xi=xi, gamma=gamma, samples=samples, seed=3,
                         sampler=sampler)
    K = infinite_width_K("linear", 1.0, L, C_W, 0.0, xi, gamma)
    for l in range(1, L + 1):
        rho = exact_linear_rho(float(n), l, xi, gamma, C_W)
        V = n * K[l - 1] ** 2 * (n * rho / (n + 2) - 1)
        for name, exact in (("K", K[l - 1]), ("V", V), ("kappa4", 3 * V), ("T", 0.0), ("kappa3", 0.0)):
            est = mc[name]
            se = est.stderr[l - 1]
            assert np.isfinite(se) and se > 0
            assert abs(est.value[l - 1] - exact) < 4 * se, (name, l, est.value[l - 1], exact, se)
    rho = exact_linear_rho(float(n), L, xi, gamma, C_W)
    V_out = n * C_W**2 * K[L - 1] ** 2 * (rho - 1)
    assert abs(mc["V"].value[L] - V_out) < 4 * mc["V"].stderr[L]


# ---------------------------------------------------------------------------------------------- limits
def test_mlp_limit_consistency():
    """xi = 0: the MLP recursion with C_W -> gamma^2 C_W, C_b -> gamma^2 C_b (consistency with the MLP code path)."""
    g = 1.3
    res = ResidualRecursion("tanh", 4, C_W=1.5, C_b=0.1, xi=0.0, gamma=g).one_input(G0=0.8)
    mlp = FiniteWidthRecursion("tanh", 4, C_W=[1.5] + [g * g * 1.5] * 3 + [1.5],
                               C_b=[0.1] + [g * g * 0.1] * 3 + [0.1]).one_input(G0=0.8)
    for r, m in zip(res, mlp):
        for name in ("K", "V", "K1"):
            assert getattr(r, name) == pytest.approx(float(getattr(m, name)), rel=1e-9, abs=1e-12)
        assert r.T == 0


def test_gamma_zero_limit():
    """gamma = 0: z(l) = xi^(l-1) z(1) is Gaussian (V = K1 = T = 0 in the hidden layers) and the readout is a
    one-hidden-layer network: V = C_W^2 Var(s(z)^2), K1 = 0 (scipy quadrature)."""
    xi, C_W, C_b, L = 0.9, 1.4, 0.2, 5
    states = ResidualRecursion("tanh", L, C_W=C_W, C_b=C_b, xi=xi, gamma=0.0).one_input(G0=1.0)
    K_L = xi ** (2 * (L - 1)) * (C_b + C_W)
    for st in states[:L]:
        assert st.V == 0 and st.K1 == 0 and st.T == 0
    assert states[L - 1].K == pytest.approx(K_L, rel=1e-13)
    var = _gauss(lambda z: np.tanh(z) ** 4, K_L) - _gauss(lambda z: np.tanh(z) ** 2, K_L) ** 2
    assert states[L].V == pytest.approx(C_W**2 * var, rel=1e-9)
    assert states[L].K1 == 0


def test_refusals_name_the_problem():
    r = ResidualRecursion("relu", 3, C_W=1.0, xi=0.8, gamma=0.6)
    with pytest.raises(NotDerived, match="several-input"):
        r.tensors(np.eye(2))
    with pytest.raises(NotDerived, match="A, B, D, F"):
        r.ntk_tensors()
    with pytest.raises(NotDerived, match="one input"):
        r.one_input(np.eye(2))
    with pytest.raises(ValueError, match="standard"):
        ResidualRecursion("relu", 3, param="standard")
    with pytest.raises(ValueError, match="xi must be a scalar or have one entry per residual layer"):
        ResidualRecursion("relu", 3, xi=[0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="gamma must be finite"):
        ResidualRecursion("relu", 3, gamma=float("nan"))
    assert issubclass(NotDerived, ValueError)


# ---------------------------------------------------------------------------------------------- Monte Carlo
def _fits(act, G0, L, C_W, C_b, xi, gamma, widths, samples, seed):
    runs = [sample_residual(act, G0, L, n, C_W=C_W, C_b=C_b, xi=xi, gamma=gamma, samples=samples, seed=seed + n)
            for n in widths]
    out = {}
    for name in ("V", "T", "kappa3", "kappa4"):
        vals = np.stack([r[name].value for r in runs])
        errs = np.stack([r[name].stderr for r in runs])
        coef, se, _ = weighted_fit(widths, vals, errs, [0, 1])
        out[name] = (coef[0], se[0])
    K = infinite_width_K(act, G0, L, C_W, C_b, xi, gamma)
    vals = np.stack([r["K"].value for r in runs])
    errs = np.stack([r["K"].stderr for r in runs])
    coef, se, _ = weighted_fit(widths, vals, errs, [1, 2], fixed=K)
    out["K1"] = (coef[0], se[0])
    return out, K


def _assert_within(name, pred, fit, sigmas=4.0):
    value, se = fit
    assert np.all(np.isfinite(se)) and np.all(se > 0), (name, se)
    z = (value - np.asarray(pred)) / se
    assert np.all(np.abs(z) < sigmas), (name, pred, value, se, z)


@pytest.mark.slow
@pytest.mark.parametrize("act,C_W,C_b,xi,gamma", [
    ("relu", 1.0, 0.0, 0.8, np.sqrt(0.6)),     # T != 0: the self term of the branch kernel
    ("tanh", 1.2, 0.1, 0.7, 0.7),
])
def test_residual_against_monte_carlo(act, C_W, C_b, xi, gamma):
    """V, K1, T of every layer (and the readout's V, K1) against 1/n fits of finite residual networks."""
    L, G0 = 4, 1.0
    states = ResidualRecursion(act, L, C_W=C_W, C_b=C_b, xi=xi, gamma=gamma).one_input(G0=G0)
    fit, K = _fits(act, G0, L, C_W, C_b, xi, gamma, [16, 32, 64, 128], 300_000, 11)
    assert np.allclose([s.K for s in states], K, rtol=1e-9)
    _assert_within("V", [s.V for s in states], fit["V"])
    _assert_within("K1", [s.K1 for s in states], fit["K1"])
    _assert_within("T", [s.T for s in states[:L]], fit["T"])
    _assert_within("kappa3 = 3T", [3 * s.T for s in states[:L]], fit["kappa3"])
    _assert_within("kappa4 = 3V", [3 * s.V for s in states[:L]], fit["kappa4"])


@pytest.mark.slow
def test_deep_linear_against_monte_carlo_fit():
    """The recursion's V of the deep linear residual net against the 1/n fit of the Monte Carlo."""
    L, xi, gamma, C_W = 5, 0.8, 0.6, 1.0
    states = ResidualRecursion("linear", L, C_W=C_W, xi=xi, gamma=gamma).one_input(G0=1.0)
    fit, _ = _fits("linear", 1.0, L, C_W, 0.0, xi, gamma, [16, 32, 64, 128], 200_000, 5)
    _assert_within("V", [s.V for s in states], fit["V"])
    _assert_within("K1", [s.K1 for s in states], fit["K1"])
