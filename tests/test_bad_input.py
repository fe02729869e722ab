"""Bad input raises ValueError naming the problem, never a crash deep inside NumPy."""

import numpy as np
import pytest

from ntk_theory import MLP, MLPSpec
from ntk_theory.montecarlo import sample_statistics
from ntk_theory.reference import numpy_activation


@pytest.fixture(scope="module")
def net():
    return MLP.random((3, 5, 5, 1), "tanh", C_W=1.0, C_b=0.1, seed=0)


@pytest.mark.parametrize(
    "X, message",
    [
        (np.ones((4, 2)), "input dimension is 3"),
        (np.ones(3), "2-D array"),
        (np.ones((2, 3, 1)), "2-D array"),
        (np.ones((0, 3)), "empty"),
        (np.array([[1.0, np.nan, 0.0]]), "non-finite"),
        (np.array([[1.0, 0.0, np.inf]]), "non-finite"),
        ([["a", "b", "c"]], "numeric array"),
    ],
)
def test_bad_inputs(net, X, message):
    with pytest.raises(ValueError, match=message):
        net(X)
    with pytest.raises(ValueError, match=message):
        net.ntk(np.ones((2, 3)), X) if message.startswith("input") else net.ntk(X)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(widths=(3, 0, 1)), "widths\\[1\\] must be an integer >= 1"),
        (dict(widths=(3, 1)), "at least one hidden layer"),
        (dict(C_W=-1.0), "C_W must be a finite number >= 0"),
        (dict(C_b=float("nan")), "C_b must be a finite number >= 0"),
        (dict(C_W=[1.0, 2.0]), "one entry per layer \\(3 layers\\)"),
        (dict(param="mup"), "unknown param 'mup'"),
        (dict(act="swishy"), "unknown activation 'swishy'"),
        (dict(act=(np.tanh,)), "pair must be \\(value, derivative\\)"),
    ],
)
def test_bad_network_specs(kwargs, message):
    args = dict(widths=(3, 4, 4, 1), act="tanh", C_W=1.0, C_b=0.0, param="ntk")
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        MLP.random(args["widths"], args["act"], C_W=args["C_W"], C_b=args["C_b"], param=args["param"])


def test_bad_tangents_and_parameters(net):
    X = np.ones((2, 3))
    with pytest.raises(ValueError, match="flat tangent needs"):
        net.jvp(X, np.ones(7))
    bad = [(np.ones((5, 2)), np.ones(5))] + [(np.zeros_like(W), np.zeros_like(b)) for W, b in zip(net.weights[1:], net.biases[1:])]
    with pytest.raises(ValueError, match="tangent of layer 1 must have shapes"):
        net.jvp(X, bad)
    with pytest.raises(ValueError, match="layer 2: W must have shape"):
        MLP(net.spec, "tanh", [net.weights[0], np.ones((2, 2)), net.weights[2]], net.biases)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(depth=0), "depth must be an integer >= 1"),
        (dict(width=0), "width must be an integer >= 1"),
        (dict(width=2.5), "width must be an integer >= 1"),
        (dict(samples=0), "samples must be an integer >= 1"),
        (dict(samples=10, batches=8), "at least twice the number of batches"),
        (dict(activation="nope"), "unknown activation"),
        (dict(sampler="magic"), "unknown sampler"),
        (dict(C_b=-0.5), "C_b must be a finite number >= 0"),
    ],
)
def test_bad_monte_carlo_arguments(kwargs, message):
    args = dict(activation="relu", depth=2, width=8, samples=200, batches=8)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        sample_statistics(np.ones((2, 3)), **args)


def test_activation_names_with_parameters():
    act = numpy_activation("leaky_relu(0.2)")
    assert np.allclose(act.value(np.array([-1.0, 2.0])), [-0.2, 2.0])
    with pytest.raises(ValueError, match="does not take parameters"):
        numpy_activation("tanh(3)")
    with pytest.raises(ValueError, match="cannot parse activation"):
        numpy_activation("relu((")
    # parameters written as the symbolic layer accepts them: fractions too
    elu = numpy_activation("elu(1/2)")
    assert np.allclose(elu.value(np.array([-1.0, 2.0])), [0.5 * (np.exp(-1.0) - 1.0), 2.0])
    with pytest.raises(ValueError, match="cannot parse the parameters"):
        numpy_activation("elu(a)")


def test_spec_build_checks_widths():
    with pytest.raises(ValueError, match="width has 2 entries but depth is 3"):
        MLPSpec.build(2, 3, [4, 4])
