r"""Gaussian expectations E[f(u) g(v)] by Mehler's formula, with compiled (Numba) kernels.

For (u, v) ~ N(0, [[k11, k12], [k12, k22]]), rho = k12 / sqrt(k11 k22) and the normalized
probabilists' Hermite polynomials h_n = He_n / sqrt(n!)  (h_0 = 1, h_1 = x,
h_(n+1) = (x h_n - sqrt(n) h_(n-1)) / sqrt(n+1)), Mehler's formula gives

    E[f(u) g(v)] = sum_n a_n(k11) b_n(k22) rho^n,    a_n(k) = E[f(sqrt(k) x) h_n(x)], x ~ N(0, 1),

and b_n likewise for g.  The coefficients depend on one variance only, so a kernel matrix whose
entry (i, j) has k11 = K_ii, k22 = K_jj needs one coefficient table per row variance and one per
column variance; every entry is then a Horner sum (:func:`series`).

Truncation bound
----------------
Parseval: sum_n a_n^2 = E[f^2].  With the tails A_m = sum_(n>m) a_n^2 (and B_m for g), Cauchy-Schwarz
bounds the error of stopping after degree M by

    |sum_(n>M) a_n b_n rho^n| <= |rho|^(M+1) sqrt(A_M B_M) <= |rho|^(M+1) sqrt(E f^2 E g^2).

:func:`coefficients` reports per variance the order M_f, the first m with A_m <= tol^2 E f^2
(-1 if none <= max_order), and :func:`series_order` takes M = min(M_f, M_g, M_rho), M_rho the
first m with |rho|^(m+1) <= tol, so that the truncation error is at most tol sqrt(E f^2 E g^2).
:attr:`HermiteTable.tail` holds the estimated relative tails A_m / E f^2 themselves, and
:func:`series_order_tail` takes the smallest M with |rho|^(M+1) sqrt(A_M B_M) <= tol
sqrt(E f^2 E g^2): never more terms, and a series where :func:`series_order` finds none for
functions whose coefficients decay slowly (tanh at k = 1, max_order 128: A_128 ~ 1e-14 E f^2,
so M = 107 serves every |rho| <= 1, where :func:`series_order` needs |rho| <= 0.79).
Entries where no M <= max_order qualifies (kinked or sharp f, g with |rho| close to 1) go to the
compiled 2-D quadrature :func:`expect2_direct`.

The tails cannot be obtained as E f^2 - sum_(n<=m) a_n^2 (cancellation leaves ~1e-16 E f^2, far
above tol^2 E f^2), so they are summed from the computed coefficients,
A_m = sum_(m<n<=N) a_n^2 + T (N = max_order), and the unseen part T beyond N is extrapolated
from the sums S2 over (N/2, 3N/4] and S3 over (3N/4, N] with the power law a_n^2 ~ n^-p that
fits them (T = S3 / ((4/3)^(p-1) - 1); infinite if p <= 1).  Among the decays with those two
block sums a power law has the heaviest tail, so this is conservative for the geometric or
exp(-c sqrt(n)) decays of analytic f (exact for the n^(-5/2) of ReLU, n^(-3/2) of a step).
Where S3 is at the level of the coefficients' errors, T = S3.  Where Parseval's residual
E f^2 - sum_(n<=N) a_n^2 is resolvable (above 1e-14 E f^2 + 4 error sqrt(E f^2)) and larger, it
replaces T.  Finally sqrt(A_m) is increased by the coefficients' error estimate (the computed
coefficients determine the tail only to that accuracy).  ``order`` is the first m with
A_m <= tol^2 E f^2, ``tail`` is min(A_m / E f^2, 1).

Coefficients
------------
Smooth f (no kinks): Gauss-Hermite (probabilists') rules with Q1 = 2N + 64 and
Q2 = Q1 + N/2 + 32 nodes (scipy's nodes, refined by Newton's method in extended precision, with
Christoffel weights: scipy's asymptotic nodes for Q > 150 alone limit the coefficients to ~1e-13);
the Q2 values are returned and |a(Q2) - a(Q1)|_2 is the error estimate.  For speed the Q1 rule
runs only on every 16th variance in sorted order and on the largest; the other variances get the
largest of those estimates relative to sqrt(E f^2), times their own sqrt(E f^2).  Gauss-Hermite's
error grows with the variance (f(sqrt(k) x) sharpens), so this is trusted only below a checked
variance that passed: every variance below a checked one that failed is checked itself.  Kinked f, and smooth f
where Gauss-Hermite does not reach 64 eps sqrt(E f^2) (sharp f at large variance): composite
Gauss-Legendre panels on [-38, 38] split at 0 and at the kinks c / sqrt(k), graded geometrically
(ratio 2) from width 1/sqrt(k) at each of those points (f is assumed to vary on the unit scale
of u = sqrt(k) x around 0 and its kinks) up to w = min(1, 12/sqrt(N+1)) (which resolves the
oscillation of h_N), with 14- and 20-point rules per panel (the 20-point values are returned,
the l2 difference is the error estimate).  Nodes whose weighted f^2 is below 1e-36 of the total
are dropped before the (costly) recurrence: by Cauchy-Schwarz they change no a_n by more than
1e-18 sqrt(E f^2) (this is added to the estimate).  The recurrence carries y_j = c_j h_n(x_j)
(c_j = weight times f at node j), vectorised over nodes: |y_j| <= |c_j| exp(x_j^2 / 4) does not
overflow.  E f^2 is computed separately, by the 1-D rule of the direct quadrature.

:attr:`HermiteTable.error` is the l2 norm over n of the estimated coefficient errors (plus
eps sqrt(E f^2)), which is what the series needs: by Cauchy-Schwarz the coefficient errors change
the value of the series by at most err_a sqrt(E g^2) + err_b sqrt(E f^2) + err_a err_b.

Direct quadrature
-----------------
:func:`expect1_direct` and :func:`expect2_direct` integrate in standard units x ~ N(0, 1) on
[-12, 12] (Gaussian mass outside 4e-33; widened to [-38, 38] if the terms beyond |x| = 11 are
not below 1e-18 of the total, e.g. for exponentially growing f) with composite Gauss-Legendre
panels at most 2 wide, split at 0 and at the kinks and graded geometrically (ratio 2) towards
them from the unit scale of the function (1/sqrt(k) in x).  Everything is computed with 14- and
20-point rules; the 20-point value is returned, and the error estimate is the difference plus
the terms beyond |x| = 11 plus 16 eps E|f g| (pessimistic: it bounds the 14-point rule).
E[f(u) g(v)] is computed by conditioning on u:

    E = int phi(x) f(sqrt(k11) x) G(x) dx,   G(x) = int phi(z) g(a x + b z) dz,
    a = k12 / sqrt(k11),   b = sqrt((k11 k22 - k12^2) / k11)   (error-free products: Dekker),

the inner integral split at z = (c - a x) / b for every kink c of g (and 0), the outer one also
at x = c / a, where G has a kink smoothed over a width b / |a| (the grading there starts at that
width, so rho -> +-1 is resolved).  The arguments of f and g at nodes next to a kink are computed
from the kink value and the node's offset (c + slope * offset), and c - a x from an error-free
residual at the panel end, so no node lands on the wrong side of a kink through rounding.
Special cases: k11 = 0 or k22 = 0 (the variable is 0), k12 = 0 (a product of 1-D integrals),
k11 k22 = k12^2 (rho = +-1: the 1-D integral of f(sqrt(k11) x) g(+-sqrt(k22) x)).

Numba
-----
Every public function except :func:`coefficients` is ``numba.njit`` compiled and callable from
other njit code.  f and g are ``numba.njit`` functions of one float64 (lazy dispatchers are
fine); the quadrature entry points take them as first-class functions
(``FunctionType(float64(float64))``, explicit signatures, compiled once when this module is
first imported and cached on disk), so a new f costs no recompilation of the quadrature, and f is
called through a pointer.  An njit caller of :func:`expect2_direct` links its machine code, about
1.5 s of compilation for that caller.  Kink arrays may be any 1-D float64 arrays (read-only
globals too).
"""

