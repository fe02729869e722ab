r"""PDLT chapter ∞: the trained finite network's mean prediction at O(1/n), recursion against trained ensembles.

Problem: tanh at criticality (C_W = 1, C_b = 0), L = 2 hidden layers of width n, scalar readout, 'ntk'
parameters; three training inputs and two test inputs in R^3 (``X_TRAIN``, ``X_TEST``, targets ``Y``), full-batch
gradient descent on L = ||f - y||^2 / (2 N) with step eta = 2 (c = eta / N = 2/3; the infinite-width training
NTK's eigenvalues 0.47 .. 0.72, so c lambda in 0.32 .. 0.48 and the error decays by >= 0.685 per step: after
30 steps the residual is < 1.2e-5 of its start, "converged").  tanh is the activation whose NTK-motion terms
(dNTK, ddNTK) are validated against trained ensembles elsewhere in the package; ReLU's pointwise ddNTK misses
the kink crossings during training.

Prediction (``FiniteWidthDynamics.from_network``): E[f(t)] = f_inf(t) + (m_1(t) + phi_1(t)) / n + O(1/n^2), where
f_inf is the infinite-width ensemble mean (kernel gradient descent with the NTK), m_1 the O(1/n) part of the
linearised model's mean (``.mean(t).correction``: the NTK's 1/n shift and fluctuations at initialisation) and
phi_1 the NTK's motion during training (``.motion(t).correction``: dNTK P, Q and ddNTKs R, S, T, U of the
readout from the recursions).  At t = inf the train rows are fitted exactly at every width (no correction).

Measurement (``ntk_theory.montecarlo.trained.sample_trained``): ensembles of networks actually trained by
gradient descent at widths 32 .. 512, the mean with the linearised-model control variate (its split into
the linearised part E[f_lin] and the motion E[f - f_lin] is measured too), jackknife standard errors; per step
and input, the weighted fit n (E_n[f] - f_inf) = a + b / n (``ntk_theory.validation.trained``), whose
intercept a is compared with m_1 + phi_1: z = (a - m_1 - phi_1) / SE(a).

    python papers/pdlt/trained_width.py [--quick] [--out-dir DIR]

writes ``trained_width.png`` and ``trained_width.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np

from ntk_theory.dynamics.finite_width import FiniteWidthDynamics
from ntk_theory.montecarlo.trained import sample_trained
from ntk_theory.validation.trained import fit_trained_widths, infinite_width_trained

HERE = Path(__file__).resolve().parent
ACTIVATION, DEPTH, C_W, C_b, ETA = "tanh", 2, 1.0, 0.0, 2.0
X_TRAIN = np.array([[1.2, 0.4, -0.5], [-0.3, 1.0, 0.6], [0.5, -0.7, 1.1]])
X_TEST = np.array([[0.8, 0.9, 0.3], [-0.6, 0.2, 1.0]])
Y = np.array([0.5, -0.3, 0.8])
CONVERGED = 30  # steps after which the residual is < 1.2e-5 of its start (module docstring)
NAMES = ("mean", "linearised", "motion")
FULL = {"widths": (32, 64, 128, 256, 512), "samples": (32768, 16384, 8192, 1536, 768), "steps": (1, 2, 4, 8, CONVERGED),
        "seed": 7}
QUICK = {"widths": (32, 64, 128), "samples": (4096, 2048, 1024), "steps": (2, 8, CONVERGED), "seed": 7}


def prediction(steps) -> dict:
    """The recursion's O(1/n) coefficients at each step (rows: steps, columns: the 5 inputs, train first):
    ``linearised`` m_1, ``motion`` phi_1, ``mean`` their sum; ``infinite`` f_inf; and at t = inf."""
    dyn = FiniteWidthDynamics.from_network(ACTIVATION, X_TRAIN, Y, X_TEST, DEPTH, C_W=C_W, C_b=C_b,
                                           learning_rate=ETA)
    steps = np.asarray(steps)
    lin, mot = dyn.mean(steps=steps), dyn.motion(steps=steps)
    lin_inf, mot_inf = dyn.mean(np.inf), dyn.motion(steps=np.inf)  # descent's limit (t = inf is the flow's)
    return {"infinite": lin.value, "linearised": lin.correction, "motion": mot.correction,
            "mean": lin.correction + mot.correction,
            "at_inf": {"infinite": lin_inf.value, "linearised": lin_inf.correction, "motion": mot_inf.correction,
                       "mean": lin_inf.correction + mot_inf.correction}}


def ensembles(widths, samples, steps, seed) -> list:
    """``sample_trained`` at each width (its own seed), the script's problem."""
    return [sample_trained(ACTIVATION, X_TRAIN, Y, X_TEST, DEPTH, w, C_W=C_W, C_b=C_b, eta=ETA, steps=list(steps),
                           samples=s, seed=seed + i, batches=32, progress=False)
            for i, (w, s) in enumerate(zip(widths, samples))]


