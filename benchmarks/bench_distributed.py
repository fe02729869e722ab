"""Blocked kernels and kernel regression on Dask (ntk_theory.distributed): ReLU depth 10, C_W = 2, C_b = 0.1,
inputs of dimension 16.

    python benchmarks/bench_distributed.py overhead            (N = 4000: in-memory vs the Dask path)
    python benchmarks/bench_distributed.py scaling --n 8000    (in memory, CPU-bound: 1 vs 2 workers)
    python benchmarks/bench_distributed.py large --n 20000     (NNGP+NTK to Zarr, 2 and 1 workers; --workers)
    python benchmarks/bench_distributed.py regression --n 20000 (blocked Cholesky and CG on the large store)

Each section adds its rows to a JSON file (--json) and rewrites the distributed section of BENCHMARKS.md from
all rows present.  Peak memory: the largest sum of resident set sizes of this process and its children (the
cluster's scheduler, nannies and workers), sampled every 0.2 s.  The load average is recorded after each row.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section  # noqa: E402

D, DEPTH, CHUNK_LARGE = 16, 10, 2000


def network():
    from ntk_theory import stax

    layers = []
    for _ in range(DEPTH):
        layers += [stax.Dense(1, W_std=2**0.5, b_std=0.1**0.5), stax.Relu()]
    return stax.serial(*layers, stax.Dense(1, W_std=2**0.5, b_std=0.1**0.5))


class Peak:
    """Largest summed RSS (bytes) of this process and its descendants while the context is open."""

    def __enter__(self):
        import psutil

        self.proc, self.peak, self.stop = psutil.Process(), 0, threading.Event()

        def sample():
            while not self.stop.is_set():
                total = 0
                for p in [self.proc] + self.proc.children(recursive=True):
                    try:
                        total += p.memory_info().rss
                    except Exception:  # noqa: BLE001 - a process that ended between listing and reading
                        pass
                self.peak = max(self.peak, total)
                self.stop.wait(0.2)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    @property
    def gb(self) -> float:
        return self.peak / 2**30


def cpu_seconds() -> float:
    """User + system CPU seconds so far of this process and its descendants (the cluster's processes)."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for p in [me] + me.children(recursive=True):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except Exception:  # noqa: BLE001 - a process that ended between listing and reading
            pass
    return total


def _timed_cpu(fn) -> tuple:
    """(wall seconds, CPU seconds of this process and its descendants) of ``fn()``."""
    c0, t0 = cpu_seconds(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, cpu_seconds() - c0


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def cluster(workers: int):
    import logging

    from distributed import Client, LocalCluster

    t0 = time.perf_counter()
    c = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                     silence_logs=logging.ERROR)
    client = Client(c)
    return client, c, time.perf_counter() - t0


def inputs(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, D))


def overhead(args, rows):
    """N = 4000: the in-memory compiled kernel and the Dask paths measured in turn (interleaved, so the
    shared machine's load hits both alike), best of ``args.repeat`` each."""
    from ntk_theory.codegen.graph import compiled_graph_kernel
    from ntk_theory.distributed import blocked_kernel

    net, N = network(), 4000
    X = inputs(N)
    kern = compiled_graph_kernel(net)
    kern.evaluate(X[:50])
    client, c, start = cluster(2)
    rows.append({"section": "overhead", "what": "LocalCluster start (2 workers), not counted below", "N": N,
                 "seconds": start, "load": load()})
    time.sleep(1)
    c0 = cpu_seconds()
    time.sleep(5)
    rows.append({"section": "overhead", "what": "the idle cluster's own CPU seconds per wall second (heartbeats, "
                 "event loops; in every Dask row's CPU)", "N": N, "seconds": float("nan"),
                 "cpu": (cpu_seconds() - c0) / 5, "load": load()})
    tmp = tempfile.mkdtemp()
    paths = {"in memory": lambda chunk, k: None, "to Zarr": lambda chunk, k: os.path.join(tmp, f"k{chunk}_{k}.zarr")}
    times: dict = {}
    try:
        blocked_kernel(net, X[:200], chunks=100, scheduler=client, progress=False)  # workers load the kernel
        for k in range(args.repeat):
            times.setdefault("memory", []).append(_timed_cpu(lambda: kern.evaluate(X)))
            for chunk in (1000, 2000):
                for where, path in paths.items():
                    store = path(chunk, k)
                    times.setdefault((chunk, where), []).append(_timed_cpu(
                        lambda: blocked_kernel(net, X, chunks=chunk, scheduler=client, store=store, progress=False)))
                    if store:
                        shutil.rmtree(store)
        mem = times.pop("memory")
        best, best_cpu = min(w for w, _ in mem), min(c for _, c in mem)
        rows.append({"section": "overhead", "what": f"in-memory compiled kernel (Numba, {os.cpu_count()} threads)",
                     "N": N, "seconds": best, "cpu": best_cpu, "load": load()})
        for (chunk, where), ts in times.items():
            wall, cpu = min(w for w, _ in ts), min(c for _, c in ts)
            rows.append({"section": "overhead", "what": f"Dask, 2 workers, tiles {chunk}, {where}", "N": N,
                         "seconds": wall, "ratio": wall / best, "cpu": cpu, "cpu_ratio": cpu / best_cpu,
                         "load": load()})
    finally:
        client.close()
        c.close()
        shutil.rmtree(tmp, ignore_errors=True)


