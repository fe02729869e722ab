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
    with pytest.raises(ValueError, match="O outputs"):
        FiniteWidthDynamics(tensors, np.ones((N, 2, 2)))
    bad = dict(tensors, Theta1=np.full((P, P), np.nan))
    with pytest.raises(ValueError, match="non-finite"):
        FiniteWidthDynamics(bad, y)
    sing = dict(tensors, Theta=np.ones((P, P)))
    with pytest.raises(ValueError, match="singular"), pytest.warns(RuntimeWarning, match="ill-conditioned"):
        FiniteWidthDynamics(sing, y)
    with pytest.raises(ValueError):
        FiniteWidthDynamics(tensors, y).mean(steps=-1)


# ------------------------------------------------------------------------------------------- the NTK's motion
# A cubic model f(theta; x) = f0 + phi.theta + theta psi theta / 2 + chi[theta, theta, theta] / 6 (Lambda = I,
# theta_0 = 0) with the width scalings of a network at eps = 1/n: f0 = U^T r, psi = eps sum_k r_k psi_k +
# sqrt(eps) sum_j s_j psi_perp_j (psi_perp couples the gradients' span to directions orthogonal to it, so the dNTK
# psi[phi, phi] is O(eps) but the ddNTK (psi phi).(psi phi) is O(eps) on average), chi = eps chi_0; r, s signs (32
# equally likely patterns, summed exactly).  Its NTK is fixed at Theta = phi phi^T at init, E[dH f0] = eps Pc,
# E[ddIH] = eps I, E[ddIIH] = eps II, dH odd and ddNTKs even in the signs: the structure the motion formula
# assumes.  Judge: the model trained by plain gradient descent on theta, minus its linearised model, slope in eps.
mpar, mperp = 4, 3
m = mpar + mperp


def _sym2(A):
    return 0.5 * (A + np.swapaxes(A, -1, -2))


def _toy(seed=1):
    rng = np.random.default_rng(seed)
    phi = np.zeros((P, m))
    phi[:, :mpar] = rng.standard_normal((P, mpar))
    psi_r = [_sym2(rng.standard_normal((P, m, m))) for _ in range(3)]
    psi_s = []
    for _ in range(2):
        A = np.zeros((P, m, m))
        A[:, :mpar, mpar:] = rng.standard_normal((P, mpar, mperp))
        psi_s.append(A + np.swapaxes(A, 1, 2))
    chi = rng.standard_normal((P, m, m, m)) * 0.5
    chi = sum(chi.transpose(0, *p) for p in [(1, 2, 3), (1, 3, 2), (2, 1, 3), (2, 3, 1), (3, 1, 2), (3, 2, 1)]) / 6
    U = rng.standard_normal((3, P))
    y = rng.standard_normal(N)
    return phi, psi_r, psi_s, chi, U, y


def _toy_motion(model, eps, c, t):
    phi, psi_r, psi_s, chi, U, y = model
    signs = np.array(np.meshgrid(*[[-1.0, 1.0]] * 5, indexing="ij")).reshape(5, -1).T
    Th = phi @ phi.T
    A = Th[:N, :N]
    tot = 0.0
    for sg in signs:
        r, s = sg[:3], sg[3:]
        psi = eps * sum(ri * p for ri, p in zip(r, psi_r)) + np.sqrt(eps) * sum(si * p for si, p in zip(s, psi_s))
        ch = eps * chi
        f0 = U.T @ r
        f = lambda th: f0 + phi @ th + 0.5 * np.einsum("xab,a,b->x", psi, th, th) + np.einsum("xabc,a,b,c->x", ch, th, th, th) / 6
        grad = lambda th: phi + np.einsum("xab,b->xa", psi, th) + 0.5 * np.einsum("xabc,b,c->xa", ch, th, th)
        th = np.zeros(m)
        for _ in range(t):
            e = f(th)[:N] - y
            th = th - c * grad(th)[:N].T @ e
        flin = f0 - Th[:, :N] @ np.linalg.solve(A, (np.eye(N) - np.linalg.matrix_power(np.eye(N) - c * A, t)) @ (f0[:N] - y))
        tot = tot + (f(th) - flin)
    return tot / len(signs)


