"""An MLP's compiled kernel: ``CompiledKernel`` (the compiled kernel of the MLP's description, its hidden
layers one loop over repetitions of [activation, Dense]) against the straight-line program of the same
description (``CompiledGraphKernel(..., loops=False)``: every layer emitted) and, with ``--reference``,
against the ``CompiledKernel`` of another checkout of ntk-theory (e.g. the MLP-only generator it replaced).

Cases (float64, inputs N x 32 standard normal, C_W = 1.96, C_b = 0.01, NNGP and NTK of the full N x N
matrix, X2 = X1): relu N = 4000 depth 10, tanh N = 2000 depth 3 and N = 4000 depth 10.  Evaluation: each
kernel in its own process (runs interleaved across processes: loop, straight, reference, loop, ...), best
of ``--repeats`` after a first call, writing into preallocated outputs.  Agreement: the largest relative
difference of the results.  Start-up: construction to the first result of a 2 x 3 input in a fresh process
with empty kernel and Numba caches (``NTK_THEORY_CACHE`` and ``NUMBA_CACHE_DIR`` temporary directories:
everything compiled, the numerics library's routines too), relu at depth 10, 30 and 1000, tanh at 10 (the straight-line program only at depth 10).

    python benchmarks/bench_mlp_graph.py [--repeats 3] [--quick] [--reference DIR_WITH_ntk_theory]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section

C_W, C_B = 1.96, 0.01

_BUILD = {
    "loop": "from ntk_theory.codegen import CompiledKernel as K; k = K('{act}', {depth}, C_W=1.96, C_b=0.01)",
    "straight": ("from ntk_theory.codegen.graph import CompiledGraphKernel as G; "
                 "from ntk_theory.architecture.mlp import mlp_description as m; "
                 "k = G(m('{act}', {depth}, C_W=1.96, C_b=0.01), loops=False)"),
    "reference": "from ntk_theory.codegen import CompiledKernel as K; k = K('{act}', {depth}, C_W=1.96, C_b=0.01)",
}

_TIMING = """
import json, time, numpy as np
X = np.random.default_rng(0).standard_normal(({N}, 32))
{build}
a = k(X)
best = float('inf')
for _ in range({repeats}):
    t0 = time.perf_counter()
    k(X, out=(a.nngp, a.ntk))
    best = min(best, time.perf_counter() - t0)
np.save({out!r}, np.stack([a.nngp[:200, :200], a.ntk[:200, :200]]))
print(json.dumps(best))
"""


def _run(kind: str, code: str, reference: str | None, caches: tuple | None = None) -> str:
    env = dict(os.environ)
    if kind == "reference":
        env["PYTHONPATH"] = reference + os.pathsep + env.get("PYTHONPATH", "")
    if caches:
        env["NTK_THEORY_CACHE"], env["NUMBA_CACHE_DIR"] = caches
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=tempfile.gettempdir())
    return out.stdout.split()[-1]


def side_by_side(act: str, N: int, depth: int, repeats: int, kinds, reference):
    """Best evaluation time per kind (one process each, warm caches) and the largest relative difference
    from the loop module's result (on the leading 200 x 200 block)."""
    times, blocks = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            path = os.path.join(tmp, f"{kind}.npy")
            code = _TIMING.format(N=N, build=_BUILD[kind].format(act=act, depth=depth), repeats=repeats, out=path)
            times[kind] = json.loads(_run(kind, code, reference))
            blocks[kind] = np.load(path)
    diff = {k: float(np.max(np.abs(blocks[k] - blocks["loop"]) / np.max(np.abs(blocks["loop"]), axis=(1, 2),
                                                                        keepdims=True))) for k in kinds}
    return times, diff


def start_up(kind: str, act: str, depth: int, reference) -> float:
    """Seconds from construction to the first result of a 2 x 3 input, fresh process, empty caches."""
    code = ("import time, numpy as np; t = time.perf_counter(); " + _BUILD[kind].format(act=act, depth=depth)
            + "; k(np.eye(2, 3)); print(time.perf_counter() - t)")
    with tempfile.TemporaryDirectory() as kc, tempfile.TemporaryDirectory() as nb:
        return float(_run(kind, code, reference, (kc, nb)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small N, no start-up timings, no BENCHMARKS.md")
    parser.add_argument("--reference", help="a directory holding another ntk_theory package (its CompiledKernel)")
    parser.add_argument("--reference-name", default="reference")
    args = parser.parse_args()
    kinds = ["loop", "straight"] + (["reference"] if args.reference else [])
    cases = [("relu", 4000, 10), ("tanh", 2000, 3), ("tanh", 4000, 10)]
    if args.quick:
        cases = [("relu", 1000, 10), ("tanh", 500, 3)]
    load = os.getloadavg()[0]
    rows = []
    for act, N, depth in cases:
        t, diff = side_by_side(act, N, depth, args.repeats, kinds, args.reference)
        cells = [f"{t[k]:.3f}" for k in kinds] + [f"{t[k] / t['loop']:.2f}" for k in kinds[1:]]
        cells += [f"{max(diff.values()):.1e}"]
        rows.append(f"| {act} | {N} | {depth} | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    starts = []
    if not args.quick:
        for act, depth in (("relu", 10), ("relu", 30), ("relu", 1000), ("tanh", 10)):
            got = {k: (start_up(k, act, depth, args.reference) if k != "straight" or depth <= 10 else None) for k in kinds}
            starts.append(f"| {act} | {depth} | " + " | ".join("-" if v is None else f"{v:.1f}" for v in got.values()) + " |")
            print(starts[-1], flush=True)
    load_after = os.getloadavg()[0]
    ref = args.reference_name
    names = {"loop": "CompiledKernel (loop)", "straight": "straight-line", "reference": f"{ref} CompiledKernel"}
    head = " | ".join(f"{names[k]} (s)" for k in kinds) + " | " + " | ".join(f"{names[k]} / loop" for k in kinds[1:])
    body = "\n".join([
        "## One MLP: the compiled kernel of its description, its layers a loop",
        "",
        "Float64, inputs N x 32 (standard normal), C_W = 1.96, C_b = 0.01, X2 = X1.  `CompiledKernel(act, depth, ...)`",
        "(the compiled kernel of `mlp_description(...)`: the hidden layers one loop over [activation, Dense], the",
        "module independent of depth), the straight-line program of the same description",
        "(`CompiledGraphKernel(..., loops=False)`: every layer emitted)"
        + (f" and {ref}'s `CompiledKernel` (the MLP-only generator:"
           " one module per set of activations, a loop over layers with a branch per activation)" if args.reference else "")
        + ", each in its own process,",
        f"best of {args.repeats} after a first call; difference: largest relative difference of the results (leading",
        "200 x 200 block).",
        "",
        f"| activation | N | depth | {head} | difference |",
        "|---|---:|---:|" + "---:|" * (2 * len(kinds)),
        *rows,
        "",
        "Start-up (construction to first result, fresh process, empty kernel and Numba caches: everything",
        "compiled, the numerics library's routines too; straight-line only at depth 10, its compile grows with depth):",
        "",
        "| activation | depth | " + " | ".join(f"{names[k]} (s)" for k in kinds) + " |",
        "|---|---:|" + "---:|" * len(kinds),
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
