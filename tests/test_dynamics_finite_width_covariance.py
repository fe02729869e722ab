"""FiniteWidthDynamics.motion_covariance (the NTK's motion's part of the covariance, Cov[f] - Cov[f_lin] at O(1/n))
and the several-output dynamics, against judges independent of their formulas.

* exact algebra: the cubic model of tests/test_dynamics_finite_width.py (f0 + phi.theta + theta psi theta / 2 +
  chi[theta]^3 / 6 with the width scalings of a network at eps = 1/n) with Gaussian f0 (the motion's covariance
  needs the fourth moments of f0: Gauss-Hermite quadrature in its three Gaussian coordinates, exact for the
  polynomials of degree <= 7 the O(eps) part is), trained by plain gradient descent on theta or by an ODE solver
  (flow); Cov[f] - Cov[f_lin] summed exactly over the quadrature nodes and sign patterns, its slope in eps at 0 is
  the 1/n coefficient;
* exact limits: no dNTK/ddNTK -> zero; train rows and columns at convergence (steps = inf, t = inf) -> zero;
  descent with step eta/m -> the flow's closed form like 1/m;
* several outputs: a synthetic ensemble of O = 2 outputs with the output structure of a network's NTK statistics
  (the spec's Kronecker deltas of A, B, D, F), its linearised model summed exactly, for the linearised mean and
  covariance; a cubic model of O = 2 outputs with the output structure of the dNTK and ddNTKs (P..U), trained,
  for the motion and its covariance; O = 1 given as (N, 1) equals the vector form;
* slow, real networks: trained tanh ensembles (ntk_theory.montecarlo.trained, networks actually trained)
  fitted in 1/n over widths: cov_motion (one output) and the mean, motion and covariances of O = 2 outputs, every
  entry within 4 standard errors.
"""

import functools

import numpy as np
import pytest

from ntk_theory.dynamics.finite_width import FiniteWidthDynamics
from test_dynamics_finite_width import N, P, _generic, _spd, _sym2, _toy, _toy_moments, m

def _toy_ensemble(model, eps_list, gh):
    """(psi, chi, f0, weights) of every (eps, node, sign pattern): r ~ N(0, I_3) by Gauss-Hermite with ``gh``
    nodes per coordinate (exact up to degree 2 gh - 1), s = +-1."""
    phi, psi_r, psi_s, chi, U, y = model
    x, w = np.polynomial.hermite_e.hermegauss(gh)
    w = w / w.sum()
    r = np.array(np.meshgrid(x, x, x, indexing="ij")).reshape(3, -1).T
    wr = np.prod(np.array(np.meshgrid(w, w, w, indexing="ij")).reshape(3, -1).T, axis=1)
    s = np.array(np.meshgrid([-1.0, 1.0], [-1.0, 1.0], indexing="ij")).reshape(2, -1).T
    psi, ch, f0, wt = [], [], [], []
    for eps in eps_list:
        for ri, wi in zip(r, wr):
            for si in s:
                psi.append(eps * np.einsum("k,kxab->xab", ri, np.array(psi_r))
                           + np.sqrt(eps) * np.einsum("k,kxab->xab", si, np.array(psi_s)))
                ch.append(eps * chi)
                f0.append(U.T @ ri)
                wt.append(wi / len(s))
    return np.array(psi), np.array(ch), np.array(f0), np.array(wt)


def _toy_f(phi, psi, ch, f0, th):
    return (f0 + th @ phi.T + 0.5 * np.einsum("kxab,ka,kb->kx", psi, th, th)
            + np.einsum("kxabc,ka,kb,kc->kx", ch, th, th, th) / 6)


def _toy_grad(phi, psi, ch, th):
    return phi[None] + np.einsum("kxab,kb->kxa", psi, th) + 0.5 * np.einsum("kxabc,kb,kc->kxa", ch, th, th)


