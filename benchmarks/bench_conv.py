"""CNN-GP / CNTK of [Conv(3x3, SAME), Relu] x L, GlobalAvgPool, Dense: compiled vs neural-tangents, interleaved.

Cases (NNGP and NTK of the full N x N matrix, X2 = None, float64, inputs standard normal):
  'a': N = 32, 16x16x3 images, L = 3;   'b': N = 64, 16x16x3, L = 5;   'c': N = 64, 8x8x3, L = 3;
and the digits CNTK: all 1797 scikit-learn digits (8x8x1, standardised as ``ntk_theory.datasets.digits``), L = 5,
computed by the compiled kernel in a child process (its peak resident memory from ``getrusage``), checked on
its first ``--N-digits-nt`` inputs against neural-tangents.

Every Conv has W_std = sqrt(2), b_std = 0.1 ('ntk' parameterization), the readout Dense(1) W_std = 1.

* ntk-theory compiled: ``codegen.convolution.kernel``, after a warm-up (load from the Numba cache);
* neural-tangents 0.6.5 (its own venv): one persistent subprocess per case running ``jax.jit(kernel_fn)``
  (float64 via jax_enable_x64), warmed up (jit compile) before the first timed run;
* the two are timed alternately (ours, theirs, ours, theirs, ...) ``--repeats`` times, best of each, with the
  1-minute load average recorded before and after (the machine is shared);
* agreement: largest |difference| relative to the largest entry, off the diagonal and on it.

    python benchmarks/bench_conv.py [--nt-python /tmp/ntvenv/bin/python] [--repeats 3] [--no-digits]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section

from ntk_theory import stax
from ntk_theory.codegen import convolution

CASES = {"a": (32, 16, 3, 3), "b": (64, 16, 3, 5), "c": (64, 8, 3, 3)}  # N, side, channels, L


def network_text(L):
    conv = "Conv(1, (3, 3), padding='SAME', W_std=1.4142135623730951, b_std=0.1), Relu()"
    return "serial(" + ", ".join([conv] * L) + ", GlobalAvgPool(), Dense(1))"


NT_SERVER = """
import sys, time
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
from neural_tangents import stax
names = {n: getattr(stax, n) for n in ("serial", "Conv", "Relu", "GlobalAvgPool", "Dense")}
kernel_fn = jax.jit(eval(open(sys.argv[1]).read(), {"__builtins__": {}}, names)[2], static_argnames="get")
X = jnp.asarray(np.load(sys.argv[2]))
k = kernel_fn(X, None, get=("nngp", "ntk"))
k.ntk.block_until_ready()
print("ready", flush=True)
for line in sys.stdin:
    if line.startswith("run"):
        t0 = time.perf_counter()
        k = kernel_fn(X, None, get=("nngp", "ntk"))
        k.ntk.block_until_ready()
        print(time.perf_counter() - t0, flush=True)
    elif line.startswith("save"):
        np.savez(line.split()[1], nngp=np.asarray(k.nngp), ntk=np.asarray(k.ntk))
        print("saved", flush=True)
