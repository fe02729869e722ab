"""Scalar functions the generated kernels call: compiled twins of :mod:`ntk_theory.gaussian.stable`."""

from __future__ import annotations

import math

import numba
import numpy as np

_SPLITTER = 134217729.0  # 2^27 + 1, Dekker's splitting constant


@numba.njit(inline="always", cache=True)
def _two_product(a, b):
    p = a * b
    t = _SPLITTER * a
    ah = t - (t - a)
    al = a - ah
    t = _SPLITTER * b
    bh = t - (t - b)
    bl = b - bh
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


@numba.njit(inline="always", cache=True)
def det2(p, q, c):
    """p q - c^2 from exact products (Dekker): accurate relative to itself as it tends to 0."""
    x, ex = _two_product(p, q)
    y, ey = _two_product(c, c)
    return (x - y) + (ex - ey)


@numba.njit(cache=True)
def erfcx(z):
    """exp(z^2) erfc(z) without overflow: direct product for z < 25, asymptotic series beyond."""
    if z < 25.0:
        return math.exp(z * z) * math.erfc(z)
    # erfcx(z) = 1/(z sqrt(pi)) * sum_k (-1)^k (2k-1)!! / (2 z^2)^k, 8 terms: relative error < 1e-20
    w = 1.0 / (2.0 * z * z)
    term, total = 1.0, 1.0
    for k in range(1, 9):
        term *= -(2 * k - 1) * w
        total += term
    return total / (z * math.sqrt(math.pi))


@numba.njit(parallel=True, cache=True)
def mirror_upper(a):
    """Copy the upper triangle of a square array onto its lower triangle, in place."""
    n = a.shape[0]
    for i in numba.prange(n):
        for j in range(i):
            a[i, j] = a[j, i]


def _selftest() -> float:
    """Largest relative error of det2 on a cancelling case (used in the tests)."""
    p, q = 1.0 + 2.0**-30, 1.0 - 2.0**-30
    exact = -(2.0**-60)  # (1 + e)(1 - e) - 1 = -e^2
    return abs(det2(p, q, 1.0) - exact) / abs(exact) + 0.0 * np.float64(0)
