r"""Theta1_(ab) at several inputs of residual MLPs with piecewise-linear activations (relu, leaky_relu, abs):
ResidualRecursion.ntk_correction with the Dirac terms of s'' and s''' in its self terms
(ntk_theory.numerics.dirac; its averages are judged in tests/test_residual_dirac_moments.py).

Judges, independent of the code under test:

* one input, and the diagonal Theta1_(aa) at several inputs: the one-input recursion
  (:meth:`ResidualRecursion.one_input`, whose self term takes two-layer averages E[g^(k)(z(a)) h(z(b))] by
  conditioning and Hermite weights on one-dimensional Gauss-Legendre rules: another route to the same Dirac
  terms; it is checked against Monte Carlo in tests/test_finite_width_residual.py), to 1e-12;
* xi = 0, gamma = 1: the MLP's several-input Theta1 (FiniteWidthRecursion.tensors, the MLP code path, checked
  against Monte Carlo in its own tests), to 1e-12;
* inputs x and x + eps u: the off-diagonal entry (Dirac terms at two distinct variables) tends to the one-input
  recursion's Th1 at x as eps -> 0 (without the Dirac terms it would jump by 0.055);
* Monte Carlo of real residual ReLU networks at two inputs (sample_residual_ntk_tensors: dense weights,
  backpropagated Jacobians), n (E[Theta_ab] - Theta_ab) fitted as Theta1 + c2/n with Theta fixed, within 4
  standard errors at every entry (slow set).

The smooth family s_beta(x) = x (1 + erf(beta x)) / 2 through the smooth route (docs/finite_width.md records the
numbers; the smooth route at beta = 4, 8 takes about a minute each and fails beyond beta ~ 10) agrees with the
values here to ~0.005 off the diagonal; without the Dirac terms the off-diagonal entries would differ by 3% to 40%
and the diagonal by ~8% (excluded by that comparison and, on the diagonal, by the one-input recursion).
"""

import numpy as np
import pytest

from ntk_theory.finite_width import FiniteWidthRecursion
from ntk_theory.finite_width.residual import NotDerived, ResidualRecursion
from ntk_theory.montecarlo.residual import sample_residual_ntk_tensors
from ntk_theory.validation.fits import weighted_fit

X2 = np.array([[1.0, 0.3], [0.6, 0.8]])
X3 = np.array([[1.0, 0.3], [0.2, -0.9], [-0.6, 0.5]])
KW = {"C_W": 1.5, "C_b": 0.1, "xi": 0.7, "gamma": 0.8}


@pytest.mark.parametrize("act,depth", [("relu", 3), ("leaky_relu", 2), ("abs", 2)])
def test_diagonal_is_the_one_input_recursion(act, depth):
    """Every layer's Theta1_(aa) at two inputs equals one_input's Th1 at each input alone (the self terms, with
    their Dirac terms, are non-zero from layer 3 on and at the readout), and the matrix is symmetric."""
    rec = ResidualRecursion(act, depth, C_W=1.3, C_b=0.2, xi=[0.7, 0.5][:depth - 1], gamma=[0.6, 0.9][:depth - 1])
    th1 = rec.ntk_correction(X2)
    assert len(th1) == depth + 1
    for i in range(2):
        for l, o in enumerate(rec.one_input(X2[i])):
            assert th1[l][i, i] == pytest.approx(o.Th1, rel=1e-12, abs=1e-14), (i, l)
    assert np.abs(th1[-1]).max() > 0.1 and np.allclose(th1[-1], th1[-1].T, rtol=1e-12, atol=1e-14)


def test_off_diagonal_tends_to_the_one_input_recursion():
    """Inputs x and x + eps u: Theta1_(01) (the off-diagonal code path, whose Dirac terms sit at two distinct
    variables, e.g. delta(z_0) delta(z_1)) tends to one_input's Th1 at x as eps -> 0, linearly (a Dirac term
    missing or mis-weighted off the diagonal would leave a jump: near coincident inputs the off-diagonal terms must
    sum to the diagonal's derivative of the product s'^2)."""
    rec = ResidualRecursion("relu", 2, **KW)
    x, u = np.array([1.0, 0.3]), np.array([-0.3, 1.0])
    one = rec.one_input(x)[-1].Th1
    gaps = [rec.ntk_correction(np.array([x, x + eps * u]))[-1][0, 1] - one for eps in (0.04, 0.01)]
    assert abs(gaps[1]) < 0.003 * abs(one) and abs(gaps[1]) < 0.4 * abs(gaps[0]), gaps


