"""Function-space training dynamics (ntk_theory.dynamics) against independent computations.

* closed-form gradient flow vs direct ODE integration (scipy solve_ivp, rtol 1e-11) on train and test outputs;
* closed-form gradient descent vs explicit iteration f <- f - c Theta (f - y) (and the test outputs);
* t = inf vs np.linalg.solve; per-mode residuals vs scipy.linalg.expm; the largest stable learning rate
  vs explicit iteration just below and above it;
* ensemble mean and covariance vs the same linear map assembled from expm and solve on the joint NNGP;
* neural-tangents' predict.gradient_descent_mse / _ensemble / max_learning_rate: tests/test_neural_tangents.py;
* the hand-written backward pass vs forward-mode directional derivatives (MLP.jvp);
* real training of the reference network (ReLU, one hidden layer, widths 64 .. 16384, 16 seeds each): the
  deviation from the infinite-width NTK prediction shrinks as a n^(-1/2) + b n^(-1) (a resolved at > 4
  standard errors, slope -1/2 within 4 sigma); the relative change of the empirical NTK shrinks with an
  exponent between -1 (PDLT's mean) and -1/2 (Lee et al.'s bound).  Depth 2 up to 1024: slow set.
"""


import numpy as np
import pytest
from scipy import integrate, linalg

from ntk_theory import MLP
from ntk_theory.dynamics import IllConditionedKernelWarning, MSEDynamics, ensemble, gradient, loss_value, train
from ntk_theory.dynamics.widths import width_scaling
from ntk_theory.recursions import KernelRecursion


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((9, 3))
    rec = KernelRecursion("erf", 2, C_W=1.7, C_b=0.1)
    K, T = rec(X)
    N = 6
    y = rng.standard_normal((N, 2))
    f0 = rng.standard_normal((9, 2)) * 0.5
    return dict(K=K, T=T, N=N, y=y, f0=f0)


def _blocks(p):
    N = p["N"]
    return p["T"][:N, :N], p["T"][N:, :N], p["f0"][:N], p["f0"][N:]


@pytest.mark.parametrize("loss", ["mean", "sum"])
def test_flow_matches_ode_integration(problem, loss):
    Txx, Ttx, f0, g0 = _blocks(problem)
    y, eta = problem["y"], 0.7
    dyn = MSEDynamics(Txx, y, learning_rate=eta, loss=loss)
    c = eta / y.size if loss == "mean" else eta
    N, M, O = Txx.shape[0], Ttx.shape[0], y.shape[1]

    def rhs(t, v):
        f = v[: N * O].reshape(N, O)
        r = f - y
        return np.concatenate([(-c * Txx @ r).ravel(), (-c * Ttx @ r).ravel()])

    ts = np.array([0.0, 0.3, 2.0, 7.5, 40.0])
    sol = integrate.solve_ivp(rhs, (0, ts[-1]), np.concatenate([f0.ravel(), g0.ravel()]), t_eval=ts,
                              method="DOP853", rtol=1e-11, atol=1e-13)
    ode_train = sol.y[: N * O].T.reshape(len(ts), N, O)
    ode_test = sol.y[N * O:].T.reshape(len(ts), M, O)
    tr, te = dyn.predict(ts, ntk_test_train=Ttx, fx_train_0=f0, fx_test_0=g0)
    np.testing.assert_allclose(tr, ode_train, atol=1e-9)
    np.testing.assert_allclose(te, ode_test, atol=1e-9)


def test_gradient_descent_matches_iteration(problem):
    Txx, Ttx, f0, g0 = _blocks(problem)
    y = problem["y"]
    dyn = MSEDynamics(Txx, y, learning_rate=1.0)
    eta = 0.9 * dyn.max_learning_rate()
    dyn = MSEDynamics(Txx, y, learning_rate=eta)
    c = eta / y.size
    f, g = f0.copy(), g0.copy()
    steps = [0, 1, 5, 37, 200]
    got_tr, got_te = dyn.predict(steps=steps, ntk_test_train=Ttx, fx_train_0=f0, fx_test_0=g0)
    for k in range(steps[-1] + 1):
        if k in steps:
            i = steps.index(k)
            np.testing.assert_allclose(got_tr[i], f, atol=1e-11)
            np.testing.assert_allclose(got_te[i], g, atol=1e-11)
        r = f - y
        f, g = f - c * Txx @ r, g - c * Ttx @ r


