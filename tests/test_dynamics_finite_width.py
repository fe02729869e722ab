"""FiniteWidthDynamics (ntk_theory.dynamics.finite_width): the linearised model of a finite network at O(1/n),
against judges independent of its formulas.

* exact algebra: a synthetic ensemble of (Theta_hat, f0) with 64 equally likely sign patterns whose moments are
  E[delta] = eps Theta1, Cov(delta, delta) = eps Sigma + O(eps^2), Cov(delta, f0 f0) = eps Xi + O(eps^2),
  E[f0 f0] = K + eps K1 + O(eps^2), higher moments of delta beyond the second O(eps^2);
  its mean and covariance are summed exactly with the linearised model run by plain iteration
  f <- f - c Theta_hat (f - y) (or expm for flow, a solve at t = inf); the slope in eps at 0 (polynomial fit in
  sqrt(eps)) is the 1/n coefficient to ~1e-8;
* n -> infinity: the value parts equal ntk_theory.dynamics.ensemble (MSEDynamics' formulas) for the same kernels;
* exact limits: t = 0 (mean 0, covariance K + K1/n); t = inf on the train rows (mean y, covariance 0, both 1/n
  coefficients 0, for every Theta_hat), asserted structurally by the judge and numerically;
* slow, real networks: direct Monte Carlo of the linearised model of relu (depth 2) and tanh (criticality)
  networks at widths 32, 64, 128 (only the NTK and f0 per network; control variates: E[f_lin] = E[even part],
  and f0 f0^T replaced by its conditional mean given the last hidden layer), the 1/n coefficient of the weighted
  fit n (E - E_inf) = a + b/n within 4 standard errors; and the trained ensembles' E[f_lin] split
  (ntk_theory.montecarlo.trained) fitted over widths.
"""

import numpy as np
import pytest
from scipy.linalg import expm

from ntk_theory.dynamics import ensemble
from ntk_theory.dynamics.finite_width import FiniteWidthDynamics, divided_differences

N, M = 3, 2
P = N + M


def _spd(rng, n, scale=1.0):
    A = rng.standard_normal((n, n))
    return scale * (A @ A.T / n + np.eye(n))


def _synthetic(seed=0):
    rng = np.random.default_rng(seed)
    Th = _spd(rng, P)
    sym = lambda: (lambda A: 0.3 * (A + A.T))(rng.standard_normal((P, P)))
    Th1 = sym()
    E = [sym() for _ in range(4)]  # E[0] couples to f0 through r1 r2
    U = rng.standard_normal((3, P))
    W = rng.standard_normal((3, P))
    y = rng.standard_normal(N)
    Sigma = sum(np.einsum("ab,cd->abcd", e, e) for e in E[1:])  # E[0] enters delta at O(eps)
    Xi = np.einsum("ab,c,d->abcd", E[0], U[0], U[1]) + np.einsum("ab,c,d->abcd", E[0], U[1], U[0])
    tensors = {"K": U.T @ U, "Theta": Th, "K1": U.T @ W + W.T @ U, "Theta1": Th1,
               "A": Sigma, "B": np.zeros((P,) * 4), "D": Xi, "F": np.zeros((P,) * 4)}
    return tensors, (Th, Th1, E, U, W), y


def _linearised(Th_hat, f0, y, c, t, discrete):
    """The linearised model by iteration / expm / solve (not by the module's eigen-formulas)."""
    if np.isinf(t):
        return f0 - Th_hat[:, :N] @ np.linalg.solve(Th_hat[:N, :N], f0[:N] - y)
    if discrete:
        f = f0.copy()
        for _ in range(int(t)):
            f = f - c * Th_hat[:, :N] @ (f[:N] - y)
        return f
    A = Th_hat[:N, :N]
    return f0 - Th_hat[:, :N] @ np.linalg.solve(A, (np.eye(N) - expm(-c * t * A)) @ (f0[:N] - y))


