"""Finite-width predictions (K1, Theta1, V, A, B, D, F: every distinct entry) against the variance-reduced
Monte Carlo 1/n fits of ntk_theory.montecarlo_finite_width: statistical, fixed seeds, 4 standard errors.
Activations relu, tanh (critical and off-critical), erf, gelu, linear; one, two and three inputs."""

import numpy as np
import pytest

from ntk_theory.validation_finite_width import check_finite_width

X1 = np.array([[0.8, -0.5, 1.1]])
X2 = np.array([[0.8, -0.5, 1.1], [0.3, 0.9, -0.4]])
X3 = np.array([[0.8, -0.5, 1.1], [0.3, 0.9, -0.4], [-1.0, 0.2, 0.5]])


def test_relu_two_inputs_every_entry():
    """The fast representative: ReLU, depth 3, two inputs, 20k networks per width 16..128."""
    r = check_finite_width("relu", X2, 3, 2.0, 0.0, "ntk", samples=20_000, seed=0)
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
])
def test_predictions_within_4_standard_errors(act, X, C_W, C_b):
    r = check_finite_width(act, X, 3, C_W, C_b, "ntk", samples=20_000, seed=1)
    assert r.passed, r.table()
