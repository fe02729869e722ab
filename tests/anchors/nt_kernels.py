"""Run by neural-tangents' own Python (a separate venv): NNGP/NTK of stax MLPs for given inputs.

usage: python nt_kernels.py IN.npz OUT.npz
IN.npz holds X1, X2 and a JSON list of jobs {name, act, depth, W_std, b_std, parameterization}.
"""
import json
import sys

import numpy as np
import jax

jax.config.update("jax_enable_x64", True)
from neural_tangents import stax  # noqa: E402

ACTS = {
    "relu": lambda: stax.Relu(),
    "erf": lambda: stax.Erf(),
    "gelu": lambda: stax.Gelu(approximate=False),
    "sin": lambda: stax.Sin(),
    "cos": lambda: stax.Cos(),
    "abs": lambda: stax.Abs(),
    "sign": lambda: stax.Sign(),
    "leaky_relu(1/10)": lambda: stax.LeakyRelu(0.1),
    "abrelu(1/2,2)": lambda: stax.ABRelu(0.5, 2.0),
    "rbf": lambda: stax.Rbf(1.0),
    "monomial(3)": lambda: stax.Monomial(3),
    "exp": lambda: stax.Exp(),
    "gaussian": lambda: stax.Gaussian(1.0, -0.5),  # NT: a * exp(b x^2)
}

data = np.load(sys.argv[1])
X1, X2, jobs = data["X1"], data["X2"], json.loads(str(data["jobs"]))
out = {}
for job in jobs:
    layers = []
    for _ in range(job["depth"]):
        layers += [stax.Dense(512, W_std=job["W_std"], b_std=job["b_std"], parameterization=job["parameterization"]), ACTS[job["act"]]()]
    layers += [stax.Dense(1, W_std=job["W_std"], b_std=job["b_std"], parameterization=job["parameterization"])]
    kernel_fn = stax.serial(*layers)[2]
    k = kernel_fn(X1, X2, ("nngp", "ntk"))
    out[job["name"] + "/nngp"] = np.asarray(k.nngp)
    out[job["name"] + "/ntk"] = np.asarray(k.ntk)
np.savez(sys.argv[2], **out)
