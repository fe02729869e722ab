"""PDLT chapter 5: tanh at criticality (C_W = 1, C_b = 0) is in the K* = 0 universality class; the
kernel decays as K(l) ~ 1/(2 l) and the normalised four-point vertex grows as V(l)/K(l)^2 ~ (2/3) l.

Leading orders (PDLT section 5.3.3, K* = 0 class, a_1 = s_3/s_1 + (3/4)(s_2/s_1)^2 = -2 for tanh):
K(l) = 1/((-a_1) l) + ..., V(l)/(n K(l)^2) = (2/3) l / n + ...  The subleading logarithms, derived
here from the small-K expansion of the one-input maps (and checked against the recursion below):

    K'  = <tanh(z)^2>_K = K - 2 K^2 + (17/3) K^3 + O(K^4)
    =>  1/K(l) = 2 l - (5/6) log l + c_K + o(1)            (1/K' = 1/K + a + (a^2 - b) K/a ..., a = 2, b = 17/3)
    V'/K'^2 = 2 - 8 K + (1 - 4 K) V/K^2 + O(K^2 V/K^2, K^2)
    =>  V(l)/K(l)^2 = (2/3) l - (5/18) log l + c_V + o(1)

so l K(l) = 1/2 + (5/24) log(l)/l + O(1/l) and V/(l K^2) = 2/3 - (5/18) log(l)/l + O(1/l): both
approach slowly (at l = 1000, l K = 0.502, V/(l K^2) = 0.664).  The constants c_K, c_V depend on the
input (G0 = 1 here).  Numbers from ``FiniteWidthRecursion("tanh", L, C_W=1, C_b=0).one_input`` (numerical
Gaussian averages, ~25 ms per layer).

    python papers/pdlt/tanh_criticality.py [--depth 999]   (layers l = 1 .. 1000)

writes ``tanh_criticality.png`` and ``tanh_criticality.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ntk_theory.finite_width import FiniteWidthRecursion

HERE = Path(__file__).resolve().parent
G0 = 1.0
LOG_K = 5.0 / 6.0      # 1/K = 2 l - LOG_K log l + c_K
LOG_V = 5.0 / 18.0     # V/K^2 = (2/3) l - LOG_V log l + c_V


def trajectory(depth: int, G0: float = G0) -> dict:
    """K(l), V(l) for l = 1 .. depth + 1 (layer 1 is the input layer: K = G0, V = 0) and the max
    quadrature error estimate."""
    states = FiniteWidthRecursion("tanh", depth, C_W=1.0, C_b=0.0).one_input(G0=G0)
    return {"l": np.arange(1, len(states) + 1), "K": np.array([s.K for s in states]),
            "V": np.array([s.V for s in states]), "error": max(s.error for s in states)}


def asymptotics(traj: dict) -> dict:
    """The leading ratios and the log-corrected remainders (which must tend to constants)."""
    l, K, V = traj["l"].astype(float), traj["K"], traj["V"]
    R = np.divide(V, K**2)
    with np.errstate(divide="ignore"):
        return {"lK": l * K, "V_over_lK2": R / l,
                "cK": 1.0 / K - 2 * l + LOG_K * np.log(l),          # -> c_K
                "cV": R - 2.0 / 3.0 * l + LOG_V * np.log(l)}        # -> c_V


def summary(depth: int) -> dict:
    traj = trajectory(depth)
    a = asymptotics(traj)
    l = traj["l"]
    checkpoints = [x for x in (10, 30, 100, 300, 1000, 3000) if x <= l[-1]] + [int(l[-1])]
    checkpoints = sorted(set(checkpoints))
    rows = []
    for x in checkpoints:
        i = x - 1
        rows.append({"l": x, "K": float(traj["K"][i]), "V": float(traj["V"][i]), "lK": float(a["lK"][i]),
                     "V_over_lK2": float(a["V_over_lK2"][i]),
                     "lK_predicted": 0.5 + LOG_K / 4 * np.log(x) / x,
                     "V_over_lK2_predicted": 2 / 3 - LOG_V * np.log(x) / x,
                     "cK": float(a["cK"][i]), "cV": float(a["cV"][i])})
    return {"claim": "tanh at criticality: l K(l) -> 1/2, V/(l K^2) -> 2/3 (PDLT ch. 5, K* = 0 class)",
            "G0": G0, "depth_layers": int(l[-1]), "quadrature_error": traj["error"], "rows": rows,
            "trajectory": traj, "asymptotics": a}


def plot(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    traj, a = res["trajectory"], res["asymptotics"]
    l = traj["l"][1:].astype(float)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ax = axes[0]
    ax.plot(l, a["lK"][1:], "C0-", label="l K(l)  (recursion)")
    ax.plot(l, 0.5 + LOG_K / 4 * np.log(l) / l, "C0:", label="1/2 + (5/24) log(l)/l")
    ax.plot(l, a["V_over_lK2"][1:], "C1-", label="V / (l K²)  (recursion)")
    ax.plot(l, 2 / 3 - LOG_V * np.log(l) / l, "C1:", label="2/3 - (5/18) log(l)/l")
    ax.axhline(0.5, color="C0", lw=0.6)
    ax.axhline(2 / 3, color="C1", lw=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("layer l")
    ax.set_title("tanh, C_W = 1, C_b = 0 (G0 = 1)")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(l, a["cK"][1:], "C0-", label="1/K - 2l + (5/6) log l → c_K")
    ax.plot(l, a["cV"][1:], "C1-", label="V/K² - (2/3)l + (5/18) log l → c_V")
    ax.plot(l, (1 / traj["K"] - 2 * traj["l"])[1:], "C0--", lw=0.8, label="1/K - 2l (no log term)")
    ax.plot(l, (traj["V"] / traj["K"] ** 2 - 2 / 3 * traj["l"])[1:], "C1--", lw=0.8, label="V/K² - (2/3)l (no log term)")
    ax.set_xscale("log")
    ax.set_xlabel("layer l")
    ax.set_title("remainders after the leading and log terms")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


# Deliberately repeated in every paper script (figure saving, --quick/--out-dir): each runs standalone by its path.
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depth", type=int, default=999, help="hidden layers (the last layer index is depth + 1)")
    p.add_argument("--out-dir", default=str(HERE))
    a = p.parse_args(argv)
    res = summary(a.depth)
    out = Path(a.out_dir)
    plot(res, out / "tanh_criticality.png")
    payload = {k: v for k, v in res.items() if k not in ("trajectory", "asymptotics")}
    (out / "tanh_criticality.json").write_text(json.dumps(payload, indent=1))
    for r in res["rows"]:
        print(f"l={r['l']:5d}  lK={r['lK']:.5f} (pred {r['lK_predicted']:.5f})  V/(lK^2)={r['V_over_lK2']:.5f} "
              f"(pred {r['V_over_lK2_predicted']:.5f})  c_K={r['cK']:.4f}  c_V={r['cV']:.4f}")
    return res


if __name__ == "__main__":
    main()
