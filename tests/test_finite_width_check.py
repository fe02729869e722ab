"""Finite-width predictions (K1, Theta1, V, A, B, D, F: every distinct entry) against the variance-reduced
Monte Carlo 1/n fits of ntk_theory.validation.fits: statistical, fixed seeds, 4 standard errors.
Activations relu, tanh (critical and off-critical), erf, gelu, linear, leaky_relu, elu; one, two and three inputs."""

import numpy as np
import pytest

from ntk_theory.validation import check_finite_width

X1 = np.array([[0.8, -0.5, 1.1]])
X2 = np.array([[0.8, -0.5, 1.1], [0.3, 0.9, -0.4]])
X3 = np.array([[0.8, -0.5, 1.1], [0.3, 0.9, -0.4], [-1.0, 0.2, 0.5]])


def test_relu_two_inputs_every_entry():
    """The fast representative: ReLU, depth 3, two inputs, 20k networks per width 32..256."""
    r = check_finite_width("relu", X2, 3, C_W=2.0, C_b=0.0, param="ntk", samples=20_000, seed=0)
    assert r.passed, r.table()
    assert len(r.rows) > 30


@pytest.mark.slow
@pytest.mark.parametrize("act, X, C_W, C_b", [
    ("tanh", X2, 1.0, 0.0),      # critical
    ("tanh", X2, 1.5, 0.1),      # off-critical
    ("erf", X2, 1.2, 0.05),
    ("gelu", X1, 1.8, 0.1),
    ("linear", X3, 1.0, 0.1),
    ("relu", X3, 2.0, 0.05),
    ("leaky_relu", X2, 1.9, 0.05),  # the exact orthant route with all 16 orthants
    ("elu(1/2)", X2, 1.5, 0.1),     # numerical with a kink: two-point derivatives by integration by parts
])
def test_predictions_within_4_standard_errors(act, X, C_W, C_b):
    r = check_finite_width(act, X, 3, C_W=C_W, C_b=C_b, param="ntk", samples=20_000, seed=1)
    assert r.passed, r.table()


@pytest.mark.slow
def test_per_layer_widths():
    """Unequal hidden widths n_l = (2, 1, 3) m: the recursions carry the factors n_l / n_(l-1) and the
    corrections are per 1/n_L; Monte Carlo at m = 16, 32, 64, fitted as a + b / n_L (means: n_L (E - inf))."""
    from ntk_theory.finite_width import finite_width
    from ntk_theory.montecarlo import layer_statistics

    pattern = np.array([2, 1, 3])
    ms = (16, 32, 64)
    pred = finite_width("tanh", X2, 3, C_W=1.5, C_b=0.1, param="ntk", widths=list(pattern * 16))
    runs = [layer_statistics("tanh", X2, 3, list(pattern * m), C_W=1.5, C_b=0.1, param="ntk", samples=20_000, seed=m) for m in ms]
    nL = np.array([3.0 * m for m in ms])

    def intercept(y, e):
        A = np.stack([np.ones_like(nL), 1 / nL], 1) / e[:, None]
        c, *_ = np.linalg.lstsq(A, y / e, rcond=None)
        return c[0], float(np.sqrt(np.linalg.inv(A.T @ A)[0, 0]))

    for name in ("V", "A", "B", "D", "F"):
        for idx in [(0, 0, 0, 0), (0, 1, 0, 1), (0, 0, 1, 1), (1, 1, 1, 1)]:
            a, se = intercept(np.array([r[name].value[idx] for r in runs]), np.array([r[name].stderr[idx] for r in runs]))
            assert abs(a - getattr(pred, name)[idx]) <= 4 * se, (name, idx, a, se)
    for name, P, inf in (("K", pred.nngp_correction, pred.nngp), ("ntk", pred.ntk_correction, pred.ntk)):
        for idx in [(0, 0), (0, 1), (1, 1)]:
            y = np.array([n * (r[name].value[idx] - inf[idx]) for n, r in zip(nL, runs)])
            e = np.array([n * r[name].stderr[idx] for n, r in zip(nL, runs)])
            a, se = intercept(y, e)
            assert abs(a - P[idx]) <= 4 * se, (name, idx, a, se)
