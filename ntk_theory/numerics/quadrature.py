r"""Gaussian expectations E[f(u)], E[f(u) g(v)] and E[prod_i f_i(z_i)] by nested tanh-sinh rules, float64.

f, g, f_i are NumPy-vectorised callables with optional kinks (points where they are not smooth).
The same rule at one fixed step for arrays of covariances is :mod:`.quadrature_batch`; in mpmath
at any precision, :mod:`.quadrature_mp`.

Reduction to nested one-dimensional integrals
---------------------------------------------
With x, y iid N(0, 1) and rho = k12 / sqrt(k11 k22)::

    u = sqrt(k11) x,     v = a x + b y,     a = k12 / sqrt(k11),   b = sqrt(det / k11),
    det = k11 k22 - k12^2   (computed without cancellation: error-free products),
    E[f(u) g(v)] = int phi(x) f(u(x)) G(x) dx,   G(x) = int phi(y) g(a x + b y) dy.

In general ``z = L xi`` with L the (pivoted, rank-revealing) Cholesky factor of K, so a singular K
gives fewer integration variables; the integral over xi_j is nested inside those over xi_1..xi_(j-1).

Pieces
------
Every one-dimensional integral is split at 0 and at the kinks: row i with last non-zero
coefficient L_ij has its kinks c at xi_j = (c - sum_(l<j) L_il xi_l) / L_ij, a point that moves with
the outer variables.  Near-degenerate rows (L_ij small) make the outer integrand nearly kinked at
xi_(j') = (c - ...) / L_ij' (j' the previous non-zero column), so that point is a split too.  The
argument of f at a node is computed from the nearest kink, ``c + L_ij (xi - xi_kink)``, so that no
node lands on the wrong side of a kink through rounding.

Rule on a piece [P, Q], 0 <= P < Q <= inf (negative pieces are reflected)
-------------------------------------------------------------------------
Substitute x = P + y, w = c y + y^2/2 (c = P if P >= 1, else 0), u = 1 - exp(-w / kappa)::

    int_P^Q phi(x) f(x) dx = phi(P) kappa int_0^U f(P + y) exp(-w (1 - 1/kappa) - (P - c) y) / (c + y) du,
    U = 1 - exp(-W / kappa),   W = c Y + Y^2 / 2,   Y = Q - P,

with kappa = 1 on infinite pieces (u is then the Gaussian tail mass) and kappa = 10 on finite
ones (which keeps the singularity of w(u) at u = 1 away from the end U), and integrate over u
with the tanh-sinh rule u = U (1 + tanh(pi/2 sinh t)) / 2, t = i h, -3.9 <= t <= 3.9 (4.5 at an
infinite end, where the Gaussian tail is left out below relative mass 1e-60, |x| ~ 17).  The
1/(c + y) singularity at P = 0 is integrable and the rule converges double-exponentially for
integrands analytic on the piece: for O(1) variances h = 1/8 (about 65 nodes per piece) already
gives 1e-15.  Offsets from the ends (y near P, Q - x near Q) are computed directly, without
cancellation.

Error estimates
---------------
Rules at step h contain those at 2h and 4h (every second, fourth node), so one evaluation gives
I_h, I_2h, I_4h.  The reported error is an *estimate*, the sum of

* the level difference: |I_h - I_2h| in :func:`expect1`, :func:`expect2` (and
  :func:`.quadrature_batch.expect2_vectorized`), which bounds the error of the coarser rule, so it
  is pessimistic by many digits once converged.  In :func:`expectn`, where a finer level costs 2^n
  times more, the double-exponential model 10 |I_h - I_2h|^2 / E|prod f| (the rule's error squares
  when h halves), used once |I_h - I_2h| < 1e-3 E|prod f|;
* the truncation at the ends of the t-range: the terms of the outermost nodes;
* rounding: 8 eps sum |w f g|.

``tol`` is relative to E|f(u) g(v)| (the scale below which cancellation cannot be resolved):
refinement stops when error <= tol * E|f g|.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .. import _checks
from . import compensated
from .cholesky import pivoted_cholesky

__all__ = ["QuadratureResult", "expect1", "expect2", "expectn"]

_EPS = np.finfo(np.float64).eps
_T_FINITE = 3.9  # tanh-sinh range at a finite end: theta gap exp(-pi sinh 3.9) ~ 1e-34
_T_INFINITE = 4.5  # at an infinite end: theta gap ~ 1e-61, i.e. |x| up to about 17
_KAPPA = 10.0  # finite pieces: tanh-sinh in u = 1 - exp(-w / 10) (see _positive_piece)
_XMAX = 40.0  # phi(x) underflows beyond 38.6: splits further out are moved here
_DIVERGES = "the Gaussian expectation diverges or the integrand is not finite"
_LEVELS_1D = (1 / 8, 1 / 16, 1 / 32, 1 / 64, 1 / 128)
_LEVELS_2D = (1 / 8, 1 / 16, 1 / 32, 1 / 64)
_LEVELS_ND = (1 / 3, 1 / 4, 1 / 5, 1 / 6, 1 / 8)
_MAX_GRID = 400_000_000  # largest (unpruned) nested grid expectn will attempt


@dataclass(frozen=True)
class QuadratureResult:
    """A numerical Gaussian expectation with its estimated absolute error."""

    value: float
    error: float
    evaluations: int
    method: str

    def __float__(self) -> float:
        return float(self.value)

    def __repr__(self) -> str:
        return f"{self.value!r} ± {self.error:.1e} ({self.method}, {self.evaluations} evaluations)"


# ----------------------------------------------------------------------------------------------
# The tanh-sinh template and the rule on one piece
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Template:
    """tanh-sinh nodes on [0, 1]: tau = dl = 1 - dr, weights w (sum w = 1); levels h, 2h, 4h."""

    dl: np.ndarray
    dr: np.ndarray
    w: np.ndarray
    left: np.ndarray  # node in the left half (tau < 1/2)
    mult: np.ndarray  # (3, N): weight multipliers giving the rules at h, 2h, 4h
    edge: np.ndarray  # (N,): 1 at the two outermost nodes (truncation estimate)
    infinite: bool


@functools.lru_cache(maxsize=64)
def _template(h: float, infinite: bool) -> _Template:
    """tau = (1 + tanh(s)) / 2, s = pi/2 sinh(t), t = i h;  dtau/dt = pi/4 cosh t / cosh^2 s."""
    right = _T_INFINITE if infinite else _T_FINITE
    i = np.arange(-math.ceil(_T_FINITE / h), math.ceil(right / h) + 1)
    t = i * h
    s = 0.5 * np.pi * np.sinh(t)
    dl = 1.0 / (1.0 + np.exp(-2.0 * s))
    dr = 1.0 / (1.0 + np.exp(2.0 * s))
    w = h * 0.25 * np.pi * np.cosh(t) / np.cosh(s) ** 2
    mult = np.stack([np.ones_like(t), 2.0 * (i % 2 == 0), 4.0 * (i % 4 == 0)])
    edge = np.zeros_like(t)
    edge[[0, -1]] = 1.0
    return _Template(dl, dr, w, t < 0, mult, edge, infinite)


def _distance_from_w(w, c):
    """y >= 0 solving c y + y^2 / 2 = w, without cancellation."""
    with np.errstate(invalid="ignore", divide="ignore"):
        y = 2.0 * w / (c + np.sqrt(c * c + 2.0 * w))
    return np.where(w > 0, y, 0.0)


def _infinite_offsets(P, Q, c, tpl):
    """[P, inf), kappa = 1: u = 1 - e^-w is the tail mass; offsets from P for every node."""
    w = np.where(tpl.left, -np.log1p(-tpl.dl), -np.log(tpl.dr))
    y = _distance_from_w(w + 0.0 * P, c)
    return y, np.full_like(y, np.inf), np.ones(y.shape, dtype=bool), 1.0, 0.0


def _finite_offsets(P, Q, c, tpl):
    """[P, Q], u = 1 - e^(-w / kappa): offsets y = x - P and z = Q - x, each from its own end."""
    Y = Q - P
    W = Y * (c + 0.5 * Y)
    kappa = np.where(W <= 200.0, _KAPPA, 1.0)
    U = -np.expm1(-W / kappa)
    w_left = -kappa * np.log1p(-U * tpl.dl)
    w_to_Q = kappa * np.where(  # = W - w = kappa log(1 + (e^(W/kappa) - 1) dr)
        W < kappa,
        np.log1p(np.expm1(np.minimum(W / kappa, 1.0)) * tpl.dr),
        np.logaddexp(W / kappa + np.log(tpl.dr), np.log1p(-tpl.dr)),
    )
    cY = c + Y
    z = 2.0 * w_to_Q / (cY + np.sqrt(np.maximum(cY * cY - 2.0 * w_to_Q, 0.0)))
    z = np.where(w_to_Q > 0, z, 0.0)
    near_P = z > 0.5 * Y
    w = np.where(tpl.left, w_left, W - w_to_Q)  # W - w_to_Q loses digits only near P
    y = np.where(near_P, _distance_from_w(w, c), Y - z)
    log_jacobian = np.log(kappa) - w * (1.0 - 1.0 / kappa)  # e^-w dw = kappa e^(-w(1-1/kappa)) du
    return y, z, near_P, U, log_jacobian


def _positive_piece(P, Q, tpl: _Template):
    """Nodes of int_P^Q phi(x) f(x) dx for 0 <= P <= Q (Q = inf for an infinite template).

    Returns (y, z, weight, near_P): x = P + y = Q - z; the weight includes phi; near_P tells which
    end the node is closer to (the one its offset is measured from).
    """
    P, Q = P[..., None], Q[..., None]
    c = np.where(P >= 1.0, P, 0.0)
    offsets = _infinite_offsets if tpl.infinite else _finite_offsets
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        y, z, near_P, U, log_jacobian = offsets(P, Q, c, tpl)
        phi_P = np.exp(-0.5 * P * P) / math.sqrt(2.0 * math.pi)
        weight = phi_P * U * tpl.w * np.exp(log_jacobian - (P - c) * y) / np.maximum(c + y, 1e-300)
    weight = np.where(np.isfinite(weight), weight, 0.0)
    return y, z, weight, near_P


def _dim_nodes(S, h):
    """Nodes of int phi(x) F(x) dx split at the sorted points S (..., m), 0 among them.

    Returns x, weight, e (index of the split each node's offset is measured from), offset
    (x = S[e] + offset), and the template multipliers (3, M) and edge markers (M,).
    """
    m = S.shape[-1]
    flat = S.reshape(-1, m)
    if flat.shape[0] > 1 and np.all(flat == flat[0]):  # the same splits everywhere: build once
        shared = _dim_nodes(flat[:1], h)
        return tuple(np.broadcast_to(a, S.shape[:-1] + a.shape[-1:]) for a in shared[:4]) + shared[4:]
    parts = []
    for k in range(m + 1):
        lo = S[..., k - 1] if k > 0 else np.full(S.shape[:-1], -np.inf)
        hi = S[..., k] if k < m else np.full(S.shape[:-1], np.inf)
        infinite = k == 0 or k == m
        tpl = _template(h, infinite)
        neg = hi <= 0 if k < m else np.zeros(lo.shape, dtype=bool)
        P = np.where(neg, -hi, lo)
        Q = np.where(neg, -lo, hi)
        y, z, weight, near_P = _positive_piece(P, Q, tpl)
        neg = neg[..., None]
        sign = np.where(neg, -1.0, 1.0)
        e_P = np.where(neg, k, k - 1)  # the original index of the reflected piece's end P
        e_Q = np.where(neg, k - 1, k)
        e = np.where(near_P, e_P, e_Q)
        offset = np.where(near_P, sign * y, -sign * z)
        parts.append((e, offset, weight, tpl))
    e = np.concatenate([np.broadcast_to(p[0], p[2].shape) for p in parts], axis=-1)
    offset = np.concatenate([p[1] for p in parts], axis=-1)
    weight = np.concatenate([p[2] for p in parts], axis=-1)
    x = np.take_along_axis(S, e, axis=-1) + offset
    mult = np.concatenate([p[3].mult for p in parts], axis=-1)
    edge = np.concatenate([p[3].edge for p in parts], axis=-1)
    return x, weight, e, offset, mult, edge


# ----------------------------------------------------------------------------------------------
# The nested engine: E[prod_i f_i((coef xi)_i)], xi ~ N(0, I_r), for a batch of coefficient sets
# ----------------------------------------------------------------------------------------------


def _evaluate(f, arg, weight):
    """f(arg) as float64 of arg's shape, 0 where the weight is 0; ValueError if not finite."""
    with np.errstate(all="ignore"):
        val = np.asarray(f(arg), dtype=np.float64)
    val = np.where(weight != 0, np.broadcast_to(val, arg.shape), 0.0)
    if not np.all(np.isfinite(val)):
        raise ValueError(f"{_DIVERGES}: f returned NaN or inf at a quadrature node")
    return val


def _row_structure(coef):
    """For each row: its last and second-to-last non-zero column over the batch (-1 if none)."""
    nonzero = np.any(coef != 0, axis=0)
    cols = [np.flatnonzero(row) for row in nonzero]
    last = [int(c[-1]) if len(c) else -1 for c in cols]
    prev = [int(c[-2]) if len(c) > 1 else -1 for c in cols]
    return last, prev


_NEAR_KINK = 8.0  # a kink smoothed over width eps in the outer variable: extra splits at +-8 eps


def _add_column(columns, owners, col, owner):
    """Append a split column unless an identical one exists (then merge its ownership)."""
    for k, existing in enumerate(columns):
        if np.array_equal(existing, col):
            owners[k].update(owner)
            return
    columns.append(col)
    owners.append(owner)


def _near_kink_columns(col, last_slope, slope):
    """x_c and x_c +- 8 eps, eps = |L_i,last / L_ij|, where the inner Gaussian smooths a kink of a
    later row over a width eps of this variable.

    Only where eps < 1/8 (a near-kink); elsewhere the columns are 0 (merged with the split at 0).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        eps = np.abs(last_slope.reshape(slope.shape) / slope)
    near = eps < 1.0 / _NEAR_KINK
    if not np.any(near):
        return []
    width = np.where(near, _NEAR_KINK * eps, 0.0)
    return [np.where(near, np.clip(col + d, -_XMAX, _XMAX), 0.0) for d in (0.0, -width, width)]


def _splits(j, s, coef, kinks, last, prev, shape):
    """Split points of dim j: 0, the kinks of rows resolved here, projected kinks of rows resolved next.

    Returns S (..., m) sorted and, per resolved row, the kink value owning each split (NaN if none).
    """
    columns = [np.zeros(shape)]
    owners = [{}]
    for i, cs in enumerate(kinks):
        if last[i] == j or prev[i] == j:
            slope = coef[:, i, j].reshape((-1,) + (1,) * (len(shape) - 1))
            for c in cs:
                with np.errstate(divide="ignore", invalid="ignore"):
                    col = (c - s[i]) / slope
                col = np.clip(np.nan_to_num(col, nan=0.0, posinf=_XMAX, neginf=-_XMAX), -_XMAX, _XMAX)
                if last[i] == j:
                    _add_column(columns, owners, col, {i: c})
                    continue
                for col in _near_kink_columns(col, coef[:, i, last[i]], slope):
                    _add_column(columns, owners, col, {})
    S = np.stack(columns, axis=-1)
    order = np.argsort(S, axis=-1, kind="stable")
    S = np.take_along_axis(S, order, axis=-1)
    owned = {}
    for i in range(len(kinks)):
        if last[i] == j:
            vals = np.array([own.get(i, np.nan) for own in owners])
            owned[i] = np.take_along_axis(np.broadcast_to(vals, S.shape), order, axis=-1)
    return S, owned


def _nested(funcs, kinks, coef, h):
    """Rules at h, 2h, 4h for E[prod_i f_i(z_i)], z = coef xi, xi ~ N(0, I), per batch element.

    coef (B, n, r); every row's last non-zero column (over the batch) must be non-zero for every
    batch element.  Returns dict with arrays (B,): I (3, B) at h, 2h, 4h; l1 = sum |w F|;
    edge = truncation terms; and evaluations (int).
    """
    B, n, r = coef.shape
    last, prev = _row_structure(coef)
    const = np.ones(B)
    evaluations = 0
    for i in range(n):
        if last[i] < 0:
            const = const * _evaluate(funcs[i], np.zeros(B), np.ones(B))
            evaluations += B
    s = {i: np.zeros((B, 1)) for i in range(n) if last[i] >= 0}
    layers = []
    K = 1
    for j in range(r):
        S, owned = _splits(j, s, coef, kinks, last, prev, (B, K))
        x, weight, e, offset, mult, edge = _dim_nodes(S, h)
        F = np.ones_like(x)
        for i, own in owned.items():
            slope = coef[:, i, j][:, None, None]
            anchor = np.where(np.isnan(own), s[i][..., None] + slope * S, own)
            arg = np.take_along_axis(anchor, e, axis=-1) + slope * offset
            F = F * _evaluate(funcs[i], arg, weight)
            evaluations += arg.size
        M = x.shape[-1]
        for i in s:
            if last[i] > j:
                s[i] = (s[i][..., None] + coef[:, i, j][:, None, None] * x).reshape(B, K * M)
        layers.append((weight * F, mult, edge))
        K *= M
    return _reduce(layers, B, const, evaluations)


def _nested_pruned(funcs, kinks, coef, h, prune):
    """_nested for one coefficient set (B = 1), dropping grid points whose accumulated weight
    prod_j w_j |F_j| is below ``prune`` times the largest: the Gaussian makes most points of a
    3- or 4-dimensional tensor grid negligible.  The dropped mass times the largest inner
    magnitude is added to ``edge``.
    """
    _, n, r = coef.shape
    last, prev = _row_structure(coef)
    const, evaluations = 1.0, 0
    for i in range(n):
        if last[i] < 0:
            const *= float(_evaluate(funcs[i], np.zeros(1), np.ones(1))[0])
            evaluations += 1
    s = {i: np.zeros((1, 1)) for i in range(n) if last[i] >= 0}
    acc = np.ones(1)
    layers = []
    for j in range(r):
        S, owned = _splits(j, s, coef, kinks, last, prev, (1, acc.size))
        x, weight, e, offset, mult, edge = _dim_nodes(S, h)
        cand = acc[:, None] * weight[0]
        keep = np.flatnonzero(cand > prune * cand.max())
        dropped = max(cand.sum() - cand.ravel()[keep].sum(), 0.0)
        parent, node = np.divmod(keep, cand.shape[1])

        def pick(a):  # a[0, parent, node], cheaply when the nodes are shared by all outer points
            return a[0, 0, node] if a.strides[1] == 0 else a[0, parent, node]

        w = pick(weight)
        F = np.ones(keep.size)
        for i, own in owned.items():
            slope = coef[0, i, j]
            anchor = np.where(np.isnan(own), s[i][..., None] + slope * S, own)[0]
            arg = anchor[parent, pick(e)] + slope * pick(offset)
            F = F * _evaluate(funcs[i], arg, w)
            evaluations += arg.size
        xj = pick(x)
        for i in s:
            if last[i] > j:
                s[i] = (s[i][0, parent] + coef[0, i, j] * xj)[None]
        acc = acc[parent] * np.abs(w * F)
        layers.append((parent, w, F, mult[:, node], edge[node], dropped))
    pruned = 0.0
    size = layers[-1][0].size
    inner_signed, inner_abs, inner_edge = np.ones((3, size)), np.ones(size), np.zeros(size)
    for j in reversed(range(r)):
        parent, w, F, mult, edge, dropped = layers[j]
        A = np.abs(w * F)
        pruned += dropped * np.max(np.abs(F) * inner_abs, initial=0.0)
        size = layers[j - 1][0].size if j > 0 else 1
        signed = mult * (w * F) * inner_signed
        inner_signed = np.stack([np.bincount(parent, v, minlength=size) for v in signed])
        inner_edge = np.bincount(parent, A * (inner_edge + edge * inner_abs), minlength=size)
        inner_abs = np.bincount(parent, A * inner_abs, minlength=size)
    return {
        "I": inner_signed[:, :1] * const,
        "l1": inner_abs[:1] * abs(const),
        "edge": (inner_edge[:1] + pruned) * abs(const),
        "evaluations": evaluations,
    }


def _reduce(layers, B, const, evaluations):
    """Sum the nested layers from the innermost out: signed rules at h, 2h, 4h, |.| and edges."""
    signed = abs_sum = edge_sum = None
    for G, mult, edge in reversed(layers):
        A = np.abs(G)
        if signed is None:
            signed = np.einsum("vm,bkm->vbk", mult, G)
            abs_sum = A.sum(axis=-1)
            edge_sum = A @ edge
            continue
        shape = G.shape
        signed = np.einsum("vm,bkm,vbkm->vbk", mult, G, signed.reshape((3,) + shape))
        inner_abs = abs_sum.reshape(shape)
        edge_sum = np.einsum("bkm,bkm->bk", A, edge_sum.reshape(shape) + edge * inner_abs)
        abs_sum = np.einsum("bkm,bkm->bk", A, inner_abs)
    return {
        "I": signed[:, :, 0] * const,
        "l1": abs_sum[:, 0] * np.abs(const),
        "edge": edge_sum[:, 0] * np.abs(const),
        "evaluations": evaluations,
    }


def _error_parts(out, extrapolate: bool):
    """Estimated absolute error per batch element (see the module docstring)."""
    I_h, I_2h, _ = out["I"]
    d = np.abs(I_h - I_2h)
    l1 = out["l1"]
    if extrapolate:  # double-exponential convergence: the error squares when h halves
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.where(d < 1e-3 * l1, 10.0 * d * d / l1, d)
    return d + out["edge"] + 8.0 * _EPS * l1


def _check_tails(out):
    """Tails that do not decay (the integrand grows like exp(x^2 / 2)): the expectation diverges."""
    if np.any(out["edge"] > 1e-3 * out["l1"]):
        raise ValueError(
            f"{_DIVERGES}: the integrand does not decay at |x| ~ 17 standard deviations"
        )


# ----------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------


def _kinks(name, kinks) -> tuple:
    try:
        values = tuple(float(c) for c in kinks)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of finite numbers; got {kinks!r}") from None
    if not all(math.isfinite(c) for c in values):
        raise ValueError(f"{name} must be finite numbers; got {kinks!r}")
    return values


def _with_zero(kinks) -> tuple:
    """Kinks plus 0, where the sharp features of standard activations sit."""
    return tuple(sorted(set(kinks) | {0.0}))


def _callable(name, f):
    if not callable(f):
        raise ValueError(f"{name} must be a callable (a vectorised NumPy function); got {f!r}")
    return f


def _tol(tol) -> float:
    t = _checks.finite("tol", tol)
    if t <= 0:
        raise ValueError(f"tol must be > 0; got {tol!r}")
    return t


def _determinant(k11, k22, k12):
    """k11 k22 - k12^2 to a few ulps of itself (error-free products), clipped at 0.

    ValueError if it is negative beyond rounding (relative 1e-12 of k11 k22).
    """
    det = compensated.det2(k11, k22, k12)
    if np.any(det < -1e-12 * (k11 * k22)):
        raise ValueError(
            "covariance is not positive semi-definite: k12^2 > k11 k22 "
            "(|k12| must be at most sqrt(k11 k22))"
        )
    return np.maximum(det, 0.0)


def _covariance_triple(k11, k22, k12):
    k11 = _checks.variance("k11", k11)
    k22 = _checks.variance("k22", k22)
    k12 = _checks.finite("k12", k12)
    return k11, k22, k12, float(_determinant(np.float64(k11), np.float64(k22), np.float64(k12)))


# ----------------------------------------------------------------------------------------------
# Public functions
# ----------------------------------------------------------------------------------------------


def _adaptive(funcs, kinks, coef, levels, tol, describe):
    """Refine h over ``levels`` until the error estimate is <= tol * E|prod f|; scalar result."""
    evaluations = 0
    for h in levels:
        out = _nested(funcs, kinks, coef, h)
        evaluations += out["evaluations"]
        _check_tails(out)
        error = float(_error_parts(out, extrapolate=False)[0])
        if error <= tol * out["l1"][0]:
            break
    return QuadratureResult(float(out["I"][0, 0]), error, evaluations, describe(h))


def _h_text(h) -> str:
    return f"h=1/{round(1 / h)}"


def expect1(f: Callable, k, *, kinks: Sequence[float] = (), tol: float = 1e-13) -> QuadratureResult:
    r"""E[f(u)], u ~ N(0, k).  k == 0 gives f(0) exactly.

    E[f(u)] = int phi(x) f(sqrt(k) x) dx, split at x = 0 and x = c / sqrt(k) for each kink c.
    """
    f = _callable("f", f)
    k = _checks.variance("k", k)
    kinks = _with_zero(_kinks("kinks", kinks))
    tol = _tol(tol)
    if k == 0:
        value = float(_evaluate(f, np.zeros(1), np.ones(1))[0])
        return QuadratureResult(value, 0.0, 1, "exact: k = 0, f(0)")
    coef = np.array([[[math.sqrt(k)]]])
    return _adaptive(
        [f], [kinks], coef, _LEVELS_1D, tol,
        lambda h: f"tanh-sinh, {_h_text(h)}, split at {list(kinks)}",
    )


def _product_result(r1: QuadratureResult, r2: QuadratureResult, method: str) -> QuadratureResult:
    """E[f] E[g] with error |E f| err_g + |E g| err_f + err_f err_g."""
    value = r1.value * r2.value
    error = abs(r1.value) * r2.error + abs(r2.value) * r1.error + r1.error * r2.error
    error += 2 * _EPS * abs(value)
    return QuadratureResult(value, error, r1.evaluations + r2.evaluations, method)


def _scaled(r: QuadratureResult, factor: float, evaluations: int, method: str) -> QuadratureResult:
    value = factor * r.value
    error = abs(factor) * r.error + _EPS * abs(value)
    return QuadratureResult(value, error, r.evaluations + evaluations, method)


def _pair_coefficients(k11, k22, k12, det):
    """(B, 2, r) coefficients for the general (r = 2) or degenerate (det = 0, r = 1) pair."""
    k11, k22, k12, det = (np.asarray(a, dtype=np.float64) for a in (k11, k22, k12, det))
    s11 = np.sqrt(k11)
    if np.all(det == 0):
        a = np.copysign(np.sqrt(k22), k12)
        return np.stack([s11, a], axis=-1)[:, :, None]
    coef = np.zeros(k11.shape + (2, 2))
    coef[:, 0, 0] = s11
    coef[:, 1, 0] = k12 / s11
    coef[:, 1, 1] = np.sqrt(det / k11)
    return coef


def expect2(
    f: Callable, g: Callable, k11, k22, k12, *, kinks_f: Sequence[float] = (),
    kinks_g: Sequence[float] = (), tol: float = 1e-13,
) -> QuadratureResult:
    r"""E[f(u) g(v)], (u, v) ~ N(0, [[k11, k12], [k12, k22]]).

    E = int phi(x) f(sqrt(k11) x) G(x) dx,  G(x) = int phi(y) g(a x + b y) dy,
    a = k12 / sqrt(k11), b = sqrt((k11 k22 - k12^2) / k11).  Exact special cases: k11 = 0 or
    k22 = 0 (f(0) E[g(v)], g(0) E[f(u)]); rho = 0 (E[f(u)] E[g(v)]); rho = +-1 (the 1-D integral
    of f(u) g(+-sqrt(k22/k11) u)).  The inner integral is split at y = (c - a x) / b for each kink
    c of g (and 0); the outer at 0, the kinks of f and, where G has a near-kink as rho -> +-1,
    at x = c / a.
    """
    f, g = _callable("f", f), _callable("g", g)
    k11, k22, k12, det = _covariance_triple(k11, k22, k12)
    kf = _with_zero(_kinks("kinks_f", kinks_f))
    kg = _with_zero(_kinks("kinks_g", kinks_g))
    tol = _tol(tol)
    if k11 == 0 or k22 == 0:
        return _one_variable_zero(f, g, k11, k22, kf, kg, tol)
    if k12 == 0:
        rf = expect1(f, k11, kinks=kf, tol=tol)
        rg = expect1(g, k22, kinks=kg, tol=tol)
        return _product_result(rf, rg, f"rho = 0: E[f] E[g], {rf.method}")
    coef = _pair_coefficients([k11], [k22], [k12], [det])
    kind = "rho = +-1: one variable" if coef.shape[-1] == 1 else "nested"
    return _adaptive(
        [f, g], [kf, kg], coef, _LEVELS_2D, tol,
        lambda h: f"tanh-sinh {kind}, {_h_text(h)}, kinks f {list(kf)}, g {list(kg)}",
    )


def _one_variable_zero(f, g, k11, k22, kf, kg, tol):
    """k11 == 0 or k22 == 0: the zero-variance variable is identically 0."""
    if k11 == 0 and k22 == 0:
        value = float(_evaluate(f, np.zeros(1), np.ones(1))[0] * _evaluate(g, np.zeros(1), np.ones(1))[0])
        return QuadratureResult(value, 0.0, 2, "exact: k11 = k22 = 0, f(0) g(0)")
    if k11 == 0:
        f0 = float(_evaluate(f, np.zeros(1), np.ones(1))[0])
        r = expect1(g, k22, kinks=kg, tol=tol)
        return _scaled(r, f0, 1, f"k11 = 0: f(0) E[g], {r.method}")
    g0 = float(_evaluate(g, np.zeros(1), np.ones(1))[0])
    r = expect1(f, k11, kinks=kf, tol=tol)
    return _scaled(r, g0, 1, f"k22 = 0: g(0) E[f], {r.method}")


# ----------------------------------------------------------------------------------------------
# n variables
# ----------------------------------------------------------------------------------------------


def _covariance_matrix(K, n):
    try:
        K = np.array(K, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"K must be a numeric ({n}, {n}) matrix; got {type(K).__name__}") from None
    if K.shape != (n, n):
        raise ValueError(f"K must be a square ({n}, {n}) matrix (one row per function); got shape {K.shape}")
    if not np.all(np.isfinite(K)):
        raise ValueError("K must have finite entries (no NaN or inf)")
    scale = float(np.max(np.abs(K))) if K.size else 0.0
    if np.any(np.abs(K - K.T) > 1e-12 * scale):
        raise ValueError("K is not symmetric (|K - K^T| > 1e-12 max|K|)")
    K = 0.5 * (K + K.T)
    if np.any(np.diag(K) < 0):
        raise ValueError(
            "covariance is not positive semi-definite: K has a negative variance on its diagonal"
        )
    if n and np.min(np.linalg.eigvalsh(K)) < -1e-12 * scale:
        raise ValueError("covariance is not positive semi-definite: K has a negative eigenvalue")
    return K


def _nd_grid_size(coef, kinks, h):
    """Rough number of innermost grid points of the nested rule at step h."""
    last, prev = _row_structure(coef)
    per_piece = (_T_FINITE + _T_INFINITE) / h + 1
    size = 1.0
    for j in range(coef.shape[-1]):
        splits = 1 + sum(len(kinks[i]) for i in range(len(kinks)) if last[i] == j)
        splits += sum(
            3 * len(kinks[i]) for i in range(len(kinks))
            if prev[i] == j and np.any(np.abs(coef[:, i, last[i]]) < np.abs(coef[:, i, j]) / _NEAR_KINK)
        )
        size *= (splits + 1) * per_piece
    return size


def expectn(fs: Sequence[Callable], K, *, kinks=None, tol: float = 1e-10) -> QuadratureResult:
    r"""E[prod_i f_i(z_i)], z ~ N(0, K), n = len(fs) in 1..4, K (n, n) PSD, possibly singular.

    z = L xi with L the pivoted Cholesky factor (rank r <= n; equal rows of K give r < n), and
    E = int phi(xi_1) ... int phi(xi_r) prod_i f_i((L xi)_i) dxi_r ... dxi_1, each nested integral
    split at 0, at the kinks of the rows it resolves and at the near-kinks of the next ones.
    ``kinks`` is None or one tuple of kink points per f_i; pass (0.0,) also for activations that
    are smooth but sharp at 0 relative to their variance (tanh at K_ii >> 1).  Grid points whose
    accumulated weight prod w_j |f_j| is below min(1e-6 tol, 1e-14) of the largest are dropped
    (most of a 4-d tensor grid lies in the Gaussian's tails); the dropped mass is added to the
    error.  The error is the estimate 10 |I_h - I_2h|^2 / E|prod f_i| (+ truncation, dropped
    mass, rounding; see the module docstring), refining h = 1/3 (only for tol > 1e-9), 1/4, 1/5,
    ... until it is <= tol * E|prod f_i|.
    """
    try:
        fs = list(fs)
    except TypeError:
        raise ValueError(f"fs must be a sequence of callables; got {fs!r}") from None
    n = len(fs)
    if not 1 <= n <= 4:
        raise ValueError(f"expectn supports 1 to 4 functions (n <= 4); got n = {n}")
    fs = [_callable(f"fs[{i}]", f) for i, f in enumerate(fs)]
    K = _covariance_matrix(K, n)
    if kinks is None:
        kinks = [()] * n
    elif len(kinks) != n:
        raise ValueError(f"kinks must be None or have one tuple per function ({n}); got {len(kinks)}")
    kinks = [_kinks(f"kinks[{i}]", c) for i, c in enumerate(kinks)]
    tol = _tol(tol)
    L, _ = pivoted_cholesky(K)
    coef = L[None]
    prune = min(1e-6 * tol, 1e-14)
    evaluations, out, error, h_used = 0, None, np.inf, None
    for h in _LEVELS_ND if tol > 1e-9 else _LEVELS_ND[1:]:  # h = 1/3 never reaches 1e-9
        if out is not None and _nd_grid_size(coef, kinks, h) > _MAX_GRID:
            break
        out = _nested_pruned(fs, kinks, coef, h, prune)
        evaluations += out["evaluations"]
        _check_tails(out)
        error, h_used = float(_error_parts(out, extrapolate=True)[0]), h
        if error <= tol * out["l1"][0]:
            break
    method = f"nested tanh-sinh, rank {L.shape[1]} of {n}, h=1/{round(1 / h_used)}"
    return QuadratureResult(float(out["I"][0, 0]), error, evaluations, method)