def _toy_cov_motion(model, eps_list, c, t, flow=False):
    """Cov[f(t)] - Cov[f_lin(t)] of the cubic model for each eps (exact over the nodes): gradient descent on theta
    (t steps) or gradient flow (scipy DOP853, rtol 1e-13); f_lin from the model's NTK at theta = 0.  The O(eps)
    part is a polynomial of degree <= 4 in the Gaussian coordinates (the motion cubic, times f0): 3 nodes suffice,
    4 for descent (checked: 4 and 6 nodes agree to 1e-9)."""
    from scipy.integrate import solve_ivp
    from scipy.linalg import expm

    phi, y = model[0], model[-1]
    psi, ch, f0, wt = _toy_ensemble(model, eps_list, 3 if flow else 4)
    B = len(f0)
    th = np.zeros((B, m))
    if flow:
        def rhs(_, z):
            th = z.reshape(B, m)
            e = _toy_f(phi, psi, ch, f0, th)[:, :N] - y
            return (-c * np.einsum("kxa,kx->ka", _toy_grad(phi, psi, ch, th)[:, :N], e)).ravel()

        sol = solve_ivp(rhs, (0.0, t), th.ravel(), method="DOP853", rtol=1e-13, atol=1e-15)
        assert sol.success
        th = sol.y[:, -1].reshape(B, m)
    else:
        for _ in range(t):
            e = _toy_f(phi, psi, ch, f0, th)[:, :N] - y
            th = th - c * np.einsum("kxa,kx->ka", _toy_grad(phi, psi, ch, th)[:, :N], e)
    Th = phi @ phi.T
    A = Th[:N, :N]
    prop = expm(-c * t * A) if flow else np.linalg.matrix_power(np.eye(N) - c * A, t)
    flin = f0 - (Th[:, :N] @ np.linalg.solve(A, (np.eye(N) - prop) @ (f0[:, :N] - y).T)).T
    f = _toy_f(phi, psi, ch, f0, th)

    def cov(v):
        v = v.reshape(len(eps_list), -1, P)
        w = wt.reshape(len(eps_list), -1)
        mean = np.einsum("ek,ekx->ex", w, v)
        return np.einsum("ek,ekx,eky->exy", w, v, v) - np.einsum("ex,ey->exy", mean, mean)

    return cov(f) - cov(flin)


def _toy_dynamics():
    model = _toy()
    tensors, dntk = _toy_moments(model)
    lam = np.linalg.eigvalsh(tensors["Theta"][:N, :N])
    return model, FiniteWidthDynamics(tensors, model[-1], learning_rate=0.6 * N / lam[-1]), dntk


@pytest.mark.parametrize("t,flow", [(1, False), (3, False), (6, False), (2.0, True)])
def test_motion_covariance_is_the_exact_slope_of_a_cubic_model(t, flow):
    model, dyn, dntk = _toy_dynamics()
    pred = dyn.motion_covariance(**({"t": t} if flow else {"steps": t}), dntk=dntk)
    assert np.all(pred.value == 0) and pred.correction.shape == (P, P)
    s = np.array([1e-3, 2e-3, 3e-3, 4e-3, 5e-3])
    d = _toy_cov_motion(model, s**2, dyn.c, t, flow) / (s**2)[:, None, None]
    slope = np.polynomial.polynomial.polyfit(s, d.reshape(len(s), -1), 4)[0].reshape(P, P)
    # measured: 5e-9 relative at 6 steps (the fit's remainder; 2e-5 with the wider s range and a cubic)
    np.testing.assert_allclose(pred.correction, slope, rtol=1e-6, atol=1e-6 * np.max(np.abs(slope)))


def test_motion_covariance_limits():
    """No dNTK/ddNTK: zero.  Converged (steps = inf, t = inf): zero on the train rows and columns, not elsewhere."""
    tensors, dntk, y = _generic()
    zero = {k: np.zeros((P,) * 4) for k in "PQRSTU"}
    dyn = FiniteWidthDynamics(tensors, y, learning_rate=0.5)
    assert dyn.c * dyn.basis.eigenvalues[-1] < 2
    assert np.all(dyn.motion_covariance(steps=[0, 3, np.inf], dntk=zero).correction == 0)
    assert np.all(dyn.motion_covariance(t=[0.0, 2.5, np.inf], dntk=zero).correction == 0)
    assert np.all(dyn.motion_covariance(steps=0, dntk=dntk).correction == 0)
    for kw in (dict(steps=np.inf), dict(t=np.inf)):
        e = dyn.motion_covariance(dntk=dntk, **kw).correction
        scale = np.max(np.abs(e))
        assert np.max(np.abs(e[:N])) < 1e-10 * scale and np.max(np.abs(e[:, :N])) < 1e-10 * scale
        assert np.max(np.abs(e[N:, N:])) > 1e-3 * scale
        np.testing.assert_allclose(e, e.T, atol=1e-12 * scale)
    fast = FiniteWidthDynamics(tensors, y, learning_rate=1.5)
    with pytest.raises(ValueError, match="convergent gradient descent"):
        fast.motion_covariance(steps=np.inf, dntk=dntk)


