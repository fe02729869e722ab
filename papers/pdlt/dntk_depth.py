r"""PDLT chapter 11: at criticality the dNTK grows linearly with depth, so its effect on training is
controlled by the depth-to-width ratio l/n.

Quantities (one input, G0 = x.x / n0 = 1): the dNTK tensors P, Q of layer l, normalised per 1/n
(n E[dH_{ijj} z_i] and n E[dH_{iij} z_j], i != j; ``FiniteWidthRecursion(...).dntk``), made dimensionless
as P / Theta^2 and Q / Theta^2 with Theta = Theta(l) the infinite-width NTK.  E[dH z] has the units of
Theta^2 (dH ~ Theta^2 / z), so these are the ratios that are independent of the scale of z (for ReLU they
do not depend on G0); the relative size of the dNTK's term in one gradient step, (eta^2/2) dH eps eps
against eta H eps with eta ~ 1/Theta and eps of the size of z, is P / (n Theta^2), Q / (n Theta^2).

ReLU (C_W = 2, C_b = 0, weights only, lambda_W = C_W): K = 2 G0, Theta = l K, <s''..> = 0 and d<s'^2>/dK = 0,
so the one-input map reduces to F' = F + 2 K Theta, Q' = Q + 2 K Theta + F, P' = P, giving exactly

    P = 0,    F = l (l - 1) K^2,    Q = (l - 1) l (l + 1) K^2 / 3,    Q / Theta^2 = (l^2 - 1) / (3 l)

(for one input the kink terms of the Dirac s'' vanish, so the ensemble and the pointwise dNTK agree).

tanh (C_W = 1, C_b = 0): K ~ 1/(2 l), Theta -> 1/2.  With the small-K averages <s'^2> = 1 - 2K,
d<s^2>/dK = 1 - 4K, <s'^4> = 1, <s'' s'^2 s> = <s'' s> = -2K (+ O(K^2)) the recursions become
dB/dl = Theta^2 - 4 K B, dP/dl = -2 K (Theta^2 + B) - 6 K P at large l, whence B ~ l/12 and

    P / Theta^2 = -l / 12 + c_1 log l + c_0 + o(1)

(the log from the log corrections of K, Theta and B; c_1 is fitted here, not derived).  Q's source
is (1 - 2 Theta)(K Theta + F) + K F (c - 4) + O(K^2) with F -> Theta/8 = 1/16 and <s'^2> = 1 - 2K + c K^2,
c = 7; the leading parts cancel at Theta* = 1/2.  Theta = 1/2 + delta with
delta(l+1) - delta(l) = -delta/l + (c - 4)/(8 l^2), so delta = (3/8) log l / l + O(1/l), and
dQ/dl = -delta/8 + O(1/l) - 3 Q/l gives Q = -(1/64) log l + O(1):

    Q / Theta^2 = -(1/16) log l + O(1)

So for tanh the dNTK's relative size is -(1/12) l / n at leading order, for ReLU (1/3) l / n.

Monte Carlo (``ntk_theory.montecarlo.dntk.sample_dntk``, one input x = (1, 1, 1, 1), 8 readout
neurons, jackknife SEs) of the readout layer l = L + 1 of networks with L = 2, 4, 8 hidden layers at widths
32 and 64, extrapolated linearly in 1/n (2 y(64) - y(32), SE combined in quadrature); z-scores of the
extrapolation against the recursion.  At L = 8 the 1/n^2 terms (L/n = 1/4 at n = 32) are not negligible
for ReLU: the extrapolation's leftover is reported, not hidden.

    python papers/pdlt/dntk_depth.py [--quick] [--out-dir DIR]

writes ``dntk_depth.png`` and ``dntk_depth.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np

from ntk_theory.finite_width import FiniteWidthRecursion
from ntk_theory.montecarlo.dntk import sample_dntk

HERE = Path(__file__).resolve().parent
G0 = 1.0
X = np.ones((1, 4))
ACTIVATIONS = {"relu": {"C_W": 2.0, "C_b": 0.0}, "tanh": {"C_W": 1.0, "C_b": 0.0}}
FULL = {"max_layer": 50, "tanh_fit_layer": 400, "depths": (2, 4, 8), "widths": (32, 64), "samples": 6000, "seed": 11}
QUICK = {"max_layer": 30, "tanh_fit_layer": 120, "depths": (2,), "widths": (32, 64), "samples": 0, "seed": 11}


def recursion_ratios(activation: str, max_layer: int) -> dict:
    """P/Theta^2, Q/Theta^2 (and K, Theta, P, Q) for layers l = 1 .. max_layer (one input, G0 = 1)."""
    rec = FiniteWidthRecursion(activation, max_layer - 1, **ACTIVATIONS[activation])
    states, dn = rec.one_input(G0=G0), rec.dntk(G0=G0)
    out = {k: [] for k in ("l", "K", "Theta", "P", "Q", "P_over_Theta2", "Q_over_Theta2")}
    for l, (s, d) in enumerate(zip(states, dn), start=1):
        for k, v in zip(out, (l, s.K, s.Th, d.P, d.Q, d.P / s.Th**2, d.Q / s.Th**2)):
            out[k].append(float(v))
    return out


def relu_closed_form(l):
    """Q/Theta^2 = (l^2 - 1)/(3 l) of critical ReLU (module docstring); P = 0."""
    l = np.asarray(l, dtype=float)
    return (l**2 - 1) / (3 * l)


def fit_tanh(r: dict, l_min: int) -> dict:
    """Least squares over l >= l_min: P/Theta^2 = a l + c_1 log l + c_0, Q/Theta^2 = b log l + d_0 + d_1 log l / l."""
    l = np.asarray(r["l"])
    m = l >= l_min
    lm = l[m]
    p = np.linalg.lstsq(np.c_[lm, np.log(lm), np.ones_like(lm)], np.asarray(r["P_over_Theta2"])[m], rcond=None)[0]
    q = np.linalg.lstsq(np.c_[np.log(lm), np.ones_like(lm), np.log(lm) / lm], np.asarray(r["Q_over_Theta2"])[m],
                        rcond=None)[0]
    return {"l_range": [int(l_min), int(lm[-1])], "P_slope": float(p[0]), "P_log": float(p[1]), "P_const": float(p[2]),
            "P_slope_derived": -1.0 / 12, "Q_log": float(q[0]), "Q_log_derived": -1.0 / 16, "Q_const": float(q[1]),
            "Q_plus_log_over_16": {int(i): float(r["Q_over_Theta2"][i - 1] + np.log(i) / 16)
                                   for i in (30, 60, 120, 240, 400) if i <= lm[-1]}}


def measure(activation: str, depth: int, widths, samples: int, seed: int, recursion: dict) -> dict:
    """Monte Carlo P/Theta^2, Q/Theta^2 of the readout (layer depth + 1) at each width, the 1/n
    extrapolation and its z-scores against the recursion (Theta, the infinite-width value)."""
    l = depth + 1
    Th2 = recursion["Theta"][l - 1] ** 2
    row = {"L": depth, "l": l, "recursion": {"P": recursion["P_over_Theta2"][l - 1],
                                             "Q": recursion["Q_over_Theta2"][l - 1]}, "mc": {}}
    for k, n in enumerate(widths):
        r = sample_dntk(activation, X, depth, n, **ACTIVATIONS[activation], outputs=8, samples=samples,
                        seed=seed + 100 * depth + k, quantities=("P", "Q"), progress=False)
        row["mc"][str(n)] = {q: [float(r.estimates[q].value.ravel()[0] / Th2),
                                 float(r.estimates[q].stderr.ravel()[0] / Th2)] for q in ("P", "Q")}
        row["mc"][str(n)]["seconds"] = r.info["seconds"]
    if len(widths) == 2 and widths[1] == 2 * widths[0]:
        a, b = (row["mc"][str(n)] for n in widths)
        row["extrapolated"], row["z"] = {}, {}
        for q in ("P", "Q"):
            v, s = 2 * b[q][0] - a[q][0], float(np.hypot(2 * b[q][1], a[q][1]))
            row["extrapolated"][q] = [v, s]
            row["z"][q] = (v - row["recursion"][q]) / s
    return row


def run(max_layer, tanh_fit_layer, depths, widths, samples, seed) -> dict:
    t0 = time.perf_counter()
    result = {"claim": "dNTK/Theta^2 grows linearly in l at criticality: ReLU Q/Theta^2 = (l^2-1)/(3l), P = 0; "
                       "tanh P/Theta^2 = -l/12 + O(log l), Q/Theta^2 = -(1/16) log l + O(1)",
              "ratio": "P/Theta^2 and Q/Theta^2 (P, Q = n E[dH z] per 1/n, Theta the infinite-width NTK)",
              "config": {"max_layer": max_layer, "tanh_fit_layer": tanh_fit_layer, "depths": list(depths),
                             "widths": list(widths), "samples": samples, "seed": seed, "G0": G0}, "activations": {}}
    for act in ACTIVATIONS:
        top = tanh_fit_layer if act == "tanh" else max_layer
        rec = recursion_ratios(act, top)
        entry = {"recursion": {k: v[:max_layer] for k, v in rec.items()}}
        if act == "relu":
            entry["closed_form_Q_over_Theta2"] = relu_closed_form(rec["l"]).tolist()
            entry["max_abs_error"] = float(np.max(np.abs(np.asarray(rec["Q_over_Theta2"]) - relu_closed_form(rec["l"]))))
            entry["max_abs_P"] = float(np.max(np.abs(rec["P"])))
        else:
            entry["fit"] = fit_tanh(rec, max(20, top // 4))
            entry["tail"] = {k: rec[k][-1] for k in ("l", "K", "Theta", "P_over_Theta2", "Q_over_Theta2")}
        if samples:
            entry["mc"] = [measure(act, L, widths, samples, seed, rec) for L in depths]
        result["activations"][act] = entry
    result["seconds"] = time.perf_counter() - t0
    return result


def plot(result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    widths = result["config"]["widths"]
    for ax, (act, e) in zip(axes, result["activations"].items()):
        r = e["recursion"]
        l = np.asarray(r["l"])
        ax.plot(l, r["Q_over_Theta2"], "k-", lw=1.5, label="recursion Q/Θ²")
        ax.plot(l, r["P_over_Theta2"], "b-", lw=1.5, label="recursion P/Θ²")
        if act == "relu":
            ax.plot(l, relu_closed_form(l), "y--", lw=1, label="(l²-1)/(3l)")
        else:
            f = e["fit"]
            ax.plot(l, -l / 12 + f["P_log"] * np.log(l) + f["P_const"], "c--", lw=1,
                    label=f"-l/12 {f['P_log']:+.3f} log l {f['P_const']:+.3f}")
            ax.plot(l, -np.log(l) / 16 + f["Q_const"], "y--", lw=1, label=f"-(1/16) log l {f['Q_const']:+.3f}")
        for row in e.get("mc", []):
            for q, c in (("P", "b"), ("Q", "k")):
                for k, (n, mk) in enumerate(zip(widths, ("^", "v"))):
                    v, s = row["mc"][str(n)][q]
                    ax.errorbar(row["l"] - 0.3 + 0.3 * k, v, 2 * s, fmt=mk, color=c, ms=4, capsize=2, alpha=0.5,
                                label=f"MC n={n}" if (q == "Q" and row is e["mc"][0]) else None)
                if "extrapolated" in row:
                    v, s = row["extrapolated"][q]
                    ax.errorbar(row["l"] + 0.5, v, 2 * s, fmt="s", color="C3", ms=4, capsize=2,
                                label="MC extrapolated 1/n→0 (±2 SE)" if (q == "Q" and row is e["mc"][0]) else None)
        cw = ACTIVATIONS[act]["C_W"]
        ax.set_title(f"{act}, C_W = {cw:g}, C_b = 0: dNTK / Θ² vs layer l")
        ax.set_xlabel("layer l (readout of L = l - 1 hidden layers)")
        ax.set_ylabel("n E[dH z] / Θ²  (relative size × n)")
        ax.axhline(0, color="gray", lw=0.5)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


# Deliberately repeated in every paper script (figure saving, --quick/--out-dir): each runs standalone by its path.
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="recursion only, smaller depths (no Monte Carlo)")
    p.add_argument("--out-dir", default=str(HERE))
    a = p.parse_args(argv)
    result = run(**(QUICK if a.quick else FULL))
    out = Path(a.out_dir)
    (out / "dntk_depth.json").write_text(json.dumps(result, indent=1))
    if importlib.util.find_spec("matplotlib"):
        plot(result, out / "dntk_depth.png")
    else:
        print("matplotlib is not installed (pip install ntk-theory[plot]): dntk_depth.png not written")
    e = result["activations"]
    print(f"relu: max |Q/Th^2 - (l^2-1)/(3l)| = {e['relu']['max_abs_error']:.2e}, max |P| = {e['relu']['max_abs_P']:.1e}")
    f = e["tanh"]["fit"]
    print(f"tanh: P/Th^2 = {f['P_slope']:.6f} l {f['P_log']:+.4f} log l {f['P_const']:+.4f} (derived slope -1/12 = "
          f"{-1 / 12:.6f}); Q/Th^2 = {f['Q_log']:+.4f} log l {f['Q_const']:+.4f} (derived -1/16)  (fit l in {f['l_range']})")
    for act, v in e.items():
        for row in v.get("mc", []):
            parts = [f"{act} L={row['L']}"]
            for q in ("P", "Q"):
                parts.append(f"{q}: rec {row['recursion'][q]:.4g}, "
                             + ", ".join(f"n={n} {m[q][0]:.4g}±{m[q][1]:.2g}" for n, m in row["mc"].items())
                             + (f", extrap {row['extrapolated'][q][0]:.4g}±{row['extrapolated'][q][1]:.2g} "
                                f"(z {row['z'][q]:+.2f})" if "z" in row else ""))
            print("; ".join(parts))
    print(f"{result['seconds']:.1f} s")
    return result


if __name__ == "__main__":
    main()