def scaling(args, rows):
    """CPU-bound scaling: N = args.n in memory (tiles handed over in shared memory, nothing written to disk),
    tiles of 1000, on a LocalCluster of 1 and of 2 single-threaded workers; best of ``args.repeat`` walls."""
    from ntk_theory.distributed import blocked_kernel

    net, N, chunk = network(), args.n, 1000
    X = inputs(N)
    for workers in (1, 2):
        client, c, _ = cluster(workers)
        try:
            blocked_kernel(net, X[:200], chunks=100, scheduler=client, progress=False)  # workers load the kernel
            runs = []
            for _ in range(args.repeat):
                c0 = cpu_seconds()
                runs.append(dict(blocked_kernel(net, X, chunks=chunk, scheduler=client, progress=False).info,
                                 cpu=cpu_seconds() - c0))
            best = min(runs, key=lambda i: i["seconds"])
            rows.append({"section": "scaling", "N": N, "workers": workers, "tile": chunk, "tiles": best["tiles"],
                         "seconds": best["seconds"], "tile_seconds": best["tile_seconds"],
                         "write_seconds": best["write_seconds"], "walls": [round(i["seconds"], 3) for i in runs],
                         "cpu": best["cpu"],
                         "load": load()})
            print(rows[-1], flush=True)
        finally:
            client.close()
            c.close()


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def large(args, rows):
    from ntk_theory.distributed import blocked_kernel

    net, N = network(), args.n
    X = inputs(N)
    keep = args.store
    for workers in args.workers:
        client, c, start = cluster(workers)
        path = keep if (workers == 2 and keep) else os.path.join(args.tmp, f"large_{workers}.zarr")
        shutil.rmtree(path, ignore_errors=True)
        try:
            blocked_kernel(net, X[:200], chunks=100, scheduler=client, progress=False)
            with Peak() as peak:
                res = blocked_kernel(net, X, chunks=CHUNK_LARGE, scheduler=client, store=path, progress=False)
            info = res.info
            tiles = info["tiles"]
            per_tile = info["tile_seconds"] / tiles
            nb50 = math.ceil(50000 / CHUNK_LARGE)
            rows.append({"section": "large", "N": N, "workers": workers, "tile": CHUNK_LARGE, "tiles": tiles,
                         "seconds": info["seconds"], "tile_seconds": info["tile_seconds"], "per_tile": per_tile,
                         "entries_per_core_s": CHUNK_LARGE**2 / per_tile, "peak_gb": peak.gb,
                         "cluster_start": start, "extrapolated_50000_s": nb50 * (nb50 + 1) / 2 * per_tile / workers,
                         "load": load()})
            print(rows[-1], flush=True)
        finally:
            client.close()
            c.close()
            if not (workers == 2 and keep):
                shutil.rmtree(path, ignore_errors=True)


