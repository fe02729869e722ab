"""The infinite-width kernels of architecture descriptions (ntk_theory.recursions.graph.kernel, the code under test)
against the Monte Carlo of finite reference networks (ntk_theory.montecarlo.graph, the judge), extrapolated in 1/n by
ntk_theory.validation.check_architecture.

Per width n the network is ``with_width(description, n)`` and its kernel ``k_n`` (a FanInConcat's channel weights
and a 'standard' NTK depend on the widths).  The Monte Carlo E_n = k_n + c1/n + O(1/n^2) per entry; the check fits
y_n = (E_n - k_n) / s_n = c0 + c1/n by weighted least squares with the Monte Carlo standard errors
(ntk_theory.validation.fits.weighted_fit; s_n = sqrt(k_n,aa k_n,bb), which makes the 'standard' NTK, linear in n,
comparable across widths) and requires |c0| < 4 SE(c0) at every entry.  A NaN, zero or rounding-level standard error
fails.
"""

import numpy as np
import pytest

from ntk_theory import stax
from ntk_theory.montecarlo.graph import sample_kernels, with_width
from ntk_theory.recursions.graph import kernel
from ntk_theory.validation import SE_FLOOR, check_architecture, compare_entries, passes

X = np.array([[1.0, 0.3, -0.5], [0.2, -1.1, 0.4], [-0.7, 0.5, 0.9], [1.4, 1.0, 0.2]])
WIDTHS = (64, 128, 256)
C = {"W_std": 1.4, "b_std": 0.1}


def verdict(ys, ses, widths=WIDTHS, k=4.0):
    """Whether every entry of the relative deviations ``ys`` +- ``ses`` (one (N, N) array per width) extrapolates
    to |c0| < k SE(c0), by the check's own rule (predictions 1, so s_n = 1 and y_n = E_n - 1)."""
    ones = np.ones((len(widths), *np.shape(ys[0])))
    rows = compare_entries("y", widths, ones + np.stack(ys), np.stack(ses), ones)
    return all(passes(r.z, k) for r in rows)


def scaled(factor):
    """recursions.graph.kernel with both kernels multiplied by ``factor`` (an intentionally wrong prediction)."""
    def predict(description, X):
        exact = kernel(description, X)
        return type("Scaled", (), {"nngp": factor * exact.nngp, "ntk": factor * exact.ntk})()

    return predict


def check(description, samples, **kw):
    """Assert the verdict of check_architecture (kernel vs the 1/n-extrapolated Monte Carlo) at X and WIDTHS."""
    report = check_architecture(description, X, WIDTHS, samples, workers=2, progress=False, **kw)
    assert report.passed, report.table()
    return report


def test_verdict_fails_on_nan_or_zero_standard_errors():
    y = [np.full((2, 2), 1e-3)] * 3
    good = [np.full((2, 2), 1e-2)] * 3
    assert verdict(y, good)
    zero = [np.where(np.eye(2) > 0, 0.0, 1e-2)] * 3
    assert not verdict(y, zero)
    nan = [np.where(np.eye(2) > 0, np.nan, 1e-2)] * 3
    assert not verdict(y, nan)
    rounding = [np.where(np.eye(2) > 0, 1e-15, 1e-2)] * 3
    assert not verdict([np.zeros((2, 2))] * 3, rounding)
    assert SE_FLOOR >= 1e-15
    far = [np.full((2, 2), 1.0)] * 3
    assert not verdict(far, good)


def test_with_width_keeps_the_readout():
    net = stax.serial(stax.Dense(64, **C), stax.Relu(), stax.FanOut(2),
                      stax.parallel(stax.Dense(32, **C), stax.Identity()), stax.FanInConcat(), stax.Dense(3, **C))
    d = with_width(net.description, 7)
    assert repr(d) == repr(stax.serial(stax.Dense(7, **C), stax.Relu(), stax.FanOut(2),
                                       stax.parallel(stax.Dense(7, **C), stax.Identity()), stax.FanInConcat(),
                                       stax.Dense(3, **C)).description)


