"""Monte Carlo judge of the finite-width statistics: exact checks derived here, not taken from the code.

Statistical tests use fixed seeds and 4-sigma tolerances from the estimated standard errors.  When two
estimates from the same networks are compared, the bound is 4 x (sum of their standard errors), an
upper bound on 4 standard deviations of the difference whatever their correlation.
"""

import numpy as np
import pytest

from ntk_theory.architecture import MLPSpec
from ntk_theory.montecarlo import layer_statistics, symmetrise
from ntk_theory.recursions import KernelRecursion
from ntk_theory.reference import MLP, ensemble, numpy_activation
from ntk_theory.validation import fit_inverse_width, fit_widths

X3 = np.array([[1.0, 0.0, 0.0], [0.5, np.sqrt(3) / 2, 0.0], [-0.3, 0.2, 0.9]]) * np.sqrt(3)
X2 = X3[:2]
X1 = X3[:1]


def within(est, exact, k=4.0):
    z = np.abs(est.z_score(exact))
    assert np.all(z < k), f"{est.name}: max |z| = {z.max():.2f}\n{est.value}\nvs\n{exact}"


def agree(e1, e2, k=4.0):
    """Two estimates of the same quantity from the same networks."""
    bound = k * (e1.stderr + e2.stderr) + 1e-10 * np.abs(e1.value)
    diff = np.abs(e1.value - e2.value)
    assert np.all(diff <= bound), f"{e1.name} vs {e2.name}: max diff/bound {np.max(diff / bound):.2f}"


# ------------------------------------------------------------------------------- ensemble
@pytest.mark.parametrize("act", ["tanh", "relu"])
@pytest.mark.parametrize("param", ["ntk", "unit", "standard"])
def test_readout_ensemble_equals_reference_network(act, param):
    """evaluate_readouts (2 readouts, virtual readouts) against the forward-mode network, network by network."""
    spec = MLPSpec((3, 12, 9, 11, 2), C_W=(1.3, 2.0, 1.1, 0.7), C_b=(0.1, 0.0, 0.3, 0.2), param=param)
    rng = np.random.default_rng(7)
    X = rng.standard_normal((4, 3))
    S, N = 3, 4
    weights = [
        ensemble.DenseWeights.sample(rng, S, spec.widths[l + 1], spec.widths[l], np.sqrt(spec.C_W[l] / spec.widths[l]))
        for l in range(spec.n_layers)
    ]
    biases = [rng.standard_normal((S, spec.widths[l + 1])) * np.sqrt(spec.C_b[l]) for l in range(spec.n_layers)]
    out = ensemble.evaluate_readouts(X, spec, numpy_activation(act), weights, biases)
    lam_b, lam_W = spec.learning_rate_factors()[-1]
    for s in range(S):
        net = MLP(spec, act, [w.W[s] for w in weights], [b[s] for b in biases])
        assert np.allclose(out.ntk[s], net.ntk(X, trace_outputs=False).transpose(2, 3, 0, 1), rtol=1e-12, atol=1e-13)
        assert np.allclose(out.f[s], net(X).T, rtol=1e-13, atol=1e-14)
        tr = net.forward(X)
        aL = tr.a[-1]
        # virtual readouts: the same network with readout rows a_q = s(z(L)_q), minus the readout's own term
        spec2 = MLPSpec((3, 12, 9, 11, N), C_W=spec.C_W, C_b=spec.C_b, param=param)
        net2 = MLP(spec2, act, [w.W[s] for w in weights[:-1]] + [aL], [b[s] for b in biases[:-1]] + [np.zeros(N)])
        own = lam_b + lam_W / aL.shape[1] * aL @ aL.T
        hid = net2.ntk(X, trace_outputs=False) - own[:, :, None, None] * np.eye(N)
        assert np.allclose(out.hidden[s], hid.transpose(2, 0, 3, 1), rtol=1e-11, atol=1e-12)
        for l in range(3):
            z, a = tr.z[l], tr.a[l + 1]
            assert np.allclose(out.pre_grams[l][s], z @ z.T / z.shape[1])
            assert np.allclose(out.act_grams[l][s], a @ a.T / a.shape[1])


def test_reproducible_and_thread_independent():
    a = layer_statistics("tanh", X2, 2, 8, C_W=1.5, C_b=0.1, samples=800, seed=3, batches=8, workers=1, memory_mb=1)
    b = layer_statistics("tanh", X2, 2, 8, C_W=1.5, C_b=0.1, samples=800, seed=3, batches=8, workers=2, memory_mb=1)
    assert a.info["block"] < 800  # several blocks
    for name in a.estimates:
        assert np.array_equal(a[name].value, b[name].value), name
    assert "V" in repr(a) and "B_(pq)(rs)" in a.table()


