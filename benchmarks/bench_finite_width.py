"""Finite-width tensors (issue 5): all of K, Theta, V, K1, A, B, D, F, Theta1 for N = 8 inputs at depth 5.

Cold: a fresh process with empty Numba and ntk-theory caches (NUMBA_CACHE_DIR, NTK_THEORY_CACHE in a
temporary directory), so compilation and symbolic derivation are included; cached: a second fresh
process with those disk caches filled (a user's every session after the first); warm: the same call
again in a process.  Activations: relu (closed-form two-point kernels, exact orthant four-point
moments), leaky_relu (the same with 16 orthants per set) and tanh (all numerical).

    python benchmarks/bench_finite_width.py              (writes its section of BENCHMARKS.md)
    python benchmarks/bench_finite_width.py --singular   (prints the C_b = 0 rows only)
    python benchmarks/bench_finite_width.py --scaling [--tanh32]
        (N = 8, 16, 32 at depth 3, d = 16: this tree's route beside the code of commit BASELINE in the
        same run, the tensors of both compared entry by entry, and the cost model; writes the
        finite_width_scaling section of BENCHMARKS.md)
    python benchmarks/bench_finite_width.py --dntk [--max-before-n 3] [--before-timeout 900]
        (tanh dNTK P, Q and ddNTK R, S, T, U at N = 3, 4, 8, depth 2 and 3: the code of commit DNTK_BASELINE
        beside this tree in the same run, entries compared; writes the dntk_speed section of BENCHMARKS.md)
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

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
    t0 = time.perf_counter(); p = finite_width(act, X, depth, C_W=C_W, C_b=C_b, param="ntk"); cold = time.perf_counter() - t0
    t0 = time.perf_counter(); p = finite_width(act, X, depth, C_W=C_W, C_b=C_b, param="ntk"); warm = time.perf_counter() - t0
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


BASELINE = "d9e9271"  # the four-point moments before the vectorised set bookkeeping

SCALING_CHILD = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    act, N, depth, C_W, C_b, reps, out = json.loads(sys.argv[1])
    import ntk_theory
    from ntk_theory.finite_width import finite_width
    X = np.random.default_rng(0).standard_normal((N, 16))
    finite_width(act, X[:3], 1, C_W=C_W, C_b=C_b, param="ntk")  # compiled modules and symbolic caches, untimed
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        p = finite_width(act, X, depth, C_W=C_W, C_b=C_b, param="ntk")
        times.append(time.perf_counter() - t0)
        if times[-1] > 60:
            break
    np.savez(out, **p.arrays())
    print(json.dumps(dict(best=min(times), times=times, error=p.quadrature_error, tree=ntk_theory.__file__)))
""")

# (activation, C_W, C_b): the classes
SCALING = [("relu", 2.0, 0.0), ("relu", 2.0, 0.1), ("tanh", 1.5, 0.1)]