from __future__ import annotations

import functools
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import types
from numpy.polynomial.legendre import leggauss
from scipy.special import roots_hermitenorm

from ..gaussian.mehler import HermiteTable, tails_and_orders  # shared with the NumPy route
from ..numerics.compensated_numba import det2, residual

__all__ = [
    "HermiteTable",
    "coefficients",
    "expect1_direct",
    "expect2_direct",
    "series",
    "series_order",
    "series_order_tail",
]

_EPS = 2.220446049250313e-16
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_L_DIRECT = 12.0  # half-width of the x and z ranges of the direct quadrature
_L_MAX = 38.0  # the widest range (phi underflows beyond 38.6)
_W_DIRECT = 2.0  # largest panel width of the direct quadrature
_DMIN = 1e-15  # smallest grading width
_MAXE = 4096  # most panel edges of one mesh
_DROP = 1e-36  # nodes with weighted f^2 below this fraction of the total are dropped
_CHECK_EVERY = 16  # the two-rule error estimate runs on every 16th variance (and the extremes)

_F64 = types.float64
_FN = types.FunctionType(_F64(_F64))  # f, g: compiled functions float64 -> float64 (first-class)
_VEC = _F64[::1]
_PAIR = types.UniTuple(_F64, 2)
_KINKS = types.Array(_F64, 1, "A", readonly=True)  # accepts any 1-D float64 array

_M_LO, _M_HI = 14, 20
_GX0, _GW0 = (np.ascontiguousarray(a) for a in leggauss(_M_LO))
_GX1, _GW1 = (np.ascontiguousarray(a) for a in leggauss(_M_HI))


# ----------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------


@numba.njit(cache=True, error_model="numpy")
def _with_zero(kinks):
    """0 followed by the kinks (0 is always a split point)."""
    out = np.empty(kinks.size + 1)
    out[0] = 0.0
    for i in range(kinks.size):
        out[i + 1] = kinks[i]
    return out


