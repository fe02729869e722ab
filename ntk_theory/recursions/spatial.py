r"""Spatial covariances of convolutional networks: their storage layout and the window maps of Conv and pooling.

A value of a convolutional network has, per input, one Gaussian-process channel vector per position
p (a tuple of 1 or 2 indices).  Its second moments are stored in one of two layouts, chosen once per network:

- *full* (``full=True``): every pair of positions, ``K[a, b, p, p']`` (shape ``(N1, N2, *S, *S)``) and the
  self covariances ``V[a, p, p']`` (``(N, *S, *S)``); needed when a pooling layer averages over positions,
  and used when the output keeps spatial axes (its kernels are returned for every pair of positions);
- *diagonal* (``full=False``): the same position only, ``K[a, b, p]`` (``(N1, N2, *S)``), ``V[a, p]``;
  enough when the readout is ``Flatten`` (or only same-position kernels of a spatial output are asked for:
  ``diagonal_spatial``) and no layer mixes positions except convolutions (a convolution
  applies the same filter offset to both positions, so same-position covariances map to same-position
  covariances).

A vector value (no spatial axes) is the layout with ``shape == ()``: ``K`` is ``(N1, N2)``, ``V`` is ``(N,)``.
Per-position quantities (variances for the activation expectations, means, LayerNorm scales) have shape
``(N, *S)`` in both layouts (:meth:`Layout.marginal`).

Window maps (neural-tangents 0.6.5's conventions; zero padding counts in the mean):

- a convolution: ``K'[p, p'] = mean_(q in filter) K[s p + q - l, s p' + q - l]`` (one offset q for both
  positions), with K = 0 at padded positions ('SAME': ``l`` and the upper pad from the total
  ``max((ceil(n / s) - 1) s + f - n, 0)``, lower half rounded down) or periodic indices ('CIRCULAR': the
  'SAME' pads filled by wrapping, then 'VALID');
- average pooling: the same window mean with independent offsets for p and p' (the map applied to each
  position group in turn), divided by the window size, or with ``normalize_edges`` and 'SAME' padding by the
  number of in-image pixels of each window (``count[p] count[p']``).

Networks whose output keeps spatial axes return neural-tangents 0.6.5's default layout
(:func:`neural_tangents_order`): all position pairs, the two axes of each spatial dimension next to each other,
``(N1, N2, H, H', W, W')`` (``(N1, N2, W, W')`` for 1-D images), with the spatial dimensions in reverse order,
``(N1, N2, W, W', H, H')``, where neural-tangents' kernel is reversed (:func:`output_spatial`).
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import numpy as np

from ..architecture import (
    AvgPool,
    Conv,
    FanInConcat,
    FanInSum,
    Flatten,
    GlobalAvgPool,
    Layer,
    walk,
)


@dataclass(frozen=True)
class Layout:
    """Spatial shape ``shape`` (``()`` for a vector) and whether all position pairs are stored (``full``)."""

    shape: tuple = ()
    full: bool = False

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def groups(self) -> int:
        """Position groups of a covariance: 2 (p, p') in the full layout, else 1 (or 0 for a vector)."""
        return 0 if not self.shape else (2 if self.full else 1)

    def describe(self) -> str:
        return "a vector" if not self.shape else f"an image of {self.shape} positions"

    # ---------------------------------------------------------------- per-position quantities
    def marginal(self, V):
        """Per-position variances ``(N, *S)`` from self covariances ``V`` (``(N, *pair)``)."""
        if not (self.full and self.shape):
            return V
        n, P = V.shape[0], self.size
        return np.ascontiguousarray(V.reshape(n, P, P).diagonal(axis1=1, axis2=2)).reshape((n,) + self.shape)

    def _left(self, a, batch: int):
        ones = (1,) * self.rank if self.full else ()
        return a.reshape(a.shape[:1] + (1,) * (batch - 1) + self.shape + ones)

    def _right(self, b, batch: int):
        ones = (1,) * self.rank if self.full else ()
        return b.reshape((1,) * (batch - 1) + b.shape[:1] + ones + self.shape)

    def cross_parts(self, a, b):
        """Per-position quantities ``a`` (N1, *S), ``b`` (N2, *S) broadcast to a cross covariance's shape:
        ``a[i, p]`` and ``b[j, p']`` at ``(i, j, p, p')`` (same position p = p' in the diagonal layout)."""
        if not self.shape:
            return a[:, None], b[None, :]
        return self._left(a, 2), self._right(b, 2)

    def cross(self, a, b):
        """``a[i, p] b[j, p']`` in a cross covariance's shape (``np.outer`` for vectors)."""
        left, right = self.cross_parts(a, b)
        return left * right

    def self_parts(self, a):
        """``a[i, p]`` and ``a[i, p']`` in a self covariance's shape."""
        if not (self.full and self.shape):
            return a, a
        ones = (1,) * self.rank
        n = a.shape[:1]
        return a.reshape(n + self.shape + ones), a.reshape(n + ones + self.shape)

    def self(self, a):
        """``a[i, p] a[i, p']`` in a self covariance's shape (``a**2`` outside the full layout)."""
        left, right = self.self_parts(a)
        return left * right

    def set_same_position(self, V, values):
        """``V`` (``(N, *S, *S)``, full layout) with its same-position entries ``V[i, p, p]`` replaced by
        ``values[i, p]``."""
        n, P = V.shape[0], self.size
        flat = V.reshape(n, P, P)
        idx = np.arange(P)
        flat[:, idx, idx] = values.reshape(n, P)
        return flat.reshape(V.shape)

    # ---------------------------------------------------------------- linear maps over positions
    def reduce(self, A, batch: int, how: str):
        """``how`` = 'mean' (GlobalAvgPool: the mean over all position pairs) or 'trace' (Flatten: the mean
        over positions of the same-position entries) of a covariance with ``batch`` leading axes."""
        n = A.shape[:batch]
        P = self.size
        if self.full:
            flat = A.reshape(n + (P, P))
            return flat.mean(axis=(-2, -1)) if how == "mean" else np.trace(flat, axis1=-2, axis2=-1) / P
        return A.reshape(n + (P,)).mean(axis=-1)

    def reduce_marginal(self, a):
        """The mean over positions of a per-position quantity ``(N, *S)``."""
        return a.reshape(a.shape[0], -1).mean(axis=-1)


#: The layout of a vector value (no spatial axes).
VECTOR = Layout()


def pads(size: int, window: int, stride: int, padding: str) -> tuple[int, int]:
    """(lower, upper) padding of one axis (XLA's rule for 'SAME', reused for 'CIRCULAR'; 0 for 'VALID')."""
    if padding == "VALID":
        return 0, 0
    out = -(-size // stride)
    total = max((out - 1) * stride + window - size, 0)
    return total // 2, total - total // 2


def window_sum(A, axes_groups, window, strides, padding: str, shared: bool):
    """The sum of ``A`` over windows of positions (no normalisation).

    ``axes_groups``: one tuple of axes per position group (each of length ``len(window)``).  ``shared``:
    one offset for all groups (a convolution); else each group is summed over its own window in turn
    (pooling).  Padded positions contribute zero ('SAME') or their periodic image ('CIRCULAR')."""
    if not shared and len(axes_groups) > 1:
        for g in axes_groups:
            A = window_sum(A, (g,), window, strides, padding, True)
        return A
    width = [(0, 0)] * A.ndim
    out_shape = []
    for g in axes_groups:
        sizes = []
        for d, axis in enumerate(g):
            lo, hi = pads(A.shape[axis], window[d], strides[d], padding)
            width[axis] = (lo, hi)
            sizes.append((A.shape[axis] + lo + hi - window[d]) // strides[d] + 1)
        out_shape.append(sizes)
    if any(w != (0, 0) for w in width):
        A = np.pad(A, width, mode="wrap" if padding == "CIRCULAR" else "constant")
    total = None
    for q in itertools.product(*(range(w) for w in window)):
        index = [slice(None)] * A.ndim
        for g, sizes in zip(axes_groups, out_shape):
            for d, axis in enumerate(g):
                index[axis] = slice(q[d], q[d] + (sizes[d] - 1) * strides[d] + 1, strides[d])
        part = A[tuple(index)]
        total = part.copy() if total is None else total + part
    return total


def group_axes(layout: Layout, batch: int, groups: int | None = None) -> tuple:
    """The axes of each position group of an array with ``batch`` leading axes."""
    r = layout.rank
    groups = layout.groups if groups is None else groups
    return tuple(tuple(batch + g * r + d for d in range(r)) for g in range(groups))


def conv_mean(A, layout: Layout, batch: int, layer, groups: int | None = None):
    """The convolution's window mean (one offset for every position group, divided by the filter size)."""
    axes = group_axes(layout, batch, groups)
    return window_sum(A, axes, layer.filter_shape, layer.step, layer.padding, True) / layer.filter_size


def pool_mean(A, layout: Layout, batch: int, layer, groups: int | None = None):
    """Average pooling of every position group (independent offsets), neural-tangents' normalisation."""
    axes = group_axes(layout, batch, groups)
    total = window_sum(A, axes, layer.window_shape, layer.step, layer.padding, False)
    if layer.normalize_edges and layer.padding == "SAME":
        count = window_sum(np.ones(layout.shape), (tuple(range(layout.rank)),), layer.window_shape, layer.step,
                           "SAME", True)
        shape = (1,) * batch + count.shape * len(axes)
        norm = count
        for _ in range(len(axes) - 1):
            norm = np.multiply.outer(norm, count)
        return total / norm.reshape(shape)
    return total / math.prod(layer.window_shape) ** len(axes)


# ---------------------------------------------------------------------- the output's spatial axes
@dataclass(frozen=True)
class _Axes:
    """A value's spatial shape (``()``: a vector) and whether neural-tangents stores it reversed."""

    shape: tuple
    reversed: bool = False


def output_spatial(description: Layer, shape: tuple) -> tuple[tuple, bool]:
    """The spatial shape of the output of ``description`` on images of spatial shape ``shape`` (``()``: the
    output is a vector), and whether neural-tangents 0.6.5 returns its covariances with the spatial dimensions
    in reverse order (its ``Kernel.is_reversed``): every ``Conv`` reverses the order (neural-tangents
    transposes the kernel to convolve over its last axes), ``FanInSum`` / ``FanInConcat`` take the order of
    the majority of their inputs (a tie: the original order), ``Flatten`` / ``GlobalAvgPool`` end the spatial
    axes, every other layer keeps them.  A layer that does not fit its input is left to the kernel's own
    evaluation to report (its shape is kept here)."""
    out = walk(description, _Axes(tuple(shape)), _axes_rule)
    if isinstance(out, tuple):  # a list of outputs: refused by the evaluation
        return (), False
    return out.shape, out.reversed


@functools.singledispatch
def _axes_rule(layer: Layer, value, path):
    return value


@_axes_rule.register(Conv)
@_axes_rule.register(AvgPool)
def _(layer, value, path):
    if len(value.shape) != layer.rank:
        return value
    try:
        shape = layer.output_size(value.shape)
    except ValueError:
        return value
    return _Axes(shape, value.reversed != isinstance(layer, Conv))


@_axes_rule.register(GlobalAvgPool)
@_axes_rule.register(Flatten)
def _(layer, value, path):
    return _Axes(())


@_axes_rule.register(FanInSum)
@_axes_rule.register(FanInConcat)
def _(layer, values, path):
    return _Axes(values[0].shape, 2 * sum(v.reversed for v in values) > len(values))


def neural_tangents_order(A, batch: int, rank: int, reversed_: bool = False):
    """A full-layout covariance ``A`` (``batch`` leading axes, then p = (h, w) and p' = (h', w')) in
    neural-tangents' layout: ``(*batch, H, H', W, W')``, or ``(*batch, W, W', H, H')`` when ``reversed_``
    (1-D images: ``(*batch, W, W')`` either way).  A view (no copy)."""
    if rank == 1:
        return A
    b = tuple(range(batch))
    axes = (batch + 1, batch + 3, batch, batch + 2) if reversed_ else (batch, batch + 2, batch + 1, batch + 3)
    return A.transpose(b + axes)


def require_vector_output(description: Layer, X, what: str) -> None:
    """ValueError naming ``what`` if the output of ``description`` at inputs X (images (N, *S, C)) keeps spatial
    axes: for computations that hold (N1, N2) kernels only."""
    X = np.asarray(X)
    if X.ndim > 2:
        shape = output_spatial(description, X.shape[1:-1])[0]
        if shape:
            raise ValueError(f"{what} needs a network with a vector output; this network's output keeps its "
                             f"spatial axes ({shape} positions, kernels per pair of positions): end it with "
                             "Flatten() or GlobalAvgPool()")
