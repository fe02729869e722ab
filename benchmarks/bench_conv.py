"""CNN-GP / CNTK of 2-D convolutional networks on 8x8 images: compiled, NumPy, neural-tangents.

The networks (W_std = 1.4, b_std = 0.1 in every Conv, 'ntk' parameterization): 'pooled': [Conv(3x3, 'SAME'),
Relu()] x 2, AvgPool((2, 2), strides=(2, 2)), Conv(3x3, 'SAME'), Relu(), GlobalAvgPool(), Dense(1) (full
pixel-pair covariances, P = 64 positions, 4096 pairs); 'flatten': [Conv(3x3, 'SAME'), Relu()] x 3, Flatten(),
Dense(1) (same-position covariances).  Inputs N x 8 x 8 x 3 standard normal, float64, NNGP and NTK of the
full N x N matrix (X2 = None).

* ntk-theory compiled: ``codegen.convolution.kernel``, best of 3 after a warm-up (load from the Numba cache);
* ntk-theory NumPy: ``recursions.graph.kernel`` (one run, on the first ``--N-numpy`` inputs);
* neural-tangents 0.6.5 (its own venv, run as a subprocess): ``jax.jit(kernel_fn)`` (float64 via
  jax_enable_x64), best of 3 after the jit warm-up;
* agreement of the compiled kernel with neural-tangents (all N x N entries) and with NumPy.

    python benchmarks/bench_conv.py [--nt-python /tmp/ntvenv/bin/python] [--N 128] [--N-numpy 32]
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
from _report import best_of, write_section

from ntk_theory import stax
from ntk_theory.codegen import convolution
from ntk_theory.recursions import graph

CONV = "Conv(1, (3, 3), padding='SAME', W_std=1.4, b_std=0.1), Relu()"
NETWORKS = {
    "pooled": f"serial({CONV}, {CONV}, AvgPool((2, 2), strides=(2, 2)), {CONV}, GlobalAvgPool(), Dense(1))",
    "flatten": f"serial({CONV}, {CONV}, {CONV}, Flatten(), Dense(1))",
}
NETWORK = NETWORKS["pooled"]

NT_SCRIPT = """
import sys, time
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
from neural_tangents import stax
names = {n: getattr(stax, n) for n in ("serial", "Conv", "Relu", "AvgPool", "GlobalAvgPool", "Flatten", "Dense")}
kernel_fn = jax.jit(eval(open(sys.argv[1]).read(), {"__builtins__": {}}, names)[2], static_argnames="get")
X = jnp.asarray(np.load(sys.argv[2]))
best = float("inf")
for r in range(4):
    t0 = time.perf_counter()
    k = kernel_fn(X, None, get=("nngp", "ntk"))
    k.ntk.block_until_ready()
    if r > 0:
        best = min(best, time.perf_counter() - t0)
