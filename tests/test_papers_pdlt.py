"""PDLT (Roberts, Yaida, Hanin 2021) and Hanin & Nica (2020) reproductions in papers/pdlt/: the numbers
behind the figures, at small sizes.

Fast: the critical ReLU vertex V(l)/K^2 = 5(l-1) exactly; the closed forms of the ReLU NTK tensors
(n Var(Theta)/Theta^2 = L(11L+7)/(3(L+1)), slope 11/3 per layer vs 5 for the vertex) against the SymPy
iteration and the numerical recursion; tanh at criticality: l K(l) -> 1/2, V/(l K^2) -> 2/3 with the
derived log corrections 1/K = 2l - (5/6) log l + c_K, V/K^2 = (2/3) l - (5/18) log l + c_V.
Slow (Monte Carlo, fixed seeds, 4 standard errors): the output's n kappa_4/(3K^2) against the exact
finite-width value n[(1+5/n)^L - 1] at n = 64, 128 and, extrapolated linearly in 1/n, against 5L
(leftover 1/n^2 term of the extrapolation <= 0.16, below 0.3 SE); the NTK's n Var(Theta)/Theta^2
extrapolated in 1/n against the recursion, L = 1 (exact at any width) at each width, and 5L excluded.
"""

import sys
from pathlib import Path

import pytest
from scripts import load_script

DIR = Path(__file__).resolve().parent.parent / "papers" / "pdlt"


def _load(name):
    if str(DIR) not in sys.path:
        sys.path.insert(0, str(DIR))
    return load_script(f"papers/pdlt/{name}.py", f"pdlt_{name}")


@pytest.fixture(scope="module")
def vertex():
    return _load("relu_vertex")


@pytest.fixture(scope="module")
def ntkvar():
    return _load("relu_ntk_variance")


@pytest.fixture(scope="module")
def tanh():
    return _load("tanh_criticality")


# ------------------------------------------------------------------ fast: recursions
def test_relu_vertex_is_five_l_minus_one(vertex):
    rec = vertex.recursion_vertex(12)
    assert rec == pytest.approx([5.0 * (l - 1) for l in range(1, 14)], abs=1e-12)


def test_relu_exact_finite_width_cumulant_expands_to_5L(vertex):
    for L in (1, 3, 5):
        n = 1e6
        assert vertex.exact_cumulant(L, n) == pytest.approx(5 * L + 25 * L * (L - 1) / (2 * n), rel=1e-9)
    assert vertex.exact_cumulant(1, 64) == pytest.approx(5.0)  # one hidden layer: exactly 5 at any width


def test_relu_ntk_closed_forms(ntkvar):
    assert ntkvar.symbolic_check(3) == []
    for r in ntkvar.recursion_numbers(40):
        cf = ntkvar.closed_form(r["l"])
        for name in ("Th", "V", "A", "B", "D", "F", "K1", "Th1"):
            assert r[name] == pytest.approx(float(cf[name]), rel=1e-12, abs=1e-12), (r["l"], name)
    assert [ntkvar.ntk_relative_variance(L) for L in (1, 2, 3)] == [3, ntkvar.Fraction(58, 9), 10]


def test_relu_ntk_variance_slope_is_eleven_thirds_not_five(ntkvar):
    s = ntkvar.slope_per_layer(200)
    assert s["vertex_slope"] == pytest.approx(5.0, abs=1e-9)
    # d/dL [L(11L+7)/(3(L+1))] = 11/3 - 4/(3(L+1)^2) -> 11/3
    assert s["ntk_variance_slope"] == pytest.approx(11 / 3, abs=1e-4)
    assert s["ntk_variance_at_output"] == pytest.approx(s["closed_form_at_output"], rel=1e-12)


def test_tanh_critical_asymptotics(tanh):
    traj = tanh.trajectory(199)                   # layers 1 .. 200
    a = tanh.asymptotics(traj)
    assert traj["error"] < 1e-8
    i, j = 199, 99                                # l = 200 and l = 100
    # leading order, with the size of the known log corrections as tolerance
    assert abs(a["lK"][i] - 0.5) < 0.01           # 0.5067 (log term predicts +0.0055)
    assert abs(a["V_over_lK2"][i] - 2 / 3) < 0.015  # 0.6563 (log term predicts -0.0074)
    # the subleading logs: the remainders settle (O(log l / l) drift), without them they would not
    assert abs(a["cK"][i] - a["cK"][j]) < 0.01
    assert abs(a["cV"][i] - a["cV"][j]) < 0.015
    no_log_K = (1 / traj["K"] - 2 * traj["l"])
    no_log_V = traj["V"] / traj["K"] ** 2 - 2 / 3 * traj["l"]
    assert abs(no_log_K[i] - no_log_K[j]) > 0.5   # (5/6) log 2 = 0.58
    assert abs(no_log_V[i] - no_log_V[j]) > 0.15  # (5/18) log 2 = 0.19


# ------------------------------------------------------------------ slow: Monte Carlo
@pytest.mark.slow
def test_relu_vertex_monte_carlo(vertex):
    res = vertex.run(depths=(1, 3, 5), widths=(64, 128), samples=20_000, seed=2021)
    for r in res["rows"]:
        for n, m in r["mc"].items():
            assert abs(m["z_vs_exact"]) < 4, (r["L"], n, m["cumulant"], m["exact_finite_width"])
        assert abs(r["z_extrapolated_vs_5L"]) < 4, (r["L"], r["extrapolated"])
        assert r["recursion"] == pytest.approx(5 * r["L"], abs=1e-12)


@pytest.mark.slow
def test_relu_ntk_variance_monte_carlo(ntkvar):
    rows = ntkvar.measure_ntk(depths=(1, 3, 5), widths=(64, 128), samples=30_000, seed=1909)
    for r in rows:
        for n, m in r["mc"].items():
            assert abs(m["z_ntk_mean"]) < 4, (r["L"], n, m["ntk_mean"])
            if r["L"] == 1:   # exact at any width: n Var(Theta)/Theta^2 = 3
                assert abs(m["z_vs_prediction"]) < 4, (n, m["ntk_variance"])
        assert abs(r["z_extrapolated_vs_prediction"]) < 4, (r["L"], r["extrapolated"], r["prediction"])
    deep = rows[-1]                                   # L = 5: 5 L = 25 vs 17.2 is excluded
    assert deep["z_extrapolated_vs_5L"] < -4, deep["extrapolated"]