def _toy_moments(model):
    phi, psi_r, psi_s, chi, U, y = model
    Pc = sum(np.einsum("xab,ya,zb,w->xyzw", p, phi, phi, u) for p, u in zip(psi_r, U))
    I = np.einsum("xabc,ya,zb,wc->xyzw", chi, phi, phi, phi)
    II = sum(np.einsum("xab,zb,yac,wc->xyzw", p, phi, p, phi) for p in psi_s)  # (psi(x1) phi(x3)).(psi(x2) phi(x4))
    Z = np.zeros((P,) * 4)
    dntk = {"P": Pc, "Q": Z, "R": I / 3, "S": II, "T": Z, "U": Z}
    Th = phi @ phi.T
    tensors = {"K": U.T @ U, "Theta": Th, "K1": np.zeros((P, P)), "Theta1": np.zeros((P, P)),
               "A": np.zeros((P,) * 4), "B": np.zeros((P,) * 4), "D": np.zeros((P,) * 4), "F": np.zeros((P,) * 4)}
    return tensors, dntk


def _toy_dynamics():
    """(the cubic model, its FiniteWidthDynamics at learning rate 0.6 N / lambda_max(Theta_train), its dNTK)."""
    model = _toy()
    tensors, dntk = _toy_moments(model)
    lam = np.linalg.eigvalsh(tensors["Theta"][:N, :N])
    return model, FiniteWidthDynamics(tensors, model[-1], learning_rate=0.6 * N / lam[-1]), dntk


@pytest.mark.parametrize("t", [1, 2, 5])
def test_motion_is_the_exact_slope_of_a_cubic_model(t):
    model, dyn, dntk = _toy_dynamics()
    pred = dyn.motion(steps=t, dntk=dntk)
    assert np.all(pred.value == 0)
    s = np.array([2e-3, 4e-3, 6e-3, 8e-3, 1e-2])
    d = np.array([_toy_motion(model, si**2, dyn.c, t) / si**2 for si in s])
    slope = np.polynomial.polynomial.polyfit(s, d, 3)[0]
    np.testing.assert_allclose(pred.correction, slope, rtol=1e-5, atol=1e-5 * np.max(np.abs(slope)))


def test_motion_vanishes_on_converged_train_rows():
    model, dyn, dntk = _toy_dynamics()
    inf = dyn.motion(steps=np.inf, dntk=dntk).correction
    assert np.max(np.abs(inf[:N])) < 1e-10 * np.max(np.abs(inf)) and np.max(np.abs(inf[N:])) > 0
    with pytest.raises(ValueError, match="missing"):
        dyn.motion(steps=3, dntk={k: v for k, v in dntk.items() if k != "R"})
    with pytest.raises(ValueError, match="steps"):
        dyn.motion(steps=[2, -1], dntk=dntk)
    with pytest.raises(ValueError, match="steps"):
        dyn.motion(steps=[2.5, np.inf], dntk=dntk)
    with pytest.raises(ValueError, match=">= 0"):
        dyn.motion(t=[1.0, -2.0], dntk=dntk)


# ------------------------------------------------------------------------------------------- motion under gradient flow
def _flow_toy_motion(model, eps_list, c, t):
    """E[f - f_lin] of the cubic model of _toy_motion trained by gradient flow d theta/dt = -c grad f(X)^T (f(X) - y)
    (scipy DOP853, rtol 1e-13, atol 1e-15; all sign patterns and eps values in one system), f_lin by expm."""
    from scipy.integrate import solve_ivp

    phi, psi_r, psi_s, chi, U, y = model
    signs = np.array(np.meshgrid(*[[-1.0, 1.0]] * 5, indexing="ij")).reshape(5, -1).T
    psi, ch, f0 = [], [], []
    for eps in eps_list:
        for sg in signs:
            r, s = sg[:3], sg[3:]
            psi.append(eps * sum(ri * p for ri, p in zip(r, psi_r)) + np.sqrt(eps) * sum(si * p for si, p in zip(s, psi_s)))
            ch.append(eps * chi)
            f0.append(U.T @ r)
    psi, ch, f0 = map(np.array, (psi, ch, f0))
    B = len(f0)

    def f(th):
        return (f0 + th @ phi.T + 0.5 * np.einsum("kxab,ka,kb->kx", psi, th, th)
                + np.einsum("kxabc,ka,kb,kc->kx", ch, th, th, th) / 6)

    def rhs(_, z):
        th = z.reshape(B, m)
        grad = phi[None] + np.einsum("kxab,kb->kxa", psi, th) + 0.5 * np.einsum("kxabc,kb,kc->kxa", ch, th, th)
        return (-c * np.einsum("kxa,kx->ka", grad[:, :N], f(th)[:, :N] - y)).ravel()

    sol = solve_ivp(rhs, (0.0, t), np.zeros(B * m), method="DOP853", rtol=1e-13, atol=1e-15)
    assert sol.success
    th = sol.y[:, -1].reshape(B, m)
    Th = phi @ phi.T
    G = np.linalg.solve(Th[:N, :N], np.eye(N) - expm(-c * t * Th[:N, :N]))
    flin = f0 - (Th[:, :N] @ G @ (f0[:, :N] - y).T).T
    return (f(th) - flin).reshape(len(eps_list), len(signs), P).mean(axis=1)


