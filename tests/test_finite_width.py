"""Finite-width recursions: exact facts (PDLT), one input vs N-input tensors, symmetries, bad input.
The statistical comparison with the reference network's Monte Carlo is in
tests/test_finite_width_vs_montecarlo.py."""

import numpy as np
import pytest
import sympy as sp

from ntk_theory.finite_width import FiniteWidthRecursion, finite_width

X2 = np.array([[0.8, -0.5, 1.1], [0.3, 0.9, -0.4]])


def test_relu_critical_vertex_grows_as_5_l_minus_1_and_no_diagonal_corrections():
    """PDLT eq. (5.x): ReLU at criticality C_W = 2, C_b = 0 has V(l) = 5 (l - 1) K^2, no 1/n correction
    of the kernel (scale invariance), and none of the NTK diagonal either."""
    rec = FiniteWidthRecursion("relu", 6, C_W=2.0, C_b=0.0, param="unit")
    G0 = sp.Symbol("G_0", positive=True)
    for l, st in enumerate(rec.symbolic(G0), start=1):
        assert sp.simplify(st.K - 2 * G0) == 0
        assert sp.simplify(st.V - 5 * (l - 1) * st.K**2) == 0
        assert st.K1 == 0 and st.Th1 == 0


def test_deep_linear_cumulant_matches_exact_finite_width_moments():
    """PDLT ch. 3: deep linear networks (C_W = 1, C_b = 0) have E[z^4] - 3 E[z^2]^2 = 3 K^2 [(1 + 2/n)^(l-1) - 1]
    exactly; its 1/n coefficient 6 (l - 1) K^2 must equal 3 V(l)."""
    rec = FiniteWidthRecursion("linear", 5, C_W=1.0, C_b=0.0, param="unit")
    n, G0 = sp.Symbol("n", positive=True), sp.Symbol("G_0", positive=True)
    for l, st in enumerate(rec.symbolic(G0), start=1):
        exact = 3 * st.K**2 * ((1 + 2 / n) ** (l - 1) - 1)
        first_order = sp.limit(exact * n, n, sp.oo)
        assert sp.simplify(3 * st.V - first_order) == 0
        assert st.K1 == 0


def test_one_hidden_layer_has_only_width_independent_means():
    """With one hidden layer the first layer is exactly Gaussian: E[f f] and E[Theta] have no 1/n terms,
    while the output's fluctuations are 1/n (V(2) = C_W^2 Var(s^2) > 0)."""
    st = FiniteWidthRecursion("tanh", 1, C_W=1.5, C_b=0.1).one_input(G0=0.7)[-1]
    assert st.K1 == 0 and st.Th1 == 0 and st.V > 0 and st.A > 0


@pytest.fixture(scope="module")
def tanh_states():
    rec = FiniteWidthRecursion("tanh", 3, C_W=1.5, C_b=0.1, param="ntk")
    x = X2[:1]
    return rec.one_input(x), rec.tensors(x)


@pytest.mark.parametrize("name", ["K", "Th", "V", "K1", "A", "B", "D", "F", "Th1"])
def test_tensor_recursion_with_one_input_equals_scalar_recursion(tanh_states, name):
    """Two independent code paths (scalar formulas, einsum tensors over ordered pairs)."""
    scalar, tensor = tanh_states
    for s, t in zip(scalar, tensor):
        assert abs(float(np.ravel(getattr(t, name))[0]) - getattr(s, name)) <= 1e-12 * (1 + abs(getattr(s, name)))


@pytest.fixture(scope="module")
def relu_two_inputs():
    return finite_width("relu", X2, 3, C_W=2.0, C_b=0.05, param="ntk")