def regression(args, rows):
    from ntk_theory.codegen.graph import compiled_graph_kernel
    from ntk_theory.distributed import kernel_regression, open_blocked

    N = args.n
    X = inputs(N)
    Xt = inputs(200, seed=1)
    y = np.sin(X[:, 0]) + 0.1 * np.random.default_rng(2).standard_normal(N)
    K = open_blocked(args.store)
    Ktx = compiled_graph_kernel(network()).evaluate(Xt, X).ntk
    results = {}
    for method, options in (("cholesky", {}), ("cg", {"rank": 1000, "in_memory": True})):
        with Peak() as peak:
            t0 = time.perf_counter()
            post = kernel_regression(K.ntk, y, Ktx, diag_reg=1e-4, method=method, scheduler="threads", **options)
            seconds = time.perf_counter() - t0
        results[method] = post.mean
        rows.append({"section": "regression", "N": N, "method": method, "seconds": seconds, "peak_gb": peak.gb,
                     "info": {k: v for k, v in post.info.items() if not isinstance(v, np.ndarray)}, "load": load()})
        print(rows[-1], flush=True)
    diff = float(np.max(np.abs(results["cg"] - results["cholesky"])) / np.max(np.abs(results["cholesky"])))
    rows[-1]["cg_vs_cholesky"] = diff


def write(rows, json_path):
    lines = [f"dask/distributed {_v('distributed')}, zarr {_v('zarr')}. ReLU depth 10 (C_W = 2, C_b = 0.1), inputs of dimension 16, NNGP and NTK; every worker single-threaded "
             "(one Numba thread per task). Load average (1, 5, 15 min) after each row: the machine is shared.", ""]
    ov = [r for r in rows if r["section"] == "overhead"]
    if ov:
        lines += ["Overhead at N = 4000 (best of the runs, in-memory kernel and Dask paths interleaved; the cluster already "
                  "running; without a store the workers hand their tiles over in shared memory). Wall seconds, and CPU "
                  "seconds (user + system of this process and the cluster's processes: the work done, which the "
                  "machine's other load inflates less than the wall time):", "",
                  "| path | wall s | / in-memory | CPU s | / in-memory | load |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['what']} | {_wall(r)} | {_ratio(r)} | {_cpu(r)} | {_ratio(r, 'cpu_ratio')} | "
                  f"{r['load']} |" for r in ov]
        lines.append("")
    sc = [r for r in rows if r["section"] == "scaling"]
    if sc:
        lines += [f"CPU-bound scaling, in memory (tiles handed over in shared memory, no disk): N = {sc[0]['N']}, tiles "
                  f"{sc[0]['tile']} ({sc[0]['tiles']} tasks), LocalCluster, best of {len(sc[0]['walls'])}:", "",
                  "| workers | wall s (best) | all walls | task s (summed) | write s (summed) | CPU s (best run) | load |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['workers']} | {r['seconds']:.2f} | {', '.join(f'{w:.2f}' for w in r['walls'])} | "
                  f"{r['tile_seconds']:.2f} | {r['write_seconds']:.2f} | {_cpu(r)} | {r['load']} |" for r in sc]
        by = {r["workers"]: r for r in sc}
        if 1 in by and 2 in by:
            lines.append(f"\nSpeed-up 1 -> 2 workers: {by[1]['seconds'] / by[2]['seconds']:.2f}x (efficiency "
                         f"{by[1]['seconds'] / by[2]['seconds'] / 2:.0%}), on a machine whose 2 cores were shared with "
                         "other work at the load averages shown (a load above 2 leaves each worker less than a core).")
        lines.append("")
    lg = [r for r in rows if r["section"] == "large"]
    if lg:
        lines += ["NNGP+NTK to Zarr (float64, tiles 2000 x 2000, symmetric tiles once), LocalCluster:", "",
                  "| N | workers | tiles | wall s | task s | s per tile | entries per core-second | peak RSS GB | "
                  "tiles of N = 50,000 at this per-tile cost (s) | load |", "|---|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['N']} | {r['workers']} | {r['tiles']} | {r['seconds']:.1f} | {r['tile_seconds']:.1f} | "
                  f"{r['per_tile']:.3f} | {r['entries_per_core_s']:.3g} | {r['peak_gb']:.2f} | "
                  f"{r['extrapolated_50000_s']:.0f} | {r['load']} |" for r in lg]
        for n in sorted({r["N"] for r in lg}):
            by = {r["workers"]: r for r in lg if r["N"] == n}
            if not (1 in by and 2 in by):
                continue
            lines.append(f"\nScaling 1 -> 2 workers at N = {n}: {by[1]['seconds'] / by[2]['seconds']:.2f}x in wall "
                         f"time (efficiency {by[1]['seconds'] / by[2]['seconds'] / 2:.0%}); in task time per tile "
                         f"{by[1]['per_tile']:.3f} s (1 worker) vs {by[2]['per_tile']:.3f} s (2 workers): the two "
                         "workers share the 2 cores with the other processes of the loaded machine, and the wall "
                         "time is the store's writes.")
        for r in lg:
            if r["N"] >= 50000:
                lines.append(f"\nN = {r['N']} measured: {r['seconds']:.0f} s wall, {16 * r['N'] ** 2 / 1e9:.0f} GB "
                             f"written, peak RSS {r['peak_gb']:.2f} GB (cluster and client together).")
                continue
            written = 16 * r["N"] ** 2  # both quantities, float64, upper tiles mirrored: every entry written once
            io = r["seconds"] - r["tile_seconds"] / r["workers"]
            rate = written / max(io, 1e-9)
            r50 = 16 * 50000**2 / rate
            lines.append(f"\nN = {r['N']}, {r['workers']} worker(s): wall minus task time per worker {io:.1f} s writing "
                         f"{written / 1e9:.1f} GB ({rate / 1e6:.0f} MB/s, the store's disk); N = 50,000 "
                         f"extrapolated: {r['extrapolated_50000_s']:.0f} s of tiles + {r50:.0f} s of writes "
                         f"({16 * 50000**2 / 1e9:.0f} GB) = {r['extrapolated_50000_s'] + r50:.0f} s.")
        lines.append("")
    rg = [r for r in rows if r["section"] == "regression"]
    if rg:
        lines += ["NTK regression from the Zarr store (diag_reg = 1e-4, 200 test points, Dask threads scheduler):", "",
                  "| N | method | seconds | peak RSS GB | solver | load |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['N']} | {r['method']} | {r['seconds']:.1f} | {r['peak_gb']:.2f} | "
                  f"{json.dumps(r['info'])} | {r['load']} |" for r in rg]
        if "cg_vs_cholesky" in rg[-1]:
            lines.append(f"\nCG mean vs Cholesky mean: {rg[-1]['cg_vs_cholesky']:.1e} (max relative).")
    lines.append("\nCommands: `python benchmarks/bench_distributed.py overhead`, `... scaling --n N`, `... large --n N --store S`, "
                 "`... regression --n N --store S` (the large run's 2-worker store).")
    write_section("distributed", "## Blocked kernels and kernel regression on Dask\n\n" + "\n".join(lines))
    Path(json_path).write_text(json.dumps(rows, indent=1))


