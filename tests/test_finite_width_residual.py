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
from ntk_theory.montecarlo.residual import (
    residual_ntk_rows,
    sample_residual,
    sample_residual_ntk,
)
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
    """V(l)/K^2, the readout's V, K1 = 0 and M3 = 0 against the n -> infinity limits of the exact result."""
    L, G0 = 6, 1.3
    states = ResidualRecursion("linear", L, C_W=C_W, C_b=0.0, xi=xi, gamma=gamma).one_input(G0=G0)
    xs, gs, cs = (sp.nsimplify(v, rational=True) for v in (xi, gamma, C_W))
    for l in range(1, L + 1):
        rho = exact_linear_rho(n_sym, l, xs, gs, cs)
        lim = float(sp.limit(n_sym * (n_sym * rho / (n_sym + 2) - 1), n_sym, sp.oo))
        st = states[l - 1]
        assert st.V / st.K**2 == pytest.approx(lim, rel=1e-12, abs=1e-12)
        assert st.K1 == 0 and st.M3 == 0
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
        for name, exact in (("K", K[l - 1]), ("V", V), ("kappa4", 3 * V), ("M3", 0.0), ("kappa3", 0.0)):
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
        assert r.M3 == 0


def test_gamma_zero_limit():
    """gamma = 0: z(l) = xi^(l-1) z(1) is Gaussian (V = K1 = M3 = 0 in the hidden layers) and the readout is a
    one-hidden-layer network: V = C_W^2 Var(s(z)^2), K1 = 0 (scipy quadrature)."""
    xi, C_W, C_b, L = 0.9, 1.4, 0.2, 5
    states = ResidualRecursion("tanh", L, C_W=C_W, C_b=C_b, xi=xi, gamma=0.0).one_input(G0=1.0)
    K_L = xi ** (2 * (L - 1)) * (C_b + C_W)
    for st in states[:L]:
        assert st.V == 0 and st.K1 == 0 and st.M3 == 0
    assert states[L - 1].K == pytest.approx(K_L, rel=1e-13)
    var = _gauss(lambda z: np.tanh(z) ** 4, K_L) - _gauss(lambda z: np.tanh(z) ** 2, K_L) ** 2
    assert states[L].V == pytest.approx(C_W**2 * var, rel=1e-9)
    assert states[L].K1 == 0


def test_refusals_name_the_problem():
    r = ResidualRecursion("relu", 3, C_W=1.0, xi=0.8, gamma=0.6)
    with pytest.raises(NotDerived, match="one input"):
        r.one_input(np.eye(2))
    with pytest.raises(ValueError, match="standard"):
        ResidualRecursion("relu", 3, param="standard")
    with pytest.raises(ValueError, match="xi must be a scalar or have one entry per residual layer"):
        ResidualRecursion("relu", 3, xi=[0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="gamma must be a finite number"):
        ResidualRecursion("relu", 3, gamma=float("nan"))
    assert issubclass(NotDerived, ValueError)


# ---------------------------------------------------------------------------------------------- Monte Carlo
def _fits(act, G0, L, C_W, C_b, xi, gamma, widths, samples, seed):
    runs = [sample_residual(act, G0, L, n, C_W=C_W, C_b=C_b, xi=xi, gamma=gamma, samples=samples, seed=seed + n)
            for n in widths]
    out = {}
    for name in ("V", "M3", "kappa3", "kappa4"):
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
    ("relu", 1.0, 0.0, 0.8, np.sqrt(0.6)),     # M3 != 0: the self term of the branch kernel
    ("tanh", 1.2, 0.1, 0.7, 0.7),
])
def test_residual_against_monte_carlo(act, C_W, C_b, xi, gamma):
    """V, K1, M3 of every layer (and the readout's V, K1) against 1/n fits of finite residual networks."""
    L, G0 = 4, 1.0
    states = ResidualRecursion(act, L, C_W=C_W, C_b=C_b, xi=xi, gamma=gamma).one_input(G0=G0)
    fit, K = _fits(act, G0, L, C_W, C_b, xi, gamma, [16, 32, 64, 128], 300_000, 11)
    assert np.allclose([s.K for s in states], K, rtol=1e-9)
    _assert_within("V", [s.V for s in states], fit["V"])
    _assert_within("K1", [s.K1 for s in states], fit["K1"])
    _assert_within("M3", [s.M3 for s in states[:L]], fit["M3"])
    _assert_within("kappa3 = 3 M3", [3 * s.M3 for s in states[:L]], fit["kappa3"])
    _assert_within("kappa4 = 3V", [3 * s.V for s in states[:L]], fit["kappa4"])