@numba.njit(cache=True, error_model="numpy")
def _mesh(px, ps, lo, hi, wmax):
    """Panel edges of [lo, hi] split at the points px, graded geometrically (ratio 2) from width
    ps[i] at px[i] up to wmax; points outside (lo, hi) or NaN are ignored.  Returns (edges, n)."""
    n = px.size
    pts = np.empty(n + 2)
    sc = np.empty(n + 2)
    k = 1
    pts[0] = lo
    sc[0] = wmax
    for i in range(n):
        x = px[i]
        if x > lo and x < hi:
            pts[k] = x
            sc[k] = min(max(ps[i], _DMIN * max(1.0, abs(x))), wmax)
            k += 1
    for i in range(2, k):  # insertion sort of pts[1:k]
        x = pts[i]
        s = sc[i]
        j = i - 1
        while j >= 1 and pts[j] > x:
            pts[j + 1] = pts[j]
            sc[j + 1] = sc[j]
            j -= 1
        pts[j + 1] = x
        sc[j + 1] = s
    m = 1
    for i in range(1, k):  # merge equal points (smallest scale)
        if pts[i] == pts[m - 1]:
            sc[m - 1] = min(sc[m - 1], sc[i])
        else:
            pts[m] = pts[i]
            sc[m] = sc[i]
            m += 1
    pts[m] = hi
    sc[m] = wmax
    m += 1
    edges = np.empty(_MAXE)
    tl = np.empty(80)
    tr = np.empty(80)
    edges[0] = lo
    ne = 1
    for i in range(m - 1):
        A = pts[i]
        B = pts[i + 1]
        mid = 0.5 * (A + B)
        nl = 0
        e = A
        w = sc[i]
        while w < wmax and e + w < mid and nl < 80:
            e += w
            tl[nl] = e
            nl += 1
            w *= 2.0
        nr = 0
        e2 = B
        w = sc[i + 1]
        while w < wmax and e2 - w > mid and nr < 80:
            e2 -= w
            tr[nr] = e2
            nr += 1
            w *= 2.0
        gap = e2 - e
        nu = max(1, int(math.ceil(gap / wmax * (1.0 - 1e-12))))
        if ne + nl + nu + nr + 1 > _MAXE:
            raise ValueError("hermite: too many quadrature panels")
        for j in range(nl):
            edges[ne] = tl[j]
            ne += 1
        for j in range(1, nu):
            edges[ne] = e + gap * (j / nu)
            ne += 1
        for j in range(nr - 1, -1, -1):
            edges[ne] = tr[j]
            ne += 1
        edges[ne] = B
        ne += 1
    return edges, ne


@numba.njit(cache=True, error_model="numpy")
def _anchors(edges, ne, slope, offset, feats, resid):
    """Argument offset + slope x at each edge, exactly the feature value c where the edge is the
    feature's location resid / slope (resid = c - offset)."""
    out = np.empty(ne)
    for e in range(ne):
        out[e] = offset + slope * edges[e]
    if slope != 0.0:
        for j in range(feats.size):
            xc = resid[j] / slope
            for e in range(ne):
                if edges[e] == xc:
                    out[e] = feats[j]
    return out


@numba.njit(cache=True, error_model="numpy")
def _rule(level):
    if level == 0:
        return _GX0, _GW0
    return _GX1, _GW1


# ----------------------------------------------------------------------------------------------
# Nodes (independent of f and g: compiled once)
# ----------------------------------------------------------------------------------------------


@numba.njit(cache=True, error_model="numpy")
def _line_nodes(L, wmax, sf, of, cf, rf, sg, og, cg, rg, level):
    """Nodes of int phi(x) F(of + sf x) G(og + sg x) dx over [-L, L] (G absent if sg == 0),
    panels at most wmax wide.

    cf: the features (0, kinks) of F, rf = cf - of (accurate); likewise cg, rg.  The mesh is split
    at the features' locations x = r / s and graded towards them from the width 1 / |s|.
    Returns x, w (Gauss-Legendre weight times phi(x)), u (argument of F), v (argument of G).
    """
    nf = cf.size
    ng = cg.size if sg != 0.0 else 0
    px = np.empty(nf + ng)
    ps = np.empty(nf + ng)
    for j in range(nf):
        px[j] = rf[j] / sf if sf != 0.0 else np.nan
        ps[j] = 1.0 / abs(sf) if sf != 0.0 else wmax
    for j in range(ng):
        px[nf + j] = rg[j] / sg
        ps[nf + j] = 1.0 / abs(sg)
    edges, ne = _mesh(px, ps, -L, L, wmax)
    uE = _anchors(edges, ne, sf, of, cf, rf)
    vE = _anchors(edges, ne, sg, og, cg, rg) if sg != 0.0 else uE
    X, W = _rule(level)
    M = (ne - 1) * X.size
    xs = np.empty(M)
    ws = np.empty(M)
    us = np.empty(M)
    vs = np.empty(M)
    k = 0
    for p in range(ne - 1):
        A = edges[p]
        B = edges[p + 1]
        hw = 0.5 * (B - A)
        for i in range(X.size):
            t = X[i]
            if t <= 0.0:
                d = hw * (1.0 + t)
                x = A + d
                us[k] = uE[p] + sf * d
                vs[k] = vE[p] + sg * d
            else:
                d = hw * (1.0 - t)
                x = B - d
                us[k] = uE[p + 1] - sf * d
                vs[k] = vE[p + 1] - sg * d
            xs[k] = x
            ws[k] = hw * W[i] * _INV_SQRT_2PI * math.exp(-0.5 * x * x)
            k += 1
    return xs, ws, us, vs


