"""Novak, Sohl-Dickstein, Schoenholz 2022, "Fast Finite Width Neural Tangent Kernel" (ICML): the cost
table of the three methods for a fully-connected network, and wall-clock time versus width.

The paper's cost table for dense networks (its section 3): Jacobian contraction computes J by reverse
mode, one VJP per output and input (``N O [FP]``), then contracts it (``N^2 O^2 P``); NTK-vector products
cost ``N^2 O [FP]`` and never hold J; structured derivatives replace the per-parameter contraction by
per-layer Gram matrices, ``N O [FP] + N^2 O^2 L n``, and are the fastest.  Here the three methods of
:mod:`ntk_theory.empirical` (the same code for any architecture description) run on a ReLU MLP of depth
L = 3 with the full (N, N, O, O) kernel, and the cost model of :mod:`ntk_theory.empirical.cost` gives
FLOPs, elementwise traffic, memory and a predicted time for each.  For L layers of width n,
``[FP] ~ 2 L n^2`` and ``P ~ L n^2``: every method grows as n^2 at large width (exponent 2), and the
methods differ by their factors in N and O, as in the paper's table.

    python papers/novak2022/reproduce.py [--quick] [--out-dir DIR]

writes ``table.md`` (method x leading-order cost x FLOPs x memory x predicted and measured time, and
the fitted exponents in width), for the MLP and for a CNN ([Conv(n, (3, 3), SAME), Relu] x 3, Flatten, Dense(O)
on 8x8x3 inputs, width = channels n), and ``time_vs_width.png`` (measured times, model predictions dashed; one
panel per network).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from ntk_theory import MLP, stax
from ntk_theory.empirical import METHODS, Problem, empirical_ntk, estimate
from ntk_theory.reference import graph as reference_graph

HERE = Path(__file__).resolve().parent
FULL = dict(N=32, O=10, depth=3, input_dim=32, trace=False, widths=(64, 128, 256, 512, 1024), table_width=512)
QUICK = dict(N=16, O=4, depth=3, input_dim=16, trace=False, widths=(128, 256, 512), table_width=512)
# the CNN: [Conv(n, (3, 3), SAME), Relu] x depth, Flatten, Dense(O) on image inputs; width n = channels
CNN_FULL = dict(N=32, O=10, depth=3, image=(8, 8, 3), trace=False, widths=(16, 32, 64), table_width=64)
CNN_QUICK = dict(N=6, O=3, depth=2, image=(6, 6, 2), trace=False, widths=(4, 8, 16), table_width=16)
LABEL = {"jacobian_contraction": "Jacobian contraction", "ntk_vector_products": "NTK-vector products",
         "structured": "Structured derivatives"}
# leading orders (the paper's table, in this implementation's cost model ntk_theory/empirical/cost.py) for L
# hidden layers of width n: [FP] ~ L n^2, P ~ L n^2
LEADING = {
    "jacobian_contraction": ("N O [FP] + N^2 O^2 P", "N O P + N^2 O^2"),
    "ntk_vector_products": ("N^2 O [FP]", "N O P + N^2 O^2"),
    "structured": ("N O [FP] + N^2 O^2 L n", "N O L n + N^2 O^2"),
}

# the CNN (S positions per Conv, patch width K = 9 n_in, n channels): a Conv's parameter Jacobian is summed over the
# positions sharing its weights; structured derivatives contract each Conv by the cheaper of its Jacobian rows
# (K n per output pair) and its position Grams (S^2 n), and the readout by its input Gram alone
LEADING_CNN = {
    "jacobian_contraction": ("N O [FP] + N^2 O^2 P", "N O P + N^2 O^2"),
    "ntk_vector_products": ("N^2 O [FP]", "N O P + N^2 O^2"),
    "structured": ("N O [FP] + N^2 O^2 sum_Conv min(K n, S^2 n)", "N O sum_Conv K n + N^2 O^2"),
}
CNN_NOTE = """
In the CNN, a Conv layer's Jacobian is the sum over the S positions sharing its weights; [FP] ~ 2 S L 9 n^2 and
P ~ L 9 n^2 + S n O (the Flatten readout), so the methods again grow as n^2 at large width.  Jacobian contraction
pays N^2 O^2 P including the readout's block-diagonal Jacobian (S n O parameters, O^2 times the work its
input Gram needs); structured derivatives contract the readout by its input Gram and each Conv by its Jacobian
rows sum_p g (x) x (the cost model's choice here, K n < S^2 n).
"""

# a paper script runs on its own, so it keeps its own timer (the benchmarks share benchmarks/_report.best_of)
def _best_time(fn, repeats=3, slow=30.0):
    """Best of ``repeats`` calls after a warm-up call (which also pays the process's first use of the
    memory); 1 call after the warm-up when that took longer than ``slow`` seconds."""
    t0 = time.perf_counter()
    fn()
    repeats = 1 if time.perf_counter() - t0 > slow else repeats
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def measure(widths, N, O, depth, input_dim, trace, repeats=3, seed=0):
    """For each method and width: (measured seconds, cost-model Estimate) on a ReLU MLP, X2 = X1."""
    X = np.random.default_rng(seed).standard_normal((N, input_dim))
    out = {m: [] for m in METHODS}
    for n in widths:
        net = MLP.random((input_dim,) + (n,) * depth + (O,), "relu", C_W=2.0, C_b=0.01, seed=seed)
        p = Problem.of(net.spec, N, None, trace)
        for m in METHODS:
            out[m].append((_best_time(lambda: empirical_ntk(net, X, method=m, trace_outputs=trace), repeats),
                           estimate(m, p)))
    return out


def cnn(width, depth, O):
    """[Conv(width, (3, 3), SAME, W_std = sqrt(2), b_std = 0.1), Relu] x depth, Flatten, Dense(O) ('ntk')."""
    conv = [stax.Conv(width, (3, 3), padding="SAME", W_std=np.sqrt(2.0), b_std=0.1), stax.Relu()]
    return stax.serial(*(conv * depth), stax.Flatten(), stax.Dense(O, W_std=1.0, b_std=0.1))


def measure_cnn(widths, N, O, depth, image, trace, repeats=3, seed=0):
    """For each method and channel width: (measured seconds, cost-model Estimate) on the CNN, X2 = X1."""
    X = np.random.default_rng(seed).standard_normal((N,) + tuple(image))
    out = {m: [] for m in METHODS}
    for n in widths:
        net = cnn(n, depth, O)
        _, params = reference_graph.init(net.description, seed, X.shape)
        p = Problem.of(net, N, None, trace, input_dim=tuple(image))
        for m in METHODS:
            out[m].append((_best_time(lambda: empirical_ntk(net, X, method=m, trace_outputs=trace, params=params),
                                      repeats), estimate(m, p)))
    return out


def slope(widths, values, top=3):
    """Exponent k of values ~ width^k, least squares over the ``top`` largest widths."""
    x, y = np.log(widths[-top:]), np.log(values[-top:])
    return float(np.polyfit(x, y, 1)[0])


def _fmt_bytes(b):
    return f"{b / 2**20:.1f} MiB" if b < 2**30 else f"{b / 2**30:.2f} GiB"


def table(cfg, results, leading=None, what=None) -> str:
    leading = LEADING if leading is None else leading
    widths = list(cfg["widths"])
    i = widths.index(cfg["table_width"])
    top = min(3, len(widths))
    kind = "trace over outputs" if cfg["trace"] else f"full {cfg['N']} x {cfg['N']} x {cfg['O']} x {cfg['O']} kernel"
    what = what or (f"ReLU MLP, L = {cfg['depth']} hidden layers of width n, input dimension {cfg['input_dim']}")
    lines = [
        f"{what}, O = {cfg['O']} "
        f"outputs, N = {cfg['N']} inputs (X2 = X1), {kind}, float64.  Costs at n = {cfg['table_width']}; "
        f"exponent k of time ~ n^k fitted over n = {', '.join(map(str, widths[-top:]))}.",
        "",
        "| method | time (leading order) | memory (leading order) | GFLOPs | G elements | memory | "
        "predicted (s) | measured (s) | k measured | k model |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in METHODS:
        t, est = results[m][i]
        times = [r[0] for r in results[m]]
        model = [r[1].seconds for r in results[m]]
        lines.append(
            f"| {LABEL[m]} | {leading[m][0]} | {leading[m][1]} | {est.flops / 1e9:.3g} | {est.elements / 1e9:.3g} | "
            f"{_fmt_bytes(est.memory_unbatched)} | {est.seconds:.3g} | {t:.3g} | {slope(widths, times, top):.2f} | "
            f"{slope(widths, model, top):.2f} |"
        )
    lines += ["", "Measured seconds per width:", "",
              "| n | " + " | ".join(LABEL[m] for m in METHODS) + " |", "|---:|" + "---:|" * len(METHODS)]
    for k, n in enumerate(widths):
        lines.append(f"| {n} | " + " | ".join(f"{results[m][k][0]:.3g}" for m in METHODS) + " |")
    return "\n".join(lines) + "\n"


def figure(cfg, results, path, cnn_cfg=None, cnn_results=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(cfg, results, "width n", f"ReLU MLP L = {cfg['depth']}")]
    if cnn_results is not None:
        panels.append((cnn_cfg, cnn_results, "channels n",
                       f"CNN {cnn_cfg['depth']} x Conv 3x3, {'x'.join(map(str, cnn_cfg['image']))} inputs"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.6), squeeze=False)
    for ax, (c, res, xlabel, name) in zip(axes[0], panels):
        widths = np.array(c["widths"])
        top = min(3, len(widths))
        for m, color in zip(METHODS, ("tab:red", "tab:blue", "tab:green")):
            times = [r[0] for r in res[m]]
            model = [r[1].seconds for r in res[m]]
            ax.loglog(widths, times, "o-", color=color, label=f"{LABEL[m]} (k = {slope(widths, times, top):.2f})")
            ax.loglog(widths, model, "--", color=color, alpha=0.6)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("wall-clock time (s)")
        ax.set_title(f"Empirical NTK, {name}, N = {c['N']}, O = {c['O']}" + (" (trace)" if c["trace"] else " (full)"),
                     fontsize=10)
        ax.legend(fontsize=8, title="measured (dashed: cost model)", title_fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small widths (the test's configuration)")
    parser.add_argument("--out-dir", default=str(HERE), help="where table.md and time_vs_width.png go")
    parser.add_argument("--no-figure", action="store_true", help="skip the figure (no matplotlib needed)")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    ccfg = CNN_QUICK if args.quick else CNN_FULL
    results = measure(cfg["widths"], cfg["N"], cfg["O"], cfg["depth"], cfg["input_dim"], cfg["trace"])
    cnn_results = measure_cnn(ccfg["widths"], ccfg["N"], ccfg["O"], ccfg["depth"], ccfg["image"], ccfg["trace"])
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = "# Novak, Sohl-Dickstein, Schoenholz 2022: cost of the empirical NTK (reproduction)\n\n" + table(cfg, results)
    img = "x".join(map(str, ccfg["image"]))
    text += ("\n## A convolutional network\n\n" + table(
        ccfg, cnn_results, LEADING_CNN,
        f"CNN [Conv(n, (3, 3), SAME), Relu] x {ccfg['depth']}, Flatten, Dense(O) on {img} inputs (n channels)")
        + CNN_NOTE)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "default (one per core)")
    text += (f"\nLoad average (1, 5, 15 min) after the timings: {load} on {os.cpu_count()} cores (the machine is "
             f"shared; above the core count, measured times are inflated and noisy); OpenBLAS threads: {threads}.\n")
    text += "\nWritten by `python papers/novak2022/reproduce.py`" + (" --quick" if args.quick else "") + "; figure `time_vs_width.png`.\n"
    (out / "table.md").write_text(text)
    if not args.no_figure:
        figure(cfg, results, out / "time_vs_width.png", ccfg, cnn_results)
    print(text)
    return {"config": cfg, "results": results, "cnn_config": ccfg, "cnn_results": cnn_results}


if __name__ == "__main__":
    main()
