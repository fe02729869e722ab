r"""Covariance derivatives of E[f(u) f(v)] for f with kinks, by Gaussian integration by parts.

For (u, v) ~ N(0, S), S = [[k11, k12], [k12, k22]], T(k11, k22, k12) = E[f(u) f(v)].  Price's
theorem and its diagonal analogue give the derivatives as expectations of derivatives of f,

    dT/dk11 = E[f''(u) f(v)] / 2,   dT/dk12 = E[f'(u) f'(v)],   d2T/dk12^2 = E[f''(u) f''(v)], ...

which for f with kinks (ELU: f' jumps at 0, so f'' holds a delta) are distributions.  Integrating
by parts in the Gaussian measure moves every derivative onto the density instead:

    E[f^(m)(u) f^(n)(v)] = E[f(u) f(v) H_mn(u, v)],   H_mn = (-1)^(m+n) (d/du)^m (d/dv)^n phi_S / phi_S,

the bivariate Hermite polynomials of S (H_10 = (P z)_1, H_11 = (P z)_1 (P z)_2 - P_12, with
P = S^-1), derived here with SymPy; the integral of f f H, f with kinks but no deltas, is the
two-dimensional Gauss-Legendre quadrature :func:`ntk_theory.numerics.bivariate.expect_weighted`
(its error model there).  E[f'' f''] holds J^2 p(0, 0) ~ 1 / sqrt(det S) for a jump J of f', so
these derivatives diverge for parallel inputs.

Used by :mod:`ntk_theory.finite_width.twopoint` for numerical activations with kinks (ELU,
SELU), whose N-input finite-width tensors need these derivatives.
"""

from __future__ import annotations

import functools

import numpy as np

from ..numerics.bivariate import expect_weighted

__all__ = ["ORDERS", "hermite_weight", "expect_derivatives"]

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


def expect_derivatives(f, kinks, k11, k22, k12):
    """E[f^(m)(u) f^(n)(v)] for the (m, n) in :data:`ORDERS`, at arrays of off-diagonal entries
    (|rho| < 1): (values (E, 9), errors (E, 9)).  f: NumPy-vectorised, continuous with the given
    kinks (its derivative may jump there)."""
    k11, k22, k12 = (np.asarray(a, dtype=float).ravel() for a in (k11, k22, k12))
    for a, b, c in zip(k11, k22, k12):
        if not a * b - c**2 > 0:
            raise ValueError(f"the pair covariance [[{a}, {c}], [{c}, {b}]] is singular: "
                             "the covariance derivatives of a kinked activation diverge for parallel inputs")
    return expect_weighted(f, kinks, k11, k22, k12, [hermite_weight(m, n) for m, n in ORDERS])
