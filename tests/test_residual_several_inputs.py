r"""The several-input 1/n correction of the mean metric of residual MLPs, K1_(ab) (ResidualRecursion.tensors).

Judges, independent of the code under test:

* one input: the one-input recursion (:meth:`ResidualRecursion.one_input`, checked against exact deep linear
  results, quadrature and Monte Carlo in tests/test_finite_width_residual.py), to 1e-12;
* xi = 0, gamma = 1: the MLP's several-input tensors (FiniteWidthRecursion.tensors, checked against Monte
  Carlo in its own tests), to 1e-10;
* the quadratic activation s(x) = x^2 at depth 2, exactly at finite width: E[f_a f_b] = C_b + C_W E[z_a(2)^2
  z_b(2)^2] with z(2) = xi u + gamma eps, u ~ N(0, K) a neuron's first layer and eps ~ N(0, Ghat(1)) given the
  layer, Ghat(1)_cd = C_b + (C_W/n) sum_j u_jc^2 u_jd^2 (the neuron's own u among the j); the Gaussian moments
  of u up to order 8 by Isserlis' theorem (pairings enumerated here); E[f_a f_b] is exactly c0 + c1/n and
  c1 = K1 (this exercises the self term, where a neuron's own path enters the fields it sees, and Stein's
  route to E[s'' s s s] with x s'(x) != s);
* Monte Carlo of finite residual networks at two inputs (sample_residual_tensors), E[z_a z_b] fitted as
  K + c1/n + c2/n^2 with K fixed, every distinct entry of every layer within 4 standard errors (slow set).

Theta1_(ab) (ResidualRecursion.ntk_correction): the one-input recursion on the diagonal; the MLP's Theta1_(ab) at
xi = 0; 0 for deep linear networks (by hand); the quadratic activation's exact E[Theta_f;ab] at depth 2 (Isserlis,
a polynomial in 1/n); Monte Carlo 1/n fits of sample_residual_ntk_tensors (slow set).
"""

import numpy as np
import pytest
import sympy as sp

from ntk_theory.finite_width import FiniteWidthRecursion
from ntk_theory.finite_width.residual import NotDerived, ResidualRecursion
from ntk_theory.montecarlo.residual import sample_residual_ntk, sample_residual_ntk_tensors, sample_residual_tensors
from ntk_theory.validation.fits import weighted_fit

X2 = np.array([[1.0, 0.3], [0.6, 0.8]])
X3 = np.array([[1.0, 0.3], [0.2, -0.9], [-0.6, 0.5]])


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_one_input_is_the_one_input_recursion(act):
    rec = ResidualRecursion(act, 4, C_W=1.2, C_b=0.1, xi=[0.7, 0.5, 0.9], gamma=[0.6, 0.8, 0.4])
    states, one = rec.tensors(X2[:1]), rec.one_input(X2[:1])
    assert len(states) == len(one) == 5
    for st, o in zip(states, one):
        assert st.K1[0, 0] == pytest.approx(o.K1, rel=1e-12, abs=1e-14)
        assert st.Th[0, 0] == pytest.approx(o.Th, rel=1e-12)
        assert st.V[0, 0, 0, 0] == pytest.approx(o.V, rel=1e-12, abs=1e-14)
    assert abs(one[-1].K1) > 0.05  # not trivially zero


@pytest.mark.parametrize("act", ["relu", "tanh", "erf"])
def test_xi_zero_is_the_mlp(act):
    C_W, C_b = [1.4, 1.7, 1.1, 2.0], 0.15
    res = ResidualRecursion(act, 3, C_W=C_W, C_b=C_b, xi=0.0, gamma=1.0).tensors(X3)
    mlp = FiniteWidthRecursion(act, 3, C_W=C_W, C_b=C_b).tensors(X3)
    for st, m in zip(res, mlp):
        assert np.allclose(st.K1, m.K1, rtol=1e-10, atol=1e-12)
        assert np.allclose(st.Th, m.Th, rtol=1e-12, atol=1e-14)
        assert np.allclose(st.output_cumulant, m.output_cumulant, rtol=1e-10, atol=1e-12)
    assert np.abs(mlp[-1].K1).max() > 0.01