def test_motion_covariance_descent_converges_to_the_flow_like_one_over_m():
    """Descent with step eta/m for m t steps -> the flow's closed form, error O(1/m) (successive ratios 2,
    Richardson extrapolation O(1/m^2)); random unsymmetric P..U exercise every term."""
    tensors, dntk, y = _generic()
    eta, t = 1.5, 2.0
    flow = FiniteWidthDynamics(tensors, y, learning_rate=eta).motion_covariance(t=t, dntk=dntk).correction
    ms = [8, 16, 32]
    gd = [FiniteWidthDynamics(tensors, y, learning_rate=eta / k).motion_covariance(steps=int(k * t), dntk=dntk)
          .correction for k in ms]
    err = [np.max(np.abs(g - flow)) for g in gd]
    np.testing.assert_allclose(np.array(err[:-1]) / np.array(err[1:]), 2.0, atol=0.2)
    assert np.max(np.abs(2 * gd[-1] - gd[-2] - flow)) < 0.1 * err[-1] and err[-1] < 0.1 * np.max(np.abs(flow))


# ------------------------------------------------------------------------------------------- trained networks (slow)
X2 = np.array([[1.0, 0.3], [-0.4, 1.2]])
XT1 = np.array([[0.7, -0.9]])
N2 = 2  # train inputs
Y2 = {1: np.array([0.5, -0.3]), 2: np.array([[0.5, -0.6], [-0.3, 0.4]])}
WIDTHS = (24, 48, 96)
STEPS = [3, 60]  # c lambda in [0.30, 0.36]: 60 steps leave 1e-9 of the initial residual on the train rows


@functools.lru_cache(maxsize=1)
def _tanh_tensors():
    """The readout's K .. F (finite_width) and P..U (readout_dntk) of tanh depth 2 at criticality at X2 u XT1."""
    from ntk_theory.dynamics.finite_width import readout_dntk
    from ntk_theory.finite_width import finite_width

    Xall = np.concatenate([X2, XT1])
    return (finite_width("tanh", Xall, 2, C_W=1.0, C_b=0.0, progress=False),
            readout_dntk("tanh", Xall, 2, C_W=1.0, C_b=0.0))


def _trained_fit(O, samples):
    """(dynamics, runs): FiniteWidthDynamics of tanh depth 2 at criticality (C_W = 1, C_b = 0; the readout's
    tensors and P..U by the recursions) and trained ensembles at WIDTHS (montecarlo.trained), eta = O so that the
    rate c = eta / (N O) is the same for O = 1, 2."""
    from ntk_theory.montecarlo.trained import sample_trained

    tensors, dntk = _tanh_tensors()
    dyn = FiniteWidthDynamics(tensors, Y2[O], learning_rate=float(O), dntk=dntk)
    runs = [sample_trained("tanh", X2, Y2[O], XT1, 2, w, C_W=1.0, C_b=0.0, eta=float(O), steps=STEPS,
                           samples=samples, seed=w + O, batches=16) for w in WIDTHS]
    return dyn, runs


def _coefficient_z(runs, name, predicted, infinite=None):
    """z of the O(1/n) coefficient: the intercept of the weighted fit n (E_n - E_inf) = a + b/n against
    ``predicted``."""
    from ntk_theory.validation.fits import weighted_fit

    vals = np.stack([r[name].value for r in runs])
    errs = np.stack([r[name].stderr for r in runs])
    n = np.array(WIDTHS, dtype=float).reshape((-1,) + (1,) * (vals.ndim - 1))
    coef, se, _ = weighted_fit(list(WIDTHS), n * (vals - (0.0 if infinite is None else infinite)), n * errs, [0, 1])
    return (coef[0] - predicted) / se[0]


