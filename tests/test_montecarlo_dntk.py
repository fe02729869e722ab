"""Monte Carlo of the dNTK / ddNTK moments (ntk_theory.montecarlo.sample_dntk) against independent values.

Judges: closed forms of a one-hidden-layer linear network derived by Wick contractions below; the
1/sqrt(samples) law of standard errors; a weighted a + b/n fit over widths (ntk_theory.validation.fits).
"""

import numpy as np
import pytest

from ntk_theory.montecarlo.dntk import DNTK_QUANTITIES, sample_dntk
from ntk_theory.validation.fits import weighted_fit

X2 = np.array([[1.0, 0.3, -0.2], [0.2, -0.8, 0.5]])


def _linear_depth_one(C1, C2, n0, n, param):
    r"""P..U of z2 = W2 (W1 x + b1) + b2 with biases zero at initialization (C_b = 0) but trained with factor
    lb1 (lambda_b of layer 1: 0 in 'ntk', 1 in 'unit'), W1 ~ N(0, C1/n0), W2 ~ N(0, C2/n), NTK factors l1 (W1), l2 (W2).

    Derivation.  With u = W1 x + b1 (z1), dz_{i;a}/dW2_{jk} = d_ij u_{k;a}, dz_{i;a}/dW1_{km} = W2_{ik} x_{a;m},
    dz_{i;a}/db1_k = W2_{ik}; the only second derivatives are d2z_{i;a}/dW2_{jk} dW1_{k'm} = d_ij d_kk' x_{a;m} and
    d2z_{i;a}/dW2_{jk} db1_k' = d_ij d_kk' (b2 enters linearly; no third derivatives: R = 0).  The first layer's
    parameters always appear summed as Ghat_ab = l1 x_a . x_b + lb1.  Hence
      dH_{i0 i1 i2; a0 a1 a2} = l2 [d_{i0 i1} Ghat_{a0 a2} z_{i2;a1} + d_{i0 i2} Ghat_{a0 a1} z_{i1;a2}],
    so dH_{i j j} = 0 (P = 0) and dH_{i i j} z_j = l2 Ghat_{a0 a2} z_{j;a1} z_{j;a3}, E[z_{j;a1} z_{j;a3}] = C1 C2 G_{a1 a3}/n0
    (G = X X^T):   Q = n l2 Ghat_{a0 a2} C1 C2 G_{a1 a3} / n0.
    ddII: the Hessian pairs W2 with the first layer; mu in W2 gives l2 d_{i1 i2} Ghat_{a1 a3} Ghat_{a2 a4} sum_k W2_{i3 k}
    W2_{i4 k}, mu in the first layer gives Ghat_{a1 a2} l2^2 d_{i1 i3} d_{i2 i4} sum_k u_{k;a3} u_{k;a4}; with
    E[sum_k W2 W2] = C2 (i3 = i4) and E[sum_k u u] = n C1 G / n0:
      S = n l2 C2 Ghat_{a1 a3} Ghat_{a2 a4},   T = n l2^2 Ghat_{a1 a2} n C1 G_{a3 a4} / n0,   U = 0.
    In 'ntk' (l1 = C1/n0, l2 = C2/n, lb1 = 0) these are Q = S = C2^2 K1_{a0 a2} K1_{a1 a3}, T = C2^2 K1_{a1 a2}
    K1_{a3 a4} with K1 = C1 G / n0, at every width.
    """
    G = X2 @ X2.T
    l1, l2, lb1 = {"ntk": (C1 / n0, C2 / n, 0.0), "unit": (1 / n0, 1 / n, 1.0)}[param]
    Gh = l1 * G + lb1
    e = np.einsum
    return {
        "P": np.zeros((2,) * 4),
        "Q": n * l2 * C1 * C2 * e("ac,bd->abcd", Gh, G) / n0,
        "R": np.zeros((2,) * 4),
        "S": n * l2 * C2 * e("ac,bd->abcd", Gh, Gh),
        "T": n * l2**2 * n * C1 * e("ab,cd->abcd", Gh, G) / n0,
        "U": np.zeros((2,) * 4),
    }


