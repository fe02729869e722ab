"""Kernel regression on real images: the digits data (8 x 8, 10 classes) with the infinite-width NNGP and NTK of
a ReLU MLP, a CNN with a Flatten readout (CNN-GP / CNTK without pooling), a CNN with global average pooling and a
Myrtle-style CNN with average pooling (Shankar et al. 2020).

Each kernel comes from ``stax`` ``kernel_fn`` (float64); the prediction is the infinite-time mean of gradient
descent on the squared loss (neural-tangents' ``gradient_descent_mse_ensemble`` at t = inf, here
:func:`ntk_theory.dynamics.ensemble`): kernel ridge regression ``K(X', X) (K(X, X) + r I)^-1 Y`` with the
relative ``diag_reg`` r; the class is the argmax of the 10 outputs.  The split is
:func:`ntk_theory.datasets.digits` (fixed seed), so every run sees the same images.

    python examples/digits.py [--n-train 1000] [--n-test 797] [--quick] [--out-dir DIR] [--no-figure]

writes ``digits.md`` (test accuracy and kernel time per architecture and kernel) and ``digits.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from ntk_theory import stax
from ntk_theory.datasets import digits
from ntk_theory.dynamics import ensemble

HERE = Path(__file__).resolve().parent
W_STD, B_STD = math.sqrt(2.0), 0.1
DIAG_REG = 1e-4


def architectures(channels: int = 256) -> dict:
    """The four networks (widths are irrelevant to the infinite-width kernels; given for ``init_fn``)."""

    def conv():
        return stax.Conv(channels, (3, 3), padding="SAME", W_std=W_STD, b_std=B_STD)

    return {
        "MLP (2 hidden)": (stax.serial(stax.Flatten(), stax.Dense(512, W_STD, B_STD), stax.Relu(),
                                       stax.Dense(512, W_STD, B_STD), stax.Relu(), stax.Dense(10, W_STD, B_STD))),
        "CNN, Flatten": stax.serial(conv(), stax.Relu(), conv(), stax.Relu(), stax.Flatten(),
                                    stax.Dense(10, W_STD, B_STD)),
        "CNN, GlobalAvgPool": stax.serial(conv(), stax.Relu(), conv(), stax.Relu(), stax.GlobalAvgPool(),
                                          stax.Dense(10, W_STD, B_STD)),
        "Myrtle-style": stax.serial(conv(), stax.Relu(), conv(), stax.Relu(), stax.AvgPool((2, 2), (2, 2)),
                                    conv(), stax.Relu(), stax.AvgPool((2, 2), (2, 2)), stax.GlobalAvgPool(),
                                    stax.Dense(10, W_STD, B_STD)),
    }


def accuracy(kernels: dict, data, get: str) -> float:
    """Test accuracy of the t = inf prediction with the ``get`` kernel ('nngp': GP posterior mean)."""
    train, test = kernels["train"], kernels["test"]
    pred = ensemble(train.nngp, train.ntk, data.y_train, np.inf, nngp_test_train=test.nngp,
                    ntk_test_train=test.ntk, nngp_test_test=np.eye(len(data.x_test)), get=get, diag_reg=DIAG_REG)
    return float(np.mean(np.argmax(pred.test.mean, axis=1) == data.labels_test))


def run(n_train: int, n_test: int | None, names=None) -> dict:
    data = digits(n_train, n_test)
    rows = {}
    for name, net in architectures().items():
        if names and name not in names:
            continue
        t0 = time.perf_counter()
        kernels = {"train": net.kernel_fn(data.x_train, None, ("nngp", "ntk")),
                   "test": net.kernel_fn(data.x_test, data.x_train, ("nngp", "ntk"))}
        seconds = time.perf_counter() - t0
        rows[name] = {"nngp": accuracy(kernels, data, "nngp"), "ntk": accuracy(kernels, data, "ntk"),
                      "seconds": seconds, "arch": repr(net)}
        print(f"{name:20s} NNGP {rows[name]['nngp']:.4f}  NTK {rows[name]['ntk']:.4f}  ({seconds:.1f} s)", flush=True)
    return {"n_train": len(data.x_train), "n_test": len(data.x_test), "diag_reg": DIAG_REG, "rows": rows}


def table(result: dict) -> str:
    lines = [f"Digits, {result['n_train']} training and {result['n_test']} test images (fixed split, seed 0), "
             f"kernel ridge regression at t = inf with diag_reg = {result['diag_reg']:g} (relative).", "",
             "| network | NNGP accuracy | NTK accuracy | kernel time (s) |", "|---|---:|---:|---:|"]
    for name, row in result["rows"].items():
        lines.append(f"| {name} | {row['nngp']:.4f} | {row['ntk']:.4f} | {row['seconds']:.1f} |")
    lines += ["", "Networks (stax):", ""] + [f"- {name}: `{row['arch']}`" for name, row in result["rows"].items()]
    return "\n".join(lines) + "\n"


def figure(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["rows"])
    pos = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for k, (get, label) in enumerate((("nngp", "NNGP"), ("ntk", "NTK"))):
        ax.bar(pos + (k - 0.5) * 0.38, [result["rows"][n][get] for n in names], 0.38, label=label)
    lo = min(min(r["nngp"], r["ntk"]) for r in result["rows"].values())
    ax.set_ylim(max(0.0, lo - 0.05), 1.0)
    ax.set_xticks(pos, names, fontsize=8)
    ax.set_ylabel("test accuracy")
    ax.set_title(f"digits: {result['n_train']} train / {result['n_test']} test, infinite-width kernels")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=None, help="default: all images not used for training")
    parser.add_argument("--quick", action="store_true", help="100 training and 100 test images (the test's size)")
    parser.add_argument("--only", action="append", help="run only this network (repeatable)")
    parser.add_argument("--out-dir", default=str(HERE))
    parser.add_argument("--no-figure", action="store_true", help="skip the figure (no matplotlib needed)")
    args = parser.parse_args(argv)
    n_train, n_test = (100, 100) if args.quick else (args.n_train, args.n_test)
    result = run(n_train, n_test, args.only)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "digits.md").write_text(table(result))
    (out / "digits.json").write_text(json.dumps(result, indent=1))
    if not args.no_figure:
        figure(result, out / "digits.png")
    return result


if __name__ == "__main__":
    main()
