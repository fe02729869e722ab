r"""Core of :mod:`ntk_theory.numerics.fourpoint`: one generic integrator, compiled once.

The activation enters as four first-class function slots ``fns = (s, s', s'', s^(3))``
(``numba.types.FunctionType(float64(float64))``, called through a pointer; a factor of one
variable is a product of their powers, see :mod:`._fourpoint_common`, and a slot no factor uses
is never called), so this module is compiled once per machine (explicit signature,
``cache=True``) and a new activation costs only the compilation of its small njit functions.

Per input set (task) the nested quadrature of :mod:`~ntk_theory.numerics.fourpoint` runs over
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

Compilation: only :func:`_level_nodes`, :func:`_gvalues`, :func:`_build_table` and
:func:`_integrate` are compiled; the refinement loop :func:`_task` and :func:`run_tasks` are Python
calling them (a few calls per set), because Numba links every callee's module into its caller and
generates its machine code again.  Every compiled function has an explicit signature (one compile
each, no specialisations for literal arguments); small sorts are insertion sorts (np.sort's
quicksort would be compiled into each caller); and the per-node work of the innermost level
(activation factors, table evaluation) is written inline in ``_integrate`` on 2-D arrays indexed
by level, because passing row views (``offs[lvl]``) or calling helpers with array arguments makes
Numba increment and decrement reference counts (atomic operations) at every node.
"""

from __future__ import annotations

import math

import numpy as np

from ._fourpoint_common import _MAXPAN, _NCH
from ._fourpoint_integrate import _integrate, _level_nodes  # noqa: F401
from ._fourpoint_table import _build_table, _gvalues  # noqa: F401


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


def _max_relative_change(fine, coarse, scale, n):
    """max_k |fine_k - coarse_k| / scale_k over the first n products with scale_k > 0 (0 if none)."""
    rmax = 0.0
    for k in range(n):
        if scale[k] > 0.0:
            rr = abs(fine[k] - coarse[k]) / scale[k]
            if rr > rmax:
                rmax = rr
    return rmax


def _task(fns, kinks, L, nv, rank, vlevel, facpow, nfac, lf_fac, nlf, nsuf, suf_lf, suf_inner,
          gparam, hz0, tol, max_refine, R0, use_table, vals, errs, scales, stats, hst):
    """Refinement loop of one task; returns (refinements, status 0 ok / 1 not converged / 2 bad).
    hst[0]: the step h* at which a (fine h*, coarse 1.5 h*) pair would just pass with margin,
    predicted from the last pair by the model ln(err(h) / E|f|) = -c / h (a hint for the next
    call's starting step; the acceptance test itself does not use it)."""
    NS = suf_lf.shape[1]
    # per product: values of the fine and the two coarse rules, E|f| (fine, coarse), shell mass and
    # table error (fine, coarse); rows of one array, each C-contiguous as _integrate's signature wants
    fine, coarse, coarse2, af, ac, sh, shc, ef, ec = np.empty((9, NS))
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
    fpow = np.zeros((facpow.shape[1], 4), dtype=np.int64)
    tedges = np.empty(_MAXPAN + 1)
    tcoef = np.empty((1, 1, 1))
    terr = np.empty((1, 1))
    npan = 0
    nft = 0
    if vt >= 0:
        D = rank - 1
        nft = nfac[vt]
        fpow[:nft] = facpow[vt, :nft]
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
            npan = _build_table(*fns, kinks, abs(sig), half, R, fpow, nft, eta, tedges, tcoef, terr)
            stats[2] += npan
            built = True
        _integrate(*fns, L, nv, rank, vlevel, facpow, nfac, lf_fac, nlf, nsuf, suf_lf, suf_inner,
                   hz, True, R, kinks, gparam, D, vt, jf, tedges, tcoef, terr, npan, nft, fine, af, sh, ef, scratch)
        stats[0] += 1
        stats[3] += int(fine[NS - 1])
        if not have_coarse:
            _integrate(*fns, L, nv, rank, vlevel, facpow, nfac, lf_fac, nlf, nsuf, suf_lf, suf_inner,
                       hz, False, R, kinks, gparam, D, vt, jf, tedges, tcoef, terr, npan, nft, coarse, ac, shc, ec,
                       scratch)
            _integrate(*fns, L, nv, rank, vlevel, facpow, nfac, lf_fac, nlf, nsuf, suf_lf, suf_inner,
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
            rmax = _max_relative_change(fine, coarse, af, nk)
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
            rmax = _max_relative_change(fine, coarse, af, nk)
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


def run_tasks(fns, kinks, tasks, Ls, nvs, ranks, vlevels, sids, facpows, nfacs, lf_facs, nlfs, nsufs,
              suf_lfs, suf_inners, gparam, hz0, tol, max_refine, R0, use_table, vals, errs, scales, levels, status,
              stats, hst):
    """The tasks listed in ``tasks`` (indices into the stacked arrays; the level structures are rows
    ``sids[t]`` of their tables), one after the other (Python: the compiled work is in
    :func:`_integrate` and :func:`_build_table`, which release the GIL)."""
    for i in range(tasks.size):
        t = tasks[i]
        u = sids[t]
        lev, st = _task(fns, kinks, Ls[t], nvs[t], ranks[t], vlevels[t], facpows[u], nfacs[u],
                        lf_facs[u], nlfs[u], nsufs[u], suf_lfs[u], suf_inners[u], gparam, hz0, tol, max_refine,
                        R0, use_table, vals[t], errs[t], scales[t], stats[t], hst[t:t + 1])
        levels[t] = lev
        status[t] = st