def _exact_moments(parts, y, eps, c, t, discrete):
    Th, Th1, E, U, W = parts
    means, seconds = 0.0, 0.0
    signs = np.array(np.meshgrid(*[[-1.0, 1.0]] * 6, indexing="ij")).reshape(6, -1).T
    for s in signs:
        delta = eps * Th1 + np.sqrt(eps) * (s[0] * E[1] + s[1] * E[2] + s[2] * E[3]) + eps * s[3] * s[4] * E[0]
        f0 = (U + eps * W).T @ s[3:]
        f = _linearised(Th + delta, f0, y, c, t, discrete)
        means = means + f
        seconds = seconds + np.outer(f, f)
    mean = means / len(signs)
    return mean, seconds / len(signs) - np.outer(mean, mean)


def _slope(parts, y, c, t, discrete):
    m0, c0 = _exact_moments(parts, y, 0.0, c, t, discrete)
    s = np.array([2e-3, 4e-3, 6e-3, 8e-3, 1e-2])
    dm, dc = [], []
    for si in s:
        m, cv = _exact_moments(parts, y, si**2, c, t, discrete)
        dm.append((m - m0) / si**2)
        dc.append((cv - c0) / si**2)
    fit = lambda d: np.polynomial.polynomial.polyfit(s, np.array(d).reshape(len(s), -1), 3)[0]
    return m0, fit(dm).reshape(P), c0, fit(dc).reshape(P, P)


@pytest.mark.parametrize("t,discrete", [(1, True), (4, True), (25, True), (np.inf, True), (3.5, False)])
def test_coefficients_are_the_exact_slope_of_a_synthetic_ensemble(t, discrete):
    tensors, parts, y = _synthetic()
    lam_max = np.linalg.eigvalsh(tensors["Theta"][:N, :N])[-1]
    eta = 0.8 * N / lam_max  # c lambda_max = 0.8
    dyn = FiniteWidthDynamics(tensors, y, learning_rate=eta)
    kw = {"steps": t} if discrete and np.isfinite(t) else {"t": t}
    mean, cov = dyn.mean(**kw), dyn.covariance(**kw)
    m0, m1, c0, c1 = _slope(parts, y, dyn.c, t, discrete)
    np.testing.assert_allclose(mean.value, m0, atol=1e-12)
    np.testing.assert_allclose(cov.value, c0, atol=1e-12)
    np.testing.assert_allclose(mean.correction, m1, rtol=1e-6, atol=1e-6 * np.max(np.abs(m1)))
    np.testing.assert_allclose(cov.correction, c1, rtol=1e-6, atol=1e-6 * np.max(np.abs(c1)))
    if np.isinf(t):  # train rows fit exactly for every Theta_hat: no correction there
        assert np.max(np.abs(m1[:N])) < 1e-6 and np.max(np.abs(c1[:N, :N])) < 1e-6
        assert np.max(np.abs(mean.correction[:N])) < 1e-12 * np.max(np.abs(mean.correction))
        assert np.max(np.abs(cov.correction[:N, :N])) < 1e-12 * np.max(np.abs(cov.correction))


def test_divided_differences_against_explicit_quotients():
    lam = np.array([0.4, 1.1, 2.3])
    c, k = 0.35, 9
    f = lambda x: (1 - (1 - c * x) ** k) / x
    d1 = lambda a, b: (f(a) - f(b)) / (a - b)
    g, g1, g2 = divided_differences(lam, k, c=c)
    np.testing.assert_allclose(g, f(lam), rtol=1e-13)
    assert abs(g1[0, 2] - d1(0.4, 2.3)) < 1e-13
    assert abs(g2[0, 1, 2] - (d1(0.4, 1.1) - d1(1.1, 2.3)) / (0.4 - 2.3)) < 1e-12
    h = 1e-5  # confluent: the derivative
    assert abs(g1[1, 1] - (f(1.1 + h) - f(1.1 - h)) / (2 * h)) < 1e-8
    assert abs(g2[1, 1, 1] - (f(1.1 + h) - 2 * f(1.1) + f(1.1 - h)) / (2 * h * h)) < 1e-5
    g, g1, g2 = divided_differences(lam, np.inf)
    np.testing.assert_allclose(g2, 1 / np.einsum("i,j,k->ijk", lam, lam, lam), rtol=1e-13)