@pytest.mark.slow
def test_deep_linear_against_monte_carlo_fit():
    """The recursion's V of the deep linear residual net against the 1/n fit of the Monte Carlo."""
    L, xi, gamma, C_W = 5, 0.8, 0.6, 1.0
    states = ResidualRecursion("linear", L, C_W=C_W, xi=xi, gamma=gamma).one_input(G0=1.0)
    fit, _ = _fits("linear", 1.0, L, C_W, 0.0, xi, gamma, [16, 32, 64, 128], 200_000, 5)
    _assert_within("V", [s.V for s in states], fit["V"])
    _assert_within("K1", [s.K1 for s in states], fit["K1"])


# ---------------------------------------------------------------------------------------------- NTK side
NTK_NAMES = ("K", "Th", "V", "K1", "A", "B", "D", "F", "Th1")


@pytest.mark.parametrize("act", ["relu", "tanh"])
@pytest.mark.parametrize("depth", [1, 2, 3, 6])
@pytest.mark.parametrize("param", ["ntk", "unit"])
def test_ntk_mlp_limit(act, depth, param):
    """xi = 0, gamma = 1 is the MLP: every one-input quantity (A, B, D, F, Theta1 included) equals
    FiniteWidthRecursion.one_input's (validated against Monte Carlo on its own) to 1e-10."""
    C_W, C_b = [1.4, 1.7, 1.1, 2.0, 1.3, 1.6, 0.9][:depth + 1], 0.15
    res = ResidualRecursion(act, depth, C_W=C_W, C_b=C_b, xi=0.0, gamma=1.0, param=param).one_input(G0=0.7)
    mlp = FiniteWidthRecursion(act, depth, C_W=C_W, C_b=C_b, param=param).one_input(G0=0.7)
    for r, m in zip(res, mlp):
        for name in NTK_NAMES:
            assert getattr(r, name) == pytest.approx(float(getattr(m, name)), rel=1e-10, abs=1e-12), name
        assert r.ntk_variance == pytest.approx(float(m.ntk_variance), rel=1e-10, abs=1e-12)


def exact_linear_layer2(xi, gamma, C_W, G0):
    r"""A, B, D, F of layer 2 of the deep linear residual network (C_b = 0, param 'ntk': lambda_b = 0,
    lambda_W = C_W), exact at every width n (derivation, i != j):

    z(1) = W1 x ~ N(0, K1 I), K1 = C_W G0; z(2) = M z(1), M = xi I + gamma W, W ~ N(0, C_W / n);
    Theta(2) = gamma^2 H2 I + H1 M M^T with H1 = C_W G0 (layer 1's NTK), H2 = C_W |z(1)|^2 / n, so
    Theta_ij = H1 [xi gamma (W_ij + W_ji) + gamma^2 w_i.w_j] and Theta_ii = gamma^2 H2 + H1 (xi^2 + 2 xi gamma
    W_ii + gamma^2 |w_i|^2) (w_i the rows).  Wick (only even moments of independent entries survive):

      B = n E[Theta_ij^2] = H1^2 (2 xi^2 gamma^2 C_W + gamma^4 C_W^2)        (E[(w_i.w_j)^2] = C_W^2 / n)
      A = n Cov(Theta_ii, Theta_jj) = gamma^4 C_W^2 n Var(|z1|^2 / n) = 2 gamma^4 C_W^2 K1^2
      D = n Cov(Theta_ii, z_j(2)^2) = gamma^2 C_W n Cov(|z1|^2/n, xi^2 z1_j^2 + gamma^2 C_W |z1|^2/n)
        = 2 gamma^2 C_W K1^2 (xi^2 + gamma^2 C_W)
      F = n E[Theta_ij z_i z_j] = H1 [xi gamma 2 xi gamma C_W K1 + gamma^4 C_W^2 K1]   (W_ij pairs with the
          W_ij z1_j of z_i = xi z1_i + gamma w_i.z1; w_i.w_j with (w_i.z1)(w_j.z1))
    """
    H1 = K1 = C_W * G0
    return {"B": H1**2 * (2 * xi**2 * gamma**2 * C_W + gamma**4 * C_W**2),
            "A": 2 * gamma**4 * C_W**2 * K1**2,
            "D": 2 * gamma**2 * C_W * K1**2 * (xi**2 + gamma**2 * C_W),
            "F": H1 * K1 * gamma**2 * C_W * (2 * xi**2 + gamma**2 * C_W)}


