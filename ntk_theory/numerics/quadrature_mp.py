r"""E[f(u) g(v)] at arbitrary precision (mpmath): the reference quadrature the tests use.

The rule of :func:`.quadrature.expect2` (the same substitution, splits at kinks and near-kinks,
special cases k11 = 0, k22 = 0, k12 = 0, rho = +-1) in mpmath at dps + 10 working digits, with
scalar loops; f, g are callables on mpf (e.g. mpmath.tanh).  The tanh-sinh range |t| <= T,
sinh T = 2 ln(10) (dps + 10) / pi, leaves a tail below 10^-(2 dps + 20).

Error estimate: rules at h, 2h, 4h from one set of nodes; the extrapolation d1 (d1 / d2)^(1/2),
d1 = |I_h - I_2h|, d2 = |I_2h - I_4h| (the rule's error improves at least as fast from one level
to the next as from the previous one, with a square-root margin; d1 itself when the levels do not
converge), plus the terms of the outermost nodes and 10^-(dps+3) E|f g| for rounding.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import mpmath

from .. import _checks
from .quadrature import _DIVERGES, _KAPPA, _NEAR_KINK, _callable, _kinks

__all__ = ["expect1_mp", "expect2_mp"]

_MP_LEVELS = (8, 16, 32)  # 1/h


@functools.lru_cache(maxsize=16)
def _mp_template(inv_h: int, dps: int):
    """tanh-sinh nodes (dl, dr, w, left, (m_h, m_2h, m_4h), edge) on [0, 1] at working precision.

    t = i h, |t| <= T with sinh T = 2 ln(10) (dps + 10) / pi: the theta gap left at the ends is
    10^-(2 dps + 20).
    """
    mp = mpmath.mp
    h = mpmath.mpf(1) / inv_h
    T = mpmath.asinh(2 * mpmath.log(10) * (dps + 10) / mp.pi)
    n = int(mpmath.ceil(T / h))
    nodes = []
    for i in range(-n, n + 1):
        t = i * h
        s = mp.pi / 2 * mpmath.sinh(t)
        dl = 1 / (1 + mpmath.exp(-2 * s))
        dr = 1 / (1 + mpmath.exp(2 * s))
        w = h * mp.pi / 4 * mpmath.cosh(t) / mpmath.cosh(s) ** 2
        mult = (1, 2 if i % 2 == 0 else 0, 4 if i % 4 == 0 else 0)
        nodes.append((dl, dr, w, i < 0, mult, abs(i) == n))
    return nodes


_MP_CACHE: dict = {}


def _mp_tail_w(tpl):
    """Per node of an infinite piece: w = -log(1 - tau) and y = sqrt(2 w) (the P = 0 offsets)."""
    key = ("w", id(tpl), mpmath.mp.prec)
    if key not in _MP_CACHE:
        ws = [-mpmath.log1p(-dl) if left else -mpmath.log(dr) for dl, dr, _, left, _, _ in tpl]
        _MP_CACHE[key] = (tpl, [(w, mpmath.sqrt(2 * w)) for w in ws])
    return _MP_CACHE[key][1]


def _mp_half_line(tpl):
    """The nodes of int_0^inf phi(x) f(x) dx (the same for every piece starting at 0)."""
    key = ("half", id(tpl), mpmath.mp.prec)
    if key not in _MP_CACHE:
        phi0 = mpmath.npdf(0)
        nodes = [
            (True, y, phi0 * wt / y, mult, edge)
            for (_, _, wt, _, mult, edge), (_, y) in zip(tpl, _mp_tail_w(tpl))
        ]
        _MP_CACHE[key] = (tpl, nodes)
    return _MP_CACHE[key][1]


def _mp_piece(P, Q, tpl):
    """Nodes of int_P^Q phi(x) f(x) dx, 0 <= P <= Q <= inf: list of (near_P, offset, weight, mult, edge).

    offset is the distance from P (near_P) or from Q; the substitution is that of :func:`.quadrature._positive_piece`.
    """
    if Q == P:
        return []
    c = P if P >= 1 else mpmath.mpf(0)
    phi_P = mpmath.npdf(P)
    out = []
    if Q == mpmath.inf:
        if P == 0:
            return _mp_half_line(tpl)
        for (dl, dr, wt, left, mult, edge), (w, y0) in zip(tpl, _mp_tail_w(tpl)):
            if c == 0:
                out.append((True, y0, phi_P * wt * mpmath.exp(-P * y0) / y0, mult, edge))
            else:
                y = 2 * w / (c + mpmath.sqrt(c * c + 2 * w))
                out.append((True, y, phi_P * wt / (c + y), mult, edge))
        return out
    Y = Q - P
    W = Y * (c + Y / 2)
    kappa = mpmath.mpf(_KAPPA) if W <= 200 else mpmath.mpf(1)
    theta = -mpmath.expm1(-W / kappa)
    for dl, dr, wt, left, mult, edge in tpl:
        if left:
            w = -kappa * mpmath.log1p(-theta * dl)
            y = 2 * w / (c + mpmath.sqrt(c * c + 2 * w))
            z = Y - y
        else:
            wq = kappa * mpmath.log1p(mpmath.expm1(W / kappa) * dr)
            z = 2 * wq / (c + Y + mpmath.sqrt(max((c + Y) ** 2 - 2 * wq, 0)))
            y = Y - z
            w = W - wq
        exponent = -(P - c) * y - w * (1 - 1 / kappa)
        weight = phi_P * theta * wt * kappa * mpmath.exp(exponent) / (c + y)
        out.append((y <= z, y if y <= z else z, weight, mult, edge))
    return out


def _mp_nodes(splits, tpl):
    """Nodes of int phi(x) F(x) dx split at the sorted split values: (k, offset, weight, mult, edge),
    x = splits[k] + offset."""
    inf = mpmath.inf
    bounds = [-inf] + list(splits) + [inf]
    nodes = []
    for k in range(len(bounds) - 1):
        lo, hi = bounds[k], bounds[k + 1]
        neg = hi <= 0
        P, Q = (-hi, -lo) if neg else (lo, hi)
        e_P, e_Q = (k, k - 1) if neg else (k - 1, k)
        sign = -1 if neg else 1
        for near_P, off, weight, mult, edge in _mp_piece(P, Q, tpl):
            if near_P:
                nodes.append((e_P, sign * off, weight, mult, edge))
            else:
                nodes.append((e_Q, -sign * off, weight, mult, edge))
    return nodes


def _mp_split_points(points):
    """Sorted distinct split values (0 among them) with, for each, {function index: kink c}."""
    table = {mpmath.mpf(0): {}}
    for value, owner, c in points:
        table.setdefault(value, {})
        if owner is not None:
            table[value][owner] = c
    values = sorted(table)
    return values, [table[v] for v in values]


def _mp_args(slopes, base, splits, owners, k, offset):
    """Arguments base_i + slope_i x at x = splits[k] + offset, measured from the kink when splits[k]
    is one of function i's kinks."""
    args = []
    for i, (slope, b) in enumerate(zip(slopes, base)):
        anchor = owners[k].get(i)
        args.append((anchor if anchor is not None else b + slope * splits[k]) + slope * offset)
    return args


