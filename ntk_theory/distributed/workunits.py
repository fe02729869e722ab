r"""The four-point input sets of the finite-width tensors as Dask tasks.

>>> with dask_map("local", chunks=8) as m:                                          # doctest: +SKIP
...     states = FiniteWidthRecursion("tanh", 3).tensors(X, map=m)
>>> states = finite_width_tensors("tanh", X, depth=3, scheduler=client, chunks=8)   # doctest: +SKIP

The expensive part of the N-input finite-width recursions (:mod:`ntk_theory.finite_width.tensors`) is the
four-point Gaussian averages, integrated once per set of 1..4 distinct inputs (C(N,4) + ... + C(N,1) sets per
layer; :mod:`ntk_theory.numerics.fourpoint`).  Their integrator hands the sets it integrates numerically to a
``map(fn, chunks)`` callable; :class:`DaskMap` is that callable on Dask: it joins consecutive chunks into work
units of at least ``chunks`` sets (the integrator's order: sets of three or four variables first), runs each
unit as one task (``fn``, a picklable :class:`~ntk_theory.numerics.fourpoint.SetBatch`, sent to a cluster's
workers once per call, as a task's result that Dask recomputes if the worker holding it is lost) and splits the units' per-set arrays back.  Everything else of a layer (the starting
step of the integration and its update from the sets' results, the exact orthant route of piecewise-linear
activations, the block expansion that takes the sets of three and four inputs of smooth activations first
(:mod:`ntk_theory.numerics.pair_expansion`: about N^2 / 2 pair tables, then arithmetic per set), the two-point
tensors and the contractions) runs in the calling process: the tasks are the sets left to the nested quadrature
(those of one and two inputs, and any set the expansion does not accept).

``scheduler`` as in :mod:`.blocked`: ``"local"`` (a ``distributed.LocalCluster`` of ``workers`` processes,
started when the map is entered and closed when it is left), ``"processes"``, ``"threads"``,
``"synchronous"``, a scheduler address or a ``distributed.Client``.  A lost worker's tasks are rerun by
Dask's scheduler on the others.

Error model: that of the integrator.  A set's numbers depend only on the set, K and the integration
parameters, which the calling process fixes, so the tensors equal the in-process ones bit for bit (given the
same starting-step state of the activation's compiled kernel: its ``hz_hint``, which each call updates).
"""

from __future__ import annotations

import numpy as np

from ..blocks import require, runner

__all__ = ["DaskMap", "dask_map", "finite_width_tensors"]


def _apply(fn, index, sets):
    """One task: ``(index, fn(sets))``."""
    return index, fn(sets)


def _value(fn):
    """The task that holds the work unit's function on the cluster (a computed result, not scattered data,
    so the scheduler recomputes it on another worker when the worker holding it is lost)."""
    return fn


class DaskMap:
    """``map(fn, chunks) -> [fn(c) for c in chunks]`` with the chunks joined into Dask tasks of at least
    ``chunks`` sets each (module docstring); a context manager holding the scheduler between calls (one
    call per layer), or opened and closed per call when used outside a ``with`` block.

    Parameters
    ----------
    scheduler : str or Client, optional
        As :func:`~ntk_theory.distributed.blocked_kernel`.
    chunks : int, optional
        At least this many sets per task (None: one chunk per task).
    workers : int, optional

    Raises
    ------
    ValueError
        If ``chunks`` is not a positive integer.
    DistributedUnavailable
        Without dask and distributed.

    Examples
    --------
    ``fn`` takes a chunk of set indices and returns arrays with one row per set; the chunks of a task are
    joined and the results split back:

    >>> import numpy as np
    >>> with DaskMap("synchronous", chunks=2) as m:
    ...     out = m(lambda idx: (idx * 10,), [[0, 1], [2], [3, 4, 5]])
    ...     units = m.units([[0, 1], [2], [3, 4, 5]])
    >>> [a.tolist() for (a,) in out], units, m.tasks
    ([[0, 10], [20], [30, 40, 50]], [[0], [1, 2]], 2)
    """

    def __init__(self, scheduler=None, *, chunks=None, workers=None):
        if chunks is not None and not (isinstance(chunks, (int, np.integer)) and chunks >= 1):
            raise ValueError(f"chunks must be a positive integer (sets per task) or None; got {chunks!r}")
        require("dask", "distributed")
        self.scheduler, self.chunks, self.workers = scheduler, chunks, workers
        self._runner = None
        self.tasks = 0

    def __enter__(self) -> "DaskMap":
        if self._runner is None:
            self._runner = runner(self.scheduler, self.workers)
        return self

    def __exit__(self, *exc) -> None:
        if self._runner is not None:
            self._runner.close()
            self._runner = None

    def units(self, chunks) -> list:
        """Consecutive chunks joined: a list of lists of chunk positions, each of at least ``self.chunks`` sets
        (the last one possibly fewer).

        Parameters
        ----------
        chunks : list of array_like
            Chunks of set indices.

        Returns
        -------
        list of list of int

        Examples
        --------
        See :class:`DaskMap`.
        """
        units, current, size = [], [], 0
        for i, c in enumerate(chunks):
            current.append(i)
            size += len(c)
            if self.chunks is None or size >= self.chunks:
                units.append(current)
                current, size = [], 0
        if current:
            units.append(current)
        return units

    def __call__(self, fn, chunks) -> list:
        chunks = [np.asarray(c, dtype=np.int64) for c in chunks]
        if not chunks:
            return []
        if self._runner is None:
            with self:
                return self(fn, chunks)
        units = self.units(chunks)
        run = self._runner
        target = fn
        client = getattr(run, "client", None)
        if client is not None:
            target = client.submit(_value, fn, pure=False)
        calls = [(f"fourpoint-sets-{id(chunks)}-{k}", (target, k, np.concatenate([chunks[i] for i in u])))
                 for k, u in enumerate(units)]
        results = {}
        run.run(calls, lambda r: results.__setitem__(r[0], r[1]), fn=_apply)
        self.tasks += len(calls)
        out = []
        for k, u in enumerate(units):
            part = results[k]
            start = 0
            for i in u:
                n = len(chunks[i])
                out.append(tuple(a[start:start + n] for a in part))
                start += n
        return out


