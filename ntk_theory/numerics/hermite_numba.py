r"""Hermite tables a_n(k) = E[f(sqrt(k) x) h_n(x)] in Numba: the compiled back end of :mod:`.hermite`.

:func:`coefficients` returns a :class:`.hermite.HermiteTable` (coefficients, their error, E f^2, the
tails and orders of :func:`.hermite.tails_and_orders`) for f a ``numba.njit`` function of one
float64, smooth or with kinks; the NumPy back end (:func:`.hermite.coefficients`) takes
NumPy-vectorised smooth f.

Smooth f (no kinks): Gauss-Hermite (probabilists') rules with Q1 = 2N + 64 and
Q2 = Q1 + N/2 + 32 nodes (scipy's nodes, refined by Newton's method in extended precision, with
Christoffel weights: scipy's asymptotic nodes for Q > 150 alone limit the coefficients to ~1e-13);
the Q2 values are returned and |a(Q2) - a(Q1)|_2 is the error estimate.  The Q1 rule
runs only on every 16th variance in sorted order and on the largest; the other variances get the
largest of those estimates relative to sqrt(E f^2), times their own sqrt(E f^2).  Gauss-Hermite's
error grows with the variance (f(sqrt(k) x) sharpens), so this is trusted only below a checked
variance that passed: every variance below a checked one that failed is checked itself.
Kinked f, and smooth f where Gauss-Hermite does not reach 64 eps sqrt(E f^2) (sharp f at large variance): composite
Gauss-Legendre panels on [-38, 38] split at 0 and at the kinks c / sqrt(k), graded geometrically
(ratio 2) from width 1/sqrt(k) at each of those points (f is assumed to vary on the unit scale
of u = sqrt(k) x around 0 and its kinks) up to w = min(1, 12/sqrt(N+1)) (which resolves the
oscillation of h_N), with 14- and 20-point rules per panel (the 20-point values are returned,
the l2 difference is the error estimate).  Nodes whose weighted f^2 is below 1e-36 of the total
are dropped before the (costly) recurrence: by Cauchy-Schwarz they change no a_n by more than
1e-18 sqrt(E f^2) (this is added to the estimate).  The recurrence carries y_j = c_j h_n(x_j)
(c_j = weight times f at node j), vectorised over nodes: |y_j| <= |c_j| exp(x_j^2 / 4) does not
overflow.  E f^2 is computed separately, by the 1-D rule of :mod:`.gauss_legendre`.

:attr:`.hermite.HermiteTable.error` is the l2 norm over n of the estimated coefficient errors (plus
eps sqrt(E f^2)), which is what the series needs: by Cauchy-Schwarz the coefficient errors change
the value of the series by at most err_a sqrt(E g^2) + err_b sqrt(E f^2) + err_a err_b.

The table routine is compiled with an explicit signature (f a first-class function
``FunctionType(float64(float64))``), once when this module is first imported and cached on disk;
variances are processed in threads (the compiled routine releases the GIL).
"""

from __future__ import annotations

import functools
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import types
from scipy.special import roots_hermitenorm

from .gauss_legendre import _EPS, _F64, _FN, _KINKS, _L_MAX, _VEC, _evaluate, _line2, _line_nodes, _with_zero
from .hermite import HermiteTable, tails_and_orders

__all__ = ["coefficients"]

_DROP = 1e-36  # nodes with weighted f^2 below this fraction of the total are dropped
_CHECK_EVERY = 16  # the two-rule error estimate runs on every 16th variance (and the extremes)


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