class _MpSum:
    """Running sums of the rules at h, 2h, 4h, of |terms| and of the edge terms."""

    def __init__(self):
        self.levels = [mpmath.mpf(0)] * 3
        self.l1 = mpmath.mpf(0)
        self.edge = mpmath.mpf(0)

    def add(self, weight, value, mult, edge, inner=None):
        """Add weight * value * inner (inner: an _MpSum of the nested integral, or None for 1)."""
        term = weight * value
        for v in range(3):
            if mult[v]:
                self.levels[v] += mult[v] * term * (inner.levels[v] if inner else 1)
        a = abs(term)
        self.l1 += a * (inner.l1 if inner else 1)
        self.edge += a * ((inner.edge if inner else 0) + (inner.l1 if inner else 1) * edge)


def _mp_check(value):
    if not mpmath.isfinite(value):
        raise ValueError(f"{_DIVERGES}: f returned NaN or inf at a quadrature node")
    return value


def _mp_line(funcs, slopes, kinks, base, inv_h, dps, inner=None):
    """int phi(x) prod_i funcs[i](base_i + slopes_i x) [* inner(x)] dx as an _MpSum."""
    points = [
        ((c - b) / slope, i, c)
        for i, (slope, b) in enumerate(zip(slopes, base)) if slope != 0 for c in kinks[i]
    ]
    if inner is not None:
        points += inner.split_points()
    splits, owners = _mp_split_points(points)
    total = _MpSum()
    for k, offset, weight, mult, edge in _mp_nodes(splits, _mp_template(inv_h, dps)):
        args = _mp_args(slopes, base, splits, owners, k, offset)
        value = mpmath.mpf(1)
        for f, a in zip(funcs, args):
            value *= _mp_check(mpmath.mpf(f(a)))
        total.add(weight, value, mult, edge, inner(splits[k] + offset) if inner else None)
    return total