@pytest.mark.parametrize("t", [1.0, 4.0])
def test_flow_motion_is_the_exact_slope_of_a_cubic_model_under_gradient_flow(t):
    """The cubic model's moments are the dNTK/ddNTK ones (_toy_moments); trained by an ODE solver on theta."""
    model, dyn, dntk = _toy_dynamics()
    pred = dyn.motion(t=t, dntk=dntk)
    assert np.all(pred.value == 0)
    s = np.array([2e-3, 4e-3, 6e-3, 8e-3, 1e-2])
    d = _flow_toy_motion(model, s**2, dyn.c, t) / (s**2)[:, None]
    slope = np.polynomial.polynomial.polyfit(s, d, 3)[0]  # measured: 2.7e-9 (t = 1), 2.9e-7 (t = 4) relative
    np.testing.assert_allclose(pred.correction, slope, rtol=1e-5, atol=1e-5 * np.max(np.abs(slope)))


def _generic(seed=3):
    """Random K, Theta (PSD) and unsymmetric random P..U: every term of the motion is exercised."""
    rng = np.random.default_rng(seed)
    K, Th = _spd(rng, P), _spd(rng, P)
    Z2, Z4 = np.zeros((P, P)), np.zeros((P,) * 4)
    tensors = dict(K=K, Theta=Th, K1=Z2, Theta1=Z2, A=Z4, B=Z4, D=Z4, F=Z4)
    dntk = {k: rng.standard_normal((P,) * 4) for k in "PQRSTU"}
    return tensors, dntk, rng.standard_normal(N)


def test_gradient_descent_motion_converges_to_the_flow_like_one_over_m():
    """Descent with step eta/m for m t steps (the discrete recursion with its c^2, c^3 Taylor sources) -> the
    flow's closed form; the error is O(1/m): successive errors halve and the Richardson extrapolation
    2 d(2m) - d(m) is O(1/m^2)."""
    tensors, dntk, y = _generic()
    eta, t = 1.5, 3.0
    flow = FiniteWidthDynamics(tensors, y, learning_rate=eta).motion(t=t, dntk=dntk).correction
    ms = [8, 16, 32, 64]
    gd = [FiniteWidthDynamics(tensors, y, learning_rate=eta / k).motion(steps=int(k * t), dntk=dntk).correction
          for k in ms]
    err = [np.max(np.abs(g - flow)) for g in gd]
    scale = np.max(np.abs(flow))
    ratios = np.array(err[:-1]) / np.array(err[1:])
    np.testing.assert_allclose(ratios, 2.0, atol=0.15)  # measured 2.10, 2.05, 2.02
    richardson = np.max(np.abs(2 * gd[-1] - gd[-2] - flow))
    assert richardson < 0.05 * err[-1] and err[-1] < 0.1 * scale


