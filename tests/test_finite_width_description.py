r"""The finite-width recursion of a network description (ntk_theory.finite_width.description).

Judges, independent of the recogniser:

* the MLP shorthand ``finite_width(activation, X, depth, ...)``, the stax description of the same MLP and the
  recursion constructed by hand (``FiniteWidthRecursion(...).tensors``, the computation the shorthand ran
  before it went through descriptions) agree bit for bit;
* ReLU at criticality (C_W = 2, C_b = 0), hand derivation: E[relu(z)^2] = K/2 and E[relu(z)^4] = 3 K^2 / 2 for
  z ~ N(0, K), so K(l) = 2 G0 in every layer and the four-point vertex obeys V(l+1) = C_W^2 (<s^4> - <s^2>^2)
  + chi^2 V(l) = 4 (3/2 - 1/4) K^2 + V(l) = 5 K^2 + V(l), V(1) = 0: the readout of depth L has V = 5 L K^2
  (PDLT section 5.4, "the 5 of ReLU");
* the deep linear residual network, exactly (derivation in tests/test_finite_width_residual.py): with
  c = gamma^2 C_W the branch's variance factor, V(l) / K(l)^2 -> a(l) - 2 and the readout's
  V / (C_W(L+1)^2 K(L)^2) -> a(L), a(l) = 2 + (l - 1) 2 c (2 xi^2 + c) / (xi^2 + c)^2; here the description
  writes gamma into the branch's W_std (the 'ntk' absorption), so the check covers the recogniser's reading;
* the parameters read off residual stax descriptions against values computed by hand from the layer
  arguments (C = std**2);
* refusals name the layer (its repr and path) and the reason.
"""

import math

import numpy as np
import pytest
from cli_errors import one_error_line

from ntk_theory import stax
from ntk_theory.cli import main
from ntk_theory.finite_width import (
    FiniteWidthRecursion,
    NotDerived,
    ResidualPredictions,
    ResidualRecursion,
    finite_width,
    recursion_for,
    why_not_derived,
)
from ntk_theory.quantities import check_names

X2 = np.array([[1.0, 0.0, 0.5], [0.2, -0.7, 1.0]])


def _block(skip, act, dense, *after):
    return stax.serial(stax.FanOut(2), stax.parallel(skip, stax.serial(act, dense, *after)), stax.FanInSum())


# ---------------------------------------------------------------------------------------------- plain MLPs
def test_mlp_description_equals_shorthand_and_recursion():
    """Equal widths (exact squares: W_std = 1.5, b_std = 0.25) and unequal widths with per-layer variances."""
    net = stax.serial(*[stax.serial(stax.Dense(16, W_std=1.5, b_std=0.25), stax.Relu())] * 3,
                      stax.Dense(1, W_std=1.5, b_std=0.25))
    cases = [
        (net, ("relu", 3, 2.25, 0.0625, "ntk", None)),
        (stax.serial(stax.Dense(8, W_std=1.5, b_std=0.5, parameterization="unit"), stax.Erf(),
                     stax.Dense(4, W_std=1.25, b_std=0.0, parameterization="unit"), stax.Erf(),
                     stax.Dense(1, W_std=0.5, b_std=0.25, parameterization="unit")),
         ("erf", 2, [2.25, 1.5625, 0.25], [0.25, 0.0, 0.0625], "unit", [8, 4])),
    ]
    for description, (act, depth, C_W, C_b, param, widths) in cases:
        by_description = finite_width(description, X2)
        shorthand = finite_width(act, X2, depth, C_W=C_W, C_b=C_b, param=param, widths=widths)
        layers = FiniteWidthRecursion(act, depth, C_W=C_W, C_b=C_b, param=param, widths=widths).tensors(X2)
        assert isinstance(recursion_for(description), FiniteWidthRecursion)
        # equal to the last bits in a fresh process; after other four-point work in the same process the
        # adaptive integrator starts its step refinement where its previous call converged
        # (FourPointKernel.hz_hint), which moves the last digits (1e-16 to 1e-12 measured): its tolerance, 1e-10
        for name, value in shorthand.arrays().items():
            np.testing.assert_allclose(by_description.arrays()[name], value, rtol=1e-10, atol=1e-13, err_msg=name)
        top = layers[-1]
        for name in ("K", "Th", "K1", "Th1", "V", "A", "B", "D", "F"):
            np.testing.assert_allclose(getattr(top, name), getattr(by_description.layers[-1], name), rtol=1e-10,
                                       atol=1e-13, err_msg=name)
    rec = FiniteWidthRecursion.from_description(cases[1][0])
    assert rec.ratios == [1.0, 1.0, 0.5] and rec.C_W == (2.25, 1.5625, 0.25) and rec.param == "unit"


