"""Side-by-side re-run of the BENCHMARKS.md sections: this tree against an older commit, interleaved.

Every case is a small program (set-up, then a ``run()`` returning the arrays to compare) run in a fresh process
per tree: the older tree exported with ``git archive REV ntk_theory`` into ``/tmp/old_REV`` and put
first on ``PYTHONPATH`` (the child runs in another directory, so the editable install's checkout is not on
``sys.path`` ahead of it; the child reports which package it imported), this tree through the editable install
or (``--new-tree``) an export of it.
A child calls ``run()`` once untimed (compiled modules loaded or compiled into that tree's own kernel cache)
and then ``repeats`` times timed.  The parent alternates the trees ``k`` times (old, new, new, old, ...), so both
see the same machine, and records the 1-minute load average before and after each child, and the CPU
seconds of each timed call (``time.process_time``: all threads of the child; it is charged only while the
child runs, so the machine's other load changes it less than the wall time; Dask's workers are not in it).  Reported per tree:
the best time over all timed calls, and the spread ``median / best - 1`` of those calls (the noise).  The
results are appended as JSON lines to ``--out``; ``--table`` prints the Markdown table from that file.

    git archive d9ec229 ntk_theory | tar -x -C /tmp/old_d9ec229   (likewise for each case's commit)
    git archive HEAD ntk_theory | tar -x -C /tmp/new_HEAD
    python benchmarks/bench_rerun.py --cases kernels_relu_4000_10,mc_ --k 3 --new-tree /tmp/new_HEAD --out /tmp/rerun.jsonl
    python benchmarks/bench_rerun.py --table --out /tmp/rerun.jsonl
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from _report import write_section  # noqa: E402

# ---------------------------------------------------------------------------------------------------------
# The cases: (section, case text, reference commit, repeats per child, set-up code defining run()).
# ---------------------------------------------------------------------------------------------------------

_MC = """
from ntk_theory.defaults import default_inputs
from ntk_theory.montecarlo import sample_statistics
X = default_inputs()
def run():
    sample_statistics(X, "relu", 3, 256, samples={samples}, seed=0, sampler={sampler!r}, workers={workers})
    return []
"""

_MC_FORWARD = """
from ntk_theory import MLP
from ntk_theory.defaults import default_inputs
X = default_inputs()
def run():
    return [np.array([MLP.random((2, 256, 256, 256, 1), "relu", C_W=2.0, seed=s).ntk(X) for s in range(20)])]
"""

_EMP_MLP = """
import math
from ntk_theory import MLP
from ntk_theory.empirical import empirical_ntk
X = np.random.default_rng(0).standard_normal(({N}, 32))
net = MLP.random((32, 512, 512, 512, {O}), "relu", C_W=2.0, C_b=0.01, seed={O})
def run():
    return [empirical_ntk(net, X, method={method!r}, trace_outputs={trace})]
"""

_EMP_RES = """
import math
from ntk_theory import stax
from ntk_theory.empirical import empirical_ntk
W, B = math.sqrt(2.0), 0.1
dense = lambda n: stax.Dense(n, W_std=W, b_std=B, parameterization="ntk")
block = [stax.FanOut(2), stax.parallel(stax.serial(stax.Relu(), dense(512)), stax.Identity()), stax.FanInSum()]
net = stax.serial(dense(512), *(block * 3), stax.Relu(), dense({O}))
params = net.init_fn({O}, (1, 32))[1]
X = np.random.default_rng(0).standard_normal(({N}, 32))
def run():
    return [empirical_ntk(net, X, method="structured", trace_outputs={trace}, params=params)]