@pytest.mark.parametrize("xi,gamma,C_W", [(0.7, 0.9, 1.3), (0.6, 0.8, 1.0), (-0.5, 1.2, 0.8)])
def test_ntk_deep_linear_layer2_exact(xi, gamma, C_W):
    """Layer 2 of the deep linear residual net: A, B, D, F against the exact (all-n) Wick results, the cross
    terms xi gamma (W_ij + W_ji) included (they give the 2 xi^2 parts)."""
    G0 = 1.1
    st = ResidualRecursion("linear", 3, C_W=C_W, C_b=0.0, xi=xi, gamma=gamma).one_input(G0=G0)[1]
    for name, value in exact_linear_layer2(xi, gamma, C_W, G0).items():
        assert getattr(st, name) == pytest.approx(value, rel=1e-12), name


@pytest.mark.parametrize("C_b", [0.0, 0.3])
def test_ntk_deep_linear_mean_exact(C_b):
    """Deep linear residual nets: E[Theta] has no width correction at any depth (exactly: Theta(l) =
    sum_m gamma_m^2 H(m) J(l,m) J(l,m)^T with H(m) independent of J(l,m), and E[M A M^T | A] = xi^2 A +
    gamma^2 C_W tr(A)/n I for M = xi I + gamma W with W independent of A), so Theta1 = 0 at every layer."""
    for L in (2, 3, 6):
        states = ResidualRecursion("linear", L, C_W=1.2, C_b=C_b, xi=0.8, gamma=0.5).one_input(G0=0.9)
        for st in states:
            assert abs(st.Th1) < 1e-12 * max(1.0, st.Th)


@pytest.mark.parametrize("seed", [2])
def test_monte_carlo_ntk_linear_layer2_finite_n(seed):
    """The NTK Monte Carlo (dense weights, backpropagated Jacobians) at n = 8 against the exact all-n layer-2
    results of the deep linear network and E[Theta(2)] = Theta: judges the sampler."""
    xi, gamma, C_W, G0 = 0.7, 0.9, 1.3, 1.1
    mc = sample_residual_ntk("linear", G0, 2, 8, C_W=C_W, xi=xi, gamma=gamma, samples=20_000, seed=seed, neurons=8)
    for name, value in exact_linear_layer2(xi, gamma, C_W, G0).items():
        est = mc[name]
        assert abs(est.value[1] - value) < 4 * est.stderr[1], (name, est.value[1], value, est.stderr[1])
    H1 = K1 = C_W * G0
    Th2 = H1 * (xi**2 + gamma**2 * C_W) + gamma**2 * C_W * K1
    assert abs(mc["Th"].value[1] - Th2) < 4 * mc["Th"].stderr[1]


