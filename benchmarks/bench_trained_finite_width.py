"""The finite-width trained prediction end to end: tensors, dNTK, ddNTK and the O(1/n) prediction of a tanh MLP.

    python benchmarks/bench_trained_finite_width.py [--out benchmarks/results_trained.md] [--sizes 4,8,12,16,24]
    python benchmarks/bench_trained_finite_width.py --worker N_TRAIN OUT.json [--arrays OUT.npz]

The driver runs each measurement in a fresh Python process (``--worker``):

1. first run: N_train = 16, M = 4 test inputs, with NUMBA_CACHE_DIR and NTK_THEORY_CACHE pointed at new, empty
   temporary directories (nothing compiled, nothing derived: a machine's first run);
2. second run: the same, in a new process with those caches now filled;
3. growth: N_train in ``--sizes`` with 4 test inputs, caches filled, one process each.

The worker times ``FiniteWidthDynamics.from_network("tanh", X_train, y_train, X_test, depth=3, C_W=1.5,
C_b=0.1)`` (the benchmarks' tanh point; X_train (N, 16), X_test (4, 16) standard normal, seed 0; y_train =
sin of the inputs' first coordinate plus 0.1 times their second), then the readout's dNTK and ddNTK (the
``dyn.dntk`` property), then ``mean``, ``covariance``, ``motion`` and ``motion_covariance`` at
``steps=[1, 10, 100, inf]``.  Phases: import (``ntk_theory`` and the dynamics module), tensors, dNTK + ddNTK
(the ddNTK runs first: every layer's s'', s''' four-point averages in one pass per kernel, then the dNTK's P, Q,
then R, S, T, U; the three parts timed by wrapping the names ``derivative_averages`` and ``dntk_tensors`` of
``ntk_theory.finite_width.ddntk``), prediction; within each, the time Numba spent compiling (its
``numba:compile`` events, outermost only).  The first run's extra cost over the second (kernel derivation, code
generation, compilation) is the cold start.

Cost model of a cached run: per layer, c0 + c4 C(P, 4) + c6 P^6 (P = N_train + 4 inputs) for each of the
tensors and dNTK + ddNTK, fitted by non-negative least squares (relative residuals) on the growth runs and
extrapolated to N_train = 32.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STEPS = [1, 10, 100, float("inf")]
M_TEST, DIM, DEPTH, C_W, C_B = 4, 16, 3, 1.5, 0.1


def worker(n_train: int, out: str, arrays: str | None) -> None:
    t0 = time.perf_counter()
    import numba.core.event as ev
    import numpy as np

    import ntk_theory  # noqa: F401
    from ntk_theory.dynamics.finite_width import FiniteWidthDynamics
    t_import = time.perf_counter() - t0

    timer = ev.TimingListener()
    ev.register("numba:compile", timer)

    def compiled():
        return getattr(timer, "_duration", 0.0)

    phases = {}

    import ntk_theory.finite_width.ddntk as ddntk_module

    def wrap(owner, name, key):
        orig = getattr(owner, name)

        def timed(*a, **k):
            c0, s0 = compiled(), time.perf_counter()
            r = orig(*a, **k)
            t, c = phases.get(key, (0.0, 0.0))
            phases[key] = (t + time.perf_counter() - s0, c + compiled() - c0)
            return r
        setattr(owner, name, timed)

    wrap(ddntk_module, "derivative_averages", "averages")
    wrap(ddntk_module, "dntk_tensors", "dntk")

    rng = np.random.default_rng(0)
    X = rng.standard_normal((n_train + M_TEST, DIM))
    X_train, X_test = X[:n_train], X[n_train:]
    y = np.sin(X_train[:, 0]) + 0.1 * X_train[:, 1]

    c0, s0 = compiled(), time.perf_counter()
    dyn = FiniteWidthDynamics.from_network("tanh", X_train, y, X_test, depth=DEPTH, C_W=C_W, C_b=C_B)
    t_tensors, c_tensors = time.perf_counter() - s0, compiled() - c0
    c0, s0 = compiled(), time.perf_counter()
    d = dyn.dntk
    t_dd, c_dd = time.perf_counter() - s0, compiled() - c0
    c0, s0 = compiled(), time.perf_counter()
    m = dyn.mean(steps=STEPS)
    c = dyn.covariance(steps=STEPS)
    mo = dyn.motion(steps=STEPS)
    mc = dyn.motion_covariance(steps=STEPS)
    t_pred, c_pred = time.perf_counter() - s0, compiled() - c0
    total = time.perf_counter() - t0
    res = {"n_train": n_train, "P": n_train + M_TEST, "import_s": t_import, "tensors_s": t_tensors,
           "tensors_compile_s": c_tensors, "averages_s": phases["averages"][0],
           "averages_compile_s": phases["averages"][1], "dntk_s": phases["dntk"][0],
           "dntk_compile_s": phases["dntk"][1], "ddntk_s": t_dd - phases["averages"][0] - phases["dntk"][0],
           "ddntk_compile_s": c_dd - phases["averages"][1] - phases["dntk"][1], "dntk_ddntk_s": t_dd,
           "dntk_ddntk_compile_s": c_dd, "prediction_s": t_pred, "prediction_compile_s": c_pred,
           "numba_compile_s": compiled(), "total_s": total, "load1": os.getloadavg()[0],
           "test_mean_inf": [float(v) for v in m.value[-1][n_train:]],
           "test_mean_correction_inf": [float(v) for v in m.correction[-1][n_train:]],
           "test_motion_inf": [float(v) for v in mo.correction[-1][n_train:]]}
    if arrays:
        np.savez(arrays, mean=m.value, mean1=m.correction, cov=c.value, cov1=c.correction, motion=mo.correction,
                 motion_cov=mc.correction, **{k: v for k, v in dyn.tensors.items()}, **d)
    Path(out).write_text(json.dumps(res))


def run_worker(n_train: int, env: dict, tmp: str, arrays: str | None = None) -> dict:
    out = os.path.join(tmp, f"w{n_train}_{time.time_ns()}.json")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(n_train), out]
    if arrays:
        cmd += ["--arrays", arrays]
    load0 = os.getloadavg()[0]
    subprocess.run(cmd, env=env, check=True)
    r = json.loads(Path(out).read_text())
    r["load1_before"] = load0
    print(json.dumps({k: v for k, v in r.items() if not k.startswith("test_")}), flush=True)
    return r


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def nnls_fit(points):
    """(c0, c4, c6) >= 0 minimising the relative residuals of t = c0 + c4 C(P, 4) + c6 P^6 (per layer)."""
    import numpy as np
    from scipy.optimize import nnls
    A = np.array([[1.0 / t, math.comb(P, 4) / t, P ** 6 / t] for P, t in points])
    coef, _ = nnls(A, np.ones(len(points)))
    return coef


def driver(out: str, sizes: list[int], arrays_dir: str | None) -> None:
    growth = []
    with tempfile.TemporaryDirectory(prefix="bench_trained_") as tmp:
        env = dict(os.environ)
        env["NUMBA_CACHE_DIR"] = os.path.join(tmp, "numba")
        env["NTK_THEORY_CACHE"] = os.path.join(tmp, "ntk")
        os.makedirs(env["NUMBA_CACHE_DIR"]), os.makedirs(env["NTK_THEORY_CACHE"])
        arr = (lambda name: os.path.join(arrays_dir, name)) if arrays_dir else (lambda name: None)
        cold = run_worker(16, env, tmp, arr("n16_cold.npz"))
        warm = run_worker(16, env, tmp, arr("n16_warm.npz"))
        for n in sizes:
            growth.append(warm if n == 16 else run_worker(n, env, tmp))
    fit_t = nnls_fit([(g["P"], g["tensors_s"] / DEPTH) for g in growth])
    fit_d = nnls_fit([(g["P"], g["dntk_ddntk_s"] / DEPTH) for g in growth])

    def pred(fit, P):
        return DEPTH * (fit[0] + fit[1] * math.comb(P, 4) + fit[2] * P ** 6)

    loads = [r["load1_before"] for r in [cold, warm, *growth]] + [r["load1"] for r in [cold, warm, *growth]]
    import numba
    import numpy
    import scipy
    phase = lambda r, k: f"{r[k + '_s']:.1f} ({r[k + '_compile_s']:.1f})"
    lines = [
        "## Trained finite-width prediction end to end (tanh, depth 3, N_train = 16, 4 test inputs)",
        "",
        (f"`FiniteWidthDynamics.from_network(\"tanh\", X_train, y_train, X_test, depth={DEPTH}, C_W={C_W}, C_b={C_B})`,"
         f" X_train (N, {DIM}), X_test ({M_TEST}, {DIM}) standard normal (seed 0), y_train = sin(x_1) + 0.1 x_2;"
         " then the readout's dNTK and ddNTK (`dyn.dntk`), then `mean`, `covariance`, `motion`, `motion_covariance`"
         " at `steps=[1, 10, 100, inf]`.  Each run a fresh process.  First run: NUMBA_CACHE_DIR and NTK_THEORY_CACHE"
         " new empty directories (nothing compiled or derived); second run: a new process with those caches filled."
         "  Seconds; in parentheses the part Numba spent compiling (its compile events).  dNTK + ddNTK: the ddNTK"
         " runs first and takes every layer's s'', s''' four-point averages in one pass per kernel (averages), then"
         " the dNTK's P, Q (dNTK, its averages already there), then R, S, T, U (ddNTK rest); the tensor recursion's"
         " layer states come from the tensors phase (not recomputed)."),
        "",
        ("| run | import | tensors | averages | dNTK | ddNTK rest | dNTK + ddNTK | prediction | total |"
         " Numba compiling | load (1 min) |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in (("first (empty caches)", cold), ("second (caches filled)", warm)):
        lines.append(f"| {name} | {r['import_s']:.1f} | {phase(r, 'tensors')} | {phase(r, 'averages')} | "
                     f"{phase(r, 'dntk')} | {phase(r, 'ddntk')} | {phase(r, 'dntk_ddntk')} | "
                     f"{phase(r, 'prediction')} | **{r['total_s']:.1f}** | "
                     f"{r['numba_compile_s']:.1f} | {r['load1_before']:.1f} / {r['load1']:.1f} |")
    lines += [
        "",
        (f"Cold start: {cold['total_s'] - warm['total_s']:.1f} s more than the second run, of which Numba compiling "
         f"{cold['numba_compile_s']:.1f} s; the rest is deriving and generating the activation's kernels (SymPy,"
         " code generation) and loading from an empty cache."),
    ]
    lines += [
        "",
        (f"Target (issue): under 60 s on a machine's first run: {'met' if cold['total_s'] < 60 else 'NOT met'}"
         f" ({cold['total_s']:.1f} s).  Load: 1-minute average before / after each run (shared 2-core machine)."),
        "",
        "### Growth with N_train (4 test inputs, caches filled, one fresh process each)",
        "",
        "| N_train | P | tensors | dNTK + ddNTK | prediction | total | model tensors | model dNTK + ddNTK | load |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for g in growth:
        P = g["P"]
        lines.append(f"| {g['n_train']} | {P} | {g['tensors_s']:.2f} | {g['dntk_ddntk_s']:.2f} | "
                     f"{g['prediction_s']:.2f} | {g['total_s']:.2f} | {pred(fit_t, P):.2f} | {pred(fit_d, P):.2f} | "
                     f"{g['load1']:.1f} |")
    P32 = 32 + M_TEST
    lines.append(f"| 32 | {P32} | | | | | {pred(fit_t, P32):.1f} | {pred(fit_d, P32):.1f} | |")
    lines += [
        "",
        (f"Cost model per layer (P = N_train + {M_TEST} inputs), non-negative least squares on relative residuals:"
         f" tensors c0 = {fit_t[0]:.2e} s, c4 = {fit_t[1]:.2e} s per 4-set, c6 = {fit_t[2]:.2e} s per P^6; dNTK +"
         f" ddNTK c0 = {fit_d[0]:.2e} s, c4 = {fit_d[1]:.2e} s, c6 = {fit_d[2]:.2e} s.  Extrapolated total at"
         f" N_train = 32 (P = {P32}, cached, without import and prediction): {pred(fit_t, P32) + pred(fit_d, P32):.0f}"
         " s."),
        "",
        (f"Machine: {cpu_name()}, {os.cpu_count()} cores, {platform.system()} "
         f"{platform.release()}; Python {platform.python_version()}, NumPy {numpy.__version__}, SciPy "
         f"{scipy.__version__}, Numba {numba.__version__}; 1-minute load {min(loads):.1f} to {max(loads):.1f}.  "),
        f"Command: `python benchmarks/bench_trained_finite_width.py` ({time.strftime('%Y-%m-%d')}).",
        "",
    ]
    Path(out).write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", nargs=2, metavar=("N_TRAIN", "OUT_JSON"))
    ap.add_argument("--arrays", help="worker: save the results' arrays (npz); driver: a folder for them")
    ap.add_argument("--out", default=str(HERE / "results_trained.md"))
    ap.add_argument("--sizes", default="4,8,12,16,24")
    a = ap.parse_args()
    if a.worker:
        worker(int(a.worker[0]), a.worker[1], a.arrays)
    else:
        driver(a.out, [int(s) for s in a.sizes.split(",")], a.arrays)


if __name__ == "__main__":
    main()
