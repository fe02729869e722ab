"""Compiled part of :mod:`.pair_expansion`: the activation's factors on a grid, and the per-set sums of the
block expansion (see that module for the formulas).  Explicit signatures, compiled once per machine
(Numba disk cache); the activation enters as the four function slots of :mod:`._fourpoint_common`."""

from __future__ import annotations

import math

import numpy as np
from numba import types

from ._fourpoint_common import FN, _njit, _pw

_V = types.float64[::1]
_M = types.float64[:, ::1]
_M3 = types.float64[:, :, ::1]
_IV = types.int64[::1]
_IM = types.int64[:, ::1]

_SIG_FACTORS = types.void(FN, FN, FN, FN, _V, _IM, _M)
_SIG_SUMS = types.void(_M3, _M3, _M, _M3, _M3, _M, _IV, _IV, _M3, _V, _IM, _IM, types.int64, types.float64,
                       _M, _M, _M, _IV)

_SIG_PROJECT = types.void(_M, _M3, _M, _M, types.int64, _IM, _M3)
_SIG_SUMS3 = types.void(_M3, _M3, _M, _M3, _M3, _M, _M3, _M3, _M, _M3, _M, _IV, _IV, _M, _V, _IM, _IM, types.int64,
                        types.float64, _M, _M, _M, _IV)

_EPS = 2.220446049250313e-16


@_njit(_SIG_PROJECT, fastmath=True)
def project(fa, fb, H1, H2, n, ptypes, out):
    """out[u, k, l] = sum_i H1[k, i] fa[a, i] sum_j H2[l, j] fb[b, i, j], (a, b) = ptypes[u], for k + l <= n
    (0 elsewhere): the Hermite coefficients of fa(x_1) fb(x_1, x_2) with the weighted polynomials H1, H2
    (rows = degrees), for the factor pairs listed."""
    nf = fa.shape[0]
    M1 = fa.shape[1]
    M2 = fb.shape[2]
    U = ptypes.shape[0]
    g = np.empty((nf, n + 1))
    c = np.empty(n + 1)
    for u in range(U):
        for k in range(n + 1):
            for l in range(n + 1):
                out[u, k, l] = 0.0
    for i in range(M1):
        for b in range(nf):
            for l in range(n + 1):
                acc = 0.0
                for j in range(M2):
                    acc += H2[l, j] * fb[b, i, j]
                g[b, l] = acc
        for u in range(U):
            a = ptypes[u, 0]
            b = ptypes[u, 1]
            fai = fa[a, i]
            for k in range(n + 1):
                c[k] = H1[k, i] * fai
            for k in range(n + 1):
                ck = c[k]
                for l in range(n + 1 - k):
                    out[u, k, l] += ck * g[b, l]


@_njit(_SIG_FACTORS)
def factor_values(s_fn, ds_fn, d2s_fn, d3s_fn, z, pows, out):
    """out[f, i] = s^p s'^q s''^r (s^(3))^t at z[i], (p, q, r, t) = pows[f] (slots of power 0 in every
    factor are not called)."""
    nf = pows.shape[0]
    n0 = False
    n1 = False
    n2 = False
    n3 = False
    for f in range(nf):
        n0 = n0 or pows[f, 0] > 0
        n1 = n1 or pows[f, 1] > 0
        n2 = n2 or pows[f, 2] > 0
        n3 = n3 or pows[f, 3] > 0
    for i in range(z.size):
        x = z[i]
        a = s_fn(x) if n0 else 1.0
        b = ds_fn(x) if n1 else 1.0
        c = d2s_fn(x) if n2 else 1.0
        d = d3s_fn(x) if n3 else 1.0
        for f in range(nf):
            out[f, i] = _pw(a, b, c, d, pows[f, 0], pows[f, 1], pows[f, 2], pows[f, 3])


