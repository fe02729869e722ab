"""The NTK variance of a critical ReLU network (C_W = 2, C_b = 0, param "ntk" so lambda_b = 0: weights
only) against Hanin & Nica (ICLR 2020, arXiv:1909.05989): what exactly grows as "5 per layer"?

Hanin & Nica: for a bias-free He-initialised ReLU net of depth d and hidden widths n_j,
E[Theta(x,x)^2] / E[Theta(x,x)]^2 ~= exp(5 beta), beta = sum_j 1/n_j, where ~= is "up to
bounded factors" (see README.md for what we could and could not check of their statement).

Here, for L hidden layers of width n and a readout (layer l = L + 1), the one-input recursion of
``FiniteWidthRecursion("relu", L, C_W=2, C_b=0, param="ntk")`` solved in closed form (K = 2 G0 at every
layer, units K = 1; verified against the SymPy iteration and the numerical recursion):

    Theta(l) = l,  V(l) = 5 (l-1),  F(l) = l (l-1),  D(l) = 3 l (l-1),
    B(l) = (l-1) l (2l-1) / 3,  A(l) = 7 (l-1) l (2l-1) / 6 + l (l-1) / 2,
    n Var(Theta) / Theta^2 = (A + 2B) / Theta^2 = (l-1)(11 l - 4) / (3 l) = L (11 L + 7) / (3 (L + 1))

so the NTK's relative variance grows by 11/3 per layer at large depth (offset -5: 11L/3 - 4/3 + ...),
while the output's normalised fourth cumulant n kappa_4 / (3 K^2) = V/K^2 = 5 L grows by exactly 5
per layer, and E[f^4] / (3 E[f^2]^2) = (1 + 5/n)^L ~ exp(5 beta) holds exactly at any width
(see relu_vertex.py).  L = 1 is exact at any width too: Theta = (2/n) sum_i [s(z_i)^2 + w_i^2 theta(z_i)]
is a sum of n i.i.d. terms of variance 3 (K = 1), so n Var(Theta)/Theta^2 = 3, not 5.

Monte Carlo (``sample_statistics``) at widths 64 and 128, extrapolated linearly in 1/n, checks the
1/n coefficients; an exploratory run at n = 32 up to L = 32 (beta = 1) shows E[Theta^2]/E[Theta]^2
beyond first order.

    python papers/pdlt/relu_ntk_variance.py [--quick]

writes ``relu_ntk_variance.png`` and ``relu_ntk_variance.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np

from ntk_theory.finite_width import FiniteWidthRecursion
from ntk_theory.montecarlo import sample_statistics

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
import relu_vertex  # noqa: E402  (the Monte Carlo helpers)

FULL = dict(depths=(1, 2, 3, 5), widths=(64, 128), samples=100_000, seed=1909,
            deep_width=32, deep_depths=(2, 4, 8, 16, 24, 32), deep_samples=20_000)
QUICK = dict(depths=(1, 3, 5), widths=(64, 128), samples=30_000, seed=1909,
             deep_width=32, deep_depths=(4, 16), deep_samples=5_000)


# ---------------------------------------------------------------- closed forms (units K = 1)
def closed_form(l):
    """The layer-l quantities of the critical ReLU recursion (K = 1), exact rationals for int l."""
    l = Fraction(l)
    A = 7 * (l - 1) * l * (2 * l - 1) / 6 + l * (l - 1) / 2
    B = (l - 1) * l * (2 * l - 1) / 3
    return {"K": Fraction(1), "Th": l, "V": 5 * (l - 1), "A": A, "B": B, "D": 3 * l * (l - 1), "F": l * (l - 1),
            "K1": Fraction(0), "Th1": Fraction(0)}


def ntk_relative_variance(L):
    """n Var(Theta)/Theta^2 at the output of L hidden layers, first order in 1/n: L (11 L + 7) / (3 (L + 1))."""
    return Fraction(L * (11 * L + 7), 3 * (L + 1))


def recursion_numbers(depth: int) -> list[dict]:
    """Per layer l = 1 .. depth + 1 from the numerical recursion (K = 2 G0 = 2, divided out)."""
    states = FiniteWidthRecursion("relu", depth, C_W=2.0, C_b=0.0, param="ntk").one_input(G0=1.0)
    out = []
    for l, s in enumerate(states, 1):
        K = s.K
        out.append({"l": l, "Th": s.Th / K, "V": s.V / K**2, "A": s.A / K**2, "B": s.B / K**2, "D": s.D / K**2,
                    "F": s.F / K**2, "K1": s.K1 / K, "Th1": s.Th1 / K,
                    "ntk_relative_variance": (s.A + 2 * s.B) / s.Th**2, "vertex": s.V / K**2})
    return out


def symbolic_check(depth: int = 4) -> list[str]:
    """Iterate the SymPy layer maps (G0 symbolic) and compare every quantity with :func:`closed_form`;
    returns the mismatches (empty when all agree)."""
    import sympy as sp

    states = FiniteWidthRecursion("relu", depth, C_W=2, C_b=0, param="ntk").symbolic()
    bad = []
    for l, s in enumerate(states, 1):
        K = s.K
        cf = closed_form(l)
        for name, power in (("Th", 1), ("V", 2), ("A", 2), ("B", 2), ("D", 2), ("F", 2), ("K1", 1), ("Th1", 1)):
            got = sp.simplify(getattr(s, name) / K**power)
            want = sp.Rational(cf[name].numerator, cf[name].denominator)
            if sp.simplify(got - want) != 0:
                bad.append(f"layer {l} {name}: {got} != {want}")
    return bad


def slope_per_layer(depth: int = 200) -> dict:
    """The large-depth slopes d/dL of n Var(Theta)/Theta^2 and of V/K^2 from the numerical recursion."""
    rows = recursion_numbers(depth)
    nv = [r["ntk_relative_variance"] for r in rows]
    vv = [r["vertex"] for r in rows]
    return {"depth": depth, "ntk_variance_slope": nv[-1] - nv[-2], "vertex_slope": vv[-1] - vv[-2],
            "ntk_variance_at_output": nv[-1], "closed_form_at_output": float(ntk_relative_variance(depth))}


# ---------------------------------------------------------------- Monte Carlo
def measure_ntk(depths, widths, samples, seed) -> list[dict]:
    rows = []
    for L in depths:
        row = {"L": L, "prediction": float(ntk_relative_variance(L)), "five_L": 5 * L,
               "hanin_nica_first_order": 5 * L, "mc": {}}
        for k, n in enumerate(widths):
            m = relu_vertex.measure(L, n, samples, seed + 1000 * L + k)
            m["z_ntk_mean"] = (m["ntk_mean"][0] - 2.0 * (L + 1)) / m["ntk_mean"][1]
            m["z_vs_prediction"] = (m["ntk_variance"][0] - row["prediction"]) / m["ntk_variance"][1]
            row["mc"][str(n)] = m
        if len(widths) == 2:
            a, b = (row["mc"][str(n)]["ntk_variance"] for n in widths)
            ex = relu_vertex.extrapolate(a, b)
            row["extrapolated"] = ex
            row["z_extrapolated_vs_prediction"] = (ex[0] - row["prediction"]) / ex[1]
            row["z_extrapolated_vs_5L"] = (ex[0] - 5 * L) / ex[1]
        rows.append(row)
    return rows


def measure_deep(width, depths, samples, seed) -> list[dict]:
    """E[Theta^2]/E[Theta]^2 and E[f^4]/(3 E[f^2]^2) (raw, MC means) at one small width, large beta."""
    X = relu_vertex.X
    out = []
    for L in depths:
        r = sample_statistics(X, "relu", depth=L, width=width, C_W=2.0, C_b=0.0, samples=samples,
                              seed=seed + L, batches=50)
        th, th_se = r.ntk_mean.value[0, 0], r.ntk_mean.stderr[0, 0]
        v, v_se = r.ntk_covariance.value[0, 0, 0, 0], r.ntk_covariance.stderr[0, 0, 0, 0]
        ratio = 1 + v / th**2
        ratio_se = float(np.hypot(v_se / th**2, 2 * v / th**3 * th_se))
        beta = L / width
        out.append({"L": L, "width": width, "beta": beta, "samples": samples,
                    "ntk_second_moment_ratio": [float(ratio), ratio_se],
                    "first_order": 1 + float(ntk_relative_variance(L)) / width,
                    "exp_5beta": float(np.exp(5 * beta)), "exp_11_3_beta": float(np.exp(11 / 3 * beta)),
                    "output_fourth_moment_ratio_exact": (1 + 5 / width) ** L})
    return out


def run(depths, widths, samples, seed, deep_width, deep_depths, deep_samples) -> dict:
    slopes = slope_per_layer(200)
    return {
        "claim": ("n Var(Theta)/Theta^2 = L(11L+7)/(3(L+1)) (slope 11/3 per layer) vs the output's "
                  "n kappa_4/(3K^2) = 5L; Hanin & Nica: E[Theta^2]/E[Theta]^2 ~= exp(5 beta)"),
        "closed_form_table": [{"L": L, "ntk_relative_variance": str(ntk_relative_variance(L)),
                               "value": float(ntk_relative_variance(L)), "vertex": 5 * L} for L in range(1, 11)],
        "slopes_at_depth_200": slopes,
        "mc": measure_ntk(depths, widths, samples, seed),
        "deep": measure_deep(deep_width, deep_depths, deep_samples, seed + 7),
        "config": dict(depths=list(depths), widths=list(widths), samples=samples, seed=seed,
                       deep_width=deep_width, deep_depths=list(deep_depths), deep_samples=deep_samples),
    }


def plot(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3))
    ax = axes[0]
    Ls = np.arange(0, 11)
    ax.plot(Ls, [float(ntk_relative_variance(L)) if L else 0 for L in Ls], "k-",
            label="recursion: n Var(Θ)/Θ² = L(11L+7)/(3(L+1))")
    ax.plot(Ls, 5 * Ls, "r--", label="5L = n κ₄/(3K²) of the output (and 1st order of exp(5β))")
    ax.plot(Ls, 11 / 3 * Ls - 4 / 3, "k:", lw=0.8, label="asymptote 11L/3 - 4/3")
    rows = res["mc"]
    widths = res["config"]["widths"]
    for k, n in enumerate(widths):
        y = [r["mc"][str(n)]["ntk_variance"] for r in rows]
        ax.errorbar([r["L"] + 0.08 * (k - 1) for r in rows], [v for v, _ in y], [2 * s for _, s in y], fmt="o",
                    ms=4, capsize=2, color=f"C{k}", label=f"MC n={n} (±2 SE)")
    if "extrapolated" in rows[0]:
        ax.errorbar([r["L"] + 0.08 for r in rows], [r["extrapolated"][0] for r in rows],
                    [2 * r["extrapolated"][1] for r in rows], fmt="s", ms=4, capsize=2, color="C2",
                    label="MC extrapolated 1/n → 0")
    ax.set_xlabel("hidden layers L")
    ax.set_ylabel("n Var(Θ) / E[Θ]²  at 1/n")
    ax.set_title("ReLU NTK relative variance (C_W=2, C_b=0, weights only)")
    ax.legend(fontsize=7)
    ax = axes[1]
    deep = res["deep"]
    b = np.array([d["beta"] for d in deep])
    bb = np.linspace(0, b.max(), 100)
    n = deep[0]["width"]
    ax.errorbar(b, [d["ntk_second_moment_ratio"][0] for d in deep], [2 * d["ntk_second_moment_ratio"][1] for d in deep],
                fmt="o", ms=4, capsize=2, color="C0", label=f"MC E[Θ²]/E[Θ]², n={n}")
    ax.plot(bb, np.exp(5 * bb), "r--", label="exp(5β)")
    ax.plot(bb, np.exp(11 / 3 * bb), "k:", label="exp(11β/3)")
    Lc = bb * n
    ax.plot(bb, 1 + Lc * (11 * Lc + 7) / (3 * (Lc + 1)) / n, "k-", lw=0.8,
            label="1 + L(11L+7)/(3(L+1)n)  (1st order)")
    ax.plot(bb, (1 + 5 / n) ** (bb * n), "C3-", lw=0.8, label="E[f⁴]/(3E[f²]²) = (1+5/n)^L (exact)")
    ax.set_yscale("log")
    ax.set_xlabel("β = L / n")
    ax.set_title("beyond first order (exploratory)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


# Deliberately repeated in every paper script (figure saving, --quick/--out-dir): each runs standalone by its path.
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out-dir", default=str(HERE))
    a = p.parse_args(argv)
    res = run(**(QUICK if a.quick else FULL))
    res["symbolic_mismatches"] = symbolic_check(4)
    out = Path(a.out_dir)
    (out / "relu_ntk_variance.json").write_text(json.dumps(res, indent=1))
    plot(res, out / "relu_ntk_variance.png")
    print("slopes at depth 200:", res["slopes_at_depth_200"], "symbolic mismatches:", res["symbolic_mismatches"])
    for r in res["mc"]:
        parts = [f"L={r['L']} pred {r['prediction']:.4f}"]
        for n, m in r["mc"].items():
            parts.append(f"n={n}: {m['ntk_variance'][0]:.3f}±{m['ntk_variance'][1]:.3f} (z {m['z_vs_prediction']:+.2f}; "
                         f"mean z {m['z_ntk_mean']:+.2f}; direct kappa {m['cumulant_direct'][0]:.2f}±{m['cumulant_direct'][1]:.2f})")
        if "extrapolated" in r:
            parts.append(f"extrap {r['extrapolated'][0]:.3f}±{r['extrapolated'][1]:.3f} "
                         f"(z vs pred {r['z_extrapolated_vs_prediction']:+.2f}, vs 5L {r['z_extrapolated_vs_5L']:+.1f})")
        print("; ".join(parts))
    for d in res["deep"]:
        print(f"beta={d['beta']:.3f} L={d['L']}: E[Th^2]/E[Th]^2 = {d['ntk_second_moment_ratio'][0]:.4f}"
              f"±{d['ntk_second_moment_ratio'][1]:.4f}; 1st order {d['first_order']:.4f}, exp(11b/3) "
              f"{d['exp_11_3_beta']:.4f}, exp(5b) {d['exp_5beta']:.4f}, (1+5/n)^L {d['output_fourth_moment_ratio_exact']:.4f}")
    return res


if __name__ == "__main__":
    main()