def measure(widths, samples, steps, seed) -> dict:
    """Trained ensembles at each width, n (E_n - f_inf) with n SE per width, and the 1/n fit's intercept
    (``<name>_1``) with SE and chi^2 per entry, for ``NAMES``."""
    inf = infinite_width_trained(ACTIVATION, X_TRAIN, Y, X_TEST, DEPTH, C_W=C_W, C_b=C_b, eta=ETA, steps=list(steps))
    runs = ensembles(widths, samples, steps, seed)
    fit = fit_trained_widths(runs, inf, order=1, names=NAMES)
    out = {"infinite": inf[0], "per_width": {}, "fit": {}, "seconds": [r.info["seconds"] for r in runs],
           "odd_max_abs_z": 0.0}
    for r in runs:
        n = r.width
        out["per_width"][n] = {name: (n * (r[name].value - (0.0 if name == "motion" else inf[0])), n * r[name].stderr)
                               for name in NAMES}
        odd = r["odd"]
        out["odd_max_abs_z"] = max(out["odd_max_abs_z"], float(np.max(np.abs(odd.value) / odd.stderr)))
    for name in NAMES:
        e = fit[f"{name}_1"]
        out["fit"][name] = (e.value, e.stderr, fit.chi2[f"{name}_1"], fit.dof[f"{name}_1"])
    return out


def compare(pred: dict, meas: dict) -> dict:
    """z = (fitted intercept - predicted coefficient) / SE per name, step and input (the converged step's train
    rows, whose values are 0 to 1e-5, are left out)."""
    out = {}
    for name in NAMES:
        a, se = meas["fit"][name][:2]
        z = (a - pred[name]) / se
        out[name] = z
    return out


def run(widths, samples, steps, seed) -> dict:
    t0 = time.perf_counter()
    steps = list(steps)
    pred = prediction(steps)
    t1 = time.perf_counter()
    meas = measure(widths, samples, steps, seed)
    z = compare(pred, meas)
    N = len(Y)
    mask = np.ones(z["mean"].shape, bool)
    mask[np.asarray(steps) >= CONVERGED, :N] = False
    result = {
        "claim": "n (E[f(t)] - f_inf(t)) -> m_1(t) + phi_1(t) (FiniteWidthDynamics .mean + .motion corrections)",
        "config": {"activation": ACTIVATION, "depth": DEPTH, "C_W": C_W, "C_b": C_b, "eta": ETA, "loss": "mean",
                   "X_train": X_TRAIN.tolist(), "X_test": X_TEST.tolist(), "y": Y.tolist(), "steps": steps,
                   "widths": list(widths), "samples": list(samples), "seed": seed},
        "rows": "inputs: 3 train then 2 test",
        "prediction": {k: np.asarray(v).tolist() for k, v in pred.items() if k != "at_inf"},
        "prediction_t_inf": {k: np.asarray(v).tolist() for k, v in pred["at_inf"].items()},
        "ensemble_infinite_width_mean": np.asarray(meas["infinite"]).tolist(),
        "per_width": {str(n): {name: [v.tolist(), s.tolist()] for name, (v, s) in d.items()}
                      for n, d in meas["per_width"].items()},
        "fit": {name: {"intercept": a.tolist(), "stderr": s.tolist(), "chi2": np.asarray(c2).tolist(), "dof": dof}
                for name, (a, s, c2, dof) in meas["fit"].items()},
        "z": {name: v.tolist() for name, v in z.items()},
        "max_abs_z": {name: float(np.max(np.abs(v[mask]))) for name, v in z.items()},
        "max_abs_z_test": {name: float(np.max(np.abs(v[:, N:]))) for name, v in z.items()},
        "odd_max_abs_z": meas["odd_max_abs_z"],
        "seconds": {"recursion": t1 - t0, "ensembles": meas["seconds"], "total": time.perf_counter() - t0},
    }
    return result


