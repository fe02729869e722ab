"""papers/pdlt/ddntk_depth.py: the ddNTKs' linear growth with depth at criticality.

Fast: the ReLU closed forms S K/Theta^3 = T K/Theta^3 = (l^2 - 1)/(6 l), R = U = 0 derived here from Gaussian
integrals of ReLU done by SymPy and symbolic sums of the one-input maps (pointwise derivatives); the tanh
slopes R K/Theta^3 ~ -l/12, S K/Theta^3 ~ +l/12 and U -> 1/8 derived here from the small-K Taylor series of the
tanh averages (SymPy) and the large-l balance; the readout of one hidden layer against Monte Carlo networks (the
layer-2 tensors are exact at every width: within 4 SE at width 16).  Slow: the recursion at L = 2 against Monte
Carlo networks at widths 32 and 64, 1/n-extrapolated, within 4 standard errors.
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
    return load_script("papers/pdlt/ddntk_depth.py", "ddntk_depth")


dd = _load()
z, K = sp.symbols("z K", positive=True)


def _gauss_relu(expr_pos):
    """<g(z)>, z ~ N(0, K), for g = expr_pos on z > 0 and 0 on z < 0 (ReLU: s = z, s' = 1 there)."""
    return sp.simplify(sp.integrate(expr_pos * sp.exp(-z**2 / (2 * K)) / sp.sqrt(2 * sp.pi * K), (z, 0, sp.oo)))


def test_relu_closed_form_derived_by_hand():
    """C_W = lambda_W = 2, C_b = 0, G0 = 1, pointwise s'' = s''' = 0.  The one-input maps (PDLT ch. 8, 11, ∞):
    Theta' = lambda_W <s^2> + C_W <s'^2> Theta,  B' = C_W^2 <s'^4> Theta^2 + C_W^2 <s'^2>^2 B,
    F' = C_W^2 <s^2 s'^2> Theta + C_W^2 G^2 F,  Q' = lambda_W C_W [<s^2 s'^2> Theta + G^2 F] + C_W^2 <s'^2> G Q,
    and, with every s'' average zero, R' = lambda_W C_W P G <s'^2> + C_W^2 <s'^2>^2 R (P = 0), U' = C_W^2 <s'^2>^2 U,
    S' = lambda_W C_W [<s'^4> Theta^2 + B <s'^2>^2] + C_W^2 <s'^2>^2 S,
    T' = lambda_W^2 [<s^2 s'^2> Theta + F G^2] + 2 <s'^2> Q lambda_W C_W G + C_W^2 <s'^2>^2 T   (G = d<s^2>/dK);
    summed symbolically from zero at layer 1."""
    C_W = lam = sp.Integer(2)
    ss, dd_, dddd, ssdd = (_gauss_relu(g) for g in (z**2, sp.Integer(1), sp.Integer(1), z**2))
    G = sp.diff(ss, K)
    Kv = C_W * 1
    assert sp.simplify(C_W * ss.subs(K, Kv) - Kv) == 0 and sp.simplify(C_W * dd_ - 1) == 0
    a = {name: sp.nsimplify(v.subs(K, Kv)) for name, v in
         (("dd", dd_), ("dddd", dddd), ("ssdd", ssdd), ("G", G), ("ss", ss))}
    l, m = sp.symbols("l m", positive=True, integer=True)
    Th = m * lam * a["ss"]                                  # Theta(m) = m K
    grow = C_W**2 * a["dd"] ** 2
    assert grow == 1 and C_W**2 * a["G"] ** 2 == 1 and C_W**2 * a["dd"] * a["G"] == 1

    def summed(src):  # X(1) = 0, X(l + 1) = X(l) + src(l)
        return sp.expand(sp.summation(sp.expand(src), (m, 1, l - 1)))

    B = summed(C_W**2 * a["dddd"] * Th**2)
    F = summed(C_W**2 * a["ssdd"] * Th)
    Q = summed(lam * C_W * (a["ssdd"] * Th + a["G"] ** 2 * F.subs(l, m)))
    S = summed(lam * C_W * (a["dddd"] * Th**2 + B.subs(l, m) * a["dd"] ** 2))
    T = summed(lam**2 * (a["ssdd"] * Th + F.subs(l, m) * a["G"] ** 2) + 2 * a["dd"] * Q.subs(l, m) * lam * C_W * a["G"])
    Theta_l = l * Kv
    for X in (S, T):
        assert sp.simplify(X * Kv / Theta_l**3 - (l**2 - 1) / (6 * l)) == 0
    r = dd.recursion_ratios("relu", 20)
    want = [float(((l_**2 - 1) / sp.Integer(6 * l_))) for l_ in r["l"]]
    for q in ("S", "T"):
        np.testing.assert_allclose(r[q + "_K_over_Theta3"], want, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dd.relu_closed_form(r["l"]), want, rtol=1e-14)
    assert max(abs(v) for q in ("R", "U") for v in r[q]) == 0.0


def _small_k(expr, order=1):
    """<g(z)>, z ~ N(0, K), as a series in K to O(K^order)."""
    return small_k_average(expr, z, K, order)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """The script's --quick run (recursion only: ReLU to l = 20, tanh to l = 40), outputs in a temp dir."""
    out = tmp_path_factory.mktemp("ddntk_depth")
    return out, dd.main(["--quick", "--out-dir", str(out)])


def test_tanh_slopes_derived_from_small_k_balance(quick):
    """K ~ 1/(a l) with K' - K = C_W <s^2> - K = -a K^2; Theta* = 1/2; B = b l, P = p l (b = 1/12, p = -1/48, the
    dNTK's balance, re-derived here); (C_W^2 <s'^2>^2 - 1) = -h K.  R = r l^2 from
    dR/dl = [Theta* b <s''' s'>_0 + Theta* p <(s'' s')'>_0 + p G_0] l - (h / a) R / l (the other sources are O(1)),
    S = s l^2 from dS/dl = b l - (h / a) S / l; then X K / Theta^3 -> (x / (a Theta*^3)) l.  U -> U* from
    U' - U = <s''^2 s'^2> Theta*^3 - h K U."""
    s = sp.tanh(z)
    s1, s2, s3 = (sp.diff(s, z, k) for k in (1, 2, 3))
    ss = _small_k(s**2, 2)
    a = -(ss - K).coeff(K, 2)
    dd_ = _small_k(s1**2, 1)
    T_ = sp.Symbol("T")
    theta = sp.solve(ss.coeff(K, 1) + sp.expand(dd_ - 1).coeff(K, 1) * T_, T_)[0]
    h = -sp.expand(dd_**2 - 1).coeff(K, 1)
    b = _small_k(s1**4, 0) * theta**2 / (1 + h / a)
    G = sp.diff(ss, K)
    g_ss2 = _small_k(s2 * s, 1).coeff(K, 1)
    hP = -sp.expand(dd_ * G).coeff(K, 1)
    p = g_ss2 * b / (a + hP)
    assert (a, theta, b, p) == (2, sp.Rational(1, 2), sp.Rational(1, 12), sp.Rational(-1, 48))
    s3d = _small_k(s3 * s1, 0)
    Gd = _small_k(s3 * s1 + s2**2, 0)
    r = (theta * b * s3d + theta * p * Gd + p * G.subs(K, 0)) / (2 + h / a)
    s_ = b / (2 + h / a)
    slope_R, slope_S = r / (a * theta**3), s_ / (a * theta**3)
    assert (slope_R, slope_S) == (sp.Rational(-1, 12), sp.Rational(1, 12))
    u_star = sp.limit(_small_k(s2**2 * s1**2, 1) * theta**3 / (h * K), K, 0)
    assert u_star == sp.Rational(1, 8)
    f = quick[1]["activations"]["tanh"]["fit"]
    assert f["l_range"] == [20, 40]
    assert abs(f["R"]["slope"] - float(slope_R)) < 0.02 * abs(float(slope_R))   # measured 0.7% at l in 20..60
    assert abs(f["S"]["slope"] - float(slope_S)) < 0.02 * abs(float(slope_S))
    # T's O(1) sources cancel at Theta* = 1/2: G + Theta* <(s'' s')'> = 0 at K = 0; T K/Theta^3 small and U -> 1/8
    assert G.subs(K, 0) + theta * Gd == 0
    tail = f["tail"]
    assert abs(tail["T_K_over_Theta3"]) < 0.01 * abs(tail["R_K_over_Theta3"])
    assert abs(tail["U"] - 0.125) < 0.03 and abs(tail["U_K_over_Theta3"]) < 0.01 * tail["S_K_over_Theta3"]


def test_quick_main_writes_outputs(quick):
    out, res = quick
    assert (out / "ddntk_depth.json").stat().st_size > 0
    assert importlib.util.find_spec("matplotlib") is None or (out / "ddntk_depth.png").stat().st_size > 0
    assert res["activations"]["relu"]["max_abs_error"] < 1e-12


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_one_hidden_layer_against_monte_carlo(act):
    """Readout of one hidden layer (l = 2): its layer-1 preactivations are exactly Gaussian, so the estimators have no
    1/n corrections; each of R, S, T, U of 1,200 networks of width 16 within 4 SE of the recursion (ReLU's R, U are
    exactly 0 on every network: s'' = 0)."""
    rec = dd.recursion_ratios(act, 2)
    row = dd.measure(act, 1, (16,), 1200, 3, rec)
    for q in dd.NAMES:
        v, s = row["mc"]["16"][q]
        if act == "relu" and q in ("R", "U"):
            assert abs(v) < 1e-15 and rec[q][1] == 0.0   # rounding of the forward mode only
        else:
            assert abs(v - row["recursion"][q]) < 4 * s, (q, v, s, row["recursion"][q])


@pytest.mark.slow
@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_recursion_against_monte_carlo_two_hidden_layers(act):
    """Readout layer l = 3: 2 y(64) - y(32) of the Monte Carlo R, S, T, U (times K/Theta^3) within 4 SE of the
    recursion (ReLU's R, U = 0 included: their finite-width values are O(1/n) and extrapolate to 0)."""
    rec = dd.recursion_ratios(act, 3)
    row = dd.measure(act, 2, (32, 64), 1000, 5, rec)
    for q in dd.NAMES:
        assert abs(row["z"][q]) < 4, (q, row)
