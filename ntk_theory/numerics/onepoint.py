r"""One-input Gaussian averages and their derivatives in the variance, of callables.

For z ~ N(0, K), K > 0, and an integrand g (a NumPy callable, or one on mpf)

    M(K)   = <g(z)>
    M'(K)  = d<g>/dK   = <g (z^2 - K)> / (2 K^2)                    (differentiating the density)
           = <z g'(z)> / (2 K)                                      (g continuous, g' a.e.: Stein)
    M''(K) = d^2<g>/dK^2 = <g (z^4 - 6 K z^2 + 3 K^2)> / (4 K^4)

(PDLT eq. (4.40) ff. writes M'' with the Hermite tensor H4: (1/8) <g H4> = M''/2).  The Stein form
of M' is used whenever g' is given: at small K the density form's integrand is of size
<g> / K and cancels to M', losing about log10(<g> / (K M')) digits (sigmoid^2 at K = 1e-12: 1e-4
relative, the Stein form 2e-10; measured against 35-digit mpmath); for continuous g both are exact
integrals of the same quantity.

float64: :func:`.quadrature.expect1` (tanh-sinh split at 0 and the kinks, error estimate of that
rule, ``tol`` relative to <|integrand|>).  mpmath: :func:`.quadrature_mp.expect1_mp` (the same rule
at ``dps`` digits, the tests' reference).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import mpmath
import numpy as np

from .. import _checks
from .quadrature import QuadratureResult, expect1
from .quadrature_mp import expect1_mp

__all__ = ["ORDERS", "average", "average_mp"]

#: the variance derivatives available: 0 (the average), 1, 2
ORDERS = (0, 1, 2)


def _order(order) -> int:
    if order not in ORDERS:
        raise ValueError(f"the order of the variance derivative must be one of {ORDERS}; got {order!r}")
    return int(order)


def _weighted(g, dg, K, order, ones):
    """The integrand whose plain Gaussian average is the order-th derivative (see the module)."""
    if order == 0:
        return g
    if order == 1 and dg is not None:
        return lambda z: z * dg(z) / (2 * K) * ones(z)
    if order == 1:
        return lambda z: g(z) * ((z * z - K) / (2 * K * K))
    return lambda z: g(z) * ((z**4 - 6 * K * z * z + 3 * K * K) / (4 * K**4))


def average(g: Callable, K, order: int = 0, *, dg: Callable | None = None, kinks: Sequence[float] = (),
            tol: float = 1e-13) -> QuadratureResult:
    """d^order <g(z)> / dK^order, z ~ N(0, K), float64, with the quadrature's error estimate (K >= 0 for
    order 0, where K = 0 gives g(0); K > 0 for the derivatives).

    ``dg``: the almost-everywhere derivative of a continuous g (used for order 1, the Stein form)."""
    order = _order(order)
    K = _checks.variance("K", K)
    if order and not K > 0:
        raise ValueError(f"the variance derivatives need K > 0; got {K!r}")
    return expect1(_weighted(g, dg, K, order, np.ones_like), K, kinks=kinks, tol=tol)


def average_mp(g: Callable, K, order: int = 0, *, dg: Callable | None = None, kinks: Sequence[float] = (),
               dps: int = 30) -> tuple:
    """The same at about ``dps`` digits: (value, error estimate) as mpf, rounded to the caller's precision;
    g, dg are callables on mpf, K a float (taken exactly), string or mpf."""
    order = _order(order)
    with mpmath.workdps(dps + 10):
        K = mpmath.mpf(K)
        if order and not K > 0:
            raise ValueError(f"the variance derivatives need K > 0; got {K!r}")
        value, error = expect1_mp(_weighted(g, dg, K, order, lambda z: 1), K, kinks=kinks, dps=dps)
    return +value, +error
