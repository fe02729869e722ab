"""Run by neural-tangents' own Python (separate venv): the digits kernel-regression table of examples/digits.py.

usage: python nt_digits.py DATA.npz OUT.json [BATCH]
DATA holds x_train (N, 8, 8, 1), y_train (N, 10), x_test, labels_test and diag_reg.  The same four networks as
examples/digits.py, written in neural-tangents' stax; kernels in float64 (x64), batched (``nt.batch``) with
BATCH rows per block; predictions by ``predict.gradient_descent_mse_ensemble(..., diag_reg)`` at t = inf.
Writes accuracies and wall times per network and kernel, and the kernels' first 8 x 8 test-train entries.
"""
import json
import math
import sys
import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import neural_tangents as nt  # noqa: E402
from neural_tangents import stax  # noqa: E402

W_STD, B_STD = math.sqrt(2.0), 0.1


def conv():
    return stax.Conv(256, (3, 3), padding="SAME", W_std=W_STD, b_std=B_STD)


NETWORKS = {
    "MLP (2 hidden)": stax.serial(stax.Flatten(), stax.Dense(512, W_STD, B_STD), stax.Relu(),
                                  stax.Dense(512, W_STD, B_STD), stax.Relu(), stax.Dense(10, W_STD, B_STD)),
    "CNN, Flatten": stax.serial(conv(), stax.Relu(), conv(), stax.Relu(), stax.Flatten(), stax.Dense(10, W_STD, B_STD)),
    "CNN, GlobalAvgPool": stax.serial(conv(), stax.Relu(), conv(), stax.Relu(), stax.GlobalAvgPool(),
                                      stax.Dense(10, W_STD, B_STD)),
    "Myrtle-style": stax.serial(conv(), stax.Relu(), conv(), stax.Relu(), stax.AvgPool((2, 2), (2, 2)), conv(),
                                stax.Relu(), stax.AvgPool((2, 2), (2, 2)), stax.GlobalAvgPool(),
                                stax.Dense(10, W_STD, B_STD)),
}

data = np.load(sys.argv[1])
batch = int(sys.argv[3]) if len(sys.argv) > 3 else 100
only = set(sys.argv[4].split(",")) if len(sys.argv) > 4 else None
x_train, y_train, x_test = (jnp.asarray(data[k]) for k in ("x_train", "y_train", "x_test"))
labels = np.asarray(data["labels_test"])
diag_reg = float(data["diag_reg"])
out = {}
for name, (_, _, kernel_fn) in NETWORKS.items():
    if only and name not in only:
        continue
    kernel_fn = nt.batch(kernel_fn, batch_size=batch, store_on_device=False)
    t0 = time.perf_counter()
    k_train = kernel_fn(x_train, None, ("nngp", "ntk"))
    k_test = kernel_fn(x_test, x_train, ("nngp", "ntk"))
    np.asarray(k_test.ntk)
    seconds = time.perf_counter() - t0
    row = {"seconds": seconds, "test_train_nngp": np.asarray(k_test.nngp)[:8, :8].tolist(),
           "test_train_ntk": np.asarray(k_test.ntk)[:8, :8].tolist()}
    for get in ("nngp", "ntk"):
        predict = nt.predict.gradient_descent_mse(np.asarray(getattr(k_train, get)), y_train, diag_reg=diag_reg)
        fx = predict(None, 0.0, 0.0, np.asarray(getattr(k_test, get)))  # t = inf, zero outputs at initialisation
        row[get] = float(np.mean(np.argmax(np.asarray(fx[1]), axis=1) == labels))
    out[name] = row
    print(name, row["nngp"], row["ntk"], f"{seconds:.1f} s", flush=True)
json.dump(out, open(sys.argv[2], "w"), indent=1)