def _converged(runs, name, predicted, rows):
    """At 60 steps every network fits its targets (to ~1e-9 at infinite width; a width-24 network's own NTK, whose
    output-off-diagonal blocks split the eigenvalues, leaves up to ~3e-6): the estimate's train rows (and
    columns) vanish, as the prediction's at steps = inf does exactly."""
    for r in runs:
        v = r[name].value[1]
        assert np.max(np.abs(v[rows])) < 1e-5, name
    assert np.max(np.abs(predicted[rows])) < 1e-12 * max(1.0, np.max(np.abs(predicted))), name


@pytest.mark.slow
def test_motion_covariance_against_trained_ensembles():
    """Cov[f] - Cov[f_lin] of trained tanh networks (one output; 2,000 networks at each width, fitted in 1/n)
    against motion_covariance: every entry within 4 SE at 3 steps, and at convergence (60 steps against
    steps = inf) the test-test entry; the train rows and columns vanish there exactly.  (Measured max |z| 2.4; the
    prediction is up to 8 SE from 0.)"""
    dyn, runs = _trained_fit(1, 2000)
    pred = np.stack([dyn.motion_covariance(steps=3).correction, dyn.motion_covariance(steps=np.inf).correction])
    z = _coefficient_z(runs, "cov_motion", pred)
    assert np.max(np.abs(z[0])) < 4, z
    assert np.max(np.abs(z[1][N2:, N2:])) < 4, z
    _converged(runs, "cov_motion", pred[1], (slice(0, N2),))
    _converged(runs, "cov_motion", pred[1], (slice(None), slice(0, N2)))


@pytest.mark.slow
def test_two_outputs_against_trained_ensembles():
    """O = 2 outputs with different targets (the other output's targets enter the 1/n terms): trained tanh networks
    (2,000 at each width) fitted in 1/n against the mean (linearised and motion) and the covariance with output
    indices (linearised and motion), every entry within 4 SE at 3 steps and the test rows at convergence.
    (Measured max |z| 1.1, 2.6, 2.1, 2.0; the predictions up to 5, 11, 4, 10 SE from 0.)"""
    dyn, runs = _trained_fit(2, 2000)
    steps = np.array([3.0, np.inf])
    mean, cov = dyn.mean(steps=steps), dyn.covariance(steps=steps)
    checks = [("linearised", mean.correction, mean.value), ("motion", dyn.motion(steps=steps).correction, None),
              ("cov_linearised_outputs", cov.correction, cov.value),
              ("cov_motion_outputs", dyn.motion_covariance(steps=steps).correction, None)]
    for name, pred, inf in checks:
        z = _coefficient_z(runs, name, pred, inf)
        test = z[1][N2:] if z.ndim == 3 else z[1][N2:, :, N2:]
        assert np.max(np.abs(z[0])) < 4 and np.max(np.abs(test)) < 4, (name, z)
    _converged(runs, "cov_motion_outputs", checks[3][1][1], (slice(0, N2),))
    _converged(runs, "motion", checks[1][1][1], (slice(0, N2),))


# ------------------------------------------------------------------------------------------- several outputs (exact)
def _outputs_ensemble(seed=4, O=2):
    """A synthetic ensemble of (Theta_hat, f0) with O outputs and exactly the network's output structure at
    eps = 1/n, 4096 equally likely sign patterns: f0_(l; x) = sum_k (U + eps W)_kx r_lk; Theta_hat_(i j) =
    d_ij (Theta + eps Theta1) + sqrt(eps) [d_ij sum_k g_k E_k + G_ij E + G_ji E^T] + eps [d_ij sum_l r_l0 r_l1 E0
    + r_i0 r_j1 E1 + r_j0 r_i1 E1^T]; then (by hand, Wick on the signs) K1 = U^T W + W^T U, A_abcd = sum_k
    E_k,ab E_k,cd, B_pqrs = E_pr E_qs + E_rp E_sq, D_abcd = E0_ab (U_0c U_1d + U_1c U_0d), F_pqrs = E1_pr U_0q U_1s
    + E1_rp U_1q U_0s, with the spec's Kronecker deltas (d_i1i2 d_i3i4 A + d_i1i3 d_i2i4 B_acbd + ...); E, E1
    unsymmetric, so that B_acbd != B_adbc and F_acbd != F_adbc."""
    rng = np.random.default_rng(seed)
    Th = _spd(rng, P)
    sym = lambda: (lambda A: 0.3 * (A + A.T))(rng.standard_normal((P, P)))
    Th1, E0, Ek = sym(), sym(), [sym(), sym()]
    E, E1 = 0.3 * rng.standard_normal((P, P)), 0.3 * rng.standard_normal((P, P))
    U, W = rng.standard_normal((3, P)), rng.standard_normal((3, P))
    y = rng.standard_normal((N, O))
    UU = np.einsum("c,d->cd", U[0], U[1]) + np.einsum("c,d->cd", U[1], U[0])
    tensors = {"K": U.T @ U, "Theta": Th, "K1": U.T @ W + W.T @ U, "Theta1": Th1,
               "A": sum(np.einsum("ab,cd->abcd", e, e) for e in Ek),
               "B": np.einsum("pr,qs->pqrs", E, E) + np.einsum("rp,sq->pqrs", E, E),
               "D": np.einsum("ab,cd->abcd", E0, UU),
               "F": np.einsum("pr,q,s->pqrs", E1, U[0], U[1]) + np.einsum("rp,q,s->pqrs", E1, U[1], U[0])}
    return tensors, (Th, Th1, E0, E1, Ek, E, U, W), y


