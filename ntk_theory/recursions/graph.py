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

Which terms merge, when a sum becomes one Gaussian and what is refused is :mod:`.rules`, shared with the
code generator (:mod:`ntk_theory.codegen.graph`); this module supplies the arithmetic on arrays.

Convolutional networks (channels-last image inputs (N, W, C) or (N, H, W, C); Novak et al. 2019, Arora
et al. 2019): every channel is a Gaussian process over inputs *and positions*, and the arrays above gain
position axes (:mod:`.spatial`: all position pairs when the description pools or its output keeps spatial
axes, same positions otherwise;
per-position variances take the role of var1, var2 in the activation expectations, entrywise).  Rules:

- ``Conv``: a new source, K'[p, p'] = C_b + C_W mean_q K[s p + q, s p' + q] (one filter offset q for both
  positions, zero padding counted in the mean), Theta' = lambda_b + lambda_W (the same mean of K)
  + C_W (the same mean of Theta), fan-in n_in = C_in prod(filter_shape);
- ``AvgPool``, ``GlobalAvgPool``, ``Flatten`` (the mean over positions of the same-position entries): linear
  maps of every covariance and NTK; a Gaussian value stays Gaussian, any other value is known by its moments
  (a nonlinearity after it is refused, as after FanInConcat);
- ``Dense``, nonlinearities, ``LayerNorm`` (over channels), ``FanInSum``, ``FanInConcat`` (channels): per
  position as above.

An output that keeps spatial axes (no ``Flatten`` or ``GlobalAvgPool``) is returned as the covariances of all
pairs of output positions in neural-tangents 0.6.5's layout (:func:`.spatial.neural_tangents_order`,
:func:`.spatial.output_spatial`).

neural-tangents 0.6.5 refuses LayerNorm after a nonlinearity and FanInSum of branches that do not end
in a linear layer; both are exact here.  What stays refused, with the layer named: a nonlinearity after
a sum of non-Gaussian functions of several sources (a Gaussian expectation of dimension > 2), after
LayerNorm of a non-Gaussian value, or after FanInConcat; sums of branches that share a source through
different functions of a LayerNorm.

Numerics follow :mod:`ntk_theory.recursions.network`: closed forms in their stable float64 rewriting,
homogeneous activations at unit scale, numerical expectations by Mehler series or quadrature with an
error estimate; entries whose two inputs are equal rows use the one-variable diagonal forms (exact).
The input enters as neural-tangents' does: K = x . x' / d (x_p . x'_p' / C for images), Theta = 0, treated
as Gaussian.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import mpmath
import numpy as np
import sympy as sp

from .. import _checks
from ..activations import Activation, x
from ..architecture import (
    AvgPool,
    Conv,
    Dense,
    Elementwise,
    FanInConcat,
    FanInSum,
    Flatten,
    GlobalAvgPool,
    Layer,
    LayerNorm,
    leaves,
    walk,
    where,
)
from ..gaussian import expectation1
from . import rules
from .layer import activation_kernels
from .result import KernelResult, check_get, equal_rows
from .spatial import VECTOR, Layout, conv_mean, neural_tangents_order, output_spatial, pool_mean


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
    layout: Layout = VECTOR


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

    def with_fn(self, fn: sp.Expr, origin: str = "") -> Term:
        """F replaced by ``fn`` (the same source and scales)."""
        return Term(self.source, fn, self.scale1, self.scale2)

    def same_scale(self, other: Term) -> bool:
        def eq(p, q):
            return (p is None and q is None) or (p is not None and q is not None and np.array_equal(p, q))

        return eq(self.scale1, other.scale1) and eq(self.scale2, other.scale2)


