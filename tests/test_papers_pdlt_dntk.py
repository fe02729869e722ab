"""papers/pdlt/dntk_depth.py: the dNTK's linear growth with depth at criticality.

Fast: the ReLU closed form Q/Theta^2 = (l^2 - 1)/(3 l), P = 0, derived here from Gaussian integrals of ReLU
done by SymPy and a symbolic sum; the tanh slope P/Theta^2 ~ -l/12 derived here from the small-K Taylor
series of the tanh averages (SymPy) and the large-l balance of the one-input recursion.  Slow: the
recursion against Monte Carlo networks (sample_dntk), 1/n-extrapolated, within 4 standard errors.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from gaussian_series import small_k_average
from scripts import load_script

ROOT = Path(__file__).resolve().parents[1]


def _load():
    return load_script("papers/pdlt/dntk_depth.py", "dntk_depth")


dd = _load()
z, u, K = sp.symbols("z u K", positive=True)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """The script's --quick run (recursion only: ReLU to l = 30, tanh to l = 120), outputs in a temp dir."""
    out = tmp_path_factory.mktemp("dntk_depth")
    return out, dd.main(["--quick", "--out-dir", str(out)])


def _gauss_relu(expr_pos):
    """<g(z)>, z ~ N(0, K), for g = expr_pos on z > 0 and 0 on z < 0 (ReLU: s = z, s' = 1 there)."""
    return sp.simplify(sp.integrate(expr_pos * sp.exp(-z**2 / (2 * K)) / sp.sqrt(2 * sp.pi * K), (z, 0, sp.oo)))


def test_relu_closed_form_derived_by_hand(quick):
    """C_W = lambda_W = 2, C_b = 0, G0 = 1.  The one-input map (PDLT ch. 11) with s'' = 0 away from the kink
    and the kink terms of one input vanishing (<z s s'^3>/(3K) - <s'^4>/3 = 0):
    Theta' = lambda_W <s^2> + C_W <s'^2> Theta, F' = C_W^2 <s^2 s'^2> Theta + C_W^2 (d<s^2>/dK)^2 F,
    Q' = lambda_W C_W [<s^2 s'^2> Theta + F (d<s^2>/dK)^2] + C_W^2 <s'^2> d<s^2>/dK Q."""
    C_W = lam = sp.Integer(2)
    ss, dd_, ssdd = _gauss_relu(z**2), _gauss_relu(sp.Integer(1)), _gauss_relu(z**2)
    ss1 = sp.diff(ss, K)
    kink = _gauss_relu(z * z) / (3 * K) - _gauss_relu(sp.Integer(1)) / 3
    assert sp.simplify(kink) == 0 and sp.diff(dd_, K) == 0
    Kv = C_W * 1                                     # K(1) = C_W G0, constant at criticality
    assert sp.simplify(C_W * ss.subs(K, Kv) - Kv) == 0
    l, m = sp.symbols("l m", positive=True, integer=True)
    # Theta(m) = m K: Theta' - Theta = lam <s^2> + (C_W <s'^2> - 1) Theta, with C_W <s'^2> = 1
    assert sp.simplify(C_W * dd_ - 1) == 0
    Th = m * sp.simplify(lam * ss.subs(K, Kv))
    f_src = sp.simplify((C_W**2 * ssdd).subs(K, Kv)) * Th
    assert sp.simplify(C_W**2 * ss1**2 - 1) == 0 and sp.simplify(C_W**2 * dd_ * ss1 - 1) == 0
    F = sp.summation(f_src, (m, 1, l - 1))           # F(1) = 0
    q_src = lam * C_W * (ssdd.subs(K, Kv) * Th + F.subs(l, m) * ss1**2)
    Q = sp.summation(sp.expand(q_src), (m, 1, l - 1))  # Q(1) = 0
    ratio = sp.simplify(Q / (l * sp.simplify(lam * ss.subs(K, Kv)))**2)
    assert sp.simplify(ratio - (l**2 - 1) / (3 * l)) == 0
    r = quick[1]["activations"]["relu"]["recursion"]
    want = [float(ratio.subs(l, i)) for i in r["l"]]
    np.testing.assert_allclose(r["Q_over_Theta2"], want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dd.relu_closed_form(r["l"]), want, rtol=1e-14)
    assert max(abs(p) for p in r["P"]) == 0.0


def _small_k(expr, order=1):
    """<g(z)>, z ~ N(0, K), as a series in K to O(K^order)."""
    return small_k_average(expr, z, K, order)