def _outputs_exact_moments(parts, y, eps, c, t):
    """Mean (P, O) and covariance (P, O, P, O) of the linearised model of _outputs_ensemble after t descent steps
    (plain iteration f <- f - c Theta_hat(., X) (f(X) - y) on the composite rows), summed over all patterns."""
    Th, Th1, E0, E1, Ek, E, U, W = parts
    O = y.shape[1]
    nr, ng, nG = 3 * O, len(Ek), O * O
    signs = np.array(np.meshgrid(*[[-1.0, 1.0]] * (nr + ng + nG), indexing="ij")).reshape(nr + ng + nG, -1).T
    r = signs[:, :nr].reshape(-1, O, 3)
    g = signs[:, nr:nr + ng]
    G = signs[:, nr + ng:].reshape(-1, O, O)
    I = np.eye(O)
    base = np.einsum("ij,ab->aibj", I, Th + eps * Th1)
    fluct = (np.einsum("ij,sk,kab->saibj", I, g, np.array(Ek)) + np.einsum("sij,ab->saibj", G, E)
             + np.einsum("sji,ba->saibj", G, E))
    dflt = (np.einsum("ij,s,ab->saibj", I, np.einsum("sl,sl->s", r[:, :, 0], r[:, :, 1]), E0)
            + np.einsum("si,sj,ab->saibj", r[:, :, 0], r[:, :, 1], E1)
            + np.einsum("sj,si,ba->saibj", r[:, :, 0], r[:, :, 1], E1))
    H = (base[None] + np.sqrt(eps) * fluct + eps * dflt).reshape(len(signs), P * O, P * O)
    f = np.einsum("kx,slk->sxl", U + eps * W, r).reshape(len(signs), P * O)
    NO = N * O
    for _ in range(t):
        f = f - c * np.einsum("sxb,sb->sx", H[:, :, :NO], f[:, :NO] - y.reshape(NO))
    mean = f.mean(0)
    cov = np.einsum("sx,sy->xy", f, f) / len(signs) - np.outer(mean, mean)
    return mean.reshape(P, O), cov.reshape(P, O, P, O)