@numba.njit(cache=True, error_model="numpy")
def _grow(a, n):
    """a with capacity at least n (doubling), contents kept."""
    if a.size >= n:
        return a
    b = np.empty(max(n, 2 * a.size))
    for i in range(a.size):
        b[i] = a[i]
    return b


@numba.njit(cache=True, error_model="numpy")
def _pair_nodes(L, sf, a, b, cf, cg, level):
    """Nodes of int phi(x) f(sf x) int phi(z) g(a x + b z) dz dx.

    Outer: split at the features of f (x = c / sf, graded from 1 / sf) and the near-kinks of
    G (x = c / a, graded from b / |a|).  Inner, per outer node: split at z = (c - a x) / b, with
    c - a x from an error-free residual at the nearer panel end.
    Returns xo, wo, uo (outer), start (inner nodes of outer node i: start[i]:start[i+1]),
    zi, wi, vi (inner).
    """
    nf = cf.size
    ng = cg.size
    px = np.empty(nf + ng)
    ps = np.empty(nf + ng)
    for j in range(nf):
        px[j] = cf[j] / sf
        ps[j] = 1.0 / sf
    for j in range(ng):
        px[nf + j] = cg[j] / a
        ps[nf + j] = b / abs(a)
    edges, ne = _mesh(px, ps, -L, L, _W_DIRECT)
    uE = _anchors(edges, ne, sf, 0.0, cf, cf)
    R = np.empty((ne, ng))
    for e in range(ne):
        for j in range(ng):
            R[e, j] = residual(cg[j], a, edges[e])
    X, W = _rule(level)
    M = (ne - 1) * X.size
    xo = np.empty(M)
    wo = np.empty(M)
    uo = np.empty(M)
    start = np.empty(M + 1, dtype=np.int64)
    cap = M * (int(2 * L / _W_DIRECT) + 8) * X.size
    zi = np.empty(cap)
    wi = np.empty(cap)
    vi = np.empty(cap)
    r = np.empty(ng)
    k = 0
    n = 0
    for p in range(ne - 1):
        A = edges[p]
        B = edges[p + 1]
        hw = 0.5 * (B - A)
        for i in range(X.size):
            t = X[i]
            if t <= 0.0:
                d = hw * (1.0 + t)
                x = A + d
                uo[k] = uE[p] + sf * d
                for j in range(ng):
                    r[j] = R[p, j] - a * d
            else:
                d = hw * (1.0 - t)
                x = B - d
                uo[k] = uE[p + 1] - sf * d
                for j in range(ng):
                    r[j] = R[p + 1, j] + a * d
            xo[k] = x
            wo[k] = hw * W[i] * _INV_SQRT_2PI * math.exp(-0.5 * x * x)
            start[k] = n
            z, w, v, _ = _line_nodes(L, _W_DIRECT, b, a * x, cg, r, 0.0, 0.0, cg, r, level)
            if n + z.size > zi.size:
                zi = _grow(zi, n + z.size)
                wi = _grow(wi, n + z.size)
                vi = _grow(vi, n + z.size)
            for j in range(z.size):
                zi[n + j] = z[j]
                wi[n + j] = w[j]
                vi[n + j] = v[j]
            n += z.size
            k += 1
    start[M] = n
    return xo, wo, uo, start, zi[:n], wi[:n], vi[:n]


@numba.njit(cache=True, error_model="numpy")
def _line_sum(x, w, F, G, L):
    """(sum w F G, sum |w F G|, the part of the latter from |x| > L - 1)."""
    s = 0.0
    l1 = 0.0
    tail = 0.0
    for i in range(x.size):
        t = w[i] * F[i] * G[i]
        s += t
        l1 += abs(t)
        if abs(x[i]) > L - 1.0:
            tail += abs(t)
    return s, l1, tail


@numba.njit(cache=True, error_model="numpy")
def _pair_sum(xo, wo, F, start, zi, wi, G, L):
    """(value, sum |terms|, the part of the latter from |x| > L - 1 or |z| > L - 1)."""
    s = 0.0
    l1 = 0.0
    tail = 0.0
    for i in range(xo.size):
        gs = 0.0
        gl = 0.0
        gt = 0.0
        for j in range(start[i], start[i + 1]):
            t = wi[j] * G[j]
            gs += t
            gl += abs(t)
            if abs(zi[j]) > L - 1.0:
                gt += abs(t)
        wf = wo[i] * F[i]
        s += wf * gs
        l1 += abs(wf) * gl
        tail += abs(wf) * (gl if abs(xo[i]) > L - 1.0 else gt)
    return s, l1, tail


