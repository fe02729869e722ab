r"""Compiled core of :mod:`ntk_theory.gaussian.fourpoint`: one generic integrator, compiled once.

The activation enters as two first-class functions ``s_fn``, ``ds_fn``
(``numba.types.FunctionType(float64(float64))``, called through a pointer), so this module is
compiled once per machine (explicit signature, ``cache=True``) and a new activation costs only
the compilation of its two small njit functions.

Per input set (task) the nested quadrature of :mod:`~ntk_theory.gaussian.fourpoint` runs over
the levels of the pivoted Cholesky factor; when the deepest level resolves exactly one variable
v (the usual case), that level is not integrated node by node: its integral is the Gaussian
smoothing

    G_f(mu) = E[f(mu + sigma u)],  u ~ N(0, 1),  sigma = L[v, last],  f = s^p s'^q,

a function of the offset mu = sum_(j < last) L_vj u_j only, which is tabulated once per set
(adaptive piecewise Chebyshev interpolation of degree 16 on |mu| <= R |L_v,<last|, panels split
at the kinks and bisected until the last two Chebyshev coefficients are below 1e-2 tol of the
panel's max G_|f|; each value by composite 16-point Gauss-Legendre in u split at the kinks, panel
widths <= min(2.5, 1.5 / sigma)).  A four-dimensional integral thus costs a three-dimensional
one.  The table's error bound per panel (last two coefficients + a check of the quadrature
against halved panels at the panel centre + 1e-4 of the |u| > R - 1.5 tail) is propagated
through the outer levels with absolute values and added to the reported error.

Compilation and speed: every function has an explicit signature (one compile each; without them
Numba compiled four specialisations of ``_integrate`` and ``_level_nodes`` for literal arguments,
32 s -> 14 s cold), and the per-node work of the innermost level (activation factors, table
evaluation) is written inline in ``_integrate`` on 2-D arrays indexed by level: passing row views
(``offs[lvl]``) or inlining helpers with array arguments made Numba increment and decrement
reference counts (atomic operations) at every node, ~40% of the run time.
"""

from __future__ import annotations

import math
import warnings

import numba
import numpy as np
from numba import types
from numba.core.errors import NumbaExperimentalFeatureWarning

_F64 = types.float64
_I64 = types.int64
FN = types.FunctionType(_F64(_F64))

_B = types.boolean
_V = _F64[::1]
_IV = _I64[::1]
_M = _F64[:, ::1]
_IM = _I64[:, ::1]
_SIG_LEVEL_NODES = _I64(_M, _I64, _I64, _IV, _I64, _M, _F64, _F64, _B, _V, _V, _M, _M, _V, _V, _V, _V, _V, _V)
_SIG_PW = _F64(_F64, _F64, _I64, _I64)
_SIG_GVALUES = types.void(FN, FN, _V, _F64, _F64, _F64, _IV, _IV, _I64, _B, _V, _V, _V, _V)
_SIG_BUILD = _I64(FN, FN, _V, _F64, _F64, _F64, _IV, _IV, _I64, _F64, _V, _F64[:, :, ::1], _M)
_SIG_INTEGRATE = types.void(FN, FN, _M, _I64, _I64, _IV, _IM, _IM, _IV, _I64[:, :, ::1], _IV, _IV, _IM, _IM,
                            _F64, _B, _F64, _V, _V, _I64, _I64, _IV, _V, _F64[:, :, ::1], _M, _I64, _I64,
                            _V, _V, _V, _V, _M)
_SIG_ESTIMATE = _F64(_F64, _F64, _F64, _F64)
_SIG_TASK = types.UniTuple(_I64, 2)(FN, FN, _V, _M, _I64, _I64, _IV, _IM, _IM, _IV, _I64[:, :, ::1], _IV, _IV, _IM, _IM,
                                     _V, _F64, _F64, _I64, _F64, _B, _V, _V, _V, _IV, _V)

def _njit(sig, **options):
    """numba.njit with an explicit signature (compiled now, cached on disk), the experimental
    first-class function warning silenced."""
    def deco(fn):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NumbaExperimentalFeatureWarning)
            return numba.njit(sig, cache=True, error_model='numpy', nogil=True, **options)(fn)
    return deco


