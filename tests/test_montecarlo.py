"""Monte Carlo estimates against exact finite-width results, within 4 standard errors."""

import numpy as np
import pytest

from ntk_theory.montecarlo import MonteCarloResult, sample_statistics

SIGMAS = 4.0


def deep_linear_exact(X, depth, width, C_W, C_b, lambdas):
    """Exact finite-width moments of a deep linear network (products of Gaussian matrices, PDLT ch. 3).

    Given layer l-1, the n_l preactivations z(l)_i are iid Gaussian with covariance
    H = C_b + C_W Ghat(l-1), Ghat(l) = z(l) z(l)^T / n_l, Ghat(0) = G0 = X X^T / n_0.  Wick's theorem
    then gives, exactly,
        E[Ghat_ab Ghat_cd | prev] = H_ab H_cd + (H_ac H_bd + H_ad H_bc) / n_l,
    a closed linear recursion for m = E[Ghat] and M = E[Ghat (x) Ghat].  The scalar output has
    E[f_a f_b] = E[H_ab] and E[f_a f_b f_c f_d] = E[H_ab H_cd + H_ac H_bd + H_ad H_bc].
    The mean NTK obeys E[Theta(l+1)] = lambda_b + lambda_W m(l) + C_W E[Theta(l)] with no correction.
    """
    G0 = X @ X.T / X.shape[1]
    m, M = G0, np.einsum("ab,cd->abcd", G0, G0)

    def EHH(m, M):
        return C_b**2 + C_b * C_W * (m[:, :, None, None] + m[None, None, :, :]) + C_W**2 * M

    def pair_sum(T):
        return T + np.einsum("acbd->abcd", T) + np.einsum("adbc->abcd", T)

    theta = lambdas[0][0] + lambdas[0][1] * G0
    for l in range(1, depth + 1):
        E = EHH(m, M)
        M = E + (np.einsum("acbd->abcd", E) + np.einsum("adbc->abcd", E)) / width
        m = C_b + C_W * m
        lam_b, lam_W = lambdas[l]
        theta = lam_b + lam_W * m + C_W * theta
    second = C_b + C_W * m
    fourth = pair_sum(EHH(m, M))
    cumulant = fourth - pair_sum(np.einsum("ab,cd->abcd", second, second))
    return second, cumulant, theta


@pytest.fixture(scope="module")
def linear_run():
    rng = np.random.default_rng(11)
    X = rng.standard_normal((3, 4))
    args = {"depth": 3, "width": 8, "C_W": 1.2, "C_b": 0.3, "param": "ntk"}
    result = sample_statistics(X, "linear", samples=400_000, seed=1, **args)
    return X, args, result


def test_deep_linear_second_and_fourth_moments(linear_run):
    X, args, result = linear_run
    lambdas = [(args["C_b"], args["C_W"])] * (args["depth"] + 1)
    second, cumulant, theta = deep_linear_exact(X, args["depth"], args["width"], args["C_W"], args["C_b"], lambdas)
    # the finite-width cumulant is large here (widths 8): a real test of the 1/n structure
    assert np.abs(cumulant).max() > 0.5 * np.abs(second).max() ** 2
    assert np.abs(result["output_second_moment"].z_score(second)).max() < SIGMAS
    assert np.abs(result["output_cumulant"].z_score(cumulant)).max() < SIGMAS
    assert np.abs(result["ntk_mean"].z_score(theta)).max() < SIGMAS


def test_deep_linear_single_input_matches_pdlt_formula():
    """One input, C_b = 0: E[z^4] - 3 E[z^2]^2 = 3 K^2 [(1 + 2/n)^L - 1] at the output (PDLT ch. 3)."""
    X = np.array([[1.0, -2.0, 0.5]])
    depth, width, C_W = 4, 6, 1.0
    result = sample_statistics(X, "linear", depth=depth, width=width, C_W=C_W, C_b=0.0, samples=400_000, seed=2)
    K = C_W ** (depth + 1) * (X @ X.T)[0, 0] / 3
    expected = 3 * K**2 * ((1 + 2 / width) ** depth - 1)
    assert abs(result["output_cumulant"].z_score(expected).item()) < SIGMAS
    assert abs(result["output_second_moment"].z_score(K).item()) < SIGMAS


def relu_critical_ntk_by_hand(G0, depth, width, param):
    """ReLU, C_W = 2, C_b = 0: E[s^2] = K/2, E[s'^2] = 1/2, K(l) = 2 G0 for all l, hence
    Theta(l+1) = lambda_b + lambda_W G0 + Theta(l), Theta(1) = lambda_b + lambda_W G0, where
    (lambda_b, lambda_W) = (0, 2) for 'ntk', (1, 1) for 'unit', (1, n_(l-1)) for 'standard'."""
    if param == "ntk":
        return (depth + 1) * 2 * G0
    if param == "unit":
        return (depth + 1) * (1 + G0)
    n0 = 3
    return (1 + n0 * G0) + depth * (1 + width * G0)