def test_infinite_time_and_modes(problem):
    Txx, Ttx, f0, g0 = _blocks(problem)
    y = problem["y"]
    dyn = MSEDynamics(Txx, y, learning_rate=0.5)
    np.testing.assert_allclose(dyn.train(np.inf, fx_train_0=f0), y, atol=1e-12)
    np.testing.assert_allclose(dyn.test(np.inf, ntk_test_train=Ttx, fx_train_0=f0, fx_test_0=g0),
                               g0 + Ttx @ np.linalg.solve(Txx, y - f0), atol=1e-10)
    modes = dyn.modes(fx_train_0=f0)
    assert np.all(np.diff(modes.eigenvalues) <= 0)
    t = 3.0
    expected = modes.eigenvectors.T @ (linalg.expm(-dyn.c * Txx * t) @ (f0 - y))
    np.testing.assert_allclose(modes.residual(t), expected, atol=1e-12)
    # the top mode is learned first
    ratio = np.abs(modes.residual(t)[:, 0] / modes.initial[:, 0])
    assert ratio[0] < ratio[-1]
    assert "mode 0" in repr(modes) and "MSEDynamics(N=6" in repr(dyn)


def test_max_learning_rate_separates_convergence_from_divergence(problem):
    Txx = _blocks(problem)[0]
    y = problem["y"][:, :1]
    eta_max = MSEDynamics(Txx, y).max_learning_rate()
    np.testing.assert_allclose(eta_max, 2 * y.size / np.linalg.eigvalsh(Txx)[-1], rtol=1e-12)
    for factor, converges in ((0.98, True), (1.02, False)):
        f = np.zeros_like(y)
        for _ in range(3000):
            f = f - factor * eta_max / y.size * Txx @ (f - y)
        assert (np.linalg.norm(f - y) < 1e-6) == converges
    with pytest.warns(RuntimeWarning, match="largest stable"):
        MSEDynamics(Txx, y, learning_rate=1.02 * eta_max).train(steps=10)


@pytest.mark.parametrize("get", ["ntk", "nngp"])
def test_ensemble_mean_and_covariance(problem, get):
    K, T, N = problem["K"], problem["T"], problem["N"]
    D = K if get == "nngp" else T
    y = problem["y"][:, 0]
    eta, t = 1.3, 4.0
    c = eta / N
    pred = ensemble(K[:N, :N], T[:N, :N], y, t, nngp_test_train=K[N:, :N], ntk_test_train=T[N:, :N],
                    nngp_test_test=K[N:, N:], learning_rate=eta, get=get)
    # f_t = A f0 + b with f0 ~ N(0, K_joint): assemble A from expm and solve
    P = linalg.expm(-c * D[:N, :N] * t)
    M = K.shape[0] - N
    A = np.zeros((K.shape[0], K.shape[0]))
    A[:N, :N] = P
    A[N:, N:] = np.eye(M)
    Q = D[N:, :N] @ np.linalg.solve(D[:N, :N], np.eye(N) - P)
    A[N:, :N] = -Q
    b = np.concatenate([(np.eye(N) - P) @ y, Q @ y])
    cov = A @ K @ A.T
    np.testing.assert_allclose(pred.train.mean, b[:N], atol=1e-10)
    np.testing.assert_allclose(pred.test.mean, b[N:], atol=1e-10)
    np.testing.assert_allclose(pred.train.covariance, cov[:N, :N], atol=1e-10)
    np.testing.assert_allclose(pred.test.covariance, cov[N:, N:], atol=1e-10)


