r"""A matrix computed tile by tile as Dask tasks, from a plain tile function.

``tiled(tile, X1, X2, chunks=T, names=("nngp", "ntk"))`` cuts the (N1, N2) output into tiles of T x T entries
(the last row and column of tiles smaller: any N and T).  Each tile is one task, ``tile(A, B)`` on its row
block A = X1[r0:r1] and column block B = X2[c0:c1], which the task carries (a worker needs nothing but the
package and the pickled tile function); ``tile`` returns a mapping with an (len(A), len(B)) array per name
and optionally ``"quadrature_error"`` (a float; the run reports the largest).  With X2 = None (a symmetric
matrix) only tiles I <= J are tasks: the diagonal ones as ``tile(A, None)`` (A against itself), the others
once, written at (I, J) and transposed at (J, I).

Where the tiles go (:mod:`.store`): a resumable Zarr store (``store``), shared memory on this machine (worker
processes that see this machine's files: a local cluster, the ``processes`` scheduler), or this process (a
remote cluster, ``threads``, ``synchronous``).  Where the tasks run: ``scheduler`` and ``workers`` (:mod:`.schedulers`).  Each task runs
with ``threads_per_task`` Numba threads (default 1: the parallelism is Dask's).

Error model: none of its own.  Each entry is the tile function's value for its row and column inputs; the
matrix equals one call ``tile(X1, X2)`` exactly when the tile function's entries do not depend on the other
rows and columns of its blocks.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from dataclasses import dataclass, field

import numpy as np

from .schedulers import require, runner
from .store import FORMAT, MemorySink, ZarrSink, create_or_check, inputs_sha256, sink_for

__all__ = ["Tiling", "Tiled", "tiled", "run_tile", "check_chunks"]


@dataclass(frozen=True)
class Tiling:
    """Tiles of ``size`` x ``size`` entries over an (n1, n2) matrix; ``symmetric``: only tiles I <= J are tasks.

    Parameters
    ----------
    n1, n2 : int
        The matrix's shape.
    size : int
        The tile size.
    symmetric : bool
        Only the upper tiles are computed (the lower ones are their transposes).

    Examples
    --------
    A 5 x 5 symmetric matrix in tiles of 2: a 3 x 3 grid of which the 3 (3 + 1) / 2 = 6 upper tiles are tasks,
    the last tile row covering rows 4..5:

    >>> t = Tiling(5, 5, 2, True)
    >>> t.grid, len(t.tasks()), t.rows(2), t.cols(1)
    ((3, 3), 6, (4, 5), (2, 4))
    >>> len(Tiling(5, 3, 2, False).tasks())      # 3 x 2 tiles
    6
    """

    n1: int
    n2: int
    size: int
    symmetric: bool

    def __post_init__(self):
        for name, low in (("n1", 0), ("n2", 0), ("size", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"Tiling {name} must be an integer >= {low}; got {value!r}")
        if self.symmetric and self.n1 != self.n2:
            raise ValueError(f"a symmetric Tiling needs a square matrix; got {self.n1} x {self.n2}")

    @property
    def grid(self) -> tuple:
        """(row tiles, column tiles)."""
        return math.ceil(self.n1 / self.size), math.ceil(self.n2 / self.size)

    def rows(self, i: int) -> tuple:
        """The row range [start, stop) of tile row ``i``, a tuple of two ints (see :class:`Tiling`)."""
        return self._span(i, self.n1)

    def cols(self, j: int) -> tuple:
        """The column range [start, stop) of tile column ``j``, a tuple of two ints (see :class:`Tiling`)."""
        return self._span(j, self.n2)

    def _span(self, k: int, n: int) -> tuple:
        """[k size, min(n, (k + 1) size)): the k-th range of ``size`` of n indices."""
        return k * self.size, min(n, (k + 1) * self.size)

    def tasks(self) -> list:
        """Tile indices (I, J) computed as tasks, in row-major order."""
        b1, b2 = self.grid
        return [(i, j) for i in range(b1) for j in range(i if self.symmetric else 0, b2)]


@dataclass
class Tiled:
    """The matrices of a tiled run: ``arrays`` (name -> numpy array, or zarr array of the store) and ``info``
    (``tiles``, ``computed``, ``skipped``, ``tile_seconds`` (summed over tasks), ``write_seconds`` (summed
    time handing tiles to the sink), ``seconds`` (wall), ``scheduler``, ``quadrature_error``, ``store``,
    ``tile``)."""

    arrays: dict
    info: dict = field(default_factory=dict)


def check_chunks(chunks) -> int:
    """``chunks`` as a positive tile size, else ValueError."""
    if isinstance(chunks, bool) or not isinstance(chunks, (int, np.integer)) or chunks < 1:
        raise ValueError(f"chunks must be a positive integer (the tile size); got {chunks!r}")
    return int(chunks)


def run_tile(tile, A, B, i, j, bounds, mirror, names, sink, dtype, threads):
    """One task: ``tile(A, B)`` for tile (i, j) at ``bounds = (r0, r1, c0, c1)``, handed to ``sink``; returns a
    summary (``tile``, ``seconds`` in the tile function, ``write_seconds`` handing it to the sink, ``quadrature_error``,
    ``pid``, and ``arrays`` when the sink sends them back)."""
    t0 = time.perf_counter()
    if threads:
        import numba

        before = numba.get_num_threads()
        numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
        try:
            out = tile(A, B)
        finally:
            numba.set_num_threads(before)
    else:
        out = tile(A, B)
    seconds = time.perf_counter() - t0
    tiles = {n: np.asarray(out[n]).astype(dtype, copy=False) for n in names}
    summary = {"tile": (i, j), "seconds": seconds, "quadrature_error": float(out.get("quadrature_error") or 0.0),
               "pid": os.getpid()}
    t1 = time.perf_counter()
    back = sink.write(tiles, i, j, bounds, mirror)
    summary["write_seconds"] = time.perf_counter() - t1
    if back is not None:
        summary["arrays"] = back
    return summary


def tiled(tile, X1, X2=None, *, chunks, names=("nngp", "ntk"), store=None, meta=None, scheduler=None,
          workers=None, progress=True, dtype=np.float64, threads_per_task=1, on_tile=None, warm=True,
          desc="kernel") -> Tiled:
    """The (N1, N2) matrices ``names`` of ``tile`` over X1 x X2 (None: X1 x X1, symmetric), as tiles of
    ``chunks`` x ``chunks`` entries computed as Dask tasks (module docstring).

    ``store``: a Zarr directory (created, or resumed when it holds the same run; ``meta``: JSON attributes
    that identify the run beside the tile size, shape, names, dtype and the inputs' SHA-256), None: numpy
    arrays.  ``warm``: call ``tile(X1[:1], None)`` here first when the workers share this machine (a
    compiled tile function then loads from Numba's disk cache in the workers).  ``progress``: a bar over the
    tiles (:func:`ntk_theory.progress.progress_bar`).  ``on_tile``: called here with each tile's summary."""
    size = check_chunks(chunks)
    dtype = np.dtype(dtype)
    if dtype not in (np.float64, np.float32):
        raise ValueError(f"dtype must be float64 or float32; got {dtype}")
    names = tuple(names)
    require("dask", "distributed", *(("zarr",) if store is not None else ()))
    symmetric = X2 is None
    tiling = Tiling(len(X1), len(X1) if symmetric else len(X2), size, symmetric)
    shape = (tiling.n1, tiling.n2)
    all_tiles = tiling.tasks()
    sha = inputs_sha256(X1, X2)
    group = None
    pending = all_tiles
    if store is not None:
        store = os.fspath(store)
        attrs = {"format": FORMAT, **(meta or {}), "shape": list(shape), "tile": size, "symmetric": symmetric,
                 "get": list(names), "dtype": dtype.name, "inputs_sha256": sha}
        group = create_or_check(store, attrs, names, shape, size, tiling.grid, dtype, X1, X2)
        done = group["done"][:]
        pending = [t for t in all_tiles if not done[t]]
    run = runner(scheduler, workers) if pending else None
    sink = MemorySink()
    try:
        sink = ZarrSink(store) if store is not None else sink_for(run, names, shape, dtype)
        out = {n: np.empty(shape, dtype=dtype) for n in names} if isinstance(sink, MemorySink) else None
        info = _run(tile, X1, X2, tiling, pending, all_tiles, names, sink, dtype, threads_per_task, run, out,
                    progress, on_tile, warm, f"{desc} {shape[0]} x {shape[1]}", sha)
    except BaseException:
        sink.discard()
        raise
    finally:
        if run is not None:
            sink.unmap_in(run)
            run.close()
    info["store"] = store
    if group is not None and int(np.sum(group["done"][:] == 0)):
        raise RuntimeError(f"{store}: tiles still missing after the run (run the same call again to resume)")
    arrays = out if out is not None else sink.result()
    return Tiled(arrays, info)


def _run(tile, X1, X2, tiling, pending, all_tiles, names, sink, dtype, threads, run, out, progress, on_tile, warm,
         desc, sha) -> dict:
    from ..progress import progress_bar

    token = sha[:12] + "-" + uuid.uuid4().hex[:12]  # a fresh key per call
    calls = []
    for (i, j) in pending:
        r0, r1 = tiling.rows(i)
        c0, c1 = tiling.cols(j)
        diagonal = tiling.symmetric and i == j
        A = X1[r0:r1]
        B = None if diagonal else (X1 if tiling.symmetric else X2)[c0:c1]
        mirror = tiling.symmetric and i != j
        calls.append((f"tile-{token}-{i}-{j}",
                      (tile, A, B, i, j, (r0, r1, c0, c1), mirror, names, sink, dtype, threads)))
    computed, stats = [], {"seconds": 0.0, "write": 0.0, "err": 0.0}
    t0 = time.perf_counter()
    bar = progress_bar(total=len(all_tiles), initial=len(all_tiles) - len(pending), desc=desc, unit="tile",
                       enabled=progress)

    def on_result(summary):
        i, j = summary["tile"]
        computed.append((i, j))
        stats["seconds"] += summary["seconds"]
        stats["write"] += summary["write_seconds"]
        stats["err"] = max(stats["err"], summary["quadrature_error"])
        arrays = summary.pop("arrays", None)
        if arrays is not None:
            r0, r1 = tiling.rows(i)
            c0, c1 = tiling.cols(j)
            for n, t in arrays.items():
                out[n][r0:r1, c0:c1] = t
                if tiling.symmetric and i != j:
                    out[n][c0:c1, r0:r1] = t.T
        bar.update(1)
        if on_tile is not None:
            on_tile(summary)

    try:
        if run is not None:
            if warm and run.same_machine and not run.in_process:
                tile(X1[:1], None)  # compiled (or loaded) once here: the workers then load Numba's disk cache
            run.run(calls, on_result, run_tile)
    finally:
        bar.close()
    return {"tiles": len(all_tiles), "computed": computed, "skipped": len(all_tiles) - len(pending),
            "tile_seconds": stats["seconds"], "write_seconds": stats["write"], "seconds": time.perf_counter() - t0,
            "scheduler": None if run is None else run.name, "quadrature_error": stats["err"], "tile": tiling.size}
