r"""Four- and three-variable Gaussian moments of a smooth activation by a block Mehler (Kibble-Slepian) expansion.

For a set S = {a, b, c, d} of four inputs, z_S ~ N(0, K_S), and factors f_v (products of powers of s, s', s'',
s^(3), one factor per variable), the moment E[f_a(z_a) f_b(z_b) f_c(z_c) f_d(z_d)] is split into two pairs
A = (a, b), B = (c, d): the pairing, among the three, whose whitened cross covariance has the smallest
spectral norm.  With the Cholesky factors z_A = L_A x, z_B = L_B y (x, y ~ N(0, I_2)) and the cross
covariance R = E[x y^T] = L_A^-1 K_AB L_B^-T,

    E[F(x) G(y)] = sum_d  F_d . Q_d(R) G_d,        F(x) = f_a(z_a) f_b(z_b),  G(y) = f_c(z_c) f_d(z_d),

where F_d = (F_(k, d-k))_k are the normalized Hermite coefficients of degree d,
F_(k, l) = E[F(x) h_k(x_1) h_l(x_2)], h_n = He_n / sqrt(n!), and Q_d(R) is the d-th symmetric power of R
in that orthonormal basis, Q_d[k, p] = E[h_k(x_1) h_(d-k)(x_2) h_p(y_1) h_(d-p)(y_2)], built degree by
degree from

    Q_d[k, p] = R_00 sqrt(p / k) Q_(d-1)[k-1, p-1] + R_01 sqrt((d - p) / k) Q_(d-1)[k-1, p]      (k >= 1)
    Q_d[0, p] = R_10 sqrt(p / d) Q_(d-1)[0, p-1]   + R_11 sqrt((d - p) / d) Q_(d-1)[0, p]

(the Taylor series of the Gaussian expectation in the cross covariance, Kibble 1945, Slepian 1972, summed
by total degree).  A set of three inputs is split into a pair A and a single input c (the split with the
smallest |R|, R = L_A^-1 K_Ac / sqrt(K_cc) a 2-vector): E[F(x) g(y)] = sum_d sum_k F_(k, d-k)
sqrt(C(d, k)) R_0^k R_1^(d-k) g_d with the one-input coefficients g_d = E[g(sqrt(K_cc) y) h_d(y)] (its
factors may be powers, s^2 s' ...).  The coefficients of a pair depend only on the pair, so they are
computed once per pair of inputs and product type (N (N - 1) / 2 pairs instead of C(N, 4) + C(N, 3) sets),
and every set costs O(d^3) (four inputs) or O(d^2) (three) arithmetic.  The operator norm of Q_d is
|R|_2^d = r^d (r: the largest canonical correlation of the split), so the series converges geometrically,
faster still through the decay of the coefficients of an analytic activation; degrees up to ``N_MAX``.

Coefficients: the trapezoidal rule in each whitened coordinate on |x| <= 12.5 (beyond, the weighted Hermite
polynomials are below 1.09 exp(-x^2 / 4) < 1e-16), with the step h = pi^2 / (56 s) (at most 0.35) for an
axis along which the factors vary as f(s x): the rule's error exp(-2 pi tau / h) is exp(-56) for an
activation analytic in the strip |Im z| < pi / 2 (tanh's poles; sigmoid, softplus, swish have wider strips,
erf and gelu are entire).  The pair's sums are two contractions (over x_2 for every x_1 node, then over x_1),
compiled (:mod:`._fourpoint_pairs`); the pairs run on two threads.  The same with the step 1.05^4 h gives
the error estimate of the coefficients (the norm per degree of the difference, the coarse rule's error: an
overestimate of the fine one's); an activation with narrower strips shows there and its sets fall back.

Error estimate of a product (bounds given the coefficients' estimates, no convergence model):

* truncation after degree n: sum_(n < d <= N_MAX) r^d |F_d| |G_d| + r^(N_MAX+1) sqrt(T_F T_G) (Cauchy-Schwarz
  on each degree; T_F = E[F^2] - sum_(d <= N_MAX) |F_d|^2 by Parseval, plus 1e-15 E[F^2] for the
  cancellation); n is the first degree at which this is below 1e-3 tol E|prod|;
* coefficients: sum_(d <= n) r^d (|dF_d| |G_d| + |F_d| |dG_d|) with dF the difference of the two rules;
* rounding: 16 (n + 1) eps (sum_d r^d |F_d| |G_d| + E|prod|).

E|prod| (the scale the tolerance is relative to) is the same series for |F| and |G| to degree ``N_SCALE``
minus its Cauchy-Schwarz tail (a lower bound but for the quadrature error of the coefficients of the kinked
|f|), and at least |E prod|: within a few percent of E|prod| (measured: 0.97 to 1.02 times the nested
quadrature's at the finite-width benchmark's covariances).

Route by cost (:func:`cheaper_than_quadrature`): the pair tables are a fixed cost per call, so the expansion is
used only when its cost model, P pairs x ``COST_PAIR`` (the two rules of a pair's coefficients), is below the nested
quadrature's for the same sets, S3 x ``COST_SET3`` + S4 x ``COST_SET4``, all in units of one three-input set of the
nested quadrature (the ratios measured by CPU time for tanh and the products of :func:`.fourpoint.four_point_moments`
and of the dNTK / ddNTK derivative terms, N = 3 .. 6: a pair costs 1.0 to 1.4 three-input sets, a four-input set
7 to 12).  Both routes give the same values within their error estimates, so the choice only moves the time: at
N = 3 (three pairs, one three-input set) the quadrature is taken, from N = 4 (six pairs, four three-input sets and
one four-input set) the expansion.

A set is accepted when every product's estimate is below tol E|prod| and its pairs are non-singular
(conditional variance above 1e-14 of the variance) and need at most 1e6 nodes (standard deviations up to
about 7 along both axes); the others are left to the nested quadrature of
:mod:`.fourpoint`.  Activations with kinks are not expanded (their coefficients decay slowly and the
trapezoidal rule converges slowly on them).
"""

