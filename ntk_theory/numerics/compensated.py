r"""Error-free products and the 2 x 2 determinant p q - c^2 without cancellation (Dekker 1971).

Written once in plain float arithmetic, so the same functions serve Python floats, NumPy arrays
(elementwise) and, through :mod:`.compensated_numba`, ``numba.njit`` code.

* :func:`two_product`: p = fl(a b) and the exact error e = a b - p (Dekker's splitting with the
  constant 2^27 + 1; no fused multiply-add needed).  Exact unless a b overflows or the parts
  underflow (|a b| below ~1e-292).
* :func:`det2`: p q - c^2 from the two exact products, one rounding of their difference and one of
  the sum of the errors: the result is accurate to a few ulps *of itself*, also when it is 1e-12 of
  p q (covariances with |rho| -> 1).
* :func:`residual`: c - a x with the product taken exactly (accurate also when a x ~ c).

The arithmetic must not be contracted into fused multiply-adds or reassociated: do not call these
from code compiled with ``fastmath``.
"""

from __future__ import annotations

__all__ = ["SPLITTER", "det2", "residual", "two_product"]

SPLITTER = 134217729.0
"""2^27 + 1, Dekker's splitting constant for float64."""


def two_product(a, b):
    """(p, e) with p = fl(a b) and p + e = a b exactly."""
    p = a * b
    t = SPLITTER * a
    ah = t - (t - a)
    al = a - ah
    t = SPLITTER * b
    bh = t - (t - b)
    bl = b - bh
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def det2(p, q, c):
    """p q - c^2 from exact products: one rounding of their difference, one of their errors' sum."""
    x, ex = two_product(p, q)
    y, ey = two_product(c, c)
    return (x - y) + (ex - ey)


def residual(c, a, x):
    """c - a x with the product a x taken exactly."""
    p, e = two_product(a, x)
    return (c - p) - e