@pytest.mark.parametrize("depth", [1, 3])
def test_relu_critical_vertex_is_five_per_layer(depth):
    """The readout's V_(aa)(aa) = 5 L K^2 and output cumulant 15 L K^2 (module docstring), K = 2 G0."""
    net = stax.serial(*[stax.serial(stax.Dense(32, W_std=math.sqrt(2)), stax.Relu())] * depth,
                      stax.Dense(1, W_std=math.sqrt(2)))
    pred = finite_width(net, X2)
    for a in range(2):
        K = 2 * X2[a] @ X2[a] / 3
        assert pred.nngp[a, a] == pytest.approx(K, rel=1e-14)
        assert pred.V[a, a, a, a] == pytest.approx(5 * depth * K**2, rel=1e-12)
        assert pred.output_cumulant[a, a, a, a] == pytest.approx(15 * depth * K**2, rel=1e-12)


def test_a_description_refuses_network_arguments():
    net = stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(1))
    with pytest.raises(ValueError, match="drop depth, C_W"):
        finite_width(net, X2, 2, C_W=2.0)
    with pytest.raises(ValueError, match="depth is required"):
        finite_width("relu", X2)


# ---------------------------------------------------------------------------------------------- residual MLPs
def test_residual_parameters_from_the_layers():
    """C_W, C_b, xi, gamma per layer against the layer arguments, by hand."""
    net = stax.serial(
        stax.Dense(8, W_std=1.1, b_std=0.3),
        _block(stax.Activation("0.8*x"), stax.Tanh(), stax.Dense(8, W_std=0.6, b_std=0.2)),
        # the branch first, the skip second; Identity: xi = 1; a trailing scaling: gamma = 0.5
        stax.serial(stax.FanOut(2), stax.parallel(stax.serial(stax.Tanh(), stax.Dense(8, W_std=0.7),
                                                              stax.Activation("0.5*x")), stax.Identity()),
                    stax.FanInSum()),
        stax.Tanh(), stax.Dense(8, W_std=0.9, b_std=0.1),  # a plain step: xi = 0, gamma = 1
        stax.Tanh(), stax.Dense(3, W_std=1.3))
    rec = recursion_for(net)
    assert isinstance(rec, ResidualRecursion) and rec.depth == 4 and rec.param == "ntk"
    assert rec.activation.expr == stax.Tanh().description.expr
    assert rec.C_W == pytest.approx((1.21, 0.36, 0.49, 0.81, 1.69), rel=1e-15)
    assert rec.C_b == pytest.approx((0.09, 0.04, 0.0, 0.01, 0.0), rel=1e-15)
    assert rec.xi == (0.8, 1.0, 0.0) and rec.gamma == (1.0, 0.5, 1.0)
    with pytest.raises(NotDerived, match="residual network, not a plain MLP"):
        FiniteWidthRecursion.from_description(net)


def test_residual_description_deep_linear_exact():
    """Deep linear residual network (module docstring): V(l)/K^2 -> a(l) - 2, readout V/(C_W^2 K^2) -> a(L)."""
    L, xi, W_std, C_W0, C_Wout, G0 = 5, 0.6, 0.8, 1.3, 1.7, 1.0
    net = stax.serial(stax.Dense(16, W_std=math.sqrt(C_W0)),
                      *[_block(stax.Activation(f"{xi}*x"), stax.Activation("x"), stax.Dense(16, W_std=W_std))] * (L - 1),
                      stax.Activation("x"), stax.Dense(1, W_std=math.sqrt(C_Wout)))
    X = np.array([[1.0, -1.0, 1.0]])  # G0 = 1
    pred = finite_width(net, X)
    assert isinstance(pred, ResidualPredictions)
    c = W_std**2

    def a(l):
        return 2 + (l - 1) * 2 * c * (2 * xi**2 + c) / (xi**2 + c) ** 2

    K = pred.arrays()["K"][0]
    V = pred.arrays()["V"][0]
    for l in range(1, L + 1):
        assert K[l - 1] == pytest.approx(C_W0 * G0 * (xi**2 + c) ** (l - 1), rel=1e-13)
        assert V[l - 1] / K[l - 1] ** 2 == pytest.approx(a(l) - 2, rel=1e-12, abs=1e-13)
    assert V[L] / (C_Wout**2 * K[L - 1] ** 2) == pytest.approx(a(L), rel=1e-12)
    assert np.all(pred.arrays()["K1"][0] == pytest.approx(0.0, abs=1e-13))
    assert pred.arrays()["output_cumulant"][0].item() == pytest.approx(3 * V[L], rel=1e-15)