@pytest.mark.parametrize("t", [1, 5])
def test_several_outputs_linearised_is_the_exact_slope_of_a_synthetic_ensemble(t):
    """The O = 2 linearised mean and covariance (composite rows with the spec's Kronecker deltas, rate
    c = eta / (N O)) against the exact slope in eps of _outputs_ensemble: the output-off-diagonal NTK blocks (B),
    the NTK-output correlations of both kinds (D, F) and the other output's targets all enter."""
    tensors, parts, y = _outputs_ensemble()
    lam_max = np.linalg.eigvalsh(tensors["Theta"][:N, :N])[-1]
    eta = 0.8 * N * 2 / lam_max
    dyn = FiniteWidthDynamics(tensors, y, learning_rate=eta)
    assert dyn.c == eta / (N * 2)
    mean, cov = dyn.mean(steps=t), dyn.covariance(steps=t)
    m0, c0 = _outputs_exact_moments(parts, y, 0.0, dyn.c, t)
    s = np.array([2e-3, 4e-3, 6e-3, 8e-3, 1e-2])
    dm, dc = [], []
    for si in s:
        m, cv = _outputs_exact_moments(parts, y, si**2, dyn.c, t)
        dm.append(((m - m0) / si**2).ravel())
        dc.append(((cv - c0) / si**2).ravel())
    m1 = np.polynomial.polynomial.polyfit(s, np.array(dm), 3)[0].reshape(P, 2)
    c1 = np.polynomial.polynomial.polyfit(s, np.array(dc), 3)[0].reshape(P, 2, P, 2)
    np.testing.assert_allclose(mean.value, m0, atol=1e-12)
    np.testing.assert_allclose(cov.value, c0, atol=1e-12)
    np.testing.assert_allclose(mean.correction, m1, rtol=1e-6, atol=1e-6 * np.max(np.abs(m1)))
    np.testing.assert_allclose(cov.correction, c1, rtol=1e-6, atol=1e-6 * np.max(np.abs(c1)))
    # the other output's targets enter output 0's corrections: change y[:, 1] only
    other = FiniteWidthDynamics(tensors, np.c_[y[:, 0], 2 * y[:, 1]], learning_rate=eta)
    assert np.max(np.abs(other.covariance(steps=t).correction[:, 0, :, 0] - cov.correction[:, 0, :, 0])) > 1e-3


def test_one_output_as_a_column_equals_the_vector_form():
    tensors, dntk, y = _generic()
    a = FiniteWidthDynamics(tensors, y, learning_rate=0.5)
    b = FiniteWidthDynamics(tensors, y[:, None], learning_rate=0.5)
    for name in ("mean", "covariance"):
        ea, eb = getattr(a, name)(steps=[2, np.inf]), getattr(b, name)(steps=[2, np.inf])
        assert np.array_equal(ea.correction, eb.correction.reshape(ea.correction.shape))
    for name in ("motion", "motion_covariance"):
        ea, eb = getattr(a, name)(steps=[2], dntk=dntk), getattr(b, name)(steps=[2], dntk=dntk)
        assert eb.correction.shape == (1, P, 1) + ((P, 1) if name == "motion_covariance" else ())
        assert np.array_equal(ea.correction, eb.correction.reshape(ea.correction.shape))