@numba.njit(cache=True, error_model="numpy")
def _evaluate(f, args, scale):
    """f(scale * args[i]) for every i."""
    out = np.empty(args.size)
    for i in range(args.size):
        out[i] = f(scale * args[i])
    return out


@numba.njit(cache=True, error_model="numpy")
def _ones(n):
    return np.ones(n)


# ----------------------------------------------------------------------------------------------
# Direct quadrature (the f-, g-specific parts are thin drivers)
# ----------------------------------------------------------------------------------------------


@numba.njit(cache=True, error_model="numpy")
def _finish(v0, v1, l1, tail):
    """(value, error): the 20-point value, |I20 - I14| + the range-end terms + 16 eps sum|terms|."""
    return v1, abs(v1 - v0) + tail + 16.0 * _EPS * l1


@numba.njit(cache=True, error_model="numpy")
def _need_wider(L, l1, tail):
    return L < _L_MAX and tail > 1e-18 * l1


@numba.njit(cache=True, error_model="numpy")
def _line2(f, g, sf, sg, cf, cg):
    """E[f(sf x) g(sg x)] (g absent if sg == 0): (value, error); the range grows from [-12, 12]
    to [-38, 38] if the terms near its ends are not negligible."""
    L = _L_DIRECT
    while True:
        v0 = 0.0
        v1 = 0.0
        l1 = 0.0
        tail = 0.0
        for level in range(2):
            x, w, u, v = _line_nodes(L, _W_DIRECT, sf, 0.0, cf, cf, sg, 0.0, cg, cg, level)
            F = _evaluate(f, u, 1.0)
            G = _evaluate(g, v, 1.0) if sg != 0.0 else _ones(v.size)
            s, l1, tail = _line_sum(x, w, F, G, L)
            if level == 0:
                v0 = s
            else:
                v1 = s
        if not _need_wider(L, l1, tail):
            return _finish(v0, v1, l1, tail)
        L = _L_MAX


@numba.njit(_PAIR(_FN, _F64, _KINKS), cache=True, error_model="numpy")
def expect1_direct(f, k, kinks):
    """E[f(u)], u ~ N(0, k): (value, estimated absolute error).

    Composite Gauss-Legendre split at 0 and the kinks (see the module docstring); f a numba.njit
    function of one float64, kinks a float64 array (possibly empty).  k = 0 gives f(0) exactly.
    """
    if not (k >= 0.0) or not math.isfinite(k):
        raise ValueError("expect1_direct: k must be a finite number >= 0")
    if k == 0.0:
        return f(0.0), 0.0
    c = _with_zero(kinks)
    return _line2(f, f, math.sqrt(k), 0.0, c, c)


@numba.njit(cache=True, error_model="numpy")
def _determinant(k11, k22, k12):
    """k11 k22 - k12^2 with error-free products, clipped at 0 (ValueError if clearly negative)."""
    det = det2(k11, k22, k12)
    if det < -1e-12 * (k11 * k22):
        raise ValueError("expect2_direct: covariance is not positive semi-definite (k12^2 > k11 k22)")
    return max(det, 0.0)


@numba.njit(cache=True, error_model="numpy")
def _check_pair(k11, k22, k12):
    if not (k11 >= 0.0 and k22 >= 0.0) or not (math.isfinite(k11) and math.isfinite(k22)):
        raise ValueError("expect2_direct: k11 and k22 must be finite numbers >= 0")
    if not math.isfinite(k12):
        raise ValueError("expect2_direct: k12 must be finite")


@numba.njit(cache=True, error_model="numpy")
def _product(vf, ef, vg, eg):
    value = vf * vg
    return value, abs(vf) * eg + abs(vg) * ef + ef * eg + 2.0 * _EPS * abs(value)


@numba.njit(_PAIR(_FN, _FN, _F64, _F64, _F64, _KINKS, _KINKS), cache=True, error_model="numpy")
def expect2_direct(f, g, k11, k22, k12, kinks_f, kinks_g):
    """E[f(u) g(v)], (u, v) ~ N(0, [[k11, k12], [k12, k22]]): (value, estimated absolute error).

    Nested composite Gauss-Legendre quadrature (see the module docstring); f, g are numba.njit
    functions of one float64, kinks_f, kinks_g float64 arrays (possibly empty); 0 is always a
    split point.  Exact special cases k11 = 0, k22 = 0, k12 = 0, rho = +-1.
    """
    _check_pair(k11, k22, k12)
    det = _determinant(k11, k22, k12)
    if k11 == 0.0:
        vg, eg = expect1_direct(g, k22, kinks_g)
        return _product(f(0.0), 0.0, vg, eg)
    if k22 == 0.0:
        vf, ef = expect1_direct(f, k11, kinks_f)
        return _product(vf, ef, g(0.0), 0.0)
    if k12 == 0.0:
        vf, ef = expect1_direct(f, k11, kinks_f)
        vg, eg = expect1_direct(g, k22, kinks_g)
        return _product(vf, ef, vg, eg)
    cf = _with_zero(kinks_f)
    cg = _with_zero(kinks_g)
    sf = math.sqrt(k11)
    if det == 0.0:
        return _line2(f, g, sf, math.copysign(math.sqrt(k22), k12), cf, cg)
    a = k12 / sf
    b = math.sqrt(det / k11)
    L = _L_DIRECT
    while True:
        v0 = 0.0
        v1 = 0.0
        l1 = 0.0
        tail = 0.0
        for level in range(2):
            xo, wo, uo, start, zi, wi, vi = _pair_nodes(L, sf, a, b, cf, cg, level)
            s, l1, tail = _pair_sum(xo, wo, _evaluate(f, uo, 1.0), start, zi, wi, _evaluate(g, vi, 1.0), L)
            if level == 0:
                v0 = s
            else:
                v1 = s
        if not _need_wider(L, l1, tail):
            return _finish(v0, v1, l1, tail)
        L = _L_MAX


