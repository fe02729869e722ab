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
- ``FanOut``, ``Identity``, ``FanInSum``, ``FanInConcat``: copies, pass-through, sum, concatenation (of
  channels);
- ``Conv(out_chan, filter_shape, strides, padding)``: params ``(W, b)``, ``W`` (*filter_shape, C_in, out_chan)
  (HWIO), ``b`` (1, ..., 1, out_chan); the patches of each output position (:class:`Window`: 'VALID',
  'SAME' zero padding, 'CIRCULAR' periodic padding, placed as ``lax`` places them) times ``W`` reshaped to
  (prod(filter_shape) C_in, out_chan): a Dense layer of fan-in ``C_in prod(filter_shape)`` on every patch
  (:func:`linear_layer`), with neural-tangents' scales;
- ``AvgPool``: window sums divided by the window size (or, 'SAME' with ``normalize_edges``, by the number
  of window pixels inside the image); ``GlobalAvgPool``: the mean over positions; ``Flatten``: positions
  major, channels minor;
- on spatial inputs a ``Dense`` layer acts on the channels of every position (bias (1, ..., 1, out)),
  ``LayerNorm`` normalises the channels of every position, elementwise layers act on every entry.

Every layer acts on each input separately: arrays are (..., N, *spatial, channels) (inputs (N, d),
(N, W, C) or (N, H, W, C)), and leading axes (several networks, several tangents) broadcast through every
rule.  Layers with weights flatten (N, *spatial) into rows and hand them to their Dense action, so a
convolution is a Dense layer on the rows of its patches, and its weight sharing is the sum over rows in
the gradient ``x^T g``.

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

  and for layers with rows (Dense on spatial inputs, Conv on patches, weights shared over positions) the
  sum over position pairs, ``sum_(p, q) (g_(a,p) . g_(b,q)) [lambda_b + lambda_W / n_in x_(a,p) . x_(b,q)]``
  (Novak, Sohl-Dickstein, Schoenholz 2022, section 4), ``n_in = C_in prod(filter_shape)`` for a Conv;

  ``(lambda_b, lambda_W) = (C_b, C_W)`` in 'ntk', ``(1, n_in)`` in 'standard' (``lambda_b = 0`` without
  bias): :meth:`ntk_theory.architecture.Dense.learning_rate_factors`.  In these two it is ``J J^T`` with
  respect to neural-tangents' parameters at unit learning rate (as neural-tangents' ``empirical_ntk_fn``);
  'unit' (factors (1, 1)) is ``J Lambda J^T`` with ``Lambda = 1 / n_in`` on W and 1 on b.