def test_monte_carlo_ntk_rows_against_finite_differences():
    """residual_ntk_rows (the Monte Carlo's NTK) on one explicit small tanh network against
    Theta_ij = sum_theta lambda_theta df_i/dtheta df_j/dtheta by central finite differences of the outputs
    (hidden layer 3 and the readout, all parameters of all layers, 'ntk' factors lambda_W = C_W / fan-in)."""
    rng = np.random.default_rng(0)
    n, n0, L, xi, gamma, C_W, C_b = 5, 3, 3, 0.6, 0.9, 1.4, 0.2
    s, ds = np.tanh, lambda z: 1 / np.cosh(z) ** 2
    x = rng.standard_normal(n0)
    Ws = [rng.standard_normal((n, n0)) * np.sqrt(C_W / n0)] + [rng.standard_normal((n, n)) * np.sqrt(C_W / n)
                                                             for _ in range(L)]
    bs = [rng.standard_normal(n) * np.sqrt(C_b) for _ in range(L + 1)]

    def forward(Ws, bs):
        zs = [Ws[0] @ x + bs[0]]
        for l in range(1, L):
            zs.append(xi * zs[-1] + gamma * (Ws[l] @ s(zs[-1]) + bs[l]))
        zs.append(Ws[L] @ s(zs[-1]) + bs[L])
        return zs

    eps, grads = 1e-6, []
    for l in range(L + 1):
        fan_in = n0 if l == 0 else n
        for which, lam in ((0, C_W / fan_in), (1, C_b)):
            arr = (Ws, bs)[which]
            for idx in np.ndindex(arr[l].shape):
                shifted = []
                for sign in (1, -1):
                    new = [a.copy() for a in arr]
                    new[l][idx] += sign * eps
                    zs = forward(new, bs) if which == 0 else forward(Ws, new)
                    shifted.append(np.concatenate([zs[L - 1], zs[L]]))
                grads.append(np.sqrt(lam) * (shifted[0] - shifted[1]) / (2 * eps))
    G = np.array(grads)
    theta_fd = G.T @ G  # rows/cols: hidden layer L, then the readout
    zs = forward(Ws, bs)
    H = [C_b + C_W * (x @ x) / n0] + [C_b + C_W * np.mean(s(zs[m]) ** 2) for m in range(L)]
    rows = residual_ntk_rows([None] + [W[None] for W in Ws[1:]], [ds(z)[None] for z in zs[:L]],
                             [np.array([h]) for h in H], [0.0] + [xi] * (L - 1), [1.0] + [gamma] * (L - 1) + [1.0], n)
    assert np.allclose(rows[L - 1][0], theta_fd[:n, :n], rtol=1e-6, atol=1e-8)
    assert np.allclose(rows[L][0], theta_fd[n:, n:], rtol=1e-6, atol=1e-8)


def infinite_width_Th(act, G0, depth, C_W, C_b, xi, gamma, param="ntk"):
    """Theta of layers 1..L and the readout by quadrature: Th' = xi^2 Th + gamma^2 (lambda_b + lambda_W E[s^2]
    + C_W E[s'^2] Th)."""
    s = ACTS[act]
    ds = {"relu": lambda z: float(z > 0), "tanh": lambda z: 1 - np.tanh(z) ** 2, "linear": lambda z: 1.0}[act]
    lam = (lambda: (C_b, C_W)) if param == "ntk" else (lambda: (1.0, 1.0))
    lb, lw = lam()
    K = infinite_width_K(act, G0, depth, C_W, C_b, xi, gamma)
    Th = [lb + lw * G0]
    for l in range(1, depth + 1):
        k = K[l - 1]
        step = lb + lw * _gauss(lambda z: s(z) ** 2, k) + C_W * _gauss(lambda z: ds(z) ** 2, k) * Th[-1]
        Th.append(xi**2 * Th[-1] + gamma**2 * step if l < depth else step)
    return np.array(Th)


NTK_FITTED = ("A", "B", "D", "F", "ntk_variance", "ntk_kernel_covariance")