def test_flow_motion_limits_t0_small_t_and_inf():
    """t = 0: no motion.  Small t, by hand: A(s) = 1 + O(s), B(s) = s + O(s^2) and the ddNTK source is O(s^2), so
    phi_x(t) = -(c^2 t^2 / 2) sum_(b,d train) [P1s(x,b,d,b) y_d + P1s(x,b,d,d) y_b] + O(t^3), P1s(x,b,d,e) =
    Pc(x,b,d,e) + Pc(b,x,d,e), Pc = P + Q + Q^(x1<->x2) (raw inputs, no eigenbasis); the remainder falls like t^3.
    t = inf: the large-t value (train rows 0, test rows converged)."""
    tensors, dntk, y = _generic()
    dyn = FiniteWidthDynamics(tensors, y, learning_rate=1.5)
    c = dyn.c
    Pc = dntk["P"] + dntk["Q"] + dntk["Q"].transpose(0, 2, 1, 3)
    tr = slice(0, N)
    P1s = Pc[:, tr, tr, tr] + Pc[tr, :, tr, tr].transpose(1, 0, 2, 3)
    lead = -(c**2 / 2) * (np.einsum("xbdb,d->x", P1s, y) + np.einsum("xbdd,b->x", P1s, y))
    h = 1e-3
    lam_min = c * dyn.basis.eigenvalues[0]
    T = 60.0 / lam_min  # exp(-60) of the slowest mode left
    e = dyn.motion(t=[0.0, h, h / 2, T, np.inf], dntk=dntk).correction
    assert np.all(e[0] == 0) and np.all(e[-1][:N] == 0)
    r1, r2 = e[1] - lead * h**2, e[2] - lead * (h / 2) ** 2
    assert np.max(np.abs(r1)) < 1e-2 * np.max(np.abs(lead * h**2))
    np.testing.assert_allclose(r1 / r2, 8.0, rtol=1e-2)
    np.testing.assert_allclose(e[-1], e[-2], rtol=1e-9, atol=1e-9 * np.max(np.abs(e[-1])))
    assert np.max(np.abs(e[-1][N:])) > 0
    # the flow's limit does not depend on the rate (time rescales), unlike descent's
    slow = FiniteWidthDynamics(tensors, y, learning_rate=0.3).motion(t=np.inf, dntk=dntk).correction
    np.testing.assert_allclose(slow, e[-1], rtol=1e-12, atol=1e-12 * np.max(np.abs(slow)))
    assert dyn.c * dyn.basis.eigenvalues[-1] > 2  # descent diverges at this rate: steps = inf is refused
    with pytest.raises(ValueError, match="convergent gradient descent"):
        dyn.motion(steps=np.inf, dntk=dntk)


# ------------------------------------------------------------------------------------------- real networks (slow)
def _l0(Th, c, t):
    """I - Theta(., X) Theta(X, X)^-1 (I - (I - c Theta(X, X))^t) on the train columns (matrix_power / inv)."""
    A = Th[:N, :N]
    G = np.linalg.inv(A) if np.isinf(t) else np.linalg.solve(
        A, np.eye(N) - np.linalg.matrix_power(np.eye(N) - c * A, int(t)))
    l0 = np.eye(Th.shape[0])
    l0[:, :N] -= Th[:, :N] @ G
    return l0


def _linearised_monte_carlo(act, depth, width, C_W, C_b, eta, steps, samples, seed, Th, batches=20):
    """Mean and covariance of the linearised model of ``samples`` networks (NTK and f0 only, no training), with
    batch standard errors.  Mean: E[f_lin] = E[even part] (the odd part's mean is 0 by the readout sign
    symmetry).  Second moment: f_lin f_lin^T - l0 (f0 f0^T - K_hat) l0^T, K_hat = C_b + C_W s s^T / n the
    conditional mean of f0 f0^T given the last hidden layer (l0 at infinite width), the same expectation with
    O(1/n) per-network variance."""
    from ntk_theory.architecture import MLPSpec
    from ntk_theory.montecarlo.trained import linearised_parts
    from ntk_theory.reference.batched import BatchedMLP

    spec = MLPSpec.build(2, depth, width, 1, C_W=C_W, C_b=C_b)
    Xall = np.concatenate([X3, XT2])
    c = eta / N
    rng = np.random.default_rng(seed)
    per = samples // batches
    l0 = np.stack([_l0(Th, c, t) for t in steps])
    ms, cs = [], []
    for _ in range(batches):
        net = BatchedMLP.random(spec, act, per, rng)
        tr = net.forward(Xall)
        odd, even = linearised_parts(net.ntk(Xall, X3), tr.output, Y3[:, None], steps, c)
        lin, even, f0 = (odd + even)[..., 0], even[..., 0], tr.output[..., 0]
        a = tr.a[-1]
        Khat = spec.C_b[-1] + spec.C_W[-1] * a @ np.swapaxes(a, 1, 2) / width
        dev = (np.einsum("sp,sq->spq", f0, f0) - Khat).mean(0)
        second = np.einsum("rsp,rsq->rpq", lin, lin) / per - np.einsum("rpa,ab,rqb->rpq", l0, dev, l0)
        m = even.mean(1)
        ms.append(m)
        cs.append(second - np.einsum("rp,rq->rpq", m, m))
    ms, cs = np.array(ms), np.array(cs)
    return ms.mean(0), ms.std(0, ddof=1) / np.sqrt(batches), cs.mean(0), cs.std(0, ddof=1) / np.sqrt(batches)


