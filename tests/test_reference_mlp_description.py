"""The reference MLP as a description plus parameters (``MLP.as_description()``, ``MLP.params``), run by the
description interpreter.  Every check is against NumPy written here: the PDLT forward pass as a loop, and
the Jacobian by central differences of the outputs in the flat PDLT parameters."""

import numpy as np
import pytest

from ntk_theory.architecture.mlp import as_mlp
from ntk_theory.reference import MLP, graph


def loop_forward(net, X):
    """z(l+1) = W(l+1) s(z(l)) + b(l+1), written out."""
    a = np.asarray(X, dtype=np.float64)
    for l, (W, b) in enumerate(zip(net.weights, net.biases)):
        z = a @ W.T + b
        a = net.activation.value(z) if l < net.spec.depth else z
    return z


def fd_jacobian(net, X, h=1e-6):
    """df/dtheta (N, O, P) by central differences in the flat PDLT parameters (error O(h^2))."""
    theta = net.flatten()
    cols = []
    for p in range(theta.size):
        e = np.zeros_like(theta)
        e[p] = h
        plus = net.unflatten(theta + e)
        minus = net.unflatten(theta - e)
        fp = loop_forward(MLP(net.spec, net.activation, [w for w, _ in plus], [b for _, b in plus]), X)
        fm = loop_forward(MLP(net.spec, net.activation, [w for w, _ in minus], [b for _, b in minus]), X)
        cols.append((fp - fm) / (2 * h))
    return np.stack(cols, axis=-1)


def fd_ntk(net, X1, X2):
    """J(X1) Lambda J(X2)^T, (N1, N2, O, O)."""
    lam = net.learning_rate_vector()
    return np.einsum("aop,bqp->aboq", fd_jacobian(net, X1) * lam, fd_jacobian(net, X2))


RNG = np.random.default_rng(7)
X1 = RNG.standard_normal((4, 3))
X2 = RNG.standard_normal((3, 3))


@pytest.mark.parametrize("param", ["ntk", "standard", "unit"])
@pytest.mark.parametrize("act", ["tanh", "gelu"])
def test_description_and_params_are_the_network(param, act):
    net = MLP.random((3, 5, 4, 2), act, C_W=[1.7, 2.1, 0.9], C_b=[0.2, 0.05, 0.3], param=param, seed=3)
    desc, params = net.as_description(), net.params
    read = as_mlp(desc)
    assert (read.depth, read.C_W, read.C_b, read.param, read.widths) == (2, (1.7, 2.1, 0.9), (0.2, 0.05, 0.3), param,
                                                                         (5, 4, 2))
    f = loop_forward(net, X1)
    np.testing.assert_allclose(net(X1), f, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(graph.apply(desc, params, X1), f, rtol=1e-13, atol=1e-14)
    expected = fd_ntk(net, X1, X2)
    scale = np.max(np.abs(expected))
    for got in (net.ntk(X1, X2, trace_outputs=False), graph.ntk(desc, params, X1, X2, trace_outputs=False)):
        assert np.max(np.abs(got - expected)) < 1e-7 * scale
    np.testing.assert_allclose(net.ntk(X1, X2), np.einsum("aboo->ab", expected) / 2, rtol=1e-7, atol=1e-7 * scale)


def test_library_activations_are_the_hand_written_numpy():
    """The description's elementwise layers evaluate the MLP's own NumPy pair, not the lambdified expression."""
    net = MLP.random((3, 4, 1), "erf", seed=0)
    layer = net.as_description().layers[1]
    assert layer.name == "Erf"
    assert layer.activation.numpy is net.activation.value
    assert layer.activation.numpy_derivative is net.activation.derivative


def test_vjp_is_the_transpose_of_the_jacobian():
    net = MLP.random((3, 6, 5, 2), "tanh", C_W=1.5, C_b=0.1, seed=1)
    u = RNG.standard_normal((4, 2))
    J = fd_jacobian(net, X1)
    expected = np.einsum("ao,aop->p", u, J)
    got = net.flatten(net.vjp(X1, u))
    np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-8)
    tr = net.forward(X1)
    np.testing.assert_array_equal(net.flatten(net.vjp(tr, u)), got)  # the Trace of the same forward pass
    with pytest.raises(ValueError, match="cotangent must have the output's shape"):
        net.vjp(X1, u[:, :1])


def test_linear_activation_keeps_every_layer():
    """The linear activation is not dropped: a(l) and s'(z(l)) = 1 for every hidden layer."""
    net = MLP.random((3, 4, 4, 1), "linear", C_W=1.2, C_b=0.3, seed=2)
    tr = net.forward(X1)
    assert len(tr.a) == 3 and len(tr.ds) == 2
    for l in range(2):
        np.testing.assert_array_equal(tr.a[l + 1], tr.z[l])
        np.testing.assert_array_equal(tr.ds[l], np.ones_like(tr.z[l]))
    W = net.weights[2] @ net.weights[1] @ net.weights[0]
    b = net.weights[2] @ (net.weights[1] @ net.biases[0] + net.biases[1]) + net.biases[2]
    np.testing.assert_allclose(net(X1), X1 @ W.T + b, rtol=1e-13)


def test_a_numpy_pair_without_expression_runs():
    """A (value, derivative) pair the symbolic layer cannot read gets a placeholder expression; the reference
    interpreter runs it."""
    pair = (lambda z: z + z**3 / 3, lambda z: 1 + z**2)
    net = MLP.random((3, 5, 2), pair, C_W=1.3, C_b=0.2, seed=4)
    np.testing.assert_allclose(net(X1), loop_forward(net, X1), rtol=1e-13)
    expected = fd_ntk(net, X1, X1)
    assert np.max(np.abs(net.ntk(X1, trace_outputs=False) - expected)) < 1e-7 * np.max(np.abs(expected))


def test_params_refuse_what_neural_tangents_cannot_hold():
    """'ntk' with C_b = 0 scales the bias by 0: a nonzero PDLT bias has no neural-tangents parameter."""
    net = MLP.random((3, 4, 1), "tanh", C_W=2.0, C_b=0.0, param="ntk", seed=5)
    params = net.params
    assert all(np.all(p[1] == 0) for p in params[0::2])
    np.testing.assert_allclose(graph.apply(net.as_description(), params, X1), loop_forward(net, X1), rtol=1e-13)
    biased = MLP(net.spec, "tanh", net.weights, [b + 0.5 for b in net.biases])
    np.testing.assert_allclose(biased(X1), loop_forward(biased, X1), rtol=1e-13)  # the MLP itself runs it
    with pytest.raises(ValueError, match=r"b\(1\) is not zero but C_b = 0"):
        biased.params  # noqa: B018
