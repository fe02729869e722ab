"""Infinite-width recursions: exact facts, the NTK diagonal, depth and near-parallel inputs, bad input."""

import numpy as np
import pytest

from ntk_theory.activations import DivergentExpectation, activation
from ntk_theory.recursions import KernelRecursion, kernel


def _mp_to_np(m):
    return np.array(m.tolist(), dtype=float)


@pytest.fixture(scope="module")
def relu3():
    return KernelRecursion("relu", 3, C_W=2.0, C_b=0.0)


def test_relu_critical_diagonal_is_exact(relu3):
    """ReLU at C_W = 2, C_b = 0 keeps K(l) = 2 G0 and Theta(L+1) = (L+1) K on the diagonal, exactly
    (derived by hand: E[relu(u)^2] = K/2, E[step(u)^2] = 1/2)."""
    X = np.random.default_rng(0).standard_normal((6, 5))
    G0 = np.einsum("ij,ij->i", X, X) / 5
    res = relu3(X)
    assert np.allclose(np.diag(res.nngp), 2 * G0, rtol=2e-16, atol=0)
    assert np.allclose(np.diag(res.ntk), 4 * 2 * G0, rtol=4e-16, atol=0)
    # rows of X2 equal to rows of X1 get the same exact value (no angle ~1e-8 from rounding)
    res2 = relu3(X, X[::-1])
    assert np.allclose(np.diag(res2.ntk[:, ::-1]), 4 * 2 * G0, rtol=4e-16, atol=0)


def test_naive_angle_would_lose_digits_on_the_diagonal():
    """The reason for the exact diagonal: arccos of the rounded cosine is ~1e-8, not 0."""
    x = np.array([0.3, -1.7, 2.2, 0.9, -0.4])
    g = x @ x
    rho = g / np.sqrt(g * g)  # rounding can make this 1 - eps
    naive = np.arccos(np.nextafter(1.0, 0.0))  # what one ulp of rounding gives
    assert naive > 1e-8 and rho <= 1.0


@pytest.mark.numerics
@pytest.mark.parametrize("act", ["relu", "erf", "gelu", "relu_power(2)", "abs", "sin", "x*erf(x)"])
def test_float64_equals_mpmath(act):
    """Numerics: the same closed forms in float64 and 40-digit mpmath; forms checked against
    independent quadrature in test_closed_forms.py and test_one_input_moments.py."""
    rng = np.random.default_rng(1)
    X1, X2 = rng.standard_normal((4, 3)), rng.standard_normal((3, 3))
    rec = KernelRecursion(act, 3, C_W=1.4, C_b=0.1)
    f64 = rec(X1, X2)
    mp = rec.evaluate_mp(X1, X2, dps=40)
    for q in ("nngp", "ntk"):
        ref = _mp_to_np(getattr(mp, q))
        assert np.allclose(getattr(f64, q), ref, rtol=1e-13, atol=1e-14 * np.abs(ref).max()), q


@pytest.mark.numerics
def test_depth_1000_stays_finite_and_exact():
    """The NTK diagonal against the exact (L + 1) C_W G0; off the diagonal numerics: the same forms in
    float64 and 40-digit mpmath; the forms are checked against
    independent quadrature in test_closed_forms.py and test_one_input_moments.py."""
    X = np.array([[1.0, 0.0], [0.6, 0.8], [-0.3, 0.2]])
    res = KernelRecursion("relu", 1000, C_W=2.0, C_b=0.0)(X)
    assert np.all(np.isfinite(res.nngp)) and np.all(np.isfinite(res.ntk))
    G0 = np.einsum("ij,ij->i", X, X) / 2
    assert np.allclose(np.diag(res.ntk), 1001 * 2 * G0, rtol=1e-13)
    # correlations approach 1 but never exceed it
    rho = res.nngp / np.sqrt(np.outer(np.diag(res.nngp), np.diag(res.nngp)))
    assert np.all(rho <= 1.0 + 1e-15) and rho[0, 1] > 0.999
    # the same 1000 layers in mpmath (40 digits): no drift
    mp = KernelRecursion("relu", 1000, C_W=2.0, C_b=0.0).evaluate_mp(X[:2], dps=40)
    assert np.allclose(res.ntk[:2, :2], _mp_to_np(mp.ntk), rtol=1e-11)
    erf = KernelRecursion("erf", 1000, C_W=1.0, C_b=0.0)(X)
    assert np.all(np.isfinite(erf.ntk)) and np.all(np.diag(erf.nngp) > 0)


def test_near_parallel_inputs_stay_finite():
    x = np.array([0.3, 1.1, -0.7])
    X = np.stack([x, x + 1e-12, x * (1 + 1e-15), -x])
    for act in ("relu", "erf", "gelu", "abs"):
        res = KernelRecursion(act, 5, C_W=1.8, C_b=0.05)(X)
        assert np.all(np.isfinite(res.nngp)) and np.all(np.isfinite(res.ntk)), act
        assert np.allclose(res.ntk, res.ntk.T, rtol=1e-14)
        # a perturbation of 1e-12 moves the kernel by about that much, not by sqrt(eps)
        assert abs(res.nngp[0, 1] - res.nngp[0, 0]) < 1e-9 * res.nngp[0, 0], act


def test_standard_parameterization_needs_widths():
    with pytest.raises(ValueError, match="give the hidden widths"):
        KernelRecursion("relu", 2, param="standard")
    X = np.eye(3)
    small = kernel(X, None, "relu", 2, C_W=2.0, C_b=0.0, param="standard", widths=10).ntk
    large = kernel(X, None, "relu", 2, C_W=2.0, C_b=0.0, param="standard", widths=1000).ntk
    assert np.all(large > small)  # the standard NTK grows with width


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: activation("nonsense_fn"), "unknown activation 'nonsense_fn'"),
        (lambda: activation("x +* 2"), "cannot parse activation"),
        (lambda: activation("exp(x**2)"), "diverge"),
        (lambda: activation("1/x"), "singular at real points"),
        (lambda: kernel(np.array([[np.nan, 1.0]]), None, "relu", 2), "non-finite"),
        (lambda: kernel(np.ones((2, 2)), np.ones((2, 3)), "relu", 2), r"X2 has inputs of shape \(3,\), X1 of shape \(2,\)"),
        (lambda: kernel(np.ones((2, 2)), None, "relu", 0), "depth must be an integer >= 1"),
        (lambda: kernel(np.ones((2, 2)), None, "relu", 2, C_W=-1.0), "C_W must be a finite number >= 0"),
        (lambda: kernel(np.ones((2, 2)), None, "relu", 2, param="mup"), "unknown param"),
        (lambda: KernelRecursion(["relu", "tanh"], 3), "got 2 activations for depth 3"),
    ],
)
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_exploding_variance_is_reported():
    with pytest.raises(FloatingPointError, match="overflowed"):
        kernel(np.ones((2, 2)) * 3, None, "exp", 30, C_W=4.0)


def test_step_network_ntk_uses_the_almost_everywhere_derivative():
    """Backprop through a step gives 0: the NTK has no contribution from layers before it, so the
    diagonal is finite (neural-tangents agrees); the distributional E[delta(u)^2] would diverge."""
    X = np.array([[1.0, 0.0], [0.0, 1.0]])
    res = kernel(X, None, "step", 2, C_W=1.0, C_b=0.0)
    assert np.allclose(np.diag(res.ntk), np.diag(res.nngp))  # only the readout layer contributes
    from ntk_theory.gaussian import expectation

    with pytest.raises(DivergentExpectation):
        _ = expectation("step", derivative=1).diagonal
