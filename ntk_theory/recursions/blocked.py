r"""Kernels computed tile by tile as Dask tasks: the ``chunks=`` path of
:func:`ntk_theory.recursions.network.kernel` and of ``stax`` ``kernel_fn``.

:func:`blocked_result` runs a tile function (:class:`InterpreterTiles`, the NumPy interpreter of
:func:`ntk_theory.recursions.graph.kernel`; or a compiled one, :mod:`ntk_theory.codegen.tiles`) over tiles of
``chunks`` x ``chunks`` entries with :func:`ntk_theory.blocks.tiled` and returns a
:class:`~ntk_theory.recursions.KernelResult`: numpy arrays, or with ``out`` the zarr arrays of a resumable
store.  Dask, distributed (and zarr for ``out``) are imported only here, when ``chunks`` is given; without them
:class:`ntk_theory.blocks.DistributedUnavailable` says in one line to install ``ntk-theory[distributed]``.

Error model: each tile is the tile function's kernel at its row and column inputs, so the result equals the
untiled evaluation by the same evaluator entry for entry, up to the rounding of the input Gram products
x_a . x_b / d, one matrix product per block, which BLAS may sum in another order for another block shape
(~1 ulp of x_a . x_b, carried through the layers: ~1e-15 relative).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..architecture import Layer
from ..blocks import tiled
from . import graph
from .result import KernelResult, check_get
from .spatial import require_vector_output

__all__ = ["InterpreterTiles", "blocked_result", "as_tile"]


@dataclass(frozen=True)
class InterpreterTiles:
    """Tiles of the NumPy interpreter :func:`ntk_theory.recursions.graph.kernel` of a description."""

    evaluated_by = "ntk_theory.recursions.graph"

    description: Layer
    get: tuple = ("nngp", "ntk")
    options: tuple = ()  # (name, value) keyword arguments of graph.kernel, e.g. (("diagonal_spatial", True),)

    def result(self, A, B=None) -> KernelResult:
        """The kernel at A, B (None: A) by :func:`ntk_theory.recursions.graph.kernel`."""
        return graph.kernel(self.description, A, B, get=self.get, **dict(self.options))

    def __call__(self, A, B=None) -> dict:
        return as_tile(self.result(A, B))


def as_tile(result: KernelResult) -> dict:
    """A kernel result as a tile: ``{"nngp", "ntk", "quadrature_error"}`` (the largest estimate, 0 if none)."""
    err = result.info.get("quadrature_error")
    return {"nngp": result.nngp, "ntk": result.ntk, "quadrature_error": float(np.max(err)) if err is not None and np.size(err) else 0.0}


def blocked_result(tile, X1, X2=None, *, get=("nngp", "ntk"), chunks, scheduler=None, out=None, workers=None,
                   progress=None, dtype=np.float64, threads_per_task=1, warm=True) -> KernelResult:
    """The kernel of ``tile`` (a tile function with ``description`` and ``options``) at X1, X2 (None: X1) as
    tiles of ``chunks`` x ``chunks`` entries computed as Dask tasks on ``scheduler`` (None or ``"local"``: a
    LocalCluster started for the call; ``"processes"``, ``"threads"``, ``"synchronous"``; an address
    ``"tcp://host:port"``; a ``distributed.Client``), into memory or the Zarr store ``out`` (resumed when it
    holds the same kernel).  ``info``: that of :func:`ntk_theory.blocks.tiled`."""
    names = check_get(get)
    X1 = graph.image_inputs(X1, "X1")[0]
    X2 = None if X2 is None else graph.image_inputs(X2, "X2", like=X1)[0]
    require_vector_output(tile.description, X1, "chunks= (tiles of an (N1, N2) kernel)")
    meta = {"description": repr(tile.description), "evaluator": type(tile).__name__,
            "options": [list(o) for o in tile.options]}
    res = tiled(tile, X1, X2, chunks=chunks, names=names, store=out, meta=meta, scheduler=scheduler,
                workers=workers, progress=progress, dtype=dtype, threads_per_task=threads_per_task, warm=warm)
    arrays = {n: res.arrays.get(n) for n in ("nngp", "ntk")}
    return KernelResult(arrays["nngp"], arrays["ntk"], res.info, get=names)
