r"""Tile evaluators: one call of a compiled kernel on a row block x column block of inputs
(:mod:`ntk_theory.codegen.tiles`, chosen here by the object given and the input rank).

A tile evaluator is a small picklable value (the description and the compiled kernel's options) that a Dask
worker calls as ``evaluator(A, B)`` -> ``{"nngp", "ntk", "quadrature_error"}`` for row inputs A and column
inputs B, or ``evaluator(A)`` for the symmetric diagonal tile; its error model (entry for entry the
in-memory compiled kernel, up to BLAS's rounding of the input Gram products in thin tiles) is that of
:mod:`ntk_theory.codegen.tiles`.

:func:`tile_evaluator` dispatches on the object given (a layer description, a ``stax`` network, an MLP's
:class:`~ntk_theory.codegen.CompiledKernel` or :class:`~ntk_theory.recursions.KernelRecursion`, a
:class:`~ntk_theory.codegen.graph.CompiledGraphKernel`) and on the input rank (vectors (N, d): the graph
kernel; images (N, W, C) / (N, H, W, C): the convolutional kernel).
"""

from __future__ import annotations

import functools

import numpy as np

from ..architecture import Layer
from ..codegen.tiles import COMPILED_TILES, ConvTiles, GraphTiles

__all__ = ["GraphTiles", "ConvTiles", "tile_evaluator", "description_of", "as_inputs"]


@functools.singledispatch
def description_of(obj):
    """The layer description (and compiled-kernel options) behind ``obj``: ``(description, options)``."""
    inner = getattr(obj, "description", None)
    if isinstance(inner, Layer):
        return inner, {}
    raise TypeError(f"expected a layer description, a stax network or a compiled kernel; got {obj!r}")


@description_of.register
def _(obj: Layer):
    return obj, {}


def _register_compiled():
    from ..codegen import CompiledKernel
    from ..codegen.graph import CompiledGraphKernel

    @description_of.register(CompiledGraphKernel)
    def _(obj):
        return obj.description, {"tol": obj.tol, "max_order": obj.max_order}

    @description_of.register(CompiledKernel)
    def _(obj):
        return obj.graph.description, {"tol": obj.tol, "max_order": obj.max_order}


_register_compiled()


#: tile evaluator per input rank: vectors (N, d) and images (N, W, C), (N, H, W, C)
BY_RANK = COMPILED_TILES


def tile_evaluator(obj, rank: int):
    """The tile evaluator of ``obj`` (see :func:`description_of`) for inputs of ``rank`` axes.

    Parameters
    ----------
    obj : Network, Layer, CompiledKernel, KernelRecursion or CompiledGraphKernel
    rank : int
        Axes of the inputs: 2 for vectors (N, d), 3 or 4 for images.

    Returns
    -------
    object
        ``evaluator(A, B) -> {name: tile}`` (B None: the symmetric tile of A), picklable.

    Raises
    ------
    ValueError
        For another rank.

    Examples
    --------
    An MLP's recursion is evaluated through its description (compiled on first use: not run as a doctest):

    >>> import numpy as np
    >>> from ntk_theory.recursions import KernelRecursion
    >>> rec = KernelRecursion("relu", 2, C_W=2.0, C_b=0.0)
    >>> X = np.random.default_rng(0).standard_normal((4, 3))
    >>> ev = tile_evaluator(rec, 2)                                      # doctest: +SKIP
    >>> bool(np.allclose(ev(X[:2], X[2:])["ntk"], rec(X[:2], X[2:]).ntk))   # doctest: +SKIP
    True
    """
    description, options = description_of(obj)
    if rank not in BY_RANK:
        raise ValueError(f"inputs must be vectors (N, d) or images (N, W, C) / (N, H, W, C); got {rank} axes")
    return BY_RANK[rank](description, tuple(sorted(options.items())))


def as_inputs(X, name: str, like=None) -> np.ndarray:
    """``X`` checked as the compiled kernels check inputs (float64, finite, (N, d) or images)."""
    from ..recursions.graph import image_inputs

    return image_inputs(X, name, like=like)[0]
