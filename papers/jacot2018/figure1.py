"""Jacot, Gabriel, Hongler 2018, Figure 1: the NTK of finite networks converges to the infinite-width limit.

Setup as in the paper: a depth-4 ReLU network (n0 = 2, three hidden layers of width n, one output) in the
NTK parameterisation with beta = 0.1 (PDLT: C_W = 1, C_b = beta^2 = 0.01, param="ntk"), inputs on the
unit circle x = (cos g, sin g), and Theta(x0, x) with x0 = (1, 0) plotted over g in [-pi, pi] for many
random initialisations at two widths, with the limit (KernelRecursion).  The paper used n = 500 and
n = 10000 and 10 initialisations; here n = 500 and n = 4096 (memory on a small machine), 10 initialisations.

Writes figure1.png and figure1.json (mean absolute deviation from the limit and spread over initialisations
per width).  ``--quick``: widths 128 and 1024, 8 initialisations, 33 angles (used by the test).

    python papers/jacot2018/figure1.py [--quick] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ntk_theory import MLP
from ntk_theory.empirical import empirical_ntk
from ntk_theory.recursions import KernelRecursion

HERE = Path(__file__).resolve().parent
C_W, C_B, DEPTH = 1.0, 0.01, 3


def run(widths, inits, angles, seed=0):
    g = np.linspace(-np.pi, np.pi, angles)
    X = np.stack([np.cos(g), np.sin(g)], axis=1)
    x0 = np.array([[1.0, 0.0]])
    limit = KernelRecursion("relu", DEPTH, C_W=C_W, C_b=C_B, param="ntk")(x0, X).ntk[0]
    curves = {}
    ss = np.random.SeedSequence(seed)
    for n in widths:
        rows = []
        for child in ss.spawn(inits):
            net = MLP.random((2, *([n] * DEPTH), 1), "relu", C_W=C_W, C_b=C_B, param="ntk", seed=child)
            rows.append(empirical_ntk(net, x0, X)[0])
        curves[n] = np.array(rows)
    return g, limit, curves


def summarise(limit, curves):
    out = {}
    for n, c in curves.items():
        mean = c.mean(axis=0)
        se = c.std(axis=0, ddof=1) / np.sqrt(c.shape[0])
        out[str(n)] = {
            "spread": float(np.mean(c.std(axis=0, ddof=1))),              # mean over angles of the std over inits
            "mean_abs_deviation": float(np.mean(np.abs(c - limit))),      # per network, from the limit
            "max_z_of_mean": float(np.max(np.abs(mean - limit) / se)),   # |mean - limit| in standard errors
            "inits": int(c.shape[0]),
        }
    return out


def plot(g, limit, curves, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    colours = ["tab:green", "tab:red", "tab:blue"]
    for (n, c), col in zip(curves.items(), colours):
        for i, row in enumerate(c):
            ax.plot(g, row, color=col, lw=0.6 if n == min(curves) else 1.2, alpha=0.7, label=f"n = {n}" if i == 0 else None)
    ax.plot(g, limit, "k--", lw=2, label=r"$n \to \infty$")
    ax.set_xlabel(r"$\gamma$")
    ax.set_ylabel(r"$\Theta(x_0, x(\gamma))$")
    ax.set_title("NTK of a depth-4 ReLU network (Jacot et al. 2018, fig. 1)")
    ax.legend()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


# Deliberately repeated in every paper script (figure saving, --quick/--out-dir): each runs standalone by its path.
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out-dir", default=str(HERE))
    args = ap.parse_args(argv)
    widths, inits, angles = ((128, 1024), 8, 33) if args.quick else ((500, 4096), 10, 101)
    g, limit, curves = run(widths, inits, angles)
    numbers = {"config": {"widths": list(widths), "inits": inits, "angles": angles, "C_W": C_W, "C_b": C_B,
                          "depth": DEPTH + 1, "param": "ntk"}, "widths": summarise(limit, curves)}
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "figure1.json").write_text(json.dumps(numbers, indent=2))
    try:
        plot(g, limit, curves, out / "figure1.png")
    except ImportError:
        print("matplotlib not installed: figure1.png not written (pip install 'ntk-theory[plot]')")
    print(json.dumps(numbers["widths"], indent=2))
    return {"g": g, "limit": limit, "curves": curves, "numbers": numbers}


if __name__ == "__main__":
    main()