def _isserlis(K, idx):
    """E[prod_k u_(idx_k)] for u ~ N(0, K): the sum over pairings."""
    if not idx:
        return 1.0
    first, rest = idx[0], idx[1:]
    return sum(K[first, rest[i]] * _isserlis(K, rest[:i] + rest[i + 1:]) for i in range(len(rest)))


def _quadratic_readout(X, C_W, C_b, xi, g, n):
    """E[f_a f_b] of the depth-2 residual network with s(x) = x^2 at width n, exactly (module docstring)."""
    N, d = X.shape
    K = C_b + C_W * X @ X.T / d

    def E(*i):
        return _isserlis(K, list(i))

    m = np.array([[E(a, a, b, b) for b in range(N)] for a in range(N)])

    def EuG(f, c, e):  # E[prod_(f) u * Ghat_ce]: the neuron's own term is one of the n
        return C_b * E(*f) + C_W * ((n - 1) / n * E(*f) * m[c, e] + E(*f, c, c, e, e) / n)

    def EGG(a, b, c, e):
        return (C_b**2 + C_b * C_W * (m[a, b] + m[c, e])
                + C_W**2 * ((n - 1) / n * m[a, b] * m[c, e] + E(a, a, b, b, c, c, e, e) / n))

    out = np.zeros((N, N))
    for a in range(N):
        for b in range(N):
            # E[z_a^2 z_b^2] for z ~ N(mu, S), mu = xi u, S = gamma^2 Ghat, then averaged over (u, Ghat)
            z4 = (xi**4 * m[a, b] + xi**2 * g**2 * (EuG((a, a), b, b) + EuG((b, b), a, a) + 4 * EuG((a, b), a, b))
                  + g**4 * (EGG(a, a, b, b) + 2 * EGG(a, b, a, b)))
            out[a, b] = C_b + C_W * z4
    return out


@pytest.mark.parametrize("xi,gamma", [(0.7, 0.6), (-0.5, 1.1)])
def test_quadratic_activation_exact(xi, gamma):
    C_W, C_b = 0.8, 0.1
    x = sp.Symbol("x")
    st = ResidualRecursion(x**2, 2, C_W=C_W, C_b=C_b, xi=xi, gamma=gamma).tensors(X3)
    e1, e2 = (_quadratic_readout(X3, C_W, C_b, xi, gamma, n) for n in (1.0, 2.0))
    K, K1 = 2 * e2 - e1, 2 * (e1 - e2)  # E = K + K1 / n exactly
    assert np.allclose(st[-1].K, K, rtol=1e-12)
    assert np.allclose(st[-1].K1, K1, rtol=1e-9, atol=1e-12)
    assert np.abs(K1 - np.diag(np.diag(K1))).max() > 0.05  # off-diagonal entries are not trivially zero


def test_equal_inputs_are_copies():
    rec = ResidualRecursion("tanh", 2, C_W=1.3, C_b=0.1, xi=0.8, gamma=0.6)
    X = np.array([X2[0], X2[1], X2[0]])
    i = [0, 1, 0]
    for st, st2 in zip(rec.tensors(X), rec.tensors(X2)):
        assert np.allclose(st.K1, st2.K1[np.ix_(i, i)], rtol=1e-12, atol=1e-15)
        assert np.allclose(st.Th, st2.Th[np.ix_(i, i)], rtol=1e-12, atol=1e-15)


def test_zero_input_without_bias_refused():
    X = np.array([[0.0, 0.0], [1.0, 0.5]])
    for method in ("tensors", "ntk_tensors"):
        with pytest.raises(ValueError, match="variance of layer 1 is zero"):
            getattr(ResidualRecursion("relu", 2, C_b=0.0), method)(X)


