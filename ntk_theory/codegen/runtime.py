"""Scalar functions the generated kernels call besides :mod:`ntk_theory.numerics` (compiled twins of
:mod:`ntk_theory.gaussian.stable`'s erfcx and atan2, Mehler's series of a term without closed form from
its Hermite tables), and the mirror of a symmetric result."""

from __future__ import annotations

import math

import numba

from ..numerics.mehler import mehler_pair, order_from_log_tails


@numba.njit(cache=True, error_model="numpy")
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


# atan on [0, 0.66] (Cephes atan.c, S. L. Moshier): atan(x) = x + x^3 P(x^2)/Q(x^2), ~2e-16 relative
_P0, _P1, _P2, _P3, _P4 = -8.750608600031904122785e-01, -1.615753718733365076637e01, -7.500855792314704667340e01, -1.228866684490136173410e02, -6.485021904942025371773e01
_Q0, _Q1, _Q2, _Q3, _Q4 = 2.485846490142306297962e01, 1.650270098316988542046e02, 4.328810604912902668951e02, 4.853903996359136964868e02, 1.945506571482613964425e02
_T3P8 = 2.41421356237309504880  # tan(3 pi / 8)
_MOREBITS = 6.123233995736765886130e-17  # pi/2 = 1.5707963267948966 + _MOREBITS


@numba.njit(inline="always", cache=True, error_model="numpy")
def atan2(y, x):
    """atan2 without branches that stop vectorisation (Cephes' atan with range reduction, and the
    quadrant fix-up by selects); matches libm to ~1 ulp.  Used by generated kernels."""
    ay = abs(y)
    ax = abs(x)
    # t = min/max in [0, 1]; angle = atan(t) or pi/2 - atan(t)
    swap = ay > ax
    num = ay if not swap else ax
    den = ax if not swap else ay
    t = num / den if den > 0.0 else 0.0
    # reduce [tan(pi/8), 1] to [-0.41, 0] via (t - 1)/(t + 1) + pi/4
    big = t > 0.66
    z = (t - 1.0) / (t + 1.0) if big else t
    z2 = z * z
    p = (((_P0 * z2 + _P1) * z2 + _P2) * z2 + _P3) * z2 + _P4
    q = ((((z2 + _Q0) * z2 + _Q1) * z2 + _Q2) * z2 + _Q3) * z2 + _Q4
    r = z + z * z2 * p / q
    r = r + (0.7853981633974483 + 0.5 * _MOREBITS) if big else r
    r = (1.5707963267948966 - r) + _MOREBITS if swap else r
    r = 3.141592653589793 - r + 2.0 * _MOREBITS if x < 0.0 else r
    return -r if y < 0.0 else r


@numba.njit(inline="always", cache=True, error_model="numpy")
def mehler_orders(q, i, j, k11, k22, k12, TA, TB, ltol):
    """(rho, log|rho|, m, m2) of table pair q at row i, column j: rho = k12 / sqrt(k11 k22) (0 if that is 0),
    log min(|rho|, 1), and the smallest degrees whose Parseval tail bound |rho|^(m+1) sqrt(A_m B_m) is below
    the tolerance (log: ltol) for F (tables 2q) and F' (tables 2q + 1); -1 where the tables end first
    (:func:`ntk_theory.numerics.mehler.order_from_log_tails`)."""
    b = math.sqrt(k11) * math.sqrt(k22)
    rho = k12 / b if b > 0.0 else 0.0
    lr = math.log(min(abs(rho), 1.0))
    m = order_from_log_tails(TA[2 * q, i], TB[2 * q, j], lr, ltol)
    m2 = order_from_log_tails(TA[2 * q + 1, i], TB[2 * q + 1, j], lr, ltol)
    return rho, lr, m, m2


@numba.njit(inline="always", cache=True, error_model="numpy")
def hermite_term(q, i, j, k11, k22, k12, HA, TA, SA, HB, TB, SB, ltol, tol):
    """(T, Tdot, error estimate) = (E[F(u) F(v)], E[F'(u) F'(v)], e) of table pair q at row i, column j,
    (u, v) ~ N(0, [[k11, k12], [k12, k22]]) with |k12| <= sqrt(k11 k22), by Mehler's series
    sum_n a_n b_n rho^n (:func:`ntk_theory.numerics.mehler.mehler_pair`).

    Tables (rows of X1: A, columns of X2: B): H[2q], H[2q + 1] the Hermite coefficients of F and F' at
    the row's variance; T[.] their half log relative tails (:mod:`ntk_theory.numerics.hermite`); S[., row]
    = (sqrt(E F^2), l2 error of the coefficients).  Degree: the smallest m whose Parseval tail bound
    |rho|^(m+1) sqrt(A_m B_m) is below tol (relative to sqrt(E F(u)^2 E F(v)^2)), for F and F'; if there is
    none within the tables, (NaN, NaN, 0) (the caller integrates the entry directly).  Error estimate:
    tol sqrt(E F(u)^2 E F(v)^2) + err_a sqrt(E F(v)^2) + err_b sqrt(E F(u)^2), and the same for F'."""
    rho, _, m, m2 = mehler_orders(q, i, j, k11, k22, k12, TA, TB, ltol)
    s = 2 * q
    d = 2 * q + 1
    if m < 0 or m2 < 0:
        return math.nan, math.nan, 0.0
    T, Tdot = mehler_pair(HA[s, i], HB[s, j], HA[d, i], HB[d, j], rho, max(m, m2))
    e = (tol * SA[s, i, 0] * SB[s, j, 0] + SA[s, i, 1] * SB[s, j, 0] + SB[s, j, 1] * SA[s, i, 0]
         + tol * SA[d, i, 0] * SB[d, j, 0] + SA[d, i, 1] * SB[d, j, 0] + SB[d, j, 1] * SA[d, i, 0])
    return T, Tdot, e
