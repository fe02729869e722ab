r"""The reference finite network of any architecture description, in NumPy, differentiated by hand.

A description (:mod:`ntk_theory.architecture.layers`) is run as neural-tangents' ``stax`` runs it, with
its parameter layout, so parameters are exchangeable with neural-tangents 0.6.5:

- ``Dense(out_dim, W_std, b_std, parameterization)``: params ``(W, b)``, ``W`` of shape (n_in, out_dim),
  ``b`` of shape (1, out_dim) or ``None`` when ``b_std is None``.  'ntk': ``W, b ~ N(0, 1)`` and
  ``z = W_std / sqrt(n_in) x W + b_std b``; 'standard' (and PDLT's 'unit', which differs only in its NTK
  factors): ``W ~ N(0, W_std^2 / n_in)``, ``b ~ N(0, b_std^2)`` and ``z = x W + b``;
- ``serial``: a list of its layers' params; ``parallel``: a tuple of them; every other layer: ``()``;
- ``Elementwise``: ``s(x)`` from the layer's SymPy expression (``layer.activation.numpy``), its
  derivative the almost-everywhere one (``numpy_derivative``: Dirac deltas at jumps dropped, as
  backpropagation computes it);
- ``LayerNorm(eps)``: ``(x - mean) / sqrt(var + eps)``, mean and (biased) variance over the channels of
  each input;
- ``FanOut``, ``Identity``, ``FanInSum``, ``FanInConcat``: copies, pass-through, sum, concatenation.

Every layer acts on each input (row) separately: arrays are (..., N, channels), and leading axes (several
networks, several tangents) broadcast through every rule.

Derivatives (one rule per layer type, traversal by :func:`~ntk_theory.architecture.walk`):

- forward mode (:func:`jvp`): ``dz = W_s (dx W + x dW) + b_s db`` (``W_s = W_std / sqrt(n_in)``,
  ``b_s = b_std`` in 'ntk', 1 in 'standard'); ``dy = s'(x) dx``; LayerNorm
  ``dy = (dx - mean(dx) - y mean(y dx)) / sigma`` with ``sigma = sqrt(var + eps)``; sums and concatenations
  of the tangents;
- reverse mode (:func:`vjp`): the transposes, ``dx = W_s g W^T``, ``dW = W_s x^T g``, ``db = b_s sum_rows g``,
  LayerNorm's map being symmetric; cotangents of a value used several times (after ``FanOut``) add up;
- :func:`jacobian`: one reverse pass per output entry (all at once, as leading axes of the cotangent);
- :func:`ntk`: the empirical NTK, by the structure of a dense layer: with ``g_a = df/dz_a`` the cotangent of
  a Dense output and ``x_a`` its input at input a,

      Theta_ab = sum_Dense (g_a . g_b) [lambda_b + lambda_W / n_in  x_a . x_b],

  ``(lambda_b, lambda_W) = (C_b, C_W)`` in 'ntk', ``(1, n_in)`` in 'standard' (``lambda_b = 0`` without
  bias): :meth:`ntk_theory.architecture.Dense.learning_rate_factors`.  In these two it is ``J J^T`` with
  respect to neural-tangents' parameters at unit learning rate (as neural-tangents' ``empirical_ntk_fn``);
  'unit' (factors (1, 1)) is ``J Lambda J^T`` with ``Lambda = 1 / n_in`` on W and 1 on b.

Everything is float64; errors are those of the NumPy operations (rounding, about 1e-15 relative per
layer).
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .. import _checks
from ..architecture import (
    Dense,
    Elementwise,
    FanInConcat,
    FanInSum,
    Layer,
    LayerNorm,
    Parallel,
    Serial,
    walk,
    where,
)

Array = np.ndarray

__all__ = [
    "DenseParameters",
    "Sensitivity",
    "Tape",
    "apply",
    "flatten",
    "init",
    "jacobian",
    "jvp",
    "ntk",
    "param_leaves",
    "params_at",
    "structured_ntk",
    "trace",
    "unflatten",
    "vjp",
    "with_leaves",
]


# ---------------------------------------------------------------------- parameters
def _generator(rng) -> np.random.Generator:
    """A NumPy generator from a seed, a generator, or a JAX-style key (an array of two uint32 words)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (bool, np.bool_)):
        raise ValueError(f"rng must be a seed (int >= 0), a numpy Generator or a 2-word key; got {rng!r}")
    if isinstance(rng, numbers.Integral):
        if rng < 0:
            raise ValueError(f"rng seed must be >= 0; got {rng}")
        return np.random.default_rng(int(rng))
    try:
        key = np.asarray(rng)
    except Exception:
        key = None
    if key is not None and key.shape == (2,) and np.issubdtype(key.dtype, np.integer):
        return np.random.default_rng([int(w) & 0xFFFFFFFF for w in key])
    raise ValueError(f"rng must be a seed (int >= 0), a numpy Generator or a 2-word key array; got {rng!r}")