def _outputs_cubic(seed=6, O=2, mpar=4, g=2):
    """A cubic model of O outputs with the output structure of a network's dNTK and ddNTKs (Lambda = I, theta_0 = 0).

    Parameters: O gradient blocks of size mpar (output i's gradient phi_x lives in block i, so the NTK is
    d_ij phi phi^T), O^2 g directions (p, q, gamma) and g directions gamma' orthogonal to every gradient.
    f_i,x = f0_i,x + phi_i,x . theta + theta psi_i,x theta / 2 + eps chi_i,x[theta]^3 / 6, f0_i = U^T r_i (r_i ~ N(0, I_2)),
    psi_i0 = eps sum_(j,k) r_jk Psi_jk + sqrt(eps) (s1 Psi_SU + s2 Psi_T) (s1, s2 = +-1), where Psi_jk holds
    p_k on every diagonal block for output row j (P: d_i0i3 d_i1i2) and q_k on the blocks (i0, j) and (j, i0) (Q:
    d_i0i1 d_i2i3 and its transpose); Psi_SU couples block a of output i to (p, q) = (i, a) by sigma1 and to
    (p, q) = (a, i) by sigma2 (S: d_i1i2 d_i3i4, U: d_i1i4 d_i2i3); Psi_T block i of output i to gamma' by tau
    (T: d_i1i3 d_i2i4); chi_i0 the symmetrisation of d_(a1 i0) d_(a2 a3) rho (R: d_i0i1 d_i2i3 + its two rotations).
    By hand: P = sum_k p_k[x0](phi_x1, phi_x2) U_kx3, Q likewise with q_k, R = 2 rho[x0](phi_x1, phi_x2, phi_x3),
    S = sum (sigma1 sigma1 + sigma2 sigma2), U = sum (sigma1 sigma2 + sigma2 sigma1), T = sum tau tau (each
    [x1](phi_x3, .) . [x2](phi_x4, .))."""
    rng = np.random.default_rng(seed)
    m = O * mpar + O * O * g + g
    blk = lambda a: slice(a * mpar, (a + 1) * mpar)
    su = lambda p, q: slice(O * mpar + (p * O + q) * g, O * mpar + (p * O + q + 1) * g)
    tt = slice(O * mpar + O * O * g, m)
    phi = rng.standard_normal((P, mpar))
    Phi = np.zeros((P, O, m))
    for i in range(O):
        Phi[:, i, blk(i)] = phi
    p = _sym2(rng.standard_normal((2, P, mpar, mpar)))
    q = rng.standard_normal((2, P, mpar, mpar))
    sig1, sig2, tau = (0.5 * rng.standard_normal((P, mpar, g)) for _ in range(3))
    rho = rng.standard_normal((P, mpar, mpar, mpar))
    rho = 0.25 * (rho + rho.transpose(0, 1, 3, 2))
    U = rng.standard_normal((2, P))
    y = rng.standard_normal((N, O))
    Psi_r = np.zeros((O, 2, P, O, m, m))  # [j, k] -> composite rows (x0, i0)
    for j in range(O):
        for k in range(2):
            for a in range(O):
                Psi_r[j, k, :, j, blk(a), blk(a)] += p[k]
            for i0 in range(O):
                Psi_r[j, k, :, i0, blk(i0), blk(j)] += q[k]
                Psi_r[j, k, :, i0, blk(j), blk(i0)] += q[k].transpose(0, 2, 1)
    Psi_su, Psi_t = np.zeros((P, O, m, m)), np.zeros((P, O, m, m))
    for i in range(O):
        for a in range(O):
            Psi_su[:, i, blk(a), su(i, a)] += sig1
            Psi_su[:, i, blk(a), su(a, i)] += sig2
        Psi_t[:, i, blk(i), tt] = tau
    Psi_su, Psi_t = Psi_su + Psi_su.transpose(0, 1, 3, 2), Psi_t + Psi_t.transpose(0, 1, 3, 2)
    Tt = np.zeros((P, O, m, m, m))
    for i0 in range(O):
        for a in range(O):
            Tt[:, i0, blk(i0), blk(a), blk(a)] = rho
    chi = sum(Tt.transpose(0, 1, *(2 + np.array(s))) for s in
              [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)])
    model = dict(O=O, m=m, Phi=Phi.reshape(P * O, m), Psi_r=Psi_r.reshape(O * 2, P * O, m, m),
                 Psi_s=np.stack([Psi_su, Psi_t]).reshape(2, P * O, m, m), chi=chi.reshape(P * O, m, m, m), U=U, y=y)
    at = lambda A: np.einsum("xab,ya->xyb", A, phi)  # [x, y, gamma] = A[x](phi_y, gamma)
    pp, qq = (np.einsum("kxab,ya,zb,kw->xyzw", A, phi, phi, U) for A in (p, q))
    s1, s2, ta = at(sig1), at(sig2), at(tau)
    dot = lambda A, B: np.einsum("xzc,ywc->xyzw", A, B)
    dntk = {"P": pp, "Q": qq, "R": 2 * np.einsum("xabc,ya,zb,wc->xyzw", rho, phi, phi, phi),
            "S": dot(s1, s1) + dot(s2, s2), "T": dot(ta, ta), "U": dot(s1, s2) + dot(s2, s1)}
    Z2, Z4 = np.zeros((P, P)), np.zeros((P,) * 4)
    tensors = dict(K=U.T @ U, Theta=phi @ phi.T, K1=Z2, Theta1=Z2, A=Z4, B=Z4, D=Z4, F=Z4)
    return model, tensors, dntk