from __future__ import annotations

import functools
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

__all__ = ["ExpandedSets", "PairTables", "SingleTables", "cheaper_than_quadrature", "count_pairs", "expand",
           "pair_tables", "single_tables"]

N_MAX = 64  # the highest degree of the pair coefficients
N_SCALE = 12  # the degree of the |F| series giving E|prod|
_THREADS = max(1, min(2, os.cpu_count() or 1))


#: the cost model of :func:`cheaper_than_quadrature`, in units of one three-input set of the nested quadrature
COST_PAIR = 1.25
COST_SET3 = 1.0
COST_SET4 = 8.0

_RANGE = 12.5  # |x| <= _RANGE: beyond, w h_k <= 1.09 exp(-x^2 / 4) (Cramer) is below 1e-16
_STRIP = 56.0  # the step h = 2 pi tau / _STRIP for an activation analytic in |Im z| < tau = pi / 2
_MAX_NODES = 1_000_000  # a pair needing more nodes (variances above ~50) is left to the nested quadrature


def _trapezoid(h: float) -> tuple:
    """Trapezoidal nodes x = j h, |x| <= _RANGE, and weights h phi(x) of N(0, 1)."""
    J = math.ceil(_RANGE / h)
    x = h * np.arange(-J, J + 1, dtype=np.float64)
    return x, h * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _step(scale: float) -> float:
    """The step along an axis on which the factors vary as f(scale x): the trapezoidal rule's error
    exp(-2 pi tau / h) is exp(-_STRIP) for poles at Im z = pi / 2 (tanh's), i.e. Im x = pi / (2 scale);
    at most 0.35 (the Hermite polynomials of degree <= 80 and their Gaussian weight); rounded down to
    0.35 / 1.05^j so that pairs share their node tables (:func:`_rule`)."""
    h = min(0.35, math.pi ** 2 / (_STRIP * max(scale, 1e-300)))
    return 0.35 * 1.05 ** -math.ceil(math.log(0.35 / h) / math.log(1.05) - 1e-9)


@functools.lru_cache(maxsize=64)
def _rule(h: float, n: int) -> tuple:
    """(nodes, weights, weighted Hermite polynomials (n + 1, M)) of the trapezoidal rule of step h."""
    x, w = _trapezoid(h)
    return x, w, _weighted_hermite(x, w, n)


def _weighted_hermite(x, w, n):
    """(n + 1, M): w_j h_k(x_j), normalized Hermite polynomials by their three-term recurrence."""
    H = np.empty((n + 1, x.size))
    H[0] = 1.0
    if n >= 1:
        H[1] = x
    for k in range(1, n):
        H[k + 1] = (x * H[k] - math.sqrt(k) * H[k - 1]) / math.sqrt(k + 1)
    return H * w