"""

_EMP_CNN = """
from ntk_theory import stax
from ntk_theory.empirical import empirical_ntk
from ntk_theory.reference import graph as reference_graph
conv = "Conv(64, (3, 3), padding='SAME', W_std=1.4142135623730951, b_std=0.1), Relu()"
net = stax.parse("serial(" + ", ".join([conv] * 3) + ", {readout}(), Dense(10, W_std=1.0, b_std=0.1))")
X = np.random.default_rng(0).standard_normal((32, 8, 8, 3))
_, params = reference_graph.init(net.description, 1, X.shape)
def run():
    return [empirical_ntk(net, X, method={method!r}, trace_outputs=False, params=params)]
"""

_KERNEL = """
from ntk_theory.codegen import CompiledKernel
X = np.random.default_rng(0).standard_normal(({N}, 32))
k = CompiledKernel({act!r}, {L}, C_W=1.96, C_b=0.01)
def run():
    r = k(X)
    return [r.nngp[:200, :200], r.ntk[:200, :200]]
"""

_KERNEL_NUMPY = """
from ntk_theory.recursions import KernelRecursion
X = np.random.default_rng(0).standard_normal(({N}, 32))
rec = KernelRecursion({act!r}, {L}, C_W=1.96, C_b=0.01)
def run():
    r = rec(X)
    return [r.nngp[:200, :200], r.ntk[:200, :200]]
"""

def _function_source(path: Path, name: str) -> str:
    """The text of the top-level function ``name`` of the file ``path``, decorators included (read, not imported)."""
    text = path.read_text()
    fn = next(n for n in ast.parse(text).body if isinstance(n, ast.FunctionDef) and n.name == name)
    first = min([d.lineno for d in fn.decorator_list] + [fn.lineno])
    return "\n".join(text.splitlines()[first - 1:fn.end_lineno])


# the control case: bench_floor's loop (no ntk-theory code), the same in both trees
_FLOOR = ("import math, numba\n" + _function_source(Path(__file__).resolve().parent / "bench_floor.py", "floor")
          + "\nx = np.random.default_rng(0).random(4000)\ndef run():\n    return [floor(x, 10)]\n")

_FW = """
from ntk_theory.finite_width import finite_width
X = np.random.default_rng(0).standard_normal(({N}, {d}))
finite_width({act!r}, X[:3], 1, C_W={C_W}, C_b={C_b})  # compiled modules and symbolic caches
def run():
    r = finite_width({act!r}, X, {L}, C_W={C_W}, C_b={C_b})
    return [np.asarray(v, float) for v in r.arrays().values()]
"""

_STAX_RES = """
from ntk_theory import stax
from ntk_theory.codegen.graph import CompiledGraphKernel
dense = lambda: stax.Dense(512, W_std=1.4, b_std=0.1)
layers = [dense()]
for _ in range(10):
    layers += [stax.FanOut(2), stax.parallel(stax.Identity(), stax.serial(stax.Relu(), dense(), stax.Relu(), dense())),
               stax.FanInSum()]
net = stax.serial(*layers, stax.Relu(), stax.Dense(1, W_std=1.4, b_std=0.1))
k = CompiledGraphKernel(net)
X = np.random.default_rng(0).standard_normal(({N}, 32))
def run():
    r = k.evaluate(X)
    return [r.nngp[:200, :200], r.ntk[:200, :200]]
"""

_CONV = """
from ntk_theory import stax
from ntk_theory.codegen import convolution
conv = "Conv(1, (3, 3), padding='SAME', W_std=1.4142135623730951, b_std=0.1), Relu()"
net = stax.parse("serial(" + ", ".join([conv] * {L}) + ", GlobalAvgPool(), Dense(1))")
X = np.random.default_rng(0).standard_normal(({N}, {side}, {side}, 3))
convolution.kernel(net, X[:4])
def run():
    k = convolution.kernel(net, X)
    return [k.nngp, k.ntk]