@pytest.mark.parametrize("param", ["ntk", "unit", "standard"])
def test_relu_critical_mean_ntk_approaches_infinite_width(param):
    X = np.array([[0.3, -1.1, 0.8]])
    G0 = (X @ X.T)[0, 0] / 3
    depth, width = 3, 512
    result = sample_statistics(X, "relu", depth=depth, width=width, C_W=2.0, C_b=0.0, param=param, samples=20_000, seed=3)
    expected = relu_critical_ntk_by_hand(G0, depth, width, param)
    est = result["ntk_mean"]
    assert abs(est.z_score(expected).item()) < SIGMAS
    assert est.stderr.item() < 2e-3 * expected  # the test has teeth


@pytest.fixture(scope="module")
def tanh_runs():
    X = np.array([[1.0, 0.2], [-0.4, 1.3], [0.9, 0.9]])
    args = {"depth": 2, "width": 12, "C_W": 1.5, "C_b": 0.05, "param": "unit", "samples": 60_000}
    dense = sample_statistics(X, "tanh", sampler="dense", seed=4, **args)
    projected = sample_statistics(X, "tanh", sampler="projected", seed=5, **args)
    return dense, projected


def test_projected_sampler_agrees_with_dense_networks(tanh_runs):
    """The projected sampler is exact in distribution: every estimate agrees with literal networks."""
    dense, projected = tanh_runs
    for name in dense.estimates:
        d, p = dense[name], projected[name]
        z = (d.value - p.value) / np.sqrt(d.stderr**2 + p.stderr**2)
        assert np.abs(z).max() < 4.5, name  # max over up to 81 correlated entries


def test_standard_errors_are_calibrated():
    """The jackknife standard error matches the spread of estimates over independent seeds."""
    X = np.array([[1.0, 0.0], [0.5, 0.5]])
    runs = [
        sample_statistics(X, "tanh", depth=2, width=6, C_W=1.3, C_b=0.1, samples=4_000, seed=100 + k, batches=16)
        for k in range(24)
    ]
    for name in ("ntk_mean", "ntk_covariance", "output_cumulant"):
        values = np.stack([r[name].value.ravel() for r in runs])
        reported = np.mean([r[name].stderr.ravel() for r in runs], axis=0)
        ratio = values.std(axis=0, ddof=1) / reported
        # 24 replicas: the sample std itself fluctuates by ~15%
        assert 0.6 < np.median(ratio) < 1.5, (name, ratio)


def test_reproducible_and_independent_of_threads(tmp_path):
    X = np.array([[1.0, 2.0], [0.0, 1.0]])
    a = sample_statistics(X, "erf", depth=2, width=16, samples=3_000, seed=9, workers=1)
    b = sample_statistics(X, "erf", depth=2, width=16, samples=3_000, seed=9, workers=2)
    c = sample_statistics(X, "erf", depth=2, width=16, samples=3_000, seed=10, workers=2)
    for name in a.estimates:
        assert np.array_equal(a[name].value, b[name].value)
        assert np.array_equal(a[name].stderr, b[name].stderr)
    assert not np.array_equal(a["ntk_mean"].value, c["ntk_mean"].value)
    for suffix in (".npz", ".json"):
        path = a.save(tmp_path / f"stats{suffix}")
        back = MonteCarloResult.load(path)
        assert back.info == a.info
        for name in a.estimates:
            assert np.allclose(back[name].value, a[name].value, rtol=1e-15, atol=0)
            assert np.allclose(back[name].stderr, a[name].stderr, rtol=1e-15, atol=0)
    assert "ntk_mean" in a.table() and "+-" in a.table()


def test_large_input_sets_skip_fourth_order():
    X = np.random.default_rng(0).standard_normal((20, 3))
    r = sample_statistics(X, "relu", depth=1, width=8, samples=200, batches=4)
    assert set(r.estimates) == {"output_second_moment", "ntk_mean", "kernel_mean"}
    assert r["ntk_mean"].value.shape == (20, 20)


@pytest.mark.slow
@pytest.mark.parametrize("param", ["ntk", "unit"])
def test_deep_linear_many_inputs_slow(param):
    rng = np.random.default_rng(12)
    X = rng.standard_normal((4, 5))
    depth, width, C_W, C_b = 5, 10, 0.9, 0.2
    result = sample_statistics(X, "linear", depth=depth, width=width, C_W=C_W, C_b=C_b, param=param, samples=2_000_000, seed=13)
    lambdas = [(C_b, C_W) if param == "ntk" else (1.0, 1.0)] * (depth + 1)
    second, cumulant, theta = deep_linear_exact(X, depth, width, C_W, C_b, lambdas)
    assert np.abs(result["output_second_moment"].z_score(second)).max() < SIGMAS
    assert np.abs(result["output_cumulant"].z_score(cumulant)).max() < SIGMAS
    assert np.abs(result["ntk_mean"].z_score(theta)).max() < SIGMAS