@pytest.mark.slow
@pytest.mark.parametrize("act,C_W,C_b,xi,gamma,param", [
    ("relu", 1.0, 0.0, 0.8, 0.6, "ntk"),       # xi^2 + gamma^2 C_W = 1
    ("tanh", 1.0, 0.0, 0.6, 0.8, "ntk"),       # xi^2 + gamma^2 C_W = 1
    ("tanh", 1.2, 0.1, 0.7, 0.7, "ntk"),
    ("relu", 2.0, 0.1, 0.5, 0.8, "unit"),
])
def test_residual_ntk_against_monte_carlo(act, C_W, C_b, xi, gamma, param):
    """A, B, D, F, n Var(Theta_ii) = A + 2B, n Cov(Theta_ii, z_i^2) = D + 2F and Theta1 of the hidden layers
    2..L and the readout against 1/n fits (widths 16..128) of finite residual networks with dense weights,
    within 4 standard errors; Theta (infinite width) by scipy quadrature fixes the intercept of E[Theta]."""
    L, G0, widths = 3, 1.0, [16, 32, 64, 128]
    states = ResidualRecursion(act, L, C_W=C_W, C_b=C_b, xi=xi, gamma=gamma, param=param).one_input(G0=G0)
    Th = infinite_width_Th(act, G0, L, C_W, C_b, xi, gamma, param)
    assert np.allclose([s.Th for s in states], Th, rtol=1e-9)
    runs = [sample_residual_ntk(act, G0, L, n, C_W=C_W, C_b=C_b, xi=xi, gamma=gamma, param=param,
                                samples=int(48_000 * (16 / n) ** 0.5), seed=100 + n) for n in widths]
    pred = {name: np.array([getattr(s, name) for s in states]) for name in ("A", "B", "D", "F", "Th1")}
    pred["ntk_variance"] = pred["A"] + 2 * pred["B"]
    pred["ntk_kernel_covariance"] = pred["D"] + 2 * pred["F"]
    sl = slice(1, L + 1)  # layer 1 has no fluctuations (zero standard errors)
    for name in NTK_FITTED:
        vals = np.stack([r[name].value[sl] for r in runs])
        errs = np.stack([r[name].stderr[sl] for r in runs])
        coef, se, _ = weighted_fit(widths, vals, errs, [0, 1])
        _assert_within(name, pred[name][sl], (coef[0], se[0]))
    vals = np.stack([r["Th"].value[sl] for r in runs])
    errs = np.stack([r["Th"].stderr[sl] for r in runs])
    coef, se, _ = weighted_fit(widths, vals, errs, [1, 2], fixed=Th[sl])
    _assert_within("Th1", pred["Th1"][sl], (coef[0], se[0]))


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_pair_averages_against_scipy(act):
    """E[g^(k)(u) h(v)] of the NTK side's two-layer averages against scipy quadrature: k = 0 by a nested quad
    of g(u) h(v); k = 1, 2 by a central difference of E[g(u + c) h(v)] in the shift c (E[g'(u) h(v)] =
    d/dc E[g(u + c) h(v)], second difference for k = 2) — independent of the integration by parts used."""
    from ntk_theory.activations import activation
    from ntk_theory.finite_width.residual import PairAverages

    s = ACTS[act]
    ds = {"relu": lambda z: float(z > 0), "tanh": lambda z: 1 - np.tanh(z) ** 2}[act]
    f = {"ss": lambda z: s(z) ** 2, "dd": lambda z: ds(z) ** 2, "sd": lambda z: s(z) * ds(z)}
    Ku, Kv, P = 1.3, 0.8, 0.6
    tab = PairAverages(activation(act)).table(Ku, Kv, P, (("ss", 0), ("dd", 0), ("sd", 0), ("ss", 2), ("dd", 1)),
                                               ("ss", "dd", "sd"))
    mu_c, sig = P / Kv, np.sqrt(Ku - P * P / Kv)

    def E(g, h, c=0.0):
        def inner(v):
            m = mu_c * v + c
            pts = [(-m) / sig] if act == "relu" else None
            return integrate.quad(lambda t: f[g](m + sig * t) * np.exp(-t * t / 2) / np.sqrt(2 * np.pi), -12, 12,
                                  points=pts, epsabs=1e-14, epsrel=1e-13, limit=200)[0]
        return integrate.quad(lambda v: f[h](v) * inner(v) * np.exp(-v * v / (2 * Kv)) / np.sqrt(2 * np.pi * Kv),
                              -12 * np.sqrt(Kv), 12 * np.sqrt(Kv), points=[0.0] if act == "relu" else None,
                              epsabs=1e-14, epsrel=1e-13, limit=200)[0]

    for g in ("ss", "dd", "sd"):
        for h in ("ss", "dd", "sd"):
            assert tab[(g, 0, h)] == pytest.approx(E(g, h), rel=1e-10, abs=1e-12), (g, h)
    c = 1e-3
    d1 = (E("dd", "sd", c) - E("dd", "sd", -c)) / (2 * c)
    assert tab[("dd", 1, "sd")] == pytest.approx(d1, rel=1e-5)
    d2 = (E("ss", "ss", c) - 2 * E("ss", "ss") + E("ss", "ss", -c)) / c**2
    assert tab[("ss", 2, "ss")] == pytest.approx(d2, rel=1e-5)


