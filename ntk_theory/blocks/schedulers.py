r"""Where tasks run: Dask's local schedulers, a ``distributed`` cluster, or a cluster started for the call.

:func:`runner` turns a ``scheduler`` value into a task runner with ``run(calls, on_result, fn)``: each call
``(key, args)`` becomes the task ``fn(*args)`` named ``key``; ``on_result`` is called in this process with
each task's result as it finishes.  ``sees(path)``: whether every worker sees a file of this machine (then
tiles can be handed over in shared memory).  ``scheduler``:

- ``None`` or ``"local"``: a ``distributed.LocalCluster`` of ``workers`` (default: one per core)
  single-threaded worker processes on this machine, started by :func:`runner` and closed by ``close()``;
- ``"processes"``, ``"threads"``, ``"synchronous"``: Dask's local schedulers (no cluster);
- ``"tcp://host:port"`` (any address with ``://``): a running cluster; a ``distributed.Client`` as is.

Dask, distributed and zarr are an optional extra: :func:`require` imports them or raises
:class:`DistributedUnavailable` in one line naming ``ntk-theory[distributed]``.  A lost worker's tasks are
rerun by Dask's scheduler on the others.
"""

from __future__ import annotations

import importlib
import logging
import os

__all__ = ["DistributedUnavailable", "require", "runner", "ClusterRunner", "LocalRunner", "SCHEDULER_NAMES"]

#: Dask's local schedulers (no cluster)
SCHEDULER_NAMES = ("processes", "threads", "synchronous")


class DistributedUnavailable(ImportError):
    """Dask, distributed or zarr is not installed.

    Examples
    --------
    >>> try:
    ...     require("dask", "a_module_that_is_not_installed")
    ... except DistributedUnavailable as exc:
    ...     print(exc)
    the distributed path needs dask, distributed and zarr (a_module_that_is_not_installed is missing): install ntk-theory[distributed]
    """


def require(*names):
    """Import and return the optional modules (default dask, distributed, zarr), or raise
    :class:`DistributedUnavailable` in one line naming the extra to install.

    Parameters
    ----------
    *names : str
        Module names (default ``"dask", "distributed", "zarr"``).

    Returns
    -------
    tuple of module

    Raises
    ------
    DistributedUnavailable
        If one is not installed.

    Examples
    --------
    >>> (da,) = require("dask.array")
    >>> da.__name__
    'dask.array'
    """
    names = names or ("dask", "distributed", "zarr")
    try:
        return tuple(importlib.import_module(n) for n in names)
    except ImportError as exc:
        raise DistributedUnavailable(f"the distributed path needs dask, distributed and zarr ({exc.name} is missing): "
                                     "install ntk-theory[distributed]") from None


class ClusterRunner:
    """Tasks on a ``distributed`` cluster: submitted at once, results handled as they complete.
    ``cluster``: a LocalCluster started for this runner (closed with it; its workers share this machine)."""

    def __init__(self, client, cluster=None):
        self.client, self.cluster = client, cluster
        self.same_machine = cluster is not None  # workers share this machine's memory and Numba disk cache
        self.in_process = False
        self.name = f"distributed {client.scheduler.address}"

    def sees(self, path: str) -> bool:
        """Whether every worker of the cluster sees the file ``path`` (workers on this machine do)."""
        if self.same_machine:
            return True
        try:
            return all(self.client.run(os.path.exists, path).values())
        except Exception:  # noqa: BLE001 - a worker that cannot answer does not see it
            return False

    def everywhere(self, fn, *args) -> None:
        """``fn(*args)`` in every worker process (best effort: a lost worker is skipped)."""
        try:
            self.client.run(fn, *args)
        except Exception:  # noqa: BLE001 - cleanup only; a worker that cannot answer has nothing to clean
            pass

    def run(self, calls, on_result, fn) -> None:
        from distributed import as_completed

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


class LocalRunner:
    """Tasks on one of Dask's local schedulers (``processes``, ``threads``, ``synchronous``); results handled
    as each task finishes (a scheduler callback in this process)."""

    def __init__(self, name: str, workers=None):
        self.scheduler, self.workers = name, workers
        self.same_machine = True
        self.in_process = name != "processes"  # tasks run in this process (threads share its memory)

    @property
    def name(self) -> str:
        return f"dask {self.scheduler}"

    def sees(self, path: str) -> bool:
        """True: the tasks run in processes of this machine."""
        return True

    def everywhere(self, fn, *args) -> None:
        """Nothing: the ``processes`` scheduler's worker processes end with each run."""

    def run(self, calls, on_result, fn) -> None:
        import dask
        from dask.callbacks import Callback

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


def local_cluster(workers=None) -> ClusterRunner:
    """A :class:`ClusterRunner` on a LocalCluster of ``workers`` (default: one per core) single-threaded
    worker processes."""
    from distributed import Client, LocalCluster

    n = workers or os.cpu_count() or 1
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=logging.ERROR)
    return ClusterRunner(Client(cluster), cluster)


def runner(scheduler=None, workers=None):
    """The task runner of a ``scheduler`` value (module docstring); ValueError for an unknown one."""
    require("dask", "distributed")
    if scheduler is None or (isinstance(scheduler, str) and scheduler == "local"):
        return local_cluster(workers)
    if isinstance(scheduler, str):
        if scheduler in SCHEDULER_NAMES:
            return LocalRunner(scheduler, workers)
        if "://" in scheduler:
            from distributed import Client

            return ClusterRunner(Client(scheduler))
        raise ValueError(f"scheduler must be 'local', 'processes', 'threads', 'synchronous', a scheduler address "
                         f"(tcp://host:port) or a distributed.Client; got {scheduler!r}")
    from distributed import Client

    if isinstance(scheduler, Client):
        return ClusterRunner(scheduler)
    raise ValueError(f"scheduler must be a name, an address or a distributed.Client; got {scheduler!r}")
