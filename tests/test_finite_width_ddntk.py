"""The ddNTK recursions (finite_width/ddntk.py): R, S, T, U of every layer, one input and N inputs.

Judges: deep linear networks by hand Wick contractions (below), layer 2 against ddntk_second_layer (an exact
derivation by hand Wick of its own), and the Monte Carlo of real networks (montecarlo.dntk.sample_dntk: exact
higher-order forward mode of random MLPs) through the intercept of a weighted a + b/n fit over widths."""

import numpy as np
import pytest

from ntk_theory.finite_width.ddntk import ddntk_one_input, ddntk_symbolic, ddntk_tensors
from ntk_theory.finite_width.dntk import ddntk_second_layer
from ntk_theory.finite_width.network import FiniteWidthRecursion
from ntk_theory.validation.fits import weighted_fit

X2 = np.array([[0.8, -0.5, 1.1], [0.3, 0.9, -0.4]])


def test_layer_two_equals_second_layer_one_input():
    """Layer 2 (all 1/n tensors of layer 1 vanish) equals ddntk_second_layer (tanh; erf off criticality)."""
    for act, C_W, C_b in [("tanh", 1.0, 0.0), ("erf", 1.5, 0.1)]:
        rec = FiniteWidthRecursion(act, 1, C_W=C_W, C_b=C_b)
        ref = ddntk_second_layer(rec, X2[:1])
        one = ddntk_one_input(rec, X2[0])[-1]
        for q in "RSTU":
            assert getattr(one, q) == pytest.approx(getattr(ref, q)[0, 0, 0, 0], rel=1e-9, abs=1e-12), q


@pytest.mark.slow
def test_layer_two_equals_second_layer_tensors():
    """The same at two inputs, every entry (tanh; ~40 s of quadrature)."""
    rec = FiniteWidthRecursion("tanh", 1, C_W=1.0, C_b=0.0)
    ref = ddntk_second_layer(rec, X2)
    ten = ddntk_tensors(rec, X2)[-1]
    for q in "RSTU":
        assert np.allclose(getattr(ten, q), getattr(ref, q), rtol=1e-9, atol=1e-12), q


@pytest.mark.parametrize("widths", [None, (6, 9)])
def test_deep_linear_two_hidden_layers_by_wick(widths):
    """Linear network z1 = W1 x + b1, z2 = W2 z1 + b2, z3 = W3 z2 + b3 ('ntk': lambda_b = C_b, lambda_W = C_W),
    one input, r = n2 / n1.  By hand (Wick over W3 row by row, then W2; e.g. E|W2^T z2|^2 = n2 [C_b2 C_W2
    + C_W2^2 K1 (1 + r)] from E[((W2^T W2)^2)_qq] = (C_W2 / n1)^2 (n1 n2 + n2^2)), at leading order
    S = C3^2 Th2^2 + 2 r C2^2 C3^2 Th1^2, T = C3^2 K2 Th2 + 4 r C2^2 C3^2 Th1 K1, R = U = 0 (no s'', s''')."""
    C, Cb, G0 = (1.3, 0.7, 1.9), (0.2, 0.5, 0.1), 0.6
    rec = FiniteWidthRecursion("linear", 2, C_W=list(C), C_b=list(Cb), widths=widths)
    r = 1.0 if widths is None else widths[1] / widths[0]
    K1 = Cb[0] + C[0] * G0
    Th1 = K1
    K2 = Cb[1] + C[1] * K1
    Th2 = Cb[1] + C[1] * K1 + C[1] * Th1
    S = C[2] ** 2 * Th2**2 + 2 * r * C[1] ** 2 * C[2] ** 2 * Th1**2
    T = C[2] ** 2 * K2 * Th2 + 4 * r * C[1] ** 2 * C[2] ** 2 * Th1 * K1
    got = ddntk_one_input(rec, G0=G0)[-1]
    assert got.R == pytest.approx(0, abs=1e-12) and got.U == pytest.approx(0, abs=1e-12)
    assert got.S == pytest.approx(S, rel=1e-12) and got.T == pytest.approx(T, rel=1e-12)
    X = np.array([[np.sqrt(G0)]])
    ten = ddntk_tensors(rec, X)[-1]
    assert ten.S[0, 0, 0, 0] == pytest.approx(S, rel=1e-9) and ten.T[0, 0, 0, 0] == pytest.approx(T, rel=1e-9)