Everything is float64; errors are those of the NumPy operations (rounding, about 1e-15 relative per
layer).
"""

from __future__ import annotations

import functools
import itertools
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .. import _checks
from ..architecture import (AvgPool, Conv, Dense, Elementwise, FanInConcat, FanInSum, Flatten, GlobalAvgPool,
                            Layer, LayerNorm, Parallel, Serial, leaves, walk, where)
from ..architecture.convolution import pooled_size

Array = np.ndarray

__all__ = [
    "DenseParameters",
    "Sensitivity",
    "Tape",
    "Window",
    "apply",
    "flatten",
    "init",
    "inputs",
    "jacobian",
    "jvp",
    "linear_layer",
    "linear_params",
    "ntk",
    "param_leaves",
    "params_at",
    "rows",
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
    """The channel count and spatial shape of a value during :func:`init` (a shape tuple would read as a
    list of inputs)."""

    n: int
    spatial: tuple = ()


def init(description: Layer, rng, input_shape) -> tuple:
    """``(output_shape, params)``: parameters drawn as neural-tangents 0.6.5 draws them (module docstring).

    ``rng``: an int seed, a ``numpy.random.Generator`` or a 2-word key (a JAX PRNG key) seeding NumPy;
    draws follow the layers in order, W before b.  ``input_shape``: (N, d), or (N, W, C) / (N, H, W, C)
    for convolutional networks; N may be -1.

    Parameters
    ----------
    description : Layer
        An architecture description (``net.description`` of a stax network).
    rng : int, numpy.random.Generator or array_like
        The seed.
    input_shape : tuple of int
        The input shape.

    Returns
    -------
    output_shape : tuple of int
    params : list
        neural-tangents' layout: ``(W (n_in, out), b (1, out))`` per Dense (b None without bias), ``()`` for
        parameter-free layers.

    Examples
    --------
    Dense weights are standard normal (the scale is applied in the forward pass):

    >>> import numpy as np
    >>> from ntk_theory import stax
    >>> from ntk_theory.reference import init_description
    >>> net = stax.serial(stax.Dense(3, W_std=1.5, b_std=0.1), stax.Relu(), stax.Dense(1, W_std=1.5))
    >>> _, ((W1, b1), _, (W2, b2)) = init_description(net.description, 0, (-1, 2))
    >>> [W.shape for W in (W1, W2)], b1.shape, b2
    ([(2, 3), (3, 1)], (1, 3), None)
    >>> _, many = init_description(stax.serial(stax.Dense(4000), stax.Relu()).description, 1, (-1, 10))
    >>> bool(abs(many[0][0].var() - 1.0) < 5 * (2 / 40000) ** 0.5)    # 40000 N(0, 1) draws
    True
    """
    gen = _generator(rng)
    shape = _input_shape(input_shape)
    drawn: dict = {}

    def rule(layer, value, path):
        return _init_rule(layer, value, path, gen, drawn)

    out = walk(description, _Channels(shape[-1], tuple(shape[1:-1])), rule)
    if isinstance(out, tuple):
        raise ValueError(f"{description!r} ends with a list of {len(out)} outputs; combine them "
                         "(FanInSum, FanInConcat)")
    return shape[:1] + out.spatial + (out.n,), _nest(description, drawn, ())


@functools.singledispatch
def _init_rule(layer: Layer, value, path, gen, drawn):
    raise NotImplementedError(f"{layer!r} at {where(path)}: the reference network has no rule for "
                              f"{type(layer).__name__}")


@_init_rule.register
def _(layer: Dense, value, path, gen, drawn):
    n_in = value.n
    W = gen.standard_normal((n_in, layer.out_dim))
    b = None if layer.b_std is None else gen.standard_normal((1,) * (len(value.spatial) + 1) + (layer.out_dim,))
    drawn[path] = _scaled(layer, W, b, n_in)
    return _Channels(layer.out_dim, value.spatial)


def _scaled(layer, W, b, n_in):
    if layer.parameterization != "ntk":  # 'standard', 'unit': the parameters carry their variances
        W = W * (layer.W_std / np.sqrt(n_in))
        b = None if b is None else b * layer.b_std
    return W, b


def _check_rank(layer, rank: int, path) -> None:
    if rank != layer.rank:
        axes = "(N, W, C)" if layer.rank == 1 else "(N, H, W, C)"
        raise ValueError(f"{layer!r} at {where(path)} acts on {layer.rank} spatial axes, inputs {axes}; it "
                         f"receives values with {rank} spatial axes")


@_init_rule.register
def _(layer: Conv, value, path, gen, drawn):
    _check_rank(layer, len(value.spatial), path)
    out_size = layer.output_size(value.spatial)
    W = gen.standard_normal(layer.filter_shape + (value.n, layer.out_chan))
    b = None if layer.b_std is None else gen.standard_normal((1,) * (layer.rank + 1) + (layer.out_chan,))
    drawn[path] = _scaled(layer, W, b, layer.fan_in(value.n))
    return _Channels(layer.out_chan, out_size)


@_init_rule.register
def _(layer: AvgPool, value, path, gen, drawn):
    _check_rank(layer, len(value.spatial), path)
    return _Channels(value.n, layer.output_size(value.spatial))


@_init_rule.register
def _(layer: GlobalAvgPool, value, path, gen, drawn):
    if not value.spatial:
        raise ValueError(f"{layer!r} at {where(path)} needs spatial inputs (N, ..., C); it receives (N, C)")
    return _Channels(value.n)


@_init_rule.register
def _(layer: Flatten, value, path, gen, drawn):
    return _Channels(value.n * math.prod(value.spatial))


@_init_rule.register(Elementwise)
@_init_rule.register(LayerNorm)
def _(layer, value, path, gen, drawn):
    return value


@_init_rule.register
def _(layer: FanInSum, values, path, gen, drawn):
    widths = {v.n for v in values}
    if len(widths) > 1:
        raise ValueError(f"{layer!r} at {where(path)} sums inputs of different widths {sorted(widths)}")
    _same_spatial(layer, [v.spatial for v in values], path)
    return values[0]


def _same_spatial(layer, shapes, path):
    if len(set(shapes)) > 1:
        raise ValueError(f"{layer!r} at {where(path)} combines inputs of different spatial shapes "
                         f"{sorted(set(shapes))}")


@_init_rule.register
def _(layer: FanInConcat, values, path, gen, drawn):
    _same_spatial(layer, [v.spatial for v in values], path)
    return _Channels(sum(v.n for v in values), values[0].spatial)


def _nest(layer: Layer, drawn: dict, path: tuple):
    """neural-tangents' nesting: serial -> list, parallel -> tuple, Dense, Conv -> (W, b), others -> ()."""
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
            lead = W.shape[:-2]
            if (b.shape[-1:] != (layer.out_dim,) or b.ndim <= len(lead) or b.shape[:len(lead)] != lead
                    or math.prod(b.shape[len(lead):-1]) != 1):
                raise ValueError(f"{layer!r} at {where(path)}: b must have shape (1, {layer.out_dim}); got {b.shape}")
            b = b.reshape(lead + (1, layer.out_dim))  # neural-tangents' (1, ..., 1, out) on spatial inputs
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


# ---------------------------------------------------------------------- windows over spatial axes
def rows(a: Array, rank: int) -> Array:
    """(..., N, *spatial, K) -> (..., N prod(spatial), K): every (input, position) a row of a dense layer."""
    if rank == 0:
        return a
    return a.reshape(a.shape[:a.ndim - rank - 2] + (-1, a.shape[-1]))


def _unrows(z: Array, like: Array, rank: int) -> Array:
    """Rows (..., N P, n) back to (..., N, *spatial, n), the (N, *spatial) of ``like``."""
    if rank == 0:
        return z
    return z.reshape(z.shape[:-2] + like.shape[like.ndim - rank - 2:-1] + (z.shape[-1],))


