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

The tiling, the store, resuming and the schedulers are :mod:`ntk_theory.blocks` (:func:`ntk_theory.blocks.tiled`);
this module supplies the tile function of a description (:func:`ntk_theory.distributed.tiles.tile_evaluator`).
Without a store, tiles computed by worker processes on this machine are written to shared memory (no copy
through the scheduler); from a remote cluster they come back with the task's result.

Error model: that of the compiled kernel (:mod:`ntk_theory.codegen.graph`, :mod:`ntk_theory.codegen.convolution`);
the blocked matrix equals the in-memory one entry for entry (tiles are the same program on the same inputs;
up to BLAS's rounding of the input Gram products in thin tiles, :mod:`ntk_theory.distributed.tiles`).
``info["quadrature_error"]``: the largest estimate of any tile (0 for closed forms).
"""

from __future__ import annotations

import numpy as np

from ..blocks import FORMAT, DistributedUnavailable, StoreMismatch, Tiling, open_store, require, tiled
from ..recursions import KernelResult
from ..recursions.result import check_get
from ..recursions.spatial import require_vector_output
from .tiles import as_inputs, description_of, tile_evaluator

__all__ = ["blocked_kernel", "open_blocked", "Tiling", "DistributedUnavailable", "StoreMismatch", "require",
           "BlockedKernelResult", "FORMAT"]


class BlockedKernelResult(KernelResult):
    """A :class:`~ntk_theory.recursions.KernelResult` whose arrays may be zarr arrays on disk, and None for a
    quantity not requested.

    Parameters
    ----------
    nngp, ntk : ndarray, zarr array or None
        (N1, N2).
    info : dict
        The run's account (:func:`blocked_kernel`).
    get : tuple of str, default ('nngp', 'ntk')
        The quantities requested.

    Examples
    --------
    See :func:`blocked_kernel`.
    """

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n} {getattr(self, n).shape}" for n in self.get)
        where = f" in {self.info['store']}" if self.info.get("store") else ""
        return f"BlockedKernelResult({shapes}{where})"


def open_blocked(path) -> BlockedKernelResult:
    """The kernel in a Zarr store written by :func:`blocked_kernel` (or ``kernel_fn(..., chunks=, out=)``), as
    zarr arrays (read lazily); ValueError if the store is incomplete (tiles without a completion marker).

    Parameters
    ----------
    path : str or path-like
        The Zarr directory.

    Returns
    -------
    BlockedKernelResult

    Raises
    ------
    ValueError
        If the store is incomplete or not a blocked kernel.
    DistributedUnavailable
        Without zarr.

    Examples
    --------
    Reading back a store (its kernel compiled first, so not run as a doctest):

    >>> import numpy as np, tempfile
    >>> from ntk_theory.recursions import KernelRecursion
    >>> rec = KernelRecursion("relu", 2, C_W=2.0, C_b=0.0)
    >>> X = np.random.default_rng(0).standard_normal((5, 3))
    >>> path = tempfile.mkdtemp() + "/K.zarr"
    >>> _ = blocked_kernel(rec, X, chunks=2, store=path, scheduler="synchronous", progress=False)  # doctest: +SKIP
    >>> bool(np.allclose(open_blocked(path).ntk[:], rec(X).ntk))                                # doctest: +SKIP
    True
    """
    require("zarr")
    arrays, attrs = open_store(path)
    names = tuple(attrs["get"])
    return BlockedKernelResult(arrays.get("nngp"), arrays.get("ntk"), {"store": str(path)}, get=names)


def blocked_kernel(description_or_mlp, X1, X2=None, *, chunks, get=("nngp", "ntk"), store=None, scheduler=None,
                   workers=None, progress=True, dtype=np.float64, threads_per_task=1, on_tile=None) -> BlockedKernelResult:
    """NNGP and/or NTK (N1, N2) of a description (a ``stax`` network, a layer description, an MLP's
    ``CompiledKernel``/``KernelRecursion``, a ``CompiledGraphKernel``) at X1 (N1, d) (or images) and X2
    (default X1), as tiles of ``chunks`` x ``chunks`` entries computed as Dask tasks by the compiled kernel
    (module docstring).

    ``store``: a Zarr directory (the result's arrays are then zarr arrays on disk; the run resumes an
    existing store), None: numpy arrays in memory.  ``scheduler``/``workers``: where the tasks run (module
    docstring).  ``progress``: a bar over the tiles (:func:`ntk_theory.progress.progress_bar`).  ``dtype``:
    float64 or float32 for the stored result (arithmetic is float64).  ``on_tile``: called in this process with
    each finished tile's summary (``tile``, ``seconds``, ``quadrature_error``, ``pid``).
    ``info``: ``tiles`` (all), ``computed`` (tiles run by this call), ``skipped`` (found in the store),
    ``tile_seconds`` (summed task time), ``seconds`` (wall), ``scheduler``, ``quadrature_error``, ``store``.

    Parameters
    ----------
    description_or_mlp : Network, Layer, CompiledKernel, KernelRecursion or CompiledGraphKernel
    X1 : array_like
        (N1, d) or images.
    X2 : array_like, optional
        (N2, d); None: X1 (the symmetric path, upper tiles only).
    chunks : int
        The tile size.
    get : str or tuple of str, default ('nngp', 'ntk')
    store : str or path-like, optional
        A Zarr directory.
    scheduler : str or Client, optional
        ``"local"`` (a LocalCluster), ``"tcp://..."``, a ``distributed.Client``, or Dask's ``"threads"``,
        ``"processes"``, ``"synchronous"``.
    workers : int, optional
    progress : bool, default True
    dtype : {numpy.float64, numpy.float32}, default numpy.float64
    threads_per_task : int, default 1
    on_tile : callable, optional

    Returns
    -------
    BlockedKernelResult

    Raises
    ------
    DistributedUnavailable
        Without the ``distributed`` extra.
    StoreMismatch
        If ``store`` holds another kernel.
    ValueError
        If an argument is invalid.

    Examples
    --------
    The blocked kernel equals the in-memory one (the compiled kernel runs in each tile, so this is not run
    as a doctest; ``scheduler="synchronous"`` runs the tasks in this process):

    >>> import numpy as np
    >>> from ntk_theory.recursions import KernelRecursion
    >>> rec = KernelRecursion("relu", 2, C_W=2.0, C_b=0.0)
    >>> X = np.random.default_rng(0).standard_normal((5, 3))
    >>> K = blocked_kernel(rec, X, chunks=2, scheduler="synchronous", progress=False)   # doctest: +SKIP
    >>> bool(np.allclose(K.nngp, rec(X).nngp)), K.info["tiles"]                          # doctest: +SKIP
    (True, 6)
    """
    names = check_get(get)
    X1 = as_inputs(X1, "X1")
    X2 = None if X2 is None else as_inputs(X2, "X2", like=X1)
    evaluator = tile_evaluator(description_or_mlp, X1.ndim)
    description, _ = description_of(description_or_mlp)
    require_vector_output(description, X1, "a blocked kernel (tiles of an (N1, N2) kernel)")
    meta = {"description": repr(description), "evaluator": type(evaluator).__name__,
            "options": [list(o) for o in evaluator.options]}
    res = tiled(evaluator, X1, X2, chunks=chunks, names=names, store=store, meta=meta, scheduler=scheduler,
                workers=workers, progress=progress, dtype=dtype, threads_per_task=threads_per_task, on_tile=on_tile)
    arrays = {n: res.arrays.get(n) for n in ("nngp", "ntk")}
    return BlockedKernelResult(arrays["nngp"], arrays["ntk"], res.info, get=names)