# set_sums and set_sums3 share their stopping rule and error terms line for line, deliberately: two Numba hot
# loops over differently shaped tables (pair x pair, pair x single input), kept apart so neither pays a branch.
@_njit(_SIG_SUMS)
def set_sums(coef, cnorm, ctail, dnorm, acoef, atail, pa, pb, R, r1, ta, tb, ns, tol, vals, errs, scales, nused):
    """The block expansion of every set t: products c = 0..ta.shape[1]-1 with ta[t, c] >= 0.

    coef[p, u, :] the packed normalized Hermite coefficients of pair p's product type u (degree d, index k of
    x_1: position d (d + 1) / 2 + k), cnorm[p, u, d] their norms per degree, ctail[p, u] the energy beyond the
    last degree, dnorm[p, u, d] the norms of their error estimate; acoef, atail the same of |F| up to degree
    ns.  pa[t], pb[t]: the pairs of set t; R[t] the whitened cross covariance E[x y^T] (x of pair pa, y of
    pb), r1[t] its spectral norm; ta[t, c], tb[t, c] the product types of the two pairs.  Writes vals, errs,
    scales (E|product|, a lower bound up to the |F| coefficients' error) and the degrees used, nused[t]."""
    S = pa.size
    C = ta.shape[1]
    nd = cnorm.shape[2]
    nmax = nd - 1
    U = coef.shape[1]
    Q = np.zeros((nd, nd))
    Qo = np.zeros((nd, nd))
    v = np.zeros((U, nd))
    av = np.zeros((U, nd))
    need = np.zeros(U, dtype=np.bool_)
    aval = np.zeros(C)
    absterm = np.zeros(C)
    for t in range(S):
        P = pa[t]
        Pb = pb[t]
        r = r1[t]
        R00 = R[t, 0, 0]
        R01 = R[t, 0, 1]
        R10 = R[t, 1, 0]
        R11 = R[t, 1, 1]
        for u in range(U):
            need[u] = False
        for c in range(C):
            vals[t, c] = 0.0
            errs[t, c] = 0.0
            scales[t, c] = 0.0
            aval[c] = 0.0
            absterm[c] = 0.0
            if ta[t, c] >= 0:
                need[tb[t, c]] = True
        if not np.any(need):
            nused[t] = -1
            continue
        stop = nmax
        Q[0, 0] = 1.0
        d = 0
        while d <= stop:
            if d > 0:
                for k in range(d):
                    for p in range(d):
                        Qo[k, p] = Q[k, p]
                for k in range(d + 1):
                    if k >= 1:
                        for p in range(d + 1):
                            a = 0.0
                            if p >= 1:
                                a += R00 * math.sqrt(p / k) * Qo[k - 1, p - 1]
                            if p < d:
                                a += R01 * math.sqrt((d - p) / k) * Qo[k - 1, p]
                            Q[k, p] = a
                    else:
                        for p in range(d + 1):
                            a = 0.0
                            if p >= 1:
                                a += R10 * math.sqrt(p / d) * Qo[0, p - 1]
                            if p < d:
                                a += R11 * math.sqrt((d - p) / d) * Qo[0, p]
                            Q[0, p] = a
            off = d * (d + 1) // 2
            for u in range(U):
                if not need[u]:
                    continue
                for k in range(d + 1):
                    a = 0.0
                    b = 0.0
                    for p in range(d + 1):
                        a += Q[k, p] * coef[Pb, u, off + p]
                        if d <= ns:
                            b += Q[k, p] * acoef[Pb, u, off + p]
                    v[u, k] = a
                    av[u, k] = b
            rd = r ** d
            for c in range(C):
                ua = ta[t, c]
                if ua < 0:
                    continue
                ub = tb[t, c]
                a = 0.0
                for k in range(d + 1):
                    a += coef[P, ua, off + k] * v[ub, k]
                vals[t, c] += a
                absterm[c] += rd * cnorm[P, ua, d] * cnorm[Pb, ub, d]
                errs[t, c] += rd * (dnorm[P, ua, d] * cnorm[Pb, ub, d] + cnorm[P, ua, d] * dnorm[Pb, ub, d])
                if d <= ns:
                    b = 0.0
                    for k in range(d + 1):
                        b += acoef[P, ua, off + k] * av[ub, k]
                    aval[c] += b
            if d == ns:
                # the scales (E|F G| from below: the |F| series to degree ns minus its Cauchy-Schwarz tail),
                # then the last degree: the first at which every product's remaining bound
                # sum_(d' > d) r^d' |F_d'| |G_d'| + r^(nmax+1) sqrt(T_F T_G) is below 1e-3 tol scale
                stop = 0
                for c in range(C):
                    ua = ta[t, c]
                    if ua < 0:
                        continue
                    ub = tb[t, c]
                    lb = aval[c] - r ** (ns + 1) * math.sqrt(atail[P, ua] * atail[Pb, ub])
                    sc = max(lb, 0.0)
                    scales[t, c] = sc
                    tail = r ** (nmax + 1) * math.sqrt(ctail[P, ua] * ctail[Pb, ub])
                    m = nmax
                    acc = tail
                    while m > d:
                        x = acc + r ** m * cnorm[P, ua, m] * cnorm[Pb, ub, m]
                        if x > 1e-3 * tol * sc:
                            break
                        acc = x
                        m -= 1
                    stop = max(stop, m)
            d += 1
        nused[t] = min(stop, nmax)
        last = nused[t]
        for c in range(C):
            ua = ta[t, c]
            if ua < 0:
                continue
            ub = tb[t, c]
            # truncation: the Cauchy-Schwarz bound of the degrees not summed
            tr = r ** (nmax + 1) * math.sqrt(ctail[P, ua] * ctail[Pb, ub])
            for m in range(last + 1, nd):
                tr += r ** m * cnorm[P, ua, m] * cnorm[Pb, ub, m]
            sc = max(scales[t, c], abs(vals[t, c]))
            scales[t, c] = sc
            errs[t, c] += tr + 16.0 * (last + 1) * _EPS * (absterm[c] + sc)


