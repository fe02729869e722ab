"""Kernel regression on the digits side by side with neural-tangents: the same four networks, the same split and
diag_reg, test accuracies and kernel times (train-train and test-train NNGP and NTK) in one run.

* ntk-theory: ``examples/digits.py`` (stax ``kernel_fn``, float64);
* neural-tangents 0.6.5 (its own venv, a subprocess): ``benchmarks/anchors/nt_digits.py`` (x64, ``nt.batch``),
  predictions by ``predict.gradient_descent_mse`` at t = inf;
* agreement: the largest relative difference of the first 8 x 8 test-train entries of each kernel.

    python benchmarks/bench_digits.py [--n-train 1000] [--n-test 797] [--nt-python /tmp/ntvenv/bin/python]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section

ROOT = Path(__file__).resolve().parent.parent


def _example():
    spec = importlib.util.spec_from_file_location("digits_example", ROOT / "examples" / "digits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=None)
    parser.add_argument("--nt-python", default="/tmp/ntvenv/bin/python")
    parser.add_argument("--nt-batch", type=int, default=100, help="rows per nt.batch block")
    parser.add_argument("--no-write", action="store_true", help="print only, do not update BENCHMARKS.md")
    args = parser.parse_args(argv)
    example = _example()
    ours = example.run(args.n_train, args.n_test)
    from ntk_theory.datasets import digits

    data = digits(args.n_train, args.n_test)
    with tempfile.TemporaryDirectory() as tmp:
        npz, out = Path(tmp) / "digits.npz", Path(tmp) / "nt.json"
        np.savez(npz, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test, labels_test=data.labels_test,
                 diag_reg=example.DIAG_REG)
        subprocess.run([args.nt_python, str(ROOT / "benchmarks" / "anchors" / "nt_digits.py"), str(npz), str(out),
                        str(args.nt_batch)], check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
        theirs = json.loads(out.read_text())
    # our kernels' first 8 x 8 test-train entries, for the agreement column
    nets = example.architectures()
    lines = [f"Digits, {ours['n_train']} training / {ours['n_test']} test images (fixed split), diag_reg "
             f"{example.DIAG_REG:g} (relative), float64 in both.", "",
             "| network | NNGP acc. (ours / NT) | NTK acc. (ours / NT) | kernel time ours (s) | neural-tangents (s) "
             "| speed-up | max rel. diff. (8x8 entries) |", "|---|---|---|---:|---:|---:|---:|"]
    for name, row in ours["rows"].items():
        nt_row = theirs[name]
        k = nets[name].kernel_fn(data.x_test[:8], data.x_train[:8], ("nngp", "ntk"))
        diff = max(float(np.max(np.abs(getattr(k, q) - np.array(nt_row[key])) / np.abs(np.array(nt_row[key]))))
                   for q, key in (("nngp", "test_train_nngp"), ("ntk", "test_train_ntk")))
        lines.append(f"| {name} | {row['nngp']:.4f} / {nt_row['nngp']:.4f} | {row['ntk']:.4f} / {nt_row['ntk']:.4f} "
                     f"| {row['seconds']:.1f} | {nt_row['seconds']:.1f} | {nt_row['seconds'] / row['seconds']:.1f}x "
                     f"| {diff:.1e} |")
    body = "\n".join(lines) + "\n"
    print(body)
    if not args.no_write:
        write_section("digits", "## Kernel regression on the digits vs neural-tangents\n\n" + body)


if __name__ == "__main__":
    main()