"""


class NeuralTangents:
    """A persistent neural-tangents process for one network and input set."""

    def __init__(self, nt_python, text, X, tmp):
        (Path(tmp) / "net.txt").write_text(text)
        np.save(Path(tmp) / "x.npy", X)
        (Path(tmp) / "nt_server.py").write_text(NT_SERVER)
        self.tmp = tmp
        self.proc = subprocess.Popen([nt_python, str(Path(tmp) / "nt_server.py"), str(Path(tmp) / "net.txt"),
                                      str(Path(tmp) / "x.npy")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def run(self):
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def result(self):
        path = str(Path(self.tmp) / "out.npz")
        self.proc.stdin.write(f"save {path}\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "saved"
        self.proc.stdin.close()
        self.proc.wait()
        return dict(np.load(path))


def rel(a, b, mask):
    return float(np.max(np.abs(a - b)[mask]) / np.max(np.abs(b)))


def agreement(k, nt):
    off = ~np.eye(len(k.nngp), dtype=bool)
    return {"nngp_off": rel(k.nngp, nt["nngp"], off), "ntk_off": rel(k.ntk, nt["ntk"], off),
            "nngp_diag": rel(k.nngp, nt["nngp"], ~off), "ntk_diag": rel(k.ntk, nt["ntk"], ~off)}


def compare(text, X, repeats, nt_python):
    """(best compiled seconds, best neural-tangents seconds, agreement), timed alternately."""
    net = stax.parse(text)
    convolution.kernel(net, X[:4])  # warm-up: load or compile the module
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        nt = NeuralTangents(nt_python, text, X, tmp)
        for _ in range(repeats):
            t0 = time.perf_counter()
            k = convolution.kernel(net, X)
            ours.append(time.perf_counter() - t0)
            theirs.append(nt.run())
        ref = nt.result()
    return min(ours), min(theirs), agreement(k, ref)


def digits_child(out_path):
    """Child process: the full digits CNTK (L = 5), its wall time and peak resident memory."""
    X = digits_inputs()
    net = stax.parse(network_text(5))
    convolution.kernel(net, X[:4])
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    k = convolution.kernel(net, X)
    seconds = time.perf_counter() - t0
    np.savez(out_path, nngp=k.nngp, ntk=k.ntk, seconds=seconds, rss0_kb=rss0,
             rss_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def digits_inputs():
    """All 1797 digits (8, 8, 1), standardised as ``ntk_theory.datasets.digits`` does (train then test)."""
    from ntk_theory.datasets import digits as split

    s = split(1000)
    return np.concatenate([s.x_train, s.x_test])


def digits(nt_python, n_nt):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "digits.npz"
        load0 = os.getloadavg()[0]
        subprocess.run([sys.executable, __file__, "--digits-child", str(out)], check=True)
        load1 = os.getloadavg()[0]
        res = dict(np.load(out))
        X = digits_inputs()
        nt = NeuralTangents(nt_python, network_text(5), X[:n_nt], tmp)
        nt_seconds = nt.run()
        ref = nt.result()

    class Sub:
        nngp, ntk = res["nngp"][:n_nt, :n_nt], res["ntk"][:n_nt, :n_nt]

    return res, nt_seconds, agreement(Sub, ref), (load0, load1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nt-python", default="/tmp/ntvenv/bin/python")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--N-digits-nt", type=int, default=128)
    parser.add_argument("--no-digits", action="store_true")
    parser.add_argument("--cases", default="abc")
    parser.add_argument("--digits-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.digits_child:
        digits_child(args.digits_child)
        return
    rng = np.random.default_rng(0)
    rows, notes = [], []
    load0 = os.getloadavg()[0]
    for name in args.cases:
        N, side, C, L = CASES[name]
        X = rng.normal(size=(N, side, side, C))
        la = os.getloadavg()[0]
        ours, theirs, agree = compare(network_text(L), X, args.repeats, args.nt_python)
        lb = os.getloadavg()[0]
        rows.append(f"| {name} | {N} | {side}x{side}x{C} | {L} | {ours:.3f} | {theirs:.2f} | {theirs / ours:.1f}x | "
                    f"{agree['nngp_off']:.1e} / {agree['ntk_off']:.1e} | {agree['nngp_diag']:.1e} / "
                    f"{agree['ntk_diag']:.1e} | {la:.1f} / {lb:.1f} |")
        print(rows[-1], flush=True)
    digits_text = "(not run: --no-digits)"
    if not args.no_digits:
        res, nt_s, agree, (d0, d1) = digits(args.nt_python, args.N_digits_nt)
        digits_text = (
            f"Full 1797 x 1797 digits CNTK (8x8x1, L = 5, NNGP and NTK): **{float(res['seconds']):.1f} s** wall, peak "
            f"resident memory {float(res['rss_kb']) / 1024:.0f} MB for the whole process ({float(res['rss0_kb']) / 1024:.0f}"
            f" MB after the warm-up, before the evaluation; the two 1797 x 1797 float64 outputs are 52 MB; the "
            f"evaluation's temporaries are one row tile of at most 64 MB plus 6 P^2 floats per thread); load average "
            f"{d0:.1f} / {d1:.1f} before / after.  Its first {args.N_digits_nt} x {args.N_digits_nt} block against "
            f"neural-tangents on those {args.N_digits_nt} inputs ({nt_s:.2f} s there): {agree['nngp_off']:.1e} / "
            f"{agree['ntk_off']:.1e} off the diagonal, {agree['nngp_diag']:.1e} / {agree['ntk_diag']:.1e} on it.")
        print(digits_text, flush=True)
    load1 = os.getloadavg()[0]
    table = "\n".join(rows)
    body = f"""## CNN-GP / CNTK (convolutions): compiled vs neural-tangents

Network `[Conv(1, (3, 3), padding='SAME', W_std=sqrt(2), b_std=0.1), Relu()] x L, GlobalAvgPool(), Dense(1)`
(covariances of all P x P position pairs), NNGP and NTK of the full N x N matrix (X2 = None), float64, inputs
standard normal.  Compiled: `codegen.convolution.kernel` (parallel over blocks of input pairs a > b).
neural-tangents 0.6.5 (jax, CPU, its own venv, one persistent process per case): `jax.jit(kernel_fn)` after
its jit warm-up.  The two are timed alternately, {args.repeats} times each, best of each.  Agreement: largest
difference relative to the largest entry, NNGP / NTK (neural-tangents' NTK diagonal goes through an arccos at
correlation 1, ours uses the one-variable forms there).

| case | N | images | L | compiled (s) | neural-tangents (s) | speed-up | agreement off diag | on diag | load before / after |
|---|---:|---|---:|---:|---:|---:|---|---|---|
{table}

{digits_text}

Load average (1 min) at the start / end: {load0:.2f} / {load1:.2f} (2 cores shared with other jobs).
"""
    print(body)
    write_section("conv", body)


if __name__ == "__main__":
    main()