@pytest.mark.parametrize("xi,gamma,C_W,C_b", [(0.7, 0.9, 1.3, 0.0), (0.8, 0.6, 1.0, 0.2), (-0.5, 1.2, 0.8, 0.1)])
def test_ntk_deep_linear_B_all_depths(xi, gamma, C_W, C_b):
    r"""B of the deep linear residual net at every layer and the readout against its exact one-step identity.

    Theta(l+1) = gamma^2 H(l+1) I + M Theta M^T, M = xi I + gamma W, W ~ N(0, c = C_W/n) independent of
    Theta = Theta(l).  For i != j, Wick over W (rows i != j independent; only even moments survive):
    E[(M Theta M^T)_ij^2 | Theta] = xi^4 Theta_ij^2 + xi^2 gamma^2 c (|Theta_i.|^2 + |Theta_j.|^2)
    + gamma^4 c^2 ||Theta||_F^2, and E|Theta_i.|^2 = E[Theta_ii^2] + (n - 1) E[Theta_ij^2], so as n -> infinity
    B(l+1) = xi^4 B(l) + (2 xi^2 gamma^2 C_W + gamma^4 C_W^2)(Theta(l)^2 + B(l)); the readout is the same with
    xi = 0, gamma = 1.  Theta(l) by its own recursion (H(l) = C_b + C_W K(l-1) in 'ntk')."""
    L, G0 = 6, 0.9
    states = ResidualRecursion("linear", L, C_W=C_W, C_b=C_b, xi=xi, gamma=gamma).one_input(G0=G0)
    K, Th, B = C_b + C_W * G0, C_b + C_W * G0, 0.0
    for l in range(1, L + 1):
        assert states[l - 1].B == pytest.approx(B, rel=1e-11, abs=1e-12), l
        x, g = (xi, gamma) if l < L else (0.0, 1.0)
        H = C_b + C_W * K
        B = x**4 * B + (2 * x**2 * g**2 * C_W + g**4 * C_W**2) * (Th**2 + B)
        Th = x**2 * Th + g**2 * (H + C_W * Th)
        K = x**2 * K + g**2 * (C_b + C_W * K)
    assert states[L].B == pytest.approx(B, rel=1e-11)
    assert states[L].Th == pytest.approx(Th, rel=1e-12)


@pytest.mark.parametrize("xi,gamma,C_W,C_b,param", [(0.7, 0.9, 1.3, 0.0, "ntk"), (0.8, 0.6, 1.0, 0.2, "ntk"),
                                                    (-0.5, 1.2, 0.8, 0.1, "unit")])