# ------------------------------------------------------------------------------- exact checks
def test_one_hidden_layer_is_width_independent():
    """Depth 1: z(1) is exactly Gaussian, so E[zz] = C_b + C_W <ss> and, for ReLU at one input,
    V = C_W^2 (<s^4> - <s^2>^2) = C_W^2 K1^2 (3/2 - 1/4) = 5 K^2 at every width (K = C_W K1 / 2)."""
    for n in (4, 32):
        r = layer_statistics("relu", X1, 1, n, C_W=2.0, C_b=0.0, samples=20_000, seed=n, control_variates=False)
        K1 = 2.0 * (X1 @ X1.T / 3)[0, 0]  # C_W G0
        K = 2.0 * K1 / 2  # C_W <relu^2>
        within(r.K_rb, [[K]])
        within(r.V, np.full((1,) * 4, 5 * K**2))
        within(r.cumulant_single, np.full((1,) * 4, 15 * K**2))
    # several inputs, tanh, bias: the mean kernel is the infinite-width one at width 6
    r = layer_statistics("tanh", X3, 1, 6, C_W=1.7, C_b=0.2, samples=20_000, seed=1, control_variates=False)
    within(r.K_rb, KernelRecursion("tanh", 1, C_W=1.7, C_b=0.2)(X3).nngp)
    within(r.ntk, KernelRecursion("tanh", 1, C_W=1.7, C_b=0.2)(X3).ntk)


def _deep_linear_second_moment(K1, depth, n, C_W):
    """E[Khat_ab Khat_cd] of the readout of a deep linear network (C_b = 0), exactly: given layer l,
    (1/n) sum_k z_k;a z_k;b is a Wishart average, E[. .] = Khat Khat + (Khat_ac Khat_bd + Khat_ad Khat_bc)/n."""
    M = np.multiply.outer(K1, K1)
    for _ in range(depth):
        M = C_W**2 * (M + (M.transpose(0, 2, 1, 3) + M.transpose(0, 2, 3, 1)) / n)
    return M


@pytest.mark.parametrize("cv", [True, False])
def test_deep_linear_exact(cv):
    """PDLT ch. 3: one input, E[z^4] - 3 E[z^2]^2 = 3 K^2 [(1 + 2/n)^(l-1) - 1] with l the layer of z
    (l = L + 1 for the readout of L hidden layers), no 1/n correction to E[zz] or E[Theta];
    several inputs: the exact Wishart moments above."""
    depth, n, C_W = 3, 6, 1.3
    r = layer_statistics("linear", X3, depth, n, C_W=C_W, C_b=0.0, samples=30_000, seed=11, control_variates=cv)
    K1 = C_W * X3 @ X3.T / 3
    K = C_W**depth * K1
    M = _deep_linear_second_moment(K1, depth, n, C_W)
    within(r.K, K)
    within(r.K_plain, K)
    within(r.V, n * (M - np.multiply.outer(K, K)))
    within(r.V_plain, n * (M - np.multiply.outer(K, K)))
    kappa = 3 * K[0, 0] ** 2 * ((1 + 2 / n) ** depth - 1)  # one input, layer l = depth + 1
    within(r.cumulant_single, _cum(M, K, n))
    assert abs(r.cumulant_single.value[0, 0, 0, 0] - n * kappa) < 4 * r.cumulant_single.stderr[0, 0, 0, 0]
    within(r.ntk, KernelRecursion("linear", depth, C_W=C_W, C_b=0.0)(X3).ntk)


def _cum(M, K, n):
    V = n * (M - np.multiply.outer(K, K))
    return V + V.transpose(0, 2, 1, 3) + V.transpose(0, 2, 3, 1)


def test_relu_critical_diagonal_has_no_correction():
    """Scale invariance: given layer l-1 each ReLU neuron is a centred Gaussian, E[relu(z)^2] = Var/2, so
    E[z_a z_a] = K_aa at every width (and so is E[Theta_aa] to O(1/n)); the control variates make the
    diagonal exact, the Rao-Blackwellised estimator shows it statistically."""
    r = layer_statistics("relu", X3, 3, 8, C_W=2.0, C_b=0.0, samples=10_000, seed=5)
    Kinf = KernelRecursion("relu", 3, C_W=2.0, C_b=0.0)(X3)
    assert np.allclose(np.diag(r.K.value), np.diag(Kinf.nngp), rtol=1e-12)
    within(r.K_rb, Kinf.nngp * np.eye(3) + r.K_rb.value * (1 - np.eye(3)))
    # off the diagonal the correction is resolved: at n = 8 the kernel is visibly below infinite width
    assert np.all(r.K.z_score(Kinf.nngp)[np.triu_indices(3, 1)] < -8)