"""

_CONV_DIGITS = """
from ntk_theory import stax
from ntk_theory.codegen import convolution
from ntk_theory.datasets import digits
s = digits(1000)
X = np.concatenate([s.x_train, s.x_test])[:{N}]
conv = "Conv(1, (3, 3), padding='SAME', W_std=1.4142135623730951, b_std=0.1), Relu()"
net = stax.parse("serial(" + ", ".join([conv] * 5) + ", GlobalAvgPool(), Dense(1))")
convolution.kernel(net, X[:4])
def run():
    k = convolution.kernel(net, X)
    return [k.nngp, k.ntk]
"""

_MLP_LOOP = """
from ntk_theory.codegen import CompiledKernel
X = np.random.default_rng(0).standard_normal(({N}, 32))
k = CompiledKernel({act!r}, {L}, C_W=1.96, C_b=0.01)
a = k(X)
def run():
    k(X, out=(a.nngp, a.ntk))
    return [a.nngp[:200, :200], a.ntk[:200, :200]]
"""

_MLP_STRAIGHT = """
from ntk_theory.codegen.graph import CompiledGraphKernel
from ntk_theory.architecture.mlp import mlp_description
X = np.random.default_rng(0).standard_normal(({N}, 32))
k = CompiledGraphKernel(mlp_description({act!r}, {L}, C_W=1.96, C_b=0.01), loops=False)
a = k(X)
def run():
    k(X, out=(a.nngp, a.ntk))
    return [a.nngp[:200, :200], a.ntk[:200, :200]]
"""

_DIGITS = """
import importlib.util
spec = importlib.util.spec_from_file_location("digits_example", {example!r})
ex = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ex)
from ntk_theory.datasets import digits
data = digits({n_train}, {n_test})
net = ex.architectures()[{name!r}]
net.kernel_fn(data.x_test[:4], data.x_train[:4], ("nngp", "ntk"))  # the compiled module loaded
def run():
    train = net.kernel_fn(data.x_train, None, ("nngp", "ntk"))
    test = net.kernel_fn(data.x_test, data.x_train, ("nngp", "ntk"))
    return [train.nngp, train.ntk, test.nngp, test.ntk]
"""

_DASK = """
import logging
from distributed import Client, LocalCluster
from ntk_theory import stax
from ntk_theory.distributed import blocked_kernel
layers = []
for _ in range(10):
    layers += [stax.Dense(1, W_std=2**0.5, b_std=0.1**0.5), stax.Relu()]
net = stax.serial(*layers, stax.Dense(1, W_std=2**0.5, b_std=0.1**0.5))
X = np.random.default_rng(0).standard_normal(({N}, 16))
cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                       silence_logs=logging.ERROR)
client = Client(cluster)
blocked_kernel(net, X[:200], chunks=100, scheduler=client, progress=False)  # workers load the kernel
def run():
    k = blocked_kernel(net, X, chunks={chunk}, scheduler=client, progress=False)
    return [np.asarray(k.nngp)[:200, :200], np.asarray(k.ntk)[:200, :200]]
"""

_DASK_MEMORY = """
from ntk_theory import stax
from ntk_theory.codegen.graph import compiled_graph_kernel
layers = []
for _ in range(10):
    layers += [stax.Dense(1, W_std=2**0.5, b_std=0.1**0.5), stax.Relu()]
net = stax.serial(*layers, stax.Dense(1, W_std=2**0.5, b_std=0.1**0.5))
X = np.random.default_rng(0).standard_normal(({N}, 16))
kern = compiled_graph_kernel(net)
def run():
    k = kern.evaluate(X)
    return [k.nngp[:200, :200], k.ntk[:200, :200]]
"""

_DNTK = """
from ntk_theory.finite_width import FiniteWidthRecursion
X = np.random.default_rng(0).standard_normal(({N}, 4))
FiniteWidthRecursion("tanh", 1, C_W=1.5, C_b=0.1).ddntk(X[:2])  # compiled modules, symbolic caches
def run():
    rec = FiniteWidthRecursion("tanh", {L}, C_W=1.5, C_b=0.1)
    d = rec.dntk(X)
    dd = rec.ddntk(X)
    return [d[-1].P, d[-1].Q, dd[-1].R, dd[-1].S, dd[-1].T, dd[-1].U]
