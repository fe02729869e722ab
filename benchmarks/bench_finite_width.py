"""Finite-width tensors (issue 5): all of K, Theta, V, K1, A, B, D, F, Theta1 for N = 8 inputs at depth 5.

Cold: a fresh process with empty Numba and ntk-theory caches (NUMBA_CACHE_DIR, NTK_THEORY_CACHE in a
temporary directory), so compilation and symbolic derivation are included; cached: a second fresh
process with those disk caches filled (a user's every session after the first); warm: the same call
again in a process.  Activations: relu (closed-form two-point kernels, exact orthant four-point
moments), leaky_relu (the same with 16 orthants per set) and tanh (all numerical).

    python benchmarks/bench_finite_width.py              (writes its section of BENCHMARKS.md)
    python benchmarks/bench_finite_width.py --singular   (prints the C_b = 0 rows only)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, write_section  # noqa: E402

CHILD = textwrap.dedent("""
    import json, time, sys
    t0 = time.perf_counter()
    import numpy as np
    from ntk_theory.finite_width import finite_width
    t_import = time.perf_counter() - t0
    N, d, depth, C_W, C_b = json.loads(sys.argv[2]) if len(sys.argv) > 2 else (8, 4, 5, 1.5, 0.1)
    X = np.random.default_rng(0).standard_normal((N, d))
    act, _, route = sys.argv[1].partition(":")
    if route == "numerical":  # the four-point moments by the numerical integrator (exact=False)
        import functools
        from ntk_theory.gaussian import fourpoint
        fourpoint.four_point_moments = functools.partial(fourpoint.four_point_moments, exact=False)
    t0 = time.perf_counter(); p = finite_width(act, X, depth, C_W, C_b, "ntk"); cold = time.perf_counter() - t0
    t0 = time.perf_counter(); p = finite_width(act, X, depth, C_W, C_b, "ntk"); warm = time.perf_counter() - t0
    print(json.dumps(dict(import_s=t_import, cold=cold, warm=warm, error=p.quadrature_error,
                          cov0=float(p.ntk_covariance[0, 0, 0, 0]))))
""")


# more inputs than dimensions with C_b = 0: singular covariances (rank-2 and rank-3 sets of the exact route)
SINGULAR = {"relu N=16 d=2 depth 3 C_b=0": ("relu", (16, 2, 3, 2.0, 0.0)),
            "relu N=5 d=3 depth 2 C_b=0": ("relu", (5, 3, 2, 2.0, 0.0))}


def run(act: str, config: tuple | None = None) -> tuple[dict, dict]:
    """(cold run, run in a second fresh process with the disk caches of the first); ``config``:
    (N, d, depth, C_W, C_b) instead of the default (8, 4, 5, 1.5, 0.1)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, NUMBA_CACHE_DIR=os.path.join(tmp, "numba"), NTK_THEORY_CACHE=os.path.join(tmp, "ntk"))
        runs = []
        for _ in range(2):
            args = [act] + ([json.dumps(config)] if config else [])
            out = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, env=env, check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        return runs[0], runs[1]


def singular_rows() -> list:
    rows = []
    for label, (act, config) in SINGULAR.items():
        r, c = run(act, config)
        print(label, r, c, flush=True)
        rows.append(f"| {label} | {r['cold']:.2f} | {c['cold']:.2f} | {min(r['warm'], c['warm']):.2f} | "
                    f"{r['import_s']:.2f} | {r['error']:.1e} |")
    return rows


def main() -> None:
    if "--singular" in sys.argv:  # only the singular-covariance rows, printed (BENCHMARKS.md untouched)
        print("\n".join(singular_rows()))
        return
    rows = []
    for act in ("relu", "relu:numerical", "leaky_relu", "leaky_relu:numerical", "tanh"):
        r, c = run(act)
        print(act, r, c, flush=True)
        rows.append(f"| {act} | {r['cold']:.2f} | {c['cold']:.2f} | {min(r['warm'], c['warm']):.2f} | "
                    f"{r['import_s']:.2f} | {r['error']:.1e} |")
    rows += singular_rows()
    body = "\n".join([
        "## Finite-width tensors (issue 5)",
        "",
        f"Machine: {machine()}.  Command: `python benchmarks/bench_finite_width.py`.",
        "",
        "`finite_width(act, X, depth=5, C_W=1.5, C_b=0.1)` for N = 8 random inputs (d = 4): every tensor of every",
        "layer (K, Theta, V, K1, A, B, D, F, Theta1; the readout's ntk_covariance and output_cumulant).  Cold: a",
        "fresh process with empty Numba and ntk-theory caches (compilation and symbolic derivation included,",
        "import not); cached: a second fresh process with those disk caches filled; warm: the same call",
        "again in one process.  Target (issue 5): under 10 s cold.  relu and leaky_relu take the exact",
        "orthant-moment route (ntk_theory/numerics/orthant.py: nothing to compile for the four-point",
        "moments); tanh's cold run includes the one-time compilation of the four-point integrator (two",
        "modules, ~2 s and ~4.5 s, compiled in parallel: the larger in a child process while this one",
        "compiles the other and computes every layer's two-point tensors; then loaded from the disk",
        "cache); its two-point covariance derivatives are Mehler series in NumPy (nothing to compile).",
        "Rows `:numerical` force the numerical four-point integrator (`exact=False`, the route these",
        "activations took before the exact one) in the same run, for comparison.  Rows `C_b=0` have more",
        "inputs than dimensions and C_W = 2 (`--singular` runs only these): singular covariances, whose",
        "sets the exact route reduces to their rank (planar and solid cones).",
        "",
        "| activation | cold (s) | cached (s) | warm (s) | import (s) | quadrature error estimate |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
    ])
    write_section("finite_width", body)


if __name__ == "__main__":
    main()