def _fit_z(widths, values, errors, predicted):
    from ntk_theory.validation.fits import weighted_fit

    coef, se, _ = weighted_fit(widths, np.array(values), np.array(errors), [0, 1])
    return (coef[0] - predicted) / se[0]


@pytest.mark.slow
@pytest.mark.parametrize("name,eta,widths", [("relu", 0.2, (64, 128, 256)), ("tanh", 0.5, (32, 64, 128))])
def test_linearised_model_against_monte_carlo_of_networks(name, eta, widths):
    """Direct Monte Carlo of the linearised model (16,000 networks per width): the 1/n coefficient of the
    weighted fit n (E_n - E_inf) = a + b/n within 4 SE of the prediction, mean and covariance, steps 2, 10, inf.
    (Measured: relu |z| <= 3.1, tanh |z| <= 1.9 at 20,000 per width.)"""
    net = NETS[name]
    dyn = FiniteWidthDynamics.from_network(net["activation"], X3, Y3, XT2, net["depth"], C_W=net["C_W"],
                                           C_b=net["C_b"], learning_rate=eta)
    steps = np.array([2.0, 10.0, np.inf])
    mean = [dyn.mean(steps=2), dyn.mean(steps=10), dyn.mean(np.inf)]
    cov = [dyn.covariance(steps=2), dyn.covariance(steps=10), dyn.covariance(np.inf)]
    mi, m1 = np.stack([e.value for e in mean]), np.stack([e.correction for e in mean])
    ci, c1 = np.stack([e.value for e in cov]), np.stack([e.correction for e in cov])
    vals, errs, cvals, cerrs = [], [], [], []
    for w in widths:
        m, me, cv, ce = _linearised_monte_carlo(net["activation"], net["depth"], w, net["C_W"], net["C_b"], eta,
                                                steps, 16000, w, dyn.tensors["Theta"])
        # converged train rows: every network fits y exactly (no fluctuation to estimate)
        assert np.max(np.abs(m[2, :N] - Y3)) < 1e-9 and np.max(np.abs(cv[2, :N, :N])) < 1e-9
        vals.append(w * (m - mi)); errs.append(w * me); cvals.append(w * (cv - ci)); cerrs.append(w * ce)
    zm = _fit_z(widths, vals, errs, m1)
    zc = _fit_z(widths, cvals, cerrs, c1)
    exact_m = np.zeros(zm.shape, bool)
    exact_m[2, :N] = True
    exact_c = np.zeros(zc.shape, bool)
    exact_c[2, :N, :] = exact_c[2, :, :N] = True  # zero or rounding-level at t = inf (the train rows are fixed)
    assert np.max(np.abs(zm[~exact_m])) < 4, zm
    assert np.max(np.abs(zc[~exact_c])) < 4, zc


def _tanh_trained_fit():
    """(net, eta, steps, C_W/C_b keywords, fit): trained tanh ensembles at criticality (montecarlo.trained, 8,000
    networks at widths 32/64/128, steps 2 and 10, eta 0.5) fitted in 1/n by validation.trained."""
    from ntk_theory.montecarlo.trained import sample_trained
    from ntk_theory.validation.trained import fit_trained_widths, infinite_width_trained

    net, eta, steps = NETS["tanh"], 0.5, [2, 10]
    kw = dict(C_W=net["C_W"], C_b=net["C_b"])
    runs = [sample_trained(net["activation"], X3, Y3, XT2, net["depth"], w, eta=eta, steps=steps, samples=8000,
                           seed=w, **kw) for w in (32, 64, 128)]
    fit = fit_trained_widths(runs, infinite_width_trained(net["activation"], X3, Y3, XT2, net["depth"], eta=eta,
                                                          steps=steps, **kw))
    return net, eta, steps, kw, fit


