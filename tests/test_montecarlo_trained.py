"""Ensembles of trained finite networks (ntk_theory.reference.batched, ntk_theory.montecarlo.trained,
ntk_theory.validation.trained) against independent judges.

* the batched trainer against ntk_theory.dynamics.train network by network (to 1e-12), its loss gradient
  against central differences of the loss, its empirical NTK against J Lambda J^T with J by central
  differences of the outputs;
* the linearised control (eigenbasis formula) against explicit iteration f <- f - c Theta (f - y) with each
  network's own NTK;
* exact: at convergence every network fits its training targets (the mean's correction vanishes there);
  at t = 0 the control's mean is the mean of f0 and the NTK-motion part is 0; the split
  motion + linearised_plain is the plain mean; the dropped odd part has mean 0 within its standard error
  (deep linear network, small step);
* a standard error that is 0 or NaN fails every verdict (z-score and fit NaN); bad input raises ValueError;
* slow: the fitted n -> infinity intercepts of the mean and covariance over widths agree with
  ntk_theory.dynamics.ensemble (itself checked against MSEDynamics here) within 4 standard errors (ReLU,
  tanh; several t and a converged t).
"""

import numpy as np
import pytest

from ntk_theory.architecture import MLPSpec
from ntk_theory.dynamics import MSEDynamics, train
from ntk_theory.montecarlo.trained import (
    UnstableControlError,
    linearised_parts,
    output_ntk,
    sample_trained,
)
from ntk_theory.recursions import KernelRecursion
from ntk_theory.reference import MLP
from ntk_theory.reference.batched import BatchedMLP, train_batched
from ntk_theory.validation.trained import fit_trained, fit_trained_widths, infinite_width_trained

X3 = np.array([[1.0, 0.3], [-0.4, 1.2], [0.7, -0.9]])
Y3 = np.array([0.5, -0.3, 0.8])
XT2 = np.array([[0.2, 1.0], [-1.0, -0.5]])


def _eta(act, C_W, C_b, X, y, frac, depth=2):
    _, T = KernelRecursion(act, depth, C_W=C_W, C_b=C_b)(X)
    return frac * MSEDynamics(T, y).max_learning_rate()


# ----------------------------------------------------------------------------------------- the batched trainer
@pytest.mark.parametrize("act,widths,y", [("tanh", (2, 12, 9, 1), Y3), ("relu", (2, 10, 10, 10, 2), np.c_[Y3, -Y3])])
def test_batched_training_matches_train(act, widths, y):
    nets = [MLP.random(widths, act, C_W=1.7, C_b=0.2, seed=s) for s in range(3)]
    run = train_batched(BatchedMLP.stack(nets), X3, y, 0.4, 25, X_test=XT2, record=[0, 7, 25])
    for s, net in enumerate(nets):
        ref = train(net, X3, y, 0.4, 25, X_test=XT2, record=[0, 7, 25])
        scale = np.max(np.abs(ref.train_outputs))
        assert np.max(np.abs(run.train_outputs[:, s] - ref.train_outputs)) <= 1e-12 * scale
        assert np.max(np.abs(run.test_outputs[:, s] - ref.test_outputs)) <= 1e-12 * scale
        for W, Wref in zip(run.network.weights, ref.network.weights):
            assert np.max(np.abs(W[s] - Wref)) <= 1e-12 * np.max(np.abs(Wref))


def _loss(net, X, y):
    f = net(X)
    return 0.5 * np.sum((f - y[None, :, None]) ** 2, axis=(1, 2)) / y.size


def test_batched_gradient_matches_finite_differences():
    rng = np.random.default_rng(5)
    net = BatchedMLP.random(MLPSpec.build(2, 2, 7, C_W=1.5, C_b=0.3), "tanh", 2, rng)
    tr = net.forward(X3)
    grads = net.vjp(tr, (tr.output - Y3[None, :, None]) / Y3.size)
    direction = [(rng.standard_normal(W.shape), rng.standard_normal(b.shape)) for W, b in zip(net.weights, net.biases)]
    exact = sum(np.sum(dW * vW, axis=(1, 2)) + np.sum(db * vb, axis=1) for (dW, db), (vW, vb) in zip(grads, direction))
    h = 1e-5

    def moved(sign):
        out = net.copy()
        for l, (vW, vb) in enumerate(direction):
            out.weights[l] += sign * h * vW
            out.biases[l] += sign * h * vb
        return _loss(out, X3, Y3)

    fd = (moved(1) - moved(-1)) / (2 * h)
    np.testing.assert_allclose(exact, fd, rtol=1e-8)