@pytest.mark.slow
@pytest.mark.parametrize("act,C_W,C_b,xi,gamma", [("relu", 1.0, 0.3, 0.6, 0.9), ("tanh", 2.0, 0.2, 0.6, 0.9)])
def test_k1_against_monte_carlo(act, C_W, C_b, xi, gamma):
    """Every distinct entry of K1_(ab) at layers 1..3 and the readout against n (E[z_a z_b] - K) fitted as
    c1 + c2/n over n = 8..64, 45k networks per width (standard errors 0.01 to 0.07 against |K1| up to 0.42),
    within 4 standard errors."""
    L, widths = 3, [8, 16, 32, 64]
    X = np.array([[1.5, 0.5], [0.9, 1.2]])
    pred = ResidualRecursion(act, L, C_W=C_W, C_b=C_b, xi=xi, gamma=gamma).tensors(X)
    runs = [sample_residual_tensors(act, X, L, n, C_W=C_W, C_b=C_b, xi=xi, gamma=gamma, samples=45_000,
                                    seed=10 + n) for n in widths]
    for l in range(L + 1):
        vals = np.stack([r["K"].value[l] for r in runs])
        errs = np.stack([r["K"].stderr[l] for r in runs])
        coef, se, _ = weighted_fit(widths, vals, errs, [1, 2], fixed=pred[l].K)
        z = (coef[0] - pred[l].K1) / se[0]
        assert np.all(np.isfinite(z)) and np.all(np.abs(z) < 4), (l, z)


# ---------------------------------------------------------------------------------------------- the NTK side
@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_ntk_one_input_is_the_one_input_recursion(act):
    rec = ResidualRecursion(act, 3, C_W=1.2, C_b=0.1, xi=[0.7, 0.5], gamma=[0.6, 0.8])
    for st, o in zip(rec.ntk_tensors(X2[:1]), rec.one_input(X2[:1])):
        for name in ("A", "B", "D", "F", "V"):
            assert st[name].item() == pytest.approx(getattr(o, name), rel=1e-12, abs=1e-14), name


@pytest.mark.parametrize("act,param", [("relu", "ntk"), ("tanh", "unit")])
def test_ntk_xi_zero_is_the_mlp(act, param):
    C_W, C_b = [1.4, 1.7, 1.1, 2.0], 0.15
    res = ResidualRecursion(act, 3, C_W=C_W, C_b=C_b, xi=0.0, gamma=1.0, param=param).ntk_tensors(X2)
    mlp = FiniteWidthRecursion(act, 3, C_W=C_W, C_b=C_b, param=param).tensors(X2)
    for st, m in zip(res, mlp):
        for name in ("A", "B", "D", "F", "V"):
            assert np.allclose(st[name], getattr(m, name), rtol=1e-10, atol=1e-12), name
    assert np.abs(mlp[-1].A).max() > 0.1


def test_ntk_route_vertex_is_vertex_tensors():
    """The tangent system's z block gives V_(ab)(cd) of vertex_tensors (an independently written expansion)."""
    rec = ResidualRecursion("tanh", 3, C_W=1.2, C_b=0.1, xi=0.7, gamma=0.6)
    for st, (K, V, M3, _) in zip(rec.ntk_tensors(X2), rec.vertex_tensors(X2)):
        assert np.allclose(st["V"], V, rtol=1e-12, atol=1e-14)


def test_ntk_sampler_one_input_is_the_one_input_sampler():
    """sample_residual_ntk_tensors at one input draws the same networks as sample_residual_ntk (itself checked
    against exact deep linear moments in tests/test_finite_width_residual.py): equal statistics."""
    kw = dict(C_W=1.2, C_b=0.1, xi=0.7, gamma=0.6, samples=400, batches=4, seed=1)
    a = sample_residual_ntk_tensors("tanh", X2[:1], 3, 6, **kw)
    b = sample_residual_ntk("tanh", float(X2[0] @ X2[0]) / 2, 3, 6, **kw)
    for name in ("K", "Th", "A", "B", "D", "F", "V"):
        assert np.allclose(a[name].value.reshape(4), b[name].value, rtol=1e-10, atol=1e-12), name