def dask_map(scheduler=None, *, chunks=None, workers=None) -> DaskMap:
    """A :class:`DaskMap` for ``FiniteWidthRecursion.tensors(X, map=...)`` (and the ``map`` of
    :func:`ntk_theory.gaussian.fourpoint.four_point_moments`); use it in a ``with`` block.

    Parameters
    ----------
    scheduler : str or Client, optional
    chunks : int, optional
    workers : int, optional

    Returns
    -------
    DaskMap

    Examples
    --------
    >>> with dask_map("synchronous") as m:
    ...     [a.tolist() for (a,) in m(lambda idx: (idx + 1,), [[0, 1], [2]])]
    [[1, 2], [3]]
    """
    return DaskMap(scheduler, chunks=chunks, workers=workers)


def finite_width_tensors(recursion_or_activation, X, *, depth=None, tol: float = 1e-10, scheduler=None,
                         chunks=None, workers=None, progress=None, **options) -> list:
    """The states of :meth:`ntk_theory.finite_width.FiniteWidthRecursion.tensors` at X (N, n_0), layers
    1 .. L+1, with the four-point input sets as Dask tasks (module docstring).

    ``recursion_or_activation``: a :class:`~ntk_theory.finite_width.FiniteWidthRecursion`, or an activation
    with ``depth`` and the recursion's keyword ``options`` (``C_W``, ``C_b``, ``param``, ``widths``).
    ``chunks``: sets per task (None: the integrator's chunks, one set of three or four variables or 16
    smaller ones per task).  ``scheduler``/``workers`` as in :mod:`.blocked`.

    Parameters
    ----------
    recursion_or_activation : FiniteWidthRecursion or str
    X : array_like
        (N, n_0).
    depth : int, optional
        With an activation.
    tol : float, default 1e-10
    scheduler : str or Client, optional
    chunks : int, optional
    workers : int, optional
    progress : bool or None, default None
    **options
        ``C_W``, ``C_b``, ``param``, ``widths`` of the recursion.

    Returns
    -------
    list
        The per-layer states, as ``FiniteWidthRecursion.tensors``.

    Raises
    ------
    ValueError
        Without ``depth`` for an activation, or with options for a recursion.

    Examples
    --------
    Equal to the in-process tensors (the recursion's derivation is not run as a doctest):

    >>> import numpy as np
    >>> from ntk_theory.finite_width import FiniteWidthRecursion
    >>> X = np.array([[1.0, 0.0], [0.6, 0.8]])
    >>> states = finite_width_tensors("tanh", X, depth=2, C_W=1.5, scheduler="synchronous",
    ...                               progress=False)                                       # doctest: +SKIP
    >>> local = FiniteWidthRecursion("tanh", 2, C_W=1.5).tensors(X, progress=False)        # doctest: +SKIP
    >>> bool(np.array_equal(states[-1].V, local[-1].V))                                        # doctest: +SKIP
    True
    """
    from ..finite_width import FiniteWidthRecursion

    rec = recursion_or_activation
    if not isinstance(rec, FiniteWidthRecursion):
        if depth is None:
            raise ValueError("pass depth= (and C_W=, C_b=) with an activation, or a FiniteWidthRecursion")
        rec = FiniteWidthRecursion(rec, depth, **options)
    elif depth is not None or options:
        raise ValueError("depth= and the recursion's options go with an activation, not a FiniteWidthRecursion")
    with dask_map(scheduler, chunks=chunks, workers=workers) as m:
        return rec.tensors(X, tol=tol, progress=progress, map=m)
