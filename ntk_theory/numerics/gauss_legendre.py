r"""Compiled (Numba) composite Gauss-Legendre quadrature of E[f(u)] and E[f(u) g(v)], split at kinks.

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

The public functions are ``numba.njit`` compiled and callable from other njit code.  f and g are
``numba.njit`` functions of one float64 (lazy dispatchers are fine), taken as first-class
functions (``FunctionType(float64(float64))``, explicit signatures, compiled once when this module
is first imported and cached on disk), so a new f costs no recompilation of the quadrature, and f
is called through a pointer.  Kink arrays may be any 1-D float64 arrays (read-only globals too).
The nodes (:func:`_line_nodes`, graded meshes) serve also the coefficient tables of
:mod:`.hermite_numba`.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import types
from numpy.polynomial.legendre import leggauss

from .compensated_numba import det2, residual

__all__ = ["expect1_direct", "expect2_direct"]

_EPS = 2.220446049250313e-16
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_L_DIRECT = 12.0  # half-width of the x and z ranges of the direct quadrature
_L_MAX = 38.0  # the widest range (phi underflows beyond 38.6)
_W_DIRECT = 2.0  # largest panel width of the direct quadrature
_DMIN = 1e-15  # smallest grading width
_MAXE = 4096  # most panel edges of one mesh

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
    # the sort and the graded panels below stand again in _fourpoint_integrate._level_nodes on purpose: that
    # compiled module links no other module's compiled code
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
    # graded panels, again in _fourpoint_integrate._level_nodes on purpose (see the sort above)
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
def _node(A, B, t, wt):
    """The Gauss-Legendre point t in [-1, 1] (weight wt) on the panel [A, B]: (x, d, sign, weight),
    d >= 0 the distance from the nearer end, x = A + d (sign +1) or B - d (sign -1), computed
    directly so that arguments anchored at that end keep their digits; weight includes phi(x)."""
    hw = 0.5 * (B - A)
    if t <= 0.0:
        d = hw * (1.0 + t)
        x = A + d
        sign = 1.0
    else:
        d = hw * (1.0 - t)
        x = B - d
        sign = -1.0
    return x, d, sign, hw * wt * _INV_SQRT_2PI * math.exp(-0.5 * x * x)


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
        for i in range(X.size):
            xs[k], d, sign, ws[k] = _node(edges[p], edges[p + 1], X[i], W[i])
            e = p if sign > 0.0 else p + 1
            us[k] = uE[e] + sign * (sf * d)
            vs[k] = vE[e] + sign * (sg * d)
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
        for i in range(X.size):
            x, d, sign, wo[k] = _node(edges[p], edges[p + 1], X[i], W[i])
            e = p if sign > 0.0 else p + 1
            uo[k] = uE[e] + sign * (sf * d)
            for j in range(ng):
                r[j] = R[e, j] - sign * (a * d)
            xo[k] = x
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
def _line_level(f, g, sf, sg, cf, cg, L, level):
    """(sum, sum |terms|, range-end part) of E[f(sf x) g(sg x)] by the rule of ``level``."""
    x, w, u, v = _line_nodes(L, _W_DIRECT, sf, 0.0, cf, cf, sg, 0.0, cg, cg, level)
    F = _evaluate(f, u, 1.0)
    G = _evaluate(g, v, 1.0) if sg != 0.0 else _ones(v.size)
    return _line_sum(x, w, F, G, L)


@numba.njit(cache=True, error_model="numpy")
def _line2(f, g, sf, sg, cf, cg):
    """E[f(sf x) g(sg x)] (g absent if sg == 0): (value, error); the range grows from [-12, 12]
    to [-38, 38] if the terms near its ends are not negligible."""
    L = _L_DIRECT
    while True:
        v0 = _line_level(f, g, sf, sg, cf, cg, L, 0)[0]
        v1, l1, tail = _line_level(f, g, sf, sg, cf, cg, L, 1)
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


@numba.njit(cache=True, error_model="numpy")
def _pair_level(f, g, sf, a, b, cf, cg, L, level):
    """(sum, sum |terms|, range-end part) of E[f(sf x) g(a x + b z)] by the rule of ``level``."""
    xo, wo, uo, start, zi, wi, vi = _pair_nodes(L, sf, a, b, cf, cg, level)
    return _pair_sum(xo, wo, _evaluate(f, uo, 1.0), start, zi, wi, _evaluate(g, vi, 1.0), L)


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
        v0 = _pair_level(f, g, sf, a, b, cf, cg, L, 0)[0]
        v1, l1, tail = _pair_level(f, g, sf, a, b, cf, cg, L, 1)
        if not _need_wider(L, l1, tail):
            return _finish(v0, v1, l1, tail)
        L = _L_MAX