@functools.lru_cache(maxsize=8)
def _packing(nd: int) -> tuple:
    """(k, l) of the packed positions d (d + 1) / 2 + k, l = d - k, for degrees d < nd."""
    k = np.concatenate([np.arange(d + 1) for d in range(nd)])
    d = np.concatenate([np.full(d + 1, d) for d in range(nd)])
    return k, d - k, d


@dataclass
class PairTables:
    """Normalized Hermite coefficients of F = f_i(z_i) f_j(z_j) per pair (i < j) and product type u, row u of
    ``types`` = (fi, fj), positions in the factor list: see :func:`._fourpoint_pairs.set_sums` for the arrays;
    ``L`` the pairs' Cholesky factors, ``ok`` whether a pair is non-singular and its coefficients finite."""

    coef: np.ndarray
    cnorm: np.ndarray
    ctail: np.ndarray
    dnorm: np.ndarray
    acoef: np.ndarray
    atail: np.ndarray
    L: np.ndarray
    ok: np.ndarray


def _coefficients(fns, L, pows, types, n, ns, h1, h2):
    """(F (U, n+1, n+1) coefficients F[u, k, l] of the factor pairs types[u] = (fi, fj), |F| coefficients
    (U, ns+1, ns+1), E[F^2] (U,)) of one pair with Cholesky factor L, by the trapezoidal rule with steps h1 (x_1)
    and h2 (x_2)."""
    from ._fourpoint_pairs import factor_values, project

    x1, w1, H1 = _rule(h1, n)
    x2, w2, H2 = _rule(h2, n)
    M1, M2 = x1.size, x2.size
    nf = pows.shape[0]
    U = types.shape[0]
    fa = np.empty((nf, M1))
    factor_values(*fns, np.ascontiguousarray(L[0, 0] * x1), pows, fa)
    zb = (L[1, 0] * x1[:, None] + L[1, 1] * x2[None, :]).ravel()
    fb = np.empty((nf, M1 * M2))
    factor_values(*fns, zb, pows, fb)
    fb = fb.reshape(nf, M1, M2)
    F = np.empty((U, n + 1, n + 1))
    project(fa, fb, H1, H2, n, types, F)
    Fa = np.empty((U, ns + 1, ns + 1))
    project(np.abs(fa), np.abs(fb), np.ascontiguousarray(H1[:ns + 1]), np.ascontiguousarray(H2[:ns + 1]), ns, types,
            Fa)
    e2 = (((fa ** 2) * w1) @ ((fb ** 2) @ w2).T)[types[:, 0], types[:, 1]]
    return F, Fa, e2


def _degree_norms(packed, nd):
    """Euclidean norms per degree of packed coefficient rows (U, NP) -> (U, nd) (degree d at d (d + 1) / 2 ...)."""
    starts = np.arange(nd) * (np.arange(nd) + 1) // 2
    return np.sqrt(np.add.reduceat(packed ** 2, starts, axis=1))