def test_tanh_slope_derived_from_small_k_balance(quick):
    """K' - K = C_W <s^2> - K = -a K^2 -> K ~ 1/(a l); Theta* from lambda_W <s^2> + (C_W <s'^2> - 1) Theta = 0;
    B = b l from dB/dl = C_W^2 <s'^4> Theta*^2 + (C_W^2 <s'^2>^2 - 1) B; P = p l from
    dP/dl = C_W^2 B <s'' s> <s'^2> + (C_W^2 <s'^2> d<s^2>/dK - 1) P (the Theta^2 <s'' s'^2 s> source is O(1/l))."""
    s = sp.tanh(z)
    s1, s2 = sp.diff(s, z), sp.diff(s, z, 2)
    C_W = lam = sp.Integer(1)
    ss = _small_k(s**2, 2)
    a = -(C_W * ss - K).coeff(K, 2)
    assert a == 2
    dd_ = _small_k(s1**2, 1)
    theta_star = sp.solve(lam * ss.coeff(K, 1) + sp.expand(C_W * dd_ - 1).coeff(K, 1) * sp.Symbol("T"), sp.Symbol("T"))[0]
    assert theta_star == sp.Rational(1, 2)
    hB = -sp.expand(C_W**2 * dd_**2 - 1).coeff(K, 1)          # (C_W^2 <s'^2>^2 - 1) = -hB K
    b = C_W**2 * _small_k(s1**4, 0) * theta_star**2 / (1 + hB / a)
    assert b == sp.Rational(1, 12)
    g = _small_k(s2 * s, 1).coeff(K, 1)              # <s'' s> = g K
    h = -sp.expand(C_W**2 * dd_ * sp.diff(ss, K)).coeff(K, 1)
    p = C_W**2 * g * b / (a + h)
    slope = sp.nsimplify(p / theta_star**2)
    assert slope == sp.Rational(-1, 12)
    e = quick[1]["activations"]["tanh"]
    assert e["tail"]["l"] == 120
    assert abs(e["fit"]["P_slope"] - float(slope)) < 0.002 * abs(float(slope))
    # Q: its leading source cancels at Theta* = 1/2; Theta = 1/2 + delta, delta(l+1) - delta(l) =
    # -delta/l + gamma/l^2 with gamma = (c - 4)/8 from <s'^2> = 1 - 2K + c K^2 gives delta ~ gamma log l / l,
    # the source -2 delta F* (F* = Theta*/8 from dF/dl = K Theta - 8 K F) and dQ/dl = ... - 3Q/l give
    # Q ~ -(2 F* gamma / 3) log l, Q/Theta^2 ~ -(2 F* gamma / (3 Theta*^2)) log l.
    c = _small_k(s1**2, 2).coeff(K, 2)
    gamma = (c - 4) / 8
    F_star = theta_star / 8
    assert sp.expand(C_W**2 * _small_k(s**2 * s1**2, 1) * theta_star - 8 * K * F_star) == 0
    q_log = sp.nsimplify(-2 * F_star * gamma / (3 * theta_star**2))
    assert q_log == sp.Rational(-1, 16)
    # Q/Theta^2 + (1/16) log l at l = 30, 60, 120 (the script's fit output)
    rest = e["fit"]["Q_plus_log_over_16"]
    vals = [rest[k] for k in sorted(rest, key=int)]
    assert max(vals) - min(vals) < 0.005           # a coefficient off by 20% would drift by 0.017
    assert abs(e["tail"]["Q_over_Theta2"]) < 0.05 * abs(e["tail"]["P_over_Theta2"])


def test_quick_main_writes_outputs(quick):
    out, res = quick
    assert (out / "dntk_depth.json").stat().st_size > 0
    assert importlib.util.find_spec("matplotlib") is None or (out / "dntk_depth.png").stat().st_size > 0
    assert res["activations"]["relu"]["max_abs_error"] < 1e-12


@pytest.mark.slow
@pytest.mark.parametrize("act,depth", [("relu", 2), ("tanh", 2), ("tanh", 4)])
def test_recursion_against_monte_carlo(act, depth):
    """Readout layer l = depth + 1: 2 y(64) - y(32) of the Monte Carlo P/Theta^2, Q/Theta^2 within 4 SE of
    the recursion (ReLU's P = 0 included: the finite-width P is O(1/n) and extrapolates to 0)."""
    rec = dd.recursion_ratios(act, depth + 1)
    row = dd.measure(act, depth, (32, 64), 4000, 5, rec)
    for q in ("P", "Q"):
        assert abs(row["z"][q]) < 4, (q, row)
