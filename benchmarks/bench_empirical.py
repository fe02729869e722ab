"""Empirical NTK: ntk-theory's three methods side by side with neural-tangents' ``empirical_ntk_fn``, on a ReLU
MLP, on a residual MLP and on a CNN (any architecture description runs through the same code).

CNN (its own section, ``--cnn-only`` runs just that): [Conv(64, (3, 3), SAME), Relu] x 3, Flatten or
GlobalAvgPool, Dense(10), 8x8x3 inputs, N = 32, the full (32, 32, 10, 10) kernel, float64; neural-tangents'
structured derivatives (implementation 3; 1 and 2 with ``--nt-cnn-all``) on the same parameters.

Network: ReLU MLP, 3 hidden layers of width 512, input dimension 32, W_std = sqrt(2), b_std = 0.1
(C_W = 2, C_b = 0.01, param 'ntk'), float64; inputs standard normal, X2 = X1.  Cases: N in {64, 256}
with O = 1, and O = 10 with the full (N, N, 10, 10) kernel.  neural-tangents 0.6.5 (jax 0.4.25, CPU,
its own venv) runs the same network (parameters converted, see anchors/nt_empirical.py) with
implementations 1, 2, 3 (Jacobian contraction, NTK-vector products, structured derivatives),
``vmap_axes=0``, jitted.  Times: after one warm-up call, best of 3 (of 1 for runs longer than 2 s).
Residual MLP: Dense(512), 3 x [FanOut(2), parallel(serial(Relu, Dense(512)), Identity), FanInSum], Relu,
Dense(O), same W_std, b_std; ntk-theory's structured derivatives (``empirical_ntk(net, X, params=...)`` with
the stax network and init_fn's parameters) against neural-tangents' three implementations on the same
parameters.  Then the measured scaling exponents of ntk-theory's methods in N, width and depth against the
cost model.  The load average of the machine is printed and written with the numbers.

    python benchmarks/bench_empirical.py [--nt-python /tmp/ntvenv/bin/python] [--quick] [--cnn-only] [--nt-cnn-all]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import best_of as _best_of  # noqa: E402
from _report import write_section  # noqa: E402


def best_of(fn, repeats=3):
    return _best_of(fn, repeats, warm_up=True, slow=2.0)

from ntk_theory import MLP, stax  # noqa: E402
from ntk_theory.reference import graph as reference_graph  # noqa: E402
from ntk_theory.empirical import ELEMENT_RATE, FLOP_RATE, METHODS, Problem, cost_table, empirical_ntk, plan  # noqa: E402

W_STD, B_STD, D, WIDTH, DEPTH, BLOCKS = math.sqrt(2.0), 0.1, 32, 512, 3, 3
SHORT = {"jacobian_contraction": "Jacobian contraction", "ntk_vector_products": "NTK-vector products",
         "structured": "structured derivatives"}
NT_IMPL = {"jacobian_contraction": 1, "ntk_vector_products": 2, "structured": 3}


def rel(a, ref):
    return float(np.max(np.abs(a - ref)) / np.max(np.abs(ref)))


def cases(quick):
    out = [(64, 1, True), (256, 1, True), (64, 10, False), (256, 10, False)]
    return out[:1] + out[2:3] if quick else out


def skip(method, N, O, trace):
    """Runs left out: Jacobian contraction of the full O = 10 kernel at N = 256 (ours: ~1 min by the
    cost model; neural-tangents would hold J, 256 x 10 x 542,730 float64 = 11 GB)."""
    return method == "jacobian_contraction" and N == 256 and O == 10


def residual(O, width=WIDTH, blocks=BLOCKS):
    """The residual MLP of the module docstring, as a stax network (the same as anchors/nt_empirical.py builds)."""
    dense = lambda n: stax.Dense(n, W_std=W_STD, b_std=B_STD, parameterization="ntk")
    block = [stax.FanOut(2), stax.parallel(stax.serial(stax.Relu(), dense(width)), stax.Identity()), stax.FanInSum()]
    return stax.serial(dense(width), *(block * blocks), stax.Relu(), dense(O))


def run_nt(nt_python, X, nets, todo, residuals=None, staxes=None):
    if not nt_python or not Path(nt_python).exists():
        print("neural-tangents venv not found: its columns stay empty")
        return {}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = {"X": X}
        for name, (net, params) in (residuals or {}).items():
            data[f"{name}/kind"], data[f"{name}/width"], data[f"{name}/blocks"] = "residual", WIDTH, BLOCKS
            data[f"{name}/outputs"], data[f"{name}/W_std"], data[f"{name}/b_std"] = net.description.layers[-1].out_dim, W_STD, B_STD
            for i, (_, a) in enumerate(reference_graph.param_leaves(params)):
                data[f"{name}/leaf{i}"] = a
            data[f"{name}/f4"] = net.apply_fn(params, X[:4])
        for name, (text, params, XN) in (staxes or {}).items():
            net = stax.parse(text)
            data[f"{name}/kind"], data[f"{name}/stax"], data[f"{name}/X"] = "stax", text, XN
            for i, (_, a) in enumerate(reference_graph.param_leaves(params)):
                data[f"{name}/leaf{i}"] = a
            data[f"{name}/f4"] = net.apply_fn(params, XN[:4])
        for name, net in nets.items():
            data[f"{name}/W_std"], data[f"{name}/b_std"] = W_STD, B_STD
            for l, (W, b) in enumerate(zip(net.weights, net.biases), start=1):
                data[f"{name}/W{l}"], data[f"{name}/b{l}"] = W, b
        # the memory-hungry Jacobian contraction of the full kernel in its own process: if it fails,
        # the others still report
        groups = [[c for c in todo if not (c["impl"] == 1 and not c["trace"])], [c for c in todo if c["impl"] == 1 and not c["trace"]]]
        for k, group in enumerate(g for g in groups if g):
            np.savez(Path(tmp) / "in.npz", cases=json.dumps(group), **data)
            run = subprocess.run([nt_python, str(Path(__file__).parent / "anchors" / "nt_empirical.py"),
                                  str(Path(tmp) / "in.npz"), str(Path(tmp) / f"out{k}.npz")])
            if run.returncode == 0:
                results.update(dict(np.load(Path(tmp) / f"out{k}.npz")))
            else:
                print(f"neural-tangents group {k} failed (exit {run.returncode})")
    return results


def retime(ours):
    """Time ntk-theory's runs again after neural-tangents' and keep the better of the two passes (the
    machine is shared: the load changes between the passes)."""
    for r in ours.values():
        if r is not None and "run" in r:
            run = r.pop("run")
            if r["seconds"] < 20.0:  # runs of minutes keep their first pass
                r["seconds"] = min(r["seconds"], best_of(run)[0])


def side_by_side(args, X):
    nets = {f"O{O}": MLP.random((D,) + (WIDTH,) * DEPTH + (O,), "relu", C_W=W_STD**2, C_b=B_STD**2, seed=O)
            for O in (1, 10)}
    todo_nt, ours = [], {}
    for N, O, trace in cases(args.quick):
        net, XN = nets[f"O{O}"], X[:N]
        ref = net.ntk(XN[:16], trace_outputs=trace)  # forward-mode reference on 16 inputs
        for method in METHODS:
            name = f"{N}-{O}-{trace}-{method}"
            if skip(method, N, O, trace):
                ours[name] = None
                continue
            todo_nt.append(dict(name=name, net=f"O{O}", N=N, trace=trace, impl=NT_IMPL[method], repeats=3))
            run = (lambda net=net, XN=XN, method=method, trace=trace:
                   empirical_ntk(net, XN, method=method, trace_outputs=trace))
            seconds, K = best_of(run)
            est = plan(net, N, None, method, trace)
            ours[name] = dict(seconds=seconds, predicted=est.seconds, flops=est.flops, block=K[:8, :8],
                              err=rel(K[:16, :16], ref), memory=est.memory, run=run)
            print(name, f"{seconds:.4f} s (model {est.seconds:.4f} s), error vs MLP.ntk {ours[name]['err']:.1e}", flush=True)
    nt = run_nt(args.nt_python, X, nets, todo_nt)
    retime(ours)

    rows = []
    for N, O, trace in cases(args.quick):
        kind = f"N = {N}, O = {O}" + (" (trace)" if trace and O > 1 else "" if trace else f", full {N}x{N}x{O}x{O}")
        for method in METHODS:
            name = f"{N}-{O}-{trace}-{method}"
            r = ours[name]
            t_nt = nt.get(f"{name}/seconds")
            t_nt = None if t_nt is None else float(t_nt)
            if r is None:
                rows.append(f"| {kind} | {SHORT[method]} | skipped | — | — | {'—' if t_nt is None else f'{t_nt:.3f}'} | — | — |")
                continue
            ratio = "—" if t_nt is None else f"{t_nt / r['seconds']:.1f}x"
            diff = "—" if t_nt is None else f"{rel(r['block'], nt[f'{name}/block']):.0e}"
            rows.append(f"| {kind} | {SHORT[method]} | {r['seconds']:.3f} | {r['predicted']:.3f} | {r['flops'] / 1e9:.3g} | "
                        f"{'—' if t_nt is None else f'{t_nt:.3f}'} | {ratio} | {r['err']:.0e} / {diff} |")
    return rows


RESIDUAL_CASES = [(256, 1, True, (1, 2, 3)), (64, 10, False, (2, 3))]


def residual_side_by_side(args, X):
    """ntk-theory's structured derivatives on the residual MLP against neural-tangents' three implementations
    (Jacobian contraction left out for the full O = 10 kernel: J alone would be 64 x 10 x P float64 = 4 GB)."""
    cases = RESIDUAL_CASES[:1] if args.quick else RESIDUAL_CASES
    nets = {}
    for O in sorted({c[1] for c in cases}):
        net = residual(O)
        nets[f"res{O}"] = (net, net.init_fn(O, (1, D))[1])
    ours, todo = {}, []
    for N, O, trace, impls in cases:
        net, params = nets[f"res{O}"]
        XN = X[:N]
        name = f"res-{N}-{O}-{trace}"
        ref = reference_graph.ntk(net.description, params, XN[:16], trace_outputs=trace)  # reference network
        run = (lambda net=net, XN=XN, trace=trace, params=params:
               empirical_ntk(net, XN, method="structured", trace_outputs=trace, params=params))
        seconds, K = best_of(run)
        est = plan(net, N, None, "structured", trace, input_dim=D)
        ours[name] = dict(seconds=seconds, predicted=est.seconds, err=rel(K[:16, :16], ref), block=K[:8, :8], run=run)
        print(name, f"structured {seconds:.4f} s (model {est.seconds:.4f} s), error vs reference.graph.ntk "
              f"{ours[name]['err']:.1e}", flush=True)
        todo += [dict(name=f"{name}-{i}", net=f"res{O}", N=N, trace=trace, impl=i, repeats=3) for i in impls]
    nt = run_nt(args.nt_python, X, {}, todo, residuals=nets)
    retime(ours)
    rows = []
    for N, O, trace, impls in cases:
        name = f"res-{N}-{O}-{trace}"
        r = ours[name]
        kind = f"N = {N}, O = {O}" + ("" if trace else f", full {N}x{N}x{O}x{O}")
        nt_times = {i: float(nt[f"{name}-{i}/seconds"]) for i in impls if f"{name}-{i}/seconds" in nt}
        cells = [f"{nt_times[i]:.3f}" if i in nt_times else ("—" if i in impls else "not run") for i in (1, 2, 3)]
        fastest = min(nt_times, key=nt_times.get) if nt_times else None
        ratio = "—" if fastest is None else f"{nt_times[fastest] / r['seconds']:.1f}x"
        diff = "—" if fastest is None else f"{rel(r['block'], nt[f'{name}-{fastest}/block']):.0e}"
        rows.append(f"| {kind} | {r['seconds']:.3f} | {r['predicted']:.3f} | {' | '.join(cells)} | {ratio} | "
                    f"{r['err']:.0e} / {diff} |")
    return rows


CNN_N, CNN_O, CNN_SHAPE, CNN_CHANNELS = 32, 10, (8, 8, 3), 64


def cnn_text(readout, channels=CNN_CHANNELS, layers=3, O=CNN_O):
    """[Conv(channels, (3, 3), SAME), Relu] x layers, readout (Flatten or GlobalAvgPool), Dense(O), in stax syntax."""
    conv = f"Conv({channels}, (3, 3), padding='SAME', W_std=1.4142135623730951, b_std=0.1), Relu()"
    return f"serial({', '.join([conv] * layers)}, {readout}(), Dense({O}, W_std=1.0, b_std=0.1))"


CNN_IMPLS = (3,)  # neural-tangents' implementations 1 and 2 take minutes each on this CNN: --nt-cnn-all


def cnn_side_by_side(args):
    """The CNN of the issue (3 conv layers of 64 channels, 8x8x3 inputs, N = 32, O = 10, full kernel) with a
    Flatten and a GlobalAvgPool readout: ntk-theory's three methods and auto against neural-tangents'
    implementations on the same parameters, float64."""
    XN = np.random.default_rng(3).standard_normal((CNN_N,) + CNN_SHAPE)
    impls = CNN_IMPLS + ((2, 1) if args.nt_cnn_all else ())
    ours, todo, staxes = {}, [], {}
    readouts = ("Flatten",) if args.quick else ("Flatten", "GlobalAvgPool")
    for readout in readouts:
        text = cnn_text(readout)
        net = stax.parse(text)
        _, params = reference_graph.init(net.description, 1, XN.shape)
        staxes[f"cnn-{readout}"] = (text, params, XN)
        ref = reference_graph.ntk(net.description, params, XN[:8], trace_outputs=False)  # reference network
        for method in METHODS + ("auto",):
            name = f"cnn-{readout}-{method}"
            run = (lambda net=net, method=method, params=params:
                   empirical_ntk(net, XN, method=method, trace_outputs=False, params=params))
            seconds, K = best_of(run)
            est = plan(net, CNN_N, None, method, False, input_dim=CNN_SHAPE)
            ours[name] = dict(seconds=seconds, predicted=est.seconds, flops=est.flops, err=rel(K[:8, :8], ref),
                              block=K[:8, :8], run=run, chosen=est.method)
            print(name, f"{seconds:.3f} s (model {est.seconds:.3f} s, runs {est.method}), error vs reference "
                  f"{ours[name]['err']:.1e}", flush=True)
        todo += [dict(name=f"cnn-{readout}-{i}", net=f"cnn-{readout}", N=CNN_N, trace=False, impl=i, repeats=3)
                 for i in impls]
    nt = run_nt(args.nt_python, XN.reshape(CNN_N, -1), {}, todo, staxes=staxes)
    retime(ours)
    rows = []
    for readout in readouts:
        nt_times = {i: float(nt[f"cnn-{readout}-{i}/seconds"]) for i in impls if f"cnn-{readout}-{i}/seconds" in nt}
        fastest = min(nt_times, key=nt_times.get) if nt_times else None
        nt_cells = " | ".join(f"{nt_times[i]:.3f}" if i in nt_times else ("—" if i in impls else "not run")
                              for i in (1, 2, 3))
        for method in METHODS + ("auto",):
            r = ours[f"cnn-{readout}-{method}"]
            ratio = "—" if fastest is None else f"{nt_times[fastest] / r['seconds']:.1f}x"
            diff = "—" if fastest is None else f"{rel(r['block'], nt[f'cnn-{readout}-{fastest}/block']):.0e}"
            label = SHORT.get(method, f"auto ({SHORT[r['chosen']]})")
            rows.append(f"| {readout} | {label} | {r['seconds']:.3f} | {r['predicted']:.3f} | {r['flops'] / 1e9:.3g} | "
                        f"{nt_cells} | {ratio} | {r['err']:.0e} / {diff} |")
    return rows


def cnn_body(rows, load_before, load_after):
    p = Problem.of(stax.parse(cnn_text("Flatten")), CNN_N, None, False, input_dim=CNN_SHAPE)
    return f"""### Empirical NTK of a CNN