def pair_tables(fns, K, pairs, pows, types, n: int = N_MAX, ns: int = N_SCALE) -> PairTables:
    """The coefficient tables of the pairs ``pairs`` (P, 2) of K for the product types ``types`` (U, 2) of the
    factors ``pows`` (nf, 4): powers (p, q, r, t) of s, s', s'', s^(3); ``fns`` the activation's four compiled
    function slots.  Two rules (steps h and 1.05^4 h per axis); the pairs run on two threads."""
    P = len(pairs)
    types = np.ascontiguousarray(np.asarray(types, dtype=np.int64).reshape(-1, 2))
    U = types.shape[0]
    nd = n + 1
    kk, ll, _ = _packing(nd)
    ksc, lsc, _ = _packing(ns + 1)
    coef = np.zeros((P, U, kk.size))
    cnorm = np.zeros((P, U, nd))
    dnorm = np.zeros((P, U, nd))
    ctail = np.zeros((P, U))
    acoef = np.zeros((P, U, ksc.size))
    atail = np.zeros((P, U))
    Ls = np.zeros((P, 2, 2))
    ok = np.zeros(P, dtype=bool)

    def one(p):
        i, j = pairs[p]
        kii, kjj, kij = K[i, i], K[j, j], K[i, j]
        if not (kii > 0 and kjj > 0):
            return
        l11 = math.sqrt(kii)
        l21 = kij / l11
        c22 = kjj - l21 * l21
        if not c22 > 1e-14 * kjj:
            return
        L = np.array([[l11, 0.0], [l21, math.sqrt(c22)]])
        Ls[p] = L
        h1, h2 = _step(max(abs(l11), abs(l21))), _step(L[1, 1])
        if (2 * _RANGE / h1 + 1) * (2 * _RANGE / h2 + 1) > _MAX_NODES:
            return
        F, Fa, e2 = _coefficients(fns, L, pows, types, n, ns, h1, h2)
        Fc, _, _ = _coefficients(fns, L, pows, types, n, ns, 1.05 ** 4 * h1, 1.05 ** 4 * h2)
        packed = F[:, kk, ll]
        coef[p] = packed
        cn = _degree_norms(packed, nd)
        cnorm[p] = cn
        dnorm[p] = _degree_norms(packed - Fc[:, kk, ll], nd)
        ctail[p] = np.maximum(e2 - (cn ** 2).sum(axis=1), 0.0) + 1e-15 * e2
        apacked = Fa[:, ksc, lsc]
        acoef[p] = apacked
        atail[p] = np.maximum(e2 - (apacked ** 2).sum(axis=1), 0.0) + 1e-15 * e2
        ok[p] = bool(np.all(np.isfinite(packed)) and np.all(np.isfinite(e2)))

    if _THREADS > 1 and P > 1:
        with ThreadPoolExecutor(_THREADS) as pool:
            list(pool.map(one, range(P)))
    else:
        for p in range(P):
            one(p)
    return PairTables(coef, cnorm, ctail, dnorm, acoef, atail, Ls, ok)


@dataclass
class SingleTables:
    """Normalized Hermite coefficients g[v, w, d] = E[f_w(sqrt(K_vv) y) h_d(y)] of every input v and factor w,
    ``err`` their error estimate (difference of two rules), ``tail`` the energy beyond the last degree, ``a``,
    ``atail`` the same of |f_w| to degree ns."""

    g: np.ndarray
    err: np.ndarray
    tail: np.ndarray
    a: np.ndarray
    atail: np.ndarray


def single_tables(fns, K, pows, n: int = N_MAX, ns: int = N_SCALE) -> SingleTables:
    """The one-input tables of :class:`SingleTables` for every input of K and the factors ``pows`` (nf, 4); an
    input whose rule would exceed sqrt(_MAX_NODES) nodes (standard deviation above ~7) gets NaN (its sets are
    not accepted)."""
    from ._fourpoint_pairs import factor_values

    N = K.shape[0]
    nf = pows.shape[0]
    out = [np.zeros((N, nf, n + 1)) for _ in range(3)] + [np.zeros((N, nf, ns + 1)), np.zeros((N, nf))]
    g, err, a = out[0], out[1], out[3]
    tail, atail = np.zeros((N, nf)), out[4]
    for v in range(N):
        sig = math.sqrt(max(K[v, v], 0.0))
        if 2 * _RANGE / _step(sig) + 1 > _MAX_NODES ** 0.5:
            g[v] = np.nan  # not tabulated (standard deviation above ~7): its sets are not accepted
            continue
        res = []
        for h in (_step(sig), 1.05 ** 4 * _step(sig)):
            x, w, H = _rule(h, n)
            f = np.empty((nf, x.size))
            factor_values(*fns, np.ascontiguousarray(sig * x), pows, f)
            res.append((f @ H.T, np.abs(f) @ H[:ns + 1].T, (f ** 2) @ w))
        g[v], a[v] = res[0][0], res[0][1]
        err[v] = np.abs(res[0][0] - res[1][0])
        e2 = res[0][2]
        tail[v] = np.maximum(e2 - (g[v] ** 2).sum(axis=1), 0.0) + 1e-15 * e2
        atail[v] = np.maximum(e2 - (a[v] ** 2).sum(axis=1), 0.0) + 1e-15 * e2
    return SingleTables(g, err, tail, a, atail)


def _used_pairs(N: int, groups: dict) -> np.ndarray:
    """(P, 2) the pairs i < j of inputs that occur together in a set of ``groups`` ({m: (sets (S, m), ...)})."""
    used = np.zeros((N, N), dtype=bool)
    for m, (sets, _) in groups.items():
        sets = np.asarray(sets, dtype=np.int64).reshape(-1, m)
        for a in range(m):
            for b in range(a + 1, m):
                used[sets[:, a], sets[:, b]] = True
    return np.argwhere(used)