class Window:
    """A sliding window over the ``rank`` spatial axes of (..., *size, C) arrays, as ``lax`` places it.

    'VALID': no padding; 'SAME': ``total = max((out - 1) stride + window - size, 0)`` zeros per axis,
    ``total // 2`` before; 'CIRCULAR': the same widths filled periodically (``np.pad`` mode 'wrap', as
    neural-tangents pads before a 'VALID' convolution).  :meth:`extract` gives the patches
    (..., *out, *window, C) through ``sliding_window_view`` (no copy before the strided slice);
    :meth:`adjoint` is its transpose (scatter-add of the patches, one strided addition per window offset,
    then the padding folded back), exact to rounding."""

    def __init__(self, size, window, strides, padding: str):
        self.size, self.window, self.strides = tuple(size), tuple(window), tuple(strides)
        self.padding, self.rank = padding, len(self.window)
        self.out = pooled_size(self.size, self.window, self.strides, padding)
        if padding == "VALID":
            self.pads = tuple((0, 0) for _ in self.size)
        else:
            totals = [max((o - 1) * s + w - n, 0) for o, s, w, n in zip(self.out, self.strides, self.window, self.size)]
            self.pads = tuple((t // 2, t - t // 2) for t in totals)
        self.padded = tuple(n + lo + hi for n, (lo, hi) in zip(self.size, self.pads))

    def _axes(self, ndim: int) -> tuple:
        return tuple(range(ndim - self.rank - 1, ndim - 1))

    def pad(self, x: Array) -> Array:
        if self.padding == "VALID":
            return x
        widths = [(0, 0)] * (x.ndim - self.rank - 1) + list(self.pads) + [(0, 0)]
        return np.pad(x, widths, mode="wrap" if self.padding == "CIRCULAR" else "constant")

    def unpad(self, y: Array) -> Array:
        """The transpose of :meth:`pad`."""
        if self.padding == "VALID":
            return y
        axes = self._axes(y.ndim)
        if self.padding == "SAME":
            index = (Ellipsis,) + tuple(slice(lo, lo + n) for (lo, _), n in zip(self.pads, self.size)) + (slice(None),)
            return y[index]
        for ax, n, (lo, _) in zip(axes, self.size, self.pads):  # fold the periodic copies back
            idx = (np.arange(y.shape[ax]) - lo) % n
            moved = np.moveaxis(y, ax, 0)
            out = np.zeros((n,) + moved.shape[1:])
            np.add.at(out, idx, moved)
            y = np.moveaxis(out, 0, ax)
        return y

    def extract(self, x: Array) -> Array:
        """(..., *size, C) -> patches (..., *out, *window, C)."""
        if x.shape[x.ndim - self.rank - 1:-1] != self.size:
            raise ValueError(f"a window over {self.size} receives spatial shape {x.shape[x.ndim - self.rank - 1:-1]}")
        xp = self.pad(x)
        v = np.lib.stride_tricks.sliding_window_view(xp, self.window, axis=self._axes(xp.ndim))
        index = ((Ellipsis,) + tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(self.out, self.strides))
                 + (slice(None),) * (self.rank + 1))
        return np.moveaxis(v[index], -(self.rank + 1), -1)  # (..., *out, C, *window) -> (..., *out, *window, C)

    def adjoint(self, p: Array) -> Array:
        """The transpose of :meth:`extract`: patches (..., *out, *window, C) -> (..., *size, C)."""
        r = self.rank
        lead = p.shape[:p.ndim - 2 * r - 1]
        y = np.zeros(lead + self.padded + p.shape[-1:])
        full = (slice(None),) * r
        for offset in itertools.product(*(range(w) for w in self.window)):
            target = tuple(slice(o, o + (n - 1) * s + 1, s) for o, n, s in zip(offset, self.out, self.strides))
            y[(Ellipsis,) + target + (slice(None),)] += p[(Ellipsis,) + full + offset + (slice(None),)]
        return self.unpad(y)

    def patches(self, x: Array) -> Array:
        """Convolution patches (..., *out, prod(window) C), filter-major (the HWIO order of a filter)."""
        p = self.extract(x)
        return p.reshape(p.shape[:p.ndim - self.rank - 1] + (-1,))

    def patches_adjoint(self, p: Array, channels: int) -> Array:
        return self.adjoint(p.reshape(p.shape[:-1] + self.window + (channels,)))


def _window(layer, x: Array) -> Window:
    size = x.shape[x.ndim - layer.rank - 1:-1]
    window = layer.filter_shape if isinstance(layer, Conv) else layer.window_shape
    return Window(size, window, layer.step, layer.padding)


def _conv_dense(layer: Conv) -> Dense:
    """The Dense layer of fan-in ``C_in prod(filter_shape)`` a convolution applies to each patch: same
    out width, W_std, b_std, parameterization and variances (so the same scales and NTK factors)."""
    return Dense(layer.out_chan, layer.W_std, layer.b_std, layer.parameterization, layer.variances)


@functools.singledispatch
def linear_layer(layer: Layer) -> Dense | None:
    """The Dense layer acting on each row (input position or patch) of a layer with weights: the layer
    itself for Dense, :func:`_conv_dense` for Conv; None for parameterless layers."""
    return None


linear_layer.register(Dense, lambda layer: layer)
linear_layer.register(Conv, _conv_dense)


# ---------------------------------------------------------------------- the forward pass as a tape
@dataclass(eq=False)
class Node:
    """A value of the network: an array (..., N, *spatial, channels) with ``rank`` spatial axes."""

    array: Array
    rank: int = 0


# Step, Sensitivity and _Linear are records alike in shape (layer, path, arrays): different data, no shared logic
@dataclass(eq=False)
class Step:
    """One non-structural layer applied: its inputs, output and what its derivatives need."""

    layer: Layer
    path: tuple
    inputs: tuple
    output: Node
    cache: object


# a record shaped like Step (layer, path, arrays): different data, no shared logic
@dataclass(eq=False)
class Sensitivity:
    """At one layer with weights (Dense, Conv): its rows' input ``x`` (..., N, *spatial, n_in) and the
    cotangent ``g`` (..., N, *spatial, out) of its output; ``rank`` spatial axes (0: (..., N, n_in)).
    For a Conv the rows are the patches (n_in = C_in prod(filter_shape)) at the output positions."""

    layer: Layer
    path: tuple
    x: Array
    g: Array
    action: object
    rank: int = 0


@dataclass(eq=False)
class _Linear:
    """Cache of a layer with weights: its action, its rows' input (the patches for a Conv) and the window."""

    action: object
    x: Array
    window: Window | None = None
    channels: int = 0


# a record with a derived property, shaped like architecture.mlp.MLPParameters: different data, no shared logic
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
        the :class:`Sensitivity` of every layer with weights, in order of the layers.  Only the cotangents
        that reach a layer with weights are formed (none of the network input, nor of steps before the
        first such layer)."""
        cot = np.asarray(cotangent, dtype=np.float64)
        k = self.output.rank + 2
        if cot.shape[-k:] != self.f.shape[-k:]:
            raise ValueError(f"the cotangent must have the output's shape {self.f.shape[-k:]} (after optional "
                             f"leading axes); got {cot.shape}")
        # nodes with a layer with weights at or before them: the only ones whose cotangent is used
        needed: set = set()
        for step in self.steps:
            if isinstance(step.cache, _Linear) or any(id(n) in needed for n in step.inputs):
                needed.add(id(step.output))
        grads = {id(self.output): cot}
        sens = []
        for step in reversed(self.steps):
            g = grads.pop(id(step.output), None)
            if g is None:
                continue
            if isinstance(step.cache, _Linear):
                sens.append(Sensitivity(step.layer, step.path, step.cache.x, g, step.cache.action, step.output.rank))
            if not any(id(n) in needed for n in step.inputs):
                continue
            for node, gi in zip(step.inputs, _backward(step.layer, step, g)):
                if gi is None or id(node) not in needed:
                    continue
                prev = grads.get(id(node))
                grads[id(node)] = gi if prev is None else prev + gi
        sens.reverse()
        return sens

    def push_forward(self, dense_tangents: Callable) -> Array | None:
        """Forward-mode tangent of the output.  ``dense_tangents(path)`` gives a layer's parameter tangent
        ``(dW, db)`` in the coordinates of its action (rows: ``dW`` (..., n_in, out), ``db`` (..., 1, out);
        None or either None: zero).  Returns None when the tangent is zero."""
        tangents: dict = {}
        for step in self.steps:
            dxs = tuple(tangents.get(id(n)) for n in step.inputs)
            dy = _tangent(step.layer, step, dxs, dense_tangents)
            if dy is not None:
                tangents[id(step.output)] = dy
        return tangents.get(id(self.output))


def trace(description: Layer, X, action: Callable, rank: int | None = None) -> Tape:
    """Run ``description`` at inputs X ((N, d), (N, W, C) or (N, H, W, C); ``rank`` spatial axes, default
    ``X.ndim - 2``) and record every step.

    ``action(layer, path, n_in)`` returns the action of a Dense layer on rows of ``n_in`` features (a
    Conv's is asked for with its :func:`linear_layer` and its patch width): an object with ``forward(x)``
    and ``backward(g)`` (:class:`DenseParameters` for explicit parameters)."""
    X = np.asarray(X, dtype=np.float64)
    rank = X.ndim - 2 if rank is None else rank
    steps: list = []

    def rule(layer, value, path):
        inputs = value if isinstance(value, tuple) else (value,)
        y, cache = _forward(layer, tuple(n.array for n in inputs), path, action, tuple(n.rank for n in inputs))
        if y is None:  # the identity
            return inputs[0]
        node = Node(y, _out_rank(layer, inputs[0].rank))
        steps.append(Step(layer, path, inputs, node, cache))
        return node

    out = walk(description, Node(X, rank), rule)
    if isinstance(out, tuple):
        raise ValueError(f"{description!r} ends with a list of {len(out)} outputs; combine them "
                         "(FanInSum, FanInConcat)")
    return Tape(out, steps, X)


def _explicit(params, description: Layer | None = None) -> Callable:
    layers = {} if description is None else dict(leaves(description))

    def action(layer, path, n_in):
        p = linear_params(layers.get(path, layer), params_at(params, path), n_in, path)
        return DenseParameters(layer, p, n_in, path)

    return action


@functools.singledispatch
def linear_params(layer: Layer, p, n_in: int, path: tuple = ()) -> tuple:
    """A Dense or Conv layer's params ``(W, b)`` in neural-tangents' layout as the params of the Dense layer
    acting on its rows (:func:`linear_layer`): a Conv's filter (*filter_shape, C_in, out) reshaped to
    (n_in, out) with ``n_in = C_in prod(filter_shape)``; a Dense layer's as they are."""
    return p


@linear_params.register
def _conv_params(layer: Conv, p, n_in: int, path: tuple = ()) -> tuple:
    """A Conv's (W HWIO, b) as the (W (n_in, out), b) of its patch Dense layer."""
    if not isinstance(p, (tuple, list)) or len(p) != 2:
        raise ValueError(f"{layer!r} at {where(path)} needs params (W, b); got {type(p).__name__}")
    W, b = p
    W = np.asarray(W, dtype=np.float64)
    shape = layer.filter_shape + (n_in // layer.filter_size, layer.out_chan)
    if W.shape[W.ndim - len(shape):] != shape:
        raise ValueError(f"{layer!r} at {where(path)}: W must have shape {shape} (filter, in, out); got {W.shape}")
    return W.reshape(W.shape[:W.ndim - len(shape)] + (n_in, layer.out_chan)), b


# ---------------------------------------------------------------------- rules: forward
@functools.lru_cache(maxsize=256)
def _functions(layer: Elementwise):
    act = layer.activation
    return act.numpy, act.numpy_derivative


@functools.singledispatch
def _out_rank(layer: Layer, rank: int) -> int:
    return rank


@_out_rank.register(GlobalAvgPool)
@_out_rank.register(Flatten)
def _(layer, rank):
    return 0


@functools.singledispatch
def _forward(layer: Layer, xs, path, action, ranks):
    raise NotImplementedError(f"{layer!r} at {where(path)}: the reference network has no rule for "
                              f"{type(layer).__name__}")


def _apply_linear(a, x: Array, rank: int) -> Array:
    return _unrows(a.forward(rows(x, rank)), x, rank)


@_forward.register
def _(layer: Dense, xs, path, action, ranks):
    (x,), (r,) = xs, ranks
    a = action(layer, path, x.shape[-1])
    return _apply_linear(a, x, r), _Linear(a, x)


@_forward.register
def _(layer: Conv, xs, path, action, ranks):
    (x,), (r,) = xs, ranks
    _check_rank(layer, r, path)
    win = _window(layer, x)
    patches = win.patches(x)
    a = action(_conv_dense(layer), path, patches.shape[-1])
    return _apply_linear(a, patches, r), _Linear(a, patches, win, x.shape[-1])


def _pool_divisor(layer: AvgPool, win: Window):
    """What AvgPool divides each window sum by: the window size, or with 'SAME' and ``normalize_edges`` the
    number of window pixels inside the image ((*out, 1))."""
    if layer.padding == "SAME" and layer.normalize_edges:
        return win.extract(np.ones(win.size + (1,))).sum(axis=tuple(range(win.rank, 2 * win.rank)))
    return float(math.prod(win.window))


def _pool(win: Window, divisor, x: Array) -> Array:
    p = win.extract(x)
    return p.sum(axis=tuple(range(p.ndim - win.rank - 1, p.ndim - 1))) / divisor


@_forward.register
def _(layer: AvgPool, xs, path, action, ranks):
    (x,), (r,) = xs, ranks
    _check_rank(layer, r, path)
    win = _window(layer, x)
    divisor = _pool_divisor(layer, win)
    return _pool(win, divisor, x), (win, divisor)


def _spatial_axes(a: Array, rank: int) -> tuple:
    return tuple(range(a.ndim - rank - 1, a.ndim - 1))


@_forward.register
def _(layer: GlobalAvgPool, xs, path, action, ranks):
    (x,), (r,) = xs, ranks
    if r == 0:
        raise ValueError(f"{layer!r} at {where(path)} needs spatial inputs (N, ..., C); it receives (N, C)")
    return x.mean(axis=_spatial_axes(x, r)), x.shape[x.ndim - r - 1:-1]


@_forward.register
def _(layer: Flatten, xs, path, action, ranks):
    (x,), (r,) = xs, ranks
    if r == 0:
        return None, None
    return x.reshape(x.shape[:x.ndim - r - 1] + (-1,)), x.shape[x.ndim - r - 1:]


@_forward.register
def _(layer: Elementwise, xs, path, action, ranks):
    if layer.is_identity:
        return None, None
    (x,) = xs
    s, ds = _functions(layer)
    return s(x), ds(x)


@_forward.register
def _(layer: LayerNorm, xs, path, action, ranks):
    (x,) = xs
    mean = x.mean(axis=-1, keepdims=True)
    c = x - mean
    var = (c * c).mean(axis=-1, keepdims=True)
    sigma = np.sqrt(var + layer.eps)
    y = c / sigma
    return y, (y, sigma)


def _check_combined(layer, xs, path, ranks, channels: bool):
    if len(set(ranks)) > 1:
        raise ValueError(f"{layer!r} at {where(path)} combines inputs with different numbers of spatial axes "
                         f"{sorted(set(ranks))}")
    r = ranks[0]
    spatial = {x.shape[x.ndim - r - 1:-1] for x in xs}
    if len(spatial) > 1:
        raise ValueError(f"{layer!r} at {where(path)} combines inputs of different spatial shapes {sorted(spatial)}")
    widths = {x.shape[-1] for x in xs}
    if channels and len(widths) > 1:
        raise ValueError(f"{layer!r} at {where(path)} sums inputs of different widths {sorted(widths)}")


@_forward.register
def _(layer: FanInSum, xs, path, action, ranks):
    _check_combined(layer, xs, path, ranks, True)
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out, None


@_forward.register
def _(layer: FanInConcat, xs, path, action, ranks):
    _check_combined(layer, xs, path, ranks, False)
    lead = np.broadcast_shapes(*(x.shape[:-1] for x in xs))
    parts = [np.broadcast_to(x, lead + x.shape[-1:]) for x in xs]
    return np.concatenate(parts, axis=-1), np.cumsum([x.shape[-1] for x in xs])[:-1]


# ---------------------------------------------------------------------- rules: reverse
@functools.singledispatch
def _backward(layer: Layer, step: Step, g):
    raise NotImplementedError(f"{layer!r}: no reverse-mode rule")


@_backward.register
def _(layer: Dense, step, g):
    r = step.output.rank
    return (_unrows(step.cache.action.backward(rows(g, r)), g, r),)


@_backward.register
def _(layer: Conv, step, g):
    c = step.cache
    dp = _unrows(c.action.backward(rows(g, step.output.rank)), g, step.output.rank)
    return (c.window.patches_adjoint(dp, c.channels),)


def _pool_adjoint(win: Window, divisor, g: Array) -> Array:
    gd = g / divisor
    index = (Ellipsis,) + (slice(None),) * win.rank + (None,) * win.rank + (slice(None),)
    p = np.broadcast_to(gd[index], gd.shape[:-1] + win.window + gd.shape[-1:])
    return win.adjoint(p)


@_backward.register
def _(layer: AvgPool, step, g):
    win, divisor = step.cache
    return (_pool_adjoint(win, divisor, g),)


def _spread(g: Array, size: tuple) -> Array:
    """The transpose of the mean over positions: g (..., C) -> (..., *size, C) / prod(size)."""
    index = (Ellipsis,) + (None,) * len(size) + (slice(None),)
    return np.broadcast_to(g[index] / math.prod(size), g.shape[:-1] + size + g.shape[-1:])


@_backward.register
def _(layer: GlobalAvgPool, step, g):
    return (_spread(g, step.cache),)


@_backward.register
def _(layer: Flatten, step, g):
    return (g.reshape(g.shape[:-1] + step.cache),)


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


def _linear_tangent(step, dx, dense_tangents):
    c, r = step.cache, step.output.rank
    dp = dense_tangents(step.path)
    dW, db = (None, None) if dp is None else dp
    if dx is None and dW is None and (db is None or c.action.b is None):
        return None
    dz = c.action.tangent(rows(c.x, r), None if dx is None else rows(dx, r), dW, db)
    return None if dz is None else _unrows(dz, c.x, r)


@_tangent.register
def _(layer: Dense, step, dxs, dense_tangents):
    return _linear_tangent(step, dxs[0], dense_tangents)


@_tangent.register
def _(layer: Conv, step, dxs, dense_tangents):
    dx = None if dxs[0] is None else step.cache.window.patches(dxs[0])
    return _linear_tangent(step, dx, dense_tangents)


@_tangent.register
def _(layer: AvgPool, step, dxs, dense_tangents):
    return None if dxs[0] is None else _pool(*step.cache, dxs[0])


@_tangent.register
def _(layer: GlobalAvgPool, step, dxs, dense_tangents):
    dx = dxs[0]
    return None if dx is None else dx.mean(axis=_spatial_axes(dx, len(step.cache)))


@_tangent.register
def _(layer: Flatten, step, dxs, dense_tangents):
    dx = dxs[0]
    return None if dx is None else dx.reshape(dx.shape[:dx.ndim - len(step.cache)] + (-1,))


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
def inputs(X, name: str = "X", shape: tuple | None = None) -> Array:
    """X as a float64 array (N, d) (a 1-D (d,) is one input), (N, W, C) or (N, H, W, C) with finite
    entries; ``shape``: the per-input shape it must have.  ValueError naming the problem otherwise."""
    if np.ndim(X) > 4:
        raise ValueError(f"{name} must be (N, d), (N, W, C) or (N, H, W, C); got shape {np.shape(X)}")
    out = _checks.inputs(X, name, images=True)
    if shape is not None and out.shape[1:] != tuple(shape):
        raise ValueError(f"{name} must have per-input shape {tuple(shape)} (as the inputs the network was set up "
                         f"for); got {out.shape[1:]}")
    return out


def _inputs(X, name="X") -> Array:
    return inputs(X, name)


def _flat_output(tape: Tape, what: str) -> tuple:
    if tape.output.rank:
        raise ValueError(f"{what} needs a network with outputs (N, O); this one ends with spatial outputs of shape "
                         f"{tape.f.shape} (end it with Flatten() or GlobalAvgPool() and a Dense readout)")
    return tape.f.shape


def apply(description: Layer, params, X) -> Array:
    """The network's output at inputs X ((N, d), or (N, W, C) / (N, H, W, C) for convolutions), float64.

    Parameters
    ----------
    description : Layer
        An architecture description.
    params : list
        Parameters in neural-tangents' layout (:func:`init`).
    X : array_like
        Inputs.

    Returns
    -------
    ndarray
        (N, out_dim) (or the description's output shape).

    Examples
    --------
    Against the forward pass written out ('ntk' Dense: z = W_std / sqrt(n_in) x w + b_std b):

    >>> import numpy as np
    >>> from ntk_theory import stax
    >>> from ntk_theory.reference import init_description, apply_description
    >>> net = stax.serial(stax.Dense(3, W_std=1.5, b_std=0.1), stax.Relu(), stax.Dense(1, W_std=1.5))
    >>> _, params = init_description(net.description, 0, (-1, 2))
    >>> (W1, b1), _, (W2, _) = params
    >>> X = np.array([[1.0, -0.5], [0.3, 0.8]])
    >>> z = X @ W1 * 1.5 / 2 ** 0.5 + 0.1 * b1
    >>> bool(np.allclose(apply_description(net.description, params, X), np.maximum(z, 0) @ W2 * 1.5 / 3 ** 0.5))
    True
    """
    return trace(description, _inputs(X), _explicit(params, description)).f


def _row_tangents(description: Layer, params, tangent) -> Callable:
    """``dense_tangents(path)`` for :meth:`Tape.push_forward` from a tangent tree in neural-tangents'
    layout: every (dW, db) reshaped to its action's rows, (..., n_in, out) and (..., 1, out)."""

    def dense_tangents(path):
        dp = params_at(tangent, path)
        if not isinstance(dp, (tuple, list)) or len(dp) != 2:
            return None
        W, b = params_at(params, path)
        dW, db = dp
        if dW is not None:
            dW = np.asarray(dW, dtype=np.float64)
            dW = dW.reshape(dW.shape[:dW.ndim - np.ndim(W)] + (-1, np.shape(W)[-1]))
        if db is not None and b is not None:
            db = np.asarray(db, dtype=np.float64)
            db = db.reshape(db.shape[:db.ndim - np.ndim(b)] + (1, np.shape(b)[-1]))
        return dW, db

    return dense_tangents


def jvp(description: Layer, params, X, tangent) -> tuple:
    """``(f(X), J(X) v)`` for a parameter tangent v: a tree shaped like ``params`` (a leading batch axis K
    on every leaf pushes K tangents at once: (K, N, out)) or a flat vector in :func:`flatten` order."""
    if isinstance(tangent, np.ndarray) and tangent.ndim == 1:
        tangent = unflatten(params, tangent)
    tape = trace(description, _inputs(X), _explicit(params, description))
    dout = tape.push_forward(_row_tangents(description, params, tangent))
    return tape.f, (np.zeros_like(tape.f) if dout is None else dout)


def _gradient_tree(description: Layer, params, sens: list, lead: tuple):
    grads = {s.path: s.action.gradients(rows(s.x, s.rank), rows(s.g, s.rank)) for s in sens}

    def zero(a):
        return None if a is None else np.zeros(lead + np.shape(a))

    def build(layer, p, path):
        if isinstance(layer, Serial):
            return [build(sub, params_at(p, (i,)), path + (i,)) for i, sub in enumerate(layer.layers)]
        if isinstance(layer, Parallel):
            return tuple(build(sub, params_at(p, (i,)), path + (i,)) for i, sub in enumerate(layer.layers))
        if isinstance(layer, (Dense, Conv)):
            if path in grads:
                dW, db = grads[path]
                W, b = p
                dW = np.broadcast_to(dW, lead + dW.shape[-2:]).reshape(lead + np.shape(W))
                db = None if db is None else np.broadcast_to(db, lead + db.shape[-2:]).reshape(lead + np.shape(b))
                return (np.array(dW), None if db is None else np.array(db))
            return tuple(zero(a) for a in p)
        return ()

    return build(description, params, ())


def vjp(description: Layer, params, X, cotangent):
    """``J(X)^T u``: the gradient of ``sum(u * f(X))`` with respect to the parameters, shaped like ``params``.
    ``cotangent`` u: the output's shape, or with leading axes (then every leaf carries them)."""
    tape = trace(description, _inputs(X), _explicit(params, description))
    cot = np.asarray(cotangent, dtype=np.float64)
    sens = tape.backward(cot)
    return _gradient_tree(description, params, sens, cot.shape[:cot.ndim - tape.f.ndim])


def jacobian(description: Layer, params, X, flat: bool = False):
    """``df_(a,o)/dtheta`` by reverse mode (one pass per output entry, all at once): a tree shaped like
    ``params`` with leading axes (N, out_dim) on every leaf, or with ``flat=True`` one array (N, out_dim, P)
    in :func:`flatten` order.

    Parameters
    ----------
    description : Layer
    params : list
        neural-tangents' layout (:func:`init`).
    X : array_like
        Inputs (N, ...).
    flat : bool, default False

    Returns
    -------
    list or ndarray

    Examples
    --------
    One weight's column against a central finite difference of the outputs:

    >>> import numpy as np
    >>> from ntk_theory import stax
    >>> from ntk_theory.reference import init_description, apply_description, description_jacobian
    >>> net = stax.serial(stax.Dense(3, W_std=1.5, b_std=0.1), stax.Relu(), stax.Dense(1, W_std=1.5))
    >>> _, params = init_description(net.description, 0, (-1, 2))
    >>> (W1, b1), _, (W2, _) = params
    >>> X = np.array([[1.0, -0.5], [0.3, 0.8]])
    >>> J = description_jacobian(net.description, params, X)
    >>> def f(w):
    ...     W = W1.copy(); W[0, 1] = w
    ...     return apply_description(net.description, [(W, b1), (), (W2, None)], X)
    >>> w, h = W1[0, 1], 1e-6
    >>> bool(np.allclose(J[0][0][:, :, 0, 1], (f(w + h) - f(w - h)) / (2 * h), atol=1e-8))
    True
    >>> description_jacobian(net.description, params, X, flat=True).shape    # 6 + 3 + 3 parameters
    (2, 1, 12)
    """
    tape = trace(description, _inputs(X), _explicit(params, description))
    N, O = _flat_output(tape, "the Jacobian")
    eye = np.eye(N * O).reshape(N, O, N, O)
    tree = _gradient_tree(description, params, tape.backward(eye), (N, O))
    if not flat:
        return tree
    leaves_ = [a.reshape(N, O, -1) for _, a in param_leaves(tree)]
    return np.concatenate(leaves_, axis=-1) if leaves_ else np.zeros((N, O, 0))


def _position_gram(a1: Array, a2: Array, rank: int) -> Array:
    """``sum_k a1[..., a, p, k] a2[..., b, q, k]`` as (..., N1, P, N2, P) (rank 0: (..., N1, N2))."""
    if rank == 0:
        return np.matmul(a1, np.swapaxes(a2, -1, -2))
    r1, r2 = rows(a1, rank), rows(a2, rank)
    G = np.matmul(r1, np.swapaxes(r2, -1, -2))
    n1, n2 = a1.shape[a1.ndim - rank - 2], a2.shape[a2.ndim - rank - 2]
    return G.reshape(G.shape[:-2] + (n1, -1, n2, G.shape[-1] // n2))


def structured_ntk(sens1: list, sens2: list | None = None) -> Array:
    r"""``sum_layers sum_(p, q) (g1_(a,p) . g2_(b,q)) [lambda_b + lambda_W / n_in x1_(a,p) . x2_(b,q)]`` from
    the sensitivities of two reverse passes: arrays (..., N1, N2) over the cotangents' and networks' leading
    axes.  p, q run over the rows of each input (positions of a Dense layer on spatial inputs, the patches
    of a Conv: weight sharing makes its NTK the sum over all position pairs); without spatial axes the sum
    is one term, the module docstring's."""
    sens2 = sens1 if sens2 is None else sens2
    theta = 0.0
    for s1, s2 in zip(sens1, sens2):
        n_in = s1.x.shape[-1]
        lam_b, lam_W = s1.layer.learning_rate_factors(n_in)
        gg = _position_gram(s1.g, s2.g, s1.rank)
        xx = _position_gram(s1.x, s2.x, s1.rank)
        term = gg * (lam_b + (lam_W / n_in) * xx)
        if s1.rank:
            term = term.sum(axis=(-3, -1))
        theta = theta + term
    return np.asarray(theta, dtype=np.float64)


def ntk(description: Layer, params, X1, X2=None, trace_outputs: bool = True) -> Array:
    """The empirical NTK ``J(X1) J(X2)^T`` with respect to neural-tangents' parameters (unit learning rate;
    'unit' Dense layers: ``J Lambda J^T``, module docstring).

    ``trace_outputs=True``: (N1, N2), the mean over the output axis (neural-tangents' default
    ``trace_axes=(-1,)``; the NTK itself for one output); False: the full (N1, N2, O, O)
    (``trace_axes=()``).

    Parameters
    ----------
    description : Layer
    params : list
        neural-tangents' layout (:func:`init`).
    X1 : array_like
        Inputs (N1, ...).
    X2 : array_like, optional
        Inputs (N2, ...); None: X1.
    trace_outputs : bool, default True

    Returns
    -------
    ndarray

    Examples
    --------
    For Dense-ReLU-Dense the NTK is h h^T W_std^2 / n_1 + (g g^T) (W_std^2 x.x' / n_0 + b_std^2), h = relu(z),
    g = relu'(z) w2 W_std / sqrt(n_1) the output's sensitivity to z:

    >>> import numpy as np
    >>> from ntk_theory import stax
    >>> from ntk_theory.reference import init_description, description_ntk
    >>> net = stax.serial(stax.Dense(3, W_std=1.5, b_std=0.1), stax.Relu(), stax.Dense(1, W_std=1.5))
    >>> _, params = init_description(net.description, 0, (-1, 2))
    >>> (W1, b1), _, (W2, _) = params
    >>> X = np.array([[1.0, -0.5], [0.3, 0.8]])
    >>> z = X @ W1 * 1.5 / 2 ** 0.5 + 0.1 * b1
    >>> h, g = np.maximum(z, 0), (z > 0) * W2[:, 0] * 1.5 / 3 ** 0.5
    >>> theta = h @ h.T * 1.5 ** 2 / 3 + (g @ g.T) * (X @ X.T * 1.5 ** 2 / 2 + 0.1 ** 2)
    >>> bool(np.allclose(description_ntk(net.description, params, X), theta))
    True
    """
    action = _explicit(params, description)
    X1 = _inputs(X1, "X1")
    tape1 = trace(description, X1, action)
    tape2 = tape1 if X2 is None else trace(description, inputs(X2, "X2", shape=X1.shape[1:]), action)
    N1, O = _flat_output(tape1, "the NTK")
    N2 = tape2.f.shape[0]
    cot = lambda tape: np.broadcast_to(np.eye(O)[:, None, :], (O, tape.f.shape[0], O))
    s1 = tape1.backward(cot(tape1))
    s2 = s1 if X2 is None else tape2.backward(cot(tape2))
    # output o of X1 against output p of X2: leading axes (O, 1) and (1, O)
    s1 = [Sensitivity(s.layer, s.path, s.x, s.g[:, None], s.action, s.rank) for s in s1]
    s2 = [Sensitivity(s.layer, s.path, s.x, s.g[None, :], s.action, s.rank) for s in s2]
    theta = np.broadcast_to(structured_ntk(s1, s2), (O, O, N1, N2))  # (O, O, N1, N2)
    if trace_outputs:
        return np.einsum("oo...->...", theta) / O
    return np.ascontiguousarray(np.transpose(theta, (2, 3, 0, 1)))
