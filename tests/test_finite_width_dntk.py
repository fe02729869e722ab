"""The dNTK tensors P, Q of ntk_theory.finite_width.dntk against independent judges: a hand Wick computation
for deep linear networks, the exact one-hidden-layer statistics and the width-extrapolated Monte Carlo of
real networks (exact second directional derivatives, tests/dntk_bruteforce.py, itself checked here against
central differences of the reference network's forward mode)."""

from __future__ import annotations

import dntk_bruteforce as bf
import numpy as np
import pytest

from ntk_theory.finite_width import FiniteWidthRecursion
from ntk_theory.validation.fits import weighted_fit

X3 = np.array([[1.0, 0.3, -0.5], [0.2, -1.1, 0.6], [-0.4, 0.8, 0.9]])


def test_bruteforce_second_derivative_matches_central_differences():
    """The Monte Carlo's D^2 z[v_j, v_k] equals central differences of MLP.jvp along v_k (and its first
    tangents the reference NTK)."""
    from ntk_theory.reference.network import MLP

    X = X3[:2]
    for act in ("tanh", "relu"):
        net = MLP.random((3, 7, 6, 3), act, C_W=1.5, C_b=0.2, param="ntk", seed=3)
        _, t, T = bf.second_tangents(bf.activation(act), X, [W[None] for W in net.weights],
                                     [b[None] for b in net.biases], [(0.2, 1.5)] * 3)
        O, N = 3, 2
        lam = net.learning_rate_vector()
        J = net.jacobian(X, flat=True).reshape(N, O, -1)
        H = np.einsum("aip,bjp->aibj", J * lam, J)
        np.testing.assert_allclose(np.einsum("jbai->aibj", t[0].reshape(O, N, N, O)), H, atol=1e-12)
        p0, h = net.flatten(), 1e-5
        for d1 in range(O * N):
            for d2 in range(O * N):
                v1 = lam * J[d1 % N, d1 // N]
                v2 = lam * J[d2 % N, d2 // N]
                jv = []
                for sgn in (1, -1):
                    pr = net.unflatten(p0 + sgn * h * v2)
                    jv.append(MLP(net.spec, act, [w for w, _ in pr], [b for _, b in pr]).jvp(X, v1)[1])
                np.testing.assert_allclose(T[0, d1, d2], (jv[0] - jv[1]) / (2 * h), atol=1e-7)


def test_layer_one_is_zero():
    for X in (X3[:1], X3):
        st = FiniteWidthRecursion("tanh", 1).dntk(X[:2])[0]
        assert not np.any(st.P) and not np.any(st.Q)


def test_one_input_tensor_equals_scalars():
    """N = 1 of the tensor recursion equals the scalar recursion (two codings of the same formulas)."""
    for act, cw, cb in (("tanh", 1.2, 0.1), ("relu", 2.0, 0.0)):
        rec = FiniteWidthRecursion(act, 2, C_W=cw, C_b=cb)
        for a, b in zip(rec.dntk(x=X3[0]), rec.dntk(X3[:1])):
            np.testing.assert_allclose([b.P.item(), b.Q.item()], [a.P, a.Q], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("param", ["ntk", "unit"])
def test_deep_linear_two_hidden_layers_by_wick(param):
    """Linear s, two hidden layers of widths n1, n2, readout = layer 3; per-layer C_W, C_b.  Wick over W(3)
    and W(2) (docs/finite_width.md) gives at leading order, n = n2, r = n2/n1, K_l, Th_l the layer kernels:
        P(3) = 0
        Q(3)_abcd = lW3 CW3 [K2_bd Th2_ac + r CW2^2 Th1_ac K1_bd] + r lW2 CW3^2 CW2 Th1_ac K1_bd
        Q(2)_abcd = lW2 CW2 Th1_ac K1_bd  (exact at every width)."""
    CW, Cb = (1.3, 0.7, 1.1), (0.2, 0.5, 0.3)
    n1, n2 = 40, 70
    lam = [(c, w) if param == "ntk" else (1.0, 1.0) for w, c in zip(CW, Cb)]
    rec = FiniteWidthRecursion("linear", 2, C_W=CW, C_b=Cb, param=param, widths=(n1, n2))
    X = X3
    G0 = X @ X.T / 3
    K1 = Cb[0] + CW[0] * G0
    T1 = lam[0][0] + lam[0][1] * G0
    K2 = Cb[1] + CW[1] * K1
    T2 = lam[1][0] + lam[1][1] * K1 + CW[1] * T1
    r = n2 / n1
    TK1 = np.einsum("ac,bd->abcd", T1, K1)
    Q2 = lam[1][1] * CW[1] * TK1
    Q3 = (lam[2][1] * CW[2] * (np.einsum("ac,bd->abcd", T2, K2) + r * CW[1] ** 2 * TK1)
          + r * lam[1][1] * CW[2] ** 2 * CW[1] * TK1)
    states = rec.dntk(X)
    np.testing.assert_allclose(states[1].Q, Q2, rtol=1e-12)
    np.testing.assert_allclose(states[2].Q, Q3, rtol=1e-12)
    assert np.all(np.abs(states[2].P) < 1e-12)


def test_relu_one_input_P_vanishes():
    """ReLU (any C_W, C_b = 0), one input: P = 0 at every layer (z delta(z) = 0 and <s'' s> = 0: the source
    terms vanish and P(1) = 0); the Monte Carlo confirms it in the slow set."""
    for cw in (2.0, 1.3):
        for st in FiniteWidthRecursion("relu", 4, C_W=cw).dntk(G0=0.8):
            assert abs(st.P) < 1e-12


def test_symbolic_closed_forms():
    """Closed forms in G0: linear (C_W = 1, C_b = 1/2, 'ntk'): Q(2) = Th1 K1 = (G0 + 1/2)^2 (Wick, see the
    deep-linear test); ReLU (C_W = 2, C_b = 0): Q(2) = C_W^2 <s^2 s'^2> Th = 2 K Th = 8 G0^2 by the
    one-hidden-layer formula, and equal to the float recursion at G0 = 0.7 at every layer."""
    import sympy as sp

    G0 = sp.Symbol("G_0", positive=True)
    lin = FiniteWidthRecursion("linear", 2, C_W=1.0, C_b=0.5).dntk_symbolic(G0)
    assert sp.simplify(lin[1].Q - (G0 + sp.Rational(1, 2)) ** 2) == 0 and lin[2].P == 0
    rec = FiniteWidthRecursion("relu", 3, C_W=2.0, C_b=0.0)
    sym = rec.dntk_symbolic(G0)
    assert sp.simplify(sym[1].Q - 8 * G0**2) == 0
    for s, f in zip(sym, rec.dntk(G0=0.7)):
        assert float(s.Q.subs(G0, 0.7)) == pytest.approx(f.Q, rel=1e-12)
        assert float(sp.sympify(s.P).subs(G0, 0.7)) == pytest.approx(f.P, abs=1e-12)


def test_pointwise_refused_for_kinked_nonlinear_pieces():
    with pytest.raises(ValueError, match="piecewise-linear"):
        FiniteWidthRecursion("elu", 2).dntk(G0=1.0, kink_terms=False)


def _mc_check(act, C_W, C_b, depth, X, widths, samples, kink_terms=True, seed=0):
    rec = FiniteWidthRecursion(act, depth, C_W=C_W, C_b=C_b)
    st = rec.dntk(X, kink_terms=kink_terms)[-1]
    runs = [bf.estimate_PQ(act, X, (3,) + (n,) * depth + (3,), C_W=C_W, C_b=C_b, lams=[(C_b, C_W)] * (depth + 1),
                           samples=samples, seed=seed + n) for n in widths]
    zs = {}
    for k, name in enumerate("PQ"):
        vals = np.array([r[k] for r in runs])
        errs = np.array([r[k + 2] for r in runs])
        if len(widths) == 1:
            c0, se0 = vals[0], errs[0]
        else:
            c, se, _ = weighted_fit(widths, vals, errs, (0, 1))
            c0, se0 = c[0], se[0]
        zs[name] = (c0 - getattr(st, name)) / se0
    return zs


def test_one_hidden_layer_matches_monte_carlo_at_finite_width():
    """With one hidden layer P(2), Q(2) are exact at every width (z1 is Gaussian, the layer-1 NTK diagonal
    and constant, Wick over W(2) exact): tanh, two inputs, width 8, 20,000 networks, within 4 SE."""
    zs = _mc_check("tanh", 1.0, 0.0, 1, X3[:2], [8], 20_000)
    for name, z in zs.items():
        assert np.all(np.abs(z) < 4), (name, z)


SLOW_CASES = [
    # act, C_W, C_b, depth, inputs, widths, samples, kink_terms
    ("tanh", 1.0, 0.0, 2, 2, (16, 32, 64), 30_000, True),        # tanh at criticality
    ("relu", 2.0, 0.0, 2, 2, (16, 32, 64), 30_000, False),       # pointwise s'' = 0
    ("relu", 2.0, 0.0, 3, 1, (16, 32, 64), 30_000, True),        # one input: Dirac terms vanish
    ("erf", 1.5, 0.1, 2, 3, (16, 32, 64), 20_000, True),
    ("tanh", 1.6, 0.2, 4, 1, (16, 32, 64), 30_000, True),        # smooth, off criticality
]


@pytest.mark.slow
@pytest.mark.parametrize("case", SLOW_CASES, ids=lambda c: f"{c[0]}-L{c[3]}-N{c[4]}")
def test_width_extrapolated_monte_carlo(case):
    """Every entry of P and Q within 4 SE of the intercept of the weighted a + b/n fit of the Monte Carlo."""
    act, C_W, C_b, depth, N, widths, samples, kink = case
    zs = _mc_check(act, C_W, C_b, depth, X3[:N], list(widths), samples, kink_terms=kink)
    for name, z in zs.items():
        assert np.all(np.abs(z) < 4), (name, z)


@pytest.mark.slow
def test_relu_kink_terms_match_ensemble_second_differences():
    """ReLU (C_W = 2), one hidden layer (exact at any width), two inputs: the default kink_terms=True against
    second differences (step 0.05) of the forward pass of 60,000 networks, whose ensemble average includes the
    neurons crossing the kink; the pointwise variant is excluded by the same data (|z| > 10 somewhere)."""
    X = X3[:2]
    P, Q, sP, sQ = bf.estimate_PQ_differences("relu", X, (3, 8, 3), C_W=2.0, C_b=0.0, lams=[(0.0, 2.0)] * 2,
                                               samples=60_000, seed=5, h=0.05)
    rec = FiniteWidthRecursion("relu", 1, C_W=2.0)
    st, pw = rec.dntk(X)[-1], rec.dntk(X, kink_terms=False)[-1]
    assert np.all(np.abs((P - st.P) / sP) < 4) and np.all(np.abs((Q - st.Q) / sQ) < 4)
    assert np.max(np.abs((P - pw.P) / sP)) > 10


@pytest.mark.slow
@pytest.mark.parametrize("act,C_W,depth,N,kink", [("tanh", 1.0, 3, 2, True), ("relu", 2.0, 3, 2, False)])
def test_against_sample_dntk(act, C_W, depth, N, kink):
    """Against the toolkit's Monte Carlo of the dNTK (montecarlo.dntk.sample_dntk: exact higher-order forward mode,
    pointwise s'' for ReLU), 4 readout neurons, widths 16, 32, 64, 20,000 networks each: every entry of the
    a + b/n fit's intercept within 4 SE."""
    from ntk_theory.montecarlo.dntk import sample_dntk

    X = X3[:N]
    st = FiniteWidthRecursion(act, depth, C_W=C_W, C_b=0.0).dntk(X, kink_terms=kink)[-1]
    widths = [16, 32, 64]
    runs = [sample_dntk(act, X, depth, n, C_W=C_W, C_b=0.0, outputs=4, samples=20_000, seed=n,
                        quantities=("P", "Q")) for n in widths]
    for name in "PQ":
        vals = np.array([r.estimates[name].value for r in runs])
        errs = np.array([r.estimates[name].stderr for r in runs])
        c, se, _ = weighted_fit(widths, vals, errs, (0, 1))
        z = (c[0] - getattr(st, name)) / se[0]
        assert np.all(np.abs(z) < 4), (name, z)


def _ddntk_check(act, C_W, N, samples, kink_terms=True):
    from ntk_theory.finite_width.dntk import ddntk_second_layer
    from ntk_theory.montecarlo.dntk import sample_dntk

    X = X3[:N]
    st = ddntk_second_layer(FiniteWidthRecursion(act, 1, C_W=C_W, C_b=0.0), X, kink_terms=kink_terms)
    mc = sample_dntk(act, X, 1, 8, C_W=C_W, C_b=0.0, outputs=3, samples=samples, seed=3,
                     quantities=("R", "S", "T", "U"))
    for name in "RSTU":
        e, pred = mc.estimates[name], getattr(st, name)
        exact = e.stderr == 0                 # the same on every network (e.g. ReLU's pointwise R = U = 0)
        np.testing.assert_allclose(e.value[exact], pred[exact], atol=1e-12)
        z = (e.value[~exact] - pred[~exact]) / e.stderr[~exact]
        assert np.all(np.abs(z) < 4), (name, z)


def test_ddntk_second_layer_one_input_matches_monte_carlo():
    """R, S, T, U of layer 2 are exact at every width: tanh, one input, width 8, 20,000 networks of
    montecarlo.dntk.sample_dntk (exact third derivatives), within 4 SE."""
    _ddntk_check("tanh", 1.0, 1, 20_000)


@pytest.mark.slow
@pytest.mark.parametrize("act,C_W,kink", [("tanh", 1.0, True), ("relu", 2.0, False)])
def test_ddntk_second_layer_two_inputs_matches_monte_carlo(act, C_W, kink):
    _ddntk_check(act, C_W, 2, 30_000, kink_terms=kink)
