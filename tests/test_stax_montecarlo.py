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