@pytest.mark.slow
@pytest.mark.parametrize("act,C_W,C_b,xi,gamma", [("relu", 1.0, 0.1, 0.8, 0.6), ("tanh", 1.2, 0.1, 0.7, 0.7)])
def test_ntk_tensors_against_monte_carlo(act, C_W, C_b, xi, gamma):
    """Every entry of A, B, D, F at layers 2, 3 and the readout against c0 + c1/n fits over n = 8, 16, 32 of real
    residual networks (dense weights, backpropagated Jacobians; 20k, 14k, 10k networks), within 4 standard
    errors (standard errors 1% to 10% of the largest entry)."""
    L, widths = 3, [8, 16, 32]
    pred = ResidualRecursion(act, L, C_W=C_W, C_b=C_b, xi=xi, gamma=gamma).ntk_tensors(X2)
    runs = [sample_residual_ntk_tensors(act, X2, L, n, C_W=C_W, C_b=C_b, xi=xi, gamma=gamma,
                                        samples=int(20_000 * (8 / n) ** 0.5), seed=10 + n) for n in widths]
    for name in ("A", "B", "D", "F"):
        for l in range(1, L + 1):
            vals = np.stack([r[name].value[l] for r in runs])
            errs = np.stack([r[name].stderr[l] for r in runs])
            coef, se, _ = weighted_fit(widths, vals, errs, [0, 1])
            assert np.all(se[0] > 0), (name, l)
            z = (coef[0] - pred[l][name]) / se[0]
            assert np.all(np.abs(z) < 4), (name, l, z)


@pytest.mark.parametrize("param", ["ntk", "unit"])
def test_ntk_deep_linear_second_layer_exact(param):
    r"""Linear s, layer 2 exactly at finite width (derived by hand): with z(1) rows iid N(0, K), Theta(1) = H1 I
    (H1 = lambda_b + lambda_W X X^T / d, K = C_b + C_W X X^T / d), Theta(2)_ij;ab = H1_ab M_ij + gamma^2 delta_ij
    H2_ab, M = xi^2 I + xi gamma (W + W^T) + gamma^2 W W^T, H2_ab = lambda_b + lambda_W z_a(1) . z_b(1) / n and
    z(2) = xi z(1) + gamma (W z(1) + b).  Gaussian moments of W (rows independent, E[M_ij^2] = (2 xi^2 gamma^2 C_W +
    gamma^4 C_W^2)/n for i != j, Cov(M_ii, M_jj) = 0) give
    A = gamma^4 lambda_W^2 (K_ac K_bd + K_ad K_bc), B = c2 H1_pr H1_qs, D = gamma^2 lambda_W (xi^2 + gamma^2 C_W)
    (K_ac K_bd + K_ad K_bc), F = c2 H1_pr K_qs, c2 = 2 xi^2 gamma^2 C_W + gamma^4 C_W^2 (lambda of layer 2)."""
    C_W, C_b, xi, g = 1.3, 0.2, 0.7, 0.6
    rec = ResidualRecursion("linear", 3, C_W=C_W, C_b=C_b, xi=xi, gamma=g, param=param)
    st = rec.ntk_tensors(X3)[1]
    G0 = X3 @ X3.T / 2
    lb, lw = rec.lambdas(1)
    lw2 = rec.lambdas(2)[1]
    H1, K = lb + lw * G0, C_b + C_W * G0
    c2 = 2 * xi**2 * g**2 * C_W + g**4 * C_W**2
    KK = np.einsum("ac,bd->abcd", K, K) + np.einsum("ad,bc->abcd", K, K)
    exact = {"A": g**4 * lw2**2 * KK, "B": c2 * np.einsum("pr,qs->pqrs", H1, H1),
             "D": g**2 * lw2 * (xi**2 + g**2 * C_W) * KK, "F": c2 * np.einsum("pr,qs->pqrs", H1, K)}
    for name, value in exact.items():
        assert np.allclose(st[name], value, rtol=1e-12, atol=1e-14), name