_GLX_F, _GLW_F = (np.ascontiguousarray(a) for a in np.polynomial.legendre.leggauss(12))
_GLX_C, _GLW_C = (np.ascontiguousarray(a) for a in np.polynomial.legendre.leggauss(8))
_GQX, _GQW = (np.ascontiguousarray(a) for a in np.polynomial.legendre.leggauss(16))
_INV_SQRT_2PI = 0.3989422804014327
_MAXN = 4096
_NCH = 17  # Chebyshev points per table panel (degree 16)
_CHX = np.ascontiguousarray(np.cos(np.pi * (np.arange(_NCH) + 0.5) / _NCH))
_CHM = np.ascontiguousarray(
    np.array([[(2.0 / _NCH) * np.cos(np.pi * j * (k + 0.5) / _NCH) * (0.5 if j == 0 else 1.0)
               for k in range(_NCH)] for j in range(_NCH)]))
_MAXPAN = 1024
_NFMAX = 16


@_njit(_SIG_LEVEL_NODES)
def _level_nodes(L, nv, rank, vlevel, ell, offs, rad2, hz, fine, kinks, gparam, xs, ws, px, pw, bx, bw, edges, tr):
    """Nodes xs, weights ws (Gaussian weight included) of level ell; returns the count."""
    if ell >= rank:
        xs[ell, 0] = 0.0
        ws[ell, 0] = 1.0
        return 1
    if rad2 <= 0.0:
        return 0
    Rl = math.sqrt(rad2)
    lscale = 0.0
    for v in range(nv):
        a = abs(L[v, ell])
        if a > lscale:
            lscale = a
    hg = gparam[0]
    wg = gparam[1]
    cw = gparam[2]
    wthr = gparam[3]
    if not fine:
        hz = hz * 1.5
        hg = hg * 1.5
    # the panel cap shrinks with the step as well, so every panel of a refined rule is refined
    # (with a fixed cap, levels at the cap gave the same panels in both rules, and their
    # difference, the error estimate, missed their error; the geometric grading near smoothed
    # kinks is not scaled: measured 2x slower at depth 5 for no accuracy gain in the tests)
    hrel = hz / 0.5
    wg = wg * hrel
    ns = 0
    for v in range(nv):
        lv = L[v, ell]
        if lv == 0.0 or vlevel[v] < ell:
            continue
        if vlevel[v] == ell:
            for k in range(kinks.size):
                p = (kinks[k] - offs[ell, v]) / lv
                if p > -Rl and p < Rl and ns < 60:
                    px[ns] = p
                    pw[ns] = 0.0
                    ns += 1
        elif kinks.size > 0:
            sig = 0.0
            for j in range(ell + 1, rank):
                sig += L[v, j] * L[v, j]
            w = math.sqrt(sig) / abs(lv)
            if w < wthr:
                for k in range(kinks.size):
                    p = (kinks[k] - offs[ell, v]) / lv
                    if p > -Rl and p < Rl and ns < 60:
                        px[ns] = p
                        pw[ns] = max(w, 1e-15)
                        ns += 1
    n = 0
    if ns == 0 and kinks.size == 0:
        h = hz / lscale if lscale > 0.0 else hg
        if h > hg:
            h = hg
        k0 = int(math.floor(Rl / h))
        if 2 * k0 + 1 > _MAXN:
            k0 = (_MAXN - 1) // 2
            h = Rl / k0
        # weights h phi(k h) by the recurrence phi((k+1) h) = phi(k h) q_k, q_(k+1) = q_k e^(-h^2)
        # (two exps per level instead of one per node; relative rounding <= ~k eps)
        w = h * _INV_SQRT_2PI
        q = math.exp(-0.5 * h * h)
        qq = q * q
        for k in range(k0 + 1):
            xs[ell, k0 + k] = k * h
            ws[ell, k0 + k] = w
            xs[ell, k0 - k] = -k * h
            ws[ell, k0 - k] = w
            w *= q
            q *= qq
        return 2 * k0 + 1
    if fine:
        gx = _GLX_F
        gw = _GLW_F
    else:
        gx = _GLX_C
        gw = _GLW_C
    W = cw * hz / lscale if lscale > 0.0 else wg
    if W > wg:
        W = wg
    for i in range(1, ns):
        a = px[i]
        b = pw[i]
        j = i - 1
        while j >= 0 and px[j] > a:
            px[j + 1] = px[j]
            pw[j + 1] = pw[j]
            j -= 1
        px[j + 1] = a
        pw[j + 1] = b
    nb = ns + 2
    bx[0] = -Rl
    bw[0] = 0.0
    for i in range(ns):
        bx[i + 1] = px[i]
        bw[i + 1] = pw[i]
    bx[nb - 1] = Rl
    bw[nb - 1] = 0.0
    # grading width at each boundary: the scale of the nearest smoothed kink (its width, or its
    # distance when larger), so an exact kink next to a smoothed one is graded too
    for i in range(nb):
        gmin = 1e300
        for j in range(ns):
            if pw[j] > 0.0:
                dd = max(pw[j], abs(px[j] - bx[i]))
                if dd < gmin:
                    gmin = dd
        bw[i] = gmin if gmin < W else 0.0
    for i in range(nb - 1):
        A = bx[i]
        B = bx[i + 1]
        if B <= A:
            continue
        mid = 0.5 * (A + B)
        ne = 0
        edges[ne] = A
        ne += 1
        e = A
        w = bw[i]
        if w > 0.0:
            while w < W and e + w < mid and ne < 100:
                e += w
                edges[ne] = e
                ne += 1
                w *= 2.0
        e2 = B
        nr = 0
        w = bw[i + 1]
        if w > 0.0:
            while w < W and e2 - w > mid and nr < 100:
                e2 -= w
                tr[nr] = e2
                nr += 1
                w *= 2.0
        gap = e2 - e
        nu = max(1, int(math.ceil(gap / W * (1.0 - 1e-12))))
        if ne + nu + nr + 1 > 256:
            nu = 256 - ne - nr - 1
        for j in range(1, nu):
            edges[ne] = e + gap * (j / nu)
            ne += 1
        for j in range(nr - 1, -1, -1):
            edges[ne] = tr[j]
            ne += 1
        edges[ne] = B
        ne += 1
        for j in range(ne - 1):
            a = edges[j]
            b = edges[j + 1]
            c = 0.5 * (a + b)
            r = 0.5 * (b - a)
            if n + gx.size > _MAXN:
                return n
            for q in range(gx.size):
                u = c + r * gx[q]
                xs[ell, n] = u
                ws[ell, n] = r * gw[q] * _INV_SQRT_2PI * math.exp(-0.5 * u * u)
                n += 1
    return n