def _ratio(r, key="ratio") -> str:
    return f"{r[key]:.2f}" if key in r else "-"


def _wall(r) -> str:
    return "-" if math.isnan(r["seconds"]) else f"{r['seconds']:.3f}"


def _cpu(r) -> str:
    return f"{r['cpu']:.2f}" if "cpu" in r else "-"


def _v(name):
    import importlib

    return importlib.import_module(name).__version__


def main():
    p = argparse.ArgumentParser()
    p.add_argument("section", choices=("overhead", "scaling", "large", "regression"))
    p.add_argument("--repeat", type=int, default=5, help="overhead, scaling: runs of each path (the best is kept)")
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--workers", type=int, nargs="+", default=[2, 1], help="large: the cluster sizes to run")
    p.add_argument("--json", default=os.path.join(tempfile.gettempdir(), "bench_distributed.json"))
    p.add_argument("--tmp", default=tempfile.gettempdir())
    p.add_argument("--store", default=None, help="keep the 2-worker store here (large) / read it (regression)")
    args = p.parse_args()
    rows = json.loads(Path(args.json).read_text()) if Path(args.json).exists() else []
    rows = [r for r in rows if not (r["section"] == args.section and (args.section in ("overhead", "scaling")
                                                                     or r["N"] == args.n))]
    {"overhead": overhead, "scaling": scaling, "large": large, "regression": regression}[args.section](args, rows)
    write(rows, args.json)


if __name__ == "__main__":
    main()