def test_ntk_equal_inputs_are_copies():
    rec = ResidualRecursion("relu", 2, C_W=1.3, C_b=0.1, xi=0.8, gamma=0.6)
    i = [0, 1, 0]
    for st, st2 in zip(rec.ntk_tensors(np.array([X2[0], X2[1], X2[0]])), rec.ntk_tensors(X2)):
        for name in ("A", "B", "D", "F"):
            assert np.allclose(st[name], st2[name][np.ix_(i, i, i, i)], rtol=1e-12, atol=1e-15), name


@pytest.mark.parametrize("act,homogeneous", [("relu", True), ("leaky_relu", True), ("abs", True), ("linear", True),
                                             ("tanh", False), ("erf", False)])
def test_stein_route_uses_ssss_for_homogeneous_activations(act, homogeneous):
    """x s'(x) = s(x) exactly for positively homogeneous s of degree 1 (checked here on a grid by the activation's
    own NumPy functions): those take the four-point ssss for E[h s s s] (no numerical integration of s +- h)."""
    rec = ResidualRecursion(act, 2)
    x = np.linspace(-3, 3, 13)
    assert np.allclose(x * rec.activation.numpy_derivative(x), rec.activation.numpy(x)) == homogeneous
    assert (rec._stein_kernels is None) == homogeneous


# ---------------------------------------------------------------------------------------------- Theta1_(ab)
@pytest.fixture(scope="module")
def tanh_th1():
    kw = {"C_W": 1.5, "C_b": 0.1, "xi": 0.7, "gamma": 0.8}
    rec = ResidualRecursion("tanh", 3, **kw)
    return rec, kw, rec.ntk_correction(X2)


def test_th1_diagonal_is_the_one_input_recursion(tanh_th1):
    """Theta1_(aa) at two inputs equals the one-input recursion's Th1 at each input alone (itself checked against
    exact deep linear results and Monte Carlo in tests/test_finite_width_residual.py), to 1e-12, at every layer;
    the self terms (the neuron's own path in the fields it sees) are non-zero at layer 3 and the readout."""
    rec, _, th1 = tanh_th1
    for i in range(2):
        one = rec.one_input(X2[i])
        for l, o in enumerate(one):
            assert th1[l][i, i] == pytest.approx(o.Th1, rel=1e-12, abs=1e-14), (i, l)
    assert abs(th1[-1][0, 1]) > 0.1 and np.allclose(th1[-1], th1[-1].T, rtol=1e-12)


@pytest.mark.parametrize("act,param", [("tanh", "ntk"), ("erf", "unit")])
def test_th1_xi_zero_is_the_mlp(act, param):
    """xi = 0, gamma = 1: the MLP's several-input Theta1_(ab) (FiniteWidthRecursion.tensors, checked against Monte
    Carlo in its own tests), every entry, to 1e-10."""
    res = ResidualRecursion(act, 3, C_W=1.4, C_b=0.2, xi=0.0, gamma=1.0, param=param).ntk_correction(X3)
    mlp = FiniteWidthRecursion(act, 3, C_W=1.4, C_b=0.2, param=param).tensors(X3)
    for th1, m in zip(res, mlp):
        assert np.allclose(th1, m.Th1, rtol=1e-10, atol=1e-12)
    assert np.abs(mlp[-1].Th1).max() > 0.05


@pytest.mark.parametrize("param", ["ntk", "unit"])
def test_th1_deep_linear_is_zero(param):
    r"""Linear s: Theta1 = 0 exactly (by hand): tau(l+1) = xi tau(l) + gamma [W(l+1) tau(l) + sqrt(H(l+1)) r] with
    W(l+1) independent of layer l gives E[tau_a tau_b(l+1)] = xi^2 E[tau_a tau_b] + gamma^2 (C_W E[tau(l)_a .
    tau(l)_b / n] + lambda_b + lambda_W E[z_a(l) . z_b(l) / n]), and E[z_a z_b] is exactly K_ab for a linear
    network: the recursion is the infinite-width one at every n."""
    rec = ResidualRecursion("linear", 3, C_W=1.3, C_b=0.2, xi=0.7, gamma=0.6, param=param)
    for th1 in rec.ntk_correction(X3):
        assert np.abs(th1).max() < 1e-12