# ----------------------------------------------------------------------------------------------
# The series
# ----------------------------------------------------------------------------------------------


@numba.njit(cache=True, error_model="numpy")
def series(a, b, rho, order):
    """sum_(n <= order) a[n] b[n] rho^n by Horner (order < len(a), len(b) unchecked; NaN if order < 0)."""
    if order < 0:
        return np.nan
    s = a[order] * b[order]
    for n in range(order - 1, -1, -1):
        s = s * rho + a[n] * b[n]
    return s


@numba.njit(cache=True, error_model="numpy")
def series_order(order_a, order_b, rho, tol, max_order):
    """M = min(M_f, M_g, M_rho), or -1 if that exceeds max_order.

    order_a, order_b: the orders of the two coefficient tables (-1: none within max_order, i.e.
    infinite); M_rho: the first m with |rho|^(m+1) <= tol (none if |rho| >= 1).  With A_M <= tol^2
    E f^2 (M >= M_f), B_M <= tol^2 E g^2, or |rho|^(M+1) <= tol, the truncation error
    |rho|^(M+1) sqrt(A_M B_M) is at most tol sqrt(E f^2 E g^2) (coefficients' tol for the first two).
    """
    big = max_order + 1
    M = big
    if order_a >= 0 and order_a < M:
        M = order_a
    if order_b >= 0 and order_b < M:
        M = order_b
    r = abs(rho)
    if r < 1.0:
        if r <= tol:
            m_rho = 0
        else:
            est = math.log(tol) / math.log(r) - 1.0
            if est > big + 2:
                m_rho = big
            else:
                m_rho = max(int(math.ceil(est)), 0)
                while m_rho > 0 and r ** m_rho <= tol:
                    m_rho -= 1
                while m_rho < big and r ** (m_rho + 1) > tol:
                    m_rho += 1
        if m_rho < M:
            M = m_rho
    if M > max_order:
        return -1
    return M


@numba.njit(cache=True, error_model="numpy")
def series_order_tail(tail_a, tail_b, rho, tol):
    """The smallest M < len(tail_a) with |rho|^(M+1) sqrt(tail_a[M] tail_b[M]) <= tol, or -1.

    tail_a, tail_b: rows of :attr:`HermiteTable.tail` (relative tails A_m / E f^2, B_m / E g^2),
    so the truncation error is at most tol sqrt(E f^2 E g^2).  Never larger than
    :func:`series_order` (tails are <= 1, and <= tol^2 from the order on), and much smaller for
    functions whose coefficients decay slowly but steadily (tanh, softplus at large variance).
    Binary search: the bound decreases with M.
    """
    r = min(abs(rho), 1.0)  # |rho| > 1 only by rounding
    n = min(tail_a.size, tail_b.size)
    if r == 0.0:
        return 0
    lr = math.log(r)

    def ok(m):
        return math.exp((m + 1) * lr) * math.sqrt(tail_a[m] * tail_b[m]) <= tol

    if not ok(n - 1):
        return -1
    lo = -1  # ok(lo) is False (or lo = -1)
    hi = n - 1  # ok(hi) is True
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


# ----------------------------------------------------------------------------------------------
# Coefficients
# ----------------------------------------------------------------------------------------------


@numba.njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _project(x, c, N, out):
    """out[n] = sum_j c_j h_n(x_j), n = 0..N, carrying y_j = c_j h_n(x_j) through the recurrence."""
    Q = x.size
    y = c.copy()
    yp = np.zeros(Q)
    for n in range(N + 1):
        s = 0.0
        for j in range(Q):
            s += y[j]
        out[n] = s
        if n == N:
            break
        p = math.sqrt(n / (n + 1.0))
        q = 1.0 / math.sqrt(n + 1.0)
        for j in range(Q):
            t = x[j] * y[j] * q - p * yp[j]
            yp[j] = y[j]
            y[j] = t


