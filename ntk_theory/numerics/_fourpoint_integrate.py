"""Compiled part 2 of the four-point integrator (:mod:`._fourpoint_core`): the nodes of one level
and the nested quadrature of one task."""

from __future__ import annotations

import math

import numpy as np

from ._fourpoint_common import (_GLW_C, _GLW_F, _GLX_C, _GLX_F, _INV_SQRT_2PI, _MAXN, _NCH,
                                _SIG_INTEGRATE, _SIG_LEVEL_NODES, _njit, _pw)

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
    # the trapezoidal step cap h_g shrinks with steps below 0.5 too: with a fixed cap, a level of small
    # scale |L| (h_z / |L| > h_g) had the same nodes at every refinement, so two rules agreed while both
    # missed its error (tanh's s^(3) s'^3 at variance 0.27: 2e-5 relative, reported as 1e-13)
    hg = gparam[0] * min(hz / 0.5, 1.0)
    wg = gparam[1]
    cw = gparam[2]
    wthr = gparam[3]
    if not fine:
        hz = hz * 1.5
        hg = hg * 1.5
    # the panel cap shrinks with the step as well, so every panel of a refined rule is refined
    # (with a fixed cap, levels at the cap would get the same panels in both rules, and their
    # difference, the error estimate, would miss their error); the geometric grading near
    # smoothed kinks starts at the kink's width in every rule
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
    # insertion sort of (px, pw) as in gauss_legendre._mesh, kept here so that this module compiles
    # on its own (no link to another module's compiled code; see _fourpoint_core)
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
    # panels graded geometrically from both ends as in gauss_legendre._mesh (written here for the
    # same reason as the sort above, with this module's caps on the number of panels)
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


@_njit(_SIG_INTEGRATE, fastmath={'contract'})
def _integrate(s_fn, ds_fn, d2s_fn, d3s_fn, L, nv, rank, vlevel, facpow, nfac, lf_fac, nlf, nsuf, suf_lf, suf_inner,
               hz, fine, R, kinks, gparam, D, vt, jf, tedges, tcoef, terr, npan, nft,
               out, aout, shell, eout, scratch):
    """One nested quadrature over the levels 0..D-1 (depth-first).  With a table (vt >= 0) the
    level D is the tabulated G of variable vt; else level D is the constant 1.  Factor f of variable v
    is s^p s'^q s''^r (s^(3))^t, (p, q, r, t) = facpow[v, f]; a slot of power 0 in all of v's factors is not
    called for v."""
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
    fv = np.empty((4, facpow.shape[1]))
    need = np.zeros((4, 4), dtype=np.bool_)
    for v in range(nv):
        for f in range(nfac[v]):
            for k in range(4):
                if facpow[v, f, k] > 0:
                    need[v, k] = True
    g = np.empty(facpow.shape[1])
    ga = np.empty(facpow.shape[1])
    ge = np.empty(facpow.shape[1])
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
                # the factor products as at the outer levels below, inline on purpose: a helper taking
                # these arrays would count references at every node (see _fourpoint_core)
                for ii in range(lnv[lvl]):
                    v = lvars[lvl, ii]
                    z = offs[lvl, v] + L[v, lvl] * u
                    sv = s_fn(z) if need[v, 0] else 1.0
                    dv = ds_fn(z) if need[v, 1] else 1.0
                    d2v = d2s_fn(z) if need[v, 2] else 1.0
                    d3v = d3s_fn(z) if need[v, 3] else 1.0
                    for f in range(nfac[v]):
                        fv[v, f] = _pw(sv, dv, d2v, d3v, facpow[v, f, 0], facpow[v, f, 1], facpow[v, f, 2],
                                       facpow[v, f, 3])
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
                # accumulated as at the outer levels' unwinding below: inline on purpose (hot loop)
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
            # the innermost level's factor products again, inline on purpose (no helper: see above)
            for ii in range(lnv[lvl]):
                v = lvars[lvl, ii]
                z = offs[lvl, v] + L[v, lvl] * u
                sv = s_fn(z) if need[v, 0] else 1.0
                dv = ds_fn(z) if need[v, 1] else 1.0
                d2v = d2s_fn(z) if need[v, 2] else 1.0
                d3v = d3s_fn(z) if need[v, 3] else 1.0
                for f in range(nfac[v]):
                    fv[v, f] = _pw(sv, dv, d2v, d3v, facpow[v, f, 0], facpow[v, f, 1], facpow[v, f, 2],
                                   facpow[v, f, 3])
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
            # the innermost level's accumulation above, again for an outer level: inline on purpose (hot loop)
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