"""

OLD = "d9ec229"
EXAMPLE = str(ROOT / "examples" / "digits.py")


def _cases() -> dict:
    c = {}

    def add(key, section, text, ref, repeats, code, env=None, **fmt):
        c[key] = dict(section=section, case=text, ref=ref, repeats=repeats, code=code.format(**fmt), env=env or {})

    # OpenBLAS with one thread: on the shared, oversubscribed cores its two threads wait on each other
    one_blas = {"OPENBLAS_NUM_THREADS": "1"}

    mc = "Monte Carlo throughput"
    add("mc_projected_1", mc, "projected sampler, 1 worker, 100k networks", OLD, 2, _MC, samples=100_000,
        sampler="projected", workers=1)
    add("mc_projected_2", mc, "projected sampler, 2 workers, 100k networks", OLD, 2, _MC, samples=100_000,
        sampler="projected", workers=2)
    add("mc_dense_1", mc, "dense sampler, 1 worker, 4000 networks", OLD, 2, _MC, samples=4000, sampler="dense",
        workers=1)
    add("mc_forward", mc, "reference MLP.ntk (forward mode), 20 networks", OLD, 2, _MC_FORWARD)
    emp = "Empirical NTK (MLP)"
    for N, O, trace in ((256, 1, True), (64, 10, False)):
        for m in ("jacobian_contraction", "ntk_vector_products", "structured"):
            full = "" if trace else f", full {N}x{N}x{O}x{O}"
            add(f"emp_{N}_{O}_{m}", emp, f"N = {N}, O = {O}{full}, {m.replace('_', ' ')}", OLD, 3, _EMP_MLP, env=one_blas,
                N=N, O=O, method=m, trace=trace)
    for N, O, trace in ((256, 1, True), (64, 10, False)):
        add(f"emp_res_{N}_{O}", "Empirical NTK (residual MLP)", f"N = {N}, O = {O}, structured", "feff45a", 3,
            _EMP_RES, env=one_blas, N=N, O=O, trace=trace)
    for readout in ("Flatten", "GlobalAvgPool"):
        for m in ("jacobian_contraction", "structured"):
            add(f"emp_cnn_{readout}_{m}", "Empirical NTK (CNN)", f"{readout}, {m.replace('_', ' ')}", "5c546a1", 2,
                _EMP_CNN, env=one_blas, readout=readout, method=m)
    ker = "Compiled kernels"
    for act, N, L in (("relu", 4000, 10), ("relu", 2000, 3), ("erf", 2000, 3), ("gelu", 2000, 3), ("tanh", 2000, 3)):
        add(f"kernels_{act}_{N}_{L}", ker, f"CompiledKernel {act}, N = {N}, depth {L}", OLD, 3, _KERNEL,
            act=act, N=N, L=L)
    add("kernels_numpy_relu_1000_10", ker, "KernelRecursion (NumPy) relu, N = 1000, depth 10", OLD, 2,
        _KERNEL_NUMPY, act="relu", N=1000, L=10)
    add("floor", "ReLU floor", "the atan2/sqrt floor loop, N = 4000, depth 10 (no ntk-theory code)", OLD, 3, _FLOOR)
    fw = "Finite-width tensors"
    add("fw_relu_8_d5", fw, "issue 5: relu N = 8, d = 4, depth 5, warm", OLD, 2, _FW, act="relu", N=8, d=4, L=5,
        C_W=1.5, C_b=0.1)
    add("fw_tanh_8_d5", fw, "issue 5: tanh N = 8, d = 4, depth 5, warm", OLD, 2, _FW, act="tanh", N=8, d=4, L=5,
        C_W=1.5, C_b=0.1)
    for N in (8, 16):
        for cb in (0.0, 0.1):
            add(f"fw_relu_{N}_cb{cb}", fw, f"scaling: relu (C_W 2, C_b {cb}) N = {N}, d = 16, depth 3", OLD, 2, _FW,
                act="relu", N=N, d=16, L=3, C_W=2.0, C_b=cb)
    add("fw_tanh_8", fw, "scaling: tanh (C_W 1.5, C_b 0.1) N = 8, d = 16, depth 3", OLD, 2, _FW, act="tanh", N=8, d=16,
        L=3, C_W=1.5, C_b=0.1)
    add("stax_res_4000", "Residual stax kernel", "10 residual blocks, N = 4000", "b902c85", 3, _STAX_RES, N=4000)
    add("stax_mlp_4000", "Residual stax kernel", "its MLP, depth 10, N = 4000", "b902c85", 3, _KERNEL,
        act="relu", N=4000, L=10)
    cv = "CNN-GP / CNTK"
    add("conv_a", cv, "a: N = 32, 16x16x3, L = 3", "faae9eb", 2, _CONV, N=32, side=16, L=3)
    add("conv_c", cv, "c: N = 64, 8x8x3, L = 3", "faae9eb", 2, _CONV, N=64, side=8, L=3)
    add("conv_digits_256", cv, "digits CNTK L = 5, first 256 images", "faae9eb", 2, _CONV_DIGITS, N=256)
    mg = "One-MLP description kernel"
    for act, N, L in (("relu", 4000, 10), ("tanh", 2000, 3)):
        add(f"mlp_loop_{act}_{N}_{L}", mg, f"CompiledKernel (loop) {act}, N = {N}, depth {L}", "5c546a1", 3,
            _MLP_LOOP, act=act, N=N, L=L)
        add(f"mlp_straight_{act}_{N}_{L}", mg, f"straight-line {act}, N = {N}, depth {L}", "5c546a1", 3,
            _MLP_STRAIGHT, act=act, N=N, L=L)
    for name in ("MLP (2 hidden)", "CNN, Flatten", "CNN, GlobalAvgPool", "Myrtle-style"):
        key = "digits_" + name.split()[0].strip(",").lower() + ("_gap" if "Global" in name else "")
        add(key, "Digits kernel regression", f"{name}, 500 train / 300 test kernels", "4a498a7", 1, _DIGITS,
            example=EXAMPLE, n_train=500, n_test=300, name=name)
    dk = "Dask blocked kernels"
    add("dask_memory_4000", dk, "in-memory compiled kernel, N = 4000", "d5ac9b4", 3, _DASK_MEMORY, N=4000)
    add("dask_2w_4000_1000", dk, "2 workers, tiles 1000, in memory, N = 4000", "d5ac9b4", 3, _DASK, N=4000, chunk=1000)
    for N in (3, 4):
        add(f"dntk_{N}_2", "dNTK / ddNTK", f"tanh .dntk + .ddntk, N = {N}, depth 2", "01b2217", 2, _DNTK, N=N, L=2)
    return c


CASES = _cases()

_CHILD = """
import json, os, sys, time
import numpy as np
import ntk_theory
{code}
run()
times, cpu = [], []
for _ in range({repeats}):
    t0, c0 = time.perf_counter(), time.process_time()
    res = run()
    times.append(time.perf_counter() - t0)
    cpu.append(time.process_time() - c0)