@numba.njit(cache=True, error_model="numpy")
def _weighted_project(x, w, F, N, out):
    """out = coefficients from nodes x, weights w (N(0,1) measure), values F, dropping nodes whose
    w F^2 is below _DROP of the total; returns (sum w F^2, dropped w F^2)."""
    M = x.size
    wF2 = np.empty(M)
    total = 0.0
    for j in range(M):
        wF2[j] = w[j] * F[j] * F[j] if w[j] != 0.0 else 0.0
        total += wF2[j]
    keep = np.empty(M, dtype=np.bool_)
    n = 0
    dropped = 0.0
    for j in range(M):
        keep[j] = wF2[j] > _DROP * total
        if keep[j]:
            n += 1
        else:
            dropped += wF2[j]
    xk = np.empty(n)
    ck = np.empty(n)
    i = 0
    for j in range(M):
        if keep[j]:
            xk[i] = x[j]
            ck[i] = w[j] * F[j]
            i += 1
    _project(xk, ck, N, out)
    return total, dropped


@numba.njit(cache=True, error_model="numpy")
def _l2_diff(a, b):
    s = 0.0
    for n in range(a.size):
        s += (a[n] - b[n]) ** 2
    return math.sqrt(s)


@numba.njit(
    types.void(
        _FN, _VEC, _KINKS, types.int64, _VEC, _VEC, _VEC, _VEC, _F64, _F64[:, ::1], _VEC, _VEC, _F64,
        types.Array(types.boolean, 1, "C", readonly=True), types.int8[::1],
    ),
    cache=True,
    error_model="numpy",
    nogil=True,
)
def _coef_table(f, variances, kinks, N, xs0, ws0, xs1, ws1, wmax, coef, err, norm2, tol_gh, check, method):
    """Fill coef, err and norm2 for every variance (Gauss-Hermite for smooth f, else, or if that
    is not accurate, composite Gauss-Legendre).  For smooth f, variances with ``check`` False use
    the finer Gauss-Hermite rule alone and get err = NaN (the caller fills in the estimate of the
    checked variances).  method[i]: 0 Gauss-Hermite unchecked, 1 Gauss-Hermite checked,
    2 Gauss-Legendre panels (Gauss-Hermite not accurate enough or f kinked)."""
    cf = _with_zero(kinks)
    smooth = kinks.size == 0
    a0 = np.empty(N + 1)
    a1 = np.empty(N + 1)
    for i in range(variances.size):
        k = variances[i]
        if k == 0.0:
            f0 = f(0.0)
            coef[i, :] = 0.0
            coef[i, 0] = f0
            method[i] = 1
            err[i] = 0.0
            norm2[i] = f0 * f0
            continue
        sk = math.sqrt(k)
        v, e = _line2(f, f, sk, sk, cf, cf)
        norm2[i] = v
        scale = math.sqrt(max(v, 0.0))
        best = np.inf
        if smooth and not check[i]:
            _, d1 = _weighted_project(xs1, ws1, _evaluate(f, xs1, sk), N, a1)
            coef[i, :] = a1
            err[i] = np.nan
            method[i] = 0
            continue
        if smooth:
            _, d0 = _weighted_project(xs0, ws0, _evaluate(f, xs0, sk), N, a0)
            _, d1 = _weighted_project(xs1, ws1, _evaluate(f, xs1, sk), N, a1)
            best = _l2_diff(a0, a1) + math.sqrt(max(d0, d1) * (N + 1))
            coef[i, :] = a1
            method[i] = 1
        if best > tol_gh * scale:
            d0 = 0.0
            d1 = 0.0
            for level in range(2):
                x, w, u, _ = _line_nodes(_L_MAX, wmax, sk, 0.0, cf, cf, 0.0, 0.0, cf, cf, level)
                F = _evaluate(f, u, 1.0)
                if level == 0:
                    _, d0 = _weighted_project(x, w, F, N, a0)
                else:
                    _, d1 = _weighted_project(x, w, F, N, a1)
            e_gl = _l2_diff(a0, a1) + math.sqrt(max(d0, d1) * (N + 1))
            if e_gl < best:
                best = e_gl
                coef[i, :] = a1
            method[i] = 2
        err[i] = best + _EPS * scale


@functools.lru_cache(maxsize=8)
def _gauss_hermite(Q):
    """Probabilists' Gauss-Hermite nodes and weights for the N(0, 1) measure (weights sum to 1).

    scipy's nodes (an asymptotic method for Q > 150, good to ~1e-14) refined by Newton's method
    on h_Q in extended precision, weights 1 / (Q h_(Q-1)(x)^2) (Christoffel) likewise.
    """
    x = roots_hermitenorm(Q)[0].astype(np.longdouble)
    sq = np.sqrt(np.arange(Q + 1, dtype=np.longdouble))

    def last_two(x):
        hp, h = np.zeros_like(x), np.ones_like(x)
        for n in range(Q - 1):
            h, hp = (x * h - sq[n] * hp) / sq[n + 1], h
        return h, hp  # h_(Q-1), h_(Q-2)

    for _ in range(3):
        h, hp = last_two(x)
        x = x - (x * h - sq[Q - 1] * hp) / (sq[Q] * sq[Q] * h)
    h, _ = last_two(x)
    w = 1.0 / (Q * h * h)
    x = 0.5 * (x - x[::-1])
    w = 0.5 * (w + w[::-1])
    return np.ascontiguousarray(x, dtype=np.float64), np.ascontiguousarray(w, dtype=np.float64)


