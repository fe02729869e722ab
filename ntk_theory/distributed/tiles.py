r"""Tile evaluators: one call of a compiled kernel on a row block x column block of inputs.

A tile evaluator is a small picklable value (the description and the compiled kernel's options) that a Dask
worker calls as ``evaluator(A, B)`` -> ``(nngp, ntk, quadrature_error)`` for row inputs A and column inputs B,
or ``evaluator(A)`` for the symmetric diagonal tile (A against itself; the compiled kernels' symmetric path,
which computes the entries j > i once and mirrors them).  The worker builds (or loads from Numba's disk cache)
the compiled kernel once per process (:func:`ntk_theory.codegen.graph.compiled_graph_kernel`,
:func:`ntk_theory.codegen.convolution.kernel`).

Error model: a tile is the same compiled program on the same inputs as the in-memory evaluation, so the
blocked kernel equals the in-memory one entry for entry, except for the rounding of the input Gram products
x_a . x_b / d of vector inputs, which are one BLAS matrix product per tile: BLAS may sum a dot product in
another order for another block shape (always for 1-row or 1-column blocks, sometimes for thin blocks at large
d), a difference of ~1 ulp of x_a . x_b, carried through the layers (~1e-15 relative).  The convolutional
kernel forms its Gram products pair by pair, so its tiles are exact.  Entries of equal rows take the exact
diagonal in every tile where both rows occur.

:func:`tile_evaluator` dispatches on the object given (a layer description, a ``stax`` network, an MLP's
:class:`~ntk_theory.codegen.CompiledKernel` or :class:`~ntk_theory.recursions.KernelRecursion`, a
:class:`~ntk_theory.codegen.graph.CompiledGraphKernel`) and on the input rank (vectors (N, d): the graph
kernel; images (N, W, C) / (N, H, W, C): the convolutional kernel).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from ..architecture import Layer

__all__ = ["GraphTiles", "ConvTiles", "tile_evaluator", "description_of"]


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


@dataclass(frozen=True)
class GraphTiles:
    """Tiles of the compiled kernel of a description at vector inputs (N, d)."""

    description: Layer
    options: tuple = field(default=())

    def __call__(self, A, B=None):
        from ..codegen.graph import compiled_graph_kernel

        kern = compiled_graph_kernel(self.description, **dict(self.options))
        res = kern.evaluate(A, B)
        return res.nngp, res.ntk, float(res.info.get("quadrature_error") or 0.0)


@dataclass(frozen=True)
class ConvTiles:
    """Tiles of the compiled convolutional kernel of a serial description at images (N, W, C) / (N, H, W, C)."""

    description: Layer
    options: tuple = field(default=())

    def __call__(self, A, B=None):
        from ..codegen.convolution import kernel

        res = kernel(self.description, A, B)
        return res.nngp, res.ntk, 0.0


#: tile evaluator per input rank: vectors (N, d) and images (N, W, C), (N, H, W, C)
BY_RANK = {2: GraphTiles, 3: ConvTiles, 4: ConvTiles}


def tile_evaluator(obj, rank: int):
    """The tile evaluator of ``obj`` (see :func:`description_of`) for inputs of ``rank`` axes."""
    description, options = description_of(obj)
    if rank not in BY_RANK:
        raise ValueError(f"inputs must be vectors (N, d) or images (N, W, C) / (N, H, W, C); got {rank} axes")
    return BY_RANK[rank](description, tuple(sorted(options.items())))


def as_inputs(X, name: str, like=None) -> np.ndarray:
    """``X`` checked as the compiled kernels check inputs (float64, finite, (N, d) or images)."""
    from ..recursions.graph import image_inputs

    return image_inputs(X, name, like=like)[0]