def count_pairs(groups: dict) -> int:
    """The number of pairs of inputs (i < j) that occur together in a set of ``groups`` ({m: (sets (S, m) sorted
    indices, products)}, as :func:`expand`): the pair tables :func:`expand` would compute."""
    sizes = [int(np.max(st)) + 1 for _, (st, _) in groups.items() if np.size(st)]
    return 0 if not sizes else len(_used_pairs(max(sizes), groups))


def cheaper_than_quadrature(groups: dict) -> bool:
    """Whether the block expansion of the sets of ``groups`` (as :func:`expand`) is predicted to cost less than their
    nested quadrature: P ``COST_PAIR`` < S3 ``COST_SET3`` + S4 ``COST_SET4`` (P pairs, S3 / S4 sets of three / four
    inputs; the module docstring).  The per-set sums of the expansion are left out (O(d^3) arithmetic per set against a pair's
    two-dimensional quadratures), and so are the sets the expansion would leave to the quadrature (unknown in advance)."""
    sets = {m: int(np.asarray(st).size // m) for m, (st, _) in groups.items()}
    cost_quadrature = COST_SET3 * sets.get(3, 0) + COST_SET4 * sets.get(4, 0)
    return COST_PAIR * count_pairs(groups) < cost_quadrature


_PAIRINGS = (((0, 1), (2, 3)), ((0, 2), (1, 3)), ((0, 3), (1, 2)))
_SPLITS3 = (((1, 2), 0), ((0, 2), 1), ((0, 1), 2))  # (pair, single) of a three-input set


@dataclass
class ExpandedSets:
    """Sets of one size by the block expansion: per set (rows, in the order given) the values, error estimates
    and scales E|prod| of the products (columns, in the order given), ``accepted`` where every estimate is
    below tol E|prod|, ``degrees`` the highest degree summed, ``r`` the split's canonical correlation."""

    values: np.ndarray
    errors: np.ndarray
    scales: np.ndarray
    accepted: np.ndarray
    degrees: np.ndarray
    r: np.ndarray


def _whitened(K, sets, A, B, tab, pid):
    """(R (S, 2, |B|) = L_A^-1 K_AB L_B^-T, r = |R|_2 (inf where a pair is unusable), pair ids of A (and B))."""
    ia = pid[sets[:, A[0]], sets[:, A[1]]]
    good = tab.ok[ia]
    LA = tab.L[ia]
    LA[~good] = np.eye(2)
    KAB = K[sets[:, list(A)][:, :, None], sets[:, list(B)][:, None, :]]
    X = np.linalg.solve(LA, KAB)
    if len(B) == 2:
        ib = pid[sets[:, B[0]], sets[:, B[1]]]
        good = good & tab.ok[ib]
        LB = tab.L[ib]
        LB[~good] = np.eye(2)
        R = np.swapaxes(np.linalg.solve(LB, np.swapaxes(X, 1, 2)), 1, 2)
    else:
        ib = None
        sd = np.sqrt(np.maximum(K[sets[:, B[0]], sets[:, B[0]]], 0.0))
        good = good & (sd > 0)
        R = X / np.where(sd > 0, sd, 1.0)[:, None, None]
    r = np.where(good, np.linalg.norm(R.reshape(len(sets), 2, -1), ord=2, axis=(1, 2)), np.inf)
    return R, r, ia, ib


def expand(fns, K, groups: dict, tol: float, n: int = N_MAX) -> tuple:
    """E[prod_v f_v(z_v)] for sets of four and three inputs of K by the block expansion (module docstring).

    ``groups``: {m: (sets (S, m) sorted indices, products)} for m in (4, 3), a product a tuple over the m
    variables of powers (p, q, r, t) of s, s', s'', s^(3) (for m = 4 one factor per variable).  ``fns``: the
    activation's four compiled function slots.  Returns ({m: :class:`ExpandedSets`}, number of pairs)."""
    from ._fourpoint_pairs import set_sums, set_sums3

    N = K.shape[0]
    groups = {m: (np.asarray(st, dtype=np.int64).reshape(-1, m), tuple(pr)) for m, (st, pr) in groups.items()
              if len(st) and len(pr)}
    if not groups:
        return {}, 0
    factors = sorted({f for _, prods in groups.values() for prod in prods for f in prod})
    fidx = {f: i for i, f in enumerate(factors)}
    pows = np.array(factors, dtype=np.int64).reshape(len(factors), 4)
    # product types of the pairs (every split of every set: the split is chosen per set)
    tlist: dict = {}
    splits = {4: [(A, B) for A, B in _PAIRINGS], 3: [(A, (v,)) for A, v in _SPLITS3]}
    typeidx = {}
    for m, (sets, prods) in groups.items():
        ti = np.zeros((len(splits[m]), 2, len(prods)), dtype=np.int64)
        for q, (A, B) in enumerate(splits[m]):
            for c, prod in enumerate(prods):
                ka = (fidx[prod[A[0]]], fidx[prod[A[1]]])
                ti[q, 0, c] = tlist.setdefault(ka, len(tlist))
                if len(B) == 2:
                    ti[q, 1, c] = tlist.setdefault((fidx[prod[B[0]]], fidx[prod[B[1]]]), len(tlist))
                else:
                    ti[q, 1, c] = fidx[prod[B[0]]]
        typeidx[m] = ti
    pairs = _used_pairs(N, groups)
    pid = -np.ones((N, N), dtype=np.int64)
    pid[pairs[:, 0], pairs[:, 1]] = np.arange(len(pairs))
    types = np.array(sorted(tlist, key=tlist.get), dtype=np.int64).reshape(-1, 2)
    tab = pair_tables(fns, K, pairs, pows, types, n)
    single = single_tables(fns, K, pows, n) if 3 in groups else None
    out = {}
    for m, (sets, prods) in groups.items():
        S, C = len(sets), len(prods)
        best_r = np.full(S, np.inf)
        best = np.zeros(S, dtype=np.int64)
        Rs = np.zeros((S, 2, 2 if m == 4 else 1))
        pa = np.zeros(S, dtype=np.int64)
        pb = np.zeros(S, dtype=np.int64)
        for q, (A, B) in enumerate(splits[m]):
            R, r, ia, ib = _whitened(K, sets, A, B, tab, pid)
            sel = r < best_r
            best_r[sel], best[sel], Rs[sel], pa[sel] = r[sel], q, R[sel], ia[sel]
            pb[sel] = ib[sel] if ib is not None else sets[sel, B[0]]
        ta = np.ascontiguousarray(typeidx[m][best, 0])
        tb = np.ascontiguousarray(typeidx[m][best, 1])
        usable = np.isfinite(best_r) & (best_r < 1.0)
        ta[~usable] = -1
        r1 = np.where(usable, best_r, 0.0)
        vals, errs, scales = np.zeros((S, C)), np.zeros((S, C)), np.zeros((S, C))
        deg = np.zeros(S, dtype=np.int64)
        Rc = np.ascontiguousarray(Rs if m == 4 else Rs[:, :, 0])

        def chunk(sl, m=m, pa=pa, pb=pb, Rc=Rc, r1=r1, ta=ta, tb=tb, vals=vals, errs=errs, scales=scales, deg=deg):
            args = (pa[sl], pb[sl], Rc[sl], r1[sl], ta[sl], tb[sl], N_SCALE, float(tol), vals[sl], errs[sl],
                    scales[sl], deg[sl])
            if m == 4:
                set_sums(tab.coef, tab.cnorm, tab.ctail, tab.dnorm, tab.acoef, tab.atail, *args)
            else:
                set_sums3(tab.coef, tab.cnorm, tab.ctail, tab.dnorm, tab.acoef, tab.atail, single.g, single.err,
                          single.tail, single.a, single.atail, *args)

        # the sets in two halves on two threads (the compiled sums release the GIL; each set's sums are its own)
        halves = [slice(0, S // 2), slice(S // 2, S)] if _THREADS > 1 and S >= 64 else [slice(0, S)]
        if len(halves) > 1:
            with ThreadPoolExecutor(_THREADS) as pool:
                list(pool.map(chunk, halves))
        else:
            chunk(halves[0])
        with np.errstate(invalid="ignore"):
            accepted = usable & np.all(np.isfinite(vals) & np.isfinite(errs) & (errs <= tol * scales), axis=1)
        out[m] = ExpandedSets(vals, errs, scales, accepted, deg, best_r)
    return out, len(pairs)
