"""Jacot, Gabriel, Hongler 2018, training-dynamics figure (their fig. 2): finite networks trained by gradient
descent vs the infinite-width NTK prediction.

Setup after the paper: depth-4 ReLU network (three hidden layers of width n), NTK parameterisation with
beta = 0.1 (C_W = 1, C_b = 0.01), four training points on the unit circle, squared loss (1/(2N) sum,
neural-tangents' normalisation), full-batch gradient descent at half the largest stable learning rate,
widths n = 50 and n = 1000 as in the paper, 10 initialisations each.

Left: the trained functions on the circle after T steps, with the infinite-width prediction, the
Gaussian of an infinite ensemble (mean, 10% and 90% quantiles; ``ntk_theory.dynamics.ensemble``).
Right: the residual along the NTK's two top eigenvectors during training, finite networks (their own
initial outputs) vs exp(-c lambda_i t) (``MSEDynamics.modes``): the top principal component is learned first.

Writes dynamics.png and dynamics.json.  ``--quick``: widths 50 and 800, 8 initialisations (the test).

    python papers/jacot2018/dynamics.py [--quick] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ntk_theory import MLP
from ntk_theory.dynamics import MSEDynamics, ensemble, train
from ntk_theory.recursions import KernelRecursion

HERE = Path(__file__).resolve().parent
C_W, C_B, DEPTH = 1.0, 0.01, 3
TRAIN_ANGLES = np.array([-2.2, -0.9, 0.5, 1.9])
TARGETS = np.array([0.4, -0.3, 0.5, -0.2])


def circle(g):
    return np.stack([np.cos(g), np.sin(g)], axis=1)


def run(widths, inits, angles=121, seed=0):
    g = np.linspace(-np.pi, np.pi, angles)
    X, Xt, y = circle(TRAIN_ANGLES), circle(g), TARGETS
    N = len(y)
    rec = KernelRecursion("relu", DEPTH, C_W=C_W, C_b=C_B, param="ntk")
    Kall, Tall = rec(np.concatenate([X, Xt]))
    Kxx, Txx, Ktx, Ttx, Ktt = Kall[:N, :N], Tall[:N, :N], Kall[N:, :N], Tall[N:, :N], Kall[N:, N:]
    eta = 0.5 * MSEDynamics(Txx, y).max_learning_rate()
    dyn = MSEDynamics(Txx, y, learning_rate=eta)
    T = int(np.ceil(4.0 / (dyn.c * dyn.basis.eigenvalues[0])))  # slowest mode shrinks by e^4
    record = np.unique(np.linspace(0, T, 41).astype(int))
    ens = ensemble(Kxx, Txx, y, steps=T, nngp_test_train=Ktx, ntk_test_train=Ttx, nngp_test_test=Ktt, learning_rate=eta)
    modes = dyn.modes()
    V = modes.eigenvectors[:, :2]
    out = {"g": g, "eta": eta, "steps": T, "record": record, "ensemble": ens, "modes": modes, "nets": {}}
    ss = np.random.SeedSequence(seed)
    for n in widths:
        finals, own_dev, proj, pred_proj = [], [], [], []
        for child in ss.spawn(inits):
            net = MLP.random((2, *([n] * DEPTH), 1), "relu", C_W=C_W, C_b=C_B, param="ntk", seed=child)
            run_ = train(net, X, y, eta, T, X_test=Xt, record=record)
            f0, g0 = run_.train_outputs[0], run_.test_outputs[0]
            pred = dyn.test(steps=T, ntk_test_train=Ttx, fx_train_0=f0, fx_test_0=g0)
            finals.append(run_.test_outputs[-1, :, 0])
            own_dev.append(float(np.sqrt(np.mean((run_.test_outputs[-1, :, 0] - pred) ** 2))))
            proj.append((run_.train_outputs[:, :, 0] - y) @ V)           # (R, 2)
            own = dyn.modes(fx_train_0=f0)  # same eigenvectors; (1 - c lambda_i)^k times V^T (f0 - y)
            pred_proj.append(own.residual(steps=record)[:, :2, 0] * np.sign(np.sum(own.eigenvectors[:, :2] * V, axis=0)))
        out["nets"][n] = {"finals": np.array(finals), "own_deviation": np.array(own_dev),
                          "projections": np.array(proj), "predicted_projections": np.array(pred_proj)}
    return out


def summarise(res):
    ens = res["ensemble"].test
    numbers = {"learning_rate": res["eta"], "steps": res["steps"],
               "top_eigenvalues": res["modes"].eigenvalues[:2].tolist(), "widths": {}}
    for n, d in res["nets"].items():
        finals = d["finals"]
        err_proj = np.abs(d["projections"] - d["predicted_projections"])
        scale = np.abs(d["predicted_projections"][:, :1, :]).mean()
        numbers["widths"][str(n)] = {
            "deviation_from_own_prediction": float(np.mean(d["own_deviation"])),
            "deviation_from_own_prediction_se": float(np.std(d["own_deviation"], ddof=1) / np.sqrt(len(finals))),
            "std_over_inits_vs_ensemble_std": float(np.mean(finals.std(axis=0, ddof=1)) / np.mean(ens.std)),
            # |mean over inits - ensemble mean| in units of the ensemble's largest standard error of a mean
            "max_z_mean_vs_ensemble": float(np.max(np.abs(finals.mean(axis=0) - ens.mean)) / (np.max(ens.std) / np.sqrt(len(finals)))),
            "mode_residual_max_abs_error_relative": float(err_proj.max() / scale),
            "top_mode_residual_fraction_at_quarter_time": float(np.mean(np.abs(d["projections"][:, len(res['record']) // 4, 0]) /
                                                                        (np.abs(d["projections"][:, 0, 0]) + 1e-300))),
            "second_mode_residual_fraction_at_quarter_time": float(np.mean(np.abs(d["projections"][:, len(res['record']) // 4, 1]) /
                                                                           (np.abs(d["projections"][:, 0, 1]) + 1e-300))),
        }
    return numbers


def plot(res, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g, ens = res["g"], res["ensemble"].test
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    colours = ["tab:green", "tab:red"]
    for (n, d), col in zip(res["nets"].items(), colours):
        for i, f in enumerate(d["finals"]):
            a1.plot(g, f, color=col, lw=0.7, alpha=0.7, label=f"n = {n}" if i == 0 else None)
    q = 1.2815515655446004  # 90% quantile of N(0, 1)
    a1.plot(g, ens.mean, "k-", lw=2, label=r"$n\to\infty$ mean")
    a1.fill_between(g, ens.mean - q * ens.std, ens.mean + q * ens.std, color="0.8", label="10%-90%")
    a1.plot(TRAIN_ANGLES, TARGETS, "ko", ms=6)
    a1.set_xlabel(r"$\gamma$")
    a1.set_ylabel(r"$f_\theta(\cos\gamma, \sin\gamma)$")
    a1.legend(fontsize=8)
    t = res["record"]
    for (n, d), col in zip(res["nets"].items(), colours):
        for i in range(d["projections"].shape[0]):
            for k, ls in ((0, "-"), (1, ":")):
                a2.plot(t, d["projections"][i, :, k], color=col, ls=ls, lw=0.7, alpha=0.7)
    lam = res["modes"].eigenvalues[:2]
    for k, ls in ((0, "-"), (1, ":")):
        pp = res["nets"][max(res["nets"])]["predicted_projections"]
        a2.plot(t, pp[:, :, k].T, "k", ls=ls, lw=1.5, alpha=0.5)
    a2.set_xlabel("gradient-descent step")
    a2.set_ylabel("residual along NTK eigenvector")
    a2.set_title(f"solid: top (lambda = {lam[0]:.3g}), dotted: 2nd ({lam[1]:.3g}); black: prediction", fontsize=8)
    fig.suptitle("Training dynamics vs the infinite-width NTK (Jacot et al. 2018, fig. 2)")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


# Deliberately repeated in every paper script (figure saving, --quick/--out-dir): each runs standalone by its path.
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out-dir", default=str(HERE))
    args = ap.parse_args(argv)
    widths, inits = ((50, 800), 8) if args.quick else ((50, 1000), 10)
    res = run(widths, inits)
    numbers = summarise(res)
    numbers["config"] = {"widths": list(widths), "inits": inits, "C_W": C_W, "C_b": C_B, "depth": DEPTH + 1,
                         "train_angles": TRAIN_ANGLES.tolist(), "targets": TARGETS.tolist(), "loss": "mean"}
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "dynamics.json").write_text(json.dumps(numbers, indent=2))
    try:
        plot(res, out / "dynamics.png")
    except ImportError:
        print("matplotlib not installed: dynamics.png not written (pip install 'ntk-theory[plot]')")
    print(json.dumps(numbers["widths"], indent=2))
    res["numbers"] = numbers
    return res


if __name__ == "__main__":
    main()
