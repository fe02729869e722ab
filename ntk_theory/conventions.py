r"""Conventions of the toolkit: PDLT notation and the learning-rate factors of each parameterization.

Network (Roberts, Yaida, Hanin 2021, "PDLT", eq. 2.5 ff.), with ``L`` hidden layers and a readout::

    z(1)   = W(1) x + b(1)
    z(l+1) = W(l+1) s(z(l)) + b(l+1),        l = 1 .. L           (z(L+1) is the output f)
    W(l)_ij ~ N(0, C_W(l) / n_(l-1)),  b(l)_i ~ N(0, C_b(l)),       n_0 = input dimension

The neural tangent kernel carries learning-rate factors ``(lambda_b, lambda_W)`` per layer::

    Theta_ab = sum_l [ lambda_b(l) sum_i  df_a/db(l)_i  df_b/db(l)_i
                     + lambda_W(l) / n_(l-1) sum_ij df_a/dW(l)_ij df_b/dW(l)_ij ]

``param`` selects the factors:

==============  ==================  ===========================  =======================================
``param``       lambda_b(l)         lambda_W(l)                  meaning
==============  ==================  ===========================  =======================================
``"ntk"``       C_b(l)              C_W(l)                       Jacot et al. 2018 and neural-tangents'
                                                                 default ``parameterization='ntk'``:
                                                                 trainable omega, beta ~ N(0, 1) with
                                                                 W = sqrt(C_W/n) omega, b = sqrt(C_b) beta
``"unit"``      1                   1                            PDLT's choice lambda_b = lambda_W = 1
``"standard"``  1                   n_(l-1)                      neural-tangents'
                                                                 ``parameterization='standard'``: W and b
                                                                 trained directly (Theta grows with width)
==============  ==================  ===========================  =======================================

neural-tangents' ``stax.Dense(out, W_std, b_std, parameterization=...)`` maps to ``C_W = W_std**2`` and
``C_b = b_std**2``; its input kernel is ``x . x' / n_0``, as here.  In the standard parameterization
neural-tangents' dense NTK update reads ``Theta' = n_(l-1) * K_unscaled + 1 + W_std**2 Theta`` (its
``stax`` source), which is the formula above with lambda_b = 1, lambda_W / n_(l-1) = 1.
"""

from __future__ import annotations

from typing import Callable

PARAMETERIZATIONS = ("ntk", "unit", "standard")

# param -> (C_W, C_b, fan_in) -> (lambda_b, lambda_W).  A registry, not an if/else chain.
_LEARNING_RATE_FACTORS: dict[str, Callable[[float, float, int], tuple[float, float]]] = {
    "ntk": lambda C_W, C_b, fan_in: (C_b, C_W),
    "unit": lambda C_W, C_b, fan_in: (1.0, 1.0),
    "standard": lambda C_W, C_b, fan_in: (1.0, float(fan_in)),
}


def learning_rate_factors(param: str, *, C_W: float, C_b: float, fan_in: int) -> tuple[float, float]:
    """``(lambda_b, lambda_W)`` of one layer with variances ``C_W``, ``C_b`` and ``fan_in`` = n_(l-1).

    >>> learning_rate_factors("ntk", C_W=2.0, C_b=0.1, fan_in=64)
    (0.1, 2.0)
    >>> learning_rate_factors("standard", C_W=2.0, C_b=0.1, fan_in=64)
    (1.0, 64.0)
    """
    try:
        rule = _LEARNING_RATE_FACTORS[param]
    except KeyError:
        raise ValueError(
            f"unknown param {param!r}; expected one of {', '.join(map(repr, PARAMETERIZATIONS))}"
        ) from None
    lam_b, lam_W = rule(C_W, C_b, fan_in)
    return float(lam_b), float(lam_W)