class _MpInner:
    """G(x) = int phi(y) g(a x + b y) dy, split at y = (c - a x) / b, as an _MpSum."""

    def __init__(self, g, a, b, kinks_g, inv_h, dps):
        self.g, self.a, self.b, self.kinks, self.inv_h, self.dps = g, a, b, kinks_g, inv_h, dps

    def __call__(self, x):
        return _mp_line([self.g], [self.b], [self.kinks], [self.a * x], self.inv_h, self.dps)

    def split_points(self):
        """Outer (near-)kinks of G: x = c / a and c/a +- 8 eps where eps = b / |a| < 1/8."""
        if self.a == 0:
            return []
        eps = abs(self.b / self.a)
        points = []
        for c in self.kinks:
            xc = c / self.a
            if eps < 1 / mpmath.mpf(_NEAR_KINK):
                points += [(xc, None, None), (xc - 8 * eps, None, None), (xc + 8 * eps, None, None)]
        return points


def _mp_result(total: _MpSum, dps):
    """Value at h and the error estimate d1 (d1 / d2)^(1/2) (d1 = |I_h - I_2h|, d2 = |I_2h - I_4h|),
    or d1 when the levels do not converge, plus edge terms and 10^-(dps+3) sum|.|."""
    d1 = abs(total.levels[0] - total.levels[1])
    d2 = abs(total.levels[1] - total.levels[2])
    if d1 < d2:
        d1 = d1 * mpmath.sqrt(d1 / d2)
    return total.levels[0], d1 + total.edge + total.l1 * mpmath.mpf(10) ** (-dps - 3)


def _mp_adaptive(integrate, dps):
    """Refine h = 1/8 (only for dps <= 20), 1/16, 1/32 until the error estimate is <= 10^-dps sum|.|."""
    for inv_h in _MP_LEVELS if dps <= 20 else _MP_LEVELS[1:]:
        total = integrate(inv_h)
        value, error = _mp_result(total, dps)
        if error <= total.l1 * mpmath.mpf(10) ** (-dps):
            break
    return value, error