[Conv(64, (3, 3), SAME, W_std = sqrt(2), b_std = 0.1), Relu] x 3, Flatten or GlobalAvgPool, Dense(10, W_std = 1,
b_std = 0.1) (`param='ntk'`), inputs 8 x 8 x 3 standard normal, N = {CNN_N}, X2 = X1, the full ({CNN_N}, {CNN_N}, 10, 10)
kernel, float64 in both libraries; P = {p.P:,} parameters with Flatten.  ntk-theory:
`empirical_ntk(net, X, method=..., trace_outputs=False, params=params)` on the stax network; neural-tangents 0.6.5
on the same parameters (`empirical_ntk_fn(apply_fn, trace_axes=(), vmap_axes=0, implementation=i)`, jitted),
its Jacobian contraction and NTK-vector products (implementations 1, 2: minutes each on this machine) only with
`--nt-cnn-all`.  Timing as
above (warm-up, best of 3, ntk-theory before and after neural-tangents).  Errors: against the reference network's
`reference.graph.ntk` (forward mode) on the first 8 inputs / against neural-tangents' fastest implementation on
the leading 8 x 8 block.  ntk-theory's structured derivatives contract each shared-weight layer either by its
Jacobian rows ``sum_p g_(a,o,p) (x) x_(a,p)`` or by Grams over (input, position) rows, whichever the cost
model predicts cheaper (here: Jacobian rows for every Conv), and the readout by its input Gram alone.