def test_symbolic_relu_and_linear_closed_forms():
    """SymPy closed forms in G0 equal the floats (ReLU pointwise and linear, depth 2)."""
    import sympy as sp

    for act, C_W, C_b, kink in [("relu", 2.0, 0.0, False), ("linear", 1.0, 0.5, True)]:
        rec = FiniteWidthRecursion(act, 2, C_W=C_W, C_b=C_b)
        G0 = sp.Symbol("G_0", positive=True)
        sym = ddntk_symbolic(rec, G0, kink_terms=kink)[-1]
        num = ddntk_one_input(rec, G0=0.7, kink_terms=kink)[-1]
        for q in "RSTU":
            assert float(sp.sympify(getattr(sym, q)).subs(G0, 0.7)) == pytest.approx(getattr(num, q), rel=1e-10,
                                                                                     abs=1e-12)


def test_kinked_activation_needs_pointwise():
    rec = FiniteWidthRecursion("relu", 2, C_W=2.0)
    with pytest.raises(ValueError, match="kink_terms=False"):
        ddntk_one_input(rec, G0=1.0)
    with pytest.raises(ValueError, match="kink_terms=False"):
        ddntk_tensors(rec, X2)


def _fit_z(act, C_W, C_b, depth, X, widths, samples, outputs, kink):
    from ntk_theory.montecarlo.dntk import sample_dntk

    st = ddntk_tensors(FiniteWidthRecursion(act, depth, C_W=C_W, C_b=C_b), X, kink_terms=kink)[-1]
    runs = [sample_dntk(act, X, depth, n, C_W=C_W, C_b=C_b, outputs=outputs, samples=samples, seed=n,
                        quantities=("R", "S", "T", "U")) for n in widths]
    zs = {}
    for q in "RSTU":
        vals = np.array([r.estimates[q].value for r in runs])
        errs = np.array([r.estimates[q].stderr for r in runs])
        th = getattr(st, q)
        z = np.zeros(th.shape)
        for idx in np.ndindex(th.shape):
            c, se, _ = weighted_fit(widths, vals[(slice(None),) + idx], errs[(slice(None),) + idx], (0, 1))
            z[idx] = (c[0] - th[idx]) / se[0]
        zs[q] = z
    return zs


MC_CASES = [
    # act, C_W, C_b, depth (readout = layer depth + 1), inputs, widths, samples, outputs, kink_terms
    ("tanh", 1.0, 0.0, 2, 1, (16, 32, 64), 20_000, 4, True),     # criticality
    ("relu", 2.0, 0.0, 2, 1, (16, 32, 64), 20_000, 4, False),    # pointwise s'' = 0
    ("tanh", 1.6, 0.2, 2, 1, (16, 32, 64), 20_000, 4, True),     # off criticality, with bias
    ("tanh", 1.0, 0.0, 3, 1, (32, 64, 128), 20_000, 4, True),    # layer 4: the 1/n^2 curvature needs n >= 32
    ("tanh", 1.0, 0.0, 2, 2, (16, 32, 64), 10_000, 3, True),
    ("relu", 2.0, 0.0, 2, 2, (32, 64, 128), 10_000, 3, False),   # R, U = 0 + O(1/n^2): wider
]


@pytest.mark.slow
@pytest.mark.parametrize("case", MC_CASES, ids=lambda c: f"{c[0]}-CW{c[1]}-L{c[3]}-N{c[4]}")
def test_width_extrapolated_monte_carlo(case):
    """Every entry of R, S, T, U within 4 SE of the intercept of the a + b/n fit of sample_dntk (readout of
    ``depth`` hidden layers; 1-2.5 min per case)."""
    act, C_W, C_b, depth, N, widths, samples, outputs, kink = case
    zs = _fit_z(act, C_W, C_b, depth, X2[:N], list(widths), samples, outputs, kink)
    for q, z in zs.items():
        assert np.all(np.abs(z) < 4), (q, z)
