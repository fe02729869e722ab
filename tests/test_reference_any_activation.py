"""The reference network takes every activation the symbolic layer accepts.

Names without a hand-written NumPy pair (selu, gelu_tanh, abrelu(a, b), hermite(k), ...) and
expressions in x get a pair generated from the SymPy expression.  Checked against NumPy formulas
written out here, central finite differences, a hand-written forward pass, and the command line.
"""

import numpy as np
import pytest
from scipy import special

from ntk_theory import MLP
from ntk_theory.cli import main
from ntk_theory.reference import numpy_activation

Z = np.concatenate([np.linspace(-6.0, -0.01, 400), np.linspace(0.01, 6.0, 400)])

SELU_L = 1.0507009873554804934193349852946
SELU_A = 1.6732632423543772848170429916717
C = np.sqrt(2.0 / np.pi)

# name -> (s, s') written out by hand
FORMULAS = {
    "selu": (
        lambda z: SELU_L * np.where(z > 0, z, SELU_A * np.expm1(np.minimum(z, 0.0))),
        lambda z: SELU_L * np.where(z > 0, 1.0, SELU_A * np.exp(np.minimum(z, 0.0))),
    ),
    "x*erf(x)": (
        lambda z: z * special.erf(z),
        lambda z: special.erf(z) + 2.0 * z * np.exp(-z * z) / np.sqrt(np.pi),
    ),
    "gelu_tanh": (
        lambda z: 0.5 * z * (1.0 + np.tanh(C * (z + 0.044715 * z**3))),
        lambda z: 0.5 * (1.0 + np.tanh(C * (z + 0.044715 * z**3)))
        + 0.5 * z * (1.0 - np.tanh(C * (z + 0.044715 * z**3)) ** 2) * C * (1.0 + 3 * 0.044715 * z**2),
    ),
    "abrelu(1/2, 3)": (lambda z: np.where(z > 0, 3.0 * z, 0.5 * z), lambda z: np.where(z > 0, 3.0, 0.5)),
    "hermite(3)": (lambda z: z**3 - 3 * z, lambda z: 3 * z**2 - 3),
    "relu(x)**2": (lambda z: np.maximum(z, 0.0) ** 2, lambda z: 2 * np.maximum(z, 0.0)),
    "step": (lambda z: (z > 0).astype(float), lambda z: np.zeros_like(z)),  # a.e. derivative: no delta
}


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_generated_pair_matches_hand_written_formulas(name):
    act = numpy_activation(name)
    s, ds = FORMULAS[name]
    np.testing.assert_allclose(act.value(Z), s(Z), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(act.derivative(Z), ds(Z), rtol=1e-12, atol=1e-13)
    assert act.name == name


@pytest.mark.parametrize(
    "name", ["selu", "gelu_tanh", "x*erf(x)", "gelu(x) + x", "elu(1/2)", "softplus", "sigmoid", "hermite(4)",
             "rbf(1/2)", "gaussian(-1/4)", "polynomial(1, -2, 0, 1/3)", "leaky_relu(x, 1/5)", "swish"]
)
def test_derivative_matches_central_differences(name):
    act = numpy_activation(name)
    h = 1e-5
    fd = (act.value(Z + h) - act.value(Z - h)) / (2 * h)
    scale = np.maximum(1.0, np.abs(act.value(Z)))
    assert np.max(np.abs(act.derivative(Z) - fd) / scale) < 1e-8


def test_mlp_with_selu_matches_a_hand_written_forward_pass():
    net = MLP.random((3, 16, 16, 2), "selu", C_W=1.0, C_b=0.1, seed=4)
    X = np.random.default_rng(0).standard_normal((5, 3))
    s, _ = FORMULAS["selu"]
    a = X
    for W, b in zip(net.weights[:-1], net.biases[:-1]):
        a = s(a @ W.T + b)
    np.testing.assert_allclose(net(X), a @ net.weights[-1].T + net.biases[-1], rtol=1e-13, atol=1e-13)
    # s' inside the network: J v by forward mode equals the central difference of the outputs
    v = np.random.default_rng(1).standard_normal(net.n_params)
    _, jv = net.jvp(X, v)
    h = 1e-6
    flat = np.concatenate([np.concatenate([W.ravel(), b]) for W, b in zip(net.weights, net.biases)])

    def outputs(theta):
        ws, bs, i = [], [], 0
        for W, b in zip(net.weights, net.biases):
            ws.append(theta[i:i + W.size].reshape(W.shape))
            i += W.size
            bs.append(theta[i:i + b.size])
            i += b.size
        return MLP(net.spec, "selu", ws, bs)(X)

    fd = (outputs(flat + h * v) - outputs(flat - h * v)) / (2 * h)
    np.testing.assert_allclose(jv, fd, rtol=1e-6, atol=1e-7)


def test_generated_pair_refuses_nan():
    with pytest.raises(ValueError, match="not defined for x < 0"):
        numpy_activation("sqrt(x)")


def test_cli_sample_and_check_take_any_activation(capsys):
    assert main(["sample", "selu", "--depth", "2", "--width", "16", "--samples", "200", "--batches", "8",
                 "--workers", "1", "--quiet"]) == 0
    assert "ntk_mean" in capsys.readouterr().out
    rc = main(["check", "abrelu(1/2, 2)", "--depth", "1", "--C-W", "1", "--widths", "32,64", "--samples", "2000",
               "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "check abrelu(1/2, 2)" in out and "PASS" in out


@pytest.mark.slow  # the x*erf(x) kernels take ~11 s to derive
def test_cli_check_takes_an_expression(capsys):
    rc = main(["check", "x*erf(x)", "--depth", "1", "--C-W", "1", "--widths", "32,64", "--samples", "2000", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "check x*erf(x)" in out and "PASS" in out