X3 = np.array([[1.0, 0.3], [-0.4, 1.2], [0.7, -0.9]])
Y3 = np.array([0.5, -0.3, 0.8])
XT2 = np.array([[0.2, 1.0], [-1.0, -0.5]])
NETS = {"relu": dict(activation="relu", depth=2, C_W=2.0, C_b=0.0),
        "tanh": dict(activation="tanh", depth=2, C_W=1.0, C_b=0.0)}


@pytest.fixture(scope="module")
def relu_dynamics():
    net = NETS["relu"]
    return FiniteWidthDynamics.from_network(net["activation"], X3, Y3, XT2, net["depth"], C_W=net["C_W"],
                                            C_b=net["C_b"], learning_rate=0.5)


def test_infinite_width_parts_are_the_ensemble(relu_dynamics):
    dyn = relu_dynamics
    K, T = dyn.tensors["K"], dyn.tensors["Theta"]
    steps = np.array([0, 3, 40])
    ref = ensemble(K[:N, :N], T[:N, :N], Y3, steps=steps, nngp_test_train=K[:, :N], ntk_test_train=T[:, :N],
                   nngp_test_test=K, learning_rate=0.5)
    np.testing.assert_allclose(dyn.mean(steps=steps).value, ref.test.mean, atol=1e-12)
    np.testing.assert_allclose(dyn.covariance(steps=steps).value, ref.test.covariance, atol=1e-12)
    ref = ensemble(K[:N, :N], T[:N, :N], Y3, t=np.inf, nngp_test_train=K[:, :N], ntk_test_train=T[:, :N],
                   nngp_test_test=K, learning_rate=0.5)
    np.testing.assert_allclose(dyn.mean(np.inf).value, ref.test.mean, atol=1e-12)


def test_exact_limits_t0_and_converged_train_rows(relu_dynamics):
    dyn = relu_dynamics
    m, c = dyn.mean(steps=0), dyn.covariance(steps=0)
    assert np.all(m.value == 0) and np.all(m.correction == 0)
    np.testing.assert_allclose(c.value, dyn.tensors["K"], atol=1e-14)
    np.testing.assert_allclose(c.correction, dyn.tensors["K1"], atol=1e-14)
    m, c = dyn.mean(np.inf), dyn.covariance(np.inf)
    np.testing.assert_allclose(m.value[:N], Y3, atol=1e-12)
    assert np.max(np.abs(m.correction[:N])) < 1e-12 * max(1.0, np.max(np.abs(m.correction)))
    assert np.max(np.abs(c.correction[:N, :N])) < 1e-12 * max(1.0, np.max(np.abs(c.correction)))
    assert np.max(np.abs(m.correction[N:])) > 1e-4  # the test rows do move at O(1/n)


def test_bad_input():
    tensors, _, y = _synthetic()
    with pytest.raises(ValueError, match="missing"):
        FiniteWidthDynamics({k: v for k, v in tensors.items() if k != "A"}, y)
    with pytest.raises(ValueError, match="one output"):
        FiniteWidthDynamics(tensors, np.c_[y, y])
    bad = dict(tensors, Theta1=np.full((P, P), np.nan))
    with pytest.raises(ValueError, match="non-finite"):
        FiniteWidthDynamics(bad, y)
    sing = dict(tensors, Theta=np.ones((P, P)))
    with pytest.raises(ValueError, match="singular"), pytest.warns(RuntimeWarning, match="ill-conditioned"):
        FiniteWidthDynamics(sing, y)
    with pytest.raises(ValueError):
        FiniteWidthDynamics(tensors, y).mean(steps=-1)