np.savez({out!r}, *[np.asarray(a) for a in res])
print(json.dumps(dict(times=times, cpu=cpu, tree=ntk_theory.__file__)))
"""


def _child(tree: str | None, case: dict, out: str, tmp: str) -> dict:
    """One child process: ``tree`` None is the editable checkout, otherwise an exported package directory."""
    env = dict(os.environ, **case["env"])
    env.pop("PYTHONPATH", None)
    if tree is not None:
        env["PYTHONPATH"] = tree
        env["NTK_THEORY_CACHE"] = os.path.join(tree, ".kernel-cache")
    code = _CHILD.format(code=textwrap.dedent(case["code"]), repeats=case["repeats"], out=out)
    load0 = os.getloadavg()[0]
    run = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp, capture_output=True, text=True)
    load1 = os.getloadavg()[0]
    if run.returncode:
        raise RuntimeError(f"child failed ({tree or 'this tree'}):\n{run.stderr[-3000:]}")
    res = json.loads(run.stdout.strip().splitlines()[-1])
    expected = (Path(tree) if tree else ROOT) / "ntk_theory" / "__init__.py"
    if Path(res["tree"]).resolve() != expected.resolve():
        raise RuntimeError(f"the child imported {res['tree']}, not {expected}")
    return dict(times=res["times"], cpu=res["cpu"], load=(load0, load1))


def _difference(a: str, b: str) -> float | None:
    import numpy as np

    A, B = np.load(a), np.load(b)
    if not A.files:
        return None
    worst = 0.0
    for f in A.files:
        x, y = A[f], B[f]
        if x.shape != y.shape:
            return float("nan")
        scale = float(np.max(np.abs(x))) if x.size else 0.0
        if scale > 0:
            worst = max(worst, float(np.max(np.abs(x - y))) / scale)
    return worst


def measure(key: str, k: int, new_tree: str | None = None) -> dict:
    case = CASES[key]
    old_tree = f"/tmp/old_{case['ref']}"
    if not Path(old_tree, "ntk_theory").is_dir():
        raise SystemExit(f"export {case['ref']} first: git archive {case['ref']} ntk_theory | tar -x -C {old_tree}")
    runs = {"old": [], "new": []}
    with tempfile.TemporaryDirectory() as tmp:
        outs = {"old": os.path.join(tmp, "old.npz"), "new": os.path.join(tmp, "new.npz")}
        for i in range(k):
            for which in (("old", "new") if i % 2 == 0 else ("new", "old")):
                r = _child(old_tree if which == "old" else new_tree, case, outs[which], tmp)
                runs[which].append(r)
                print(f"  {key} {which}: {[round(t, 4) for t in r['times']]} load {r['load'][0]:.2f}-{r['load'][1]:.2f}",
                      flush=True)
        diff = _difference(outs["old"], outs["new"])
    summary = dict(key=key, **{f: case[f] for f in ("section", "case", "ref", "env")}, new_tree=new_tree, k=k, repeats=case["repeats"],
                   difference=diff, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    for which, rs in runs.items():
        times = [t for r in rs for t in r["times"]]
        cpu = [t for r in rs for t in r["cpu"]]
        summary[which] = dict(best=min(times), spread=statistics.median(times) / min(times) - 1, times=times,
                              cpu=min(cpu))
    loads = [x for rs in runs.values() for r in rs for x in r["load"]]
    summary["load"] = (min(loads), max(loads))
    return summary


def verdict(s: dict) -> str:
    """Slower beyond noise: the best time grew by more than the larger of the two trees' spreads
    (median / best - 1 over all timed calls) and by more than 5%."""
    ratio = s["new"]["best"] / s["old"]["best"]
    noise = max(s["old"]["spread"], s["new"]["spread"], 0.05)
    if ratio > 1 + noise:
        return f"slower ({ratio - 1:.0%} > noise {noise:.0%})"
    if ratio < 1 / (1 + noise):
        return "faster"
    return f"same (noise {noise:.0%})"


def table(path: str) -> str:
    rows = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            s = json.loads(line)
            rows[s["key"], s.get("new_tree")] = s  # the last measurement of a case against an "after" tree counts
    order = list(CASES)
    lines = ["| benchmark | case | before (commit) | after | ratio | CPU ratio | load during the run | verdict | difference |",
             "|---|---|---:|---:|---:|---:|---|---|---:|"]
    for key in sorted(rows, key=lambda k: (order.index(k[0]) if k[0] in order else len(order), str(k[1]))):
        s = rows[key]
        diff = "-" if s["difference"] is None else f"{s['difference']:.1e}"
        case = s["case"] + (", one OpenBLAS thread" if s.get("env", {}).get("OPENBLAS_NUM_THREADS") == "1" else "")
        cpu = f"{s['new']['cpu'] / s['old']['cpu']:.2f}" if "cpu" in s["old"] else "-"
        tree = s.get("new_tree")
        after = f" ({Path(tree).name.rsplit('_', 1)[-1]})" if tree else " (checkout)"
        lines.append(f"| {s['section']} | {case} | {s['old']['best']:.3f} s ({s['ref']}) | {s['new']['best']:.3f} s{after} "
                     f"| {s['new']['best'] / s['old']['best']:.2f} | {cpu} | {s['load'][0]:.1f}-{s['load'][1]:.1f} "
                     f"| {verdict(s)} | {diff} |")
    return "\n".join(lines)


SECTION = """## Re-run after the consolidation

