"""An MLP's kernel by its two compiled code paths, side by side: ``CompiledKernel`` (the MLP generator,
``codegen/emit.py``: one module per set of activations, depth and constants as arguments, the layers a loop)
and ``CompiledGraphKernel(mlp_description(...))`` (``codegen/graph.py``: one straight-line program per
description, every layer emitted).

Cases (float64, inputs N x 32 standard normal, C_W = 1.96, C_b = 0.01, NNGP and NTK of the full N x N
matrix, X2 = X1): relu N = 4000 depth 10, tanh N = 2000 depth 3 and N = 4000 depth 10.  Evaluation: both
kernels in one process, runs interleaved (MLP, graph, MLP, graph, ...), best of ``--repeats`` after a
first call, writing into the same preallocated outputs.  Agreement: the largest relative difference of the
two results.  Start-up: each kernel compiled in a fresh process with an empty kernel cache
(``NTK_THEORY_CACHE``; the numerics library's own Numba cache stays warm), at depth 10 and 30.

    python benchmarks/bench_mlp_graph.py [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section  # noqa: E402

from ntk_theory.architecture.mlp import mlp_description  # noqa: E402
from ntk_theory.codegen import CompiledKernel  # noqa: E402
from ntk_theory.codegen.graph import CompiledGraphKernel  # noqa: E402

C_W, C_B = 1.96, 0.01


def side_by_side(act: str, N: int, depth: int, repeats: int):
    X = np.random.default_rng(0).standard_normal((N, 32))
    mlp = CompiledKernel(act, depth, C_W, C_B)
    graph = CompiledGraphKernel(mlp_description(act, depth, C_W, C_B))
    a, b = mlp(X), graph(X)
    diff = max(float(np.max(np.abs(a.nngp - b.nngp)) / np.max(np.abs(a.nngp))),
               float(np.max(np.abs(a.ntk - b.ntk)) / np.max(np.abs(a.ntk))))
    tm, tg = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        mlp(X, out=(a.nngp, a.ntk))
        tm.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        graph(X, out=(b.nngp, b.ntk))
        tg.append(time.perf_counter() - t0)
    return min(tm), min(tg), diff


_START = {
    "mlp": "from ntk_theory.codegen import CompiledKernel as K; k = K('{act}', {depth}, 1.96, 0.01)",
    "graph": ("from ntk_theory.codegen.graph import CompiledGraphKernel as G; "
              "from ntk_theory.architecture.mlp import mlp_description as m; k = G(m('{act}', {depth}, 1.96, 0.01))"),
}


def start_up(kind: str, act: str, depth: int) -> float:
    """Seconds from construction to the first result of a 2 x 3 input, fresh process, empty kernel cache."""
    code = ("import time, numpy as np; t = time.perf_counter(); " + _START[kind].format(act=act, depth=depth)
            + "; k(np.eye(2, 3)); print(time.perf_counter() - t)")
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, NTK_THEORY_CACHE=tmp)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small N, no start-up timings, no BENCHMARKS.md")
    args = parser.parse_args()
    cases = [("relu", 4000, 10), ("tanh", 2000, 3), ("tanh", 4000, 10)]
    if args.quick:
        cases = [("relu", 1000, 10), ("tanh", 500, 3)]
    load = os.getloadavg()[0]
    rows = []
    for act, N, depth in cases:
        tm, tg, diff = side_by_side(act, N, depth, args.repeats)
        rows.append(f"| {act} | {N} | {depth} | {tm:.3f} | {tg:.3f} | {tg / tm:.2f} | {diff:.1e} |")
        print(rows[-1], flush=True)
    starts = []
    if not args.quick:
        for act, depth in (("relu", 10), ("relu", 30), ("tanh", 10)):
            m, g = start_up("mlp", act, depth), start_up("graph", act, depth)
            starts.append(f"| {act} | {depth} | {m:.1f} | {g:.1f} |")
            print(starts[-1], flush=True)
    load_after = os.getloadavg()[0]
    body = "\n".join([
        "## One MLP, two compiled code paths (CompiledKernel vs CompiledGraphKernel of its description)",
        "",
        "Float64, inputs N x 32 (standard normal), C_W = 1.96, C_b = 0.01, X2 = X1.  `CompiledKernel(act, depth, ...)`",
        "(MLP generator: the layers a loop, depth and constants arguments) and",
        "`CompiledGraphKernel(mlp_description(act, depth, ...))` (straight-line program of the description) in one",
        f"process, runs interleaved, best of {args.repeats} after a first call; difference: largest relative",
        "difference of the two NNGP / NTK results.",
        "",
        "| activation | N | depth | CompiledKernel (s) | graph (s) | graph / MLP | difference |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "Start-up (construction to first result, fresh process, empty kernel cache; the numerics library's Numba",
        "cache warm): the MLP module is one per set of activations (any depth), the graph module one per",
        "description (every depth compiles its own).",
        "",
        "| activation | depth | CompiledKernel (s) | graph (s) |",
        "|---|---:|---:|---:|",
        *starts,
        "",
        f"Load average (1 min) before / after: {load:.2f} / {load_after:.2f} (2 cores shared with other jobs).",
    ])
    if not args.quick:
        write_section("mlp_graph", body)
    else:
        print(body)


if __name__ == "__main__":
    main()