# (the stopping rule and error terms repeat set_sums' deliberately: see the comment there)
@_njit(_SIG_SUMS3)
def set_sums3(coef, cnorm, ctail, dnorm, acoef, atail, g, gerr, gtail, ag, agtail, pa, sv, R, r1, ta, tw, ns, tol,
              vals, errs, scales, nused):
    """The expansion E[F(x) g(y)] = sum_d sum_k F_(k, d-k) sqrt(C(d, k)) R_0^k R_1^(d-k) g_d of every set t of
    three inputs: a pair pa[t] (tables as in :func:`set_sums`) and a single input sv[t] with normalized Hermite
    coefficients g[v, w, d] of its factor w (gerr their error estimate, gtail the energy beyond the last
    degree, ag, agtail those of |g| to degree ns), R[t] = E[x y] (whitened), r1[t] = |R[t]|; products c with
    pair type ta[t, c] >= 0 and single factor tw[t, c].  Same error terms and stopping rule as set_sums."""
    S = pa.size
    C = ta.shape[1]
    nd = cnorm.shape[2]
    nmax = nd - 1
    q = np.zeros(nd)
    sb = np.zeros((nd, nd))
    for d in range(nd):
        for k in range(d + 1):
            sb[d, k] = math.sqrt(math.exp(math.lgamma(d + 1.0) - math.lgamma(k + 1.0) - math.lgamma(d - k + 1.0)))
    aval = np.zeros(C)
    absterm = np.zeros(C)
    p0 = np.zeros(nd)
    p1 = np.zeros(nd)
    for t in range(S):
        P = pa[t]
        v = sv[t]
        r = r1[t]
        usable = False
        for c in range(C):
            vals[t, c] = 0.0
            errs[t, c] = 0.0
            scales[t, c] = 0.0
            aval[c] = 0.0
            absterm[c] = 0.0
            if ta[t, c] >= 0:
                usable = True
        if not usable:
            nused[t] = -1
            continue
        p0[0] = 1.0
        p1[0] = 1.0
        for k in range(1, nd):
            p0[k] = p0[k - 1] * R[t, 0]
            p1[k] = p1[k - 1] * R[t, 1]
        stop = nmax
        d = 0
        while d <= stop:
            off = d * (d + 1) // 2
            for k in range(d + 1):
                q[k] = sb[d, k] * p0[k] * p1[d - k]
            rd = r ** d
            for c in range(C):
                ua = ta[t, c]
                if ua < 0:
                    continue
                w = tw[t, c]
                a = 0.0
                for k in range(d + 1):
                    a += coef[P, ua, off + k] * q[k]
                vals[t, c] += a * g[v, w, d]
                gd = abs(g[v, w, d])
                absterm[c] += rd * cnorm[P, ua, d] * gd
                errs[t, c] += rd * (dnorm[P, ua, d] * gd + cnorm[P, ua, d] * gerr[v, w, d])
                if d <= ns:
                    b = 0.0
                    for k in range(d + 1):
                        b += acoef[P, ua, off + k] * q[k]
                    aval[c] += b * ag[v, w, d]
            if d == ns:
                stop = 0
                for c in range(C):
                    ua = ta[t, c]
                    if ua < 0:
                        continue
                    w = tw[t, c]
                    lb = aval[c] - r ** (ns + 1) * math.sqrt(atail[P, ua] * agtail[v, w])
                    sc = max(lb, 0.0)
                    scales[t, c] = sc
                    acc = r ** (nmax + 1) * math.sqrt(ctail[P, ua] * gtail[v, w])
                    m = nmax
                    while m > d:
                        x = acc + r ** m * cnorm[P, ua, m] * abs(g[v, w, m])
                        if x > 1e-3 * tol * sc:
                            break
                        acc = x
                        m -= 1
                    stop = max(stop, m)
            d += 1
        nused[t] = min(stop, nmax)
        last = nused[t]
        for c in range(C):
            ua = ta[t, c]
            if ua < 0:
                continue
            w = tw[t, c]
            tr = r ** (nmax + 1) * math.sqrt(ctail[P, ua] * gtail[v, w])
            for m in range(last + 1, nd):
                tr += r ** m * cnorm[P, ua, m] * abs(g[v, w, m])
            sc = max(scales[t, c], abs(vals[t, c]))
            scales[t, c] = sc
            errs[t, c] += tr + 16.0 * (last + 1) * _EPS * (absterm[c] + sc)
