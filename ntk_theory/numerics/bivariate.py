r"""Two-dimensional Gauss-Legendre quadrature of E[f(u) f(v) H(u, v)] for f with kinks (NumPy).

For (u, v) ~ N(0, S), S = [[k11, k12], [k12, k22]] positive definite, and weights H given as
functions of w = P z (z = (u, v), P = S^-1) and of P's entries: in
:func:`expect_weighted` only f itself is integrated, a function with kinks (points where f or f'
jumps) but no deltas.  The use: the covariance derivatives of E[f(u) f(v)] for kinked f by Gaussian
integration by parts, E[f^(m)(u) f^(n)(v)] = E[f(u) f(v) H_mn(u, v)] with the bivariate Hermite
polynomials H_mn of S (:mod:`ntk_theory.gaussian.bivariate` derives them).

Rule: (x, y) ~ N(0, I), u = sqrt(k11) x, v = sqrt(k22) (rho x + sqrt(1 - rho^2) y), on [-L, L]^2
(L = 8.5: Gaussian mass outside < 1e-16 relative for f of polynomial growth), the x panels split at
the kinks of f(u), and for each x node the y range split at the kinks of f(v) (which move with x);
panel widths min(0.75, 0.75 / scale) of the function's scale in that variable.  H is evaluated in
w = L^-T (x, y) with S = L L^T (no cancellation in w itself, where p11 u + p12 v would lose
1 / (1 - rho^2) digits near parallel inputs).

Error estimate: the difference between the 14- and the 20-point rules (the 20-point value is
returned) plus the rounding, (8 + sqrt(nodes)) eps sum |w f f| |H| with |H| the weight's rounding
scale (the sum of its monomials' sizes, supplied with H).  The monomials of H_mn grow like
(1 - rho^2)^(-(m + n)/2) as the inputs become parallel.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.polynomial.legendre import leggauss

__all__ = ["expect_weighted"]

_EPS = 2.220446049250313e-16
_L = 8.5
_GL = {m: leggauss(m) for m in (14, 20)}


def _panels(breaks, width, m):
    """Composite m-point Gauss-Legendre nodes and weights over consecutive intervals of ``breaks``
    (..., B) (sorted along the last axis), each interval cut into the same number of panels of
    width <= ``width``; returns arrays (..., nodes)."""
    gx, gw = _GL[m]
    lo, hi = breaks[..., :-1], breaks[..., 1:]
    P = max(1, int(math.ceil(2 * _L / width)))
    t = (np.arange(P)[:, None] + 0.5 * (gx[None, :] + 1.0)) / P  # (P, m) in [0, 1]
    wt = np.broadcast_to(gw[None, :] / (2 * P), t.shape)
    span = (hi - lo)[..., None, None]
    x = lo[..., None, None] + span * t
    w = span * wt
    shape = breaks.shape[:-1] + (-1,)
    return x.reshape(shape), w.reshape(shape)


def _one(f, kinks, k11, k22, k12, m, weights):
    """(values, rounding scales) of one entry by the m-point rule, one per weight (H, |H|)."""
    s1, s2 = math.sqrt(k11), math.sqrt(k22)
    rho = k12 / (s1 * s2)
    c = math.sqrt(max(1.0 - rho * rho, 0.0))
    xb = np.sort(np.concatenate([[-_L, _L], [k / s1 for k in kinks if -_L < k / s1 < _L]]))
    x, wx = _panels(xb, min(0.75, 0.75 / max(s1, abs(rho) * s2)), m)
    # y split points per x node: the kinks of f(v), v = s2 (rho x + c y)
    yk = (np.array(kinks, dtype=float)[None, :] / s2 - rho * x[:, None]) / c
    yb = np.sort(np.concatenate([np.full((x.size, 1), -_L), np.clip(yk, -_L, _L), np.full((x.size, 1), _L)], axis=1), axis=1)
    y, wy = _panels(yb, min(0.75, 0.75 / max(s2 * c, 1e-300)), m)
    X = np.broadcast_to(x[:, None], y.shape)
    U = s1 * X
    V = s2 * (rho * X + c * y)
    W = (wx[:, None] * wy) * np.exp(-0.5 * (X * X + y * y)) / (2 * math.pi)
    with np.errstate(all="ignore"):
        FF = W * np.asarray(f(U), dtype=float) * np.asarray(f(V), dtype=float)
    # w = P z = L^-T (x, y) with S = L L^T: no cancellation near parallel inputs (p11 u + p12 v
    # would lose 1 / (1 - rho^2) digits)
    w1 = (X - (rho / c) * y) / s1
    w2 = y / (s2 * c)
    p11, p12, p22 = 1 / (k11 * c * c), -rho / (s1 * s2 * c * c), 1 / (k22 * c * c)
    vals, rounding = [], []
    aFF = np.abs(FF)
    n = FF.size
    for H, Habs in weights:
        g = FF * H(w1, w2, p11, p12, p22)
        vals.append(float(g.sum()))
        # rounding: of H (its monomials' sizes, ~ 8 operations each) and of the sum (sqrt(n) eps)
        rounding.append(float((aFF * Habs(w1, w2, p11, p12, p22)).sum()) * _EPS * (8 + math.sqrt(n)))
    return np.array(vals), np.array(rounding)


def expect_weighted(f, kinks, k11, k22, k12, weights):
    """E[f(u) f(v) H(u, v)] for each weight of ``weights`` at arrays of covariances (positive
    definite): (values (E, W), errors (E, W)).  f: NumPy-vectorised, continuous with the given kinks
    (its derivative may jump there); weights: pairs (H, |H|) of NumPy functions of
    (w1, w2, p11, p12, p22), w = S^-1 z, |H| the rounding scale of evaluating H."""
    k11, k22, k12 = (np.asarray(a, dtype=float).ravel() for a in (k11, k22, k12))
    kinks = tuple(float(k) for k in kinks)
    weights = tuple(weights)
    vals = np.zeros((k11.size, len(weights)))
    errs = np.zeros_like(vals)
    for i in range(k11.size):
        if not k11[i] * k22[i] - k12[i] ** 2 > 0:
            raise ValueError(f"the pair covariance [[{k11[i]}, {k12[i]}], [{k12[i]}, {k22[i]}]] is singular: "
                             "the weights H are functions of its inverse")
        v14, _ = _one(f, kinks, k11[i], k22[i], k12[i], 14, weights)
        v20, r20 = _one(f, kinks, k11[i], k22[i], k12[i], 20, weights)
        vals[i] = v20
        errs[i] = np.abs(v20 - v14) + r20
    if not (np.isfinite(vals).all() and np.isfinite(errs).all()):
        raise ValueError("E[f(u) f(v) H(u, v)] is not finite: f grows too fast or returned NaN/inf")
    return vals, errs