Each benchmark above re-run with this tree beside the tree it was measured against, in one run: the tree before
the consolidation (commit d9ec229), or, for the features it did not have (stax and residual kernels, convolutions,
Dask, the dNTK), the commit whose numbers the section reports.  The older tree is exported (`git archive REV
ntk_theory`) and put first on `PYTHONPATH` in a child process (which reports the package it imported); each tree
keeps its own kernel cache.  Per case, fresh child processes alternate old / new / new / old ... (k of each), each
with one untimed call (compiled modules loaded) and then `repeats` timed calls; "before" and "after" are the best
of all timed calls of a tree.  Noise: the larger of the two trees' spreads (median / best - 1 over their timed
calls), at least 5%; the verdict says "slower" only when after / before exceeds 1 + noise.  CPU ratio: the same
ratio of the least CPU seconds of a timed call (all threads of the child; less sensitive to the other jobs than
the wall time; Dask workers not included).  After: the tree measured ("checkout": the working tree at the start
of the run, for the Monte Carlo rows; otherwise an export of the commit named).  Load: the 1-minute load average
sampled before and after each child (2 cores, shared with three other helpers' tests).  Difference: largest
|after - before| / max |before| over the case's compared arrays (kernel blocks, tensors; "-" where the case
returns none, e.g. Monte Carlo statistics with other random streams).

