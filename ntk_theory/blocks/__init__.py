r"""Matrices computed tile by tile as Dask tasks, from a plain tile function: the scheduling core under
``kernel(..., chunks=)``, ``stax`` ``kernel_fn(..., chunks=)`` and :mod:`ntk_theory.distributed`.

It imports no other package of the toolkit (only :mod:`ntk_theory.progress`), so every layer may call it;
what a tile is (which kernel, which evaluator) is the caller's tile function ``tile(A, B) -> {name: array}``.

- :func:`tiled` (:mod:`.tiled`): tiles as tasks, resumable Zarr store with completion markers, progress bar.
- :func:`runner`, :func:`require`, :class:`DistributedUnavailable` (:mod:`.schedulers`): where tasks run, and
  the optional extra (``pip install "ntk-theory[distributed]"``: dask, distributed, zarr), imported only when
  a tiled run starts.
- :func:`open_store`, :class:`StoreMismatch` (:mod:`.store`): reading a store; where tiles go.
"""

from .schedulers import DistributedUnavailable, require, runner
from .store import FORMAT, StoreMismatch, open_store
from .tiled import Tiled, Tiling, check_chunks, run_tile, tiled

__all__ = ["tiled", "Tiled", "Tiling", "check_chunks", "run_tile", "runner", "require", "DistributedUnavailable",
           "open_store", "StoreMismatch", "FORMAT"]