def test_linear_network_is_exact_at_every_width():
    # a deep linear network: E[f f] and E[Theta] have no finite-width correction (each weight matrix enters once,
    # E[W W^T] = C_W / n_in 1), so the Monte Carlo at width 16 must agree with the kernel within its errors
    d = stax.serial(stax.Dense(16, W_std=1.3, b_std=0.2), stax.Dense(16, W_std=0.9, b_std=0.1),
                    stax.Dense(1, W_std=1.1, b_std=0.3)).description
    exact = kernel(d, X)
    mc = sample_kernels(d, X, 4000, seed=3, workers=2)
    for name, ref in (("nngp", exact.nngp), ("output_second_moment", exact.nngp), ("ntk", exact.ntk)):
        z = mc[name].z_score(ref)
        assert np.all(np.abs(z) < 4), (name, z)


CASES = {
    "dense_ntk_erf": stax.serial(stax.Dense(64, W_std=1.3, b_std=0.2), stax.Erf(),
                                 stax.Dense(64, W_std=0.9, b_std=0.1), stax.Dense(1, W_std=1.1, b_std=0.3)),
    "dense_standard_relu": stax.serial(
        stax.Dense(64, W_std=1.3, b_std=0.2, parameterization="standard"), stax.Relu(),
        stax.Dense(64, W_std=1.4, b_std=0.1, parameterization="standard"), stax.Relu(),
        stax.Dense(1, W_std=1.1, b_std=0.3, parameterization="standard")),
    "activations_gelu_tanh": stax.serial(stax.Dense(64, W_std=1.5, b_std=0.1), stax.Gelu(),
                                         stax.Dense(64, W_std=1.2, b_std=0.2), stax.Tanh(), stax.Dense(1, **C)),
    "resblock": stax.serial(stax.Dense(64, **C), stax.FanOut(2),
                            stax.parallel(stax.serial(stax.Relu(), stax.Dense(64, **C)), stax.Identity()),
                            stax.FanInSum(), stax.Relu(), stax.Dense(1, **C)),
    "layernorm_after_dense": stax.serial(stax.Dense(64, **C), stax.LayerNorm(), stax.Relu(), stax.Dense(64, **C),
                                         stax.Erf(), stax.Dense(1, **C)),
    "concat": stax.serial(stax.Dense(64, **C), stax.Relu(), stax.FanOut(2),
                          stax.parallel(stax.Dense(64, **C), stax.serial(stax.Dense(32, W_std=1.2, b_std=0.3),
                                                                          stax.Erf(),
                                                                          stax.Dense(32, W_std=0.9, b_std=0.2))),
                          stax.FanInConcat(), stax.Dense(1, **C)),
    "concat_standard": stax.serial(stax.Dense(64, **C, parameterization="standard"), stax.Relu(), stax.FanOut(2),
                                   stax.parallel(stax.Dense(64, **C, parameterization="standard"), stax.Identity()),
                                   stax.FanInConcat(), stax.Dense(1, **C, parameterization="standard")),
    "two_preactivation_blocks": stax.serial(
        stax.Dense(64, **C),
        *[stax.FanOut(2), stax.parallel(stax.serial(stax.Relu(), stax.Dense(64, **C)), stax.Identity()),
          stax.FanInSum()] * 2,
        stax.Relu(), stax.Dense(1, **C)),
    # beyond neural-tangents 0.6.5 (NotImplementedError in its kernel_fn): LayerNorm of a sum of non-Gaussian
    # branches, and the second of the two networks the task names (the first is the LayerNorm test below)
    "layernorm_after_residual_sum": stax.serial(
        stax.Dense(64, **C), stax.Relu(), stax.FanOut(2),
        stax.parallel(stax.serial(stax.Dense(64, **C), stax.Relu()), stax.Identity()), stax.FanInSum(),
        stax.LayerNorm(), stax.Dense(1, **C)),
    "identity_after_relu": stax.serial(stax.Dense(64, **C), stax.Relu(), stax.FanOut(2),
                                       stax.parallel(stax.Dense(64, **C), stax.Identity()), stax.FanInSum(),
                                       stax.Dense(1, **C)),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_kernel_agrees_with_monte_carlo(name):
    # where the readout's input is a LayerNorm output ("layernorm_after_residual_sum") the Rao-Blackwellised
    # diagonal C_b + C_W |x|^2 / n is the same for every network; the check judges it by the plain mean of f_a^2
    report = check(CASES[name], 6000)
    plain = {r.entry for r in report.rows if r.quantity == "E[f f] plain"}
    assert plain == ({(a, a) for a in range(len(X))} if name == "layernorm_after_residual_sum" else set())


@pytest.mark.slow
def test_verdict_detects_a_two_percent_error():
    # the power of the check at these sample sizes: SE(c0) is 0.1-0.4% of the kernel's scale
    report = check_architecture(CASES["resblock"], X, WIDTHS, 6000, workers=2, progress=False, predict=scaled(1.02))
    assert not report.passed
    for quantity in ("E[f f]", "E[Theta]"):
        assert not all(passes(r.z, 4.0) for r in report.rows if r.quantity == quantity), quantity


@pytest.mark.slow
def test_layernorm_after_relu_agrees_with_monte_carlo():
    # neural-tangents refuses LayerNorm of a non-Gaussian value; the readout's input is normalised, so the NNGP
    # diagonal is judged by the outputs themselves (check_architecture switches to the plain mean of f_a^2)
    net = stax.serial(stax.Dense(64, **C), stax.Relu(), stax.LayerNorm(), stax.Dense(1, **C))
    report = check(net, 8000, seed=1)
    assert {r.entry for r in report.rows if r.quantity == "E[f f] plain"} == {(a, a) for a in range(len(X))}


def test_projected_and_dense_samplers_agree():
    # the projected sampler draws each weight matrix only along the directions the passes use; the dense one is the
    # literal network: their estimates must agree within the combined standard errors
    d = with_width(CASES["identity_after_relu"].description, 24)
    a = sample_kernels(d, X, 3000, seed=5, sampler="projected", workers=2)
    b = sample_kernels(d, X, 3000, seed=6, sampler="dense", workers=2)
    for name in ("nngp", "output_second_moment", "ntk"):
        z = (a[name].value - b[name].value) / np.hypot(a[name].stderr, b[name].stderr)
        assert np.all(np.abs(z) < 4), (name, z)


def test_montecarlo_graph_loads_no_symbolic_module():
    import subprocess
    import sys

    code = ("import sys, ntk_theory.montecarlo.graph; "
            "print(sorted(m for m in sys.modules if m.split('.')[1:2] and m.split('.')[1] in "
            "('gaussian', 'recursions', 'codegen', 'finite_width')))")
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def test_bad_input_is_named():
    d = CASES["resblock"].description
    with pytest.raises(ValueError, match="batches"):
        sample_kernels(d, X, 100, batches=1)
    with pytest.raises(ValueError, match="width n"):
        with_width(d, 0)
    with pytest.raises(ValueError, match="architecture description"):
        sample_kernels("serial(Dense(1))", X, 100)


# ---------------------------------------------------------------------- convolutional descriptions
# The judge: the NNGP and NTK of 1-D CNNs written out by hand (loops over positions, arc-cosine formulas per
# position pair).  With ReLU only right after the first Conv (whose outputs are exactly Gaussian at any width) and
# linear layers elsewhere, E[f f'] and E[Theta] of the finite network equal these kernels at every width, so the
# Monte Carlo must agree within its standard errors.
XS = np.random.default_rng(17).standard_normal((3, 5, 2))  # (N, W, C)


def _conv_cov(K, k, stride, padding, C_W, C_b):
    """E[z_(a,p) z_(b,q)] after a Conv (ntk parameterization) whose inputs have per-channel covariance K (N, P, N, P):
    C_b + C_W / k sum_j K[a, p s + j - lo, b, q s + j - lo] (zeros outside the image for 'SAME', periodic for
    'CIRCULAR')."""
    N, P = K.shape[:2]
    out = (P - k) // stride + 1 if padding == "VALID" else -(-P // stride)
    lo = 0 if padding == "VALID" else max((out - 1) * stride + k - P, 0) // 2

    def at(i):
        if padding == "CIRCULAR":
            return i % P
        return i if 0 <= i < P else None

    new = np.full((N, out, N, out), float(C_b))
    for p in range(out):
        for q in range(out):
            for j in range(k):
                i1, i2 = at(p * stride + j - lo), at(q * stride + j - lo)
                if i1 is not None and i2 is not None:
                    new[:, p, :, q] += C_W / k * K[:, i1, :, i2]
    return new


def _avg_pool(K, window):
    """Per-channel covariance after a 'VALID' AvgPool(window) of stride 1."""
    P = K.shape[1]
    A = np.zeros((P - window + 1, P))
    for p in range(P - window + 1):
        A[p, p:p + window] = 1.0 / window
    return np.einsum("pi,aibj,qj->apbq", A, K, A)


def _relu(K):
    """(E[relu(u) relu(v)], E[relu'(u) relu'(v)]) position-wise (arc-cosine kernels of degree 1 and 0)."""
    d = np.einsum("apap->ap", K)
    norm = np.sqrt(np.einsum("ap,bq->apbq", d, d))
    theta = np.arccos(np.clip(K / norm, -1, 1))
    return norm / (2 * np.pi) * (np.sin(theta) + (np.pi - theta) * np.cos(theta)), (np.pi - theta) / (2 * np.pi)


def _inputs_cov(X):
    return np.einsum("api,bqi->apbq", X, X) / X.shape[-1]


def test_cnn_relu_monte_carlo_matches_hand_kernel():
    # Conv(SAME, stride 2) -> Relu -> GlobalAvgPool -> Dense: NNGP C_b + C_W mean_(p,q) E[relu relu], NTK that plus
    # C_W mean_(p,q) E[relu' relu'] Theta_1 with Theta_1 = K_1 (the first layer's NTK in 'ntk' parameterization)
    d = stax.serial(stax.Conv(6, (3,), strides=(2,), padding="SAME", W_std=1.3, b_std=0.2), stax.Relu(),
                    stax.GlobalAvgPool(), stax.Dense(1, W_std=1.1, b_std=0.3)).description
    K1 = _conv_cov(_inputs_cov(XS), 3, 2, "SAME", 1.3**2, 0.2**2)
    R, Rdot = _relu(K1)
    nngp = 0.3**2 + 1.1**2 * R.mean(axis=(1, 3))
    ntk = nngp + 1.1**2 * (Rdot * K1).mean(axis=(1, 3))
    mc = sample_kernels(with_width(d, 32), XS, 40000, seed=1, workers=2)
    for name, ref in (("nngp", nngp), ("output_second_moment", nngp), ("ntk", ntk)):
        z = mc[name].z_score(ref)
        assert np.all(np.abs(z) < 4), (name, z)
    # the judge is sharp: a 2% error in either kernel is seen
    assert np.any(np.abs(mc["ntk"].z_score(1.02 * ntk)) > 4)
    assert np.any(np.abs(mc["nngp"].z_score(1.02 * nngp)) > 4)


@pytest.mark.slow
def test_deeper_cnn_monte_carlo_matches_hand_kernel():
    # Conv(CIRCULAR) -> Relu -> AvgPool(2) -> Conv(VALID, stride 2) -> Dense per position -> Flatten -> Dense(2),
    # both samplers; linear after the ReLU, so exact at width 8
    d = stax.serial(stax.Conv(8, (3,), padding="CIRCULAR", W_std=1.2, b_std=0.1), stax.Relu(), stax.AvgPool((2,)),
                    stax.Conv(8, (2,), strides=(2,), W_std=0.9, b_std=0.3), stax.Dense(8, W_std=1.1, b_std=0.2),
                    stax.Flatten(), stax.Dense(2, W_std=1.4, b_std=0.1)).description
    K1 = _conv_cov(_inputs_cov(XS), 3, 1, "CIRCULAR", 1.2**2, 0.1**2)
    R, Rdot = _relu(K1)
    K, T = _avg_pool(R, 2), _avg_pool(Rdot * K1, 2)
    K2 = _conv_cov(K, 2, 2, "VALID", 0.9**2, 0.3**2)
    T = K2 + _conv_cov(T, 2, 2, "VALID", 0.9**2, 0.0)
    K3 = _conv_cov(K2, 1, 1, "VALID", 1.1**2, 0.2**2)
    T = K3 + _conv_cov(T, 1, 1, "VALID", 1.1**2, 0.0)
    nngp = 0.1**2 + 1.4**2 * np.einsum("apbp->ab", K3) / K3.shape[1]
    ntk = nngp + 1.4**2 * np.einsum("apbp->ab", T) / T.shape[1]
    for sampler, seed in (("projected", 2), ("dense", 3)):
        mc = sample_kernels(d, XS, 40000, seed=seed, sampler=sampler, workers=2)
        for name, ref in (("nngp", nngp), ("output_second_moment", nngp), ("ntk", ntk)):
            z = mc[name].z_score(ref)
            assert np.all(np.abs(z) < 4), (sampler, name, z)
            if name != "output_second_moment":  # the Rao-Blackwellised NNGP and the NTK are sharp to 2%
                assert np.any(np.abs(mc[name].z_score(1.02 * ref)) > 4), (sampler, name)


def test_with_width_sets_conv_channels():
    d = stax.serial(stax.Conv(5, (3,)), stax.Relu(), stax.Conv(4, (2,)), stax.Flatten(), stax.Dense(3),
                    stax.Relu(), stax.Dense(2)).description
    assert repr(with_width(d, 9)) == repr(stax.serial(stax.Conv(9, (3,)), stax.Relu(), stax.Conv(9, (2,)),
                                                      stax.Flatten(), stax.Dense(9), stax.Relu(),
                                                      stax.Dense(2)).description)
    ends_with_conv = stax.serial(stax.Conv(5, (3,)), stax.Relu(), stax.Conv(4, (2,))).description
    assert repr(with_width(ends_with_conv, 9)) == repr(stax.serial(stax.Conv(9, (3,)), stax.Relu(),
                                                                   stax.Conv(4, (2,))).description)
    # spatial outputs are estimated per position pair (judged in tests/test_montecarlo_spatial_outputs.py)
    assert sample_kernels(ends_with_conv, XS, 64, batches=2, progress=False).estimates["ntk"].value.shape == (3, 3, 2, 2)


@pytest.mark.slow
def test_cnn_kernel_agrees_with_monte_carlo():
    # recursions.graph's CNN-GP / CNTK: (a) where the finite network is exact at every width, equal to the
    # hand-written kernel; (b) two ReLU convolutions (1/n corrections): the Monte Carlo at widths 32, 64, 128
    # extrapolates to the kernel (|c0| < 4 SE(c0) per entry, both kernels)
    d = stax.serial(stax.Conv(8, (3,), padding="CIRCULAR", W_std=1.2, b_std=0.1), stax.Relu(), stax.AvgPool((2,)),
                    stax.Conv(8, (2,), strides=(2,), W_std=0.9, b_std=0.3), stax.Flatten(),
                    stax.Dense(2, W_std=1.4, b_std=0.1)).description
    K1 = _conv_cov(_inputs_cov(XS), 3, 1, "CIRCULAR", 1.2**2, 0.1**2)
    R, Rdot = _relu(K1)
    K, T = _avg_pool(R, 2), _avg_pool(Rdot * K1, 2)
    K2 = _conv_cov(K, 2, 2, "VALID", 0.9**2, 0.3**2)
    T = K2 + _conv_cov(T, 2, 2, "VALID", 0.9**2, 0.0)
    nngp = 0.1**2 + 1.4**2 * np.einsum("apbp->ab", K2) / K2.shape[1]
    ntk = nngp + 1.4**2 * np.einsum("apbp->ab", T) / T.shape[1]
    exact = kernel(d, XS)
    np.testing.assert_allclose(exact.nngp, nngp, rtol=1e-12)
    np.testing.assert_allclose(exact.ntk, ntk, rtol=1e-12)

    d = stax.serial(stax.Conv(8, (3,), padding="SAME", W_std=1.4, b_std=0.1), stax.Relu(),
                    stax.Conv(8, (3,), strides=(2,), padding="CIRCULAR", **C), stax.Relu(), stax.AvgPool((2,)),
                    stax.Flatten(), stax.Dense(1, **C)).description
    widths = (32, 64, 128)
    ref = kernel(d, XS)
    ys = {"nngp": [], "ntk": []}
    ses = {"nngp": [], "ntk": []}
    for n in widths:
        mc = sample_kernels(with_width(d, n), XS, 6000, seed=n, workers=2)
        for name in ys:
            k = getattr(ref, name)
            ys[name].append(mc[name].value / k - 1)
            ses[name].append(mc[name].stderr / k)
    for name in ys:
        assert verdict(ys[name], ses[name], widths), name
    assert not verdict([y - 0.02 for y in ys["ntk"]], ses["ntk"], widths)  # a 2% error is seen