# ------------------------------------------------------------------------------- identities
@pytest.mark.parametrize("act,C_W,C_b", [("relu", 2.0, 0.0), ("tanh", 1.2, 0.1)])
def test_single_neuron_identities_and_estimators_agree(act, C_W, C_b):
    """Averaging the readout weights (Gaussian quadratic forms) gives
    n Cov(Theta_ii;ab, Theta_ii;cd) = A_(ab)(cd) + B_(ac)(bd) + B_(ad)(bc),
    n kappa_abcd = V_(ab)(cd) + V_(ac)(bd) + V_(ad)(bc),
    n Cov(Theta_ii;ab, z_i;c z_i;d) = D_abcd + F_(ac)(bd) + F_(ad)(bc);
    and the Rao-Blackwellised estimators agree with the raw ones."""
    r = layer_statistics(act, X2, 2, 12, C_W=C_W, C_b=C_b, samples=30_000, seed=2)
    A, B, V, D, F = (r[k] for k in "ABVDF")
    swapB = lambda T: T.transpose(0, 2, 1, 3)
    swapB2 = lambda T: T.transpose(0, 2, 3, 1)
    pred = A.value + swapB(B.value) + swapB2(B.value)
    se = A.stderr + swapB(B.stderr) + swapB2(B.stderr)
    assert np.all(np.abs(r.ntk_cov_single.value - pred) <= 4 * (se + r.ntk_cov_single.stderr))
    cum = V.value + V.value.transpose(0, 2, 1, 3) + V.value.transpose(0, 2, 3, 1)
    se = V.stderr + V.stderr.transpose(0, 2, 1, 3) + V.stderr.transpose(0, 2, 3, 1)
    assert np.all(np.abs(r.cumulant_single.value - cum) <= 4 * (se + r.cumulant_single.stderr))
    pred = D.value + F.value.transpose(0, 2, 1, 3) + F.value.transpose(0, 2, 3, 1)
    se = D.stderr + F.stderr.transpose(0, 2, 1, 3) + F.stderr.transpose(0, 2, 3, 1)
    assert np.all(np.abs(r.ntk_z_single.value - pred) <= 4 * (se + r.ntk_z_single.stderr))
    for a, b in (("V", "V_plain"), ("D", "D_plain"), ("F", "F_plain"), ("K", "K_plain"), ("K", "K_rb"), ("ntk", "ntk_plain")):
        agree(r[a], r[b])
    # the variance reduction is real
    off = np.triu_indices(2, 1)
    assert np.all(r.K.stderr[off] < r.K_plain.stderr[off] / 3)
    assert np.all(r.F.stderr < r.F_plain.stderr)


def test_symmetries_of_estimates():
    r = layer_statistics("tanh", X3, 2, 8, C_W=1.5, C_b=0.0, samples=400, seed=0, batches=4)
    B, F, V = r.B.value, r.F.value, r.V.value
    assert np.allclose(B, B.transpose(1, 0, 3, 2)) and np.allclose(B, B.transpose(2, 3, 0, 1))
    assert np.allclose(F, F.transpose(2, 3, 0, 1))
    assert np.allclose(V, V.transpose(1, 0, 2, 3)) and np.allclose(V, V.transpose(2, 3, 0, 1))
    assert np.allclose(symmetrise(V, "pp"), V)


def test_projected_and_dense_samplers_agree():
    kw = {"samples": 12_000, "batches": 20}
    p = layer_statistics("relu", X2, 2, 24, C_W=2.0, C_b=0.1, seed=1, sampler="projected", **kw)
    d = layer_statistics("relu", X2, 2, 24, C_W=2.0, C_b=0.1, seed=2, sampler="dense", **kw)
    for name in ("K", "ntk", "V", "A", "B", "D", "F"):
        diff = np.abs(p[name].value - d[name].value)
        assert np.all(diff <= 4 * np.hypot(p[name].stderr, d[name].stderr) + 1e-9), name


# ------------------------------------------------------------------------------- fits
def test_fit_recovers_a_known_expansion():
    """fit_widths on synthetic runs y = 1 + 2/n - 3/n^2 with errors: coefficients within their SEs."""
    from ntk_theory.montecarlo import Estimate, LayerStatistics

    rng = np.random.default_rng(0)
    runs = []
    for n in (8, 16, 32, 64, 128):
        se = 1e-3 / n
        mk = lambda v, s: Estimate("x", np.full((1, 1), v + s * rng.standard_normal()), np.full((1, 1), s))
        mk4 = lambda v, s: Estimate("x", np.full((1,) * 4, v + s * rng.standard_normal()), np.full((1,) * 4, s))
        est = {"K": mk(1 + 2 / n - 3 / n**2, se), "ntk": mk(5 - 1 / n, se), "V": mk4(7 + 4 / n, 0.01)}
        runs.append(LayerStatistics(est, X1, {"n": n, "samples": 1, "seconds": 0.0}))
    fit = fit_widths(runs)
    within(fit.K, [[1.0]])
    within(fit.K1, [[2.0]])
    within(fit.K2, [[-3.0]])
    within(fit.ntk1, [[-1.0]])
    within(fit.V, np.full((1,) * 4, 7.0))
    assert fit.dof["K"] == 2 and fit.chi2["K"][0, 0] < 20
    fixed = fit_widths(runs, infinite=(np.ones((1, 1)), 5 * np.ones((1, 1))))
    within(fixed.K1, [[2.0]])
    assert fixed.K1.stderr[0, 0] < fit.K1.stderr[0, 0]
    assert "Theta1" in fixed.z_score({"Theta1": [[-1.0]]}) or "ntk1" in fixed.z_score({"Theta1": [[-1.0]]})


