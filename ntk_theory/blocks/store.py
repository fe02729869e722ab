r"""Where tiles go: a resumable Zarr store, shared memory on this machine, or this process's memory.

A *sink* receives each finished tile (i, j) at rows r0:r1 and columns c0:c1 of every requested quantity, and
with ``mirror`` also its transpose at (j, i).  :func:`sink_for` chooses by what is asked and where the tasks run:

- :class:`ZarrSink` (``store`` given): a Zarr group with one float array per quantity (chunks = the tiles,
  uncompressed, NaN until written), the inputs ``X1`` (and ``X2``), and ``done``, a uint8 array with one
  chunk per tile: a task writes its tile(s), then sets its marker(s).  An existing store is checked against
  the identifying attributes of the run (else :class:`StoreMismatch`) and only tiles without a marker are
  computed, so an interrupted run is resumed by running it again.  A tile rewritten by a retried task is
  written with the same bytes.
- :class:`SharedSink` (no store, worker processes that see this machine's files): one file per quantity in shared memory
  (``/dev/shm`` when present, else the temporary directory), mapped by every task, which writes its tile
  there; nothing but a summary travels back, and the result maps the same pages (the file is unlinked).
  Chosen only when that directory has room for twice the result; else tiles travel as for a remote cluster.
- :class:`MemorySink` (no store; a remote cluster, or tasks in this process): the task returns its tile and
  this process places it.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import sys
import tempfile
import threading
import uuid
from dataclasses import dataclass

import numpy as np

__all__ = ["StoreMismatch", "FORMAT", "ZarrSink", "SharedSink", "MemorySink", "sink_for", "open_store",
           "inputs_sha256"]

#: the ``format`` attribute of every store
FORMAT = "ntk-theory blocked kernel 1"


class StoreMismatch(ValueError):
    """The Zarr store holds another kernel (other description, inputs, tiles or quantities).

    Examples
    --------
    A store written for X refuses to resume a run at other inputs (a Gram matrix as the tile function):

    >>> import numpy as np, tempfile
    >>> from ntk_theory.blocks.tiled import tiled
    >>> def gram(A, B):
    ...     return {"k": A @ (A if B is None else B).T}
    >>> X = np.arange(6.0).reshape(3, 2); path = tempfile.mkdtemp() + "/K.zarr"
    >>> run = tiled(gram, X, chunks=2, names=("k",), store=path, scheduler="synchronous", progress=False)
    >>> bool(np.array_equal(run.arrays["k"][:], X @ X.T))
    True
    >>> try:
    ...     tiled(gram, X + 1, chunks=2, names=("k",), store=path, scheduler="synchronous", progress=False)
    ... except StoreMismatch as exc:
    ...     print(exc)
    /.../K.zarr holds another kernel (differs in inputs_sha256)...
    """


def inputs_sha256(*arrays) -> str:
    """SHA-256 of the arrays' shapes and bytes (None skipped)."""
    h = hashlib.sha256()
    for a in arrays:
        if a is not None:
            h.update(str(a.shape).encode())
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class ZarrSink:
    """Tiles written to the Zarr group at ``path``, each followed by its completion marker."""

    path: str

    def result(self) -> dict:
        """The stored quantities as zarr arrays (read lazily)."""
        import zarr

        group = zarr.open_group(self.path, mode="r")
        return {n: group[n] for n in group.attrs["get"]}

    def unmap_in(self, runner) -> None:
        """Nothing: workers open the store per tile."""

    def discard(self) -> None:
        """Nothing: an interrupted store is resumed, not removed."""

    def write(self, tiles: dict, i: int, j: int, bounds: tuple, mirror: bool) -> None:
        import zarr

        group = zarr.open_group(self.path, mode="r+")
        r0, r1, c0, c1 = bounds
        for n, tile in tiles.items():
            arr = group[n]
            arr[r0:r1, c0:c1] = tile
            if mirror:
                arr[c0:c1, r0:r1] = tile.T
        done = group["done"]
        done[i, j] = 1
        if mirror:
            done[j, i] = 1


#: madvise(MADV_POPULATE_WRITE) (Linux >= 5.14): map a range's pages, allocating them, in one call instead of
#: one page fault per 4 KiB page
POPULATE_WRITE = 23 if sys.platform.startswith("linux") else None

#: this process's mappings of shared result files: path -> [mmap, array, populated row bands]
MAPPED: dict = {}
_LOCK = threading.Lock()  # worker threads of one process share its mappings


