"""Compiled part 1 of the four-point integrator (:mod:`._fourpoint_core`): the table of the
Gaussian smoothing G_f(mu) = E[f(mu + sigma u)] of the deepest level.  A module of its own so that
it compiles in parallel with :mod:`._fourpoint_integrate` (see :func:`.fourpoint.prefetch_core`)."""

from __future__ import annotations

import math

import numpy as np

from ._fourpoint_common import _CHM, _CHX, _GQW, _GQX, _INV_SQRT_2PI, _MAXPAN, _NCH, _njit, _pw
from ._fourpoint_common import _SIG_BUILD, _SIG_GVALUES

# ------------------------------------------------------------------------------------------------
# Table of G_f(mu) = E[f(mu + sigma u)] for the factors f = s^p s'^q of one variable
# ------------------------------------------------------------------------------------------------


@_njit(_SIG_GVALUES)
def _gvalues(s_fn, ds_fn, d2s_fn, d3s_fn, kinks, mu, sigma, R, fpow, nf, halve, g, ga, gt, cuts):
    """g[f] = int_{|u|<=R} phi(u) f(mu + sigma u) du, ga the same of |f|, gt that of |f| over
    |u| > R - 1.5 (Gauss-Legendre, 16 points per panel; panels halved when ``halve``); factor f is
    s^p s'^q s''^r (s^(3))^t with (p, q, r, t) = fpow[f] (slots of power 0 in every factor not called)."""
    n0 = False
    n1 = False
    n2 = False
    n3 = False
    for f in range(nf):
        g[f] = 0.0
        ga[f] = 0.0
        gt[f] = 0.0
        n0 = n0 or fpow[f, 0] > 0
        n1 = n1 or fpow[f, 1] > 0
        n2 = n2 or fpow[f, 2] > 0
        n3 = n3 or fpow[f, 3] > 0
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
                s = s_fn(z) if n0 else 1.0
                d = ds_fn(z) if n1 else 1.0
                d2 = d2s_fn(z) if n2 else 1.0
                d3 = d3s_fn(z) if n3 else 1.0
                tail = abs(u) > rt
                for f in range(nf):
                    val = _pw(s, d, d2, d3, fpow[f, 0], fpow[f, 1], fpow[f, 2], fpow[f, 3])
                    g[f] += w * val
                    av = w * abs(val)
                    ga[f] += av
                    if tail:
                        gt[f] += av


@_njit(_SIG_BUILD)
def _build_table(s_fn, ds_fn, d2s_fn, d3s_fn, kinks, sigma, half, R, fpow, nf, eta, tedges, tcoef, terr):
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
    for i in range(1, ni):  # insertion sort (ni is small; np.sort would compile Numba's quicksort)
        a = init[i]
        j = i - 1
        while j >= 0 and init[j] > a:
            init[j + 1] = init[j]
            j -= 1
        init[j + 1] = a
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
    # the scale of each G_|f| over the whole table (17 points): panels where G is far below it
    # (tails, where its quadrature is only good to a fraction of its own size) are split until
    # their error is below eta 1e-3 gscale rather than eta times their own size (which would bisect
    # them down to the panel cap); the error bound terr reports what is reached
    gscale = np.zeros(nf)
    for k in range(17):
        _gvalues(s_fn, ds_fn, d2s_fn, d3s_fn, kinks, -half + 2.0 * half * k / 16.0, sigma, R, fpow, nf, False,
                 g, ga, gt, cuts)
        for f in range(nf):
            if ga[f] > gscale[f]:
                gscale[f] = ga[f]
    npan = 0
    tedges[0] = -half
    while ns > 0:
        ns -= 1
        a = stack[ns, 0]
        b = stack[ns, 1]
        c = 0.5 * (a + b)
        r = 0.5 * (b - a)
        for k in range(_NCH):
            _gvalues(s_fn, ds_fn, d2s_fn, d3s_fn, kinks, c + r * _CHX[k], sigma, R, fpow, nf, False, g, ga, gt,
                     cuts)
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
        # pending panels (ns + 2 after a split) are all accepted at worst: keep npan <= _MAXPAN
        if r > 0.5 * minw and ns < 510 and npan + ns + 2 < _MAXPAN:
            for f in range(nf):
                amax = 0.0
                for k in range(_NCH):
                    if vals[k, 2 * f + 1] > amax:
                        amax = vals[k, 2 * f + 1]
                e = abs(coef[2 * f, _NCH - 1]) + abs(coef[2 * f, _NCH - 2])
                if e > eta * max(amax, 1e-3 * gscale[f]) + 1e-300:
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
        _gvalues(s_fn, ds_fn, d2s_fn, d3s_fn, kinks, c, sigma, R, fpow, nf, True, g2, ga2, gt2, cuts)
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


