"""ntk_theory._checks: bad numbers are refused with one ValueError naming the argument."""

import math

import numpy as np
import pytest

from ntk_theory import _checks
from ntk_theory.dynamics import predict


@pytest.mark.parametrize("value", [0, -1.0, math.inf, math.nan, None, "fast", np.array([1.0, 2.0])])
def test_positive_refuses(value):
    with pytest.raises(ValueError, match="learning_rate must be a finite number > 0"):
        _checks.positive("learning_rate", value)


@pytest.mark.parametrize("value", [-1e-300, math.inf, math.nan, None])
def test_nonnegative_refuses(value):
    with pytest.raises(ValueError, match="diag_reg must be a finite number >= 0"):
        _checks.nonnegative("diag_reg", value)


def test_accepted_values_are_floats():
    assert _checks.positive("eta", 3) == 3.0 and type(_checks.positive("eta", np.float32(0.5))) is float
    assert _checks.nonnegative("diag_reg", 0) == 0.0


def test_learning_rate_none_is_a_value_error():
    # float(None) raised TypeError before the shared check
    with pytest.raises(ValueError, match="learning_rate"):
        predict.MSEDynamics(np.eye(2), np.zeros(2), learning_rate=None)


@pytest.mark.parametrize("value", [2.7, -1, True, "3", None])
def test_step_count_refuses(value):
    with pytest.raises(ValueError, match="steps must be"):
        _checks.nonnegative_int("steps", value)


def test_step_count_accepts_integral():
    assert _checks.nonnegative_int("steps", 0) == 0 and _checks.nonnegative_int("steps", 5.0) == 5
    assert _checks.nonnegative_int("steps", np.int64(3)) == 3


def test_targets():
    y = _checks.targets([1, 2, 3], (3, 1))
    assert y.shape == (3, 1) and y.dtype == np.float64 and y[2, 0] == 3.0
    with pytest.raises(ValueError, match=r"y must have shape \(3, 2\)"):
        _checks.targets([1, 2, 3], (3, 2))
    with pytest.raises(ValueError, match="non-finite"):
        _checks.targets([1.0, np.nan], (2, 1))


def test_train_refuses_fractional_steps():
    # int(2.7) silently trained 2 steps before the shared check
    from ntk_theory.dynamics import train
    from ntk_theory.reference import MLP

    net = MLP.random((2, 3, 1), "relu", seed=0)
    with pytest.raises(ValueError, match="steps must be an integer >= 0; got 2.7"):
        train(net, np.ones((2, 2)), np.zeros(2), learning_rate=0.1, steps=2.7)
