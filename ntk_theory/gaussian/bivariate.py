r"""Covariance derivatives of E[f(u) f(v)] for f with kinks, by Gaussian integration by parts (NumPy).

For (u, v) ~ N(0, S), S = [[k11, k12], [k12, k22]], T(k11, k22, k12) = E[f(u) f(v)].  Price's
theorem and its diagonal analogue give the derivatives as expectations of derivatives of f,

    dT/dk11 = E[f''(u) f(v)] / 2,   dT/dk12 = E[f'(u) f'(v)],   d2T/dk12^2 = E[f''(u) f''(v)], ...

which for f with kinks (ELU: f' jumps at 0, so f'' holds a delta) are distributions.  Integrating
by parts in the Gaussian measure moves every derivative onto the density instead:

    E[f^(m)(u) f^(n)(v)] = E[f(u) f(v) H_mn(u, v)],   H_mn = (-1)^(m+n) (d/du)^m (d/dv)^n phi_S / phi_S,

the bivariate Hermite polynomials of S (H_10 = (P z)_1, H_11 = (P z)_1 (P z)_2 - P_12, with
P = S^-1; derived here with SymPy).  Only f itself is integrated, a function with kinks but no
deltas: two-dimensional composite Gauss-Legendre in (x, y) ~ N(0, I), u = sqrt(k11) x,
v = sqrt(k22) (rho x + sqrt(1 - rho^2) y), on [-L, L]^2 (L = 8.5: Gaussian mass outside
< 1e-16 relative for f of polynomial growth), the x panels split at the kinks of f(u), and for
each x node the y range split at the kinks of f(v) (which move with x); panel widths
min(0.75, 0.75 / scale) of the function's scale in that variable.  Error estimate: the
difference between the 14- and the 20-point rules (the 20-point value is returned) plus the
rounding, (8 + sqrt(nodes)) eps sum |w f f| |H| with |H| the sum of H's monomials' sizes: H is
evaluated in w = P z = L^-T (x, y) (no cancellation in w itself), but its monomials grow like
(1 - rho^2)^(-(m + n)/2) as the inputs become parallel (where the derivatives of kinked f diverge anyway: E[f'' f''] holds
J^2 p(0, 0) ~ 1 / sqrt(det S)).

Used by :mod:`ntk_theory.finite_width.twopoint` for numerical activations with kinks (ELU,
SELU), whose N-input finite-width tensors need these derivatives.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numpy.polynomial.legendre import leggauss

__all__ = ["ORDERS", "hermite_weight", "expect_derivatives"]

_EPS = 2.220446049250313e-16
_L = 8.5
_GL = {m: leggauss(m) for m in (14, 20)}
# the (m, n) derivative orders the covariance derivatives need (module docstring)
ORDERS = ((0, 0), (2, 0), (0, 2), (1, 1), (4, 0), (2, 2), (3, 1), (1, 3), (0, 4))


@functools.lru_cache(maxsize=None)
def hermite_weight(m: int, n: int):
    """(H_mn, |H|_mn) as NumPy functions of (w1, w2, p11, p12, p22), w = P z, P = S^-1: H by the
    recursion H_(m+1)n = w1 H - D_u H, H_m(n+1) = w2 H - D_v H (D_u w1 = p11, D_u w2 = p12,
    D_v w1 = p12, D_v w2 = p22), derived with SymPy; |H| the sum of its monomials' absolute values
    (the rounding scale of evaluating H)."""
    import sympy as sp

    w1, w2, p11, p12, p22 = sp.symbols("w1 w2 p11 p12 p22", real=True)

    def Du(e):
        return p11 * sp.diff(e, w1) + p12 * sp.diff(e, w2)

    def Dv(e):
        return p12 * sp.diff(e, w1) + p22 * sp.diff(e, w2)

    H = sp.Integer(1)
    for _ in range(m):
        H = sp.expand(w1 * H - Du(H))
    for _ in range(n):
        H = sp.expand(w2 * H - Dv(H))
    args = (w1, w2, p11, p12, p22)
    Habs = sp.Add(*[sp.Abs(t) for t in sp.Add.make_args(H)])
    return sp.lambdify(args, H, "numpy"), sp.lambdify(args, Habs, "numpy")


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


def _one(f, kinks, k11, k22, k12, m):
    """(values for ORDERS, E|f f H| for ORDERS) of one entry by the m-point rule."""
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
    for mm, nn in ORDERS:
        H, Habs = hermite_weight(mm, nn)
        g = FF * H(w1, w2, p11, p12, p22)
        vals.append(float(g.sum()))
        # rounding: of H (its monomials' sizes, ~ 8 operations each) and of the sum (sqrt(n) eps)
        rounding.append(float((aFF * Habs(w1, w2, p11, p12, p22)).sum()) * _EPS * (8 + math.sqrt(n)))
    return np.array(vals), np.array(rounding)


def expect_derivatives(f, kinks, k11, k22, k12):
    """E[f^(m)(u) f^(n)(v)] for the (m, n) in :data:`ORDERS`, at arrays of off-diagonal entries
    (|rho| < 1): (values (E, 9), errors (E, 9)).  f: NumPy-vectorised, continuous with the given
    kinks (its derivative may jump there)."""
    k11, k22, k12 = (np.asarray(a, dtype=float).ravel() for a in (k11, k22, k12))
    kinks = tuple(float(k) for k in kinks)
    vals = np.zeros((k11.size, len(ORDERS)))
    errs = np.zeros_like(vals)
    for i in range(k11.size):
        if not k11[i] * k22[i] - k12[i] ** 2 > 0:
            raise ValueError(f"the pair covariance [[{k11[i]}, {k12[i]}], [{k12[i]}, {k22[i]}]] is singular: "
                             "the covariance derivatives of a kinked activation diverge for parallel inputs")
        v14, _ = _one(f, kinks, k11[i], k22[i], k12[i], 14)
        v20, r20 = _one(f, kinks, k11[i], k22[i], k12[i], 20)
        vals[i] = v20
        errs[i] = np.abs(v20 - v14) + r20
    if not (np.isfinite(vals).all() and np.isfinite(errs).all()):
        raise ValueError("E[f(u) f(v) H(u, v)] is not finite: f grows too fast or returned NaN/inf")
    return vals, errs