def test_batched_ntk_matches_finite_difference_jacobian():
    rng = np.random.default_rng(6)
    spec = MLPSpec.build(2, 2, 4, 1, C_W=1.3, C_b=0.4)
    net = BatchedMLP.random(spec, "erf", 2, rng)
    Xall = np.concatenate([X3, XT2])
    theta = net.ntk(Xall, X3)
    h = 1e-6
    for s in range(2):
        cols, lam = [], []
        for l, ((lam_b, lam_W), W, b) in enumerate(zip(net.lambdas, net.weights, net.biases)):
            for arr, factor in ((W, lam_W / W.shape[2]), (b, lam_b)):
                for idx in np.ndindex(arr.shape[1:]):
                    pert = []
                    for sign in (1, -1):
                        arr[(s,) + idx] += sign * h
                        pert.append(net(Xall)[s, :, 0])
                        arr[(s,) + idx] -= sign * h
                    cols.append((pert[0] - pert[1]) / (2 * h))
                    lam.append(factor)
        J = np.stack(cols, axis=1)  # (P_inputs, params)
        fd = (J * np.asarray(lam)) @ J[:3].T
        np.testing.assert_allclose(theta[s], fd, rtol=1e-7, atol=1e-9)


def test_output_ntk_matches_finite_difference_jacobian():
    """output_ntk (S, P, O, N, O) against J Lambda J^T, J the central differences of all O outputs."""
    rng = np.random.default_rng(9)
    net = BatchedMLP.random(MLPSpec.build(2, 2, 3, 2, C_W=1.3, C_b=0.4), "tanh", 2, rng)
    Xall = np.concatenate([X3, XT2])
    theta = output_ntk(net, Xall, X3)
    assert theta.shape == (2, 5, 2, 3, 2)
    h = 1e-6
    for s in range(2):
        cols, lam = [], []
        for (lam_b, lam_W), W, b in zip(net.lambdas, net.weights, net.biases):
            for arr, factor in ((W, lam_W / W.shape[2]), (b, lam_b)):
                for idx in np.ndindex(arr.shape[1:]):
                    pert = []
                    for sign in (1, -1):
                        arr[(s,) + idx] += sign * h
                        pert.append(net(Xall)[s])
                        arr[(s,) + idx] -= sign * h
                    cols.append((pert[0] - pert[1]) / (2 * h))
                    lam.append(factor)
        J = np.stack(cols, axis=-1)  # (P, O, params)
        fd = np.einsum("xiu,u,yju->xiyj", J, np.asarray(lam), J[:3])
        np.testing.assert_allclose(theta[s], fd, rtol=1e-7, atol=1e-9)


def test_several_outputs_control_is_the_first_step():
    """O = 2: one gradient-descent step moves f by -c Theta_hat (f0 - y) + O(c^2) with the full output NTK, so the
    per-network f - f_lin after one step is O(c^2): halving eta quarters its spread (its standard error, same
    networks) -- with the output-traced NTK it would only halve (the off-diagonal blocks' O(c) term); step 0: no
    motion; the output-indexed covariances trace to the one-output ones."""
    y = np.c_[Y3, [-0.2, 0.9, 0.1]]
    runs = [sample_trained("tanh", X3, y, XT2, 2, 8, C_W=1.0, C_b=0.1, eta=eta, steps=[0, 1], samples=64, seed=3,
                           batches=4) for eta in (0.08, 0.04)]
    ratio = runs[0]["motion"].stderr[1] / runs[1]["motion"].stderr[1]
    np.testing.assert_allclose(ratio, 4.0, rtol=0.05)  # measured 3.97 .. 4.06
    assert np.all(runs[0]["motion"].value[0] == 0) and runs[0]["cov_outputs"].value.shape == (2, 5, 2, 5, 2)
    for name in ("cov", "cov_linearised", "cov_motion"):
        full = runs[0][name + "_outputs"].value
        np.testing.assert_allclose(np.einsum("rpoqo->rpq", full) / 2, runs[0][name].value, rtol=1e-12, atol=1e-15)