@dataclass(eq=False)
class Node:
    """A value that is a sum of terms of distinct sources."""

    terms: tuple
    channels: int
    layout: Layout = VECTOR


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
    layout: Layout = VECTOR


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

    def activation_moments(self, kern, K, V1, V2, t, ctx):
        """E[F F], E[F' F'] at the cross covariances K (N1, N2, *pair) and the self covariances V1, V2
        (see :mod:`.spatial`); same input and same position exact (the one-variable forms)."""
        lay = t.source.layout
        k1, k2 = lay.marginal(V1), lay.marginal(V2)
        kern.check_variances(k1 if ctx.symmetric else np.concatenate([k1.ravel(), k2.ravel()]), t.source.label)
        a, b = lay.cross_parts(k1, k2)
        bound = np.sqrt(a) * np.sqrt(b)
        T, Td, err = kern.offdiagonal(np.broadcast_to(a, K.shape), np.broadcast_to(b, K.shape),
                                      np.clip(K, -bound, bound))
        T1, Td1, err1 = self._self_moments(kern, lay, k1, V1, True)
        T2, _, err2 = (T1, None, err1) if ctx.symmetric else self._self_moments(kern, lay, k2, V2, False)
        ia, ib = np.nonzero(ctx.same)
        T, Td = np.array(T, dtype=float), np.array(Td, dtype=float)
        T[ia, ib], Td[ia, ib] = T1[ia], Td1[ia]
        ctx.errors.extend(e for e in (err, err1, err2) if e is not None)
        return T, Td, T1, Td1, T2

    @staticmethod
    def _self_moments(kern, lay, k, V, derivative):
        """E[F F] (and E[F' F']) of each input with itself: the one-variable forms at the per-position
        variances ``k``; in the full layout the two-variable forms at V for pairs of distinct positions."""
        D, Dd, errd = kern.diagonal(k, derivative=derivative)
        if not (lay.full and lay.shape):
            return D, Dd, errd
        a, b = lay.self_parts(k)
        bound = np.sqrt(a) * np.sqrt(b)
        T, Td, err = kern.offdiagonal(np.broadcast_to(a, V.shape), np.broadcast_to(b, V.shape),
                                      np.clip(V, -bound, bound))
        T = lay.set_same_position(np.array(T, dtype=float), np.asarray(D, dtype=float))
        Td = lay.set_same_position(np.array(Td, dtype=float), np.asarray(Dd, dtype=float)) if derivative else None
        errs = [e for e in (err, errd) if e is not None]
        return T, Td, (max(errs) if errs else None)

    def mean(self, fn, k, ctx):
        values, error = rules.mean_function(fn)(k)
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
    """One block's evaluation, and the algebra of :mod:`.rules` over its arrays."""

    same: np.ndarray
    symmetric: bool
    backend: object
    errors: list = field(default_factory=list)
    cache: dict = field(default_factory=dict)
    node_type = Node
    moments_type = Moments

    def gaussian_sum(self, terms, path):
        return _gaussian_sum(terms, path, self)

    def moments(self, state):
        return moments(state, self)

    @staticmethod
    def sum_moments(ms, channels, origin, layout):
        return _sum_moments(ms, channels, origin, layout)


#: Largest number of cross-covariance entries (N1 N2 P^2, full spatial layout) evaluated at once; larger
#: kernels are evaluated in blocks of rows of X1 (a block's temporaries peak at ~25 arrays of this size).
BLOCK_ENTRIES = 2**19


