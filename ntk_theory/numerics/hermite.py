r"""Hermite tables and Mehler's series E[f(u) g(v)] = sum_n a_n b_n rho^n: table class, tail model,
truncation rule, and the NumPy back end.

For (u, v) ~ N(0, [[k11, k12], [k12, k22]]), rho = k12 / sqrt(k11 k22) and the normalized
probabilists' Hermite polynomials h_n = He_n / sqrt(n!)  (h_0 = 1, h_1 = x,
h_(n+1) = (x h_n - sqrt(n) h_(n-1)) / sqrt(n+1)), Mehler's formula gives

    E[f(u) g(v)] = sum_n a_n(k11) b_n(k22) rho^n,    a_n(k) = E[f(sqrt(k) x) h_n(x)], x ~ N(0, 1),

and b_n likewise for g.  The coefficients depend on one variance only, so a kernel matrix whose
entry (i, j) has k11 = K_ii, k22 = K_jj needs one table (:class:`HermiteTable`) per distinct row
and column variance; every entry is then a sum over n.  The tables are built here in NumPy for
smooth f (:func:`coefficients`: no compilation) or in Numba for any f (:mod:`.hermite_numba`);
the series are summed here in NumPy (:func:`expect2`, :func:`expect2_pairs`) or by the scalar
Numba functions of :mod:`.mehler`.

Truncation bound
----------------
Parseval: sum_n a_n^2 = E[f^2].  With the tails A_m = sum_(n>m) a_n^2 (and B_m for g), Cauchy-Schwarz
bounds the error of stopping after degree M by

    |sum_(n>M) a_n b_n rho^n| <= |rho|^(M+1) sqrt(A_M B_M) <= |rho|^(M+1) sqrt(E f^2 E g^2).

The truncation order of an entry is the smallest M with |rho|^(M+1) sqrt(A_M B_M) <= tol
sqrt(E f^2 E g^2) (:func:`truncation_orders`; for one entry in Numba, in logarithms,
:func:`.mehler.order_from_log_tails`), so the truncation error is at most tol sqrt(E f^2 E g^2).
Entries where no M <= max_order qualifies (kinked or sharp f, g with |rho| close to 1) are left to
a direct quadrature.  A table's own ``order`` is the first m with A_m <= tol^2 E f^2.

Tail model
----------
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

NumPy coefficients
------------------
Composite Gauss-Legendre in x on [-L, L], L = 14, with panels of width
h = min(0.75, 0.75 / sqrt(k)) (resolving both the oscillation of h_n, n <= 256, wavelength
>= 0.39, and f(sqrt(k) x), which varies on the scale 1 / sqrt(k); for degrees N > 256 the 0.75
shrinks by sqrt(256 / N) with the wavelength), 14- and 20-point rules per
panel: the 20-point coefficients are returned, the l2 norm (over n) of their difference is the
error estimate, plus eps sqrt(E f^2) (E f^2 by the same 20-point rule).  The tail beyond L:
|h_n(x)| exp(-x^2 / 4) <= 1.09 (Cramer's inequality), so for f of at most polynomial growth it
changes no a_n by more than ~ exp(-L^2 / 4) = 5e-22 times the size of f out there.  The recurrence
h_(n+1) = (x h_n - sqrt(n) h_(n-1)) / sqrt(n + 1) carries y_j = w_j f(x_j) h_n(x_j), vectorised
over the nodes (a ValueError where the last 2 units of the range hold more than 1e-20 of E f^2:
f grows too fast, e.g. exp(u^2), whose expectation diverges).  Nodes whose w f^2 is below 1e-36 of
the total are dropped (Cauchy-Schwarz bounds their effect by 1e-18 sqrt(E f^2), added to the
estimate).

Series sums: :func:`expect2` reports per entry tol sqrt(E f^2 E g^2) + err_a sqrt(E g^2) +
err_b sqrt(E f^2) (Cauchy-Schwarz) + 4 eps sum_n |a_n b_n rho^n| (rounding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.polynomial.legendre import leggauss

__all__ = ["HermiteTable", "coefficients", "expect2", "expect2_pairs", "power_law_beyond", "tails_and_orders",
           "truncation_orders"]

_EPS = 2.220446049250313e-16
_DROP = 1e-36
_L = 14.0
_GL = {m: leggauss(m) for m in (14, 20)}


@dataclass
class HermiteTable:
    """Hermite coefficients a_n(k) = E[f(sqrt(k) x) h_n(x)] for a set of variances k.

    coef (V, max_order + 1); order (V,) int64: the first m with A_m <= tol^2 E f^2 (A_m the tail
    sum_(n>m) a_n^2, estimated by the tail model of the module docstring),
    or -1 if none <= max_order; norm2 (V,) E[f(sqrt(k) x)^2] by its own quadrature; error (V,)
    the estimated l2 norm (over n) of the error of the coefficients; tail (V, max_order + 1) the
    estimated relative tails min(A_m / E f^2, 1) (1 where nothing is known).
    """

    coef: np.ndarray
    order: np.ndarray
    norm2: np.ndarray
    error: np.ndarray
    tail: np.ndarray | None = None

    @property
    def max_order(self) -> int:
        return self.coef.shape[1] - 1

    def __repr__(self) -> str:
        return (f"HermiteTable({self.coef.shape[0]} variances, max_order={self.max_order}, "
                f"max error {float(np.max(self.error, initial=0.0)):.1e})")


def power_law_beyond(S2, S3):
    """The tail beyond N from the sums S2 over (N/2, 3N/4] and S3 over (3N/4, N], for a_n^2 ~ n^-p:
    S3 / S2 = ((4/3)^s - 1) / (2^s - (4/3)^s), s = p - 1, solved for s > 0 (bisection on log s),
    and then sum_(n>N) = S3 / ((4/3)^s - 1).  inf where S3 / S2 >= ln(4/3) / ln(3/2) (p <= 1)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        r = S3 / S2
        lo = np.full(r.shape, -20.0)  # log s
        hi = np.full(r.shape, 7.0)
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            t = np.exp(mid)
            ratio = np.expm1(t * math.log(4 / 3)) / (np.exp(t * math.log(2)) - np.exp(t * math.log(4 / 3)))
            big = ratio > r  # ratio decreases with s: the root is at larger s
            lo = np.where(big, mid, lo)
            hi = np.where(big, hi, mid)
        s = np.exp(hi)  # the smaller-s end is the conservative one
        beyond = S3 / np.expm1(s * math.log(4 / 3))
    return np.where((S2 > 0) & (r < math.log(4 / 3) / math.log(1.5)), beyond, np.inf)