@pytest.mark.slow
def test_linearised_split_of_trained_ensembles():
    """The trained ensembles' E[f_lin] and Cov[f_lin] (ntk_theory.montecarlo.trained, networks actually trained,
    fitted over widths by ntk_theory.validation.trained): the O(1/n) coefficient within 4 SE (tanh at
    criticality, steps 2 and 10)."""
    net, eta, steps, kw, fit = _tanh_trained_fit()
    dyn = FiniteWidthDynamics.from_network(net["activation"], X3, Y3, XT2, net["depth"], learning_rate=eta, **kw)
    m1 = dyn.mean(steps=np.array(steps)).correction
    c1 = dyn.covariance(steps=np.array(steps)).correction
    zm = (fit["linearised_1"].value - m1) / fit["linearised_1"].stderr
    zc = (fit["cov_linearised_1"].value - c1) / fit["cov_linearised_1"].stderr
    assert np.max(np.abs(zm)) < 4, zm
    assert np.max(np.abs(zc)) < 4, zc


@pytest.mark.slow
def test_motion_against_trained_ensembles():
    """E[f - f_lin] of trained tanh networks at criticality (montecarlo.trained, 8,000 networks at widths 32/64/128,
    fitted in 1/n) against FiniteWidthDynamics.motion fed with P..U measured by montecarlo.dntk.sample_dntk at
    width 64 (1,500 networks, 4 readout neurons); the prediction's own error propagated by redrawing P..U within
    their standard errors (entries independently).  Within 4 combined SE at steps 2 and 10 (measured |z| <= 1.4)."""
    from ntk_theory.montecarlo.dntk import sample_dntk
    net, eta, steps, kw, fit = _tanh_trained_fit()
    st = sample_dntk(net["activation"], np.concatenate([X3, XT2]), net["depth"], 64, outputs=4, samples=1500, seed=1,
                     **kw)
    d = {k: st[k].value for k in "PQRSTU"}
    dyn = FiniteWidthDynamics.from_network(net["activation"], X3, Y3, XT2, net["depth"], learning_rate=eta, **kw)
    pred = dyn.motion(steps=np.array(steps), dntk=d).correction
    rng = np.random.default_rng(0)
    draws = [dyn.motion(steps=np.array(steps), dntk={k: d[k] + st[k].stderr * rng.standard_normal(d[k].shape)
                                                     for k in d}).correction for _ in range(20)]
    se = np.sqrt(np.var(draws, axis=0, ddof=1) + fit["motion_1"].stderr ** 2)
    z = (pred - fit["motion_1"].value) / se
    assert np.max(np.abs(z)) < 4, z


@pytest.mark.slow
def test_readout_dntk_normalisation_against_monte_carlo():
    """readout_dntk (the P..U FiniteWidthDynamics.from_network feeds to .motion) against montecarlo.dntk.sample_dntk
    for a one-hidden-layer erf network (off-critical C_W = 1.5, C_b = 0.1; 3 inputs; width 32, 1,500 networks with
    4 readout neurons): the layer-2 tensors come from Gaussian layer-1 averages, so every entry within 4 SE
    (measured max |z| 3.3 over the 81 entries of each tensor) — the readout layer and the per-n_L normalisation
    that .motion takes."""
    from ntk_theory.dynamics.finite_width import readout_dntk
    from ntk_theory.montecarlo.dntk import sample_dntk

    A = np.array([[1.0, 0.3], [-0.4, 1.2], [0.2, 1.0]])
    d = readout_dntk("erf", A, 1, C_W=1.5, C_b=0.1)
    st = sample_dntk("erf", A, 1, 32, C_W=1.5, C_b=0.1, outputs=4, samples=1500, seed=5)
    for k in "PQRSTU":
        z = (st[k].value - d[k]) / st[k].stderr
        assert np.max(np.abs(z)) < 4, (k, z)