def populate(mm, start: int, stop: int) -> None:
    """Map the pages of bytes start:stop of ``mm`` now (writable), where the platform allows."""
    if POPULATE_WRITE is None or stop <= start:
        return
    page = mmap.PAGESIZE
    start = start // page * page
    stop = min(len(mm), -(-stop // page) * page)
    try:
        mm.madvise(POPULATE_WRITE, start, stop - start)
    except (OSError, ValueError):  # an older kernel: the pages fault in on first write instead
        pass


def mapping(path: str, shape: tuple, dtype: str) -> list:
    """This process's mapping of the shared file ``path`` as ``[mmap, array, populated bands]`` (mapped once
    per process; mappings of files since removed are dropped first)."""
    with _LOCK:
        entry = MAPPED.get(path)
        if entry is None:
            _release([p for p in MAPPED if not os.path.exists(p)])
            with open(path, "r+b") as f:
                mm = mmap.mmap(f.fileno(), 0)
            entry = MAPPED[path] = [mm, np.ndarray(shape, dtype=dtype, buffer=mm), set()]
        return entry


def release(paths) -> None:
    """Unmap this process's mappings of ``paths``."""
    with _LOCK:
        _release(paths)


def _release(paths) -> None:
    for p in paths:
        entry = MAPPED.pop(p, None)
        if entry is not None:
            mm = entry[0]
            entry.clear()  # the array goes first: the mmap cannot close while it is exported
            mm.close()


def shared_root() -> str:
    """The directory of shared result files: ``/dev/shm`` (memory) when writable, else the temporary directory."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


@dataclass(frozen=True)
class SharedSink:
    """Tiles written into memory-mapped files (one per quantity) that every process on this machine maps.
    Each process maps a file once and maps the pages of a row band in one call before its first write there
    (:data:`POPULATE_WRITE`), not page by page."""

    paths: tuple  # ((name, path), ...)
    shape: tuple
    dtype: str

    @classmethod
    def create(cls, names, shape, dtype) -> "SharedSink":
        root = shared_root()
        token = uuid.uuid4().hex[:16]
        paths = tuple((n, os.path.join(root, f"ntk-theory-{token}-{n}.f")) for n in names)
        for _, p in paths:
            with open(p, "wb") as f:
                f.truncate(max(1, int(np.prod(shape))) * np.dtype(dtype).itemsize)
        return cls(paths, tuple(shape), np.dtype(dtype).name)

    def write(self, tiles: dict, i: int, j: int, bounds: tuple, mirror: bool) -> None:
        r0, r1, c0, c1 = bounds
        row = self.shape[1] * np.dtype(self.dtype).itemsize
        for n, p in self.paths:
            mm, arr, bands = mapping(p, self.shape, self.dtype)
            for band in ((r0, r1), (c0, c1)) if mirror else ((r0, r1),):
                if band not in bands:
                    populate(mm, band[0] * row, band[1] * row)
                    bands.add(band)
            arr[r0:r1, c0:c1] = tiles[n]
            if mirror:
                arr[c0:c1, r0:r1] = tiles[n].T

    def result(self) -> dict:
        """The arrays (this process's mapping of the pages, mapped on first access: a read maps its
        neighbouring pages too), the files unlinked."""
        out = {}
        for n, p in self.paths:
            with open(p, "r+b") as f:
                mm = mmap.mmap(f.fileno(), 0)
            out[n] = np.ndarray(self.shape, dtype=self.dtype, buffer=mm)
        self.discard()
        return out

    def unmap_in(self, runner) -> None:
        """Unmap the files in every worker process of ``runner``."""
        runner.everywhere(release, [p for _, p in self.paths])

    def discard(self) -> None:
        """Remove the files (mappings keep their pages until unmapped)."""
        release([p for _, p in self.paths])
        for _, p in self.paths:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


@dataclass(frozen=True)
class MemorySink:
    """Tiles sent back to this process (the task's summary carries them)."""

    def write(self, tiles: dict, i: int, j: int, bounds: tuple, mirror: bool) -> dict:
        return tiles

    def unmap_in(self, runner) -> None:
        """Nothing mapped."""

    def discard(self) -> None:
        """Nothing to remove."""


def sink_for(runner, names, shape, dtype):
    """The sink of a run without a store on ``runner`` (None: no tasks): shared memory when the tasks run in
    other processes that see this machine's files, else this process's memory (module docstring)."""
    if runner is None or runner.in_process:
        return MemorySink()
    root = shared_root()
    need = len(names) * int(np.prod(shape)) * np.dtype(dtype).itemsize
    space = os.statvfs(root)
    if space.f_bavail * space.f_frsize < 2 * need:  # the files, and room for the rest of the machine
        return MemorySink()
    shared = SharedSink.create(names, shape, dtype)
    if runner.sees(shared.paths[0][1]):
        return shared
    shared.discard()
    return MemorySink()


def create_or_check(path, meta: dict, names, shape, tile: int, grid: tuple, dtype, X1, X2):
    """The Zarr group at ``path``: created with ``meta`` as attributes, or, existing, checked to hold the same
    attributes (:class:`StoreMismatch` naming those that differ)."""
    import zarr

    if os.path.exists(os.path.join(path, "zarr.json")):
        group = zarr.open_group(path, mode="r+")
        want = json.loads(json.dumps(meta))
        held = {k: group.attrs.get(k) for k in want}
        if held != want:
            diff = [k for k in want if held.get(k) != want[k]]
            raise StoreMismatch(f"{path} holds another kernel (differs in {', '.join(diff)}): use another path")
        return group
    group = zarr.open_group(path, mode="w")
    group.attrs.update(meta)
    for n in names:
        group.create_array(n, shape=shape, chunks=(tile, tile), dtype=dtype, fill_value=np.nan, compressors=None)
    group.create_array("X1", data=X1)
    if X2 is not None:
        group.create_array("X2", data=X2)
    group.create_array("done", shape=grid, chunks=(1, 1), dtype="uint8", fill_value=0, compressors=None)
    return group


def open_store(path) -> tuple:
    """``(arrays, attributes)`` of a complete store: zarr arrays per stored quantity (read lazily);
    :class:`StoreMismatch` if ``path`` is not such a store, ValueError if tiles are missing."""
    import zarr

    group = zarr.open_group(path, mode="r")
    if group.attrs.get("format") != FORMAT:
        raise StoreMismatch(f"{path} is not a blocked kernel store of ntk-theory")
    missing = int(np.sum(group["done"][:] == 0))
    if missing:
        raise ValueError(f"{path} is incomplete: {missing} tiles missing (run the same call again)")
    names = tuple(group.attrs["get"])
    return {n: group[n] for n in names}, dict(group.attrs)