def tails_and_orders(coef, norm2, error, tol):
    """Relative tails min(A_m / E f^2, 1) and the orders (the tail model of the module docstring)."""
    V, N1 = coef.shape
    N = N1 - 1
    sq = coef * coef
    suffix = np.cumsum(sq[:, ::-1], axis=1)[:, ::-1]  # suffix[:, m] = sum_(n>=m) a_n^2
    seen = np.zeros_like(sq)  # seen[:, m] = sum_(m<n<=N) a_n^2
    seen[:, :-1] = suffix[:, 1:]
    if N >= 16:
        S3 = seen[:, (3 * N) // 4]
        S2 = seen[:, N // 2] - S3
        noise = 4.0 * error**2 + (N / 4.0) * (8.0 * _EPS) ** 2 * norm2  # coefficient errors
        beyond = np.where(S3 <= noise, S3, power_law_beyond(S2, S3))
    else:
        beyond = np.where(seen[:, 0] <= 1e-30 * norm2, seen[:, 0], np.inf)
    residual = norm2 - suffix[:, 0]  # Parseval: E f^2 - sum_(n<=N) a_n^2, good to ~1e-15 E f^2
    resolution = 1e-14 * norm2 + 4.0 * error * np.sqrt(norm2)
    beyond = np.where(residual > resolution, np.maximum(beyond, residual), beyond)
    with np.errstate(divide="ignore", invalid="ignore"):
        # conservative also for the coefficients' own errors: sqrt(A_m) is known to +- error
        tail = (np.sqrt(seen + beyond[:, None]) + error[:, None]) ** 2
        tail = np.minimum(tail / norm2[:, None], 1.0)
    tail = np.where(norm2[:, None] > 0, tail, 0.0)
    ok = tail <= tol * tol
    order = np.where(ok.any(axis=1), ok.argmax(axis=1), -1).astype(np.int64)
    return np.ascontiguousarray(tail), order


def _nodes(sk: float, m: int, N: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Composite m-point Gauss-Legendre nodes and N(0, 1) weights on [-L, L] (module docstring);
    panel width min(h_N, 0.75 / sk), h_N = 0.75 sqrt(256 / N) for degrees N > 256."""
    hN = 0.75 * math.sqrt(256.0 / max(N, 256))
    h = min(hN, 0.75 / sk) if sk > 0 else hN
    P = int(math.ceil(2 * _L / h))
    edges = np.linspace(-_L, _L, P + 1)
    c, r = 0.5 * (edges[1:] + edges[:-1]), 0.5 * (edges[1:] - edges[:-1])
    gx, gw = _GL[m]
    x = (c[:, None] + r[:, None] * gx[None, :]).ravel()
    w = (r[:, None] * gw[None, :]).ravel() * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    return x, w


def _project(x, c, starts, N):
    """out[s, n] = sum_(j in segment s) c_j h_n(x_j), n = 0..N, for the segments of the node array
    that begin at ``starts`` (all segments in one recurrence)."""
    out = np.empty((starts.size, N + 1))
    y, yp = c.copy(), np.zeros_like(c)
    for n in range(N + 1):
        out[:, n] = np.add.reduceat(y, starts) if y.size else 0.0
        if n < N:
            y, yp = (x * y - math.sqrt(n) * yp) / math.sqrt(n + 1.0), y
    return out


def _weighted_nodes(f, k: float, m: int, N: int):
    """(x, w f(sqrt(k) x), E f^2, dropped part of E f^2) of the m-point rule at variance k > 0."""
    sk = math.sqrt(k)
    x, w = _nodes(sk, m, N)
    with np.errstate(all="ignore"):
        F = np.broadcast_to(np.asarray(f(sk * x), dtype=float), x.shape)
    wF2 = w * F * F
    total = float(wF2.sum())
    if m == 20 and float(wF2[np.abs(x) > _L - 2].sum()) > 1e-20 * total:
        raise ValueError(f"E[f(u)^2] at variance {k} does not converge (or is not resolved on |u| <= "
                         f"{_L} sqrt(k)): f grows too fast for a Gaussian expectation")
    keep = wF2 > _DROP * total
    return x[keep], (w * F)[keep], total, float(wF2[~keep].sum())


def coefficients(f, variances, *, max_order: int = 256, tol: float = 1e-13) -> HermiteTable:
    """Hermite coefficients of f(sqrt(k) x) up to degree ``max_order`` for each variance k (>= 0).

    f: a NumPy-vectorised function of one array argument, smooth (no kinks: use
    :func:`.hermite_numba.coefficients` for kinked f)."""
    var = np.asarray(variances, dtype=float).ravel()
    if not np.all(np.isfinite(var)) or np.any(var < 0):
        raise ValueError("variances must be finite numbers >= 0")
    N = int(max_order)
    coef = np.zeros((var.size, N + 1))
    error = np.zeros(var.size)
    norm2 = np.zeros(var.size)
    # both rules at every positive variance, projected in one vectorised recurrence
    pos = np.flatnonzero(var > 0)
    segs = [_weighted_nodes(f, float(var[i]), m, N) for i in pos for m in (14, 20)]
    if segs:
        lengths = np.array([sg[0].size for sg in segs])
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        empty = lengths == 0
        proj = _project(np.concatenate([sg[0] for sg in segs]), np.concatenate([sg[1] for sg in segs]),
                        np.minimum(starts, max(int(lengths.sum()) - 1, 0)), N)
        proj[empty] = 0.0  # reduceat gives the next segment's first element for empty segments
        a0, a1 = proj[0::2], proj[1::2]
        n2 = np.array([sg[2] for sg in segs[1::2]])
        dropped = np.maximum(np.array([sg[3] for sg in segs[0::2]]), np.array([sg[3] for sg in segs[1::2]]))
        coef[pos] = a1
        norm2[pos] = n2
        error[pos] = (np.sqrt(np.sum((a0 - a1) ** 2, axis=1)) + np.sqrt(dropped * (N + 1))
                      + _EPS * np.sqrt(np.maximum(n2, 0.0)))
    zero = np.flatnonzero(var == 0)
    if zero.size:
        f0 = float(np.asarray(f(np.zeros(1)), dtype=float).ravel()[0])
        coef[zero, 0] = f0
        norm2[zero] = f0 * f0
    if not (np.all(np.isfinite(coef)) and np.all(np.isfinite(norm2)) and np.all(np.isfinite(error))):
        bad = var[~(np.isfinite(norm2) & np.isfinite(error) & np.all(np.isfinite(coef), axis=1))]
        raise ValueError(f"E[f(u)^2] is not finite (or f returned NaN/inf) at the variances {bad[:5].tolist()}")
    tail, order = tails_and_orders(coef, norm2, error, tol)
    return HermiteTable(coef=coef, order=order, norm2=norm2, error=error, tail=tail)


def truncation_orders(tail_a: np.ndarray, tail_b: np.ndarray, rho: np.ndarray, tol: float) -> np.ndarray:
    """Per entry the smallest M with |rho|^(M+1) sqrt(tail_a[M] tail_b[M]) <= tol, or -1
    (tail_a, tail_b: (E, M+1) rows of relative tails; rho (E,))."""
    r = np.minimum(np.abs(rho), 1.0)[:, None]
    m = np.arange(tail_a.shape[1])[None, :]
    with np.errstate(divide="ignore"):
        bound = np.exp((m + 1) * np.log(r)) * np.sqrt(tail_a * tail_b)
    ok = bound <= tol
    return np.where(ok.any(axis=1), ok.argmax(axis=1), -1)


def expect2(A: HermiteTable, B: HermiteTable, ia, ib, rho, tol: float = 1e-14):
    """(values, errors) of E[f(u) g(v)] for entries with variance rows ia of A (f) and ib of B
    (g) and correlations rho; NaN (error inf) where the series needs more than max_order terms."""
    ia, ib, rho = np.asarray(ia), np.asarray(ib), np.asarray(rho, dtype=float)
    M = truncation_orders(A.tail[ia], B.tail[ib], rho, tol)
    n = np.arange(A.coef.shape[1])[None, :]
    with np.errstate(all="ignore"):
        powers = np.where(n == 0, 1.0, rho[:, None] ** n)
    terms = np.where(n <= M[:, None], A.coef[ia] * B.coef[ib] * powers, 0.0)
    value = terms.sum(axis=1)
    sa, sb = np.sqrt(A.norm2[ia]), np.sqrt(B.norm2[ib])
    err = tol * sa * sb + A.error[ia] * sb + B.error[ib] * sa + 4 * _EPS * np.abs(terms).sum(axis=1)
    bad = M < 0
    return np.where(bad, np.nan, value), np.where(bad, np.inf, err)


def expect2_pairs(f, g, k11, k22, k12, *, tol: float = 1e-14, orders=(256, 1024), tables: dict | None = None):
    """(values, errors) of E[f(u) g(v)] at arrays of covariances (k11, k22, k12), f, g smooth.

    Hermite tables of f and g at the distinct variances, degree ``orders[0]``; entries whose series
    needs more terms get the tables of the next degree (for just the variances they involve); entries
    that no degree resolves stay NaN with error inf, for the caller's quadrature.
    rho = k12 / (sqrt(k11) sqrt(k22)) (no underflow of k11 k22).  ``tables``: an optional dict that
    keeps the tables across calls with the same variances (keyed by function, degree, variances)."""
    a, b, c = (np.asarray(v, dtype=float).ravel() for v in (k11, k22, k12))
    tables = {} if tables is None else tables
    with np.errstate(all="ignore"):
        sa, sb = np.sqrt(a), np.sqrt(b)
        rho = np.where((sa > 0) & (sb > 0), c / (sa * sb), 0.0)
    rho = np.clip(rho, -1.0, 1.0)
    var, inv = np.unique(np.concatenate([a, b]), return_inverse=True)
    ia, ib = inv[: a.size], inv[a.size:]

    def table(fn, rows, order):
        key = (fn, order, var[rows].tobytes())
        if key not in tables:
            tables[key] = coefficients(fn, var[rows], max_order=order, tol=tol)
        return tables[key]

    every = np.arange(var.size)
    out, err = expect2(table(f, every, orders[0]), table(g, every, orders[0]), ia, ib, rho, tol=tol)
    for order in orders[1:]:
        bad = np.flatnonzero(~np.isfinite(out))
        if not bad.size:
            break
        rows, sub = np.unique(np.concatenate([ia[bad], ib[bad]]), return_inverse=True)
        o2, e2 = expect2(table(f, rows, order), table(g, rows, order), sub[: bad.size], sub[bad.size:],
                         rho[bad], tol=tol)
        out[bad], err[bad] = o2, e2
    shape = np.broadcast(np.asarray(k11), np.asarray(k22), np.asarray(k12)).shape
    return out.reshape(shape), err.reshape(shape)
