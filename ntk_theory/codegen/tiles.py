r"""Tile functions of the compiled kernels: ``tile(A, B) -> {"nngp", "ntk", "quadrature_error"}`` for the
tiled runs of :mod:`ntk_theory.blocks`.

A tile function is a small picklable value (the description and the compiled kernel's options) that a Dask
worker calls on a row block A and a column block B of inputs, or as ``tile(A, None)`` for a diagonal tile (A
against itself: the compiled kernels' symmetric path, entries j > i computed once and mirrored).  The
worker builds (or loads from Numba's disk cache) the compiled kernel once per process
(:func:`ntk_theory.codegen.graph.compiled_graph_kernel`, :func:`ntk_theory.codegen.convolution.kernel`).

Error model: a tile is the same compiled program on the same inputs as the in-memory evaluation, so the
tiled kernel equals the in-memory one entry for entry, except for the rounding of the input Gram products
x_a . x_b / d of vector inputs, which are one BLAS matrix product per tile: BLAS may sum a dot product in
another order for another block shape (always for 1-row or 1-column blocks, sometimes for thin blocks at large
d), a difference of ~1 ulp of x_a . x_b, carried through the layers (~1e-15 relative).  The convolutional
kernel forms its Gram products pair by pair, so its tiles are exact.  Entries of equal rows take the exact
diagonal in every tile where both rows occur.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..architecture import Layer
from ..recursions.blocked import as_tile

__all__ = ["GraphTiles", "ConvTiles", "COMPILED_TILES"]


@dataclass(frozen=True)
class _CompiledTiles:
    """The fields and the call shared by the compiled tile functions; ``result(A, B)`` is each one's kernel."""

    description: Layer
    options: tuple = field(default=())
    get: tuple = ("nngp", "ntk")

    def __call__(self, A, B=None) -> dict:
        return as_tile(self.result(A, B))


@dataclass(frozen=True)
class GraphTiles(_CompiledTiles):
    """Tiles of the compiled kernel of a description at vector inputs (N, d)."""

    evaluated_by = "ntk_theory.codegen.graph"

    def result(self, A, B=None):
        """The :class:`~ntk_theory.recursions.KernelResult` of the compiled graph kernel at A, B."""
        from .graph import compiled_graph_kernel

        return compiled_graph_kernel(self.description, **dict(self.options)).evaluate(A, B, get=self.get)


@dataclass(frozen=True)
class ConvTiles(_CompiledTiles):
    """Tiles of the compiled convolutional kernel of a serial description at images (N, W, C) / (N, H, W, C)."""

    evaluated_by = "ntk_theory.codegen.convolution"

    def result(self, A, B=None):
        """The :class:`~ntk_theory.recursions.KernelResult` of the compiled convolutional kernel at A, B."""
        from .convolution import kernel

        return kernel(self.description, A, B, get=self.get, **dict(self.options))


#: the compiled tile function per input rank: vectors (N, d) and images (N, W, C), (N, H, W, C)
COMPILED_TILES = {2: GraphTiles, 3: ConvTiles, 4: ConvTiles}