def _input_shape(input_shape) -> tuple:
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise ValueError(f"input_shape must be a tuple like (N, d) (N may be -1); got {input_shape!r}") from None
    if len(shape) < 1:
        raise ValueError("input_shape must have a channel axis (last); got ()")
    _checks.positive_int("input_shape[-1] (the input dimension)", shape[-1])
    return shape


@dataclass(frozen=True)
class _Channels:
    """The channel count of a value during :func:`init` (a shape would read as a list of inputs)."""

    n: int


def init(description: Layer, rng, input_shape) -> tuple:
    """``(output_shape, params)``: parameters drawn as neural-tangents 0.6.5 draws them (module docstring).

    ``rng``: an int seed, a ``numpy.random.Generator`` or a 2-word key (a JAX PRNG key) seeding NumPy;
    draws follow the layers in order, W before b.  ``input_shape``: (N, d), N may be -1."""
    gen = _generator(rng)
    shape = _input_shape(input_shape)
    drawn: dict = {}

    def rule(layer, value, path):
        return _init_rule(layer, value, path, gen, drawn)

    out = walk(description, _Channels(shape[-1]), rule)
    if isinstance(out, tuple):
        raise ValueError(f"{description!r} ends with a list of {len(out)} outputs; combine them "
                         "(FanInSum, FanInConcat)")
    return shape[:-1] + (out.n,), _nest(description, drawn, ())


@functools.singledispatch
def _init_rule(layer: Layer, value, path, gen, drawn):
    raise NotImplementedError(f"{layer!r} at {where(path)}: the reference network has no rule for "
                              f"{type(layer).__name__}")


@_init_rule.register
def _(layer: Dense, value, path, gen, drawn):
    n_in = value.n
    W = gen.standard_normal((n_in, layer.out_dim))
    b = None if layer.b_std is None else gen.standard_normal((1, layer.out_dim))
    if layer.parameterization != "ntk":  # 'standard', 'unit': the parameters carry their variances
        W = W * (layer.W_std / np.sqrt(n_in))
        b = None if b is None else b * layer.b_std
    drawn[path] = (W, b)
    return _Channels(layer.out_dim)


@_init_rule.register(Elementwise)
@_init_rule.register(LayerNorm)
def _(layer, value, path, gen, drawn):
    return value


@_init_rule.register
def _(layer: FanInSum, values, path, gen, drawn):
    widths = {v.n for v in values}
    if len(widths) > 1:
        raise ValueError(f"{layer!r} at {where(path)} sums inputs of different widths {sorted(widths)}")
    return values[0]


@_init_rule.register
def _(layer: FanInConcat, values, path, gen, drawn):
    return _Channels(sum(v.n for v in values))


