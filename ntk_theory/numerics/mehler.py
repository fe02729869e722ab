r"""Mehler's series from Hermite tables as scalar Numba functions (the Numba back end of :mod:`.hermite`).

For coefficient rows a, b of two tables (:class:`.hermite.HermiteTable`) and a correlation rho,
E[f(u) g(v)] = sum_n a_n b_n rho^n truncated after degree m:

* :func:`order_from_log_tails`: the truncation order, the smallest m with
  |rho|^(m+1) sqrt(A_m B_m) <= tol (relative tails A_m, B_m), in logarithms: the rule of
  :func:`.hermite.truncation_orders` for one entry;
* :func:`series`: the sum by Horner's scheme in rho;
* :func:`mehler_pair`: two sums at once (T and Tdot of a kernel entry, E[s s] and E[s' s']), each
  split into even and odd powers (Horner in rho^2): four independent chains, which the fused kernels
  of :mod:`ntk_theory.codegen` inline and the CPU overlaps (a different order of the same additions
  as :func:`series`, so the two agree to rounding).

Lazily compiled (no explicit signatures), cached on disk, ``inline="always"`` where the generated
kernels call them.  Rounding: at most about 2 (m + 1) eps sum_n |a_n b_n rho^n|.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["mehler_pair", "order_from_log_tails", "series"]


@numba.njit(cache=True, error_model="numpy")
def series(a, b, rho, order):
    """sum_(n <= order) a[n] b[n] rho^n by Horner (order < len(a), len(b) unchecked; NaN if order < 0)."""
    if order < 0:
        return np.nan
    s = a[order] * b[order]
    for n in range(order - 1, -1, -1):
        s = s * rho + a[n] * b[n]
    return s


@numba.njit(inline="always", cache=True, error_model="numpy")
def order_from_log_tails(la, lb, lr, ltol):
    """Smallest m with (m+1) log|rho| + la[m] + lb[m] <= log(tol), or -1 if none < len(la).

    la, lb: half logarithms of the relative Hermite tails, 0.5 log(A_m / E f^2) (see
    :mod:`.hermite`): the truncation error of Mehler's series after degree m is at most
    |rho|^(m+1) sqrt(A_m B_m).  The bound decreases with m; an upward scan stops after the few
    terms typical entries need and reads only the head of each table (memory, not arithmetic, is
    what this costs across a kernel matrix)."""
    n = min(la.size, lb.size)
    if lr == -np.inf:
        return 0
    for m in range(n):
        if (m + 1) * lr + la[m] + lb[m] <= ltol:
            return m
    return -1


@numba.njit(inline="always", cache=True, error_model="numpy")
def mehler_pair(a, b, c, d, rho, m):
    """(sum_{n<=m} a_n b_n rho^n, sum_{n<=m} c_n d_n rho^n): Mehler's series for T and Tdot at once,
    each split into even and odd powers (Horner in rho^2), four independent chains for the CPU."""
    r2 = rho * rho
    te = 0.0
    to = 0.0
    de = 0.0
    do = 0.0
    top = m // 2
    if 2 * top + 1 <= m:
        to = a[2 * top + 1] * b[2 * top + 1]
        do = c[2 * top + 1] * d[2 * top + 1]
    for kk in range(top, -1, -1):
        ne = 2 * kk
        te = te * r2 + a[ne] * b[ne]
        de = de * r2 + c[ne] * d[ne]
        if kk < top or 2 * top + 1 > m:
            if kk < top:
                no = 2 * kk + 1
                to = to * r2 + a[no] * b[no]
                do = do * r2 + c[no] * d[no]
    return te + rho * to, de + rho * do