{table}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="", help="comma-separated case keys or prefixes (default: all)")
    parser.add_argument("--k", type=int, default=3, help="alternations (child processes per tree)")
    parser.add_argument("--out", default="/tmp/bench_rerun.jsonl")
    parser.add_argument("--new-tree", help="an exported package directory for 'after' (default: this checkout; "
                        "an export of HEAD keeps other people's uncommitted edits out of the measurement)")
    parser.add_argument("--table", action="store_true", help="print the table of --out and exit")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--write", action="store_true", help="write the table of --out into BENCHMARKS.md's rerun section")
    args = parser.parse_args()
    if args.list:
        for key, c in CASES.items():
            print(f"{key:32s} {c['ref']}  {c['section']}: {c['case']}")
        return
    if args.table or args.write:
        print(table(args.out))
        if args.write:
            write_section("rerun", SECTION.format(table=table(args.out)))
        return
    wanted = [p for p in args.cases.split(",") if p]
    keys = [key for key in CASES if not wanted or any(key == p or key.startswith(p) for p in wanted)]
    for key in keys:
        s = measure(key, args.k, args.new_tree)
        with open(args.out, "a") as fh:
            fh.write(json.dumps(s) + "\n")
        print(f"{key}: old {s['old']['best']:.4f} new {s['new']['best']:.4f} ratio "
              f"{s['new']['best'] / s['old']['best']:.3f} {verdict(s)} diff {s['difference']}", flush=True)


if __name__ == "__main__":
    main()
