"""The transcendental floor of a ReLU kernel (issue 4): one atan2 and one sqrt per entry per layer.

A Numba loop, parallel over rows, doing only that work (plus one multiply-add to keep it live) on the
N x N upper triangle for `depth` layers, compared with ntk-theory's CompiledKernel on the same problem.

    python benchmarks/bench_floor.py
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import best_of, write_section  # noqa: E402

from ntk_theory.codegen import CompiledKernel  # noqa: E402


@numba.njit(parallel=True, fastmath=False)
def floor(x, depth):
    """Per row i: for every layer, w_j = atan2(sqrt(u_j), v_j) over the independent entries j >= i
    (throughput-bound: no dependence between entries within a layer), libm's atan2 and sqrt."""
    N = x.size
    acc = np.zeros(N)
    for i in numba.prange(N):
        m = N - i
        u = np.empty(m)
        v = np.empty(m)
        for j in range(m):
            u[j] = 1.0 + x[i] * x[i + j]
            v[j] = x[i] - x[i + j]
        for _ in range(depth):
            for j in range(m):
                w = math.atan2(math.sqrt(u[j]), v[j])
                u[j] = 1.0 + 0.1 * w
        acc[i] = u.sum()
    return acc


def main():
    N, depth = 4000, 10
    x = np.random.default_rng(0).random(N)
    X = np.random.default_rng(0).standard_normal((N, 32))
    t_floor = best_of(lambda: floor(x, depth), warm_up=True)[0]
    kern = CompiledKernel("relu", depth, C_W=1.96, C_b=0.01)
    t_ours = best_of(lambda: kern(X), warm_up=True)[0]
    print(t_floor, t_ours)
    body = "\n".join([
        "## ReLU kernel vs the transcendental floor (issue 4)",
        "",
        "The floor: libm atan2 and sqrt once per entry per layer, entries independent (throughput-bound), 2 threads.",
        "",
        f"N = {N}, depth {depth}: a parallel Numba loop doing only one atan2 and one sqrt per entry (upper",
        f"triangle) per layer takes {t_floor:.3f} s; ntk-theory's CompiledKernel (NNGP and NTK, both triangles",
        f"written) takes {t_ours:.3f} s: {t_ours / t_floor:.2f}x the floor (goal: within 2x).",
    ])
    write_section("floor", body)


if __name__ == "__main__":
    main()