@pytest.mark.parametrize("absolute", [False, True])
def test_diag_reg_is_kernel_ridge_regression(problem, absolute):
    """t = inf with diag_reg: the test mean is Theta(X', X) (Theta + r I)^-1 y and the covariance the GP posterior
    of the regularised kernels (neural-tangents' gp_inference), by direct solves."""
    K, T, N = problem["K"], problem["T"], problem["N"]
    y = problem["y"]
    reg = 0.3
    pred = ensemble(K[:N, :N], T[:N, :N], y, np.inf, nngp_test_train=K[N:, :N], ntk_test_train=T[N:, :N],
                    nngp_test_test=K[N:, N:], diag_reg=reg, diag_reg_absolute_scale=absolute)
    rT = reg if absolute else reg * np.trace(T[:N, :N]) / N
    rK = reg if absolute else reg * np.trace(K[:N, :N]) / N
    Treg, Kreg = T[:N, :N] + rT * np.eye(N), K[:N, :N] + rK * np.eye(N)
    np.testing.assert_allclose(pred.test.mean, T[N:, :N] @ np.linalg.solve(Treg, y), atol=1e-10)
    Q = T[N:, :N] @ np.linalg.inv(Treg)
    cov = K[N:, N:] - Q @ K[:N, N:] - K[N:, :N] @ Q.T + Q @ Kreg @ Q.T
    np.testing.assert_allclose(pred.test.covariance, cov, atol=1e-10)
    with pytest.raises(ValueError, match="diag_reg"):
        ensemble(K[:N, :N], T[:N, :N], y, np.inf, diag_reg=-1.0)


def _with_negative_eigenvalue(K):
    lam, V = np.linalg.eigh(K)
    lam[0] = -0.1 * lam[-1]
    return (V * lam) @ V.T


