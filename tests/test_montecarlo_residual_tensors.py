r"""Monte Carlo of residual MLPs at several inputs (ntk_theory.montecarlo.residual.sample_residual_tensors).

Judges:

* the deep linear residual network's second hidden layer, exactly at every width n.  z(1) has iid rows
  N(0, K), K = C_W X X^T / d (C_b = 0); z(2) = xi z(1) + gamma u with, given z(1), iid rows u_i ~ N(0, Ghat),
  Ghat = C_W z(1)^T z(1) / n.  For i != j (odd moments of u vanish, u_i and u_j independent given z(1)):
  E[z_ia z_ib z_jc z_jd] = E[(xi^2 z_ia z_ib + gamma^2 Ghat_ab)(xi^2 z_jc z_jd + gamma^2 Ghat_cd)], and with
  Wick over the rows of z(1), E[z_ia z_ib Ghat_cd] = C_W (K_ab K_cd + (K_ac K_bd + K_ad K_bc)/n),
  E[Ghat_ab Ghat_cd] = C_W^2 (K_ab K_cd + (K_ac K_bd + K_ad K_bc)/n), so with K(2) = (xi^2 + gamma^2 C_W) K
  (E[z z] exactly):
      V(2)_(ab)(cd) = n (E[z_ia z_ib z_jc z_jd] - K(2)_ab K(2)_cd) = (2 xi^2 gamma^2 C_W + gamma^4 C_W^2)
                      (K_ac K_bd + K_ad K_bc),      M3(2) = 0 (odd),      exactly at every n;
* one input: the one-input sampler :func:`sample_residual` (itself judged by the exact finite-n moments of
  the deep linear network in tests/test_finite_width_residual.py), within 4 combined standard errors.
"""

import numpy as np
import pytest

from ntk_theory.montecarlo.residual import sample_residual, sample_residual_tensors

X3 = np.array([[1.0, 0.0], [0.6, 0.8], [0.3, -1.1]])


def _z(value, exact, se):
    assert np.all(se > 0), se
    return np.abs((value - exact) / se)


@pytest.mark.parametrize("n", [4, 16])
def test_deep_linear_second_layer_exact(n):
    C_W, xi, gamma = 1.2, 0.7, 0.6
    r = sample_residual_tensors("linear", X3, 3, n, C_W=C_W, xi=xi, gamma=gamma, samples=40_000, seed=n)
    K = C_W * X3 @ X3.T / X3.shape[1]
    V = (2 * xi**2 * gamma**2 * C_W + gamma**4 * C_W**2) * (np.einsum("ac,bd->abcd", K, K) + np.einsum("ad,bc->abcd", K, K))
    assert np.all(_z(r["K"].value[0], K, r["K"].stderr[0]) < 4)
    assert np.all(_z(r["K"].value[1], (xi**2 + gamma**2 * C_W) * K, r["K"].stderr[1]) < 4)
    assert np.all(_z(r["V"].value[1], V, r["V"].stderr[1]) < 4)
    assert np.all(_z(r["M3"].value[1], 0.0, r["M3"].stderr[1]) < 4)
    assert np.allclose(r["V"].value[1], r["V"].value[1].transpose(2, 3, 0, 1))  # (ab) <-> (cd): pairs i != j


def test_one_input_is_the_one_input_sampler():
    x = X3[1:2]
    kw = dict(C_W=1.2, C_b=0.1, xi=0.7, gamma=0.6, samples=40_000)
    r = sample_residual_tensors("tanh", x, 3, 8, seed=2, **kw)
    s = sample_residual("tanh", float(x[0] @ x[0]) / 2, 3, 8, seed=3, **kw)
    for name in ("K", "V", "M3"):
        a, b = r[name].value.reshape(len(s[name].value)), s[name].value
        se = np.hypot(r[name].stderr.reshape(len(a)), s[name].stderr)
        keep = se > 0  # layer 1's V is 0 exactly in both
        assert np.all(np.abs(a - b)[keep] < 4 * se[keep]), (name, a, b, se)


def test_equal_inputs_and_bad_arguments():
    X = np.array([[1.0, 0.5], [1.0, 0.5]])  # singular covariances: the root clips no negative eigenvalue to NaN
    r = sample_residual_tensors("relu", X, 2, 4, C_W=2.0, samples=400, batches=4, seed=0)
    for name in ("K", "V", "M3"):
        assert np.all(np.isfinite(r[name].value))
    assert np.allclose(r["K"].value[..., 0, 0], r["K"].value[..., 1, 1])
    with pytest.raises(ValueError, match="width must be >= 2"):
        sample_residual_tensors("relu", X, 2, 1)
    with pytest.raises(ValueError, match="xi"):
        sample_residual_tensors("relu", X, 3, 4, xi=[0.5, 0.5, 0.5])
