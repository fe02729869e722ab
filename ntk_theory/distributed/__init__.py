r"""The toolkit's heavy work as Dask tasks: blocked kernel matrices (in memory or in a resumable Zarr store),
kernel regression from a blocked kernel (blocked Cholesky, Nystrom-preconditioned conjugate gradients) and
the four-point work units of the finite-width tensors.

Dask, distributed and zarr are an optional extra (``pip install "ntk-theory[distributed]"``), imported only
when a function here runs; without them every other part of the toolkit runs in-process, and these
functions raise :class:`DistributedUnavailable` in one line.

- :func:`blocked_kernel` (:mod:`.blocked`): NNGP/NTK tiles as tasks, ``scheduler`` local / address / Client
  (the tile function of a description on the scheduling core :func:`ntk_theory.blocks.tiled`, which
  ``kernel(..., chunks=)`` and ``stax`` ``kernel_fn(..., chunks=)`` use as well).
- :func:`kernel_regression`, :func:`conjugate_gradient`, :class:`NystromPreconditioner` (:mod:`.regression`).
- :func:`finite_width_tensors`, :func:`dask_map` (:mod:`.workunits`): the finite-width tensors' four-point
  input sets as tasks (a ``map`` for ``FiniteWidthRecursion.tensors``).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "blocked_kernel": "blocked", "open_blocked": "blocked", "DistributedUnavailable": "blocked",
    "StoreMismatch": "blocked", "require": "blocked", "Tiling": "blocked", "BlockedKernelResult": "blocked",
    "tile_evaluator": "tiles",
    "kernel_regression": "regression", "conjugate_gradient": "regression", "NystromPreconditioner": "regression",
    "SingularKernel": "regression", "Posterior": "regression", "kernel_operator": "regression",
    "dask_map": "workunits", "DaskMap": "workunits", "finite_width_tensors": "workunits",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