def table(result) -> str:
    """Test rows: step, input, the fitted n (E_n - f_inf) intercept ± SE, the recursion's m_1 + phi_1, z; the
    motion part alone likewise."""
    N = len(Y)
    steps = result["config"]["steps"]
    lines = [f"{'step':>5} {'input':>6} | {'fit mean_1':>17} {'rec m1+phi1':>11} {'z':>6} | "
             f"{'fit motion_1':>17} {'rec phi1':>9} {'z':>6}"]
    fm, fo = result["fit"]["mean"], result["fit"]["motion"]
    pm, po = result["prediction"]["mean"], result["prediction"]["motion"]
    for i, t in enumerate(steps):
        for j in range(N, N + len(X_TEST)):
            lines.append(f"{t:>5} {'test' + str(j - N + 1):>6} | {fm['intercept'][i][j]:>8.4f} ± {fm['stderr'][i][j]:<6.4f} "
                         f"{pm[i][j]:>11.4f} {result['z']['mean'][i][j]:>+6.2f} | "
                         f"{fo['intercept'][i][j]:>8.4f} ± {fo['stderr'][i][j]:<6.4f} {po[i][j]:>9.4f} "
                         f"{result['z']['motion'][i][j]:>+6.2f}")
    p = result["prediction_t_inf"]
    lines.append(f"  inf   test | recursion m1+phi1 = {np.round(np.asarray(p['mean'])[N:], 4).tolist()} "
                 f"(phi1 = {np.round(np.asarray(p['motion'])[N:], 4).tolist()})")
    return "\n".join(lines)


def plot(result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    N = len(Y)
    steps = result["config"]["steps"]
    widths = np.asarray(result["config"]["widths"], dtype=float)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    panels = [("mean", N, "test input 1"), ("mean", N + 1, "test input 2"), ("motion", N, "test input 1, motion only")]
    grid = np.linspace(0, 1.05 / widths.min(), 50)
    for ax, (name, j, title) in zip(axes, panels):
        for i, t in enumerate(steps):
            c = f"C{i}"
            v = np.array([result["per_width"][str(int(n))][name][0][i][j] for n in widths])
            s = np.array([result["per_width"][str(int(n))][name][1][i][j] for n in widths])
            ax.errorbar(1 / widths, v, 2 * s, fmt="o", color=c, ms=4, capsize=2,
                        label=f"t = {t}{' (converged)' if t >= CONVERGED else ''}")
            a = result["fit"][name]["intercept"][i][j]
            # the weighted straight line a + b/n through the points (b re-fitted here for the drawing only)
            w = 1 / s**2
            b = np.sum(w * (v - a) / widths) / np.sum(w / widths**2)
            ax.plot(grid, a + b * grid, "-", color=c, lw=0.8, alpha=0.6)
            ax.errorbar([0], [a], [2 * result["fit"][name]["stderr"][i][j]], fmt="s", color=c, ms=4, capsize=2,
                        alpha=0.6)
            ax.plot([0], [result["prediction"][name][i][j]], "*", color=c, ms=13, mec="k")
        ax.axhline(0, color="gray", lw=0.5)
        ax.set_xlabel("1/n")
        ax.set_ylabel("n (E[f] − f_∞)" if name == "mean" else "n E[f − f_lin]")
        ax.set_title(f"tanh, L = {DEPTH}, η = {ETA:g}: {title}")
        ax.legend(fontsize=7, title="★ recursion, ■ fit intercept (±2 SE)", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


# Deliberately repeated in every paper script (figure saving, --quick/--out-dir): each runs standalone by its path.
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="widths 32..128, fewer networks, three steps")
    p.add_argument("--out-dir", default=str(HERE))
    a = p.parse_args(argv)
    result = run(**(QUICK if a.quick else FULL))
    out = Path(a.out_dir)
    (out / "trained_width.json").write_text(json.dumps(result, indent=1))
    if importlib.util.find_spec("matplotlib"):
        plot(result, out / "trained_width.png")
    else:
        print("matplotlib is not installed (pip install ntk-theory[plot]): trained_width.png not written")
    print(table(result))
    print(f"max |z| (all fitted entries): {result['max_abs_z']}; odd control max |z| {result['odd_max_abs_z']:.2f}")
    s = result["seconds"]
    print(f"recursion {s['recursion']:.1f} s, ensembles {sum(s['ensembles']):.1f} s, total {s['total']:.1f} s")
    return result


if __name__ == "__main__":
    main()