@pytest.mark.parametrize("param", ["ntk", "unit"])
def test_linear_one_hidden_layer_against_wick_contractions(param):
    n = 8
    res = sample_dntk("linear", X2, 1, n, C_W=1.5, C_b=0.0, param=param, samples=4000, seed=3)
    exact = _linear_depth_one(1.5, 1.5, 3, n, param)
    for name in ("Q", "S", "T"):
        assert res[name].stderr.min() > 0
        assert res[name].stderr.max() < 0.08 * np.abs(exact[name]).max()  # a sharp test
    assert res.agrees_with({k: exact[k] for k in ("Q", "S", "T")}), res.z_score(exact)
    for name in ("P", "R", "U"):  # zero on every network
        assert np.all(res[name].value == 0.0) and np.all(res[name].stderr == 0.0)
    # a zero standard error has no z-score: a verdict on it fails, never z = 0
    assert not res.agrees_with({"P": exact["P"]})
    assert np.isnan(res.P.z_score(0.0)).all()


def _linear_depth_two(C, n1, n2):
    r"""P and Q of z3 = W3 W2 W1 x (no biases, 'ntk', every C_W = C, widths n1, n2), exactly at finite width.

    Derivation (forward mode of reference.dntk written out for s = identity, g_p(2) = W3_i, g_p(1) = W2^T W3_i):
    with u = W1 x, y = W2 u, z = W3 y, l1 = C/n0, l2 = C/n1, l3 = C/n2,
      D^2 z2[(i1,a1), (i2,a2)]_{a0} = l1 l2 [W3_{i1} G_{a0 a2} z_{i2;a1} + W3_{i2} G_{a0 a1} z_{i1;a2}],
      dH_{i0 i1 i2} = l3 [d_{i0 i1} y_{a1} . Dz2[(i2,a2)]_{a0} + d_{i0 i2} y_{a2} . Dz2[(i1,a1)]_{a0}] + W3_{i0} . D^2 z2,
      Dz2[(j,a)]_b = l2 W3_j (u_a . u_b) + l1 G_ab W2 W2^T W3_j.
    P (i0 = i, i1 = i2 = j): dH_{i j j} = l1 l2 (W3_i . W3_j) [G_{a0 a2} z_{j;a1} + G_{a0 a1} z_{j;a2}], and Wick's
    theorem over W3, W2, W1 (E[W3_i . W3_j z_i z_j] = s3^4 E[y . y]) gives, K = C G / n0,
      P = C^4 (K_{a0 a2} K_{a1 a3} + K_{a0 a1} K_{a2 a3}) / n1             (zero at infinite width).
    Q (i0 = i1 = i, i2 = j), four terms: l3 l2 E[z_j z_j (u . u)] (E[(u_1.u_3)(u_2.u_0)] = s1^4 [n1^2 G13 G02 +
    n1 (G12 G03 + G01 G23)]), l3 l1 G02 E[(W2^T y_1) . (W2^T W3_j) z_{j;3}] = l3 l1 G02 s3^2 E[u_1^T (W2^T W2)^2 u_3]
    (E[(W2^T W2)^2] = s2^4 n2 (n1 + n2 + 1) 1),
    l1 l2 G02 E[|W3_i|^2 z_j z_j] and l1 l2 G01 E[(W3_i . W3_j) z_i z_j]:
      Q = C^4 [K02 K13 (1 + (n1 + n2 + 1)/n1 + n2/n1) + (K12 K03 + 2 K01 K23)/n1].
    """
    K = C * (X2 @ X2.T) / X2.shape[1]
    e = np.einsum
    KK = e("ac,bd->abcd", K, K)
    P = C**4 * (KK + e("ab,cd->abcd", K, K)) / n1
    Q = C**4 * (KK * (1 + (n1 + n2 + 1) / n1 + n2 / n1) + (e("bc,ad->abcd", K, K) + 2 * e("ab,cd->abcd", K, K)) / n1)
    return {"P": P, "Q": Q}