def test_one_input_is_the_one_input_recursion():
    rec = ResidualRecursion("relu", 4, **KW)
    for th1, o in zip(rec.ntk_correction(X2[1:]), rec.one_input(X2[1])):
        assert th1.shape == (1, 1) and th1[0, 0] == pytest.approx(o.Th1, rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("act,param,X", [("relu", "ntk", X3), ("leaky_relu", "unit", X2), ("abs", "ntk", X2)])
def test_xi_zero_is_the_mlp(act, param, X):
    """xi = 0, gamma = 1: every entry of every layer equals the MLP's several-input Theta1, to 1e-12."""
    res = ResidualRecursion(act, 3, C_W=1.4, C_b=0.2, xi=0.0, gamma=1.0, param=param).ntk_correction(X)
    mlp = FiniteWidthRecursion(act, 3, C_W=1.4, C_b=0.2, param=param).tensors(X)
    for th1, m in zip(res, mlp):
        assert np.allclose(th1, m.Th1, rtol=1e-12, atol=1e-13)
    assert np.abs(mlp[-1].Th1).max() > 0.05


def test_other_kinked_activations_refused():
    with pytest.raises(NotDerived, match="kinked activation elu"):
        ResidualRecursion("elu", 3, xi=0.7, gamma=0.6).ntk_correction(X2)


def test_finite_width_gives_theta1_at_all_inputs():
    """finite_width(residual ReLU stax net, X): ntk_correction is (N, N), its diagonal one_input's Th1."""
    from ntk_theory import stax
    from ntk_theory.finite_width import finite_width, recursion_for

    net = stax.parse("serial(Dense(8, W_std=1.1, b_std=0.3), serial(FanOut(2), parallel(Activation('0.8*x'), "
                     "serial(Relu(), Dense(8, W_std=0.6, b_std=0.2))), FanInSum()), Relu(), Dense(1))")
    a = finite_width(net, X2, progress=False).arrays()["ntk_correction"]
    rec = recursion_for(net)
    assert a.shape == (2, 2) and abs(a[0, 1]) > 1e-3 and a[0, 1] == pytest.approx(a[1, 0], rel=1e-12)
    for i in range(2):
        assert a[i, i] == pytest.approx(rec.one_input(X2[i])[-1].Th1, rel=1e-12, abs=1e-14)


@pytest.mark.slow
def test_against_monte_carlo():
    """Every entry of the readout's Theta1_(ab) (depth 2, where the readout's self term couples layers 2 and 1)
    against n (E[Theta_ab] - Theta_ab) of real residual ReLU networks fitted as Theta1 + c2 / n over n = 4, 8, 16
    with Theta fixed, within 4 standard errors."""
    kw = {"C_W": 1.5, "C_b": 0.1, "xi": 0.9, "gamma": 0.7}
    rec = ResidualRecursion("relu", 2, **kw)
    th1 = rec.ntk_correction(X2)[-1]
    Th = rec.tensors(X2)[-1].Th
    widths = [4, 8, 16]
    runs = [sample_residual_ntk_tensors("relu", X2, 2, n, samples=s, seed=70 + n, **kw)
            for n, s in zip(widths, (60_000, 40_000, 25_000))]
    vals = np.stack([r["Th"].value[2] for r in runs])
    errs = np.stack([r["Th"].stderr[2] for r in runs])
    coef, se, _ = weighted_fit(widths, vals, errs, [1, 2], fixed=Th)
    z = (coef[0] - th1) / se[0]
    assert np.all(np.isfinite(z)) and np.all(np.abs(z) < 4), z