@pytest.mark.parametrize("act, C_W, C_b, xi, gamma", [("relu", 1.0, 0.0, 0.8, math.sqrt(0.6)),
                                                       ("tanh", 1.2, 0.1, 0.7, 0.7)])
def test_residual_description_is_the_monte_carlo_tested_setting(act, C_W, C_b, xi, gamma):
    """The settings of test_finite_width_residual's Monte Carlo fits (slow set), written in stax with gamma inside
    the branch Dense ('ntk'): the recursion read off the description gives the states of
    ResidualRecursion(act, 4, C_W, C_b, xi=xi, gamma=gamma), which those fits judge."""
    layer = {"relu": stax.Relu(), "tanh": stax.Tanh()}[act]
    W, b = math.sqrt(C_W), math.sqrt(C_b)
    net = stax.serial(stax.Dense(32, W_std=W, b_std=b),
                      *[_block(stax.Activation(f"{xi}*x"), layer, stax.Dense(32, W_std=gamma * W, b_std=gamma * b))] * 3,
                      layer, stax.Dense(1, W_std=W, b_std=b))
    ours = recursion_for(net).one_input(G0=1.0)
    tested = ResidualRecursion(act, 4, C_W=C_W, C_b=C_b, xi=xi, gamma=gamma).one_input(G0=1.0)
    for s, t in zip(ours, tested):
        for name, value in t.values().items():
            assert getattr(s, name) == pytest.approx(value, rel=1e-12, abs=1e-14), name


def test_residual_with_xi_zero_is_the_plain_mlp():
    """A residual description with skip Activation('0*x') (xi = 0) against the plain MLP description."""
    net = stax.serial(stax.Dense(8, W_std=1.2, b_std=0.3),
                      *[_block(stax.Activation("0*x"), stax.Tanh(), stax.Dense(8, W_std=1.2, b_std=0.3))] * 2,
                      stax.Tanh(), stax.Dense(1, W_std=1.2, b_std=0.3))
    plain = stax.serial(*[stax.serial(stax.Dense(8, W_std=1.2, b_std=0.3), stax.Tanh())] * 3,
                        stax.Dense(1, W_std=1.2, b_std=0.3))
    res, mlp = recursion_for(net), recursion_for(plain)
    assert isinstance(res, ResidualRecursion) and isinstance(mlp, FiniteWidthRecursion)
    for r, m in zip(res.one_input(G0=0.8), mlp.one_input(G0=0.8)):
        for name in ("K", "Th", "V", "K1"):
            assert getattr(r, name) == pytest.approx(float(getattr(m, name)), rel=1e-9, abs=1e-12), name


# ---------------------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("text, names", [
    ("serial(Dense(8), LayerNorm(), Relu(), Dense(1))", ["LayerNorm() at layer 1", "LayerNorm"]),
    ("serial(Dense(8), serial(FanOut(2), parallel(Identity(), serial(Relu(), Dense(8))), FanInConcat()), Relu(), "
     "Dense(1))", ["FanInConcat() at layer 1.2", "concatenated"]),
    ("serial(Dense(8), serial(FanOut(2), parallel(Identity(), serial(Relu(), Dense(4))), FanInSum()), Relu(), "
     "Dense(1))", ["Dense(4) at layer 1.1.1.1", "width 4", "width 8", "equal widths"]),
    ("serial(Dense(8), serial(FanOut(2), parallel(Identity(), serial(Relu(), Dense(8))), FanInSum()), Erf(), "
     "Dense(1))", ["Erf() at layer 2", "Relu() at layer 1.1.1.0", "one activation"]),
    ("serial(Dense(8), serial(FanOut(2), parallel(Relu(), serial(Relu(), Dense(8))), FanInSum()), Relu(), Dense(1))",
     ["Relu() at layer 1.1.0", "skip"]),
    ("serial(Dense(8, parameterization='standard'), Relu(), Dense(1, parameterization='standard'))",
     ["Dense(8, parameterization='standard') at layer 0", "param='standard'"]),
    ("serial(Dense(8), Relu(), Relu(), Dense(1))", ["Relu() at layer 2", "two activations"]),
    ("serial(Dense(8), Relu(), Dense(1), Relu())", ["Relu() at layer 3", "ends here", "Dense"]),
    ("serial(Dense(8), serial(FanOut(2), parallel(Identity(), serial(Relu())), FanInSum()), Relu(), Dense(1))",
     ["parallel(Identity(), serial(Relu())) at layer 1.1", "one branch with a Dense layer"]),
])
def test_refusals_name_the_layer(text, names):
    net = stax.parse(text)
    with pytest.raises(NotDerived) as info:
        recursion_for(net)
    for name in names:
        assert name in str(info.value), (name, str(info.value))
    assert why_not_derived(net) == str(info.value)
    with pytest.raises(ValueError):  # NotDerived is a ValueError: one line in the CLI
        finite_width(net, X2)