def _nest(layer: Layer, drawn: dict, path: tuple):
    """neural-tangents' nesting: serial -> list, parallel -> tuple, Dense -> (W, b), others -> ()."""
    if isinstance(layer, Serial):
        return [_nest(sub, drawn, path + (i,)) for i, sub in enumerate(layer.layers)]
    if isinstance(layer, Parallel):
        return tuple(_nest(sub, drawn, path + (i,)) for i, sub in enumerate(layer.layers))
    return drawn.get(path, ())


def params_at(params, path: tuple):
    """The params of the layer at ``path`` (indices into serial/parallel nesting)."""
    p = params
    for depth, i in enumerate(path):
        if not isinstance(p, (list, tuple)) or i >= len(p):
            raise ValueError(f"params do not match the description at {where(path[:depth + 1])}: expected a "
                             f"list or tuple with an entry {i}; got {type(p).__name__}")
        p = p[i]
    return p


def param_leaves(params, path: tuple = ()) -> list:
    """``[(path, array), ...]`` of every parameter array in neural-tangents' (JAX tree) order, ``None`` skipped."""
    if params is None:
        return []
    if isinstance(params, (list, tuple)):
        out = []
        for i, p in enumerate(params):
            out.extend(param_leaves(p, path + (i,)))
        return out
    return [(path, params)]


def with_leaves(params, arrays):
    """``params``' structure with its leaves (in :func:`param_leaves` order) replaced by ``arrays``."""
    it = iter(arrays)

    def rebuild(p):
        if p is None:
            return None
        if isinstance(p, list):
            return [rebuild(q) for q in p]
        if isinstance(p, tuple):
            return tuple(rebuild(q) for q in p)
        return next(it)

    out = rebuild(params)
    if next(it, None) is not None:
        raise ValueError("more arrays than parameter leaves")
    return out


def flatten(params) -> Array:
    """All parameter arrays raveled (row-major) and concatenated in :func:`param_leaves` order: (P,)."""
    leaves = [np.ravel(np.asarray(a, dtype=np.float64)) for _, a in param_leaves(params)]
    return np.concatenate(leaves) if leaves else np.zeros(0)


def unflatten(params, vector) -> object:
    """Inverse of :func:`flatten`: ``vector`` (P,) cut into arrays shaped like ``params``' leaves."""
    vector = np.asarray(vector, dtype=np.float64)
    shapes = [np.shape(a) for _, a in param_leaves(params)]
    P = sum(int(np.prod(s)) for s in shapes)
    if vector.shape != (P,):
        raise ValueError(f"a flat parameter vector of this network has {P} entries; got shape {vector.shape}")
    arrays, i = [], 0
    for s in shapes:
        k = int(np.prod(s))
        arrays.append(vector[i:i + k].reshape(s))
        i += k
    return with_leaves(params, arrays)