def test_th1_kinked_activation_refused():
    """Kinked activations other than the piecewise-linear ones (relu, leaky_relu, abs: their Dirac terms are
    derived, tests/test_residual_relu_theta1.py) are refused."""
    with pytest.raises(NotDerived, match="kinked activation elu"):
        ResidualRecursion("elu", 3, xi=0.7, gamma=0.6).ntk_correction(X2)


def test_th1_equal_inputs_are_copies():
    rec = ResidualRecursion("erf", 2, C_W=1.3, C_b=0.1, xi=0.0, gamma=1.0)
    i = [0, 1, 0]
    for a, b in zip(rec.ntk_correction(np.array([X2[0], X2[1], X2[0]])), rec.ntk_correction(X2)):
        assert np.allclose(a, b[np.ix_(i, i)], rtol=1e-12, atol=1e-15)


@pytest.mark.slow
def test_th1_against_monte_carlo(tanh_th1):
    """Every entry of Theta1_(ab) at layer 3 and the readout against n (E[Theta_ii;ab] - Theta_ab) of real
    residual networks (dense weights, backpropagated Jacobians; 80k networks per width) fitted as c1 + c2/n over
    n = 8, 16, 32 with Theta fixed at its infinite-width value, within 4 standard errors (standard errors 0.02 to
    0.035 against |Theta1| 0.08 to 0.33; every entry is more than 4 standard errors from 0)."""
    rec, kw, th1 = tanh_th1
    L, widths = 3, [8, 16, 32]
    Th = [st.Th for st in rec.tensors(X2)]
    runs = [sample_residual_ntk_tensors("tanh", X2, L, n, samples=80_000, seed=30 + n, **kw) for n in widths]
    for l in (2, 3):
        vals = np.stack([r["Th"].value[l] for r in runs])
        errs = np.stack([r["Th"].stderr[l] for r in runs])
        coef, se, _ = weighted_fit(widths, vals, errs, [1, 2], fixed=Th[l])
        z = (coef[0] - th1[l]) / se[0]
        assert np.all(np.isfinite(z)) and np.all(np.abs(z) < 4), (l, z)


def test_finite_width_residual_ntk_correction_at_all_inputs():
    """finite_width(residual stax net, X): ntk_correction is (N, N) for a smooth activation, its diagonal the
    one-input recursion's Th1 at each input (to 1e-12), symmetric, with non-zero off-diagonal entries (a kinked
    activation other than relu, leaky_relu, abs keeps the per-input (N, 1, 1))."""
    from ntk_theory import stax
    from ntk_theory.finite_width import finite_width, recursion_for

    text = ("serial(Dense(8, W_std=1.1, b_std=0.3), serial(FanOut(2), parallel(Activation('0.8*x'), serial({0}(), "
            "Dense(8, W_std=0.6, b_std=0.2))), FanInSum()), {0}(), Dense(1))")
    net = stax.parse(text.format("Tanh"))
    a = finite_width(net, X2, progress=False).arrays()["ntk_correction"]
    rec = recursion_for(net)
    assert a.shape == (2, 2) and abs(a[0, 1]) > 1e-3 and a[0, 1] == pytest.approx(a[1, 0], rel=1e-12)
    for i in range(2):
        assert a[i, i] == pytest.approx(rec.one_input(X2[i])[-1].Th1, rel=1e-12, abs=1e-14)


