r"""Residual networks at finite width: the normalized vertex V/K^2 grows with depth at rate 2 (1 - xi^4).

At criticality of the deep linear residual network, xi^2 + gamma^2 C_W = 1, the four-point vertex of layer l
is V(l) / K^2 = 2 (1 - xi^4)(l - 1) exactly at leading order (tests/test_finite_width_residual.py derives the
all-n result): a residual branch of weight gamma^2 = (1 - xi^2)/C_W slows the growth of the finite-width
corrections by the factor 1 - xi^4 compared with the MLP (xi = 0).  This script prints, for tanh (C_W = 1,
C_b = 0, gamma^2 = 1 - xi^2, the critical point of its linearization) and several xi, the recursion's V(l)/K(l)^2
(ntk_theory.finite_width.residual) against the Monte Carlo of finite residual networks
(ntk_theory.montecarlo.residual, 1/n fit over widths 16..128, value +- standard error), and the
deep-linear line 2 (1 - xi^4)(l - 1).

    python derivations/residual_vertex.py [--samples 100000] [--depth 8] [--plot FILE.png]

``--ntk`` prints instead the NTK's normalized variance n Var(Theta_ii)/Theta^2 = (A + 2B)/Theta^2 of every
layer and the readout: the recursion against 1/n fits of the NTK Monte Carlo (ntk_theory.montecarlo.residual.
sample_residual_ntk: dense weights, backpropagated Jacobians; ``--ntk-samples`` networks at width 16, fewer at
larger widths).

    python derivations/residual_vertex.py --ntk [--depth 4] [--ntk-samples 20000]
"""

from __future__ import annotations

import argparse

import numpy as np

from ntk_theory.finite_width.residual import ResidualRecursion
from ntk_theory.montecarlo.residual import sample_residual, sample_residual_ntk
from ntk_theory.validation.fits import weighted_fit


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--widths", default="16,32,64,128")
    ap.add_argument("--activation", default="tanh")
    ap.add_argument("--plot", default=None)
    ap.add_argument("--ntk", action="store_true", help="the NTK's (A + 2B)/Theta^2 per layer instead of V/K^2")
    ap.add_argument("--ntk-samples", type=int, default=20_000)
    a = ap.parse_args(argv)
    if a.ntk:
        return ntk_growth(a)
    widths = [int(w) for w in a.widths.split(",")]
    L, G0, C_W = a.depth, 1.0, 1.0
    rows = {}
    for xi in (0.0, 0.5, 0.8, 0.95):
        gamma = np.sqrt(1 - xi**2)
        th = ResidualRecursion(a.activation, L, C_W=C_W, xi=xi, gamma=gamma).one_input(G0=G0)[:L]
        runs = [sample_residual(a.activation, G0, L, n, C_W=C_W, xi=xi, gamma=gamma, samples=a.samples, seed=n)
                for n in widths]
        vals = np.stack([r["V"].value[:L] for r in runs])
        errs = np.stack([r["V"].stderr[:L] for r in runs])
        coef, se, _ = weighted_fit(widths, vals, errs, [0, 1])
        K = np.array([s.K for s in th])
        rows[xi] = (np.array([s.V for s in th]) / K**2, coef[0] / K**2, se[0] / K**2)
        print(f"xi = {xi:.2f}, gamma^2 = {gamma**2:.4f} ({a.activation}, C_W = {C_W}, {a.samples} networks per width "
              f"{widths})")
        print(f"  {'layer':>5} {'theory V/K^2':>13} {'Monte Carlo':>20} {'z':>6} {'linear 2(1-xi^4)(l-1)':>22}")
        for l in range(L):
            t, m, e = rows[xi][0][l], rows[xi][1][l], rows[xi][2][l]
            z = (m - t) / e if e > 0 else float("nan")
            print(f"  {l + 1:>5} {t:>13.4f} {m:>12.4f} ± {e:<6.4f} {z:>6.2f} {2 * (1 - xi**4) * l:>22.4f}")
    worst = max(abs(rows[xi][1][l] - rows[xi][0][l]) / rows[xi][2][l] for xi in rows for l in range(L))
    verdict = "agrees" if worst < 4 else "DISAGREES"
    print(f"the recursion {verdict} with the Monte Carlo at every layer and xi (largest |z| = {worst:.2f}; "
          "pass: < 4 standard errors)")
    if a.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        layers = np.arange(1, L + 1)
        for xi, (t, m, e) in rows.items():
            line, = ax.plot(layers, t, label=f"xi = {xi}")
            ax.errorbar(layers, m, e, fmt="o", color=line.get_color(), ms=3)
        ax.set_xlabel("layer l")
        ax.set_ylabel("V(l) / K(l)^2")
        ax.set_title(f"residual {a.activation}, xi^2 + gamma^2 C_W = 1: recursion (lines) vs Monte Carlo")
        ax.legend()
        fig.tight_layout()
        fig.savefig(a.plot, dpi=120)
        print(f"plot written to {a.plot}")


def ntk_growth(a):
    """(A + 2B)/Theta^2 per layer and at the readout: recursion vs Monte Carlo 1/n fits, for several xi."""
    widths = [int(w) for w in a.widths.split(",")]
    L, G0, C_W = a.depth, 1.0, 1.0
    worst = 0.0
    for xi in (0.0, 0.5, 0.8):
        gamma = np.sqrt(1 - xi**2)
        th = ResidualRecursion(a.activation, L, C_W=C_W, xi=xi, gamma=gamma).one_input(G0=G0)
        runs = [sample_residual_ntk(a.activation, G0, L, n, C_W=C_W, xi=xi, gamma=gamma,
                                    samples=int(a.ntk_samples * (16 / n) ** 0.5), seed=n) for n in widths]
        sl = slice(1, L + 1)
        vals = np.stack([r["ntk_variance"].value[sl] for r in runs])
        errs = np.stack([r["ntk_variance"].stderr[sl] for r in runs])
        coef, se, _ = weighted_fit(widths, vals, errs, [0, 1])
        T2 = np.array([s.Th for s in th])[sl] ** 2
        pred = np.array([s.ntk_variance for s in th])[sl] / T2
        print(f"xi = {xi:.2f}, gamma^2 = {gamma**2:.4f} ({a.activation}, C_W = {C_W}; Monte Carlo widths {widths})")
        print(f"  {'layer':>7} {'theory (A+2B)/Th^2':>19} {'Monte Carlo':>20} {'z':>6}")
        for i in range(L):
            m, e = coef[0][i] / T2[i], se[0][i] / T2[i]
            z = (m - pred[i]) / e
            worst = max(worst, abs(z))
            label = "readout" if i == L - 1 else str(i + 2)
            print(f"  {label:>7} {pred[i]:>19.4f} {m:>12.4f} ± {e:<6.4f} {z:>6.2f}")
    print(f"largest |z| = {worst:.2f} (pass: < 4 standard errors)")


if __name__ == "__main__":
    main()