def _mp_number(name, value, variance=False):
    try:
        v = mpmath.mpf(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number; got {value!r}") from None
    if not mpmath.isfinite(v):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    if variance and v < 0:
        raise ValueError(f"{name} must be a finite number >= 0 (it is a variance); got {value!r}")
    return v


def expect1_mp(f: Callable, k, *, kinks: Sequence[float] = (), dps: int = 30) -> tuple:
    r"""E[f(u)], u ~ N(0, k), at arbitrary precision: (value, error estimate), both mpmath.mpf.

    The one-dimensional rule of :func:`expect2_mp` (split at 0 and the kinks, h = 1/16, 1/32) with
    the same error estimate; k = 0 gives f(0) exactly.  f is a callable on mpf; k may be a float
    (taken exactly), a string or an mpf.  Rounded to the caller's precision.
    """
    f = _callable("f", f)
    kf = _kinks("kinks", kinks)
    dps = _checks.positive_int("dps", dps)
    with mpmath.workdps(dps + 10):
        k = _mp_number("k", k, variance=True)
        zero = mpmath.mpf(0)
        if k == 0:
            value, error = _mp_check(mpmath.mpf(f(zero))), zero
        else:
            kinks_mp = [mpmath.mpf(c) for c in kf]
            value, error = _mp_one(f, kinks_mp, k, dps)
    return +value, +error


def _mp_one(f, kinks, k, dps):
    """(E[f(u)], error), u ~ N(0, k), k > 0, at the working precision."""
    return _mp_adaptive(lambda n: _mp_line([f], [mpmath.sqrt(k)], [kinks], [mpmath.mpf(0)], n, dps), dps)


def expect2_mp(
    f: Callable, g: Callable, k11, k22, k12, *, kinks_f: Sequence[float] = (),
    kinks_g: Sequence[float] = (), dps: int = 30,
) -> tuple:
    r"""E[f(u) g(v)] at arbitrary precision: (value, error estimate), both mpmath.mpf.

    The rule of :func:`.quadrature.expect2` (same substitution, splits and special cases) in mpmath at
    dps + 10 working digits, with f, g callables on mpf (e.g. mpmath.tanh); for checking
    derivations to ``dps`` digits.  k's may be floats (taken exactly), strings or mpf.  The error
    is the extrapolation d1 (d1 / d2)^(1/2), d1 = |I_h - I_2h|, d2 = |I_2h - I_4h| (the rule's
    error improves at least as fast from one level to the next as from the previous one, with a
    square-root margin), plus truncation and 10^-(dps+3) E|f g|; h = 1/16, 1/32 (also 1/8 for
    dps <= 20) until it is below
    10^-dps E|f g|.  Unlike :func:`.quadrature.expect2`, g is split only at its given kinks (not at v = 0);
    pass kinks_g=(0.0,) for activations sharp at 0 relative to sqrt(k22).  Cost: about 1e4-1e5
    evaluations of f and g.
    """
    f, g = _callable("f", f), _callable("g", g)
    kf = _kinks("kinks_f", kinks_f)
    kg = _kinks("kinks_g", kinks_g)
    dps = _checks.positive_int("dps", dps)
    with mpmath.workdps(dps + 10):
        k11 = _mp_number("k11", k11, variance=True)
        k22 = _mp_number("k22", k22, variance=True)
        k12 = _mp_number("k12", k12)
        kf_mp, kg_mp = [mpmath.mpf(c) for c in kf], [mpmath.mpf(c) for c in kg]
        det = k11 * k22 - k12 * k12
        if det < -mpmath.mpf("1e-12") * k11 * k22:
            raise ValueError("covariance is not positive semi-definite: k12^2 > k11 k22")
        det = max(det, mpmath.mpf(0))
        value, error = _mp_cases(f, g, k11, k22, k12, det, kf_mp, kg_mp, dps)
    return +value, +error


def _mp_cases(f, g, k11, k22, k12, det, kf, kg, dps):
    zero = mpmath.mpf(0)
    f0 = _mp_check(mpmath.mpf(f(zero))) if k11 == 0 else None
    g0 = _mp_check(mpmath.mpf(g(zero))) if k22 == 0 else None
    if k11 == 0 and k22 == 0:
        return f0 * g0, zero

    def one(func, kinks, k):
        return _mp_one(func, kinks, k, dps)

    if k11 == 0 or k22 == 0:
        const, (v, e) = (f0, one(g, kg, k22)) if k11 == 0 else (g0, one(f, kf, k11))
        return const * v, abs(const) * e
    if k12 == 0:
        (vf, ef), (vg, eg) = one(f, kf, k11), one(g, kg, k22)
        return vf * vg, abs(vf) * eg + abs(vg) * ef + ef * eg
    s11 = mpmath.sqrt(k11)
    if det == 0:
        a = mpmath.sqrt(k22) * mpmath.sign(k12)
        return _mp_adaptive(
            lambda n: _mp_line([f, g], [s11, a], [kf, kg], [zero, zero], n, dps), dps
        )
    a, b = k12 / s11, mpmath.sqrt(det / k11)
    return _mp_adaptive(
        lambda n: _mp_line([f], [s11], [kf], [zero], n, dps, inner=_MpInner(g, a, b, kg, n, dps)), dps
    )