def test_ntk_deep_linear_A_D_all_depths(xi, gamma, C_W, C_b, param):
    r"""A and D of the deep linear residual net at every layer and the readout, from the global fluctuations.

    With G = |z|^2/n and Tbar = tr(Theta)/n: Theta_ii = Tbar + e_i with sum_i e_i = 0 and e_i = O(n^-1/2), so by
    exchangeability A = n Var(Tbar) and D = n Cov(Tbar, G) + O(1/n).  One step (z' = M z + gamma b, M = xi I +
    gamma W, Theta' = gamma^2 (lambda_b + lambda_W G) I + M Theta M^T, W, b fresh): given the layer,
    tr(M Theta M^T)/n = (xi^2 + gamma^2 C_W) Tbar + O(1/n) (the W-noise has variance O(1/n^2): each row's
    w_i Theta w_i^T has variance 2 C_W^2 (Tbar^2 + B)/n, averaged over n independent rows), while
    G' = a G + gamma^2 C_b + eta with a = xi^2 + gamma^2 C_W and n Var(eta) = 4 xi^2 gamma^2 G (C_W G + C_b)
    + 2 gamma^4 (C_W G + C_b)^2 (the rows u_i = w_i.z + b_i ~ N(0, C_W G + C_b) iid).  Hence with
    VG = n Var(G), CGT = n Cov(G, Tbar), VT = n Var(Tbar):

        VG' = a^2 VG + n Var(eta),  CGT' = a (gamma^2 lambda_W VG + a CGT),
        VT' = gamma^4 lambda_W^2 VG + 2 gamma^2 lambda_W a CGT + a^2 VT,

    layer 1: VG = 2 K(1)^2 (chi^2_n), CGT = VT = 0; the readout is the same step with xi = 0, gamma = 1 (its rows'
    own noise is independent between readout neurons).  A = VT, D = CGT."""
    L, G0 = 6, 0.9
    states = ResidualRecursion("linear", L, C_W=C_W, C_b=C_b, xi=xi, gamma=gamma, param=param).one_input(G0=G0)
    lw = C_W if param == "ntk" else 1.0
    K = C_b + C_W * G0
    VG, CGT, VT = 2 * K**2, 0.0, 0.0
    for l in range(1, L + 2):
        st = states[l - 1]
        assert st.A == pytest.approx(VT, rel=1e-11, abs=1e-12), ("A", l)
        assert st.D == pytest.approx(CGT, rel=1e-11, abs=1e-12), ("D", l)
        if l == L + 1:
            break
        x, g = (xi, gamma) if l < L else (0.0, 1.0)
        a = x**2 + g**2 * C_W
        VG, CGT, VT = (a**2 * VG + 4 * x**2 * g**2 * K * (C_W * K + C_b) + 2 * g**4 * (C_W * K + C_b) ** 2,
                       a * (g**2 * lw * VG + a * CGT),
                       g**4 * lw**2 * VG + 2 * g**2 * lw * a * CGT + a**2 * VT)
        K = x**2 * K + g**2 * (C_b + C_W * K)