def test_linearised_parts_match_explicit_iteration():
    rng = np.random.default_rng(7)
    net = BatchedMLP.random(MLPSpec.build(2, 2, 16, C_W=2.0, C_b=0.1), "relu", 3, rng)
    Xall = np.concatenate([X3, XT2])
    theta = net.ntk(Xall, X3)
    f0 = net(Xall)
    c = 0.3 / 3
    steps = np.array([0, 1, 4, 30])
    odd, even = linearised_parts(theta, f0, Y3[:, None], steps, c)
    for s in range(3):
        f, got = f0[s].copy(), []
        for k in range(steps[-1] + 1):
            if k in steps:
                got.append(f.copy())
            f = f - c * theta[s] @ (f[:3] - Y3[:, None])
        np.testing.assert_allclose(odd[:, s] + even[:, s], np.array(got), rtol=1e-11, atol=1e-12)
    # the odd part flips sign with the readout layer, the even part does not
    neg = net.negated_readout()
    odd2, even2 = linearised_parts(neg.ntk(Xall, X3), neg(Xall), Y3[:, None], steps, c)
    np.testing.assert_allclose(odd2, -odd, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(even2, even, rtol=1e-10, atol=1e-13)


# ----------------------------------------------------------------------------------------- exact limits
def test_converged_networks_fit_the_training_targets():
    eta = _eta("tanh", 1.0, 0.05, X3, Y3, 0.5)
    net = BatchedMLP.random(MLPSpec.build(2, 2, 24, C_W=1.0, C_b=0.05), "tanh", 16, np.random.default_rng(8))
    run = train_batched(net, X3, Y3, eta, 800, record=[800])
    assert np.max(np.abs(run.train_outputs[-1, :, :, 0] - Y3)) < 1e-10  # every network
    res = sample_trained("tanh", X3, Y3, XT2, 2, 24, C_W=1.0, C_b=0.05, eta=eta, steps=[0, 5, 800], samples=48,
                         seed=1, batches=8)
    for name in ("mean_plain", "mean", "linearised"):
        np.testing.assert_allclose(res.train(name).value[-1], Y3, atol=1e-10)
    assert np.max(np.abs(res.train("motion").value[-1])) < 1e-10
    assert np.max(np.abs(res.train("cov").value[-1])) < 1e-14  # rounding of mean(f f) - mean(f)^2, f = y
    # the test outputs keep their spread: their standard errors are positive and finite
    assert np.all(np.isfinite(res.test("mean").stderr[1:])) and np.all(res.test("mean").stderr[1:] > 0)


def test_control_at_initialisation_is_f0():
    res = sample_trained("relu", X3, Y3, XT2, 2, 16, C_W=2.0, C_b=0.1, eta=0.2, steps=[0, 3], samples=64, seed=2,
                         batches=8)
    np.testing.assert_array_equal(res["linearised_plain"].value[0], res["mean_plain"].value[0])
    np.testing.assert_array_equal(res["odd"].value[0], res["mean_plain"].value[0])
    for name in ("motion", "linearised", "mean"):
        assert np.all(res[name].value[0] == 0) and np.all(res[name].stderr[0] == 0)
    assert np.max(np.abs(res["mean_optimal"].value[0])) < 1e-14  # f0 - 1 * f0, beta = 1 to rounding
    # E[f0] = 0 for every network ensemble: the plain mean at t = 0 is zero within its standard error
    assert np.all(np.abs(res["mean_plain"].z_score(0.0)[0]) < 4)
    np.testing.assert_allclose(res["cov"].value[0], res["cov_linearised"].value[0], rtol=1e-13)


def test_deep_linear_split_sums_to_total():
    X, y = X3[:2], Y3[:2]  # a linear network's kernel has rank n_0 = 2
    eta = _eta("linear", 1.0, 0.0, X, y, 0.05)
    res = sample_trained("linear", X, y, XT2, 3, 16, C_W=1.0, C_b=0.0, eta=eta, steps=[1, 10, 40], samples=512,
                         seed=3, batches=16)
    total = res["motion"].value + res["linearised_plain"].value
    np.testing.assert_allclose(total, res["mean_plain"].value, rtol=1e-12, atol=1e-14)
    # controlled - plain = -odd, whose expectation is exactly 0: within 4 of its standard errors
    np.testing.assert_allclose(res["mean"].value - res["mean_plain"].value, -res["odd"].value, atol=1e-14)
    assert np.all(np.abs(res["odd"].z_score(0.0)) < 4)
    # and the control pays: the controlled mean's standard error is smaller than the plain one at every entry
    assert np.all(res.variance_reduction() > 1) and np.all(res.variance_reduction("mean_optimal") > 1)


# ----------------------------------------------------------------------------------------- bad input, bad errors
def test_zero_or_nan_standard_error_fails():
    runs = [sample_trained("relu", X3, Y3, XT2, 1, n, C_W=2.0, C_b=0.0, eta=0.2, steps=[0, 2], samples=32, seed=n,
                           batches=4) for n in (8, 16)]
    m, c = infinite_width_trained("relu", X3, Y3, XT2, 1, C_W=2.0, C_b=0.0, eta=0.2, steps=[0, 2])
    fit = fit_trained_widths(runs, (m, c))
    # at t = 0 the controlled mean has SE 0 at every width: no weighted fit, NaN (fails any |z| < k verdict)
    assert np.all(np.isnan(fit["mean_inf"].value[0])) and np.all(np.isnan(fit["mean_1"].stderr[0]))
    z = runs[0]["mean"].z_score(m)
    assert np.all(np.isnan(z[0])) and not np.all(np.abs(z) < 4)
    broken = runs[0]["mean_plain"]
    nan_se = type(broken)(broken.name, broken.value, np.full_like(broken.stderr, np.nan))
    assert np.all(np.isnan(nan_se.z_score(m)))


def test_width_fit_recovers_a_known_expansion():
    """Synthetic runs E(n) = E_inf + b/n + d/n^2 (no noise): the fit returns b as the O(1/n) coefficient and E_inf as
    the intercept, to rounding; with noise of known SE the coefficient's SE is the weighted least squares one."""
    from ntk_theory.montecarlo.estimate import Estimate
    from ntk_theory.montecarlo.trained import TrainedEnsemble

    rng = np.random.default_rng(9)
    m, c = rng.standard_normal((2, 4)), rng.standard_normal((2, 4, 4))
    b, d = rng.standard_normal((2, 4)), rng.standard_normal((2, 4))
    bc = rng.standard_normal((2, 4, 4))
    widths = (16, 32, 64, 128)

    def run(n):
        est = {}
        for name, ref, slope in (("mean", m, b), ("mean_optimal", m, b), ("mean_plain", m, b), ("linearised", m, 0.5 * b),
                                 ("motion", 0.0, 0.5 * b), ("cov", c, bc), ("cov_linearised", c, bc),
                                 ("cov_motion", 0.0, 0 * bc)):
            value = ref + slope / n + (d / n**2 if name.startswith("mean") else 0.0)
            est[name] = Estimate(name, value, np.full(np.shape(value), 0.01 / np.sqrt(n)))
        return TrainedEnsemble(est, np.array([1, 2]), 2, {"width": n, "samples": 100, "seconds": 1.0})

    fit = fit_trained_widths([run(n) for n in widths], (m, c), order=2)
    np.testing.assert_allclose(fit["mean_1"].value, b, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fit["motion_1"].value, 0.5 * b, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fit["cov_1"].value, bc, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fit["mean_inf"].value, m, rtol=1e-9, atol=1e-12)
    n = np.asarray(widths, dtype=float)
    design = np.stack([np.ones(4), 1 / n, 1 / n**2], axis=1)
    weights = 1.0 / (n * 0.01 / np.sqrt(n)) ** 2  # the errors of n (E - E_inf)
    se_b = np.sqrt(np.linalg.inv(design.T @ (weights[:, None] * design))[0, 0])
    np.testing.assert_allclose(fit["mean_1"].stderr, se_b, rtol=1e-9)


def test_fit_trained_is_runs_plus_fit():
    kw = dict(C_W=2.0, C_b=0.0, eta=0.2, steps=[1, 3])
    fit = fit_trained("relu", X3, Y3, XT2, 1, (8, 16), samples=32, seed=4, order=1, batches=4, **kw)
    seeds = np.random.SeedSequence(4).spawn(2)
    runs = [sample_trained("relu", X3, Y3, XT2, 1, n, samples=32, seed=sd, batches=4, **kw) for n, sd in zip((8, 16), seeds)]
    ref = fit_trained_widths(runs, infinite_width_trained("relu", X3, Y3, XT2, 1, **kw), order=1)
    for name in ("mean_1", "mean_inf", "cov_1"):
        np.testing.assert_array_equal(fit[name].value, ref[name].value)
        np.testing.assert_array_equal(fit[name].stderr, ref[name].stderr)


def test_trained_monte_carlo_loads_no_symbolic_module():
    """The judge is independent of what it judges: training and estimating import nothing symbolic."""
    import subprocess
    import sys

    code = """
import sys, numpy as np
from ntk_theory.montecarlo.trained import sample_trained
sample_trained("tanh", np.eye(2), np.array([0.5, -0.5]), np.ones((1, 2)), 2, 8, C_W=1.0, C_b=0.1, eta=0.5,
               steps=[0, 3], samples=16, batches=4)
bad = [m for m in sys.modules if m.split(".")[:2] in [["ntk_theory", p] for p in
       ("activations", "gaussian", "recursions", "finite_width", "codegen", "jit", "validation", "dynamics")]
       or m == "sympy"]
print(bad)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize("kwargs,match", [
    (dict(eta=0.0), "eta"), (dict(eta=np.nan), "eta"), (dict(steps=[3, 1]), "increasing"),
    (dict(steps=[-1, 2]), "non-negative"), (dict(steps=[1.5]), "integers"), (dict(samples=3), "samples"),
    (dict(y_train=np.ones(4)), "y_train"), (dict(y_train=np.array([1.0, np.nan, 0.0])), "y_train"),
])
def test_bad_input_raises(kwargs, match):
    args = dict(activation="relu", X_train=X3, y_train=Y3, X_test=XT2, depth=1, width=8, C_W=2.0, C_b=0.0, eta=0.1,
                steps=[0, 1], samples=16, seed=0, batches=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        sample_trained(**args)


def test_step_too_large_for_the_control_raises():
    eta = _eta("relu", 2.0, 0.1, X3, Y3, 0.95)
    with pytest.raises(UnstableControlError, match="lower eta"):
        sample_trained("relu", X3, Y3, XT2, 2, 8, C_W=2.0, C_b=0.1, eta=eta, steps=[0, 1], samples=64, seed=0,
                       batches=4)


def test_infinite_width_prediction_is_msedynamics():
    eta = _eta("relu", 2.0, 0.1, X3, Y3, 0.3)
    steps = [0, 4, 50]
    m, c = infinite_width_trained("relu", X3, Y3, XT2, 2, C_W=2.0, C_b=0.1, eta=eta, steps=steps)
    K, T = KernelRecursion("relu", 2, C_W=2.0, C_b=0.1)(np.concatenate([X3, XT2]))
    dyn = MSEDynamics(T[:3, :3], Y3, learning_rate=eta)
    tr, te = dyn.predict(steps=steps, ntk_test_train=T[3:, :3])  # f0 = 0: the mean
    np.testing.assert_allclose(m, np.concatenate([tr, te], axis=1), rtol=1e-12, atol=1e-14)
    # covariance: the linear map f_t = A_t f0 + b_t applied to the joint NNGP, A_t by explicit iteration
    c_step = eta / 3
    A = np.eye(5)
    for k in range(steps[-1] + 1):
        if k in steps:
            np.testing.assert_allclose(c[steps.index(k)], A @ K @ A.T, rtol=1e-9, atol=1e-13)
        A = A - c_step * T[:, :3] @ A[:3]


# ----------------------------------------------------------------------------------------- n -> infinity (slow)
WIDTH_CASES = {
    # activation, C_W, C_b, training inputs, step fraction of the largest stable one, steps (the last converged:
    # train residual < 1e-10); widths 32, 64, 128 fitted as a + b/n + c/n^2 (at n = 32 the 1/n^2 term of ReLU
    # depth 2 is resolved)
    "relu": ("relu", 2.0, 0.1, 3, 0.3, [2, 6, 20, 130]),
    "tanh": ("tanh", 1.0, 0.05, 2, 0.4, [1, 3, 8, 40]),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(WIDTH_CASES))
def test_width_fit_intercept_is_infinite_width(case):
    act, C_W, C_b, N, frac, steps = WIDTH_CASES[case]
    X, y = X3[:N], Y3[:N]
    eta = _eta(act, C_W, C_b, X, y, frac)
    runs = [sample_trained(act, X, y, XT2, 2, n, C_W=C_W, C_b=C_b, eta=eta, steps=steps, samples=2048, seed=n)
            for n in (32, 64, 128)]
    m, c = infinite_width_trained(act, X, y, XT2, 2, C_W=C_W, C_b=C_b, eta=eta, steps=steps)
    fit = fit_trained_widths(runs, (m, c), order=2)
    # the last step has converged on the training inputs (the infinite-width residual < 1e-10; a narrow network
    # whose own NTK has a small eigenvalue lags, so the ensemble's by at most 1e-4; exact convergence of every
    # network: test_converged_networks_fit_the_training_targets); the train rows there are not fitted
    for r in runs:
        np.testing.assert_allclose(r.train("mean_plain").value[-1], y, atol=1e-4)
    for name, ref in (("mean", m), ("mean_optimal", m), ("linearised", m), ("mean_plain", m), ("motion", 0.0)):
        z = fit[f"{name}_inf"].z_score(ref)
        assert np.all(np.abs(z[:-1]) < 4) and np.all(np.abs(z[-1, N:]) < 4), (name, z)
    for name in ("cov", "cov_linearised"):
        z = fit[f"{name}_inf"].z_score(c)
        assert np.all(np.abs(z[:-1]) < 4) and np.all(np.abs(z[-1, N:, N:]) < 4), (name, z)
