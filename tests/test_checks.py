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