def exact_layer2_ntk(act, xi, gamma, C_W, C_b, G0, param="ntk"):
    r"""n Var(Theta_ii(2)) and n Cov(Theta_ii(2), z_i(2)^2) of any activation, exact at every width n (scipy
    quadrature for the one-variable averages <.> over z ~ N(0, K1), K1 = C_b + C_W G0).

    Layer 1 is deterministic in the NTK (Theta(1) = T1 I, T1 = lambda_b + lambda_W G0) and its z_k are iid, so with
    u_i = w_i.s + b_i:  Theta_ii(2) = xi^2 T1 + 2 xi gamma T1 W_ii s'_i + gamma^2 (T1 sum_k W_ik^2 s'_k^2 + H2),
    H2 = lambda_b + lambda_W |s|^2/n, z_i(2) = xi z_i + gamma u_i; Wick over the row w_i (c = C_W/n) and the iid z_k:

      n Var  = 4 xi^2 gamma^2 T1^2 C_W <s'^2> + gamma^4 [T1^2 C_W^2 (3<s'^4> - <s'^2>^2) + lambda_W^2 Var(s^2)
               + 2 T1 lambda_W C_W Cov(s^2, s'^2)]
      n Cov  = 4 xi^2 gamma^2 T1 C_W <z s s'> + xi^2 gamma^2 T1 C_W Cov(s'^2, z^2)
               + gamma^4 T1 C_W^2 [2 <s^2 s'^2> + Cov(s'^2, s^2)] + gamma^2 lambda_W [xi^2 Cov(s^2, z^2) + gamma^2 C_W Var(s^2)]

    (the xi gamma W_ii s'_i cross term gives the 4 xi^2 gamma^2 parts; at xi = 0 these are the MLP's A + 2B and
    D + 2F of layer 2)."""
    s = ACTS[act]
    ds = {"relu": lambda z: float(z > 0), "tanh": lambda z: 1 - np.tanh(z) ** 2, "linear": lambda z: 1.0}[act]
    K1 = C_b + C_W * G0
    lb, lw = (C_b, C_W) if param == "ntk" else (1.0, 1.0)
    T1 = lb + lw * G0
    m = {name: _gauss(f, K1) for name, f in {
        "ss": lambda z: s(z) ** 2, "dd": lambda z: ds(z) ** 2, "ssss": lambda z: s(z) ** 4,
        "dddd": lambda z: ds(z) ** 4, "ssdd": lambda z: s(z) ** 2 * ds(z) ** 2, "zsd": lambda z: z * s(z) * ds(z),
        "zzdd": lambda z: z * z * ds(z) ** 2, "zzss": lambda z: z * z * s(z) ** 2}.items()}
    var_ss, cov_sd = m["ssss"] - m["ss"] ** 2, m["ssdd"] - m["ss"] * m["dd"]
    cov_dz, cov_sz = m["zzdd"] - K1 * m["dd"], m["zzss"] - K1 * m["ss"]
    x2, g2 = xi**2, gamma**2
    var = (4 * x2 * g2 * T1**2 * C_W * m["dd"]
           + g2**2 * (T1**2 * C_W**2 * (3 * m["dddd"] - m["dd"] ** 2) + lw**2 * var_ss + 2 * T1 * lw * C_W * cov_sd))
    cov = (4 * x2 * g2 * T1 * C_W * m["zsd"] + x2 * g2 * T1 * C_W * cov_dz
           + g2**2 * T1 * C_W**2 * (2 * m["ssdd"] + cov_sd) + g2 * lw * (x2 * cov_sz + g2 * C_W * var_ss))
    return var, cov


@pytest.mark.parametrize("act", ["relu", "tanh"])
@pytest.mark.parametrize("xi,gamma,C_W,C_b,param", [(0.8, 0.6, 1.0, 0.0, "ntk"), (0.5, 0.9, 1.5, 0.2, "ntk"),
                                                    (-0.7, 0.7, 2.0, 0.1, "unit")])
def test_ntk_layer2_exact(act, xi, gamma, C_W, C_b, param):
    """Layer 2 (the first residual layer) of relu/tanh nets: A + 2B and D + 2F against the exact all-n results of
    exact_layer2_ntk (scipy quadrature)."""
    st = ResidualRecursion(act, 3, C_W=C_W, C_b=C_b, xi=xi, gamma=gamma, param=param).one_input(G0=0.8)[1]
    var, cov = exact_layer2_ntk(act, xi, gamma, C_W, C_b, 0.8, param)
    assert st.ntk_variance == pytest.approx(var, rel=1e-9)
    assert st.ntk_kernel_covariance == pytest.approx(cov, rel=1e-9)


def test_monte_carlo_ntk_layer2_relu_finite_n():
    """The NTK Monte Carlo of a relu residual net at n = 8 against the exact all-n layer-2 n Var(Theta_ii) and
    n Cov(Theta_ii, z_i^2) (exact_layer2_ntk): judges the sampler with a nonlinearity."""
    xi, gamma, C_W, C_b = 0.8, 0.6, 1.0, 0.1
    var, cov = exact_layer2_ntk("relu", xi, gamma, C_W, C_b, 1.0)
    mc = sample_residual_ntk("relu", 1.0, 2, 8, C_W=C_W, C_b=C_b, xi=xi, gamma=gamma, samples=20_000, seed=4,
                             neurons=8)
    for name, exact in (("ntk_variance", var), ("ntk_kernel_covariance", cov)):
        est = mc[name]
        assert abs(est.value[1] - exact) < 4 * est.stderr[1], (name, est.value[1], exact, est.stderr[1])