@_njit(_SIG_PW, inline='always')
def _pw(s, d, p, q):
    val = 1.0
    for _ in range(p):
        val *= s
    for _ in range(q):
        val *= d
    return val


# ------------------------------------------------------------------------------------------------
# Table of G_f(mu) = E[f(mu + sigma u)] for the factors f = s^p s'^q of one variable
# ------------------------------------------------------------------------------------------------


@_njit(_SIG_GVALUES)
def _gvalues(s_fn, ds_fn, kinks, mu, sigma, R, fp, fq, nf, halve, g, ga, gt, cuts):
    """g[f] = int_{|u|<=R} phi(u) f(mu + sigma u) du, ga the same of |f|, gt that of |f| over
    |u| > R - 1.5 (Gauss-Legendre, 16 points per panel; panels halved when ``halve``)."""
    for f in range(nf):
        g[f] = 0.0
        ga[f] = 0.0
        gt[f] = 0.0
    # cut points: -R, kinks, R
    nc = 0
    cuts[nc] = -R
    nc += 1
    for k in range(kinks.size):
        p = (kinks[k] - mu) / sigma
        if p > -R and p < R:
            # insert sorted
            j = nc
            while j > 1 and cuts[j - 1] > p:
                cuts[j] = cuts[j - 1]
                j -= 1
            cuts[j] = p
            nc += 1
    cuts[nc] = R
    nc += 1
    W = 2.5
    if 1.5 / sigma < W:
        W = 1.5 / sigma
    if halve:
        W *= 0.5
    rt = R - 1.5
    for i in range(nc - 1):
        A = cuts[i]
        B = cuts[i + 1]
        if B <= A:
            continue
        npan = int(math.ceil((B - A) / W * (1.0 - 1e-12)))
        if npan < 1:
            npan = 1
        hw = (B - A) / npan
        for j in range(npan):
            a = A + j * hw
            c = a + 0.5 * hw
            r = 0.5 * hw
            for q in range(_GQX.size):
                u = c + r * _GQX[q]
                w = r * _GQW[q] * _INV_SQRT_2PI * math.exp(-0.5 * u * u)
                z = mu + sigma * u
                s = s_fn(z)
                d = ds_fn(z)
                tail = abs(u) > rt
                for f in range(nf):
                    val = _pw(s, d, fp[f], fq[f])
                    g[f] += w * val
                    av = w * abs(val)
                    ga[f] += av
                    if tail:
                        gt[f] += av


