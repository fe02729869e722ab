r"""Blocked NNGP/NTK matrices as Dask tasks, in memory or in a resumable Zarr store.

>>> res = blocked_kernel(stax.serial(stax.Dense(1), stax.Relu(), stax.Dense(1)), X, chunks=1000,
...                      store="K.zarr")                                           # doctest: +SKIP
>>> res.nngp[:10, :10]                         # a zarr array on disk (numpy without ``store``)  # doctest: +SKIP

The (N1, N2) output is cut into tiles of ``chunks`` x ``chunks`` entries (the last row and column of tiles
smaller: any N and tile size).  Each tile is one Dask task: one call of the compiled kernel
(:mod:`ntk_theory.distributed.tiles`) on its row block and column block of inputs, which the task carries
(no shared state but the description).  With X2 = None (a symmetric kernel) only tiles I <= J are computed:
the diagonal tiles by the compiled kernels' symmetric path, the upper tiles once and written to (I, J) and,
transposed, to (J, I).

``store`` (a directory path): a Zarr group with one float array per requested quantity (``nngp``, ``ntk``;
chunks = the tiles, uncompressed), the inputs ``X1`` (and ``X2``), and ``done``, a uint8 array with one
chunk per tile: a task writes its tile(s), then sets its marker(s).  A run on an existing store checks that
it holds the same kernel (description, inputs' SHA-256, shape, tile size, quantities, dtype; else
:class:`StoreMismatch`) and computes only the tiles without a marker, so an interrupted run (a killed
client, a lost machine) is resumed by running the same command again.  A tile rewritten by a retried task
(a worker lost mid-task) is written with the same bytes.

``scheduler``: ``"local"`` (default: a ``distributed.LocalCluster`` of ``workers`` single-threaded worker
processes on this machine, started and closed by the call), ``"processes"``, ``"threads"`` or
``"synchronous"`` (Dask's local schedulers, no cluster), a scheduler address (``"tcp://host:8786"``), or a
``distributed.Client``.  Each task runs the compiled kernel with ``threads_per_task`` Numba threads
(default 1: the parallelism is Dask's, one task per worker thread).  A lost worker's tasks are rerun by
Dask's scheduler on the others.

Error model: that of the compiled kernel (:mod:`ntk_theory.codegen.graph`, :mod:`ntk_theory.codegen.convolution`);
the blocked matrix equals the in-memory one entry for entry (tiles are the same program on the same inputs;
up to BLAS's rounding of the input Gram products in thin tiles, :mod:`ntk_theory.distributed.tiles`).
``info["quadrature_error"]``: the largest estimate of any tile (0 for closed forms).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import uuid
from dataclasses import dataclass

import numpy as np

from ..recursions import KernelResult
from ..recursions.result import check_get
from .tiles import as_inputs, description_of, tile_evaluator

__all__ = ["blocked_kernel", "open_blocked", "Tiling", "DistributedUnavailable", "StoreMismatch", "require",
           "compute_tile"]

FORMAT = "ntk-theory blocked kernel 1"


class DistributedUnavailable(ImportError):
    """Dask, distributed or zarr is not installed."""


class StoreMismatch(ValueError):
    """The Zarr store holds another kernel (other description, inputs, tiles or quantities)."""


def require(*names):
    """Import and return the optional modules (default dask, distributed, zarr), or raise
    :class:`DistributedUnavailable` in one line naming the extra to install."""
    import importlib

    names = names or ("dask", "distributed", "zarr")
    try:
        return tuple(importlib.import_module(n) for n in names)
    except ImportError as exc:
        raise DistributedUnavailable(f"the distributed path needs dask, distributed and zarr ({exc.name} is missing): "
                                     "install ntk-theory[distributed]") from None


class BlockedKernelResult(KernelResult):
    """A :class:`~ntk_theory.recursions.KernelResult` whose arrays may be zarr arrays on disk, and None for a
    quantity not requested."""

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n} {getattr(self, n).shape}" for n in self.get)
        where = f" in {self.info['store']}" if self.info.get("store") else ""
        return f"BlockedKernelResult({shapes}{where})"


# ---------------------------------------------------------------------- tiling
@dataclass(frozen=True)
class Tiling:
    """Tiles of ``size`` x ``size`` entries over an (n1, n2) matrix; ``symmetric``: only tiles I <= J are tasks."""

    n1: int
    n2: int
    size: int
    symmetric: bool

    @property
    def grid(self) -> tuple:
        return math.ceil(self.n1 / self.size), math.ceil(self.n2 / self.size)

    def rows(self, i: int) -> tuple:
        return i * self.size, min(self.n1, (i + 1) * self.size)

    def cols(self, j: int) -> tuple:
        return j * self.size, min(self.n2, (j + 1) * self.size)

    def tasks(self) -> list:
        """Tile indices (I, J) computed as tasks, in row-major order."""
        b1, b2 = self.grid
        return [(i, j) for i in range(b1) for j in range(i if self.symmetric else 0, b2)]


def _sha256(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        if a is not None:
            h.update(str(a.shape).encode())
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------- the task
def compute_tile(evaluator, A, B, i, j, bounds, mirror, names, store, dtype, threads):
    """One task: the tile (i, j) of rows ``A`` x columns ``B`` (None: A with itself, the symmetric path),
    ``bounds = (r0, r1, c0, c1)``; written to the Zarr group ``store`` (then its marker, and those of the
    mirrored tile (j, i) when ``mirror``) and summarised, or returned as arrays without a store."""
    import numba

    before = numba.get_num_threads()
    if threads:
        numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    t0 = time.perf_counter()
    try:
        nngp, ntk, err = evaluator(A) if B is None else evaluator(A, B)
    finally:
        numba.set_num_threads(before)
    seconds = time.perf_counter() - t0
    tiles = {"nngp": nngp, "ntk": ntk}
    summary = {"tile": (i, j), "seconds": seconds, "quadrature_error": err, "pid": os.getpid()}
    if store is None:
        summary["arrays"] = {n: tiles[n].astype(dtype, copy=False) for n in names}
        return summary
    import zarr

    group = zarr.open_group(store, mode="r+")
    r0, r1, c0, c1 = bounds
    for n in names:
        arr = group[n]
        arr[r0:r1, c0:c1] = tiles[n].astype(dtype, copy=False)
        if mirror:
            arr[c0:c1, r0:r1] = tiles[n].T.astype(dtype, copy=False)
    done = group["done"]
    done[i, j] = 1
    if mirror:
        done[j, i] = 1
    return summary


# ---------------------------------------------------------------------- schedulers
class _Distributed:
    """Tasks on a ``distributed`` cluster: submitted at once, results handled as they complete."""

    def __init__(self, client, cluster=None):
        self.client, self.cluster = client, cluster
        self.same_machine = cluster is not None  # workers share this machine's Numba disk cache
        self.name = f"distributed {client.scheduler.address}"

    def run(self, calls, on_result, fn=None) -> None:
        from distributed import as_completed

        fn = compute_tile if fn is None else fn
        futures = [self.client.submit(fn, *args, key=key, pure=False) for key, args in calls]
        try:
            for _, result in as_completed(futures, with_results=True):
                if isinstance(result, BaseException):
                    raise result
                on_result(result)
        finally:
            self.client.cancel([f for f in futures if not f.done()])

    def close(self) -> None:
        if self.cluster is not None:
            self.client.close()
            self.cluster.close()


class _Local:
    """Tasks on one of Dask's local schedulers (``processes``, ``threads``, ``synchronous``); results
    handled as each task finishes (a scheduler callback in this process)."""

    def __init__(self, name: str, workers=None):
        self.scheduler, self.workers = name, workers
        self.same_machine = True

    @property
    def name(self) -> str:
        return f"dask {self.scheduler}"

    def run(self, calls, on_result, fn=None) -> None:
        import dask
        from dask.callbacks import Callback

        fn = compute_tile if fn is None else fn
        tasks = [dask.delayed(fn, pure=False)(*args, dask_key_name=key) for key, args in calls]
        keys = {key for key, _ in calls}

        class Hook(Callback):
            def _posttask(self, key, result, dsk, state, worker_id):
                if key in keys:
                    on_result(result)

        options = {} if self.workers is None else {"num_workers": self.workers}
        with Hook():
            dask.compute(*tasks, scheduler=self.scheduler, **options)

    def close(self) -> None:
        pass


def _local_cluster(workers):
    import logging

    from distributed import Client, LocalCluster

    n = workers or os.cpu_count() or 1
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=logging.ERROR)
    return _Distributed(Client(cluster), cluster)


def runner(scheduler, workers=None):
    """The task runner of a ``scheduler`` value (module docstring)."""
    if scheduler is None or scheduler == "local":
        return _local_cluster(workers)
    if isinstance(scheduler, str):
        if scheduler in ("processes", "threads", "synchronous"):
            return _Local(scheduler, workers)
        if "://" in scheduler:
            from distributed import Client

            return _Distributed(Client(scheduler))
        raise ValueError(f"scheduler must be 'local', 'processes', 'threads', 'synchronous', a scheduler address "
                         f"(tcp://host:port) or a distributed.Client; got {scheduler!r}")
    from distributed import Client

    if isinstance(scheduler, Client):
        return _Distributed(scheduler)
    raise ValueError(f"scheduler must be a name, an address or a distributed.Client; got {scheduler!r}")


# ---------------------------------------------------------------------- the store
def _create_or_check(path, meta: dict, names, shape, tiling: Tiling, dtype, X1, X2):
    import zarr

    exists = os.path.exists(os.path.join(path, "zarr.json"))
    if exists:
        group = zarr.open_group(path, mode="r+")
        held = {k: group.attrs.get(k) for k in meta}
        if held != json.loads(json.dumps(meta)):
            diff = [k for k in meta if held.get(k) != json.loads(json.dumps(meta[k]))]
            raise StoreMismatch(f"{path} holds another kernel (differs in {', '.join(diff)}): use another path")
        return group
    group = zarr.open_group(path, mode="w")
    group.attrs.update(meta)
    for n in names:
        group.create_array(n, shape=shape, chunks=(tiling.size, tiling.size), dtype=dtype, fill_value=np.nan,
                           compressors=None)
    group.create_array("X1", data=X1)
    if X2 is not None:
        group.create_array("X2", data=X2)
    group.create_array("done", shape=tiling.grid, chunks=(1, 1), dtype="uint8", fill_value=0, compressors=None)
    return group


def open_blocked(path) -> BlockedKernelResult:
    """The kernel in a Zarr store written by :func:`blocked_kernel`, as zarr arrays (read lazily); ValueError
    if the store is incomplete (tiles without a completion marker)."""
    (zarr,) = require("zarr")
    group = zarr.open_group(path, mode="r")
    if group.attrs.get("format") != FORMAT:
        raise StoreMismatch(f"{path} is not a blocked kernel store of ntk-theory")
    missing = int(np.sum(group["done"][:] == 0))
    if missing:
        raise ValueError(f"{path} is incomplete: {missing} tiles missing (run the same blocked_kernel call again)")
    names = tuple(group.attrs["get"])
    arrays = {n: group[n] if n in names else None for n in ("nngp", "ntk")}
    return BlockedKernelResult(arrays["nngp"], arrays["ntk"], {"store": str(path)}, get=names)


# ---------------------------------------------------------------------- the blocked kernel
def blocked_kernel(description_or_mlp, X1, X2=None, *, chunks, get=("nngp", "ntk"), store=None, scheduler=None,
                   workers=None, progress=True, dtype=np.float64, threads_per_task=1, on_tile=None) -> BlockedKernelResult:
    """NNGP and/or NTK (N1, N2) of a description (a ``stax`` network, a layer description, an MLP's
    ``CompiledKernel``/``KernelRecursion``, a ``CompiledGraphKernel``) at X1 (N1, d) (or images) and X2
    (default X1), as tiles of ``chunks`` x ``chunks`` entries computed as Dask tasks (module docstring).

    ``store``: a Zarr directory (the result's arrays are then zarr arrays on disk; the run resumes an
    existing store), None: numpy arrays in memory.  ``scheduler``/``workers``: where the tasks run (module
    docstring).  ``progress``: a bar over the tiles (:func:`ntk_theory.progress.progress_bar`).  ``dtype``:
    float64 or float32 for the stored result (arithmetic is float64).  ``on_tile``: called in this process with
    each finished tile's summary (``tile``, ``seconds``, ``quadrature_error``, ``pid``).
    ``info``: ``tiles`` (all), ``computed`` (tiles run by this call), ``skipped`` (found in the store),
    ``tile_seconds`` (summed task time), ``seconds`` (wall), ``scheduler``, ``quadrature_error``, ``store``."""
    names = check_get(get)
    if isinstance(chunks, bool) or not isinstance(chunks, (int, np.integer)) or chunks < 1:
        raise ValueError(f"chunks must be a positive integer (the tile size); got {chunks!r}")
    dtype = np.dtype(dtype)
    if dtype not in (np.float64, np.float32):
        raise ValueError(f"dtype must be float64 or float32; got {dtype}")
    X1 = as_inputs(X1, "X1")
    X2v = None if X2 is None else as_inputs(X2, "X2", like=X1)
    evaluator = tile_evaluator(description_or_mlp, X1.ndim)
    description, _ = description_of(description_or_mlp)
    if store is not None:
        require("zarr")
    require("dask", "distributed")
    symmetric = X2v is None
    n2 = len(X1) if symmetric else len(X2v)
    tiling = Tiling(len(X1), n2, int(chunks), symmetric)
    shape = (tiling.n1, tiling.n2)
    meta = {"format": FORMAT, "description": repr(description), "evaluator": type(evaluator).__name__,
            "options": [list(o) for o in evaluator.options], "shape": list(shape), "tile": tiling.size,
            "symmetric": symmetric, "get": list(names), "dtype": dtype.name, "inputs_sha256": _sha256(X1, X2v)}
    all_tiles = tiling.tasks()
    if store is not None:
        store = os.fspath(store)
        group = _create_or_check(store, meta, names, shape, tiling, dtype, X1, X2v)
        done = group["done"][:]
        pending = [t for t in all_tiles if not done[t]]
        out = None
    else:
        group = None
        pending = all_tiles
        out = {n: np.empty(shape, dtype=dtype) for n in names}
    from ..progress import progress_bar

    token = meta["inputs_sha256"][:12] + "-" + uuid.uuid4().hex[:12]  # a fresh key per call
    calls = []
    for (i, j) in pending:
        r0, r1 = tiling.rows(i)
        c0, c1 = tiling.cols(j)
        diagonal = symmetric and i == j
        A = X1[r0:r1]
        B = None if diagonal else (X1 if symmetric else X2v)[c0:c1]
        mirror = symmetric and i != j
        calls.append((f"ntk-tile-{token}-{i}-{j}",
                      (evaluator, A, B, i, j, (r0, r1, c0, c1), mirror, names, store, dtype, threads_per_task)))
    computed, stats = [], {"seconds": 0.0, "err": 0.0}
    t0 = time.perf_counter()
    bar = progress_bar(total=len(all_tiles), initial=len(all_tiles) - len(pending), desc=f"kernel {shape[0]} x {shape[1]}",
                       unit="tile", enabled=progress)

    def on_result(summary):
        i, j = summary["tile"]
        computed.append((i, j))
        stats["seconds"] += summary["seconds"]
        stats["err"] = max(stats["err"], summary["quadrature_error"])
        if out is not None:
            r0, r1 = tiling.rows(i)
            c0, c1 = tiling.cols(j)
            for n, tile in summary.pop("arrays").items():
                out[n][r0:r1, c0:c1] = tile
                if symmetric and i != j:
                    out[n][c0:c1, r0:r1] = tile.T
        bar.update(1)
        if on_tile is not None:
            on_tile(summary)

    run = runner(scheduler, workers) if pending else None
    try:
        if run is not None:
            if run.same_machine:  # compile (or load) here once: the worker processes then load Numba's disk cache
                evaluator(X1[:1])
            run.run(calls, on_result)
    finally:
        bar.close()
        if run is not None:
            run.close()
    info = {"tiles": len(all_tiles), "computed": computed, "skipped": len(all_tiles) - len(pending),
            "tile_seconds": stats["seconds"], "seconds": time.perf_counter() - t0,
            "scheduler": None if run is None else run.name, "quadrature_error": stats["err"], "store": store,
            "tile": tiling.size}
    if group is not None:
        if int(np.sum(group["done"][:] == 0)):
            raise RuntimeError(f"{store}: tiles still missing after the run (run the same call again to resume)")
        arrays = {n: group[n] if n in names else None for n in ("nngp", "ntk")}
    else:
        arrays = {n: out.get(n) for n in ("nngp", "ntk")}
    return BlockedKernelResult(arrays["nngp"], arrays["ntk"], info, get=names)