def coefficients(f, variances, *, kinks=(), max_order=256, tol=1e-13) -> HermiteTable:
    """Hermite coefficients of f(sqrt(k) x) up to degree max_order for each variance k.

    f: a numba.njit function of one float64; variances: values >= 0; kinks: points c where f is
    not smooth (u-space).  See the module docstring for the rules and the error estimates.
    """
    if not isinstance(f, numba.core.registry.CPUDispatcher):
        raise ValueError(f"f must be a numba.njit function; got {f!r}")
    var = np.ascontiguousarray(np.asarray(variances, dtype=np.float64).ravel())
    if not np.all(np.isfinite(var)) or np.any(var < 0):
        raise ValueError("variances must be finite numbers >= 0")
    if isinstance(max_order, bool) or int(max_order) != max_order or max_order < 0:
        raise ValueError(f"max_order must be an integer >= 0; got {max_order!r}")
    N = int(max_order)
    tol = float(tol)
    if not tol > 0:
        raise ValueError(f"tol must be > 0; got {tol!r}")
    kinks = np.ascontiguousarray(sorted(set(float(c) for c in kinks)), dtype=np.float64)
    if not np.all(np.isfinite(kinks)):
        raise ValueError("kinks must be finite numbers")
    Q1 = 2 * N + 64
    xs0, ws0 = _gauss_hermite(Q1)
    xs1, ws1 = _gauss_hermite(Q1 + N // 2 + 32)
    wmax = min(1.0, 12.0 / math.sqrt(N + 1))
    coef = np.zeros((var.size, N + 1))
    error = np.zeros(var.size)
    norm2 = np.zeros(var.size)
    if var.size:
        # rows are independent: chunks in threads (the compiled routine releases the GIL)

        # the two-rule error estimate on every 16th variance in sorted order and on the extremes; the
        # others take the largest checked error relative to sqrt(E f^2) (it varies smoothly with the
        # variance), times their own sqrt(E f^2).  Gauss-Hermite's error grows with the variance
        # (f(sqrt(k) x) gets sharper), so an unchecked variance is trusted only if the next checked
        # one above it passed; below a checked variance that failed, every variance is checked.
        order = np.argsort(var, kind="stable")
        check = np.zeros(var.size, dtype=bool)
        check[order[::_CHECK_EVERY]] = True
        check[order[-1]] = True
        check.setflags(write=False)
        method = np.zeros(var.size, dtype=np.int8)

        def run(lo, hi, idx=None):
            if idx is None:
                sl = slice(lo, hi)
                _coef_table(f, var[sl], kinks, N, xs0, ws0, xs1, ws1, wmax, coef[sl], error[sl],
                            norm2[sl], 64 * _EPS, check[sl], method[sl])
                return
            sub = idx[lo:hi]
            c, e, n2, m = coef[sub], error[sub], norm2[sub], method[sub]
            every = np.ones(sub.size, dtype=bool)
            every.setflags(write=False)
            _coef_table(f, var[sub], kinks, N, xs0, ws0, xs1, ws1, wmax, c, e, n2, 64 * _EPS, every, m)
            coef[sub], error[sub], norm2[sub], method[sub] = c, e, n2, m

        def run_all(n, idx=None):
            w = max(1, min(os.cpu_count() or 1, n // 16))
            bounds = np.linspace(0, n, w + 1).astype(int)
            if w == 1:
                run(0, n, idx)
            else:
                with ThreadPoolExecutor(w) as pool:
                    list(pool.map(lambda lo, hi: run(lo, hi, idx), bounds[:-1], bounds[1:]))

        run_all(var.size)
        if kinks.size == 0:
            # in sorted order: the method of the next checked variance at or above each position
            sorted_method = method[order]
            sorted_checked = check[order]
            nxt = np.where(sorted_checked, np.arange(var.size), var.size)
            nxt = np.minimum.accumulate(nxt[::-1])[::-1]
            suspect = (~sorted_checked) & (sorted_method[np.minimum(nxt, var.size - 1)] == 2)
            redo = np.ascontiguousarray(order[suspect])
            if redo.size:
                run_all(redo.size, redo)
        unchecked = np.isnan(error)
        if unchecked.any():
            # errors scale with sqrt(E f^2): carry the largest checked relative error over
            scale = np.sqrt(np.maximum(norm2, 0.0))
            ok = ~unchecked & (scale > 0)
            rel = np.max(error[ok] / scale[ok]) if ok.any() else np.max(error[~unchecked])
            error[unchecked] = rel * scale[unchecked] if ok.any() else rel
    if not (np.all(np.isfinite(coef)) and np.all(np.isfinite(norm2)) and np.all(np.isfinite(error))):
        bad = var[~(np.isfinite(norm2) & np.isfinite(error) & np.all(np.isfinite(coef), axis=1))]
        raise ValueError(
            f"E[f(u)^2] is not finite (or f returned NaN/inf) at the variances {bad[:5].tolist()}"
        )
    tail, order = tails_and_orders(coef, norm2, error, tol)
    return HermiteTable(coef=coef, order=order, norm2=norm2, error=error, tail=tail)
