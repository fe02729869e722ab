"""Run by neural-tangents' own Python (separate venv): time kernel_fn on the benchmark's cases.

usage: python nt_time.py CASES.json OUT.npz     (CASES: list of {name, act, depth, N, W_std, b_std, x, subset})
For each case: best wall time of `repeats` runs after one warm-up (jit), and the kernel entries on the
case's subset of rows for the accuracy comparison.
"""
import json
import sys
import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import neural_tangents as nt  # noqa: E402
from neural_tangents import stax  # noqa: E402

ACTS = {
    "relu": lambda: stax.Relu(),
    "erf": lambda: stax.Erf(),
    "gelu": lambda: stax.Gelu(approximate=False),
    "tanh": lambda: stax.ElementwiseNumerical(jnp.tanh, deg=25),
}

cases = json.load(open(sys.argv[1]))
out = {}
for case in cases:
    X = np.load(case["x"])[: case["N"]]
    layers = []
    for _ in range(case["depth"]):
        layers += [stax.Dense(512, W_std=case["W_std"], b_std=case["b_std"]), ACTS[case["act"]]()]
    layers += [stax.Dense(1, W_std=case["W_std"], b_std=case["b_std"])]
    kernel_fn = stax.serial(*layers)[2]
    if case["act"] == "tanh":
        # ElementwiseNumerical holds N^2 deg^2 values: batched, or it needs 60 GB at N = 2000
        kernel_fn = nt.batch(kernel_fn, batch_size=250, store_on_device=False)
    else:
        kernel_fn = jax.jit(kernel_fn, static_argnames="get")
    Xj = jnp.asarray(X)
    best = np.inf
    for r in range(case.get("repeats", 3) + 1):
        t0 = time.perf_counter()
        k = kernel_fn(Xj, None, get=("nngp", "ntk"))
        k.ntk.block_until_ready()
        dt = time.perf_counter() - t0
        if r > 0 or case.get("repeats", 3) == 0:
            best = min(best, dt)
    sub = case["subset"]
    out[case["name"] + "/seconds"] = best
    out[case["name"] + "/nngp"] = np.asarray(k.nngp)[np.ix_(sub, sub)]
    out[case["name"] + "/ntk"] = np.asarray(k.ntk)[np.ix_(sub, sub)]
    print(case["name"], best, flush=True)
np.savez(sys.argv[2], **out)