@_njit(_SIG_BUILD)
def _build_table(s_fn, ds_fn, kinks, sigma, half, R, fp, fq, nf, eta, tedges, tcoef, terr):
    """Adaptive piecewise-Chebyshev table of G_f and G_|f| on [-half, half]; returns the number of
    panels (tedges[0..npan], tcoef[p, 2 f (+1 for |f|), j], terr[p, f] the error bound)."""
    vals = np.empty((_NCH, 2 * nf))
    g = np.empty(nf)
    ga = np.empty(nf)
    gt = np.empty(nf)
    g2 = np.empty(nf)
    ga2 = np.empty(nf)
    gt2 = np.empty(nf)
    tmax = np.empty(nf)
    cuts = np.empty(kinks.size + 2)
    coef = np.empty((2 * nf, _NCH))
    stack = np.empty((512, 2))
    # initial intervals: split at the kinks and graded geometrically away from them (first width
    # sigma: G has a kink smoothed over sigma there), widths <= max(2, 4 sigma)
    Wi = max(2.0, 4.0 * sigma, half / 100.0)
    init = np.empty(kinks.size * 130 + 2)
    ni = 0
    init[ni] = -half
    ni += 1
    init[ni] = half
    ni += 1
    for k in range(kinks.size):
        c = kinks[k]
        if c > -half and c < half:
            init[ni] = c
            ni += 1
            w = sigma
            off = 0.0
            while w < 0.5 * Wi and ni < init.size - 2:
                off += w
                if c + off < half:
                    init[ni] = c + off
                    ni += 1
                if c - off > -half:
                    init[ni] = c - off
                    ni += 1
                w *= 2.0
    init[:ni].sort()
    ns = 0
    for i in range(ni - 2, -1, -1):
        A = init[i]
        B = init[i + 1]
        if B <= A:
            continue
        m = max(1, int(math.ceil((B - A) / Wi)))
        for j in range(m - 1, -1, -1):
            if ns >= 250:
                break
            stack[ns, 0] = A + (B - A) * j / m
            stack[ns, 1] = A + (B - A) * (j + 1) / m
            ns += 1
    minw = 1e-12 * max(half, sigma) + 1e-3 * sigma
    npan = 0
    tedges[0] = -half
    while ns > 0:
        ns -= 1
        a = stack[ns, 0]
        b = stack[ns, 1]
        c = 0.5 * (a + b)
        r = 0.5 * (b - a)
        for k in range(_NCH):
            _gvalues(s_fn, ds_fn, kinks, c + r * _CHX[k], sigma, R, fp, fq, nf, False, g, ga, gt, cuts)
            for f in range(nf):
                vals[k, 2 * f] = g[f]
                vals[k, 2 * f + 1] = ga[f]
                if k == 0 or gt[f] > tmax[f]:
                    tmax[f] = gt[f]
        for i in range(2 * nf):
            for j in range(_NCH):
                acc = 0.0
                for k in range(_NCH):
                    acc += _CHM[j, k] * vals[k, i]
                coef[i, j] = acc
        split = False
        if r > 0.5 * minw and ns < 510 and npan < _MAXPAN - 2:
            for f in range(nf):
                amax = 0.0
                for k in range(_NCH):
                    if vals[k, 2 * f + 1] > amax:
                        amax = vals[k, 2 * f + 1]
                e = abs(coef[2 * f, _NCH - 1]) + abs(coef[2 * f, _NCH - 2])
                if e > eta * amax + 1e-300:
                    split = True
                    break
        if split:
            stack[ns, 0] = c
            stack[ns, 1] = b
            stack[ns + 1, 0] = a
            stack[ns + 1, 1] = c
            ns += 2
            continue
        # accept: quadrature check at the centre (node _NCH // 2 is the centre)
        _gvalues(s_fn, ds_fn, kinks, c, sigma, R, fp, fq, nf, True, g2, ga2, gt2, cuts)
        for f in range(nf):
            amax = 0.0
            for k in range(_NCH):
                if vals[k, 2 * f + 1] > amax:
                    amax = vals[k, 2 * f + 1]
            terr[npan, f] = (abs(coef[2 * f, _NCH - 1]) + abs(coef[2 * f, _NCH - 2])
                             + 2.0 * abs(g2[f] - vals[_NCH // 2, 2 * f]) + 1e-4 * tmax[f]
                             + 16.0 * 2.220446049250313e-16 * amax)
        for f in range(nf):
            for j in range(_NCH):
                tcoef[npan, j, f] = coef[2 * f, j]
                tcoef[npan, j, nf + f] = coef[2 * f + 1, j]
        npan += 1
        tedges[npan] = b
    return npan


# ------------------------------------------------------------------------------------------------
# The nested quadrature of one task
# ------------------------------------------------------------------------------------------------


@_njit(_SIG_INTEGRATE, fastmath={'contract'})
def _integrate(s_fn, ds_fn, L, nv, rank, vlevel, facp, facq, nfac, lf_fac, nlf, nsuf, suf_lf, suf_inner,
               hz, fine, R, kinks, gparam, D, vt, jf, tedges, tcoef, terr, npan, nft,
               out, aout, shell, eout, scratch):
    """One nested quadrature over the levels 0..D-1 (depth-first).  With a table (vt >= 0) the
    level D is the tabulated G of variable vt; else level D is the constant 1."""
    NS = suf_lf.shape[1]
    acc = np.zeros((5, NS))
    aacc = np.zeros((5, NS))
    sacc = np.zeros((5, NS))
    eacc = np.zeros((5, NS))
    xs = np.empty((4, _MAXN))
    ws = np.empty((4, _MAXN))
    px = scratch[0]
    pw = scratch[1]
    bx = scratch[2]
    bw = scratch[3]
    edges = scratch[4]
    tr = scratch[5]
    offs = np.zeros((5, 4))
    rad = np.zeros(5)
    cw = np.zeros(5)
    cnt = np.zeros(5, dtype=np.int64)
    idx = np.zeros(5, dtype=np.int64)
    NF = lf_fac.shape[1]
    vals = np.empty((4, NF))
    avals = np.empty((4, NF))
    fv = np.empty((4, facp.shape[1]))
    g = np.empty(_NFMAX)
    ga = np.empty(_NFMAX)
    ge = np.empty(_NFMAX)
    tmid = np.empty(max(npan, 1))
    tinv = np.empty(max(npan, 1))
    for p in range(npan):
        tmid[p] = 0.5 * (tedges[p] + tedges[p + 1])
        tinv[p] = 2.0 / (tedges[p + 1] - tedges[p])
    pan = 0
    nodes = 0.0
    lvars = np.zeros((4, 4), dtype=np.int64)
    lnv = np.zeros(4, dtype=np.int64)
    for v in range(nv):
        lvars[vlevel[v], lnv[vlevel[v]]] = v
        lnv[vlevel[v]] += 1
    rin = R * R - (R - 1.5) * (R - 1.5)
    rad[0] = R * R
    acc[D, 0] = 1.0
    aacc[D, 0] = 1.0
    lvl = 0
    cnt[0] = _level_nodes(L, nv, rank, vlevel, 0, offs, rad[0], hz, fine, kinks, gparam, xs, ws,
                          px, pw, bx, bw, edges, tr)
    idx[0] = 0
    while True:
        if lvl == D - 1:
            for k in range(nsuf[lvl]):
                acc[lvl, k] = 0.0
                aacc[lvl, k] = 0.0
                sacc[lvl, k] = 0.0
                eacc[lvl, k] = 0.0
            for i in range(cnt[lvl]):
                u = xs[lvl, i]
                w = ws[lvl, i]
                for ii in range(lnv[lvl]):
                    v = lvars[lvl, ii]
                    z = offs[lvl, v] + L[v, lvl] * u
                    sv = s_fn(z)
                    dv = ds_fn(z)
                    for f in range(nfac[v]):
                        fv[v, f] = _pw(sv, dv, facp[v, f], facq[v, f])
                for e in range(nlf[lvl]):
                    val = 1.0
                    for ii in range(lnv[lvl]):
                        v = lvars[lvl, ii]
                        f = lf_fac[lvl, e, v]
                        if f >= 0:
                            val *= fv[v, f]
                    vals[lvl, e] = val
                    avals[lvl, e] = abs(val)
                if vt >= 0:
                    mu = offs[lvl, vt] + L[vt, lvl] * u
                    while pan < npan - 1 and mu > tedges[pan + 1]:
                        pan += 1
                    while pan > 0 and mu < tedges[pan]:
                        pan -= 1
                    t = (mu - tmid[pan]) * tinv[pan]
                    if t > 1.0:
                        t = 1.0
                    elif t < -1.0:
                        t = -1.0
                    t2 = 2.0 * t
                    for f in range(nft):
                        b1 = 0.0
                        b2 = 0.0
                        for jj in range(_NCH - 1, 0, -1):
                            tmp = t2 * b1 + (tcoef[pan, jj, f] - b2)
                            b2 = b1
                            b1 = tmp
                        g[f] = t * b1 - b2 + tcoef[pan, 0, f]
                        c1 = 0.0
                        c2 = 0.0
                        for jj in range(7, 0, -1):
                            tmp = t2 * c1 + (tcoef[pan, jj, nft + f] - c2)
                            c2 = c1
                            c1 = tmp
                        ga[f] = abs(t * c1 - c2 + tcoef[pan, 0, nft + f])
                        ge[f] = terr[pan, f]
                    for j in range(nsuf[D]):
                        f = jf[j]
                        acc[D, j] = g[f]
                        aacc[D, j] = ga[f]
                        eacc[D, j] = ge[f]
                inshell = (rad[lvl] - u * u) < rin
                for k in range(nsuf[lvl]):
                    e = suf_lf[lvl, k]
                    j = suf_inner[lvl, k]
                    acc[lvl, k] += w * vals[lvl, e] * acc[D, j]
                    wa = w * avals[lvl, e]
                    aacc[lvl, k] += wa * aacc[D, j]
                    eacc[lvl, k] += wa * eacc[D, j]
                    if inshell:
                        sacc[lvl, k] += wa * aacc[D, j]
            idx[lvl] = cnt[lvl]
            nodes += cnt[lvl]
        if idx[lvl] < cnt[lvl]:
            i = idx[lvl]
            idx[lvl] += 1
            u = xs[lvl, i]
            cw[lvl] = ws[lvl, i]
            for ii in range(lnv[lvl]):
                v = lvars[lvl, ii]
                z = offs[lvl, v] + L[v, lvl] * u
                sv = s_fn(z)
                dv = ds_fn(z)
                for f in range(nfac[v]):
                    fv[v, f] = _pw(sv, dv, facp[v, f], facq[v, f])
            for e in range(nlf[lvl]):
                val = 1.0
                for ii in range(lnv[lvl]):
                    v = lvars[lvl, ii]
                    f = lf_fac[lvl, e, v]
                    if f >= 0:
                        val *= fv[v, f]
                vals[lvl, e] = val
                avals[lvl, e] = abs(val)
            for v in range(nv):
                offs[lvl + 1, v] = offs[lvl, v] + L[v, lvl] * u
            rad[lvl + 1] = rad[lvl] - u * u
            lvl += 1
            cnt[lvl] = _level_nodes(L, nv, rank, vlevel, lvl, offs, rad[lvl], hz, fine, kinks, gparam,
                                    xs, ws, px, pw, bx, bw, edges, tr)
            idx[lvl] = 0
            if lvl < D - 1:
                for k in range(nsuf[lvl]):
                    acc[lvl, k] = 0.0
                    aacc[lvl, k] = 0.0
                    sacc[lvl, k] = 0.0
                    eacc[lvl, k] = 0.0
        else:
            if lvl == 0:
                break
            p = lvl - 1
            w = cw[p]
            for k in range(nsuf[p]):
                e = suf_lf[p, k]
                j = suf_inner[p, k]
                acc[p, k] += w * vals[p, e] * acc[lvl, j]
                wa = w * avals[p, e]
                aacc[p, k] += wa * aacc[lvl, j]
                sacc[p, k] += wa * sacc[lvl, j]
                eacc[p, k] += wa * eacc[lvl, j]
            lvl = p
    out[NS - 1] = nodes
    for k in range(nsuf[0]):
        out[k] = acc[0, k]
        aout[k] = aacc[0, k]
        shell[k] = sacc[0, k]
        eout[k] = eacc[0, k]


@_njit(_SIG_ESTIMATE)
def _estimate(fine, coarse, coarse2, scale):
    """Error of ``fine`` from three rules of decreasing step: d = |fine - coarse| times the
    contraction rho = d / |coarse - coarse2| of the last step (rho <= 1), at least the
    two-rule model 2 E|f| (d / E|f|)^1.5; d itself while d > 1e-3 E|f|."""
    d = abs(fine - coarse)
    if scale <= 0.0:
        return d
    if d > 1e-3 * scale:
        return d
    d1 = abs(coarse - coarse2)
    rho = d / d1 if d1 > d else 1.0
    e = max(d * math.sqrt(rho), 2.0 * scale * (d / scale) ** 1.5)
    return e + 512.0 * 2.220446049250313e-16 * scale


@_njit(_SIG_TASK)
def _task(s_fn, ds_fn, kinks, L, nv, rank, vlevel, facp, facq, nfac, lf_fac, nlf, nsuf, suf_lf, suf_inner,
          gparam, hz0, tol, max_refine, R0, use_table, vals, errs, scales, stats, hst):
    """Refinement loop of one task; returns (refinements, status 0 ok / 1 not converged / 2 bad).
    hst[0]: the step h* at which a (fine h*, coarse 1.5 h*) pair would just pass with margin,
    predicted from the last pair by the model ln(err(h) / E|f|) = -c / h (a hint for the next
    call's starting step; the acceptance test itself does not use it)."""
    NS = suf_lf.shape[1]
    fine = np.empty(NS)
    coarse = np.empty(NS)
    coarse2 = np.empty(NS)
    af = np.empty(NS)
    ac = np.empty(NS)
    sh = np.empty(NS)
    shc = np.empty(NS)
    ef = np.empty(NS)
    ec = np.empty(NS)
    scratch = np.empty((6, 256))
    # table?
    D = max(rank, 1)
    vt = -1
    if use_table and rank >= 2:
        cntl = 0
        for v in range(nv):
            if vlevel[v] == rank - 1:
                cntl += 1
                vt = v
        if cntl != 1:
            vt = -1
    jf = np.zeros(NS, dtype=np.int64)
    fp = np.zeros(_NFMAX, dtype=np.int64)
    fq = np.zeros(_NFMAX, dtype=np.int64)
    tedges = np.empty(_MAXPAN + 1)
    tcoef = np.empty((1, 1, 1))
    terr = np.empty((1, 1))
    npan = 0
    nft = 0
    if vt >= 0:
        D = rank - 1
        nft = nfac[vt]
        for f in range(nft):
            fp[f] = facp[vt, f]
            fq[f] = facq[vt, f]
        for j in range(nsuf[D]):
            jf[j] = lf_fac[D, suf_lf[D, j], vt]
        tcoef = np.empty((_MAXPAN, _NCH, 2 * nft))
        terr = np.empty((_MAXPAN, nft))
    hz = hz0
    R = R0
    nk = nsuf[0]
    st = 0
    lev = 0
    have_coarse = False
    eta = max(1e-2 * tol, 1e-14)
    built = False
    while True:
        if vt >= 0 and not built:
            sig = L[vt, rank - 1]
            h2 = 0.0
            for j in range(rank - 1):
                h2 += L[vt, j] * L[vt, j]
            half = R * math.sqrt(h2) * (1.0 + 1e-12) + 1e-300
            npan = _build_table(s_fn, ds_fn, kinks, abs(sig), half, R, fp, fq, nft, eta, tedges, tcoef, terr)
            stats[2] += npan
            built = True
        _integrate(s_fn, ds_fn, L, nv, rank, vlevel, facp, facq, nfac, lf_fac, nlf, nsuf, suf_lf, suf_inner,
                   hz, True, R, kinks, gparam, D, vt, jf, tedges, tcoef, terr, npan, nft, fine, af, sh, ef, scratch)
        stats[0] += 1
        stats[3] += int(fine[NS - 1])
        if not have_coarse:
            _integrate(s_fn, ds_fn, L, nv, rank, vlevel, facp, facq, nfac, lf_fac, nlf, nsuf, suf_lf, suf_inner,
                       hz, False, R, kinks, gparam, D, vt, jf, tedges, tcoef, terr, npan, nft, coarse, ac, shc, ec,
                       scratch)
            _integrate(s_fn, ds_fn, L, nv, rank, vlevel, facp, facq, nfac, lf_fac, nlf, nsuf, suf_lf, suf_inner,
                       1.5 * hz, False, R, kinks, gparam, D, vt, jf, tedges, tcoef, terr, npan, nft, coarse2, ac, shc,
                       ec, scratch)
            stats[1] += 2
        ok = True
        trunc_ok = True
        finite = True
        table_ok = True
        for k in range(nk):
            if not (math.isfinite(fine[k]) and math.isfinite(af[k]) and math.isfinite(coarse[k])):
                finite = False
                continue
            e = _estimate(fine[k], coarse[k], coarse2[k], af[k]) + 1e-4 * sh[k] + ef[k]
            errs[k] = e
            vals[k] = fine[k]
            scales[k] = af[k]
            if e > tol * af[k]:
                ok = False
            if ef[k] > 0.3 * tol * af[k]:
                table_ok = False
            if 1e-4 * sh[k] > 0.1 * tol * af[k]:
                trunc_ok = False
        if not finite:
            st = 2
            break
        if not trunc_ok:
            if R >= 38.0:
                st = 2
                break
            R = min(38.0, R * 1.5)
            have_coarse = False
            built = False
            continue
        if not table_ok and eta > 1e-14 and lev < max_refine:
            eta = max(eta * 1e-2, 1e-14)
            built = False
            have_coarse = False
            lev += 1
            continue
        if ok or lev >= max_refine:
            st = 0 if ok else 1
            rmax = 0.0
            for k in range(nk):
                if af[k] > 0.0:
                    rr = abs(fine[k] - coarse[k]) / af[k]
                    if rr > rmax:
                        rmax = rr
            hs = 1.5 * hz
            if rmax > 1e-13 and rmax < 1.0:
                hs = 1.5 * hz * math.log(rmax) / math.log(tol / 8.0)
            hst[0] = min(max(hs, hz / 2.25), 1.5 * hz)
            break
        # refine.  If the model ln err = -c / h predicts that even the next pass (h / 1.5, with
        # this fine rule as its coarse one) fails, start a fresh pair at the predicted step h*
        # instead of walking down the 1.5^k grid (fewer, cheaper passes; the acceptance test of
        # the new pair is the usual one)
        if not have_coarse:
            rmax = 0.0
            for k in range(nk):
                if af[k] > 0.0:
                    rr = abs(fine[k] - coarse[k]) / af[k]
                    if rr > rmax:
                        rmax = rr
            if rmax > 1e-13 and rmax < 1e-2 and 2.0 * rmax ** 2.25 > 0.25 * tol:
                hs = 1.5 * hz * math.log(rmax) / math.log(tol / 8.0)
                if hs < hz / 1.5 and hs > hz / 4.0:
                    hz = hs
                    lev += 1
                    continue
        # the fine rule becomes the coarse one
        for k in range(NS):
            coarse2[k] = coarse[k]
            coarse[k] = fine[k]
            ac[k] = af[k]
            shc[k] = sh[k]
            ec[k] = ef[k]
        have_coarse = True
        hz = hz / 1.5
        lev += 1
    return lev, st


_VEC = _F64[::1]
_IVEC = _I64[::1]
_SIG = types.void(
    FN, FN, _VEC, _IVEC,
    _F64[:, :, ::1], _IVEC, _IVEC, _I64[:, ::1], _I64[:, :, ::1], _I64[:, :, ::1], _I64[:, ::1],
    _I64[:, :, :, ::1], _I64[:, ::1], _I64[:, ::1], _I64[:, :, ::1], _I64[:, :, ::1],
    _VEC, _F64, _F64, _I64, _F64, types.boolean,
    _F64[:, ::1], _F64[:, ::1], _F64[:, ::1], _IVEC, _IVEC, _I64[:, ::1], _VEC)


def run_tasks(s_fn, ds_fn, kinks, tasks, Ls, nvs, ranks, vlevels, facps, facqs, nfacs, lf_facs, nlfs, nsufs,
              suf_lfs, suf_inners, gparam, hz0, tol, max_refine, R0, use_table, vals, errs, scales, levels, status,
              stats, hst):
    """The tasks listed in ``tasks`` (indices into the stacked arrays), one after the other."""
    for i in range(tasks.size):
        t = tasks[i]
        lev, st = _task(s_fn, ds_fn, kinks, Ls[t], nvs[t], ranks[t], vlevels[t], facps[t], facqs[t], nfacs[t],
                        lf_facs[t], nlfs[t], nsufs[t], suf_lfs[t], suf_inners[t], gparam, hz0, tol, max_refine,
                        R0, use_table, vals[t], errs[t], scales[t], stats[t], hst[t:t + 1])
        levels[t] = lev
        status[t] = st


run_tasks = _njit(_SIG)(run_tasks)
