"""Compiled kernel of a residual network side by side with the MLP kernel and neural-tangents.

The network (W_std = 1.4, b_std = 0.1 in every Dense, width 512, 'ntk' parameterization): a Dense stem,
10 pre-activation residual blocks FanOut(2), parallel(Identity(), serial(Relu(), Dense, Relu(), Dense)),
FanInSum(), then Relu() and Dense(1).  Inputs N x 32 standard normal, N = 4000, float64, NNGP and NTK of
the full N x N matrix.

* ntk-theory: ``codegen.graph.CompiledGraphKernel`` of the description, best of 3 after compile/load, and the
  first call after load; cold compile (empty cache) and load from the disk cache, each in a fresh process;
* the plain 10-layer ReLU MLP of the same constants by ``codegen.CompiledKernel`` on the same inputs;
* neural-tangents 0.6.5 (its own venv, run as a subprocess): ``jax.jit(kernel_fn)`` of the same network
  (float64 via jax_enable_x64), best of 3 after a warm-up (jit);
* agreement on 200 inputs with ``recursions.graph.kernel`` (NumPy) and with neural-tangents (subset of 3 rows).

    python benchmarks/bench_stax.py [--nt-python /tmp/ntvenv/bin/python] [--N 4000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import best_of, write_section

from ntk_theory import stax
from ntk_theory.codegen import CompiledKernel
from ntk_theory.codegen.graph import CompiledGraphKernel
from ntk_theory.recursions import graph

W_STD, B_STD, WIDTH, BLOCKS = 1.4, 0.1, 512, 10
SUBSET = [0, 1, 2]


def residual_network():
    dense = lambda: stax.Dense(WIDTH, W_std=W_STD, b_std=B_STD)
    layers = [dense()]
    for _ in range(BLOCKS):
        layers += [stax.FanOut(2), stax.parallel(stax.Identity(), stax.serial(stax.Relu(), dense(), stax.Relu(), dense())),
                   stax.FanInSum()]
    return stax.serial(*layers, stax.Relu(), stax.Dense(1, W_std=W_STD, b_std=B_STD))


NT_SCRIPT = """
import json, sys, time, warnings
warnings.filterwarnings("ignore", message="`FanIn` layers assume independent inputs")  # Dense in every branch here
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
from neural_tangents import stax
case = json.load(open(sys.argv[1]))
names = {n: getattr(stax, n) for n in ("serial", "parallel", "FanOut", "FanInSum", "Identity", "Relu", "Dense")}
kernel_fn = jax.jit(eval(case["network"], {"__builtins__": {}}, names)[2], static_argnames="get")
X = jnp.asarray(np.load(case["x"]))
best = float("inf")
for r in range(4):
    t0 = time.perf_counter()
    k = kernel_fn(X, None, get=("nngp", "ntk"))
    k.ntk.block_until_ready()
    if r > 0:
        best = min(best, time.perf_counter() - t0)
sub = case["subset"]
np.savez(sys.argv[2], seconds=best, nngp=np.asarray(k.nngp)[sub], ntk=np.asarray(k.ntk)[sub])
"""


def compile_times() -> tuple[float, float]:
    """Cold (empty cache) and warm (disk cache) start-up of the residual network's compiled kernel."""
    here = str(Path(__file__).resolve().parent)
    code = (f"import sys; sys.path.insert(0, {here!r}); from bench_stax import residual_network; import numpy as np; "
            "from ntk_theory.codegen.graph import CompiledGraphKernel; k = CompiledGraphKernel(residual_network()); "
            "k.evaluate(np.ones((2, 32))); print(k.compile_seconds)")
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, NTK_THEORY_CACHE=tmp)
        run = lambda: float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                           check=True).stdout.split()[-1])
        return run(), run()


