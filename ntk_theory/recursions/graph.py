r"""Infinite-width NNGP kernel and NTK of any architecture description, float64.

In the infinite-width limit every ``Dense`` layer outputs a fresh zero-mean Gaussian process over its
channels (a *source*), independent of every other ``Dense`` output: its weights are used once and have
mean zero, so cross covariances and cross NTKs between different sources vanish.  Every value in the
network is then, channel by channel, a sum of pointwise functions of distinct sources,

    h_a = sum_i F_i(c_i,a g_i,a),      g_i ~ GP(0, K_i),  Theta_i,

(``c`` a per-input scale that LayerNorm of a Gaussian introduces), and its moments are Gaussian
expectations of one source at a time:

    E[h_a h_b]   = sum_i E[F_i(u) F_i(v)] + sum_(i != j) E[F_i(u_a)] E[F_j(v_b)]
    Theta^h_ab   = sum_i c_i,a c_i,b E[F_i'(u) F_i'(v)] Theta_i,ab

with (u, v) ~ N(0, [[c_a^2 K_aa, c_a c_b K_ab], [., c_b^2 K_bb]]) (Jacot et al. 2018 eq. (5)-(6) per
source).  The rules, one per layer type:

- ``Dense``: a new source, K' = C_b + C_W E[h_a h_b], Theta' = lambda_b + lambda_W E[h_a h_b] + C_W Theta^h
  (lambda from the parameterization; 'standard': lambda_b = 1, lambda_W = n_in);
- a nonlinearity s on a single term F(c g): the term s(F(c g)) (composition of expressions); on a sum
  of Gaussian terms (all F = identity): the sum is one Gaussian with the summed moments;
- ``FanInSum``: the union of the terms, terms of the same source (same scale) added into one F;
- ``LayerNorm`` (over channels, eps as given): of a Gaussian, the term rescaled by
  1 / sqrt(E[h_a^2] + eps); of a non-Gaussian value, its centred moments
  (E[h_a h_b] - m_a m_b) / (s_a s_b), Theta / (s_a s_b), s_a^2 = Var h_a + eps (its mean and variance
  over channels are deterministic in the limit and contribute no NTK);
- ``FanInConcat``: the channel-weighted average of the moments (n_i / sum n).

neural-tangents 0.6.5 refuses LayerNorm after a nonlinearity and FanInSum of branches that do not end
in a linear layer; both are exact here.  What stays refused, with the layer named: a nonlinearity after
a sum of non-Gaussian functions of several sources (a Gaussian expectation of dimension > 2), after
LayerNorm of a non-Gaussian value, or after FanInConcat; sums of branches that share a source through
different functions of a LayerNorm.

Numerics follow :mod:`ntk_theory.recursions.network`: closed forms in their stable float64 rewriting,
homogeneous activations at unit scale, numerical expectations by Mehler series or quadrature with an
error estimate; entries whose two inputs are equal rows use the one-variable diagonal forms (exact).
The input enters as neural-tangents' does: K = x . x' / d, Theta = 0, treated as Gaussian.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field

import mpmath
import numpy as np
import sympy as sp

from .. import _checks
from ..activations import Activation, x
from ..architecture import Dense, Elementwise, FanInConcat, FanInSum, Layer, LayerNorm, walk, where
from ..gaussian import expectation1
from .layer import activation_kernels
from .result import KernelResult, check_get, equal_rows

_ids = itertools.count()


@dataclass(eq=False)
class Source:
    """A zero-mean Gaussian process over channels with covariance ``nngp`` (N1, N2), NTK ``ntk``, variances
    ``var1`` (N1), ``var2`` (N2) and NTK diagonal ``ntk1`` (N1, where rows of X1 meet equal rows of X2).
    ``base``: the Dense layers whose outputs it sums (independence is decided on them)."""

    nngp: np.ndarray
    ntk: np.ndarray
    var1: np.ndarray
    var2: np.ndarray
    ntk1: np.ndarray
    base: frozenset
    label: str


@dataclass(eq=False)
class Term:
    """``F(c g)`` for a source g, an expression F in x and per-input scales c (None: 1)."""

    source: Source
    fn: sp.Expr
    scale1: np.ndarray | None = None
    scale2: np.ndarray | None = None

    @property
    def is_gaussian(self) -> bool:
        return self.fn == x


@dataclass(eq=False)
class Node:
    """A value that is a sum of terms of distinct sources."""

    terms: tuple
    channels: int


@dataclass(eq=False)
class Moments:
    """A value known only by its moments (after LayerNorm of a non-Gaussian value or FanInConcat):
    second moments, NTK, means, and the Dense layers it depends on."""

    nngp: np.ndarray
    ntk: np.ndarray
    var1: np.ndarray
    var2: np.ndarray
    ntk1: np.ndarray
    mean1: np.ndarray
    mean2: np.ndarray
    base: frozenset
    channels: int
    origin: str


class Float64:
    """float64 arithmetic: closed forms in their stable rewriting, numerical expectations with errors."""

    def gram(self, X1, X2):
        d = X1.shape[1]
        return X1 @ X2.T / d, np.einsum("ij,ij->i", X1, X1) / d, np.einsum("ij,ij->i", X2, X2) / d

    sqrt = staticmethod(np.sqrt)

    @staticmethod
    def positive_part(a):
        return np.maximum(a, 0)

    @staticmethod
    def finite(*arrays) -> bool:
        return all(np.all(np.isfinite(a)) for a in arrays)

    def activation_moments(self, kern, K, k1, k2, t, ctx):
        """E[F F], E[F' F'] at the covariances K (N1, N2) and the diagonals k1, k2; equal rows exact."""
        kern.check_variances(k1 if ctx.symmetric else np.concatenate([k1, k2]), t.source.label)
        bound = np.sqrt(k1)[:, None] * np.sqrt(k2)[None, :]
        T, Td, err = kern.offdiagonal(np.broadcast_to(k1[:, None], K.shape), np.broadcast_to(k2[None, :], K.shape),
                                      np.clip(K, -bound, bound))
        T1, Td1, err1 = kern.diagonal(k1, derivative=True)
        T2, _, err2 = (T1, None, err1) if ctx.symmetric else kern.diagonal(k2, derivative=False)
        ia, ib = np.nonzero(ctx.same)
        T, Td = np.array(T, dtype=float), np.array(Td, dtype=float)
        T[ia, ib], Td[ia, ib] = T1[ia], Td1[ia]
        ctx.errors.extend(e for e in (err, err1, err2) if e is not None)
        return T, Td, T1, Td1, T2

    def mean(self, fn, k, ctx):
        values, error = _mean(fn)(k)
        if error is not None:
            ctx.errors.append(error)
        return values


class Mpmath:
    """mpmath arithmetic at ``dps`` digits on object arrays of mpf (inputs taken as exact binary floats)."""

    def __init__(self, dps: int):
        self.dps = dps

    def gram(self, X1, X2):
        d = X1.shape[1]
        A = [[mpmath.mpf(float(v)) for v in row] for row in X1]
        B = [[mpmath.mpf(float(v)) for v in row] for row in X2]
        dot = lambda a, b: mpmath.fsum(p * q for p, q in zip(a, b)) / d  # noqa: E731
        G = _objects([[dot(a, b) for b in B] for a in A])
        return G, _objects([dot(a, a) for a in A]), _objects([dot(b, b) for b in B])

    sqrt = staticmethod(np.vectorize(mpmath.sqrt, otypes=[object]))
    positive_part = staticmethod(np.vectorize(lambda v: max(v, 0), otypes=[object]))

    @staticmethod
    def finite(*arrays) -> bool:
        return all(all(mpmath.isfinite(v) for v in np.ravel(a)) for a in arrays)

    def activation_moments(self, kern, K, k1, k2, t, ctx):
        N1, N2 = K.shape
        T, Td = np.empty(K.shape, dtype=object), np.empty(K.shape, dtype=object)
        for i in range(N1):
            for j in range(N2):
                if ctx.same[i, j]:
                    T[i, j], Td[i, j] = kern.diagonal_mp(k1[i])
                else:
                    T[i, j], Td[i, j] = kern.offdiagonal_mp(k1[i], k2[j], K[i, j])
        diag = [kern.diagonal_mp(v) for v in k1]
        T1, Td1 = _objects([a for a, _ in diag]), _objects([b for _, b in diag])
        T2 = T1 if ctx.symmetric else _objects([kern.diagonal_mp(v, derivative=False)[0] for v in k2])
        return T, Td, T1, Td1, T2

    def mean(self, fn, k, ctx):
        e = expectation1(Activation(sp.sstr(fn), fn, "stax"))
        return _objects([e.evaluate_mp(v, dps=self.dps) for v in k])


def _objects(values) -> np.ndarray:
    a = np.empty(np.shape(values)[:2] if np.ndim(values) > 1 else len(values), dtype=object)
    if a.ndim == 2:
        for i, row in enumerate(values):
            a[i, :] = row
    else:
        a[:] = values
    return a


@dataclass
class _Context:
    same: np.ndarray
    symmetric: bool
    backend: object
    errors: list = field(default_factory=list)
    cache: dict = field(default_factory=dict)


def kernel(description: Layer, X1, X2=None, get=("nngp", "ntk"), dps: int | None = None) -> KernelResult:
    """NNGP and NTK of the network ``description`` at inputs X1 (N1, d), X2 (N2, d) (default X1).

    float64 by default; ``dps``: the same rules in mpmath at that many digits (``nngp`` and ``ntk``
    are then object arrays of ``mpmath.mpf``; ``.astype(float)`` rounds them).  ``get``: ``"nngp"``,
    ``"ntk"`` or a tuple of them (the result iterates in that order)."""
    get = check_get(get)
    X1 = _checks.inputs(X1, "X1")
    X2v = X1 if X2 is None else _checks.inputs(X2, "X2", dim=X1.shape[1])
    backend = Float64() if dps is None else Mpmath(_checks.positive_int("dps", dps))
    ctx = _Context(equal_rows(X1, X2v), X2 is None, backend)
    with mpmath.workdps(dps or mpmath.mp.dps), np.errstate(all="ignore"):
        G, g1, g2 = backend.gram(X1, X2v)
        source = Source(G, np.zeros_like(G), g1, g2, np.zeros_like(g1), frozenset({"input"}), "the input")
        state = Node((Term(source, x),), X1.shape[1])
        out = walk(description, state, functools.partial(_rule, ctx=ctx))
        if isinstance(out, tuple):
            raise ValueError(f"the network ends with a list of {len(out)} outputs; combine them (FanInSum, FanInConcat)")
        m = moments(out, ctx)
        nngp, ntk = m.nngp.copy(), m.ntk.copy()
        ia, ib = np.nonzero(ctx.same)
        nngp[ia, ib], ntk[ia, ib] = m.var1[ia], m.ntk1[ia]
        if not backend.finite(nngp, ntk):
            raise FloatingPointError("the kernel overflowed or produced NaN (variances grow without bound, or an "
                                     "expectation diverges)")
    info = {"quadrature_error": max(ctx.errors, default=0.0)} if dps is None else {"dps": dps}
    return KernelResult(nngp, ntk, info, get=get)


# ---------------------------------------------------------------------- rules
@functools.singledispatch
def _rule(layer: Layer, state, path, ctx):
    raise NotImplementedError(f"{layer!r} at {where(path)}: no infinite-width kernel rule for {type(layer).__name__}")


@_rule.register
def _(layer: Dense, state, path, ctx):
    m = moments(state, ctx)
    lb, lw = layer.learning_rate_factors(state.channels)
    cw, cb = layer.C_W, layer.C_b
    src = Source(cb + cw * m.nngp, lb + lw * m.nngp + cw * m.ntk, cb + cw * m.var1, cb + cw * m.var2,
                 lb + lw * m.var1 + cw * m.ntk1, frozenset({path}), f"{layer!r} at {where(path)}")
    if not ctx.backend.finite(src.nngp, src.ntk, src.var1):
        raise FloatingPointError(f"the kernel overflowed or produced NaN at {layer!r} ({where(path)}): variances grow "
                                 "without bound, or an expectation diverges")
    return Node((Term(src, x),), layer.out_dim)


@_rule.register
def _(layer: Elementwise, state, path, ctx):
    if layer.is_identity:
        return state
    if isinstance(state, Moments):
        raise NotImplementedError(
            f"{layer!r} at {where(path)} follows {state.origin}: its input is not a function of Gaussian processes "
            "whose kernel rules are known (a nonlinearity after FanInConcat or after LayerNorm of a non-Gaussian "
            "value); put a Dense layer before it")
    if len(state.terms) > 1 and all(t.is_gaussian for t in state.terms):
        state = Node((_gaussian_sum(state.terms, path, ctx),), state.channels)
    if len(state.terms) > 1:
        raise NotImplementedError(
            f"{layer!r} at {where(path)} acts on a sum of non-Gaussian functions of {len(state.terms)} independent "
            "Gaussian processes (e.g. relu(z) + Dense(...) from a residual branch): its kernel is a Gaussian "
            f"expectation in {2 * len(state.terms)} dimensions, not implemented; a Dense layer or a nonlinearity "
            "inside the branch (pre-activation residual blocks) avoids it")
    (t,) = state.terms
    fn = layer.expr.subs(x, t.fn)
    return Node((Term(t.source, fn, t.scale1, t.scale2),), state.channels)


@_rule.register
def _(layer: FanInSum, states, path, ctx):
    channels = {s.channels for s in states}
    if len(channels) > 1:
        raise ValueError(f"{layer!r} at {where(path)} sums inputs of different widths {sorted(channels)}")
    opaque = [s for s in states if isinstance(s, Moments)]
    terms: list[Term] = []
    for s in states:
        for t in (s.terms if isinstance(s, Node) else ()):
            for i, u in enumerate(terms):
                if u.source is t.source and _same_scale(u, t):
                    terms[i] = Term(u.source, u.fn + t.fn, u.scale1, u.scale2)
                    break
                if u.source.base & t.source.base:
                    raise NotImplementedError(
                        f"{layer!r} at {where(path)} sums branches that depend on the same Dense output through "
                        "different scalings or partial sums (LayerNorm in one branch only, or a sum over a "
                        "long skip); their cross moments are not implemented")
            else:
                terms.append(t)
    node = Node(tuple(terms), channels.pop())
    if not opaque:
        return node
    parts = opaque + ([node] if terms else [])
    for a, b in itertools.combinations(parts, 2):
        if _base(a) & _base(b):
            raise NotImplementedError(f"{layer!r} at {where(path)} sums a value known only by its moments "
                                      f"({opaque[0].origin}) with a branch that shares its Dense layers")
    ms = [moments(p, ctx) for p in parts]
    return _sum_moments(ms, node.channels, f"{layer!r} at {where(path)}")


@_rule.register
def _(layer: FanInConcat, states, path, ctx):
    total = sum(s.channels for s in states)
    ms = [moments(s, ctx) for s in states]
    w = [s.channels / total for s in states]
    mix = lambda name: sum(wi * getattr(m, name) for wi, m in zip(w, ms))  # noqa: E731
    return Moments(mix("nngp"), mix("ntk"), mix("var1"), mix("var2"), mix("ntk1"), mix("mean1"), mix("mean2"),
                   frozenset().union(*(m.base for m in ms)), total, f"{layer!r} at {where(path)}")


@_rule.register
def _(layer: LayerNorm, state, path, ctx):
    if isinstance(state, Node) and state.terms and all(t.is_gaussian for t in state.terms):
        t = state.terms[0] if len(state.terms) == 1 else _gaussian_sum(state.terms, path, ctx)
        v1, v2 = _scaled_variances(t)
        s1, s2 = 1 / ctx.backend.sqrt(v1 + layer.eps), 1 / ctx.backend.sqrt(v2 + layer.eps)
        c1 = s1 if t.scale1 is None else t.scale1 * s1
        c2 = s2 if t.scale2 is None else t.scale2 * s2
        return Node((Term(t.source, x, c1, c2),), state.channels)
    m = moments(state, ctx)
    b = ctx.backend
    sd1 = b.sqrt(b.positive_part(m.var1 - m.mean1**2) + layer.eps)
    sd2 = b.sqrt(b.positive_part(m.var2 - m.mean2**2) + layer.eps)
    outer = np.outer(sd1, sd2)
    zero1, zero2 = np.zeros_like(m.mean1), np.zeros_like(m.mean2)
    return Moments((m.nngp - np.outer(m.mean1, m.mean2)) / outer, m.ntk / outer,
                   (m.var1 - m.mean1**2) / sd1**2, (m.var2 - m.mean2**2) / sd2**2, m.ntk1 / sd1**2, zero1, zero2,
                   m.base, state.channels, f"{layer!r} at {where(path)} of a non-Gaussian value")


# ---------------------------------------------------------------------- moments
def moments(state, ctx: _Context) -> Moments:
    """Second moments, NTK and means of a value (see the module docstring)."""
    if isinstance(state, Moments):
        return state
    parts = [_term_moments(t, ctx) for t in state.terms]
    if len(parts) == 1:
        p = parts[0]
        return _LazyMoments(p, frozenset(state.terms[0].source.base), state.channels)
    M1 = sum(p.mean1 for p in parts)
    M2 = sum(p.mean2 for p in parts)
    nngp = sum(p.nngp for p in parts)
    var1 = sum(p.var1 for p in parts)
    var2 = sum(p.var2 for p in parts)
    if len(parts) > 1:  # cross terms between independent sources: products of means
        nngp = nngp + np.outer(M1, M2) - sum(np.outer(p.mean1, p.mean2) for p in parts)
        var1 = var1 + M1**2 - sum(p.mean1**2 for p in parts)
        var2 = var2 + M2**2 - sum(p.mean2**2 for p in parts)
    return Moments(nngp, sum(p.ntk for p in parts), var1, var2, sum(p.ntk1 for p in parts), M1, M2,
                   frozenset().union(*(t.source.base for t in state.terms)), state.channels, "a sum of terms")


class _LazyMoments(Moments):
    """The moments of a single term, with its means computed on first use."""

    def __init__(self, p: _TermMoments, base: frozenset, channels: int):
        self._p = p
        self.nngp, self.ntk, self.var1, self.var2, self.ntk1 = p.nngp, p.ntk, p.var1, p.var2, p.ntk1
        self.base, self.channels, self.origin = base, channels, "a single term"

    @property
    def mean1(self):
        return self._p.mean1

    @property
    def mean2(self):
        return self._p.mean2


def _base(s) -> frozenset:
    return s.base if isinstance(s, Moments) else frozenset().union(*(t.source.base for t in s.terms))


def _sum_moments(ms: list[Moments], channels: int, origin: str) -> Moments:
    M1, M2 = sum(m.mean1 for m in ms), sum(m.mean2 for m in ms)
    nngp = sum(m.nngp for m in ms) + np.outer(M1, M2) - sum(np.outer(m.mean1, m.mean2) for m in ms)
    var1 = sum(m.var1 for m in ms) + M1**2 - sum(m.mean1**2 for m in ms)
    var2 = sum(m.var2 for m in ms) + M2**2 - sum(m.mean2**2 for m in ms)
    return Moments(nngp, sum(m.ntk for m in ms), var1, var2, sum(m.ntk1 for m in ms), M1, M2,
                   frozenset().union(*(m.base for m in ms)), channels, origin)


def _same_scale(a: Term, b: Term) -> bool:
    def eq(p, q):
        return (p is None and q is None) or (p is not None and q is not None and np.array_equal(p, q))

    return eq(a.scale1, b.scale1) and eq(a.scale2, b.scale2)


def _scaled_variances(t: Term):
    v1, v2 = t.source.var1, t.source.var2
    return (v1 if t.scale1 is None else v1 * t.scale1**2), (v2 if t.scale2 is None else v2 * t.scale2**2)


def _scaled(t: Term):
    """Covariance, NTK, variances and NTK diagonal of c g."""
    s = t.source
    K, Th, ntk1 = s.nngp, s.ntk, s.ntk1
    if t.scale1 is not None or t.scale2 is not None:
        c1 = np.ones_like(s.var1) if t.scale1 is None else t.scale1
        c2 = np.ones_like(s.var2) if t.scale2 is None else t.scale2
        outer = np.outer(c1, c2)
        K, Th, ntk1 = K * outer, Th * outer, ntk1 * c1**2
    v1, v2 = _scaled_variances(t)
    return K, Th, v1, v2, ntk1


def _gaussian_sum(terms, path, ctx) -> Term:
    """Independent Gaussian terms summed into one Gaussian source."""
    parts = [_scaled(t) for t in terms]
    src = Source(*(sum(p[i] for p in parts) for i in range(5)), frozenset().union(*(t.source.base for t in terms)),
                 f"the sum of {len(terms)} Gaussian branches before {where(path)}")
    return Term(src, x)


class _TermMoments:
    """Moments of one term; its means E[F(c_a g_a)] are computed only when a sum or a LayerNorm needs them."""

    def __init__(self, nngp, ntk, var1, var2, ntk1, fn=None, ctx=None, pre=(None, None)):
        self.nngp, self.ntk, self.var1, self.var2, self.ntk1 = nngp, ntk, var1, var2, ntk1
        self._fn, self._ctx = fn, ctx
        self._pre1, self._pre2 = pre  # the pre-activation variances the means are evaluated at

    @functools.cached_property
    def _means(self):
        if self._fn is None:
            return np.zeros_like(self.var1), np.zeros_like(self.var2)
        ctx = self._ctx
        m1 = ctx.backend.mean(self._fn, self._pre1, ctx)
        return m1, (m1 if ctx.symmetric else ctx.backend.mean(self._fn, self._pre2, ctx))

    @property
    def mean1(self):
        return self._means[0]

    @property
    def mean2(self):
        return self._means[1]


def _term_moments(t: Term, ctx: _Context) -> _TermMoments:
    key = id(t)
    if key in ctx.cache:
        return ctx.cache[key][1]
    K, Th, k1, k2, t1 = _scaled(t)
    if t.is_gaussian:
        out = _TermMoments(K, Th, k1, k2, t1)
    else:
        act = Activation(sp.sstr(t.fn), t.fn, "stax")
        kern = activation_kernels(act)
        T, Td, T1, Td1, T2 = ctx.backend.activation_moments(kern, K, k1, k2, t, ctx)
        out = _TermMoments(T, Td * Th, T1, T2, Td1 * t1, t.fn, ctx, (k1, k2))
    ctx.cache[key] = (t, out)  # keep t alive so its id is not reused
    return out


@functools.lru_cache(maxsize=64)
def _mean(fn: sp.Expr):
    """E[F(u)], u ~ N(0, k), as a float64 function of an array of k returning (values, error or None)."""
    e = expectation1(Activation(sp.sstr(fn), fn, "stax"))
    if e.is_closed_form:
        return lambda k: (np.asarray(e.evaluate(k), dtype=float), None)

    def numerical(k):
        values, errors = e.evaluate(k, with_error=True)
        return values, float(np.max(errors)) if np.size(errors) else 0.0

    return numerical