@pytest.mark.parametrize("widths", [(8, 8), (5, 12)])
def test_linear_two_hidden_layers_against_wick_contractions(widths):
    """P is a pure 1/n1 effect in deep linear networks, Q has its 1/n terms: both within 4 standard errors."""
    res = sample_dntk("linear", X2, 2, widths, C_W=1.3, C_b=0.0, samples=6000, seed=2, quantities=("P", "Q"))
    exact = _linear_depth_two(1.3, *widths)
    assert res.agrees_with(exact), res.z_score(exact)
    assert res.P.stderr.max() < 0.2 * np.abs(exact["P"]).max() and res.Q.stderr.max() < 0.05 * np.abs(exact["Q"]).max()


def test_standard_errors_shrink_like_one_over_sqrt_samples():
    kw = dict(C_W=1.0, C_b=0.1, param="ntk", batches=20)
    small = sample_dntk("tanh", X2[:1], 2, 12, samples=800, seed=1, **kw)
    large = sample_dntk("tanh", X2[:1], 2, 12, samples=3200, seed=2, **kw)
    ratios = [float(small[q].stderr.ravel()[0] / large[q].stderr.ravel()[0]) for q in DNTK_QUANTITIES]
    # each SE is uncertain by ~1/sqrt(2 * 19) = 16%: the ratio of two by ~23%; their geometric mean by ~10%
    assert 1.6 < np.exp(np.mean(np.log(ratios))) < 2.5, ratios
    assert all(1.2 < r < 3.4 for r in ratios), ratios


def test_reproducible_whatever_the_threads():
    kw = dict(C_W=1.0, C_b=0.0, samples=120, seed=7, batches=4, quantities=("P", "R"))
    a = sample_dntk("erf", X2, 1, 6, workers=1, memory_mb=0.05, **kw)
    b = sample_dntk("erf", X2, 1, 6, workers=2, memory_mb=0.05, **kw)
    assert a.info["block"] < 120
    for q in ("P", "R"):
        np.testing.assert_allclose(a[q].value, b[q].value, rtol=1e-13, atol=1e-15)
    assert set(a.estimates) == {"P", "R"}
    assert "P:" in a.table() and "networks" in a.table()


def test_bad_input():
    with pytest.raises(ValueError, match="outputs must be >= 2"):
        sample_dntk("tanh", X2, 1, 4, outputs=1, samples=10)
    with pytest.raises(ValueError, match="unknown quantities"):
        sample_dntk("tanh", X2, 1, 4, quantities=("P", "Z"), samples=10)
    with pytest.raises(ValueError, match="no derivative of order 2"):
        sample_dntk((np.tanh, lambda z: 1 / np.cosh(z) ** 2), X2, 1, 4, samples=10)
    with pytest.raises(ValueError, match="batches"):
        sample_dntk("tanh", X2, 1, 4, samples=10, batches=1)


@pytest.mark.slow
def test_widths_consistent_with_a_plus_b_over_n():
    """tanh and relu, depth 2, widths 16, 32, 64: every entry of P..U fits a + b/n (weighted least squares with the
    Monte Carlo standard errors, ntk_theory.validation.fits.weighted_fit) with chi^2 of 1 degree of freedom, and
    the fitted limits are determined (finite standard errors)."""
    widths = (16, 32, 64)
    for act, C_W in (("tanh", 1.0), ("relu", 2.0)):
        runs = [sample_dntk(act, X2, 2, n, C_W=C_W, C_b=0.05, samples=6000, seed=n) for n in widths]
        chi2 = []
        for q in DNTK_QUANTITIES:
            vals = np.stack([r[q].value for r in runs])
            errs = np.stack([r[q].stderr for r in runs])
            coef, se, c2 = weighted_fit(widths, vals, errs, [0, 1])
            assert np.all(np.isfinite(se[0])), q
            chi2.append(c2.ravel())
        chi2 = np.concatenate(chi2)
        # 96 entries of chi^2(1) (correlated within a quantity): the largest under 20 (p = 1e-5 each), the mean near 1
        assert chi2.max() < 20 and chi2.mean() < 2.5, (act, chi2.max(), chi2.mean())