np.savez(sys.argv[3], seconds=best, nngp=np.asarray(k.nngp), ntk=np.asarray(k.ntk))
"""


def rel(a, b, mask):
    return float(np.max(np.abs(a - b)[mask]) / np.max(np.abs(b)))


def measure(text, X, n_numpy, nt_python):
    net = stax.parse(text)
    fast, k = best_of(lambda: convolution.kernel(net, X), repeats=3, warm_up=True)
    t0 = time.perf_counter()
    small = graph.kernel(net.description, X[:n_numpy])
    numpy_s = time.perf_counter() - t0
    fast_small = convolution.kernel(net, X[:n_numpy])
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "net.txt").write_text(text)
        np.save(Path(tmp) / "x.npy", X)
        (Path(tmp) / "run_neural_tangents.py").write_text(NT_SCRIPT)
        subprocess.run([nt_python, str(Path(tmp) / "run_neural_tangents.py"), str(Path(tmp) / "net.txt"),
                        str(Path(tmp) / "x.npy"), str(Path(tmp) / "out.npz")], check=True)
        nt = dict(np.load(Path(tmp) / "out.npz"))
    off, offs = ~np.eye(len(X), dtype=bool), ~np.eye(n_numpy, dtype=bool)
    agree = {"nt_off": (rel(k.nngp, nt["nngp"], off), rel(k.ntk, nt["ntk"], off)),
             "nt_diag": (rel(k.nngp, nt["nngp"], ~off), rel(k.ntk, nt["ntk"], ~off)),
             "np_off": (rel(fast_small.nngp, small.nngp, offs), rel(fast_small.ntk, small.ntk, offs)),
             "np_diag": (rel(fast_small.nngp, small.nngp, ~offs), rel(fast_small.ntk, small.ntk, ~offs))}
    return fast, numpy_s, float(nt["seconds"]), agree


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nt-python", default="/tmp/ntvenv/bin/python")
    parser.add_argument("--N", type=int, default=128)
    parser.add_argument("--N-numpy", type=int, default=32)
    args = parser.parse_args()
    X = np.random.default_rng(0).normal(size=(args.N, 8, 8, 3))
    load0 = os.getloadavg()[0]
    results = {name: measure(text, X, args.N_numpy, args.nt_python) for name, text in NETWORKS.items()}
    load1 = os.getloadavg()[0]
    rows, notes = [], []
    for name, (fast, numpy_s, nt_s, agree) in results.items():
        rows.append(f"| {name} | {fast:.3f} | {1e3 * fast / args.N ** 2:.4f} | {numpy_s:.3f} | "
                    f"{1e3 * numpy_s / args.N_numpy ** 2:.3f} | {nt_s:.3f} | {nt_s / fast:.1f}x |")
        notes.append(f"{name}: vs neural-tangents {agree['nt_off'][0]:.1e} / {agree['nt_off'][1]:.1e} off the diagonal, "
                     f"{agree['nt_diag'][0]:.1e} / {agree['nt_diag'][1]:.1e} on it; vs NumPy {agree['np_off'][0]:.1e} / "
                     f"{agree['np_off'][1]:.1e} off, {agree['np_diag'][0]:.1e} / {agree['np_diag'][1]:.1e} on")
    table = "\n".join(rows)
    agreement = ";  \n".join(notes)
    body = f"""## CNN-GP / CNTK on 8x8 images (convolutions)

'pooled': [`Conv(3x3, 'SAME', W_std=1.4, b_std=0.1)`, `Relu()`] x 2, `AvgPool((2, 2), strides=(2, 2))`,
`Conv(3x3, 'SAME')`, `Relu()`, `GlobalAvgPool()`, `Dense(1)` (covariances of all 64 x 64 position pairs);
'flatten': [`Conv(3x3, 'SAME')`, `Relu()`] x 3, `Flatten()`, `Dense(1)` (same positions only).
Inputs N = {args.N} x 8 x 8 x 3 standard normal; float64 NNGP and NTK of the full N x N matrix (X2 = None).
Compiled: `codegen.convolution.kernel` (parallel over inputs, then over input pairs a > b; best of 3 after a
warm-up).  NumPy: `recursions.graph.kernel` on the first {args.N_numpy} inputs (one run).  neural-tangents 0.6.5
(jax, CPU, its own venv): `jax.jit(kernel_fn)`, best of 3 after the jit warm-up.

| network | compiled (s) | per entry (ms) | NumPy, N = {args.N_numpy} (s) | per entry (ms) | neural-tangents (s) | compiled vs NT |
|---|---:|---:|---:|---:|---:|---:|
{table}

Agreement (largest difference relative to the largest entry, NNGP / NTK; neural-tangents' NTK diagonal goes
through an arccos at correlation 1):  \n{agreement}.  \nLoad average (1 min) before / after the timings:
{load0:.2f} / {load1:.2f} (2 cores shared with other jobs).
"""
    print(body)
    write_section("conv", body)


if __name__ == "__main__":
    main()
