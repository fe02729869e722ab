r"""Pivoted (rank-revealing) Cholesky factorisation of a small covariance matrix.

K = L L^T with symmetric pivoting on the largest remaining conditional variance d_i (the diagonal
of the Schur complement):  L[i, r] = sqrt(d_i) for the pivot i of column r, and for every row k not
yet pivoted L[k, r] = (K_ki - sum_(j<r) L_kj L_ij) / L[i, r], d_k <- max(d_k - L[k, r]^2, 0).

Error model: d_k is a conditional variance, >= 0 for a positive semi-definite K; rounding can make
the update slightly negative (of order eps max_i K_ii), so it is clamped at 0 (a clamped d is below
the stopping threshold either way, so the clamp changes no factor).  The factorisation stops when
the largest remaining d is <= 64 eps max_i K_ii: the rows left are in the span of the pivots up to
rounding (equal or proportional rows of K give a rank-deficient L and fewer integration variables).
Entries of L below 64 eps sqrt(max_i K_ii) are rounding noise and are set to 0.  With the pivoting
|L_kj| <= L_jj, so the columns come in decreasing order of scale.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["pivoted_cholesky"]

_EPS = float(np.finfo(np.float64).eps)


def pivoted_cholesky(K) -> tuple[np.ndarray, np.ndarray]:
    """(L, level): L (n, r) with K = L L^T (rows in the original order, columns in pivot order,
    r the numerical rank) and level (n,) int64, each row's last non-zero column (0 for a zero row):
    the variable z_k = (L xi)_k is resolved at level[k] when xi_0, xi_1, ... are integrated in turn."""
    K = np.asarray(K, dtype=np.float64)
    n = K.shape[0]
    scale = max(float(np.max(np.diag(K))), 0.0) if n else 0.0
    L = np.zeros((n, n))
    d = np.diag(K).astype(np.float64).copy()
    remaining = list(range(n))
    r = 0
    while remaining:
        i = max(remaining, key=lambda k: d[k])
        if d[i] <= 64 * _EPS * scale:
            break
        remaining.remove(i)
        L[i, r] = math.sqrt(d[i])
        for k in remaining:
            L[k, r] = (K[k, i] - L[k, :r] @ L[i, :r]) / L[i, r]
            d[k] = max(d[k] - L[k, r] ** 2, 0.0)
        r += 1
    L = L[:, :r]
    L[np.abs(L) < 64 * _EPS * math.sqrt(scale)] = 0.0
    level = np.zeros(n, dtype=np.int64)
    for k in range(n):
        nz = np.flatnonzero(L[k])
        level[k] = nz[-1] if nz.size else 0
    return L, level