# ---------------------------------------------------------------------- a Dense layer's action
class DenseParameters:
    """A Dense layer with explicit neural-tangents parameters ``(W, b)`` (leading axes allowed: several networks).

    ``forward(x) = W_s x W + b_s b``; ``backward(g) = W_s g W^T`` (the cotangent of the input);
    ``tangent(x, dx, dW, db)`` and ``gradients(x, g)`` as in the module docstring."""

    def __init__(self, layer: Dense, params, n_in: int, path: tuple = ()):
        if not isinstance(params, (tuple, list)) or len(params) != 2:
            raise ValueError(f"{layer!r} at {where(path)} needs params (W, b); got {type(params).__name__}")
        W, b = params
        W = np.asarray(W, dtype=np.float64)
        if W.ndim < 2 or W.shape[-2:] != (n_in, layer.out_dim):
            if W.ndim >= 2 and W.shape[-1] == layer.out_dim:  # the parameters fit a different input width
                raise ValueError(f"{layer!r} at {where(path)} receives inputs with {n_in} features but its "
                                 f"parameters W have shape {W.shape} (drawn for {W.shape[-2]} features)")
            raise ValueError(f"{layer!r} at {where(path)}: W must have shape {(n_in, layer.out_dim)}; got {W.shape}")
        if (b is None) != (layer.b_std is None):
            raise ValueError(f"{layer!r} at {where(path)}: b must be None exactly when b_std is None; got "
                             f"{'None' if b is None else 'an array'}")
        if b is not None:
            b = np.asarray(b, dtype=np.float64)
            if b.shape[-1:] != (layer.out_dim,):
                raise ValueError(f"{layer!r} at {where(path)}: b must have shape (1, {layer.out_dim}); got {b.shape}")
        self.layer, self.W, self.b, self.n_in = layer, W, b, n_in
        ntk = layer.parameterization == "ntk"
        self.w_scale = layer.W_std / np.sqrt(n_in) if ntk else 1.0
        self.b_scale = (layer.b_std if ntk else 1.0) if layer.b_std is not None else 0.0

    def forward(self, x: Array) -> Array:
        z = np.matmul(x, self.W) * self.w_scale
        return z if self.b is None else z + self.b_scale * self.b

    def backward(self, g: Array) -> Array:
        return np.matmul(g, np.swapaxes(self.W, -1, -2)) * self.w_scale

    def tangent(self, x: Array, dx, dW, db):
        dz = None
        if dx is not None:
            dz = np.matmul(dx, self.W) * self.w_scale
        if dW is not None:
            t = np.matmul(x, np.asarray(dW, dtype=np.float64)) * self.w_scale
            dz = t if dz is None else dz + t
        if db is not None and self.b is not None:
            t = self.b_scale * np.asarray(db, dtype=np.float64)
            dz = t if dz is None else dz + t
        return dz

    def gradients(self, x: Array, g: Array) -> tuple:
        dW = np.matmul(np.swapaxes(x, -1, -2), g) * self.w_scale
        if self.b is None:
            return dW, None
        db = self.b_scale * g.sum(axis=-2, keepdims=self.b.ndim >= 2)
        return dW, db


# ---------------------------------------------------------------------- the forward pass as a tape
@dataclass(eq=False)
class Node:
    """A value of the network: an array (..., N, channels)."""

    array: Array


@dataclass(eq=False)
class Step:
    """One non-structural layer applied: its inputs, output and what its derivatives need."""

    layer: Layer
    path: tuple
    inputs: tuple
    output: Node
    cache: object


@dataclass(eq=False)
class Sensitivity:
    """At one Dense layer: its input ``x`` (..., N, n_in) and the cotangent ``g`` (..., N, out) of its output."""

    layer: Dense
    path: tuple
    x: Array
    g: Array
    action: object


@dataclass(eq=False)
class Tape:
    """The forward pass at inputs X: the output and every step, in order."""

    output: Node
    steps: list
    X: Array

    @property
    def f(self) -> Array:
        return self.output.array

    def backward(self, cotangent) -> list:
        """Reverse pass from ``cotangent`` (shape of the output, with optional extra leading axes):
        the :class:`Sensitivity` of every Dense layer, in order of the layers."""
        cot = np.asarray(cotangent, dtype=np.float64)
        if cot.shape[-2:] != self.f.shape[-2:]:
            raise ValueError(f"the cotangent must have the output's shape {self.f.shape[-2:]} (after optional "
                             f"leading axes); got {cot.shape}")
        grads = {id(self.output): cot}
        sens = []
        for step in reversed(self.steps):
            g = grads.pop(id(step.output), None)
            if g is None:
                continue
            if isinstance(step.layer, Dense):
                sens.append(Sensitivity(step.layer, step.path, step.inputs[0].array, g, step.cache))
            for node, gi in zip(step.inputs, _backward(step.layer, step, g)):
                if gi is None:
                    continue
                prev = grads.get(id(node))
                grads[id(node)] = gi if prev is None else prev + gi
        sens.reverse()
        return sens

    def push_forward(self, dense_tangents: Callable) -> Array | None:
        """Forward-mode tangent of the output.  ``dense_tangents(path)`` gives a Dense layer's parameter
        tangent ``(dW, db)`` (None or either None: zero).  Returns None when the tangent is zero."""
        tangents: dict = {}
        for step in self.steps:
            dxs = tuple(tangents.get(id(n)) for n in step.inputs)
            dy = _tangent(step.layer, step, dxs, dense_tangents)
            if dy is not None:
                tangents[id(step.output)] = dy
        return tangents.get(id(self.output))