def _outputs_cubic_moments(model, eps_list, c, t):
    """E[f - f_lin] (per eps: (P, O)) and Cov[f] - Cov[f_lin] ((P, O, P, O)) of _outputs_cubic after t descent
    steps on theta, exact over r (Gauss-Hermite, 3 nodes per coordinate) and s (four sign patterns)."""
    O, m, Phi, y = model["O"], model["m"], model["Phi"], model["y"]
    x, w = np.polynomial.hermite_e.hermegauss(3)
    w = w / w.sum()
    d = 2 * O
    r = np.array(np.meshgrid(*[x] * d, indexing="ij")).reshape(d, -1).T  # (nodes, O * 2): r[j, k] at j * 2 + k
    wr = np.prod(np.array(np.meshgrid(*[w] * d, indexing="ij")).reshape(d, -1).T, axis=1)
    s = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    E = len(eps_list)
    coef = np.concatenate([np.repeat(np.asarray(eps_list)[:, None, None, None] * r[None, :, None, :], 4, axis=2),
                           np.sqrt(np.asarray(eps_list))[:, None, None, None] * np.broadcast_to(s[None, None], (E, len(r), 4, 2))],
                          axis=-1).reshape(-1, d + 2)
    eps_k = np.repeat(np.asarray(eps_list), len(r) * 4)
    wt = np.tile(np.repeat(wr, 4) / 4, E)
    basis = np.concatenate([model["Psi_r"], model["Psi_s"]])
    f0 = np.einsum("nik,kx->nxi", np.repeat(r.reshape(-1, O, 2), 4, axis=0), model["U"])  # sum_k U_kx r_ik
    f0 = np.tile(f0.reshape(-1, P * O), (E, 1))
    chi = model["chi"]

    def f(th):
        return (f0 + th @ Phi.T + 0.5 * np.einsum("kj,jXab,ka,kb->kX", coef, basis, th, th, optimize=True)
                + eps_k[:, None] * np.einsum("Xabc,ka,kb,kc->kX", chi, th, th, th, optimize=True) / 6)

    def grad(th):
        return (Phi[None] + np.einsum("kj,jXab,kb->kXa", coef, basis, th, optimize=True)
                + 0.5 * eps_k[:, None, None] * np.einsum("Xabc,kb,kc->kXa", chi, th, th, optimize=True))

    NO = N * O
    th = np.zeros((len(f0), m))
    for _ in range(t):
        th = th - c * np.einsum("kXa,kX->ka", grad(th)[:, :NO], f(th)[:, :NO] - y.reshape(NO))
    Th = Phi @ Phi.T
    A = Th[:NO, :NO]
    flin = f0 - (Th[:, :NO] @ np.linalg.solve(A, (np.eye(NO) - np.linalg.matrix_power(np.eye(NO) - c * A, t))
                                              @ (f0[:, :NO] - y.reshape(NO)).T)).T
    ff = f(th)
    w_ = wt.reshape(E, -1)

    def mom(v):
        v = v.reshape(E, -1, P * O)
        mean = np.einsum("ek,ekx->ex", w_, v)
        return mean, np.einsum("ek,ekx,eky->exy", w_, v, v) - np.einsum("ex,ey->exy", mean, mean)

    (mf, cf), (ml, cl) = mom(ff), mom(flin)
    return (mf - ml).reshape(E, P, O), (cf - cl).reshape(E, P, O, P, O)


def test_several_outputs_motion_is_the_exact_slope_of_a_cubic_model(t=2):
    """The O = 2 motion and its covariance (the P..U output deltas of DNTK_OUTPUTS, composite rows) against the exact
    eps-slope of _outputs_cubic trained by gradient descent.  Measured: 6.5e-9 (motion) and 2.6e-9 (covariance)
    relative; any one of P..U given another pair of deltas is off by 8e-4 (U, covariance) to 0.26 (Q, motion)."""
    model, tensors, dntk = _outputs_cubic()
    lam = np.linalg.eigvalsh(tensors["Theta"][:N, :N])
    dyn = FiniteWidthDynamics(tensors, model["y"], learning_rate=0.6 * N * 2 / lam[-1], dntk=dntk)
    mot, cov = dyn.motion(steps=t), dyn.motion_covariance(steps=t)
    s = np.array([1e-3, 2e-3, 3e-3, 4e-3, 5e-3])
    dm, dc = _outputs_cubic_moments(model, s**2, dyn.c, t)
    fit = lambda v: np.polynomial.polynomial.polyfit(s, (v / (s**2).reshape((-1,) + (1,) * (v.ndim - 1))).reshape(len(s), -1), 4)[0]
    m1, c1 = fit(dm).reshape(P, 2), fit(dc).reshape(P, 2, P, 2)
    np.testing.assert_allclose(mot.correction, m1, rtol=1e-6, atol=1e-6 * np.max(np.abs(m1)))
    np.testing.assert_allclose(cov.correction, c1, rtol=1e-6, atol=1e-6 * np.max(np.abs(c1)))