| readout | ntk-theory method | ntk-theory (s) | model (s) | GFLOPs | NT Jacobian contraction (s) | NT NTK-vector products (s) | NT structured (s) | NT fastest / ours | rel. error vs reference / vs NT |
|---|---|---:|---:|---:|---:|---:|---:|---:|---|
{chr(10).join(rows)}

Load average (1, 5, 15 min) before {", ".join(f"{x:.1f}" for x in load_before)}, after
{", ".join(f"{x:.1f}" for x in load_after)} (2 cores).  OpenBLAS threads for ntk-theory:
{os.environ.get("OPENBLAS_NUM_THREADS", "default (one per core)")} (with the cores oversubscribed by other jobs,
OpenBLAS's threads on these short, wide products wait on each other: `OPENBLAS_NUM_THREADS=1` ran the same
products several times faster in a separate measurement; neural-tangents runs on XLA's own thread pool).

```
{cost_table(p)}
```"""


def scaling(args):
    """Exponents k of time ~ x^k (least squares on log-log) for N, width and depth, measured and modelled."""
    base = dict(N=128, width=WIDTH, depth=DEPTH)
    sweeps = {"N": (64, 128, 256), "width": (128, 256, 512), "depth": (2, 4, 6)}
    if args.quick:
        sweeps = {"N": (32, 64, 128), "width": (64, 128, 256), "depth": (2, 3, 4)}
        base = dict(N=64, width=256, depth=DEPTH)
    rng = np.random.default_rng(1)
    rows = []
    for method in METHODS:
        for var, values in sweeps.items():
            times, model = [], []
            for x in values:
                s = dict(base, **{var: x})
                net = MLP.random((D,) + (s["width"],) * s["depth"] + (1,), "relu", C_W=W_STD**2, C_b=B_STD**2, seed=0)
                X = rng.standard_normal((s["N"], D))
                times.append(best_of(lambda: empirical_ntk(net, X, method=method), repeats=3)[0])
                model.append(plan(net, s["N"], None, method).seconds)
            lx = np.log(values)
            k_meas, k_model = np.polyfit(lx, np.log(times), 1)[0], np.polyfit(lx, np.log(model), 1)[0]
            print(method, var, values, [f"{t:.3g}" for t in times], f"measured {k_meas:.2f} model {k_model:.2f}", flush=True)
            t_str = ", ".join(f"{t:.3g}" for t in times)
            rows.append(f"| {SHORT[method]} | {var} {', '.join(map(str, values))} | {t_str} | {k_meas:.2f} | {k_model:.2f} |")
    return rows, base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nt-python", default="/tmp/ntvenv/bin/python", help="neural-tangents' venv python")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cnn-only", action="store_true", help="only the CNN comparison (its own section)")
    parser.add_argument("--nt-cnn-all", action="store_true",
                        help="also neural-tangents' implementations 1 and 2 on the CNN (minutes each)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    cnn_rows = cnn_side_by_side(args)
    write_section("empirical-cnn", cnn_body(cnn_rows, load_before, os.getloadavg()))
    if args.cnn_only:
        return
    X = np.random.default_rng(0).standard_normal((256, D))
    load_before = os.getloadavg()
    rows = side_by_side(args, X)
    res_rows = residual_side_by_side(args, X)
    scale_rows, base = scaling(args)
    load_after = os.getloadavg()
    tables = "\n\n".join(
        "```\n" + cost_table(Problem.of((D,) + (WIDTH,) * DEPTH + (O,), 256, None, trace)) + "\n```"
        for O, trace in ((1, True), (10, False))
    )
    body = f"""## Empirical NTK vs neural-tangents

ReLU MLP, {DEPTH} hidden layers of width {WIDTH}, input dimension {D}, W_std = sqrt(2), b_std = {B_STD}
(`param='ntk'`), float64, X2 = X1 (N x {D} standard normal).  ntk-theory: `empirical_ntk(net, X, method=...)`
(NumPy/OpenBLAS, memory-bounded blocks under 2 GiB); "model" is the cost model's predicted time
(FLOPs / {FLOP_RATE / 1e9:.0f} GFLOP/s + elementwise elements / {ELEMENT_RATE / 1e9:.0f} G/s).  neural-tangents 0.6.5
(jax 0.4.25, CPU, own venv): `nt.empirical_ntk_fn(apply_fn, trace_axes=(-1,) or (), vmap_axes=0,
implementation=1/2/3)` on the same network (parameters converted), jitted, after a warm-up run.
Both after a warm-up call, then best of 3 (1 for runs over 2 s); ntk-theory is timed before and after
neural-tangents and the better pass is reported (runs over 20 s: the first pass; the 2 cores are shared with other jobs).  Errors: ntk-theory against the reference network's forward-mode
`MLP.ntk` on the first 16 inputs / against neural-tangents on the leading 8 x 8 block.

| case | method | ntk-theory (s) | model (s) | GFLOPs | neural-tangents (s) | NT / ours | rel. error vs MLP.ntk / vs NT |
|---|---|---:|---:|---:|---:|---:|---|
{chr(10).join(rows)}

Skipped: Jacobian contraction of the full O = 10 kernel at N = 256 (cost model: about a minute for
ntk-theory; neural-tangents would hold J, 256 x 10 x 542,730 float64 = 11 GB, on this shared machine).
`auto` picks structured derivatives in every case above (see the cost tables below).

ntk-theory's Jacobian contraction builds J by reverse mode as the paper defines it (one VJP per output
and input, N O [FP], then N^2 O^2 P for the contraction); its NTK-vector products use the exact
symmetry of X2 = X1 (blocks j >= i only).