def test_bad_input_names_the_problem(problem):
    Txx = _blocks(problem)[0]
    y = problem["y"]
    bad = Txx.copy()
    bad[0, 0] = np.nan
    cases = [
        (lambda: MSEDynamics(bad, y), "non-finite"),
        (lambda: MSEDynamics(Txx[:5, :5], y), "shape"),
        (lambda: MSEDynamics(Txx + np.triu(np.ones_like(Txx), 1), y), "not symmetric"),
        (lambda: MSEDynamics(_with_negative_eigenvalue(Txx), y), "not positive semidefinite"),
        (lambda: MSEDynamics(Txx, y, learning_rate=-1), "learning_rate"),
        (lambda: MSEDynamics(Txx, y, loss="l1"), "unknown loss"),
        (lambda: MSEDynamics(Txx, y).train(-1.0), "t must be >= 0"),
        (lambda: MSEDynamics(Txx, y).train(steps=1.5), "integers"),
        (lambda: MSEDynamics(Txx, y).train(1.0, steps=2), "exactly one"),
        (lambda: MSEDynamics(Txx, y).test(1.0, ntk_test_train=np.ones((3, 4))), "ntk_test_train"),
        (lambda: MSEDynamics(Txx, y).train(1.0, fx_train_0=np.ones((4, 2))), "fx_train_0"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match):
            call()
    v = np.random.default_rng(0).standard_normal(6)
    singular = np.outer(v, v) + 1e-14 * np.eye(6)
    with pytest.warns(IllConditionedKernelWarning):
        MSEDynamics(singular, y)


def test_backward_pass_matches_forward_mode():
    rng = np.random.default_rng(1)
    net = MLP.random((3, 40, 30, 2), "tanh", C_W=1.5, C_b=0.1, seed=2)
    X, y = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    for loss in ("mean", "sum"):
        f, grads = gradient(net, X, y, loss)
        v = rng.standard_normal(net.n_params)
        _, Jv = net.jvp(X, v)  # forward mode: dL/d(eps) = g . J v
        scale = 1.0 / y.size if loss == "mean" else 1.0
        expected = scale * np.sum((f - y) * Jv)
        got = np.dot(net.flatten(grads), v)
        np.testing.assert_allclose(got, expected, rtol=1e-11)
        assert np.isclose(loss_value(f, y, loss), 0.5 * np.sum((f - y) ** 2) * scale)


def test_training_follows_linearised_dynamics_for_a_small_step():
    """One GD step moves f by -c Theta (f - y) + O(eta^2): the update's first-order term is the NTK."""
    rng = np.random.default_rng(4)
    net = MLP.random((2, 300, 1), "relu", C_W=2.0, C_b=0.1, seed=5)
    X, y = rng.standard_normal((4, 2)), rng.standard_normal(4)
    theta = net.ntk(X)
    for eta in (1e-3, 1e-4):
        run = train(net, X, y, eta, 1)
        f0, f1 = run.train_outputs[0, :, 0], run.train_outputs[1, :, 0]
        predicted = f0 - eta / 4 * theta @ (f0 - y)
        assert np.max(np.abs(f1 - predicted)) < 50 * eta ** 2
    assert np.array_equal(run.initial.weights[0], net.weights[0])  # the input network is not modified


@pytest.fixture(scope="module")
def scaling():
    return width_scaling((64, 256, 1024, 4096, 16384), seeds=16, depth=1, activation="relu", C_W=2.0, C_b=0.1)


def test_trained_outputs_approach_the_infinite_width_prediction(scaling):
    means, errs = scaling.summary("error_infinite")
    # shrinks with width: the largest width is below the smallest by more than 4 combined standard errors
    assert means[0] - means[-1] > 4 * np.hypot(errs[0], errs[-1])
    two = scaling.fit_two_term("error_infinite")
    assert two.a > 4 * two.a_err and two.chi2_dof < 4, two
    # width-dependent tolerance: every width within 4 standard errors of the fitted a n^-1/2 + b n^-1
    model = two.a * np.array(scaling.widths) ** -0.5 + two.b / np.array(scaling.widths)
    assert np.all(np.abs(means - model) < 4 * errs + 1e-12), (means, model, errs)
    law = scaling.fit("error_infinite")
    assert abs(law.slope + 0.5) < 4 * law.slope_err + 0.05, law


def test_ntk_change_shrinks_with_width(scaling):
    """Lee et al. 2019 (thm. 2.1) bound the change by O(n^-1/2); PDLT (ch. 11) gives an O(1/n) mean: the
    measured exponent lies between the two (ReLU, one hidden layer: about -0.73 over 64 .. 16384)."""
    from ntk_theory.dynamics.widths import fit_power_law

    means, errs = scaling.summary("ntk_change")
    assert np.all(np.diff(means) < 0)
    law = scaling.fit("ntk_change")
    assert -1.0 - 4 * law.slope_err < law.slope < -0.5 + 4 * law.slope_err, law
    # at least as fast as n^-1/2 at every step: sqrt(n) * change does not grow (4 standard errors)
    scaled, scaled_err = means * np.sqrt(scaling.widths), errs * np.sqrt(scaling.widths)
    assert np.all(np.diff(scaled) < 4 * np.hypot(scaled_err[1:], scaled_err[:-1]))
    local = fit_power_law(scaling.widths[-3:], means[-3:], errs[-3:])
    assert -1.0 - 4 * local.slope_err < local.slope < -0.5 + 4 * local.slope_err, local


@pytest.mark.slow
def test_depth_two_training_scaling():
    res = width_scaling((64, 128, 256, 512, 1024), seeds=8, depth=2, activation="relu", C_W=2.0, C_b=0.1)
    means, errs = res.summary("error_infinite")
    assert means[0] - means[-1] > 4 * np.hypot(errs[0], errs[-1])
    law = res.fit("error_infinite")
    assert abs(law.slope + 0.5) < 4 * law.slope_err + 0.05, law
    law = res.fit("ntk_change")
    assert -1.0 - 4 * law.slope_err < law.slope < -0.5 + 4 * law.slope_err, law


def test_loss_value_refuses_an_unknown_loss_and_mismatched_shapes():
    """An unknown loss name was taken as "sum", and f (N,) against y (N, 1) broadcast to an (N, N) residual:
    both silently gave a wrong number."""
    f, y = np.array([1.0, 3.0]), np.array([0.0, 1.0])
    assert loss_value(f, y) == 0.5 * (1.0 + 4.0) / 2 and loss_value(f, y, "sum") == 0.5 * (1.0 + 4.0)
    with pytest.raises(ValueError, match="unknown loss 'mse'"):
        loss_value(f, y, "mse")
    with pytest.raises(ValueError, match=r"same shape"):
        loss_value(f, y[:, None])
