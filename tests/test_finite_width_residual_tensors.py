r"""The several-input four-point vertex V and three-point M3 of residual MLPs (ResidualRecursion.vertex_tensors).

Judges, independent of the code under test:

* one input: the one-input recursion (:meth:`ResidualRecursion.one_input`, itself checked against exact deep
  linear results, quadrature and Monte Carlo in tests/test_finite_width_residual.py), to 1e-12;
* xi = 0, gamma = 1: the MLP's several-input tensors (FiniteWidthRecursion.tensors, checked against Monte
  Carlo in its own tests), to 1e-12;
* one input also for M3 (one_input's M3); xi = 0 gives M3 = 0 (the MLP);
* the deep linear network's second layer, exactly (derived in tests/test_montecarlo_residual_tensors.py):
  V(2)_(ab)(cd) = (2 xi^2 gamma^2 C_W + gamma^4 C_W^2)(K_ac K_bd + K_ad K_bc), K = C_W X X^T / d;
* Monte Carlo of finite residual networks at two inputs (sample_residual_tensors), fitted as c0 + c1/n over
  n = 16..128, every entry of every layer within 4 standard errors (slow set).
"""

import numpy as np
import pytest

from ntk_theory.finite_width import FiniteWidthRecursion
from ntk_theory.finite_width.residual import ResidualRecursion
from ntk_theory.montecarlo.residual import sample_residual_tensors
from ntk_theory.validation.fits import weighted_fit

X2 = np.array([[1.0, 0.3], [0.2, -0.9]])
X3 = np.array([[1.0, 0.3], [0.2, -0.9], [-0.6, 0.5]])


@pytest.mark.parametrize("act", ["relu", "tanh", "linear"])
def test_one_input_is_the_one_input_recursion(act):
    rec = ResidualRecursion(act, 4, C_W=1.2, C_b=0.1, xi=[0.7, 0.5, 0.9], gamma=[0.6, 0.8, 0.4])
    for (K, V, M3, _), st in zip(rec.vertex_tensors(X2[:1]), rec.one_input(X2[:1])):
        assert K[0, 0] == pytest.approx(st.K, rel=1e-12)
        assert V[0, 0, 0, 0] == pytest.approx(st.V, rel=1e-12, abs=1e-14)
        assert M3[0, 0, 0] == pytest.approx(st.M3, rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("act", ["relu", "tanh", "erf"])
def test_xi_zero_is_the_mlp(act):
    C_W, C_b = [1.4, 1.7, 1.1, 2.0], 0.15
    res = ResidualRecursion(act, 3, C_W=C_W, C_b=C_b, xi=0.0, gamma=1.0).vertex_tensors(X3)
    mlp = FiniteWidthRecursion(act, 3, C_W=C_W, C_b=C_b).tensors(X3)
    for (K, V, M3, _), st in zip(res, mlp):
        assert np.allclose(K, st.K, rtol=1e-12, atol=1e-14)
        assert np.allclose(V, st.V, rtol=1e-12, atol=1e-13)
        assert np.all(M3 == 0.0)  # the MLP's neurons see the fields only through the previous layer


@pytest.mark.parametrize("xi,gamma,C_W", [(0.7, 0.6, 1.2), (-0.5, 1.1, 0.9)])
def test_deep_linear_second_layer_exact(xi, gamma, C_W):
    states = ResidualRecursion("linear", 3, C_W=C_W, xi=xi, gamma=gamma).vertex_tensors(X3)
    K = C_W * X3 @ X3.T / 2
    exact = (2 * xi**2 * gamma**2 * C_W + gamma**4 * C_W**2) * (np.einsum("ac,bd->abcd", K, K)
                                                                 + np.einsum("ad,bc->abcd", K, K))
    assert np.allclose(states[0][1], 0.0, atol=1e-15)
    assert np.allclose(states[1][0], (xi**2 + gamma**2 * C_W) * K, rtol=1e-13)
    assert np.allclose(states[1][1], exact, rtol=1e-12, atol=1e-14)


def test_equal_inputs_are_copies():
    rec = ResidualRecursion("relu", 2, C_W=1.0, xi=0.8, gamma=0.6)
    X = np.array([X2[0], X2[1], X2[0]])
    for (K, V, M3, _), (K2, V2, M32, _) in zip(rec.vertex_tensors(X), rec.vertex_tensors(X2)):
        i = [0, 1, 0]
        assert np.allclose(K, K2[np.ix_(i, i)], rtol=1e-12, atol=0)
        assert np.allclose(V, V2[np.ix_(i, i, i, i)], rtol=1e-12, atol=1e-15)
        assert np.allclose(M3, M32[np.ix_(i, i, i)], rtol=1e-12, atol=1e-15)


@pytest.mark.slow
@pytest.mark.parametrize("act,C_W,C_b,xi,gamma", [("relu", 1.0, 0.0, 0.8, 0.6), ("tanh", 1.2, 0.1, 0.7, 0.7)])
def test_vertex_against_monte_carlo(act, C_W, C_b, xi, gamma):
    """Every entry of V_(ab)(cd) at layers 2, 3 and the readout, and of T_(ab)c at layers 2, 3, against c0 + c1/n
    fits of 100k networks per width (V: standard errors 1e-3 to 2e-3 against entries 1e-3 to 0.2; ReLU's M3:
    8e-4 against 0.02), within 4 standard errors."""
    L, widths = 3, [16, 32, 64, 128]
    pred = ResidualRecursion(act, L, C_W=C_W, C_b=C_b, xi=xi, gamma=gamma).vertex_tensors(X2)
    runs = [sample_residual_tensors(act, X2, L, n, C_W=C_W, C_b=C_b, xi=xi, gamma=gamma, samples=100_000,
                                    seed=10 + n) for n in widths]
    for l in range(1, L + 1):
        vals = np.stack([r["V"].value[l] for r in runs])
        errs = np.stack([r["V"].stderr[l] for r in runs])
        coef, se, _ = weighted_fit(widths, vals, errs, [0, 1])
        assert np.all(np.isfinite(se[0])) and np.all(se[0] > 0)
        z = (coef[0] - pred[l][1]) / se[0]
        assert np.all(np.abs(z) < 4), (l, z)
    for l in range(1, L):  # T_(ab)c of the hidden layers 2, 3 (tanh: 0 by the sign flip)
        vals = np.stack([r["M3"].value[l] for r in runs])
        errs = np.stack([r["M3"].stderr[l] for r in runs])
        coef, se, _ = weighted_fit(widths, vals, errs, [0, 1])
        z = (coef[0] - pred[l][2]) / se[0]
        assert np.all(np.abs(z) < 4), ("M3", l, z)