def test_symmetries(relu_two_inputs):
    p = relu_two_inputs
    for T in (p.V, p.A):
        np.testing.assert_allclose(T, T.transpose(1, 0, 2, 3), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(T, T.transpose(2, 3, 0, 1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(p.output_cumulant, p.output_cumulant.transpose(1, 0, 2, 3), atol=1e-12)
    np.testing.assert_allclose(p.output_cumulant, p.output_cumulant.transpose(0, 2, 1, 3), atol=1e-12)
    np.testing.assert_allclose(p.nngp_correction, p.nngp_correction.T, atol=1e-13)


def test_duplicate_inputs_are_index_copies(relu_two_inputs):
    X = np.vstack([X2, X2[:1]])
    p3 = finite_width("relu", X, 3, C_W=2.0, C_b=0.05, param="ntk")
    idx = [0, 1, 0]
    np.testing.assert_allclose(p3.V, relu_two_inputs.V[np.ix_(idx, idx, idx, idx)], rtol=1e-12)
    np.testing.assert_allclose(p3.ntk_correction, relu_two_inputs.ntk_correction[np.ix_(idx, idx)], rtol=1e-12)


def test_at_width_and_save(relu_two_inputs, tmp_path):
    at = relu_two_inputs.at_width(100)
    np.testing.assert_allclose(at["ntk_mean"], relu_two_inputs.ntk + relu_two_inputs.ntk_correction / 100)
    relu_two_inputs.save(tmp_path / "p.npz")
    with np.load(tmp_path / "p.npz") as d:
        assert d["ntk_covariance"].shape == (2, 2, 2, 2)
    assert "ntk_correction" in repr(relu_two_inputs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(param="standard"), "param='standard'"),
    (dict(depth=0), "depth"),
    (dict(C_W=-1.0), "C_W"),
])
def test_bad_input(kwargs, message):
    args = dict(activation="relu", X=X2, depth=2, C_W=2.0, C_b=0.0, param="ntk") | kwargs
    with pytest.raises(ValueError, match=message):
        finite_width(**args)


def test_bad_inputs_X():
    with pytest.raises(ValueError, match="finite"):
        finite_width("relu", np.array([[np.nan, 1.0]]), 2)
    with pytest.raises(ValueError):
        finite_width("no_such_activation", X2, 2)


def test_numerical_pair_derivatives_against_quadrature():
    """tanh (no closed form): the covariance derivatives of <s s> and <s' s'> come from Mehler series on
    NumPy Hermite tables (degree 256; 1024 at (4, 4, 3.96); the compiled 2-D quadrature at
    (9, 9, 8.955) for the derivatives no 1024 terms resolve); each equals an independent tanh-sinh quadrature (numerics.quadrature.expect2) of the derivative
    product it stands for (Price: dT/dk11 = <s'' s>/2, dT/dk12 = <s' s'>, d2T/dk11^2 = <s'''' s>/4, ...)."""
    from ntk_theory.activations import activation, x
    from ntk_theory.activations import lambdify_numpy
    from ntk_theory.finite_width.twopoint import TwoPoint
    from ntk_theory.numerics.quadrature import expect2

    a = activation("tanh")
    for which, base in (("ss", a.expr), ("dd", a.derivative())):
        tp = TwoPoint(a, which)
        fs = [lambdify_numpy(sp.diff(base, x, n)) for n in range(5)]
        for k11, k22, k12 in [(1.3, 0.8, -0.35), (2.0, 2.1, 2.0), (0.5, 3.0, 0.1), (4.0, 0.2, 0.85),
                               (4.0, 4.0, 3.96), (9.0, 9.0, 8.955)]:
            pd = tp.pairs(np.array([k11]), np.array([k22]), np.array([k12]))
            pairs = [(0, 0), (2, 0), (0, 2), (1, 1), (4, 0), (2, 2), (3, 1), (1, 3), (0, 4)]
            got = [pd.value[0], 2 * pd.grad[0, 0], 2 * pd.grad[0, 1], pd.grad[0, 2], 4 * pd.hess[0, 0, 0],
                   pd.hess[0, 2, 2], 2 * pd.hess[0, 0, 2], 2 * pd.hess[0, 1, 2], 4 * pd.hess[0, 1, 1]]
            for (m, n), g in zip(pairs, got):
                ref = expect2(fs[m], fs[n], k11, k22, k12)
                assert abs(g - ref.value) <= 1e-12 + ref.error, (which, (k11, k22, k12), (m, n), g, ref)
            assert pd.error < 1e-12