def trace(description: Layer, X, action: Callable) -> Tape:
    """Run ``description`` at inputs X ((N, d), or with leading axes) and record every step.

    ``action(layer, path, n_in)`` returns the Dense layer's action: an object with ``forward(x)`` and
    ``backward(g)`` (:class:`DenseParameters` for explicit parameters)."""
    X = np.asarray(X, dtype=np.float64)
    steps: list = []

    def rule(layer, value, path):
        inputs = value if isinstance(value, tuple) else (value,)
        y, cache = _forward(layer, tuple(n.array for n in inputs), path, action)
        if y is None:  # the identity
            return inputs[0]
        node = Node(y)
        steps.append(Step(layer, path, inputs, node, cache))
        return node

    out = walk(description, Node(X), rule)
    if isinstance(out, tuple):
        raise ValueError(f"{description!r} ends with a list of {len(out)} outputs; combine them "
                         "(FanInSum, FanInConcat)")
    return Tape(out, steps, X)


def _explicit(params) -> Callable:
    def action(layer, path, n_in):
        return DenseParameters(layer, params_at(params, path), n_in, path)

    return action


# ---------------------------------------------------------------------- rules: forward
@functools.lru_cache(maxsize=256)
def _functions(layer: Elementwise):
    act = layer.activation
    return act.numpy, act.numpy_derivative


@functools.singledispatch
def _forward(layer: Layer, xs, path, action):
    raise NotImplementedError(f"{layer!r} at {where(path)}: the reference network has no rule for "
                              f"{type(layer).__name__}")


@_forward.register
def _(layer: Dense, xs, path, action):
    (x,) = xs
    a = action(layer, path, x.shape[-1])
    return a.forward(x), a


@_forward.register
def _(layer: Elementwise, xs, path, action):
    if layer.is_identity:
        return None, None
    (x,) = xs
    s, ds = _functions(layer)
    return s(x), ds(x)


@_forward.register
def _(layer: LayerNorm, xs, path, action):
    (x,) = xs
    mean = x.mean(axis=-1, keepdims=True)
    c = x - mean
    var = (c * c).mean(axis=-1, keepdims=True)
    sigma = np.sqrt(var + layer.eps)
    y = c / sigma
    return y, (y, sigma)


@_forward.register
def _(layer: FanInSum, xs, path, action):
    shapes = {x.shape[-1] for x in xs}
    if len(shapes) > 1:
        raise ValueError(f"{layer!r} at {where(path)} sums inputs of different widths {sorted(shapes)}")
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out, None


@_forward.register
def _(layer: FanInConcat, xs, path, action):
    lead = np.broadcast_shapes(*(x.shape[:-1] for x in xs))
    parts = [np.broadcast_to(x, lead + x.shape[-1:]) for x in xs]
    return np.concatenate(parts, axis=-1), np.cumsum([x.shape[-1] for x in xs])[:-1]


# ---------------------------------------------------------------------- rules: reverse
@functools.singledispatch
def _backward(layer: Layer, step: Step, g):
    raise NotImplementedError(f"{layer!r}: no reverse-mode rule")


@_backward.register
def _(layer: Dense, step, g):
    return (step.cache.backward(g),)


@_backward.register
def _(layer: Elementwise, step, g):
    return (g * step.cache,)


def _layernorm_map(y, sigma, v):
    """The (symmetric) derivative of LayerNorm applied to v: (v - mean(v) - y mean(y v)) / sigma."""
    return (v - v.mean(axis=-1, keepdims=True) - y * (y * v).mean(axis=-1, keepdims=True)) / sigma


