"""CNN-GP / CNTK of a 2-D convolutional network with pooling on 8x8 images: compiled, NumPy, neural-tangents.

The network (W_std = 1.4, b_std = 0.1 in every Conv, 'ntk' parameterization): [Conv(3x3, 'SAME'), Relu()] x 2,
AvgPool((2, 2), strides=(2, 2)), Conv(3x3, 'SAME'), Relu(), GlobalAvgPool(), Dense(1); full pixel-pair
covariances (P = 64 positions, 4096 pairs).  Inputs N x 8 x 8 x 3 standard normal, float64, NNGP and NTK of the
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

NETWORK = ("serial(Conv(1, (3, 3), padding='SAME', W_std=1.4, b_std=0.1), Relu(), "
           "Conv(1, (3, 3), padding='SAME', W_std=1.4, b_std=0.1), Relu(), AvgPool((2, 2), strides=(2, 2)), "
           "Conv(1, (3, 3), padding='SAME', W_std=1.4, b_std=0.1), Relu(), GlobalAvgPool(), Dense(1))")

NT_SCRIPT = """
import sys, time
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
from neural_tangents import stax
names = {n: getattr(stax, n) for n in ("serial", "Conv", "Relu", "AvgPool", "GlobalAvgPool", "Dense")}
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nt-python", default="/tmp/ntvenv/bin/python")
    parser.add_argument("--N", type=int, default=128)
    parser.add_argument("--N-numpy", type=int, default=32)
    args = parser.parse_args()
    net = stax.parse(NETWORK)
    X = np.random.default_rng(0).normal(size=(args.N, 8, 8, 3))
    load0 = os.getloadavg()[0]
    fast, k = best_of(lambda: convolution.kernel(net, X), repeats=3, warm_up=True)
    t0 = time.perf_counter()
    small = graph.kernel(net.description, X[:args.N_numpy])
    numpy_s = time.perf_counter() - t0
    fast_small = convolution.kernel(net, X[:args.N_numpy])
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "net.txt").write_text(NETWORK)
        np.save(Path(tmp) / "x.npy", X)
        (Path(tmp) / "run_neural_tangents.py").write_text(NT_SCRIPT)
        subprocess.run([args.nt_python, str(Path(tmp) / "run_neural_tangents.py"), str(Path(tmp) / "net.txt"), str(Path(tmp) / "x.npy"),
                        str(Path(tmp) / "out.npz")], check=True)
        nt = dict(np.load(Path(tmp) / "out.npz"))
    load1 = os.getloadavg()[0]
    off, diag = ~np.eye(args.N, dtype=bool), np.eye(args.N, dtype=bool)
    offs = ~np.eye(args.N_numpy, dtype=bool)
    nt_s = float(nt["seconds"])
    body = f"""## CNN-GP / CNTK with pooling on 8x8 images (convolutions)

The network: [`Conv(3x3, 'SAME', W_std=1.4, b_std=0.1)`, `Relu()`] x 2, `AvgPool((2, 2), strides=(2, 2))`,
`Conv(3x3, 'SAME')`, `Relu()`, `GlobalAvgPool()`, `Dense(1)`; full pixel-pair covariances (64 positions).
Inputs N x 8 x 8 x 3 standard normal; float64 NNGP and NTK of the full N x N matrix (X2 = None).
Compiled: `codegen.convolution.kernel` (parallel over inputs, then over input pairs a > b; best of 3 after a
warm-up).  NumPy: `recursions.graph.kernel` (one run).  neural-tangents 0.6.5 (jax, CPU, its own venv):
`jax.jit(kernel_fn)`, best of 3 after the jit warm-up.

| evaluator | N | time (s) | per entry (ms) |
|---|---:|---:|---:|
| ntk-theory compiled | {args.N} | {fast:.3f} | {1e3 * fast / args.N ** 2:.3f} |
| ntk-theory NumPy | {args.N_numpy} | {numpy_s:.3f} | {1e3 * numpy_s / args.N_numpy ** 2:.3f} |
| neural-tangents jit | {args.N} | {nt_s:.3f} | {1e3 * nt_s / args.N ** 2:.3f} |

Speed-up of the compiled kernel over neural-tangents: {nt_s / fast:.1f}x.  Agreement: compiled vs
neural-tangents, largest difference relative to the largest entry, off the diagonal
{rel(k.nngp, nt['nngp'], off):.1e} (NNGP) / {rel(k.ntk, nt['ntk'], off):.1e} (NTK), on it
{rel(k.nngp, nt['nngp'], diag):.1e} / {rel(k.ntk, nt['ntk'], diag):.1e} (its arccos at correlation 1); compiled
vs NumPy on {args.N_numpy} inputs: {rel(fast_small.nngp, small.nngp, offs):.1e} / {rel(fast_small.ntk, small.ntk, offs):.1e}
off the diagonal, {rel(fast_small.nngp, small.nngp, ~offs):.1e} / {rel(fast_small.ntk, small.ntk, ~offs):.1e} on it.
Load average (1 min) before / after the timings: {load0:.2f} / {load1:.2f} (2 cores shared with other jobs).
"""
    print(body)
    write_section("conv", body)


if __name__ == "__main__":
    main()
