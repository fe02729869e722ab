r"""PDLT chapter ∞: at criticality the ddNTKs grow like the dNTK, linearly in the layer l, so their effect on
training is again controlled by the depth-to-width ratio l/n.

Quantities (one input, G0 = x.x / n0 = 1): the ddNTK tensors R, S, T, U of layer l, normalised per 1/n
(R = n E[ddIH_{iijj}], S, T, U = n E[ddIIH_{iijj}], E[ddIIH_{ijij}], E[ddIIH_{ijji}], i != j;
``FiniteWidthRecursion(...).ddntk``), made dimensionless as R K / Theta^3 (and S, T, U alike), with K = K(l),
Theta = Theta(l) the infinite-width kernel and NTK of the layer.  A ddNTK carries the units of Theta^3 / z^2
(third derivative of z times three gradients), so X K / Theta^3 is independent of the scale of z (for ReLU
independent of G0); it is the relative size of the ddNTK's term in a gradient step ((eta^3/6) ddH eps^3
against eta H eps with eta ~ 1/Theta and errors eps ~ sqrt(K)) times n, the same normalisation as
``dntk_depth.py``'s P / Theta^2 for the dNTK.  The JSON also carries the ratios X / Theta^3 (without K): for
tanh, where K ~ 1/(2 l), these grow like l^2.

ReLU (C_W = 2, C_b = 0, weights only, lambda_W = C_W = 2; pointwise derivatives, s'' = s''' = 0 away from the
kink, the form the Monte Carlo's networks have): K = 2 G0, Theta = l K, P = 0, F = l (l - 1) K^2,
B = (l - 1) l (2 l - 1) K^2 / 3, Q = (l - 1) l (l + 1) K^2 / 3; with <s'^2> = 1/2, <s'^4> = 1/2,
<s^2 s'^2> = K/2, d<s^2>/dK = 1/2 the maps reduce to R' = R + P = R, U' = U,
S' = S + 2 Theta^2 + B, T' = T + 2 K Theta + F + 2 Q, whose increments are both l (l + 1) (2 l + 1) K^2 / 3, so

    R = U = 0,    S = T = (l - 1) l^2 (l + 1) K^2 / 6,    S K / Theta^3 = T K / Theta^3 = (l^2 - 1) / (6 l)

(half of the dNTK's Q / Theta^2 = (l^2 - 1) / (3 l)).

tanh (C_W = 1, C_b = 0): K ~ 1/(2 l), Theta -> 1/2, B ~ l/12, P ~ -l/48 (``dntk_depth.py``); with the small-K
averages <s''' s'> = <s''' s'^3> = -2, <(s'' s')'> = -2, d<s^2>/dK = 1, <s'^2>^2 = 1 - 4K the large-l balances
dR/dl = (Theta B <s''' s'> + Theta P <(s'' s')'> + P) - 4 K R = -l/12 - 2 R / l and dS/dl = B - 2 S / l give
R ~ -l^2/48, S ~ +l^2/48, so

    R K / Theta^3 = -l/12 + O(log l),     S K / Theta^3 = +l/12 + O(log l)

while U -> 1/8 (U' - U = <s''^2 s'^2> Theta^3 - 4 K U, <s''^2 s'^2> = 4 K) and T's O(1) sources cancel at
Theta = 1/2 (F <s s'>'^2 + 2 Theta F <s s'>' <s'' s'>' + Theta^2 F <s'' s'>'^2 = F (1 - 2 Theta)^2 -> 0), so
T K / Theta^3 and U K / Theta^3 tend to 0.  The slopes' log corrections are fitted, not derived.

Monte Carlo (``ntk_theory.montecarlo.dntk.sample_dntk``, one input x = (1, 1, 1, 1), 8 readout neurons,
jackknife SEs) of the readout layer l = L + 1 of networks with L = 2, 4 hidden layers at widths 32 and 64 and
L = 8 at widths 64 and 128, extrapolated linearly in 1/n (2 y(2n) - y(n), SEs in quadrature); z-scores against
the recursion.  At L = 8 the pair 32/64 (L/n = 1/4 at n = 32) leaves 1/n^2 terms of up to 5 SE (ReLU's R, U,
tanh's T, U), hence the larger widths there; what is left is reported, not hidden.

    python papers/pdlt/ddntk_depth.py [--quick] [--out-dir DIR]

writes ``ddntk_depth.png`` and ``ddntk_depth.json``.
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
NAMES = ("R", "S", "T", "U")
#: C_W, C_b and the derivative form: ReLU pointwise (s'' = 0 away from the kink, as each sampled network)
ACTIVATIONS = {"relu": {"C_W": 2.0, "C_b": 0.0, "kink_terms": False},
               "tanh": {"C_W": 1.0, "C_b": 0.0, "kink_terms": True}}
#: Monte Carlo widths and networks per depth (at L = 8 the pair 32/64 leaves 1/n^2 terms of several SE: 64/128)
FULL = {"max_layer": 20, "tanh_fit_layer": 300, "depths": (2, 4, 8),
        "widths": {2: (32, 64), 4: (32, 64), 8: (64, 128)}, "samples": {2: 3000, 4: 3000, 8: 1500}, "seed": 23}
QUICK = {"max_layer": 20, "tanh_fit_layer": 40, "depths": (), "widths": (32, 64), "samples": 0, "seed": 23}


def _weights(activation):
    a = ACTIVATIONS[activation]
    return {"C_W": a["C_W"], "C_b": a["C_b"]}


def recursion_ratios(activation: str, max_layer: int) -> dict:
    """R, S, T, U (per 1/n), K, Theta and the ratios X K / Theta^3, X / Theta^3 for layers l = 1 .. max_layer
    (one input, G0 = 1)."""
    rec = FiniteWidthRecursion(activation, max_layer - 1, **_weights(activation))
    states = rec.one_input(G0=G0)
    dd = rec.ddntk(G0=G0, kink_terms=ACTIVATIONS[activation]["kink_terms"])
    out = {k: [] for k in ("l", "K", "Theta", "error") + NAMES}
    for q in NAMES:
        out[q + "_K_over_Theta3"], out[q + "_over_Theta3"] = [], []
    for l, (s, d) in enumerate(zip(states, dd), start=1):
        out["l"].append(l)
        out["K"].append(float(s.K))
        out["Theta"].append(float(s.Th))
        out["error"].append(float(d.error))
        for q in NAMES:
            v = float(getattr(d, q))
            out[q].append(v)
            out[q + "_K_over_Theta3"].append(v * float(s.K) / float(s.Th) ** 3)
            out[q + "_over_Theta3"].append(v / float(s.Th) ** 3)
    return out


def relu_closed_form(l):
    """S K / Theta^3 = T K / Theta^3 = (l^2 - 1)/(6 l) of critical ReLU (module docstring); R = U = 0."""
    l = np.asarray(l, dtype=float)
    return (l**2 - 1) / (6 * l)


def fit_tanh(r: dict, l_min: int) -> dict:
    """Least squares over l >= l_min: X K / Theta^3 = a l + c_1 log l + c_0 for X = R, S (derived a = -1/12,
    +1/12); the tail values of T K / Theta^3, U K / Theta^3 and U (derived U -> 1/8)."""
    l = np.asarray(r["l"], dtype=float)
    m = l >= l_min
    lm = l[m]
    A = np.c_[lm, np.log(lm), np.ones_like(lm)]
    out = {"l_range": [int(l_min), int(lm[-1])]}
    for q, derived in (("R", -1.0 / 12), ("S", 1.0 / 12)):
        c = np.linalg.lstsq(A, np.asarray(r[q + "_K_over_Theta3"])[m], rcond=None)[0]
        out[q] = {"slope": float(c[0]), "log": float(c[1]), "const": float(c[2]), "slope_derived": derived}
    out["tail"] = {k: float(r[k][-1]) for k in ("l", "K", "Theta", "T", "U", "T_K_over_Theta3", "U_K_over_Theta3",
                                                "R_K_over_Theta3", "S_K_over_Theta3")}
    return out


def measure(activation: str, depth: int, widths, samples: int, seed: int, recursion: dict) -> dict:
    """Monte Carlo R, S, T, U times K / Theta^3 (infinite-width K, Theta of layer depth + 1) of the readout at
    each width, the 1/n extrapolation 2 y(2n) - y(n) and its z-scores against the recursion."""
    l = depth + 1
    scale = recursion["K"][l - 1] / recursion["Theta"][l - 1] ** 3
    row = {"L": depth, "l": l, "recursion": {q: recursion[q + "_K_over_Theta3"][l - 1] for q in NAMES}, "mc": {}}
    for k, n in enumerate(widths):
        r = sample_dntk(activation, X, depth, n, **_weights(activation), outputs=8, samples=samples,
                        seed=seed + 100 * depth + k, quantities=NAMES, progress=False)
        row["mc"][str(n)] = {q: [float(r.estimates[q].value.ravel()[0] * scale),
                                 float(r.estimates[q].stderr.ravel()[0] * scale)] for q in NAMES}
        row["mc"][str(n)]["seconds"] = r.info["seconds"]
    if len(widths) == 2 and widths[1] == 2 * widths[0]:
        a, b = (row["mc"][str(n)] for n in widths)
        row["extrapolated"], row["z"] = {}, {}
        for q in NAMES:
            v, s = 2 * b[q][0] - a[q][0], float(np.hypot(2 * b[q][1], a[q][1]))
            row["extrapolated"][q] = [v, s]
            row["z"][q] = (v - row["recursion"][q]) / s
    return row


def _per_depth(value, depth):
    """``value`` itself, or its entry for ``depth`` if it is a mapping depth -> value."""
    return value[depth] if isinstance(value, dict) else value


def run(max_layer, tanh_fit_layer, depths, widths, samples, seed) -> dict:
    t0 = time.perf_counter()
    result = {"claim": "ddNTK K/Theta^3 grows linearly in l at criticality: ReLU S = T = (l^2-1)/(6l), R = U = 0; "
                       "tanh R = -l/12 + O(log l), S = +l/12 + O(log l), T, U -> 0",
              "ratio": "X K/Theta^3 for X = R, S, T, U (n E[ddNTK] per 1/n; K, Theta the layer's infinite-width "
                       "kernel and NTK); X/Theta^3 also given",
              "config": {"max_layer": max_layer, "tanh_fit_layer": tanh_fit_layer, "depths": list(depths),
                         "widths": {L: list(_per_depth(widths, L)) for L in depths},
                         "samples": {L: _per_depth(samples, L) for L in depths}, "seed": seed, "G0": G0},
              "activations": {}}
    for act in ACTIVATIONS:
        top = tanh_fit_layer if act == "tanh" else max_layer
        rec = recursion_ratios(act, top)
        entry = {"recursion": {k: v[:max_layer] for k, v in rec.items()}}
        if act == "relu":
            cf = relu_closed_form(rec["l"])
            entry["closed_form_S_T_K_over_Theta3"] = cf.tolist()
            entry["max_abs_error"] = float(max(np.max(np.abs(np.asarray(rec[q + "_K_over_Theta3"]) - cf))
                                               for q in ("S", "T")))
            entry["max_abs_R_U"] = float(max(np.max(np.abs(rec[q])) for q in ("R", "U")))
        else:
            entry["fit"] = fit_tanh(rec, max(20, top // 4))
            entry["max_quadrature_error"] = float(max(rec["error"]))
        if samples:
            entry["mc"] = [measure(act, L, _per_depth(widths, L), _per_depth(samples, L), seed, rec) for L in depths]
        result["activations"][act] = entry
    result["seconds"] = time.perf_counter() - t0
    return result


def plot(result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = dict(zip(NAMES, ("C0", "k", "C2", "C1")))
    for ax, (act, e) in zip(axes, result["activations"].items()):
        r = e["recursion"]
        l = np.asarray(r["l"])
        for q in NAMES:
            ax.plot(l, r[q + "_K_over_Theta3"], "-", color=colours[q], lw=1.5, label=f"recursion {q}K/Θ³")
        if act == "relu":
            ax.plot(l, relu_closed_form(l), "y--", lw=1, label="(l²-1)/(6l)")
        else:
            f = e["fit"]
            for q, sign in (("R", "-"), ("S", "")):
                g = f[q]
                ax.plot(l, g["slope_derived"] * l + g["log"] * np.log(l) + g["const"], "--", color="y", lw=1,
                        label=f"{sign}l/12 {g['log']:+.3f} log l {g['const']:+.3f}")
        for row in e.get("mc", []):
            first = row is e["mc"][0]
            for q in NAMES:
                for k, (n, mk) in enumerate(zip(list(row["mc"]), ("^", "v"))):
                    v, s = row["mc"][n][q]
                    ax.errorbar(row["l"] - 0.3 + 0.3 * k, v, 2 * s, fmt=mk, color=colours[q], ms=4, capsize=2,
                                alpha=0.5, label=("MC smaller n" if k == 0 else "MC larger n (2x)")
                                if (q == "S" and first) else None)
                if "extrapolated" in row:
                    v, s = row["extrapolated"][q]
                    ax.errorbar(row["l"] + 0.5, v, 2 * s, fmt="s", color="C3", ms=4, capsize=2,
                                label="MC extrapolated 1/n→0 (±2 SE)" if (q == "S" and first) else None)
        cw = ACTIVATIONS[act]["C_W"]
        ax.set_title(f"{act}, C_W = {cw:g}, C_b = 0: ddNTK · K / Θ³ vs layer l")
        ax.set_xlabel("layer l (readout of L = l - 1 hidden layers)")
        ax.set_ylabel("n E[ddNTK] K / Θ³  (relative size × n)")
        ax.axhline(0, color="gray", lw=0.5)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


# Deliberately repeated in every paper script (figure saving, --quick/--out-dir): each runs standalone by its path.
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="recursion only (no Monte Carlo), tanh to l = 40")
    p.add_argument("--out-dir", default=str(HERE))
    a = p.parse_args(argv)
    result = run(**(QUICK if a.quick else FULL))
    out = Path(a.out_dir)
    (out / "ddntk_depth.json").write_text(json.dumps(result, indent=1))
    if importlib.util.find_spec("matplotlib"):
        plot(result, out / "ddntk_depth.png")
    else:
        print("matplotlib is not installed (pip install ntk-theory[plot]): ddntk_depth.png not written")
    e = result["activations"]
    print(f"relu: max |S, T K/Th^3 - (l^2-1)/(6l)| = {e['relu']['max_abs_error']:.2e}, "
          f"max |R|, |U| = {e['relu']['max_abs_R_U']:.1e}")
    f = e["tanh"]["fit"]
    for q in ("R", "S"):
        g = f[q]
        print(f"tanh: {q} K/Th^3 = {g['slope']:.6f} l {g['log']:+.4f} log l {g['const']:+.4f} "
              f"(derived slope {g['slope_derived']:+.6f}; fit l in {f['l_range']})")
    t = f["tail"]
    print(f"tanh at l = {t['l']:.0f}: T K/Th^3 = {t['T_K_over_Theta3']:.4g}, U K/Th^3 = {t['U_K_over_Theta3']:.4g}, "
          f"U = {t['U']:.4f} (-> 1/8)")
    for act, v in e.items():
        for row in v.get("mc", []):
            parts = [f"{act} L={row['L']}"]
            for q in NAMES:
                parts.append(f"{q}: rec {row['recursion'][q]:.4g}, "
                             + ", ".join(f"n={n} {m[q][0]:.4g}±{m[q][1]:.2g}" for n, m in row["mc"].items())
                             + (f", extrap {row['extrapolated'][q][0]:.4g}±{row['extrapolated'][q][1]:.2g} "
                                f"(z {row['z'][q]:+.2f})" if "z" in row else ""))
            print("; ".join(parts))
    print(f"{result['seconds']:.1f} s")
    return result


if __name__ == "__main__":
    main()