def kernel(description: Layer, X1, X2=None, get=("nngp", "ntk"), dps: int | None = None, *,
           diagonal_spatial: bool = False) -> KernelResult:
    """NNGP and NTK of the network ``description`` at inputs X1, X2 (default X1).

    Inputs are (N, d) vectors, or channels-last images (N, W, C) / (N, H, W, C) for convolutional networks;
    the covariances are stored for all position pairs when the description pools over positions (``AvgPool``,
    ``GlobalAvgPool``) or its output keeps spatial axes, else for same positions only (:mod:`.spatial`), and
    evaluated in blocks of rows of X1 of at most :data:`BLOCK_ENTRIES` entries.  The kernels are (N1, N2)
    when the output is a vector (the network ends in ``Flatten``, ``GlobalAvgPool`` or layers after them);
    an output with spatial axes (e.g. a network ending in ``Conv``, an activation or ``AvgPool``) gives the
    covariance of one output channel between every pair of output positions in neural-tangents 0.6.5's
    layout: (N1, N2, H, H', W, W') (1-D: (N1, N2, W, W')), with the two spatial dimensions swapped,
    (N1, N2, W, W', H, H'), where neural-tangents' kernel is reversed
    (:func:`.spatial.output_spatial`: an odd number of ``Conv`` layers on the path); the number of output
    channels does not enter.  ``diagonal_spatial=True`` (neural-tangents' option of that name): the same
    positions only, (N1, N2, H, W) (1-D: (N1, N2, W)), evaluated in the same-position layout; a description
    that pools (``AvgPool``, ``GlobalAvgPool``) needs every pair of positions and is refused (ValueError), as
    neural-tangents refuses it; vector outputs are unchanged.

    float64 by default; ``dps`` (vector inputs only): the same rules in mpmath at that many digits (``nngp``
    and ``ntk`` are then object arrays of ``mpmath.mpf``; ``.astype(float)`` rounds them).  ``get``:
    ``"nngp"``, ``"ntk"`` or a tuple of them (the result iterates in that order)."""
    get = check_get(get)
    X1, shape = image_inputs(X1, "X1")
    X2v, _ = (X1, shape) if X2 is None else image_inputs(X2, "X2", like=X1)
    if shape and dps is not None:
        raise ValueError("dps (mpmath arithmetic) is available for vector inputs (N, d) only; got images of shape "
                         f"{X1.shape[1:]}")
    backend = Float64() if dps is None else Mpmath(_checks.positive_int("dps", dps))
    out_shape, reversed_ = output_spatial(description, shape) if shape else ((), False)
    pools = [layer for _, layer in leaves(description) if isinstance(layer, (AvgPool, GlobalAvgPool))]
    if diagonal_spatial not in (True, False):
        raise ValueError(f"diagonal_spatial must be True or False; got {diagonal_spatial!r}")
    if diagonal_spatial and shape and pools:
        raise ValueError(f"diagonal_spatial=True keeps same positions only, but {pools[0]!r} averages over "
                         "positions, which needs every pair of positions; use diagonal_spatial=False")
    full = bool(shape) and not diagonal_spatial and (bool(out_shape) or bool(pools))
    layout = Layout(shape, full)
    rows = len(X1)
    if full:
        rows = max(1, BLOCK_ENTRIES // (len(X2v) * layout.size**2))
    if rows >= len(X1):
        nngp, ntk, errors = _evaluate(description, X1, X2v, X2 is None, backend, layout, dps)
    else:
        parts = [_evaluate(description, X1[i:i + rows], X2v, False, backend, layout, dps)
                 for i in range(0, len(X1), rows)]
        nngp, ntk = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        errors = [e for p in parts for e in p[2]]
    if out_shape and full:
        nngp, ntk = (neural_tangents_order(A, 2, len(out_shape), reversed_) for A in (nngp, ntk))
    info = {"quadrature_error": max(errors, default=0.0)} if dps is None else {"dps": dps}
    return KernelResult(nngp, ntk, info, get=get)


def image_inputs(X, name: str, like=None):
    """``X`` as float64 (N, d) or (N, *S, C) with S of 1 or 2 axes, checked as :func:`ntk_theory._checks.inputs`
    checks (N, d) inputs, and its spatial shape S (``()`` for vectors); ``like``: X1, whose per-input shape X
    must have."""
    X = _checks.inputs(X, name, images=True)
    shape = X.shape[1:-1] if X.ndim > 2 else ()
    if like is not None and X.shape[1:] != like.shape[1:]:
        raise ValueError(f"{name} has inputs of shape {X.shape[1:]}, X1 of shape {like.shape[1:]}")
    return X, shape


def _gram(X1, X2, layout: Layout):
    """Input covariances x_p . x'_p' / C (neural-tangents' normalisation by the channel count)."""
    n1, n2, c, P = len(X1), len(X2), X1.shape[-1], layout.size
    A, B = X1.reshape(n1, P, c), X2.reshape(n2, P, c)
    if layout.full:
        K = np.einsum("ipc,jqc->ijpq", A, B).reshape((n1, n2) + layout.shape * 2) / c
        V1 = np.einsum("ipc,iqc->ipq", A, A).reshape((n1,) + layout.shape * 2) / c
        V2 = np.einsum("ipc,iqc->ipq", B, B).reshape((n2,) + layout.shape * 2) / c
    else:
        K = np.einsum("ipc,jpc->ijp", A, B).reshape((n1, n2) + layout.shape) / c
        V1 = np.einsum("ipc,ipc->ip", A, A).reshape((n1,) + layout.shape) / c
        V2 = np.einsum("ipc,ipc->ip", B, B).reshape((n2,) + layout.shape) / c
    return K, V1, V2


def _evaluate(description, X1, X2, symmetric, backend, layout, dps):
    """(nngp, ntk, quadrature errors) at one block of inputs."""
    ctx = _Context(equal_rows(X1.reshape(len(X1), -1), X2.reshape(len(X2), -1)), symmetric, backend)
    with mpmath.workdps(dps or mpmath.mp.dps), np.errstate(all="ignore"):
        G, g1, g2 = backend.gram(X1, X2) if not layout.shape else _gram(X1, X2, layout)
        source = Source(G, np.zeros_like(G), g1, g2, np.zeros_like(g1), frozenset({"input"}), "the input", layout)
        state = Node((Term(source, x),), X1.shape[-1], layout)
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
    ctx.cache.clear()  # its moments refer back to ctx: free this block's arrays now, not at the next gc
    return nngp, ntk, ctx.errors


# ---------------------------------------------------------------------- rules
@functools.singledispatch
def _rule(layer: Layer, state, path, ctx):
    rules.no_rule(layer, path)


@_rule.register
def _(layer: Dense, state, path, ctx):
    m = moments(state, ctx)
    return _affine(layer, m, (m.nngp, m.ntk, m.var1, m.var2, m.ntk1), state.channels, layer.out_dim, path, ctx)


def _affine(layer, m, mapped, n_in, channels, path, ctx):
    """The new source of a Dense or Conv layer: K' = C_b + C_W K, Theta' = lambda_b + lambda_W K + C_W Theta
    with K, Theta the (window-averaged) moments ``mapped`` = (nngp, ntk, var1, var2, ntk1) of its input."""
    nngp, ntk, var1, var2, ntk1 = mapped
    lb, lw = layer.learning_rate_factors(n_in)
    cw, cb = layer.C_W, layer.C_b
    layout = _output_layout(layer, m.layout)
    src = Source(cb + cw * nngp, lb + lw * nngp + cw * ntk, cb + cw * var1, cb + cw * var2,
                 lb + lw * var1 + cw * ntk1, frozenset({path}), f"{layer!r} at {where(path)}", layout)
    if not ctx.backend.finite(src.nngp, src.ntk, src.var1):
        raise FloatingPointError(f"the kernel overflowed or produced NaN at {layer!r} ({where(path)}): variances grow "
                                 "without bound, or an expectation diverges")
    return Node((Term(src, x),), channels, layout)


def _output_layout(layer, layout: Layout) -> Layout:
    if isinstance(layer, (Conv, AvgPool)):
        return Layout(layer.output_size(layout.shape), layout.full)
    if isinstance(layer, (GlobalAvgPool, Flatten)):
        return Layout()
    return layout


# the shared rules (:mod:`ntk_theory.recursions.rules`), with this interpretation as their algebra
_rule.register(Elementwise, lambda layer, state, path, ctx: rules.elementwise(layer, state, path, ctx))
_rule.register(FanInSum, lambda layer, states, path, ctx: rules.fan_in_sum(layer, states, path, ctx))


@_rule.register
def _(layer: FanInConcat, states, path, ctx):
    layout = rules.same_layout(layer, states, path)
    if layout.shape and layer.axis != -1:
        raise ValueError(f"{layer!r} at {where(path)} concatenates along axis {layer.axis}, a spatial axis of "
                         "image inputs; only the channel axis (-1) is supported")
    total = sum(s.channels for s in states)
    ms = [moments(s, ctx) for s in states]
    w = [s.channels / total for s in states]
    mix = lambda name: sum(wi * getattr(m, name) for wi, m in zip(w, ms))  # noqa: E731
    return Moments(mix("nngp"), mix("ntk"), mix("var1"), mix("var2"), mix("ntk1"), mix("mean1"), mix("mean2"),
                   frozenset().union(*(m.base for m in ms)), total, f"{layer!r} at {where(path)}", layout)


@_rule.register
def _(layer: LayerNorm, state, path, ctx):
    lay = state.layout
    if lay.shape and layer.axis != -1:
        raise ValueError(f"{layer!r} at {where(path)} normalises along axis {layer.axis}, a spatial axis of image "
                         "inputs; only the channel axis (-1) is supported")
    t = rules.gaussian_term(state, path, ctx)
    if t is not None:
        v1, v2 = (lay.marginal(v) for v in _scaled_variances(t))
        s1, s2 = 1 / ctx.backend.sqrt(v1 + layer.eps), 1 / ctx.backend.sqrt(v2 + layer.eps)
        c1 = s1 if t.scale1 is None else t.scale1 * s1
        c2 = s2 if t.scale2 is None else t.scale2 * s2
        return Node((Term(t.source, x, c1, c2),), state.channels, lay)
    m = moments(state, ctx)
    b = ctx.backend
    sd1 = b.sqrt(b.positive_part(lay.marginal(m.var1) - m.mean1**2) + layer.eps)
    sd2 = b.sqrt(b.positive_part(lay.marginal(m.var2) - m.mean2**2) + layer.eps)
    outer = lay.cross(sd1, sd2)
    zero1, zero2 = np.zeros_like(m.mean1), np.zeros_like(m.mean2)
    return Moments((m.nngp - lay.cross(m.mean1, m.mean2)) / outer, m.ntk / outer,
                   (m.var1 - lay.self(m.mean1)) / lay.self(sd1), (m.var2 - lay.self(m.mean2)) / lay.self(sd2),
                   m.ntk1 / lay.self(sd1), zero1, zero2,
                   m.base, state.channels, f"{layer!r} at {where(path)} of a non-Gaussian value", lay)


@_rule.register
def _(layer: Conv, state, path, ctx):
    lay = _spatial_input(layer, state, path)
    m = moments(state, ctx)
    cross, own = (lambda A: conv_mean(A, lay, 2, layer)), (lambda A: conv_mean(A, lay, 1, layer))
    mapped = (cross(m.nngp), cross(m.ntk), own(m.var1), own(m.var2), own(m.ntk1))
    return _affine(layer, m, mapped, layer.fan_in(state.channels), layer.out_chan, path, ctx)


@_rule.register
def _(layer: AvgPool, state, path, ctx):
    lay = _spatial_input(layer, state, path)
    return _linear(layer, state, path, ctx, lambda A, batch: pool_mean(A, lay, batch, layer),
                   lambda a: pool_mean(a, lay, 1, layer, groups=1), state.channels)


@_rule.register
def _(layer: GlobalAvgPool, state, path, ctx):
    lay = _spatial_input(layer, state, path)
    return _linear(layer, state, path, ctx, lambda A, batch: lay.reduce(A, batch, "mean"), lay.reduce_marginal,
                   state.channels)


@_rule.register
def _(layer: Flatten, state, path, ctx):
    lay = state.layout
    if not lay.shape:
        return state
    return _linear(layer, state, path, ctx, lambda A, batch: lay.reduce(A, batch, "trace"), None,
                   state.channels * lay.size)


def _spatial_input(layer, state, path) -> Layout:
    lay = state.layout
    rank = getattr(layer, "rank", None)
    if not lay.shape or (rank is not None and rank != lay.rank):
        want = "images (N, W, C) or (N, H, W, C)" if rank is None else f"{rank}-D images"
        raise ValueError(f"{layer!r} at {where(path)} needs {want}; its input is {lay.describe()}")
    return lay


def _linear(layer, state, path, ctx, spatial_map, mean_map, channels):
    """A linear map over positions (pooling, Flatten): ``spatial_map(A, batch)`` applied to every covariance
    and NTK; a Gaussian value stays Gaussian (a new source of the same Dense layers), any other value is
    known by its moments, its means mapped by ``mean_map`` (None: not known per channel)."""
    layout = _output_layout(layer, state.layout)
    label = f"{layer!r} at {where(path)}"
    if rules.is_gaussian_sum(state, ctx):
        s = _gaussian_sum(state.terms, path, ctx).source
        src = Source(spatial_map(s.nngp, 2), spatial_map(s.ntk, 2), spatial_map(s.var1, 1), spatial_map(s.var2, 1),
                     spatial_map(s.ntk1, 1), s.base, label, layout)
        return Node((Term(src, x),), channels, layout)
    m = moments(state, ctx)
    mapped = (spatial_map(m.nngp, 2), spatial_map(m.ntk, 2), spatial_map(m.var1, 1), spatial_map(m.var2, 1),
              spatial_map(m.ntk1, 1))
    if mean_map is None:
        return _MomentsWithoutMeans(*mapped, m.base, channels, f"{label} of a non-Gaussian value", layout)
    return Moments(*mapped, mean_map(m.mean1), mean_map(m.mean2), m.base, channels,
                   f"{label} of a non-Gaussian value", layout)


# ---------------------------------------------------------------------- moments
def moments(state, ctx: _Context) -> Moments:
    """Second moments, NTK and means of a value (see the module docstring)."""
    if isinstance(state, Moments):
        return state
    parts = [_term_moments(t, ctx) for t in state.terms]
    lay = state.layout
    if len(parts) == 1:
        p = parts[0]
        return _LazyMoments(p, frozenset(state.terms[0].source.base), state.channels, lay)
    M1 = sum(p.mean1 for p in parts)
    M2 = sum(p.mean2 for p in parts)
    nngp = sum(p.nngp for p in parts)
    var1 = sum(p.var1 for p in parts)
    var2 = sum(p.var2 for p in parts)
    if len(parts) > 1:  # cross terms between independent sources: products of means
        nngp = nngp + lay.cross(M1, M2) - sum(lay.cross(p.mean1, p.mean2) for p in parts)
        var1 = var1 + lay.self(M1) - sum(lay.self(p.mean1) for p in parts)
        var2 = var2 + lay.self(M2) - sum(lay.self(p.mean2) for p in parts)
    return Moments(nngp, sum(p.ntk for p in parts), var1, var2, sum(p.ntk1 for p in parts), M1, M2,
                   frozenset().union(*(t.source.base for t in state.terms)), state.channels, "a sum of terms", lay)


class _LazyMoments(Moments):
    """The moments of a single term, with its means computed on first use."""

    def __init__(self, p: _TermMoments, base: frozenset, channels: int, layout: Layout):
        self._p = p
        self.nngp, self.ntk, self.var1, self.var2, self.ntk1 = p.nngp, p.ntk, p.var1, p.var2, p.ntk1
        self.base, self.channels, self.origin, self.layout = base, channels, "a single term", layout

    # two one-line delegating properties (alike in shape to codegen.kernel's and reference.mlp_graph's)
    @property
    def mean1(self):
        return self._p.mean1

    @property
    def mean2(self):
        return self._p.mean2


class _MomentsWithoutMeans(Moments):
    """Moments of a flattened non-Gaussian value: its features' means differ from position to position, so
    the rules that need one mean per input (sums with other branches, LayerNorm) are refused."""

    def __init__(self, nngp, ntk, var1, var2, ntk1, base, channels, origin, layout):
        self.nngp, self.ntk, self.var1, self.var2, self.ntk1 = nngp, ntk, var1, var2, ntk1
        self.base, self.channels, self.origin, self.layout = base, channels, origin, layout

    def _refuse(self):
        raise NotImplementedError(f"{self.origin}: its features' means depend on the position, and a sum with "
                                  "another branch or a LayerNorm after it is not implemented; put a Dense layer "
                                  "after Flatten, or pool with GlobalAvgPool")

    mean1 = property(lambda self: self._refuse())
    mean2 = property(lambda self: self._refuse())


def _sum_moments(ms: list[Moments], channels: int, origin: str, lay: Layout = VECTOR) -> Moments:
    M1, M2 = sum(m.mean1 for m in ms), sum(m.mean2 for m in ms)
    nngp = sum(m.nngp for m in ms) + lay.cross(M1, M2) - sum(lay.cross(m.mean1, m.mean2) for m in ms)
    var1 = sum(m.var1 for m in ms) + lay.self(M1) - sum(lay.self(m.mean1) for m in ms)
    var2 = sum(m.var2 for m in ms) + lay.self(M2) - sum(lay.self(m.mean2) for m in ms)
    return Moments(nngp, sum(m.ntk for m in ms), var1, var2, sum(m.ntk1 for m in ms), M1, M2,
                   frozenset().union(*(m.base for m in ms)), channels, origin, lay)


def _scaled_variances(t: Term):
    v1, v2, lay = t.source.var1, t.source.var2, t.source.layout
    return (v1 if t.scale1 is None else v1 * lay.self(t.scale1)), (v2 if t.scale2 is None else v2 * lay.self(t.scale2))


def _scaled(t: Term):
    """Covariance, NTK, variances and NTK diagonal of c g."""
    s = t.source
    lay = s.layout
    K, Th, ntk1 = s.nngp, s.ntk, s.ntk1
    if t.scale1 is not None or t.scale2 is not None:
        c1 = np.ones_like(lay.marginal(s.var1)) if t.scale1 is None else t.scale1
        c2 = np.ones_like(lay.marginal(s.var2)) if t.scale2 is None else t.scale2
        outer = lay.cross(c1, c2)
        K, Th, ntk1 = K * outer, Th * outer, ntk1 * lay.self(c1)
    v1, v2 = _scaled_variances(t)
    return K, Th, v1, v2, ntk1


def _gaussian_sum(terms, path, ctx) -> Term:
    """Independent Gaussian terms summed into one Gaussian source."""
    parts = [_scaled(t) for t in terms]
    src = Source(*(sum(p[i] for p in parts) for i in range(5)), frozenset().union(*(t.source.base for t in terms)),
                 f"the sum of {len(terms)} Gaussian branches before {where(path)}", terms[0].source.layout)
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
            return np.zeros_like(self._pre1), np.zeros_like(self._pre2)
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
    lay = t.source.layout
    if t.is_gaussian:
        out = _TermMoments(K, Th, k1, k2, t1, pre=(lay.marginal(k1), lay.marginal(k2)))
    else:
        act = Activation(sp.sstr(t.fn), t.fn, "stax")
        kern = activation_kernels(act)
        T, Td, T1, Td1, T2 = ctx.backend.activation_moments(kern, K, k1, k2, t, ctx)
        out = _TermMoments(T, Td * Th, T1, T2, Td1 * t1, t.fn, ctx, (lay.marginal(k1), lay.marginal(k2)))
    ctx.cache[key] = (t, out)  # keep t alive so its id is not reused
    return out