def _baseline_tree(tmp: str) -> str:
    """The package as of commit BASELINE, exported into tmp (imported first through PYTHONPATH)."""
    root = Path(__file__).resolve().parent.parent
    dest = os.path.join(tmp, "baseline")
    os.makedirs(dest)
    archive = subprocess.run(["git", "-C", str(root), "archive", BASELINE, "ntk_theory"], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", dest], input=archive, check=True)
    return dest


def _scaling_run(tree, config, reps, out, tmp):
    env = dict(os.environ, NUMBA_CACHE_DIR=os.path.join(tmp, "numba"))
    if tree is not None:
        env["PYTHONPATH"] = tree
    res = subprocess.run([sys.executable, "-c", SCALING_CHILD, json.dumps([*config, reps, out])],
                         capture_output=True, text=True, env=env, check=True, cwd=tmp)
    return json.loads(res.stdout.strip().splitlines()[-1])


def _rel_diff(a_path, b_path) -> float:
    """max over the readout's arrays (:meth:`FiniteWidthPredictions.arrays`) of max |a - b| / max |b|."""
    a, b = np.load(a_path), np.load(b_path)
    return max(float(np.max(np.abs(a[k] - b[k])) / np.max(np.abs(b[k]))) for k in b.files if np.any(b[k]))


def _fit(points):
    """t / depth = c0 + c4 C(N, 4) + c6 N^6 by non-negative least squares on (N, t/depth) points, each
    weighted by 1 / t (relative residuals)."""
    from scipy.optimize import nnls

    A = np.array([[1.0, math.comb(N, 4), float(N) ** 6] for N, _ in points])
    y = np.array([t for _, t in points])
    return nnls(A / y[:, None], np.ones_like(y))[0]


def scaling() -> None:
    depth = 3
    sizes = {"relu": (8, 16, 32), "tanh": (8, 16, 32) if "--tanh32" in sys.argv else (8, 16)}
    if "--max-n" in sys.argv:  # a quick check of the script: smaller N only
        cap = int(sys.argv[sys.argv.index("--max-n") + 1])
        sizes = {k: tuple(n for n in v if n <= cap) for k, v in sizes.items()}
    rows, model_rows, loads = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        base = _baseline_tree(tmp)
        for act, C_W, C_b in SCALING:
            fit_points = []
            measured = {}
            for N in sizes[act]:
                config = (act, N, depth, C_W, C_b)
                new_npz, old_npz = os.path.join(tmp, "new.npz"), os.path.join(tmp, "old.npz")
                new = _scaling_run(None, config, 3, new_npz, tmp)
                old = _scaling_run(base, config, 2, old_npz, tmp) if not (act == "tanh" and N > 16) else None
                diff = _rel_diff(new_npz, old_npz) if old else float("nan")
                label = f"{act} (C_W {C_W:g}, C_b {C_b:g})"
                print(label, N, new, old, diff, flush=True)
                if old is not None and Path(old["tree"]).parent.parent != Path(base):
                    raise RuntimeError(f"the baseline run imported {old['tree']}, not the exported tree")
                old_t = f"{old['best']:.1f}" if old else "(not run)"
                speed = f"{old['best'] / new['best']:.1f}x" if old else ""
                rows.append(f"| {label} | {N} | {old_t} | {new['best']:.1f} | {speed} | {diff:.1e} | "
                            f"{new['error']:.1e} |")
                measured[N] = new["best"]
                loads.append(os.getloadavg()[0])
                fit_points.append((N, new["best"] / depth))
            c0, c4, c6 = _fit(fit_points) if fit_points else (float("nan"),) * 3
            for N in (8, 16, 32, 64):
                pred = depth * (c0 + c4 * math.comb(N, 4) + c6 * N ** 6)
                meas = f"{measured[N]:.1f}" if N in measured else ""
                model_rows.append(f"| {act} (C_b {C_b:g}) | {N} | {pred:.1f} | {meas} |")
            model_rows.append(f"| {act} (C_b {C_b:g}) | fit | c0 = {c0:.2e} s, c4 = {c4:.2e} s per 4-set, "
                              f"c6 = {c6:.2e} s per N^6 (per layer) | |")
    body = "\n".join([
        "## Finite-width tensors at N = 8, 16, 32 (four-point moments by sets, vectorised bookkeeping)",
        "",
        "The machine (below) is shared with other jobs: times are the best of up to three calls (one when a",
        "call takes over a minute), both routes run side by side in this one run (1-minute load average",
        f"{min(loads):.1f} to {max(loads):.1f} after its rows, on this {os.cpu_count()}-core machine).",
        "",
        "`finite_width(act, X, depth=3, C_W=C_W, C_b=C_b)` for N random inputs in d = 16, every tensor of every layer,",
        f"compiled modules cached (a small untimed call first).  Before: the package at commit {BASELINE}",
        "(exported, same machine, same run); after: this tree.  Difference: max |after - before| / max |before|",
        "over each of the readout's arrays (nngp, ntk, their corrections, ntk_covariance, output_cumulant, ...).  Error: the reported quadrature error estimate.",
        "",
        "| activation | N | before (s) | after (s) | speed-up | difference | error estimate |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "Cost model: time = depth (c0 + c4 C(N, 4) + c6 N^6): a fixed cost per layer, the four-point sets",
        "(per-set quadrature or orthant moments) and the N^6 einsum contractions of the recursion; non-negative",
        "least squares on the after-times of all measured N (relative residuals), extrapolated to N = 64",
        "(and to N = 32 for tanh).  The set bookkeeping is linear in the N^4 entries, below the other terms.",
        "",
        "| activation | N | predicted (s) | measured (s) |",
        "|---|---:|---:|---:|",
        *model_rows,
    ])
    write_section("finite_width_scaling", body)


DNTK_BASELINE = "e9ae289"  # the s'' averages entry by entry (expectn); ddntk recomputing P, Q

DNTK_CHILD = textwrap.dedent("""
    import json, os, sys, time
    import numpy as np
    N, depth, out = json.loads(sys.argv[1])
    import ntk_theory
    from ntk_theory.finite_width import FiniteWidthRecursion
    X = np.random.default_rng(0).standard_normal((N, 4))
    FiniteWidthRecursion("tanh", 1, C_W=1.5, C_b=0.1).ddntk(X[:2])  # compiled modules, symbolic caches: untimed
    rec = FiniteWidthRecursion("tanh", depth, C_W=1.5, C_b=0.1)
    t0 = time.perf_counter(); d = rec.dntk(X); t_dntk = time.perf_counter() - t0
    t0 = time.perf_counter(); dd = rec.ddntk(X); t_ddntk = time.perf_counter() - t0
    np.savez(out, P=d[-1].P, Q=d[-1].Q, R=dd[-1].R, S=dd[-1].S, T=dd[-1].T, U=dd[-1].U)
    print(json.dumps(dict(dntk=t_dntk, ddntk=t_ddntk, error=max(d[-1].error, dd[-1].error),
                          load=os.getloadavg()[0], tree=ntk_theory.__file__)))
""")


def _dntk_run(tree, config, out, tmp, timeout):
    env = dict(os.environ, NUMBA_CACHE_DIR=os.path.join(tmp, "numba"))
    if tree is not None:
        env["PYTHONPATH"] = tree
    try:
        res = subprocess.run([sys.executable, "-c", DNTK_CHILD, json.dumps([*config, out])], capture_output=True,
                             text=True, env=env, check=True, cwd=tmp, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"the benchmark child failed:\n{e.stderr}") from None
    return json.loads(res.stdout.strip().splitlines()[-1])


def dntk_speed() -> None:
    """tanh .dntk(X) then .ddntk(X) on the same recursion (C_W 1.5, C_b 0.1, d = 4), before and after."""
    def opt(name, default):
        return type(default)(sys.argv[sys.argv.index(name) + 1]) if name in sys.argv else default

    max_before, timeout = opt("--max-before-n", 3), opt("--before-timeout", 900.0)
    sizes = tuple(int(n) for n in opt("--sizes", "3,4,8").split(","))
    rows, loads, fit = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        global BASELINE
        saved, BASELINE = BASELINE, DNTK_BASELINE
        try:
            base = _baseline_tree(tmp)
        finally:
            BASELINE = saved
        for depth in (2, 3):
            for N in sizes:
                new_npz, old_npz = os.path.join(tmp, "new.npz"), os.path.join(tmp, "old.npz")
                new = _dntk_run(None, (N, depth), new_npz, tmp, None)
                old = _dntk_run(base, (N, depth), old_npz, tmp, timeout) if N <= max_before else None
                diff = _rel_diff(new_npz, old_npz) if old else float("nan")
                print(N, depth, new, old, diff, flush=True)
                if old is not None and Path(old["tree"]).parent.parent != Path(base):
                    raise RuntimeError(f"the baseline run imported {old['tree']}, not the exported tree")
                loads += [new["load"]] + ([old["load"]] if old else [])
                before = (f"{old['dntk']:.1f} | {old['ddntk']:.1f}" if old else
                          (f"> {timeout:.0f} (stopped) | " if N <= max_before else "(not run) | "))
                speed = f"{(old['dntk'] + old['ddntk']) / (new['dntk'] + new['ddntk']):.0f}x" if old else ""
                difference = f"{diff:.1e}" if old else ""
                rows.append(f"| {N} | {depth} | {before} | {new['dntk']:.2f} | {new['ddntk']:.2f} | {speed} | "
                            f"{difference} | {new['error']:.1e} |")
                fit.setdefault(depth, []).append((N, new["dntk"] + new["ddntk"]))
    growth = []
    for depth, pts in fit.items():
        (n1, t1), (n2, t2) = pts[-2], pts[-1]
        sets = sum(math.comb(n2, m) for m in range(1, 5)) / sum(math.comb(n1, m) for m in range(1, 5))
        growth.append(f"depth {depth}: N {n1} -> {n2} costs {t2 / t1:.1f}x (sets of 1-4 inputs {sets:.1f}x, "
                      f"four-input sets {math.comb(n2, 4) / max(math.comb(n1, 4), 1):.0f}x)")
    body = "\n".join([
        "## dNTK and ddNTK at N inputs: the s'' averages by the compiled four-point integrator (issues 18, 19)",
        "",
        "`rec = FiniteWidthRecursion('tanh', depth, C_W=1.5, C_b=0.1)`, N random inputs in d = 4: `rec.dntk(X)`",
        "(P, Q of every layer) then `rec.ddntk(X)` (R, S, T, U) on the same recursion, each in a fresh process",
        "after a small untimed call (compiled modules cached).  Before: the package at commit",
        f"{DNTK_BASELINE} (exported, same machine, same run): the s''-containing averages entry by entry by the",
        "NumPy nested quadrature (expectn), and ddntk recomputing the states and P, Q.  After: this tree: the",
        "averages of a layer (products of s, s', s'', s^(3)) in one pass of the compiled four-point integrator",
        "over the input sets (two threads; .dntk's, then .ddntk's new ones, reordered terms reused), the ddNTK",
        "reusing the dNTK's states and P, Q.  Before-runs only up to N =",
        f"{max_before} (stopped after {timeout:.0f} s each; N = 4, depth 2 took 958 s for .dntk alone when measured",
        "for the issue).  Difference: max |after - before| / max |before| over P, Q, R, S, T, U of the readout.",
        f"The machine was shared with other jobs: 1-minute load average {min(loads):.1f} to {max(loads):.1f} on",
        f"its {os.cpu_count()} cores during the rows (times on a quiet machine are several times shorter).",
        "",
        "| N | depth | before .dntk (s) | before .ddntk (s) | after .dntk (s) | after .ddntk (s) | speed-up | "
        "difference | error estimate |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "Growth with N (after, .dntk + .ddntk): " + "; ".join(growth) + ".  The cost is one nested",
        "quadrature per set of up to four distinct inputs and layer (three passes: the states' moments, the",
        "dNTK's and the ddNTK's averages), four-input sets costing most, so it grows as C(N, 4) ~ N^4 / 24 at",
        "large N, plus the N^6 einsum contractions.",
    ])
    write_section("dntk_speed", body)


def main() -> None:
    if "--dntk" in sys.argv:
        dntk_speed()
        return
    if "--scaling" in sys.argv:
        scaling()
        return
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