# ---------------------------------------------------------------------------------------------- CLI
RESIDUAL = ("serial(Dense(8, W_std=1.1, b_std=0.3), serial(FanOut(2), parallel(Activation('0.8*x'), serial(Relu(), "
            "Dense(8, W_std=0.6, b_std=0.2))), FanInSum()), Relu(), Dense(1))")


def test_cli_residual_arch_writes_the_recursion(tmp_path, capsys):
    """Two inputs: the file's per-layer rows equal one_input of each input, the readout's nngp, nngp_correction,
    output_cumulant, ntk_covariance, ntk_output_covariance and (ReLU) ntk_correction are (N, N) / (N,)*4 tensors
    whose diagonal is one_input's."""
    np.save(tmp_path / "x.npy", X2)
    out = tmp_path / "r.npz"
    assert main(["finite-width", "--arch", RESIDUAL, "--x", str(tmp_path / "x.npy"), "--out", str(out),
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "layer 2" in printed and "readout" in printed
    rec = recursion_for(stax.parse(RESIDUAL))
    with np.load(out) as d:
        check_names(d.files, "finite-width --arch (residual)")
        for a in range(2):
            states = rec.one_input(X2[a])
            for name in ("K", "Th", "V", "K1", "M3", *states[0].values()):
                assert np.array_equal(d[name][a], [getattr(s, name) for s in states]), name
            top = states[-1]
            # the readout's nngp, nngp_correction, output_cumulant: the several-input tensors (their diagonal)
            assert d["nngp"][a, a] == pytest.approx(top.K, rel=1e-12)
            assert d["nngp_correction"][a, a] == pytest.approx(top.K1, rel=1e-10, abs=1e-13)
            assert d["output_cumulant"][a, a, a, a] == pytest.approx(3 * top.V, rel=1e-10)
            assert d["ntk_correction"][a, a] == pytest.approx(top.Th1, rel=1e-12, abs=1e-14)
            assert d["ntk_covariance"][a, a, a, a] == pytest.approx(top.A + 2 * top.B, rel=1e-10)
            assert d["ntk_output_covariance"][a, a, a, a] == pytest.approx(top.D + 2 * top.F, rel=1e-10)
        # ReLU, xi = 0.8: M3 != 0 in the residual layer (the skip carries z(1)'s sign)
        assert np.all(d["M3"][:, 1] > 0)


@pytest.mark.parametrize("text, expected", [
    ("serial(Dense(8), LayerNorm(), Relu(), Dense(1))", "not yet supported for this architecture: LayerNorm() at layer 1"),
    ("serial(Dense(8), serial(FanOut(2), parallel(Identity(), serial(Relu(), Dense(8))), FanInConcat()), Relu(), "
     "Dense(1))", "FanInConcat() at layer 1.2: no derived 1/n rule"),
    ("serial(Dense(8), serial(FanOut(2), parallel(Identity(), serial(Relu(), Dense(6))), FanInSum()), Relu(), "
     "Dense(1))", "Dense(6) at layer 1.1.1.1: width 6"),
])
def test_cli_refusals_are_one_line_naming_the_layer(tmp_path, capsys, text, expected):
    assert main(["finite-width", "--arch", text, "--out", str(tmp_path / "z.npz"), "--quiet"]) == 2
    assert expected in one_error_line(capsys, "finite-width")
    assert not (tmp_path / "z.npz").exists()
