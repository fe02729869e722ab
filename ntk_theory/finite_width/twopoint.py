r"""Two-point Gaussian averages of an activation and their covariance derivatives, for N inputs.

For (u, v) ~ N(0, [[k11, k12], [k12, k22]]) let T = <s(u) s(v)> and Tdot = <s'(u) s'(v)>
(s' the almost-everywhere derivative, as for the NTK).  The tensor recursions need, per pair of
inputs (a, b), the derivatives with respect to the covariance entries.  Differentiating the
Gaussian density (Price's theorem and its diagonal analogue):

    dT/dk11 = <s''(u) s(v)> / 2,   dT/dk12 = <s'(u) s'(v)>,
    d2T/dk11^2 = <s''''(u) s(v)> / 4,  d2T/dk11 dk22 = <s''(u) s''(v)> / 4,
    d2T/dk11 dk12 = <s'''(u) s'(v)> / 2,  d2T/dk12^2 = <s''(u) s''(v)>,

and likewise for Tdot with s -> s'.  Where the rules of :mod:`ntk_theory.gaussian` give T (Tdot)
in closed form, these are SymPy derivatives of it (exact, kinks included: for ReLU,
d2T/dk12^2 = <delta(u) delta(v)> = 1 / (2 pi sqrt(det)) comes out of the arc-cosine kernel).
Otherwise they are Gaussian expectations of the derivative products above, by Mehler's formula on
Hermite tables of the derivatives computed in NumPy (:mod:`ntk_theory.numerics.hermite`, with its
coefficient error and Parseval tail bound; no compilation), degree 256 and
1024 where the series is longer (|rho| near 1 with a large variance), and the compiled 2-D
quadrature of :mod:`ntk_theory.numerics.gauss_legendre` for entries that not even 1024 terms resolve (rare;
compiled on first use).  For a numerical activation with kinks (ELU, SELU, user piecewise), whose
derivatives hold deltas, Gaussian integration by parts moves every derivative onto the density:
E[f^(m)(u) f^(n)(v)] = E[f(u) f(v) H_mn(u, v)] with the bivariate Hermite polynomials H_mn of the
pair covariance, f = s (or s') integrated by 2-D quadrature split at the kinks
(:mod:`ntk_theory.gaussian.bivariate`, with its error estimate).

Ordered-pair derivatives: the recursions sum over ordered index pairs (e, f) with K_ef and K_fe
independent, R[f]_ef = d<f>/dK_ef, so for a != b the pair (a, b) carries half of dT/dk12 and so
does (b, a).  :func:`derivative_tensors` returns them as dense (N, N, N, N) arrays
R[a, b, e, f] (non-zero only for e, f in {a, b}) and the contraction
Q[a, b] = (1/2) sum_(p, q ordered pairs) d2T_ab/dK_p dK_q V[p, q] of the Taylor term.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import sympy as sp

from .. import diskcache
from .._checks import warn_accuracy
from ..activations import drop_deltas, x
from ..gaussian import k11, k12, k22
from ..gaussian.stable import lambdify as stable_lambdify
from ..gaussian.stable import lambdify_form, stable_form
from ..numerics import hermite
from ..recursions.layer import activation_kernels

_VARS = (k11, k22, k12)
# second-derivative index pairs (i, j) over (k11, k22, k12), upper triangle
_PAIRS = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]


@dataclass
class PairDerivatives:
    """For arrays of pairs: value, gradient (..., 3) and Hessian (..., 3, 3) in (k11, k22, k12)."""

    value: np.ndarray
    grad: np.ndarray
    hess: np.ndarray
    error: float


def _derivative_forms(e: sp.Expr) -> list:
    """Stable forms of e, its gradient and Hessian (upper triangle, _PAIRS) in (k11, k22, k12)."""
    two = [e] + [sp.diff(e, v) for v in _VARS] + [sp.diff(e, _VARS[i], _VARS[j]) for i, j in _PAIRS]
    return [stable_form(f) for f in two]


class TwoPoint:
    """T = <s s> (``which='ss'``) or Tdot = <s' s'> (``which='dd'``) of one activation."""

    def __init__(self, act, which: str):
        self.activation = act
        self.which = which
        kern = activation_kernels(act)
        self.expectation = kern.T if which == "ss" else kern.Tdot
        self.diagonal = kern.T_diag if which == "ss" else kern.Tdot_diag
        self.closed_form = self.expectation.is_closed_form and self.diagonal.is_closed_form
        self._kept = {}  # derivative_tensors(..., keep=True)

    @functools.cached_property
    def _closed(self):
        """NumPy functions of the value, gradient and Hessian (in k11, k22, k12) from their stable forms;
        the SymPy derivatives and stable rewriting are kept on disk (:func:`ntk_theory.diskcache.memo`)."""
        e = self.expectation.expr
        forms = diskcache.memo("twopoint", sp.srepr(e), lambda: _derivative_forms(e))
        two = [lambdify_form(_VARS, f) for f in forms]
        return two[0], two[1:4], dict(zip(_PAIRS, two[4:]))

    @functools.cached_property
    def _numpy_derivatives(self):
        """NumPy-vectorised s^(n) (or s'^(n)) for n = 0..4, deltas dropped (s must be smooth)."""
        base = self.activation.expr if self.which == "ss" else drop_deltas(self.activation.derivative())
        return [stable_lambdify((x,), drop_deltas(sp.diff(base, x, n))) for n in range(5)]

    #: a Mehler-series entry whose estimate exceeds this (relative to max(1, |value|)) is recomputed by the graded
    #: quadrature when the activation is sharp
    RESOLVED = 1e-10

    @functools.cached_property
    def _sharp_splits(self) -> np.ndarray:
        """Split points x0 and x0 +- ell 2^j (j = 0..14) for a smooth f (s, or s' for ``which='dd'``) that varies on
        a scale ell = max |f''| / max |f'''| < 0.5 around x0, the largest |f''| (on a grid of step 1e-3 over
        [-10, 10]; softplus(beta x) / beta: ell ~ 2.6 / beta, x (1 + erf(beta x)) / 2 and its square ~ 1 / beta);
        empty otherwise.  The compiled nested Gauss-Legendre rule on these pieces
        (:func:`ntk_theory.numerics.gauss_legendre.expect2_direct`) resolves the scale ell, which the Mehler series
        of the fourth derivative (width ell, height ell^-3) does not: a series of degree 1024 leaves 0.1 relative
        errors at beta = 64, the graded rule 1e-11 (s) and 3e-9 (s', whose fourth derivative peaks at 6e6) relative
        to the largest entry."""
        if self.activation.kinks:
            return np.zeros(0)
        grid = np.linspace(-10.0, 10.0, 20001)
        with np.errstate(all="ignore"):
            d2, d3 = (np.broadcast_to(np.asarray(self._numpy_derivatives[n](grid), dtype=float), grid.shape)
                      for n in (2, 3))
        if not (np.all(np.isfinite(d2)) and np.all(np.isfinite(d3))) or not np.max(np.abs(d3)) > 0:
            return np.zeros(0)
        ell = float(np.max(np.abs(d2)) / np.max(np.abs(d3)))
        if not ell < 0.5:
            return np.zeros(0)
        x0 = float(grid[np.argmax(np.abs(d2))])
        steps = ell * 2.0 ** np.arange(15)
        return np.sort(np.concatenate([[x0], x0 - steps, x0 + steps]))

    @functools.cached_property
    def _derivative_functions(self):
        """Compiled (numba.njit) s^(n) (or s'^(n)) for n = 0..4, deltas dropped (s must be smooth),
        built by :func:`ntk_theory.jit.build_functions` (cached on disk like the compiled kernels)."""
        from ..jit import build_functions

        z = sp.Symbol("z")
        base = self.activation.expr if self.which == "ss" else self.activation.ae_derivative()
        mod = build_functions({f"d{n}": drop_deltas(sp.diff(base, x, n)).subs(x, z) for n in range(5)}, (z,), "twopoint")
        return [getattr(mod, f"d{n}") for n in range(5)]

    def pairs(self, k11v, k22v, k12v) -> PairDerivatives:
        """Derivatives at arrays of (k11, k22, k12) (off-diagonal pairs, |rho| < 1), with the largest error
        estimate in ``error``; an estimate above ``TWO_POINT_TOL`` times the largest entry is reported by one
        :class:`ntk_theory.AccuracyWarning` (the accuracy policy, :mod:`ntk_theory._checks`)."""
        a, b, c = (np.asarray(v, dtype=float) for v in (k11v, k22v, k12v))
        shape = a.shape
        if self.closed_form:
            val, grad, hess = self._closed
            with np.errstate(all="ignore"):
                value = np.broadcast_to(val(a, b, c), shape).astype(float)
                g = np.stack([np.broadcast_to(f(a, b, c), shape) for f in grad], axis=-1).astype(float)
                H = np.zeros(shape + (3, 3))
                for (i, j), f in hess.items():
                    H[..., i, j] = H[..., j, i] = np.broadcast_to(f(a, b, c), shape)
            return PairDerivatives(value, g, H, 0.0)
        if self.activation.kinks:
            # Gaussian integration by parts: E[f^(m)(u) f^(n)(v)] = E[f(u) f(v) H_mn(u, v)], f = s or
            # s' itself (no deltas), by 2-D quadrature split at the kinks (gaussian/bivariate.py)
            from ..gaussian import bivariate

            vals, errs = bivariate.expect_derivatives(self._numpy_derivatives[0], self.activation.kinks,
                                                      a.ravel(), b.ravel(), c.ravel())
            by_order = {mn: vals[:, i].reshape(shape) for i, mn in enumerate(bivariate.ORDERS)}
            pd = _from_expectations(lambda m, n: by_order[m, n], shape, float(np.max(errs, initial=0.0)))
            _check_accuracy(self, pd)
            return pd
        f = self._numpy_derivatives
        err = [0.0]
        av, bv, cv = a.ravel(), b.ravel(), c.ravel()
        # Mehler's formula on Hermite tables of each derivative at the distinct variances, in NumPy
        # (numerics/hermite.py: coefficient errors and a Parseval tail bound), degree 256, then 1024
        # for the entries whose series is longer; compiled 2-D quadrature for what remains
        tables = {}

        def E(m, n):
            out, e = hermite.expect2_pairs(f[m], f[n], av, bv, cv, tol=1e-14, tables=tables)
            splits = np.zeros(0)
            unresolved = ~np.isfinite(out)
            if self._sharp_splits.size:
                # a sharp activation: entries the series does not resolve go to the graded quadrature
                splits = self._sharp_splits
                with np.errstate(invalid="ignore"):
                    unresolved |= e > self.RESOLVED * np.maximum(1.0, np.abs(out))
            for i in np.flatnonzero(unresolved):
                from ..numerics import gauss_legendre  # compiled on first use: rare

                fm, fn = self._derivative_functions[m], self._derivative_functions[n]
                v, ev = gauss_legendre.expect2_direct(fm, fn, float(av[i]), float(bv[i]), float(cv[i]), splits, splits)
                if not np.isfinite(out[i]) or ev < e[i]:
                    out[i], e[i] = v, ev
            err[0] = max(err[0], float(np.max(e, initial=0.0)))
            return out.reshape(shape)

        pd = _from_expectations(E, shape, err)
        _check_accuracy(self, pd)
        return pd

    def diagonal_derivatives(self, kv) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """(<g>, d<g>/dk, d2<g>/dk2, error) at variances kv, g = s^2 or s'^2: the diagonal form's
        k-derivatives (:class:`ntk_theory.gaussian.expectation.ClosedDiagonal` / ``NumericalDiagonal``)."""
        kv = np.asarray(kv, dtype=float)
        out, err = [], 0.0
        with np.errstate(all="ignore"):
            for n in range(3):
                v, e = self.diagonal.evaluate(kv, with_error=True, order=n)
                out.append(v)
                err = max(err, float(np.max(e, initial=0.0)) if e is not None else 0.0)
        return out[0], out[1], out[2], err


def _from_expectations(E, shape, err) -> PairDerivatives:
    """Value, gradient and Hessian in (k11, k22, k12) from E(m, n) = <f^(m)(u) f^(n)(v)> (Price:
    dT/dk11 = E(2, 0) / 2, dT/dk12 = E(1, 1), d2T/dk11^2 = E(4, 0) / 4, d2T/dk11 dk22 = E(2, 2) / 4,
    d2T/dk11 dk12 = E(3, 1) / 2, d2T/dk12^2 = E(2, 2), ...).  ``err``: a number, or a one-element
    list that E raises to its largest error as it goes."""
    value = E(0, 0)
    g = np.stack([E(2, 0) / 2, E(0, 2) / 2, E(1, 1)], axis=-1)
    s22 = E(2, 2)
    H = np.zeros(shape + (3, 3))
    entries = {(0, 0): E(4, 0) / 4, (0, 1): s22 / 4, (0, 2): E(3, 1) / 2,
               (1, 1): E(0, 4) / 4, (1, 2): E(1, 3) / 2, (2, 2): s22}
    for (i, j), v in entries.items():
        H[..., i, j] = H[..., j, i] = v
    return PairDerivatives(value, g, H, err[0] if isinstance(err, list) else err)


@dataclass
class TwoPointTensors:
    """Values (N, N), ordered-pair derivative tensor R (N, N, N, N), the pair Hessians (for the
    Taylor term) and the Stein factors G[p, q, e] = <d_e (s'_p s_q)> (ss only)."""

    value: np.ndarray
    R: np.ndarray
    hess: np.ndarray  # (N, N, 3, 3) off-diagonal pairs; diagonal second derivatives in hess_diag
    hess_diag: np.ndarray
    error: float

    def taylor(self, V) -> np.ndarray:
        """Q[a, b] = (1/2) sum_(p, q) d2 <.>_ab / dK_p dK_q V[p, q] over ordered pairs p, q of {a, b}."""
        N = self.value.shape[0]
        Q = np.zeros((N, N))
        idx = np.arange(N)
        Q[idx, idx] = 0.5 * self.hess_diag * V[idx, idx, idx, idx]
        a, b = np.nonzero(~np.eye(N, dtype=bool))
        # ordered pairs and their derivative operators: (a,a) -> d/dk11, (b,b) -> d/dk22,
        # (a,b), (b,a) -> (1/2) d/dk12 each
        pairs = [((a, a), 0, 1.0), ((b, b), 1, 1.0), ((a, b), 2, 0.5), ((b, a), 2, 0.5)]
        H = self.hess[a, b]
        total = np.zeros(a.size)
        for (p1, p2), i, wi in pairs:
            for (q1, q2), j, wj in pairs:
                total += wi * wj * H[:, i, j] * V[p1, p2, q1, q2]
        Q[a, b] = 0.5 * total
        return Q


def derivative_tensors(tp: TwoPoint, K: np.ndarray, *, keep: bool = False) -> TwoPointTensors:
    """The two-point tensors of ``tp`` at the kernel K (N, N) of distinct inputs.  ``keep``: store
    the result on ``tp`` so that the next call at the same K (bit for bit) takes it instead of
    computing it again (once: the stored copy is dropped when used).  The off-diagonal pairs' accuracy
    policy is :meth:`TwoPoint.pairs`'s."""
    key = (K.shape, K.tobytes())
    if key in tp._kept:
        return tp._kept.pop(key)
    N = K.shape[0]
    d = np.diag(K).copy()
    vd, d1, d2, err_d = tp.diagonal_derivatives(d)
    a, b = np.nonzero(~np.eye(N, dtype=bool))
    pd = tp.pairs(d[a], d[b], K[a, b])
    value = np.zeros((N, N))
    value[a, b] = pd.value
    value[np.arange(N), np.arange(N)] = vd
    R = np.zeros((N, N, N, N))
    i = np.arange(N)
    R[i, i, i, i] = d1
    R[a, b, a, a] = pd.grad[:, 0]
    R[a, b, b, b] = pd.grad[:, 1]
    R[a, b, a, b] = 0.5 * pd.grad[:, 2]
    R[a, b, b, a] = 0.5 * pd.grad[:, 2]
    hess = np.zeros((N, N, 3, 3))
    hess[a, b] = pd.hess
    out = TwoPointTensors(value, R, hess, d2, max(pd.error, err_d))
    if keep:
        tp._kept[key] = out
    bad = ~np.isfinite(value).all() or not np.isfinite(R).all() or not np.isfinite(hess).all() or not np.isfinite(d2).all()
    if bad:
        raise ValueError(
            f"the covariance derivatives of <{tp.which}> for {tp.activation.name} are not finite at these inputs "
            "(nearly parallel or antiparallel inputs make the derivatives of kinked activations singular, e.g. "
            "ReLU's <delta(u) delta(v)> = 1/(2 pi sqrt(det)))"
        )
    return out


#: the two-point tensors' accuracy policy: an error estimate above this, relative to the largest of their
#: entries, is reported by an AccuracyWarning (the series and quadratures aim at 1e-14)
TWO_POINT_TOL = 1e-8


def _check_accuracy(tp: TwoPoint, pd: PairDerivatives) -> None:
    """One :class:`ntk_theory.AccuracyWarning` when the pairs' error estimate exceeds ``TWO_POINT_TOL`` times
    their largest entry (value, first and second covariance derivatives)."""
    scale = max(float(np.max(np.abs(a), initial=0.0)) for a in (pd.value, pd.grad, pd.hess))
    if pd.error > TWO_POINT_TOL * max(scale, 1e-300):
        warn_accuracy(f"the covariance derivatives of <{tp.which}> for {tp.activation.name}",
                      pd.error / max(scale, 1e-300), TWO_POINT_TOL,
                      "relative to their largest entry (Hermite series or quadrature not converged)")


def stein_factors(tp_ss: TwoPointTensors) -> np.ndarray:
    """G[p, q, e] = <d/dz_e (s'(z_p) s(z_q))>: for p != q, e = p: <s''_p s_q> = 2 dT/dk11,
    e = q: <s'_p s'_q> = dT/dk12; for p = q, e = p: d<s^2>/dk (= <z s s'>/K)."""
    R = tp_ss.R
    N = R.shape[0]
    G = np.zeros((N, N, N))
    a, b = np.nonzero(~np.eye(N, dtype=bool))
    G[a, b, a] = 2 * R[a, b, a, a]
    G[a, b, b] = 2 * R[a, b, a, b]
    i = np.arange(N)
    G[i, i, i] = R[i, i, i, i]
    return G