@_backward.register
def _(layer: LayerNorm, step, g):
    y, sigma = step.cache
    return (_layernorm_map(y, sigma, g),)


@_backward.register
def _(layer: FanInSum, step, g):
    return (g,) * len(step.inputs)


@_backward.register
def _(layer: FanInConcat, step, g):
    return tuple(np.split(g, step.cache, axis=-1))


# ---------------------------------------------------------------------- rules: forward mode
@functools.singledispatch
def _tangent(layer: Layer, step: Step, dxs, dense_tangents):
    raise NotImplementedError(f"{layer!r}: no forward-mode rule")


@_tangent.register
def _(layer: Dense, step, dxs, dense_tangents):
    dp = dense_tangents(step.path)
    dW, db = (None, None) if dp is None else dp
    return step.cache.tangent(step.inputs[0].array, dxs[0], dW, db)


@_tangent.register
def _(layer: Elementwise, step, dxs, dense_tangents):
    return None if dxs[0] is None else step.cache * dxs[0]


@_tangent.register
def _(layer: LayerNorm, step, dxs, dense_tangents):
    y, sigma = step.cache
    return None if dxs[0] is None else _layernorm_map(y, sigma, dxs[0])


@_tangent.register
def _(layer: FanInSum, step, dxs, dense_tangents):
    present = [d for d in dxs if d is not None]
    if not present:
        return None
    out = present[0]
    for d in present[1:]:
        out = out + d
    return out


@_tangent.register
def _(layer: FanInConcat, step, dxs, dense_tangents):
    if all(d is None for d in dxs):
        return None
    lead = np.broadcast_shapes(*(d.shape[:-1] for d in dxs if d is not None))
    parts = [np.zeros(lead + n.array.shape[-1:]) if d is None else np.broadcast_to(d, lead + d.shape[-1:])
             for d, n in zip(dxs, step.inputs)]
    return np.concatenate(parts, axis=-1)


# ---------------------------------------------------------------------- public API
def _inputs(X, name="X") -> Array:
    return _checks.inputs(X, name)


def apply(description: Layer, params, X) -> Array:
    """The network's output at inputs X (N, d): (N, out_dim), float64."""
    return trace(description, _inputs(X), _explicit(params)).f


def jvp(description: Layer, params, X, tangent) -> tuple:
    """``(f(X), J(X) v)`` for a parameter tangent v: a tree shaped like ``params`` (a leading batch axis K
    on every leaf pushes K tangents at once: (K, N, out)) or a flat vector in :func:`flatten` order."""
    if isinstance(tangent, np.ndarray) and tangent.ndim == 1:
        tangent = unflatten(params, tangent)
    tape = trace(description, _inputs(X), _explicit(params))

    def dense_tangents(path):
        return params_at(tangent, path)

    dout = tape.push_forward(dense_tangents)
    return tape.f, (np.zeros_like(tape.f) if dout is None else dout)


def _gradient_tree(description: Layer, params, sens: list, lead: tuple):
    grads = {s.path: s.action.gradients(s.x, s.g) for s in sens}

    def zero(a):
        return None if a is None else np.zeros(lead + np.shape(a))

    def build(layer, p, path):
        if isinstance(layer, Serial):
            return [build(sub, params_at(p, (i,)), path + (i,)) for i, sub in enumerate(layer.layers)]
        if isinstance(layer, Parallel):
            return tuple(build(sub, params_at(p, (i,)), path + (i,)) for i, sub in enumerate(layer.layers))
        if isinstance(layer, Dense):
            if path in grads:
                dW, db = grads[path]
                W, b = p
                dW = np.broadcast_to(dW, lead + np.shape(W))
                db = None if db is None else np.broadcast_to(db, lead + np.shape(b))
                return (np.array(dW), None if db is None else np.array(db))
            return tuple(zero(a) for a in p)
        return ()

    return build(description, params, ())