def run_nt(nt_python: str, network: str, X_path: str) -> dict:
    if not nt_python or not Path(nt_python).exists():
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        cfg, script, out = Path(tmp) / "case.json", Path(tmp) / "time_stax.py", Path(tmp) / "result.npz"
        cfg.write_text(json.dumps({"network": network, "x": X_path, "subset": SUBSET}))
        script.write_text(NT_SCRIPT)
        subprocess.run([nt_python, str(script), str(cfg), str(out)], check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
        return dict(np.load(out))


def rel_off(a, ref, same):
    off = ~same
    return float(np.max(np.abs(a[off] - ref[off]) / np.abs(ref[off])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nt-python", default="/tmp/ntvenv/bin/python", help="neural-tangents' venv python")
    parser.add_argument("--N", type=int, default=4000)
    args = parser.parse_args()
    N = args.N
    X = np.random.default_rng(0).standard_normal((N, 32))
    tmp = tempfile.mkdtemp()
    X_path = str(Path(tmp) / "X.npy")
    np.save(X_path, X)
    net = residual_network()

    load = os.getloadavg()
    kern = CompiledGraphKernel(net)
    kern.evaluate(X[:10])  # compile or load
    mlp = CompiledKernel("relu", 10, C_W=W_STD**2, C_b=B_STD**2)
    mlp(X[:10])
    t0 = time.perf_counter()
    res = kern.evaluate(X)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    mlp(X)
    first_mlp = time.perf_counter() - t0
    t_graph, t_mlp = [], []
    for _ in range(3):  # interleaved, so that both see the same machine
        t_graph.append(best_of(lambda: kern.evaluate(X), 1)[0])
        t_mlp.append(best_of(lambda: mlp(X), 1)[0])
    t_graph, t_mlp = min(t_graph), min(t_mlp)
    print(f"graph {t_graph:.3f} s (first {first:.3f}), mlp {t_mlp:.3f} s (first {first_mlp:.3f})", flush=True)

    n = 200
    same = np.eye(n, dtype=bool)
    small, ref = kern.evaluate(X[:n]), graph.kernel(net.description, X[:n])
    err_np = [rel_off(getattr(small, q), getattr(ref, q), same) for q in ("nngp", "ntk")]
    diag_equal = all(np.array_equal(np.diag(getattr(small, q)), np.diag(getattr(ref, q))) for q in ("nngp", "ntk"))

    nt = run_nt(args.nt_python, repr(net.description), X_path)
    t_nt = float(nt["seconds"]) if nt else None
    if nt:
        same_nt = np.zeros((len(SUBSET), N), dtype=bool)
        same_nt[np.arange(len(SUBSET)), SUBSET] = True
        err_nt = [rel_off(getattr(res, q)[SUBSET], nt[q], same_nt) for q in ("nngp", "ntk")]
        diag_nt = [float(np.max(np.abs(getattr(res, q)[SUBSET, SUBSET] - nt[q][np.arange(len(SUBSET)), SUBSET])
                                / np.abs(nt[q][np.arange(len(SUBSET)), SUBSET]))) for q in ("nngp", "ntk")]
        print(f"neural-tangents {t_nt:.3f} s; relative difference {err_nt}, diagonal {diag_nt}", flush=True)
    load_after = os.getloadavg()
    cold, warm = compile_times()
    print(f"compile cold {cold:.2f} s, warm {warm:.2f} s", flush=True)

    nt_cells = ("—", "—") if t_nt is None else (f"{t_nt:.3f}", f"{t_nt / t_graph:.1f}x")
    nt_acc = ("neural-tangents not found" if not nt else
              f"neural-tangents on rows {SUBSET} x all {N} columns: {err_nt[0]:.1e} / {err_nt[1]:.1e} off the "
              f"diagonal, {diag_nt[0]:.1e} / {diag_nt[1]:.1e} on it (its arccos at angle 0)")
    body = f"""## Compiled kernel of a residual network (stax descriptions)

The network: `Dense({WIDTH}, W_std={W_STD}, b_std={B_STD})`, then {BLOCKS} x [`FanOut(2)`, `parallel(Identity(),
serial(Relu(), Dense({WIDTH}), Relu(), Dense({WIDTH})))`, `FanInSum()`] (same W_std, b_std), `Relu()`, `Dense(1)`:
{2 * BLOCKS + 1} ReLU expectations per entry.  The MLP: 10 hidden ReLU layers, C_W = {W_STD**2:.2f}, C_b = {B_STD**2:.2f}
(`CompiledKernel`).  Inputs N = {N} x 32, standard normal; float64 NNGP and NTK of the full N x N matrix.
ntk-theory: `CompiledGraphKernel` (one generated program per entry, parallel over rows, symmetric fast path),
best of 3 after load (interleaved with the MLP's runs), and the first call.  neural-tangents 0.6.5 (jax 0.4.25,
CPU, its own venv): `jax.jit(kernel_fn)` of the same network, best of 3 after the jit warm-up.

| kernel | N | time (s) | first call (s) | vs the MLP kernel | neural-tangents (s) | speed-up vs NT |
|---|---:|---:|---:|---:|---:|---:|
| residual, {BLOCKS} blocks | {N} | {t_graph:.3f} | {first:.3f} | {t_graph / t_mlp:.2f}x | {nt_cells[0]} | {nt_cells[1]} |
| MLP, depth 10 | {N} | {t_mlp:.3f} | {first_mlp:.3f} | 1x | — | — |

Start-up of the residual kernel (fresh process): {cold:.1f} s cold (code generation and Numba compile),
{warm:.2f} s from the disk cache.  Agreement: with `recursions.graph.kernel` (NumPy) on {n} inputs, largest
relative difference off the diagonal {err_np[0]:.1e} (NNGP) / {err_np[1]:.1e} (NTK), diagonal
{"identical" if diag_equal else "different"}; {nt_acc}.
Load average (1 min) before / after the timings: {load[0]:.2f} / {load_after[0]:.2f} (2 cores shared with other jobs)."""
    write_section("stax", body)


if __name__ == "__main__":
    main()