def _quadratic_readout_ntk(X, C_W, C_b, xi, g, n):
    """E[Theta_f;ab] of the depth-2 residual network with s(x) = x^2 at width n, exactly ('ntk': lambda_b = C_b,
    lambda_W = C_W in every layer).  With u = z(1) (rows iid N(0, K)), H1 = C_b + C_W X X^T / d, row k of W(2)
    w ~ N(0, c), c = C_W / n, z_ka = xi u_ka + g (w . v_a + b_k), v_ja = u_ja^2, J_kj(a) = xi delta_kj + 2 g w_j u_ja:
    E[Theta_f;ab] = C_b + C_W E[z_a^2 z_b^2] + 4 C_W E[z_ka z_kb (H1_ab sum_j J_kj(a) J_kj(b) + g^2 H2_ab)],
    H2_ab = C_b + (C_W / n) sum_j v_ja v_jb; the Gaussian moments of w (E[w_i w_l w_j^2] = c^2 (delta_il + 2 delta_ij
    delta_lj)) and of the rows u by Isserlis' theorem, the sums over rows split into equal and distinct rows."""
    N, d = X.shape
    K = C_b + C_W * X @ X.T / d
    H1 = K
    c = C_W / n

    def E(*i):
        return _isserlis(K, list(i))

    def E1(f, h):  # E[F(u_k) sum_j G(u_j)]
        return E(*f, *h) + (n - 1) * E(*f) * E(*h)

    def E2(f, h, q):  # E[F(u_k) sum_j sum_l G(u_j) Q(u_l)]
        return (E(*f, *h, *q) + (n - 1) * (E(*f, *h) * E(*q) + E(*f, *q) * E(*h) + E(*f) * E(*h, *q))
                + (n - 1) * (n - 2) * E(*f) * E(*h) * E(*q))

    z4 = (_quadratic_readout(X, C_W, C_b, xi, g, n) - C_b) / C_W
    out = np.zeros((N, N))
    for a in range(N):
        for b in range(N):
            vv = (a, a, b, b)
            T1 = xi**2 * (xi**2 * E(a, b) + g**2 * c * E1((), vv) + g**2 * C_b)
            T2 = 2 * xi**2 * g**2 * c * (2 * E(a, a, b, b) + E(a, a, a, b) + E(a, b, b, b))
            T3 = 4 * g**2 * (c * xi**2 * E1((a, b), (a, b)) + g**2 * c * c * E2((), (a, b), vv)
                             + g**2 * c * C_b * E1((), (a, b)) + 2 * g**2 * c * c * E1((), (a, b, a, a, b, b)))
            H = g**2 * (xi**2 * C_b * E(a, b) + xi**2 * C_W / n * E1((a, b), vv) + g**2 * c * C_b * E1((), vv)
                        + g**2 * c * C_W / n * E2((), vv, vv) + g**2 * C_b**2 + g**2 * C_b * C_W / n * E1((), vv))
            out[a, b] = C_b + C_W * z4[a, b] + 4 * C_W * (H1[a, b] * (T1 + T2 + T3) + H)
    return out


@pytest.mark.parametrize("xi,gamma", [(0.7, 0.6), (-0.5, 1.1)])
def test_th1_quadratic_activation_exact(xi, gamma):
    """s(x) = x^2 at depth 2: E[Theta_f;ab] is exactly a polynomial in 1/n (Isserlis, _quadratic_readout_ntk, written
    out by hand); its 1/n coefficient, from the exact values at n = 1..4, equals Theta1_(ab) at every pair of three
    inputs (the self terms with s'' = 2 and the tangents' Wick sums), and its n^0 coefficient Theta_ab."""
    C_W, C_b = 0.8, 0.1
    x = sp.Symbol("x")
    rec = ResidualRecursion(x**2, 2, C_W=C_W, C_b=C_b, xi=xi, gamma=gamma)
    th1 = rec.ntk_correction(X3)[-1]
    ns = np.array([1.0, 2.0, 3.0, 4.0])
    vals = np.stack([_quadratic_readout_ntk(X3, C_W, C_b, xi, gamma, n) for n in ns])
    coef = np.linalg.solve(np.vander(1 / ns, 4, increasing=True), vals.reshape(4, -1)).reshape(4, 3, 3)
    assert np.allclose(coef[0], rec.tensors(X3)[-1].Th, rtol=1e-12)
    assert np.allclose(th1, coef[1], rtol=1e-9, atol=1e-12), (th1, coef[1])
    assert np.abs(coef[1] - np.diag(np.diag(coef[1]))).max() > 0.05