def vjp(description: Layer, params, X, cotangent):
    """``J(X)^T u``: the gradient of ``sum(u * f(X))`` with respect to the parameters, shaped like ``params``.
    ``cotangent`` u: (N, out_dim), or with leading axes (then every leaf carries them)."""
    tape = trace(description, _inputs(X), _explicit(params))
    cot = np.asarray(cotangent, dtype=np.float64)
    sens = tape.backward(cot)
    return _gradient_tree(description, params, sens, cot.shape[:-2])


def jacobian(description: Layer, params, X, flat: bool = False):
    """``df_(a,o)/dtheta`` by reverse mode (one pass per output entry, all at once): a tree shaped like
    ``params`` with leading axes (N, out_dim) on every leaf, or with ``flat=True`` one array (N, out_dim, P)
    in :func:`flatten` order."""
    tape = trace(description, _inputs(X), _explicit(params))
    N, O = tape.f.shape
    eye = np.eye(N * O).reshape(N, O, N, O)
    tree = _gradient_tree(description, params, tape.backward(eye), (N, O))
    if not flat:
        return tree
    leaves = [a.reshape(N, O, -1) for _, a in param_leaves(tree)]
    return np.concatenate(leaves, axis=-1) if leaves else np.zeros((N, O, 0))


def structured_ntk(sens1: list, sens2: list | None = None) -> Array:
    r"""``sum_Dense (g1_a . g2_b) [lambda_b + lambda_W / n_in x1_a . x2_b]`` from the sensitivities of two
    reverse passes (module docstring): arrays (..., N1, N2) over the cotangents' and networks' leading axes."""
    sens2 = sens1 if sens2 is None else sens2
    theta = 0.0
    for s1, s2 in zip(sens1, sens2):
        n_in = s1.x.shape[-1]
        lam_b, lam_W = s1.layer.learning_rate_factors(n_in)
        gg = np.matmul(s1.g, np.swapaxes(s2.g, -1, -2))
        xx = np.matmul(s1.x, np.swapaxes(s2.x, -1, -2))
        theta = theta + gg * (lam_b + (lam_W / n_in) * xx)
    return np.asarray(theta, dtype=np.float64)


def ntk(description: Layer, params, X1, X2=None, trace_outputs: bool = True) -> Array:
    """The empirical NTK ``J(X1) J(X2)^T`` with respect to neural-tangents' parameters (unit learning rate;
    'unit' Dense layers: ``J Lambda J^T``, module docstring).

    ``trace_outputs=True``: (N1, N2), the mean over the output axis (neural-tangents' default
    ``trace_axes=(-1,)``; the NTK itself for one output); False: the full (N1, N2, O, O)
    (``trace_axes=()``)."""
    action = _explicit(params)
    X1 = _inputs(X1, "X1")
    tape1 = trace(description, X1, action)
    tape2 = tape1 if X2 is None else trace(description, _checks.inputs(X2, "X2", dim=X1.shape[1]), action)
    O = tape1.f.shape[-1]
    N1, N2 = tape1.f.shape[0], tape2.f.shape[0]
    cot = lambda tape: np.broadcast_to(np.eye(O)[:, None, :], (O, tape.f.shape[0], O))
    s1 = tape1.backward(cot(tape1))
    s2 = s1 if X2 is None else tape2.backward(cot(tape2))
    # output o of X1 against output p of X2: leading axes (O, 1) and (1, O)
    s1 = [Sensitivity(s.layer, s.path, s.x, s.g[:, None], s.action) for s in s1]
    s2 = [Sensitivity(s.layer, s.path, s.x, s.g[None, :], s.action) for s in s2]
    theta = np.broadcast_to(structured_ntk(s1, s2), (O, O, N1, N2))  # (O, O, N1, N2)
    if trace_outputs:
        return np.einsum("oo...->...", theta) / O
    return np.ascontiguousarray(np.transpose(theta, (2, 3, 0, 1)))