def test_fit_intercepts_match_infinite_width_tanh_fast():
    fit = fit_inverse_width("tanh", X2, 2, (8, 16, 32), C_W=1.5, C_b=0.1, samples=6000, seed=4)
    inf = KernelRecursion("tanh", 2, C_W=1.5, C_b=0.1)(X2)
    within(fit.K, inf.nngp)
    within(fit.ntk, inf.ntk)
    assert "chi2" in fit.table()


# ------------------------------------------------------------------------------- slow
@pytest.mark.slow
def test_relu_critical_vertex_and_kernel_correction():
    """ReLU at criticality, depth 3 (readout l = 4): V -> 5 (l - 1) K^2 = 15 K^2 at one input; K1 = 0 on the
    diagonal; intercepts equal the infinite-width recursion within 4 SE."""
    fit = fit_inverse_width("relu", X2, 3, (16, 32, 64, 128), C_W=2.0, C_b=0.0, samples=20_000, seed=7)
    inf = KernelRecursion("relu", 3, C_W=2.0, C_b=0.0)(X2)
    within(fit.K, inf.nngp)
    within(fit.ntk, inf.ntk)
    within(fit.K1, fit.K1.value * (1 - np.eye(2)))  # zero on the diagonal
    K = inf.nngp[0, 0]
    assert abs(fit.V.value[0, 0, 0, 0] - 15 * K**2) < 4 * fit.V.stderr[0, 0, 0, 0]
    assert abs(fit.V.value[1, 1, 1, 1] - 15 * K**2) < 4 * fit.V.stderr[1, 1, 1, 1]


@pytest.mark.slow
def test_tanh_intercepts_match_recursion_and_errors_are_calibrated():
    inf = KernelRecursion("tanh", 3, C_W=1.0, C_b=0.0)(X3)
    fit = fit_inverse_width("tanh", X3, 3, (16, 32, 64, 128), C_W=1.0, C_b=0.0, samples=15_000, seed=8)
    within(fit.K, inf.nngp)
    within(fit.ntk, inf.ntk)
    # independent repeats scatter as their standard errors say (chi^2 of the K1 fits)
    chi = fit.chi2["K"][np.triu_indices(3)]
    assert np.mean(chi) < 4 * fit.dof["K"]


@pytest.mark.slow
def test_control_variate_errors_are_calibrated():
    """The control-variate estimator's jackknife SE matches the scatter of independent repeats."""
    vals, ses = [], []
    for seed in range(12):
        r = layer_statistics("relu", X2, 3, 16, C_W=2.0, C_b=0.0, samples=4000, seed=100 + seed)
        vals.append(r.K.value[0, 1])
        ses.append(r.K.stderr[0, 1])
    ratio = np.std(vals, ddof=1) / np.mean(ses)
    assert 0.6 < ratio < 1.6, ratio


def test_per_layer_widths_scale_by_last_width_and_aliases():
    """Per-layer widths: n is the last hidden width n_L; one hidden layer below a narrow one still gives
    the exact depth-2 Wishart structure for a linear network."""
    widths, C_W = (5, 9), 1.1
    r = layer_statistics("linear", X2, 2, widths, C_W=C_W, C_b=0.0, samples=20_000, seed=9)
    assert r.width == 9 and r.info["widths"][1:-1] == [5, 9]
    K1 = C_W * X2 @ X2.T / 3
    M = np.multiply.outer(K1, K1)
    for n in widths:
        M = C_W**2 * (M + (M.transpose(0, 2, 1, 3) + M.transpose(0, 2, 3, 1)) / n)
    K = C_W**2 * K1
    within(r.V, 9 * (M - np.multiply.outer(K, K)))
    z = r.z_score({"nngp": K, "Theta": KernelRecursion("linear", 2, C_W=C_W, C_b=0.0)(X2).ntk})
    assert set(z) == {"K", "ntk"} and r.max_abs_z(z) < 4