Residual MLP (Dense({WIDTH}), {BLOCKS} x [FanOut(2), parallel(serial(Relu, Dense({WIDTH})), Identity), FanInSum], Relu,
Dense(O), same W_std and b_std, `param='ntk'`, P = {Problem.of(residual(1), 1, input_dim=D).P:,} for O = 1):
ntk-theory's structured derivatives (`empirical_ntk(net, X, params=params)`, the stax network and its
`init_fn` parameters) against neural-tangents' three implementations on the same parameters (its
Jacobian contraction is not run for the full O = 10 kernel: J alone would be 64 x 10 x P float64 = 4 GB).
Errors: against the reference network's `reference.graph.ntk` on the first 16 inputs / against
neural-tangents' fastest implementation on the leading 8 x 8 block.

| case | ntk-theory structured (s) | model (s) | NT Jacobian contraction (s) | NT NTK-vector products (s) | NT structured (s) | NT fastest / ours | rel. error vs reference / vs NT |
|---|---:|---:|---:|---:|---:|---:|---|
{chr(10).join(res_rows)}

Load average (1, 5, 15 min) before the run {", ".join(f"{x:.1f}" for x in load_before)}, after it
{", ".join(f"{x:.1f}" for x in load_after)} (2 cores; other jobs shared the machine when it exceeds 2).

Scaling of time with N, width and depth (others at N = {base['N']}, width {base['width']}, depth {base['depth']}, O = 1,
trace), exponent k of time ~ x^k fitted on log-log, measured and from the cost model at the same points:

| method | sweep | seconds | measured k | model k |
|---|---|---|---:|---:|
{chr(10).join(scale_rows)}

Cost model at N = 256 (`ntk-theory empirical-cost --n 256 [--outputs 10 --no-trace]`):

{tables}"""
    write_section("empirical", body)


if __name__ == "__main__":
    main()
